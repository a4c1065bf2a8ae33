"""Non-transductive BatchNorm: record a support set's statistics, then normalise with them.

metaloop's ``BatchNorm`` (``metaloop.models.conv4``) always normalises with the statistics
of the batch it is given, so a query set scored as one batch is normalised by its own
statistics: transductive, each query's score depends on the others. Here each layer's
per-channel mean and (biased) variance of its input are recorded while the network runs on
a task's support set, and the queries are then normalised with those, so every query's score
depends on its own input and the support set alone (Nichol et al. 2018's non-transductive
setting, except that their code normalises each query with the support set and that query
together, where these statistics are the support set's alone).

The statistics travel in an adapted params dict under ``STATS`` keys
(``"bn_stats:body.0.bn.mean"`` ``[C]``, ``... .var`` ``[C]``), named by the layer's path in
the module whose forward runs. The recorded statistics stay in the autograd graph
(meta-training through them is exact). ``recorded_stats`` works through forward hooks, so
it applies to ``torch.func.functional_call`` as to plain calls; ``fixed_stats`` sets each
layer's ``BatchNorm.fixed`` for its duration, so a layer never computes (or needs) the
batch's statistics, and a single query can be scored.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from torch import nn

from metaloop.models.conv4 import BatchNorm, batch_stats

__all__ = ["STATS", "batchnorm_layers", "fixed_stats", "recorded_stats", "split_stats"]

# Key prefix of recorded BatchNorm statistics in an adapted params dict.
STATS = "bn_stats:"


def batchnorm_layers(model: nn.Module) -> dict[str, BatchNorm]:
    """Every metaloop ``BatchNorm`` in ``model``, by its path (empty for a model without)."""
    return {n: m for n, m in model.named_modules() if isinstance(m, BatchNorm)}


def split_stats(params: dict) -> tuple[dict, dict]:
    """``(params without STATS keys, the STATS entries)``."""
    stats = {k: v for k, v in params.items() if k.startswith(STATS)}
    return {k: v for k, v in params.items() if not k.startswith(STATS)}, stats


@contextmanager
def recorded_stats(layers: dict[str, BatchNorm], into: dict) -> Iterator[dict]:
    """While active, each forward pass through ``layers`` puts its input's per-channel mean
    and biased variance ``[C]`` into ``into`` under ``STATS + "<layer>.mean"`` / ``".var"``
    (the last pass wins). The layers still normalise with their batch statistics, which are
    these.

    Yields:
        ``into``.
    """
    def capture(name):
        def hook(mod, args, out):
            mean, var = batch_stats(args[0])                          # [C], [C]
            into[f"{STATS}{name}.mean"], into[f"{STATS}{name}.var"] = mean, var
        return hook

    handles = [m.register_forward_hook(capture(n)) for n, m in layers.items()]
    try:
        yield into
    finally:
        for h in handles:
            h.remove()


@contextmanager
def fixed_stats(layers: dict[str, BatchNorm], stats: dict) -> Iterator[None]:
    """While active, ``layers`` normalise with ``stats`` (``recorded_stats``'s entries)
    instead of their batch's, so each row of the output depends on its own input alone.

    Raises:
        ValueError: ``stats`` lacks a layer's mean or variance (named).
    """
    missing = [f"{STATS}{n}.{s}" for n in layers for s in ("mean", "var")
               if f"{STATS}{n}.{s}" not in stats]
    if missing:
        raise ValueError(f"fixed_stats: no recorded statistics for {missing}; record them "
                         f"on the support set with the same module (recorded_stats)")
    for n, m in layers.items():
        if m.fixed is not None:
            raise ValueError(f"fixed_stats: layer {n} already has fixed statistics (nested "
                             f"fixed_stats on the same module)")
    try:
        for n, m in layers.items():
            m.fixed = (stats[f"{STATS}{n}.mean"], stats[f"{STATS}{n}.var"])
        yield
    finally:
        for m in layers.values():
            m.fixed = None

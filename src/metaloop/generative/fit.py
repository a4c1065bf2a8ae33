"""The training loop for the AE, VAE and CVAE: one readable function, with a progress bar.

Adam with the IWAE paper's epsilon (1e-4). The learning rate decays geometrically from ``lr``
to ``lr_end`` over the run, which is the IWAE schedule (1e-3 down to 1e-4 over 3,280 passes)
compressed to the budget; ``metaloop.generative.protocol`` runs the paper's schedule itself.
"Over the run" means over the epochs or, when a CPU-time budget is set, over whichever of
the two runs out first.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Protocol, cast

import torch
from torch import nn
from tqdm.auto import tqdm

from metaloop._progress import tqdm_defaults
from metaloop.generative import likelihoods
from metaloop.generative.data import binarize_dynamic, binarize_static, check_binarize, to_unit
from metaloop.generative.nets import (
    check_flag,
    check_number,
    check_positive,
    check_seed,
)
from metaloop.meta._common import check_inputs


class Trainable(Protocol):
    """A model the loop can train: ``AE`` and ``VAE`` (so the CVAE) satisfy it."""

    conditional: bool
    likelihood: str

    def loss(self, x: torch.Tensor, y: torch.Tensor | None = None,
             generator: torch.Generator | None = None) -> tuple[torch.Tensor, dict[str, float]]:
        """x ``[B, C, H, W]`` (and labels ``[B]``) -> scalar loss and metrics."""

    def parameters(self):
        """The parameters to optimise."""


def lr_at(progress: float, lr: float, lr_end: float) -> float:
    """Geometric decay: ``lr`` at progress 0, ``lr_end`` at progress 1."""
    return lr * (lr_end / lr) ** min(max(progress, 0.0), 1.0)


def coin_generator(device: torch.device, generator: torch.Generator, seed: int
                   ) -> torch.Generator:
    """The generator of the dynamic binarisation's coins for images on ``device``: the
    run's own CPU ``generator`` on the CPU (its draws as ever), a new one on a CUDA
    ``device`` seeded with ``seed`` (the coins are tossed where the images are).

    Args:
        device: where the training images are.
        generator: the run's CPU generator (shuffling, noise).
        seed: the run's seed.
    """
    if device.type != "cuda":
        return generator
    return torch.Generator(device=device).manual_seed(seed)


def _training_pixels(images: torch.Tensor, binarize: str, likelihood: str, seed: int
                     ) -> torch.Tensor | None:
    """Pixels fixed for the whole run (``static``, ``none``), or None for ``dynamic``."""
    if binarize == "dynamic":
        return None
    x = binarize_static(images, seed) if binarize == "static" else to_unit(images)
    likelihoods.check_data(x, likelihood)
    return x


def _epoch_means(sums: dict[str, float], weighted: dict[str, float],
                 sizes: list[int]) -> dict[str, float]:
    """Each metric's mean over the epoch's images: the mean of its batch means where every
    batch has one size (the same number, to the last bit, as before short batches were
    weighted), else each batch's mean weighted by its size."""
    if len(set(sizes)) == 1:
        return {name: v / len(sizes) for name, v in sums.items()}
    return {name: v / sum(sizes) for name, v in weighted.items()}


def fit_generative(model: Trainable, images: torch.Tensor, labels: torch.Tensor | None = None, *,
          epochs: int = 10, batch_size: int = 100, lr: float = 1e-3, lr_end: float | None = None,
          binarize: str = "dynamic", cpu_budget_s: float | None = None, seed: int = 0,
          on_epoch: Callable[[dict], None] | None = None, progress: bool = True) -> list[dict]:
    """Train ``model`` by minibatch Adam on its own ``loss``.

    Args:
        model: an ``AE`` or ``VAE``.
        images: uint8 ``[N, C, H, W]`` training images, 255 = ink.
        labels: int64 ``[N]``; required if the model is conditional, ignored otherwise.
        epochs: passes over the data (an upper limit when ``cpu_budget_s`` is set).
        batch_size: examples per step.
        lr: initial learning rate.
        lr_end: final learning rate (default ``lr``: constant).
        binarize: ``"dynamic"`` (fresh Bernoulli sample per batch), ``"static"`` (one fixed
            sample) or ``"none"`` (grey values; the Bernoulli decoder then refuses non-binary
            data).
        cpu_budget_s: stop once the process has used this much CPU time (seconds).
        seed: seed of the shuffling, binarisation and reparameterisation noise, all drawn
            by one CPU generator; except that for images on a CUDA device the dynamic
            binarisation's coins are tossed there, by a CUDA generator seeded with ``seed``
            (no copy of each batch to the host and back). So a run on the CPU draws what it
            always drew, and a CUDA run shuffles and draws the noise as the CPU's does but
            tosses other coins.
        on_epoch: called with each epoch's record (e.g. to log or evaluate).
        progress: show a tqdm progress bar.

    Returns:
        One record per epoch: ``epoch``, ``steps``, ``lr``, ``cpu_s``, ``wall_s`` and the
        model's metrics (``loss``, ``recon`` and for a VAE ``elbo``, ``kl``) averaged over
        the epoch's images (each batch's mean weighted by its size, so that a short last
        batch counts for its images only).

    Raises:
        ValueError: for bad sizes, images whose ``[C, H, W]`` is not the model's
            ``image_shape``, no images, learning rates or a budget that are not finite
            numbers > 0, an unknown binarisation, missing labels (or not one per image) for a
            conditional model, images or labels on another device than the model,
            non-binary data for the Bernoulli decoder with ``binarize="none"``, a ``seed``
            that is not an int torch takes, an ``on_epoch`` that is not callable, or a
            ``progress`` that is not True or False; all before the first step.
    """
    check_binarize(binarize)
    check_positive("epochs", epochs)
    check_positive("batch_size", batch_size)
    check_number("lr", lr)
    if lr_end is not None:
        check_number("lr_end", lr_end)
    if cpu_budget_s is not None:
        check_number("cpu_budget_s", cpu_budget_s)
    seed = check_seed("fit_generative", seed, added=1)      # seed + 1: the static coins
    if on_epoch is not None and not callable(on_epoch):
        raise ValueError(f"fit_generative: on_epoch must be None or a callable "
                         f"on_epoch(record), got {on_epoch!r}")
    check_flag("fit_generative", "progress", progress)
    if not isinstance(images, torch.Tensor) or images.dtype != torch.uint8 \
            or images.dim() != 4:
        got: list[int] | str = (f"{images.dtype} {list(images.shape)}"
                                if isinstance(images, torch.Tensor)
                                else type(images).__name__)
        raise ValueError(f"images must be uint8 [N, C, H, W], got {got}")
    if len(images) == 0:
        raise ValueError("fit_generative needs at least one training image, got none")
    shape = tuple(getattr(model, "image_shape", images.shape[1:]))
    if tuple(images.shape[1:]) != shape:
        raise ValueError(f"images must be uint8 [N, {', '.join(map(str, shape))}] (the "
                         f"model's image_shape), got uint8 {list(images.shape)}")
    if model.conditional and labels is None:
        raise ValueError("a conditional model needs labels")
    if model.conditional and (not isinstance(labels, torch.Tensor)
                              or labels.shape != images.shape[:1]):
        got = list(labels.shape) if isinstance(labels, torch.Tensor) else type(labels).__name__
        raise ValueError(f"labels must be one per image, [{len(images)}], got {got}")
    check_inputs("fit_generative", cast(nn.Module, model), images=images,        # AE, VAE
                 **({"labels": cast(torch.Tensor, labels)} if model.conditional else {}))
    pixels = torch.get_default_dtype()      # what to_unit and the binarisations give
    dtypes = {p.dtype for p in model.parameters() if p.is_floating_point()}
    if dtypes and dtypes != {pixels}:
        raise ValueError(f"fit_generative: the model's parameters are "
                         f"{', '.join(map(str, sorted(dtypes, key=str)))} but the training "
                         f"pixels are {pixels} (torch's default dtype); call "
                         f"model.to({pixels}) or torch.set_default_dtype")
    y_all = labels if model.conditional else None
    fixed = _training_pixels(images, binarize, model.likelihood, seed + 1)
    g = torch.Generator().manual_seed(seed)
    coins = coin_generator(images.device, g, seed) if fixed is None else None
    opt = torch.optim.Adam(model.parameters(), lr=lr, eps=1e-4)
    lr_end = lr if lr_end is None else lr_end
    n = len(images)
    total_steps = epochs * -(-n // batch_size)
    cpu0, wall0, step, history = time.process_time(), time.perf_counter(), 0, []
    bar = tqdm(range(1, epochs + 1), desc="train", unit="epoch", disable=not progress,
               **tqdm_defaults())
    for epoch in bar:
        perm = torch.randperm(n, generator=g).to(images.device)     # [N], once an epoch
        sums: dict[str, float] = {}          # each metric's batch means, summed
        weighted: dict[str, float] = {}      # ... each times its batch's size
        sizes, out_of_time = [], False
        for s in range(0, n, batch_size):
            idx = perm[s:s + batch_size]
            cpu = time.process_time() - cpu0
            frac = step / total_steps
            if cpu_budget_s:
                frac = max(frac, cpu / cpu_budget_s)
            for group in opt.param_groups:
                group["lr"] = lr_at(frac, lr, lr_end)
            x = binarize_dynamic(images[idx], coins) if fixed is None else fixed[idx]
            loss, metrics = model.loss(x, None if y_all is None else y_all[idx], generator=g)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            step = step + 1
            sizes.append(len(idx))
            for name, v in metrics.items():   # v: the batch's mean
                sums[name] = sums.get(name, 0.0) + v
                weighted[name] = weighted.get(name, 0.0) + v * len(idx)
            if cpu_budget_s and time.process_time() - cpu0 >= cpu_budget_s:
                out_of_time = True
                break
        record = {"epoch": epoch, "steps": step, "lr": opt.param_groups[0]["lr"],
                  "cpu_s": time.process_time() - cpu0, "wall_s": time.perf_counter() - wall0,
                  **_epoch_means(sums, weighted, sizes)}
        history.append(record)
        bar.set_postfix(loss=f"{record['loss']:.2f}", lr=f"{record['lr']:.1e}",
                        refresh=False)      # drawn with the next epoch's update
        if on_epoch is not None:
            on_epoch(record)
        if out_of_time:
            break
    bar.close()
    opt.zero_grad(set_to_none=True)     # no last batch's gradient left in model's .grad
    return history

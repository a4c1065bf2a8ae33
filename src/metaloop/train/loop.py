"""The meta-training loop: a readable function, checkpointed and exactly resumable."""

from __future__ import annotations

import json
import math
import random
import signal
import threading
import time
from pathlib import Path

import numpy as np
import torch
from tqdm.auto import tqdm

from metaloop.evaluate.heldout import evaluate
from metaloop.train import distributed
from metaloop.train.checkpoint import (
    atomic_write_text,
    load_checkpoint,
    remove_stale,
    save_checkpoint,
)


class NonFiniteLossError(RuntimeError):
    """The meta-loss or meta-gradient became NaN/inf; the run stopped before applying it."""


def _positive_int(name, v):
    if not isinstance(v, int) or isinstance(v, bool) or v <= 0:
        raise ValueError(f"{name} must be a positive int, got {v!r}")


def _rng_state(generator: torch.Generator) -> tuple[dict, dict]:
    tensors = {"rng.tasks": generator.get_state(), "rng.torch": torch.get_rng_state()}
    npk, npstate, nppos, npg, npc = np.random.get_state()
    state = {"rng": {"python": random.getstate(),
                     "numpy": [npk, npstate.tolist(), nppos, npg, npc]}}
    return tensors, state


def _set_rng_state(generator, tensors, state) -> None:
    generator.set_state(tensors["rng.tasks"])
    torch.set_rng_state(tensors["rng.torch"])
    py = state["rng"]["python"]
    random.setstate((py[0], tuple(py[1]), py[2]))
    k, s, pos, g, c = state["rng"]["numpy"]
    np.random.set_state((k, np.asarray(s, dtype=np.uint32), pos, g, c))


def _optim_tensors(opt: torch.optim.Optimizer) -> tuple[dict, list]:
    sd = opt.state_dict()
    tensors = {f"optim.{i}.{k}": v if torch.is_tensor(v) else torch.tensor(v)
               for i, st in sd["state"].items() for k, v in st.items()}
    return tensors, sd["param_groups"]


def _load_optim(opt, tensors, groups) -> None:
    state: dict = {}
    for key, v in tensors.items():
        if key.startswith("optim."):
            _, i, k = key.split(".", 2)
            state.setdefault(int(i), {})[k] = v
    opt.load_state_dict({"state": state, "param_groups": groups})


# Keys that choose how the same numbers are computed, not which: a run may resume with other
# values (e.g. a run begun on a GPU with vmap batching continues on the CPU with the loop;
# tests/meta/test_fast_paths.py and test_checkpoint.py check that they agree).
EXECUTION_KEYS = frozenset({"method.batching", "method.checkpoint", "method.compile",
                            "train.checkpoint_every"})


def _config_diff(a: dict, b: dict, prefix="") -> list[str]:
    """The keys where the stored config ``a`` and the new config ``b`` differ, except
    ``EXECUTION_KEYS``. A key that a section of ``a`` lacks was added to metaloop after ``a``
    was written: it takes its new value."""
    keys = sorted(set(a) | set(b))
    out = []
    for k in keys:
        if (prefix and k not in a) or f"{prefix}{k}" in EXECUTION_KEYS:
            continue
        va, vb = a.get(k), b.get(k)
        if isinstance(va, dict) and isinstance(vb, dict):
            out += _config_diff(va, vb, f"{prefix}{k}.")
        elif va != vb:
            out.append(f"{prefix}{k} ({va!r} != {vb!r})")
    return out


def save_run(out_dir, iteration, learner, opt, generator, config) -> Path:
    """Checkpoint the model, optimizer, RNG states, iteration and config atomically."""
    tensors = {f"model.{n}": p for n, p in learner.model.named_parameters()}
    ot, groups = _optim_tensors(opt)
    rt, rstate = _rng_state(generator)
    return save_checkpoint(out_dir, iteration, {**tensors, **ot, **rt},
                           {"config": config or {}, "optimizer": {"param_groups": groups},
                            **rstate})


def _load_for_resume(out_dir, config) -> tuple[dict, dict]:
    tensors, state = load_checkpoint(out_dir)
    diff = _config_diff(state.get("config", {}), config or {})
    if diff:
        raise ValueError(f"refusing to resume {out_dir}: the config differs in " + ", ".join(diff))
    return tensors, state


def _truncate_log(out_dir: Path, iteration: int) -> None:
    """Drop metrics lines written after the checkpoint (they will be redone), and a last line
    cut short by a crash."""
    log = out_dir / "metrics.jsonl"
    if not log.exists():
        return
    lines, keep = log.read_text().splitlines(), []
    for i, ln in enumerate(lines):
        try:
            rec = json.loads(ln)
        except json.JSONDecodeError as e:
            if i == len(lines) - 1:          # killed mid-write
                break
            raise ValueError(f"{log} line {i + 1} is corrupt: {e}") from e
        if rec["iteration"] <= iteration:
            keep.append(ln)
    atomic_write_text(log, "".join(ln + "\n" for ln in keep))


def _resume(out_dir: Path, learner, opt, generator, config, lead: bool) -> int:
    """Restore everything from the newest checkpoint; returns its iteration.

    Rank 0 reads the checkpoint and sends it (or its error) to the other ranks, so that only
    rank 0 needs the run directory.
    """
    tensors, state = distributed.from_rank0(lambda: _load_for_resume(out_dir, config),
                                            "the checkpoint to resume")
    with torch.no_grad():
        for n, p in learner.model.named_parameters():
            p.copy_(tensors[f"model.{n}"])
    _load_optim(opt, tensors, state["optimizer"]["param_groups"])
    _set_rng_state(generator, tensors, state)
    it = state["iteration"]
    if lead:
        remove_stale(out_dir)
        _truncate_log(out_dir, it)
    return it


def _finite(loss: float, grads: dict) -> bool:
    return math.isfinite(loss) and all(bool(torch.isfinite(g).all()) for g in grads.values())


class _Cast:
    """A task family whose batches are moved to the model's device and dtype."""

    def __init__(self, family, device: torch.device, dtype: torch.dtype):
        self.family, self.device, self.dtype = family, device, dtype

    def sample(self, n: int, generator=None):
        return self.family.sample(n, generator=generator).to(self.device, self.dtype)

    def __getattr__(self, name):
        return getattr(self.family, name)


def _on_model(family, model: torch.nn.Module):
    """``family`` itself for a float32 CPU model, else one that casts its batches."""
    p = next(model.parameters(), None)
    if family is None or p is None or (p.dtype, p.device.type) == (torch.float32, "cpu"):
        return family
    return _Cast(family, p.device, p.dtype)


class _StopSignals:
    """Turns SIGINT (Ctrl-C) and SIGTERM into a request to stop after the current iteration.

    The loop then writes a checkpoint and raises KeyboardInterrupt, so the run resumes
    exactly. A second signal more than a second after the first raises KeyboardInterrupt at
    once (torchrun forwards the terminal's Ctrl-C, so one press can arrive twice); the last
    checkpoint is kept. Active in the main thread only; signals set to be ignored stay ignored.
    """

    def __init__(self):
        self.name: str | None = None
        self._first = 0.0
        self._old: dict = {}

    def __enter__(self):
        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGINT, signal.SIGTERM):
                if signal.getsignal(sig) is not signal.SIG_IGN:
                    self._old[sig] = signal.signal(sig, self._handle)
        return self

    def _handle(self, signum, frame) -> None:
        now = time.monotonic()
        if self.name is None:
            self.name, self._first = signal.Signals(signum).name, now
        elif now - self._first > 1.0:
            raise KeyboardInterrupt(f"stopped at once by a second {signal.Signals(signum).name}"
                                    f"; the current iteration is lost")

    def __exit__(self, *exc) -> None:
        for sig, handler in self._old.items():
            signal.signal(sig, handler)


def _step_gradient(learner, batch, shard, stop: _StopSignals, iteration: int):
    """This iteration's meta-gradient and metrics over the whole batch.

    ``shard`` is None in a single process, else ``(rank, world)``: the rank's slice of the
    batch is meta-learned and the results are averaged over the ranks, together with the
    ranks' stop requests. Returns (grads, metrics, whether any rank asked to stop), the last
    None in a single process.
    """
    if shard is None:
        grads, metrics = learner.meta_gradient(batch, with_metrics=True)
        return grads, metrics, None
    lo, hi = distributed.shard_bounds(batch.num_tasks, *shard)
    grads, metrics = learner.meta_gradient(batch.slice(lo, hi), with_metrics=True)
    return distributed.reduce_step(grads, metrics, (hi - lo) / batch.num_tasks,
                                   stop.name is not None, f"iteration {iteration}")


LR_SCHEDULES = ("constant", "cosine")


def scheduled_lr(lr: float, schedule: str, it: int, iterations: int) -> float:
    """The outer learning rate of 0-based iteration ``it`` of ``iterations``."""
    if schedule == "cosine":
        return lr * 0.5 * (1.0 + math.cos(math.pi * it / iterations))
    return lr


def _norm(grads: dict) -> float:
    return float(torch.sqrt(sum(g.double().pow(2).sum() for g in grads.values())))


def _clip(grads: dict, max_norm: float, norm: float | None = None) -> dict:
    """``grads`` scaled to a global L2 norm of at most ``max_norm`` (``norm``: theirs, if
    already known)."""
    norm = _norm(grads) if norm is None else norm
    scale = min(1.0, max_norm / max(norm, 1e-300))
    return {n: g * scale for n, g in grads.items()} if scale < 1.0 else grads


def train(learner, family, *, iterations: int, meta_batch: int, lr: float = 1e-3,
          seed: int = 0, out_dir=None, resume: bool = False, val_family=None,
          val_every: int = 0, val_tasks: int = 100, checkpoint_every: int = 1000,
          config: dict | None = None, progress: bool = True, desc: str = "meta-train",
          lr_schedule: str = "constant", clip_grad_norm: float = 0.0) -> dict:
    """Meta-train ``learner`` with Adam on ``meta_gradient`` over tasks from ``family``.

    Each iteration samples ``meta_batch`` tasks from a ``torch.Generator(seed)`` stream, takes
    the learner's meta-gradient and applies one Adam step. Batches are cast to the model's
    device and dtype. With ``out_dir``: ``metrics.jsonl`` gets a line per iteration, and
    checkpoints are written every ``checkpoint_every`` iterations and at the end;
    ``resume=True`` continues from the newest checkpoint exactly (bit for bit).

    Inside an initialised ``torch.distributed`` process group (see ``metaloop.train.
    distributed``) every rank samples the same meta-batch, meta-learns its shard, and the
    meta-gradients and metrics are averaged over the ranks; rank 0 alone validates and writes
    logs and checkpoints. Parameters start from rank 0's.

    Ctrl-C (SIGINT) or SIGTERM stops after the current iteration: a checkpoint is written and
    KeyboardInterrupt raised.

    Args:
        learner: a metaloop learner; Scratch (``meta_trains = False``) is saved untrained.
        family: the meta-training task family. iterations: outer steps in total.
        meta_batch: tasks per outer step (at least the number of ranks). lr: Adam learning
            rate. seed: task-stream seed.
        lr_schedule: ``"constant"``, or ``"cosine"``: step t (1-based) of T uses
            ``lr * (1 + cos(pi * (t - 1) / T)) / 2``. The rate is a function of the iteration
            alone, so a resumed run follows the same schedule.
        clip_grad_norm: if > 0, rescale the meta-gradient to at most this global L2 norm
            before the Adam step (``metrics.jsonl`` then logs ``grad_norm``, before
            clipping). One task whose inner loop diverges can otherwise give a gradient of
            1e20 that fills Adam's second moment and stalls training for thousands of steps.
        val_family / val_every / val_tasks: held-out validation every k iterations.
        config: JSON-serialisable description stored in checkpoints (checked on resume).

    Returns:
        ``{"iteration", "last": metrics of the last iteration, "val": last validation}``.

    Raises:
        NonFiniteLossError: with the iteration number; the last good checkpoint is kept.
        ValueError: for non-positive iterations, meta_batch, lr, an unknown lr_schedule,
            fewer tasks than ranks, or a
            config mismatch on resume (naming the differing keys).
        KeyboardInterrupt: after Ctrl-C/SIGTERM, once the checkpoint is written.
        metaloop.train.distributed.DistributedError: another rank died or timed out.
    """
    _positive_int("iterations", iterations)
    _positive_int("meta_batch", meta_batch)
    if not isinstance(lr, (int, float)) or not lr > 0 or not math.isfinite(lr):
        raise ValueError(f"lr must be a positive number, got {lr!r}")
    if not isinstance(clip_grad_norm, (int, float)) or not clip_grad_norm >= 0:
        raise ValueError(f"clip_grad_norm must be >= 0 (0: off), got {clip_grad_norm!r}")
    if lr_schedule not in LR_SCHEDULES:
        raise ValueError(f"unknown lr_schedule {lr_schedule!r}; choose one of "
                         f"{', '.join(LR_SCHEDULES)}")
    rank, world = distributed.rank_world()
    if meta_batch < world:
        raise ValueError(f"meta_batch={meta_batch} is smaller than the {world} ranks: every "
                         f"rank needs at least one task")
    lead, shard = rank == 0, ((rank, world) if world > 1 else None)
    opt = torch.optim.Adam(learner.model.parameters(), lr=lr)
    generator = torch.Generator().manual_seed(seed)
    out = Path(out_dir) if out_dir is not None else None
    log_dir = out if lead else None
    family, val_family = _on_model(family, learner.model), _on_model(val_family, learner.model)
    if resume and out is not None:
        start = _resume(out, learner, opt, generator, config, lead)
    else:
        start = 0
        if shard:
            distributed.broadcast_params(learner.model)
    if not getattr(learner, "meta_trains", True):
        iterations = start
    if log_dir is not None:
        log_dir.mkdir(parents=True, exist_ok=True)
    last, val = {}, None
    saved = start if resume and out is not None else None   # iteration of the newest checkpoint
    bar = tqdm(range(start, iterations), desc=desc, disable=not (progress and lead),
               initial=start, total=iterations, dynamic_ncols=True, leave=False)
    try:
        with _StopSignals() as stop:
            for it in bar:
                batch = family.sample(meta_batch, generator=generator)
                grads, last, agreed = _step_gradient(learner, batch, shard, stop, it + 1)
                if not _finite(last["loss"], grads):
                    raise NonFiniteLossError(
                        f"non-finite meta-loss/gradient at iteration {it + 1} (loss "
                        f"{last['loss']})" + (f"; the last good checkpoint in {out} is kept"
                                              if out else ""))
                if clip_grad_norm:
                    last = {**last, "grad_norm": _norm(grads)}
                    grads = _clip(grads, clip_grad_norm, last["grad_norm"])
                opt.zero_grad(set_to_none=True)
                for group in opt.param_groups:
                    group["lr"] = scheduled_lr(lr, lr_schedule, it, iterations)
                for n, p in learner.model.named_parameters():
                    p.grad = grads[n]
                opt.step()
                if lead and val_family is not None and val_every and (it + 1) % val_every == 0:
                    r = evaluate(learner, val_family, tasks=val_tasks,
                                 steps=(learner.inner.steps,))
                    val = {f"val_{k}": r[k]["mean"][0] for k in ("loss", "accuracy") if k in r}
                _log(log_dir, it + 1, last, val if val and (it + 1) % val_every == 0 else None)
                bar.set_postfix({k: f"{v:.3g}" for k, v in {**last, **(val or {})}.items()})
                stopping = agreed if shard else stop.name is not None
                if log_dir is not None and ((it + 1) % checkpoint_every == 0 or stopping):
                    save_run(log_dir, it + 1, learner, opt, generator, config)
                    saved = it + 1
                if stopping:
                    _finish(shard, "the interrupt checkpoint")
                    where = f"; checkpoint in {out}" if out else ""
                    raise KeyboardInterrupt(f"stopped by {stop.name or 'another rank'} after "
                                            f"iteration {it + 1}{where}")
    finally:
        bar.close()
    if log_dir is not None and saved != iterations:
        save_run(log_dir, iterations, learner, opt, generator, config)
    _finish(shard, "the final checkpoint")
    return {"iteration": iterations, "last": last, "val": val}


def _finish(shard, what: str) -> None:
    """In a distributed run, hold every rank until rank 0 has written ``what``."""
    if shard:
        distributed.barrier(what)


def _log(out, iteration, metrics, val) -> None:
    if out is None:
        return
    rec = {"iteration": iteration, **metrics, **(val or {}), "time": time.time()}
    with open(out / "metrics.jsonl", "a") as f:
        f.write(json.dumps(rec) + "\n")

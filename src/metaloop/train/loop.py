"""The meta-training loop: a readable function, checkpointed and exactly resumable."""

from __future__ import annotations

import json
import math
import random
import time
from pathlib import Path

import numpy as np
import torch
from tqdm.auto import tqdm

from metaloop.evaluate.heldout import evaluate
from metaloop.train.checkpoint import load_checkpoint, save_checkpoint


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


def _config_diff(a: dict, b: dict, prefix="") -> list[str]:
    keys = sorted(set(a) | set(b))
    out = []
    for k in keys:
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


def _resume(out_dir, learner, opt, generator, config) -> int:
    tensors, state = load_checkpoint(out_dir)
    diff = _config_diff(state.get("config", {}), config or {})
    if diff:
        raise ValueError(f"refusing to resume {out_dir}: the config differs in " + ", ".join(diff))
    with torch.no_grad():
        for n, p in learner.model.named_parameters():
            p.copy_(tensors[f"model.{n}"])
    _load_optim(opt, tensors, state["optimizer"]["param_groups"])
    _set_rng_state(generator, tensors, state)
    it = state["iteration"]
    log = Path(out_dir) / "metrics.jsonl"
    if log.exists():   # drop lines written after the checkpoint (they will be redone)
        keep = [ln for ln in log.read_text().splitlines() if json.loads(ln)["iteration"] <= it]
        log.write_text("".join(ln + "\n" for ln in keep))
    return it


def _finite(loss: float, grads: dict) -> bool:
    return math.isfinite(loss) and all(bool(torch.isfinite(g).all()) for g in grads.values())


def train(learner, family, *, iterations: int, meta_batch: int, lr: float = 1e-3,
          seed: int = 0, out_dir=None, resume: bool = False, val_family=None,
          val_every: int = 0, val_tasks: int = 100, checkpoint_every: int = 1000,
          config: dict | None = None, progress: bool = True, desc: str = "meta-train") -> dict:
    """Meta-train ``learner`` with Adam on ``meta_gradient`` over tasks from ``family``.

    Each iteration samples ``meta_batch`` tasks from a ``torch.Generator(seed)`` stream, takes
    the learner's meta-gradient and applies one Adam step. With ``out_dir``: ``metrics.jsonl``
    gets a line per iteration, and checkpoints are written every ``checkpoint_every`` iterations
    and at the end; ``resume=True`` continues from the newest checkpoint exactly.

    Args:
        learner: a metaloop learner; Scratch (``meta_trains = False``) is saved untrained.
        family: the meta-training task family. iterations: outer steps in total.
        meta_batch: tasks per outer step. lr: Adam learning rate. seed: task-stream seed.
        val_family / val_every / val_tasks: held-out validation every k iterations.
        config: JSON-serialisable description stored in checkpoints (checked on resume).

    Returns:
        ``{"iteration", "last": metrics of the last iteration, "val": last validation}``.

    Raises:
        NonFiniteLossError: with the iteration number; the last good checkpoint is kept.
        ValueError: for non-positive iterations, meta_batch, lr, or a config mismatch on resume.
    """
    _positive_int("iterations", iterations)
    _positive_int("meta_batch", meta_batch)
    if not isinstance(lr, (int, float)) or not lr > 0 or not math.isfinite(lr):
        raise ValueError(f"lr must be a positive number, got {lr!r}")
    opt = torch.optim.Adam(learner.model.parameters(), lr=lr)
    generator = torch.Generator().manual_seed(seed)
    out = Path(out_dir) if out_dir is not None else None
    start = _resume(out, learner, opt, generator, config) if resume and out else 0
    if not getattr(learner, "meta_trains", True):
        iterations = start
    if out is not None:
        out.mkdir(parents=True, exist_ok=True)
    last, val = {}, None
    bar = tqdm(range(start, iterations), desc=desc, disable=not progress, initial=start,
               total=iterations, dynamic_ncols=True, leave=False)
    it = start
    try:
        for it in bar:
            batch = family.sample(meta_batch, generator=generator)
            grads, last = learner.meta_gradient(batch, with_metrics=True)
            if not _finite(last["loss"], grads):
                raise NonFiniteLossError(
                    f"non-finite meta-loss/gradient at iteration {it + 1} (loss {last['loss']})"
                    + (f"; the last good checkpoint in {out} is kept" if out else ""))
            opt.zero_grad(set_to_none=True)
            for n, p in learner.model.named_parameters():
                p.grad = grads[n]
            opt.step()
            if val_family is not None and val_every and (it + 1) % val_every == 0:
                r = evaluate(learner, val_family, tasks=val_tasks, steps=(learner.inner.steps,))
                val = {f"val_{k}": r[k]["mean"][0] for k in ("loss", "accuracy") if k in r}
            _log(out, it + 1, last, val if val and (it + 1) % val_every == 0 else None)
            bar.set_postfix({k: f"{v:.3g}" for k, v in {**last, **(val or {})}.items()})
            if out is not None and (it + 1) % checkpoint_every == 0:
                save_run(out, it + 1, learner, opt, generator, config)
        it = iterations
    except KeyboardInterrupt:
        if out is not None:
            save_run(out, it, learner, opt, generator, config)
        raise
    finally:
        bar.close()
    if out is not None:
        save_run(out, iterations, learner, opt, generator, config)
    return {"iteration": iterations, "last": last, "val": val}


def _log(out, iteration, metrics, val) -> None:
    if out is None:
        return
    rec = {"iteration": iteration, **metrics, **(val or {}), "time": time.time()}
    with open(out / "metrics.jsonl", "a") as f:
        f.write(json.dumps(rec) + "\n")

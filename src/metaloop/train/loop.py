"""The meta-training loop: a readable function, checkpointed and exactly resumable."""

from __future__ import annotations

import errno
import functools
import json
import math
import os
import random
import sys
import time
import warnings
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import nullcontext
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

import numpy as np
import torch
from tqdm.auto import tqdm

from metaloop import runlock, runs_folder
from metaloop._progress import tqdm_defaults
from metaloop._random import in_seeded_rng
from metaloop.build import data_changes
from metaloop.evaluate.heldout import check_learner_family, evaluate
from metaloop.meta._common import check_flag, finite_guarded
from metaloop.models.conv4 import BatchNorm
from metaloop.tasks.batch import TaskBatch, _unchecked_batch, valid_by_construction
from metaloop.train import distributed, graphs
from metaloop.train.checkpoint import (
    WriteError,
    atomic_write_text,
    extra_state,
    latest_checkpoint,
    load_checkpoint,
    load_extra_state,
    protocol_run,
    read_state,
    remove_stale,
    save_checkpoint,
    software,
    unlinked_advice,
)
from metaloop.train.signals import StopSignals as _StopSignals

if TYPE_CHECKING:
    from collections.abc import Callable
    from typing import ParamSpec, TypeVar

    P = ParamSpec("P")
    R = TypeVar("R")



class NonFiniteLossError(RuntimeError):
    """The meta-loss or meta-gradient became NaN/inf; the run stopped before applying it."""


def _positive_int(name, v, more: str = ""):
    if not isinstance(v, int) or isinstance(v, bool) or v <= 0:
        raise ValueError(f"{name} must be a positive int{more}, got {v!r}")


def _check_intervals(log_every, checkpoint_every, val_every, val_tasks, val_family) -> None:
    """ValueError naming an interval argument of ``train`` that is not what its docstring
    allows: ``log_every`` a positive int or None, ``checkpoint_every`` a positive int,
    ``val_every`` an int >= 0 (0: no validation; > 0 needs a ``val_family``), ``val_tasks``
    a positive int."""
    if log_every is not None:
        _positive_int("log_every", log_every,
                      f", or None for the default (1 on the CPU, {CUDA_LOG_EVERY} on an "
                      f"accelerator)")
    _positive_int("checkpoint_every", checkpoint_every)
    if not isinstance(val_every, int) or isinstance(val_every, bool) or val_every < 0:
        raise ValueError(f"val_every must be an int >= 0 (0: no validation), got "
                         f"{val_every!r}")
    if val_every and val_family is None:
        raise ValueError(f"val_every={val_every} validates every {val_every} iterations, but "
                         f"no val_family was given to validate on: pass val_family, or "
                         f"val_every=0 for no validation")
    _positive_int("val_tasks", val_tasks)


def _number(v) -> bool:
    """Whether ``v`` is an int or float, not a bool (``True`` would pass for 1.0)."""
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def _check_seed(seed, name: str = "seed", what: str = "the task stream") -> None:
    if not isinstance(seed, int) or isinstance(seed, bool) or not 0 <= seed < 2 ** 64:
        raise ValueError(f"{name} must be an int in [0, 2**64) (it seeds {what}), got "
                         f"{seed!r}")


def _check_json(name: str, value) -> None:
    """ValueError naming ``name`` if ``value`` (stored in every checkpoint's ``state.json``)
    is not a JSON-serialisable dict (or None), before any iteration runs."""
    if value is None:
        return
    if not isinstance(value, dict):
        raise ValueError(f"{name} must be a dict (stored as JSON in every checkpoint) or "
                         f"None, got {type(value).__name__}")
    try:
        json.dumps(value)
    except (TypeError, ValueError) as e:
        raise ValueError(f"{name} must be JSON-serialisable (it is stored in every "
                         f"checkpoint's state.json): {e}") from e


def _check_learner(learner, family, val_family) -> None:
    """``train``'s refusal of a learner it cannot meta-train (an ``Ensemble``, or what is no
    learner) and of a ``family`` (or a ``val_family`` given) that is no task family."""
    from metaloop.meta.ensemble import Ensemble
    if isinstance(learner, Ensemble):
        raise ValueError(f"an Ensemble is not meta-trained itself: it is trained by training "
                         f"its members; train each of its {len(learner.members)} member(s) "
                         f"(ml.train(member, ...) for member in ensemble.members), then "
                         f"combine them")
    check_learner_family("train", learner, family, ("meta_gradient", "model"))
    if val_family is not None:
        check_learner_family("train", learner, val_family, ("adapt_path", "predict"),
                             "val_family")


def check_run_dir(out) -> None:
    """Refuse ``out`` as a run directory when it is one checkpoint of a run (a ``ckpt-*``
    directory, which holds ``state.json``): a run resumed or started there would write its
    checkpoints and metrics inside that checkpoint, beside the run it belongs to.

    Raises:
        ValueError: naming the checkpoint and the run directory to give instead.
    """
    out = Path(out)
    if not (out / "state.json").is_file():
        return
    run = f"its run directory {out.parent}" if (out.parent / "LATEST").is_file() \
        else "the run directory (the folder with LATEST)"
    raise ValueError(f"{out} is one checkpoint of a run (it holds state.json), not a run "
                     f"directory: a run there would write its checkpoints inside it; give "
                     f"{run} (nothing was written)")


def _check_fresh(out: Path) -> None:
    """Refuse a new run (no ``resume``) into ``out`` when it already holds a run: its
    checkpoints would be mixed with the new run's (the newest two are kept by iteration) and
    its metrics log emptied; or when it is one checkpoint of a run (``check_run_dir``); or
    when it holds another command's run (``runs_folder.check``)."""
    check_run_dir(out)
    runs_folder.check(out, "train")
    ckpt = latest_checkpoint(out)               # a damaged LATEST: ValueError naming it
    if ckpt is None:
        # a run whose LATEST was deleted: its checkpoints would be replaced, its log emptied
        advice = unlinked_advice(out, "then pass resume=True")
        if advice is not None:
            raise ValueError(f"refusing a new run in {out}: {advice}; or choose another "
                             f"out_dir (nothing was written)")
        refuse_foreign(out, str(out), "choose an empty or new out_dir")
        return
    try:
        at = f" at iteration {int(read_state(ckpt / 'state.json')['iteration'])}"
    except (OSError, ValueError, KeyError, TypeError):
        at = f" (LATEST names {ckpt.name})"
    raise ValueError(f"{out} already holds a run{at}; pass resume=True to continue it, or "
                     f"choose another out_dir (nothing was written)")


def refuse_foreign(out: Path, what: str, advice: str) -> None:
    """Refuse a new run into ``out`` where it holds files no metaloop run wrote
    (``foreign_entries``).

    Args:
        out: the run folder.
        what: how the message names it (``"runs/x"``, ``"runs/x, the folder of the maml
            run,"``).
        advice: what to do, in the caller's words (``"give an empty or new --out"``).

    Raises:
        ValueError: naming up to five of those files; nothing was written.
    """
    theirs = foreign_entries(out)
    if theirs:
        more = f" and {len(theirs) - 5} more" if len(theirs) > 5 else ""
        raise ValueError(f"{what} holds files that no metaloop run wrote "
                         f"({', '.join(map(repr, theirs[:5]))}{more}): a new run there would "
                         f"write its checkpoints beside them and empty a metrics.jsonl; "
                         f"{advice} (nothing was written)")


def foreign_entries(out: Path) -> list[str]:
    """The entries of the folder ``out`` that a run of ``ml.train`` stopped before its first
    checkpoint cannot have left there, sorted: all but its lock file (``runlock``), the
    temporary files of a checkpoint or log write (``.ckpt-*``, ``.LATEST.*``,
    ``.metrics.jsonl.*``), ``ckpt-*`` folders, a ``metrics.jsonl`` of metaloop's
    (``_metaloop_log``) and the files a file manager leaves (``.DS_Store``, ``Thumbs.db``,
    ``desktop.ini``, ``._*``); none for a folder that does not exist."""
    try:
        entries = sorted(p.name for p in out.iterdir()) if out.is_dir() else []
    except OSError:
        return []                       # unreadable: the writer names it where it writes
    theirs = []
    for name in entries:
        if name in ("LATEST", runlock.LOCK_FILE, *_SYSTEM_FILES) or name.startswith(
                ("ckpt-", ".ckpt-", ".LATEST.", ".metrics.jsonl.", "._")):
            continue
        if name == "metrics.jsonl" and _metaloop_log(out / name):
            continue
        theirs.append(name)
    return theirs


# What file managers leave in any folder they show (macOS, Windows); ``._*`` too
_SYSTEM_FILES = (".DS_Store", "Thumbs.db", "desktop.ini")


def _metaloop_log(path: Path) -> bool:
    """Whether ``path`` is empty (NUL bytes only, as a power loss can leave a file) or starts
    as a metaloop metrics line does (``{"iteration": ``; a line cut short counts)."""
    try:
        with open(path, "rb") as f:
            first = f.readline(1 << 16).strip().strip(b"\0")
    except OSError:
        return False
    return not first or first.startswith(b'{"iteration": ')


def _rng_state(generator: torch.Generator, tasks_state: torch.Tensor | None = None
               ) -> tuple[dict, dict]:
    tasks_state = generator.get_state() if tasks_state is None else tasks_state
    tensors = {"rng.tasks": tasks_state, "rng.torch": torch.get_rng_state()}
    npk, npstate, nppos, npg, npc = cast(tuple[str, np.ndarray, int, int, float],
                                         np.random.get_state())              # legacy=True
    state = {"rng": {"python": random.getstate(),
                     "numpy": [npk, npstate.tolist(), nppos, npg, npc]}}
    return tensors, state


def _seed_global_rngs(seed: int) -> None:
    """Seed Python's, NumPy's and torch's global CPU RNGs from a new run's ``seed`` (a resume
    restores them from the checkpoint instead). metaloop draws from torch's (Reptile's
    per-task mini-batch seeds with ``inner_batch``, dropout in a user's model), from neither
    of the others, but a checkpoint stores all three, for a family or model of the user's
    that does: seeded, two identical runs store the same states, and so the same
    ``state_sha256``, whatever the caller drew before. torch's is seeded with ``seed``
    mixed (``torch_seed``), not ``seed`` itself: the task stream's ``torch.Generator(seed)``
    would give the same numbers. Inside a ``metaloop._random.seeded_rng`` block (the
    command line's, which builds the model and trains in one) torch's stream is that
    block's, already decided by its seed, and is left as it is."""
    random.seed(seed)
    np.random.seed([seed & 0xFFFFFFFF, seed >> 32])        # its seeds are 32-bit words
    if not in_seeded_rng():
        torch.default_generator.manual_seed(torch_seed(seed))     # the CPU's: CUDA's untouched


def torch_seed(seed: int) -> int:
    """The seed of torch's global CPU generator in a new run of ``train`` with ``seed``: a
    fixed odd-multiplier mix of it (modulo 2**64), so that the global stream is not the task
    stream's (``torch.Generator(seed)``)."""
    return (seed * 0x9E3779B97F4A7C15 + 0x632BE59BD9B4E019) % 2 ** 64


def thread_note(out_dir, stored, threads: int) -> str | None:
    """The warning for resuming the run in ``out_dir`` whose checkpoint was written with
    ``stored`` intra-op threads (``torch.get_num_threads()``, its ``state.json``'s
    ``threads``) on ``threads`` now; None when they agree or the checkpoint does not store
    them (written before it did). A resume is not refused for it (a run may be moved to
    another machine on purpose), but reductions split over another number of threads sum in
    another order: a convolution model's (Conv4's) numbers then differ from an
    uninterrupted run's in the last bits, and more as training goes on."""
    if not isinstance(stored, int) or isinstance(stored, bool) or stored == threads:
        return None
    return (f"warning: resuming {out_dir} with {threads} torch thread(s) (--threads, "
            f"OMP_NUM_THREADS), but its checkpoint was written with {stored}: the numbers "
            f"will differ from an uninterrupted run's wherever they depend on the thread "
            f"count (Conv4 and other convolution models do); resume with {stored} thread(s) "
            f"(metaloop --threads {stored}, torch.set_num_threads({stored})) for a bit-exact "
            f"continuation")


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
    groups = [{k: float(v) if torch.is_tensor(v) and v.dim() == 0 else v     # a device lr
               for k, v in g.items()} for g in sd["param_groups"]]
    return tensors, groups


def _load_optim(opt, tensors, groups) -> None:
    state: dict = {}
    for key, v in tensors.items():
        if key.startswith("optim."):
            _, i, k = key.split(".", 2)
            state.setdefault(int(i), {})[k] = v
    # how this optimizer runs stays this run's (a graph run resumes without one, and back)
    # (torch places the state, e.g. Adam's step count, by the loaded groups' flags)
    groups = [{**saved, **{k: g[k] for k in _OPTIM_EXECUTION if k in g}}
              for saved, g in zip(groups, opt.param_groups)]
    lrs = [g["lr"] for g in opt.param_groups]
    opt.load_state_dict({"state": state, "param_groups": groups})
    for g, lr in zip(opt.param_groups, lrs):
        if torch.is_tensor(lr):                  # keep the device tensor a CUDA graph reads
            g["lr"] = lr.fill_(float(g["lr"]))


_OPTIM_EXECUTION = ("capturable", "foreach", "fused", "differentiable")


# Keys that choose how the same numbers are computed, not which: a run may resume with other
# values (e.g. a run begun on a GPU with vmap batching continues on the CPU with the loop;
# tests/meta/test_fast_paths.py and test_checkpoint.py check that they agree).
EXECUTION_KEYS = frozenset({"method.batching", "method.recompute_inner_loop",
                            "method.checkpoint", "method.compile",
                            "train.checkpoint_every", "train.prefetch", "train.log_every",
                            "train.cuda_graph"})


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
        elif va != vb and json.dumps(va) != json.dumps(vb):       # (a NaN: equal as JSON)
            out.append(f"{prefix}{k} ({va!r} != {vb!r})")
    return out


def model_buffers(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """The model's persistent buffers by ``state_dict`` name (a user's torch BatchNorm's
    running statistics and ``num_batches_tracked``, ...): saved beside the parameters, so
    that a resumed run and a loaded one have them as training left them. A buffer shared
    under several names (a module registered twice) goes by its first name, once: the
    checkpoint's safetensors holds no two names for one tensor. metaloop's own networks
    have none."""
    params = {n for n, _ in model.named_parameters(remove_duplicate=False)}
    out: dict[str, torch.Tensor] = {}
    seen: set[int] = set()
    for n, t in model.state_dict(keep_vars=True).items():
        if n not in params and isinstance(t, torch.Tensor) and id(t) not in seen:
            seen.add(id(t))
            out[n] = t
    return out


def load_model_buffers(model: torch.nn.Module, tensors: dict, where: str) -> None:
    """Copy the checkpoint's ``buffer.*`` tensors into ``model``'s buffers (a checkpoint
    written before buffers were saved has none: they keep their values).

    Raises:
        ValueError: a stored buffer whose shape differs from the model's (naming both).
    """
    for n, b in model_buffers(model).items():
        t = tensors.get(f"buffer.{n}")
        if t is None:
            continue
        if t.shape != b.shape:
            raise ValueError(f"{where}: buffer {n} has shape {list(t.shape)} in the checkpoint, "
                             f"{list(b.shape)} in the model")
        with torch.no_grad():
            b.copy_(t)


def save_run(out_dir, iteration, learner, opt, generator, config, *,
             tasks_state: torch.Tensor | None = None, extra: dict | None = None) -> Path:
    """Checkpoint the model, optimizer, RNG states, iteration and config atomically.

    ``tasks_state``: the task generator's state to store instead of its current one (with
    prefetching, the state before the meta-batch drawn ahead); ``extra``: more JSON state.
    """
    tensors = {f"model.{n}": p for n, p in learner.model.named_parameters()}
    tensors.update({f"buffer.{n}": b for n, b in model_buffers(learner.model).items()})
    tensors.update({f"learner.{k}": v for k, v in extra_state(learner).items()})
    ot, groups = _optim_tensors(opt)
    rt, rstate = _rng_state(generator, tasks_state)
    return save_checkpoint(out_dir, iteration, {**tensors, **ot, **rt},
                           {"config": config or {}, "optimizer": {"param_groups": groups},
                            **rstate, **(extra or {})})


def check_resume_config(out_dir, state: dict, config: dict | None,
                        flags: dict[str, str] | None = None) -> None:
    """Refuse to resume the run in ``out_dir`` (its checkpoint's ``state``) with a ``config``
    that differs from the one it was trained with, naming the keys (execution-only keys may
    differ), and beside each the command-line flag that set it where ``flags`` (config key
    ``"eval.tasks"`` -> ``"--tasks"``) names one. ``config`` is compared as the checkpoint
    stores it, as JSON: a tuple as a list, a key as a string."""
    diff = _config_diff(state.get("config", {}), json.loads(json.dumps(config or {})))
    flags = flags or {}
    diff = [d.replace(" ", f" ({flags[d.split(' ', 1)[0]]}) ", 1)
            if d.split(" ", 1)[0] in flags else d for d in diff]
    if diff:
        more = ("; to train a finished run further, start a new run from its weights "
                "(config train.init = the run's directory, --out another directory)"
                if any(d.startswith("train.iterations") for d in diff) else "")
        raise ValueError(f"refusing to resume {out_dir}: the config differs in "
                         + ", ".join(diff) + more)


def check_resume_args(out_dir, state: dict, args: dict) -> None:
    """Refuse to resume the run in ``out_dir`` (its checkpoint's ``state``) with ``train``
    arguments (``train_args``) that change the numbers of the iterations still to run: its
    ``meta_batch``, ``lr``, ``lr_schedule`` (and ``iterations``, which the run's schedule
    reads unless it is "constant"), ``optimizer``, ``weight_decay``, ``clip_grad_norm``,
    ``seed``, or another learner (``learner``: a MAML run resumed as Reptile) or other
    settings of it (``learner.first_order``: a MAML run resumed as FOMAML, ``learner.inner.
    lr``, ...; see ``learner_settings``), naming each with the run's value and the one given.
    Only what the checkpoint stores is checked: one written before a setting was stored
    is not checked for it, and one written before any was stored is checked for its
    optimizer only (Adam's groups hold ``betas``, SGD's do not)."""
    stored = state.get("train_args")
    if not isinstance(stored, dict):
        groups = state.get("optimizer", {}).get("param_groups") or [{}]
        stored = {"optimizer": "adam" if "betas" in groups[0] else "sgd"}
    given = json.loads(json.dumps(args))                  # as the checkpoint stores it
    keys = [k for k in given if k != "iterations"
            or stored.get("lr_schedule", "constant") != "constant"]
    if "learner" in stored and stored["learner"] != given.get("learner"):
        keys = [k for k in keys if not k.startswith("learner.")]   # another learner's own
    diff = [f"{k} ({stored[k]!r} != {given[k]!r})" for k in keys
            if k in stored and stored[k] != given[k]]
    if diff:
        raise ValueError(f"refusing to resume {out_dir}: it was trained with other "
                         f"arguments, which would not give an uninterrupted run's numbers: "
                         + ", ".join(diff) + "; resume with the run's values, or start a "
                         "new run in another out_dir from this run's weights "
                         "(metaloop.recipes.training.init_from)")


def _train_args(iterations, meta_batch, lr, lr_schedule, optimizer, weight_decay,
                clip_grad_norm, seed, learner) -> dict:
    """The ``train`` arguments a checkpoint stores (``state.json``'s ``train_args``) and a
    resume checks (``check_resume_args``): those that set the numbers of the iterations, the
    task stream's ``seed``, and the learner's settings (``learner_settings``)."""
    return {"iterations": iterations, "meta_batch": meta_batch, "lr": lr,
            "lr_schedule": lr_schedule, "optimizer": optimizer,
            "weight_decay": weight_decay, "clip_grad_norm": clip_grad_norm, "seed": seed,
            **learner_settings(learner)}


# A learner's (or its inner rule's) attributes that choose how the same numbers are computed
# (as EXECUTION_KEYS), that are derived from the model, or that set test-time adaptation only
# (Reptile's test_batch: no training number depends on it): a resume may differ in them.
_EXECUTION_ATTRS = frozenset({"batching", "compile", "recompute_inner_loop", "checkpoint",
                              "path_fn", "names", "test_batch"})
# Settings the head learners and Reptile keep in private attributes that change the numbers:
# stored under their constructors' names (``ProtoNet(transductive=, refine=, ...)``).
_RESULT_PRIVATE = frozenset({"_transductive", "_refine", "_refine_temperature",
                             "_refine_weight"})


def learner_settings(learner) -> dict:
    """What a checkpoint stores of ``learner`` (under ``train_args``) for a resume to check:
    ``"learner"``, its method (``MAML``, ``ANIL``, ``Reptile``, ``HeadLearner``, a class of
    your own: its name), ``"learner.inner"``, the class of its adaptation rule
    (``SGDAdapter``, ``RidgeSolver``: R2D2, ``NewtonSolver``: MetaOptNet, ...), and
    ``"learner.<name>"`` / ``"learner.inner.<name>"`` for each public attribute of a
    metaloop learner and its rule that holds a bool, number, string, None or list of them
    (``first_order``, ``inner.lr``, ``inner.steps``, ``inner.loss``, ``adam_state``, ...),
    except those that only choose how the numbers are computed (``batching``, ``compile``,
    ``recompute_inner_loop``, ``checkpoint``), and the settings kept in private attributes
    that change the numbers (``transductive``, ``refine``, ``refine_temperature``,
    ``refine_weight``), under their constructors' names. A learner of your own is stored by
    its name alone: its attributes may be state that training changes."""
    def scalar(v) -> bool:
        return v is None or isinstance(v, bool | int | float | str)

    name = getattr(learner, "_method", None)
    out: dict[str, Any] = {"learner": name if isinstance(name, str)
                           else type(learner).__name__}
    inner = getattr(learner, "inner", None)
    if inner is not None:
        out["learner.inner"] = type(inner).__name__
    if not type(learner).__module__.startswith("metaloop."):
        return out
    for prefix, obj in (("learner.", learner), ("learner.inner.", inner)):
        for k, v in vars(obj).items() if obj is not None else ():
            if k in _RESULT_PRIVATE and scalar(v):
                out.setdefault(prefix + k[1:], v)          # under its constructor's name
            if k.startswith("_") or k in _EXECUTION_ATTRS:
                continue
            if isinstance(v, list | tuple) and all(scalar(x) for x in v):
                out[prefix + k] = list(v)
            elif scalar(v) and not (isinstance(v, float) and not math.isfinite(v)):
                out[prefix + k] = v
    return out


def check_resume_data(out_dir, state: dict, data: dict | None) -> None:
    """Refuse to resume the run in ``out_dir`` on data whose fingerprint (``data``, see
    ``metaloop.build.data_fingerprint``) differs from the one its checkpoint ``state`` stores,
    naming what changed in the words of ``metaloop.build.data_changes`` (a checkpoint without
    one, or no ``data``, is not checked)."""
    stored = state.get("data")
    if data is None or not isinstance(stored, dict) or stored.get("sha256") == data["sha256"]:
        return
    what = f"{data['family']} {data['root']}"
    if stored.get("root") != data["root"]:
        what += f" (the run read {stored.get('root')})"
    change = data_changes(stored, data, resume=True)
    raise ValueError(f"refusing to resume {out_dir}: the data changed since its checkpoint "
                     f"({what}: {change}), so it would not give an uninterrupted run's "
                     f"numbers; restore the data as the run read it, or start a new run from "
                     f"this run's weights (config train.init = {str(out_dir)!r}, --out another "
                     f"directory)")


def _load_for_resume(out_dir, config, learner, precision: str,
                     data: dict | None = None, iterations: int | None = None,
                     args: dict | None = None) -> tuple[dict, dict]:
    """The newest checkpoint of ``out_dir``, checked against this run before anything of it
    is applied.

    Raises:
        ValueError: ``out_dir`` is a checkpoint directory, or holds a ``metaloop vae
            --protocol iwae`` run; the run is already past ``iterations``; the config
            differs (naming the keys), or the ``train`` arguments (``args``, see
            ``check_resume_args``), or the data's fingerprint (``data``); the run was
            trained at another ``precision``; the checkpoint lacks state or tensors a resume
            needs, or holds a model tensor of another shape or one the model lacks (naming
            them).
    """
    check_run_dir(out_dir)
    tensors, state = load_checkpoint(out_dir)
    if protocol_run(state):
        raise ValueError(f"refusing to resume {out_dir}: it holds a VAE of metaloop vae "
                         f"--protocol iwae (at pass {state['passes']}), not a meta-learning "
                         f"run; give the run directory of a meta-learning run, or another "
                         f"out_dir for a new one")
    if iterations is not None and state["iteration"] > iterations:
        raise ValueError(f"refusing to resume {out_dir}: the run is already at iteration "
                         f"{state['iteration']}, past the {iterations} iterations asked for; "
                         f"a resume only goes forward (the run is left as it was: load or "
                         f"evaluate it as it is, or ask for at least {state['iteration']} "
                         f"iterations)")
    check_resume_config(out_dir, state, config)
    if args is not None:
        check_resume_args(out_dir, state, args)
    check_resume_data(out_dir, state, data)
    stored = state.get("precision")              # absent: written before it was stored
    if stored is not None and stored != precision:
        raise ValueError(f"refusing to resume {out_dir}: it was trained with precision "
                         f"{stored!r}, this run asks for {precision!r} (metaloop train "
                         f"--precision {stored})")
    where = f"checkpoint {out_dir} (iteration {state['iteration']}) is corrupt"
    missing = [k for k in ("optimizer", "rng") if not isinstance(state.get(k), dict)]
    if missing:
        raise ValueError(f"{where}: its state.json lacks {missing}")
    want = {f"model.{n}": p.shape for n, p in learner.model.named_parameters()}
    missing = sorted({*want, "rng.tasks", "rng.torch"} - set(tensors))
    if missing:
        raise ValueError(f"{where}: it lacks the tensors {missing}")
    bad = [f"{k} {list(tensors[k].shape)} (the model's: {list(v)})"
           for k, v in want.items() if tensors[k].shape != v]
    if bad:
        raise ValueError(f"{where} or of another model: " + ", ".join(bad))
    extra = sorted(k for k in tensors if k.startswith("model.") and k not in want)
    if extra:                   # another network's (its optimizer state would not fit)
        raise ValueError(f"{where} or of another model: it holds the tensors {extra}, which "
                         f"the model lacks")
    return tensors, state


def _truncate_log(out_dir: Path, iteration: int, log_every: int = 1) -> None:
    """Drop metrics lines written after the checkpoint (they will be redone), and a last line
    cut short by a crash. A log that is missing (deleted) while the checkpoint is past
    iteration 0 gets a note on stderr: its lines up to there are lost, and the log starts
    again after the checkpoint (the weights resume exactly); so does a log that ends
    ``log_every`` (the run's line interval, the larger of this session's and the stored
    config's) or more iterations before the checkpoint (cut short by hand, or restored from
    an older copy): its lines after its last are lost."""
    log = out_dir / "metrics.jsonl"
    if not log.exists():
        if iteration > 0:
            print(f"note: {log} is missing: its lines up to iteration {iteration} are lost; "
                  f"the log restarts after iteration {iteration}", file=sys.stderr)
        return
    if log.is_dir():
        raise ValueError(f"{log} is corrupt: a folder, not the run's metrics log (a file)")
    try:
        lines, keep, last = log.read_text().splitlines(), [], 0
    except UnicodeDecodeError as e:
        raise ValueError(f"{log} is corrupt: not UTF-8 text ({e})") from e
    for i, ln in enumerate(lines):
        try:
            rec = json.loads(ln)
        except json.JSONDecodeError as e:
            if i == len(lines) - 1:          # killed mid-write
                break
            raise ValueError(f"{log} line {i + 1} is corrupt: {e}") from e
        if not isinstance(rec, dict) or not isinstance(rec.get("iteration"), int):
            raise ValueError(f"{log} line {i + 1} is corrupt: not a metrics record with an "
                             f"integer 'iteration'")
        if rec["iteration"] <= iteration:
            keep.append(ln)
            last = max(last, rec["iteration"])
    atomic_write_text(log, "".join(ln + "\n" for ln in keep))
    if iteration - last >= log_every:
        print(f"note: {log} ends at iteration {last}, {iteration - last} before the "
              f"checkpoint's {iteration}: its lines of iterations {last + 1} to {iteration} "
              f"are lost; the log goes on after iteration {iteration}", file=sys.stderr)


def _stored_log_every(state: dict) -> int:
    """The ``train.log_every`` of a checkpoint's stored config (its earlier sessions' line
    interval); 1 where it stores none."""
    cfg = state.get("config")
    train = cfg.get("train") if isinstance(cfg, dict) else None
    n = train.get("log_every") if isinstance(train, dict) else None
    return n if isinstance(n, int) and not isinstance(n, bool) and n > 0 else 1


def _resume(out_dir: Path, learner, opt, generator, config, lead: bool,
            precision: str, data: dict | None = None,
            iterations: int | None = None, args: dict | None = None,
            log_every: int = 1) -> tuple[int, dict]:
    """Restore everything from the newest checkpoint; returns its iteration and its state.

    Rank 0 reads the checkpoint and sends it (or its error) to the other ranks, so that only
    rank 0 needs the run directory.
    """
    tensors, state = distributed.from_rank0(
        lambda: _load_for_resume(out_dir, config, learner, precision, data, iterations,
                                 args),
        "the checkpoint to resume")
    with torch.no_grad():
        for n, p in learner.model.named_parameters():
            p.copy_(tensors[f"model.{n}"])
    load_model_buffers(learner.model, tensors, f"checkpoint {out_dir}")
    load_extra_state(learner, tensors)
    _load_optim(opt, tensors, state["optimizer"]["param_groups"])
    _set_rng_state(generator, tensors, state)
    it = state["iteration"]
    if lead:
        remove_stale(out_dir)
        _truncate_log(out_dir, it, max(log_every, _stored_log_every(state)))
        note = thread_note(out_dir, state.get("threads"), torch.get_num_threads())
        if note is not None:
            print(note, file=sys.stderr)
    return it, state


class _Cast:
    """A task family whose batches are moved to the model's device and dtype.

    It satisfies ``metaloop.tasks.TaskFamily`` with the wrapped family's own attributes, read
    through explicit properties (None where the family has no such attribute, e.g. ``ways`` of
    a regression family).
    """

    def __init__(self, family, device: torch.device, dtype: torch.dtype):
        self.family, self.device, self.dtype = family, device, dtype

    def sample(self, n: int, generator=None):
        """The family's batch (checked where it was made), moved without checking it again:
        ``TaskBatch``'s checks read labels back, a host synchronisation on a GPU."""
        b = self.family.sample(n, generator=generator)
        if not isinstance(b, TaskBatch):
            raise ValueError(f"{type(self.family).__name__}.sample must return a TaskBatch, "
                             f"got {type(b).__name__}")

        def mv(t):
            return None if t is None else t.to(
                self.device, self.dtype if t.is_floating_point() else None)
        return _unchecked_batch(mv(b.support_x), mv(b.support_y), mv(b.query_x),
                                mv(b.query_y), mv(b.classes))

    def with_shots(self, shots: int, queries: int | None = None) -> _Cast:
        return _Cast(self.family.with_shots(shots, queries), self.device, self.dtype)

    kind = property(lambda self: self.family.kind)
    shots = property(lambda self: self.family.shots)
    queries = property(lambda self: self.family.queries)
    ways = property(lambda self: getattr(self.family, "ways", None))
    num_classes = property(lambda self: getattr(self.family, "num_classes", None))
    class_names = property(lambda self: getattr(self.family, "class_names", None))
    image_shape = property(lambda self: getattr(self.family, "image_shape", None))

    @property
    def input_shape(self) -> tuple[int, ...]:
        """The wrapped family's ``input_shape`` (older families: ``image_shape`` or
        ``(in_dim,)``)."""
        for name in ("input_shape", "image_shape"):
            shape = getattr(self.family, name, None)
            if shape is not None:
                return tuple(shape)
        return (self.family.in_dim,)

    def __repr__(self) -> str:
        return f"_Cast({self.family!r}, device={self.device}, dtype={self.dtype})"


def on_model(family, model: torch.nn.Module):
    """``family`` itself for a float32 CPU model or a family that already samples on the
    model's device in its dtype (``metaloop.tasks.DeviceTasks``), else one that casts its
    batches."""
    p = next(model.parameters(), None)
    if family is None or p is None or (p.dtype, p.device.type) == (torch.float32, "cpu"):
        return family
    if (getattr(family, "device", None), getattr(family, "dtype", None)) == (p.device, p.dtype):
        return family
    return _Cast(family, p.device, p.dtype)


def _generator_device(family) -> torch.device:
    """Where the task generator lives: ``family.generator_device`` for families that sample
    on an accelerator (``metaloop.tasks.DeviceTasks``), else the CPU."""
    return torch.device(getattr(family, "generator_device", None) or "cpu")


class _Sampler:
    """The meta-batches of a run, each drawn from ``generator``; with ``prefetch``, the next
    one is drawn in a background thread while the current one trains.

    Exactness: the batches are drawn in the same order from the same generator either way, so
    prefetching changes no number. ``tasks_state`` is the generator's state as if no batch had
    been drawn ahead (taken before a draw is handed to the thread, when no draw is running),
    which is what a checkpoint must store. An exception in the thread is raised in the caller
    of ``next``, at the iteration that needed the batch. ``family.sample`` must draw from the
    generator it is given only (not from the global RNGs, which the training thread uses).
    """

    def __init__(self, family, n: int, generator: torch.Generator, prefetch: bool,
                 remaining: int):
        self.family, self.n, self.generator, self._left = family, n, generator, remaining
        self._pool = (ThreadPoolExecutor(1, thread_name_prefix="metaloop-prefetch")
                      if prefetch and remaining > 1 else None)
        # (generator state before the draw, its future)
        self._pending: tuple[torch.Tensor, Future] | None = None

    def _draw(self):
        return self.family.sample(self.n, generator=self.generator)

    def next(self):
        """The next meta-batch (and, with prefetch, the draw of the one after starts)."""
        if self._pending is None:
            batch = self._draw()
        else:
            _, future = self._pending
            self._pending = None
            batch = future.result()     # re-raises the thread's exception here
        self._left -= 1
        if self._pool is not None and self._left > 0:
            self._pending = (self.generator.get_state(), self._pool.submit(self._draw))
        return batch

    def tasks_state(self) -> torch.Tensor:
        """The generator state after the batches handed out so far (none drawn ahead)."""
        return self.generator.get_state() if self._pending is None else self._pending[0]

    def close(self) -> None:
        """Wait for a draw in flight (its batch, or error, belongs to an iteration that will
        not run) and stop the thread."""
        if self._pool is not None:
            self._pool.shutdown(wait=True, cancel_futures=True)


def _resolve_prefetch(prefetch, family, model: torch.nn.Module) -> bool:
    """``prefetch`` as a bool. ``"auto"``: on where it measurably helps, i.e. a CUDA model fed
    from a host-side family (the host draws the next batch while the device computes). On
    the CPU the draw is well under 1% of a meta-iteration for the built-in families
    (benchmarks/bench_sampling.py), and a sampling thread competes with the training threads
    for the cores, so it is off."""
    if prefetch == "auto":
        p = next(model.parameters(), None)
        return (p is not None and p.device.type == "cuda"
                and _generator_device(family).type == "cpu")
    if not isinstance(prefetch, bool):
        raise ValueError(f"prefetch must be True, False or 'auto', got {prefetch!r}")
    return prefetch


def _resolve_log_every(log_every, model: torch.nn.Module) -> int:
    """``log_every`` as an int: None means 1 for a CPU model (a line per iteration, which
    costs nothing there) and ``CUDA_LOG_EVERY`` on an accelerator, where each read of a metric
    waits for the device."""
    if log_every is None:
        p = next(model.parameters(), None)
        return 1 if p is None or p.device.type == "cpu" else CUDA_LOG_EVERY
    _positive_int("log_every", log_every)
    return log_every


CUDA_LOG_EVERY = 100
PRECISIONS = ("float32", "bf16")


class _Window:
    """The metrics of the iterations since the last log line, summed where they are: Python
    floats on the host, tensors (e.g. a learner's device-side loss) on their device, so that
    adding them needs no host synchronisation. ``read`` gives the means (one read per
    tensor) and starts a new window; ``state``/``load`` carry an open window through a
    checkpoint, so that a resumed run logs exactly the lines of an uninterrupted one."""

    def __init__(self):
        self.sums: dict = {}
        self.count = 0

    def add(self, metrics: dict) -> None:
        for k, v in metrics.items():
            v = v.detach().double() if torch.is_tensor(v) else v
            self.sums[k] = v if k not in self.sums else self.sums[k] + v
        self.count += 1

    def read(self) -> dict[str, float]:
        out = {k: float(s) / self.count for k, s in self.sums.items()}
        self.sums, self.count = {}, 0
        return out

    def state(self) -> dict:
        return {"count": self.count, "sums": {k: float(s) for k, s in self.sums.items()}}

    def load(self, state: dict | None) -> None:
        state = state or {"count": 0, "sums": {}}
        self.sums, self.count = dict(state["sums"]), state["count"]


class _FiniteGuard:
    """Keeps the non-finite check's guarantee without a host synchronisation per step.

    Each step adds a flag, computed on the gradients' device, saying whether its meta-loss and
    meta-gradient are finite (a loss that is already a Python float is checked at once).
    ``check`` reads the flags gathered since the last check in one transfer and raises
    ``NonFiniteLossError`` naming the first bad iteration. The loop checks before the Adam
    step of each logged iteration and before every checkpoint, so a checkpoint never holds
    parameters that a non-finite step touched, and the run stops with the last good one.
    It also checks once ``WINDOW`` flags are waiting (one transfer per ``WINDOW`` steps), so
    that a run logging rarely does not hold a flag and a loss per step until its next log
    line (about 1.2 kB a step, 130 MB per 100,000 steps).
    """

    WINDOW = 1024

    def __init__(self, where: str):
        self.where = where
        self._flags: list[tuple] = []   # [(iteration, flag tensor, loss)]

    def add(self, iteration: int, loss, grads: dict) -> None:
        if not torch.is_tensor(loss) and not math.isfinite(loss):
            self._raise(iteration, loss)
        flags = [torch.isfinite(g).all() for g in grads.values()]
        if torch.is_tensor(loss):
            flags.append(torch.isfinite(loss.detach()).all())
        if flags:
            self._flags.append((iteration, torch.stack(flags).all(), loss))
            self._bounded()

    def add_flag(self, iteration: int, flag: torch.Tensor, loss) -> None:
        """A step's finite flag computed elsewhere (a replayed CUDA graph's)."""
        self._flags.append((iteration, flag, loss))
        self._bounded()

    def _bounded(self) -> None:
        if len(self._flags) >= self.WINDOW:
            self.check()

    def check(self) -> None:
        if not self._flags:
            return
        flags, self._flags = self._flags, []
        ok = torch.stack([f for _, f, _ in flags]).cpu()       # the one read of the window
        if not bool(ok.all()):
            it, _, loss = flags[int((~ok).nonzero()[0])]
            self._raise(it, loss)

    def _raise(self, iteration: int, loss) -> None:
        loss = float(loss) if torch.is_tensor(loss) else loss
        raise NonFiniteLossError(f"non-finite meta-loss/gradient at iteration {iteration} "
                                 f"(loss {loss})" + self.where)


def _step_gradient(learner, batch, shard, stop: _StopSignals, iteration: int):
    """This iteration's meta-gradient and metrics over the whole batch.

    ``shard`` is None in a single process, else ``(rank, world)``: the rank's slice of the
    batch is meta-learned and the results are averaged over the ranks, together with the
    ranks' stop requests. Returns (grads, metrics, whether any rank asked to stop), the last
    None in a single process.
    """
    if shard is None:
        with finite_guarded():          # the loop's _FiniteGuard reads the results instead
            grads, metrics = learner.meta_gradient(batch, with_metrics=True)
        return grads, metrics, None
    lo, hi = distributed.shard_bounds(batch.num_tasks, *shard)
    before = torch.get_rng_state()
    with finite_guarded():
        grads, metrics = shard_gradient(learner, batch, lo, hi)
    # dropout in a model of your own: the ranks drew for different tasks (a learner with
    # skip_tasks leaves every rank in one state itself)
    drew = getattr(learner, "skip_tasks", None) is None \
        and not torch.equal(before, torch.get_rng_state())
    grads, metrics, agreed, drew = distributed.reduce_step(
        grads, metrics, (hi - lo) / batch.num_tasks, stop.name is not None,
        f"iteration {iteration}", drew)
    if drew:                            # as a resume restores it: rank 0's on every rank
        distributed.broadcast_rng(f"iteration {iteration}")
    return grads, metrics, agreed


def check_shardable(learner, world: int) -> None:
    """Whether ``learner``'s meta-batch may be split over ``world`` ranks.

    Raises:
        ValueError: Reptile's ``adam_state='shared'`` (one inner-Adam state carried through
            the tasks in order).

    Warns:
        distributed.ShardWarning: a learner that pools every task's examples into one batch
            (the pretraining baseline) over a network with BatchNorm: each rank normalises
            its own shard, so the run is not the single-process run.
    """
    if world <= 1:
        return
    if getattr(learner, "adam_state", None) == "shared":
        raise ValueError("adam_state='shared' carries one inner-Adam state through the tasks "
                         "in order, so its meta-batch cannot be split over ranks; train it in "
                         "one process, or use adam_state='task'")
    norms = (BatchNorm, torch.nn.modules.batchnorm._BatchNorm)
    if getattr(learner, "pools_tasks", False) and any(
            isinstance(m, norms) for m in learner.model.modules()):
        warnings.warn(f"{type(learner).__name__} normalises its whole meta-batch as one "
                      f"batch, so on {world} ranks each BatchNorm sees only its rank's shard: "
                      f"the run trains, but it is not the single-process run (as "
                      f"DistributedDataParallel without SyncBatchNorm)",
                      distributed.ShardWarning, stacklevel=3)


def shard_gradient(learner, batch, lo: int, hi: int):
    """One rank's ``meta_gradient(batch.slice(lo, hi), with_metrics=True)``. A learner that
    draws from the global torch RNG per task (Reptile's mini-batch seeds: ``skip_tasks``)
    first skips the draws of the tasks before ``lo`` and then those after ``hi``, so each
    task gets the draw it gets in one process and every rank ends the step in the same RNG
    state."""
    skip = getattr(learner, "skip_tasks", None)
    if skip is not None:
        skip(lo)
    out = learner.meta_gradient(batch.slice(lo, hi), with_metrics=True)
    if skip is not None:
        skip(batch.num_tasks - hi)
    return out


LR_SCHEDULES = ("constant", "cosine", "linear")
# The outer optimizers: Adam, or plain SGD (Reptile's own outer step, with "linear" from 1.0)
OPTIMIZERS = ("adam", "sgd")


def scheduled_lr(lr: float, schedule: str, it: int, iterations: int) -> float:
    """The outer learning rate of 0-based iteration ``it`` of ``iterations``."""
    if schedule == "cosine":
        return lr * 0.5 * (1.0 + math.cos(math.pi * it / iterations))
    if schedule == "linear":
        return lr * (1.0 - it / iterations)
    return lr


def _norm(grads: dict) -> float:
    return float(torch.sqrt(sum(g.double().pow(2).sum() for g in grads.values())))


def _clip(grads: dict, max_norm: float, norm: float | None = None) -> dict:
    """``grads`` scaled to a global L2 norm of at most ``max_norm`` (``norm``: theirs, if
    already known)."""
    norm = _norm(grads) if norm is None else norm
    scale = min(1.0, max_norm / max(norm, 1e-300))
    return {n: g * scale for n, g in grads.items()} if scale < 1.0 else grads


def _holds_run_folder(fn: Callable[P, R]) -> Callable[P, R]:
    """``train`` holding the lock of its ``out_dir`` (``metaloop.runlock``) for the whole
    run, before anything there is read; under torchrun rank 0 alone takes it (it alone
    writes) and every rank gets its verdict, so a held folder stops every rank alike
    (``metaloop train`` takes it before the config is read, and tells every rank too).
    A run that fails before writing anything removes the folder the lock created."""
    @functools.wraps(fn)
    def train(learner, family, **kwargs):
        out = kwargs.get("out_dir")
        token, lead = None, distributed.rank_world()[0] == 0
        if out is not None and distributed.startup_open():
            # metaloop train: the lock is held and agreed already; no collective here, which
            # would end the start-up before its warnings are compared
            token = runlock.acquire(out) if lead else None
        elif out is not None:
            token = distributed.from_rank0(lambda: runlock.acquire(out), "the run folder's lock")
            token = token if lead else None                                # rank 0's own
        try:
            result = fn(learner, family, **kwargs)
        except BaseException:
            runlock.release(token, discard=True)
            raise
        runlock.release(token)
        return result
    return cast("Callable[P, R]", train)                  # fn's signature (functools.wraps)


def _keeps_host_rngs(fn: Callable[P, R]) -> Callable[P, R]:
    """``train`` giving the caller back Python's, NumPy's and torch's global CPU random
    states: a run seeds them (``_seed_global_rngs``) or restores its checkpoint's, for its
    own draws and checkpoints, and that must not change what the caller draws next."""
    @functools.wraps(fn)
    def train(*args, **kwargs):
        py, npy, tch = random.getstate(), np.random.get_state(), torch.get_rng_state()
        try:
            return fn(*args, **kwargs)
        finally:
            random.setstate(py)
            np.random.set_state(npy)
            torch.set_rng_state(tch)
    return cast("Callable[P, R]", train)                  # fn's signature (functools.wraps)


@_keeps_host_rngs
@_holds_run_folder
def train(learner, family, *, iterations: int, meta_batch: int, lr: float = 1e-3,
          seed: int = 0, out_dir=None, resume: bool = False, val_family=None,
          val_every: int = 0, val_tasks: int = 100, val_seed: int = 1_000_003,
          checkpoint_every: int = 1000,
          config: dict | None = None, progress: bool = True, desc: str = "meta-train",
          lr_schedule: str = "constant", clip_grad_norm: float = 0.0,
          prefetch: bool | str = "auto", log_every: int | None = None,
          precision: str = "float32", optimizer: str = "adam",
          weight_decay: float = 0.0, cuda_graph: bool = False,
          data: dict | None = None) -> dict:
    """Meta-train ``learner`` with Adam on ``meta_gradient`` over tasks from ``family``.

    Each iteration samples ``meta_batch`` tasks from a ``torch.Generator(seed)`` stream, takes
    the learner's meta-gradient and applies one Adam step. For a model on an accelerator or
    in float64, batches are cast to its device and dtype; a float32 model on the CPU takes
    them as the family gives them (a float64 family is refused by name at the first step).
    With ``out_dir``: ``metrics.jsonl`` gets a line every ``log_every``
    iterations, and checkpoints are written every ``checkpoint_every`` iterations and at the
    end; ``resume=True`` continues from the newest checkpoint exactly (bit for bit) with the
    same number of torch intra-op threads (``torch.get_num_threads()``, stored in each
    checkpoint's ``state.json`` as ``threads``: with another, a convolution model's numbers
    differ in the last bits, and a resume prints a warning on stderr naming both). Each
    checkpoint's ``state.json`` holds ``cpu_seconds``, the process CPU time the run has taken
    so far, summed over resumed segments (absent in a torchrun run, and after resuming a
    checkpoint that lacks it): the budget that ``metaloop eval --record`` reports.

    Inside an initialised ``torch.distributed`` process group (see ``metaloop.train.
    distributed``) every rank samples the same meta-batch, meta-learns its shard, and the
    meta-gradients and metrics are averaged over the ranks; rank 0 alone validates and writes
    logs and checkpoints. Parameters start from rank 0's.

    Ctrl-C (SIGINT) or SIGTERM stops after the current iteration: a checkpoint is written and
    KeyboardInterrupt raised.

    Args:
        learner: a metaloop learner (``metaloop.meta.Learner``: ``meta_gradient`` and a
            ``model``, an ``nn.Module``); Scratch (``meta_trains = False``) is saved
            untrained; an ``Ensemble`` is refused (it is trained by training its members).
        family: the meta-training task family (``metaloop.tasks.TaskFamily``); a
            ``metaloop.tasks.DeviceTasks`` samples on its device with a generator there.
        iterations: outer steps in total.
        meta_batch: tasks per outer step (at least the number of ranks).
        lr: the outer optimizer's learning rate (Adam's by default).
        seed: decides every random draw of the training given the learner as it comes
            (its initial weights are the caller's): the task stream, ``torch.Generator
            (seed)``, and, in a new run, Python's, NumPy's and torch's global CPU RNGs,
            seeded from it (torch's with ``torch_seed(seed)``) for the run's duration:
            Reptile's per-task mini-batches (``inner_batch > 0``) and a CPU model's dropout
            draw from torch's. Checkpoints store these states and a resume restores them, so
            identical runs write identical checkpoints whatever the caller drew before, and
            the caller's global states are as they were after the call. A CUDA device's
            generator (dropout on a GPU) is not seeded. A resume is refused with another
            seed.
        lr_schedule: ``"constant"``; ``"cosine"``: step t (1-based) of T uses
            ``lr * (1 + cos(pi * (t - 1) / T)) / 2``; ``"linear"``: ``lr * (1 - (t - 1) / T)``
            (both reach 0 just after the last step). The rate is a function of the iteration
            alone, so a resumed run follows the same schedule.
        clip_grad_norm: if > 0, rescale the meta-gradient to at most this global L2 norm
            before the Adam step (``metrics.jsonl`` then logs ``grad_norm``, before
            clipping). One task whose inner loop diverges can otherwise give a gradient of
            1e20 that fills Adam's second moment and stalls training for thousands of steps.
            Reading the norm synchronises with the device once per step.
        out_dir: the run directory (None: nothing is written). A new run (no ``resume``)
            is refused where ``out_dir`` already holds one, or holds files no metaloop run
            wrote (``foreign_entries``). The run holds the folder's lock
            (``metaloop.runlock``): a second process (or thread) on the same ``out_dir``
            is refused.
        resume: continue the run in ``out_dir`` from its newest checkpoint; a run already
            at ``iterations`` returns at once, one past ``iterations`` is refused. A resume
            is checked against what the checkpoint stores of the run (its ``state.json``'s
            ``train_args``, ``check_resume_args``): the arguments that set the numbers,
            ``seed``, and the learner, its method and settings (``learner_settings``).
        val_family: the held-out validation family (None: none; needed for
            ``val_every > 0``).
        val_every: validate every k iterations (0: no validation).
        val_tasks: how many tasks of ``val_family`` each validation scores.
        val_seed: the validation tasks are drawn from ``torch.Generator(val_seed)``
            (``metaloop train`` passes ``eval.seed``, so ``metaloop eval --split val`` scores
            the same tasks).
        checkpoint_every: with ``out_dir``, a checkpoint every k iterations (and at the end).
        config: JSON-serialisable dict stored in checkpoints (checked on resume and, for
            being JSON, before any iteration).
        progress: show a progress bar (rank 0 only; None: none, as ``evaluate`` takes it).
        desc: the bar's label.
        prefetch: draw the next meta-batch in a background thread while the current one
            trains (True / False), or ``"auto"``: on for a CUDA model fed by a host-side
            family, off on the CPU (see ``_resolve_prefetch``). Results are identical either
            way; ``family.sample`` must then draw only from the generator it is given.
        log_every: write a metrics line (the means over the iterations since the last one),
            update the progress bar and check for non-finite values every k iterations, and
            at validation and the last iteration; None: 1 on the CPU (a line per iteration),
            ``CUDA_LOG_EVERY`` on an accelerator, where metrics stay on the device between
            reads. Non-finite values are also checked before every checkpoint.
        precision: ``"float32"``, or ``"bf16"``: the meta-gradient under
            ``torch.autocast(dtype=torch.bfloat16)`` (float32 model only; opt-in).
        optimizer: the outer optimizer, ``"adam"`` or ``"sgd"`` (plain SGD: with Reptile's
            ``meta_gradient``, lr 1.0 and ``lr_schedule="linear"`` (step t of T uses
            ``lr * (1 - (t - 1) / T)``) it is Nichol et al.'s outer update).
        weight_decay: if > 0, every meta-parameter decays towards 0: with Adam decoupled from
            the gradient (AdamW, Loshchilov & Hutter 2019: each step first multiplies the
            parameters by ``1 - lr_t * weight_decay``), with SGD as an L2 term added to the
            gradient. 0 (the default) is plain Adam or SGD.
        cuda_graph: record the whole step (meta-gradient, finite flag, a capturable Adam
            step) as one CUDA graph and replay it (``metaloop.train.graphs``): a CUDA model,
            tasks drawn on the GPU (``DeviceTasks``), one process, Adam, no clipping. The
            finite flags are read at the same cadence; a replayed step has already been
            applied when its flag is read, so a non-finite one stops the run before the next
            checkpoint, and the last good checkpoint is kept.
        data: a fingerprint of the data the run reads (``metaloop.build.data_fingerprint``;
            rank 0's), stored in each checkpoint's ``state.json`` beside the config; on
            resume, a checkpoint that stores another one is refused, naming what changed.

    Returns:
        ``{"iteration", "last": the last logged metrics, "val": last validation}``.

    Raises:
        NonFiniteLossError: with the iteration number; the last good checkpoint is kept.
        metaloop.train.checkpoint.WriteError: a checkpoint or metrics line could not be
            written (a full disk...), naming the file, the reason and the checkpoint kept
            (an OSError, and a ValueError: the command line exits 2 with its one line).
        ValueError: for non-positive iterations, meta_batch, lr, log_every,
            checkpoint_every or val_tasks, a negative val_every, val_every > 0 without a
            val_family, a seed that is not an int >= 0, a config or data that is not a
            JSON-serialisable dict, an ``Ensemble`` learner (train its members), a negative
            weight_decay, an unknown lr_schedule, prefetch or precision, fewer tasks than
            ranks; ``resume`` or ``cuda_graph`` other than True or False, ``progress``
            other than True, False or None
            (a string such as ``"False"`` would read as True); a ``learner`` that is no
            metaloop learner (no ``meta_gradient`` or ``model``: a bare ``nn.Module``), a
            ``family`` (or a ``val_family`` given) without ``sample`` (None: each named,
            with its type); ``resume`` without an ``out_dir``; an empty ``out_dir`` (``""``: the
            current directory); an ``out_dir`` that is one
            checkpoint (a ``ckpt-*`` directory) of a run; without ``resume``, an
            ``out_dir`` that already holds a run; or on
            resume: a run already past ``iterations``, a config mismatch (naming the
            differing keys), other ``meta_batch``, ``lr``, ``lr_schedule`` (and, with a
            schedule, ``iterations``), ``optimizer``, ``weight_decay`` or
            ``clip_grad_norm``, another ``seed``, learner or learner setting than the
            run's (``check_resume_args``, naming them with both values),
            another ``precision`` than the run's, another ``data``
            fingerprint, or a checkpoint that is corrupt (naming it). Nothing is written
            when any of these is raised.
        FileNotFoundError: ``resume=True`` where ``out_dir`` holds no checkpoint (the
            folder does not exist, has no ``LATEST``, or its ``LATEST`` names a checkpoint
            that lacks its files), naming the path; nothing is written.
        metaloop.runlock.RunInUseError: another process (or another thread of this
            one) writes to ``out_dir`` (it holds the folder's lock, ``.metaloop-lock``),
            naming it; before anything is read or
            written (a ValueError too).
        KeyboardInterrupt: after Ctrl-C/SIGTERM, once the checkpoint is written; in the
            last iteration or during the final checkpoint (the final checkpoint written:
            the run is complete) it carries the result as its ``result``.
        metaloop.train.distributed.DistributedError: another rank died or timed out.
    """
    resume = check_flag("resume", resume)
    progress = False if progress is None else check_flag("progress", progress)
    cuda_graph = check_flag("cuda_graph", cuda_graph)
    _check_learner(learner, family, val_family)
    _positive_int("iterations", iterations)
    _positive_int("meta_batch", meta_batch)
    _check_seed(seed)
    _check_intervals(log_every, checkpoint_every, val_every, val_tasks, val_family)
    _check_seed(val_seed, "val_seed", "the validation tasks")
    _check_json("config", config)
    _check_json("data", data)
    if isinstance(out_dir, str | os.PathLike) and not os.fspath(out_dir).strip():
        raise ValueError(f"out_dir is the empty path {os.fspath(out_dir)!r}, which would put "
                         f"the run's files in the current directory; name a folder (e.g. "
                         f"'runs/mine'), or None for a run that writes nothing")
    if resume and out_dir is None:             # nothing to continue: a fresh run was meant?
        raise ValueError("resume=True continues the run in out_dir, but out_dir is None; "
                         "pass the run directory, or resume=False for a run that writes "
                         "nothing")
    if not _number(lr) or not lr > 0 or not math.isfinite(lr):
        raise ValueError(f"lr must be a positive number, got {lr!r}")
    if not _number(clip_grad_norm) or not clip_grad_norm >= 0:
        raise ValueError(f"clip_grad_norm must be >= 0 (0: off), got {clip_grad_norm!r}")
    if not _number(weight_decay) or not weight_decay >= 0 \
            or not math.isfinite(weight_decay):
        raise ValueError(f"weight_decay must be a finite number >= 0 (0: off), got "
                         f"{weight_decay!r}")
    if lr_schedule not in LR_SCHEDULES:
        raise ValueError(f"unknown lr_schedule {lr_schedule!r}; choose one of "
                         f"{', '.join(LR_SCHEDULES)}")
    if optimizer not in OPTIMIZERS:
        raise ValueError(f"unknown optimizer {optimizer!r}; choose one of "
                         f"{', '.join(OPTIMIZERS)}")
    if precision not in PRECISIONS:
        raise ValueError(f"unknown precision {precision!r}; choose one of "
                         f"{', '.join(PRECISIONS)}")
    model_p = next(learner.model.parameters(), None)
    if precision == "bf16" and model_p is not None and model_p.dtype != torch.float32:
        raise ValueError(f"precision 'bf16' autocasts a float32 model, not {model_p.dtype}")
    prefetch = _resolve_prefetch(prefetch, family, learner.model)
    log_every = _resolve_log_every(log_every, learner.model)
    rank, world = distributed.rank_world()
    if cuda_graph:
        graphs.check_supported(learner.model, _generator_device(family), sharded=world > 1,
                               clip_grad_norm=clip_grad_norm, optimizer=optimizer,
                               prefetch=prefetch)
    if meta_batch < world:
        raise ValueError(f"meta_batch={meta_batch} is smaller than the {world} ranks: every "
                         f"rank needs at least one task")
    check_shardable(learner, world)
    lead, shard = rank == 0, ((rank, world) if world > 1 else None)
    on_cuda = model_p is not None and model_p.device.type == "cuda"
    capturable = cuda_graph and on_cuda            # the rate a device tensor the graph reads
    # Adam, or AdamW (Adam with decoupled weight decay) where there is weight decay: AdamW,
    # not Adam(decoupled_weight_decay=True), which torch before 2.7 does not have
    opt = torch.optim.SGD(learner.model.parameters(), lr=lr, weight_decay=weight_decay) \
        if optimizer == "sgd" else (torch.optim.AdamW if weight_decay > 0 else torch.optim.Adam)(
            learner.model.parameters(),
            lr=torch.tensor(float(lr), device=model_p.device) if capturable else lr,  # type: ignore[union-attr]  # capturable: on CUDA
            weight_decay=weight_decay, capturable=capturable)
    named = list(learner.model.named_parameters())     # the optimizer's, fixed for the run
    # a user's model's buffers (torch BatchNorm's running statistics): rank 0's on every rank
    buffers = list(model_buffers(learner.model).values()) if shard else []
    generator = torch.Generator(device=_generator_device(family)).manual_seed(seed)
    out = Path(out_dir) if out_dir is not None else None
    log_dir = out if lead else None
    family, val_family = on_model(family, learner.model), on_model(val_family, learner.model)
    window = _Window()
    # this run's CPU seconds in one process, carried through resumes (None: not known, e.g.
    # resumed from a checkpoint that lacks them, or torchrun, where rank 0 sees its own only)
    cpu_before: float | None = None if shard else 0.0
    args = _train_args(iterations, meta_batch, lr, lr_schedule, optimizer, weight_decay,
                       clip_grad_norm, seed, learner)
    if resume and out is not None:
        start, state = _resume(out, learner, opt, generator, config, lead, precision, data,
                               iterations, args, log_every)
        window.load(state.get("log_window"))
        cpu_before = None if shard else state.get("cpu_seconds")
    else:
        if out is not None:             # rank 0's verdict, before anything is written
            distributed.from_rank0(lambda: _check_fresh(out), "the run directory check")
            if lead and out.is_dir():   # what a run killed mid-write of its first checkpoint
                remove_stale(out)       # left (no LATEST names it yet)
        start = 0
        _seed_global_rngs(seed)
        if shard:
            distributed.broadcast_params(learner.model)
            if buffers:
                distributed.broadcast_buffers(buffers, "the start", start=True)
            distributed.broadcast_rng("the start")     # (per-task draws, dropout: rank 0's)
    cpu_start = time.process_time()
    if not getattr(learner, "meta_trains", True):
        iterations = start
    if log_dir is not None:
        log_dir.mkdir(parents=True, exist_ok=True)
        if start == 0 and (log_dir / "metrics.jsonl").exists():
            # a fresh run's log starts empty (a run killed before its first checkpoint
            # leaves lines that are no run's)
            atomic_write_text(log_dir / "metrics.jsonl", "")
    # a recorded graph must not reuse autocast's cache of cast weights (CUDA graphs' rule)
    autocast = (torch.autocast(model_p.device.type, dtype=torch.bfloat16,
                               cache_enabled=not cuda_graph)
                if precision == "bf16" and model_p is not None else nullcontext())
    # batches valid by construction (DeviceTasks'): the step reads no label back to the host
    trusted = valid_by_construction if getattr(family, "valid_by_construction", False) \
        else nullcontext
    graph = graphs.GraphStep(learner, opt, autocast) if cuda_graph else None
    sampler = _Sampler(family, meta_batch, generator, prefetch, iterations - start)
    log = _MetricsLog(log_dir)
    last, val = {}, None
    saved = start if resume and out is not None else None   # iteration of the newest checkpoint

    def kept(saved: int | None, write: bool = False) -> str:
        """What a non-finite stop, or a file that could not be written (``write``), leaves:
        the newest checkpoint, or none yet; after a failed write, also how to continue
        (a non-finite stop would only repeat itself: ``metaloop train`` says so)."""
        if out is None:
            return ""
        if saved is None:
            return f"; no checkpoint was written to {out} yet"
        said = f"; the last good checkpoint in {out} (iteration {saved}) is kept"
        if write:           # train and compare both resume with --resume, bit for bit
            said += (f"; once the file can be written, metaloop train --resume {out} "
                     f"continues from it (a run of metaloop compare: the same compare "
                     f"command with --resume)")
        return said

    guard = _FiniteGuard(kept(saved))

    def save(iteration: int) -> None:
        guard.check()                                          # never save non-finite params
        extra: dict[str, Any] = {"log_window": window.state(), "precision": precision,
                                 "train_args": args,
                                 # some numbers depend on it (a resume warns: thread_note)
                                 "threads": torch.get_num_threads(),
                                 "software": software()}        # which build wrote it
        if data is not None:
            extra["data"] = data
        if cpu_before is not None:
            extra["cpu_seconds"] = round(cpu_before + time.process_time() - cpu_start, 2)
        try:
            log.sync()                      # its lines are on disk before the checkpoint is
            save_run(log_dir, iteration, learner, opt, generator, config,
                     tasks_state=sampler.tasks_state(), extra=extra)
        except WriteError as e:                                # a full disk: named
            raise WriteError(f"{e}{kept(saved, write=True)}") from e

    bar = tqdm(range(start, iterations), desc=desc, disable=not (progress and lead),
               initial=start, total=iterations, dynamic_ncols=True, leave=False,
               miniters=log_every, **tqdm_defaults())
    try:
        with _StopSignals() as stop:
            for it in bar:
                batch = sampler.next()
                # the same on every rank, so that all ranks check (and stop) together
                val_due = bool(val_family is not None and val_every
                               and (it + 1) % val_every == 0)
                is_val = lead and val_due
                logged = (it + 1) % log_every == 0 or it + 1 == iterations or val_due
                lr_it = scheduled_lr(lr, lr_schedule, it, iterations)
                if graph is not None:                  # one replay: the step is applied
                    with trusted():
                        metrics, finite = graph.step(batch, lr_it)
                    agreed = None
                    guard.add_flag(it + 1, finite, metrics["loss"])
                    if logged:
                        guard.check()
                    window.add(metrics)
                else:
                    with autocast, trusted():
                        grads, metrics, agreed = _step_gradient(learner, batch, shard, stop,
                                                                it + 1)
                    guard.add(it + 1, metrics["loss"], grads)
                    if logged:
                        guard.check()                          # before this step is applied
                    if clip_grad_norm:
                        metrics = {**metrics, "grad_norm": _norm(grads)}
                        grads = _clip(grads, clip_grad_norm, metrics["grad_norm"])
                    window.add(metrics)
                    opt.zero_grad(set_to_none=True)
                    for group in opt.param_groups:
                        group["lr"] = lr_it
                    for n, p in named:
                        p.grad = grads[n]
                    opt.step()
                if is_val:
                    r = evaluate(learner, val_family, tasks=val_tasks,
                                 steps=(learner.inner.steps,), seed=val_seed)
                    val = {f"val_{k}": r[k]["mean"][0] for k in ("loss", "accuracy") if k in r}
                if buffers:                            # as a resume restores them: rank 0's
                    distributed.broadcast_buffers(buffers, f"iteration {it + 1}")
                if logged:
                    last = window.read()
                    try:
                        log.write(it + 1, last, val if is_val else None)
                    except OSError as e:                   # a full disk: named
                        raise WriteError(f"cannot write {log_dir / 'metrics.jsonl'}: "  # type: ignore[operator]  # written: a log_dir
                                         f"{e.strerror or e}{kept(saved, write=True)}") from e
                    bar.set_postfix({k: f"{v:.3g}" for k, v in {**last, **(val or {})}.items()},
                                    refresh=False)
                stopping = agreed if shard else stop.name is not None
                if out is not None and ((it + 1) % checkpoint_every == 0 or stopping):
                    guard.check()
                    if log_dir is not None:
                        save(it + 1)
                    saved = it + 1                     # (rank 0 writes it)
                    guard.where = kept(saved)
                if stopping:
                    _finish(shard, "the interrupt checkpoint")
                    where = f"; checkpoint in {out}" if out else ""
                    stopped: Any = KeyboardInterrupt(
                        f"stopped by {stop.name or 'another rank'} after iteration "
                        f"{it + 1}{where}")
                    if out is not None and it + 1 == iterations:   # the final checkpoint
                        stopped.result = {"iteration": iterations, "last": last, "val": val}
                    raise stopped
            # still under the signal handlers: Ctrl-C / SIGTERM during the final checkpoint
            # asks for the stop that is under way (the run then completes), instead of
            # raising KeyboardInterrupt in the middle of it
            guard.check()
            if log_dir is not None and saved != iterations:
                save(iterations)
            _finish(shard, "the final checkpoint")
            if stop.name is not None:      # then raised as in the last iteration: not lost
                where = f"; checkpoint in {out}" if out else ""
                stopped = KeyboardInterrupt(f"stopped by {stop.name} after iteration "
                                            f"{iterations}{where}")
                if out is not None:
                    stopped.result = {"iteration": iterations, "last": last, "val": val}
                raise stopped
    finally:
        bar.close()
        sampler.close()
        log.close()
        # no step's meta-gradient left in the parameters' .grad: a caller's own backward()
        # would add to it (and it holds a copy of every parameter)
        opt.zero_grad(set_to_none=True)
    return {"iteration": iterations, "last": last, "val": val}


def _finish(shard, what: str) -> None:
    """In a distributed run, hold every rank until rank 0 has written ``what``."""
    if shard:
        distributed.barrier(what)


class _MetricsLog:
    """The run's ``metrics.jsonl`` (``out`` None: no log), held open for the run: a line per
    record, each one ``os.write`` of the whole line in append mode, so that a kill leaves
    whole lines only (a power loss can cut the last one short; a resume drops it). It is
    opened at its first line: after a new run emptied it, or a resume cut it back to its
    checkpoint (both replace the file)."""

    def __init__(self, out: Path | None):
        self.path = None if out is None else out / "metrics.jsonl"
        self._fd: int | None = None

    def write(self, iteration: int, metrics: dict, val: dict | None) -> None:
        """Append the line of ``iteration``: its ``metrics``, ``val`` and the time.

        Raises:
            OSError: the line could not be written (a full disk).
        """
        if self.path is None:
            return
        rec = {"iteration": iteration, **metrics, **(val or {}), "time": time.time()}
        line = memoryview((json.dumps(rec) + "\n").encode())
        if self._fd is None:
            self._fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT
                               | getattr(os, "O_BINARY", 0), 0o666)
        while line:                     # one write but for a short one (a disk filling up)
            n = os.write(self._fd, line)
            if n <= 0:
                raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
            line = line[n:]

    def sync(self) -> None:
        """fsync the log: a checkpoint (itself fsynced) must not outlive a power loss that
        takes the log's lines up to it, which a resume would not write again.

        Raises:
            WriteError: naming the log and the system's reason.
        """
        if self.path is None:
            return
        try:
            if self._fd is not None:
                os.fsync(self._fd)
            elif self.path.is_file():          # no line written by this process yet
                with open(self.path, "ab") as f:
                    os.fsync(f.fileno())
        except OSError as e:
            raise WriteError(f"cannot write {self.path}: {e.strerror or e}") from e

    def close(self) -> None:
        if self._fd is not None:
            fd, self._fd = self._fd, None
            os.close(fd)

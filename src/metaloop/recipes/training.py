"""Meta-training one method from a config (``metaloop train``), fresh or resumed.

``prepare(out, config=..., resume=...)`` checks the config and the run directory before any
data is read; ``train_config(cfg, out, ...)`` builds the families and the learner the config
describes and trains it, checkpointing into ``out``. Under ``torchrun`` every process calls
``train_config`` on its shard of each meta-batch (``metaloop.train.distributed``).
``init_from(learner, run)`` starts a new run from a saved run's weights (``train.init``).

A run whose data moved resumes with ``data_root`` (``metaloop train --resume DIR --data-root
PATH``): its families are read at ``PATH``, checked against the fingerprint its checkpoint
stores, and it goes on as if uninterrupted. Its config keeps the stored ``family.root`` (the
resume checks it against the run's, as every key); the checkpoints written from then on
store the path read in their fingerprint (``state["data"]["root"]``), so a later resume
without the option reads the stored ``family.root`` again, and where nothing is there its
error names ``--data-root`` with the path last read.
"""

from __future__ import annotations

import contextlib
import os
import sys
import warnings
from pathlib import Path

import torch

from metaloop import build, config, runs_folder
from metaloop._random import seeded_rng
from metaloop.recipes.report import prepare_out
from metaloop.runs import (
    check_same_data,
    data_moved,
    last_read_hint,
    load_run,
    moved_root,
    saved_run,
)
from metaloop.train import distributed, train
from metaloop.train.checkpoint import latest_checkpoint, read_state, unlinked_advice
from metaloop.train.loop import check_run_dir, refuse_foreign

__all__ = ["init_from", "prepare", "train_config"]


def prepare(out, *, config_path=None, resume: bool = False,
            seed: int | None = None, data_root=None, device=None) -> tuple[dict, Path, bool]:
    """The validated config of a run and its directory (created, writable).

    Args:
        out: the run directory. config_path: a TOML config (None: the run's own, to resume).
        resume: continue from the newest checkpoint in ``out``.
        seed: replaces ``train.seed`` (model init and task stream) of a new run, e.g. to
            train an ensemble's members from one config; None keeps the config's. A resumed
            run takes only its own seed (so the command that started it, plus ``--resume``,
            continues it).
        data_root: a resumed run's own data at another path (``train_config``'s
            ``data_root``), checked here to be there; None: its ``family.root``.
        device: the device the run will train on ("cpu", "cuda"), for the checks that
            depend on it (``config.check_compiler``); None: not checked.

    Returns:
        ``(config, out, created)``: a folder / tensors / table family's class split is written
        into the config; ``created`` says whether ``out`` was made here.

    Warns:
        config.UnreadKeyWarning: once per key that the config file (or a file it extends)
            sets and this run never reads (``config.warn_unread``), e.g. ``method.inner_lr``
            for protonet; the run goes on.
        config.SharedSplitWarning: a new run whose ``eval.split`` shares classes with its
            ``family.split`` (``config.shared_split``): its evaluation would score the
            training classes; the run goes on.

    Raises:
        ValueError: no directory given; a ``ckpt-*`` directory of a run given as the run
            directory; resuming without a checkpoint; a fresh run into a directory that
            holds one; a bad config (naming the key), including what only
            meta-training a new run needs (``config.check_training``: ``eval.steps`` above 0
            for a solved head, Reptile's ``inner_batch`` / ``test_batch`` above the support
            set); a seed that is not an int >= 0, or one given to a resumed run that was
            trained with another; a ``data_root`` for a new run, for a run that stores no
            fingerprint of its data (a built-in family), or that is not there
            (``metaloop.runs.moved_root``); ``method.compile = true`` on the CPU without a
            working C++ compiler (``config.check_compiler``).
    """
    if seed is not None and (not isinstance(seed, int) or isinstance(seed, bool) or seed < 0):
        raise ValueError(f"--seed must be an integer >= 0, got {seed!r}")
    if not out:
        raise ValueError("give the run directory with --out DIR (or --resume DIR)")
    out = Path(out)
    check_run_dir(out)                 # one ckpt-* directory of a run, not a run directory
    if data_root is not None and not resume:
        raise ValueError(f"--data-root {data_root} reads a resumed run's own data at another "
                         f"path; a new run reads its config's family.root: set that instead "
                         f"(or give --resume DIR)")
    if resume and latest_checkpoint(out) is None:
        advice = unlinked_advice(out, f"metaloop train --resume {out}")
        raise ValueError(f"--resume: no checkpoint in {out} (no LATEST file)"
                         + (f": {advice}" if advice else ""))
    if resume and data_root is not None:
        state = _stored_state(out) or {}
        fam = state.get("config", {}).get("family")
        if isinstance(fam, dict) and "name" in fam:  # (else: load_checkpoint names it below)
            moved_root(out, state.get("data"), {"root": "", **fam}, data_root)
    if resume and seed is not None:    # the command that started it, plus --resume
        kept = _stored(out, "train", "seed")
        if kept is not None and kept != seed:
            raise ValueError(f"--seed {seed}: the run in {out} was trained with seed {kept}, "
                             f"and a resumed run keeps its seed; give --seed {kept} or leave "
                             f"--seed out (a new run with seed {seed} needs another --out)")
    if config_path:
        cfg = config.load(config_path)
    elif resume:
        cfg = load_run(out).config
    else:
        raise ValueError("give --config FILE (or --resume DIR to continue a run)")
    if seed is not None:
        cfg["train"]["seed"] = seed
    init = cfg["train"]["init"]
    if init and not resume and not saved_run(init):
        raise ValueError(f"train.init = {init!r}: no saved run there (a run directory with a "
                         f"LATEST file, or a ckpt-* directory)")
    config.check_combinations(cfg)
    if device is not None:             # a compiled run on the CPU: a C++ compiler there
        config.check_compiler(cfg, device)
    if config_path and not resume:     # what only a new run's meta-training needs
        config.check_training(cfg, config.written_keys(config_path))
    if config_path:                    # once, on rank 0: keys of the file no run reads
        config.warn_unread(cfg, config_path)
    if not resume:                     # held out from the training classes? once, rank 0
        config.warn_shared_split(cfg)
    if resume and config_path:
        cfg = _stored_split(cfg, out)
    cfg = build.resolve_split(cfg)          # folder / tensors: the class lists, stored
    if not resume and latest_checkpoint(out) is not None:
        raise ValueError(f"{out} already holds a run; use --resume to continue it, or another "
                         f"--out")
    if not resume:                     # another command's run: named as such first
        runs_folder.check(out, "train")
    if not resume:
        refuse_foreign(out, str(out), "give an empty or new --out")
    if cfg["family"]["name"] == "folder" and cfg["family"]["root"]:
        runs_folder.check_outside_data(out, cfg["family"]["root"], "family.root")
    created = not out.exists()
    prepare_out(out)
    return cfg, out, created


def _stored_state(out: Path) -> dict | None:
    """The ``state.json`` of the newest checkpoint in ``out``, or None where it cannot be
    read (``load_checkpoint`` names a damaged checkpoint later)."""
    try:
        state = read_state(latest_checkpoint(out) / "state.json")  # type: ignore[operator]  # None: caught
    except (OSError, ValueError, TypeError):
        return None
    return state if isinstance(state, dict) else None


def _stored(out: Path, section: str, key: str | None = None):
    """``[section]`` (or its ``key``) of the config the newest checkpoint in ``out`` stores,
    or None where it cannot be read (``load_checkpoint`` names a damaged checkpoint later)."""
    try:
        stored = _stored_state(out)
        part = stored["config"][section]  # type: ignore[index]  # None: caught
        return part if key is None else part[key]
    except (OSError, ValueError, KeyError, TypeError):
        return None


def _stored_split(cfg: dict, out: Path) -> dict:
    """``cfg`` (a config file given with ``--resume``) with the class lists the run in ``out``
    stores, when the file gives none and splits the same data the same way: the split is
    the run's, not one made again from the data as it is now (a changed data set is then
    named by the data check, not as a config that differs)."""
    f = cfg["family"]
    if f["name"] not in config.USER_FAMILIES or any(f[f"{s}_classes"] for s in
                                                    config.USER_SPLITS):
        return cfg
    fam = _stored(out, "family")
    if not isinstance(fam, dict):
        return cfg                      # load_checkpoint names a damaged checkpoint later
    lists = {f"{s}_classes": fam.get(f"{s}_classes") for s in config.USER_SPLITS}
    # a key the run's config predates reads as its default (family.quoting: "csv")
    if not any(lists.values()) or any(fam.get(k, config.SCHEMA["family"][k][1]) != f[k]
                                      for k in SPLIT_KEYS):
        return cfg
    return {**cfg, "family": {**f, **lists}}


class InitSplitWarning(UserWarning):
    """A run started from another run's weights (``train.init``) holds out classes that
    run meta-trained on: its held-out score is partly on classes its weights have seen."""


def _init_family(init) -> tuple[dict, Path, dict | None] | None:
    """The ``[family]`` section stored by the run (or ``ckpt-*`` directory) ``init``, the
    ``state.json`` that holds it and the data fingerprint it stores
    (``build.data_fingerprint``), or None where there is none to read (no run there any
    more, a damaged or foreign checkpoint)."""
    try:
        path = Path(os.fspath(init)).expanduser()
        ckpt = path if (path / "state.json").is_file() else latest_checkpoint(path)
        state = read_state(ckpt / "state.json")  # type: ignore[operator]  # None: caught
        fam = state["config"]["family"]
        where = ckpt / "state.json"  # type: ignore[operator]
    except (OSError, ValueError, KeyError, TypeError):
        return None
    data = state.get("data") if isinstance(state.get("data"), dict) else None
    return (fam, where, data) if isinstance(fam, dict) else None


def init_split_leak(cfg: dict, splits=None, init=None, digests=None) -> str | None:
    """The warning for a run started from ``init`` (default: ``cfg``'s ``train.init``) whose
    held-out classes (``splits``, default: every split of ``cfg`` but ``family.split``; for
    Omniglot and Fashion-MNIST, ``eval.split``) were among the classes that run
    meta-trained on, or None when none were.

    Omniglot and Fashion-MNIST have fixed, known splits: there the ``init`` run's
    ``family.split`` and a held-out split share classes as ``config.shared_split`` says
    (Vinyals' ``train`` / ``val`` / ``trainval`` / ``test`` and Lake's ``background`` /
    ``evaluation`` characters; Fashion-MNIST's labels 5-9), for the same family; not
    where this run's own ``family.split`` already shares them (``config.warn_shared_split``
    says so). The sinusoid has no classes.

    A class counts when it has the same name and the same data: with ``digests`` (this
    run's ``{class: sha256}`` of its decoded examples, ``build.data_fingerprint``) and the
    digests the ``init`` run stored, by content; else (a text table, a run stored without
    them) when both runs name the same ``family.root``, resolved from here.

    Both runs draw their class split from the data as it was when each started (sorted,
    then shuffled with ``family.split_seed``), so one class added or removed since gives
    every split other classes."""
    f = cfg["family"]
    init = cfg["train"].get("init") if init is None else init
    if init and f["name"] in BUILTIN_SPLITS:
        return _builtin_split_leak(cfg, init, splits)
    if not init or f["name"] not in config.USER_FAMILIES:
        return None
    stored = _init_family(init)
    if stored is None or stored[0].get("name") not in config.USER_FAMILIES:
        return None
    theirs, where, their_data = stored
    if theirs.get("name") != f["name"]:
        return None
    old = (their_data or {}).get("classes")
    by_content = isinstance(old, dict) and isinstance(digests, dict)
    if not by_content and not _same_data(theirs.get("root"), f.get("root")):
        return None                    # another data set: the same names are other classes
    seen = set(theirs.get(f"{theirs.get('split', 'train')}_classes") or ())
    if by_content:                     # the same name and the same examples
        assert isinstance(old, dict) and isinstance(digests, dict)
        seen = {c for c in seen if c in digests and old.get(c) == digests[c]}
    if not seen:
        return None
    splits = [s for s in config.USER_SPLITS if s != f["split"]] if splits is None else splits
    shared = {s: [c for c in f[f"{s}_classes"] or () if c in seen] for s in splits}
    shared = {s: v for s, v in shared.items() if v}
    if not shared:
        return None
    n = len({c for v in shared.values() for c in v})
    parts = "; ".join(f"{s}: {len(v)} of {len(f[f'{s}_classes'])}, "
                      f"{', '.join(map(repr, v[:4]))}{', ...' if len(v) > 4 else ''}"
                      for s, v in shared.items())
    return (f"train.init = {str(init)!r} meta-trained on {n} of the classes this run holds "
            f"out ({parts}): their held-out scores are on classes its weights have seen, "
            f"not new ones. The class split is drawn again from the data as it is now, and a "
            f"class added or removed since gives every split other classes. To keep that "
            f"run's split, train with its family.train_classes, val_classes and test_classes "
            f"(in {where}, under config.family) copied into the config, leaving out classes "
            f"the data no longer has and adding new ones to one list")


# the built-in families whose splits are fixed sets of classes (``config.shared_split``)
BUILTIN_SPLITS = ("omniglot", "fashion_mnist")


def _builtin_split_leak(cfg: dict, init, splits=None) -> str | None:
    """``init_split_leak`` for Omniglot and Fashion-MNIST: the ``init`` run's training
    split against this run's held-out ``splits`` (default ``eval.split``), by their names."""
    f = cfg["family"]
    stored = _init_family(init)
    if stored is None or stored[0].get("name") != f["name"]:
        return None             # no run there to read, or another data set: other classes
    theirs, where = stored[0], stored[1]
    trained = theirs.get("split", "train")
    if not isinstance(trained, str):
        return None
    splits = [cfg["eval"]["split"]] if splits is None else splits
    shared = [s for s in splits if config.shared_split({"name": f["name"], "split": trained}, s)
              and not config.shared_split(f, s)]   # (its own split: warn_shared_split says)
    if not shared:
        return None
    held = ", ".join(repr(s) for s in shared)
    same = "is" if shared == [trained] else "shares classes with"
    return (f"train.init = {str(init)!r} meta-trained on {f['name']} family.split = "
            f"{trained!r} (in {where}), which {same} the split this run holds out ({held}): "
            f"its held-out scores are on classes its weights have seen, not new ones; start "
            f"from a run meta-trained on a split that shares no classes with {held}")


def _same_data(theirs, ours) -> bool:
    """Whether two runs' ``family.root`` name the same data (paths resolved from here; a
    run that names none is taken as the same)."""
    if not theirs or not ours:
        return True
    try:
        return Path(str(theirs)).expanduser().resolve() == Path(str(ours)).expanduser().resolve()
    except (OSError, RuntimeError, ValueError):
        return str(theirs) == str(ours)


def warn_init_split(cfg: dict, splits=None, init=None, digests=None) -> str | None:
    """Warn (``InitSplitWarning``) with ``init_split_leak``'s message, if any; returns it."""
    text = init_split_leak(cfg, splits, init, digests)
    if text is not None:
        warnings.warn(text, InitSplitWarning, stacklevel=2)
    return text


# the family keys that decide a user data set's class split
SPLIT_KEYS = ("name", "root", "split_fractions", "split_seed", "split_files", "class_depth",
              "text_column", "label_column", "delimiter", "quoting")


def train_config(cfg: dict, out, *, resume: bool = False, device: str = "cpu",
                 precision: str = "float32", tf32: bool = False, progress: bool = True,
                 created: bool = False, data_root=None) -> dict:
    """Train the learner ``cfg`` describes, checkpointing into ``out``.

    Args:
        cfg: a config from ``prepare``. device: "cpu" or "cuda" (under torchrun: this
            process's GPU). precision: "float32" or "bf16" (autocast). tf32: allow TF32 on
            CUDA while it trains (both flags are set back after). progress: progress bars
            (rank 0). created: ``out`` was made for this run, so bad data removes it again
            when it is still empty.
        data_root: with ``resume``: where the run's own data is now (its folder, tensor
            file or table moved; ``prepare`` checked it is there). The families are read
            there, their fingerprint must match the one the checkpoint stores (else refused
            before training, naming the classes that differ), and ``cfg`` (its stored
            ``family.root``) is what the checkpoints keep; their fingerprint records the
            path read. None: ``cfg``'s ``family.root``.

    Returns:
        ``metaloop.train.train``'s result.

    Raises:
        ValueError: bad data (naming it), ``precision="bf16"`` with a ``train.dtype`` other
            than float32 (before any data is read); ``eval.support_shift`` /
            ``eval.query_shift`` on examples that are not images (``build.check_eval_shifts``,
            before training: the run could not be evaluated); on resume, data that changed since the
            run's checkpoint (``metaloop.build.data_fingerprint``), data at ``data_root``
            that is not the run's own (naming the classes); NonFiniteLossError;
            KeyboardInterrupt after the interrupt checkpoint.
    """
    out = Path(out)
    rank, world = distributed.rank_world()

    def _undo() -> None:                 # bad data or init: leave no empty run directory
        if rank == 0 and created and out.is_dir() and not any(out.iterdir()):
            out.rmdir()

    tc = cfg["train"]
    if precision == "bf16" and tc["dtype"] != "float32":     # before any data is read
        _undo()
        raise ValueError(f"--precision bf16 autocasts a float32 model, but train.dtype = "
                         f"{tc['dtype']!r}")
    if data_root is not None and not resume:
        raise ValueError(f"--data-root {data_root} reads a resumed run's own data at another "
                         f"path; a new run reads its config's family.root")
    # the config the data is read with: the stored family.root, or the run's data moved
    read_cfg = cfg if data_root is None else \
        {**cfg, "family": {**cfg["family"],
                           "root": os.path.abspath(Path(os.fspath(data_root)).expanduser())}}
    state = _stored_state(out) if resume and rank == 0 else None
    heldout = None
    try:
        family = build.build_family_verbose(read_cfg["family"], show=rank == 0,
                                            progress=progress)
        if cfg["family"]["name"] in config.USER_FAMILIES:
            # the held-out split of the user's data, read now: a class too small for its
            # shots + queries is named before training, not when the run is evaluated
            heldout = build.eval_family(read_cfg, family)
        build.check_eval_shifts(cfg, family)  # image shifts of feature vectors: not evaluable
        # validation: the held-out tasks as [eval] sets them (ways, shots, queries), on the
        # split "val" when the evaluation's is "test" (config.check_combinations checks it)
        val = None
        if tc["val_every"]:
            held = cfg["eval"]["split"] == "test" and cfg["family"]["name"] != "sinusoid"
            val = build.eval_family({**read_cfg, "eval": {**cfg["eval"], "split": "val"}}
                                    if held else read_cfg, family)
    except ValueError as e:
        _undo()
        hint = ""
        if data_root is None and type(e) is ValueError:   # (a subclass: the data was read)
            hint = last_read_hint((state or {}).get("data"), cfg["family"].get("root"))
            # a resumed run on data of the user's own that is no longer where it was read
            # (every rank words it alike: ``state`` is rank 0's alone)
            if not hint and resume and data_moved(cfg["family"]):
                hint = (f"; if the run's data moved, --resume {out} --data-root PATH reads "
                        f"it at PATH")
        if hint:
            raise ValueError(f"{e}{hint}") from e
        raise
    # what the run reads of the user's data, stored in its checkpoints: a resume on changed
    # data is refused (rank 0 alone writes and checks checkpoints)
    read = [f for f in (family, heldout, val) if f is not None]
    data = build.data_fingerprint(read_cfg["family"], *read) if heldout is not None else None
    if world > 1:       # every rank read its own copy: the same data, or refused (every rank)
        try:
            distributed.same_data(data["sha256"] if data else _content_digest(read),
                                   _where_read(read_cfg["family"]),
                                   (data or {}).get("classes"), resume)
        except ValueError:
            _undo()
            raise
    data = data if rank == 0 else None
    if rank == 0 and cfg["train"].get("init") and not resume:   # its training classes, held
        warn_init_split(cfg, digests=(data or {}).get("classes"))  # out here? (same data)
    if data_root is not None and state is not None:      # rank 0: before anything is trained
        check_same_data(state.get("data"), data, out, cfg["family"]["root"])
        print(f"data read at {read_cfg['family']['root']} (--data-root), in place of the "
              f"stored family.root {cfg['family']['root']}; its classes match the run's "
              f"stored fingerprint", file=sys.stderr)
    dev = distributed.device_for(device)
    # build_learner seeds torch's global generator with train.seed, which carries on into
    # training (Reptile's per-task seeds, the checkpoints' rng.torch) and no further: the
    # caller's generator is as it was afterwards
    # TF32 as it was afterwards too (a CPU run leaves the process's CUDA flags alone)
    with seeded_rng(tc["seed"], [dev]), (
            distributed.tf32_kept() if dev.type == "cuda" else contextlib.nullcontext()):
        learner = build.build_learner(cfg, family, device=dev)
        if dev.type == "cuda":
            distributed.set_tf32(tf32)
        learner.model.to(device=dev, dtype=getattr(torch, tc["dtype"]))
        if tc["init"] and not resume:       # a resumed run has its own weights; copied into the
            try:                            # model at train.dtype: a float64 run's stay exact
                got = init_from(learner, tc["init"])
            except ValueError:
                _undo()
                raise
            if rank == 0:
                left = f"; left at their initial values: {', '.join(got['left'])}" \
                    if got["left"] else ""
                print(f"init: {len(got['loaded'])} tensors from {got['run']} (iteration "
                      f"{got['iteration']}){left}")
        train_family = build.training_family(cfg, family)
        if tc["device_tasks"]:              # the images on the training device, sampled there
            from metaloop.tasks.device import DeviceTasks
            train_family = DeviceTasks(train_family, dev or "cpu", getattr(torch, tc["dtype"]))
        try:               # a ValueError before the first metrics line leaves no empty run dir
            return train(learner, train_family, iterations=tc["iterations"],
                         meta_batch=tc["meta_batch"], lr=tc["lr"], lr_schedule=tc["lr_schedule"],
                         optimizer=tc["optimizer"], weight_decay=tc["weight_decay"],
                         clip_grad_norm=tc["clip_grad_norm"], seed=tc["seed"], out_dir=out,
                         resume=resume, val_family=val, val_every=tc["val_every"],
                         val_tasks=tc["val_tasks"], val_seed=cfg["eval"]["seed"],
                         checkpoint_every=tc["checkpoint_every"],
                         config=cfg, progress=progress, desc=cfg["method"]["name"],
                         prefetch={"on": True, "off": False}.get(tc["prefetch"], "auto"),
                         log_every=tc["log_every"] or None, precision=precision,
                         cuda_graph=tc["cuda_graph"], data=data)
        except ValueError:
            _undo()
            raise


def _content_digest(families) -> str | None:
    """A sha256 over what a built-in family read (Omniglot's, Fashion-MNIST's images and
    class names), for ``distributed.same_data``: ranks whose copies differ differ here.
    None for a family with no stored examples (the sinusoid draws its tasks)."""
    import hashlib

    h, any_read = hashlib.sha256(), False
    for fam in families:
        images = getattr(fam, "_images", None)
        if not isinstance(images, torch.Tensor):
            continue
        any_read = True
        names = getattr(fam, "class_names", None) or getattr(fam, "labels", None)
        h.update(f"{type(fam).__name__} {list(images.shape)} {images.dtype} "
                 f"{list(names) if names is not None else ''}\n".encode("utf-8",
                                                                      "surrogateescape"))
        h.update(images.contiguous().numpy().tobytes())
    return h.hexdigest() if any_read else None


def _where_read(fcfg: dict) -> str:
    """Where this process read its family's data, for the message of a run whose ranks read
    different data: the resolved ``family.root``, or the built-in data folder."""
    if fcfg["name"] in config.USER_FAMILIES and fcfg.get("root"):
        return f"{fcfg['name']} {os.path.abspath(os.path.expanduser(str(fcfg['root'])))}"
    if fcfg["name"] == "sinusoid":
        return "sinusoid tasks"
    if fcfg.get("root"):
        return f"{fcfg['name']} at {os.path.abspath(os.path.expanduser(str(fcfg['root'])))}"
    env = os.environ.get("METALOOP_DATA")
    return f"{fcfg['name']} in {f'$METALOOP_DATA={env}' if env else 'the default data folder'}"


def _network_tensors(model) -> tuple[dict[str, tuple[str, torch.Tensor]], set[str]]:
    """``model``'s parameters (name, tensor) by their names in the network itself, and which
    of those are the network's: without the ``backbone.`` of a solved-head learner's
    ``HeadNet`` or the ``net.`` of learned inner step sizes (``InnerLRs``), so a Conv4
    trained by MAML (with or without learned step sizes) or Pretrain and the backbone of a
    ProtoNet share names. The learner's own tensors (``log_scale``, ``inner_lr``, ...) keep
    theirs."""
    from metaloop.adapt.learned_lr import InnerLRs
    from metaloop.meta._head_learner import HeadNet

    prefix = "net." if isinstance(model, InnerLRs) else \
        "backbone." if isinstance(model, HeadNet) else ""
    out, network = {}, set()
    for name, p in model.named_parameters():
        plain = name.removeprefix(prefix)
        out[plain] = (name, p)
        if name.startswith(prefix):
            network.add(plain)
    return out, network


def init_from(learner, run) -> dict:
    """Copy a saved run's weights into ``learner``'s model (``train.init``), in place.

    Names are matched with any ``backbone.`` prefix removed, so any two learners on the same
    network share their body: a ``Pretrain`` or MAML Conv4 can start a ProtoNet, R2D2 or
    MetaOptNet run, and the other way round. A tensor of the same name and shape is copied as
    the checkpoint stores it (cast to the model's dtype only: a float64 run starts a float64
    model exactly); an output head (``head.*``) of another shape (another number of classes)
    and tensors the run does not have (a learned output scale, learned inner step sizes) keep
    their seeded initial values.

    Args:
        learner: a freshly built learner. run: a run directory or ``ckpt-*`` directory.

    Returns:
        ``{"run": the run's path, "iteration": its iteration, "loaded": [names copied],
        "left": [names left at their initial values]}``.

    Raises:
        ValueError: no saved run there; a tensor other than the head whose shape differs (a
            different network: every such name with both shapes); no tensor in common, or
            none but a head bias or a scalar (a different network too).
    """
    src = load_run(run)
    theirs, network = _network_tensors(src.learner.model)   # in the run's dtype, as stored
    mine, _ = _network_tensors(learner.model)
    loaded, left, bad = [], [], []
    for name, (real, p) in mine.items():
        t = theirs.get(name, (None, None))[1]
        if t is not None and t.shape == p.shape:
            loaded.append(name)
        elif t is None or name.startswith("head."):
            left.append(name)
        else:
            bad.append(f"{real} {list(t.shape)} in the run, {list(p.shape)} here")
    if bad:
        raise ValueError(f"train.init = {str(run)!r} is another network: "
                         + "; ".join(bad))
    if not loaded:
        raise ValueError(f"train.init = {str(run)!r} has no tensor of this model's (its "
                         f"names: {', '.join(theirs[n][0] for n in list(theirs)[:4])}, ...)")
    body = [n for n in loaded if not n.startswith("head.") and mine[n][1].numel() > 1]
    if not body:                # only a head bias or a learned scale: another network's run
        raise ValueError(f"train.init = {str(run)!r} is another network: it shares no body "
                         f"tensor with this model, only "
                         f"{', '.join(mine[n][0] for n in loaded)} (its names: "
                         f"{', '.join(theirs[n][0] for n in list(theirs)[:4])}, ...)")
    lacking = [theirs[n][0] for n in theirs
               if n in network and n not in mine and not n.startswith("head.")]
    if lacking:                 # a deeper or otherwise larger network: its head saw other input
        raise ValueError(f"train.init = {str(run)!r} is another network: it has "
                         f"{', '.join(lacking[:6])}{' ...' if len(lacking) > 6 else ''}, which "
                         f"this model lacks (a deeper network?); give the model the run's "
                         f"layers, or start from a run of this network")
    with torch.no_grad():
        for name in loaded:
            mine[name][1].copy_(theirs[name][1])
    return {"run": str(src.path), "iteration": src.iteration,
            "loaded": [mine[n][0] for n in loaded], "left": [mine[n][0] for n in left]}

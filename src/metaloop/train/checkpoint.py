"""Atomic checkpoints: tensors in safetensors (no pickle), everything else in JSON.

Layout of a run directory::

    DIR/LATEST                      name of the newest complete checkpoint (atomically replaced)
    DIR/ckpt-00001000/tensors.safetensors
    DIR/ckpt-00001000/state.json    format version, iteration, config, optimizer groups,
                                    python/numpy RNG states, sha256 of tensors.safetensors,
                                    and the sha256 of its own contents but the measured
                                    CPU seconds (``state_sha256``: equal for identical runs)

A checkpoint directory is written completely and fsynced before LATEST points at it, so a crash
mid-write (even SIGKILL or power loss) leaves the previous checkpoint intact; the temporary
files such a crash leaves behind are removed by ``remove_stale`` when the run resumes, or when
a new run starts in a folder that holds no checkpoint yet.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import tempfile
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

FORMAT_VERSION = 1


class WriteError(OSError, ValueError):
    """A run's file could not be written (a full disk, a folder made read-only), naming the
    file and the system's reason. It is an ``OSError``, and a ``ValueError`` so that the
    command line says it in one line with exit status 2. Nothing partial is left: the
    temporary file is removed, and ``LATEST`` still names the checkpoint before."""


def _cannot_write(path: Path, e: OSError | SafetensorError) -> WriteError:
    if isinstance(e, WriteError):
        return e
    return WriteError(f"cannot write {path}: {getattr(e, 'strerror', None) or e}")


# Windows cannot open a folder (PermissionError) and has no folder fsync; NTFS journals a
# rename itself
FOLDER_FSYNC = os.name != "nt"


def _fsync_dir(path: Path) -> None:
    """Make a rename in ``path`` durable (where the system has a folder fsync)."""
    if not FOLDER_FSYNC:
        return
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _umask() -> int:
    umask = os.umask(0)
    os.umask(umask)
    return umask


def atomic_write_text(path: Path, text: str) -> None:
    """Write text to path via a fsynced temporary file and a rename.

    Raises:
        WriteError: it could not be written (naming ``path`` and why); ``path`` is as it was.
    """
    path = Path(path)
    try:
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    except OSError as e:
        raise _cannot_write(path, e) from e
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o666 & ~_umask())       # mkstemp makes 0600; results are for sharing
        os.replace(tmp, path)
    except BaseException as e:
        Path(tmp).unlink(missing_ok=True)
        if isinstance(e, OSError):
            raise _cannot_write(path, e) from e
        raise
    try:
        _fsync_dir(path.parent)
    except OSError as e:
        raise _cannot_write(path, e) from e


def save_figure(fig, path, dpi: int) -> None:
    """Write the matplotlib figure ``fig`` to ``path`` as a PNG, whole or not at all:
    through a temporary file beside it (``.<name>.<pid>``, which ``remove_stale`` knows),
    renamed over it.

    Raises:
        WriteError: ``path`` could not be written (a full disk, a folder made read-only),
            naming it and why; ``path`` is as it was.
    """
    path = Path(path)
    tmp = path.with_name(f".{path.name}.{os.getpid()}")
    try:
        fig.savefig(tmp, dpi=dpi, format="png")
        os.replace(tmp, path)
    except OSError as e:
        raise _cannot_write(path, e) from e
    finally:
        tmp.unlink(missing_ok=True)


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


# The entries of a checkpoint state that its digest leaves out besides its own: measurements of
# how the run went (the process CPU seconds it took: ``cpu_seconds`` of ``metaloop train``,
# ``train_cpu_s`` of the IWAE protocol; the IWAE protocol's ``sessions``, when each start or
# resume began and on how many threads; ``threads``, torch's thread count when it was
# written), not of what it computed, so that two identical runs, or a resumed run and an
# uninterrupted one, store the same ``state_sha256``
MEASURED = frozenset({"cpu_seconds", "train_cpu_s", "sessions", "threads"})

# The same within the items of a state's lists: the IWAE protocol's curve points (the CPU
# seconds trained before each and taken to evaluate it)
MEASURED_IN_ITEMS = {"curve": frozenset({"train_cpu_s", "eval_cpu_s"})}

# What earlier versions left out of the digest instead, as their checkpoints store it: the
# IWAE protocol's sessions were in it, but for their start times (so a resume changed it)
_MEASURED_01 = frozenset({"cpu_seconds", "train_cpu_s"})
_MEASURED_IN_ITEMS_01 = {**MEASURED_IN_ITEMS, "sessions": frozenset({"started"})}


def software() -> dict[str, str]:
    """The versions a run was written with, ``{"metaloop": ..., "torch": ..., "python":
    ...}`` (what ``metaloop --version`` prints): a meta-learning run's checkpoints store them
    in ``state.json`` under ``software``, so a run found later says which build wrote it.
    They are part of ``state_sha256`` (identical runs in one environment store the same
    digest; an earlier metaloop reads the key as any other)."""
    import platform

    import metaloop
    return {"metaloop": metaloop.__version__, "torch": torch.__version__,
            "python": platform.python_version()}


def state_digest(state: dict, measured_keys: frozenset = MEASURED,
                 measured_in_items: dict | None = None) -> str:
    """sha256 of a checkpoint state's canonical JSON (keys sorted, no spaces), leaving out its
    own ``state_sha256`` entry, the ``MEASURED`` ones and the ``MEASURED_IN_ITEMS`` entries of
    the items of those lists: what ``save_checkpoint`` stores and ``load_checkpoint`` checks,
    so that a changed value in ``state.json`` (a flipped digit in an RNG state, an iteration
    count edited by hand) is named instead of resumed from, while identical runs have equal
    digests. ``measured_keys`` and ``measured_in_items`` (None: ``MEASURED_IN_ITEMS``) are
    what is left out: an earlier version's choice checks its checkpoints."""
    body = {k: v for k, v in state.items() if k not in measured_keys}
    in_items = MEASURED_IN_ITEMS if measured_in_items is None else measured_in_items
    for key, measured in in_items.items():
        if isinstance(body.get(key), list):
            body[key] = [{k: v for k, v in item.items() if k not in measured}
                         if isinstance(item, dict) else item for item in body[key]]
    return _digest(body)


def _digest(state: dict) -> str:
    """sha256 of ``state``'s canonical JSON without its ``state_sha256`` entry; of the whole
    state, it is the digest metaloop stored before it left out the measured entries (and
    still stores for a state that has none)."""
    body = {k: v for k, v in state.items() if k != "state_sha256"}
    text = json.dumps(body, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()


def save_checkpoint(run_dir: Path, iteration: int, tensors: dict[str, torch.Tensor],
                    state: dict, keep: int = 2) -> Path:
    """Write checkpoint ``ckpt-<iteration>`` and point LATEST at it; keep it and the newest
    ``keep - 1`` checkpoints of earlier iterations (LATEST never names a pruned one).

    Args:
        run_dir: the run directory (created if missing).
        iteration: completed outer iterations.
        tensors: name -> tensor (model, optimizer moments, generator states).
        state: JSON-serialisable rest (config, optimizer hyper-parameters, RNG states...).
        keep: how many checkpoints ``run_dir`` keeps, an int >= 1: this one and the newest
            ``keep - 1`` of earlier iterations; checkpoints of later iterations are left
            alone.

    Raises:
        ValueError: ``keep`` that is not an int >= 1 (0 would delete every earlier
            checkpoint), before anything is written.
        WriteError: the checkpoint could not be written (a full disk...), naming it; its
            temporary files are removed and ``LATEST`` still names the checkpoint before.
    """
    if not isinstance(keep, int) or isinstance(keep, bool) or keep < 1:
        raise ValueError(f"save_checkpoint: keep must be an int >= 1 (this checkpoint and the "
                         f"newest keep - 1 before it), got {keep!r}")
    run_dir = Path(run_dir)
    name = f"ckpt-{iteration:08d}"
    try:
        run_dir.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(dir=run_dir, prefix=f".{name}."))
    except OSError as e:
        raise _cannot_write(run_dir / name, e) from e
    try:
        tfile = tmp / "tensors.safetensors"
        save_file({k: v.detach().contiguous().cpu() for k, v in tensors.items()}, str(tfile))
        meta = {"format_version": FORMAT_VERSION, "iteration": iteration,
                "tensors_sha256": sha256_file(tfile), **state}
        meta = json.loads(json.dumps(meta))        # as it will be read back: tuples as lists,
        meta["state_sha256"] = state_digest(meta)  # keys as strings, sorted as strings
        (tmp / "state.json").write_text(json.dumps(meta, indent=1, sort_keys=True),
                                        encoding="utf-8")
        for f in tmp.iterdir():
            with open(f, "rb") as fh:
                os.fsync(fh.fileno())
            os.chmod(f, 0o666 & ~_umask())    # safetensors makes its file 0600
        os.chmod(tmp, 0o777 & ~_umask())      # mkdtemp makes 0700: a run is for sharing,
        final = run_dir / name                # as its LATEST and files are
        if final.exists():
            shutil.rmtree(final)
        os.replace(tmp, final)
        _fsync_dir(run_dir)
    except BaseException as e:
        shutil.rmtree(tmp, ignore_errors=True)
        if isinstance(e, (OSError, SafetensorError)):   # safetensors' "File too large"
            raise _cannot_write(run_dir / name, e) from e
        raise
    atomic_write_text(run_dir / "LATEST", name + "\n")
    # the checkpoint LATEST names is never pruned: of the others, those of earlier iterations
    # beyond the newest keep - 1 go (one of a later iteration is no checkpoint of this run's
    # history, e.g. left by a run killed before its LATEST was written: it is left alone)
    older = sorted((int(p.name[5:]), p) for p in run_dir.glob("ckpt-*")
                   if p.name[5:].isdigit() and int(p.name[5:]) < iteration)
    for _, old in older[:max(len(older) - (keep - 1), 0)]:
        shutil.rmtree(old, ignore_errors=True)
    return final


# The temporary names of what metaloop writes into a run folder: ``save_checkpoint``'s
# ``.ckpt-<iteration>.<random>`` folders, ``atomic_write_text``'s ``.<name>.<random>``
# files (LATEST, the metrics log, results, and a --protocol iwae run's curve and final test)
# and the generative pictures' and model's ``.<name>.<pid>`` (``metaloop.generative``; a
# new vae, sweep or compare run removes them from the folder it is given, so only a pid
# suffix: a user's ``.photo.png.orig`` there is not metaloop's).
_STALE = re.compile(r"\.(ckpt-\d+|LATEST|metrics\.jsonl|results\.json|curve\.json"
                    r"|final-k\d+-n\d+\.json)\.[a-z0-9_]{8}"          # tempfile's 8 letters
                    r"|\.([\w-]+\.png|model\.safetensors)\.\d+")


def remove_stale(run_dir: Path) -> list[Path]:
    """Delete the temporary files a killed writer left in ``run_dir`` (``.ckpt-*`` folders,
    and the dot-files of ``atomic_write_text`` for ``LATEST``, ``metrics.jsonl``,
    ``results.json``, ``curve.json`` and ``final-*.json``, and the ``.<name>.<pid>`` of the
    generative pictures and model, ``*.png`` and ``model.safetensors``); returns what was
    removed.

    Call it only when no other process writes to ``run_dir`` (e.g. when resuming).
    """
    removed = []
    for p in Path(run_dir).glob(".*"):
        if _STALE.fullmatch(p.name):
            if p.is_dir():
                shutil.rmtree(p, ignore_errors=True)
            else:
                p.unlink(missing_ok=True)
            removed.append(p)
    return removed


def latest_checkpoint(run_dir: Path) -> Path | None:
    """The directory LATEST points at, or None if the run has no checkpoint.

    Raises:
        ValueError: LATEST cannot be read, or does not hold the name of a ``ckpt-*``
            directory (naming the file and what it holds).
    """
    ptr = Path(run_dir) / "LATEST"
    if not ptr.exists():
        return None
    try:
        name = ptr.read_text(encoding="utf-8").strip()
    except (OSError, UnicodeDecodeError) as e:
        raise ValueError(f"{ptr} is unreadable ({e}); it should hold the name of the newest "
                         f"ckpt-* directory{_keeps(Path(run_dir), None)}") from e
    if not name.startswith("ckpt-") or "/" in name or "\\" in name:
        raise ValueError(f"{ptr} is corrupt: it holds {name[:80]!r}, not the name of a ckpt-* "
                         f"directory{_keeps(Path(run_dir), None)}")
    return Path(run_dir) / name


def holds_checkpoint(run_dir) -> bool:
    """Whether ``run_dir`` (None: no folder) holds a checkpoint to resume: its ``LATEST``
    names one, or is damaged (kept too, and named by the resume), as ``--resume-if-any``
    decides."""
    try:
        return run_dir is not None and latest_checkpoint(run_dir) is not None
    except (ValueError, OSError):
        return True


def unlinked_checkpoints(run_dir) -> tuple[list[Path], Path | None]:
    """The ``ckpt-<iteration>`` folders of ``run_dir`` when it has no ``LATEST`` file (it was
    deleted, or lost with a copy), and the newest intact one of them (its ``state.json`` an
    object with an integer iteration, its tensors file of the sha256 it names), or None;
    ``([], None)`` where ``LATEST`` is there or no such folder is. Such a folder holds a run
    that ``LATEST`` no longer names: a new run there would replace it, and a resume finds
    no checkpoint through ``LATEST``. (The ``.ckpt-*`` folders of a write cut short are no
    checkpoints: ``remove_stale`` removes them.)"""
    run_dir = Path(run_dir)
    if os.path.lexists(run_dir / "LATEST") or not run_dir.is_dir():
        return [], None
    try:
        found = sorted((d for d in run_dir.iterdir()
                        if re.fullmatch(r"ckpt-\d+", d.name) and d.is_dir()),
                       key=lambda d: int(d.name[5:]), reverse=True)
    except OSError:
        return [], None
    for d in found:
        try:
            state = read_state(d / "state.json")
            if (isinstance(state, dict) and isinstance(state.get("iteration"), int)
                    and state.get("tensors_sha256") == sha256_file(d / "tensors.safetensors")):
                return found, d
        except (OSError, ValueError):
            continue
    return found, None


def unlinked_advice(run_dir, resume: str) -> str | None:
    """What a new run into ``run_dir``, or a resume of it, says where its ``ckpt-*`` folders
    are there and its ``LATEST`` is not (``unlinked_checkpoints``): the newest intact one and
    the line that names it again; None where ``LATEST`` is there or no ``ckpt-*`` folder is.
    ``resume`` is how the caller's user resumes (``"metaloop train --resume DIR"``)."""
    found, intact = unlinked_checkpoints(run_dir)
    if not found:
        return None
    ptr = Path(run_dir) / "LATEST"
    names = ", ".join(d.name for d in found[:3]) + (f" and {len(found) - 3} more"
                                                    if len(found) > 3 else "")
    if intact is None:
        return (f"{run_dir} holds the checkpoint folder(s) {names} of a run but no LATEST "
                f"file, and none of them is intact (its state.json and tensors.safetensors "
                f"matching); move them away, or choose another folder")
    return (f"{run_dir} holds checkpoints of a run ({names}) but no LATEST file, which names "
            f"the newest; {intact.name} is intact: echo {intact.name} > {ptr} to go on from "
            f"it ({resume})")


def load_checkpoint(path: Path) -> tuple[dict[str, torch.Tensor], dict]:
    """Load (tensors, state) from a run directory (via LATEST) or a ckpt-* directory.

    Args:
        path: a run directory (the checkpoint its ``LATEST`` names is loaded) or one
            ``ckpt-*`` directory (a ``str`` or ``os.PathLike``).

    Returns:
        ``(tensors, state)``: name -> tensor as saved (on the CPU), and ``state.json``'s
        object: the ``state`` given to ``save_checkpoint`` with ``format_version``,
        ``iteration``, ``tensors_sha256`` and (from checkpoints that store it)
        ``state_sha256``.

    Raises:
        FileNotFoundError: no checkpoint there, or LATEST names a directory that is not a
            complete checkpoint (names the path).
        ValueError: a corrupt LATEST, a truncated or corrupt file (a ``state.json`` that is
            not a JSON object with an integer iteration, or whose contents no longer match
            its ``state_sha256``; a tensors file that does not match its sha256 or is not
            safetensors), model weights (``model.*`` tensors) that hold NaN or inf
            (naming the checkpoint and the tensor; not checked in a ``metaloop vae
            --protocol iwae`` checkpoint), or an unknown format. A
            ``state.json`` without ``state_sha256`` (written by metaloop before it stored
            one) is read unchecked.
    """
    path = Path(path)
    if not (path / "LATEST").exists():
        if not (path / "state.json").exists():
            advice = unlinked_advice(path, "then resume it")
            if advice is not None:
                raise FileNotFoundError(f"no checkpoint in {path} through LATEST: {advice}")
        return _load(path)
    via, ckpt = path / "LATEST", None
    found = latest_checkpoint(path)         # a damaged LATEST: names the kept ones itself
    try:
        if found is None:                   # LATEST removed since the check above
            raise FileNotFoundError(f"no checkpoint in {path}: its {via.name} was removed "
                                    f"while it was read")
        ckpt = found
        sfile, tfile = ckpt / "state.json", ckpt / "tensors.safetensors"
        if not (sfile.is_file() and tfile.is_file()):
            lacks = " and ".join(f.name for f in (sfile, tfile) if not f.is_file())
            raise FileNotFoundError(f"no checkpoint at {ckpt}: {via} names it, but "
                                    + (f"it lacks {lacks}" if ckpt.is_dir()
                                       else "it does not exist"))
        return _load(ckpt)
    except (FileNotFoundError, ValueError) as e:
        keeps = _keeps(path, ckpt)
        if not keeps:
            raise
        raise type(e)(f"{e}{keeps}") from e


def _keeps(run_dir: Path, newest: Path | None) -> str:
    """What a refusal of ``run_dir``'s ``LATEST`` or of the checkpoint it names (``newest``;
    None: ``LATEST`` itself is damaged) adds: the kept checkpoint the run can go on from,
    and how; empty if it keeps none."""
    older = _older_checkpoint(run_dir, newest)
    if older is None:
        return ""
    return (f"; the run also keeps {older.name}, an earlier checkpoint: write its name into "
            f"{run_dir / 'LATEST'} to go on from it")


def _older_checkpoint(run_dir: Path, newest: Path | None) -> Path | None:
    """The newest complete ``ckpt-*`` of ``run_dir`` before ``newest`` (whose files are
    damaged or missing; None: LATEST itself is), or None: what a run can go back to
    (``save_checkpoint`` keeps the last two). Completeness is its two files being there;
    loading it checks their sha256."""
    found = sorted((d for d in run_dir.glob("ckpt-*")
                    if (newest is None or d.name < newest.name)
                    and (d / "state.json").is_file()
                    and (d / "tensors.safetensors").is_file()),
                   key=lambda d: d.name, reverse=True)
    return found[0] if found else None


# A state.json holds a run's counters and curves: a few MB at most. A larger one is refused
# unread, as is JSON nested deeper than the reader can recurse.
MAX_STATE_BYTES = 64 << 20


def read_state(sfile: Path):
    """The JSON value of a checkpoint's ``state.json`` (any type: callers check it is an
    object).

    Raises:
        OSError: the file cannot be read.
        ValueError: the file is over ``MAX_STATE_BYTES`` (64 MB, named with its size), or is
            not UTF-8 JSON, or nests deeper than the JSON reader can go.
    """
    size = sfile.stat().st_size
    if size > MAX_STATE_BYTES:
        raise ValueError(f"checkpoint {sfile} is corrupt: it is {size} bytes, more than a "
                         f"state.json can be ({MAX_STATE_BYTES} bytes)")
    try:
        return json.loads(sfile.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise ValueError(f"checkpoint {sfile} is corrupt: {e}") from e
    except RecursionError:
        raise ValueError(f"checkpoint {sfile} is corrupt: its JSON nests deeper than it "
                         f"can be read") from None


def _load(path: Path) -> tuple[dict[str, torch.Tensor], dict]:
    """``load_checkpoint`` of one ``ckpt-*`` directory."""
    sfile, tfile = path / "state.json", path / "tensors.safetensors"
    if not sfile.is_file() or not tfile.is_file():
        raise FileNotFoundError(f"no checkpoint at {path} (expected LATEST, or state.json and "
                                f"tensors.safetensors)")
    state = read_state(sfile)
    if not isinstance(state, dict):
        raise ValueError(f"checkpoint {sfile} is corrupt: it holds a JSON "
                         f"{type(state).__name__}, not an object")
    if state.get("format_version") != FORMAT_VERSION:
        raise ValueError(f"checkpoint {path} has format version {state.get('format_version')}"
                         f", this metaloop reads {FORMAT_VERSION}")
    digest = state_digest(state) if "state_sha256" in state else None
    if digest is not None and state["state_sha256"] not in (
            digest, _digest(state), state_digest(state, _MEASURED_01, _MEASURED_IN_ITEMS_01)):
        raise ValueError(f"checkpoint {sfile} is corrupt or was edited: its contents' sha256 "
                         f"is {digest}, its state_sha256 says "
                         f"{state['state_sha256']} (restore the file; if it was changed on "
                         f"purpose, delete its state_sha256 entry)")
    if not isinstance(state.get("iteration"), int):
        raise ValueError(f"checkpoint {sfile} is corrupt: no integer 'iteration'")
    actual = sha256_file(tfile)
    if actual != state.get("tensors_sha256"):
        raise ValueError(_mismatch(path, state, actual))
    try:
        tensors = load_file(str(tfile))
    except SafetensorError as e:
        raise ValueError(f"checkpoint {tfile} is corrupt: not a safetensors file ({e})") from e
    if not protocol_run(state):     # (a vae --protocol iwae run: its training checks no step)
        _check_finite(path, tensors)
    return tensors, state


def _check_finite(path: Path, tensors: dict[str, torch.Tensor]) -> None:
    """Refuse a meta-learning run's checkpoint whose model weights (its ``model.*`` tensors
    of a floating or complex dtype) hold NaN or inf: its training stops at a non-finite step
    before it saves one, so such a tensor was written by something else (an edited or
    damaged file whose sha256 entries were rewritten). Checked here, on load, not when a
    checkpoint is saved; a ``metaloop vae --protocol iwae`` checkpoint (``protocol_run``) is
    not checked.

    Raises:
        ValueError: naming ``path`` and the first such tensor, with how many of its values
            are NaN and how many inf.
    """
    for name, t in tensors.items():
        if not name.startswith("model.") or not (t.is_floating_point() or t.is_complex()):
            continue
        if bool(torch.isfinite(t).all()):
            continue
        nan = int(torch.isnan(t).sum())
        inf = int(torch.isinf(t).sum())
        what = " and ".join(f"{k} {v}" for k, v in ((nan, "NaN"), (inf, "inf")) if k)
        raise ValueError(f"checkpoint {path}: tensor {name} holds {what} of its {t.numel()} "
                         f"values; a trained model's weights are finite numbers (the file "
                         f"was edited or damaged after it was written)")


def _mismatch(path: Path, state: dict, actual: str) -> str:
    """The refusal of the checkpoint ``path`` whose tensors file is not of the sha256 its
    ``state.json`` (``state``) names: either file may be the damaged one (a tensors file
    cut short, or a ``state.json`` copied from another checkpoint), so both are named, and
    the state's iteration where it is not the folder's."""
    named = f"ckpt-{state['iteration']:08d}"
    if named != path.name:
        which = (f"its state.json says iteration {state['iteration']} ({named}), not "
                 f"{path.name}'s: that state.json is likely another checkpoint's")
    else:
        which = (f"the state.json and the folder are both of iteration "
                 f"{state['iteration']}")
    return (f"checkpoint {path}: its tensors.safetensors and state.json do not match, and "
            f"either may be the damaged one: tensors.safetensors is corrupt or truncated: "
            f"sha256 {actual}, expected {state.get('tensors_sha256')} (by state.json), or "
            f"state.json is not this checkpoint's; {which} (keep both files until it is "
            f"clear which)")


def saved_run(path) -> bool:
    """Whether ``path`` holds a saved run: a run directory with a ``LATEST`` file, or one
    ``ckpt-*`` directory (its ``state.json``). The files are not read beyond ``LATEST``:
    :func:`load_checkpoint` checks them.

    Args:
        path: the folder to look in (a ``str`` or ``os.PathLike``); a missing one is no run.

    Raises:
        ValueError: a ``LATEST`` that cannot be read or names no ``ckpt-*`` directory (as
            :func:`latest_checkpoint`).
    """
    path = Path(path)
    return (path / "state.json").is_file() or latest_checkpoint(path) is not None


def protocol_run(state: dict) -> bool:
    """Whether a checkpoint's ``state`` is one of a ``metaloop vae --protocol iwae`` run (a
    VAE: its ``settings`` and ``passes``), not of a meta-learning run (``metaloop train``,
    ``compare``, ``ml.train``: its ``config``), which share this format."""
    return isinstance(state.get("settings"), dict) and "passes" in state


def extra_state(learner) -> dict[str, torch.Tensor]:
    """The learner's state beyond its model's parameters (``learner.extra_state()``, e.g.
    Reptile's shared inner-Adam state), stored in checkpoints under ``learner.*``; empty for
    learners without such state."""
    fn = getattr(learner, "extra_state", None)
    return fn() if fn is not None else {}


def load_extra_state(learner, tensors: dict[str, torch.Tensor]) -> None:
    """Give the learner the ``learner.*`` tensors of a checkpoint (see ``extra_state``).

    Raises:
        ValueError: the checkpoint holds such state and the learner keeps none.
    """
    state = {k[len("learner."):]: v for k, v in tensors.items() if k.startswith("learner.")}
    fn = getattr(learner, "load_extra_state", None)
    if fn is not None:
        fn(state)
    elif state:
        raise ValueError(f"the checkpoint holds learner state {sorted(state)} that a "
                         f"{type(learner).__name__} does not keep")

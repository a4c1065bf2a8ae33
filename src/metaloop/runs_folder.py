"""Which metaloop command's run a folder holds, and a refusal to write another command's run
there.

A run folder holds one run. Every command that writes an ``--out`` folder would otherwise
empty, replace or mix with another command's files there: ``vae`` empties ``metrics.jsonl``
(an interrupted ``train`` run could no longer be resumed), ``forgetting`` replaces it,
``train`` writes its log and checkpoints beside the ``results.json`` of another command, and
``compare``, ``adapt``, ``eval --out`` and ``predict --out`` replace the ``results.json``
(``eval`` and ``adapt`` remove the plots) of the run there. ``check(out, command)`` refuses
that before anything is written; each command calls it (``metaloop.recipes.report.
output_dir(path, command=...)`` for those that write through it), and a folder that holds
the same command's run is left to that command (``train`` and ``compare`` resume it and
refuse a new run over it; ``vae``, ``forgetting`` and ``adapt`` refuse a new run over their
own finished run too (``check_finished``), and ``forgetting`` and ``adapt`` resume their own
interrupted or finished run; ``eval`` and ``predict`` replace their own finished results).
A ``results.json`` (for ``eval`` a plot too) that no metaloop command wrote is refused the
same way: a command replaces only its own earlier result::

    runs_folder.check("runs/x", "vae")    # ValueError if runs/x holds a train run

A run folder is not part of the data either: ``check_outside_data(out, data_root)`` refuses
an ``--out`` inside the image folder a run reads (``vae``, ``adapt --family folder``,
``forgetting --data``, ``compare`` and ``eval`` of a ``folder`` family), where the run's
PNGs would become images of a class that every later run on that folder reads::

    runs_folder.check_outside_data("shapes/circle", "shapes")   # ValueError

What tells the command (``found``), first match:

- a checkpoint (``LATEST`` or a ``ckpt-*`` folder): ``vae --protocol iwae`` where its
  ``state.json`` says so, else ``train`` (a method run of ``compare`` is one too);
- ``partial.json`` (kept state of an interrupted run): the command it records;
- ``runs.json``: ``forgetting``;
- ``results.json``: ``predict`` (its ``predictions``), ``vae`` (its ``settings`` name a
  model, or it holds an ``inversion`` study), ``adapt`` (``approaches``), ``forgetting``
  (``strategies``), ``compare`` or ``eval`` (its ``config`` section);
- ``model.safetensors``: ``vae``.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

__all__ = ["check", "check_finished", "check_outside_data", "found", "results_of"]


def _checkpoint_command(out: Path) -> str:
    from metaloop.train import checkpoint as ckpt

    try:
        state = ckpt.load_checkpoint(out)[1]
    except (ValueError, OSError, KeyError, TypeError):
        return "train"                  # a damaged checkpoint: still a checkpoint's run
    return "vae --protocol iwae" if ckpt.protocol_run(state) else "train"


def _results_command(res) -> str | None:
    if not isinstance(res, dict):
        return None
    if isinstance(res.get("predictions"), list) and "checkpoints" in res:
        return "predict"
    settings = res.get("settings")
    if isinstance(settings, dict) and ("model" in settings or "inversion" in res):
        return "vae"                    # a model's run, or --compare-inversion's and
                                        # --inversion-transfer's (no one model)
    if isinstance(res.get("approaches"), dict):
        return "adapt"
    if isinstance(res.get("strategies"), dict):
        return "forgetting"
    config = res.get("config")
    if isinstance(config, dict):
        for command in ("compare", "eval"):
            if command in config:
                return command
    return None


def found(out) -> str | None:
    """The metaloop command whose run the folder ``out`` holds (``"train"``, ``"vae"``,
    ``"vae --protocol iwae"``, ``"forgetting"``, ``"adapt"``, ``"compare"``, ``"eval"``,
    ``"predict"``), or None (no folder, an empty one, or files no metaloop command wrote).

    Args:
        out: the folder (a ``str`` or ``os.PathLike``); a path that is not a folder, or
            one that cannot be read, gives None.
    """
    from metaloop.recipes import _partial

    out = Path(out)
    try:
        if not out.is_dir():
            return None
        if (out / "LATEST").is_file() or any(
                p.name.startswith("ckpt-") and p.is_dir() for p in out.iterdir()):
            return _checkpoint_command(out)
        if (out / _partial.PARTIAL).is_file():
            other = _partial._owner_of(out)
            if other is not None:
                return other
        if (out / "runs.json").is_file():
            return "forgetting"
        if (out / "results.json").is_file():
            other = _results_command(results_of(out))
            if other is not None:
                return other
        if (out / "model.safetensors").is_file():
            return "vae"
    except OSError:                     # unreadable: the writer names it where it writes
        return None
    return None


def check(out, command: str, files: tuple[str, ...] = ("results.json",)) -> None:
    """Before a run of ``command`` writes in ``out``: refuse a folder that holds another
    command's run (``found``), which that run would empty or mix with its own files, and
    one that holds no metaloop run but one of the ``files`` the run writes there (a
    ``results.json`` no metaloop command wrote, or that is not JSON), which the run would
    replace or remove. The folder is read through a symbolic link.

    Args:
        out: the ``--out`` folder (a ``str`` or ``os.PathLike``); a missing or empty one
            passes.
        command: the command about to write there, as ``found`` names it (``"train"``,
            ``"vae"``, ``"vae --protocol iwae"``, ``"forgetting"``, ``"adapt"``,
            ``"compare"``, ``"eval"``, ``"predict"``); a folder holding that command's own
            run passes.
        files: the names the run writes or removes in ``out`` (``eval``: its plots too);
            one of them there, where ``found`` names no run, is refused.

    Raises:
        ValueError: naming the folder (or the file), the command whose run it holds, and
            what to do; nothing was written.
    """
    other = found(out)
    if other is not None and other != command:
        raise ValueError(f"{out} holds a metaloop {other} run, which a metaloop {command} "
                         f"run there would overwrite: give another --out (nothing was "
                         f"written)")
    if other is not None:
        return
    path = Path(out)
    try:
        there = [name for name in files if os.path.lexists(path / name)]
    except OSError:                     # unreadable: the writer names it where it writes
        return
    if there:
        shown = ", ".join(str(path / name) for name in there)
        raise ValueError(f"{shown} {'is' if len(there) == 1 else 'are'} not a metaloop "
                         f"{command} result (no metaloop command wrote "
                         f"{'it' if len(there) == 1 else 'them'}), which a metaloop "
                         f"{command} run there would replace: give another --out (nothing "
                         f"was written)")


def check_finished(out, command: str, what: str, fixes: str = "",
                   files: tuple[str, ...] = ("results.json",)) -> None:
    """Before a new run (no ``--resume``) of ``command`` writes in ``out``: refuse a folder
    that holds a finished run of that same command (its ``results.json``, as ``found`` names
    it), which the new run would replace without a word.

    Args:
        out: the ``--out`` folder.
        command: ``"vae"``, ``"forgetting"`` or ``"adapt"`` (as ``found`` names it).
        what: the finished run's key settings, read from its results.json by the caller
            (e.g. ``"--model vae, --epochs 3"``), or ``""``.
        fixes: what else than another ``--out`` or removing the folder would do (e.g. the
            same command with ``--resume``), or ``""``.
        files: the files any one of which makes the run a finished one (``forgetting``:
            its ``runs.json`` too).

    Raises:
        ValueError: naming the folder, the command and settings of the run it holds, its
            files and the fixes; nothing was written or removed.
    """
    path = Path(out)
    try:
        if not any((path / name).is_file() for name in files) or found(path) != command:
            return
    except OSError:         # a path the system refuses (a name too long): the output
        return              # folder's own check names it
    try:
        names = sorted(p.name for p in path.iterdir() if not p.name.startswith("."))
    except OSError:
        names = ["results.json"]
    shown = ", ".join(names[:8]) + (f" and {len(names) - 8} more" if len(names) > 8 else "")
    raise ValueError(f"{out} holds a finished metaloop {command} run"
                     f"{f' ({what})' if what else ''}: {shown}; a new run there would "
                     f"replace it. Give another --out, or remove {out} to run again"
                     f"{f', or {fixes}' if fixes else ''} (nothing was written or removed)")


def results_of(out) -> dict:
    """``out/results.json`` read as a JSON object, or ``{}`` where it cannot be.

    Args:
        out: the run folder (a ``str`` or ``os.PathLike``).
    """
    try:
        res = json.loads((Path(out) / "results.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return res if isinstance(res, dict) else {}


def check_outside_data(out, data_root, option: str = "--data", *,
                       out_option: str = "--out") -> None:
    """Before a run that reads the image folder ``data_root`` writes in ``out``: refuse an
    ``out`` that is that folder or lies inside it, symbolic links resolved, where the
    run's files (its PNGs above all) would be read as images of a class by every later run
    on the folder. A ``data_root`` that is not a folder (a tensor file, a built-in data
    set's name, a path that does not exist) holds no such images and is left alone, and so
    is a data folder inside ``out``.

    Args:
        out: the folder the run writes.
        data_root: the image folder the run reads (``root/<class>/<image>``).
        option: how the command line names ``data_root`` (``"--data"``,
            ``"family.root"``, ...).
        out_option: how the command line names ``out``.

    Raises:
        ValueError: naming both paths; nothing was written.
    """
    data = Path(data_root).expanduser()
    if not data.is_dir():
        return
    root, inside = data.resolve(), Path(out).expanduser().resolve()
    if inside == root or root in inside.parents:
        raise ValueError(f"{out_option} {out} is inside the image folder {option} {data_root} "
                         f"({root}) that the run reads: its files would be read as images "
                         f"of your data by every later run on that folder; give a folder "
                         f"outside it as {out_option} (nothing was written)")

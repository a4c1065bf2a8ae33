"""The kept state of an interrupted run, ``OUT/partial.json``, shared by the commands that
resume from it (``metaloop adapt``, ``metaloop forgetting``).

A run rewrites ``PARTIAL`` atomically after each unit of work, holding an ``identity`` (what
its results depend on) beside what it has done; ``results.json`` is written last and
``PARTIAL`` removed after it. Each command says what its identity and its units are; this
module says how a folder's state is read, told apart and refused.
"""

from __future__ import annotations

import json
from pathlib import Path

__all__ = ["PARTIAL", "check_own", "check_resume", "corrupt", "difference", "differences",
           "finished", "owner", "read", "refuse", "stopped"]

PARTIAL = "partial.json"


def owner(state) -> str | None:
    """The command whose kept state ``state`` (a ``PARTIAL`` read as JSON) is: its
    ``"command"`` (``metaloop forgetting`` records it), ``"adapt"`` for the held-out tasks of
    ``metaloop adapt`` (which records none), or None when it is neither."""
    if not isinstance(state, dict):
        return None
    if isinstance(state.get("command"), str):
        return state["command"]
    return "adapt" if "tasks_done" in state else None


def _owner_of(out: Path) -> str | None:
    try:
        return owner(json.loads((out / PARTIAL).read_text(encoding="utf-8")))
    except (OSError, ValueError):
        return None


def difference(key: str, old: dict, new: dict, what: dict, *,
               kept: str = "the kept run", mine: str = "this command") -> str:
    """How a refused resume names a difference of ``key`` (``what[key]``, else its flag):
    kept value first, or that one side has none (a key an older run did not record, or one
    this command has no value for). ``kept`` and ``mine`` name the two sides (a refused
    record: "the record" and "this run")."""
    name = what.get(key, "--" + key.replace("_", "-"))
    if key not in old:
        return f"{name} (not recorded in {kept}; {mine}'s: {new[key]!r})"
    if key not in new:
        return f"{name} ({kept}'s: {old[key]!r}; none in {mine})"
    return f"{name} ({old[key]!r} != {new[key]!r})"


def stopped(out, command: str, kept: str, before: str) -> str:
    """What an interrupted run of ``command`` says: that ``kept`` (e.g. "the held-out tasks
    scored") are in ``out``'s ``PARTIAL`` and ``--resume`` continues them, or, with no such
    file, that it stopped ``before`` any was done and starts again."""
    path = Path(out) / PARTIAL
    if path.is_file():
        return (f"metaloop {command}: {kept} so far are kept in {path}; the same command "
                f"with --resume continues them")
    return (f"metaloop {command}: stopped before {before}; start it again with the same "
            f"command (without --resume)")


def differences(old: dict, new: dict, what: dict, *, same=(), kept: str = "the kept run",
                mine: str = "this command") -> list[str]:
    """Each key whose value (or presence) differs between the kept identity ``old`` and this
    command's ``new``, as ``difference`` names it (``kept``, ``mine``: the sides' names), in
    key order; the keys in ``same`` are not compared."""
    return [difference(k, old, new, what, kept=kept, mine=mine)
            for k in sorted(set(old) | set(new))
            if k not in same and (k in old, old.get(k)) != (k in new, new.get(k))]


def refuse(out, diff: list[str]) -> ValueError:
    """The error of a resume whose command differs from the kept run's in ``diff``."""
    return ValueError(f"refusing to resume {out}: this command differs from the kept run's "
                      f"in {', '.join(diff)}; give the kept run's arguments, or another "
                      f"--out for a new run")


def _foreign(path: Path, other: str, command: str) -> ValueError:
    return ValueError(f"{path} is the kept state of an interrupted metaloop {other}, not of "
                      f"metaloop {command}: resume it with metaloop {other} --resume, or "
                      f"give another --out")


def check_own(out, command: str) -> None:
    """Before a new run of ``command`` removes ``out``'s ``PARTIAL``: refuse one that is
    another command's kept state (an interrupted run that would be lost).

    Raises:
        ValueError: naming the file and the command it belongs to.
    """
    other = _owner_of(Path(out))
    if other is not None and other != command:
        path = Path(out) / PARTIAL
        raise ValueError(f"{path} is the kept state of an interrupted metaloop {other}, which "
                         f"a new metaloop {command} run there would remove: resume it with "
                         f"metaloop {other} --resume, or give another --out")


def corrupt(path: Path, e: BaseException) -> ValueError:
    return ValueError(f"{path} is corrupt ({type(e).__name__}: {e}); remove it to start "
                      f"again")


def finished(out, key: str) -> bool:
    """True where ``out`` holds a ``PARTIAL`` beside a complete ``results.json`` (a dict
    whose ``key`` is a dict): the run was stopped after writing its results (atomically,
    last) and before removing ``PARTIAL``, so it finished and the ``PARTIAL`` is stale."""
    out = Path(out)
    if not (out / PARTIAL).is_file():
        return False
    try:
        res = json.loads((out / "results.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    return isinstance(res, dict) and isinstance(res.get(key), dict)


def check_resume(out, resume: bool, command: str, key: str) -> None:
    """Before anything is loaded: ``resume`` needs a kept ``PARTIAL`` in ``out``; a new run
    refuses to discard one, unless the run had ``finished`` (``key``: the dict its
    results.json holds; a stale file, which the run removes first).

    Raises:
        ValueError: naming the folder and what it holds (another command's kept state by
            that command, also on ``resume``).
    """
    out = Path(out)
    has_partial = (out / PARTIAL).is_file()
    if resume and not has_partial:
        held = (" (it holds a finished run's results.json)"
                if (out / "results.json").is_file() else "")
        raise ValueError(f"--resume: nothing to resume in {out}: no {PARTIAL} of an "
                         f"interrupted metaloop {command}{held}")
    other = _owner_of(out) if resume else None
    if other is not None and other != command:      # named before its data is read
        raise _foreign(out / PARTIAL, other, command)
    if not resume and has_partial and not finished(out, key):
        other = _owner_of(out) or command
        raise ValueError(f"{out} holds an interrupted metaloop {other} ({out / PARTIAL}); the "
                         f"same command with --resume continues it, or give another --out "
                         f"(or remove {out / PARTIAL} to start again)")


def read(out, command: str, name: str = PARTIAL) -> tuple[Path, dict]:
    """``(path, state)`` of ``out / name`` (the kept state, ``PARTIAL``, or another file
    holding one) for a resume of ``command``.

    Raises:
        ValueError: no such file (nothing to resume), a file that is no JSON object, or the
            kept state of another command (naming it).
    """
    path = Path(out) / name
    try:
        state = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ValueError(f"--resume: nothing to resume in {out}: no {name} of an "
                         f"interrupted metaloop {command}") from None
    except (OSError, ValueError) as e:
        raise corrupt(path, e) from e
    other = owner(state)
    if other is not None and other != command:
        raise _foreign(path, other, command)
    if not isinstance(state, dict):
        raise ValueError(f"{path} is corrupt: not the state of a metaloop {command} run; "
                         f"remove it to start again")
    return path, state

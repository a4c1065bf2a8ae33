"""What a result record measured, and the check that a run's ``--record`` replaces only a
record of its own setting (``metaloop adapt`` and ``metaloop forgetting``).

A recipe's record holds ``setting``: the settings its numbers depend on, as a JSON object.
A record written before that field was added is read back from its ``command``. A run whose
record would go to the path of a record of another setting is refused before any work,
naming each difference, and nothing is written.

A record names a local model folder or data file inside the folder it was written from by
its path relative to that folder (``metaloop.recipes.adapt`` writes ``setting`` so, and the
command's paths are relative alike); that folder is told by the command's ``--record``,
written relative to it, and the record's own place, so the record is read back as the same
setting from any working folder."""

from __future__ import annotations

import json
import shlex
from collections.abc import Callable, Sequence
from pathlib import Path

from metaloop.recipes import _partial

__all__ = ["PATHS", "check_same_setting", "flag_value", "old_record", "written_from"]

# the setting keys that may name a local file or folder (a model, the user's data)
PATHS = ("model", "data")


def old_record(path) -> dict:
    """The record already at ``path`` (``{}``: none, or a file that is not a JSON object)."""
    try:
        old = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return old if isinstance(old, dict) else {}


def check_same_setting(path, mine: dict, theirs: Callable[[dict], dict], name: str, *,
                       first: Sequence[str] = (), paths: Sequence[str] = PATHS) -> None:
    """Refuse to replace the record at ``path`` where it measured another setting than
    ``mine``. No record there, or one of the same setting, passes.

    Args:
        path: where the record of ``name`` would be written.
        mine: this run's setting of ``name`` (JSON values; a key's flag is ``--key`` with
            ``-`` for ``_``).
        theirs: the setting of the record there (its ``setting``, else read from its
            ``command``); a ``KeyError``, ``TypeError`` or ``ValueError`` it raises means the
            setting cannot be told.
        name: the approach or strategy whose record it is, for the message.
        first: keys named before the others (in this order) where they differ.
        paths: the keys that may name a local file or folder: where the record gives one as
            a relative path (in ``setting``, else in its command's ``--key``) that exists
            from the folder the record was written from (``written_from``), it is that
            path, resolved, whatever the working folder is now; otherwise ``theirs``'
            value stands.

    Raises:
        ValueError: naming the path and each setting that differs (the record's value
            first), or saying that the record's setting cannot be told.
    """
    old = old_record(path)
    if not old:
        return
    try:
        other = json.loads(json.dumps(theirs(old)))
    except (KeyError, TypeError, ValueError) as e:
        raise ValueError(f"--record: {path} holds a record whose settings cannot be told "
                         f"({type(e).__name__}: {e}), which the record of {name} would "
                         f"replace: give another --record folder, or remove {path}") from e
    base = written_from(path, old)
    for key in paths:
        raw = old["setting"].get(key) if isinstance(old.get("setting"), dict) else \
            _option(old.get("command"), key)
        if base is not None and key in other and isinstance(raw, str) and raw \
                and not raw.startswith("~") and not Path(raw).is_absolute() \
                and (base / raw).exists():
            other[key] = str((base / raw).resolve())
    mine = json.loads(json.dumps(mine))
    sides = {"kept": "the record", "mine": "this run"}
    diff = [_partial.difference(k, other, mine, {}, **sides) for k in first
            if (k in other, other.get(k)) != (k in mine, mine.get(k))]
    diff += _partial.differences(other, mine, {}, same=first, **sides)
    if diff:
        raise ValueError(f"--record: {path} holds the record of another setting of {name}, "
                         f"which this run's would replace; it differs in {', '.join(diff)} "
                         f"(its value first): give another --record folder, or remove "
                         f"{path} to replace it")


def written_from(path, old: dict) -> Path | None:
    """The working folder the record ``old`` at ``path`` was written from: its command's
    ``--record`` folder, written relative to that folder, taken off the end of the folder
    the record is in now (resolved), so that a project moved as a whole keeps it. None where
    that cannot be told: no such option, an absolute one (a record folder outside the
    working folder), or one that is not the end of the record's folder."""
    value = _option(old.get("command"), "record")
    if not value or value.startswith("~") or Path(value).is_absolute():
        return None
    parts = Path(value).parts                      # "." -> (): the working folder itself
    folder = Path(path).expanduser().resolve().parent
    if ".." in parts or len(parts) >= len(folder.parts) or \
            (parts and folder.parts[-len(parts):] != parts):
        return None
    return Path(*folder.parts[:len(folder.parts) - len(parts)])


def _option(command, key: str) -> str | None:
    """The value of ``--key`` (``-`` for ``_``) in the last command of the command line
    ``command`` (after any ``&&``), its last occurrence; None where it is not given or
    the line cannot be split."""
    if not isinstance(command, str):
        return None
    try:
        words = shlex.split(command)
    except ValueError:
        return None
    while "&&" in words:
        words = words[words.index("&&") + 1:]
    return flag_value(words, key)


def flag_value(words: Sequence[str], key: str) -> str | None:
    """The value of ``--key`` (``-`` for ``_``; ``--key V`` or ``--key=V``) among the words
    of one command, its last occurrence; None where it is not given."""
    flag, value = "--" + key.replace("_", "-"), None
    for i, word in enumerate(words):
        if word == flag and i + 1 < len(words):
            value = words[i + 1]
        elif word.startswith(flag + "="):
            value = word[len(flag) + 1:]
    return value

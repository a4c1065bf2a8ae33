"""What a result record measured, and the check that a run's ``--record`` replaces only a
record of its own setting (``metaloop adapt`` and ``metaloop forgetting``).

A recipe's record holds ``setting``: the settings its numbers depend on, as a JSON object.
A record written before that field was added is read back from its ``command``. A run whose
record would go to the path of a record of another setting is refused before any work,
naming each difference, and nothing is written."""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from pathlib import Path

from metaloop.recipes import _partial

__all__ = ["check_same_setting", "old_record"]


def old_record(path) -> dict:
    """The record already at ``path`` (``{}``: none, or a file that is not a JSON object)."""
    try:
        old = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return old if isinstance(old, dict) else {}


def check_same_setting(path, mine: dict, theirs: Callable[[dict], dict], name: str, *,
                       first: Sequence[str] = ()) -> None:
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

"""``safe_repr``: a ``__repr__`` that shows settings, and falls back to Python's own when the
object is not fully built (``__new__`` without ``__init__``, an ``__init__`` that raised:
debuggers and tracebacks print such objects too)."""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")


def safe_repr(fn: Callable[[T], str]) -> Callable[[T], str]:
    """Decorate a ``__repr__`` that reads attributes ``__init__`` sets: where one is missing,
    ``<ClassName object at 0x...>`` instead of an AttributeError."""
    @functools.wraps(fn)
    def __repr__(self: T) -> str:
        try:
            return fn(self)
        except AttributeError:
            return object.__repr__(self)
    return __repr__

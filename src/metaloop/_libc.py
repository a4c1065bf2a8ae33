"""The C library's functions, where there is one (glibc's allocator controls)."""

from __future__ import annotations

import ctypes
import ctypes.util


def libc_function(name: str):
    """The C library's function ``name`` as a ctypes function, or None where there is no
    such library or function (macOS, musl, Windows: callers then change nothing)."""
    lib = ctypes.util.find_library("c")
    try:
        return getattr(ctypes.CDLL(lib), name) if lib else None
    except (OSError, AttributeError):
        return None

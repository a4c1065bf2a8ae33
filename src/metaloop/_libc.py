"""The C library's functions, where there is one (glibc's allocator controls)."""

from __future__ import annotations

import ctypes
import ctypes.util
import os


def libc_function(name: str):
    """The C library's function ``name`` as a ctypes function, or None where there is no
    such library or function (macOS, musl, Windows: callers then change nothing).

    On POSIX the name is looked up among the process's own symbols (``dlopen(NULL)``, the C
    library's among them), as the C runtime resolves it, so glibc is found also where
    ``ctypes.util.find_library`` finds no library (no ``ldconfig`` cache and no compiler:
    minimal container images, NixOS); elsewhere (Windows) in the library that
    ``find_library("c")`` names.
    """
    try:
        if os.name == "posix":
            return getattr(ctypes.CDLL(None), name)
        lib = ctypes.util.find_library("c")
        return getattr(ctypes.CDLL(lib), name) if lib else None
    except (OSError, AttributeError):
        return None

"""How the C allocator serves metaloop's large tensors (glibc ``mallopt``).

glibc maps every block above its mmap threshold (at most 32 MiB) with ``mmap`` and unmaps it
on ``free``, so a training step that allocates such blocks (a Conv4 activation of a
960-image batch is 48 MB) asks the kernel for fresh zeroed pages every time: on the CPU
profiles this was a third of the pretraining baseline's CPU time, all of it system time.
``keep_heap()`` makes glibc serve every block from its heap and keep freed heap memory for
reuse (``M_MMAP_MAX = 0``, ``M_TRIM_THRESHOLD`` = 1 GiB), the same as starting the process
with ``MALLOC_MMAP_MAX_=0 MALLOC_TRIM_THRESHOLD_=1073741824``. The price is that memory
freed in the middle of the heap stays with the process (the peak resident size can grow);
``benchmarks/bench_malloc.py`` measures both, side by side. ``metaloop --malloc heap`` (the
CLI's default) calls it before any work; ``--malloc system`` leaves glibc's defaults.
"""

from __future__ import annotations

import ctypes

from metaloop._libc import libc_function

__all__ = ["MODES", "keep_heap", "system_heap"]

MODES = ("heap", "system")

# mallopt parameter numbers (glibc <malloc.h>)
M_TRIM_THRESHOLD = -1
M_MMAP_MAX = -4
TRIM_BYTES = 1 << 30
# glibc's defaults, which ``system_heap`` sets back
MMAP_MAX_DEFAULT = 65536
TRIM_BYTES_DEFAULT = 128 * 1024


def _mallopt():
    fn = libc_function("mallopt")
    if fn is not None:
        fn.argtypes, fn.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    return fn


def keep_heap() -> bool:
    """Serve large blocks from the heap and keep freed memory for reuse (see the module).

    Affects the whole process from the call on (blocks already mapped stay mapped until
    freed). Returns True where glibc accepted both settings, False where there is no glibc
    ``mallopt`` (macOS, musl: nothing changes).
    """
    fn = _mallopt()
    if fn is None:
        return False
    return bool(fn(M_MMAP_MAX, 0)) and bool(fn(M_TRIM_THRESHOLD, TRIM_BYTES))


def system_heap() -> bool:
    """Set back what ``keep_heap`` changed to glibc's defaults (``M_MMAP_MAX`` 65536,
    ``M_TRIM_THRESHOLD`` 128 KiB, no longer adjusted dynamically), and give the freed heap
    memory back to the system (``malloc_trim``): what ``metaloop.cli.main.main`` does when
    its command ends, so a program that calls it gets its allocator back. Returns False
    where there is no glibc ``mallopt``."""
    fn = _mallopt()
    if fn is None:
        return False
    ok = bool(fn(M_MMAP_MAX, MMAP_MAX_DEFAULT)) and bool(fn(M_TRIM_THRESHOLD,
                                                           TRIM_BYTES_DEFAULT))
    trim = libc_function("malloc_trim")
    if trim is not None:
        trim.argtypes, trim.restype = [ctypes.c_size_t], ctypes.c_int
        trim(0)
    return ok

"""Shared timing helper for the benchmark scripts (run as ``python benchmarks/X.py``)."""

from __future__ import annotations

import contextlib
import os
import statistics
import time
from collections.abc import Callable


def interleaved_medians(fns: dict[str, Callable[[], object]], reps: int,
                        context: Callable[[str], contextlib.AbstractContextManager]
                        = lambda key: contextlib.nullcontext()) -> dict[str, float]:
    """Median seconds of each of ``fns``, called A B A B ... ``reps`` times, each call inside
    ``context(key)``: a slow phase of the machine then hits every variant alike."""
    times: dict[str, list[float]] = {k: [] for k in fns}
    for _ in range(reps):
        for key, fn in fns.items():
            with context(key):
                t = time.perf_counter()
                fn()
                times[key].append(time.perf_counter() - t)
    return {k: statistics.median(v) for k, v in times.items()}


def allocator() -> str:
    """The glibc allocator settings every implementation of this run shares (DESIGN: a
    benchmark says which): the ``MALLOC_*`` variables set, else glibc's defaults."""
    env = {k: v for k, v in sorted(os.environ.items()) if k.startswith("MALLOC_")}
    return "allocator " + (", ".join(f"{k}={v}" for k, v in env.items()) or "glibc default")


def require_positive(parser, args, *names: str) -> None:
    """A usage error (exit status 2, one line naming the flag) for any of ``names`` (argparse
    dests) that is not a positive int: a count of 0 times nothing, and the medians and
    ratios of an empty list would end in a traceback."""
    for name in names:
        value = getattr(args, name)
        if value is not None and value <= 0:
            parser.error(f"--{name.replace('_', '-')} must be a positive int, got {value}")


def maxrss_mib(ru_maxrss: int | float) -> float:
    """``getrusage``'s ``ru_maxrss`` in MiB: Linux gives kilobytes, macOS bytes."""
    import sys
    return ru_maxrss / (2**20 if sys.platform == "darwin" else 1024)

"""tqdm's keyword defaults for metaloop's progress bars: on a terminal tqdm's own, off one
(stderr into a log file, a pipe, a job scheduler's output) a bar that redraws at most every
``OFF_TERMINAL_INTERVAL`` seconds, so that a log gets a line a minute instead of ~8 ``\\r``
updates a second. A ``TQDM_MININTERVAL`` / ``TQDM_MAXINTERVAL`` in the environment (tqdm's
own overrides of its defaults) is left to tqdm::

    bar = tqdm(total=n, desc="tasks", **tqdm_defaults())
"""

from __future__ import annotations

import os
import sys

__all__ = ["OFF_TERMINAL_INTERVAL", "tqdm_defaults"]

OFF_TERMINAL_INTERVAL = 60.0
"""Seconds between two redraws of a bar whose stream is not a terminal."""


def _on_terminal(file) -> bool:
    try:
        return bool(file.isatty())
    except (AttributeError, ValueError, OSError):   # no stream, or a closed one
        return False


def _notebook() -> bool:
    """Whether ``tqdm.auto`` draws Jupyter widgets (no log file to spare there)."""
    from tqdm.autonotebook import tqdm
    from tqdm.std import tqdm as terminal_tqdm

    return tqdm is not terminal_tqdm


def tqdm_defaults(file=None) -> dict:
    """Keyword arguments for a ``tqdm(...)`` bar that writes to ``file``.

    Args:
        file: the bar's stream (None: ``sys.stderr``, tqdm's default).

    Returns:
        ``{}`` on a terminal (or in a Jupyter notebook); off one ``mininterval`` and
        ``maxinterval`` of ``OFF_TERMINAL_INTERVAL`` seconds (tqdm's monitor thread would
        otherwise redraw a slow bar every 10 s), each left out where the environment sets
        it (``TQDM_MININTERVAL``, ``TQDM_MAXINTERVAL``).
    """
    stream = sys.stderr if file is None else file
    if _on_terminal(stream) or _notebook():
        return {}
    return {key: OFF_TERMINAL_INTERVAL for key in ("mininterval", "maxinterval")
            if f"TQDM_{key.upper()}" not in os.environ}

"""SIGTERM as Ctrl-C for the command line's commands."""

from __future__ import annotations

import signal
import threading
from contextlib import contextmanager


def _interrupt(signum, frame):
    raise KeyboardInterrupt(f"stopped by {signal.Signals(signum).name}")


def _ours_to_set() -> bool:
    """Whether SIGTERM's handler is for metaloop to set: in the main thread (the only one a
    handler can be set from), where it is the default or already ``_interrupt``; a handler of
    the user's, or SIGTERM ignored, is left as it is."""
    return (threading.current_thread() is threading.main_thread()
            and signal.getsignal(signal.SIGTERM) in (signal.SIG_DFL, _interrupt))


def interrupt_on_sigterm() -> None:
    """From now on in this process, SIGTERM raises KeyboardInterrupt, as SIGINT does: for
    the ``metaloop`` command's process as it starts, so that a SIGTERM while torch is
    imported ends as Ctrl-C there does (one line, exit status 130) instead of killing the
    process with no message (143). A handler already set (not the default) is left."""
    if _ours_to_set():
        signal.signal(signal.SIGTERM, _interrupt)


@contextmanager
def sigterm_interrupts():
    """SIGTERM (torchrun stopping its workers, a scheduler, ``kill``) raises
    KeyboardInterrupt, as SIGINT does, so every command stopped that way cleans up as after
    Ctrl-C: what it created before its first checkpoint or output is removed, and it exits
    130 with one line (the training loop turns both into a request to stop after the current
    iteration). A SIGTERM handler already set (not the default, nor this one's from
    ``interrupt_on_sigterm``) is left as it is; the one before is set again at the end."""
    if not _ours_to_set():
        yield
        return
    old = signal.signal(signal.SIGTERM, _interrupt)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, old)

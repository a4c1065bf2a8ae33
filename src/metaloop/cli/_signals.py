"""SIGTERM as Ctrl-C for the command line's commands."""

from __future__ import annotations

import signal
import threading
from contextlib import contextmanager


@contextmanager
def sigterm_interrupts():
    """SIGTERM (torchrun stopping its workers, a scheduler, ``kill``) raises
    KeyboardInterrupt, as SIGINT does, so every command stopped that way cleans up as after
    Ctrl-C: what it created before its first checkpoint or output is removed, and it exits
    130 with one line (the training loop turns both into a request to stop after the current
    iteration). A SIGTERM handler already set (not the default) is left as it is."""
    if threading.current_thread() is not threading.main_thread() \
            or signal.getsignal(signal.SIGTERM) is not signal.SIG_DFL:
        yield
        return

    def handle(signum, frame):
        raise KeyboardInterrupt("stopped by SIGTERM")
    old = signal.signal(signal.SIGTERM, handle)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, old)

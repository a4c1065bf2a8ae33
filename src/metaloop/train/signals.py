"""Ctrl-C and SIGTERM as a request to stop at the next safe point (a checkpoint)."""

from __future__ import annotations

import signal
import threading
import time


class StopSignals:
    """Turns SIGINT (Ctrl-C) and SIGTERM into a request to stop at the next safe point.

    ``name`` is then the signal's name (``"SIGINT"``), else None. The loop that polls it
    writes a checkpoint and stops, so the run resumes exactly. A second signal more than a
    second after the first raises KeyboardInterrupt at once (torchrun forwards the
    terminal's Ctrl-C, so one press can arrive twice); the last checkpoint is kept. Active
    in the main thread only; signals set to be ignored stay ignored.
    """

    def __init__(self):
        self.name: str | None = None
        self._first = 0.0
        self._old: dict = {}

    def __enter__(self):
        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGINT, signal.SIGTERM):
                if signal.getsignal(sig) is not signal.SIG_IGN:
                    self._old[sig] = signal.signal(sig, self._handle)
        return self

    def _handle(self, signum, frame) -> None:
        now = time.monotonic()
        if self.name is None:
            self.name, self._first = signal.Signals(signum).name, now
        elif now - self._first > 1.0:
            raise KeyboardInterrupt(f"stopped at once by a second {signal.Signals(signum).name}"
                                    f"; the work since the last checkpoint is lost")

    def __exit__(self, *exc) -> None:
        for sig, handler in self._old.items():
            signal.signal(sig, handler)
        self._old = {}

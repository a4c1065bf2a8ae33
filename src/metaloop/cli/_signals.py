"""SIGTERM as Ctrl-C for the command line's commands; a command's clean-up after an interrupt,
and its exit once it has its status, are not cut short by a further signal.

While ``main`` runs (``catch_signals`` to ``release_signals``) SIGINT and SIGTERM go through
``_interrupt``, which knows where the command is:

- running: the signal raises KeyboardInterrupt (exit status 130, one line);
- cleaning up after an interrupt (a KeyboardInterrupt is being handled, or one of these
  signals has raised one): the next signal is ignored, so that what the clean-up removes is
  removed entirely (torchrun forwards one Ctrl-C as a second signal, SIGTERM); the one after
  it stops the command at once: the ``metaloop`` command's process exits with status 130 and
  one line, leaving what the clean-up had not yet removed; a caller of ``main`` in its own
  program gets KeyboardInterrupt, as from Python's own handler;
- done (``main`` has the command's exit status): the status stands. In the ``metaloop``
  command's process a signal then ends the process at once with that status (``_finished``:
  a shutdown that hangs, joining a thread or in a library's exit function, can still be
  stopped), and from metaloop's own exit function on, which runs after the exit functions
  of what it imported, both signals are ignored (``signal.SIG_IGN``, which the interpreter
  keeps through the rest of its shutdown, where it sets Python-level handlers back to the
  default): a signal while modules are torn down cannot turn a finished command's status
  into 143 or print a traceback.

The training loop sets its own handlers meanwhile (``metaloop.train.signals``: a stop at the
next checkpoint) and sets these again when it ends.

A KeyboardInterrupt is never raised in the ``metaloop`` command's process while a module is
being imported: import code (torch's, numpy's, matplotlib's, a C extension's initialisation)
does not survive an exception raised at an arbitrary point (half-initialised modules, then an
``AttributeError`` or an abort), and some of it turns it into an ImportError that it catches,
so the signal was lost and the command ran on. Before ``main`` runs (the package and torch
imported, ``_phase`` None) such a signal ends the process at once: ``STARTING`` and status 130
(``starting_interrupted``; nothing is written then). While ``main`` runs (a command's lazy
imports: torch's compiler stack, plotting) it is held (``_hold``) and sent again as soon as the
import has finished (``_watch``, ``_retry``; at the latest at the next import statement,
``_gate``), to whatever handler is then set.
"""

from __future__ import annotations

import _thread
import atexit
import builtins
import os
import signal
import sys
import threading
import time
from types import FrameType
from typing import NoReturn

RUN, CLEAN_UP, DONE = "run", "clean-up", "done"
SIGNALS = (signal.SIGINT, signal.SIGTERM)
_DEFAULT = {signal.SIGINT: signal.default_int_handler, signal.SIGTERM: signal.SIG_DFL}

_command = False      # this process is the metaloop command (as_the_command)
_phase = None         # where main is: RUN, CLEAN_UP, DONE; None: outside main
_ignored = 0          # signals ignored during the clean-up
_saved: dict = {}     # the handlers before catch_signals, by signal
_code = 0             # the command's exit status, once main has it (release_signals)
_held: int | None = None   # a signal held back until the import under way has finished
_more = 0                  # signals that came while one was held
_kick_saved: object = None  # _KICK's handler before _hold set _retry
_real_import = builtins.__import__   # (the one before _hold set _gate)

STARTING = "metaloop: interrupted while starting; nothing was written"
# The signal by which _watch has the main thread look again at a held signal: SIGURG, which
# is ignored where no handler is set (a late one is harmless). None (Windows): nothing is held.
_KICK = getattr(signal, "SIGURG", None) if hasattr(signal, "pthread_kill") else None
_IMPORTING = ("importlib._bootstrap", "importlib._bootstrap_external")


def _interrupt(signum, frame):
    global _phase, _ignored, _more
    if _held is not None:                  # one waits for an import to finish: as one signal
        _more += 1                         # (torchrun forwards a Ctrl-C as a second signal)
        if _more >= 2 and _command:
            _stop_now(signum, "while an earlier one waited for an import to finish; what "
                              "the command had written is left")
        return
    if _command and _phase is None and _importing(frame):
        starting_interrupted()             # (the package, torch being imported: nothing written)
    handled = sys.exc_info()[1]            # (the interrupted code's, as in its except block)
    if _phase == DONE or isinstance(handled, SystemExit):
        return                             # the exit status is decided
    if _phase == CLEAN_UP or (_phase == RUN and isinstance(handled, KeyboardInterrupt)):
        _phase = CLEAN_UP
        _ignored += 1
        if _ignored == 1:
            return
        if _command:
            _stop_now(signum)
    elif _phase == RUN:
        if _command and _importing(frame) and _hold(signum):
            return                         # raised once the import has finished (_retry)
        _phase = CLEAN_UP
    if signum == signal.SIGINT:           # as Python's own handler: no text
        raise KeyboardInterrupt
    raise KeyboardInterrupt(f"stopped by {signal.Signals(signum).name}")


def _flush() -> None:
    for stream in (sys.stdout, sys.stderr):
        try:                  # (the signal may have come in the middle of a write to it)
            stream.flush()
        except Exception:     # (what cannot be flushed now is lost anyway)
            pass


def _stop_now(signum, when: str = "during the clean-up after an interrupt; what it had not "
                                  "yet removed is left") -> NoReturn:
    """The ``metaloop`` command's process ends at once, with status 130 and one line."""
    _flush()
    try:
        os.write(2, f"metaloop: stopped at once by another {signal.Signals(signum).name} "
                    f"{when}\n".encode())
    except OSError:
        pass
    os._exit(130)


def starting_interrupted() -> NoReturn:
    """The ``metaloop`` command interrupted while it starts: ``STARTING`` (under torchrun
    once per node: a node's other ranks are stopped alike, often by torchrun itself as a rank
    before them exited with its own error) and status 130, at once: the interpreter's
    teardown after an interrupted torch import can end the process by a signal instead."""
    _flush()
    if os.environ.get("LOCAL_RANK", "0").strip() in ("", "0"):
        try:
            os.write(2, f"{STARTING}\n".encode())
        except OSError:
            pass
    os._exit(130)


def _importing(frame: FrameType | None) -> bool:
    """Whether ``frame`` runs inside an import (the import system's frames below it)."""
    while frame is not None:
        if frame.f_globals.get("__name__") in _IMPORTING:
            return True
        frame = frame.f_back
    return False


def _hold(signum) -> bool:
    """Hold ``signum`` back until the main thread's import has finished (``_watch``), then
    send it again (``_retry``); False where it cannot be held (no ``_KICK``, or a handler of
    someone else's on it)."""
    global _held, _more, _kick_saved, _real_import
    if _KICK is None or not _main_thread():
        return False
    before = signal.getsignal(_KICK)
    if before is not _retry:
        if before not in (signal.SIG_DFL, signal.SIG_IGN):
            return False
        _kick_saved = before
        signal.signal(_KICK, _retry)
    _held, _more = signum, 0
    if builtins.__import__ is not _gate:
        _real_import = builtins.__import__
        builtins.__import__ = _gate
    _thread.start_new_thread(_watch, (threading.get_ident(),))   # (takes no Python lock)
    return True


def _gate(*args, **kwargs):
    """``__import__`` while a signal is held: an import statement outside any import (the
    one under way has finished; code that imports module after module leaves the helper
    thread no moment to see it) sends the held signal first, as if it came just before."""
    if _held is not None and _main_thread() and not _importing(sys._getframe(1)):
        _send_held()
    return _real_import(*args, **kwargs)


def _watch(main: int) -> None:
    """A helper thread while a signal is held: once the main thread is no longer importing,
    ``_KICK`` to it (again every 5 ms until ``_retry`` has sent the held signal on)."""
    while _held is not None:
        time.sleep(0.005)
        frame = sys._current_frames().get(main)
        if _held is not None and not _importing(frame):
            try:
                signal.pthread_kill(main, _KICK)      # type: ignore[arg-type]
            except (OSError, ValueError):             # (the main thread has ended)
                return
        del frame


def _retry(signum, frame):
    """``_KICK``'s handler while a signal is held: out of the import, the held signal is sent
    again, to the handler then set (``_interrupt``, the training loop's stop request...)."""
    if _held is not None and not _importing(frame):
        _send_held()


def _send_held() -> None:
    """The held signal to the handler now set for it (its exception, if any, raised here)."""
    held = _held
    _unhold()
    if held is not None:
        signal.raise_signal(held)


def _unhold() -> None:
    """No signal held from now on (``_KICK``'s handler and ``__import__`` as before
    ``_hold``)."""
    global _held
    _held = None
    if builtins.__import__ is _gate:
        builtins.__import__ = _real_import
    if _KICK is not None and _main_thread() and signal.getsignal(_KICK) is _retry:
        signal.signal(_KICK, _kick_saved)    # type: ignore[arg-type]


def _finished(signum, frame):
    """The ``metaloop`` command's process after ``main`` has its exit status: a signal ends
    it at once with that status (its output flushed), whatever the shutdown was doing."""
    _flush()
    os._exit(_code)


def _ignore_from_now() -> None:
    """metaloop's exit function (registered as the package starts, so it runs after the
    exit functions of what metaloop imports): from here to the end of the shutdown, a signal
    to a finished command is ignored."""
    if _phase == DONE and _main_thread():
        for sig in SIGNALS:
            if signal.getsignal(sig) is _finished:
                signal.signal(sig, signal.SIG_IGN)


def _main_thread() -> bool:
    """Whether this is the main thread, the only one that can set a signal's handler."""
    return threading.current_thread() is threading.main_thread()


def _ours_to_set(sig) -> bool:
    """Whether ``sig``'s handler is for metaloop to set: in the main thread, where it is
    Python's default or already ``_interrupt``; a handler of the user's, or the signal
    ignored (a background job's SIGINT, ``nohup``'s), is left as it is."""
    return _main_thread() and signal.getsignal(sig) in (_DEFAULT[sig], _interrupt)


def interrupt_on_sigterm() -> None:
    """From now on in this process, SIGTERM raises KeyboardInterrupt, as SIGINT does: for
    the ``metaloop`` command's process as it starts, so that a SIGTERM while torch is
    imported ends as Ctrl-C there does (one line, exit status 130) instead of killing the
    process with no message (143). A handler already set (not the default) is left."""
    if _ours_to_set(signal.SIGTERM):
        signal.signal(signal.SIGTERM, _interrupt)


def as_the_command() -> None:
    """This process is the ``metaloop`` command, starting (``metaloop/__init__.py``):
    ``interrupt_on_sigterm``, and SIGINT through the same handler (where it is Python's
    default), so that either one during an import before ``main`` runs ends the process at
    once with ``STARTING`` and status 130, and one during a later import is held until the
    import has finished; once ``main`` has the command's exit status, SIGINT and SIGTERM end
    the process with that status, then, from metaloop's exit function on, are ignored until
    it exits (``release_signals``)."""
    global _command
    if not _command:
        atexit.register(_ignore_from_now)
    _command = True
    interrupt_on_sigterm()
    if _ours_to_set(signal.SIGINT):
        signal.signal(signal.SIGINT, _interrupt)


def catch_signals() -> None:
    """SIGINT and SIGTERM through ``_interrupt`` until ``release_signals``: for ``main``,
    which calls it first thing in its ``try``. A handler of the user's is left as it is; in
    another thread than the main one (which alone runs the handlers) nothing changes."""
    global _phase, _ignored
    if not _main_thread():
        return
    _unhold()
    _phase, _ignored = RUN, 0                     # (before a handler is set)
    for sig in SIGNALS:
        if sig not in _saved and _ours_to_set(sig):
            _saved[sig] = signal.getsignal(sig)
            signal.signal(sig, _interrupt)


def cleaning_up() -> None:
    """The command has caught an interrupt and is cleaning up after it (a command that
    returns 130 rather than letting the KeyboardInterrupt rise): a signal from here on is
    treated as during any clean-up after an interrupt, so the ``finally`` blocks that run
    after the ``except`` (a run folder's lock released) are not interrupted by it."""
    global _phase
    if _phase == RUN:
        _phase = CLEAN_UP


def release_signals(code: int = 0) -> None:
    """``main`` has the command's exit status ``code``: signals from now on do not change it.
    In the ``metaloop`` command's process SIGINT and SIGTERM end the process at once with
    ``code`` (``_finished``), and are ignored from metaloop's exit function on; in another
    program the handlers before ``catch_signals`` are set again. Safe to call again, and
    without ``catch_signals`` before it."""
    global _phase, _code
    if not _main_thread():
        return
    _code = code
    _phase = DONE                                 # (first: a signal from here on is ignored)
    _unhold()                                     # (one held: the status is decided too)
    for sig in SIGNALS:
        if sig in _saved:
            signal.signal(sig, _finished if _command else _saved[sig])
            del _saved[sig]
    if not _command:
        _phase = None

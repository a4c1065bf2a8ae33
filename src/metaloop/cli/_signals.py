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
"""

from __future__ import annotations

import atexit
import os
import signal
import sys
import threading

RUN, CLEAN_UP, DONE = "run", "clean-up", "done"
SIGNALS = (signal.SIGINT, signal.SIGTERM)
_DEFAULT = {signal.SIGINT: signal.default_int_handler, signal.SIGTERM: signal.SIG_DFL}

_command = False      # this process is the metaloop command (as_the_command)
_phase = None         # where main is: RUN, CLEAN_UP, DONE; None: outside main
_ignored = 0          # signals ignored during the clean-up
_saved: dict = {}     # the handlers before catch_signals, by signal
_code = 0             # the command's exit status, once main has it (release_signals)


def _interrupt(signum, frame):
    global _phase, _ignored
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
        _phase = CLEAN_UP
    if signum == signal.SIGINT:           # as Python's own handler: no text
        raise KeyboardInterrupt
    raise KeyboardInterrupt(f"stopped by {signal.Signals(signum).name}")


def _stop_now(signum) -> None:
    """The ``metaloop`` command's process ends at once, with status 130 and one line."""
    for stream in (sys.stdout, sys.stderr):
        try:                  # (the signal may have come in the middle of a write to it)
            stream.flush()
        except Exception:     # (what cannot be flushed now is lost anyway)
            pass
    try:
        os.write(2, f"metaloop: stopped at once by another {signal.Signals(signum).name} "
                    f"during the clean-up after an interrupt; what it had not yet removed "
                    f"is left\n".encode())
    except OSError:
        pass
    os._exit(130)


def _finished(signum, frame):
    """The ``metaloop`` command's process after ``main`` has its exit status: a signal ends
    it at once with that status (its output flushed), whatever the shutdown was doing."""
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except Exception:     # (a closed or broken stream: nothing more reaches it)
            pass
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
    ``interrupt_on_sigterm``, and once ``main`` has the command's exit status, SIGINT and
    SIGTERM end the process with that status, then, from metaloop's exit function on, are
    ignored until it exits (``release_signals``)."""
    global _command
    if not _command:
        atexit.register(_ignore_from_now)
    _command = True
    interrupt_on_sigterm()


def catch_signals() -> None:
    """SIGINT and SIGTERM through ``_interrupt`` until ``release_signals``: for ``main``,
    which calls it first thing in its ``try``. A handler of the user's is left as it is; in
    another thread than the main one (which alone runs the handlers) nothing changes."""
    global _phase, _ignored
    if not _main_thread():
        return
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
    for sig in SIGNALS:
        if sig in _saved:
            signal.signal(sig, _finished if _command else _saved[sig])
            del _saved[sig]
    if not _command:
        _phase = None

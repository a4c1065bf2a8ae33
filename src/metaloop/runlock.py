"""One writer per run folder: an exclusive lock on ``DIR/.metaloop-lock``.

Every metaloop writer of a run folder (``ml.train(..., out_dir=DIR)``, ``metaloop train``,
``compare``, ``adapt``, ``forgetting``, ``eval --out``, ``predict --out``, ``vae``) holds the
folder's lock while it writes there, so that a second process started on the same folder (a
scheduler that requeues a job still running, ``--resume`` launched twice, two notebooks)
fails at once, before it reads or writes anything, instead of interleaving its
checkpoints, ``LATEST`` and ``metrics.jsonl`` with the first one's::

    with runlock.hold("runs/x"):        # RunInUseError if another process writes there
        ...

The lock is ``fcntl.flock`` on POSIX and ``msvcrt.locking`` on Windows, taken on the file
``.metaloop-lock`` inside the folder, which holds the pid, host and command of the process
that holds it, for the message. The holder removes the file when it lets go, so a finished
run's folder holds only what the run wrote; a process that takes the lock checks that the file
it locked is still the folder's (not one removed meanwhile), else it takes the new one. The
system releases the lock when the process ends, however it ends (``kill -9`` included), so a
killed run leaves no stale lock, only its file: ``--resume`` works at once. Where the file
system has no locks (some network file systems), the run goes on unlocked with a
``RunLockWarning``.

The lock is re-entrant within a thread, per folder: a command that calls another writer on
the same folder (``metaloop train`` calls ``ml.train``) holds it once; another thread of the
same process is refused as another process is; a folder inside a held one (``compare``'s
``runs/compare/runs/maml_0``) is a folder of its own, with its own lock. A forked child
(a worker process) holds none of its parent's locks: it closes its copies of the lock files,
so that a child which outlives its parent leaves the folder free. Readers (``metaloop eval`` and
``predict`` without ``--out``, ``load_run``) take no lock.
"""

from __future__ import annotations

import errno
import functools
import inspect
import json
import os
import shlex
import socket
import sys
import threading
import warnings
from contextlib import contextmanager
from pathlib import Path

try:
    import fcntl
except ImportError:             # Windows
    fcntl = None  # type: ignore[assignment]  # checked before use
try:
    import msvcrt
except ImportError:             # POSIX
    msvcrt = None  # type: ignore[assignment]  # checked before use

__all__ = ["LOCK_FILE", "RunInUseError", "RunLockWarning", "acquire", "check_links", "hold",
           "holder", "locked", "release", "writer"]

LOCK_FILE = ".metaloop-lock"
# msvcrt.locking locks bytes, which other processes then cannot read: the byte locked lies
# past the holder's line, which stays readable for the message
_WINDOWS_BYTE = 1 << 20


class RunInUseError(ValueError):
    """Another process holds the run folder (it writes there): the message names the folder
    and that process (pid, host, command). A ``ValueError``, so that the command line says
    it in one line with exit status 2; nothing was read or written."""


class RunLockWarning(UserWarning):
    """The file system of a run folder has no locks: the run goes on without one."""


# this process's held folders: real path -> [fd, depth, folders made by the first acquire
# (deepest first), the holding thread's ident]; a forked child holds none of its parent's
# (_forget_after_fork empties it there)
_HELD: dict[str, list] = {}
_GUARD = threading.Lock()


def _forget_after_fork() -> None:
    """In a forked child: close the child's copies of the held lock files. A flock belongs
    to the open file, which fork shares, so a child that kept them (a worker still running
    after its parent was killed) would keep the parent's folders locked."""
    global _GUARD
    _GUARD = threading.Lock()           # (another thread may have held it at the fork)
    for entry in _HELD.values():
        try:
            os.close(entry[0])          # the parent's lock stays: no LOCK_UN here
        except OSError:
            pass
    _HELD.clear()


if hasattr(os, "register_at_fork"):     # POSIX
    os.register_at_fork(after_in_child=_forget_after_fork)


def _command() -> str:
    argv = list(getattr(sys, "argv", None) or ["python"])    # an embedded interpreter: none
    name = Path(argv[0]).name
    if name == "__main__.py":                  # python -m metaloop
        name = f"python -m {Path(argv[0]).parent.name}"
    elif argv[0] == "-c":                       # python -c '...'
        name = "python -c"
    return _shortened([name, *map(shlex.quote, argv[1:])])


COMMAND_CHARS = 200
"""About how much of the holder's command its lock file keeps (``_shortened``)."""


def _shortened(words: list[str], limit: int = COMMAND_CHARS) -> str:
    """``words`` joined by spaces, cut to about ``limit`` characters in the middle (``...``
    for each run of words left out), keeping the program, the words at both ends, and every
    ``--out VALUE`` (or ``--out=VALUE``) whatever its length: the message of a folder in use
    names the command that holds it, and its ``--out`` says which run that is."""
    text = " ".join(words)
    if len(text) <= limit:
        return text
    keep = {0}
    for i, w in enumerate(words):
        if w == "--out" and i + 1 < len(words):
            keep |= {i, i + 1}
        elif w.startswith("--out="):
            keep.add(i)
    room = limit - sum(len(words[i]) + 1 for i in keep) - 8     # (two "..." at most)
    head, tail = 1, len(words) - 1
    from_head = True
    while head <= tail:                   # the nearest words to either end, alternately
        i = head if from_head else tail
        if i not in keep:
            if len(words[i]) + 1 > room:
                break
            room -= len(words[i]) + 1
            keep.add(i)
        if from_head:
            head += 1
        else:
            tail -= 1
        from_head = not from_head
    out: list[str] = []
    for i, w in enumerate(words):
        if i in keep:
            out.append(w)
        elif not out or out[-1] != "...":
            out.append("...")
    return " ".join(out)


def holder(path) -> dict | None:
    """What the lock file of the run folder ``path`` says of the process that last took it
    (``{"pid", "host", "command"}``), or None (no lock file, or one being written).

    Args:
        path: the run folder (a ``str`` or ``os.PathLike``); its ``.metaloop-lock`` is read.
    """
    try:
        text = (Path(path) / LOCK_FILE).read_text(encoding="utf-8")
        info = json.loads(text)
    except (OSError, ValueError):
        return None
    return info if isinstance(info, dict) else None


def writer(path) -> dict | None:
    """The process that holds the lock of the run folder ``path`` now (``holder``'s pid,
    host and command), or None: no other process holds it. A run killed mid-training leaves
    its lock file, naming a process that is gone, but not its lock. The lock is tested by a
    shared lock taken and let go at once on the file opened read-only, so nothing in the
    folder is written (where there is no ``fcntl``, Windows: None).

    Args:
        path: the run folder (a ``str`` or ``os.PathLike``). A lock file naming this
            process gives None: this process is not another writer.
    """
    info = holder(path)
    if info is None or fcntl is None or info.get("pid") == os.getpid():
        return None
    try:
        fd = os.open(Path(path) / LOCK_FILE, os.O_RDONLY)
    except OSError:                     # gone meanwhile: its holder let go
        return None
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except OSError as e:
        return info if e.errno in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES) else None
    finally:
        os.close(fd)                    # (which lets go of the shared lock)
    return None


def _in_use(path: Path) -> RunInUseError:
    h = holder(path) or {}
    who = (f"pid {h.get('pid', '?')} on host {h.get('host', '?')}, `{h.get('command', '?')}`"
           if h else "its pid is not known yet")
    return RunInUseError(f"run folder {path} is in use by another metaloop process ({who}); "
                         f"wait for it to end or stop it (its lock file: "
                         f"{Path(path) / LOCK_FILE})")


def _lock(fd: int) -> bool:
    """Take the lock on ``fd`` without waiting; False if another process holds it.

    Raises:
        OSError: the file system has no locks (ENOLCK, EOPNOTSUPP...).
    """
    if fcntl is not None:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as e:
            if e.errno in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                return False
            raise
        return True
    os.lseek(fd, _WINDOWS_BYTE, os.SEEK_SET)
    try:
        msvcrt.locking(fd, msvcrt.LK_NBLCK, 1)
    except OSError as e:
        if e.errno in (errno.EACCES, errno.EDEADLK):     # held by another process
            return False
        raise
    return True


def _unlock(fd: int) -> None:
    try:
        if fcntl is not None:
            fcntl.flock(fd, fcntl.LOCK_UN)
        else:
            os.lseek(fd, _WINDOWS_BYTE, os.SEEK_SET)
            msvcrt.locking(fd, msvcrt.LK_UNLCK, 1)
    except OSError:
        pass                      # closing the file releases it too
    os.close(fd)


def _open(file: Path) -> int | None:
    """The lock file, opened (created if missing, never truncated), or None where this
    process can neither create nor open it (a read-only folder: nothing to write there)."""
    try:
        return os.open(file, os.O_RDWR | os.O_CREAT, 0o666)
    except PermissionError:
        pass
    except OSError as e:
        if e.errno != errno.EROFS:
            raise
    try:
        return os.open(file, os.O_RDONLY)      # another user's file in a shared folder
    except OSError:
        return None


def check_links(out) -> None:
    """Refuse an output folder ``out`` that is, or lies in, a file, or a symbolic link to a
    file or a dangling one (no folder can be made there), naming the file, or the link and
    its target; every writer of a run folder says it so (``acquire`` and
    ``metaloop.recipes.report``): the system's "File exists" or "Not a directory" alone
    does not say which path is the file.

    Args:
        out: the output folder (a ``str`` or ``os.PathLike``), which need not exist yet;
            it and each of its parents are checked.

    Raises:
        ValueError: naming the file, or the link, its target and what the target is.
        OSError: a name the file system cannot look up (too long: ENAMETOOLONG).
    """
    out = Path(out)
    for d in (out, *out.parents):
        if d.is_symlink() and not d.is_dir():
            target = os.readlink(d)
            what = "a file, not a folder" if d.exists() else "missing (a dangling link)"
            raise ValueError(f"cannot create output directory {out}: {d} is a symbolic "
                             f"link to {target}, which is {what}; give a folder, or a link "
                             f"to one")
        if d.exists() and not d.is_dir():       # a file (or a device, a pipe...) in the way
            why = os.strerror(errno.EEXIST if d == out else errno.ENOTDIR)   # what mkdir says
            what = "a file, not a folder" if d.is_file() else "not a folder"
            raise ValueError(f"cannot create output directory {out}: {why} ({d} is {what}); "
                             f"give a folder")


def _make(path: Path, made: list[Path]) -> list[Path]:
    """Create the folder ``path`` and its missing parents; returns ``made`` and the folders
    missing here, deepest first. A folder that another start on the same new folder removes
    meanwhile (one that failed: it removes what it made) is made again, not reported as
    missing or as a file in the way.

    Raises:
        ValueError: the folder cannot be created (naming it and why: a name too long
            included, and a symbolic link in the way by ``check_links``); the empty folders
            made on the way are removed.
    """
    for _ in range(10):
        try:                    # exists() raises a name too long (ENAMETOOLONG): named too
            try:
                check_links(path)   # a link to no folder: named, not as "File exists"
            except ValueError:
                _discard(made)
                raise
            missing = [Path(os.path.abspath(d)) for d in (path, *path.parents)
                       if not d.exists() and not d.is_symlink()]
            made = sorted({*made, *missing}, key=lambda d: len(d.parts), reverse=True)
            path.mkdir(parents=True, exist_ok=True)
            return made
        except (FileNotFoundError, FileExistsError) as e:    # removed meanwhile: again
            error: OSError = e
        except OSError as e:
            error = e
            break
    _discard(made)
    raise ValueError(f"cannot create output directory {path}: {error.strerror or error}") \
        from error


def _discard(made: list[Path]) -> None:
    """Remove the folders ``made`` (deepest first: what mkdir made before a failure) where
    they are empty."""
    for d in made:
        try:
            d.rmdir()
        except OSError:
            pass                # not empty, or not made here


def acquire(path, *, create: bool = True) -> str | None:
    """Take the lock of the run folder ``path`` (None: nothing; returns None).

    Args:
        path: the run folder (a ``str`` or ``os.PathLike``); None: nothing is locked.
        create: create the folder and its missing parents if it does not exist; False:
            a folder that does not exist is left unlocked (nothing there to protect).

    Returns:
        A token for ``release`` (None where nothing was locked).

    Raises:
        RunInUseError: another process, or another thread of this one, holds the folder
            (naming it and that process).
        ValueError: the folder cannot be created, or (``create=False``) looked up (a name
            too long), naming it and why; with ``create=False`` too, a file or a symbolic
            link to no folder where the folder or one of its parents would be
            (``check_links``), which every writer would refuse later.
    """
    if path is None:
        return None
    path = Path(path)
    if not create:
        try:
            check_links(path)   # a file in the way: refused now, as a writer would later
            if not path.is_dir():
                return None
        except OSError as e:    # a name too long (ENAMETOOLONG): no such folder
            raise ValueError(f"cannot use output directory {path}: {e.strerror or e}") from e
    made = _make(path, [])
    key = os.path.realpath(path)
    with _GUARD:
        entry = _HELD.get(key)
        if entry is not None:
            if entry[3] != threading.get_ident():
                raise RunInUseError(f"run folder {path} is in use by another thread of this "
                                    f"process (pid {os.getpid()}); wait for it to end")
            entry[1] += 1
            return key
        file = Path(key) / LOCK_FILE
        for _ in range(10):
            try:
                fd = _open(file)
            except FileNotFoundError:       # the folder was removed meanwhile: again
                made = _make(file.parent, made)                            # (made here too)
                continue
            if fd is None:
                return None
            try:
                got = _lock(fd)
            except OSError as e:
                os.close(fd)
                file.unlink(missing_ok=True)        # no one can hold it there: no lock file
                warnings.warn(f"{path}: the file system has no locks ({e.strerror or e}); "
                              f"nothing stops another process from writing there too",
                              RunLockWarning, stacklevel=2)
                return None
            if not got:
                os.close(fd)
                raise _in_use(path)
            try:                        # the file we locked is still the folder's lock file
                same = os.path.samestat(os.fstat(fd), os.stat(file))
            except OSError:             # removed with the folder of a run that failed
                same = False
            if same:
                break
            _unlock(fd)
        else:
            raise RunInUseError(f"run folder {path}: its lock file {LOCK_FILE} keeps being "
                                f"replaced; another process removes it")
        info = json.dumps({"pid": os.getpid(), "host": socket.gethostname(),
                           "command": _command()}) + "\n"
        try:
            os.ftruncate(fd, 0)
            os.lseek(fd, 0, os.SEEK_SET)
            os.write(fd, info.encode())
        except OSError:
            pass                        # opened read-only: the message names no holder
        _HELD[key] = [fd, 1, made, threading.get_ident()]
    return key


def release(token: str | None, *, discard: bool = False) -> None:
    """Release a lock ``acquire`` took (the last release of a re-entrant one unlocks it and
    removes the lock file: a finished run's folder holds only what the run wrote).

    Args:
        token: what ``acquire`` returned; None, or a token this process no longer holds:
            nothing is done.
        discard: also remove the folders the first ``acquire`` created if they are empty
            (a run that failed before writing anything leaves nothing).
    """
    if token is None:
        return
    with _GUARD:
        entry = _HELD.get(token)
        if entry is None:
            return
        entry[1] -= 1
        if entry[1] > 0:
            return
        del _HELD[token]
        fd, _, made, _ = entry
        file = Path(token) / LOCK_FILE
        if fcntl is not None:           # removed while still held: a process that opened
            try:                        # it before sees another file after locking it
                if os.path.samestat(os.fstat(fd), os.stat(file)):
                    file.unlink()
            except OSError:
                pass                    # gone with its folder (a failed run removed it)
        _unlock(fd)
        if fcntl is None:               # Windows: an open file cannot be removed; one that
            try:                        # another process opened since stays
                file.unlink()
            except OSError:
                pass
        for d in made if discard else ():                              # deepest first
            try:
                if d.is_dir() and not any(d.iterdir()):
                    d.rmdir()
            except OSError:
                pass


@contextmanager
def hold(path, *, create: bool = True):
    """``acquire(path)`` for the body of a ``with`` (None: no folder, no lock); yields the
    folder as a ``Path`` (or None). If the body fails, the folders this call created are
    removed again while they are empty.

    Args:
        path: the run folder, as ``acquire`` takes it; None: no lock.
        create: as ``acquire``: create the folder if missing; False: a missing folder is
            not locked.

    Raises:
        RunInUseError, ValueError: as ``acquire``, before the body runs.
    """
    token = acquire(path, create=create)
    try:
        yield None if path is None else Path(path)
    except BaseException:
        release(token, discard=True)
        raise
    release(token)


def locked(param: str, *, create: bool = True):
    """Decorator: the function holds the lock of the run folder given as its argument
    ``param`` (None: no lock) for the whole call, before it reads anything.

    Args:
        param: the name of the decorated function's parameter that gives the run folder
            (passed by position or keyword, or its default where the call omits it).
        create: as ``acquire``: create the folder if missing; False: a missing folder is
            not locked.

    Raises:
        RunInUseError, ValueError: as ``acquire``, before the function runs.
    """
    def wrap(fn):
        sig = inspect.signature(fn)

        @functools.wraps(fn)
        def call(*args, **kwargs):
            bound = sig.bind(*args, **kwargs)
            bound.apply_defaults()          # a folder parameter left to its default is locked too
            path = bound.arguments.get(param)
            with hold(path, create=create):
                return fn(*args, **kwargs)
        return call
    return wrap

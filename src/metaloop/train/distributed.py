"""Data-parallel meta-training on torch.distributed: shard the meta-batch, average the gradient.

Launch one process per device with torchrun, which sets ``RANK``, ``WORLD_SIZE``,
``LOCAL_RANK``, ``MASTER_ADDR`` and ``MASTER_PORT``::

    torchrun --nproc_per_node 2 -m metaloop train --config configs/x.toml --out runs/x

**Exactness.** Every rank draws the SAME whole meta-batch of B tasks from the same seeded
generator and keeps the slice ``shard_bounds(B, rank, world)``. The union of the shards is
therefore exactly the single-process meta-batch, and every rank's generator stays in the
state a single process would have. Each rank's learner returns the mean meta-gradient over its
shard; the shard means, weighted by ``shard size / B``, are summed by one all-reduce, which
gives the mean over the whole meta-batch (equal to the single-process one up to the rounding
of the sum). Metrics are reduced the same way. Sampling the whole batch on every rank costs
little next to the meta-gradient.

**Failures.** Every collective runs under the process group's timeout (``init(timeout_s=)``,
default ``DEFAULT_TIMEOUT_S``; ``metaloop train --dist-timeout``). A collective that fails
(a peer's connection closed: it died) or times out (a peer hangs) raises ``DistributedError``
naming this rank, the step and the cause, instead of hanging; rank 0's last checkpoint is
kept. Under torchrun, the agent also stops the other local workers as soon as one exits with
an error.

**Messages once.** An error every rank meets alike (bad input, a non-finite loss, an
interrupt) is printed by rank 0 alone; one that only some ranks meet is printed by each of
them, named ``rank r of W: ...``. ``begin_startup()`` opens the start-up, from the checked
config to the first collective of training: its errors and warnings are compared there
(``agree_startup``), so a rank that started learns that another did not (``StartupError``)
instead of waiting for it, and rank 0 alone shows a warning every rank gives. ``message(e)``
is what this rank prints for ``e`` (None: another rank prints it).

Backends: gloo on the CPU, nccl on CUDA (one GPU per process, ``cuda:LOCAL_RANK``).
"""

from __future__ import annotations

import contextlib
import datetime
import math
import os
import pickle
import time
import warnings
from collections.abc import Callable, Iterator

import torch
import torch.distributed as dist

DEFAULT_TIMEOUT_S = 300.0
# The longest timeout accepted: about 31 years. PyTorch keeps timeouts in int64 nanoseconds
# (and ``datetime.timedelta`` stops at ~2.7e6 years); above ~9.2e9 s the value overflows and
# the TCP store "times out" at once, so a larger value must be refused, not passed on.
MAX_TIMEOUT_S = 1e9


class DistributedError(RuntimeError):
    """A collective failed or timed out: another rank died, hung or became unreachable."""


class StartupError(DistributedError):
    """This rank started, but another failed before training (its error is in the message)."""


class ShardWarning(UserWarning):
    """A run on several ranks trains, but not as the single-process run does (e.g. BatchNorm
    over a pooled meta-batch sees one rank's shard); ``metaloop train`` prints it as its own
    warnings, once."""


# How this rank prints an exception: "quiet" (another rank prints the same one) or "named"
# (only some ranks met it: "rank r of W: ..."); unset: as it is.
_SHOWN = "_metaloop_shown"


def show_as(e: BaseException, how: str, rank: int = 0, world: int = 1) -> BaseException:
    """Mark how ``message(e)`` renders ``e``: ``"quiet"``, ``"named"`` or ``"plain"``."""
    setattr(e, _SHOWN, (how, rank, world))
    return e


def message(e: BaseException) -> str | None:
    """The text this rank prints for ``e``: None where another rank prints the same error
    (``left_to_another`` is then set: see ``let_another_print``), ``"rank r of W: ..."``
    where only some ranks met it, else ``str(e)``."""
    how, rank, world = getattr(e, _SHOWN, ("plain", 0, 1))
    if how == "quiet":
        left_to_another()
        return None
    return f"rank {rank} of {world}: {e}" if how == "named" else str(e)


# This process stays quiet on an error that another rank prints (``message``).
_left_to_another = False

# How long, at most, a rank that stays quiet on its error waits before it exits, under
# torchrun (``let_another_print``).
QUIET_EXIT_WAIT_S = 10.0


def left_to_another(left: bool = True) -> None:
    """Record that this process ends on an error it does not print, as another rank (rank 0,
    or its node's first process) prints the same one (``left=False``: forget it, as a
    command starts)."""
    global _left_to_another
    _left_to_another = left


def let_another_print(code: int, seconds: float = QUIET_EXIT_WAIT_S) -> None:
    """Before a process that left its error to another rank to print exits with ``code`` 1
    or 2 under torchrun: wait up to ``seconds``, so that the rank that prints it does so.

    torchrun's agent stops every worker (SIGTERM) as soon as one exits with an error; a
    quiet rank that exited first would stop the printing rank before it printed, and the user
    would read only "interrupted". Waiting here, the printing rank exits first, having
    printed, and torchrun's SIGTERM ends this wait (the ``metaloop`` command's process then
    exits at once with ``code``: ``metaloop.cli._signals.release_signals``); the bound
    holds where that rank does not fail alike. Only under torchrun's agent
    (``TORCHELASTIC_RUN_ID`` set): ranks started by hand are not stopped by one another.
    """
    if not _left_to_another or code not in (1, 2) or not os.environ.get("TORCHELASTIC_RUN_ID"):
        return
    try:
        time.sleep(seconds)
    except KeyboardInterrupt:       # (a program of the user's, calling main: its handler)
        pass


def local_leader() -> bool:
    """Whether this process is the first of its node (``LOCAL_RANK`` unset or 0). Before a
    process group exists, only it reports what the command line alone decides: every
    process torchrun starts on a node gets the same command line."""
    return os.environ.get("LOCAL_RANK", "0").strip() in ("", "0")


def _env_int(name: str, default: int | None = None) -> int:
    raw = os.environ.get(name)
    if raw is None:
        if default is None:
            raise ValueError(f"distributed run: environment variable {name} is not set "
                             f"(launch with torchrun, which sets RANK, WORLD_SIZE, LOCAL_RANK, "
                             f"MASTER_ADDR and MASTER_PORT)")
        return default
    try:
        return int(raw)
    except ValueError:
        raise ValueError(f"distributed run: {name}={raw!r} is not an integer") from None


def requested_world_size() -> int:
    """``WORLD_SIZE`` from the environment (1 when it is not set)."""
    return _env_int("WORLD_SIZE", 1)


def is_active() -> bool:
    """Whether a process group is initialised (by ``init`` or by the caller)."""
    return dist.is_available() and dist.is_initialized()


def rank_world() -> tuple[int, int]:
    """(rank, world size) of the current process group, or (0, 1) without one."""
    if not is_active():
        return 0, 1
    return dist.get_rank(), dist.get_world_size()


def set_tf32(enabled: bool) -> None:
    """TF32 for CUDA matmuls and convolutions: off by default in metaloop. PyTorch allows
    TF32 in cuDNN convolutions by default, which rounds their inputs to 10 mantissa bits
    (~1e-3 relative); with it off, an H100's meta-gradients match the CPU's to ~1e-6
    (docs/benchmarks.md). ``--tf32`` turns it on for speed on Ampere and later GPUs.

    Args:
        enabled: True allows TF32 in both CUDA matmuls
            (``torch.backends.cuda.matmul.allow_tf32``) and cuDNN convolutions
            (``torch.backends.cudnn.allow_tf32``), False forbids it in both. The flags are
            the whole process's and stay set (``tf32_kept`` restores them); the CPU ignores
            them.
    """
    torch.backends.cuda.matmul.allow_tf32 = enabled
    torch.backends.cudnn.allow_tf32 = enabled


@contextlib.contextmanager
def tf32_kept() -> Iterator[None]:
    """Sets both TF32 flags (``set_tf32``'s) back as they were on leaving, so that a program
    that trains or evaluates on a GPU through metaloop keeps its own TF32 settings after.
    Only the CUDA paths that call ``set_tf32`` enter it: a CPU run reads and writes neither
    flag (reading them raises in torch once its ``fp32_precision`` API has been used)."""
    try:
        saved = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    except RuntimeError:     # set with torch's fp32_precision API, which these flags mirror
        yield                # only as long as the two are not mixed: left as they are
        return
    try:
        yield
    finally:
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = saved


def device_for(device: str) -> torch.device:
    """The torch device this process trains on: ``"cpu"``, or ``"cuda"`` = ``cuda:LOCAL_RANK``
    (``cuda:0`` where ``CUDA_VISIBLE_DEVICES`` leaves this process a single GPU).

    Raises:
        ValueError: an unknown device, no CUDA, or fewer visible GPUs than local ranks.
    """
    if device == "cpu":
        return torch.device("cpu")
    if device != "cuda":
        raise ValueError(f"device must be 'cpu' or 'cuda', got {device!r}")
    if not torch.cuda.is_available():
        raise ValueError("device 'cuda' requested but torch sees no CUDA device")
    local, count = _env_int("LOCAL_RANK", 0), torch.cuda.device_count()
    if count == 1 and any(os.environ.get(v) for v in _VISIBLE_DEVICES):
        return torch.device("cuda", 0)   # a scheduler gave each worker its own one GPU
    if local >= count:
        # (every process sees the same GPUs: two ranks on one GPU would make NCCL fail at
        # the first collective, with an error that reads like a dead peer)
        raise ValueError(f"LOCAL_RANK={local} but only {count} GPU{'s' * (count != 1)} "
                         f"{'are' if count != 1 else 'is'} visible: start at most {count} "
                         f"processes per node (--nproc_per_node), or give each its own GPU "
                         f"with CUDA_VISIBLE_DEVICES")
    return torch.device("cuda", local)


# Set by a scheduler (or the user) to give a process some GPUs only; unset, every process
# of a node sees all of them, so LOCAL_RANK picks one.
_VISIBLE_DEVICES = ("CUDA_VISIBLE_DEVICES", "HIP_VISIBLE_DEVICES", "ROCR_VISIBLE_DEVICES")


def check_timeout(timeout_s: float) -> None:
    """Refuse a timeout that is not a finite number of seconds in (0, ``MAX_TIMEOUT_S``].

    Raises:
        ValueError: naming the value (``inf`` or a huge number would otherwise overflow
            inside ``datetime.timedelta`` or PyTorch, as a traceback or an instant timeout).
    """
    if not (isinstance(timeout_s, (int, float)) and not isinstance(timeout_s, bool)
            and math.isfinite(timeout_s) and 0 < timeout_s <= MAX_TIMEOUT_S):
        raise ValueError(f"distributed timeout must be a positive, finite number of seconds "
                         f"up to {MAX_TIMEOUT_S:g} (about 31 years), got {timeout_s!r}")


def init(device: str = "cpu", timeout_s: float = DEFAULT_TIMEOUT_S) -> bool:
    """Join the process group torchrun describes in the environment, if there is one.

    Does nothing (returns False) when ``WORLD_SIZE`` is unset or 1, or when a group is already
    initialised (the caller owns it). Otherwise initialises with ``init_method="env://"``,
    backend gloo for ``device="cpu"`` and nccl for ``"cuda"`` (after selecting
    ``cuda:LOCAL_RANK``), and ``timeout=timeout_s`` for every collective.

    Returns:
        True if this call created the group: the caller must ``destroy()`` it.

    Raises:
        ValueError: malformed or missing torchrun variables, a bad timeout (see
            ``check_timeout``) or device.
        DistributedError: the group could not be joined within the timeout.
    """
    world = requested_world_size()
    if world <= 1 or is_active():
        return False
    if not dist.is_available():
        raise ValueError(f"WORLD_SIZE={world} but this torch build has no torch.distributed")
    check_timeout(timeout_s)
    rank = _env_int("RANK")
    if not 0 <= rank < world:
        raise ValueError(f"distributed run: RANK={rank} is outside 0..WORLD_SIZE-1={world - 1}")
    for name in ("MASTER_ADDR", "MASTER_PORT"):
        if not os.environ.get(name):
            raise ValueError(f"distributed run: environment variable {name} is not set "
                             f"(launch with torchrun)")
    dev = device_for(device)
    if dev.type == "cuda":
        torch.cuda.set_device(dev)
    backend = "nccl" if dev.type == "cuda" else "gloo"
    start = time.monotonic()
    try:
        dist.init_process_group(backend, init_method="env://", rank=rank, world_size=world,
                                timeout=datetime.timedelta(seconds=timeout_s))
    except RuntimeError as e:       # includes DistNetworkError and DistStoreError
        raise DistributedError(_join_failure(e, backend, rank, world, timeout_s,
                                             time.monotonic() - start)) from e
    return True


def _join_failure(e: BaseException, backend: str, rank: int, world: int, timeout_s: float,
                  waited_s: float) -> str:
    """What ``init`` says when joining the process group failed after ``waited_s``: a
    timeout only where the wait reached ``timeout_s`` (every rank not there in time); else
    the failure itself (the port taken, the address unknown or refused, ...), at once."""
    where = f"{os.environ.get('MASTER_ADDR')}:{os.environ.get('MASTER_PORT')}"
    if waited_s >= 0.95 * timeout_s:
        return (f"rank {rank} of {world}: could not join the {backend} process group at "
                f"{where} within {timeout_s:g} s (is every rank started, and the address "
                f"reachable from this node?): {_first_line(e)}")
    return (f"rank {rank} of {world}: could not join the {backend} process group at {where}: "
            f"it failed after {waited_s:.1f} s, before the {timeout_s:g} s timeout "
            f"(is MASTER_ADDR:MASTER_PORT this run's own, free on rank 0's node and "
            f"reachable from this one?): {_first_line(e)}")


def destroy() -> None:
    """Leave the process group (no-op without one)."""
    if is_active():
        dist.destroy_process_group()


def shard_bounds(n: int, rank: int, world: int) -> tuple[int, int]:
    """Tasks ``[start, stop)`` of a meta-batch of ``n`` that ``rank`` of ``world`` handles.

    Shards are contiguous, cover ``0..n`` exactly once and differ in size by at most one.
    """
    return n * rank // world, n * (rank + 1) // world


def _first_line(e: BaseException) -> str:
    text = str(e).strip().strip("'\"").strip()
    return f"{type(e).__name__}: {text.splitlines()[0] if text else repr(e)}"


_KEPT = "The last checkpoint is kept: restart every rank with --resume"
_NONE_YET = "No checkpoint was written yet: start every rank again with the same command"


def no_checkpoint_yet(e: DistributedError) -> None:
    """Where ``e``'s advice is ``--resume`` (``_KEPT``) but the run wrote no checkpoint
    before the failure: ``e`` says instead to start every rank again (in place)."""
    text = str(e)
    if text.endswith(_KEPT):
        e.args = (text[:-len(_KEPT)] + _NONE_YET,)


def _collective(what: str, fn: Callable[[], object], then: str = _KEPT):
    """``fn()``; a failure or timeout becomes a ``DistributedError`` naming this rank and
    ``what``, ending with ``then`` (what the user does next). The first collective after
    ``begin_startup()`` first ends the start-up (``agree_startup``)."""
    if _startup is not None:
        agree_startup()
    try:
        return fn()
    except RuntimeError as e:       # gloo/nccl errors and timeouts are RuntimeErrors
        rank, world = rank_world()
        raise DistributedError(
            f"rank {rank} of {world}: {what} failed, so another rank has most likely died, "
            f"hung past the timeout, or become unreachable ({_first_line(e)}). {then}") from e


def reduce_step(grads: dict[str, torch.Tensor], metrics: dict[str, float], weight: float,
                stop: bool, what: str, drew: bool = False
                ) -> tuple[dict[str, torch.Tensor], dict[str, float], bool, bool]:
    """Average a shard's meta-gradient and metrics over the ranks, and agree on stopping and
    on whether the step drew from torch's RNG.

    Args:
        grads: name -> this shard's mean meta-gradient (same names and shapes on every rank).
        metrics: name -> this shard's mean metric (same names on every rank).
        weight: shard size / meta-batch size.
        stop: this rank was asked to stop (Ctrl-C); the result is True if any rank was.
        what: the step, for error messages (e.g. "iteration 12").
        drew: this rank's shard drew from torch's global CPU RNG (dropout in a model of your
            own); the result is True if any rank's did.

    Returns:
        (mean gradients, mean metrics, stop, drew) over the whole meta-batch, equal on every
        rank.

    Raises:
        DistributedError: a collective failed or timed out.
    """
    names = list(grads)
    flat = torch.cat([grads[n].reshape(-1) for n in names]) * weight            # [P]
    meta = torch.tensor([*metrics.values(), 0.0, 0.0], dtype=torch.float64, device=flat.device)
    meta[:-2] *= weight
    meta[-2], meta[-1] = float(drew), float(stop)
    _collective(f"all_reduce of the meta-gradient at {what}",
                lambda: (dist.all_reduce(flat), dist.all_reduce(meta)))
    out, i = {}, 0
    for n in names:
        k = grads[n].numel()
        out[n] = flat[i:i + k].view_as(grads[n])
        i += k
    values = meta.tolist()
    return out, dict(zip(metrics, values[:-2])), values[-1] > 0, values[-2] > 0


def broadcast_object(obj, what: str):
    """Rank 0's ``obj`` on every rank (pickled in memory, never on disk)."""
    box = [obj]
    _collective(f"broadcast of {what}", lambda: dist.broadcast_object_list(box, src=0))
    return box[0]


def _picklable(e: BaseException) -> bool:
    try:
        pickle.loads(pickle.dumps(e))
    except Exception:
        return False
    return True


def from_rank0(fn: Callable[[], object], what: str):
    """``fn()`` evaluated on rank 0 alone and sent to every rank; if it raises, every rank
    raises the same exception. Without a process group, just ``fn()``.

    For work that needs rank 0's files (a config or checkpoint in the run directory), so that
    the other ranks need no shared file system and all fail alike on bad input.
    """
    rank, world = rank_world()
    if world == 1:
        return fn()
    result: tuple[object, Exception | None] | None = None
    mine = None
    if rank == 0:
        try:
            result = (fn(), None)
        except Exception as e:      # re-raised below on every rank, rank 0 included
            mine = e
            result = (None, e if _picklable(e) else RuntimeError(_first_line(e)))
    value, err = broadcast_object(result, what)
    if mine is not None:
        raise mine
    if err is not None:             # rank 0 prints it
        raise show_as(err, "quiet", rank, world)
    return value


def broadcast_params(model: torch.nn.Module) -> None:
    """Overwrite every rank's parameters with rank 0's, in place (at the start of a new run,
    before any checkpoint exists)."""
    def run():
        with torch.no_grad():
            for p in model.parameters():
                dist.broadcast(p.data, src=0)
    _collective("broadcast of the initial parameters", run, _NONE_YET)


def broadcast_buffers(buffers: list[torch.Tensor], what: str, start: bool = False) -> None:
    """Overwrite every rank's ``buffers`` (a model's running statistics, ...) with rank 0's,
    in place: each rank updates them on its own shard's tasks (and rank 0 on validation's),
    so without this the ranks' copies drift apart, and a resume, which restores rank 0's on
    every rank, would not repeat the uninterrupted run on the other ranks. ``start``: at the
    start of a new run, before any checkpoint exists."""
    def run():
        with torch.no_grad():
            for b in buffers:
                dist.broadcast(b, src=0)
    _collective(f"broadcast of the model's buffers at {what}", run,
                _NONE_YET if start else _KEPT)


def broadcast_rng(what: str) -> None:
    """Set every rank's global torch CPU RNG to rank 0's state: each rank drew for its own
    shard's tasks (dropout), so the states differ, and a resume restores rank 0's on every
    rank."""
    torch.set_rng_state(broadcast_object(torch.get_rng_state(), f"the random state at {what}"))


def same_data(digest, where: str, classes: dict | None = None,
              resume: bool = False) -> None:
    """Refuse a run whose ranks read different data: every rank reads its own copy (its
    ``family.root``, on its node), and each trains its shard of every meta-batch on it, so
    different copies would train one run on a mix of data sets, silently.

    Within an open start-up (``begin_startup``) the ranks compare their data with the rest of
    their start (``agree_startup``, at the first collective of training); else at once.

    Args:
        digest: a digest of everything this rank read (the same on every rank when the data
            is; None where there is nothing to compare, as for the sinusoid).
        where: where this rank read it (its path), for the message.
        classes: ``{class: digest}`` where the data has classes, to name those that differ.
        resume: the run continues from a checkpoint, which the refusal leaves as it was.

    Raises:
        ValueError: on every rank, printed by rank 0 alone: the ranks whose data differs from
            rank 0's, where each read it, and the classes that differ.
        DistributedError: the exchange failed.
    """
    rank, world = rank_world()
    if world == 1:
        return
    if _startup is not None:
        _startup.data = (digest, where, classes)
        return
    box: list = [None] * world
    kept = ("The run's checkpoints are kept as they were" if resume
            else "No checkpoint was written yet")
    _collective("comparison of the data every rank read", lambda: dist.all_gather_object(
        box, (digest, where, classes)), f"{kept}: start every rank again with the same command")
    _refuse_mixed_data(box, rank, world, kept)


def _refuse_mixed_data(box: list, rank: int, world: int, kept: str) -> None:
    """Raise the refusal of ``same_data`` where ``box`` (every rank's ``(digest, where,
    classes)``) holds another digest than rank 0's."""
    ref, ref_where, ref_classes = box[0]
    differ = [r for r in range(1, world) if box[r][0] != ref]
    if not differ:
        return
    parts = []
    for r in differ:
        theirs = box[r][2]
        what = ""
        if isinstance(ref_classes, dict) and isinstance(theirs, dict):
            other = [c for c in ref_classes if c in theirs and theirs[c] != ref_classes[c]]
            only0 = [c for c in ref_classes if c not in theirs]
            only_r = [c for c in theirs if c not in ref_classes]
            bits = [f"{label}: {len(v)} ({', '.join(map(repr, v[:4]))}"
                    f"{', ...' if len(v) > 4 else ''})"
                    for label, v in (("classes with other examples", other),
                                     ("classes rank 0 alone read", only0),
                                     (f"classes rank {r} alone read", only_r)) if v]
            what = f"; {'; '.join(bits)}" if bits else "; the same classes, in another order"
        parts.append(f"rank {r} read {box[r][1]}{what}")
    raise show_as(ValueError(
        f"the ranks read different data, so each would train its shard of every meta-batch "
        f"on its own copy, a mix of data sets: rank{'s' * (len(differ) > 1)} "
        f"{', '.join(map(str, differ))} of {world} read other data than rank 0, which read "
        f"{ref_where} ({'; '.join(parts)}). Give every rank the same data (one shared "
        f"folder, or identical copies on every node) and start again. {kept}"),
        "quiet" if rank else "plain", rank, world)


def barrier(what: str) -> None:
    """Wait for every rank (e.g. until rank 0 has written its checkpoint)."""
    _collective(f"barrier ({what})", dist.barrier)


class _Startup:
    """The start-up of a run on several ranks: the warnings it gave. Rank 0 shows its own at
    once; the other ranks hold theirs until ``agree_startup`` and show those rank 0 did not."""

    def __init__(self, resume: bool = False):
        self.rank, self.world = rank_world()
        self.resume = resume
        self.held: list[tuple] = []
        self.data: tuple | None = None      # (digest, where, classes): same_data's
        self.show = warnings.showwarning

        def hook(message, category, filename, lineno, file=None, line=None):
            self.held.append((str(message), category, filename, lineno, file, line))
            if self.rank == 0:
                self.show(message, category, filename, lineno, file, line)
        warnings.showwarning = hook

    def close(self) -> None:
        warnings.showwarning = self.show

    def replay(self, shown_by_rank0: set[str]) -> None:
        if self.rank == 0:
            return
        for text, category, filename, lineno, file, line in self.held:
            if text not in shown_by_rank0:
                self.show(f"rank {self.rank} of {self.world}: {text}", category, filename,
                          lineno, file, line)


_startup: _Startup | None = None


def begin_startup(resume: bool = False) -> None:
    """Open the start-up of a run (after the config is agreed; no-op without a process
    group): until the next collective, or ``agree_startup``, this rank's warnings are held
    for comparison (rank 0 shows its own at once). ``resume``: the run continues from its
    checkpoint, which a failed start-up leaves as it was."""
    global _startup
    if is_active() and _startup is None:
        _startup = _Startup(resume)


def startup_open() -> bool:
    """Whether ``begin_startup()`` was called and the start-up has not been agreed yet."""
    return _startup is not None


def _describe(e: BaseException) -> str:
    text = str(e).strip()           # (Ctrl-C's KeyboardInterrupt has no text)
    return f"{type(e).__name__}: {text}" if text else type(e).__name__


def agree_startup(error: BaseException | None = None) -> None:
    """End the start-up: every rank sends whether it failed (``error``) and its warnings.

    Every rank calls this once, from the first collective of training, or with the error
    that stopped it before then. Afterwards, ``error`` is marked for ``message``: quiet on
    ranks other than 0 when every rank failed alike, named when only some ranks failed.
    A rank other than 0 shows the warnings rank 0 did not give, named. No-op when no
    start-up is open.

    Raises:
        StartupError: this rank started (``error`` is None), but another did not; rank 0
            prints it (with the failed ranks' errors), the others stay quiet.
        ValueError: every rank started, but they read different data (``same_data``);
            rank 0 prints it, the others stay quiet.
        DistributedError: the exchange failed (``error`` is None; else ``error`` is marked
            as this rank's own).
    """
    global _startup
    state, _startup = _startup, None
    if state is None:
        return
    state.close()
    rank, world = state.rank, state.world
    mine = (None if error is None else _describe(error), [w[0] for w in state.held],
            state.data)
    box: list = [None] * world
    # a resume's checkpoint is kept as it was; a new run has none yet
    kept = ("The run's checkpoints are kept as they were" if state.resume
            else "No checkpoint was written yet")
    try:
        _collective("start-up check (did every rank start?)",
                    lambda: dist.all_gather_object(box, mine),
                    f"{kept}: start every rank again with the same command")
    except DistributedError:
        if error is None:
            raise
        show_as(error, "named", rank, world)       # nobody else may print it
        return
    state.replay(set(box[0][1]))
    errors = [b[0] for b in box]
    if error is not None:
        alike = all(x == errors[rank] for x in errors)
        show_as(error, ("quiet" if rank else "plain") if alike else "named", rank, world)
        return
    failed = [(r, x) for r, x in enumerate(errors) if x is not None]
    if failed:
        who = "; ".join(f"rank {r} of {world}: {x}" for r, x in failed)
        raise show_as(StartupError(f"stopped before training, as {len(failed)} of the "
                                   f"{world} ranks failed to start ({who}). {kept}"),
                      "quiet" if rank else "plain", rank, world)
    if any(b[2] is not None for b in box):          # every rank started: on the same data?
        _refuse_mixed_data([b[2] or (None, "no data", None) for b in box], rank, world,
                           kept)

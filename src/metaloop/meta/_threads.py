"""The tasks of a meta-batch on several CPU threads (``batching="threads"``).

On the CPU, a few small kernels per task (Conv4 on 5-80 images) use torch's intra-op
threads poorly: with 2 threads, one task after another is 1.3-1.5x faster than with 1, not
2x. Running whole tasks side by side instead, each thread with one intra-op thread, keeps
every core busy (docs/benchmarks.md, "How the tasks of a meta-batch are batched"). torch releases
the GIL inside its kernels and runs a CPU graph's backward pass on the calling thread, so
Python threads suffice.

``functional_call`` swaps a module's attributes while it runs, so two threads must not
share a module: each worker gets a *replica* whose parameters and buffers are the very
tensors of the original (no copy; gradients reach the same leaves).
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import TypeVar

import torch
from torch import nn

from metaloop.func.params import named_layers

T = TypeVar("T")


def replicate(model: nn.Module) -> nn.Module:
    """A copy of ``model``'s module tree that shares its parameter and buffer tensors."""
    shared = {id(t): t for t in (*model.parameters(), *model.buffers())}
    return copy.deepcopy(model, memo=shared)


def workers_for(model: nn.Module, num_tasks: int) -> int:
    """How many threads to use now: torch's intra-op thread count, at most one per task;
    1 (run inline) for a model with any parameter off the CPU."""
    if any(p.device.type != "cpu" for p in model.parameters()):
        return 1
    return max(1, min(torch.get_num_threads(), num_tasks))


def check_threadable(model: nn.Module) -> None:
    """Raise ValueError if ``model`` has buffers (a forward pass may update them in place,
    BatchNorm running statistics, and two threads would do so at once) or dropout layers in
    training mode (they draw from torch's one global random generator, so tasks on several
    threads would get their masks in an order that changes from run to run: the meta-gradient
    would be neither the loop's nor reproducible from a seed). Dropout is read from the
    layers' current ``training`` flags."""
    names = [n for n, _ in model.named_buffers()]
    if names:
        raise ValueError(f"batching='threads' needs a model without buffers; this one has "
                         f"{names[:3]}{' ...' if len(names) > 3 else ''} (a forward pass "
                         f"may update them, and two threads would do it at once); use "
                         f"batching='loop'")
    drop = named_layers(model, lambda m: isinstance(m, nn.modules.dropout._DropoutNd)
                        and m.training)
    if drop:
        raise ValueError(f"batching='threads' cannot run {', '.join(drop[:3])}"
                         f"{' ...' if len(drop) > 3 else ''}: in training mode dropout draws "
                         f"from torch's one random generator, and tasks on several threads "
                         f"would draw their masks in an order that changes from run to run "
                         f"(the meta-gradient would not be reproducible from a seed); use "
                         f"batching='loop', or put the dropout layers in eval mode")


_POOLS: dict[int, ThreadPoolExecutor] = {}    # worker count -> its threads, kept for reuse


def run_threads(jobs: list[Callable[[], T]]) -> list[T]:
    """Run the jobs on as many threads, one intra-op thread each; results in job order.

    The first job runs on the calling thread, the others on threads that are kept between
    calls (a new thread each time would also mean new malloc arenas: more memory and page
    faults). torch's thread count is restored afterwards, also when a job raises (its
    exception is re-raised here, after every job has ended).
    """
    if len(jobs) == 1:
        return [jobs[0]()]
    saved = torch.get_num_threads()

    def single(job):
        torch.set_num_threads(1)
        return job()

    pool = _POOLS.get(len(jobs) - 1)
    if pool is None:
        pool = _POOLS[len(jobs) - 1] = ThreadPoolExecutor(
            len(jobs) - 1, thread_name_prefix="metaloop-task")
    try:
        futures = [pool.submit(single, job) for job in jobs[1:]]
        first = _outcome(single, jobs[0])
        rest = [_outcome(f.result) for f in futures]
    finally:
        torch.set_num_threads(saved)
    results = []
    for ok, value in (first, *rest):
        if not ok:
            raise value
        results.append(value)
    return results


def _outcome(fn, *args):
    """(True, fn(*args)) or (False, the exception it raised)."""
    try:
        return True, fn(*args)
    except Exception as e:      # re-raised by run_threads once every job has ended
        return False, e

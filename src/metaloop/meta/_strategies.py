"""How MAML's meta-gradient is executed: small strategies that ``MAML``'s flags select.

``metaloop.meta.maml.maml_meta_gradient`` is the default path, one task at a time with the
plain inner SGD written out. Each strategy here changes *how* that is computed, never what:

- ``sgd_inner_loop``: the inner loop of ``SGDAdapter.run`` instead of the written-out one, for
  inner-loop recomputation (``recompute_inner_loop``), learned step sizes (``learn_lr``) and
  ANIL's head-only path;
- ``compiled``: the query pass through ``torch.compile`` (``compile``);
- ``vmapped_query_losses``: all tasks at once under ``torch.func.vmap`` (``batching="vmap"``),
  compiled as one function with ``compile`` (``compiled_vmapped_losses``);
- ``on_threads`` with ``replicas``: the tasks spread over CPU threads
  (``batching="threads"``).

Each is tested on its own in ``tests/meta/test_maml.py`` and against the plain per-task
reference in ``tests/meta/test_conformance.py``, ``test_threads.py``, ``test_fast_paths.py``
and ``test_checkpoint.py``.
"""

from __future__ import annotations

import dataclasses
import functools
import inspect
import logging
import threading
import warnings
from collections.abc import Callable, Sequence

import torch

from metaloop.adapt.sgd import SGDAdapter
from metaloop.func.params import Params
from metaloop.meta._common import accumulate, labels_checked, vmap_tasks
from metaloop.meta._threads import replicate, run_threads
from metaloop.tasks.batch import TaskBatch, valid_by_construction

InnerLoop = Callable[[Params, torch.Tensor, torch.Tensor], Params]
TaskGradients = tuple[dict[str, torch.Tensor], list[tuple[int, dict[str, torch.Tensor]]]]


def sgd_inner_loop(adapter: SGDAdapter, first_order: bool,
                   lrs: torch.Tensor | None = None) -> InnerLoop:
    """One task's inner loop by ``adapter.run``: ``(net params, sx [S, ...], sy) -> theta'``.

    ``adapter.run`` holds the variants of the plain SGD loop: each step recomputed in the
    backward pass (``adapter.checkpoint``), a ``[steps, adapted]`` table of learned step
    sizes (``lrs``), and another path such as ANIL's head-only one (``adapter.path_fn``).
    """
    def inner_loop(net: Params, sx: torch.Tensor, sy: torch.Tensor) -> Params:
        return adapter.run(net, sx, sy, create_graph=not first_order, lr=lrs)
    return inner_loop


def cpu_compiler_problem() -> str | None:
    """None when ``torch.compile`` finds a working C++ compiler for the CPU, else what was
    tried (torch's ``torch._inductor.config.cpp.cxx``: ``CXX`` when torch was imported, then
    ``g++``), e.g. ``"none works: tried /tmp/x/g++"``. Inductor needs one for every compiled
    function on the CPU and otherwise fails at the first call with a long traceback
    (``InvalidCxxCompiler``). Cheap: each search (each ``cpp.cxx`` setting) runs the
    compilers' ``--version`` once per process; None where this torch has no such search."""
    try:
        from torch._inductor import config as inductor_config
        from torch._inductor.cpp_builder import get_cpp_compiler
    except ImportError:                 # another torch: inductor says what it needs itself
        return None
    cxx = getattr(getattr(inductor_config, "cpp", None), "cxx", None)
    search = tuple(cxx) if isinstance(cxx, (list, tuple)) else (cxx,)
    return _compiler_search(search, get_cpp_compiler)


@functools.lru_cache(maxsize=16)
def _compiler_search(search: tuple, get_cpp_compiler) -> str | None:
    try:
        get_cpp_compiler()
    except Exception:  # noqa: BLE001  # InvalidCxxCompiler, or whatever this torch raises
        tried = ", ".join(str(c) for c in search if c) or "no compiler configured"
        return f"none works: tried {tried}"
    return None


def compiler_advice(problem: str, setting: str) -> str:
    """The one message for a compiled run on the CPU without a working C++ compiler
    (``problem``: ``cpu_compiler_problem()``); ``setting`` is how the user turns compiling
    off (``"method.compile = false"``, ``"compile=False"``)."""
    return (f"needs a C++ compiler for torch.compile on the CPU ({problem}); install g++ or "
            f"set {setting}")


class RecompileLimitWarning(UserWarning):
    """A compiled function of a ``compile=True`` learner reached torch's recompile limit
    (``torch._dynamo.config.recompile_limit``) and now runs eager: the same numbers, slower."""


_in_call = threading.local()       # set while a compiled function of ``compiled`` runs


class _LimitHits(logging.Filter):
    """Notes dynamo's "hit config.recompile_limit" log record while a function of
    ``compiled`` runs on this thread (dynamo says so only in its log); passes every
    record on. Where a torch words it otherwise, nothing is noted and nothing warned."""

    def filter(self, record: logging.LogRecord) -> bool:
        if getattr(_in_call, "active", False) and "hit config." in str(record.msg) \
                and "recompile_limit" in record.getMessage():
            _in_call.hit = True
        return True


_LIMIT_FILTER = _LimitHits()


def _compile(fn):
    """``torch.compile(fn, dynamic=False)``, its recompilations counted on their own
    (``isolate_recompiles``, where this torch has it): torch's limit is otherwise shared by
    every compiled function of one code object, i.e. by every learner of the process."""
    kw: dict = {"dynamic": False}
    try:
        if "isolate_recompiles" in inspect.signature(torch.compile).parameters:
            kw["isolate_recompiles"] = True
    except (TypeError, ValueError):                 # no signature to read: torch's default
        pass
    return torch.compile(fn, **kw)


def compiled(fn, owner: str = "MAML"):
    """``torch.compile(fn)`` for fixed shapes (``_compile``). Torch's own warnings while it
    compiles say nothing to our users (importing inductor: its deprecated
    ``torch.jit.script_method``; dynamo tracing: reading ``.grad`` of theta', which is not a
    leaf), so they are hidden; when it reaches torch's recompile limit and falls back to
    eager (a ninth meta-batch shape), a ``RecompileLimitWarning`` says so, once per
    function (``owner`` names the learner in it)."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", "`torch.jit.script_method` is deprecated",
                                DeprecationWarning)
        compiled_fn = _compile(fn)
    logger = logging.getLogger("torch._dynamo.convert_frame")
    if _LIMIT_FILTER not in logger.filters:
        logger.addFilter(_LIMIT_FILTER)
    warned: list[bool] = []

    def call(*args):
        _in_call.active, _in_call.hit = True, False
        try:
            with warnings.catch_warnings():
                warnings.filterwarnings("ignore", "The .grad attribute of a Tensor that is "
                                        "not a leaf", UserWarning)
                out = compiled_fn(*args)
        finally:
            _in_call.active, hit = False, _in_call.hit
        if hit and not warned:
            warned.append(True)
            limit = getattr(torch._dynamo.config, "recompile_limit", None)
            warnings.warn(f"{owner}(compile=True): torch.compile reached its recompile limit "
                          f"(torch._dynamo.config.recompile_limit = {limit}) for this "
                          f"learner, so the new shapes or settings run eager from now on "
                          f"(the same numbers, slower): keep the meta-batch shape fixed, or "
                          f"raise torch._dynamo.config.recompile_limit",
                          RecompileLimitWarning, stacklevel=2)
        return out
    return call


def vmapped_query_losses(adapter: SGDAdapter, net: Params, batch: TaskBatch, first_order: bool,
                         lrs: torch.Tensor | None = None, compiled_losses=None
                         ) -> tuple[torch.Tensor, torch.Tensor]:
    """Every task's query loss ``[B]`` and outputs ``[B, Q, out]`` in one ``vmap`` call.

    The start (a zero head for ``head_init="zero"``) is made once outside ``vmap``; inside,
    the inner loop is the ``torch.func`` one (``sgd_path_func``). Differentiable in ``net``
    (and ``lrs``).

    Args:
        compiled_losses: ``compiled_vmapped_losses(adapter, first_order)``, to run the
            vmapped tasks compiled (its outputs come detached); None (the default): eager.

    Raises:
        ValueError: class labels outside the model's outputs (``labels_checked``: checked as
            on the loop path, not failing inside torch; on the compiled path, checked when
            the compiled kernels fail).
    """
    start = adapter.start(net, batch.support_y)
    tensors = (batch.support_x, batch.support_y, batch.query_x, batch.query_y)
    if compiled_losses is not None:
        try:   # labels checked around it: a TaskBatch holds none below 0, and one past the
            with valid_by_construction():      # outputs fails the compiled kernels (below)
                return compiled_losses(start, *tensors, lrs)
        except RuntimeError:        # e.g. inductor's "index out of bounds" for a bad label:
            vmapped_query_losses(adapter, net, batch, first_order, lrs)   # names the input's
            raise                                                       # problem, if it can
    return _vmapped_tasks(labels_checked(adapter, batch.support_y, batch.query_y), first_order,
                          start, *tensors, lrs)


def _vmapped_tasks(adapter: SGDAdapter, first_order: bool, start: Params, sx: torch.Tensor,
                   sy: torch.Tensor, qx: torch.Tensor, qy: torch.Tensor,
                   lrs: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor]:
    """The B tasks of ``sx [B, S, ...]``, ``sy``, ``qx [B, Q, ...]``, ``qy`` adapted from
    ``start`` under one ``vmap``: query losses ``[B]``, outputs ``[B, Q, out]``."""
    def task(sx, sy, qx, qy):
        fast = adapter.run(start, sx, sy, create_graph=not first_order, started=True,
                           functional=True, lr=lrs)
        out = adapter.fwd(fast, qx)                                    # [Q, out]
        return adapter.loss_fn(out, qy), out
    return vmap_tasks(task, sx, sy, qx, qy)


def compiled_vmapped_losses(adapter: SGDAdapter, first_order: bool, owner: str = "MAML"):
    """``vmapped_query_losses``'s vmapped tasks as one ``torch.compile``'d function
    ``(start, sx, sy, qx, qy, lrs) -> (losses [B], outputs [B, Q, out], detached)``: every
    task's inner loop and query pass, and (through AOT autograd) their backward, second
    order included, run as fused kernels without Python between the operations. Exact to
    float rounding (float64: the eager meta-gradient to 1e-15). Each new shape of the inputs
    compiles again (``dynamic=False``), so it pays where the meta-batch keeps its shape, as
    in training."""
    def losses(start, sx, sy, qx, qy, lrs):
        losses, outs = _vmapped_tasks(adapter, first_order, start, sx, sy, qx, qy, lrs)
        return losses, outs.detach()          # the outputs only score: no backward through
    return compiled(losses, owner)


def replicas(adapter: SGDAdapter, n: int, cache: list[SGDAdapter]) -> list[SGDAdapter]:
    """``n`` copies of ``adapter``, each over its own replica of the network (sharing its
    tensors); kept in ``cache`` between calls."""
    while len(cache) < n:
        cache.append(dataclasses.replace(adapter, model=replicate(adapter.model)))
    return cache[:n]


def on_threads(run: Callable[[SGDAdapter, Sequence[int]], TaskGradients], num_tasks: int,
               adapters: list[SGDAdapter]) -> TaskGradients:
    """``run(adapter, tasks)`` with the tasks dealt round-robin over ``len(adapters)`` CPU
    threads (the first on the calling thread); the gradients summed, the per-task metrics
    back in task order.

    ``run`` returns (the sum of its tasks' gradients, [(task, metrics)]), as
    ``maml_meta_gradient`` does.
    """
    workers = len(adapters)
    tasks = range(num_tasks)
    parts = run_threads([lambda a=a, k=k: run(a, tasks[k::workers])  # type: ignore[misc]
                         for k, a in enumerate(adapters)])
    total = parts[0][0]
    for part, _ in parts[1:]:
        accumulate(total, part, 1.0)
    return total, sorted(i_m for _, ms in parts for i_m in ms)

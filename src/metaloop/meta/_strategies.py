"""How MAML's meta-gradient is executed: small strategies that ``MAML``'s flags select.

``metaloop.meta.maml.maml_meta_gradient`` is the default path, one task at a time with the
plain inner SGD written out. Each strategy here changes *how* that is computed, never what:

- ``sgd_inner_loop``: the inner loop of ``SGDAdapter.run`` instead of the written-out one, for
  inner-loop recomputation (``recompute_inner_loop``), learned step sizes (``learn_lr``) and
  ANIL's head-only path;
- ``compiled``: the query pass through ``torch.compile`` (``compile``);
- ``vmapped_query_losses`` / ``vmapped_meta_loss``: all tasks at once under ``torch.func.vmap``
  (``batching="vmap"``), compiled as one function with ``compile``
  (``compiled_vmapped_losses``);
- ``on_threads`` with ``replicas``: the tasks spread over CPU threads
  (``batching="threads"``).

Each is tested on its own in ``tests/meta/test_maml.py`` and against the plain per-task
reference in ``tests/meta/test_conformance.py``, ``test_threads.py``, ``test_fast_paths.py``
and ``test_checkpoint.py``.
"""

from __future__ import annotations

import dataclasses
import inspect
import warnings
from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager, nullcontext

import torch

from metaloop.adapt.sgd import SGDAdapter, gradients_on
from metaloop.func.params import Params
from metaloop.meta._common import accumulate, batch_metrics, labels_checked, vmap_tasks
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


_NO_CONTEXT = nullcontext()


def math_attention(first_order: bool) -> AbstractContextManager:
    """Second order: torch's scaled-dot-product attention (``nn.MultiheadAttention``,
    ``nn.TransformerEncoderLayer`` in a model of your own) on its math kernel, the one whose
    backward is differentiable again; the fused kernels have no double backward
    ("derivative for aten::_scaled_dot_product_flash_attention_for_cpu_backward is not
    implemented"). First order: nothing (as torch chooses). Models without attention are
    unaffected. The kernel choice is process-wide while it holds: two learners meta-training
    at once in threads of your own would restore it under each other."""
    if first_order:
        return _NO_CONTEXT
    from torch.nn.attention import SDPBackend, sdpa_kernel
    return sdpa_kernel([SDPBackend.MATH])


def grads_on() -> AbstractContextManager:
    """``gradients_on()`` (gradients recorded whatever the caller's mode), or nothing where
    they already are (grad mode on, outside ``inference_mode``): the usual training step
    skips its two context managers."""
    if torch.is_grad_enabled() and not torch.is_inference_mode_enabled():
        return _NO_CONTEXT
    return gradients_on()


def cpu_compiler_problem() -> str | None:
    """None when ``torch.compile`` finds a working C++ compiler for the CPU, else what was
    tried (torch's ``torch._inductor.config.cpp.cxx``: ``CXX`` when torch was imported, then
    ``g++``), e.g. ``"none works: tried /tmp/x/g++"``. Inductor needs one for every compiled
    function on the CPU and otherwise fails at the first call with a long traceback
    (``InvalidCxxCompiler``). Cheap: a search that finds one (each ``cpp.cxx`` setting)
    runs the compilers' ``--version`` once per process; a failing one runs again at each
    check, so a compiler installed meanwhile is found; the setting itself is read at every
    check (a compiled learner checks at every step), inductor's modules imported once.
    None where this torch has no such search."""
    found = _inductor()
    if found is None:                   # another torch: inductor says what it needs itself
        return None
    inductor_config, cpp_builder = found
    cxx = getattr(getattr(inductor_config, "cpp", None), "cxx", None)
    search = tuple(cxx) if isinstance(cxx, (list, tuple)) else (cxx,)
    return _compiler_search(search, cpp_builder.get_cpp_compiler)


_INDUCTOR: list = []     # [(inductor's config module, its cpp_builder module) or None], once


def _inductor():
    """(``torch._inductor.config``, ``torch._inductor.cpp_builder``), imported on first use
    (inductor's import is slow), or None where this torch has no such search (no
    ``cpp_builder.get_cpp_compiler``)."""
    if not _INDUCTOR:
        found = None
        try:
            from torch._inductor import config as inductor_config
            from torch._inductor import cpp_builder
            if hasattr(cpp_builder, "get_cpp_compiler"):
                found = (inductor_config, cpp_builder)
        except ImportError:
            pass
        _INDUCTOR.append(found)
    return _INDUCTOR[0]


_COMPILERS_FOUND: set[tuple] = set()   # the searches that found a working compiler


def _compiler_search(search: tuple, get_cpp_compiler) -> str | None:
    """Inductor's search for ``search`` (its ``cpp.cxx``); only a success is remembered, so
    a compiler installed after a failed check (as the advice says) is found without a
    restart, as inductor itself finds it."""
    if search in _COMPILERS_FOUND:
        return None
    try:
        get_cpp_compiler()
    except Exception:  # noqa: BLE001  # InvalidCxxCompiler, or whatever this torch raises
        tried = ", ".join(str(c) for c in search if c) or "no compiler configured"
        return f"none works: tried {tried}"
    _COMPILERS_FOUND.add(search)
    return None


def compiler_advice(problem: str, setting: str) -> str:
    """The one message for a compiled run on the CPU without a working C++ compiler
    (``problem``: ``cpu_compiler_problem()``); ``setting`` is how the user turns compiling
    off (``"method.compile = false"``, ``"compile=False"``)."""
    return (f"needs a C++ compiler for torch.compile on the CPU ({problem}); install g++ or "
            f"set {setting}")


class RecompileLimitWarning(UserWarning):
    """A compiled function of a ``compile=True`` learner reached one of torch's recompile
    limits (``torch._dynamo.config.recompile_limit`` or ``accumulated_recompile_limit``) and
    now runs eager: the same numbers, slower."""


_LIMIT_HIT = "recompile limit"      # in the message dynamo counts when it reaches a limit


class _LimitHits:
    """Dynamo's count of "recompile limit exceeded" graph breaks
    (``torch._dynamo.utils.counters["unimplemented"]``, keyed by their message, which names
    the ``Limit type``), read before and after a compiled call: unlike dynamo's log record,
    it does not depend on logging (``TORCH_LOGS="-dynamo"``). Cheap: the counts' sum (a C
    loop) says whether any graph break was counted; only then are the messages read. Where
    this torch has no such counters, nothing is noted and nothing warned."""

    _counters: dict | None = None     # dynamo's, read on first use (dynamo's import is slow)
    _total = 0                         # the graph breaks counted when last read ...
    _hits: dict[str, int] = {}         # ... and the limit hits among them, by message

    def _found(self):
        if self._counters is None:
            found: object = None
            try:
                from torch._dynamo.utils import counters
                found = counters
            except ImportError:
                pass
            self._counters = found if isinstance(found, dict) else {}
        return self._counters.get("unimplemented")

    def _read(self) -> tuple[int, dict[str, int]]:
        """(the graph breaks counted so far, the limit hits among them); the hits read
        again only where the count changed since the last read."""
        found = self._found()
        try:
            total = sum(found.values()) if found else 0
            if total != self._total:
                self._hits = {k: v for k, v in found.items() if _LIMIT_HIT in k}
                self._total = total
        except (RuntimeError, TypeError, AttributeError):  # changed meanwhile, or another form
            return self._total, self._hits
        return total, self._hits

    def snapshot(self) -> dict[str, int]:
        """The limit hits counted so far, by message (usually none: an empty dict)."""
        return self._read()[1]

    def new_limit(self, before: dict[str, int]) -> str | None:
        """The limit hit since ``before`` (``"recompile_limit"``, ...), else None."""
        for msg, n in self.snapshot().items():
            if isinstance(n, int) and n > before.get(msg, 0):
                limit = msg.split("Limit type:", 1)[1].split()[0] if "Limit type:" in msg \
                    else ""
                return limit if limit.isidentifier() else "recompile_limit"
        return None


_LIMITS = _LimitHits()


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
    warned: list[bool] = []

    def call(*args):
        before = _LIMITS.snapshot()
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", "The .grad attribute of a Tensor that is "
                                    "not a leaf", UserWarning)
            out = compiled_fn(*args)
        limit = None if warned else _LIMITS.new_limit(before)
        if limit is not None:
            warned.append(True)
            value = getattr(torch._dynamo.config, limit, None)
            warnings.warn(f"{owner}(compile=True): torch.compile reached its recompile limit "
                          f"(torch._dynamo.config.{limit} = {value}) for this learner, so "
                          f"the new shapes or settings run eager from now on (the same "
                          f"numbers, slower): keep the meta-batch shape fixed, or raise "
                          f"torch._dynamo.config.{limit}",
                          RecompileLimitWarning, stacklevel=2)
        return out
    return call


def vmapped_query_losses(adapter: SGDAdapter, net: Params, batch: TaskBatch, first_order: bool,
                         lrs: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Every task's query loss ``[B]`` and outputs ``[B, Q, out]`` in one ``vmap`` call.

    The start (a zero head for ``head_init="zero"``) is made once outside ``vmap``; inside,
    the inner loop is the ``torch.func`` one (``sgd_path_func``). Differentiable in ``net``
    (and ``lrs``).

    Raises:
        ValueError: class labels outside the model's outputs (``labels_checked``: checked as
            on the loop path, not failing inside torch).
    """
    start = adapter.start(net, batch.support_y)
    return _vmapped_tasks(labels_checked(adapter, batch.support_y, batch.query_y), first_order,
                          start, batch.support_x, batch.support_y, batch.query_x,
                          batch.query_y, lrs)


def vmapped_meta_loss(adapter: SGDAdapter, net: Params, batch: TaskBatch, first_order: bool,
                      lrs: torch.Tensor | None = None, compiled_loss=None
                      ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """The meta-loss (the mean of ``vmapped_query_losses``) and its metrics, as
    ``batch_metrics`` makes them: ``{"loss"}``, and ``{"accuracy"}`` for class labels.

    Args:
        compiled_loss: ``compiled_vmapped_losses(adapter, first_order)``, to run the
            vmapped tasks compiled, the mean and the accuracy included; None (the default):
            eager.

    Raises:
        ValueError: class labels outside the model's outputs (``labels_checked``); on the
            compiled path, checked when the compiled kernels fail.
    """
    start = adapter.start(net, batch.support_y)
    tensors = (batch.support_x, batch.support_y, batch.query_x, batch.query_y)
    if compiled_loss is None:
        return _mean_and_metrics(labels_checked(adapter, batch.support_y, batch.query_y),
                                 first_order, start, *tensors, lrs)
    try:   # labels checked around it: a TaskBatch holds none below 0, and one past the
        with valid_by_construction():      # outputs fails the compiled kernels (below)
            return compiled_loss(start, *tensors, lrs)
    except RuntimeError:        # e.g. inductor's "index out of bounds" for a bad label:
        vmapped_query_losses(adapter, net, batch, first_order, lrs)   # names the input's
        raise                                                       # problem, if it can


def _mean_and_metrics(adapter: SGDAdapter, first_order: bool, start: Params,
                      sx: torch.Tensor, sy: torch.Tensor, qx: torch.Tensor, qy: torch.Tensor,
                      lrs: torch.Tensor | None) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """``_vmapped_tasks``' mean query loss and its ``batch_metrics``: what
    ``vmapped_meta_loss`` returns, eager or compiled as one function."""
    losses, outs = _vmapped_tasks(adapter, first_order, start, sx, sy, qx, qy, lrs)
    loss = losses.mean()
    return loss, batch_metrics(outs, qy, losses, loss)


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
    """``vmapped_meta_loss``'s vmapped tasks as one ``torch.compile``'d function
    ``(start, sx, sy, qx, qy, lrs) -> (meta-loss, metrics)`` (``_mean_and_metrics``: the
    metrics detached, the accuracy for class labels): every task's inner loop and query
    pass, the mean over
    tasks and (through AOT autograd) their backward, second order included, run as fused
    kernels without Python between the operations; the metrics come out of the same
    kernels (no query outputs to hand back and score eagerly). Exact to float rounding
    (float64: the eager meta-gradient to 1e-15). Each new shape of the inputs compiles
    again (``dynamic=False``), so it pays where the meta-batch keeps its shape, as in
    training."""
    def meta_loss(start, sx, sy, qx, qy, lrs):
        return _mean_and_metrics(adapter, first_order, start, sx, sy, qx, qy, lrs)
    return compiled(meta_loss, owner)


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

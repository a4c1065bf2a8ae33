"""MAML (Finn et al. 2017): backprop through the inner SGD loop; first-order as a flag.

``maml_meta_gradient`` is the whole algorithm on its default path: each task's inner SGD
steps and query loss, one task's graph at a time, written out. ``MAML`` holds the settings
and picks, by its flags, the small execution strategies of ``metaloop.meta._strategies``
(vmap, threads, a compiled query pass, a recomputed or otherwise replaced inner loop), none
of which changes the meta-gradient.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import cast

import torch
from torch import nn

from metaloop.adapt.learned_lr import InnerLRs, split_lrs
from metaloop.adapt.sgd import (
    SGDAdapter,
    autograd_usable,
    default_head,
    gradients_on,
    zero_head,
)
from metaloop.func.params import Params, params_of
from metaloop.meta._common import (
    AdaptsBySGD,
    VmapUnsupported,
    accumulate,
    autograd_batch,
    check_batch,
    check_batched_support,
    check_finite_batch,
    check_finite_tasks,
    check_flag,
    check_inputs,
    grads_to_dict,
    mean_metrics,
    named_layers,
    rerun_on_loop,
    resolve_batching,
    state_kept,
    task_metrics,
    vmap_guard,
    vmap_refusal,
    vmap_tasks,
)
from metaloop.meta._strategies import (
    InnerLoop,
    TaskGradients,
    compiled,
    compiled_vmapped_losses,
    compiler_advice,
    cpu_compiler_problem,
    grads_on,
    math_attention,
    on_threads,
    replicas,
    sgd_inner_loop,
    vmapped_meta_loss,
)
from metaloop.meta._threads import check_threadable, workers_for
from metaloop.tasks.batch import TaskBatch


def maml_meta_gradient(adapter: SGDAdapter, params: Params, batch: TaskBatch, *,
                       first_order: bool = False, tasks: Sequence[int] | None = None,
                       net: Params | None = None, inner_loop: InnerLoop | None = None,
                       query_fwd=None) -> TaskGradients:
    """MAML's meta-gradient, one task's graph at a time (the default path, written out).

    For task i, theta_i' is theta_0 after ``adapter.steps`` SGD steps of size alpha on the
    support loss L_i; the meta-loss is the mean over the B tasks of the query loss
    L~_i(theta_i'), and its gradient (1/B) sum_i dL~_i(theta_i')/dtheta_0 is accumulated
    task by task, so only one task's graph is alive at a time. Second order: the inner
    gradients keep their graph, so dtheta_i'/dtheta_0 has its Hessian terms; first order:
    they are constants, and dtheta_i'/dtheta_0 is the identity.

    Args:
        adapter: the inner loop's settings: the network (``fwd``), ``loss_fn``, the step size
            alpha (``lr``), ``steps``, the adapted ``names`` and the head ``start``.
        params: theta_0, every meta-parameter (name -> tensor); the gradient is theirs.
        batch: B tasks.
        first_order: drop the second derivatives (first-order MAML) of the written-out SGD
            steps; an ``inner_loop`` decides its own (it is not read there: build it with
            its first-order setting, e.g. its inner gradients taken with
            ``create_graph=False``, as ``_strategies.sgd_inner_loop`` does).
        tasks: the tasks of ``batch`` to take (default all); the sum is still divided by B
            (the threads strategy deals a batch out this way).
        net: the network's parameters within ``params`` (default ``params`` itself; with
            learned step sizes, the ``net.*`` entries without their prefix).
        inner_loop: a strategy replacing the written-out SGD steps,
            ``(net, sx, sy) -> theta_i'`` (``_strategies.sgd_inner_loop``).
        query_fwd: a strategy replacing ``adapter.fwd`` for the query pass
            (``_strategies.compiled``).

    Returns:
        (the gradient, name -> tensor like ``params``, zeros where unused; one
        ``(task, {"loss", "accuracy"})`` per task, accuracy for classification only).
    """
    names = list(params)
    net = params if net is None else net
    query_fwd = adapter.fwd if query_fwd is None else query_fwd
    alpha, create_graph = adapter.lr, not first_order
    total, metrics = None, []
    for i in range(batch.num_tasks) if tasks is None else tasks:
        sx, sy, qx, qy = batch.task(i)     # sx [S, ...], sy [S] or [S, out]; qx [Q, ...], qy
        if inner_loop is not None:
            theta = inner_loop(net, sx, sy)                          # theta_i'
        else:
            theta = adapter.start(net, sy)          # theta_0 (head_init="zero": a zero head)
            for _ in range(adapter.steps):
                pred = adapter.fwd(theta, sx)                              # [S, out]
                support_loss = adapter.loss_fn(pred, sy)                   # L_i(theta_k), scalar
                g = torch.autograd.grad(support_loss, [theta[n] for n in adapter.names],
                                        create_graph=create_graph,   # dL_i/dtheta_k, per name
                                        allow_unused=True)           # (None: unused, stays)
                theta = {**theta, **{n: theta[n] - alpha * gn         # theta_{k+1}, same shapes
                                     for n, gn in zip(adapter.names, g) if gn is not None}}
        out = query_fwd(theta, qx)                                   # [Q, out]
        loss = adapter.loss_fn(out, qy)                              # L~_i(theta_i'), scalar
        g = torch.autograd.grad(loss, [params[n] for n in names],    # dL~_i/dtheta_0, per name
                                allow_unused=True)                   # (None: unused, -> zeros)
        total = accumulate(total, grads_to_dict(names, g, params), 1.0 / batch.num_tasks)
        metrics.append((i, task_metrics(out, qy, loss)))
    return cast(Params, total), metrics                      # a batch has at least one task


# torch's fused normalisation kernels whose double backward is wrong under vmap
# (pytorch/functorch#534): BatchNorm*/InstanceNorm* (``_NormBase``) and LayerNorm. GroupNorm,
# RMSNorm and metaloop's own ``BatchNorm`` (plain arithmetic under vmap) are exact.
VMAP_WRONG_SECOND_ORDER = (nn.modules.batchnorm._NormBase, nn.LayerNorm)


def vmap_wrong_norms(model: nn.Module) -> list[str]:
    """The layers of ``model`` whose double backward is wrong under vmap, as ``"name (Type)"``."""
    return named_layers(model, lambda m: isinstance(m, VMAP_WRONG_SECOND_ORDER))


@functools.cache
def vmap_ignores_padding_idx() -> bool:
    """Whether this torch's vmap rule for ``F.embedding(..., padding_idx=p)`` sends a gradient
    to row ``p`` of a weight the tasks share (the loop sends none, as torch promises): the
    meta-gradient of MAML over an adapted ``nn.Embedding(padding_idx=...)`` would then move the
    padding vector. Measured once, on a 3 x 2 weight."""
    w = torch.zeros(3, 2, dtype=torch.float64, requires_grad=True)
    ids = torch.tensor([[0, 1], [0, 2]])

    def f(delta: torch.Tensor, i: torch.Tensor) -> torch.Tensor:
        return nn.functional.embedding(i, w + delta, padding_idx=0).sum()

    with torch.enable_grad():
        g, = torch.autograd.grad(torch.func.vmap(f)(torch.zeros(2, 3, 2, dtype=w.dtype),
                                                    ids).sum(), w)
    return bool(g[0].abs().sum() > 0)


def adapted_tensors(model: nn.Module, adapter: SGDAdapter) -> set[int]:
    """The ids of ``model``'s parameters that ``adapter``'s inner loop adapts (a tensor
    registered under several names counts under its first, as ``adapter.names`` holds it)."""
    names = set(adapter.names)
    return {id(p) for n, p in model.named_parameters() if n in names}


def vmap_padding_refusal(model: nn.Module, adapter: SGDAdapter,
                         owner: str = "MAML") -> str | None:
    """Why MAML (first or second order) under ``vmap`` would give a wrong meta-gradient for
    ``model``, or None: an ``nn.Embedding`` / ``nn.EmbeddingBag`` with a ``padding_idx`` whose
    weight adapts, where this torch's vmap rule sends the padding row a gradient
    (``vmap_ignores_padding_idx``). An embedding that does not adapt (ANIL's body, a solved
    head's features) is exact under vmap."""
    adapted = adapted_tensors(model, adapter)
    layers = [f"{n} ({type(m).__name__})" for n, m in model.named_modules()
              if isinstance(m, (nn.Embedding, nn.EmbeddingBag))
              and m.padding_idx is not None and id(m.weight) in adapted]
    if not layers or not vmap_ignores_padding_idx():
        return None
    return (f"{owner}(batching='vmap') would give a wrong meta-gradient: under "
            f"torch.func.vmap, torch's embedding backward ignores padding_idx and sends the "
            f"padding row of {', '.join(layers[:3])}{' ...' if len(layers) > 3 else ''} a "
            f"gradient (the loop sends none), and its weight adapts; use batching='loop' or "
            f"'auto' (the loop for such a model), or leave the embedding out of what adapts "
            f"(adapt=..., or ANIL)")


def registered_after_norms(model: nn.Module) -> set[str]:
    """The parameters (first names) of ``model``'s modules registered after its last torch
    BatchNorm/InstanceNorm/LayerNorm layer (``VMAP_WRONG_SECOND_ORDER``), in
    ``named_modules()`` order, and used by no module at or before it: a head there (the
    output layer of a network that normalises before it) is taken to run after those
    layers. Every parameter where the model has none of them."""
    first = {id(p): n for n, p in model.named_parameters()}     # one name per tensor
    mods = list(model.named_modules())
    last = max((i for i, (_, m) in enumerate(mods) if isinstance(m, VMAP_WRONG_SECOND_ORDER)),
               default=-1)
    before = {id(p) for _, m in mods[:last + 1] for p in m.parameters(recurse=False)}
    return {first[id(p)] for _, m in mods[last + 1:] for p in m.parameters(recurse=False)
            if id(p) not in before}


def _head_after_norms(model: nn.Module, adapter: SGDAdapter) -> set[str]:
    """The head whose inner gradient skips the norm layers' double backward: the model's
    default head (``default_head``: its ``head`` ``nn.Linear``, else its last one), and the
    head the learner was given as far as it is registered after those layers
    (``registered_after_norms``: a named output layer, or one of a model without an
    ``nn.Linear``); less any tensor that is also a parameter outside it (a tied input
    embedding runs before them)."""
    head = set(default_head(model) or []) | (set(adapter.head or [])
                                             & registered_after_norms(model))
    names: dict[int, set[str]] = {}
    for n, p in model.named_parameters(remove_duplicate=False):
        names.setdefault(id(p), set()).add(n)
    first = dict(model.named_parameters())
    return {n for n in head if n in first and not names[id(first[n])] - head}


# the autograd nodes of torch's fused normalisation kernels (``VMAP_WRONG_SECOND_ORDER``'s,
# and ``F.layer_norm`` / ``F.batch_norm`` / ``F.instance_norm`` called in a forward):
# NativeLayerNormBackward0, NativeBatchNormBackward0, CudnnBatchNormBackward0, ...
_WRONG_NODE = re.compile(r"(Batch|Layer)Norm")


@dataclass(frozen=True)
class InnerGraph:
    """What one task's support loss at theta_0 differentiates through
    (``probe_inner_graph``).

    Attributes:
        norms: torch's normalisation operation (``"layer_norm"``, ``"batch_norm"``, the
            kernel of ``instance_norm`` too) -> the adapted names whose inner gradient runs
            through its backward, so that second order takes its double backward.
        unused: the adapted names the support loss does not use (zero inner gradient).
    """

    norms: dict[str, list[str]]
    unused: list[str]


def _op_name(node: str) -> str:
    return "layer_norm" if "LayerNorm" in node else "batch_norm"


def probe_inner_graph(adapter: SGDAdapter, net: Params, sx: torch.Tensor,
                      sy: torch.Tensor, vmapped: bool = False) -> InnerGraph:
    """One forward pass of one task's support set from ``adapter.start``, with only the
    adapted tensors requiring grad, and a walk of its autograd graph (no backward pass).
    ``vmapped``: the forward pass runs under ``vmap`` (over this one task), as the vmapped
    meta-gradient runs it: a model may take other kernels there (metaloop's ``BatchNorm``
    takes plain arithmetic, whose double backward is exact).

    The graph holds exactly the operations between the support loss and the adapted
    tensors, i.e. those whose backward the inner gradient runs: a torch normalisation
    kernel there is one whose double backward second order takes (whether a module of the
    model or ``F.layer_norm`` called inline), one before a head that alone adapts is not.
    The random state and the model's buffers are left as they were (dropout draws, a
    BatchNorm's running statistics). Raises what the forward pass raises.
    """
    names = set(adapter.names)
    with gradients_on(), state_kept(adapter.model, net):
        start = adapter.start({n: t.detach() for n, t in net.items()}, sy)
        probe = {n: t.detach().requires_grad_(n in names) for n, t in start.items()}

        def support_loss(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
            return adapter.loss_fn(adapter.fwd(probe, x), y)
        loss = vmap_tasks(support_loss, sx[None], sy[None]).sum() if vmapped \
            else support_loss(sx, sy)
    leaf = {id(t): n for n, t in probe.items() if n in names}
    root = loss.grad_fn
    reach: dict = {}                     # node -> the adapted names below it
    stack = [(root, False)] if root is not None else []
    while stack:                         # post-order, iterative (deep nets)
        node, done = stack.pop()
        if node in reach:
            continue
        children = [c for c, _ in node.next_functions if c is not None]
        if not done:
            stack.append((node, True))
            stack.extend((c, False) for c in children if c not in reach)
            continue
        found = {leaf[id(v)]} if id(v := getattr(node, "variable", None)) in leaf else set()
        for c in children:
            found |= reach[c]
        reach[node] = found
    norms: dict[str, list[str]] = {}
    for node, below in reach.items():
        if below and _WRONG_NODE.search(type(node).__name__):
            op = norms.setdefault(_op_name(type(node).__name__), [])
            op.extend(n for n in adapter.names if n in below and n not in op)
    used = reach.get(root, set())
    return InnerGraph(norms, [n for n in adapter.names if n not in used])


def vmap_second_order_refusal(model: nn.Module, adapter: SGDAdapter,
                              owner: str = "MAML") -> str | None:
    """Why second-order MAML under ``vmap`` would give a wrong meta-gradient, or None.

    Under ``torch.func.vmap`` the double backward of torch's built-in BatchNorm, InstanceNorm
    and LayerNorm is silently wrong (float64 relative errors of 6e-5 to 0.67 against the
    per-task loop, growing with the inner steps). The inner gradient of a parameter at or
    before such a layer goes through that double backward; the head's (ANIL) does not. The
    head is ``_head_after_norms``: a head named to take in more (``head=lambda n: True``)
    is refused as MAML on all is.

    Returns:
        The message naming the layers and the adapted parameters beyond the head, or None;
        it names the learner as ``owner`` ("MAML", or "ANIL" for one built by ``ANIL``).
    """
    layers = vmap_wrong_norms(model)
    if not layers:
        return None
    head = _head_after_norms(model, adapter)
    beyond_head = [n for n in adapter.names if n not in head]
    if not beyond_head:
        return None
    return (f"{owner}(batching='vmap', first_order=False) would give a wrong meta-gradient: "
            f"torch's double backward of {', '.join(layers)} is wrong under vmap "
            f"(pytorch/functorch#534), and the inner loop adapts {beyond_head[:3]}"
            f"{' ...' if len(beyond_head) > 3 else ''} beyond the head; use batching='loop' "
            f"or 'auto', first_order=True, or layers whose double backward vmap gets right: "
            f"metaloop.models.conv4.BatchNorm for a BatchNorm (batch statistics only), "
            f"nn.GroupNorm or nn.RMSNorm for a LayerNorm or InstanceNorm")


def used_head_hint(net: nn.Module, unused: list[str]) -> str:
    """``" (e.g. head=[...])"`` naming the parameters of ``net``'s last ``nn.Linear`` that the
    forward pass uses (none of its tensors in ``unused``), or ``""`` where there is none."""
    others = [n for n, m in net.named_modules() if isinstance(m, nn.Linear)
              and not any(f"{n}.{k}" in unused for k, _ in m.named_parameters())]
    if not others:
        return ""
    layer = net.get_submodule(others[-1])
    return f" (e.g. head={[f'{others[-1]}.{k}' for k, _ in layer.named_parameters()]})"


def head_origin(net: nn.Module, head: list[str], named: list[str] | None) -> str:
    """Where the head ``head`` (names) that a message names came from, in parentheses:
    the names given with ``head=`` (``named``, None where none were), the model's output
    layer within them (what ``head_init="zero"`` zeroes of a larger head named), or the
    model's default head (``default_head``); ``""`` where it is none of these."""
    default = default_head(net) if isinstance(net, nn.Module) else None
    if named is not None and head == named:
        return " (named with head=)"
    if head != default:
        return ""
    linears = [n for n, m in net.named_modules() if isinstance(m, nn.Linear)]
    layer = ("the model's nn.Linear named head" if linears and linears[-1] != "head"
             and isinstance(getattr(net, "head", None), nn.Linear)
             else "the model's last nn.Linear")
    if named is not None:
        return f" ({layer}, the output layer of the head named with head=)"
    return f" ({layer}, taken by default)"


def unused_zero_head(owner: str, head: list[str], named: list[str] | None, net: nn.Module,
                     unused: list[str]) -> str | None:
    """The refusal of ``head_init="zero"`` on a head (``head``; ``named``: the names given
    with ``head=``, or None) that the forward pass never uses (every tensor of it in
    ``unused``): zeroing it would change nothing, and the real output layer would keep its
    learned start without a word. None where the forward uses some of it (MAML, Reptile)."""
    if not head or not all(n in unused for n in head):
        return None
    return (f"{owner}(head_init='zero') starts the head {head}"
            f"{head_origin(net, head, named)} at zero on every task, but the model's forward "
            f"never uses it: zeroing it would change nothing and the output layer would keep "
            f"its learned start; name the output layer's parameters with head=[...]"
            f"{used_head_hint(net, unused)}")


class MAML(AdaptsBySGD):
    """Model-agnostic meta-learning over any parameter subset.

    The meta-loss is the mean over tasks of the query loss L~_i(theta_i'), theta_i' = the
    result of ``inner_steps`` SGD steps on the support loss L_i from theta_0. The default
    path is ``maml_meta_gradient``; the flags below choose how it is executed, not what it
    computes.

    Args:
        model: the network (its parameters are theta_0).
        inner_lr: inner SGD step size (alpha).
        inner_steps: inner steps at training.
        first_order: drop second derivatives (first-order MAML).
        loss: "mse" or "ce" (or a callable).
        adapt: predicate or names of the parameters adapted in the inner loop (default all).
        head_init: "learned" or "zero" (see ``SGDAdapter``).
        head: keyword only; with ``head_init="zero"``, the predicate or names of the head's
            parameters, which start each task at zero (they must adapt). Default the
            model's ``head`` ``nn.Linear``, else its last one; a model whose output layer is
            no ``nn.Linear`` (a 1x1 convolution, a bare ``nn.Parameter``) names it here.
        batching: how the tasks of a meta-batch run: "loop" (one task's graph at a time:
            least memory, fastest for conv nets on the CPU), "vmap" (all tasks at once with
            ``torch.func.vmap``: much faster for small MLPs), "threads" (the loop, its tasks
            spread over ``torch.get_num_threads()`` CPU threads of one intra-op thread each:
            1.02-1.2x faster than the loop for Conv4 on 2 cores, for one more task's graph
            in memory per extra thread; runs inline with 1 thread or off the CPU; models
            without buffers, and without dropout in training mode, only; ``meta_gradient``
            only, ``meta_loss`` loops), or "auto"
            (vmap for models without convolutions, normalisation layers, dropout in
            training mode or recurrent layers, else loop; second order: the loop from the
            first meta-batch on where that batch finds torch's layer_norm, batch_norm or
            instance_norm kernel in the inner gradient, called in ``forward`` or by a module
            of the user's own, whose double backward is wrong under vmap,
            ``probe_inner_graph``; and the loop from the first call that vmap cannot run
            exactly: a forward that draws random numbers or changes a buffer in place, a
            dropout layer switched to training mode since construction,
            ``_common.vmap_guard``, the call itself then run on the loop). See
            docs/benchmarks.md.
        recompute_inner_loop: recompute each inner step's activations in the backward pass
            instead of keeping them: only theta at each step is stored, so memory grows with
            the steps by one parameter set each, not by one step's activations (second
            order; first order keeps no activations across steps anyway). Costs about one
            more forward and gradient pass per step. Needs the loop batching: "auto" picks
            it. None (the default): not given, which is False unless ``checkpoint`` says
            otherwise.
        compile: run meta-training's tasks through ``torch.compile`` (a C++ compiler
            needed on the CPU: without a working one the first compiled call raises
            RuntimeError saying so). With ``batching="vmap"`` (and "auto" where it picks
            vmap: small MLPs; ``metaloop train --device cuda`` picks it for the other
            models too, except second-order MAML on a model with torch's BatchNorm,
            InstanceNorm or LayerNorm layers and ``recompute_inner_loop``, which keep the
            loop: ``metaloop.build.batching_on``) the whole
            vmapped meta-loss is one compiled function: every task's inner loop and query
            pass, and their backward, second order included
            (``_strategies.compiled_vmapped_losses``): 0.62-0.69x the eager time per
            sinusoid iteration on the CPU, exact to float rounding (float64: 1e-15), for
            one compile (not timed for the sinusoid; more with more inner steps) and one
            more for each new meta-batch shape. Torch compiles one function at most
            ``torch._dynamo.config.recompile_limit`` times (8), then runs it eager (the
            same numbers, slower). Where torch's ``torch.compile`` takes
            ``isolate_recompiles`` (2.13 does), each learner counts its own compiles (a new
            learner of a sweep over inner_lr, inner_steps, loss or order compiles afresh),
            with ``torch._dynamo.config.accumulated_recompile_limit`` (256) over the whole
            process; with an older torch the count is per process, shared by every
            learner and setting, so the ninth learner of a sweep runs eager. A learner
            that falls back warns once (``_strategies.RecompileLimitWarning``). For a
            sweep in one process, raise ``torch._dynamo.config.recompile_limit`` (and
            ``accumulated_recompile_limit``), or start afresh between settings with
            ``torch._dynamo.reset()``. The compiled functions are built on first use
            and are not part of a pickled, saved or copied learner, which compiles its
            own. With the loop, each
            task's query forward pass (and so its backward): the query loss is
            differentiated once (to theta'; the eager support graph carries the second
            order), so it is exact to float rounding, with one exception: under max
            pooling, a rounding difference of the fused kernels can change which input of a
            near-tied window wins, moving that input's share of the first convolution's
            weight gradient (float32: 3e-3 of the largest gradient entry on the max-pool
            Conv4, against 2e-6 eager; float64: equal). There it costs one compile (15.6 s
            for the stride Conv4, 18.7 s for the max-pool one, ``bench_compile.py`` on one
            CPU thread) and gains more on the max-pool Conv4 than on the stride-2 one, and a whole
            iteration little. ``benchmarks/bench_maml.py`` and ``bench_compile.py`` measure
            both (docs/benchmarks.md). Not with ``batching="threads"``; adaptation at test
            time (``adapt``, ``predict``) stays eager.
        learn_lr: meta-learn the inner step sizes, one per adapted tensor and inner step
            (MAML++'s LSLR; ``metaloop.adapt.learned_lr``), all starting at ``inner_lr``.
            ``self.model`` is then an ``InnerLRs`` wrapper: the network as ``net.*`` plus
            ``inner_lr`` ``[inner_steps, adapted tensors]``, column j the j-th adapted tensor
            in ``named_parameters()`` order (not the order ``adapt`` lists them in;
            ``self.model.columns`` names the columns); ``self.net`` is the network.
            Test-time steps past ``inner_steps`` reuse the last step's sizes.
        checkpoint: the older name of ``recompute_inner_loop`` (still accepted; giving both
            with different values is refused).

    Raises:
        ValueError: ``model`` not an ``nn.Module``; ``inner_lr`` not a number > 0;
            ``inner_steps`` not an int >= 1; an unknown ``loss`` name or a loss that is not
            callable; an unknown ``batching`` or ``head_init``; ``adapt`` naming parameters
            the model does not have; ``first_order``, ``recompute_inner_loop``,
            ``compile`` or ``learn_lr`` not True or False; a model parameter with
            ``requires_grad=False`` or a lazy module's uninitialised one
            (``check_meta_parameters``); ``head_init="zero"`` on a head tied to another
            layer (it would zero that layer too);
            ``recompute_inner_loop=True`` with ``batching="vmap"``; second order
            with ``batching="vmap"`` for a model with torch's BatchNorm, InstanceNorm or
            LayerNorm layers when more than the head adapts (``vmap_second_order_refusal``),
            and, at the first ``meta_gradient`` / ``meta_loss``, for a model whose inner
            gradient runs through torch's layer_norm / batch_norm / instance_norm kernels
            called otherwise (``F.layer_norm`` in ``forward``, a module wrapping it);
            with ``head_init="zero"``, at first use, a head whose zeroing breaks the forward
            pass (a hidden layer taken as the head);
            ``batching="vmap"`` for a model with torch BatchNorm layers that update running
            statistics or with dropout layers, in training mode (``_common.vmap_refusal``);
            ``compile=True`` with ``batching="threads"``; ``batching="threads"`` for a model
            with buffers or (also when the meta-gradient is taken) with dropout layers in
            training mode; ``learn_lr=True`` with
            ``recompute_inner_loop=True``; ``checkpoint`` and ``recompute_inner_loop`` both
            given, with different values; ``head`` with ``head_init="learned"`` (it only
            says what ``"zero"`` zeroes), or ``head_init="zero"`` without ``head`` for a
            model without an ``nn.Linear``.
    """

    meta_trains = True

    def __init__(self, model: nn.Module, inner_lr: float = 0.01, inner_steps: int = 1,
                 first_order: bool = False, loss="mse", adapt=None, head_init="learned",
                 batching: str = "auto", recompute_inner_loop: bool | None = None,
                 compile: bool = False, learn_lr: bool = False, checkpoint: bool | None = None,
                 *, head=None):
        first_order = check_flag("first_order", first_order)
        given = recompute_inner_loop is not None        # None: not given (False)
        recompute_inner_loop = check_flag("recompute_inner_loop", recompute_inner_loop) \
            if given else False
        compile = check_flag("compile", compile)
        learn_lr = check_flag("learn_lr", learn_lr)
        flag, owner = "recompute_inner_loop", self._owner    # "ANIL" when ANIL builds it
        if checkpoint is not None:          # the older name; the messages use the one given
            checkpoint = check_flag("checkpoint", checkpoint)
            if given and checkpoint != recompute_inner_loop:
                raise ValueError(f"{owner}(checkpoint={checkpoint}, recompute_inner_loop="
                                 f"{recompute_inner_loop}) conflict: checkpoint is the older "
                                 f"name of recompute_inner_loop; give only "
                                 f"recompute_inner_loop")
            recompute_inner_loop, flag = checkpoint, "checkpoint"
        recompute = bool(recompute_inner_loop)
        self.net = self.model = model
        self.first_order = bool(first_order)
        self.inner = SGDAdapter(model, loss, inner_lr, inner_steps, adapt, head_init,
                                head=zero_head(owner, head, head_init),
                                checkpoint=recompute)
        # the head as named with head= (None: the default), which the messages about the
        # head read (``_head_origin``); ANIL records its own named head over it
        self._head_named = None if head is None else list(self.inner.head or [])
        if learn_lr and recompute:
            raise ValueError(f"{owner}(learn_lr=True, {flag}=True) is not supported: the "
                             f"recomputed inner step takes a fixed step size (checkpoint)")
        if learn_lr:
            self.model = InnerLRs(model, len(self.inner.names), inner_steps, inner_lr,
                                  columns=self.inner.names)
        # the model and what adapts are fixed: found once, raised whenever vmap would run
        self._vmap_refusal = vmap_padding_refusal(model, self.inner, owner) or (
            None if self.first_order else vmap_second_order_refusal(model, self.inner, owner))
        if batching == "vmap" and self._vmap_refusal:
            raise ValueError(self._vmap_refusal)
        self.batching = resolve_batching(batching, model, threads=True)
        if batching == "auto" and self._vmap_refusal:
            self.batching = "loop"              # vmap would be wrong for good: the loop
        # a compiled module the inner loop adapts within (its double backward is taken); a
        # compiled body before an adapted head (ANIL) is differentiated once, as usual
        adapted = adapted_tensors(model, self.inner)
        compiled = [n or "the model" for n, m in model.named_modules()
                    if type(m).__name__ == "OptimizedModule"
                    and any(id(p) in adapted for p in m.parameters())]
        if compiled and not self.first_order and self.batching != "vmap":
            raise ValueError(
                f"{owner}(first_order=False, batching={self.batching!r}) cannot differentiate "
                f"through {', '.join(compiled[:3])}, a torch.compile'd module: torch.compile "
                f"has no double backward, which the second-order meta-gradient takes on the "
                f"per-task loop; pass the module uncompiled (and compile=True, which compiles "
                f"what metaloop can), or first_order=True"
                + ("" if self._vmap_refusal else ", or batching='vmap'"))
        if recompute and batching == "vmap":
            raise ValueError(f"{owner}({flag}=True, batching='vmap') is not supported: the "
                             f"recomputed inner step has no vmap rule; use batching='loop' "
                             f"or 'auto'")
        if compile and batching == "threads":
            raise ValueError(f"{owner}(compile=True) compiles the looped query pass on one "
                             f"thread, or the vmapped tasks; use batching='loop', 'vmap' or "
                             f"'auto', not 'threads'")
        if recompute and batching == "auto":
            self.batching = "loop"
        self.recompute_inner_loop = recompute
        self.compile = bool(compile)
        # the compiled functions, built from self on first use (``_compiled_query``,
        # ``_vmapped``) and left out of pickles and copies (``__getstate__``)
        self._query_fwd = None                      # the compiled query pass (the loop)
        self._compiled_vmap: dict[bool, object] = {}    # first_order -> compiled vmapped tasks
        self._replicas: list[SGDAdapter] = []     # one per extra thread (batching="threads")
        # "auto" that chose vmap: falls back to the loop where the first second-order call
        # finds a normalisation kernel in the inner gradient (``_first_use``)
        self._auto_vmap = batching == "auto" and self.batching == "vmap"
        # ``probe_inner_graph``'s findings, made on first use, by whether vmap runs the model
        self._inner_graph: dict[bool, InnerGraph] = {}

    def _first_use(self, sx: torch.Tensor, sy: torch.Tensor, second_order_vmap: bool) -> None:
        """The checks that need a task, made on one task's support set (``sx [S, ...]``,
        ``sy``) once per learner (``probe_inner_graph``: one forward pass, no backward),
        where they apply: ANIL, a zero head, a second-order vmapped meta-gradient.

        * ANIL: a head the forward pass does not use is refused (it would get no inner
          gradient: meta-training without adaptation).
        * ``head_init="zero"``: a forward pass that fails with the zeroed head only says
          which layer was taken as the head and how to name the output layer.
        * second order under vmap: torch's layer_norm / batch_norm / instance_norm kernels
          (modules or ``F.*`` calls in ``forward``) in the inner gradient's graph have a
          double backward that is wrong under vmap: "auto" falls back to the loop, for
          this call and after (``batching`` becomes "loop"); "vmap" is refused, naming
          them. A head that alone adapts after them (ANIL) runs none of their backward.

        Raises:
            ValueError: as above.
        """
        anil, zero = self._owner == "ANIL", self.inner.head_init == "zero"
        if not (anil or zero or second_order_vmap):
            return
        vmapped = self.batching == "vmap"        # the kernels the model takes there
        graphs = self.__dict__.setdefault("_inner_graph", {})
        graph = graphs.get(vmapped)
        if graph is None:
            if vmapped and (self._vmap_refusal or vmap_refusal(self.net)):
                return                                  # vmap cannot run it: _vmapped says
            if sx.is_cuda and torch.cuda.is_current_stream_capturing():
                return      # a CUDA graph records the step: its warm-up steps have probed
            net, _ = split_lrs(self.model, dict(self.model.named_parameters()))
            try:
                graph = probe_inner_graph(self.inner, net, sx, sy, vmapped)
            except VmapUnsupported:
                # vmap cannot run the forward at all: the call says so ("vmap"), or "auto"
                # switches to the loop and probes there when it runs the call again
                return
            except (ValueError, RuntimeError) as e:
                if zero:
                    self._zero_head_failure(net, sx, sy, e)
                # not probed: the call itself fails on this input, with its own checks'
                # message (labels beyond the outputs under vmap, a wrong input shape)
                return
            graphs[vmapped] = graph
        if anil and graph.unused:
            raise ValueError(self._unused_head(graph.unused))
        if anil or zero:               # one more forward pass, once per learner, outside vmap
            self._check_late_head(sx)
        refusal = unused_zero_head(self._owner, list(self.inner.head or []),
                                   getattr(self, "_head_named", None), self.net,
                                   graph.unused) if zero and not anil else None
        if refusal:
            raise ValueError(refusal)
        if second_order_vmap and graph.norms:
            if getattr(self, "_auto_vmap", False):
                self.batching = "loop"
                return
            ops = ", ".join(graph.norms)
            adapted = list(dict.fromkeys(n for v in graph.norms.values() for n in v))
            raise ValueError(
                f"{self._owner}(batching='vmap', first_order=False) would give a wrong "
                f"meta-gradient: the model's forward runs torch's {ops} (F.layer_norm, "
                f"F.batch_norm or F.instance_norm, in forward or a module of its own), whose "
                f"double backward is wrong under vmap (pytorch/functorch#534), and the inner "
                f"gradient of {adapted[:3]}{' ...' if len(adapted) > 3 else ''} runs "
                f"through it; use batching='loop' or 'auto' (the loop for such a model), "
                f"first_order=True, or metaloop.models.conv4.BatchNorm")

    def _head_origin(self, head: list[str]) -> str:
        """``head_origin`` for this learner's network and the names given with ``head=``
        (ANIL records them as ``_head_named``)."""
        return head_origin(self.net, head, getattr(self, "_head_named", None))

    def _unused_head(self, unused: list[str]) -> str:
        """ANIL's message for a head (``unused`` of it) that the forward pass never uses."""
        head = list(self.inner.names)
        hint = used_head_hint(self.net, unused)
        return (f"ANIL adapts the head {head}{self._head_origin(head)}, but the model's "
                f"forward never uses {unused[:3]}{' ...' if len(unused) > 3 else ''}: it "
                f"would get no inner gradient, and ANIL would meta-train without adapting; "
                f"name the output layer's parameters with head=[...]{hint}")

    def _zero_head_failure(self, net: Params, sx: torch.Tensor, sy: torch.Tensor,
                           error: Exception) -> None:
        """ValueError from ``error`` where the forward pass fails with the zero head of
        ``head_init="zero"`` but runs with the model's own: the head taken is no output
        layer (a hidden ``nn.Linear`` registered last, say). Returns otherwise."""
        try:
            with gradients_on():
                self.inner.fwd({n: t.detach() for n, t in net.items()}, sx)
        except (ValueError, RuntimeError):
            return                                      # not the head's doing
        head = list(self.inner.head or [])
        ways = self.inner.start({n: t.detach() for n, t in net.items()}, sy)[head[0]].shape[0]
        raise ValueError(f"{self._owner}(head_init='zero') took {head}"
                         f"{self._head_origin(head)} as the head "
                         f"and started it at zero with {ways} rows (one per class of the "
                         f"task), but the forward pass fails with it, so it is no output "
                         f"layer: name the output layer's parameters with head=[...] "
                         f"({error})") from error

    def __getstate__(self) -> dict:
        """The learner without its compiled functions: torch's are tied to this learner's
        own network (a copy would run the original's) and cannot be pickled; a copy or an
        unpickled learner compiles its own on first use."""
        state = self.__dict__.copy()
        state["_query_fwd"] = None
        state["_compiled_vmap"] = {}
        return state

    def _check_compiler(self, x: torch.Tensor) -> None:
        """RuntimeError with the advice, instead of inductor's traceback at the first
        compiled call, when ``x`` is on the CPU and no C++ compiler works there."""
        if x.device.type == "cpu":
            problem = cpu_compiler_problem()
            if problem:
                raise RuntimeError(f"{self._owner}(compile=True) "
                                   f"{compiler_advice(problem, 'compile=False')}")

    def _compiled_query(self, x: torch.Tensor):
        """The compiled query pass of the loop (built on first use), or None without
        ``compile``; ``x``: the query inputs, to check the compiler on the CPU."""
        if not self.compile:
            return None
        self._check_compiler(x)
        if self._query_fwd is None:
            self._query_fwd = compiled(self.inner.fwd, self._owner)
        return self._query_fwd

    def _inner_loop(self, adapter: SGDAdapter, lrs) -> InnerLoop | None:
        """None (the written-out SGD of ``maml_meta_gradient``) unless a flag or ANIL's
        head-only path needs ``SGDAdapter.run``'s inner loop."""
        plain = not adapter.checkpoint and lrs is None and adapter.path_fn is None
        return None if plain else sgd_inner_loop(adapter, self.first_order, lrs)

    def _vmapped(self, batch: TaskBatch, params: Params, first_order: bool):
        """The vmapped meta-loss and metrics. Raises ``VmapUnsupported`` where vmap cannot
        run the model now: with "auto" batching the learner has then switched to the loop
        (``vmap_guard``), and ``meta_loss`` / ``meta_gradient`` run again there."""
        if self._vmap_refusal:              # fixed with the model: the message as it was
            raise ValueError(self._vmap_refusal)
        with vmap_guard(self, self.net):
            # also when ``batching`` was set after construction (or the layers' mode changed)
            refusal = vmap_refusal(self.net)
            if refusal:
                raise VmapUnsupported(refusal)
            net, lrs = split_lrs(self.model, params)
            fused = None
            if self.compile:
                self._check_compiler(batch.query_x)
                fused = self._compiled_vmap.get(first_order)
                if fused is None:
                    fused = self._compiled_vmap[first_order] = compiled_vmapped_losses(
                        self.inner, first_order, self._owner)
            return vmapped_meta_loss(self.inner, net, batch, first_order, lrs, fused)

    def adapt_path(self, support_x, support_y, steps: int | None = None):
        """Yield one task's detached params after 0..steps inner SGD steps, as
        ``AdaptsBySGD.adapt_path``; ANIL and a zero head first check the model on the task
        once per learner (``_first_use``).

        Args:
            support_x: one task's support inputs ``[S, ...]``.
            support_y: its int64 class labels ``[S]`` or float targets ``[S, out]``.
            steps: inner steps; None: ``inner_steps``.

        Returns:
            an iterator over ``steps + 1`` detached params dicts (name -> tensor for every
            parameter of the network; with ``learn_lr``, of ``self.net``).

        Raises:
            ValueError: when called, as ``AdaptsBySGD.adapt_path``: a support set that is
                not one task's (``[B, S, ...]`` with a built-in loss: "MAML adapts to ONE
                task"), empty, of another length than its labels, in another float dtype
                or on another device than the model, or with NaN or inf; class labels with
                ``loss="mse"`` (float targets with ``"ce"``); ``steps`` not None or an
                int >= 0; and, once per learner, ANIL's head unused by the forward pass, or
                a ``head_init="zero"`` head whose zeroing breaks the forward pass. When a
                step runs: labels outside ``[0, C)`` (C: the model's outputs); a loss of
                the user's own that returns anything but a 0-dim floating tensor.
        """
        path = super().adapt_path(support_x, support_y, steps)
        with gradients_on():
            self._first_use(autograd_usable(support_x), autograd_usable(support_y), False)
        return path

    def adapt_path_batched(self, support_x, support_y, steps: int | None = None):
        """As ``AdaptsBySGD.adapt_path_batched``, with ``adapt_path``'s first-use check on
        the first task."""
        if (self._owner == "ANIL" or self.inner.head_init == "zero") and \
                not getattr(self, "_inner_graph", None):       # checked as there, once
            check_inputs(self._owner, self.inner.model, support_x=support_x,
                         support_y=support_y)
            check_batched_support(self._owner, support_x, support_y)
            check_finite_tasks(self._owner, support_x=support_x, support_y=support_y)
            with gradients_on():
                self._first_use(autograd_usable(support_x[0]), autograd_usable(support_y[0]),
                                False)
        return super().adapt_path_batched(support_x, support_y, steps)

    def meta_loss(self, batch: TaskBatch) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """Mean query loss over tasks after adaptation; differentiable wrt the model params.

        The inner loop takes its gradients whatever the caller's grad mode; under
        ``torch.no_grad()`` or ``torch.inference_mode()`` the loss is the same value,
        without a graph (with either batching).

        Args:
            batch: a ``TaskBatch`` of B tasks (support ``[B, S, ...]``, query
                ``[B, Q, ...]``).

        Returns:
            ``(loss, metrics)``: the 0-dim meta-loss, and ``{"loss"}`` plus, for class
            labels, ``{"accuracy"}`` (the fraction of queries whose argmax is their label):
            detached 0-dim tensors on the model's device, means over the B tasks.

        Raises:
            ValueError: not a TaskBatch; its tensors on another device or in another float
                dtype than the model (a float64 batch for a float32 model); class labels
                with ``loss="mse"`` or float targets with ``loss="ce"``; NaN or inf in any
                of its float tensors (on the CPU, outside
                ``finite_guarded()``: ``check_finite_batch``); with
                ``loss="ce"``, labels outside ``[0, C)`` (C: the model's outputs); a loss of
                the user's own that returns anything but a 0-dim floating tensor, or that
                reads a tensor's value under vmap (``CheckedLoss``). At the first call
                (``_first_use``): ANIL's head unused by the forward pass; a
                ``head_init="zero"`` head whose zeroing breaks the forward pass; second
                order with ``batching="vmap"`` for a model whose inner gradient runs through
                torch's layer_norm / batch_norm / instance_norm kernels (``"auto"`` switches
                to the loop instead).
        """
        with math_attention(self.first_order):
            return rerun_on_loop(self, self._meta_loss, batch)

    def _meta_loss(self, batch: TaskBatch) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        params = params_of(self.model)
        batch = check_batch(batch, self.net, self.inner.loss,
                            params if self.net is self.model else None)
        check_finite_batch(self._owner, batch)
        if torch.is_grad_enabled():     # a batch made under inference_mode: copied to use
            batch = autograd_batch(batch)
            self._first_use_on(batch, self.first_order)
            return self._loss(batch, params, self.first_order)
        with gradients_on():    # the value alone: first order computes the same, then no graph
            batch = autograd_batch(batch)
            self._first_use_on(batch, True)
            loss, metrics = self._loss(batch, params, first_order=True)
        return loss.detach(), metrics

    def _first_use_on(self, batch: TaskBatch, first_order: bool) -> None:
        """``_first_use`` on the batch's first task, for a meta-loss of this order."""
        self._first_use(batch.support_x[0], batch.support_y[0],
                        self.batching == "vmap" and not first_order)

    def _loss(self, batch: TaskBatch, params: Params, first_order: bool
              ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """``meta_loss`` of a checked batch, as ``batching`` says (``threads``: the loop)."""
        if self.batching == "vmap":
            return self._vmapped(batch, params, first_order)
        net, lrs = split_lrs(self.model, params)
        adapt = sgd_inner_loop(self.inner, first_order, lrs)
        query_fwd = self._compiled_query(batch.query_x) or self.inner.fwd
        losses, metrics = [], []
        for i in range(batch.num_tasks):
            sx, sy, qx, qy = batch.task(i)
            out = query_fwd(adapt(net, sx, sy), qx)                    # [Q, out]
            loss = self.inner.loss_fn(out, qy)
            losses.append(loss)
            metrics.append(task_metrics(out, qy, loss))
        return torch.stack(losses).mean(), mean_metrics(metrics)

    def meta_gradient(self, batch: TaskBatch, with_metrics: bool = False):
        """d meta_loss / d theta_0 as name -> tensor (``maml_meta_gradient``, executed as
        ``batching`` says); with the mean query metrics if asked. The same gradients under
        ``torch.no_grad()`` and ``torch.inference_mode()`` (``gradients_on``).

        Args:
            batch: a ``TaskBatch`` of B tasks.
            with_metrics: also return the metrics.

        Returns:
            name -> gradient, each of its parameter's shape, over every parameter of
            ``self.model`` (zeros where unused); with ``with_metrics``,
            ``(grads, metrics)``, metrics as ``meta_loss``'s.

        Raises:
            ValueError: as ``meta_loss``; with ``batching="threads"``, a model with dropout
                layers in training mode.
        """
        # gradients_on only where they are off (nothing to do in a training step)
        with math_attention(self.first_order), grads_on():
            return rerun_on_loop(self, self._meta_gradient, batch, with_metrics)

    def _meta_gradient(self, batch: TaskBatch, with_metrics: bool):
        params = params_of(self.model)
        batch = autograd_batch(check_batch(batch, self.net, self.inner.loss,
                                           params if self.net is self.model else None))
        check_finite_batch(self._owner, batch)
        self._first_use_on(batch, self.first_order)
        if self.batching == "vmap":
            loss, metrics = self._vmapped(batch, params, self.first_order)
            tensors = list(params.values())
            g = torch.autograd.grad(loss, tensors, allow_unused=True)
            total = grads_to_dict(params, g, params)
            return (total, metrics) if with_metrics else total
        net, lrs = split_lrs(self.model, params)
        query_fwd = self._compiled_query(batch.query_x)

        def run(adapter: SGDAdapter, tasks: Sequence[int]) -> TaskGradients:
            return maml_meta_gradient(
                adapter, params, batch, first_order=self.first_order, tasks=tasks, net=net,
                inner_loop=self._inner_loop(adapter, lrs),
                query_fwd=query_fwd if adapter is self.inner else None)

        if self.batching == "threads":
            check_threadable(self.net)       # also for dropout switched on since construction
            extra = workers_for(self.net, batch.num_tasks) - 1
            adapters = [self.inner, *replicas(self.inner, extra, self._replicas)]
            total, per_task = on_threads(run, batch.num_tasks, adapters)
        else:
            total, per_task = run(self.inner, range(batch.num_tasks))
        metrics = mean_metrics([m for _, m in per_task])
        return (total, metrics) if with_metrics else total

"""MAML on Omniglot (or sinusoid regression), metaloop side by side with a plain loop and the
peers.

The base configuration: Conv4 (64 filters, 3x3 conv + BatchNorm on batch statistics + ReLU +
2x2 max-pool, 28x28 input), 5-way 1-shot, 15 queries per class, meta-batch 32, 1 inner SGD
step at 0.4, second order, Adam outer step (lr 1e-3). One iteration = one meta-gradient and
one Adam step; sampling the batch is not timed.

``--model sinusoid``: the MAML paper's sinusoid regression instead, where per-task Python
overhead, not convolutions, decides the speed: an MLP 1-40-40-1 with ReLU, 10 support and 10
query points per task, meta-batch 25, 1 inner SGD step at 0.01, Adam (lr 1e-3), MSE loss
(``--shots``, ``--queries``, ``--meta-batch``, ``--inner-lr`` and ``--hidden``, the MLP's
width, change it; ``--ways``, ``--pool``, ``--anil``, ``--data`` and ``--random-data`` are
Conv4's and refused).

Implementations (``--only`` picks some):
  - ``metaloop``: ``metaloop.meta.MAML`` / ``ANIL`` with its default ``batching="auto"``:
    for Conv4 the loop, one task after another, each on ``--threads`` intra-op threads; for
    the sinusoid MLP ``vmap`` over the tasks; on CUDA ``vmap``, as ``metaloop train --device
    cuda`` runs it (the loop with ``recompute_inner_loop``). The reference of the ratios;
  - ``metaloop-loop``: the same with ``batching="loop"`` named (timed by default for the
    sinusoid, where it shows what ``vmap`` gains; on the CPU's Conv4 it is ``metaloop``);
  - ``metaloop-threads``: the same with ``batching="threads"``: the tasks spread over
    ``--threads`` threads of one intra-op thread each;
  - ``metaloop-ckpt``: ``metaloop`` with ``recompute_inner_loop=True`` (with ``--checkpoint``);
  - ``metaloop-compile`` (timed by default for the sinusoid; for Conv4 only when named in
    ``--only``): ``metaloop`` with
    ``compile=True``: for the sinusoid MLP (vmap) the whole vmapped meta-loss and its
    backward as one ``torch.compile``'d function, for Conv4 (the loop) each task's query
    pass; compiled in the warm-up iterations, not timed (give ``--warmup`` 2 or more);
  - ``plain``: a per-task ``torch.autograd.grad`` loop written here (the reference);
  - ``plain-cl`` (only when named in ``--only``): the same loop with its image batches in
    the channels-last layout (``metaloop.func.params.channels_last``) that metaloop used on
    the CPU in earlier versions and dropped as inexact in float32, to show what that layout is
    worth;
  - ``baseline`` (with ``--baseline DIR``): ``metaloop`` as it is in another source tree, e.g.
    the commit before a change, unpacked by ``git archive COMMIT src | tar -x -C /tmp/base``
    and given as ``--baseline /tmp/base/src``; its processes (and its gradient check) run
    with ``PYTHONPATH=DIR``, so they use that tree's metaloop and models;
  - ``learn2learn``, ``higher``, ``torchopt``: only if importable (a note says why not).
    Install them with ``bash benchmarks/setup_peers.sh`` and run this script with that venv's
    python. Each runs the tasks one after another in Python, as its examples do:
    learn2learn ``MAML.clone()`` / ``adapt``, higher ``innerloop_ctx``, TorchOpt
    ``MetaSGD`` (first order: its functional ``torchopt.sgd``, since ``MetaSGD`` always
    differentiates through its step; higher: ``track_higher_grads=False``); higher and
    TorchOpt run full MAML only, not ANIL;
  - ``torchopt-vmap`` (full MAML, timed by default): TorchOpt's own batched path, as its
    ``examples/FuncTorch/maml_omniglot_vmap.py`` writes it: ``torchopt.sgd`` on a params
    dict inside ``torch.func.grad``, ``torch.func.vmap`` over the tasks (Conv4's BatchNorm
    on each task's batch statistics, as metaloop's);
  - ``torchopt-vmap-compile`` (full MAML; timed by default for the sinusoid, for Conv4 only
    when named in ``--only``): that function, the vmapped meta-loss, through
    ``torch.compile`` as a user would wrap it (compiled in the warm-up, like
    ``metaloop-compile``), so that metaloop's compiled path is set beside the peer's
    compiled the same way.

First, every implementation's meta-gradient is compared with metaloop's, in float64 on a
small batch (``--check-tasks``) from the same seed: one that differs by more than 1e-5
(relative to the largest gradient entry) is reported as wrong and not timed. Then all are
timed in this one process: ``--warmup`` iterations each, then ``--reps`` x ``--iters``
rounds of one iteration of each implementation in turn (each round starting one further on),
so that a slow phase of a shared machine falls on all of them alike (``baseline``, another
source tree, is timed in ``--reps`` processes of its own). The memory is measured apart: each
implementation in a process of its own (so its peak RSS is its own) over ``--warmup`` and up
to 3 iterations. It prints the median seconds per iteration (milliseconds for the sinusoid),
the ratios to metaloop, the peak RSS, the RSS after the set-up and their difference, the
iterations' own memory (peaks less than 5 MiB apart are level).

    python benchmarks/bench_maml.py                         # base configuration
    python benchmarks/bench_maml.py --first-order
    python benchmarks/bench_maml.py --steps 5
    python benchmarks/bench_maml.py --ways 20 --meta-batch 16 --steps 5 --inner-lr 0.1
    python benchmarks/bench_maml.py --anil
    python benchmarks/bench_maml.py --pool stride --only metaloop,metaloop-compile,plain
    python benchmarks/bench_maml.py --ways 20 --shots 5 --queries 5 --meta-batch 4 \\
        --steps 10 --inner-lr 0.1 --checkpoint --only metaloop,metaloop-ckpt
    python benchmarks/bench_maml.py --model sinusoid --threads 1 --iters 200 --warmup 5 --reps 5

``--records DIR`` writes one record per timed implementation, for the ``benchmarks-maml``
table of docs/benchmarks.md ``DIR/benchmarks_maml_{first,second}_order_{maml,anil}_<name>.json``
and for its ``benchmarks-maml-sinusoid`` table
``DIR/benchmarks_maml_sinusoid_{first,second}_order_mb<meta-batch>_<name>.json``; the folder
is checked before any work. With ``--device cuda`` the records are the GPU's, named
``DIR/benchmarks_maml_gpu_...`` for the ``benchmarks-maml-gpu`` and
``benchmarks-maml-sinusoid-gpu`` tables, so that they never replace the CPU's. The records
are of the base configuration (any order, ANIL or not, and the sinusoid's meta-batch): with
any other setting (``--steps 5``, ``--pool stride``, ...) ``--records`` is refused, since
the record would replace the base's.

On a GPU (``--device cuda``): every implementation runs on the GPU with TF32 off; metaloop
batches its tasks with ``vmap`` (``batching="auto"`` on CUDA), ``metaloop-threads`` is
skipped (CPU threads), each timed iteration ends with ``torch.cuda.synchronize()``, and the
peak is the GPU memory allocated (``torch.cuda.max_memory_allocated``) over the iterations
instead of the RSS. The meta-gradient check runs in float64 on the GPU. The protocol's
configuration is the MAML paper's Omniglot net:

    python benchmarks/bench_maml.py --device cuda --pool stride --only \
        metaloop,plain,learn2learn,higher,torchopt --iters 20 --reps 3

A GPU machine with no network gets the peers as files in the checkout:
``bash benchmarks/peers_wheelhouse.sh`` writes ``runs/peers`` here (wheels for its Python,
learn2learn's source), and ``benchmarks/gpu_session.sh --part peers`` installs them there and
runs the line above with ``PYTHONPATH`` pointing at them; a peer that does not import is
skipped with the reason (and that part fails).

Compare ratios from one run only: absolute times vary ~20% between runs on these machines,
and the allocator settings (printed) change them by 25% or more (docs/benchmarks.md).
"""

from __future__ import annotations

import argparse
import datetime
import importlib.util
import json
import math
import os
import resource
import shlex
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from _timing import allocator, maxrss_mib, require_positive  # benchmarks/ is on sys.path
from torch.func import functional_call

import metaloop as ml
from metaloop.meta import ANIL, MAML
from metaloop.models import MLP, Conv4

IMPLS = ("metaloop", "metaloop-loop", "metaloop-threads", "baseline", "metaloop-ckpt",
         "metaloop-compile", "plain", "plain-cl", "learn2learn", "higher", "torchopt",
         "torchopt-vmap", "torchopt-vmap-compile")
DEFAULT = {"conv4": [n for n in IMPLS if n not in ("metaloop-loop", "plain-cl",
                                                   "metaloop-compile", "torchopt-vmap-compile")],
           "sinusoid": ["metaloop", "metaloop-loop", "metaloop-compile", "plain", "learn2learn",
                        "higher", "torchopt", "torchopt-vmap", "torchopt-vmap-compile"]}
MODEL_DEFAULTS = {        # the options whose default depends on --model (None: refused there)
    "conv4": {"ways": 5, "shots": 1, "queries": 15, "meta_batch": 32, "inner_lr": 0.4,
              "hidden": 64, "pool": "max"},
    "sinusoid": {"ways": None, "shots": 10, "queries": 10, "meta_batch": 25, "inner_lr": 0.01,
                 "hidden": 40, "pool": None},
}
PEERS = ("learn2learn", "higher", "torchopt", "torchopt-vmap", "torchopt-vmap-compile")
TOL = 1e-5
TIE_MIB = 5               # peak-memory differences under this are within its noise
RSS_ITERS = 3             # timed iterations (after --warmup) of a peak-memory process
_TORCHVISION_LIB = []   # keeps the torch.library definitions alive


# ---------------------------------------------------------------------------- data and model

def make_model(args) -> Conv4 | MLP:
    torch.manual_seed(args.seed)
    if args.model == "sinusoid":
        return MLP(1, (args.hidden, args.hidden), 1).to(args.device)
    return Conv4(1, args.hidden, args.ways, pool=args.pool, image_size=28).to(args.device)


def loss_fn(args):
    """The task loss of the peers and the plain loop (metaloop's ``loss`` is its name)."""
    return F.mse_loss if args.model == "sinusoid" else F.cross_entropy


def random_batch(n, args, g) -> ml.TaskBatch:
    """Random images ``[n, ways*shots, 1, 28, 28]`` with balanced labels (cost as Omniglot)."""
    sy = torch.arange(args.ways).repeat_interleave(args.shots).repeat(n, 1)     # [n, W*K]
    qy = torch.arange(args.ways).repeat_interleave(args.queries).repeat(n, 1)   # [n, W*Q]
    return ml.TaskBatch(torch.rand(n, sy.shape[1], 1, 28, 28, generator=g), sy,
                        torch.rand(n, qy.shape[1], 1, 28, 28, generator=g), qy)


def batch_source(args):
    """``sample(n, generator) -> TaskBatch`` from Omniglot's train split, random images or
    sinusoids, drawn on the CPU (the same tasks on every device) and moved to
    ``args.device``."""
    if args.model == "sinusoid":
        draw = ml.tasks.Sinusoid(args.shots, args.queries).sample
    elif args.random_data:
        draw = lambda n, g: random_batch(n, args, g)   # noqa: E731
    else:
        draw = ml.tasks.Omniglot(args.data, "train", args.ways, args.shots, args.queries).sample
    if args.device == "cpu":
        return draw
    return lambda n, g: draw(n, g).to(args.device)


def to_double(batch: ml.TaskBatch) -> ml.TaskBatch:
    """The inputs, and regression targets, in float64 (class labels stay int64)."""
    def double(t):
        return t.double() if t.is_floating_point() else t
    return ml.TaskBatch(*(double(t) for t in (batch.support_x, batch.support_y,
                                              batch.query_x, batch.query_y)))


# ---------------------------------------------------------------------------- implementations
# Each builder returns grads(batch) -> {name: d meta-loss / d theta_0}, the mean over tasks.

def build_metaloop(model, args, checkpoint=False, compile=False, batching="auto"):
    make = ANIL if args.anil else MAML
    extra = {"compile": True} if compile else {}    # a --baseline tree may predate the flags
    if batching == "auto" and args.device == "cuda" and not checkpoint:
        batching = "vmap"        # as metaloop train/eval --device cuda run it (build.batching_on)
    if batching != "auto":                          # (the default)
        extra["batching"] = batching
    if checkpoint:
        extra["recompute_inner_loop"] = True
    learner = make(model, args.inner_lr, args.steps, args.first_order,
                   loss="mse" if args.model == "sinusoid" else "ce", **extra)
    return learner.meta_gradient


def _adapt_plain(fwd, p, names, sx, sy, args):
    """``args.steps`` SGD steps on the support loss; p is a dict name -> tensor."""
    loss = loss_fn(args)
    for _ in range(args.steps):
        g = torch.autograd.grad(loss(fwd(p, sx), sy), [p[n] for n in names],
                                create_graph=not args.first_order)
        p = {**p, **{n: p[n] - args.inner_lr * gi for n, gi in zip(names, g)}}
    return p


def build_plain(model, args, layout=lambda x: x):
    params = dict(model.named_parameters())
    head = ["head.weight", "head.bias"]

    def full(p, x):
        return functional_call(model, p, (x,))

    def linear(p, f):
        return F.linear(f, p["head.weight"], p["head.bias"])           # [N, D] -> [N, ways]

    def task_loss(sx, sy, qx, qy):
        if not args.anil:
            return loss_fn(args)(full(_adapt_plain(full, params, list(params), sx, sy, args),
                                        qx), qy)
        fs, fq = (functional_call(model, params, (x,), {"head": False}) for x in (sx, qx))
        p = _adapt_plain(linear, {n: params[n] for n in head}, head, fs, sy, args)
        return F.cross_entropy(linear(p, fq), qy)

    def grads(batch):
        total = {n: torch.zeros_like(v) for n, v in params.items()}
        for i in range(batch.num_tasks):
            sx, sy, qx, qy = batch.task(i)
            g = torch.autograd.grad(task_loss(layout(sx), sy, layout(qx), qy),
                                    list(params.values()),
                                    allow_unused=True)
            for n, gi in zip(params, g):
                if gi is not None:
                    total[n] += gi / batch.num_tasks
        return total
    return grads


def _backward_grads(model, per_task):
    """grads(batch) from ``per_task(sx, sy, qx, qy) -> query loss`` by ``.backward()``."""
    def grads(batch):
        for p in model.parameters():
            p.grad = None
        for i in range(batch.num_tasks):
            (per_task(*batch.task(i)) / batch.num_tasks).backward()
        return {n: p.grad.clone() if p.grad is not None else torch.zeros_like(p)
                for n, p in model.named_parameters()}
    return grads


def build_learn2learn(model, args):
    import learn2learn as l2l
    loss = loss_fn(args)
    if not args.anil:
        maml = l2l.algorithms.MAML(model, lr=args.inner_lr, first_order=args.first_order)

        def per_task(sx, sy, qx, qy):
            learner = maml.clone()
            for _ in range(args.steps):
                learner.adapt(loss(learner(sx), sy))
            return loss(learner(qx), qy)
        return _backward_grads(model, per_task)
    head = l2l.algorithms.MAML(model.head, lr=args.inner_lr, first_order=args.first_order)

    def per_task_anil(sx, sy, qx, qy):
        fs, fq = model.features(sx), model.features(qx)
        learner = head.clone()
        for _ in range(args.steps):
            learner.adapt(F.cross_entropy(learner(fs), sy))
        return F.cross_entropy(learner(fq), qy)
    return _backward_grads(model, per_task_anil)


def build_higher(model, args):
    import higher
    loss = loss_fn(args)
    inner_opt = torch.optim.SGD(model.parameters(), lr=args.inner_lr)

    def per_task(sx, sy, qx, qy):
        with higher.innerloop_ctx(model, inner_opt, copy_initial_weights=False) as (fm, opt):
            for _ in range(args.steps):
                opt.step(loss(fm(sx), sy))
            return loss(fm(qx), qy)
    if not args.first_order:
        return _backward_grads(model, per_task)

    def grads(batch):
        """First order: higher without its graph (``track_higher_grads=False``) detaches the
        fast weights at each step; the query gradient at the adapted ones is the task's."""
        total = {n: torch.zeros_like(v) for n, v in model.named_parameters()}
        for i in range(batch.num_tasks):
            sx, sy, qx, qy = batch.task(i)
            with higher.innerloop_ctx(model, inner_opt, copy_initial_weights=False,
                                      track_higher_grads=False) as (fm, opt):
                for _ in range(args.steps):
                    opt.step(loss(fm(sx), sy))
                g = torch.autograd.grad(loss(fm(qx), qy), list(fm.parameters()))
            for n, gi in zip(total, g):
                total[n] += gi / batch.num_tasks
        return total
    return grads


def build_torchopt(model, args):
    import torchopt
    loss_of = loss_fn(args)
    if args.first_order:               # MetaSGD always differentiates through its step
        return _torchopt_functional(model, args)
    inner_opt = torchopt.MetaSGD(model, lr=args.inner_lr)

    def per_task(sx, sy, qx, qy):
        net_state = torchopt.extract_state_dict(model)
        opt_state = torchopt.extract_state_dict(inner_opt)
        for _ in range(args.steps):
            inner_opt.step(loss_of(model(sx), sy))
        loss = loss_of(model(qx), qy)
        # the graph keeps the adapted tensors alive; put theta_0 back for the next task
        torchopt.recover_state_dict(model, net_state)
        torchopt.recover_state_dict(inner_opt, opt_state)
        return loss
    return _backward_grads(model, per_task)


def _torchopt_functional(model, args):
    """TorchOpt's functional API (``torchopt.sgd``, ``update``, ``apply_updates``) on a
    params dict: first order takes the inner gradients without their graph."""
    import torchopt
    loss_of, inner_opt = loss_fn(args), torchopt.sgd(lr=args.inner_lr)
    params = dict(model.named_parameters())

    def per_task(sx, sy, qx, qy):
        p, state = params, inner_opt.init(params)
        for _ in range(args.steps):
            g = torch.autograd.grad(loss_of(functional_call(model, p, (sx,)), sy),
                                    list(p.values()), create_graph=not args.first_order)
            updates, state = inner_opt.update(dict(zip(p, g)), state, inplace=False)
            p = torchopt.apply_updates(p, updates, inplace=False)
        return loss_of(functional_call(model, p, (qx,)), qy)
    return _backward_grads(model, per_task)


def build_torchopt_vmap(model, args, compile=False):
    """TorchOpt's own batched path, as its ``examples/FuncTorch/maml_omniglot_vmap.py``
    writes it: each task's inner loop is ``torchopt.sgd`` on a params dict inside
    ``torch.func.grad``, and ``torch.func.vmap`` runs the meta-batch's tasks at once; the
    meta-gradient is ``autograd.grad`` of the mean query loss (first order: the inner
    gradients detached). ``compile``: the vmapped mean query loss through ``torch.compile``
    (``dynamic=False``, as metaloop's ``compile=True``)."""
    import torchopt
    from torch.func import grad, vmap
    loss_of, inner_opt = loss_fn(args), torchopt.sgd(lr=args.inner_lr)
    params = dict(model.named_parameters())

    def task_loss(p, sx, sy, qx, qy):
        state = inner_opt.init(p)

        def support_loss(q):
            return loss_of(functional_call(model, q, (sx,)), sy)
        for _ in range(args.steps):
            g = grad(support_loss)(p)
            if args.first_order:
                g = {n: v.detach() for n, v in g.items()}
            updates, state = inner_opt.update(g, state, inplace=False)
            p = torchopt.apply_updates(p, updates, inplace=False)
        return loss_of(functional_call(model, p, (qx,)), qy)

    def meta_loss(p, sx, sy, qx, qy):
        return vmap(task_loss, in_dims=(None, 0, 0, 0, 0))(p, sx, sy, qx, qy).mean()
    if compile:
        meta_loss = torch.compile(meta_loss, dynamic=False)

    def grads(batch):
        loss = meta_loss(params, batch.support_x, batch.support_y, batch.query_x, batch.query_y)
        return dict(zip(params, torch.autograd.grad(loss, list(params.values()))))
    return grads


def build(name, model, args):
    if name in ("metaloop", "metaloop-loop", "metaloop-threads", "metaloop-ckpt",
                "metaloop-compile"):
        return build_metaloop(model, args, checkpoint=name == "metaloop-ckpt",
                              compile=name == "metaloop-compile",
                              batching={"metaloop-threads": "threads",
                                        "metaloop-loop": "loop"}.get(name, "auto"))
    if name == "plain-cl":
        from metaloop.func.params import channels_last  # not in a --baseline tree
        return build_plain(model, args, layout=channels_last)
    return {"plain": build_plain, "learn2learn": build_learn2learn, "higher": build_higher,
            "torchopt": build_torchopt, "torchopt-vmap": build_torchopt_vmap,
            "torchopt-vmap-compile": lambda m, a: build_torchopt_vmap(m, a, compile=True),
            }[name](model, args)


# ---------------------------------------------------------------------------- peer imports

def _define_torchvision_ops():
    """torchvision's PyPI build for torch 2.13 is linked against CUDA libraries; on the CPU
    torch build its extension does not load and its import fails with ``operator
    torchvision::nms does not exist``. Define the two op schemas it registers fakes for
    (nothing on the MAML path calls them), unless the extension loads.
    """
    spec = importlib.util.find_spec("torchvision")
    if spec is None or _TORCHVISION_LIB:
        return
    so = sorted(Path(spec.origin).parent.glob("_C*.so"))
    try:
        if so:
            torch.ops.load_library(str(so[0]))
            return
    except OSError:
        pass
    lib = torch.library.Library("torchvision", "DEF")
    lib.define("nms(Tensor dets, Tensor scores, float iou_threshold) -> Tensor")
    lib.define("qnms(Tensor dets, Tensor scores, float iou_threshold) -> Tensor")
    _TORCHVISION_LIB.append(lib)


def unavailable(name, args) -> str | None:
    """Why ``name`` cannot run in this configuration, or None."""
    if name == "metaloop-ckpt" and not args.checkpoint:
        return "add --checkpoint to time it"
    if name == "baseline" and not args.baseline:
        return "add --baseline DIR to time it"
    if name in ("higher", "torchopt", "torchopt-vmap", "torchopt-vmap-compile") and args.anil:
        return "only full MAML is written for it here"
    if name in ("metaloop-threads", "plain-cl") and args.device != "cpu":
        return "a CPU layout (threads / channels-last), not timed on a GPU"
    if name == "plain-cl" and args.model != "conv4":
        return "an image layout: Conv4 only"
    if name not in PEERS:
        return None
    if name == "learn2learn":
        _define_torchvision_ops()
    try:
        __import__(name.split("-")[0])
    except Exception as e:   # any import failure means: not usable here; say which
        return f"not importable ({type(e).__name__}: {str(e).splitlines()[0][:100]})"
    return None


# ---------------------------------------------------------------------------- check and time

def _max(values) -> float:
    """The largest of ``values``, NaN if any is NaN (Python's ``max`` keeps whichever came
    first: ``max([0.0, nan])`` is 0.0)."""
    values = [float(v) for v in values]
    return math.nan if any(math.isnan(v) for v in values) else max(values)


def relative_error(got, ref) -> float:
    """Max abs difference over all tensors / the largest |ref| entry (conv biases before BN
    have exactly-zero true gradients, so a per-tensor ratio would be meaningless); NaN where
    either holds a NaN or an infinity, so that a non-finite gradient never passes."""
    top = _max(r.abs().max() for r in ref.values())
    diff = _max((got[n] - ref[n]).abs().max() for n in ref)
    return diff / top if top else (0.0 if diff == 0 else math.inf)     # ref all zeros


def check_grads(name, args) -> dict[str, torch.Tensor]:
    """float64 meta-gradient of ``name`` on ``args.check_tasks`` tasks from ``args.seed``."""
    old = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)           # (on a GPU too; TF32 is off: main)
    try:
        batch = to_double(batch_source(args)(args.check_tasks,
                                             torch.Generator().manual_seed(args.seed)))
        return build(name, make_model(args).double(), args)(batch)
    finally:
        torch.set_default_dtype(old)


def check(names, args, argv) -> dict[str, float]:
    """float64 meta-gradient of each implementation vs metaloop's: name -> relative error."""
    grads = {}
    for n in names:
        if n != "baseline":
            grads[n] = check_grads(n, args)
            continue
        with tempfile.TemporaryDirectory() as tmp:
            out = Path(tmp) / "grads.pt"
            run_worker("baseline", [*argv, "--check-out", str(out)])
            grads[n] = torch.load(out)
    return {n: relative_error(grads[n], grads["metaloop"]) for n in names}


def _status_mib(field: str) -> float | None:
    """``VmRSS``/``VmHWM`` of this process from /proc (Linux), in MiB."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1]) / 1024                     # kB -> MiB
    except OSError:
        pass
    return None


def _reset_peak() -> bool:
    """Reset this process's peak RSS (VmHWM) to its current RSS, where Linux allows it."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
        return True
    except OSError:
        return False


def setup(name, args):
    """``name``'s model, meta-gradient, Adam and batch stream (from ``args.seed + 1``, the
    same batches for every implementation): ``step() -> seconds``, one iteration, its batch
    drawn before the clock starts."""
    model = make_model(args)
    grads = build(name, model, args)
    opt = torch.optim.Adam(model.parameters(), lr=args.outer_lr)
    sample, g = batch_source(args), torch.Generator().manual_seed(args.seed + 1)
    cuda = args.device != "cpu"

    def step() -> float:
        batch = sample(args.meta_batch, g)
        if cuda:
            torch.cuda.synchronize()               # the batch is in place before the clock
        t = time.perf_counter()
        for n, gn in grads(batch).items():
            model.get_parameter(n).grad = gn
        opt.step()
        if cuda:
            torch.cuda.synchronize()               # the step is done, not only queued
        return time.perf_counter() - t
    return step


def interleaved(names, args) -> dict[str, list[float]]:
    """Seconds per iteration of each of ``names``, all in this process: ``--warmup``
    iterations each, then ``--reps`` x ``--iters`` rounds of one iteration per implementation,
    each round starting one implementation further on, so that a slow phase of a shared
    machine falls on every implementation alike and none always follows the same one."""
    steps = {n: setup(n, args) for n in names}
    for _ in range(args.warmup):
        for step in steps.values():
            step()
    times: dict[str, list[float]] = {n: [] for n in names}
    for r in range(args.reps * args.iters):
        for n in names[r % len(names):] + names[:r % len(names)]:
            times[n].append(steps[n]())
    return times


def worker(name, args) -> None:
    """Run ``--warmup`` + ``--iters`` iterations of ``name``; print one JSON line: their
    times, the peak and the memory after the set-up.

    The peak RSS is that of the iterations (warm-up included) where /proc allows resetting
    it after the set-up (loading the data set has a transient peak of its own); else the
    whole process's.
    """
    cuda = args.device != "cpu"
    step = setup(name, args)
    setup_mib, reset = _status_mib("VmRSS"), _reset_peak()
    if cuda:
        torch.cuda.synchronize()
        setup_mib = torch.cuda.memory_allocated() / 2**20
        torch.cuda.reset_peak_memory_stats()
    times = []
    for i in range(args.warmup + args.iters):
        t = step()
        if i >= args.warmup:
            times.append(t)
    if cuda:
        rss = torch.cuda.max_memory_allocated() / 2**20
    else:
        rss = _status_mib("VmHWM") if reset else None
        if rss is None:
            rss = maxrss_mib(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)
    print(json.dumps({"times": times, "rss_mib": rss, "setup_mib": setup_mib}))


def run_worker(name, argv) -> str:
    """Run ``--worker name`` in a fresh process (``baseline``: metaloop from ``--baseline``)."""
    env = dict(os.environ)
    if name == "baseline":
        args = parse(argv)
        env["PYTHONPATH"] = os.pathsep.join(p for p in (args.baseline, env.get("PYTHONPATH")) if p)
        if args.model == "conv4" and not args.data and not args.random_data:
            # the Omniglot copy this tree finds
            from metaloop.data.omniglot import search_dirs
            found = [d for d in search_dirs() if (d / "splits").is_dir()]
            argv = [*argv, "--data", str(found[0])] if found else argv
    cmd = [sys.executable, os.path.abspath(__file__), *argv, "--worker",
           "metaloop" if name == "baseline" else name]
    out = subprocess.run(cmd, capture_output=True, text=True, env=env)
    if out.returncode != 0:
        raise RuntimeError(f"{name} failed:\n{out.stderr[-2000:]}")
    return out.stdout


def measure(name, argv) -> dict:
    """Run one measurement in a fresh process; its times and its own peak RSS."""
    return json.loads(run_worker(name, argv).strip().splitlines()[-1])


# ---------------------------------------------------------------------------- main

def parse(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0].replace("\n", " "))
    add = ap.add_argument
    add("--model", choices=tuple(MODEL_DEFAULTS), default="conv4",
        help="conv4: Omniglot Conv4 (the base); sinusoid: the MAML paper's sinusoid "
             "regression, MLP 1-40-40-1 (see the docstring)")
    add("--ways", type=int, default=None, help="default 5 (Conv4 only)")
    add("--shots", type=int, default=None, help="default 1 (sinusoid: 10 points)")
    add("--queries", type=int, default=None,
        help="query images per class, default 15 (sinusoid: query points, 10)")
    add("--meta-batch", type=int, default=None, help="default 32 (sinusoid: 25)")
    add("--steps", type=int, default=1, help="inner SGD steps")
    add("--inner-lr", type=float, default=None, help="default 0.4 (sinusoid: 0.01)")
    add("--outer-lr", type=float, default=1e-3)
    add("--hidden", type=int, default=None,
        help="Conv4 filters, default 64 (sinusoid: the MLP's two hidden widths, 40)")
    add("--pool", choices=["max", "stride"], default=None,
        help="Conv4 downsampling: 2x2 max-pool (the default, the issue's base) or stride-2 "
             "convs (the MAML paper's Omniglot net, metaloop's Omniglot configs)")
    add("--first-order", action="store_true")
    add("--anil", action="store_true", help="adapt only the head (ANIL)")
    add("--checkpoint", action="store_true",
        help="also time metaloop with recompute_inner_loop=True")
    add("--only", default=None,
        help=f"comma-separated implementations (default: {','.join(DEFAULT['conv4'])}; "
             f"sinusoid: {','.join(DEFAULT['sinusoid'])})")
    add("--iters", type=int, default=10, help="timed iterations per measurement")
    add("--warmup", type=int, default=1)
    add("--reps", type=int, default=2,
        help="rounds of --iters: reps x iters iterations of each, interleaved one by one")
    add("--check-tasks", type=int, default=2, help="tasks in the float64 gradient check")
    add("--threads", type=int, default=2)
    add("--device", choices=("cpu", "cuda"), default="cpu",
        help="where every implementation runs (cuda: TF32 off, GPU memory peaks)")
    add("--seed", type=int, default=0)
    add("--data", default=None, help="Omniglot root (default: found automatically)")
    add("--random-data", action="store_true", help="random images instead of Omniglot")
    add("--baseline", default=None, metavar="DIR",
        help="time metaloop from this source tree too, as 'baseline' (see the docstring)")
    add("--records", default=None, metavar="DIR",
        help="write one JSON record per timed implementation into this folder")
    add("--worker", default=None, help=argparse.SUPPRESS)
    add("--check-out", default=None, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    for name, value in MODEL_DEFAULTS[args.model].items():
        if getattr(args, name) is None:
            setattr(args, name, value)
        elif value is None:                   # a Conv4 option given with --model sinusoid
            ap.error(f"--{name.replace('_', '-')} is a Conv4 option; --model {args.model} "
                     f"has none")
    if args.model != "conv4":
        for flag in ("anil", "random_data", "data"):
            if getattr(args, flag):
                ap.error(f"--{flag.replace('_', '-')} is a Conv4 option; --model {args.model} "
                         f"has none")
    if args.only is None:
        args.only = ",".join(DEFAULT[args.model])
    require_positive(ap, args, "ways", "shots", "queries", "meta_batch", "steps", "hidden",
                     "iters", "reps", "check_tasks", "threads")
    if args.warmup < 0:
        ap.error(f"--warmup must be an int >= 0, got {args.warmup}")
    for name in ("inner_lr", "outer_lr"):     # the learners and Adam refuse them after the check
        value = getattr(args, name)
        if not (math.isfinite(value) and value > 0):
            ap.error(f"--{name.replace('_', '-')} must be a positive number, got {value}")
    if args.baseline is not None and not (Path(args.baseline) / "metaloop" /
                                          "__init__.py").is_file():
        # PYTHONPATH=DIR without metaloop in it imports this tree's: 'baseline' would time
        # the same code as 'metaloop'
        ap.error(f"--baseline {args.baseline} holds no metaloop package (no "
                 f"{Path(args.baseline) / 'metaloop' / '__init__.py'}); give the src folder of "
                 f"the other tree, e.g. /tmp/base/src")
    unknown = [n for n in args.only.split(",") if n not in IMPLS]
    if unknown:
        ap.error(f"--only names unknown implementation(s) {', '.join(map(repr, unknown))}; "
                 f"choose from {', '.join(IMPLS)}")
    if "metaloop" not in args.only.split(","):
        ap.error(f"--only {args.only}: metaloop must be among them, as the reference for the "
                 f"ratios")
    if args.records is not None and not args.worker:    # where the records go, before any work
        # a record's name and row carry the order, ANIL and (sinusoid) the meta-batch only:
        # another setting would replace the table's records of the base configuration
        base = {**MODEL_DEFAULTS[args.model], "steps": 1, "outer_lr": 1e-3,
                "random_data": False}
        if args.model == "sinusoid":
            del base["meta_batch"]
        changed = [n for n, v in base.items() if v is not None and getattr(args, n) != v]
        if changed:
            ap.error(f"--records: the records' names and rows are those of the base "
                     f"configuration, not of {', '.join(_flag(n, args) for n in changed)}: "
                     f"they would replace the base's records; run without --records")
        from metaloop.evaluate.records import check_record_path
        try:
            for name in args.only.split(","):
                check_record_path(record_path(args.records, name, args))
        except ValueError as e:
            ap.error(f"--records: {e}")
    return args


def _flag(name: str, args) -> str:
    """``--name value`` as given (a set switch: ``--name``)."""
    value = getattr(args, name)
    flag = "--" + name.replace("_", "-")
    return flag if value is True else f"{flag} {value}"


def setting(args) -> str:
    """What is timed, in one line (without the repeats)."""
    kind = "first" if args.first_order else "second"
    what = "ANIL" if args.anil else "MAML"
    if args.model == "sinusoid":
        return (f"{kind}-order {what}, sinusoid MLP 1-{args.hidden}-{args.hidden}-1, "
                f"{args.shots} support / {args.queries} query points, meta-batch "
                f"{args.meta_batch}, {args.steps} step(s) at {args.inner_lr}, Adam "
                f"{args.outer_lr}, MSE")
    data = "random images" if args.random_data else "Omniglot train"
    return (f"{kind}-order {what}, Conv4 {args.hidden} filters ({args.pool}), "
            f"{args.ways}-way {args.shots}-shot, {args.queries} queries/class, "
            f"meta-batch {args.meta_batch}, {args.steps} step(s) at {args.inner_lr}, "
            f"Adam {args.outer_lr}, {data}")


def header(args) -> str:
    where = (f"{torch.cuda.get_device_name(0)} (TF32 off), " if args.device == "cuda"
             else "")
    return (f"torch {torch.__version__}, {where}{torch.get_num_threads()} thread(s), "
            f"{allocator()}\n{setting(args)}; median of {args.reps} x {args.iters} iterations")


def record_path(records, name, args) -> Path:
    """Where ``--records`` puts the record of implementation ``name``: a GPU run's records
    have names of their own (``benchmarks_maml_gpu_...``), so they never replace the CPU's."""
    kind = "first" if args.first_order else "second"
    if args.model == "sinusoid":
        stem = f"sinusoid_{kind}_order_mb{args.meta_batch}"
    else:
        stem = f"{kind}_order_{'anil' if args.anil else 'maml'}"
    gpu = "gpu_" if args.device == "cuda" else ""
    return Path(records) / f"benchmarks_maml_{gpu}{stem}_{name.replace('-', '_')}.json"


def record_table(args) -> str:
    """The docs table of the records: ``benchmarks-maml`` (Conv4) or
    ``benchmarks-maml-sinusoid``, with ``-gpu`` for a ``--device cuda`` run."""
    table = "benchmarks-maml-sinusoid" if args.model == "sinusoid" else "benchmarks-maml"
    return f"{table}-gpu" if args.device == "cuda" else table


def record_order(name, args) -> int:
    """The record's place in its table: by order, ANIL, then implementation (``IMPLS``)."""
    variant = 2 * args.anil + args.first_order
    return (1200 if args.model == "sinusoid" else 1040) + 20 * variant + IMPLS.index(name)


def write_records(results, args, argv) -> None:
    """One record per implementation of ``results`` into ``args.records`` (``--records``)."""
    from metaloop.evaluate.records import cpu_device, write_record
    kind = "first" if args.first_order else "second"
    what = "ANIL" if args.anil else "MAML"
    sine = args.model == "sinusoid"
    if args.device == "cuda":
        device = f"{torch.cuda.get_device_name(0)} (TF32 off)"
    else:                             # torch's threads: --threads, set by main
        device = f"{cpu_device()}, shared"
    python = f"{sys.prefix}/bin/python" if sys.prefix != sys.base_prefix else "python"
    command = " ".join([python, "benchmarks/bench_maml.py", *map(shlex.quote, argv)])
    peak = "peak_gpu_mib" if args.device == "cuda" else "peak_rss_mib"
    base_t = statistics.median(results["metaloop"]["times"])
    for name, r in results.items():
        t = statistics.median(r["times"])
        label = {"metaloop": "metaloop, batching='auto'" + (" (vmap)" if sine else ""),
                 "metaloop-loop": "metaloop, batching='loop'",
                 "metaloop-compile": "metaloop, compile=True (the vmapped tasks compiled)",
                 "torchopt-vmap-compile": "torchopt-vmap through torch.compile",
                 }.get(name, name) if sine else name
        row = (f"{kind}-order {what}, meta-batch {args.meta_batch}: {label}" if sine
               else f"{kind}-order {what}: {name}")
        write_record(record_path(args.records, name, args),
                     table=record_table(args),
                     row=row,
                     metric=("milliseconds" if sine else "seconds") + " per iteration (median)",
                     mean=round(t * 1e3, 3) if sine else round(t, 3), digits=2 if sine else 3,
                     ci95=None, n=len(r["times"]), budget={"iterations": len(r["times"])},
                     device=device, torch=torch.__version__.split("+")[0],
                     date=datetime.date.today().isoformat(), config=None, command=command,
                     published=None, order=record_order(name, args),
                     note=f"{t / base_t:.2f}x metaloop's time, peak "
                          f"{'GPU' if args.device == 'cuda' else 'RSS'} {r['rss_mib']:.0f} MiB, "
                          f"{own(r):.0f} MiB over its set-up",
                     **{peak: round(r["rss_mib"]), f"{peak}_over_setup": round(own(r))})


def own(r) -> float:
    """The iterations' own memory: the peak less the memory after the set-up (MiB)."""
    return max(r["rss_mib"] - r["setup_mib"], 0.0)


def report(results, args) -> None:
    base = results["metaloop"]
    base_t, base_m = statistics.median(base["times"]), base["rss_mib"]
    peak = "peak GPU MiB" if args.device == "cuda" else "peak RSS MiB"
    unit, scale = ("ms/it", 1e3) if args.model == "sinusoid" else ("s/it", 1)   # the MLP: ms
    print(f"{'implementation':21s} {unit:>9s} {'x metaloop':>11s} {peak:>13s} "
          f"{'x metaloop':>11s} {'after set-up':>13s} {'over set-up':>12s}")
    for name, r in results.items():
        t = statistics.median(r["times"])
        print(f"{name:21s} {t * scale:9.3f} {t / base_t:11.2f} {r['rss_mib']:13.0f} "
              f"{r['rss_mib'] / base_m:11.2f} {r['setup_mib']:13.0f} {own(r):12.0f}")
    baseline = " (baseline: in processes of its own)" if "baseline" in results else ""
    print(f"times: the {args.reps} x {args.iters} iterations interleaved one by one in this "
          f"process{baseline}; memory: each in a process of its own, over --warmup + "
          f"{min(args.iters, RSS_ITERS)} iterations (differences under {TIE_MIB} MiB are "
          f"within its noise)")
    if args.device == "cuda":
        print("peak GPU: the memory allocated at its peak over the iterations; after set-up: "
              "allocated before the first iteration; over set-up: the difference, the "
              "iterations' own")
        return
    print("peak RSS: the process's peak over the iterations (data set and model resident); "
          "after set-up: its RSS before the first iteration; over set-up: the difference, "
          "the iterations' own")


def main(argv=None) -> None:
    args = parse(argv)
    torch.set_num_threads(args.threads)
    if args.device == "cuda":
        if not torch.cuda.is_available():
            print("bench_maml.py: error: --device cuda, but torch sees no CUDA device",
                  file=sys.stderr)
            raise SystemExit(2)
        from metaloop.train.distributed import set_tf32
        set_tf32(False)                          # exact float32 kernels, as metaloop trains
    if args.worker:
        if args.worker in PEERS:
            unavailable(args.worker, args)     # the same import path as the check
        if args.check_out:
            return torch.save(check_grads(args.worker, args), args.check_out)
        return worker(args.worker, args)
    if not args.random_data:
        try:                                   # the data before any output: named, once
            batch_source(args)
        except FileNotFoundError as e:
            missing = str(e).splitlines()[0]
            print(f"bench_maml.py: error: {missing} (give the Omniglot folder with --data, or "
                  f"--random-data)", file=sys.stderr)
            raise SystemExit(2) from None
    print(header(args))
    names = []
    for name in args.only.split(","):
        why = unavailable(name, args) if name in IMPLS else "unknown implementation"
        if why:
            print(f"  skip {name}: {why}")
        else:
            names.append(name)
    argv = sys.argv[1:] if argv is None else list(argv)
    errors = check(names, args, argv)
    if not errors["metaloop"] <= TOL:          # NaN: its own meta-gradient is not finite
        print(f"bench_maml.py: error: metaloop's float64 meta-gradient is not finite at these "
              f"settings (--inner-lr {args.inner_lr}, --steps {args.steps}): there is nothing "
              f"to check the others against or to time", file=sys.stderr)
        raise SystemExit(2)
    for name, err in errors.items():
        ok = err <= TOL
        print(f"  check {name:13s} max rel err {err:.1e} vs metaloop (float64, "
              f"{args.check_tasks} tasks){'' if ok else '  WRONG: not timed'}")
    names = [n for n in names if errors[n] <= TOL]
    results = {n: {"times": [], "rss_mib": 0.0, "setup_mib": 0.0} for n in names}
    here = [n for n in names if n != "baseline"]   # baseline: another tree, its own processes
    for name, times in interleaved(here, args).items():
        results[name]["times"] = times
    # the memory: each implementation in a process of its own, so that its peak is its own;
    # a few iterations reach it (baseline: --reps processes of --iters, its times too)
    short = [*argv, "--iters", str(min(args.iters, RSS_ITERS))]
    for name in names:
        for _ in range(args.reps if name == "baseline" else 1):
            r = measure(name, argv if name == "baseline" else short)
            if name == "baseline":
                results[name]["times"] += r["times"]
            for k in ("rss_mib", "setup_mib"):
                results[name][k] = max(results[name][k], r[k] or 0.0)
    report(results, args)
    if args.records:
        write_records(results, args, argv)


if __name__ == "__main__":
    main()

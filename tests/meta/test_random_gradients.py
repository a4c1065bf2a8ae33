"""Every learner's meta-gradient against central finite differences of its meta-loss, over
randomly drawn small configurations (float64).

The meta-losses here are written from the papers' definitions and the learners' docstrings,
on networks spelled out with ``torch.nn.functional``, never through metaloop's code paths:
an independent check beside the fixed configurations of ``_reference.py``. A case draws its
sizes, seed and options from a master seed, so every run draws the same cases. Each
parameter tensor is checked along a random unit direction v: ``g . v`` against the five-point
central difference of L along v at steps 1e-3 down to 1e-6 (the best of them, so that a ReLU,
max-pool or hinge kink crossed by one step does not count), relative to the larger of the
two or, for a derivative below 1e-5 of the loss (a conv bias that BatchNorm cancels), to that.

* MAML (second order: FD of the unrolled meta-loss; first order: FD of the query loss at the
  adapted parameters with the inner gradients held constant, its own definition), over the
  steps, learned step sizes, inner-loop recomputation, adapted partitions, BatchNorm on batch
  statistics, loop / vmap / threads batching, regression and classification;
* ANIL on its features-once and whole-network paths;
* Reptile's direction theta_0 - theta_final against its SGD / Adam (beta1 = 0) definition,
  with the Adam state per task or shared across tasks and calls;
* R2D2 (ridge with an unpenalised intercept solved as one augmented linear system, learned
  lam, transductive or not), MetaOptNet (the convex head solved by a generic Newton method
  on the objective's autograd Hessian to machine precision), ProtoNet (with soft k-means
  refinement), LoRA meta-learning (MAML, first-order MAML, Reptile);
* ``metaloop.adapt``'s ``newton_head`` (converged; truncated and unrolled, whose definition
  is the truncated solver), ``ridge_head`` and ``refine_prototypes`` called directly, with a
  tensor lam or scale.

Left out, as documented approximations or refusals: implicit Newton gradients before the
solve converges (``newton_head``), and the configurations the learners refuse (second order
under vmap through torch's norm layers, recomputation under vmap, threads with buffers).

``python tests/meta/test_random_gradients.py [cases]`` prints the max relative error per
learner and option; the tests run a fixed sample (the larger one is marked slow).
"""

from __future__ import annotations

import math
import random
import sys
from collections import defaultdict

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import metaloop as ml
from metaloop.meta import ANIL, MAML, R2D2, MetaOptNet, ProtoNet, Reptile
from metaloop.models import MLP, Conv4

TOL = 1e-6          # relative error allowed between a meta-gradient and the FD
STEPS_FD = (1e-3, 1e-4, 1e-5, 1e-6)


# -- networks written out ------------------------------------------------------------------
def mlp_ref(p, x, head=True, prefix=""):
    """metaloop's MLP (ReLU), or a user MLP with BatchNorm1d on batch statistics (``bn``)."""
    i = 0
    while f"{prefix}body.fc{i}.weight" in p or f"{prefix}body.fc{i}.base_layer.weight" in p:
        x = _linear(p, f"{prefix}body.fc{i}", x)
        bn = f"{prefix}body.bn{i}."
        if bn + "weight" in p:
            mean, var = x.mean(0), x.var(0, unbiased=False)
            x = (x - mean) / torch.sqrt(var + 1e-5) * p[bn + "weight"] + p[bn + "bias"]
        x = torch.tanh(x) if bn + "weight" in p else F.relu(x)
        i += 1
    return x @ p[f"{prefix}head.weight"].T + p[f"{prefix}head.bias"] if head else x


def _linear(p, name, x):
    if f"{name}.weight" in p:
        return x @ p[f"{name}.weight"].T + p[f"{name}.bias"]
    base = x @ p[f"{name}.base_layer.weight"].T + p[f"{name}.base_layer.bias"]
    A, B = p[f"{name}.lora_A.default.weight"], p[f"{name}.lora_B.default.weight"]
    return base + LORA_SCALE[0] * (x @ A.T @ B.T)


LORA_SCALE = [1.0]   # alpha / r of the LoRA case being checked


def conv4_ref(p, x, pool, readout, head=True, stats=None, prefix=""):
    """Conv4: conv -> BatchNorm (batch statistics, or ``stats[i]`` = (mean, var)) -> ReLU ->
    max-pool (or stride-2 conv); features by readout; linear head. Returns (out, stats)."""
    seen = []
    for i in range(4):
        b = f"{prefix}body.{i}."
        x = F.conv2d(x, p[b + "conv.weight"], p[b + "conv.bias"],
                     stride=2 if pool == "stride" else 1, padding=1)
        if stats is None:
            mean = x.mean((0, 2, 3))
            var = ((x - mean[:, None, None]) ** 2).mean((0, 2, 3))
        else:
            mean, var = stats[i]
        seen.append((mean, var))
        x = (x - mean[:, None, None]) / torch.sqrt(var[:, None, None] + 1e-5)
        x = x * p[b + "bn.weight"][:, None, None] + p[b + "bn.bias"][:, None, None]
        x = F.relu(F.max_pool2d(x, 2)) if pool == "max" else F.relu(x)
    h = x.mean((2, 3)) if readout == "mean" else x.flatten(1)
    if head:
        h = h @ p[f"{prefix}head.weight"].T + p[f"{prefix}head.bias"]
    return h, seen


class BNMLP(nn.Module):
    """A user's model: Linear -> BatchNorm1d on batch statistics (in training mode; with
    ``running``, also updating running statistics) -> tanh, then a head."""

    def __init__(self, d_in, widths, out, running=False):
        super().__init__()
        self.body = nn.Sequential()
        for i, (a, b) in enumerate(zip((d_in, *widths), widths)):
            self.body.add_module(f"fc{i}", nn.Linear(a, b))
            self.body.add_module(f"bn{i}", nn.BatchNorm1d(b, track_running_stats=running))
            self.body.add_module(f"act{i}", nn.Tanh())
        self.head = nn.Linear(widths[-1], out)

    def forward(self, x, head=True):
        h = self.body(x)
        return self.head(h) if head else h


class PlainMLP(MLP):
    """metaloop's MLP under another ``forward``: ANIL runs its whole network."""

    def forward(self, x, head=True):
        return super().forward(x, head)


# -- finite differences ----------------------------------------------------------------------
def fd_errors(loss, params, grads, gen, tensors=None):
    """{name: relative error of grads[name] along a random direction} against central FD of
    ``loss(params dict) -> float`` (the best of ``STEPS_FD``; see the module docstring)."""
    errs = {}
    base = {n: t.detach() for n, t in params.items()}
    f0 = loss(base)
    for n in tensors or list(base):
        v = torch.randn(base[n].shape, generator=gen, dtype=base[n].dtype)
        v = v / v.norm().clamp_min(1e-300)
        gv = float((grads[n] * v).sum())
        best = math.inf
        for h in STEPS_FD:                 # five-point central stencil: error O(h^4)
            f = [loss({**base, n: base[n] + k * h * v}) for k in (2, 1, -1, -2)]
            fd = (-f[0] + 8 * f[1] - 8 * f[2] + f[3]) / (12 * h)
            # a derivative below 1e-5 of the loss (e.g. a conv bias that BatchNorm cancels)
            # is judged against that: the FD's rounding noise is about 1e-13 to 1e-11 of it
            best = min(best, abs(fd - gv) / max(abs(fd), abs(gv), 1e-5 * max(1.0, abs(f0))))
            if best < TOL / 10:               # the smaller steps would only confirm it
                break
        errs[n] = best
    return errs


def leaves(p):
    return {n: t.detach().clone().requires_grad_(True) for n, t in p.items()}


def params64(model):
    return {n: t.detach() for n, t in model.named_parameters()}


# -- data -------------------------------------------------------------------------------------
def class_batch(rng, gen, B, ways, shots, queries, shape):
    ys = torch.arange(ways).repeat_interleave(shots)
    yq = torch.arange(ways).repeat_interleave(queries)
    perm_s = [torch.randperm(len(ys), generator=gen) for _ in range(B)]
    perm_q = [torch.randperm(len(yq), generator=gen) for _ in range(B)]
    sy = torch.stack([ys[p] for p in perm_s])
    qy = torch.stack([yq[p] for p in perm_q])
    sx = torch.randn(B, len(ys), *shape, generator=gen, dtype=torch.float64)
    qx = torch.randn(B, len(yq), *shape, generator=gen, dtype=torch.float64)
    return ml.TaskBatch(sx, sy, qx, qy)


def reg_batch(gen, B, S, Q, d_in, out):
    sx = torch.randn(B, S, d_in, generator=gen, dtype=torch.float64)
    qx = torch.randn(B, Q, d_in, generator=gen, dtype=torch.float64)
    w = torch.randn(B, d_in, out, generator=gen, dtype=torch.float64)
    return ml.TaskBatch(sx, torch.sin(sx @ w), qx, torch.sin(qx @ w))


def ce(out, y):
    return F.cross_entropy(out, y)


def mse(out, y):
    return ((out - y) ** 2).mean()


# -- MAML / ANIL --------------------------------------------------------------------------------
def draw_maml(rng):
    c = {"learner": rng.choice(["maml", "maml", "anil"]),
         "net": rng.choice(["mlp", "mlp", "bnmlp", "bnmlp_rs", "conv_max", "conv_stride"]),
         "steps": rng.randint(1, 3), "first_order": rng.random() < 0.3,
         "learn_lr": rng.random() < 0.3, "recompute": rng.random() < 0.3,
         "adapt": rng.choice(["all", "head", "body"]),
         "batching": rng.choice(["loop", "vmap", "threads"]),
         "head_init": rng.choice(["learned", "learned", "zero"]),
         "task": rng.choice(["reg", "cls"]), "B": rng.randint(1, 3),
         "lr": rng.choice([0.05, 0.1, 0.3]), "seed": rng.randrange(10**6),
         "anil_path": rng.choice(["features_once", "whole"])}
    if c["net"].startswith("conv"):
        c["task"] = "cls"
    if c["learner"] == "anil":
        c["adapt"] = "head"
    if c["learn_lr"]:
        c["recompute"] = False
    if c["head_init"] == "zero" and c["adapt"] == "body":
        c["head_init"] = "learned"
    if c["net"] != "mlp":     # Conv4 has metaloop's forward, the BatchNorm MLP a user's
        c["anil_path"] = "features_once" if c["net"].startswith("conv") else "whole"
    return c


def build_maml(c):
    gen = torch.Generator().manual_seed(c["seed"])
    torch.manual_seed(c["seed"])
    rng = random.Random(c["seed"])
    d_in, widths = rng.randint(1, 3), tuple(rng.randint(3, 5) for _ in range(rng.randint(1, 2)))
    ways = rng.randint(2, 3)
    out = ways if c["task"] == "cls" else rng.randint(1, 2)
    net = c["net"]
    if net == "mlp":
        model = (PlainMLP if c["learner"] == "anil" and c["anil_path"] == "whole" else MLP)(
            d_in, widths, out)
        fwd = mlp_ref
    elif net.startswith("bnmlp"):
        model, fwd = BNMLP(d_in, widths, out, running=net == "bnmlp_rs"), mlp_ref
    else:
        pool = net.split("_")[1]
        size = 16 if pool == "max" else rng.randint(5, 9)
        model = Conv4(1, rng.randint(2, 3), out, pool=pool, image_size=size)

        def fwd(p, x, pool=pool, readout=model.readout):
            return conv4_ref(p, x, pool, readout)[0]
        d_in = None
    model = model.double()
    for p in model.parameters():      # away from the initialisation's symmetries
        p.data.add_(0.1 * torch.randn(p.shape, generator=gen, dtype=p.dtype))
    if c["task"] == "cls":
        shape = (d_in,) if d_in else (1, model.image_size, model.image_size)
        batch = class_batch(rng, gen, c["B"], ways, rng.randint(1, 2), rng.randint(1, 2), shape)
        loss = ce
    else:
        batch = reg_batch(gen, c["B"], rng.randint(2, 4), rng.randint(2, 4), d_in, out)
        loss = mse
    names = [n for n, _ in model.named_parameters()]
    head = ["head.weight", "head.bias"]
    adapt = {"all": None, "head": head, "body": [n for n in names if n not in head]}[c["adapt"]]
    kw = dict(inner_lr=c["lr"], inner_steps=c["steps"], first_order=c["first_order"],
              loss="ce" if c["task"] == "cls" else "mse", head_init=c["head_init"],
              batching=c["batching"], recompute_inner_loop=c["recompute"],
              learn_lr=c["learn_lr"])
    if c["learner"] == "anil":
        learner = ANIL(model, **kw)
        assert (learner.inner.path_fn is not None) == (c["anil_path"] == "features_once")
    else:
        learner = MAML(model, adapt=adapt, **kw)
    adapted = learner.inner.names
    return learner, batch, fwd, loss, adapted


def maml_reference(c, learner, batch, fwd, loss, adapted):
    """The meta-loss as a function of the learner's params dict (``net.*`` and ``inner_lr``
    with learned step sizes), and, first order, the query loss with frozen inner gradients."""
    lr_table = c["learn_lr"]

    def split(p):
        if lr_table:
            return {n[4:]: v for n, v in p.items() if n.startswith("net.")}, p["inner_lr"]
        return p, None

    def start(net, sy):
        theta = dict(net)
        if c["head_init"] == "zero":
            out = int(sy.max()) + 1 if not sy.is_floating_point() else sy.shape[-1]
            theta["head.weight"] = net["head.weight"].new_zeros(out, net["head.weight"].shape[1])
            theta["head.bias"] = net["head.bias"].new_zeros(out)
        return theta

    def inner_grads(p):
        """Per task, per step, the inner gradients (values only) at the unperturbed p."""
        net, lrs = split(p)
        all_g = []
        for i in range(batch.num_tasks):
            sx, sy, _, _ = batch.task(i)
            theta, gs = start(net, sy), []
            for k in range(c["steps"]):
                th = leaves(theta)
                g = torch.autograd.grad(loss(fwd(th, sx), sy), [th[n] for n in adapted])
                gs.append(g)
                theta = {**theta, **{n: theta[n] - _lr(lrs, k, j) * g[j]
                                     for j, n in enumerate(adapted)}}
            all_g.append(gs)
        return all_g

    def _lr(lrs, k, j):
        return c["lr"] if lrs is None else lrs[min(k, lrs.shape[0] - 1), j]

    def meta_loss(p, fixed=None):
        net, lrs = split(p)
        total = 0.0
        with torch.enable_grad():
            for i in range(batch.num_tasks):
                sx, sy, qx, qy = batch.task(i)
                theta = start(net, sy)
                for k in range(c["steps"]):
                    if fixed is None:
                        th = leaves(theta)
                        g = torch.autograd.grad(loss(fwd(th, sx), sy), [th[n] for n in adapted])
                    else:
                        g = fixed[i][k]
                    theta = {**theta, **{n: theta[n] - _lr(lrs, k, j) * g[j]
                                         for j, n in enumerate(adapted)}}
                total += float(loss(fwd(theta, qx), qy))
        return total / batch.num_tasks

    return meta_loss, inner_grads


def check_maml(c):
    try:
        learner, batch, fwd, loss, adapted = build_maml(c)
    except ValueError as e:                   # a documented refusal (vmap with BatchNorm, ...)
        return {"refused": str(e)}
    params = params64(learner.model)
    saved = torch.get_num_threads()
    torch.set_num_threads(2 if c["batching"] == "threads" else saved)   # tasks on 2 threads
    try:
        grads = learner.meta_gradient(batch)
    finally:
        torch.set_num_threads(saved)
    meta_loss, inner_grads = maml_reference(c, learner, batch, fwd, loss, adapted)
    gen = torch.Generator().manual_seed(c["seed"] + 1)
    if c["first_order"]:
        fixed = inner_grads(params)
        errs = fd_errors(lambda p: meta_loss(p, fixed), params, grads, gen)
    else:
        errs = fd_errors(meta_loss, params, grads, gen)
    value = learner.meta_loss(batch)[0].detach()
    errs["(meta_loss value)"] = abs(float(value) - meta_loss(params)) / abs(float(value))
    return errs


def maml_key(c):
    order = "fo" if c["first_order"] else "so"
    path = f"-{c['anil_path']}" if c["learner"] == "anil" else f"-adapt={c['adapt']}"
    flags = [f for f, on in (("learn_lr", c["learn_lr"]), ("recompute", c["recompute"]),
                             ("zero-head", c["head_init"] == "zero")) if on]
    return (f"{c['learner']}-{order}{path} net={c['net']} {c['task']} steps={c['steps']} "
            f"{' '.join([c['batching'], *flags])}")


# -- Reptile ------------------------------------------------------------------------------------
def draw_reptile(rng):
    opt = rng.choice(["sgd", "adam"])
    return {"opt": opt, "state": rng.choice(["task", "shared"]) if opt == "adam" else "task",
            "steps": rng.randint(1, 4), "task": rng.choice(["reg", "cls"]),
            "B": rng.randint(1, 3), "lr": rng.choice([0.01, 0.1]),
            "head_init": rng.choice(["learned", "zero"]), "inner_batch": rng.choice([0, 0, 2]),
            "adapt": rng.choice(["all", "head"]), "batching": rng.choice(["loop", "vmap"]),
            "seed": rng.randrange(10**6)}


def check_reptile(c):
    gen = torch.Generator().manual_seed(c["seed"])
    rng = random.Random(c["seed"])
    d_in, ways = rng.randint(1, 3), rng.randint(2, 3)
    out = ways if c["task"] == "cls" else rng.randint(1, 2)
    model = MLP(d_in, (rng.randint(3, 5),), out).double()
    head = ["head.weight", "head.bias"]
    plain = c["opt"] == "sgd" and not c["inner_batch"]         # what vmap can run
    learner = Reptile(model, c["lr"], c["steps"], loss="ce" if c["task"] == "cls" else "mse",
                      adapt=None if c["adapt"] == "all" else head, head_init=c["head_init"],
                      inner_optimizer=c["opt"], adam_state=c["state"],
                      inner_batch=c["inner_batch"],
                      batching=c["batching"] if plain else "loop")
    loss = ce if c["task"] == "cls" else mse
    adapted = learner.inner.names
    shared = None
    errs = defaultdict(float)
    for call in range(2):                      # the shared Adam state runs on across calls
        if c["task"] == "cls":
            batch = class_batch(rng, gen, c["B"], ways, 2, 1, (d_in,))
        else:
            batch = reg_batch(gen, c["B"], rng.randint(3, 5), 2, d_in, out)
        params = params64(model)
        torch.manual_seed(c["seed"] + call)
        grads = learner.meta_gradient(batch)
        torch.manual_seed(c["seed"] + call)
        want = {n: torch.zeros_like(t) for n, t in params.items()}
        for i in range(batch.num_tasks):
            sx, sy, _, _ = batch.task(i)
            theta = dict(params)
            if c["head_init"] == "zero":
                theta["head.weight"] = torch.zeros(ways if c["task"] == "cls" else out,
                                                   params["head.weight"].shape[1],
                                                   dtype=torch.float64)
                theta["head.bias"] = torch.zeros(theta["head.weight"].shape[0],
                                                 dtype=torch.float64)
            order = None
            if c["inner_batch"]:
                g_ = torch.Generator().manual_seed(int(torch.randint(2**62, (1,))))
                n_s, size = sx.shape[0], c["inner_batch"]
                if size < n_s:
                    need = size * c["steps"]
                    order = torch.cat([torch.randperm(n_s, generator=g_)
                                       for _ in range(-(-need // n_s))])[:need].view(-1, size)
            if c["opt"] == "adam" and (c["state"] == "task" or shared is None):
                st = {"t": 0, **{n: (torch.zeros_like(theta[n]), torch.zeros_like(theta[n]))
                                 for n in adapted}}
                if c["state"] == "shared":
                    shared = st
            elif c["opt"] == "adam":
                st = shared
            for k in range(c["steps"]):
                xb, yb = (sx, sy) if order is None else (sx[order[k]], sy[order[k]])
                th = leaves(theta)
                g = torch.autograd.grad(loss(mlp_ref(th, xb), yb), [th[n] for n in adapted])
                if c["opt"] == "sgd":
                    theta = {**theta, **{n: theta[n] - c["lr"] * gj for n, gj in zip(adapted, g)}}
                    continue
                st["t"] += 1
                t = st["t"]
                new = {}
                for n, gj in zip(adapted, g):
                    m, v = st[n]
                    m, v = gj, 0.999 * v + (1 - 0.999) * gj ** 2     # beta1 = 0
                    st[n] = (m, v)
                    new[n] = theta[n] - c["lr"] * m / ((v / (1 - 0.999 ** t)).sqrt() + 1e-8)
                theta = {**theta, **new}
            for n in adapted:
                if c["head_init"] == "zero" and n in head:
                    continue
                want[n] += (params[n] - theta[n]) / batch.num_tasks
        for n in params:
            d = (grads[n] - want[n]).abs().max()
            errs[n] = max(errs[n], float(d / max(want[n].abs().max(), 1e-12)))
        with torch.no_grad():                  # an outer step, so the second call differs
            for n, p in model.named_parameters():
                p -= 0.5 * grads[n]
    return dict(errs)


def reptile_key(c):
    vmap = " vmap" if c["batching"] == "vmap" and c["opt"] == "sgd" and not c["inner_batch"] \
        else ""
    return (f"reptile{vmap} {c['opt']}{'-' + c['state'] if c['opt'] == 'adam' else ''} "
            f"adapt={c['adapt']} {c['head_init']}-head inner_batch={c['inner_batch']} {c['task']}")


# -- solved heads --------------------------------------------------------------------------------
def ridge_ref(phi, y, lam, intercept):
    """argmin ||phi W + 1 b^T - y||^2 + lam ||W||^2, b unpenalised: one augmented system."""
    n, d = phi.shape
    if intercept:
        a = torch.cat([phi, torch.ones(n, 1, dtype=phi.dtype)], 1)          # [N, D+1]
        pen = torch.cat([torch.ones(d, dtype=phi.dtype), torch.zeros(1, dtype=phi.dtype)])
        sol = torch.linalg.solve(a.T @ a + lam * torch.diag(pen), a.T @ y)
        return sol[:d], sol[d]
    return torch.linalg.solve(phi.T @ phi + lam * torch.eye(d, dtype=phi.dtype), phi.T @ y), 0.0


def convex_ref(phi, labels, C, lam, head):
    """The exact minimiser of sum_i loss(W^T phi_i, y_i) + lam/2 ||W||^2 by Newton's method on
    the objective's autograd gradient and Hessian, with backtracking, to machine precision."""
    n, d = phi.shape
    y = F.one_hot(labels, C).to(phi.dtype)

    def obj(w):
        z = phi @ w.view(d, C)
        if head == "logistic":
            data = (torch.logsumexp(z, 1) - (z * y).sum(1)).sum()
        else:
            zt = (z * y).sum(1, keepdim=True)
            data = (torch.relu(1 + z - zt) * (1 - y)).square().sum()
        return data + 0.5 * lam * w.square().sum()

    w = torch.zeros(d * C, dtype=phi.dtype)
    polish = 0
    for _ in range(200):
        g = torch.autograd.functional.jacobian(obj, w)
        H = torch.autograd.functional.hessian(obj, w)
        step = torch.linalg.solve(H, g)
        if polish or float(g.norm()) < 1e-9:    # then full steps: converged to rounding
            w, polish = w - step, polish + 1
            if polish == 3:
                break
            continue
        t, f0 = 1.0, float(obj(w))
        while float(obj(w - t * step)) > f0 - 1e-4 * t * float(g @ step) and t > 1e-12:
            t /= 2
        w = w - t * step
    return w.view(d, C)


def draw_head(rng):
    kind = rng.choice(["r2d2", "metaoptnet", "protonet"])
    c = {"kind": kind, "net": rng.choice(["mlp", "mlp", "bnmlp", "conv_stride"]),
         "B": rng.randint(1, 3), "ways": rng.randint(2, 3), "shots": rng.randint(1, 3),
         "queries": rng.randint(1, 2), "transductive": rng.random() < 0.7,
         "batching": rng.choice(["loop", "vmap"]), "learn_lam": rng.random() < 0.7,
         "intercept": rng.random() < 0.7, "head": rng.choice(["svm", "logistic"]),
         "grad": rng.choice(["implicit", "unrolled"]), "refine": rng.choice([0, 1, 3]),
         "wide": rng.random() < 0.5, "lam": rng.choice([0.5, 1.0, 2.0]),
         "seed": rng.randrange(10**6)}
    if c["net"] == "bnmlp":
        c["transductive"] = True            # torch's BatchNorm: transductive only
    return c


def check_head(c):
    gen = torch.Generator().manual_seed(c["seed"])
    torch.manual_seed(c["seed"])
    rng = random.Random(c["seed"])
    if c["net"] in ("mlp", "bnmlp"):
        d_in = rng.randint(2, 4)
        width = rng.randint(7, 9) if c["wide"] else rng.randint(2, 3)   # N < D or N >= D
        backbone = (MLP(d_in, (width,), 2) if c["net"] == "mlp" else
                    BNMLP(d_in, (width,), 2)).double()
        shape = (d_in,)

        def feats(p, x, stats=None):
            return mlp_ref(p, x, head=False, prefix="backbone."), None
    else:
        size = rng.randint(5, 8)
        backbone = Conv4(1, rng.randint(2, 3), 2, pool="stride", image_size=size).double()
        shape = (1, size, size)

        def feats(p, x, stats=None):
            return conv4_ref(p, x, "stride", "mean", head=False, stats=stats,
                             prefix="backbone.")
    for p in backbone.parameters():
        p.data.add_(0.1 * torch.randn(p.shape, generator=gen, dtype=p.dtype))
    refine = c["refine"] if c["kind"] == "protonet" and c["transductive"] else 0
    if c["kind"] == "r2d2":
        learner = R2D2(backbone, lam=c["lam"], scale=3.0, learn_lam=c["learn_lam"],
                       intercept=c["intercept"], batching=c["batching"],
                       transductive=c["transductive"])
    elif c["kind"] == "metaoptnet":
        learner = MetaOptNet(backbone, head=c["head"], lam=c["lam"], steps=40, grad=c["grad"],
                             scale=2.0, batching=c["batching"], transductive=c["transductive"])
    else:
        learner = ProtoNet(backbone, scale=0.7, batching=c["batching"],
                           transductive=c["transductive"], refine=refine)
    batch = class_batch(rng, gen, c["B"], c["ways"], c["shots"], c["queries"], shape)
    C = c["ways"]

    def meta_loss(p):
        scale = p["log_scale"].exp()
        lam = p["log_lam"].exp() if "log_lam" in p else c["lam"]
        total = 0.0
        for i in range(batch.num_tasks):
            sx, sy, qx, qy = batch.task(i)
            fs, stats = feats(p, sx)
            fq, _ = feats(p, qx, None if c["transductive"] else stats)
            if c["kind"] == "r2d2":
                W, b = ridge_ref(fs, F.one_hot(sy, C).to(fs.dtype), lam, c["intercept"])
                logits = fq @ W + b
            elif c["kind"] == "metaoptnet":
                logits = fq @ convex_ref(fs, sy, C, lam, c["head"])
            else:
                onehot = F.one_hot(sy, C).to(fs.dtype)
                P0 = onehot.T @ fs / onehot.sum(0)[:, None]                 # [C, D]
                P = P0
                a = 2.0 * C / fq.shape[0]                                   # weight * C / M
                for _ in range(refine):
                    d2 = ((fq[:, None] - P[None]) ** 2).sum(-1)              # [M, C]
                    w = torch.softmax(0.5 * scale * -d2, -1) * a
                    P = (P0 + w.T @ fq) / (1 + w.sum(0)[:, None])
                logits = -((fq[:, None] - P[None]) ** 2).sum(-1)
            total += float(F.cross_entropy(scale * logits, qy))
        return total / batch.num_tasks

    params = params64(learner.model)
    grads = learner.meta_gradient(batch)
    gen2 = torch.Generator().manual_seed(c["seed"] + 1)
    errs = fd_errors(meta_loss, params, grads, gen2)
    value = learner.meta_loss(batch)[0].detach()
    errs["(meta_loss value)"] = abs(float(value) - meta_loss(params)) / abs(float(value))
    return errs


def head_key(c):
    mode = "" if c["transductive"] else " non-transductive"
    net = f" net={c['net']}{' N<D' if c['wide'] else ''} {c['batching']}"
    if c["kind"] == "r2d2":
        return (f"r2d2{' learn_lam' if c['learn_lam'] else ''}"
                f"{' intercept' if c['intercept'] else ''}{mode}{net}")
    if c["kind"] == "metaoptnet":
        return f"metaoptnet {c['head']} {c['grad']}{mode}{net}"
    return f"protonet refine={c['refine'] if c['transductive'] else 0}{mode}{net}"


# -- LoRA meta-learning ---------------------------------------------------------------------------
def draw_lora(rng):
    return {"method": rng.choice(["maml", "fomaml", "reptile"]), "steps": rng.randint(1, 2),
            "head_init": rng.choice(["zero", "learned"]), "scale": rng.choice([1.0, 3.0]),
            "opt": rng.choice(["sgd", "adam"]), "seed": rng.randrange(10**6)}


def check_lora(c):
    from metaloop.meta.lora_meta import lora_learner
    gen = torch.Generator().manual_seed(c["seed"])
    torch.manual_seed(c["seed"])
    rng = random.Random(c["seed"])
    d_in, ways, r, alpha = rng.randint(2, 3), 2, 2, 3.0
    model = MLP(d_in, (4,), ways).double()
    learner = lora_learner(model, c["method"], r=r, alpha=alpha, inner_lr=0.1,
                           inner_steps=c["steps"], head_init=c["head_init"],
                           logit_scale=c["scale"], inner_optimizer=c["opt"])
    for p in learner.model.parameters():              # lora_B starts at 0: move it
        p.data.add_(0.3 * torch.randn(p.shape, generator=gen, dtype=p.dtype))
    LORA_SCALE[0] = alpha / r
    buffers = {n: b for n, b in learner.model.named_buffers()}
    batch = class_batch(rng, gen, 2, ways, 2, 1, (d_in,))
    cfg = {"steps": c["steps"], "head_init": c["head_init"], "lr": 0.1, "learn_lr": False}
    adapted = learner.inner.names

    def fwd(p, x):
        return mlp_ref({**buffers, **p}, x)

    def loss(out, y):
        return F.cross_entropy(c["scale"] * out, y)
    params = params64(learner.model)
    grads = learner.meta_gradient(batch)
    if c["method"] == "reptile":
        return lora_reptile_errors(c, params, grads, batch, fwd, loss, adapted, ways)
    meta_loss, inner_grads = maml_reference(cfg, learner, batch, fwd, loss, adapted)
    gen2 = torch.Generator().manual_seed(c["seed"] + 1)
    if c["method"] == "fomaml":
        fixed = inner_grads(params)
        return fd_errors(lambda p: meta_loss(p, fixed), params, grads, gen2)
    return fd_errors(meta_loss, params, grads, gen2)


def lora_reptile_errors(c, params, grads, batch, fwd, loss, adapted, ways):
    """Reptile's direction mean_i (theta_0 - theta_i) on LoRA and the head, each task's
    inner SGD or Adam (beta1 = 0, fresh moments) written out."""
    want = {n: torch.zeros_like(t) for n, t in params.items()}
    head = ["head.weight", "head.bias"]
    for i in range(batch.num_tasks):
        sx, sy, _, _ = batch.task(i)
        theta = dict(params)
        if c["head_init"] == "zero":
            d = params["head.weight"].shape[1]
            theta["head.weight"] = torch.zeros(ways, d, dtype=torch.float64)
            theta["head.bias"] = torch.zeros(ways, dtype=torch.float64)
        v = {n: torch.zeros_like(theta[n]) for n in adapted}
        for k in range(c["steps"]):
            th = leaves(theta)
            g = torch.autograd.grad(loss(fwd(th, sx), sy), [th[n] for n in adapted])
            for n, gj in zip(adapted, g):
                if c["opt"] == "sgd":
                    theta[n] = theta[n] - 0.1 * gj
                    continue
                v[n] = 0.999 * v[n] + (1 - 0.999) * gj ** 2
                theta[n] = theta[n] - 0.1 * gj / ((v[n] / (1 - 0.999 ** (k + 1))).sqrt() + 1e-8)
        for n in adapted:
            if not (c["head_init"] == "zero" and n in head):
                want[n] += (params[n] - theta[n]) / batch.num_tasks
    return {n: float((grads[n] - want[n]).abs().max() / want[n].abs().max().clamp_min(1e-12))
            for n in params}


def lora_key(c):
    opt = f"-{c['opt']}" if c["method"] == "reptile" else ""
    return (f"lora-{c['method']}{opt} steps={c['steps']} {c['head_init']}-head "
            f"scale={c['scale']:g}")


# -- metaloop.adapt's differentiable heads, called directly ---------------------------------------
def draw_adapt(rng):
    return {"fn": rng.choice(["newton", "newton", "ridge", "refine"]),
            "head": rng.choice(["svm", "logistic"]), "grad": rng.choice(["implicit", "unrolled"]),
            "truncated": rng.random() < 0.4, "intercept": rng.random() < 0.5,
            "B": rng.randint(1, 2), "ways": rng.randint(2, 3), "shots": rng.randint(1, 3),
            "D": rng.randint(2, 7), "lam": rng.choice([0.3, 1.0, 3.0]),
            "refine": rng.randint(1, 3), "seed": rng.randrange(10**6)}


def check_adapt(c):
    from metaloop.adapt.newton_head import newton_head
    from metaloop.adapt.proto_head import prototypes, refine_prototypes
    from metaloop.adapt.ridge_head import head_logits, ridge_head
    gen = torch.Generator().manual_seed(c["seed"])
    B, C, D = c["B"], c["ways"], c["D"]
    N, M = C * c["shots"], 2 * C
    labels = torch.stack([torch.arange(C).repeat_interleave(c["shots"])[
        torch.randperm(N, generator=gen)] for _ in range(B)])             # [B, N]
    qy = torch.randint(C, (B, M), generator=gen)
    params = {"features": torch.randn(B, N, D, generator=gen, dtype=torch.float64),
              "queries": torch.randn(B, M, D, generator=gen, dtype=torch.float64),
              "log_lam": torch.tensor(math.log(c["lam"]), dtype=torch.float64)}
    # implicit gradients are exact at the solution only (documented): converged solves there
    truncated = c["truncated"] and c["grad"] == "unrolled"
    steps = c["refine"] if c["fn"] == "refine" else (1 + c["seed"] % 3 if truncated else 40)

    def theirs(p):
        f, q, lam = p["features"], p["queries"], p["log_lam"].exp()
        if c["fn"] == "newton":
            logits = head_logits(q, newton_head(f, labels, C, lam=lam, steps=steps,
                                                loss=c["head"], grad=c["grad"]))
        elif c["fn"] == "ridge":
            y = F.one_hot(labels, C).to(f.dtype)
            out = ridge_head(f, y, lam, intercept=c["intercept"])
            logits = head_logits(q, *out) if c["intercept"] else head_logits(q, out)
        else:
            P = refine_prototypes(prototypes(f, labels, C), q, lam, steps, 0.5, 2.0)
            logits = -((q[:, :, None] - P[:, None]) ** 2).sum(-1)
        return F.cross_entropy(logits.reshape(B * M, C), qy.reshape(-1))

    def ours(p):
        f, q, lam = p["features"], p["queries"], p["log_lam"].exp()
        if c["fn"] == "newton" and truncated:          # the truncated solver is the definition
            with torch.no_grad():
                return float(theirs(p))
        total = 0.0
        for i in range(B):
            if c["fn"] == "newton":
                logits = q[i] @ convex_ref(f[i], labels[i], C, lam, c["head"])
            elif c["fn"] == "ridge":
                W, b = ridge_ref(f[i], F.one_hot(labels[i], C).to(f.dtype), lam, c["intercept"])
                logits = q[i] @ W + b
            else:
                onehot = F.one_hot(labels[i], C).to(f.dtype)
                P0 = onehot.T @ f[i] / onehot.sum(0)[:, None]
                P, a = P0, 2.0 * C / M
                for _ in range(steps):
                    d2 = ((q[i][:, None] - P[None]) ** 2).sum(-1)
                    w = torch.softmax(0.5 * lam * -d2, -1) * a
                    P = (P0 + w.T @ q[i]) / (1 + w.sum(0)[:, None])
                logits = -((q[i][:, None] - P[None]) ** 2).sum(-1)
            total += float(F.cross_entropy(logits, qy[i], reduction="sum"))
        return total / (B * M)

    p = leaves(params)
    g = torch.autograd.grad(theirs(p), list(p.values()))
    grads = dict(zip(p, g))
    return fd_errors(ours, params, grads, torch.Generator().manual_seed(c["seed"] + 1))


def adapt_key(c):
    if c["fn"] == "newton":
        return (f"newton_head {c['head']} {c['grad']}"
                f"{' truncated' if c['truncated'] and c['grad'] == 'unrolled' else ' converged'}")
    if c["fn"] == "ridge":
        return f"ridge_head{' intercept' if c['intercept'] else ''}"
    return "refine_prototypes (tensor scale)"


# -- the sample ------------------------------------------------------------------------------------
FAMILIES = {"maml": (draw_maml, check_maml, maml_key),
            "reptile": (draw_reptile, check_reptile, reptile_key),
            "head": (draw_head, check_head, head_key),
            "lora": (draw_lora, check_lora, lora_key),
            "adapt": (draw_adapt, check_adapt, adapt_key)}
WEIGHTS = {"maml": 5, "reptile": 2, "head": 4, "lora": 1, "adapt": 2}


def cases(n, master=20261206):
    rng = random.Random(master)
    pool = [f for f, w in WEIGHTS.items() for _ in range(w)]
    return [(f, FAMILIES[f][0](rng)) for f in (rng.choice(pool) for _ in range(n))]


def run_case(family, cfg):
    _, check, key = FAMILIES[family]
    return key(cfg), check(cfg)


QUICK = cases(24)
SLOW = cases(400)[24:]


# what the learners refuse, as documented (MAML's Raises)
REFUSALS = ("is not supported: the recomputed inner step has no vmap rule",
            "would give a wrong meta-gradient: torch's double backward",
            "batching='vmap' cannot run", "batching='threads' needs a model without buffers")


def _assert_exact(family, cfg):
    key, errs = run_case(family, cfg)
    if "refused" in errs:
        assert any(r in errs["refused"] for r in REFUSALS), f"{key}: {errs['refused']}"
        return
    bad = {n: e for n, e in errs.items() if not e < TOL}
    assert not bad, f"{key}: relative errors above {TOL}: {bad}"


@pytest.fixture
def one_thread():
    saved = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(saved)


@pytest.mark.parametrize("family,cfg", QUICK, ids=[f"{f}{i}" for i, (f, _) in enumerate(QUICK)])
def test_meta_gradient_matches_finite_differences(family, cfg, one_thread):
    _assert_exact(family, cfg)


@pytest.mark.slow
@pytest.mark.parametrize("family,cfg", SLOW, ids=[f"{f}{i}" for i, (f, _) in enumerate(SLOW)])
def test_meta_gradient_matches_finite_differences_wide(family, cfg, one_thread):
    _assert_exact(family, cfg)


if __name__ == "__main__":
    import time
    torch.set_num_threads(1)
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 200
    worst: dict[str, tuple[float, str]] = {}
    refused = defaultdict(int)
    t0 = time.time()
    for idx, (family, cfg) in enumerate(cases(n)):
        key, errs = run_case(family, cfg)
        if "refused" in errs:
            refused[errs["refused"][:90]] += 1
            continue
        name, e = max(errs.items(), key=lambda kv: kv[1])
        if e > worst.get(key, (-1.0, ""))[0]:
            worst[key] = (e, f"{name} case {idx}")
        if e >= TOL:
            print(f"!! case {idx} {key}: {name} {e:.2e}  {cfg}", flush=True)
    for key in sorted(worst):
        print(f"{worst[key][0]:.1e}  {key}  ({worst[key][1]})")
    for msg, k in refused.items():
        print(f"refused x{k}: {msg}")
    print(f"{n} cases in {time.time() - t0:.0f} s")

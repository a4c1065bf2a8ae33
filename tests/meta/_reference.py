"""The Conv4 network spelled out with torch.nn.functional on plain tensors, independently of
metaloop's functional core: the reference the meta-learner tests compare against; and the
pieces the solved-head tests (R2D2, MetaOptNet) share: task batches, a gated backbone,
reference gradients and finite differences."""

import torch
import torch.nn.functional as F
from torch import nn

import metaloop as ml


def conv4_features_ref(p, x, prefix=""):
    """Conv4 (max-pool) features ``[N, D]``, BatchNorm as plain batch mean/variance arithmetic.

    ``p`` maps ``f"{prefix}body.{i}.conv.weight"`` etc. to tensors; ``x`` is ``[N, C, H, W]``.
    """
    for i in range(4):
        b = f"{prefix}body.{i}."
        x = F.conv2d(x, p[b + "conv.weight"], p[b + "conv.bias"], padding=1)
        mean = x.mean((0, 2, 3), keepdim=True)
        var = ((x - mean) ** 2).mean((0, 2, 3), keepdim=True)
        x = (x - mean) / torch.sqrt(var + 1e-5)
        x = x * p[b + "bn.weight"][None, :, None, None] + p[b + "bn.bias"][None, :, None, None]
        x = F.max_pool2d(F.relu(x), 2)
    return x.flatten(1)


def support_normalised_features_ref(p, sx, qx, prefix=""):
    """Conv4 (max-pool) features of a task's support ``[S, D]`` and query ``[Q, D]`` sets when
    every BatchNorm normalises both sets with the support set's batch mean and variance (the
    non-transductive setting), written out layer by layer."""
    for i in range(4):
        b = f"{prefix}body.{i}."
        sx = F.conv2d(sx, p[b + "conv.weight"], p[b + "conv.bias"], padding=1)
        qx = F.conv2d(qx, p[b + "conv.weight"], p[b + "conv.bias"], padding=1)
        mean = sx.mean((0, 2, 3), keepdim=True)
        var = ((sx - mean) ** 2).mean((0, 2, 3), keepdim=True)
        w, bias = p[b + "bn.weight"][None, :, None, None], p[b + "bn.bias"][None, :, None, None]
        sx = F.max_pool2d(F.relu((sx - mean) / torch.sqrt(var + 1e-5) * w + bias), 2)
        qx = F.max_pool2d(F.relu((qx - mean) / torch.sqrt(var + 1e-5) * w + bias), 2)
    return sx.flatten(1), qx.flatten(1)


def task_features_ref(p, sx, qx, prefix="", detach=None):
    """Support and query features of one task by :func:`conv4_features_ref`; ``detach`` names
    the set ("support" or "query") whose features are cut from the graph, if any."""
    fs, fq = conv4_features_ref(p, sx, prefix), conv4_features_ref(p, qx, prefix)
    fs = fs.detach() if detach == "support" else fs
    fq = fq.detach() if detach == "query" else fq
    return fs, fq


def reference_grad(reference_loss, model, batch, *args, **kw):
    """``{name: d reference_loss(params, batch, ...) / d param}`` over ``model``'s named
    parameters, zero for those the loss does not use."""
    params = dict(model.named_parameters())
    g = torch.autograd.grad(reference_loss(params, batch, *args, **kw), list(params.values()),
                            allow_unused=True)
    return {n: torch.zeros_like(v) if gi is None else gi for (n, v), gi in zip(params.items(), g)}


def assert_close_rel(got, ref, rtol):
    """Each tensor of ``got`` within ``rtol`` of ``ref``'s, relative to ``ref``'s largest entry."""
    for n in ref:
        scale = ref[n].abs().max().clamp_min(1e-6)   # conv biases before BN: exactly 0
        assert (got[n] - ref[n]).abs().max() / scale < rtol, n


def image_task_batch(B, seed, size, ways, shots, queries):
    """``B`` tasks of random float64 ``[1, size, size]`` images, classes in order."""
    g = torch.Generator().manual_seed(seed)
    sy = torch.arange(ways).repeat_interleave(shots).repeat(B, 1)   # [B, S]
    qy = torch.arange(ways).repeat_interleave(queries).repeat(B, 1)  # [B, Q]
    dt = torch.float64
    return ml.TaskBatch(torch.randn(B, ways * shots, 1, size, size, generator=g, dtype=dt), sy,
                        torch.randn(B, ways * queries, 1, size, size, generator=g, dtype=dt), qy)


def vector_task_batch():
    """Two 2-way tasks of random float64 4-d vectors: 4 support and 6 query examples each."""
    g = torch.Generator().manual_seed(0)
    return ml.TaskBatch(torch.randn(2, 4, 4, generator=g, dtype=torch.float64),
                        torch.tensor([[0, 1, 0, 1]] * 2),
                        torch.randn(2, 6, 4, generator=g, dtype=torch.float64),
                        torch.tensor([[0, 1, 1, 0, 0, 1]] * 2))


class RandomImages:
    """A tiny seeded task family: sample(n, generator) -> ``make_batch(B=n, seed=...)``."""

    def __init__(self, make_batch):
        self.make_batch = make_batch

    def sample(self, n, generator=None):
        seed = int(torch.randint(0, 2**31 - 1, (1,), generator=generator))
        return self.make_batch(B=n, seed=seed)


def mean_query_loss(learner, family, tasks, seed):
    """The mean query cross-entropy after ``learner.adapt`` over the ``tasks`` tasks that
    ``evaluate(..., tasks=tasks, seed=seed)`` draws from ``family``, one task at a time."""
    batch = family.sample(tasks, torch.Generator().manual_seed(seed))
    manual = [float(F.cross_entropy(learner.predict(learner.adapt(sx, sy), qx), qy))
              for sx, sy, qx, qy in (batch.task(i) for i in range(tasks))]
    return sum(manual) / tasks


class Gate(nn.Module):
    """Conv4 features, detached for inputs with ``cut`` examples (the support or query set)."""

    def __init__(self, net: nn.Module, cut: int):
        super().__init__()
        self.net, self.cut = net, cut

    def forward(self, x, head=False):
        h = self.net(x, head=False)
        return h.detach() if x.shape[0] == self.cut else h


def directional_derivatives(learner, batch, eps, seed=5):
    """The meta-loss's derivative along a random float64 direction ``v`` of all meta-parameters,
    twice: by central finite differences with step ``eps``, and as ``<meta_gradient, v>``."""
    params = dict(learner.model.named_parameters())
    g = learner.meta_gradient(batch)
    gen = torch.Generator().manual_seed(seed)
    v = {n: torch.randn(p.shape, generator=gen, dtype=torch.float64) for n, p in params.items()}

    def loss_at(t):
        with torch.no_grad():
            for n, p in params.items():
                p.add_(t * v[n])
        out = float(learner.meta_loss(batch)[0].detach())
        with torch.no_grad():
            for n, p in params.items():
                p.sub_(t * v[n])
        return out
    fd = (loss_at(eps) - loss_at(-eps)) / (2 * eps)
    return fd, sum(float((g[n] * v[n]).sum()) for n in params)


def conv4_plain(p, x):
    """Conv4 with F.conv2d / F.batch_norm, ReLU before the max-pool, NCHW as given."""
    for i in range(4):
        b = f"body.{i}."
        x = F.conv2d(x, p[b + "conv.weight"], p[b + "conv.bias"], padding=1)
        x = F.batch_norm(x, None, None, p[b + "bn.weight"], p[b + "bn.bias"], True, 0.0, 1e-5)
        x = F.max_pool2d(F.relu(x), 2)
    return x.flatten(1) @ p["head.weight"].T + p["head.bias"]


def conv4_plain_stride(p, x):
    """Conv4 with stride-2 convolutions and a spatial mean before the head, NCHW as given."""
    for i in range(4):
        b = f"body.{i}."
        x = F.conv2d(x, p[b + "conv.weight"], p[b + "conv.bias"], stride=2, padding=1)
        x = F.batch_norm(x, None, None, p[b + "bn.weight"], p[b + "bn.bias"], True, 0.0, 1e-5)
        x = F.relu(x)
    return x.mean((2, 3)) @ p["head.weight"].T + p["head.bias"]


def plain_meta_gradient(params, batch, lr, steps, adapt, second_order=True, fwd=conv4_plain):
    """Mean over tasks of d query loss / d params after ``steps`` SGD steps on ``adapt``: a
    per-task ``autograd.grad`` loop written without metaloop (the fast paths' reference)."""
    names = list(params)
    total = {n: torch.zeros_like(v) for n, v in params.items()}
    for i in range(batch.num_tasks):
        sx, sy, qx, qy = batch.task(i)
        assert sx.is_contiguous() and qx.is_contiguous()            # NCHW
        p = dict(params)
        for _ in range(steps):
            g = torch.autograd.grad(F.cross_entropy(fwd(p, sx), sy),
                                    [p[n] for n in adapt], create_graph=second_order)
            p = {**p, **{n: p[n] - lr * gi for n, gi in zip(adapt, g)}}
        loss = F.cross_entropy(fwd(p, qx), qy)
        for n, g in zip(names, torch.autograd.grad(loss, [params[n] for n in names],
                                                   allow_unused=True)):
            if g is not None:
                total[n] += g / batch.num_tasks
    return total


def plain_batch(tasks=3, ways=3, shots=2, queries=3, seed=0):
    """``tasks`` tasks of random ``[1, 28, 28]`` images in the default dtype."""
    g = torch.Generator().manual_seed(seed)
    sy = torch.arange(ways).repeat_interleave(shots).repeat(tasks, 1)
    qy = torch.arange(ways).repeat_interleave(queries).repeat(tasks, 1)
    return ml.TaskBatch(torch.rand(tasks, sy.shape[1], 1, 28, 28, generator=g), sy,
                        torch.rand(tasks, qy.shape[1], 1, 28, 28, generator=g), qy)


def rel_err(got, ref):
    """Max abs difference over all tensors / the largest entry of ``ref``."""
    top = max(float(r.abs().max()) for r in ref.values())
    return max(float((got[n] - ref[n]).abs().max()) for n in ref) / top


def head_learners() -> dict:
    """The solved-head learner variants the step tests run, by name: ``name -> build(net)``
    for ProtoNet (plain, refined, non-transductive), R2D2 (plain, non-transductive) and
    MetaOptNet (SVM and logistic heads, 3 Newton steps)."""
    from metaloop.meta import R2D2, MetaOptNet, ProtoNet

    return {
        "protonet": lambda net: ProtoNet(net),
        "protonet-refined": lambda net: ProtoNet(net, refine=3),
        "protonet-non-transductive": lambda net: ProtoNet(net, transductive=False),
        "r2d2": lambda net: R2D2(net),
        "r2d2-non-transductive": lambda net: R2D2(net, transductive=False),
        "metaoptnet-svm": lambda net: MetaOptNet(net, steps=3),
        "metaoptnet-logistic": lambda net: MetaOptNet(net, head="logistic", steps=3),
    }

"""``metaloop.build`` on a CUDA device: "auto" batching becomes vmap there (faster on a GPU,
convolutions included) only where vmap can run the model, and keeps "auto"'s switch to the
loop at the first call vmap cannot run. Before, it became an explicit "vmap": a model of
the user's own with dropout, a recurrent layer or BatchNorm running statistics was refused
at build ("use batching='loop' or 'auto'", although "auto" was asked for), and a forward
that draws random numbers failed at the first step. The device only chooses the batching
(nothing is moved), so the CPU runs these learners."""

import copy

import pytest
import torch
from torch import nn

import metaloop as ml
from metaloop import build, config

METHODS = ["maml", "fomaml", "anil", "reptile", "protonet", "r2d2", "metaoptnet",
           "pretrain", "scratch"]


class _Family:
    kind, ways, image_shape = "classification", 5, (8,)


class Drop(nn.Module):
    """An nn.Dropout layer in training mode: vmap cannot run it (``vmap_refusal``)."""

    def __init__(self):
        super().__init__()
        self.l1, self.drop, self.head = nn.Linear(8, 16), nn.Dropout(0.3), nn.Linear(16, 5)

    def forward(self, x, head=True):
        f = self.drop(torch.relu(self.l1(x)))
        return self.head(f) if head else f


class Recurrent(nn.Module):
    """A GRU over the 8 features as a sequence: torch's recurrent layers have no vmap rule."""

    def __init__(self):
        super().__init__()
        self.rnn, self.head = nn.GRU(1, 16, batch_first=True), nn.Linear(16, 5)

    def forward(self, x, head=True):
        f = self.rnn(x.unsqueeze(-1))[0][:, -1]
        return self.head(f) if head else f


class Stats(nn.Module):
    """torch's BatchNorm1d with running statistics, in training mode."""

    def __init__(self):
        super().__init__()
        self.l1, self.bn, self.head = nn.Linear(8, 16), nn.BatchNorm1d(16), nn.Linear(16, 5)

    def forward(self, x, head=True):
        f = torch.relu(self.bn(self.l1(x)))
        return self.head(f) if head else f


class Noisy(nn.Module):
    """Noise drawn by torch.randn_like in forward: found only when the model runs."""

    def __init__(self):
        super().__init__()
        self.l1, self.head = nn.Linear(8, 16), nn.Linear(16, 5)

    def forward(self, x, head=True):
        f = torch.relu(self.l1(x))
        f = f + 0.1 * torch.randn_like(f)
        return self.head(f) if head else f


def _cfg(method: str, batching: str = "auto") -> dict:
    return config.validate({"family": {"name": "omniglot"}, "model": {"name": "mlp"},
                            "method": {"name": method, "batching": batching}})


def _batch(B=2, ways=5, S=1, Q=2):
    g = torch.Generator().manual_seed(1)
    sx, qx = torch.randn(B, ways * S, 8, generator=g), torch.randn(B, ways * Q, 8, generator=g)
    sy = torch.arange(ways).repeat_interleave(S).repeat(B, 1)
    qy = torch.arange(ways).repeat_interleave(Q).repeat(B, 1)
    return ml.TaskBatch(sx, sy, qx, qy, classes=torch.arange(ways).repeat(B, 1))


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("model_cls", [Drop, Recurrent, Stats])
def test_auto_on_cuda_builds_the_loop_for_a_model_vmap_cannot_run(model_cls, method):
    model = model_cls()
    assert build.batching_on(_cfg(method)["method"], "cuda", model) == "auto"
    learner = build.build_learner(_cfg(method), _Family(), model, device="cuda")
    assert learner.batching == "loop"
    grads = learner.meta_gradient(_batch())
    assert all(torch.isfinite(g).all() for g in grads.values())


@pytest.mark.parametrize("method", ["maml", "fomaml", "anil", "reptile", "protonet"])
def test_an_explicit_vmap_on_cuda_is_still_refused_by_name(method):
    with pytest.raises(ValueError, match="dropout"):
        build.build_learner(_cfg(method, "vmap"), _Family(), Drop(), device="cuda")


@pytest.mark.parametrize("method", ["maml", "fomaml", "anil", "reptile", "protonet", "r2d2"])
def test_auto_on_cuda_runs_vmap_and_falls_back_to_the_loops_numbers(method):
    torch.manual_seed(0)
    model = Noisy()
    auto = build.build_learner(_cfg(method), _Family(), model, device="cuda")
    loop = build.build_learner(_cfg(method, "loop"), _Family(), copy.deepcopy(model))
    assert auto.batching == "vmap" and auto._auto_vmap        # vmap, with auto's fallback
    batch = _batch()
    for seed in (0, 1):                  # the first call falls back, the second is the loop
        torch.manual_seed(seed)
        got = auto.meta_gradient(batch)
        torch.manual_seed(seed)
        want = loop.meta_gradient(batch)
        assert auto.batching == "loop"
        assert got.keys() == want.keys()
        for k in want:
            assert torch.equal(got[k], want[k]), k


def test_conv4_on_cuda_is_vmapped_with_the_fallback_and_on_the_cpu_looped():
    cfg = config.validate({"family": {"name": "omniglot"}, "model": {"name": "conv4"},
                           "method": {"name": "maml"}})

    class Images(_Family):
        image_shape = (1, 28, 28)

    model = build.build_model(cfg["model"], Images(), "maml")
    on_gpu = build.build_learner(cfg, Images(), model, device="cuda")
    assert on_gpu.batching == "vmap" and on_gpu._auto_vmap
    assert build.build_learner(cfg, Images(), model).batching == "loop"
    cfg["method"]["batching"] = "vmap"                          # explicit: no fallback
    assert not build.build_learner(cfg, Images(), model, device="cuda")._auto_vmap

"""``train(..., cuda_graph=True)`` (``metaloop.train.graphs``) without a GPU.

A CUDA graph needs CUDA, so these tests run the graph step's own code path on the CPU with
``record=False`` (``check_supported`` patched out): the step through its static inputs, the
learning rate written before each step, the finite flags handed to the guard, checkpoints and
resumes. It must give the plain loop's numbers bit for bit. ``benchmarks/gpu_graph.py`` and
``benchmarks/gpu_paper.sh`` check the recorded graph against the eager step on a GPU.
"""

import json
from pathlib import Path

import pytest
import torch

import metaloop as ml
from metaloop.config import check_combinations, load
from metaloop.meta import MAML
from metaloop.models import MLP
from metaloop.train import graphs, loop
from metaloop.train.checkpoint import load_checkpoint

ROOT = Path(__file__).resolve().parents[2]


def _learner(batching="loop"):
    torch.manual_seed(0)
    return MAML(MLP(1, (8, 8), 1), 0.01, 2, batching=batching)


def _params(learner):
    return {n: p.detach().clone() for n, p in learner.model.named_parameters()}


def _lines(path):
    return [{k: v for k, v in json.loads(x).items() if k != "time"}
            for x in (path / "metrics.jsonl").read_text().splitlines()]


@pytest.fixture
def graph_on_cpu(monkeypatch):
    monkeypatch.setattr(graphs, "check_supported", lambda *a, **k: None)


@pytest.mark.parametrize("batching", ["loop", "vmap"])
def test_graph_step_path_is_the_plain_loop(tmp_path, graph_on_cpu, batching):
    fam = ml.tasks.Sinusoid(5, 5)
    kw = dict(iterations=7, meta_batch=4, lr=3e-3, lr_schedule="cosine", progress=False,
              log_every=3, checkpoint_every=4)
    plain, graphed = _learner(batching), _learner(batching)
    ml.train(plain, fam, out_dir=tmp_path / "plain", **kw)
    ml.train(graphed, fam, out_dir=tmp_path / "graph", cuda_graph=True, **kw)
    a, b = _params(plain), _params(graphed)
    assert all(torch.equal(a[n], b[n]) for n in a)
    assert _lines(tmp_path / "graph") == _lines(tmp_path / "plain")
    assert [x["iteration"] for x in _lines(tmp_path / "graph")] == [3, 6, 7]


def test_graph_run_resumes_exactly_and_either_way(tmp_path, graph_on_cpu):
    """A run checkpointed with the graph step continues without it, and back, exactly."""
    fam = ml.tasks.Sinusoid(5, 5)
    kw = dict(meta_batch=4, lr=3e-3, progress=False, checkpoint_every=3)
    full = _learner()
    ml.train(full, fam, iterations=9, out_dir=tmp_path / "full", **kw)
    part = _learner()
    ml.train(part, fam, iterations=3, out_dir=tmp_path / "part", cuda_graph=True, **kw)
    ml.train(_learner(), fam, iterations=6, out_dir=tmp_path / "part", resume=True, **kw)
    resumed = _learner()
    ml.train(resumed, fam, iterations=9, out_dir=tmp_path / "part", resume=True,
             cuda_graph=True, **kw)
    a, b = _params(full), _params(resumed)
    assert all(torch.equal(a[n], b[n]) for n in a)
    assert _lines(tmp_path / "part") == _lines(tmp_path / "full")
    tensors, state = load_checkpoint(tmp_path / "part")
    assert state["iteration"] == 9
    assert all(not g["capturable"] for g in state["optimizer"]["param_groups"])


class _NanAt:
    """A learner whose meta-gradient is NaN at one call (1-based)."""

    def __init__(self, learner, bad: int):
        self.inner, self.bad, self.calls = learner, bad, 0
        self.model = learner.model

    def __getattr__(self, name):
        return getattr(self.inner, name)

    def meta_gradient(self, batch, with_metrics=False):
        self.calls += 1
        grads, metrics = self.inner.meta_gradient(batch, with_metrics=True)
        if self.calls == self.bad:
            grads = {n: g * float("nan") for n, g in grads.items()}
        return (grads, metrics) if with_metrics else grads


def test_graph_step_stops_on_a_non_finite_step_and_keeps_the_last_good_checkpoint(
        tmp_path, graph_on_cpu):
    learner = _NanAt(_learner(), bad=5)
    with pytest.raises(loop.NonFiniteLossError, match="iteration 5"):
        ml.train(learner, ml.tasks.Sinusoid(5, 5), iterations=9, meta_batch=4, progress=False,
                 out_dir=tmp_path, checkpoint_every=2, log_every=3, cuda_graph=True)
    _, state = load_checkpoint(tmp_path)
    assert state["iteration"] == 4                    # the check before saving 6 stopped it
    assert [x["iteration"] for x in _lines(tmp_path)] == [3]


def test_graph_step_refuses_a_batch_of_another_shape():
    learner = _learner()
    opt = torch.optim.Adam(learner.model.parameters(), lr=1e-3)
    step = graphs.GraphStep(learner, opt, record=False)
    fam = ml.tasks.Sinusoid(5, 5)
    step.step(fam.sample(2, torch.Generator().manual_seed(0)), 1e-3)
    with pytest.raises(ValueError, match=r"support_x is \(3, 5, 1\).*the recorded step takes "
                                         r"\(2, 5, 1\)"):
        step.step(fam.sample(3, torch.Generator().manual_seed(1)), 1e-3)


@pytest.mark.parametrize("change, message", [
    ({}, "needs a model on a CUDA device, this one has parameters on cpu"),
    ({"cuda_model": True}, r"needs the tasks drawn on the GPU \(metaloop.tasks.DeviceTasks"),
    ({"cuda_model": True, "gen": "cuda", "sharded": True}, "trains in one process"),
    ({"cuda_model": True, "gen": "cuda", "clip_grad_norm": 10.0}, "set clip_grad_norm = 0"),
    ({"cuda_model": True, "gen": "cuda", "optimizer": "sgd"}, "not optimizer='sgd'"),
    ({"cuda_model": True, "gen": "cuda", "prefetch": True}, "set prefetch off or 'auto'"),
])
def test_check_supported_names_the_problem(change, message, monkeypatch):
    model = MLP(1, (8,), 1)
    if change.get("cuda_model"):                      # a parameter that says it is on CUDA
        fake = torch.nn.Parameter(torch.zeros(1))
        monkeypatch.setattr(type(fake), "device", property(lambda self: torch.device("cuda")))
        model = torch.nn.ParameterList([fake])
    kw = dict(sharded=False, clip_grad_norm=0.0, optimizer="adam", prefetch=False)
    kw.update({k: v for k, v in change.items() if k in kw})
    with pytest.raises(ValueError, match=message):
        graphs.check_supported(model, torch.device(change.get("gen", "cpu")), **kw)


def test_train_refuses_cuda_graph_on_the_cpu():
    with pytest.raises(ValueError, match="needs a model on a CUDA device"):
        ml.train(_learner(), ml.tasks.Sinusoid(5, 5), iterations=2, meta_batch=2,
                 progress=False, cuda_graph=True)


def _config(**train):
    cfg = load(ROOT / "configs" / "omniglot_maml_5w1s_full.toml")
    cfg["train"].update(train)
    return cfg


def test_config_cuda_graph_names_what_it_needs():
    check_combinations(_config(cuda_graph=True, device_tasks=True))
    with pytest.raises(ValueError, match=r"train.cuda_graph = true replays one recorded step "
                                         r"on the GPU; it needs train.device_tasks = true, "
                                         r"train.clip_grad_norm = 0"):
        check_combinations(_config(cuda_graph=True, clip_grad_norm=10.0))


def test_checkpoint_keeps_a_device_learning_rate_as_a_number():
    """A capturable Adam's rate is a 0-dim tensor: stored as a float, and loaded back into
    the same tensor (the one a recorded graph reads), with this optimizer's own flags."""
    p = torch.nn.Parameter(torch.ones(3))
    lr = torch.tensor(0.5)
    opt = torch.optim.Adam([p], lr=lr)
    p.grad = torch.ones(3)
    opt.step()
    tensors, groups = loop._optim_tensors(opt)
    assert groups[0]["lr"] == 0.5 and isinstance(groups[0]["lr"], float)
    json.dumps(groups)
    groups[0].update(lr=0.25, capturable=True)              # as a graph run saved them
    loop._load_optim(opt, tensors, groups)
    assert opt.param_groups[0]["lr"] is lr and float(lr) == 0.25
    assert opt.param_groups[0]["capturable"] is False

"""A task family of one's own (classification of vectors, regression) fed to the training
loop, evaluation and the learners: what the docs promise of any ``TaskFamily``."""

import pytest
import torch

import metaloop as ml
from metaloop.tasks.protocol import check_family


class Blobs:
    """Ways Gaussian blobs of 4-d vectors a task; the labels' global ids in ``classes``."""

    kind, num_classes, class_names, input_shape = "classification", 8, list("abcdefgh"), (4,)

    def __init__(self, ways=3, shots=2, queries=3):
        self.ways, self.shots, self.queries = ways, shots, queries

    def with_shots(self, shots, queries=None):
        return Blobs(self.ways, shots, self.queries if queries is None else queries)

    def sample(self, n, generator=None):
        w, g = self.ways, generator
        sy = torch.arange(w).repeat_interleave(self.shots).expand(n, -1)      # [n, w*s]
        qy = torch.arange(w).repeat_interleave(self.queries).expand(n, -1)    # [n, w*q]
        centres = torch.randn(n, w, 4, generator=g) * 3                       # [n, w, 4]
        sx = centres[torch.arange(n)[:, None], sy] + torch.randn(*sy.shape, 4, generator=g)
        qx = centres[torch.arange(n)[:, None], qy] + torch.randn(*qy.shape, 4, generator=g)
        classes = torch.stack([torch.randperm(8, generator=g)[:w] for _ in range(n)])
        return ml.TaskBatch(sx, sy.contiguous(), qx, qy.contiguous(), classes)


class Waves:
    """y = a sin(x) with a in [0.1, 4.1], x in [-5, 5]."""

    kind, ways, num_classes, class_names, input_shape = "regression", None, None, None, (1,)

    def __init__(self, shots=5, queries=5):
        self.shots, self.queries = shots, queries

    def with_shots(self, shots, queries=None):
        return Waves(shots, self.queries if queries is None else queries)

    def sample(self, n, generator=None):
        a = torch.rand(n, 1, 1, generator=generator) * 4 + 0.1                 # [n, 1, 1]
        x = torch.rand(n, self.shots + self.queries, 1, generator=generator) * 10 - 5
        y = a * torch.sin(x)                                                     # [n, S+Q, 1]
        s = self.shots
        return ml.TaskBatch(x[:, :s], y[:, :s], x[:, s:], y[:, s:])


def _learners(fam, dtype=torch.float32):
    torch.manual_seed(0)
    if fam.kind == "regression":
        return [ml.meta.MAML(ml.models.MLP(in_dim=1, hidden=(8,), out_dim=1).to(dtype),
                             inner_lr=0.01, loss="mse")]
    mlp = lambda: ml.models.MLP(in_dim=4, hidden=(8,), out_dim=3).to(dtype)  # noqa: E731
    return [ml.meta.MAML(mlp(), loss="cross_entropy"),
            ml.meta.ANIL(mlp(), loss="cross_entropy"),
            ml.meta.Reptile(mlp(), loss="cross_entropy"), ml.meta.R2D2(mlp()),
            ml.meta.MetaOptNet(mlp()), ml.meta.ProtoNet(mlp()),
            ml.meta.Pretrain(ml.models.MLP(in_dim=4, hidden=(8,), out_dim=8).to(dtype),
                             loss="cross_entropy")]


def _flat(learner):
    return torch.cat([p.detach().double().flatten() for p in learner.model.parameters()])


@pytest.mark.parametrize("fam", [Blobs(), Waves()], ids=["classification", "regression"])
def test_every_learner_trains_and_evaluates_on_a_family_of_ones_own(fam):
    check_family(fam)
    for learner in _learners(fam):
        before = _flat(learner)
        ml.train(learner, fam, iterations=2, meta_batch=3, progress=False)
        assert not torch.equal(before, _flat(learner)), type(learner).__name__
        r = ml.evaluate(learner, fam.with_shots(3), tasks=4, steps=(0, 1))
        assert len(r["per_task"]["loss"][1]) == 4
        assert ("accuracy" in r) == (fam.kind == "classification")


@pytest.mark.parametrize("fam", [Blobs(), Waves()], ids=["classification", "regression"])
def test_prefetch_and_resume_are_exact(fam, tmp_path):
    def run(**kw):
        learner = _learners(fam)[0]
        ml.train(learner, fam, meta_batch=3, progress=False, checkpoint_every=2, **kw)
        return _flat(learner)

    plain = run(iterations=4, prefetch=False)
    assert torch.equal(run(iterations=4, prefetch=True), plain)
    run(iterations=2, prefetch=False, out_dir=tmp_path / "run")
    assert torch.equal(run(iterations=4, prefetch=True, out_dir=tmp_path / "run",
                           resume=True), plain)


def test_a_float64_model_gets_its_batches_cast():
    fam = Waves()
    learner = _learners(fam, torch.float64)[0]
    ml.train(learner, fam, iterations=1, meta_batch=2, progress=False, val_family=fam,
             val_every=1, val_tasks=2)
    assert next(learner.model.parameters()).dtype == torch.float64


def test_evaluation_draws_the_seeds_tasks():
    fam, learner = Blobs(), _learners(Blobs())[0]
    r = ml.evaluate(learner, fam, tasks=5, steps=(1,), seed=7)
    batch = fam.sample(5, generator=torch.Generator().manual_seed(7))
    for i in range(5):
        sx, sy, qx, qy = batch.task(i)
        params = list(learner.adapt_path(sx, sy, 1))[-1]
        loss = learner.inner.loss_fn(learner.predict(params, qx), qy)
        assert r["per_task"]["loss"][0][i] == pytest.approx(float(loss), rel=1e-5)


def test_validation_scores_val_seeds_tasks():
    fam = Blobs()
    learner = _learners(fam)[0]
    r = ml.train(learner, fam, iterations=2, meta_batch=2, progress=False, val_family=fam,
                 val_every=2, val_tasks=3, val_seed=11)
    again = ml.evaluate(learner, fam, tasks=3, steps=(learner.inner.steps,), seed=11)
    assert r["val"]["val_loss"] == pytest.approx(again["loss"]["mean"][0], rel=1e-6)
    assert r["val"]["val_accuracy"] == pytest.approx(again["accuracy"]["mean"][0], rel=1e-6)

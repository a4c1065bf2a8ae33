"""finetune_experience: replay batches, kept heads, naive equivalence, trainable subsets,
early stopping, LoRA, and the errors bad input gets."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from metaloop.continual.finetune import (
    batch_loss,
    evaluate_experiences,
    finetune_experience,
    select_trainable,
)
from metaloop.continual.heads import features, head_param_names, init_heads, init_params
from metaloop.continual.replay import Batch, replay_count
from metaloop.continual.scenarios import Experience
from metaloop.continual.sequence import (
    merge_lora_params,
    run_sequence,
    strategy_options,
    with_lora,
)
from metaloop.models import MLP, Conv4

D = 8


def _blobs(name, head, shift, n=64, seed=0, classes=2):
    """Two Gaussian blobs in D dims, told apart by dimension 1; dimension 0 = ``shift``."""
    g = torch.Generator().manual_seed(seed)

    def draw(m):
        y = torch.arange(m) % classes
        x = torch.randn(m, D, generator=g) * 0.5
        x[:, 0] = shift
        x[:, 1] += 2.0 * y - 1.0
        return x, y

    return Experience(name, head, classes, tuple(range(classes)), draw(n), draw(16), draw(32))


@pytest.fixture
def two():
    return [_blobs("A", "A", -3.0, seed=1), _blobs("B", "B", 3.0, seed=2)]


class RecordingMLP(MLP):
    """Records the inputs of every forward pass made with gradients on (training batches)."""

    def __init__(self, *a, **k):
        super().__init__(*a, **k)
        self.seen = []

    def forward(self, x, head=True):
        if torch.is_grad_enabled():
            self.seen.append(x.detach().clone())
        return super().forward(x, head)


def _setup(exps, seed=0, model=None):
    torch.manual_seed(seed)
    model = model or MLP(D, (16,), 1)
    return model, init_params(model, exps, torch.Generator().manual_seed(seed))


def _same(a, b):
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_training_batches_honour_the_replay_ratio(two):
    model, p = _setup(two, model=RecordingMLP(D, (16,), 1))
    model.seen.clear()
    finetune_experience(model, p, two[1], earlier=[two[0]], replay_ratio=0.15, keep_heads=True,
                        batch_size=20, steps=12, eval_every=5,
                        generator=torch.Generator().manual_seed(0))
    assert len(model.seen) == 12                    # one training forward per step
    for t, x in enumerate(model.seen):
        assert x.shape[0] == 20
        assert int((x[:, 0] < 0).sum()) == replay_count(t, 20, 0.15)   # A's inputs: dim 0 < 0


def test_replay_0_and_no_kept_heads_is_exactly_naive_fine_tuning(two):
    model, p = _setup(two)
    kw = dict(replay_ratio=0.0, steps=9, batch_size=16, lr=3e-3, eval_every=4)
    a = finetune_experience(model, p, two[1], earlier=[two[0]],
                            generator=torch.Generator().manual_seed(5), **kw)
    b = finetune_experience(model, p, two[1], generator=torch.Generator().manual_seed(5), **kw)
    c = finetune_experience(model, p, two[1], earlier=[two[0]], keep_heads={"A": 0.0},
                            generator=torch.Generator().manual_seed(5), **kw)
    assert _same(a.params, b.params) and _same(a.params, c.params)
    # the textbook loop: an nn.Module with head B, shuffled epochs, Adam, mean cross-entropy
    ref = MLP(D, (16,), 2)
    with torch.no_grad():
        for k, v in ref.named_parameters():
            v.copy_(p[k] if k.startswith("body.") else p[f"heads.B.{k.split('.')[1]}"])
    opt = torch.optim.Adam(ref.parameters(), lr=3e-3)
    g, (x, y), step = torch.Generator().manual_seed(5), two[1].train, 0
    while step < 9:
        perm = torch.randperm(64, generator=g)
        for i in range(0, 64, 16):
            if step == 9:
                break
            loss = F.cross_entropy(ref(x[perm[i:i + 16]]), y[perm[i:i + 16]])
            opt.zero_grad()
            loss.backward()
            opt.step()
            step += 1
    for k, v in ref.named_parameters():
        mine = a.params[k] if k.startswith("body.") else a.params[f"heads.B.{k.split('.')[1]}"]
        assert torch.equal(mine, v.detach()), k
    assert torch.equal(a.params["heads.A.weight"], p["heads.A.weight"])   # no loss: untouched


def test_kept_heads_receive_gradients_and_change(two):
    model, p = _setup(two)
    moved = {k: v + 0.3 * torch.randn_like(v) if k.startswith("body.") else v
             for k, v in p.items()}                 # the student has drifted from the teacher
    batch = Batch(*two[1].train, torch.full((64,), -1))
    kept = {"A": (1.0, [0, 1])}

    def grads(kept_heads):
        leaves = {k: v.clone().requires_grad_() for k, v in moved.items()}
        batch_loss(model, leaves, batch, ["B", "A"], kept_heads, p).backward()
        return {k: v.grad for k, v in leaves.items()}

    with_heads, without = grads(kept), grads(None)
    assert without["heads.A.weight"] is None
    assert with_heads["heads.A.weight"].abs().sum() > 0
    assert with_heads["heads.A.bias"].abs().sum() > 0
    assert not torch.allclose(with_heads["body.fc0.weight"], without["body.fc0.weight"])
    r = finetune_experience(model, p, two[1], earlier=[two[0]], replay_ratio=0.0, keep_heads=True,
                            steps=20, batch_size=16, eval_every=10,
                            generator=torch.Generator().manual_seed(0))
    for name in head_param_names("A"):
        assert not torch.equal(r.params[name], p[name]), name


def test_every_strategy_runs_and_its_matrix_is_the_final_evaluation(two):
    model, p = _setup(two)
    pre = finetune_experience(model, p, two[0], replay_ratio=0.0, steps=60, batch_size=16,
                              eval_every=60, generator=torch.Generator().manual_seed(0))
    assert pre.curve["accuracy"]["A"][-1] > 0.8
    for strategy in ("naive", "replay", "heads", "replay+heads", "lora", "joint"):
        r = run_sequence(model, pre.params, two, strategy, pretrained=True, steps=15,
                         batch_size=16, eval_every=5, generator=torch.Generator().manual_seed(1))
        assert r.matrix.shape == (2, 2) and r.boundaries == [0]
        assert [c["step"] for c in r.curve] == [0, 5, 10, 15]
        final = evaluate_experiences(model, r.params, two)
        assert r.matrix[1].tolist() == [final["A"], final["B"]]


def test_trainable_subsets(two):
    model, p = _setup(two)
    kw = dict(earlier=[two[0]], replay_ratio=0.25, steps=5, batch_size=8, eval_every=5)
    r = finetune_experience(model, p, two[1], trainable="head", **kw)
    assert all(torch.equal(r.params[k], p[k]) for k in p if k.startswith("body."))
    assert not torch.equal(r.params["heads.B.weight"], p["heads.B.weight"])
    r = finetune_experience(model, p, two[1], trainable=["heads.B.weight"], **kw)
    assert [k for k in p if not torch.equal(r.params[k], p[k])] == ["heads.B.weight"]
    assert select_trainable(p, lambda n: n.endswith("bias")) == [k for k in p
                                                                 if k.endswith("bias")]
    with pytest.raises(ValueError, match="unknown trainable 'body'"):
        finetune_experience(model, p, two[1], trainable="body", **kw)
    with pytest.raises(ValueError, match="unknown parameter names"):
        finetune_experience(model, p, two[1], trainable=["heads.C.weight"], **kw)


def test_lora_trains_adapters_only_and_starts_as_the_identity(two):
    """The lora strategy's adapters are peft's (``metaloop.adapt.add_lora``): the body with
    fresh adapters computes what it did, only the adapters and heads train, and merging
    folds ``B A`` into the plain body's weights."""
    pytest.importorskip("peft")
    model, p = _setup(two)
    body, start = with_lora(model, p, rank=2, generator=torch.Generator().manual_seed(0))
    A, B = "body.fc0.lora_A.default.weight", "body.fc0.lora_B.default.weight"
    assert start[A].shape == (2, D) and start[B].shape == (16, 2)
    assert torch.equal(start["body.fc0.base_layer.weight"], p["body.fc0.weight"])
    assert _same(merge_lora_params(body, start), p)
    assert evaluate_experiences(body, start, two) == evaluate_experiences(model, p, two)
    r = finetune_experience(body, start, two[1], replay_ratio=0.0, trainable="lora", steps=5,
                            batch_size=8, eval_every=5)
    assert torch.equal(r.params["body.fc0.base_layer.weight"], p["body.fc0.weight"])
    assert not torch.equal(r.params[B], start[B])
    merged = merge_lora_params(body, r.params)
    assert merged.keys() == p.keys()
    want = p["body.fc0.weight"] + r.params[B] @ r.params[A]                 # W + B A
    assert torch.allclose(merged["body.fc0.weight"], want, rtol=1e-6, atol=1e-7)
    assert not torch.equal(merged["body.fc0.weight"], p["body.fc0.weight"])
    assert torch.equal(merged["heads.B.weight"], r.params["heads.B.weight"])
    with pytest.raises(ValueError, match="already hold LoRA"):
        with_lora(body, start)
    with pytest.raises(ValueError, match="LoRA rank must be a positive int"):
        with_lora(model, p, rank=0)
    with pytest.raises(ValueError, match="no nn.Linear layer in its body"):
        with_lora(Conv4(1, 4, 1, image_size=16), {})


def test_lora_adapters_follow_the_body_dtype(two):
    """A float64 body gets float64 adapters (not float32 ones that peft would compute the
    low-rank branch in), the same draws as a float32 body's, and a merge that is exact."""
    pytest.importorskip("peft")
    model32, p32 = _setup(two)
    exps = [e._replace(**{s: (getattr(e, s)[0].double(), getattr(e, s)[1])
                          for s in ("train", "val", "test")}) for e in two]
    model, p = model32.double(), {k: v.double() for k, v in p32.items()}
    body, start = with_lora(model, p, rank=2, generator=torch.Generator().manual_seed(0))
    lora = [k for k in start if "lora_" in k]
    assert lora and all(start[k].dtype == torch.float64 for k in lora)
    _, start32 = with_lora(MLP(D, (16,), 1), p32, rank=2,
                           generator=torch.Generator().manual_seed(0))
    A = "body.fc0.lora_A.default.weight"
    assert torch.equal(start[A], start32[A].double())
    r = finetune_experience(body, start, exps[1], replay_ratio=0.0, trainable="lora", steps=5,
                            batch_size=8, lr=1e-2, eval_every=5)
    merged = merge_lora_params(body, r.params)
    x = exps[1].test[0]
    assert torch.allclose(features(body, r.params, x), features(model, merged, x),
                          rtol=0, atol=1e-12)


def test_conv4_body_and_nothing_mutated():
    def images(name, shift, seed):
        e = _blobs(name, name, shift, n=16, seed=seed)
        return e._replace(**{s: (getattr(e, s)[0][:, :1, None, None].expand(-1, 1, 16, 16) +
                                 0.1 * torch.randn(getattr(e, s)[0].shape[0], 1, 16, 16),
                                 getattr(e, s)[1]) for s in ("train", "val", "test")})

    exps = [images("A", -1.0, 1), images("B", 1.0, 2)]
    model, p = _setup(exps, model=Conv4(1, 4, 1, image_size=16))
    before = {k: v.clone() for k, v in p.items()}
    r = finetune_experience(model, p, exps[1], earlier=exps[:1], keep_heads=True, steps=3,
                            batch_size=8, eval_every=2)
    assert _same(p, before) and r.steps == 3 and r.curve["step"] == [0, 2, 3]


def test_early_stopping_returns_the_best_parameters(two):
    model, p = _setup(two)
    r = finetune_experience(model, p, two[1], replay_ratio=0.0, lr=0.0, early_stop=2, steps=100,
                            batch_size=8, eval_every=3)
    # lr 0: validation flat; patience 2 stops at step 6, the later of the tied evaluations
    # after a step is kept (step 0 is no candidate), its parameters those given
    assert r.steps == 6 and r.best_step == 6 and _same(r.params, p)
    no_val = two[1]._replace(val=(two[1].val[0][:0], two[1].val[1][:0]))
    with pytest.raises(ValueError, match="early_stop needs validation data"):
        finetune_experience(model, p, no_val, replay_ratio=0.0, early_stop=2)


def test_evaluate_experiences_by_hand(two):
    model, p = _setup(two)
    p = {**p, "heads.A.weight": torch.zeros(2, 16), "heads.A.bias": torch.tensor([0.0, 1.0])}
    acc = evaluate_experiences(model, p, two)["A"]             # always predicts class 1
    assert acc == float((two[0].test[1] == 1).float().mean())


def test_strategy_options():
    exps = [_blobs("A", "A", -3.0, n=30), _blobs("B", "B", 3.0, n=10)]
    assert strategy_options("joint", 1, exps)["replay_ratio"] == 0.75
    assert strategy_options("replay+heads", 1, exps, replay_ratio=0.2, head_weight=0.5) == {
        "replay_ratio": 0.2, "keep_heads": {"A": 0.5}, "trainable": "all"}
    assert strategy_options("replay", 0, exps) == {"replay_ratio": 0.0}
    assert strategy_options("replay", 1, exps, replay_ratio="balanced")["replay_ratio"] == 0.5
    with pytest.raises(ValueError, match="or 'balanced'"):
        strategy_options("replay", 1, exps, replay_ratio="most")
    with pytest.raises(ValueError, match="unknown strategy 'ewc'"):
        strategy_options("ewc", 1, exps)


@pytest.mark.parametrize("kwargs,match", [
    ({"replay_ratio": 1.0}, r"replay_ratio must be in \[0, 1\)"),
    ({"replay_ratio": -0.5}, r"replay_ratio must be in \[0, 1\)"),
    ({"earlier": []}, "no earlier data to replay"),
    ({"earlier": [], "replay_ratio": 0.0, "keep_heads": True}, "keep_heads needs earlier"),
    ({"keep_heads": {"Z": 1.0}}, r"keep_heads names \['Z'\]"),
    ({"keep_heads": {"A": -1.0}}, "must be a finite number >= 0"),
    ({"steps": 0}, "steps must be a positive int"),
    ({"buffer_size": 0}, "buffer_size must be a positive int"),
    ({"temperature": 0.0}, "temperature must be a positive number"),
    ({"lr": float("inf")}, "lr must be a finite number >= 0, got inf"),
    ({"lr": float("nan")}, "lr must be a finite number >= 0, got nan"),
])
def test_bad_input_is_a_clear_error(two, kwargs, match):
    model, p = _setup(two)
    kw = {"earlier": [two[0]], "steps": 2, **kwargs}
    with pytest.raises(ValueError, match=match):
        finetune_experience(model, p, two[1], **kw)


def test_kept_head_of_the_wrong_size_is_a_clear_error(two):
    model, p = _setup(two)
    wrong = {**p, **init_heads({"A": 3}, 16)}
    with pytest.raises(ValueError, match=r"kept head 'A' has output size 3 .* needs \[2, 16\]"):
        finetune_experience(model, wrong, two[1], earlier=[two[0]], keep_heads=True, steps=2)
    narrow = {**p, **init_heads({"A": 2}, 5)}
    with pytest.raises(ValueError, match=r"kept head 'A' .* \(2 outputs on 16 features\)"):
        finetune_experience(model, narrow, two[1], earlier=[two[0]], keep_heads=True, steps=2)
    missing = {k: v for k, v in p.items() if not k.startswith("heads.A")}
    with pytest.raises(ValueError, match=r"head 'A' of experience 'A' is not in the params"):
        finetune_experience(model, missing, two[1], earlier=[two[0]], steps=2)
    bad_labels = two[1]._replace(train=(two[1].train[0], two[1].train[1] + 5))
    with pytest.raises(ValueError, match="outside the 2 outputs of head 'B'"):
        finetune_experience(model, p, bad_labels, replay_ratio=0.0, steps=2)


@pytest.mark.parametrize("t", [2, 5, -1, 1.0, True])
def test_strategy_options_refuses_t_outside_the_stream(two, t):
    with pytest.raises(ValueError, match=r"t must be the index of an experience .* 0\.\.1"):
        strategy_options("replay", t, two)


@pytest.mark.parametrize("strategy, kwargs, name", [
    ("naive", {"trainable": "head"}, "trainable"),
    ("naive", {"keep_heads": True}, "keep_heads"),
    ("lora", {"trainable": "all"}, "trainable"),
    ("replay", {"earlier": []}, "earlier"),
])
def test_run_sequence_refuses_options_the_strategy_sets(two, strategy, kwargs, name):
    model, params = _setup(two)
    with pytest.raises(ValueError, match=f"run_sequence sets {name} itself"):
        run_sequence(model, params, two, strategy, steps=2, batch_size=8, **kwargs)


def test_finetune_names_an_earlier_experience_with_other_inputs(two):
    model, params = _setup(two)
    a, b = two
    a = a._replace(train=(a.train[0][:, :1], a.train[1]))
    with pytest.raises(ValueError, match=r"experience 'A' has train inputs of shape \[N, 1\] "
                                         r"but experience 'B' has \[N, 8\]"):
        finetune_experience(model, params, b, earlier=[a], steps=1, batch_size=8)


def test_finetune_names_integer_inputs(two):
    model, params = _setup(two)
    a, b = two
    b = b._replace(train=((b.train[0].abs() * 10).to(torch.uint8), b.train[1]))
    with pytest.raises(ValueError, match="experience 'B' has train inputs of dtype "
                                         "torch.uint8 but the params are torch.float32"):
        finetune_experience(model, params, b, earlier=[a], steps=1, batch_size=8)

import json
import time

import pytest
import torch

import metaloop as ml
from metaloop.meta import MAML, Reptile
from metaloop.models import MLP
from metaloop.train.checkpoint import latest_checkpoint, load_checkpoint


def _learner(kind="maml"):
    torch.manual_seed(0)
    model = MLP(1, (8, 8), 1)
    return MAML(model, 0.01, 1) if kind == "maml" else Reptile(model, 0.01, 3)


def _params(learner):
    return {n: p.detach().clone() for n, p in learner.model.named_parameters()}


@pytest.mark.parametrize("kind", ["maml", "reptile"])
def test_resume_is_bit_identical(tmp_path, kind):
    fam = ml.tasks.Sinusoid(5, 5)
    full = _learner(kind)
    ml.train(full, fam, iterations=12, meta_batch=4, progress=False, out_dir=tmp_path / "a",
             checkpoint_every=5)
    part = _learner(kind)
    ml.train(part, fam, iterations=5, meta_batch=4, progress=False, out_dir=tmp_path / "b",
             checkpoint_every=5)
    with open(tmp_path / "b" / "metrics.jsonl", "a") as f:      # lines past the checkpoint
        f.write(json.dumps({"iteration": 6, "loss": 0.0}) + "\n")
    resumed = _learner(kind)
    ml.train(resumed, fam, iterations=12, meta_batch=4, progress=False,
             out_dir=tmp_path / "b", checkpoint_every=5, resume=True)
    a, b = _params(full), _params(resumed)
    assert all(torch.equal(a[n], b[n]) for n in a)
    lines = [json.loads(x) for x in (tmp_path / "b" / "metrics.jsonl").read_text().splitlines()]
    assert [x["iteration"] for x in lines] == list(range(1, 13))
    ref_lines = (tmp_path / "a" / "metrics.jsonl").read_text().splitlines()
    ref = [json.loads(x)["loss"] for x in ref_lines]
    assert [x["loss"] for x in lines] == ref


def test_training_reduces_meta_loss_and_checkpoints(tmp_path):
    learner = _learner()
    fam = ml.tasks.Sinusoid(5, 10)
    before = ml.evaluate(learner, fam, tasks=50, steps=(1,))["loss"]["mean"][0]
    ml.train(learner, fam, iterations=150, meta_batch=10, lr=3e-3, progress=False,
             out_dir=tmp_path, checkpoint_every=50)
    after = ml.evaluate(learner, fam, tasks=50, steps=(1,))["loss"]["mean"][0]
    assert after < before
    assert latest_checkpoint(tmp_path).name == "ckpt-00000150"
    assert len(list(tmp_path.glob("ckpt-*"))) == 2               # keeps the newest two
    tensors, state = load_checkpoint(tmp_path)
    assert state["iteration"] == 150 and "rng.tasks" in tensors
    assert torch.equal(tensors["model.head.weight"], learner.model.head.weight.detach())


class NaNAfter:
    """A sinusoid family whose third batch has a NaN target."""

    kind = "regression"

    def __init__(self):
        self.fam, self.calls = ml.tasks.Sinusoid(5, 5), 0

    def sample(self, n, generator=None):
        self.calls += 1
        b = self.fam.sample(n, generator)
        if self.calls == 3:
            b.query_y[0, 0, 0] = float("nan")
        return b


def test_non_finite_loss_stops_with_iteration_and_keeps_checkpoint(tmp_path):
    learner = _learner()
    with pytest.raises(ml.NonFiniteLossError, match="iteration 3"):
        ml.train(learner, NaNAfter(), iterations=10, meta_batch=2, progress=False,
                 out_dir=tmp_path, checkpoint_every=2)
    assert latest_checkpoint(tmp_path).name == "ckpt-00000002"
    tensors, _ = load_checkpoint(tmp_path)
    assert all(torch.isfinite(t).all() for k, t in tensors.items() if k.startswith("model."))


def test_corrupt_checkpoint_is_named(tmp_path):
    ml.train(_learner(), ml.tasks.Sinusoid(), iterations=2, meta_batch=2, progress=False,
             out_dir=tmp_path)
    f = latest_checkpoint(tmp_path) / "tensors.safetensors"
    f.write_bytes(f.read_bytes()[:-10])
    with pytest.raises(ValueError, match="corrupt or truncated"):
        load_checkpoint(tmp_path)


def test_crash_during_checkpoint_write_keeps_previous(tmp_path, monkeypatch):
    learner = _learner()
    ml.train(learner, ml.tasks.Sinusoid(), iterations=2, meta_batch=2, progress=False,
             out_dir=tmp_path)
    import metaloop.train.checkpoint as ck

    def boom(*a, **k):
        raise OSError("disk full")
    monkeypatch.setattr(ck, "save_file", boom)
    with pytest.raises(OSError):
        ml.train(learner, ml.tasks.Sinusoid(), iterations=4, meta_batch=2, progress=False,
                 out_dir=tmp_path, resume=True)
    monkeypatch.undo()
    _, state = load_checkpoint(tmp_path)
    assert state["iteration"] == 2
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]


def test_resume_refuses_a_different_config(tmp_path):
    ml.train(_learner(), ml.tasks.Sinusoid(), iterations=2, meta_batch=2, progress=False,
             out_dir=tmp_path, config={"method": {"inner_lr": 0.01}})
    with pytest.raises(ValueError, match=r"method.inner_lr"):
        ml.train(_learner(), ml.tasks.Sinusoid(), iterations=4, meta_batch=2, progress=False,
                 out_dir=tmp_path, resume=True, config={"method": {"inner_lr": 0.1}})


@pytest.mark.parametrize("config", [{"model": {"hidden": (8, 8)}}, {"seeds": {1: "a", "b": 2}},
                                    {"method": {"inner_lr": float("nan")}}])
def test_resume_accepts_its_own_config_as_json_stores_it(tmp_path, config):
    """A tuple (stored as a list), a non-string key (stored as a string) or a NaN (never equal
    to itself) is the same config on resume: it was refused as differing, or crashed
    comparing int and str keys; a value that does differ is still named."""
    kw = dict(meta_batch=2, progress=False, out_dir=tmp_path, checkpoint_every=1)
    ml.train(_learner(), ml.tasks.Sinusoid(5, 5), iterations=2, config=config, **kw)
    r = ml.train(_learner(), ml.tasks.Sinusoid(5, 5), iterations=3, resume=True,
                 config=config, **kw)
    assert r["iteration"] == 3 and load_checkpoint(tmp_path)[1]["iteration"] == 3
    other = json.loads(json.dumps(config).replace("8, 8", "8, 9").replace('"a"', '"c"')
                       .replace("NaN", "0.5"))
    with pytest.raises(ValueError, match="refusing to resume .* the config differs in "):
        ml.train(_learner(), ml.tasks.Sinusoid(5, 5), iterations=4, resume=True,
                 config=other, **kw)


@pytest.mark.parametrize("kw,match", [(dict(iterations=0), "iterations"),
                                      (dict(meta_batch=-1), "meta_batch"),
                                      (dict(lr=0.0), "lr")])
def test_bad_training_arguments(kw, match):
    args = dict(iterations=2, meta_batch=2, lr=1e-3) | kw
    with pytest.raises(ValueError, match=match):
        ml.train(_learner(), ml.tasks.Sinusoid(), progress=False, **args)


def test_cosine_schedule_values_and_bit_identical_resume(tmp_path):
    from metaloop.train.loop import scheduled_lr
    assert scheduled_lr(1e-3, "cosine", 0, 10) == pytest.approx(1e-3)
    assert scheduled_lr(1e-3, "cosine", 5, 10) == pytest.approx(0.5e-3)
    assert scheduled_lr(1e-3, "cosine", 9, 10) == pytest.approx(1e-3 * 0.5 * (1 + torch.cos(
        torch.tensor(0.9 * torch.pi)).item()))
    assert scheduled_lr(1e-3, "constant", 9, 10) == 1e-3
    fam = ml.tasks.Sinusoid(5, 5)
    full, part, resumed = _learner(), _learner(), _learner()
    kw = dict(meta_batch=4, progress=False, checkpoint_every=4, lr_schedule="cosine")
    ml.train(full, fam, iterations=10, out_dir=tmp_path / "a", **kw)

    class CrashAt6:                     # the run dies in iteration 6, after the checkpoint at 4
        kind, calls = "regression", 0

        def sample(self, n, generator=None):
            self.calls += 1
            if self.calls == 6:
                raise RuntimeError("crash")
            return fam.sample(n, generator)
    with pytest.raises(RuntimeError, match="crash"):
        ml.train(part, CrashAt6(), iterations=10, out_dir=tmp_path / "b", **kw)
    ml.train(resumed, fam, iterations=10, out_dir=tmp_path / "b", resume=True, **kw)
    a, b = _params(full), _params(resumed)
    assert all(torch.equal(a[n], b[n]) for n in a)
    const = _learner()
    ml.train(const, fam, iterations=10, meta_batch=4, progress=False)
    assert any(not torch.equal(a[n], p) for n, p in _params(const).items())


def test_unknown_lr_schedule_is_refused():
    with pytest.raises(ValueError, match="unknown lr_schedule 'step'"):
        ml.train(_learner(), ml.tasks.Sinusoid(5, 5), iterations=2, meta_batch=2,
                 progress=False, lr_schedule="step")


def test_clip_grad_norm_rescales_to_the_bound_and_logs_the_norm(tmp_path):
    from metaloop.train.loop import _clip, _norm
    g = {"a": torch.tensor([3.0, 0.0]), "b": torch.tensor([[4.0]])}
    assert _norm(g) == pytest.approx(5.0)
    c = _clip(g, 1.0)
    assert _norm(c) == pytest.approx(1.0)
    assert torch.allclose(c["a"], torch.tensor([0.6, 0.0])) and c["b"].item() == pytest.approx(0.8)
    assert _clip(g, 10.0) is g                                     # under the bound: unchanged
    ml.train(_learner(), ml.tasks.Sinusoid(5, 5), iterations=3, meta_batch=2, progress=False,
             out_dir=tmp_path, clip_grad_norm=0.5)
    lines = [json.loads(x) for x in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert all(x["grad_norm"] > 0 for x in lines)
    with pytest.raises(ValueError, match="clip_grad_norm must be >= 0"):
        ml.train(_learner(), ml.tasks.Sinusoid(5, 5), iterations=1, meta_batch=2,
                 progress=False, clip_grad_norm=-1)


@pytest.mark.parametrize("optimizer, lr", [("adam", 1e-2), ("sgd", 0.1)])
def test_weight_decay_after_one_step_against_the_formula(optimizer, lr):
    """After one step from the same start on the same tasks, decoupled decay (Adam) moves
    each parameter by -lr * wd * p0 more than no decay; SGD's L2 term by -lr * wd * p0 too."""
    fam, wd = ml.tasks.Sinusoid(5, 5), 0.3
    start = _params(_learner())
    plain, decayed = _learner(), _learner()
    ml.train(plain, fam, iterations=1, meta_batch=3, lr=lr, progress=False, optimizer=optimizer)
    ml.train(decayed, fam, iterations=1, meta_batch=3, lr=lr, progress=False,
             optimizer=optimizer, weight_decay=wd)
    a, b = _params(plain), _params(decayed)
    for n in a:
        assert torch.allclose(b[n] - a[n], -lr * wd * start[n], atol=1e-6), n
    assert any(start[n].abs().max() > 0.1 for n in start)           # a visible difference


def test_weight_decay_resumes_bit_identically_and_refuses_bad_values(tmp_path):
    fam = ml.tasks.Sinusoid(5, 5)
    full, part, resumed = _learner(), _learner(), _learner()
    kw = dict(meta_batch=4, progress=False, checkpoint_every=4, weight_decay=0.05)
    ml.train(full, fam, iterations=8, out_dir=tmp_path / "a", **kw)
    ml.train(part, fam, iterations=4, out_dir=tmp_path / "b", **kw)
    ml.train(resumed, fam, iterations=8, out_dir=tmp_path / "b", resume=True, **kw)
    a, b = _params(full), _params(resumed)
    assert all(torch.equal(a[n], b[n]) for n in a)
    for bad in (-0.1, float("nan"), "0.1"):
        with pytest.raises(ValueError, match="weight_decay must be a finite number >= 0"):
            ml.train(_learner(), fam, iterations=1, meta_batch=2, progress=False,
                     weight_decay=bad)


def _lines(path):
    return [json.loads(x) for x in (path / "metrics.jsonl").read_text().splitlines()]


class FloatMetrics:
    """MAML whose metrics are Python floats (a user's learner may give them so; the built-in
    learners give detached 0-dim tensors, read only when a line is logged)."""

    def __init__(self, learner):
        self.learner, self.model, self.inner = learner, learner.model, learner.inner

    def meta_gradient(self, batch, with_metrics=False):
        grads, metrics = self.learner.meta_gradient(batch, with_metrics=True)
        return grads, {k: float(v) for k, v in metrics.items()}


@pytest.mark.parametrize("tensors", [False, True])
def test_log_every_writes_window_means_at_its_cadence(tmp_path, tensors):
    fam = ml.tasks.Sinusoid(5, 5)
    every = _learner()
    ml.train(every, fam, iterations=12, meta_batch=4, progress=False, out_dir=tmp_path / "a")
    ref = _lines(tmp_path / "a")
    assert [x["iteration"] for x in ref] == list(range(1, 13))   # the default on the CPU: 1
    sparse = _learner()
    ml.train(sparse if tensors else FloatMetrics(sparse), fam, iterations=12, meta_batch=4,
             progress=False, out_dir=tmp_path / "b", log_every=5)
    _params_equal = all(torch.equal(p, q) for p, q in zip(_params(every).values(),
                                                          _params(sparse).values()))
    assert _params_equal
    lines = _lines(tmp_path / "b")
    assert [x["iteration"] for x in lines] == [5, 10, 12]        # and always the last one
    for line, (lo, hi) in zip(lines, [(0, 5), (5, 10), (10, 12)]):
        window = [x["loss"] for x in ref[lo:hi]]
        if tensors:                                              # summed in float64 tensors
            assert line["loss"] == pytest.approx(sum(window) / len(window), rel=1e-6)
        else:
            assert line["loss"] == sum(window) / len(window)


def test_log_every_reads_metrics_and_checks_only_at_its_cadence(monkeypatch):
    from metaloop.train import loop
    calls = {"read": 0, "check": 0, "postfix": 0}
    read, check = loop._Window.read, loop._FiniteGuard.check

    def counting_read(self):
        calls["read"] += 1
        return read(self)

    def counting_check(self):
        calls["check"] += bool(self._flags)        # a check that reads something
        return check(self)

    class Bar:
        def __init__(self, it, **kw):
            self.it = it

        def __iter__(self):
            return iter(self.it)

        def set_postfix(self, *a, **k):
            calls["postfix"] += 1

        def close(self):
            pass
    monkeypatch.setattr(loop._Window, "read", counting_read)
    monkeypatch.setattr(loop._FiniteGuard, "check", counting_check)
    monkeypatch.setattr(loop, "tqdm", Bar)
    res = ml.train(_learner(), ml.tasks.Sinusoid(5, 5), iterations=20,
                   meta_batch=2, log_every=10)
    assert calls == {"read": 2, "check": 2, "postfix": 2}
    assert set(res["last"]) == {"loss"} and isinstance(res["last"]["loss"], float)
    with pytest.raises(ValueError, match="log_every must be a positive int"):
        ml.train(_learner(), ml.tasks.Sinusoid(5, 5), iterations=2, meta_batch=2,
                 progress=False, log_every=-1)


def test_resume_mid_log_window_is_bit_identical(tmp_path):
    fam = ml.tasks.Sinusoid(5, 5)
    kw = dict(iterations=12, meta_batch=4, progress=False, log_every=5, checkpoint_every=3)
    full = _learner()
    ml.train(full, fam, out_dir=tmp_path / "a", **kw)

    class CrashAt8:                     # dies in iteration 8, after the checkpoint at 6
        kind, calls = "regression", 0

        def sample(self, n, generator=None):
            self.calls += 1
            if self.calls == 8:
                raise RuntimeError("crash")
            return fam.sample(n, generator)
    with pytest.raises(RuntimeError, match="crash"):
        ml.train(_learner(), CrashAt8(), out_dir=tmp_path / "b", **kw)
    assert load_checkpoint(tmp_path / "b")[1]["log_window"]["count"] == 1    # iteration 6
    resumed = _learner()
    ml.train(resumed, fam, out_dir=tmp_path / "b", resume=True, **kw)
    assert all(torch.equal(a, b) for a, b in zip(_params(full).values(),
                                                 _params(resumed).values()))
    ref = [(x["iteration"], x["loss"]) for x in _lines(tmp_path / "a")]
    assert [i for i, _ in ref] == [5, 10, 12]
    assert [(x["iteration"], x["loss"]) for x in _lines(tmp_path / "b")] == ref


@pytest.mark.parametrize("log_every,checkpoint_every", [(4, 2), (10, 2)])
def test_non_finite_is_caught_between_log_lines_before_any_checkpoint(
        tmp_path, log_every, checkpoint_every):
    with pytest.raises(ml.NonFiniteLossError, match="iteration 3"):
        ml.train(_learner(), NaNAfter(), iterations=10, meta_batch=2, progress=False,
                 out_dir=tmp_path, checkpoint_every=checkpoint_every, log_every=log_every)
    assert latest_checkpoint(tmp_path).name == "ckpt-00000002"
    tensors, _ = load_checkpoint(tmp_path)
    assert all(torch.isfinite(t).all() for k, t in tensors.items() if k.startswith("model."))


class NaNGrad:
    """MAML (tensor metrics) with a NaN meta-gradient (finite loss) at iteration 3."""

    calls = 0

    def __init__(self, learner):
        self.learner, self.model, self.inner = learner, learner.model, learner.inner

    def meta_gradient(self, batch, with_metrics=False):
        grads, metrics = self.learner.meta_gradient(batch, with_metrics=True)
        NaNGrad.calls += 1
        if NaNGrad.calls == 3:
            grads = {n: g * float("nan") for n, g in grads.items()}
        return grads, metrics


def test_a_non_finite_gradient_is_caught_without_a_per_step_check(tmp_path):
    NaNGrad.calls = 0
    with pytest.raises(ml.NonFiniteLossError, match=r"iteration 3 \(loss [0-9.]+\)"):
        ml.train(NaNGrad(_learner()), ml.tasks.Sinusoid(5, 5), iterations=10, meta_batch=2,
                 progress=False, out_dir=tmp_path, checkpoint_every=4, log_every=8)
    assert not list(tmp_path.glob("ckpt-*"))    # the first checkpoint (4) would be non-finite


def test_bf16_autocast_trains_close_to_float32():
    from metaloop.models import Conv4
    fam = ml.tasks.Omniglot(split="val", ways=3, shots=1, queries=2, image_size=14)
    out = {}
    for precision in ("float32", "bf16"):
        torch.manual_seed(0)
        learner = MAML(Conv4(1, 8, 3, pool="stride", image_size=14), 0.4, 1, loss="ce")
        out[precision] = ml.train(learner, fam, iterations=2, meta_batch=2, progress=False,
                                  precision=precision)["last"]["loss"]
    assert out["float32"] != out["bf16"]
    assert out["bf16"] == pytest.approx(out["float32"], rel=0.05)
    with pytest.raises(ValueError, match="unknown precision 'fp8'"):
        ml.train(_learner(), ml.tasks.Sinusoid(5, 5), iterations=1, meta_batch=2,
                 progress=False, precision="fp8")
    with pytest.raises(ValueError, match="autocasts a float32 model"):
        ml.train(MAML(MLP(1, (4,), 1).double(), 0.01, 1), ml.tasks.Sinusoid(5, 5),
                 iterations=1, meta_batch=2, progress=False, precision="bf16")


def test_cast_wrapper_is_a_task_family_with_the_family_attributes():
    from metaloop.train.loop import _Cast
    fam = ml.tasks.Omniglot(split="val", ways=5, shots=1, queries=2, image_size=14)
    cast = _Cast(fam, torch.device("cpu"), torch.float64)
    assert isinstance(cast, ml.tasks.TaskFamily)
    assert not hasattr(_Cast, "__getattr__")                     # no blanket delegation
    assert (cast.kind, cast.ways, cast.shots, cast.queries) == ("classification", 5, 1, 2)
    assert cast.num_classes == fam.num_classes and cast.class_names is fam.class_names
    assert cast.input_shape == cast.image_shape == (1, 14, 14)
    more = cast.with_shots(3, 4)
    assert isinstance(more, _Cast) and (more.shots, more.queries) == (3, 4)
    assert more.sample(2, torch.Generator()).support_x.dtype == torch.float64
    assert not hasattr(cast, "sample_flat")                      # not part of the protocol
    sin = _Cast(ml.tasks.Sinusoid(5, 5), torch.device("cpu"), torch.float64)
    assert sin.kind == "regression" and sin.ways is None and sin.input_shape == (1,)


def test_checkpoints_carry_the_runs_cpu_seconds_through_resume(tmp_path):
    """state.json's cpu_seconds is the process CPU time the run took, measured here around
    each call, and a resumed segment adds its own to the stored total."""
    fam = ml.tasks.Sinusoid(5, 5)
    kw = dict(meta_batch=4, progress=False, out_dir=tmp_path, checkpoint_every=5)
    t0 = time.process_time()
    ml.train(_learner(), fam, iterations=5, **kw)
    first_spent = time.process_time() - t0
    first = load_checkpoint(tmp_path)[1]["cpu_seconds"]
    assert 0 < first <= first_spent + 0.01
    t0 = time.process_time()
    ml.train(_learner(), fam, iterations=10, resume=True, **kw)
    second_spent = time.process_time() - t0
    total = load_checkpoint(tmp_path)[1]["cpu_seconds"]
    assert first < total <= first + second_spent + 0.01


def test_a_resumed_checkpoint_without_cpu_seconds_records_none(tmp_path):
    """An older checkpoint does not know its CPU time, so the resumed run claims none."""
    fam = ml.tasks.Sinusoid(5, 5)
    kw = dict(meta_batch=4, progress=False, out_dir=tmp_path, checkpoint_every=5)
    ml.train(_learner(), fam, iterations=5, **kw)
    state_file = latest_checkpoint(tmp_path) / "state.json"
    state = json.loads(state_file.read_text())
    del state["cpu_seconds"], state["state_sha256"]    # as an older metaloop wrote it
    state_file.write_text(json.dumps(state))
    ml.train(_learner(), fam, iterations=10, resume=True, **kw)
    assert "cpu_seconds" not in load_checkpoint(tmp_path)[1]


def test_a_fresh_run_starts_a_fresh_log(tmp_path):
    """A run killed before its first checkpoint leaves metrics.jsonl lines that no run
    resumes; the next fresh run in that folder must not append to them."""
    (tmp_path / "metrics.jsonl").write_text("".join(
        json.dumps({"iteration": i, "loss": 1.0}) + "\n" for i in range(1, 50)))
    ml.train(_learner(), ml.tasks.Sinusoid(5, 5), iterations=3, meta_batch=2, progress=False,
             out_dir=tmp_path)
    lines = [json.loads(x) for x in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert [x["iteration"] for x in lines] == [1, 2, 3]

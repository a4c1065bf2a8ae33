"""Library functions that seed torch's global RNG leave the caller's RNG as it was
(``metaloop._random.seeded_rng``), and compute what they computed with ``torch.manual_seed``
left in place: the seeded region covers every draw from the global generator that followed
the seed."""

from __future__ import annotations

import sys
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pytest
import torch

from metaloop.recipes import adapt as recipe


@contextmanager
def _old_seeding(seed, devices=()):
    """What the functions did before: seed the global RNG, and never restore it. Like
    ``seeded_rng``, it marks the block as one whose seed decides torch's stream, which
    ``metaloop.train`` then leaves as it is."""
    from metaloop import _random

    torch.manual_seed(seed)
    token = _random._SEEDED.set(True)
    try:
        yield
    finally:
        _random._SEEDED.reset(token)


def _caller_state() -> torch.Tensor:
    torch.manual_seed(12345)                  # a notebook's own stream, not the recipe's seed
    torch.rand(3)
    return torch.get_rng_state()


def _same_params(a: dict, b: dict) -> None:
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k


def _conv_task():
    g = torch.Generator().manual_seed(1)
    return torch.rand(4, 1, 28, 28, generator=g), torch.tensor([0, 1, 0, 1])


def test_the_lora_row_keeps_the_callers_rng_and_its_adapter_init():
    pytest.importorskip("peft", reason="LoRA needs the text extra: pip install -e '.[text]'")
    from metaloop.adapt.lora import add_lora, lora_finetune
    from metaloop.models import Conv4

    s = recipe.AdaptSettings(family="omniglot", approaches="lora", steps=2)
    torch.manual_seed(3)
    model = Conv4(1, 4, out_dim=2)
    before = _caller_state()
    fn = recipe.strategies(s, model, "image", None)["lora"][1]
    assert torch.equal(torch.get_rng_state(), before)
    sx, sy = _conv_task()
    torch.manual_seed(9)
    got = fn(sx, sy, None)
    torch.manual_seed(0)                      # as strategies seeded before
    lora = add_lora(model, r=s.lora_r, alpha=2.0 * s.lora_r, target_modules=["conv"])
    torch.manual_seed(9)
    want = lora_finetune(lora, sx, sy, steps=2, lr=1e-3, head_lr=1e-2)
    _same_params(got.params, want.params)


def test_the_soft_prompt_row_keeps_the_callers_rng_and_its_prompt_init():
    pytest.importorskip("peft", reason="soft prompts need the text extra")
    pytest.importorskip("transformers", reason="pip install -e '.[text]'")
    sys.path.insert(0, str(Path(__file__).parent / "adapt"))
    from _text_models import tiny_text

    from metaloop.adapt.soft_prompt import add_soft_prompt, soft_prompt_finetune

    s = recipe.AdaptSettings(family="table", approaches="soft-prompt", steps=1, seed=4,
                             prompt_tokens=3)
    model = tiny_text(out_dim=2)
    before = _caller_state()
    fn = recipe.strategies(s, model, "text", None)["soft-prompt"][1]
    assert torch.equal(torch.get_rng_state(), before)
    sx = torch.randint(1, 60, (4, 6), generator=torch.Generator().manual_seed(2)).float()
    sy = torch.tensor([0, 1, 0, 1])
    torch.manual_seed(9)
    got = fn(sx, sy, None)
    same = tiny_text(out_dim=2)               # (seeds itself)
    torch.manual_seed(4)                      # s.seed, as strategies seeded before
    sp = add_soft_prompt(same, 3)
    torch.manual_seed(9)
    want = soft_prompt_finetune(sp, sx, sy, steps=1, lr=1e-2, head_lr=1e-2)
    _same_params(got.params, want.params)


def _episodes(tmp_path):
    from metaloop.tasks import Episodes
    rng = np.random.default_rng(0)
    np.savez(tmp_path / "d.npz", x=rng.normal(size=(24, 3)).astype("float32"),
             y=np.repeat(np.arange(4), 6))
    return Episodes.from_tensors(tmp_path / "d.npz", ways=2, shots=1, queries=2)


class _Linear:
    """An adapted predictor drawn from the global RNG: logits ``x @ w``."""

    info: dict = {}
    trainable = 6

    def __init__(self, w):
        self.w = w

    def __call__(self, x):
        return x @ self.w + torch.randn(x.shape[0], 2)       # scoring draws too


def _random_rows(log):
    def row(name):
        def fn(sx, sy, classes):
            w = torch.randn(3, 2)
            log.append((name, w.tolist()))
            return _Linear(w)
        return fn
    return {n: (recipe.APPROACHES[n], row(n)) for n in ("probe-ridge", "lora")}


def test_evaluate_strategies_keeps_the_callers_rng_and_each_tasks_seed(tmp_path, monkeypatch):
    family = _episodes(tmp_path)
    log: list = []
    before = _caller_state()
    got = recipe.evaluate_strategies(_random_rows(log), family, 3, seed=7)
    assert torch.equal(torch.get_rng_state(), before)
    for i, (name, w) in enumerate(log):         # each row of task t drew from seed 7*100003+t
        torch.manual_seed(7 * 100_003 + i // 2)
        assert (name, w) == (("probe-ridge", "lora")[i % 2], torch.randn(3, 2).tolist())
    monkeypatch.setattr(recipe, "seeded_rng", _old_seeding)
    old_log: list = []
    old = recipe.evaluate_strategies(_random_rows(old_log), family, 3, seed=7)
    assert old_log == log
    for name in got:
        assert got[name]["per_task"]["accuracy"] == old[name]["per_task"]["accuracy"]


def test_meta_strategies_keep_the_callers_rng_and_train_as_before(tmp_path, monkeypatch):
    pytest.importorskip("peft", reason="LoRA needs the text extra: pip install -e '.[text]'")
    from metaloop.models import Conv4
    from metaloop.tasks import Episodes

    x = torch.rand(24, 1, 28, 28, generator=torch.Generator().manual_seed(0))
    family = Episodes(x, torch.arange(4).repeat_interleave(6), ways=2, shots=1, queries=2)
    s = recipe.AdaptSettings(family="omniglot", meta="reptile", meta_iterations=2,
                             meta_batch=2, meta_shots=1, steps=1)

    def rows(out, model):
        return recipe.meta_strategies(s, model, "image", out, {"reptile": family})[0]

    torch.manual_seed(3)
    model = Conv4(1, 4, out_dim=2)
    before = _caller_state()
    got = rows(tmp_path / "new", model)
    assert torch.equal(torch.get_rng_state(), before)
    monkeypatch.setattr(recipe, "seeded_rng", _old_seeding)
    old = rows(tmp_path / "old", model)
    sx, sy = _conv_task()
    assert set(got) == set(old)
    for name in got:
        torch.manual_seed(5)
        a = got[name][1](sx, sy, None)
        torch.manual_seed(5)
        _same_params(a.params, old[name][1](sx, sy, None).params)
    from safetensors.torch import load_file
    new_ckpt, old_ckpt = (load_file(next((tmp_path / run / "meta" / "reptile").glob(
        "ckpt-*/tensors.safetensors"))) for run in ("new", "old"))
    _same_params(new_ckpt, old_ckpt)          # the weights and the stored RNG states


def _tiny_exps(tmp_path):
    from metaloop.recipes import forgetting

    x = np.arange(6).repeat(10)[:, None] * np.ones((1, 4), np.float32)
    np.savez(tmp_path / "d.npz", x=x.astype(np.float32), y=np.arange(6).repeat(10))
    return forgetting.experiences("split-data-class", data=tmp_path / "d.npz")


def test_a_forgetting_seed_keeps_the_callers_rng_and_its_runs(tmp_path, monkeypatch):
    from metaloop.recipes import forgetting

    exps = _tiny_exps(tmp_path)
    s = forgetting.settings("split-data-class", strategies="naive,lora", seeds=1, steps=3,
                            pretrain_steps=3)
    before = _caller_state()
    got = forgetting._one_seed(s, exps, 2, None)
    assert torch.equal(torch.get_rng_state(), before)
    monkeypatch.setattr(forgetting, "seeded_rng", _old_seeding)
    old = forgetting._one_seed(s, exps, 2, None)
    for name in got:
        assert torch.equal(got[name]["matrix"], old[name]["matrix"])
        assert got[name]["curve"] == old[name]["curve"]


def _images():
    g = torch.Generator().manual_seed(0)
    return (torch.rand(10, 1, 8, 8, generator=g) < 0.4).to(torch.uint8) * 255


@pytest.mark.parametrize("kind", ["ae", "vae", "cvae"])
def test_a_generative_model_keeps_the_callers_rng_and_its_init(kind):
    from metaloop.generative import experiment

    s = experiment.Settings(model=kind, latent=2, hidden=(6,), seed=11)
    before = _caller_state()
    got = experiment.build_model(kind, s, _images(), 3)
    assert torch.equal(torch.get_rng_state(), before)
    with pytest.MonkeyPatch.context() as m:
        m.setattr(experiment, "seeded_rng", _old_seeding)
        old = experiment.build_model(kind, s, _images(), 3)
    _same_params(got.state_dict(), old.state_dict())
    torch.manual_seed(11)
    fresh = experiment.build_model(kind, s, _images(), 3)     # not the caller's stream either
    torch.manual_seed(99)
    _same_params(fresh.state_dict(), experiment.build_model(kind, s, _images(), 3).state_dict())


def test_the_iwae_protocols_vae_keeps_the_callers_rng_and_its_init():
    from metaloop.generative import data as gdata
    from metaloop.generative import protocol
    from metaloop.generative.nets import logit_of_mean
    from metaloop.generative.vae import VAE

    s = protocol.ProtocolSettings(latent=2, hidden=(6,), seed=13)
    before = _caller_state()
    got = protocol.build_vae(s, _images())
    assert torch.equal(torch.get_rng_state(), before)
    torch.manual_seed(13)                     # as build_vae seeded before
    want = VAE(2, image_shape=(1, 8, 8), arch="mlp", hidden=(6,), likelihood="bernoulli",
               output_bias=logit_of_mean(gdata.to_unit(_images())))
    _same_params(got.state_dict(), want.state_dict())


# build_learner seeds the global generator with train.seed, and that seed carries on into
# training (Reptile's inner_batch draws each task's mini-batch seed from it); its callers
# scope both, so the caller's stream is kept and the runs are those of the old seeding

# mini-batches of 2 of the 5 support examples, one task after another (the draws of the loop)
_REPTILE_BATCHES = ('[compare.per_method.reptile.method]\ninner_batch = 2\n'
                    'batching = "loop"\n')


def _same_learners(a, b) -> None:
    _same_params(dict(a.model.state_dict()), dict(b.model.state_dict()))


def test_compare_keeps_the_callers_rng_and_trains_as_before(tmp_path, monkeypatch):
    from metaloop.recipes import compare

    (tmp_path / "more.toml").write_text(_REPTILE_BATCHES)
    cfg = compare.load_config("sinusoid", tmp_path / "more.toml", overrides={
        "train": {"iterations": 2, "meta_batch": 2, "checkpoint_every": 100},
        "eval": {"tasks": 3, "steps": [0, 1]}})
    assert compare.method_config(cfg, "reptile")["method"]["inner_batch"] == 2
    before = _caller_state()
    got = compare.run(cfg, "maml,reptile")
    assert torch.equal(torch.get_rng_state(), before)
    monkeypatch.setattr(compare, "seeded_rng", _old_seeding)
    torch.manual_seed(777)                    # the old runs did not depend on the caller's
    old = compare.run(cfg, "maml,reptile")
    assert got["methods"] == old["methods"]
    for name in ("maml", "reptile"):
        _same_learners(got["learners"][name], old["learners"][name])


def _reptile_config():
    from metaloop import config

    return config.validate({
        "family": {"name": "sinusoid"}, "model": {"name": "mlp", "hidden": [8]},
        "method": {"name": "reptile", "inner_batch": 2, "batching": "loop"},
        "train": {"iterations": 2, "meta_batch": 2, "checkpoint_every": 2, "seed": 3}})


def _checkpoint(run: Path) -> dict:
    from safetensors.torch import load_file
    return load_file(next(run.glob("ckpt-*/tensors.safetensors")))


def test_train_config_keeps_the_callers_rng_and_trains_as_before(tmp_path, monkeypatch):
    from metaloop.recipes import training

    cfg = _reptile_config()
    before = _caller_state()
    training.train_config(cfg, tmp_path / "new", progress=False)
    assert torch.equal(torch.get_rng_state(), before)
    monkeypatch.setattr(training, "seeded_rng", _old_seeding)
    torch.manual_seed(777)
    training.train_config(cfg, tmp_path / "old", progress=False)
    new, old = _checkpoint(tmp_path / "new"), _checkpoint(tmp_path / "old")
    assert "rng.torch" in new
    _same_params(new, old)                    # the weights and the stored RNG states


def test_load_run_keeps_the_callers_rng_and_loads_the_same_learner(tmp_path, monkeypatch):
    from metaloop import runs
    from metaloop.recipes import training

    training.train_config(_reptile_config(), tmp_path / "run", progress=False)
    before = _caller_state()
    got = runs.load_run(tmp_path / "run")
    assert torch.equal(torch.get_rng_state(), before)
    monkeypatch.setattr(runs, "seeded_rng", _old_seeding)
    old = runs.load_run(tmp_path / "run")
    _same_learners(got.learner, old.learner)
    weights = _checkpoint(tmp_path / "run")
    _same_params({k: v for k, v in got.learner.model.state_dict().items()},
                 {k[len("model."):]: v for k, v in weights.items() if k.startswith("model.")})


@pytest.mark.parametrize("resume", [False, True])
def test_train_gives_the_caller_back_pythons_and_numpys_random_state(tmp_path, resume):
    """A run seeds Python's and NumPy's global generators (or restores its checkpoint's) for
    its checkpoints: the caller's next draws came from the run's seed."""
    import random

    import metaloop as ml
    run = tmp_path / "run"

    def go(iterations, **kw):
        torch.manual_seed(0)
        ml.train(ml.meta.MAML(ml.models.MLP(1, (8,), 1)), ml.tasks.Sinusoid(5, 5),
                 iterations=iterations, meta_batch=2, out_dir=run, checkpoint_every=2,
                 progress=False, **kw)
    if resume:
        go(2)
    random.seed(12345)
    np.random.seed(54321)
    py, npy = random.getstate(), np.random.get_state()
    go(4, resume=resume)
    assert random.getstate() == py
    after = np.random.get_state()
    assert after[0] == npy[0] and np.array_equal(after[1], npy[1]) and after[2:] == npy[2:]

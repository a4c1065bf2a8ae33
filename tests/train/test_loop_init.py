"""``train.init`` of ``metaloop train``: a new run starts from a saved run's weights exactly."""

import sys
from pathlib import Path

import pytest
import torch

from metaloop.cli.main import main
from metaloop.meta import MAML
from metaloop.models import MLP
from metaloop.recipes.training import init_from
from metaloop.train.checkpoint import load_checkpoint

sys.path.insert(0, str(Path(__file__).parent))
from _cli import write_config  # noqa: E402


def _models(tensors: dict) -> dict:
    return {k: v for k, v in tensors.items() if k.startswith("model.")}


def test_a_float64_run_starts_a_float64_run_with_its_exact_weights(tmp_path):
    cfg = write_config(tmp_path / "a.toml", iterations=3, meta_batch=2, checkpoint_every=3,
                       seed=0, dtype="float64")
    a = tmp_path / "a"
    assert main(["train", "--config", str(cfg), "--out", str(a), "--no-progress"]) == 0
    theirs = _models(load_checkpoint(a)[0])
    assert all(t.dtype == torch.float64 for t in theirs.values())

    learner = MAML(MLP(1, (16, 16), 1).double(), 0.01, 1)
    init_from(learner, a)
    for n, p in learner.model.named_parameters():
        assert torch.equal(p.detach(), theirs[f"model.{n}"]), n     # not rounded to float32

    # through the CLI: one Adam step of 1e-300 leaves every weight where init put it
    text = (tmp_path / "a.toml").read_text().replace("iterations = 3", "iterations = 1")
    (tmp_path / "b.toml").write_text(text + f'lr = 1e-300\ninit = "{a}"\n')
    b = tmp_path / "b"
    assert main(["train", "--config", str(tmp_path / "b.toml"), "--out", str(b),
                 "--no-progress"]) == 0
    mine = _models(load_checkpoint(b)[0])
    assert mine.keys() == theirs.keys()
    assert all(torch.equal(mine[k], theirs[k]) for k in theirs), \
        max(float((mine[k] - theirs[k]).abs().max()) for k in theirs)


def test_a_run_with_learned_step_sizes_starts_a_plain_one_and_back(tmp_path):
    """Learned inner step sizes wrap the network (its names under ``net.``): a run of either
    kind had "no tensor of this model's" for the other."""
    from metaloop.adapt.learned_lr import InnerLRs

    cfg = write_config(tmp_path / "a.toml", iterations=2, meta_batch=2, checkpoint_every=2,
                       seed=0)
    a = tmp_path / "a"
    assert main(["train", "--config", str(cfg), "--out", str(a), "--no-progress"]) == 0
    theirs = _models(load_checkpoint(a)[0])
    learner = MAML(MLP(1, (16, 16), 1), 0.01, 1, learn_lr=True)
    assert isinstance(learner.model, InnerLRs)
    got = init_from(learner, a)
    assert got["left"] == ["inner_lr"] and "net.head.weight" in got["loaded"]
    for n, p in learner.model.net.named_parameters():
        assert torch.equal(p.detach(), theirs[f"model.{n}"]), n
    b = tmp_path / "b"
    text = cfg.read_text().replace("[method]\n", "[method]\nlearn_inner_lr = true\n")
    (tmp_path / "b.toml").write_text(text)
    assert main(["train", "--config", str(tmp_path / "b.toml"), "--out", str(b),
                 "--no-progress"]) == 0
    plain = MAML(MLP(1, (16, 16), 1), 0.01, 1)
    assert init_from(plain, b)["left"] == []


def test_a_deeper_run_is_another_network_not_a_partial_start(tmp_path):
    """Its extra layer was dropped without a word and its head, trained on that layer's
    features, copied: "init: 4 tensors"."""
    cfg = write_config(tmp_path / "a.toml", iterations=2, meta_batch=2, checkpoint_every=2,
                       seed=0)
    a = tmp_path / "a"
    assert main(["train", "--config", str(cfg), "--out", str(a), "--no-progress"]) == 0
    learner = MAML(MLP(1, (16,), 1), 0.01, 1)
    before = {n: p.detach().clone() for n, p in learner.model.named_parameters()}
    with pytest.raises(ValueError, match=rf"train.init = '{a}' is another network: it has "
                                         rf"body\.fc1\.weight, body\.fc1\.bias, which this "
                                         rf"model lacks"):
        init_from(learner, a)
    assert all(torch.equal(p, before[n]) for n, p in learner.model.named_parameters())

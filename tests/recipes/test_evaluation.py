"""``metaloop.recipes.evaluation``: a saved run evaluated from its folder scores what the
learner at the end of training scores, in the run's dtype; ensembles that cannot be
combined are refused by name."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest
import torch

import metaloop as ml
from metaloop import build, config
from metaloop.evaluate import evaluate
from metaloop.recipes.evaluation import evaluate_run, load_ensemble
from metaloop.recipes.predict import classify_tensors, predict_folders
from metaloop.train.loop import on_model

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from conftest import omniglot_config, tensor_config, train_run, write_tensor_file  # noqa: E402

SINUSOID = ('[family]\nname = "sinusoid"\nshots = 5\nqueries = 5\n[model]\nname = "mlp"\n'
            'hidden = [8, 8]\n[method]\nname = "maml"\nlearn_inner_lr = true\n[train]\n'
            'iterations = 3\nmeta_batch = 2\ncheckpoint_every = 3\ndtype = "{dtype}"\n'
            '[eval]\ntasks = 4\nsteps = [0, 1, 2]\n')


def _train(text: str, out: Path):
    """Train the config ``text`` in memory as ``metaloop train`` does, checkpointing into
    ``out``; returns the validated config and the learner as training left it."""
    out.parent.mkdir(parents=True, exist_ok=True)
    (out.parent / f"{out.name}.toml").write_text(text)
    cfg = config.load(out.parent / f"{out.name}.toml")
    family = build.build_family(cfg["family"])
    learner = build.build_learner(cfg, family)
    learner.model.to(dtype=getattr(torch, cfg["train"]["dtype"]))
    tc = cfg["train"]
    ml.train(learner, build.training_family(cfg, family), iterations=tc["iterations"],
             meta_batch=tc["meta_batch"], lr=tc["lr"], seed=tc["seed"], out_dir=out,
             config=cfg, progress=False)
    return cfg, learner


def test_a_float64_run_is_evaluated_in_float64_as_the_trained_learner(tmp_path):
    """``load_run`` built the model at float32 and ``evaluate_run`` scored float32 tasks:
    a float64 run's weights were rounded and its scores were not the trained learner's."""
    cfg, learner = _train(SINUSOID.format(dtype="float64"), tmp_path / "run")
    ec = cfg["eval"]
    held = on_model(build.eval_family(cfg, None), learner.model)     # as validation casts
    want = evaluate(learner, held, tasks=ec["tasks"], steps=ec["steps"], seed=ec["seed"])
    run = ml.load_run(tmp_path / "run")
    assert {p.dtype for p in run.learner.model.parameters()} == {torch.float64}
    assert all(torch.equal(p, dict(learner.model.named_parameters())[n])
               for n, p in run.learner.model.named_parameters())
    got = evaluate_run(run)["result"]
    assert got["per_task"] == want["per_task"]                      # exactly, task by task
    assert got["loss"]["mean"] == want["loss"]["mean"]
    mine = evaluate(run.learner, run.heldout(), tasks=ec["tasks"], steps=ec["steps"],
                    seed=ec["seed"])                                # Run.heldout: float64 too
    assert mine["per_task"] == want["per_task"]


def test_a_float64_run_predicts_in_float64(tmp_path):
    """``classify_tensors`` scores a float64 run's queries with its float64 weights (not
    rounded ones), and returns float32 probabilities as documented."""
    data = write_tensor_file(tmp_path / "v.npz")
    text = tensor_config(data, 'name = "protonet"\n').replace(
        "[train]\n", '[train]\ndtype = "float64"\n')
    _, learner = _train(text, tmp_path / "run")
    g = torch.Generator().manual_seed(3)
    sx, sy = torch.randn(6, 6, generator=g, dtype=torch.float64), torch.tensor([0, 1] * 3)
    qx = torch.randn(40, 6, generator=g, dtype=torch.float64)
    np.savez(tmp_path / "s.npz", x=sx.numpy(), y=sy.numpy())
    np.savez(tmp_path / "q.npz", x=qx.numpy())
    run = ml.load_run(tmp_path / "run")
    got = classify_tensors(run, tmp_path / "s.npz", tmp_path / "q.npz")
    # the files' examples are read as float32 (as in training), then cast to the model's
    want = predict_folders(learner, sx.float().double(), sy, qx.float().double())
    assert want.dtype == torch.float64 and got.probs.dtype == torch.float32
    assert torch.equal(got.probs, want.float())


def test_an_ensemble_of_runs_in_different_dtypes_is_refused_by_name(tmp_path):
    _train(SINUSOID.format(dtype="float32"), tmp_path / "a")
    _train(SINUSOID.format(dtype="float64"), tmp_path / "b")
    with pytest.raises(ValueError, match=r"ensemble: .*b has train.dtype = 'float64', the "
                                         r"first run .* 'float32'"):
        load_ensemble([tmp_path / "a", tmp_path / "b"])


def test_text_runs_that_tokenize_differently_are_not_one_ensemble(request, tmp_path):
    """The held-out texts are tokenized by the first run's family (its ``max_length``,
    columns): a member trained with another ``max_length`` was fed token ids of the first's
    length without a word, where ``metaloop predict`` refused the same pair."""
    pytest.importorskip("transformers", reason="pip install -e '.[text]'")
    save_tiny_bert = request.getfixturevalue("save_tiny_bert")
    words = ("[PAD] [UNK] [CLS] [SEP] [MASK] a the of plant person animal act".split())
    rows = [f"{c} {w} the,{c}" for c in words[8:] for w in ("a", "of", "the", "a of", "of a")]
    (tmp_path / "t.csv").write_text("text,label\n" + "\n".join(rows) + "\n")
    encoder = save_tiny_bert(words)
    text = (f'[family]\nname = "table"\nroot = "{tmp_path / "t.csv"}"\nencoder = "{encoder}"\n'
            'max_length = {n}\nsplit_fractions = [0.5, 0.0, 0.5]\nways = 2\nshots = 1\n'
            'queries = 2\n[model]\nname = "text"\n[method]\nname = "protonet"\n[train]\n'
            'iterations = 1\nmeta_batch = 1\ncheckpoint_every = 1\n[eval]\ntasks = 1\n'
            'steps = [0]\n')
    for name, n in (("a", 8), ("b", 6)):
        _train(text.replace("{n}", str(n)), tmp_path / name)
    assert load_ensemble([tmp_path / "a", tmp_path / "a"]).members    # alike: one ensemble
    with pytest.raises(ValueError, match=r"ensemble: .*b has family.max_length = 6, the first "
                                         r"run .* 8"):
        load_ensemble([tmp_path / "a", tmp_path / "b"])


def test_a_float64_run_on_mps_and_an_unknown_device_are_named(tmp_path):
    """``load_run(path, device="mps")`` of a float64 run passed torch's TypeError through
    (mps has no float64), and an unknown device string torch's RuntimeError."""
    _train(SINUSOID.format(dtype="float64"), tmp_path / "run")
    with pytest.raises(ValueError, match=r"trained in float64, which Apple's mps device does "
                                         r"not have; load it on the CPU"):
        ml.load_run(tmp_path / "run", device="mps")
    with pytest.raises(ValueError, match=r"device 'gpu0' is not a torch device"):
        ml.load_run(tmp_path / "run", device="gpu0")


def test_members_reading_one_data_set_from_other_roots_are_one_ensemble(omniglot_root, tmp_path,
                                                                        monkeypatch):
    """Omniglot found by the default search (``root = ""``) and by its folder, or one tensor
    file named by a relative and an absolute path, were refused as "family.root = '' ...
    every member must be trained on the same kind of task"; another file still is."""
    monkeypatch.setenv("METALOOP_DATA", str(omniglot_root.parent))
    a = train_run(tmp_path / "oa", omniglot_config(omniglot_root, ways=3, channels=4))
    b = train_run(tmp_path / "ob", omniglot_config("", ways=3, channels=4), "--seed", "1")
    assert len(load_ensemble([a, b]).members) == 2
    data = write_tensor_file(tmp_path / "v.npz")
    monkeypatch.chdir(tmp_path)
    ta = train_run(tmp_path / "ta", tensor_config(data))
    tb = train_run(tmp_path / "tb", tensor_config(Path("v.npz")), "--seed", "1")
    assert len(load_ensemble([ta, tb]).members) == 2
    other = write_tensor_file(tmp_path / "u.npz")
    tc = train_run(tmp_path / "tc", tensor_config(other))
    with pytest.raises(ValueError, match=r"ensemble: .*tc/run has family.root = .*u.npz"):
        load_ensemble([ta, tc])


def test_eval_changes_of_the_wrong_type_are_named(tmp_path):
    """``eval_config(run, tasks="5")`` raised TypeError ('<=' not supported between str and
    int) instead of the config's named error."""
    from metaloop.recipes.evaluation import eval_config

    _train(SINUSOID.format(dtype="float32"), tmp_path / "run")
    run = ml.load_run(tmp_path / "run")
    with pytest.raises(ValueError, match=r"eval.tasks must be int, got str '5'"):
        eval_config(run, tasks="5")
    with pytest.raises(ValueError, match=r"--tasks must be positive, got 0"):
        eval_config(run, tasks=0)

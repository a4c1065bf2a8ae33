"""``metaloop compare`` runs ProtoNet on classification (``--methods ...,protonet``): trained
and scored like the other solved heads (the same head at every step of ``eval.steps``, the
same fields in ``results.json``), refused on regression as they are, and among the
Omniglot comparison's default methods."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

import metaloop as ml
from metaloop.cli.main import main
from metaloop.meta.protonet import PrototypeSolver
from metaloop.recipes import compare
from metaloop.runs import load_run

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from conftest import write_image_folder  # noqa: E402

STEPS = [0, 1, 3]


def _config(tmp_path: Path, root: Path) -> Path:
    """A comparison over a generated image folder: 3-way 1-shot tasks with 2 queries, half
    of the classes held out, a Conv4 of 4 filters, 2 meta-batches of 2 tasks."""
    cfg = tmp_path / "c.toml"
    cfg.write_text(
        f'[family]\nname = "folder"\nroot = "{root}"\ninvert = "auto"\nways = 3\nshots = 1\n'
        'queries = 2\nsplit_fractions = [0.5, 0.0, 0.5]\n[model]\nchannels = 4\n'
        f'[train]\niterations = 2\nmeta_batch = 2\n[eval]\ntasks = 4\nsteps = {STEPS}\n')
    return cfg


@pytest.fixture(scope="module")
def compared(tmp_path_factory):
    """``(image folder, out folder)`` of one ``metaloop compare --methods maml,r2d2,protonet``
    on a generated image folder (read it, never change it)."""
    tmp = tmp_path_factory.mktemp("compare_protonet")
    root = write_image_folder(tmp / "images", classes=8, per_class=6, mixed=False)
    out = tmp / "out"
    assert main(["--threads", "1", "compare", "--config", str(_config(tmp, root)),
                 "--methods", "maml,r2d2,protonet", "--out", str(out), "--no-progress"]) == 0
    return root, out


def test_protonet_is_compared_on_classification_like_the_other_solved_heads(compared):
    _, out = compared
    res = json.loads((out / "results.json").read_text())
    assert set(res["methods"]) == {"maml", "r2d2", "protonet"}
    proto, r2d2 = res["methods"]["protonet"], res["methods"]["r2d2"]
    assert set(proto) == set(r2d2)                          # the same fields as r2d2's row
    for key in ("loss", "accuracy"):
        assert set(proto[key]) == set(r2d2[key])
        assert len(proto[key]["mean"]) == len(proto[key]["ci95"]) == len(STEPS)
    assert proto["steps"] == r2d2["steps"] == STEPS and proto["tasks"] == r2d2["tasks"] == 4
    # a solved head takes no SGD steps: the same head, so the same score, at every step
    for row in (proto, r2d2):
        assert len(set(row["accuracy"]["mean"])) == 1 and len(set(row["loss"]["mean"])) == 1
    assert all(0 <= a <= 1 for a in proto["accuracy"]["mean"])
    assert res["evaluation"]["protonet"] == res["evaluation"]["r2d2"] == "transductive"
    timing = json.loads((out / "timing.json").read_text())
    assert set(timing["methods"]) == {"maml", "r2d2", "protonet"}
    assert timing["methods"]["protonet"]["train_s"] > 0
    # its run was trained as a ProtoNet (the class means of the support features)
    run = load_run(out / "runs" / "protonet")
    assert run.config["method"]["name"] == "protonet"
    assert isinstance(run.learner.inner, PrototypeSolver)


def test_protonets_score_is_ml_evaluate_of_its_run_on_the_held_out_classes(compared):
    """Independent of the recipe: the saved ProtoNet scored by ``ml.evaluate`` on the held-out
    classes (the split results.json records), read by the public folder family."""
    root, out = compared
    res = json.loads((out / "results.json").read_text())
    test_classes = res["config"]["family"]["test_classes"]
    assert len(test_classes) == 4 and not set(test_classes) & set(
        res["config"]["family"]["train_classes"])
    heldout = ml.tasks.Episodes.from_folder(root, ways=3, shots=1, queries=2, invert="auto",
                                            classes=test_classes)
    learner = load_run(out / "runs" / "protonet").learner
    want = ml.evaluate(learner, heldout, tasks=4, steps=[0],
                       seed=res["config"]["eval"]["seed"])
    got = res["methods"]["protonet"]
    for key in ("loss", "accuracy"):
        assert got[key]["mean"] == pytest.approx([want[key]["mean"][0]] * len(STEPS),
                                                 rel=1e-6, abs=1e-9)
        assert got[key]["ci95"][0] == pytest.approx(want[key]["ci95"][0], rel=1e-6, abs=1e-9)
    # the trained weights were scored, not the initial ones: a fresh ProtoNet scores otherwise
    fresh = ml.meta.ProtoNet(ml.models.Conv4(in_channels=1, hidden=4, out_dim=3))
    other = ml.evaluate(fresh, heldout, tasks=4, steps=[0], seed=res["config"]["eval"]["seed"])
    assert other["loss"]["mean"][0] != pytest.approx(want["loss"]["mean"][0], rel=1e-6)


@pytest.mark.parametrize("argv", [["compare", "--methods", "maml,protonet"],
                                  ["compare", "sinusoid", "--methods", "protonet"]])
def test_protonet_is_refused_on_regression_as_r2d2_is(argv, tmp_path, capsys):
    out = tmp_path / "o"
    assert main([*argv, "--no-progress", "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert "method(s) ['protonet'] need a classification family, not 'sinusoid'" in err
    assert not out.exists()
    said = {}
    for name in ("protonet", "r2d2"):                 # the library says the same of both
        with pytest.raises(ValueError) as e:
            compare.methods_for(compare.load_config(), ["maml", name])
        said[name] = str(e.value)
    assert said["protonet"] == said["r2d2"].replace("r2d2", "protonet")


def test_protonet_is_among_the_omniglot_comparison_s_methods():
    """The Omniglot comparison runs every classification method, ProtoNet included; the
    sinusoid one every method that regresses."""
    cfg = compare.load_config("omniglot")
    nine = ["scratch", "pretrain", "maml", "fomaml", "reptile", "anil", "r2d2", "metaoptnet",
            "protonet"]
    assert compare.methods_for(cfg) == nine
    assert compare.methods_for(compare.load_config("sinusoid")) == nine[:6]
    mcfg = compare.method_config(cfg, "protonet")          # no SGD step needed to score it
    assert mcfg["method"]["name"] == "protonet"
    assert compare.method_config(
        compare.load_config("omniglot", overrides={"eval": {"steps": [0]}}),
        "protonet")["eval"]["steps"] == [0]

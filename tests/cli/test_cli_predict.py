"""``metaloop predict`` end to end: folders built from held-out Omniglot episodes are
classified exactly as ``metaloop eval`` scores the same episodes."""

import json
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from metaloop import build as _build
from metaloop import config as _config
from metaloop.cli.main import main
from metaloop.evaluate.heldout import heldout_tasks
from metaloop.recipes.predict import predict_folders
from metaloop.runs import load_run

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from conftest import omniglot_config, train_run  # noqa: E402

TASKS, WAYS, QUERIES = 3, 5, 3


def _config_text(root, method="maml", extra=""):
    steps = "[0]" if method in _config.HEAD_BASED else "[1]"     # a solved head: no steps
    return omniglot_config(root, method, ways=WAYS, queries=QUERIES, iterations=3,
                           method_lines=extra,
                           eval_lines=f"tasks = {TASKS}\nsteps = {steps}\nqueries = {QUERIES}\n")


@pytest.fixture(scope="module")
def maml_run(omniglot_root, trained_run):
    return trained_run(_config_text(omniglot_root))


def _save(x: torch.Tensor, path, kind="png"):
    """x: [1, 28, 28] in [0, 1], ink = 1. Saved as dark ink on white paper."""
    a = 255 - (x[0] * 255).round().to(torch.uint8).numpy()
    if kind == "jpeg":
        Image.fromarray(np.stack([a] * 3, -1)).save(path, quality=95)
    elif kind == "wide":                                    # 28 x 34: white margins
        Image.fromarray(np.pad(a, ((0, 0), (3, 3)), constant_values=255)).save(path)
    else:
        Image.fromarray(a).save(path)


def _episode_folders(root, batch, i):
    """support/class_k/0.png and query/qNN.* for task i; returns {query file: true class}."""
    sx, sy, qx, qy = batch.task(i)
    truth = {}
    for j, (x, y) in enumerate(zip(sx, sy)):
        (root / "support" / f"class_{int(y)}").mkdir(parents=True, exist_ok=True)
        _save(x, root / "support" / f"class_{int(y)}" / f"{j}.png")
    (root / "query").mkdir(parents=True)
    for j, (x, y) in enumerate(zip(qx, qy)):
        kind = {0: "jpeg", 1: "wide"}.get(j, "png")
        name = f"q{j:02d}." + ("jpg" if kind == "jpeg" else "png")
        _save(x, root / "query" / name, kind)
        truth[name] = f"class_{int(y)}"
    return truth


def test_predict_matches_eval_on_heldout_episodes(maml_run, tmp_path, capsys):
    assert main(["eval", "--checkpoint", str(maml_run), "--out", str(tmp_path / "ev")]) == 0
    res = json.loads((tmp_path / "ev" / "results.json").read_text())
    eval_acc = res["methods"]["maml"]["accuracy"]["mean"][0]
    capsys.readouterr()
    _run = load_run(maml_run)
    learner, cfg = _run.learner, _run.config
    fam = _build.eval_family(_config.validate(cfg), None)
    batch = next(heldout_tasks(fam, TASKS, cfg["eval"]["seed"]))
    accs, plain_agree, plain_total = [], 0, 0
    for i in range(TASKS):
        root = tmp_path / f"task{i}"
        truth = _episode_folders(root, batch, i)
        assert main(["predict", "--checkpoint", str(maml_run), "--support",
                     str(root / "support"), "--query", str(root / "query")]) == 0
        lines = capsys.readouterr().out.splitlines()
        pred = dict(line.split("\t") for line in lines)
        assert sorted(pred) == sorted(truth)
        accs.append(sum(pred[f] == c for f, c in truth.items()) / len(truth))
        # reference: the learner on the episode's own tensors, as evaluate() scores it
        sx, sy, qx, qy = batch.task(i)
        ref = predict_folders(learner, sx, sy, qx).argmax(-1)
        for j, f in enumerate(sorted(truth)):
            if f.endswith(".png") and j != 1:
                plain_total += 1
                plain_agree += pred[f] == f"class_{int(ref[j])}"
    assert plain_agree == plain_total            # lossless, square files: identical decisions
    # the JPEG and the non-square file per task may differ; nothing else may
    assert abs(sum(accs) / TASKS - eval_acc) <= 2 / (WAYS * QUERIES) + 1e-9


def _folders(tmp_path, classes=("a", "b"), shots=2, queries=4):
    g = torch.Generator().manual_seed(0)
    for c in classes:
        (tmp_path / "s" / c).mkdir(parents=True)
        for k in range(shots):
            x = torch.rand(1, 28, 28, generator=g).lt(0.2).float()
            _save(x, tmp_path / "s" / c / f"{k}.png")
    (tmp_path / "q").mkdir()
    for k in range(queries):
        _save(torch.rand(1, 28, 28, generator=g).lt(0.2).float(), tmp_path / "q" / f"{k}.png")
    return str(tmp_path / "s"), str(tmp_path / "q")


def test_json_output_and_other_way_counts(maml_run, tmp_path, capsys):
    s, q = _folders(tmp_path, classes=("x", "y", "z"))
    base = ["predict", "--checkpoint", str(maml_run), "--support", s, "--query", q]
    # a 5-way learned head cannot take 3 classes: refused, naming the fix
    assert main(base) == 2
    err = capsys.readouterr().err
    assert "has 3 classes" in err and "5 outputs" in err and "--head-init zero" in err
    assert main([*base, "--head-init", "zero", "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert [r["file"] for r in rows] == ["0.png", "1.png", "2.png", "3.png"]
    for r in rows:
        assert set(r["scores"]) == {"x", "y", "z"} and r["class"] in r["scores"]
        assert abs(sum(r["scores"].values()) - 1) < 1e-4
        assert r["class"] == max(r["scores"], key=r["scores"].get)


@pytest.mark.parametrize("case,message", [
    ("one_class", "at least 2"),
    ("no_query", "holds no images"),
    ("bad_image", "cannot read image"),
    ("no_ckpt", "no checkpoint"),
])
def test_bad_folders_exit_2_naming_the_path(maml_run, tmp_path, capsys, case, message):
    s, q = _folders(tmp_path, classes=("a", "b", "c", "d", "e"))
    ckpt = str(maml_run)
    if case == "one_class":
        s = str(tmp_path / "one")
        (tmp_path / "one" / "only").mkdir(parents=True)
        _save(torch.zeros(1, 28, 28), tmp_path / "one" / "only" / "0.png")
    elif case == "no_query":
        q = str(tmp_path / "empty")
        (tmp_path / "empty").mkdir()
    elif case == "bad_image":
        (tmp_path / "q" / "broken.png").write_bytes(b"\x89PNG not really")
    elif case == "no_ckpt":
        ckpt = str(tmp_path)
    assert main(["predict", "--checkpoint", ckpt, "--support", s, "--query", q]) == 2
    err = capsys.readouterr().err
    assert message in err
    assert {"one_class": s, "no_query": q, "bad_image": "broken.png", "no_ckpt": ckpt}[case] in err


@pytest.mark.parametrize("method", ["pretrain", "r2d2"])
def test_zero_and_solved_heads_take_any_class_count(omniglot_root, tmp_path, capsys, method):
    run = train_run(tmp_path, _config_text(omniglot_root, method))
    capsys.readouterr()
    _run = load_run(run)
    learner, _ = _run.learner, _run.config
    if method == "pretrain":
        assert learner.model.head.out_features == 4112   # one output per Vinyals train class
    s, q = _folders(tmp_path, classes=("u", "v"), queries=3)
    assert main(["predict", "--checkpoint", str(run), "--support", s, "--query", q]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 3 and all(line.split("\t")[1] in ("u", "v") for line in lines)


def test_learned_step_sizes_checkpoint_predicts_with_its_table(omniglot_root, tmp_path, capsys):
    run = train_run(tmp_path, _config_text(omniglot_root, extra="learn_inner_lr = true\n"))
    learner = load_run(run).learner
    assert learner.model.inner_lr.shape == (1, 18)        # 1 step x Conv4's 18 tensors
    s, q = _folders(tmp_path, classes=("a", "b", "c"))
    assert main(["predict", "--checkpoint", str(run), "--support", s, "--query", q]) == 2
    assert "has 3 classes" in capsys.readouterr().err     # the net's 5-way learned head
    s, q = _folders(tmp_path / "five", classes=("a", "b", "c", "d", "e"))
    assert main(["predict", "--checkpoint", str(run), "--support", s, "--query", q,
                 "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    from metaloop.data.images import load_query, load_support
    sx, sy, _, _ = load_support(s, 28)
    qx, _ = load_query(q, 28)
    ref = predict_folders(learner, sx, sy, qx)            # adapts with the learned table
    for r, p in zip(rows, ref):
        assert abs(r["scores"]["a"] - float(p[0])) < 1e-5

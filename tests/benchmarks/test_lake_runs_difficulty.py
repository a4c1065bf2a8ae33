"""``benchmarks/lake_runs_difficulty.py``: Lake-style runs matched to the evaluation set's
images and rebuilt as tasks score exactly as ``metaloop eval --lake-runs`` scores the runs
themselves, and the other task sets keep what they say they keep (the runs' characters, or
their drawers, in the runs' alphabet)."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
import torch
from PIL import Image

import metaloop as ml
from metaloop.cli.main import main
from metaloop.data.omniglot import load_omniglot_images
from metaloop.evaluate.records import validate_record
from metaloop.runs import load_run

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "benchmarks"))
sys.path.insert(0, str(ROOT / "tests"))

import lake_runs_difficulty as lrd  # noqa: E402  (benchmarks/ is on the path)
from conftest import omniglot_config  # noqa: E402


def _save_official(ink: torch.Tensor, path) -> None:
    Image.fromarray(ink.numpy() == 0).convert("1").save(path)


def _lake_runs(images, root, runs) -> None:
    """Runs as Lake's: characters ``chars``, training drawings by drawer ``ds``, test drawings
    by drawer ``dq``, test item i of character ``chars[perm[i]]``."""
    for name, chars, ds, dq, perm in runs:
        (root / name / "training").mkdir(parents=True)
        (root / name / "test").mkdir()
        lines = []
        for k, c in enumerate(chars):
            _save_official(images[c, ds], root / name / "training" / f"class{k + 1:02d}.png")
        for i, k in enumerate(perm):
            _save_official(images[chars[k], dq], root / name / "test" / f"item{i + 1:02d}.png")
            lines.append(f"{name}/test/item{i + 1:02d}.png {name}/training/class{k + 1:02d}.png")
        (root / name / "class_labels.txt").write_text("\n".join(lines) + "\n")


@pytest.fixture(scope="module")
def run(omniglot_root, trained_run):
    return trained_run(omniglot_config(omniglot_root, family_lines='split = "background"\n',
                                       iterations=3))


def test_the_rebuilt_runs_score_as_eval_scores_the_runs(run, omniglot_root, tmp_path, capsys):
    images, names = load_omniglot_images(omniglot_root, "evaluation", 105)
    alphabet = [c for c, n in enumerate(names) if n.startswith(names[0].split("/")[0] + "/")]
    chars = alphabet[:8]
    g = torch.Generator().manual_seed(0)
    runs = [("run01", chars, 0, 1, torch.randperm(8, generator=g).tolist()),
            ("run02", chars, 5, 2, torch.randperm(8, generator=g).tolist())]
    _lake_runs(images, tmp_path / "all_runs", runs)
    assert main(["eval", "--checkpoint", str(run), "--lake-runs", str(tmp_path / "all_runs"),
                 "--out", str(tmp_path / "e")]) == 0
    want = [100.0 * r["error_rate"] for r in
            json.loads((tmp_path / "e" / "results.json").read_text())["lake_runs"]["runs"]]

    learned = load_run(run)
    fam = ml.tasks.Omniglot(omniglot_root, split="evaluation", ways=20, shots=1, queries=1,
                            image_size=28)
    matched = lrd.match_drawings(fam, learned, tmp_path / "all_runs")
    assert [[c for c, _ in sup] for sup, _ in matched] == [chars, chars]
    assert [{d for _, d in sup} for sup, _ in matched] == [{0}, {5}]
    assert [set(q) for _, q in matched] == [{1}, {2}]

    sets = lrd.task_sets(fam, matched, per_run=3, seed=0)
    got = lrd.errors(learned.learner, fam, *sets["official"])
    assert got == pytest.approx(want, abs=1e-4)
    cls, ds, dq = sets["characters"]                  # the runs' characters, other drawers
    assert cls.tolist() == [chars] * 6 and bool((ds != dq).all())
    cls, ds, dq = sets["drawers"]                     # the runs' drawers, other characters
    assert ds[:, 0].tolist() == [0, 0, 0, 5, 5, 5] and dq[:, 0].tolist() == [1, 1, 1, 2, 2, 2]
    assert set(cls.flatten().tolist()) <= set(alphabet)
    assert all(len(set(row)) == 8 for row in cls.tolist())

    assert lrd.main([str(run), "--lake-runs", str(tmp_path / "all_runs"), "--data-root",
                     str(omniglot_root), "--tasks-per-run", "2", "--records",
                     str(tmp_path / "rec")]) == 0
    recs = {p.stem: validate_record(json.loads(p.read_text()))
            for p in (tmp_path / "rec").glob("*.json")}
    assert sorted(recs) == sorted(f"omniglot_challenge_difficulty_{k}" for k in lrd.SETS)
    official = recs["omniglot_challenge_difficulty_official"]
    assert official["per_task"] == pytest.approx(want, abs=1e-4) and official["n"] == 2
    assert "official" in capsys.readouterr().out


def test_a_drawing_of_no_evaluation_image_is_refused(run, omniglot_root, tmp_path):
    images, _ = load_omniglot_images(omniglot_root, "evaluation", 105)
    _lake_runs(images, tmp_path / "all_runs", [("run01", [0, 1, 2], 0, 1, [2, 0, 1])])
    odd = torch.zeros(105, 105, dtype=torch.uint8)
    odd[20:80, 50:55] = 255                                  # a bar, no character's drawing
    _save_official(odd, tmp_path / "all_runs" / "run01" / "training" / "class01.png")
    fam = ml.tasks.Omniglot(omniglot_root, split="evaluation", ways=20, shots=1, queries=1,
                            image_size=28)
    with pytest.raises(ValueError, match="class01.png matches no evaluation image"):
        lrd.match_drawings(fam, load_run(run), tmp_path / "all_runs")

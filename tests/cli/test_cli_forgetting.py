"""``metaloop forgetting``: a tiny end-to-end run and the errors for bad input."""

from __future__ import annotations

import json
import re

import pytest

from metaloop.cli.main import main

TINY = ["--steps", "6", "--eval-every", "3", "--train-per-class", "12", "--val-per-class", "4",
        "--test-per-class", "8", "--hidden", "16,16", "--batch-size", "16", "--no-progress"]


def test_two_task_end_to_end(tmp_path, capsys, fashion_mnist_root):
    out = tmp_path / "run"
    code = main(["forgetting", "--scenario", "two-task", "--strategies", "naive,replay+heads,lora",
                 "--seeds", "2", "--root", str(fashion_mnist_root), "--out", str(out), *TINY])
    assert code == 0
    text = capsys.readouterr().out
    for word in ("new acc", "old acc", "forgetting", "BWT", "naive", "replay+heads", "±"):
        assert word in text
    r = json.loads((out / "results.json").read_text())
    assert r["scenario"] == "two-task" and set(r["strategies"]) == {"naive", "replay+heads",
                                                                    "lora"}
    s = r["strategies"]["naive"]
    assert len(s["summary"]["forgetting"]["per_seed"]) == 2
    assert set(s["summary"]) == {"new_accuracy", "old_accuracy", "retained", "forgetting", "bwt",
                                 "average_accuracy"}
    assert len(s["matrix"]["mean"]) == 2 and len(s["matrix"]["per_seed"]) == 2
    points = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert len(points) == 3 * 2 * 3                 # strategies x seeds x (steps 0, 3, 6)
    assert {p["step"] for p in points} == {0, 3, 6}
    for png in ("old_accuracy_vs_steps.png", "accuracy_matrix.png"):
        assert (out / png).read_bytes()[:4] == b"\x89PNG"


@pytest.mark.parametrize("extra,match", [
    (["--replay-ratio", "1.0"], r"replay_ratio must be in \[0, 1\)"),
    (["--replay-ratio", "-0.1"], r"replay_ratio must be in \[0, 1\)"),
    (["--strategies", "naive,ewc"], "bad --strategies"),
    (["--seeds", "0"], "--seeds must be positive"),
    (["--steps", "-3"], "--steps must be positive"),
    (["--buffer-size", "0"], "--buffer-size must be positive"),
])
def test_bad_input_exits_2_with_a_message(tmp_path, capsys, extra, match):
    code = main(["forgetting", "--out", str(tmp_path), "--no-progress", *extra])
    assert code == 2
    err = capsys.readouterr().err
    assert "metaloop forgetting: error:" in err
    assert re.search(match, err), err


@pytest.mark.parametrize("flag", ["--steps", "--pretrain-steps", "--batch-size", "--eval-every"])
def test_zero_is_refused_not_taken_for_the_default(tmp_path, capsys, flag):
    out = tmp_path / "run"
    assert main(["forgetting", "--out", str(out), "--no-progress", flag, "0"]) == 2
    assert f"metaloop forgetting: error: {flag} must be positive, got 0" in \
        capsys.readouterr().err
    assert not out.exists()


def test_a_stream_of_one_alphabet_is_refused_and_writes_nothing(tmp_path, capsys,
                                                                omniglot_root):
    out = tmp_path / "run"
    assert main(["forgetting", "--scenario", "omniglot-alphabets", "--alphabets", "1",
                 "--root", str(omniglot_root), "--out", str(out), "--no-progress"]) == 2
    assert "a stream needs at least two experiences, got 1 (--alphabets 1)" in \
        capsys.readouterr().err
    assert not out.exists()


@pytest.mark.parametrize("flag,value,message", [
    ("--lr", "inf", "--lr must be a finite number > 0, got inf"),
    ("--lr", "0", "--lr must be a finite number > 0, got 0.0"),
    ("--temperature", "inf", "--temperature must be a finite number > 0, got inf"),
    ("--head-weight", "inf", "--head-weight must be a finite number >= 0, got inf"),
    ("--head-weight", "-1", "--head-weight must be a finite number >= 0, got -1.0"),
])
def test_infinite_or_out_of_range_rates_are_refused_by_name(tmp_path, capsys, flag, value,
                                                            message):
    """An infinite learning rate used to train (every parameter NaN, chance accuracy) and
    report a table; each bad number is now named before any data is read."""
    from metaloop.recipes import forgetting as recipe

    key = flag[2:].replace("-", "_")
    with pytest.raises(ValueError, match=re.escape(message)):
        recipe.settings("two-task", **{key: float(value)})
    out = tmp_path / "run"
    assert main(["forgetting", "--out", str(out), "--no-progress", flag, value]) == 2
    assert f"metaloop forgetting: error: {message}" in capsys.readouterr().err
    assert not out.exists()

"""``metaloop forgetting --record DIR``: one result record per strategy, with the per-seed
values behind its mean and Student-t CI, a command that reruns, and bad folders refused
before any work."""

from __future__ import annotations

import json
import math
import re
import shlex
import shutil
from pathlib import Path

import pytest

from metaloop.cli.forgetting import SETTINGS, command_settings
from metaloop.cli.main import main
from metaloop.evaluate import records as records_
from metaloop.evaluate.records import load_records, validate_record
from metaloop.recipes import forgetting as recipe

RESULTS = Path(__file__).resolve().parents[2] / "docs" / "results"

TINY = ["--steps", "6", "--eval-every", "3", "--train-per-class", "12", "--val-per-class", "4",
        "--test-per-class", "8", "--hidden", "16,16", "--batch-size", "16", "--no-progress"]
LABELS = dict(recipe.METRICS)


def _argv(root, out, rec_dir, strategies="naive,replay+heads", *extra):
    return ["forgetting", "--scenario", "two-task", "--strategies", strategies, "--seeds", "3",
            "--root", str(root), "--out", str(out), "--record", str(rec_dir), *TINY, *extra]


def _student_t(values):
    np = pytest.importorskip("numpy")
    t = pytest.importorskip("scipy.stats").t
    v = np.asarray(values, dtype=np.float64)
    return v.mean(), t.ppf(0.975, len(v) - 1) * v.std(ddof=1) / np.sqrt(len(v))


def test_records_hold_each_seed_and_the_student_t_ci_of_them(tmp_path, capsys,
                                                            fashion_mnist_root):
    out, rec_dir = tmp_path / "run", tmp_path / "records"
    rec_dir.mkdir()
    # an earlier record at a path keeps its row, order, published number and note
    # (of the same setting, which the command it was measured with tells)
    kept = {"row": "two-task: naive (the baseline)", "order": 7, "note": "fine-tuning alone",
            "published": {"value": "50%", "source": "a paper"}}
    (rec_dir / "continual_two_task_naive.json").write_text(json.dumps(
        {"table": "continual", "metric": "retained (%)", "mean": 1.0, **kept,
         "command": shlex.join(["metaloop", *_argv(fashion_mnist_root, out, rec_dir)])}))
    assert main(_argv(fashion_mnist_root, out, rec_dir)) == 0
    printed = capsys.readouterr().out
    assert f"replaced record {rec_dir / 'continual_two_task_naive.json'}" in printed
    assert f"wrote record {rec_dir / 'continual_two_task_replay_heads.json'}" in printed
    results = json.loads((out / "results.json").read_text())
    recs = {r["strategy"]: r for r in load_records(rec_dir)}
    assert set(recs) == {"naive", "replay+heads"}
    for name, rec in recs.items():
        validate_record(rec)
        assert rec["table"] == "continual" and rec["metric"] == "retained (%)"
        assert rec["command"].split("metaloop ", 1)[1].startswith("forgetting ")
        assert f"--record {rec_dir}" in rec["command"] and "--no-progress" not in rec["command"]
        assert rec["budget"]["iterations"] == 6 + 6 and rec["budget"]["cpu_seconds"] > 0
        assert rec["device"].startswith("CPU (") and rec["date"][:2] == "20"
        summary = results["strategies"][name]["summary"]
        for key, label in recipe.METRICS:
            want = [100 * v for v in summary[key]["per_seed"] if v is not None]
            got = rec["other_metrics"][label]
            assert got["per_seed"] == pytest.approx(want, abs=1e-4), (name, key)
            if len(want) > 1:
                mean, ci = _student_t(want)
                assert got["mean"] == pytest.approx(mean, abs=1e-4)
                assert got["ci95"] == pytest.approx(ci, abs=1e-4)
        per_seed = rec["per_seed"]
        assert rec["n"] == len(per_seed) == 3 - len(rec.get("undefined_seeds", []))
        assert per_seed == rec["other_metrics"]["retained"]["per_seed"]
        mean, ci = _student_t(per_seed)
        assert rec["mean"] == pytest.approx(mean, abs=1e-4)
        assert rec["ci95"] == pytest.approx(ci, abs=1e-4)
    assert {k: recs["naive"][k] for k in kept} == kept
    assert recs["replay+heads"]["row"] == "two-task: replay+heads"
    assert "order" not in recs["replay+heads"] and recs["replay+heads"]["published"] is None


def test_the_record_command_reruns_to_the_same_values(tmp_path, capsys, monkeypatch,
                                                      fashion_mnist_root):
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    out, rec_dir = tmp_path / "run", tmp_path / "records"
    assert main(_argv(fashion_mnist_root, out, rec_dir, "naive")) == 0
    path = rec_dir / "continual_two_task_naive.json"
    first = json.loads(path.read_text())
    words = shlex.split(first["command"])
    assert words[:2] == ["OMP_NUM_THREADS=1", "metaloop"]
    capsys.readouterr()
    shutil.rmtree(out)          # a finished run is not replaced: the rerun's folder is new
    assert main(words[2:]) == 0
    assert f"replaced record {path}" in capsys.readouterr().out
    again = json.loads(path.read_text())
    assert again["command"] == first["command"]
    assert again["per_seed"] == first["per_seed"] and again["mean"] == first["mean"]


def test_a_finished_run_resumed_with_record_writes_its_records(tmp_path, capsys,
                                                              fashion_mnist_root):
    """A run stopped after its results.json (partial.json still beside it) has finished:
    --resume --record writes the records from that results.json."""
    out, rec_dir = tmp_path / "run", tmp_path / "records"
    argv = _argv(fashion_mnist_root, out, rec_dir, "naive")
    assert main(argv) == 0
    first = json.loads((rec_dir / "continual_two_task_naive.json").read_text())
    (rec_dir / "continual_two_task_naive.json").unlink()
    results = json.loads((out / "results.json").read_text())
    s = recipe.settings("two-task", strategies="naive", seeds=3, steps=6, eval_every=3,
                        hidden=(16, 16), batch_size=16)
    data = {k: None for k in recipe.DATA_OPTIONS}
    data.update(train_per_class=12, val_per_class=4, test_per_class=8)
    exps = recipe.experiences("two-task", root=fashion_mnist_root, **data)
    (out / recipe.PARTIAL).write_text(json.dumps({
        "command": "forgetting", "identity": recipe.identity(s, exps, data), "units": [],
        "wall_s": results["wall_s"]}))
    capsys.readouterr()
    assert main([*argv, "--resume"]) == 0
    assert "nothing to resume" in capsys.readouterr().out
    assert not (out / recipe.PARTIAL).exists()
    again = json.loads((rec_dir / "continual_two_task_naive.json").read_text())
    assert again["per_seed"] == first["per_seed"] and "--resume" not in again["command"]


@pytest.mark.parametrize("strategy,options,stem,row", [
    ("replay+heads", {}, "replay_heads", "replay+heads"),
    ("replay", {"replay_ratio": "balanced", "buffer_size": 1000}, "replay-balanced",
     "replay-balanced (1,000-example reservoir)"),
    ("replay+heads", {"replay_ratio": "balanced", "buffer_size": 1000},
     "replay-balanced_heads", "replay-balanced+heads (1,000-example reservoir)"),
    ("replay", {"replay_ratio": 0.2}, "replay-0.2", "replay-0.2"),
    ("replay", {"buffer_size": 500}, "replay-buffer500", "replay-buffer500 (500-example "
                                                          "reservoir)"),
    ("heads", {"head_weight": 0.5, "temperature": 4.0}, "heads-weight0.5-temperature4",
     "heads-weight0.5-temperature4"),
    ("replay+heads", {"replay_ratio": "balanced", "buffer_size": 1000, "temperature": 4.0},
     "replay-balanced_heads-temperature4",
     "replay-balanced+heads-temperature4 (1,000-example reservoir)"),
    ("lora", {"lora_rank": 4}, "lora-rank4", "lora-rank4"),
])
def test_record_names_follow_the_strategy_and_its_replay_options(strategy, options, stem,
                                                                 row):
    s = recipe.settings("split-fmnist-class", strategies=strategy, **options)
    assert recipe.record_path("docs/results", s, strategy).name == \
        f"continual_split_fmnist_class_{stem}.json"
    assert recipe._strategy_stem(strategy, s)[1] == row


OTHER = {"replay_ratio": 0.2, "buffer_size": 500, "head_weight": 0.5, "temperature": 4.0,
         "lora_rank": 4}


@pytest.mark.parametrize("strategy", ["replay", "heads", "replay+heads", "lora"])
def test_each_strategy_option_gets_its_own_record_or_is_refused_by_name(tmp_path, strategy):
    """Each option a strategy reads, at another value, names another file; the one no name
    tells apart (a buffer with a replay ratio other than the default) is refused, naming the
    option, rather than replacing the record of the other buffer."""
    options = [k for k, readers in recipe.STRATEGY_OPTIONS.items() if strategy in readers]
    base = recipe.settings("split-fmnist-class", strategies=strategy)
    paths = {recipe.record_path(tmp_path, base, strategy)}
    for key in options:
        s = recipe.settings("split-fmnist-class", strategies=strategy, **{key: OTHER[key]})
        paths.add(recipe.record_path(tmp_path, s, strategy))
    assert len(paths) == 1 + len(options)
    if "buffer_size" not in options:
        return
    s = recipe.settings("split-fmnist-class", strategies=strategy, replay_ratio="balanced",
                        buffer_size=1000)
    results = {"scenario": "split-fmnist-class", "settings": s, "wall_s": 9.0,
               "experiences": [{}] * 5, "strategies": {strategy: {"summary": {
                   k: {"per_seed": [0.5, 0.6, 0.7]} for k in LABELS}}}}
    (path, rec), = recipe.records(results, tmp_path, command="metaloop forgetting").items()
    records_.write_record(path, **rec)
    before = path.read_bytes()
    other = recipe.settings("split-fmnist-class", strategies=strategy, replay_ratio="balanced",
                            buffer_size=500)
    assert recipe.record_path(tmp_path, other, strategy) == path
    with pytest.raises(ValueError, match=rf"{re.escape(str(path))} holds the record of "
                       rf"another setting of {re.escape(strategy)}, .* --buffer-size "
                       rf"\(1000 != 500\)"):
        recipe.check_records(tmp_path, other)
    with pytest.raises(ValueError, match=r"--buffer-size \(1000 != 500\)"):
        recipe.records({**results, "settings": other}, tmp_path, command="metaloop forgetting")
    assert path.read_bytes() == before
    more = recipe.settings("split-fmnist-class", strategies=strategy, replay_ratio="balanced",
                           buffer_size=1000, seeds=5)       # more seeds: the same setting
    assert recipe.check_records(tmp_path, more) == [path]


def test_a_run_of_another_buffer_is_refused_before_any_work(tmp_path, capsys,
                                                            fashion_mnist_root):
    out, rec_dir = tmp_path / "run", tmp_path / "records"
    balanced = ["--replay-ratio", "balanced", "--buffer-size"]
    assert main(_argv(fashion_mnist_root, out, rec_dir, "replay", *balanced, "5")) == 0
    path = rec_dir / "continual_two_task_replay-balanced.json"
    before = path.read_bytes()
    assert json.loads(before)["row"] == "two-task: replay-balanced (5-example reservoir)"
    capsys.readouterr()
    other = tmp_path / "other"
    assert main(_argv(fashion_mnist_root, other, rec_dir, "replay", *balanced, "7")) == 2
    err = capsys.readouterr().err
    assert f"error: --record: {path} holds the record of another setting of replay" in err
    assert "--buffer-size (5 != 7)" in err and "--replay-ratio" not in err
    assert path.read_bytes() == before and not other.exists()
    assert main(_argv(fashion_mnist_root, other, rec_dir, "replay", *balanced, "5",
                      "--steps", "4")) == 2
    assert "--pretrain-steps (6 != 4), --steps (6 != 4)" in capsys.readouterr().err
    assert path.read_bytes() == before and not other.exists()


def _committed_records():
    return sorted(RESULTS.glob("continual_*.json"))


@pytest.mark.parametrize("file", _committed_records(), ids=lambda f: f.stem)
def test_each_committed_record_is_named_and_replaced_by_its_own_command(file):
    """Each record in docs/results that ``metaloop forgetting`` wrote reads back from its
    command (``command_settings``, the command line's own parser) to its scenario, to its
    ``setting`` where it stores one, and to its own file name; a run of that command may
    replace it."""
    rec = json.loads(file.read_text())
    options = command_settings(rec["command"])
    scenario, setting = recipe._command_setting(options, rec["strategy"])
    assert scenario == rec["scenario"]
    assert setting == rec.get("setting", setting)
    s = recipe.settings(scenario, **{k: options[k] for k in SETTINGS})
    data = {k: options[k] for k in recipe.DATA_OPTIONS}
    assert recipe.record_path(RESULTS, s, rec["strategy"]) == file
    assert file in recipe.check_records(RESULTS, s, data, read_command=command_settings)


def test_a_committed_record_of_another_buffer_or_an_unknown_command_is_refused(tmp_path):
    rec = json.loads((RESULTS / "continual_split_fmnist_class_replay-balanced.json")
                     .read_text())
    path = tmp_path / "continual_split_fmnist_class_replay-balanced.json"
    path.write_text(json.dumps(rec))
    s = recipe.settings("split-fmnist-class", strategies="replay", replay_ratio="balanced",
                        buffer_size=500)
    with pytest.raises(ValueError, match=r"it differs in --buffer-size \(1000 != 500\) \(its "
                                         r"value first\)"):
        recipe.check_records(tmp_path, s, read_command=command_settings)
    # without a reader of its command, a record without setting cannot be told
    with pytest.raises(ValueError, match=r"settings cannot be told \(ValueError: it has no "
                                         r"setting, and no reader of its command was given\)"):
        recipe.check_records(tmp_path, s)
    path.write_text(json.dumps({**rec, "command": "python my_script.py"}))
    with pytest.raises(ValueError, match=r"holds a record whose settings cannot be told "
                                         r"\(ValueError: not one metaloop forgetting command\)"):
        recipe.check_records(tmp_path, s, read_command=command_settings)


def test_a_new_record_quotes_split_mnist_as_split_mnist(tmp_path):
    """van de Ven et al.'s numbers are on Split MNIST: a new split-fmnist-class record quotes
    them saying so, as the committed records do, and the numbers are the paper's."""
    s = recipe.settings("split-fmnist-class", strategies="naive,replay,heads,joint")
    results = {"scenario": "split-fmnist-class", "settings": s, "wall_s": 9.0,
               "experiences": [{}] * 5, "strategies": {n: {"summary": {
                   k: {"per_seed": [0.5, 0.6, 0.7]} for k in LABELS}} for n in s["strategies"]}}
    recs = {r["strategy"]: r for r in recipe.records(results, tmp_path,
                                                     command="metaloop forgetting").values()}
    assert recs["heads"]["published"] is None
    assert {n: recs[n]["published"]["value"] for n in ("naive", "replay", "joint")} == \
        {"naive": "19.9", "replay": "88.8", "joint": "98.2"}
    for name in ("naive", "replay", "joint"):
        source = recs[name]["published"]["source"]
        assert source.startswith("Split MNIST digits, not Fashion-MNIST: van de Ven, "
                                 "Tuytelaars & Tolias 2022, class-incremental"), source
        committed = json.loads(recipe.record_path(RESULTS, s, name).read_text())
        assert committed["published"] == recs[name]["published"], name
    assert recs["replay"]["published"]["source"].endswith(", experience replay")


def _not_a_record(tmp_path):
    d = tmp_path / "records"
    d.mkdir()
    (d / "continual_two_task_naive.json").write_text('{"state": 1}')
    return d, "is a file that is not a result record"


def _a_file(tmp_path):
    f = tmp_path / "records"
    f.write_text("x")
    return f, "is a file: it names a folder for the records"


def _under_a_file(tmp_path):
    (tmp_path / "file").write_text("x")
    return tmp_path / "file" / "records", "is not a folder"


@pytest.mark.parametrize("make", [_not_a_record, _a_file, _under_a_file])
def test_a_bad_record_folder_exits_2_before_any_work(tmp_path, capsys, fashion_mnist_root,
                                                     make):
    rec_dir, message = make(tmp_path)
    before = sorted(p.name for p in tmp_path.rglob("*"))
    out = tmp_path / "run"
    assert main(_argv(fashion_mnist_root, out, rec_dir, "naive")) == 2
    err = capsys.readouterr().err
    assert "metaloop forgetting: error:" in err and message in err, err
    assert not out.exists()
    assert sorted(p.name for p in tmp_path.rglob("*")) == before


def test_a_headline_undefined_in_every_seed_gives_no_record(tmp_path):
    s = recipe.settings("two-task", strategies="naive", seeds=2)
    nan = {"per_seed": [math.nan, math.nan]}
    summary = {k: ({"per_seed": [0.5, 0.6]} if k != "retained" else nan)
               for k in LABELS}
    results = {"scenario": "two-task", "settings": s, "experiences": [{}, {}], "wall_s": 9.0,
               "strategies": {"naive": {"summary": summary, "wall_s": [1.0, 1.0]}}}
    assert recipe.records(results, tmp_path, command="metaloop forgetting") == {}
    summary["retained"] = {"per_seed": [0.5, math.nan]}     # one seed: a mean, no CI
    (rec,) = recipe.records(results, tmp_path, command="metaloop forgetting").values()
    assert rec["mean"] == 50.0 and rec["ci95"] is None and rec["n"] == 1
    assert rec["per_seed"] == [50.0] and rec["undefined_seeds"] == [1]
    # the budget: one seed's steps, and the whole run's CPU seconds (a results.json without
    # them, of an earlier metaloop: its wall-clock seconds)
    assert rec["budget"] == {"iterations": 1000, "cpu_seconds": 9.0}
    (rec,) = recipe.records({**results, "cpu_seconds": 7.25}, tmp_path,
                            command="metaloop forgetting").values()
    assert rec["budget"]["cpu_seconds"] == 7.2

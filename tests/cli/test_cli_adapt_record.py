"""``metaloop adapt --record DIR``: one result record per approach, each with every held-out
task's accuracy, whose mean and Student-t CI are the record's; named after the setting;
DIR checked before any work; a --meta run's rows recorded under names of their own."""

from __future__ import annotations

import functools
import json
import math
import os
import shlex
import shutil
import sys
from pathlib import Path

import pytest

from metaloop.cli.adapt import command_settings
from metaloop.cli.main import build_parser, main
from metaloop.evaluate import mean_ci
from metaloop.evaluate.records import load_record, render_table
from metaloop.recipes import adapt as recipe

# records without a setting are told by their command, which the command line reads
_check_records = functools.partial(recipe.check_records, read_command=command_settings)
_records = functools.partial(recipe.records, read_command=command_settings)

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from conftest import needs_wordnet  # noqa: E402

pytest.importorskip("transformers", reason="pip install -e '.[text]'")
pytest.importorskip("peft", reason="pip install -e '.[text]'")

ROWS = ("prompt-zero-shot", "probe-ridge", "lora")
RESULTS = Path(__file__).resolve().parents[2] / "docs" / "results"


def _argv(model: str, out: Path, *extra: str, rows=ROWS) -> list[str]:
    return ["adapt", "--model", model, "--family", "wordnet", "--ways", "3", "--shots", "1",
            "--queries", "2", "--tasks", "3", "--approaches", ",".join(rows),
            *(("--steps", "2") if "lora" in rows else ()), "--out", str(out), "--no-progress",
            *extra]


@needs_wordnet
def test_one_record_per_approach_with_each_tasks_accuracy(wordnet_bert, tmp_path, capsys,
                                                          monkeypatch):
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    rec_dir = tmp_path / "records"
    assert main(["--threads", "1", *_argv(wordnet_bert, tmp_path / "out", "--record",
                                           str(rec_dir))]) == 0
    printed = capsys.readouterr().out
    res = json.loads((tmp_path / "out" / "results.json").read_text())["approaches"]
    names = sorted(p.name for p in rec_dir.iterdir())
    assert names == sorted(f"adaptation_wordnet_model_3w1s_{n.replace('-', '_')}.json"
                           for n in ROWS)
    recs = {n: load_record(rec_dir / f"adaptation_wordnet_model_3w1s_{n.replace('-', '_')}"
                                     f".json") for n in ROWS}         # each one validates
    for name, rec in recs.items():
        assert f"wrote record {rec_dir / names[0]}" in printed or name != ROWS[0]
        row = res[name]
        assert rec["table"] == "adaptation" and rec["metric"] == "accuracy (%)"
        assert rec["row"] == f"WordNet 3-way 1-shot, model: {name}"
        assert rec["n"] == 3 and len(rec["per_task"]) == 3
        assert rec["per_task"] == pytest.approx([100 * a for a in row["per_task"]["accuracy"]],
                                                abs=1e-4)
        m, c = mean_ci(rec["per_task"])                # the library's CI, on per_task
        assert rec["mean"] == pytest.approx(m, abs=1e-4)
        assert (rec["ci95"] is None) == (c is None)
        if c is not None:
            assert rec["ci95"] == pytest.approx(c, abs=1e-4)
        assert rec["trainable"] == row["trainable"] and rec["seed"] == 0
        assert rec["seconds_per_task"] == round(row["adapt_seconds"], 3)
        assert rec["budget"]["cpu_seconds"] == pytest.approx(
            math.fsum(row["per_task"]["cpu_seconds"]), abs=0.051)
        assert rec["device"].startswith("CPU (") and rec["device"].endswith(", 1 thread")
        assert rec["published"] is None and rec["config"] is None
        assert rec["command"] == (f"metaloop --threads 1 adapt --approaches "
                                  f"{','.join(ROWS)} --family wordnet --lora-r 8 "
                                  f"--lora-targets query,value --max-length 32 --model "
                                  f"{wordnet_bert} --out runs/out --queries 2 --record "
                                  f"{rec_dir} --seed 0 --shots 1 --steps 2 --tasks 3 --ways 3")
    assert "iterations" not in recs["probe-ridge"]["budget"]
    assert recs["lora"]["budget"]["iterations"] == 2            # --steps: the approach trains
    assert [recs[n]["order"] for n in ROWS] == [1, 2, 3]        # the run's order
    table = render_table([{**r, "_file": f"{n}.json"} for n, r in recs.items()])
    assert "WordNet 3-way 1-shot, model: lora" in table


@needs_wordnet
def test_a_second_run_replaces_the_records_keeping_row_order_and_published(
        wordnet_bert, tmp_path, capsys):
    rec_dir = tmp_path / "records"
    assert main(_argv(wordnet_bert, tmp_path / "a", "--record", str(rec_dir))) == 0
    path = rec_dir / "adaptation_wordnet_model_3w1s_lora.json"
    old = json.loads(path.read_text())
    old.update(row="tiny BERT: lora", order=70, published={"value": "1", "source": "x"})
    path.write_text(json.dumps(old))
    capsys.readouterr()
    assert main(_argv(wordnet_bert, tmp_path / "b", "--record", str(rec_dir))) == 0
    assert f"replaced record {path}" in capsys.readouterr().out
    new = load_record(path)
    assert (new["row"], new["order"], new["published"]) == ("tiny BERT: lora", 70,
                                                            {"value": "1", "source": "x"})
    assert new["per_task"] == old["per_task"]        # the same tasks, scored alike
    assert "--out runs/b" in new["command"]


@needs_wordnet
def test_the_command_writes_every_option_the_setting_depends_on(wordnet_bert, tmp_path,
                                                                 monkeypatch, capsys):
    """Options left at their defaults (--max-length, --lora-r, --lora-targets,
    --prompt-tokens, --steps) are written where a row's setting reads them, and only there:
    the command reruns the same setting whatever the defaults become, and is not refused."""
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    monkeypatch.chdir(tmp_path)
    rows = ("probe-ridge", "lora", "soft-prompt")
    argv = ["adapt", "--model", wordnet_bert, "--family", "wordnet", "--ways", "3", "--shots",
            "1", "--queries", "2", "--tasks", "2", "--approaches", ",".join(rows), "--out",
            "out", "--no-progress", "--record", "rec"]
    assert main(argv) == 0
    recs = {n: load_record(tmp_path / "rec" / f"adaptation_wordnet_model_3w1s_"
                                              f"{n.replace('-', '_')}.json") for n in rows}
    command = recs["lora"]["command"]
    words = shlex.split(command)
    for flag, value in (("--steps", "20"), ("--lora-r", "8"), ("--lora-targets", "query,value"),
                        ("--prompt-tokens", "8"), ("--max-length", "32")):
        assert words[words.index(flag) + 1] == value, (flag, command)
    s = command_settings(command)
    for name, rec in recs.items():                 # the command's setting is each record's
        assert rec["command"] == command
        assert json.loads(json.dumps(recipe.measured_setting(s, name))) == {
            **rec["setting"], "model": str(Path(wordnet_bert).resolve())}
    # a run that reads none of them but --max-length writes that one alone
    assert main([*argv[:argv.index("--approaches") + 1], "probe-ridge", "--out", "out2",
                 "--no-progress", "--record", "rec2"]) == 0
    alone = load_record(tmp_path / "rec2" / "adaptation_wordnet_model_3w1s_probe_ridge.json")
    assert "--max-length 32" in alone["command"]
    assert not {"--steps", "--lora-r", "--lora-targets", "--prompt-tokens"} & set(
        shlex.split(alone["command"]))
    capsys.readouterr()
    shutil.rmtree(tmp_path / "out2")    # a finished run is not replaced: rerun in a new folder
    assert main([*shlex.split(alone["command"])[1:], "--no-progress"]) == 0     # not refused
    assert "replaced record" in capsys.readouterr().out


@needs_wordnet
def test_omp_threads_prefix_the_command_without_threads(wordnet_bert, tmp_path, monkeypatch):
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    rec_dir = tmp_path / "records"
    assert main(_argv(wordnet_bert, tmp_path / "out", "--record", str(rec_dir),
                      rows=("probe-ridge",))) == 0
    rec = load_record(rec_dir / "adaptation_wordnet_model_3w1s_probe_ridge.json")
    assert rec["command"].startswith("OMP_NUM_THREADS=1 metaloop adapt --approaches "
                                     "probe-ridge ")
    assert "--resume" not in rec["command"] and "--no-progress" not in rec["command"]


@pytest.mark.parametrize("make, words", [
    (lambda d: d.write_text("not a folder"), ("is a file", "names a folder")),
    (lambda d: (d.mkdir(), (d / "adaptation_wordnet_model_3w1s_lora.json").write_text("{}")),
     ("adaptation_wordnet_model_3w1s_lora.json", "not a result record")),
])
def test_a_bad_record_dir_is_refused_before_the_model_loads(wordnet_bert, tmp_path, capsys,
                                                            monkeypatch, make, words):
    def no_model(*a, **kw):
        raise AssertionError("the model was loaded")
    monkeypatch.setattr(recipe, "load_model", no_model)
    rec_dir = tmp_path / "records"
    make(rec_dir)
    before = sorted(os.listdir(rec_dir)) if rec_dir.is_dir() else rec_dir.read_text()
    out = tmp_path / "out"
    assert main(_argv(wordnet_bert, out, "--record", str(rec_dir))) == 2
    printed, err = capsys.readouterr()
    for w in words:
        assert w in err, (w, err)
    assert not out.exists() and "adapt" in err
    assert (sorted(os.listdir(rec_dir)) if rec_dir.is_dir() else rec_dir.read_text()) == before


META_ROWS = ("lora", "meta-lora-fomaml", "meta-lora-fomaml inner", "lora inner-fomaml")
PAIRS = (("meta-lora-fomaml", "lora"), ("meta-lora-fomaml inner", "lora inner-fomaml"))


def _no_model(*a, **kw):
    raise AssertionError("the model was loaded")


@needs_wordnet
def test_a_meta_run_records_every_row_with_each_tasks_accuracy(wordnet_bert, tmp_path, capsys,
                                                               monkeypatch):
    """--record with --meta: one record per row of the run, each task's accuracy behind its
    mean and CI (the tasks and order of the run's other rows, so they pair), the meta
    options in its setting; a rerun with another meta setting into the same folder is
    refused before the model loads, naming the difference, and writes nothing."""
    rec_dir = tmp_path / "records"
    meta = ("--meta", "fomaml", "--meta-iterations", "2", "--meta-batch", "1")
    assert main(_argv(wordnet_bert, tmp_path / "a", *meta, "--record", str(rec_dir),
                      rows=("lora",))) == 0
    printed = capsys.readouterr().out
    res = json.loads((tmp_path / "a" / "results.json").read_text())
    stem = rec_dir / "adaptation_meta_lora_wordnet_model_3w1s_"
    files = {n: Path(f"{stem}{n.replace('-', '_').replace(' ', '_')}.json") for n in META_ROWS}
    pairs = {(a, b): Path(f"{stem}{a.replace('-', '_').replace(' ', '_')}_minus_"
                          f"{b.replace('-', '_').replace(' ', '_')}_paired.json")
             for a, b in PAIRS}
    assert sorted(rec_dir.iterdir()) == sorted([*files.values(), *pairs.values()])
    for name, file in files.items():
        rec, row = load_record(file), res["approaches"][name]       # each one validates
        assert f"wrote record {file}" in printed
        assert rec["table"] == "adaptation-meta-lora"
        assert rec["row"] == f"WordNet 3-way 1-shot, model: {name}"
        assert rec["per_task"] == pytest.approx(
            [100 * a for a in row["per_task"]["accuracy"]], abs=1e-4) and rec["n"] == 3
        m, c = mean_ci(rec["per_task"])
        assert rec["mean"] == pytest.approx(m, abs=1e-4)
        assert rec["mean"] == pytest.approx(100 * row["accuracy"]["mean"], abs=1e-4)
        assert (rec["ci95"] is None) == (c is None)
        if c is not None:
            assert rec["ci95"] == pytest.approx(c, abs=1e-4)
        assert {k: rec["setting"][k] for k in ("meta", "meta_iterations", "meta_batch",
                                               "meta_shots", "lora_targets")} == {
            "meta": ["fomaml"], "meta_iterations": 2, "meta_batch": 1,
            "meta_shots": {"fomaml": 1}, "lora_targets": ["query", "value"]}
        assert "--meta fomaml --meta-batch 1 --meta-iterations 2" in rec["command"]
    for (a, b), file in pairs.items():      # the run's paired differences, task by task
        rec, d = load_record(file), res["paired"][f"{a} - {b}"]
        assert rec["row"] == f"WordNet 3-way 1-shot, model: {a} minus {b}, paired"
        assert rec["per_task"] == pytest.approx(
            [x - y for x, y in zip(load_record(files[a])["per_task"],
                                   load_record(files[b])["per_task"])], abs=1e-3)
        assert rec["mean"] == pytest.approx(100 * d["mean"], abs=1e-4)
        assert (rec["ci95"] is None) == (d["ci95"] is None)
        if d["ci95"] is not None:
            assert rec["ci95"] == pytest.approx(100 * d["ci95"], abs=1e-4)
    meta_cpu = res["meta"]["fomaml"]["cpu_seconds"]
    assert load_record(files["meta-lora-fomaml"])["budget"]["cpu_seconds"] == pytest.approx(
        meta_cpu + math.fsum(res["approaches"]["meta-lora-fomaml"]["per_task"]["cpu_seconds"]),
        abs=0.051)
    assert load_record(files["meta-lora-fomaml inner"])["budget"]["iterations"] == 2
    before = {p.name: p.read_text() for p in rec_dir.iterdir()}
    monkeypatch.setattr(recipe, "load_model", _no_model)
    out = tmp_path / "b"
    assert main(_argv(wordnet_bert, out, *meta[:3], "3", *meta[4:], "--record", str(rec_dir),
                      rows=("lora",))) == 2
    err = capsys.readouterr().err
    assert "adaptation_meta_lora_wordnet_model_3w1s_lora.json holds the record of another " \
           "setting of lora" in err and "--meta-iterations (2 != 3) (its value first)" in err
    assert not out.exists()
    assert {p.name: p.read_text() for p in rec_dir.iterdir()} == before


@needs_wordnet
def test_lora_targets_naming_the_default_is_the_setting_of_a_run_without_them(
        wordnet_bert, tmp_path, capsys, monkeypatch):
    """The setting holds the layers LoRA adapts, the model's default told from its config
    before the model loads: a rerun naming that default replaces the record, one naming
    other layers is refused before the model loads."""
    assert recipe.default_lora_targets(recipe.AdaptSettings(model=wordnet_bert)) == sorted(
        recipe._lora_targets(recipe.AdaptSettings(model=wordnet_bert), "text",
                             recipe.load_model(wordnet_bert, "wordnet")[0]))
    rec_dir = tmp_path / "records"
    path = rec_dir / "adaptation_wordnet_model_3w1s_lora.json"
    assert main(_argv(wordnet_bert, tmp_path / "a", "--record", str(rec_dir),
                      rows=("lora",))) == 0
    assert load_record(path)["setting"]["lora_targets"] == ["query", "value"]
    capsys.readouterr()
    assert main(_argv(wordnet_bert, tmp_path / "b", "--record", str(rec_dir), "--lora-targets",
                      "value,query", rows=("lora",))) == 0
    assert f"replaced record {path}" in capsys.readouterr().out
    before = path.read_text()
    monkeypatch.setattr(recipe, "load_model", _no_model)
    assert main(_argv(wordnet_bert, tmp_path / "c", "--record", str(rec_dir), "--lora-targets",
                      "query,key", rows=("lora",))) == 2
    assert "--lora-targets (['query', 'value'] != ['key', 'query']) (its value first)" in \
        capsys.readouterr().err
    assert not (tmp_path / "c").exists() and path.read_text() == before


@needs_wordnet
def test_a_run_of_another_setting_is_refused_and_writes_nothing(wordnet_bert, tmp_path, capsys,
                                                                monkeypatch):
    """A record's file name says the family, model, ways and shots; a run that differs in
    --queries, --seed or --steps would replace it under that name, and is refused before
    the model loads, naming each difference; the records and --out are left as they were."""
    rec_dir = tmp_path / "records"
    assert main(_argv(wordnet_bert, tmp_path / "a", "--record", str(rec_dir))) == 0
    before = {p.name: p.read_text() for p in rec_dir.iterdir()}
    capsys.readouterr()

    def no_model(*a, **kw):
        raise AssertionError("the model was loaded")
    monkeypatch.setattr(recipe, "load_model", no_model)
    out = tmp_path / "b"
    argv = _argv(wordnet_bert, out, "--record", str(rec_dir), "--seed", "1")
    argv[argv.index("--queries") + 1] = "3"
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert "adaptation_wordnet_model_3w1s_prompt_zero_shot.json holds the record of another " \
           "setting of prompt-zero-shot" in err
    assert "--queries (2 != 3), --seed (0 != 1) (its value first)" in err
    assert not out.exists()
    assert {p.name: p.read_text() for p in rec_dir.iterdir()} == before


@pytest.mark.parametrize("file", sorted(RESULTS.glob("adaptation_wordnet_*.json")),
                         ids=lambda p: p.stem)
def test_committed_wordnet_records_are_accepted_by_their_own_commands(file):
    """Each committed WordNet record's command, read by metaloop's parser, names that record
    (``record_path``) and may replace it (``check_records``: the same setting)."""
    rec = json.loads(file.read_text())
    words = shlex.split(rec["command"])
    args = build_parser().parse_args(words[words.index("metaloop") + 1:])
    s = recipe.AdaptSettings(**{k: v for k in recipe.AdaptSettings.__dataclass_fields__
                                if (v := getattr(args, k)) is not None and v is not False})
    assert recipe.record_path(RESULTS, s, rec["approach"]) == file
    assert file in _check_records(RESULTS, s)

"""The records of ``metaloop adapt --record``: file names and row labels by setting (those of
the committed WordNet records for their settings), one record per approach whose
``per_task`` values give its mean and CI, the paths checked before any work, and each
task's CPU seconds kept across a resume."""

from __future__ import annotations

import dataclasses
import functools
import json
import math
from pathlib import Path

import pytest

from metaloop.cli.adapt import command_settings
from metaloop.evaluate import mean_ci
from metaloop.evaluate.records import paired_difference, validate_record, write_record
from metaloop.recipes import adapt as recipe

# records without a setting are told by their command, which the command line reads
_check_records = functools.partial(recipe.check_records, read_command=command_settings)
_records = functools.partial(recipe.records, read_command=command_settings)

RESULTS = Path(__file__).resolve().parents[2] / "docs" / "results"


@pytest.mark.parametrize("shots", [1, 5])
def test_wordnet_minilm_records_are_named_and_labelled_as_the_committed_ones(shots):
    s = recipe.AdaptSettings(shots=shots)
    names = list(recipe.APPROACHES)
    for name in names:
        path = recipe.record_path(RESULTS, s, name)
        assert path.name == f"adaptation_wordnet_5w{shots}s_{name.replace('-', '_')}.json"
        assert path.is_file(), path
        row = json.loads(path.read_text())["row"]
        assert row == f"{recipe._record_setting(s)[1]}: {name}"
    committed = sorted(RESULTS.glob(f"adaptation_wordnet_5w{shots}s_*.json"))
    assert committed == sorted(recipe.record_path(RESULTS, s, n) for n in names)


@pytest.mark.parametrize("settings, stem, label", [
    (dict(family="omniglot", model="runs/pretrain_5w1s", ways=20),
     "omniglot_pretrain_5w1s_20w1s", "Omniglot 20-way 1-shot, pretrain_5w1s"),
    (dict(family="fashion_mnist", model="runs/p/"), "fashion_mnist_p_5w1s",
     "Fashion-MNIST 5-way 1-shot, p"),
    (dict(family="table", data="data/My Sentences.csv", shots=5),
     "table_my_sentences_5w5s", "table My Sentences.csv 5-way 5-shot, MiniLM"),
    (dict(family="table", data="s.tsv", model="models/bert-base-uncased", ways=3),
     "table_s_bert_base_uncased_3w1s", "table s.tsv 3-way 1-shot, bert-base-uncased"),
    (dict(family="folder", data="photos/", model="runs/mine"), "folder_photos_mine_5w1s",
     "folder photos 5-way 1-shot, mine"),
    (dict(family="tensors", data="x.npz", model="runs/mine"), "tensors_x_mine_5w1s",
     "tensors x.npz 5-way 1-shot, mine"),
    (dict(model="sentence-transformers/all-mpnet-base-v2", ways=10),
     "wordnet_all_mpnet_base_v2_10w1s", "WordNet 10-way 1-shot, all-mpnet-base-v2"),
])
def test_other_settings_get_names_that_say_what_they_are(settings, stem, label, tmp_path):
    s = recipe.AdaptSettings(**settings)
    assert recipe._record_setting(s) == (stem, label)
    assert recipe.record_path(tmp_path, s, "meta-lora-fomaml inner").name == \
        f"adaptation_{stem}_meta_lora_fomaml_inner.json"


def _results(accs: dict, cpu: bool = True) -> dict:
    rows = {}
    for name, acc in accs.items():
        m, c = mean_ci(acc)
        per = {"accuracy": acc, "adapt_seconds": [0.25] * len(acc)}
        if cpu:
            per["cpu_seconds"] = [0.125] * len(acc)
        rows[name] = {"approach": recipe.APPROACHES[name], "accuracy": {"mean": m, "ci95": c},
                      "trainable": 1925, "adapt_seconds": 0.25, "per_task": per, "info": {}}
    return {"approaches": rows}


def test_records_hold_each_tasks_accuracy_behind_their_mean_and_ci(tmp_path):
    accs = {"probe-ridge": [0.8, 1.0, 0.96, 0.72], "lora": [0.84, 0.92, 0.96, 1.0]}
    s = recipe.AdaptSettings(ways=5, shots=1, tasks=4, steps=7)
    recs = _records(_results(accs), tmp_path, s, command="metaloop adapt")
    assert [p.name for p in recs] == ["adaptation_wordnet_5w1s_probe_ridge.json",
                                      "adaptation_wordnet_5w1s_lora.json"]
    for (path, rec), (name, acc) in zip(recs.items(), accs.items()):
        assert validate_record(rec, where=str(path)) == rec
        assert rec["per_task"] == [round(100 * a, 4) for a in acc] and rec["n"] == 4
        m, c = mean_ci(rec["per_task"])              # the library's CI on per_task
        assert rec["mean"] == pytest.approx(m, abs=1e-4)
        assert rec["ci95"] == pytest.approx(c, abs=1e-4)
        assert rec["row"] == f"WordNet 5-way 1-shot, MiniLM: {name}"
        assert rec["budget"]["cpu_seconds"] == 0.5            # 4 tasks x 0.125 CPU seconds
        assert rec["note"] == "1,925 trainable, 0.250 s/task (0.125 CPU-s)"
        assert rec["seconds_per_task"] == 0.25 and rec["seed"] == 0
        assert (rec["table"], rec["metric"], rec["unit"]) == ("adaptation", "accuracy (%)",
                                                              "%")
    ridge, lora = recs.values()
    assert "iterations" not in ridge["budget"] and lora["budget"]["iterations"] == 7
    assert (ridge["order"], lora["order"]) == (1, 2)
    d = paired_difference(lora, ridge)               # records on the same tasks pair
    assert d["mean"] == pytest.approx(100 * math.fsum(
        a - b for a, b in zip(accs["lora"], accs["probe-ridge"])) / 4, abs=1e-3)


def test_a_record_already_there_keeps_its_row_order_and_published(tmp_path):
    s = recipe.AdaptSettings(tasks=2)
    (tmp_path / "adaptation_wordnet_5w1s_lora.json").write_text(json.dumps(
        {"table": "adaptation", "metric": "accuracy (%)", "mean": 1.0, "row": "LoRA row",
         "order": 74, "published": {"value": "90%", "source": "a paper"}, "note": "old",
         "command": "metaloop adapt --tasks 2"}))         # of the same setting
    (tmp_path / "adaptation_other.json").write_text(json.dumps(
        {"table": "adaptation", "metric": "accuracy (%)", "mean": 1.0, "order": 99}))
    recs = _records(_results({"probe-ridge": [0.6, 0.8], "lora": [0.8, 1.0]}, cpu=False),
                          tmp_path, s, command="metaloop adapt")
    ridge, lora = recs.values()
    assert (lora["row"], lora["order"], lora["published"]) == (
        "LoRA row", 74, {"value": "90%", "source": "a paper"})
    assert lora["note"] == "1,925 trainable, 0.250 s/task (0.250 CPU-s)"    # not kept
    assert ridge["order"] == 100                  # after every record of the table there
    assert ridge["budget"]["cpu_seconds"] == 0.5   # results without CPU seconds: wall's


def test_check_records_refuses_before_any_work(tmp_path):
    s = recipe.AdaptSettings(approaches="probe-ridge,lora")
    assert _check_records(tmp_path / "new", s) == [
        tmp_path / "new" / "adaptation_wordnet_5w1s_probe_ridge.json",
        tmp_path / "new" / "adaptation_wordnet_5w1s_lora.json"]
    assert not (tmp_path / "new").exists()                       # nothing made
    (tmp_path / "file").write_text("x")
    with pytest.raises(ValueError, match="is a file: it names a folder"):
        _check_records(tmp_path / "file", s)
    (tmp_path / "adaptation_wordnet_5w1s_lora.json").write_text('{"a": 1}')
    with pytest.raises(ValueError, match="adaptation_wordnet_5w1s_lora.json.*not a result"):
        _check_records(tmp_path, s)
    meta = recipe.AdaptSettings(approaches="lora", meta="fomaml,reptile,maml")
    assert [p.name for p in _check_records(tmp_path / "new", meta)] == [
        f"adaptation_meta_lora_wordnet_5w1s_{n}.json" for n in (
            "lora", "meta_lora_fomaml", "meta_lora_fomaml_inner", "lora_inner_fomaml",
            "meta_lora_reptile", "meta_lora_reptile_inner", "lora_inner_reptile",
            "meta_lora_maml", "meta_lora_maml_inner",      # maml adapts as fomaml does
            *(f"meta_lora_{m}_minus_lora_paired" for m in ("fomaml", "reptile", "maml")),
            "meta_lora_fomaml_inner_minus_lora_inner_fomaml_paired",
            "meta_lora_reptile_inner_minus_lora_inner_reptile_paired",
            "meta_lora_maml_inner_minus_lora_inner_fomaml_paired")]
    no_lora = recipe.AdaptSettings(approaches="probe-ridge", meta="fomaml")  # no pair of it
    assert recipe.record_rows(no_lora) == [
        "probe-ridge", "meta-lora-fomaml", "meta-lora-fomaml inner", "lora inner-fomaml",
        "meta-lora-fomaml inner minus lora inner-fomaml, paired"]
    with pytest.raises(ValueError, match="unknown family 'nope'"):
        _check_records(tmp_path / "new", recipe.AdaptSettings(family="nope"))
    images = recipe.AdaptSettings(family="omniglot", model="runs/p")    # no text-only rows
    assert len(_check_records(tmp_path / "new", images)) == 7


def _committed(tmp_path, name: str) -> dict:
    """A committed WordNet record, copied into ``tmp_path``."""
    rec = json.loads((RESULTS / name).read_text())
    (tmp_path / name).write_text(json.dumps(rec))
    return rec


def test_a_record_of_another_setting_is_refused_naming_each_difference(tmp_path):
    """The committed 5-way 1-shot records (30 tasks, 5 queries, seed 0, 20 steps), whose
    setting is read from their command: a run of other queries, seed, tasks or steps would
    replace them under the same name, and is refused, the record's value first."""
    _committed(tmp_path, "adaptation_wordnet_5w1s_lora.json")
    _committed(tmp_path, "adaptation_wordnet_5w1s_probe_ridge.json")
    same = recipe.AdaptSettings(tasks=30, approaches="probe-ridge,lora")
    assert len(_check_records(tmp_path, same)) == 2
    other = recipe.AdaptSettings(tasks=30, queries=3, seed=1, steps=5, approaches="lora")
    with pytest.raises(ValueError, match=r"adaptation_wordnet_5w1s_lora.json holds the record "
                                         r"of another setting of lora.*it differs in --queries "
                                         r"\(5 != 3\), --seed \(0 != 1\), --steps \(20 != 5\) "
                                         r"\(its value first\)"):
        _check_records(tmp_path, other)
    with pytest.raises(ValueError, match=r"--tasks \(30 != 100\)"):
        _check_records(tmp_path, recipe.AdaptSettings(approaches="probe-ridge"))
    # the targets compared are those adapted: MiniLM's default is query and value
    with pytest.raises(ValueError, match=r"--lora-r \(8 != 4\), --lora-targets \("
                                         r"\['query', 'value'\] != \['key', 'query'\]\)"):
        _check_records(tmp_path, recipe.AdaptSettings(
            tasks=30, approaches="lora", lora_r=4, lora_targets="query,key"))
    assert len(_check_records(tmp_path, recipe.AdaptSettings(
        tasks=30, approaches="lora", lora_targets="value, query"))) == 1
    # --steps is not read by a probe: its record is of the same setting
    assert len(_check_records(tmp_path, recipe.AdaptSettings(
        tasks=30, steps=5, approaches="probe-ridge"))) == 1


def test_records_store_their_setting_and_records_refuses_another(tmp_path):
    """``records`` writes ``setting`` (``measured_setting``), which a later check reads,
    and refuses to replace a record of another setting at write time too (a resumed run)."""
    s = recipe.AdaptSettings(tasks=2, steps=7)
    recs = _records(_results({"probe-ridge": [0.6, 0.8], "lora": [0.8, 1.0]}),
                          tmp_path, s, command="python my_script.py")
    for path, rec in recs.items():
        assert rec["setting"] == recipe.measured_setting(s, rec["approach"])
        path.write_text(json.dumps(rec))
    lora = recs[tmp_path / "adaptation_wordnet_5w1s_lora.json"]["setting"]
    assert (lora["steps"], lora["tasks"], lora["queries"], lora["seed"]) == (7, 2, 5, 0)
    assert "steps" not in recs[tmp_path / "adaptation_wordnet_5w1s_probe_ridge.json"]["setting"]
    # read from "setting", not from the command (which is not metaloop's)
    assert len(_check_records(tmp_path, dataclasses.replace(s, approaches="lora"))) == 1
    with pytest.raises(ValueError, match=r"--steps \(7 != 8\)"):
        _records(_results({"lora": [0.8, 1.0]}), tmp_path,
                       dataclasses.replace(s, steps=8), command="metaloop adapt")


@pytest.mark.parametrize("command, words", [
    ("python my_script.py", "not one metaloop adapt command"),
    ("metaloop adapt --bogus 1", "unrecognized arguments: --bogus 1"),
    ("metaloop forgetting --seeds 2", "not a metaloop adapt command"),
])
def test_a_record_whose_setting_cannot_be_told_is_refused(tmp_path, command, words):
    rec = _committed(tmp_path, "adaptation_wordnet_5w1s_lora.json")
    (tmp_path / "adaptation_wordnet_5w1s_lora.json").write_text(
        json.dumps({**rec, "command": command}))
    with pytest.raises(ValueError, match=f"settings cannot be told .*{words}"):
        _check_records(tmp_path, recipe.AdaptSettings(tasks=30, approaches="lora"))


def test_the_adapt_command_after_another_is_the_records(tmp_path):
    """A command that trains the model first (``metaloop train ... && metaloop adapt ...``):
    the record's setting is that of its adapt command."""
    rec = _committed(tmp_path, "adaptation_wordnet_5w1s_lora.json")
    (tmp_path / "adaptation_wordnet_5w1s_lora.json").write_text(json.dumps(
        {**rec, "command": "OMP_NUM_THREADS=1 metaloop train --config c.toml && "
                           "metaloop adapt --tasks 30 --queries 4"}))
    with pytest.raises(ValueError, match=r"it differs in --queries \(4 != 5\) \(its"):
        _check_records(tmp_path, recipe.AdaptSettings(tasks=30, approaches="lora"))


def _family(tmp_path):
    import numpy as np

    from metaloop.tasks import Episodes
    rng = np.random.default_rng(0)
    np.savez(tmp_path / "d.npz", x=rng.normal(size=(24, 3)).astype("float32"),
             y=np.repeat(np.arange(4), 6))
    return Episodes.from_tensors(tmp_path / "d.npz", ways=2, shots=1, queries=2)


def _rows():
    import torch

    from metaloop.adapt._fit import Adapted

    def fn(sx, sy, classes):
        model = torch.nn.Linear(3, 2)
        return Adapted(model, dict(model.named_parameters()), 8)
    return {"probe-ridge": (1, fn)}


def test_each_tasks_cpu_seconds_are_measured_and_kept_across_a_resume(tmp_path):
    family, saved = _family(tmp_path), []
    whole = recipe.evaluate_strategies(
        _rows(), family, 3, seed=1,
        on_task=lambda per, done: saved.append(json.loads(json.dumps({"tasks_done": done,
                                                                      "per": per}))))
    cpu = whole["probe-ridge"]["per_task"]["cpu_seconds"]
    assert len(cpu) == 3 and all(c >= 0 for c in cpu)
    assert saved[1]["per"]["probe-ridge"]["cpu_seconds"] == cpu[:2]
    resumed = recipe.evaluate_strategies(_rows(), family, 3, seed=1, kept=saved[1])
    assert resumed["probe-ridge"]["per_task"]["cpu_seconds"][:2] == cpu[:2]
    older = json.loads(json.dumps(saved[1]))          # kept by a metaloop without them
    del older["per"]["probe-ridge"]["cpu_seconds"]
    resumed = recipe.evaluate_strategies(_rows(), family, 3, seed=1, kept=older)
    assert resumed["probe-ridge"]["per_task"]["cpu_seconds"][:2] == \
        older["per"]["probe-ridge"]["adapt_seconds"]


def test_a_kept_state_with_cpu_seconds_of_other_tasks_is_corrupt(tmp_path):
    """Each kept row's ``cpu_seconds`` (where it has them) are one per task scored, as its
    accuracies are; a row without them (kept by an earlier metaloop) is read."""
    ident = {"tasks": 3}
    row = {"accuracy": [1.0, 0.5], "adapt_seconds": [0.1, 0.2], "cpu_seconds": [0.1]}
    state = {"identity": ident, "tasks_done": 2, "per": {"lora": row}, "eval_seconds": 0.5}
    (tmp_path / recipe.PARTIAL).write_text(json.dumps(state))
    with pytest.raises(ValueError, match="is corrupt: not the state of a metaloop adapt run"):
        recipe.kept(tmp_path, ident)
    del row["cpu_seconds"]
    (tmp_path / recipe.PARTIAL).write_text(json.dumps(state))
    assert recipe.kept(tmp_path, ident)["tasks_done"] == 2


def test_without_a_reader_of_commands_a_record_without_setting_is_refused(tmp_path):
    """The recipe reads no command line itself (the command line gives it the reader): a
    library caller's check names a record it cannot tell instead of guessing."""
    _committed(tmp_path, "adaptation_wordnet_5w1s_lora.json")
    with pytest.raises(ValueError, match="no reader of its command was given"):
        recipe.check_records(tmp_path, recipe.AdaptSettings(tasks=30, approaches="lora"))


def _meta_results(accs: dict, meta_cpu: float = 40.0) -> dict:
    res = _results({n: a for n, a in accs.items() if n in recipe.APPROACHES})
    for name, acc in accs.items():
        if name not in recipe.APPROACHES:
            m, c = mean_ci(acc)
            res["approaches"][name] = {
                "approach": 3, "accuracy": {"mean": m, "ci95": c}, "trainable": 1925,
                "adapt_seconds": 0.25, "info": {},
                "per_task": {"accuracy": acc, "adapt_seconds": [0.25] * len(acc),
                             "cpu_seconds": [0.125] * len(acc)}}
    res["meta"] = {"fomaml": {"cpu_seconds": meta_cpu, "wall_seconds": 50.0}}
    res["paired"] = recipe.paired(res["approaches"], [
        ("meta-lora-fomaml", "lora"), ("meta-lora-fomaml inner", "lora inner-fomaml")])
    return res


META_ACCS = {"lora": [0.8, 1.0, 0.6, 0.9], "meta-lora-fomaml": [1.0, 1.0, 0.8, 0.9],
             "meta-lora-fomaml inner": [0.9, 1.0, 0.7, 1.0],
             "lora inner-fomaml": [0.6, 0.8, 0.6, 0.7]}


def test_a_meta_runs_records_hold_each_tasks_accuracy_and_the_meta_training(tmp_path):
    """Every row of a --meta run is recorded, in table adaptation-meta-lora under names of
    their own: each task's accuracy behind the mean and CI (so the rows pair task by task),
    the meta options in the setting, and the meta-training's CPU seconds in the budget of
    the rows that adapt a meta-learned start."""
    s = recipe.AdaptSettings(tasks=4, steps=7, approaches="lora", meta="fomaml",
                             meta_iterations=30, meta_batch=2)
    recs = _records(_meta_results(META_ACCS), tmp_path, s, command="metaloop adapt")
    assert [p.name for p in recs] == [p.name for p in _check_records(tmp_path, s)] == [
        "adaptation_meta_lora_wordnet_5w1s_lora.json",
        "adaptation_meta_lora_wordnet_5w1s_meta_lora_fomaml.json",
        "adaptation_meta_lora_wordnet_5w1s_meta_lora_fomaml_inner.json",
        "adaptation_meta_lora_wordnet_5w1s_lora_inner_fomaml.json",
        "adaptation_meta_lora_wordnet_5w1s_meta_lora_fomaml_minus_lora_paired.json",
        "adaptation_meta_lora_wordnet_5w1s_meta_lora_fomaml_inner_minus_lora_inner_fomaml_"
        "paired.json"]
    for (path, rec), (name, acc) in zip(recs.items(), META_ACCS.items()):
        assert validate_record(rec, where=str(path)) == rec
        assert rec["table"] == "adaptation-meta-lora" and rec["approach"] == name
        assert rec["row"] == f"WordNet 5-way 1-shot, MiniLM: {name}"
        assert rec["per_task"] == [round(100 * a, 4) for a in acc] and rec["n"] == 4
        m, c = mean_ci(rec["per_task"])
        assert rec["mean"] == pytest.approx(m, abs=1e-4)
        assert rec["ci95"] == pytest.approx(c, abs=1e-4)
        setting = rec["setting"]
        assert setting == recipe.measured_setting(s, name)
        assert (setting["meta"], setting["meta_iterations"], setting["meta_batch"],
                setting["meta_shots"]) == (["fomaml"], 30, 2, {"fomaml": 1})
        assert (setting["lora_r"], setting["lora_targets"]) == (8, ["query", "value"])
        assert ("steps" in setting) == (name in ("lora", "meta-lora-fomaml"))
    lora, meta, inner, base, pair, inner_pair = recs.values()
    assert lora["budget"] == {"cpu_seconds": 0.5, "iterations": 7}
    assert meta["budget"] == inner["budget"] == {"cpu_seconds": 40.5, "iterations": 30}
    assert base["budget"] == {"cpu_seconds": 0.5, "iterations": 3}     # its inner steps
    assert meta["note"].endswith("; meta-trained by fomaml: 30 outer steps of 2 tasks, "
                                 "40.0 CPU-s")
    assert [r["order"] for r in recs.values()] == [1, 2, 3, 4, 5, 6]
    # the paired differences: each task's difference in points behind the mean and CI
    for rec, (a, b) in ((pair, (meta, lora)), (inner_pair, (inner, base))):
        assert validate_record(rec) == rec and rec["n"] == 4
        assert rec["table"] == "adaptation-meta-lora" and "unit" not in rec
        assert rec["metric"] == "accuracy difference (points)"
        assert rec["per_task"] == pytest.approx([x - y for x, y in zip(a["per_task"],
                                                                        b["per_task"])])
        d = paired_difference(a, b)                  # what the records' per_task give
        assert (rec["mean"], rec["ci95"]) == (pytest.approx(d["mean"], abs=1e-4),
                                              pytest.approx(d["ci95"], abs=1e-4))
        assert rec["budget"] == {"cpu_seconds": 41.0, "iterations": 30}
        assert rec["setting"] == a["setting"]
    assert pair["row"] == "WordNet 5-way 1-shot, MiniLM: meta-lora-fomaml minus lora, paired"
    assert pair["mean"] == pytest.approx(100 * math.fsum(
        a - b for a, b in zip(META_ACCS["meta-lora-fomaml"], META_ACCS["lora"])) / 4, abs=1e-3)
    assert pair["note"].endswith("tasks won / tied / lost: 2 / 2 / 0")


def test_a_meta_record_is_replaced_only_by_a_run_of_the_same_meta_setting(tmp_path):
    s = recipe.AdaptSettings(tasks=4, approaches="lora", meta="fomaml", meta_iterations=30)
    for path, rec in _records(_meta_results(META_ACCS), tmp_path, s,
                              command="metaloop adapt").items():
        path.write_text(json.dumps(rec))
    assert len(_check_records(tmp_path, dataclasses.replace(s, meta_shots=1))) == 6  # default
    for change, words in [
            (dict(meta_iterations=60), r"--meta-iterations \(30 != 60\)"),
            (dict(meta_batch=2, meta_shots=5), r"--meta-batch \(4 != 2\), --meta-shots "
                                                r"\(\{'fomaml': 1\} != \{'fomaml': 5\}\)"),
            (dict(meta="fomaml,reptile"), r"--meta \(\['fomaml'\] != \['fomaml', 'reptile'\]\)")]:
        with pytest.raises(ValueError, match=r"adaptation_meta_lora_wordnet_5w1s_lora.json "
                                             r"holds the record of another setting of lora.*"
                                             + words):
            _check_records(tmp_path, dataclasses.replace(s, **change))
    # a run without --meta writes other files, and a record of one is not a meta run's
    plain = dataclasses.replace(s, meta="", meta_iterations=300)
    assert _check_records(tmp_path, plain) == [tmp_path / "adaptation_wordnet_5w1s_lora.json"]
    meta_path = tmp_path / "adaptation_meta_lora_wordnet_5w1s_lora.json"
    plain_rec = _records(_results({"lora": META_ACCS["lora"]}), tmp_path / "p", plain,
                         command="metaloop adapt")
    meta_path.write_text(json.dumps(next(iter(plain_rec.values()))))
    with pytest.raises(ValueError, match=r"differs in --meta \(not recorded in the record; "
                                         r"this run's: \["):
        _check_records(tmp_path, s)


def test_the_setting_compares_the_lora_targets_adapted_not_as_given(tmp_path):
    """A record written without --lora-targets holds the model's default (told from its
    config, before it loads), so a run naming that default is of the same setting, and
    one naming other layers is refused; a record that stored None (the default, as given)
    is read as the default of its model."""
    s = recipe.AdaptSettings(tasks=2, approaches="lora")
    assert recipe.default_lora_targets(s) == ["query", "value"]
    assert recipe.measured_setting(s, "lora")["lora_targets"] == ["query", "value"]
    (path, rec), = _records(_results({"lora": [0.8, 1.0]}), tmp_path, s,
                            command="metaloop adapt").items()
    path.write_text(json.dumps(rec))
    explicit = dataclasses.replace(s, lora_targets="value,query")
    assert _check_records(tmp_path, explicit) == [path]
    assert list(_records(_results({"lora": [0.8, 1.0]}), tmp_path, explicit,
                         command="metaloop adapt")) == [path]
    with pytest.raises(ValueError, match=r"--lora-targets \(\['query', 'value'\] != "
                                         r"\['query'\]\)"):
        _check_records(tmp_path, dataclasses.replace(s, lora_targets="query"))
    path.write_text(json.dumps({**rec, "setting": {**rec["setting"], "lora_targets": None}}))
    assert _check_records(tmp_path, explicit) == [path]
    with pytest.raises(ValueError, match=r"--lora-targets \(\['query', 'value'\] != "
                                         r"\['key'\]\)"):
        _check_records(tmp_path, dataclasses.replace(s, lora_targets="key"))


def test_a_meta_record_on_the_users_data_holds_its_class_split():
    """With --meta on the user's data, --split-fractions and --split-seed pick every row's
    held-out classes: records of two splits are two settings (one replaced the other)."""
    a = recipe.AdaptSettings(family="table", data="t.csv", meta="fomaml", approaches="lora")
    b = dataclasses.replace(a, split_seed=7)
    c = dataclasses.replace(a, split_fractions="0.5,0.1,0.4")
    for row in ("lora", "meta-lora-fomaml", "meta-lora-fomaml minus lora, paired"):
        sa = recipe.measured_setting(a, row)
        assert (sa["split_fractions"], sa["split_seed"]) == ([0.7, 0.1, 0.2], 0)
        assert sa != recipe.measured_setting(b, row)
        assert sa != recipe.measured_setting(c, row)
    plain = dataclasses.replace(a, meta="")      # without --meta every class is held out
    assert "split_seed" not in recipe.measured_setting(plain, "lora")


def test_a_records_model_and_data_inside_the_working_folder_are_stored_relative(
        tmp_path, monkeypatch):
    """A record named its local model folder and data file by their absolute paths, so a
    record committed with a project named the measuring machine's folders; inside the
    working folder they are stored relative to it, and read back as the same setting."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / "runs" / "mine").mkdir(parents=True)
    (tmp_path / "t.csv").write_text("text,label\n")
    s = recipe.AdaptSettings(family="table", data="t.csv", model="runs/mine",
                             approaches="probe-ridge", tasks=2)
    recs = _records(_results({"probe-ridge": [0.5, 1.0]}), tmp_path / "rec", s,
                    command="metaloop adapt")
    (path, rec), = recs.items()
    assert (rec["setting"]["model"], rec["setting"]["data"]) == ("runs/mine", "t.csv")
    write_record(path, **rec)
    # the same run from the same folder replaces it; data elsewhere is another setting
    assert _check_records(tmp_path / "rec", s) == [path]
    elsewhere = tmp_path / "other"
    elsewhere.mkdir()
    (elsewhere / "t.csv").write_text("text,label\n")
    with pytest.raises(ValueError, match=r"--data \('/.*/t.csv' != '/.*/other/t.csv'\)"):
        _check_records(tmp_path / "rec", dataclasses.replace(s, data=str(elsewhere / "t.csv")))
    # outside the working folder: as they are
    outside = recipe._portable({"model": "/opt/m", "data": str(elsewhere / "t.csv")})
    assert outside["model"] == "/opt/m" and outside["data"] == "other/t.csv"


def test_the_title_of_unprepared_settings_without_data():
    """``title`` of settings not yet checked by ``prepare`` (a user family, no --data)."""
    assert recipe.title(recipe.AdaptSettings(family="table")) == \
        "table 5-way 1-shot, minilm: 100 held-out tasks"


def _record_written_from_w(tmp_path: Path, monkeypatch):
    """A probe record of ``w/base.csv`` written from ``w`` (``--data base.csv --record
    rec``): ``(w, its settings, its path relative to w, the record)``."""
    work = tmp_path / "w"
    work.mkdir()
    (work / "base.csv").write_text("text,label\na,x\n")
    monkeypatch.chdir(work)
    s = recipe.AdaptSettings(family="table", data="base.csv", approaches="probe-ridge",
                             tasks=2)
    recs = _records(_results({"probe-ridge": [0.5, 1.0]}), Path("rec"), s,
                    command="metaloop adapt --approaches probe-ridge --data base.csv "
                            "--family table --record rec --tasks 2")
    (path, rec), = recs.items()
    assert rec["setting"]["data"] == "base.csv"
    write_record(work / path, **rec)
    return work, s, path, rec


def test_a_records_relative_data_is_read_from_the_folder_it_was_written_from(
        tmp_path, monkeypatch):
    """A record written from ``w`` names its data ``base.csv``; from ``w``'s parent the same
    file, ``w/base.csv``, is the same setting (it was refused: the record's path was read
    from the working folder), and a ``base.csv`` there is another one, named by both paths
    resolved."""
    work, s, path, rec = _record_written_from_w(tmp_path, monkeypatch)
    monkeypatch.chdir(tmp_path)
    assert _check_records(Path("w/rec"), dataclasses.replace(s, data="w/base.csv")) == \
        [Path("w/rec") / path.name]
    (tmp_path / "base.csv").write_text("text,label\na,x\n")       # another file of that name
    with pytest.raises(ValueError, match=rf"--data \('{work / 'base.csv'}' != "
                                         rf"'{tmp_path / 'base.csv'}'\)"):
        _check_records(Path("w/rec"), s)
    # a record without setting: the paths of its command, read from the same folder
    write_record(work / path, **{k: v for k, v in rec.items() if k != "setting"})
    assert _check_records(Path("w/rec"), dataclasses.replace(s, data="w/base.csv"))
    with pytest.raises(ValueError, match=rf"--data \('{work / 'base.csv'}' != "):
        _check_records(Path("w/rec"), s)


def test_a_records_relative_path_is_not_read_from_the_working_folder_when_gone_from_its_own(
        tmp_path, monkeypatch):
    """A record written from ``w`` names its data ``base.csv``, since removed from ``w``; a
    ``base.csv`` in the working folder is another file of that name, and the record's
    setting is not read as that file (it was, so the record was replaced): its setting's
    path stays as the record gives it, and so does its command's."""
    work, s, path, rec = _record_written_from_w(tmp_path, monkeypatch)
    (work / "base.csv").unlink()
    monkeypatch.chdir(tmp_path)
    (tmp_path / "base.csv").write_text("text,label\na,x\n")       # another file of that name
    with pytest.raises(ValueError, match=rf"--data \('base.csv' != '{tmp_path / 'base.csv'}'\)"):
        _check_records(Path("w/rec"), s)
    # a record without setting: its command's relative path, as the setting's
    write_record(work / path, **{k: v for k, v in rec.items() if k != "setting"})
    with pytest.raises(ValueError, match=rf"--data \('base.csv' != '{tmp_path / 'base.csv'}'\)"):
        _check_records(Path("w/rec"), s)
    # where the folder it was written from cannot be told (an absolute --record), the
    # working folder's file is read, as before
    write_record(work / path, **{**rec, "command": rec["command"].replace(
        "--record rec", f"--record {work / 'rec'}")})
    assert _check_records(Path("w/rec"), s) == [Path("w/rec") / path.name]


def test_resolved_reads_a_relative_path_from_the_folder_the_record_was_written_from(tmp_path,
                                                                                   monkeypatch):
    (tmp_path / "w" / "runs" / "mine").mkdir(parents=True)
    (tmp_path / "runs" / "mine").mkdir(parents=True)          # the working folder's own
    monkeypatch.chdir(tmp_path)
    setting = {"model": "runs/mine", "data": "gone.csv", "family": "table"}
    assert recipe._resolved(setting, tmp_path / "w") == {
        "model": str(tmp_path / "w" / "runs" / "mine"), "data": "gone.csv", "family": "table"}
    assert recipe._resolved(setting)["model"] == str(tmp_path / "runs" / "mine")
    assert recipe._resolved({"model": "minilm"}, tmp_path / "w") == {"model": "minilm"}

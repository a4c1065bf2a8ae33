"""An eval record's budget is that of the checkpoints evaluated: the ``ckpt-*`` folders
``load_ensemble`` loaded (``checkpoint_dir``), as their ``state.json`` read at the load
(``Run.state``) gives it, not a run folder's ``LATEST`` read again when the record is written,
after an evaluation during which a run training into the folder (``metaloop train
--resume``) may have written newer checkpoints and pruned the one loaded."""

from __future__ import annotations

import json
import re
import shutil
import sys
from pathlib import Path

import pytest

import metaloop.cli.eval as cli_eval
from metaloop import runs
from metaloop.cli.main import main
from metaloop.evaluate import records
from metaloop.recipes.evaluation import load_ensemble
from metaloop.train.checkpoint import latest_checkpoint, load_checkpoint

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from conftest import (  # noqa: E402
    drawing,
    folder_config,
    tensor_config,
    train_run,
    write_image_folder,
    write_next_checkpoint,
    write_tensor_file,
)

CFG = {"family": {"name": "tensors", "ways": 2, "shots": 2}, "method": {"name": "r2d2"},
       "eval": {"ways": 0, "shots": 0}}
RESULT = {"steps": [0], "tasks": 2, "accuracy": {"mean": [0.5], "ci95": [0.1]},
          "per_task": {"accuracy": [[0.4, 0.6]]}}
LAKE = {"runs": [{"name": "run01", "error_rate": 0.5}, {"name": "run02", "error_rate": 0.0}],
        "error_rate": 0.25, "ci95": 0.1, "trials": 4, "runs_sha256": "0" * 64}


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> Path:
    """An R2D2 run on a tensor file: 2 iterations, one checkpoint."""
    d = tmp_path_factory.mktemp("record_checkpoint_race")
    return train_run(d, tensor_config(write_tensor_file(d / "v.npz")))


@pytest.fixture
def run(trained, tmp_path) -> Path:
    """A copy of the trained run, for a test to write checkpoints into."""
    return Path(shutil.copytree(trained, tmp_path / "run"))


def _write_checkpoint(run: Path, iteration: int, cpu_seconds: float, keep: int = 2) -> Path:
    """A checkpoint at ``iteration`` storing ``cpu_seconds``, with LATEST pointed at it and
    ``metaloop train``'s lines logged up to it, as a run training on writes them (keeping
    the newest ``keep`` checkpoints)."""
    state = load_checkpoint(run)[1]
    with open(run / "metrics.jsonl", "a", encoding="utf-8") as f:
        for i in range(state["iteration"] + 1, iteration + 1):
            f.write(json.dumps({"iteration": i, "loss": 0.1, "accuracy": 1.0,
                                "time": 1e9 + 100.0 * i}) + "\n")
    return write_next_checkpoint(run, iteration, move=False, keep=keep,
                                 cpu_seconds=cpu_seconds)


def _budget(ckpt: Path) -> dict:
    """The budget the ``ckpt-*`` folder's own ``state.json`` gives (CPU)."""
    state = json.loads((ckpt / "state.json").read_text())
    return {"iterations": state["iteration"], "cpu_seconds": round(state["cpu_seconds"], 2)}


def _gpu_seconds(run: Path, until: int) -> float:
    times = [json.loads(ln)["time"] for ln in (run / "metrics.jsonl").read_text().splitlines()
             if ln.strip() and json.loads(ln)["iteration"] <= until]
    return round(times[-1] - times[0], 1)


def test_a_checkpoint_written_after_the_load_is_not_the_records_budget(run):
    """The run loaded at iteration 2, then a checkpoint at iteration 7 written: the record
    (of generated tasks or of the official runs) gives iteration 2's budget, training curve
    and GPU seconds; given paths only, it reads LATEST as it is now, as before."""
    one = load_ensemble([run])
    loaded = one.checkpoint_dir
    assert loaded == latest_checkpoint(run).resolve()
    assert one.state == json.loads((loaded / "state.json").read_text())
    expected = _budget(loaded)
    assert expected["iterations"] == 2
    _write_checkpoint(run, 7, cpu_seconds=expected["cpu_seconds"] + 99.5)
    assert records._provenance(run, "cpu")["budget"] == _budget(run / "ckpt-00000007")
    assert records._provenance(run, "cpu", [loaded])["budget"] == expected
    rec = records.eval_record(CFG, RESULT, "accuracy", checkpoint=run, command="c",
                              checkpoint_dirs=loaded)
    assert rec["budget"] == expected
    assert (rec["iterations"], rec["cpu_seconds"]) == (2, expected["cpu_seconds"])
    assert [i for i, _ in rec["training_curve"]] == [1, 2]
    lake = records.lake_runs_record(CFG, LAKE, checkpoint=[run], command="c",
                                    checkpoint_dirs=[loaded])
    assert lake["budget"] == expected
    # on CUDA: the wall-clock of metrics.jsonl up to the loaded checkpoint's iteration
    assert records._run_budget(run, "cuda", loaded)[1] == \
        {"iterations": 2, "gpu_seconds": _gpu_seconds(run, 2)}
    assert records._run_budget(run, "cuda")[1]["iterations"] == 7


def test_an_ensemble_member_checkpointed_during_the_eval_keeps_its_budget(
        run, tmp_path, monkeypatch, capsys):
    """``metaloop eval --checkpoint A B --record``: B gains a checkpoint (iteration 9, other
    CPU seconds) while the held-out tasks are scored; the record sums what was loaded."""
    other = Path(shutil.copytree(run, tmp_path / "other"))
    expected = {"members": 2, "iterations": 4, "cpu_seconds": round(
        _budget(latest_checkpoint(run))["cpu_seconds"]
        + _budget(latest_checkpoint(other))["cpu_seconds"], 2)}
    real = cli_eval.evaluate_run

    def evaluate_run(*args, **kw):
        res = real(*args, **kw)
        _write_checkpoint(other, 9, cpu_seconds=500.0)
        return res

    monkeypatch.setattr(cli_eval, "evaluate_run", evaluate_run)
    record = tmp_path / "r.json"
    assert main(["eval", "--checkpoint", str(run), str(other), "--record", str(record),
                 "--no-progress"]) == 0
    assert latest_checkpoint(other).name == "ckpt-00000009"
    rec = records.validate_record(json.loads(record.read_text()))
    assert rec["budget"] == expected and rec["iterations"] == 4
    assert [m["checkpoint"] for m in rec["members"]] == [str(run), str(other)]
    # paths only (a Python caller that kept no loaded folders): LATEST as it is now
    assert records._provenance([run, other], "cpu")["budget"]["iterations"] == 11


def test_a_snapshot_ensemble_counts_the_loaded_checkpoints_training_once(run):
    """``RUN RUN/ckpt-00000002`` loaded while LATEST names iteration 7, then iteration 9
    written (all three kept): the run's training is counted once, at the newest checkpoint
    loaded (7)."""
    seven = _write_checkpoint(run, 7, cpu_seconds=70.0)
    ens = load_ensemble([run, run / "ckpt-00000002"])
    dirs = [m.checkpoint_dir for m in ens.members]
    assert dirs == [seven.resolve(), (run / "ckpt-00000002").resolve()]
    _write_checkpoint(run, 9, cpu_seconds=90.0, keep=3)
    rec = records.eval_record(CFG, RESULT, "accuracy", checkpoint=[run, run / "ckpt-00000002"],
                              command="c", checkpoint_dirs=dirs)
    assert rec["budget"] == {"members": 2, "iterations": 7, "cpu_seconds": 70.0}


def test_the_record_is_unchanged_when_no_checkpoint_is_written(run, tmp_path):
    """With nothing written since the load, the loaded folders and their states give the
    record that the paths alone give, byte for byte (one run, an ensemble, the official
    runs)."""
    other = Path(shutil.copytree(run, tmp_path / "other"))
    for paths in ([run], [run, other], [other, run / "ckpt-00000002"]):
        ens = load_ensemble(paths)
        loaded = getattr(ens, "members", None) or [ens]
        dirs, states = [m.checkpoint_dir for m in loaded], [m.state for m in loaded]
        one = paths[0] if len(paths) == 1 else paths
        for make, res in ((records.eval_record, None), (records.lake_runs_record, LAKE)):
            args = (CFG, RESULT, "accuracy") if res is None else (CFG, res)
            old = make(*args, checkpoint=one, command="c")
            new = make(*args, checkpoint=one, command="c", checkpoint_dirs=dirs)
            kept = make(*args, checkpoint=one, command="c", checkpoint_dirs=dirs,
                        checkpoint_states=states)
            for rec in (old, new, kept):
                rec.pop("date")
            assert records.dumps_record(new) == records.dumps_record(old) \
                == records.dumps_record(kept)


def test_loaded_folders_that_do_not_match_the_checkpoints_are_refused(run, tmp_path):
    """A count that differs from the checkpoints', or a folder of another run, is named; so
    is a loaded checkpoint pruned since the load (``save_checkpoint`` keeps the newest 2),
    rather than a record of iteration 0."""
    other = Path(shutil.copytree(run, tmp_path / "other"))
    loaded = load_ensemble([run]).checkpoint_dir
    with pytest.raises(ValueError, match=re.escape(
            "checkpoint_dirs names 2 loaded folder(s) for 1 checkpoint(s)")):
        records.eval_record(CFG, RESULT, "accuracy", checkpoint=run, command="c",
                            checkpoint_dirs=[loaded, loaded])
    theirs = latest_checkpoint(other)
    with pytest.raises(ValueError, match=re.escape(
            f"the loaded folder {theirs} is not a checkpoint of {run}")):
        records.lake_runs_record(CFG, LAKE, checkpoint=run, command="c",
                                 checkpoint_dirs=[theirs])
    with pytest.raises(ValueError, match=re.escape(
            f"the loaded folder {loaded.parent} is not a checkpoint of "
            f"{run / 'ckpt-00000002'}")):
        records._run_budget(run / "ckpt-00000002", "cpu", loaded.parent)
    state = json.loads((loaded / "state.json").read_text())
    with pytest.raises(ValueError, match=re.escape(
            "checkpoint_states gives 2 loaded state(s) for 1 checkpoint(s)")):
        records.eval_record(CFG, RESULT, "accuracy", checkpoint=run, command="c",
                            checkpoint_dirs=[loaded], checkpoint_states=[state, state])
    with pytest.raises(ValueError, match=re.escape(
            f"a loaded state of {run} needs the ckpt-* folder it was read from")):
        records.eval_record(CFG, RESULT, "accuracy", checkpoint=run, command="c",
                            checkpoint_states=[state])
    with pytest.raises(ValueError, match=re.escape(
            f"the loaded state of {loaded} must be its state.json's object, got list")):
        records._run_budget(run, "cpu", loaded, [state])
    for i in (5, 6):
        _write_checkpoint(run, i, cpu_seconds=float(i))
    assert not loaded.exists()
    # the folders alone (a caller that kept no state): named, rather than iteration 0
    with pytest.raises(ValueError, match=re.escape(
            f"{loaded}, the checkpoint evaluated, has no readable state.json now")):
        records.eval_record(CFG, RESULT, "accuracy", checkpoint=run, command="c",
                            checkpoint_dirs=[loaded])


def test_a_checkpoint_pruned_after_the_load_is_recorded_from_its_loaded_state(run):
    """The loaded checkpoint (iteration 2) pruned by two written since (``save_checkpoint``
    keeps the newest 2): the state read at the load gives the record it gave before the
    pruning, byte for byte (generated tasks and the official runs; CPU and CUDA budgets)."""
    one = load_ensemble([run])
    loaded, state = one.checkpoint_dir, one.state
    expected = _budget(loaded)

    def made(**kw) -> list[str]:
        out = []
        for make, args in ((records.eval_record, (CFG, RESULT, "accuracy")),
                           (records.lake_runs_record, (CFG, LAKE))):
            rec = make(*args, checkpoint=run, command="c", **kw)
            rec.pop("date")
            out.append(records.dumps_record(rec))
        return out

    before = made(checkpoint_dirs=[loaded])
    cuda = records._run_budget(run, "cuda", loaded)
    for i in (5, 6):
        _write_checkpoint(run, i, cpu_seconds=float(i))
    assert not loaded.exists() and latest_checkpoint(run).name == "ckpt-00000006"
    assert made(checkpoint_dirs=[loaded], checkpoint_states=[state]) == before
    assert made(checkpoint_dirs=loaded, checkpoint_states=state) == before
    rec = json.loads(before[0])
    assert rec["budget"] == expected and expected["iterations"] == 2
    assert [i for i, _ in rec["training_curve"]] == [1, 2]
    assert records._run_budget(run, "cuda", loaded, state) == cuda
    assert cuda[1] == {"iterations": 2, "gpu_seconds": _gpu_seconds(run, 2)}


def test_a_checkpoint_pruned_during_the_load_is_loaded_again_with_its_state(run, monkeypatch):
    """Two checkpoints written while the run folder loads prune the one its LATEST named:
    the run is loaded again, and its ``state`` is that of the checkpoint it then holds."""
    real, written = runs.load_run, []

    def load_run(path, **kw):
        loaded = real(path, **kw)
        if not written:                                # a run training on writes two
            written.extend(_write_checkpoint(run, i, cpu_seconds=float(i)) for i in (5, 6))
        return loaded

    monkeypatch.setattr(runs, "load_run", load_run)
    one = load_ensemble([run])
    assert not (run / "ckpt-00000002").exists()
    assert one.checkpoint_dir == written[1].resolve()
    assert one.state == json.loads((written[1] / "state.json").read_text())
    assert one.iteration == one.state["iteration"] == 6


def test_eval_records_a_checkpoint_pruned_during_the_eval(run, tmp_path, monkeypatch):
    """Two checkpoints written while the held-out tasks are scored prune the one loaded:
    ``metaloop eval --record --out`` still writes the record of the checkpoint evaluated
    (its budget and training curve, from the state read at the load) and the results; an
    ensemble whose second member is pruned likewise sums what was loaded."""
    other = Path(shutil.copytree(run, tmp_path / "other"))
    loaded = latest_checkpoint(run).resolve()
    expected = _budget(loaded)
    pruned = [run]
    real = cli_eval.evaluate_run

    def evaluate_run(*args, **kw):
        res = real(*args, **kw)
        for i in (5, 6):
            _write_checkpoint(pruned[0], i, cpu_seconds=float(i))
        return res

    monkeypatch.setattr(cli_eval, "evaluate_run", evaluate_run)
    record, out = tmp_path / "r.json", tmp_path / "ev"
    assert main(["eval", "--checkpoint", str(run), "--record", str(record), "--out", str(out),
                 "--no-progress"]) == 0
    assert not loaded.exists() and latest_checkpoint(run).name == "ckpt-00000006"
    rec = records.validate_record(json.loads(record.read_text()))
    assert rec["budget"] == expected and expected["iterations"] == 2
    assert (rec["iterations"], rec["cpu_seconds"]) == (2, expected["cpu_seconds"])
    assert [i for i, _ in rec["training_curve"]] == [1, 2]
    assert json.loads((out / "results.json").read_text())["metric"] == "accuracy"

    first, ours = _budget(latest_checkpoint(run)), latest_checkpoint(other).resolve()
    summed = {"members": 2, "iterations": 6 + 2,
              "cpu_seconds": round(first["cpu_seconds"] + _budget(ours)["cpu_seconds"], 2)}
    pruned[0] = other
    both = tmp_path / "both.json"
    assert main(["eval", "--checkpoint", str(run), str(other), "--record", str(both),
                 "--no-progress"]) == 0
    assert not ours.exists() and latest_checkpoint(other).name == "ckpt-00000006"
    ens = records.validate_record(json.loads(both.read_text()))
    assert ens["budget"] == summed and first["iterations"] == 6


def _official_runs(root: Path) -> Path:
    """Two official-style runs of 2 classes each (28x28 drawings) under ``root``."""
    for r, name in enumerate(("run01", "run02")):
        (root / name / "training").mkdir(parents=True)
        (root / name / "test").mkdir()
        lines = []
        for k in range(2):
            drawing(2 * r + k).save(root / name / "training" / f"class{k + 1:02d}.png")
            drawing(2 * r + k).save(root / name / "test" / f"item{k + 1:02d}.png")
            lines.append(f"{name}/test/item{k + 1:02d}.png {name}/training/class{k + 1:02d}.png")
        (root / name / "class_labels.txt").write_text("\n".join(lines) + "\n")
    return root


def test_eval_lake_runs_records_the_checkpoint_it_scored(tmp_path, monkeypatch, capsys):
    """``metaloop eval --lake-runs --record``: an image run checkpointed twice while the
    official runs are scored, which prunes the checkpoint scored; the record's budget is
    that checkpoint's."""
    run = train_run(tmp_path / "img", folder_config(write_image_folder(tmp_path / "images")))
    scored = latest_checkpoint(run).resolve()
    expected = _budget(scored)
    real = cli_eval.evaluate_lake_runs

    def evaluate_lake_runs(*args, **kw):
        res = real(*args, **kw)
        _write_checkpoint(run, 8, cpu_seconds=800.0)
        _write_checkpoint(run, 9, cpu_seconds=900.0)
        return res

    monkeypatch.setattr(cli_eval, "evaluate_lake_runs", evaluate_lake_runs)
    record = tmp_path / "official.json"
    assert main(["eval", "--checkpoint", str(run), "--lake-runs",
                 str(_official_runs(tmp_path / "all_runs")), "--record", str(record)]) == 0
    assert latest_checkpoint(run).name == "ckpt-00000009" and not scored.exists()
    rec = records.validate_record(json.loads(record.read_text()))
    assert rec["table"] == "challenge-official" and rec["n"] == 2
    assert rec["budget"] == expected and expected["iterations"] == 2

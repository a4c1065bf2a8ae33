"""A damaged run directory is named on ``--resume`` (exit 2, no traceback) and left as it was;
a run resumes at the precision it was trained with, or is refused by name."""

import json
import math
import re
import shutil
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

from metaloop.cli.main import main
from metaloop.train.checkpoint import (
    atomic_write_text,
    latest_checkpoint,
    load_checkpoint,
    sha256_file,
)

sys.path.insert(0, str(Path(__file__).parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from _cli import write_config  # noqa: E402
from conftest import edit_state  # noqa: E402


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A finished 2-iteration run (checkpoints 1 and 2) and its config."""
    tmp = tmp_path_factory.mktemp("trained")
    cfg = write_config(tmp / "c.toml", iterations=2, meta_batch=2, checkpoint_every=1, seed=0)
    assert main(["train", "--config", str(cfg), "--out", str(tmp / "run"),
                 "--no-progress"]) == 0
    return tmp / "run", cfg


def _state(ck: Path, change) -> None:
    """Change the state and stamp its new state_sha256, as a consistent but wrong writer."""
    edit_state(ck / "state.json", change)


def _edited(ck: Path, change) -> None:
    """Change a value in state.json by hand, leaving its state_sha256 as it was."""
    s = json.loads((ck / "state.json").read_text())
    change(s)
    (ck / "state.json").write_text(json.dumps(s, indent=1))


def _tensors(ck: Path, change) -> None:
    """Change the tensors and store their new sha256, as a consistent but wrong writer."""
    f = ck / "tensors.safetensors"
    t = load_file(str(f))
    change(t)
    save_file(t, str(f))
    _state(ck, lambda s: s.update(tensors_sha256=sha256_file(f)))


def _rewrite_sha(ck: Path) -> None:
    _state(ck, lambda s: s.update(tensors_sha256=sha256_file(ck / "tensors.safetensors")))


def _metrics_folder(run: Path) -> None:
    (run / "metrics.jsonl").unlink()
    (run / "metrics.jsonl").mkdir()
    (run / "metrics.jsonl" / "inside.txt").write_text("kept\n")


DAMAGES = {
    "LATEST names nothing": (lambda run, ck: (run / "LATEST").write_text("ckpt-00000099\n"),
                             "LATEST names it, but it does not exist"),
    "LATEST empty": (lambda run, ck: (run / "LATEST").write_text(""),
                     "LATEST is corrupt: it holds '', not the name of a ckpt-* directory"),
    "LATEST not text": (lambda run, ck: (run / "LATEST").write_bytes(b"\xff\xfe"),
                        "LATEST is unreadable"),
    "LATEST names another file": (lambda run, ck: (run / "LATEST").write_text("metrics.jsonl"),
                                  "it holds 'metrics.jsonl', not the name of a ckpt-*"),
    "state a list": (lambda run, ck: (ck / "state.json").write_text("[]"),
                     "state.json is corrupt: it holds a JSON list, not an object"),
    "state not text": (lambda run, ck: (ck / "state.json").write_bytes(b"\xff{"),
                       "state.json is corrupt: 'utf-8' codec can't decode"),
    "state without iteration": (lambda run, ck: _state(ck, lambda s: s.pop("iteration")),
                                "state.json is corrupt: no integer 'iteration'"),
    "state without rng": (lambda run, ck: _state(ck, lambda s: s.pop("rng")),
                          "is corrupt: its state.json lacks ['rng']"),
    "state without config": (lambda run, ck: _state(ck, lambda s: s.pop("config")),
                             "the checkpoint is corrupt: its state.json holds no config"),
    "state value edited": (lambda run, ck: _edited(ck, lambda s: s.update(iteration=1)),
                           "state.json is corrupt or was edited: its contents' sha256 is"),
    "state rng digit flipped": (
        lambda run, ck: _edited(ck, lambda s: s["rng"]["python"][1].__setitem__(
            0, s["rng"]["python"][1][0] ^ 1)),
        "state.json is corrupt or was edited"),
    "state digest damaged": (lambda run, ck: _edited(ck, lambda s: s.update(state_sha256="0")),
                             "its state_sha256 says 0 (restore the file"),
    "tensors not safetensors": (
        lambda run, ck: ((ck / "tensors.safetensors").write_bytes(b"x" * 20), _rewrite_sha(ck)),
        "tensors.safetensors is corrupt: not a safetensors file"),
    "tensors without rng": (lambda run, ck: _tensors(ck, lambda t: t.pop("rng.tasks")),
                            "is corrupt: it lacks the tensors ['rng.tasks']"),
    "metrics line not a record": (
        lambda run, ck: (run / "metrics.jsonl").write_text(
            "[1]\n" + (run / "metrics.jsonl").read_text()),
        "metrics.jsonl line 1 is corrupt: not a metrics record with an integer 'iteration'"),
    "metrics not text": (
        lambda run, ck: (run / "metrics.jsonl").write_bytes(b"\xff\n"),
        "metrics.jsonl is corrupt: not UTF-8 text"),
    "metrics a folder": (lambda run, ck: _metrics_folder(run),
                         "metrics.jsonl is corrupt: a folder, not the run's metrics log"),
}

WITH_CONFIG = {       # resumed with --config, the model's tensors are read by the loop itself
    "tensors without a model tensor": (
        lambda run, ck: _tensors(ck, lambda t: t.pop("model.head.weight")),
        "is corrupt: it lacks the tensors ['model.head.weight']"),
    "tensor of another shape": (
        lambda run, ck: _tensors(ck, lambda t: t.update({"model.head.weight": torch.zeros(3, 3)})),
        "is corrupt or of another model: model.head.weight [3, 3] (the model's: [1, 16])"),
}


def _snapshot(run: Path) -> dict:
    return {str(p.relative_to(run)): p.read_bytes() for p in sorted(run.rglob("*"))
            if p.is_file()}


@pytest.mark.parametrize("name", [*DAMAGES, *WITH_CONFIG])
def test_a_damaged_run_is_named_on_resume_and_left_as_it_was(trained, tmp_path, capsys, name):
    run = tmp_path / "run"
    shutil.copytree(trained[0], run)
    damage, message = {**DAMAGES, **WITH_CONFIG}[name]
    damage(run, run / "ckpt-00000002")
    before = _snapshot(run)
    extra = ["--config", str(trained[1])] if name in WITH_CONFIG else []
    capsys.readouterr()
    assert main(["train", "--resume", str(run), "--no-progress", *extra]) == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err, err
    assert err.startswith("metaloop train: error: ")
    assert _snapshot(run) == before                      # nothing written, nothing removed


def test_a_run_resumes_at_its_precision_or_is_refused_by_name(tmp_path, capsys):
    cfg = write_config(tmp_path / "c.toml", iterations=5, meta_batch=2, checkpoint_every=3,
                       seed=1)
    full, cut = tmp_path / "full", tmp_path / "cut"
    bf16 = ["--no-progress", "--precision", "bf16"]
    assert main(["train", "--config", str(cfg), "--out", str(full), *bf16]) == 0
    shutil.copytree(full, cut)                 # as killed after the checkpoint at 3
    shutil.rmtree(cut / "ckpt-00000005")
    atomic_write_text(cut / "LATEST", "ckpt-00000003\n")
    capsys.readouterr()
    before = _snapshot(cut)
    assert main(["train", "--resume", str(cut), "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert f"refusing to resume {cut}: it was trained with precision 'bf16', this run asks " \
           f"for 'float32' (metaloop train --precision bf16)" in err, err
    assert _snapshot(cut) == before
    assert main(["train", "--resume", str(cut), *bf16]) == 0
    a, b = load_checkpoint(full)[0], load_checkpoint(cut)[0]
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert latest_checkpoint(cut).name == "ckpt-00000005"


def test_bf16_of_a_float64_model_is_named_before_any_data_and_leaves_no_folder(
        tmp_path, capsys, monkeypatch):
    from metaloop import build as _build

    def no_data(*a, **k):
        raise AssertionError("data was read before the precision was checked")
    monkeypatch.setattr(_build, "build_family_verbose", no_data)
    cfg = write_config(tmp_path / "c.toml", iterations=2, meta_batch=2, checkpoint_every=1,
                       seed=0, dtype="float64")
    assert main(["train", "--config", str(cfg), "--out", str(tmp_path / "run"), "--no-progress",
                 "--precision", "bf16"]) == 2
    assert "--precision bf16 autocasts a float32 model, but train.dtype = 'float64'" \
        in capsys.readouterr().err
    assert not (tmp_path / "run").exists()


def test_resume_into_another_out_is_named_and_writes_nothing(trained, tmp_path, capsys):
    run = tmp_path / "run"
    shutil.copytree(trained[0], run)
    before = _snapshot(run)
    capsys.readouterr()
    assert main(["train", "--resume", str(run), "--out", str(tmp_path / "other"),
                 "--no-progress"]) == 2
    assert f"--resume {run} and --out {tmp_path / 'other'} name two run directories" \
        in capsys.readouterr().err
    assert not (tmp_path / "other").exists() and _snapshot(run) == before
    assert main(["train", "--resume", str(run), "--out", str(run), "--no-progress"]) == 0


def test_a_metrics_line_cut_short_by_a_kill_is_dropped_and_redone(trained, tmp_path):
    run = tmp_path / "run"
    shutil.copytree(trained[0], run)
    shutil.rmtree(run / "ckpt-00000002")            # killed while writing iteration 2's line
    atomic_write_text(run / "LATEST", "ckpt-00000001\n")
    log = run / "metrics.jsonl"
    lines = log.read_text().splitlines()
    log.write_text(lines[0] + "\n" + lines[1][:15])
    assert main(["train", "--resume", str(run), "--no-progress"]) == 0
    got = [json.loads(x) for x in log.read_text().splitlines()]
    ref = [json.loads(x) for x in (trained[0] / "metrics.jsonl").read_text().splitlines()]
    assert [(r["iteration"], r["loss"]) for r in got] == [(r["iteration"], r["loss"]) for r in ref]


class _NaNAt:
    """Sinusoid tasks whose batch number ``at`` (1-based) has a NaN target."""

    kind = "regression"

    def __init__(self, at: int):
        import metaloop as ml
        self.fam, self.at, self.calls = ml.tasks.Sinusoid(5, 5), at, 0

    def sample(self, n, generator=None):
        self.calls += 1
        b = self.fam.sample(n, generator)
        if self.calls == self.at:
            b.query_y[0, 0, 0] = float("nan")
        return b


@pytest.mark.parametrize("at,says", [
    (1, "; no checkpoint was written to {out} yet"),
    (3, "; the last good checkpoint in {out} (iteration 2) is kept"),
])
def test_a_non_finite_stop_says_which_checkpoint_is_kept(tmp_path, at, says):
    import metaloop as ml
    from metaloop.meta import MAML
    from metaloop.models import MLP

    torch.manual_seed(0)
    out = tmp_path / "run"
    with pytest.raises(ml.NonFiniteLossError) as e:
        ml.train(MAML(MLP(1, (8,), 1), 0.01, 1), _NaNAt(at), iterations=5, meta_batch=2,
                 progress=False, out_dir=out, checkpoint_every=2)
    assert str(e.value) == f"non-finite meta-loss/gradient at iteration {at} (loss nan)" \
        + says.format(out=out)
    assert (latest_checkpoint(out) is None) == (at == 1)


def test_state_json_stores_the_sha256_of_its_own_canonical_json(tmp_path):
    """The stored digest is sha256 of the state's sorted, space-free JSON without itself and
    the measured ``cpu_seconds`` (computed here with hashlib); tuples, non-string keys and
    non-finite floats read back to the same digest, and a checkpoint written before the
    digest existed still loads."""
    import hashlib

    from metaloop.train.checkpoint import save_checkpoint

    state = {"config": {"b": (1, 2), 3: "three", "a": [0.1, float("inf")]}, "cpu_seconds": 1.5}
    ck = save_checkpoint(tmp_path / "run", 7, {"w": torch.ones(2)}, state)
    stored = json.loads((ck / "state.json").read_text())
    body = {k: v for k, v in stored.items() if k not in ("state_sha256", "cpu_seconds")}
    text = json.dumps(body, sort_keys=True, separators=(",", ":"))
    assert stored["state_sha256"] == hashlib.sha256(text.encode()).hexdigest()
    tensors, loaded = load_checkpoint(tmp_path / "run")
    assert loaded["iteration"] == 7 and loaded["config"]["b"] == [1, 2]
    assert loaded["config"]["3"] == "three" and loaded["config"]["a"][1] == float("inf")
    assert torch.equal(tensors["w"], torch.ones(2))

    edit_state(ck / "state.json", lambda s: None, as_older=True)     # as written before
    assert "state_sha256" not in load_checkpoint(tmp_path / "run")[1]
    stored["config"]["b"] = [1, 3]                     # an edit that keeps the old digest
    (ck / "state.json").write_text(json.dumps(stored))
    with pytest.raises(ValueError, match="state.json is corrupt or was edited"):
        load_checkpoint(tmp_path / "run")


def test_a_damaged_newest_checkpoint_names_the_earlier_one_to_go_on_from(trained, tmp_path,
                                                                         capsys):
    """The run keeps two checkpoints; with the newest damaged the error said nothing of the
    other. It now names it, and following the advice resumes to the same run."""
    run = tmp_path / "run"
    shutil.copytree(trained[0], run)
    f = run / "ckpt-00000002" / "tensors.safetensors"
    f.write_bytes(f.read_bytes()[:-7])
    assert main(["train", "--resume", str(run), "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert ("is corrupt or truncated" in err and f"; the run also keeps ckpt-00000001, an "
            f"earlier checkpoint: write its name into {run / 'LATEST'} to go on from it") in err
    (run / "LATEST").write_text("ckpt-00000001\n")
    assert main(["train", "--resume", str(run), "--no-progress"]) == 0
    redone, _ = load_checkpoint(run)
    want, _ = load_checkpoint(trained[0])
    assert redone.keys() == want.keys() and all(torch.equal(redone[k], want[k]) for k in want)
    # with no earlier checkpoint, nothing is offered
    shutil.rmtree(run / "ckpt-00000001")
    (run / "LATEST").write_text("ckpt-00000009\n")
    with pytest.raises(FileNotFoundError) as e:
        load_checkpoint(run)
    assert "also keeps ckpt-00000002" in str(e.value)
    shutil.rmtree(run / "ckpt-00000002")
    with pytest.raises(FileNotFoundError) as e:
        load_checkpoint(run)
    assert "also keeps" not in str(e.value)


def test_a_protocol_checkpoint_digested_with_its_sessions_still_loads_and_is_checked(tmp_path):
    """The IWAE protocol's sessions (when and how each start or resume ran) are out of the
    digest now, so a run and its resume store one; a checkpoint of an earlier version, whose
    digest held them but for their start times, still loads, and an edit of it is named."""
    import hashlib

    from metaloop.train.checkpoint import save_checkpoint, state_digest

    sessions = [{"from_passes": 0, "threads": 1, "started": "2026-01-01T00:00:00Z"}]
    ck = save_checkpoint(tmp_path / "run", 3, {"w": torch.ones(2)},
                         {"passes": 3, "sessions": sessions, "train_cpu_s": 2.0})
    stored = json.loads((ck / "state.json").read_text())
    resumed = {**stored, "sessions": [*sessions, {"from_passes": 2, "threads": 2,
                                                  "started": "2026-01-02T00:00:00Z"}]}
    assert state_digest(resumed) == stored["state_sha256"]

    body = {k: v for k, v in stored.items() if k not in ("state_sha256", "train_cpu_s")}
    body["sessions"] = [{k: v for k, v in s.items() if k != "started"} for s in sessions]
    earlier = hashlib.sha256(json.dumps(body, sort_keys=True, separators=(",", ":"))
                             .encode()).hexdigest()
    assert earlier != stored["state_sha256"]
    (ck / "state.json").write_text(json.dumps({**stored, "state_sha256": earlier}))
    assert load_checkpoint(tmp_path / "run")[1]["passes"] == 3
    (ck / "state.json").write_text(json.dumps({**stored, "state_sha256": earlier,
                                               "passes": 4}))
    with pytest.raises(ValueError, match="state.json is corrupt or was edited"):
        load_checkpoint(tmp_path / "run")


@pytest.mark.parametrize("keep", [0, -1, 1.5, True])
def test_save_checkpoint_refuses_a_keep_that_is_no_count_before_writing(tmp_path, keep):
    """keep=0 kept this checkpoint only, deleting every earlier one without a word."""
    from metaloop.train.checkpoint import save_checkpoint

    save_checkpoint(tmp_path / "run", 1, {"w": torch.ones(2)}, {})
    with pytest.raises(ValueError, match=r"keep must be an int >= 1"):
        save_checkpoint(tmp_path / "run", 2, {"w": torch.ones(2)}, {}, keep=keep)
    assert sorted(p.name for p in (tmp_path / "run").iterdir()) == ["LATEST", "ckpt-00000001"]


def test_model_weights_that_are_not_finite_are_refused_on_load(tmp_path):
    """A ``model.*`` tensor holding NaN or inf (an edited file with its sha256 entries
    rewritten) is refused by ``load_checkpoint``, naming the checkpoint and the tensor and
    counting the values; other tensors (a user's buffer may hold -inf, a mask) load, as
    does a VAE protocol run's checkpoint."""
    from metaloop.train.checkpoint import save_checkpoint

    w = torch.tensor([[1.0, float("nan")], [float("inf"), float("-inf")]])
    ck = save_checkpoint(tmp_path / "run", 3, {"model.a": torch.ones(3), "model.w": w,
                                               "buffer.mask": torch.full((2,), -math.inf)},
                         {"config": {}})
    with pytest.raises(ValueError, match=rf"checkpoint {re.escape(str(ck))}: tensor model\.w "
                                         rf"holds 1 NaN and 2 inf of its 4 values"):
        load_checkpoint(tmp_path / "run")
    with pytest.raises(ValueError, match=r"tensor model\.w holds 1 NaN"):
        load_checkpoint(ck)                                       # the ckpt-* folder itself
    save_checkpoint(tmp_path / "ok", 1, {"model.w": torch.ones(2, dtype=torch.float16),
                                         "model.steps": torch.tensor([3]),
                                         "buffer.mask": torch.full((2,), -math.inf)},
                    {"config": {}})
    tensors, _ = load_checkpoint(tmp_path / "ok")
    assert torch.equal(tensors["buffer.mask"], torch.full((2,), -math.inf))
    # a VAE of metaloop vae --protocol iwae: its training checks no step, its loader decides
    save_checkpoint(tmp_path / "vae", 1, {"model.w": w}, {"settings": {}, "passes": 1})
    assert load_checkpoint(tmp_path / "vae")[0]["model.w"].isnan().any()

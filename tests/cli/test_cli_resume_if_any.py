"""``--resume-if-any`` on ``metaloop compare``, ``forgetting`` and ``vae --protocol iwae``: one
fixed command that a job scheduler reruns after a kill. It starts the run on a new --out (and
on one a kill left before anything resumable was written: a stale lock file alone), resumes
an interrupted one to the uninterrupted results, and is refused (exit 2) with --resume, and
where --resume is (a vae run without --protocol iwae, --evaluate)."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from metaloop.cli.main import main
from metaloop.recipes import forgetting as frecipe
from metaloop.runlock import LOCK_FILE

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from conftest import CtrlCAt  # noqa: E402


def _stale_lock(folder: Path) -> None:
    """What a kill (-9) before the first resumable write leaves: the lock file alone, naming
    a process that is gone (the system let go of its lock)."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / LOCK_FILE).write_text(json.dumps({"pid": 2**22 + 12345, "host": "gone",
                                                "command": "metaloop (killed)"}) + "\n")


# ---------------------------------------------------------------------------------- compare

CMP = ["compare", "--methods", "maml,fomaml", "--iterations", "6", "--meta-batch", "2",
       "--tasks", "4", "--no-progress"]


@pytest.fixture(scope="module")
def compared(tmp_path_factory):
    """The uninterrupted comparison's results.json."""
    out = tmp_path_factory.mktemp("cmp") / "ref"
    assert main([*CMP, "--out", str(out)]) == 0
    return json.loads((out / "results.json").read_text())


def test_compare_starts_fresh_on_a_new_out_and_on_a_stale_lock(compared, tmp_path, capsys):
    new = tmp_path / "new"
    assert main([*CMP, "--out", str(new), "--resume-if-any"]) == 0
    assert json.loads((new / "results.json").read_text()) == compared
    # killed at 6 s: only runs/<method>/.metaloop-lock there (--resume: "no run to continue")
    killed = tmp_path / "killed"
    _stale_lock(killed / "runs" / "maml")
    capsys.readouterr()
    assert main([*CMP, "--out", str(killed), "--resume"]) == 2
    assert "--resume: no run to continue in" in capsys.readouterr().err
    assert main([*CMP, "--out", str(killed), "--resume-if-any"]) == 0
    assert json.loads((killed / "results.json").read_text()) == compared
    timing = json.loads((killed / "timing.json").read_text())["methods"]
    assert not any(t.get("resumed") for t in timing.values())


def test_compare_resumes_an_interrupted_comparison(compared, tmp_path, capsys, monkeypatch):
    from metaloop import build

    real = build.build_family
    monkeypatch.setattr(build, "build_family", lambda *a, **k: CtrlCAt(real(*a, **k), 9))
    out = tmp_path / "run"
    capsys.readouterr()
    assert main([*CMP, "--out", str(out), "--resume-if-any"]) == 130
    err = capsys.readouterr().err
    assert "the same command continues them" in err, err
    assert not (out / "results.json").exists() and (out / "runs" / "fomaml").is_dir()
    monkeypatch.setattr(build, "build_family", real)
    assert main([*CMP, "--out", str(out), "--resume-if-any"]) == 0
    assert json.loads((out / "results.json").read_text()) == compared
    timing = json.loads((out / "timing.json").read_text())["methods"]
    assert {m: t.get("resumed", False) for m, t in timing.items()} == \
        {"maml": True, "fomaml": True}
    # other settings: refused by name, as --resume refuses them
    capsys.readouterr()
    assert main([*CMP[:4], "3", *CMP[5:], "--out", str(out), "--resume-if-any"]) == 2
    err = capsys.readouterr().err
    assert "refusing to resume" in err and "train.iterations (--iterations) (6 != 3)" in err


def test_compare_refuses_it_with_resume_and_names_it_in_print_config(tmp_path, capsys):
    assert main([*CMP, "--out", str(tmp_path / "o"), "--resume", "--resume-if-any"]) == 2
    assert "give it without --resume" in capsys.readouterr().err
    assert not (tmp_path / "o").exists()
    assert main(["compare", "--print-config", "--resume-if-any"]) == 2
    assert "--resume-if-any would change nothing" in capsys.readouterr().err


def test_compare_refuses_another_commands_folder(tmp_path, capsys):
    from metaloop.train.checkpoint import save_checkpoint

    other = tmp_path / "trained"
    save_checkpoint(other, 1, {"x": torch.zeros(1)}, {"iteration": 1})
    assert main([*CMP, "--out", str(other / "ckpt-00000001"), "--resume-if-any"]) == 2
    assert "is one checkpoint of a run" in capsys.readouterr().err


# ------------------------------------------------------------------------------- forgetting

TINY = ["--scenario", "split-data-class", "--steps", "4", "--eval-every", "2", "--hidden", "8",
        "--batch-size", "8", "--seeds", "2", "--strategies", "naive,replay", "--no-progress"]


@pytest.fixture(scope="module")
def forgot(tmp_path_factory):
    """(a 6-class .npz, the results.json of an uninterrupted run on it)."""
    d = tmp_path_factory.mktemp("forgetting_if_any")
    g = torch.Generator().manual_seed(0)
    y = torch.arange(6).repeat_interleave(8)
    x = torch.nn.functional.one_hot(y, 6).float() * 2 + torch.randn(len(y), 6, generator=g)
    np.savez(d / "d.npz", x=x.numpy(), y=y.numpy())
    assert main(_fk(d / "d.npz", d / "whole")) == 0
    return d / "d.npz", _untimed(d / "whole")


def _fk(data, out, *extra):
    return ["forgetting", *TINY, "--data", str(data), "--out", str(out), *extra]


def _untimed(out: Path) -> dict:
    res = json.loads((out / "results.json").read_text())
    res.pop("wall_s"), res.pop("cpu_seconds")
    for r in res["strategies"].values():
        r.pop("wall_s")
    return res


def test_forgetting_starts_fresh_on_a_new_out_and_on_a_stale_lock(forgot, tmp_path, capsys):
    data, want = forgot
    assert main(_fk(data, tmp_path / "new", "--resume-if-any")) == 0
    assert _untimed(tmp_path / "new") == want
    killed = tmp_path / "killed"
    _stale_lock(killed)
    capsys.readouterr()
    assert main(_fk(data, killed, "--resume")) == 2
    assert "--resume: nothing to resume in" in capsys.readouterr().err
    assert main(_fk(data, killed, "--resume-if-any")) == 0
    assert "resuming" not in capsys.readouterr().out
    assert _untimed(killed) == want
    # a finished run with the same settings: nothing to do, exit 0 (as train and compare),
    # --record written from its results; the run's files as they were
    before = {f.name: f.read_bytes() for f in killed.iterdir() if f.is_file()}
    assert main(_fk(data, killed, "--resume-if-any", "--record", str(tmp_path / "rec"))) == 0
    assert "had finished with these settings" in capsys.readouterr().out
    assert {f.name: f.read_bytes() for f in killed.iterdir() if f.is_file()} == before
    assert sorted(p.name for p in (tmp_path / "rec").iterdir()) == \
        ["continual_split_data_class_naive.json", "continual_split_data_class_replay.json"]
    # one of other settings: refused by name; a new run over it, as before
    assert main([*_fk(data, killed, "--resume-if-any"), "--steps", "6"]) == 2
    assert "steps" in capsys.readouterr().err
    assert main(_fk(data, killed)) == 2
    assert "holds a finished metaloop forgetting run" in capsys.readouterr().err


def test_forgetting_resumes_an_interrupted_run(forgot, tmp_path, monkeypatch, capsys):
    data, want = forgot
    out = tmp_path / "out"
    real, done = frecipe._one_seed, []

    def cut(s, exps, seed, update, strategies=None, on_unit=None):
        def each(name, r):
            on_unit(name, r)
            done.append(name)
            if len(done) == 3:
                raise KeyboardInterrupt
        return real(s, exps, seed, update, strategies, each)

    with monkeypatch.context() as m:
        m.setattr(frecipe, "_one_seed", cut)
        assert main(_fk(data, out, "--resume-if-any")) == 130
    err = capsys.readouterr().err
    assert f"kept in {out / frecipe.PARTIAL}; the same command continues them" in err, err
    # other settings: refused by name, as --resume refuses them; nothing changed
    before = (out / frecipe.PARTIAL).read_bytes()
    assert main(_fk(data, out, "--lr", "0.01", "--resume-if-any")) == 2
    assert "refusing to resume" in capsys.readouterr().err
    assert (out / frecipe.PARTIAL).read_bytes() == before
    assert main(_fk(data, out, "--resume-if-any")) == 0
    assert f"resuming {out}: 3 of 4 runs (seed, strategy) done" in capsys.readouterr().err
    assert _untimed(out) == want and not (out / frecipe.PARTIAL).exists()


def test_forgetting_refuses_it_with_resume_and_on_another_commands_state(forgot, tmp_path,
                                                                         capsys):
    assert main(_fk(forgot[0], tmp_path / "o", "--resume", "--resume-if-any")) == 2
    assert "give it without --resume" in capsys.readouterr().err
    assert not (tmp_path / "o").exists()
    adapted = tmp_path / "adapted"                 # metaloop adapt's kept held-out tasks
    adapted.mkdir()
    (adapted / frecipe.PARTIAL).write_text(json.dumps({"tasks_done": 3}))
    assert main(_fk(forgot[0], adapted, "--resume-if-any")) == 2
    assert "metaloop adapt" in capsys.readouterr().err
    assert sorted(p.name for p in adapted.iterdir()) == [frecipe.PARTIAL]


# -------------------------------------------------------------------------------------- vae

def _npz(tmp_path: Path) -> Path:
    x = (np.random.default_rng(0).random((60, 1, 28, 28)) > 0.8).astype(np.uint8) * 255
    np.savez(tmp_path / "d.npz", x=x, y=np.repeat(np.arange(6), 10))
    return tmp_path / "d.npz"


def _vae(data, out, *extra):
    """The fixed command of a scheduled slice (--max-minutes 1: the whole run, uninterrupted)."""
    return ["vae", "--protocol", "iwae", "--data", str(data), "--stages", "2", "--curve-every",
            "0", "--curve-k", "2", "--curve-examples", "4", "--hidden", "8,8", "--latent", "2",
            "--batch-size", "20", "--k", "5", "--max-minutes", "1", "--out", str(out),
            "--no-progress", *extra]


def _final(out: Path) -> tuple[dict, bytes]:
    state = json.loads((out / (out / "LATEST").read_text().strip() / "state.json").read_text())
    return state["passes"], (out / (out / "LATEST").read_text().strip()
                             / "tensors.safetensors").read_bytes()


def test_vae_protocol_starts_resumes_and_starts_on_a_stale_lock(tmp_path, capsys,
                                                               monkeypatch):
    from metaloop.generative import protocol

    data = _npz(tmp_path)
    ref = tmp_path / "ref"
    assert main(_vae(data, ref)) == 0
    assert main(_vae(data, tmp_path / "new", "--resume-if-any")) == 0      # a new run
    assert _final(tmp_path / "new") == _final(ref)
    # the slice's minute runs out after pass 1 (checkpointed); the same command again resumes
    run = tmp_path / "run"
    ticks = iter(range(0, 10 ** 6, 60))
    with monkeypatch.context() as m:
        m.setattr(protocol.time, "perf_counter", lambda: float(next(ticks)))
        assert main(_vae(data, run, "--resume-if-any")) == 0
    assert _final(run)[0] == 1
    assert main(_vae(data, run, "--resume-if-any")) == 0
    assert _final(run) == _final(ref)
    # a kill before the first checkpoint: only the lock file (--resume refuses it)
    killed = tmp_path / "killed"
    _stale_lock(killed)
    capsys.readouterr()
    assert main(_vae(data, killed, "--resume")) == 2
    assert "no checkpoint in" in capsys.readouterr().err
    assert main(_vae(data, killed, "--resume-if-any")) == 0
    assert _final(killed) == _final(ref)
    # other settings: refused by name, as --resume refuses them
    assert main(_vae(data, run, "--resume-if-any", "--lr", "0.01")) == 2
    assert "was trained with other settings" in capsys.readouterr().err


def test_vae_protocol_refuses_a_meta_learning_runs_folder(tmp_path, capsys):
    from metaloop.train.checkpoint import save_checkpoint

    other = tmp_path / "trained"
    save_checkpoint(other, 1, {"x": torch.zeros(1)}, {"iteration": 1, "config": {}})
    assert main(_vae(_npz(tmp_path), other, "--resume-if-any")) == 2
    assert "holds a meta-learning run" in capsys.readouterr().err


@pytest.mark.parametrize("extra, message", [
    (["--protocol", "iwae", "--resume"], "give it without --resume"),
    ([], "--resume-if-any goes with --protocol iwae"),
    (["--until-pass", "2"], "--resume-if-any, --until-pass go with --protocol iwae"),
    (["--protocol", "iwae", "--evaluate"], "drop --resume-if-any"),
])
def test_vae_refuses_it_where_resume_is_refused(extra, message, tmp_path, capsys):
    out = tmp_path / "o"
    assert main(["vae", *extra, "--data", str(_npz(tmp_path)), "--out", str(out),
                 "--resume-if-any"]) == 2
    assert message in capsys.readouterr().err
    assert not out.exists()

"""``metaloop vae``'s output folder: one that cannot be created is a named error (exit 2,
nothing written) for every kind of run; a run without checkpoints that is interrupted or
fails removes the folder it created (never one that existed before), while a ``--protocol
iwae`` run keeps its folder once it holds a checkpoint; and ``--k``, which a protocol run
reads only when it reaches its last pass, is refused when ``--until-pass`` stops it before."""

from __future__ import annotations

import json
import signal
import sys
from pathlib import Path

import pytest

from metaloop.cli.main import main
from metaloop.generative.vae import VAE

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))





RUNS = {
    "plain": ["--model", "vae", "--latent", "2", "--epochs", "1", "--k", "5"],
    "sweep": ["--sweep-latent", "2", "--epochs", "1", "--k", "0", "--classifier-epochs", "1"],
    "compare": ["--compare-inversion", "--latent", "2", "--epochs", "1",
                "--classifier-epochs", "1", "--invert-steps", "2"],
    "transfer": ["--inversion-transfer", "--classifier-epochs", "1", "--invert-steps", "2"],
    "protocol": ["--protocol", "iwae", "--latent", "2", "--stages", "1", "--curve-k", "2",
                 "--curve-examples", "5", "--k", "5"],
}
PROTOCOL = ["--protocol", "iwae", "--latent", "2", "--hidden", "16", "--stages", "2",
            "--curve-k", "2", "--curve-examples", "5", "--checkpoint-every", "1",
            "--no-progress"]


def _vae(root, out, *argv) -> int:
    """``metaloop vae`` on the tiny data, small widths (but for the transfer study, which
    trains no generator)."""
    tiny = [] if "--inversion-transfer" in argv else ["--hidden", "16"]
    return main(["--threads", "1", "vae", "--data", "fashion-mnist", "--root", str(root),
                 "--out", str(out), "--no-progress", *tiny, *argv])


def _listing(folder: Path) -> list[str]:
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*"))


def _stop_training_after(monkeypatch, calls: int, at_stop=None) -> dict:
    """Make the VAE's training step raise KeyboardInterrupt (as Ctrl-C does) at its
    ``calls``-th call, after calling ``at_stop()``; returns the call counter."""
    seen = {"calls": 0}
    loss = VAE.loss

    def interrupted(self, *args, **kwargs):
        if self.training:
            seen["calls"] += 1
            if seen["calls"] == calls:
                if at_stop is not None:
                    at_stop()
                raise KeyboardInterrupt
        return loss(self, *args, **kwargs)
    monkeypatch.setattr(VAE, "loss", interrupted)
    return seen


# -- an output folder that cannot be created ------------------------------------------------

@pytest.mark.parametrize("run", sorted(RUNS))
@pytest.mark.parametrize("below", [False, True])
def test_an_out_path_that_is_a_file_is_a_named_error_with_nothing_written(
        run, below, tiny_fashion_small, tmp_path, capsys):
    (tmp_path / "new.txt").write_text("mine\n")
    out = tmp_path / "new.txt" / "sub" if below else tmp_path / "new.txt"
    capsys.readouterr()
    assert _vae(tiny_fashion_small, out, *RUNS[run]) == 2
    err = capsys.readouterr().err
    why = "Not a directory" if below else "File exists"
    assert (f"metaloop vae: error: cannot create output directory {out}: {why} "
            f"({tmp_path / 'new.txt'} is a file, not a folder); give a folder") in err, err
    assert "Traceback" not in err
    assert _listing(tmp_path) == ["new.txt"]
    assert (tmp_path / "new.txt").read_text() == "mine\n"


# -- interrupted or failing runs ------------------------------------------------------------

def test_an_interrupted_plain_run_removes_the_folder_it_created(tiny_fashion_small, tmp_path,
                                                                monkeypatch, capsys):
    out = tmp_path / "runs" / "vae_int"
    written = []
    # 200 images, batch 100: 2 steps an epoch; stopped in the third epoch, after two
    # epochs' lines in metrics.jsonl
    seen = _stop_training_after(monkeypatch, 5, at_stop=lambda: written.append(
        (out / "metrics.jsonl").read_text().count("\n")))
    assert _vae(tiny_fashion_small, out, "--latent", "2", "--epochs", "50", "--k", "5") == 130
    assert seen["calls"] == 5 and written == [2]
    assert "metaloop vae: interrupted" in capsys.readouterr().err
    assert not (tmp_path / "runs").exists()            # the parent it made goes too


def test_an_interrupted_run_leaves_a_folder_that_existed_before(tiny_fashion_small, tmp_path,
                                                                monkeypatch):
    out = tmp_path / "mine"
    out.mkdir()
    (out / "notes.txt").write_text("keep\n")
    seen = _stop_training_after(monkeypatch, 3)
    assert _vae(tiny_fashion_small, out, "--latent", "2", "--epochs", "50", "--k", "5") == 130
    assert seen["calls"] == 3
    assert (out / "notes.txt").read_text() == "keep\n"


def test_a_failing_compare_inversion_leaves_no_folder(tiny_fashion_small, tmp_path, capsys):
    # 12 test images of 10 classes: no class has two real images on each side for the
    # class-wise Frechet distance, found before anything is trained or written
    out = tmp_path / "inv"
    capsys.readouterr()
    assert _vae(tiny_fashion_small, out, *RUNS["compare"], "--quality-samples", "40",
                "--test-examples", "12") == 2
    err = capsys.readouterr().err
    assert "frechet_class" in err and "but no class has both" in err
    assert "raise --test-examples (now 12)" in err
    assert _listing(tmp_path) == []


def test_an_interrupted_protocol_run_keeps_its_checkpoints_and_resumes(
        tiny_fashion_small, tmp_path, monkeypatch, capsys):
    # 200 images, batch 20: 10 steps a pass, a checkpoint after every pass
    out = tmp_path / "iwae"
    seen = _stop_training_after(monkeypatch, 15)                         # in pass 2
    assert _vae(tiny_fashion_small, out, *PROTOCOL) == 130
    assert seen["calls"] == 15
    assert (out / "LATEST").read_text().strip() == "ckpt-00000001"
    monkeypatch.undo()
    capsys.readouterr()
    assert _vae(tiny_fashion_small, out, *PROTOCOL, "--resume", "--until-pass", "2") == 0
    assert "2/4 passes" in capsys.readouterr().out


@pytest.mark.parametrize("call,passes", [(15, 2), (35, 4)])    # in pass 2; in the last pass
def test_ctrl_c_on_a_protocol_run_checkpoints_and_exits_130(
        tiny_fashion_small, tmp_path, monkeypatch, capsys, call, passes):
    # A real SIGINT, which the protocol's handler turns into "checkpoint after this pass and
    # stop": the run used to exit 0 then, so `metaloop vae ... && next` went on.
    out = tmp_path / "iwae"
    seen = {"calls": 0}
    loss = VAE.loss

    def sigint(self, *args, **kwargs):
        if self.training:
            seen["calls"] += 1
            if seen["calls"] == call:
                signal.raise_signal(signal.SIGINT)
        return loss(self, *args, **kwargs)
    monkeypatch.setattr(VAE, "loss", sigint)
    capsys.readouterr()
    assert _vae(tiny_fashion_small, out, *PROTOCOL) == 130
    got = capsys.readouterr()
    assert f"{passes}/4 passes in {out}" in got.out and "continue with --resume" in got.out
    assert "metaloop vae: interrupted" in got.err
    assert seen["calls"] == 10 * passes                        # the pass was finished
    assert (out / "LATEST").read_text().strip() == f"ckpt-{passes:08d}"
    assert not list(out.glob("final-*.json"))                  # stopped: no final measurement
    monkeypatch.undo()
    assert _vae(tiny_fashion_small, out, *PROTOCOL, "--resume", "--k", "5") == 0
    got = capsys.readouterr().out
    assert "4/4 passes" in got and "continue with --resume" not in got and "test NLL" in got


def test_a_protocol_run_interrupted_before_its_first_checkpoint_leaves_no_folder(
        tiny_fashion_small, tmp_path, monkeypatch):
    out = tmp_path / "iwae"
    seen = _stop_training_after(monkeypatch, 5, at_stop=lambda: seen.update(
        existed=out.is_dir()))                                          # in pass 1
    assert _vae(tiny_fashion_small, out, *PROTOCOL) == 130
    assert seen == {"calls": 5, "existed": True}
    assert not out.exists()


# -- --k with --protocol iwae ---------------------------------------------------------------

def test_protocol_k_is_refused_when_until_pass_stops_before_the_last_pass(
        tiny_fashion_small, tmp_path, capsys):
    out = tmp_path / "iwae3"
    capsys.readouterr()
    assert _vae(tiny_fashion_small, out, *PROTOCOL, "--until-pass", "1", "--k", "7") == 2
    err = capsys.readouterr().err
    assert "metaloop vae: error: --k 7 would change nothing in this run (--protocol iwae)" \
        in err, err
    assert err.rstrip().endswith("drop --k")
    assert not out.exists()
    assert _vae(tiny_fashion_small, out, *PROTOCOL, "--until-pass", "1") == 0
    assert json.loads((out / "curve.json").read_text())["passes"] == 1


def test_protocol_k_is_the_final_measurements_when_the_run_reaches_its_last_pass(
        tiny_fashion_small, tmp_path, capsys):
    out = tmp_path / "iwae"
    assert _vae(tiny_fashion_small, out, *PROTOCOL, "--until-pass", "4", "--k", "7") == 0
    final = json.loads((out / "final-k7-n60.json").read_text())
    assert final["passes"] == 4 and final["test"]["k"] == 7 and final["test"]["n"] == 60
    assert "(k = 7, 60 images)" in capsys.readouterr().out

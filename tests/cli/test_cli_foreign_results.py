"""Every command that writes a ``results.json`` replaces only its own earlier result:
``eval --out`` and ``predict --out`` (and the others, through ``runs_folder.check``) refuse,
with exit status 2 and naming the file, a folder that holds a ``results.json`` no metaloop
command wrote (or, for ``eval``, one of its plot names), also through a symbolic link, and
change nothing there; their own earlier result is still replaced."""

from __future__ import annotations

import hashlib
import json
import sys
from pathlib import Path

import pytest

from metaloop import runs_folder
from metaloop.cli.main import main

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from conftest import drawing, train_run  # noqa: E402

SINUSOID = ('[family]\nname = "sinusoid"\n[model]\nname = "mlp"\nhidden = [8]\n'
            '[method]\nname = "maml"\ninner_lr = 0.01\ninner_steps = 1\n'
            '[train]\niterations = 2\nmeta_batch = 2\ncheckpoint_every = 2\n'
            '[eval]\ntasks = 2\nsteps = [0, 1]\n')


@pytest.fixture(scope="module")
def sin_run(tmp_path_factory):
    return train_run(tmp_path_factory.mktemp("foreign_results") / "sin", SINUSOID)


def _snapshot(folder: Path) -> dict:
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


def _eval(run, out) -> list:
    return ["eval", "--checkpoint", str(run), "--no-progress", "--out", str(out)]


def _predict_args(run, tmp_path, out) -> list:
    for k, cls in enumerate(("a", "b")):
        im = drawing(k)
        (tmp_path / "s" / cls).mkdir(parents=True, exist_ok=True)
        im.save(tmp_path / "s" / cls / "0.png")
        (tmp_path / "q").mkdir(exist_ok=True)
        im.save(tmp_path / "q" / f"{cls}.png")
    return ["predict", "--checkpoint", str(run), "--support", str(tmp_path / "s"),
            "--query", str(tmp_path / "q"), "--no-progress", "--out", str(out)]


@pytest.mark.parametrize("text", ["precious\n", '{"mine": 1}\n'])
def test_eval_refuses_a_results_json_no_metaloop_command_wrote(sin_run, tmp_path, capsys,
                                                               text):
    out = tmp_path / "mine"
    out.mkdir()
    (out / "results.json").write_text(text)
    (out / "notes.txt").write_text("notes\n")
    before = _snapshot(out)
    assert main(_eval(sin_run, out)) == 2
    err = capsys.readouterr().err
    assert f"{out / 'results.json'} is not a metaloop eval result" in err
    assert "nothing was written" in err
    assert _snapshot(out) == before


def test_eval_refuses_a_plot_of_the_users_and_keeps_it(sin_run, tmp_path, capsys):
    out = tmp_path / "mine"
    out.mkdir()
    drawing(0).save(out / "loss_vs_steps.png")
    before = _snapshot(out)
    assert main(_eval(sin_run, out)) == 2
    assert f"{out / 'loss_vs_steps.png'} is not a metaloop eval result" \
        in capsys.readouterr().err
    assert _snapshot(out) == before


def test_eval_through_a_link_refuses_the_targets_file(sin_run, tmp_path, capsys):
    tgt, lnk = tmp_path / "tgt", tmp_path / "lnk"
    tgt.mkdir()
    (tgt / "results.json").write_text("precious\n")
    lnk.symlink_to(tgt)
    assert main(_eval(sin_run, lnk)) == 2
    assert "is not a metaloop eval result" in capsys.readouterr().err
    assert (tgt / "results.json").read_text() == "precious\n"


def test_eval_still_replaces_its_own_earlier_result(sin_run, tmp_path, capsys):
    out = tmp_path / "ev"
    assert main(_eval(sin_run, out)) == 0
    assert main(_eval(sin_run, out)) == 0
    assert runs_folder.found(out) == "eval"


def test_predict_refuses_a_results_json_no_metaloop_command_wrote(protonet_run, tmp_path,
                                                                  capsys):
    out = tmp_path / "mine"
    out.mkdir()
    (out / "results.json").write_text('{"mine": 1}\n')
    assert main(_predict_args(protonet_run, tmp_path, out)) == 2
    err = capsys.readouterr().err
    assert f"{out / 'results.json'} is not a metaloop predict result" in err
    assert (out / "results.json").read_text() == '{"mine": 1}\n'
    lnk = tmp_path / "lnk"
    lnk.symlink_to(out)
    assert main(_predict_args(protonet_run, tmp_path, lnk)) == 2
    assert (out / "results.json").read_text() == '{"mine": 1}\n'
    capsys.readouterr()
    own = tmp_path / "own"
    assert main(_predict_args(protonet_run, tmp_path, own)) == 0
    assert main(_predict_args(protonet_run, tmp_path, own)) == 0
    assert json.loads((own / "results.json").read_text())["predictions"]


@pytest.mark.parametrize("command", ["compare", "adapt", "forgetting", "vae", "eval",
                                     "predict"])
def test_check_refuses_a_results_json_of_no_command(tmp_path, command):
    (tmp_path / "results.json").write_text("[1, 2]\n")
    with pytest.raises(ValueError, match="is not a metaloop .* result .*nothing was written"):
        runs_folder.check(tmp_path, command)
    runs_folder.check(tmp_path / "absent", command)         # a missing folder passes

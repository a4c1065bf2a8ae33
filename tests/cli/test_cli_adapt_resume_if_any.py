"""``metaloop adapt --resume-if-any``, as train, compare, forgetting and vae have it: one
command for a job scheduler to rerun after a kill. It starts the run in a missing or empty
--out, resumes an interrupted run's kept tasks there (to the uninterrupted run's results),
and refuses a finished run and another command's run as a new run does, by name."""

from __future__ import annotations

import importlib
import json
import sys
from pathlib import Path

import pytest

from metaloop.cli.main import main
from metaloop.recipes import adapt as recipe

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from conftest import folder_config, train_run, write_image_folder  # noqa: E402

finetune_mod = importlib.import_module("metaloop.adapt.finetune")
ROWS = "probe-sgd,finetune-random"


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    d = tmp_path_factory.mktemp("adapt_resume_if_any")
    photos = write_image_folder(d / "photos", classes=8, per_class=6, mixed=False)
    run = train_run(d, folder_config(photos))
    other = write_image_folder(d / "other", classes=4, per_class=4, seed=3, mixed=False)
    return run, other


def _adapt(setup, out, *extra):
    run, data = setup
    return ["adapt", "--model", str(run), "--family", "folder", "--data", str(data),
            "--ways", "2", "--shots", "1", "--queries", "2", "--tasks", "3", "--steps", "2",
            "--approaches", ROWS, "--out", str(out), "--no-progress", *extra]


def _per_task(res: dict) -> dict:
    return {name: row["per_task"]["accuracy"] for name, row in res["approaches"].items()}


def test_it_starts_resumes_and_refuses_a_finished_run(setup, tmp_path, monkeypatch, capsys):
    whole = tmp_path / "whole"
    assert main(_adapt(setup, whole, "--resume-if-any")) == 0       # a missing --out: starts
    expected = _per_task(json.loads((whole / "results.json").read_text()))
    out = tmp_path / "out"
    real, calls = finetune_mod.finetune, []

    def fake(*a, **kw):                 # Ctrl-C on the second held-out task
        calls.append(1)
        if len(calls) == 2:
            raise KeyboardInterrupt
        return real(*a, **kw)
    with monkeypatch.context() as m:
        m.setattr(finetune_mod, "finetune", fake)
        assert main(_adapt(setup, out, "--resume-if-any")) == 130
    assert (out / recipe.PARTIAL).is_file()
    capsys.readouterr()
    assert main(_adapt(setup, out, "--resume-if-any")) == 0          # the same command
    assert f"resuming {out}: 1 of 3 held-out tasks scored" in capsys.readouterr().out
    assert _per_task(json.loads((out / "results.json").read_text())) == expected
    assert not (out / recipe.PARTIAL).exists()
    before = (out / "results.json").read_bytes()
    assert main(_adapt(setup, out, "--resume-if-any")) == 2          # finished: refused
    assert f"{out} holds a finished metaloop adapt run" in capsys.readouterr().err
    assert (out / "results.json").read_bytes() == before


def test_an_empty_folder_starts_and_resume_with_it_is_refused(setup, tmp_path, capsys):
    out = tmp_path / "empty"
    out.mkdir()
    assert main(_adapt(setup, out, "--resume", "--resume-if-any")) == 2
    assert "give it without --resume" in capsys.readouterr().err
    assert list(out.iterdir()) == []
    assert main(_adapt(setup, out, "--resume-if-any")) == 0
    assert (out / "results.json").is_file()


def test_another_commands_run_is_refused(setup, tmp_path, capsys):
    out = tmp_path / "other"
    out.mkdir()
    (out / "results.json").write_text(json.dumps({"strategies": {}}))
    assert main(_adapt(setup, out, "--resume-if-any")) == 2
    assert "holds a metaloop forgetting run" in capsys.readouterr().err


def test_help_offers_it(capsys):
    with pytest.raises(SystemExit):
        main(["adapt", "--help"])
    assert "--resume-if-any" in capsys.readouterr().out

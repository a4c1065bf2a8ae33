"""``metaloop adapt``: a run refused for bad input leaves the folder's last results as they
were (its results.json and chart, or a results.json no metaloop run wrote), a kept
meta-run of other settings is refused with what to do, and the seconds of a meta-training
stopped by Ctrl-C count in its ``budget.json``."""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import pytest

from metaloop.cli.main import main

sys.path.insert(0, str(Path(__file__).resolve().parent))
from test_cli_adapt import _table_argv, write_sentences  # noqa: E402

pytest.importorskip("transformers", reason="pip install -e '.[text]'")
pytest.importorskip("peft", reason="pip install -e '.[text]'")


def _files(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in folder.iterdir() if p.is_file()}


def test_a_refused_run_leaves_the_last_results_and_a_foreign_results_json(
        wordnet_bert, tmp_path, capsys):
    data = write_sentences(tmp_path / "s.csv")
    out = tmp_path / "out"
    assert main(_table_argv(wordnet_bert, data, out, "--approaches", "probe-ridge")) == 0
    before = _files(out)
    assert {"results.json", "accuracy.png"} <= set(before)
    capsys.readouterr()
    assert main(_table_argv(wordnet_bert, data, out, "--approaches", "lora",
                            "--lora-targets", "foo")) == 2
    assert f"{out} holds a finished metaloop adapt run" in capsys.readouterr().err
    assert _files(out) == before                      # the last results, as they were
    # the same refusal of an approach in a new folder: named, and the folder left empty
    assert main(_table_argv(wordnet_bert, data, tmp_path / "new", "--approaches", "lora",
                            "--lora-targets", "foo")) == 2
    assert "match no Linear" in capsys.readouterr().err
    assert not (tmp_path / "new" / "results.json").exists()
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "results.json").write_text('{"my": "precious results"}\n')
    (mine / "notes.txt").write_text("notes\n")
    before = _files(mine)
    assert main(_table_argv(wordnet_bert, data, mine, "--approaches", "probe-ridge")) == 2
    err = capsys.readouterr().err
    assert f"{mine / 'results.json'} is not a metaloop adapt result (no metaloop command " \
        "wrote it)" in err, err
    assert _files(mine) == before


def test_a_kept_meta_run_of_other_settings_is_refused_with_what_to_do(
        wordnet_bert, tmp_path, capsys):
    data = write_sentences(tmp_path / "s.csv")
    out = tmp_path / "out"
    meta = ["--approaches", "probe-ridge", "--meta", "fomaml", "--meta-batch", "1"]
    assert main(_table_argv(wordnet_bert, data, out, *meta, "--meta-iterations", "1")) == 0
    before = _files(out)
    capsys.readouterr()
    assert main(_table_argv(wordnet_bert, data, out, *meta, "--meta-iterations", "2")) == 2
    assert f"{out} holds a finished metaloop adapt run" in capsys.readouterr().err
    assert _files(out) == before
    # a new --out that meta-learns in the finished run's --meta-dir: its kept meta-run named
    assert main(_table_argv(wordnet_bert, data, tmp_path / "new", *meta, "--meta-iterations",
                            "2", "--meta-dir", str(out / "meta"))) == 2
    err = capsys.readouterr().err
    assert "refusing to resume" in err and "give another --meta-dir, or remove" in err, err
    assert _files(out) == before


def test_the_seconds_of_an_interrupted_meta_training_count(wordnet_bert, tmp_path,
                                                           monkeypatch, capsys):
    import metaloop.train

    def stopped(learner, family, *, out_dir, **kw):      # Ctrl-C after some work
        Path(out_dir).mkdir(parents=True, exist_ok=True)
        end = time.process_time() + 0.2
        while time.process_time() < end:
            pass
        raise KeyboardInterrupt

    monkeypatch.setattr(metaloop.train, "train", stopped)
    data = write_sentences(tmp_path / "s.csv")
    out = tmp_path / "out"
    assert main(_table_argv(wordnet_bert, data, out, "--approaches", "probe-ridge", "--meta",
                            "fomaml", "--meta-batch", "1", "--meta-iterations", "2")) == 130
    budget = json.loads((out / "meta" / "fomaml" / "budget.json").read_text())
    assert budget["cpu_seconds"] >= 0.2 and budget["wall_seconds"] >= 0.2

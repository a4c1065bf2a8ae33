"""``metaloop eval`` on bad input: exit 2 with a named error, and no --out folder left
behind (data errors are found after the folder is made, which is then removed again)."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from metaloop.cli.main import main

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from conftest import tensor_config, train_run, write_tensor_file  # noqa: E402


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    """An R2D2 run on a tensor file: 12 classes of 10 examples, 6 held out, no val split."""
    d = tmp_path_factory.mktemp("eval_bad_input")
    return train_run(d, tensor_config(write_tensor_file(d / "feats.npz")))


@pytest.mark.parametrize("argv, message", [
    (["--ways", "9"], "ways=9 exceeds the 6 classes of the 'test' split"),
    (["--shots", "10"], "have fewer than shots + queries = 10 + 3"),
    (["--split", "val"], "exceeds the 0 classes of the 'val' split"),
    (["--lake-runs", "nosuch"], "--lake-runs scores Omniglot drawings, but"),
    (["--ways", "0"], "--ways must be positive, got 0"),
    (["--shots", "0"], "--shots must be positive, got 0"),
    (["--shots", "-1"], "--shots must be positive, got -1"),
    # the official runs are fixed: the flags that choose generated tasks would be ignored
    (["--lake-runs", "nosuch", "--tasks", "5", "--within-alphabet"],
     "--lake-runs scores the official runs as they are (their own classes, drawings and "
     "trials), so --tasks, --within-alphabet would change nothing"),
    (["--lake-runs", "nosuch", "--split", "test", "--ways", "3", "--shots", "1", "--drawers",
      "shared"], "so --shots, --ways, --split, --drawers would change nothing"),
])
def test_eval_bad_input_exits_2_and_leaves_no_out_folder(tiny_run, tmp_path, capsys, argv,
                                                         message):
    out = tmp_path / "ev" / "sub"
    assert main(["eval", "--checkpoint", str(tiny_run), "--no-progress", "--out", str(out),
                 *argv]) == 2
    err = capsys.readouterr().err
    assert "metaloop eval: error:" in err and message in err, err
    assert not (tmp_path / "ev").exists()


def test_eval_bad_data_keeps_an_out_folder_the_user_had(tiny_run, tmp_path, capsys):
    out = tmp_path / "mine"
    out.mkdir()
    assert main(["eval", "--checkpoint", str(tiny_run), "--no-progress", "--out", str(out),
                 "--ways", "9"]) == 2
    assert "ways=9 exceeds" in capsys.readouterr().err
    assert out.is_dir()
    assert main(["eval", "--checkpoint", str(tiny_run), "--no-progress", "--out", str(out)]) == 0
    assert (out / "results.json").exists()

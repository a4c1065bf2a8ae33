"""The command line's error lines escape control characters (a name cannot drive the
terminal), and the out-of-memory advice names the data file a command read whole rather
than blaming the config's sizes alone."""

import argparse

import numpy as np

from metaloop.cli import main as cli_main
from metaloop.cli.main import main
from metaloop.tasks import episodes

TENSORS = """
[family]
name = "tensors"
root = "{root}"
ways = 2
shots = 1
queries = 1
[model]
name = "mlp"
hidden = [8]
[method]
name = "protonet"
[train]
iterations = 2
meta_batch = 1
"""


def test_an_error_naming_a_path_with_escape_sequences_prints_them_escaped(tmp_path, capsys):
    missing = tmp_path / "c\x1b[2J\x1b]0;x\x07\x9b.toml"
    assert main(["train", "--config", str(missing), "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err
    assert "does not exist" in err
    assert "\x1b" not in err and "\x07" not in err and "\x9b" not in err
    assert "c\\x1b[2J\\x1b]0;x\\x07\\x9b.toml" in err


def test_out_of_memory_reading_a_tensor_file_names_the_file(tmp_path, monkeypatch, capsys):
    data = tmp_path / "feats.npz"
    np.savez(data, x=np.zeros((8, 2), np.float32), y=np.arange(8) % 2)
    cfg = tmp_path / "c.toml"
    cfg.write_text(TENSORS.format(root=data))

    def fail(path):
        raise MemoryError("Unable to allocate 7.28 TiB for an array")
    monkeypatch.setattr(episodes, "_load_npz", fail)
    assert main(["train", "--config", str(cfg), "--out", str(tmp_path / "o"),
                 "--no-progress"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("metaloop train: error: out of memory: Unable to allocate"), err
    assert f"a data file read whole may be too large ({data})" in err, err
    assert "or give smaller sizes: the config's sizes" in err, err


def test_out_of_memory_names_predicts_support_and_query_files(tmp_path):
    s, q = tmp_path / "s.npz", tmp_path / "q.npz"
    s.write_bytes(b"x")
    q.write_bytes(b"x")
    args = argparse.Namespace(command="predict", support=s, query=q, ways=2)
    text = cli_main._memory_text(MemoryError(), args)
    assert f"a data file read whole may be too large ({s}, {q}), or give smaller sizes: "\
           f"--ways" in text
    folder = argparse.Namespace(command="predict", support=tmp_path, query=tmp_path)
    assert "data file" not in cli_main._memory_text(MemoryError(), folder)   # folders: not

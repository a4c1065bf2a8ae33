"""The path flags of every command: an empty path is a usage error naming the flag (exit 2),
not the current folder (read as a data folder or a model, or written into) and not a flag
left out (a config, a record or a folder silently replaced by the default)."""

from __future__ import annotations

import pytest

from metaloop.cli.main import main


@pytest.mark.parametrize("argv, flag", [
    (["compare", "--config", ""], "--config"),        # was read as the shipped config
    (["train", "--config", "", "--out", "run"], "--config"),
    (["vae", "--data", ""], "--data"),                # read the current folder as images
    (["vae", "--root", ""], "--root"),
    (["vae", "--sweep-latent", "2", "--record", ""], "--record"),   # wrote no record
    (["forgetting", "--scenario", "split-data-class", "--data", ""], "--data"),
    (["forgetting", "--root", ""], "--root"),
    (["adapt", "--family", "table", "--data", ""], "--data"),
    (["adapt", "--model", ""], "--model"),
    (["adapt", "--meta", "fomaml", "--meta-dir", ""], "--meta-dir"),
    (["adapt", "--root", " "], "--root"),
    (["eval", "--checkpoint", "run", "--out", ""], "--out"),     # was "no output"
    (["eval", "--checkpoint", ""], "--checkpoint"),
    (["eval", "--checkpoint", "run", "", "--out", "o"], "--checkpoint"),
    (["eval", "--checkpoint", "run", "--record", ""], "--record"),
    (["eval", "--checkpoint", "run", "--lake-runs", ""], "--lake-runs"),
    (["predict", "--checkpoint", "run", "--support", "s", "--query", "q", "--out", ""],
     "--out"),
    (["predict", "--checkpoint", "", "--support", "s", "--query", "q"], "--checkpoint"),
    (["predict", "--checkpoint", "run", "--support", "", "--query", "q"], "--support"),
    (["predict", "--checkpoint", "run", "--support", "s", "--query", " "], "--query"),
])
def test_an_empty_path_is_a_usage_error_naming_the_flag(argv, flag, tmp_path, monkeypatch,
                                                        capsys):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "class_a").mkdir()            # the current folder looks like an image folder
    with pytest.raises(SystemExit) as e:
        main(argv)
    assert e.value.code == 2
    assert f"argument {flag}: expected a path, got '" in capsys.readouterr().err
    assert [p.name for p in tmp_path.iterdir()] == ["class_a"]

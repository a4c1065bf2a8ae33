"""``metaloop predict`` refuses runs that do not classify images, naming the run and what it
is, and writes nothing."""

import pytest

from metaloop.cli.main import main
from tests.cli.test_cli_adapt import WORDS, _table_config, write_sentences


def _image_folders(root):
    from PIL import Image
    for name in ("s/a/0.png", "s/b/0.png", "q/0.png"):
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        Image.new("L", (28, 28), 255).save(root / name)
    return str(root / "s"), str(root / "q")


def test_text_run_is_refused_by_name(save_tiny_bert, tmp_path, capsys):
    pytest.importorskip("transformers")
    cfg = _table_config(tmp_path / "t.toml", write_sentences(tmp_path / "s.csv"),
                        str(save_tiny_bert(WORDS)))
    run = tmp_path / "run"
    assert main(["train", "--config", str(cfg), "--out", str(run), "--no-progress"]) == 0
    capsys.readouterr()
    s, q = _image_folders(tmp_path)
    assert main(["predict", "--checkpoint", str(run), "--support", s, "--query", q]) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    assert str(run) in captured.err and "'table'" in captured.err and "'text'" in captured.err
    assert "image-classification run" in captured.err

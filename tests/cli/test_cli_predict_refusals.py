"""``metaloop predict`` names a run whose inputs do not match what it is given: a text run
given image folders, a run of feature vectors; it writes nothing."""

import pytest

from metaloop.cli.main import main
from tests.cli.test_cli_adapt import _table_config, write_sentences
from tests.conftest import WORDNET_WORDS


def _image_folders(root):
    from PIL import Image
    for name in ("s/a/0.png", "s/b/0.png", "q/0.png"):
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        Image.new("L", (28, 28), 255).save(root / name)
    return str(root / "s"), str(root / "q")


def test_a_text_run_given_image_folders_says_what_it_reads(save_tiny_bert, tmp_path, capsys):
    """A text run classifies texts (``tests/cli/test_cli_predict_text.py``); image folders
    are named as the wrong input, not read as a table."""
    pytest.importorskip("transformers")
    cfg = _table_config(tmp_path / "t.toml", write_sentences(tmp_path / "s.csv"),
                        str(save_tiny_bert(WORDNET_WORDS)))
    run = tmp_path / "run"
    assert main(["train", "--config", str(cfg), "--out", str(run), "--no-progress"]) == 0
    capsys.readouterr()
    s, q = _image_folders(tmp_path)
    out = tmp_path / "out"
    assert main(["predict", "--checkpoint", str(run), "--support", s, "--query", q,
                 "--out", str(out)]) == 2
    captured = capsys.readouterr()
    assert captured.out == "" and not out.exists()
    assert f"{run} classifies texts (model 'text'), so the support is a CSV, TSV or JSONL " \
           f"table of labelled texts, not a folder ({s})" in captured.err
    assert main(["predict", "--checkpoint", str(run), "--support", str(tmp_path / "s.csv"),
                 "--query", q]) == 2
    assert "so the query is a table with a text column or a .txt file, not a folder" in \
        capsys.readouterr().err


def test_a_run_of_feature_vectors_is_refused_by_name(tmp_path, capsys):
    import numpy as np
    x = np.random.default_rng(0).normal(size=(40, 6)).astype(np.float32)
    np.savez(tmp_path / "v.npz", x=x, y=np.repeat(np.arange(10), 4))
    (tmp_path / "c.toml").write_text(
        f'[family]\nname = "tensors"\nroot = "{tmp_path / "v.npz"}"\nways = 2\nshots = 1\n'
        f'queries = 1\nsplit_fractions = [0.6, 0.2, 0.2]\n[model]\nname = "mlp"\n'
        f'[method]\nname = "protonet"\n[train]\niterations = 1\nmeta_batch = 1\n'
        f'checkpoint_every = 1\n[eval]\ntasks = 1\nsteps = [0]\n')
    run = tmp_path / "run"
    assert main(["train", "--config", str(tmp_path / "c.toml"), "--out", str(run),
                 "--no-progress"]) == 0
    capsys.readouterr()
    s, q = _image_folders(tmp_path)
    assert main(["predict", "--checkpoint", str(run), "--support", s, "--query", q]) == 2
    err = capsys.readouterr().err
    assert str(run) in err and "'tensors'" in err and "'mlp'" in err
    assert "classifying images needs an image-classification run" in err

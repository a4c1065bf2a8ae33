"""(With vae_class_depth.patch.) ``metaloop vae --class-depth 2`` reads an image folder of
groups of classes; the nested-folder hint names the flag, once; the flag is refused for a
tensor file and a built-in set."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

from metaloop.cli.main import main
from metaloop.data.folder import NestedClassFoldersWarning

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from conftest import write_image_folder  # noqa: E402

TINY = ["--epochs", "1", "--hidden", "16", "--latent", "2", "--k", "2", "--no-progress"]


@pytest.fixture(scope="module")
def nested(tmp_path_factory):
    root = tmp_path_factory.mktemp("vae_depth") / "nested"
    write_image_folder(root / "grp", classes=4, per_class=6, mixed=False)
    return root


def _vae(data, out, *argv):
    return main(["--threads", "1", "vae", "--data", str(data), "--out", str(out), *TINY, *argv])


def test_the_hint_names_the_flag_once(nested, tmp_path):
    with pytest.warns(NestedClassFoldersWarning) as seen:
        assert _vae(nested, tmp_path / "out") == 0
    hints = [str(w.message) for w in seen if w.category is NestedClassFoldersWarning]
    assert len(hints) == 1 and hints[0].endswith("add --class-depth 2")


def test_class_depth_2_reads_the_groups_classes(nested, tmp_path):
    out = tmp_path / "out"
    assert _vae(nested, out, "--model", "cvae", "--class-depth", "2") == 0
    r = json.loads((out / "results.json").read_text())
    assert r["settings"]["class_depth"] == 2


def test_class_depth_is_refused_where_it_changes_nothing(tmp_path, capsys):
    import numpy as np
    path = tmp_path / "t.npz"
    np.savez(path, x=np.zeros((8, 8, 8), np.uint8), y=np.repeat(np.arange(2), 4))
    assert _vae(path, tmp_path / "a", "--class-depth", "2") == 2
    assert "drop --class-depth" in capsys.readouterr().err
    assert main(["vae", "--class-depth", "2", "--out", str(tmp_path / "b")]) == 2
    assert "drop --class-depth" in capsys.readouterr().err

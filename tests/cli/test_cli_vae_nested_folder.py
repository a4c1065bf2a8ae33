"""``metaloop vae`` on an image folder whose images sit one level below its class folders:
the hint is given once (it came three times, once per read of the folder) and its advice is
one ``metaloop vae`` can follow (it named ``family.class_depth``, a config key, where vae
takes ``--class-depth``)."""

from __future__ import annotations

import sys
import warnings
from pathlib import Path

import pytest

from metaloop.cli.main import main
from metaloop.data.folder import NestedClassFoldersWarning, load_folder

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from conftest import write_image_folder  # noqa: E402


def test_vae_warns_once_with_advice_it_can_follow(tmp_path, capsys):
    nested = tmp_path / "nested"
    write_image_folder(nested / "grp", classes=4, per_class=6, mixed=False)
    with pytest.warns(NestedClassFoldersWarning) as seen:
        assert main(["--threads", "1", "vae", "--data", str(nested), "--out",
                     str(tmp_path / "out"), "--epochs", "1", "--hidden", "16", "--latent",
                     "2", "--k", "2", "--no-progress"]) == 0
    hints = [str(w.message) for w in seen if w.category is NestedClassFoldersWarning]
    assert len(hints) == 1, hints
    assert "family.class_depth" not in hints[0]
    assert "add --class-depth 2" in hints[0]


def test_nested_warnings_once_shows_each_hint_once_and_other_warnings_as_they_come(tmp_path):
    from metaloop.data.folder import nested_warnings_once

    nested = tmp_path / "nested"
    write_image_folder(nested / "grp", classes=4, per_class=2, mixed=False)
    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always")
        with nested_warnings_once("add --flag"):
            load_folder(nested)
            load_folder(nested)
            warnings.warn("other", UserWarning, stacklevel=1)
            warnings.warn("other", UserWarning, stacklevel=1)
    texts = [(w.category, str(w.message)) for w in seen]
    assert [c for c, _ in texts] == [NestedClassFoldersWarning, UserWarning, UserWarning]
    assert texts[0][1].endswith("add --flag")

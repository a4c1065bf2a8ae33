"""``$METALOOP_DATA`` set to something that cannot be a folder (a file, nothing) is bad input:
every command that reads it exits with status 2, naming it, and writes nothing."""

from __future__ import annotations

import pytest

from metaloop.cli.main import main
from metaloop.data import omniglot as og

TINY_OMNIGLOT = """
[family]
name = "omniglot"
split = "background"
ways = 2
shots = 1
queries = 1
[model]
name = "conv4"
[method]
name = "maml"
[train]
iterations = 1
meta_batch = 1
"""


@pytest.fixture(autouse=True)
def home(tmp_path, monkeypatch):
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.setattr(og, "SHARED_DIR", tmp_path / "shared")
    og.clear_cache()
    yield
    og.clear_cache()


@pytest.mark.parametrize("value", ["a_file", ""])
@pytest.mark.parametrize("argv", [["data", "omniglot"], ["data", "omniglot", "--cache"],
                                  ["train", "--config", "{cfg}", "--out", "{out}",
                                   "--no-progress"]])
def test_a_data_folder_that_cannot_be_one_exits_2_naming_it(tmp_path, monkeypatch, capsys,
                                                             value, argv):
    (tmp_path / "a_file").write_text("")
    (tmp_path / "c.toml").write_text(TINY_OMNIGLOT)
    monkeypatch.setenv("METALOOP_DATA", str(tmp_path / value) if value else "")
    before = sorted(tmp_path.rglob("*"))
    rc = main([a.replace("{cfg}", str(tmp_path / "c.toml")).replace("{out}",
                                                                     str(tmp_path / "out"))
               for a in argv])
    err = capsys.readouterr().err.strip()
    assert rc == 2, err
    said = "is set but empty" if not value else f"is {str(tmp_path / value)!r}, a file"
    assert err.startswith(f"metaloop {argv[0]}: error: $METALOOP_DATA {said}"), err
    assert "\n" not in err
    assert sorted(tmp_path.rglob("*")) == before           # nothing made, here or in HOME

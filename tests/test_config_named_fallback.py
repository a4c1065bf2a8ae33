"""The named-config fallback also finds metaloop's own ``configs/`` (the compare settings
and the image-folder example, which the CHANGELOG and docs name as
``metaloop/configs/compare_{sinusoid,omniglot}.toml``), after the repository's configs/;
and a name found in neither place points at ``--example-config`` / ``--print-config``."""

from __future__ import annotations

from pathlib import Path

import pytest

from metaloop import config
from metaloop.cli.main import main

PACKAGE = Path(config.__file__).resolve().parent / "configs"


@pytest.fixture
def elsewhere(tmp_path, monkeypatch):
    """A working folder with no configs in it; each fallback noted afresh."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(config, "_SHIPPED_NOTED", set(), raising=False)
    return tmp_path


@pytest.mark.parametrize("given", ["compare_sinusoid", "compare_omniglot.toml",
                                   "folder_example", "configs/folder_example.toml"])
def test_metaloops_own_configs_are_named_configs(elsewhere, capsys, given):
    name = Path(given).name
    name = name if name.endswith(".toml") else f"{name}.toml"
    assert config.shipped_config(given) == PACKAGE / name
    capsys.readouterr()
    raw = config.read(given, check_except=("compare",))
    (line,) = capsys.readouterr().err.splitlines()
    assert str(PACKAGE / name) in line and "metaloop's own configs/ folder" in line
    assert raw == config.read(PACKAGE / name, check_except=("compare",))


def test_the_repositorys_configs_come_first(elsewhere, monkeypatch, tmp_path):
    repo = tmp_path / "repo_configs"
    repo.mkdir()
    (repo / "folder_example.toml").write_text("[train]\niterations = 7\n")
    monkeypatch.setattr(config, "shipped_configs", lambda: repo)
    assert config.shipped_config("folder_example") == repo / "folder_example.toml"
    assert config.shipped_config("compare_sinusoid") == PACKAGE / "compare_sinusoid.toml"


def test_the_commands_read_them(elsewhere, capsys):
    assert main(["compare", "--config", "compare_sinusoid", "--print-config"]) == 0
    out, err = capsys.readouterr()
    assert "[compare]" in out and str(PACKAGE / "compare_sinusoid.toml") in err
    assert main(["train", "--config", "folder_example", "--print-config"]) == 0
    out, err = capsys.readouterr()
    assert config.tomllib.loads(out)["family"]["name"] == "folder"


def test_a_name_in_no_folder_points_at_the_printing_flags(elsewhere, capsys):
    with pytest.raises(FileNotFoundError) as e:
        config.load("folder_exampel")
    msg = str(e.value)
    assert "metaloop's own configs/ folder" in msg and str(PACKAGE) in msg
    assert "metaloop train --example-config" in msg and "metaloop compare --print-config" in msg
    assert msg.endswith("did you mean 'folder_example.toml'?"), msg
    assert main(["train", "--config", "compare_sinusoidd", "--out", "run"]) == 2
    err = capsys.readouterr().err
    assert "did you mean 'compare_sinusoid.toml'?" in err and "--example-config" in err
    assert not (elsewhere / "run").exists()

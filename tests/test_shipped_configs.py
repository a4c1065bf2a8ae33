"""What a user with metaloop installed from a wheel (no checkout) meets: the repository's
``configs/`` named as the docs name them (``--config configs/NAME.toml``, ``NAME.toml``,
``NAME``) read from the shipped copy, the Omniglot "not found" messages naming
``$METALOOP_DATA``, one version everywhere, and a text extra a user can install.

The wheel itself (``metaloop/shipped_configs/``) is checked in ``tests/test_packaging.py``;
here the shipped folder is the checkout's ``configs/`` (``config.shipped_configs``).
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

import pytest

import metaloop
from metaloop import config
from metaloop.cli.main import main

REPO = Path(__file__).resolve().parents[1]
NAME = "omniglot_maml_5w1s_cpu"
# a shipped config whose extends names its neighbour (omniglot_challenge_pilot28_6k_rot_cpu)
CHILD = "omniglot_challenge_pilot28_6k_rot40_cpu"
SHIPPED = REPO / "configs"         # from a checkout, the shipped configs are its own


@pytest.fixture
def elsewhere(tmp_path, monkeypatch):
    """A working folder with no configs/ in it; each fallback noted afresh."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(config, "_SHIPPED_NOTED", set(), raising=False)
    return tmp_path


def test_the_shipped_folder_is_the_repository_configs():
    assert config.shipped_configs() is not None
    assert config.shipped_configs().resolve() == (REPO / "configs").resolve()


@pytest.mark.parametrize("given", [f"configs/{NAME}.toml", f"{NAME}.toml", NAME])
def test_a_named_config_that_is_not_here_is_read_from_the_shipped_copy(elsewhere, capsys, given):
    want = config.load(REPO / "configs" / f"{NAME}.toml")
    capsys.readouterr()
    assert config.load(given) == want
    (line,) = capsys.readouterr().err.splitlines()
    shipped = SHIPPED / f"{NAME}.toml"
    assert str(shipped) in line and given in line and "shipped with metaloop" in line
    assert config.load(given) == want                  # said once
    assert capsys.readouterr().err == ""
    assert config.written_keys(given)[("method", "name")] == shipped


def test_a_file_that_is_there_always_wins(elsewhere, capsys):
    (elsewhere / "configs").mkdir()
    mine = (REPO / "configs" / f"{NAME}.toml").read_text()
    mine = re.sub(r"(?m)^iterations = \d+", "iterations = 7", mine)
    (elsewhere / "configs" / f"{NAME}.toml").write_text(mine)
    assert config.load(f"configs/{NAME}.toml")["train"]["iterations"] == 7
    assert capsys.readouterr().err == ""


def test_extends_falls_back_and_a_shipped_config_extends_its_neighbour(elsewhere, capsys):
    (elsewhere / "mine.toml").write_text(f'extends = "configs/{NAME}.toml"\n'
                                         "[train]\niterations = 7\n")
    cfg = config.load(elsewhere / "mine.toml")
    assert cfg["train"]["iterations"] == 7 and cfg["method"]["name"] == "maml"
    assert f"configs/{NAME}.toml" in capsys.readouterr().err
    # a decoy of the neighbour in the working folder is not read
    base = "omniglot_challenge_pilot28_6k_rot_cpu.toml"
    (elsewhere / base).write_text("not = [toml\n")
    assert config.load(CHILD) == config.load(REPO / "configs" / f"{CHILD}.toml")
    where = config.written_keys(CHILD)
    assert SHIPPED / base in where.values()


def test_a_name_in_neither_place_names_the_shipped_folder_and_close_names(elsewhere):
    with pytest.raises(FileNotFoundError) as e:
        config.load(f"configs/{NAME}x.toml")
    msg = str(e.value)
    assert msg.startswith(f"config file configs/{NAME}x.toml does not exist"), msg
    assert "the repository's configs/ folder, shipped with metaloop" in msg
    assert f"did you mean '{NAME}.toml'" in msg
    (elsewhere / "mine.toml").write_text('extends = "omniglot_mam_5w1s_cpu.toml"\n')
    with pytest.raises(FileNotFoundError, match=rf"did you mean '{NAME}.toml'"):
        config.load(elsewhere / "mine.toml")
    # another form of path: the plain error, no named configs
    with pytest.raises(FileNotFoundError) as e:
        config.load(elsewhere / "sub" / f"{NAME}.toml")
    assert str(e.value).endswith("does not exist")


def test_the_command_reads_a_named_config(elsewhere, capsys):
    assert main(["train", "--print-config", "--config", f"configs/{NAME}.toml"]) == 0
    out, err = capsys.readouterr()
    assert config.tomllib.loads(out)["method"]["name"] == "maml"
    (line,) = err.splitlines()
    assert str(SHIPPED / f"{NAME}.toml") in line
    assert main(["train", "--print-config", "--config", f"configs/{NAME}x.toml"]) == 2
    err = capsys.readouterr().err
    assert "shipped with metaloop" in err and f"did you mean '{NAME}.toml'" in err


def test_the_split_file_message_names_metaloop_data(tmp_path, monkeypatch):
    from metaloop.data import omniglot as og
    monkeypatch.setattr(og, "SHARED_DIR", None)
    monkeypatch.setenv("METALOOP_DATA", str(tmp_path / "data"))
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    with pytest.raises(FileNotFoundError) as e:
        og.load_omniglot_images(split="train")
    msg = str(e.value)
    assert msg.startswith("Omniglot Vinyals split file 'splits/vinyals/train.txt' not found")
    assert "point $METALOOP_DATA at a folder holding omniglot/" in msg
    with pytest.raises(FileNotFoundError) as e:     # an explicit root: searched alone
        og.load_omniglot_images(root=tmp_path / "mine", split="train")
    assert "METALOOP_DATA" not in str(e.value) and "give as root" in str(e.value)


def _changelog_version() -> str:
    """The version the CHANGELOG's top section names: ``## 0.2.0 (unreleased)`` is
    ``0.2.0.dev0`` (PEP 440), ``## 0.2.0 ...`` is ``0.2.0``."""
    text = (REPO / "CHANGELOG.md").read_text(encoding="utf-8")
    top = next(ln for ln in text.splitlines() if ln.startswith("## "))
    m = re.fullmatch(r"## (\d+\.\d+\.\d+)( \(unreleased\)|\b.*)", top)
    assert m, top
    return m[1] + (".dev0" if m[2] == " (unreleased)" else "")


def test_one_version_in_pyproject_the_package_and_the_changelog():
    pyproject = config.tomllib.loads((REPO / "pyproject.toml").read_text())
    assert pyproject["project"]["version"] == metaloop.__version__ == _changelog_version()
    assert metaloop.__version__ == "0.2.0.dev0"


def test_the_text_extra_is_named_as_it_can_be_installed():
    from metaloop.models import text
    assert "'metaloop[text]'" not in text._extra()
    assert "pip install -e '.[text]'" in text._extra()
    assert f"'metaloop-{metaloop.__version__}-py3-none-any.whl[text]'" in text._extra()
    for page in ("data.md", "adaptation.md", "continual.md", "index.md"):
        assert "install 'metaloop[text]'" not in (REPO / "docs" / page).read_text(), page


@pytest.mark.skipif(sys.platform == "win32", reason="POSIX paths in the names")
def test_only_the_named_forms_fall_back():
    assert config._shipped_name("configs/a.toml") == "a.toml"
    assert config._shipped_name("a.toml") == config._shipped_name("a") == "a.toml"
    for other in ("x/a.toml", "configs/a.yaml", "a.yaml", "../a.toml", "/a.toml", ".", ".."):
        assert config._shipped_name(other) is None, other

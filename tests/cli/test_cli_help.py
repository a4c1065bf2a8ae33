"""The commands' help texts say what the code does now: checked against the code path."""

import pytest

from metaloop.cli.main import main
from metaloop.recipes import compare as recipe


def _help(capsys, *argv: str) -> str:
    with pytest.raises(SystemExit) as e:
        main([*argv, "--help"])
    assert e.value.code == 0
    return " ".join(capsys.readouterr().out.split())       # argparse's wrapping undone


def _steps(family: str, **family_keys) -> list[int]:
    cfg = recipe.load_config(family, None, {"family": family_keys, "train": {}, "eval": {}})
    return cfg["eval"]["steps"]


def test_compare_help_gives_each_family_its_own_evaluation_steps(capsys):
    """It said every comparison is evaluated "after 0 to 10 adaptation steps"; omniglot's
    shipped config evaluates after 0, 1 and 3 steps (0, 1 and 5 at 20 ways)."""
    text = _help(capsys, "compare")
    assert "tasks after 0 to 10 adaptation steps" not in text
    assert _steps("sinusoid") == list(range(11)) and "sinusoid: 0 to 10" in text
    assert _steps("omniglot") == [0, 1, 3] and _steps("omniglot", ways=20) == [0, 1, 5]
    assert "omniglot: 0, 1 and 3, or 0, 1 and 5 at 20 ways" in text
    assert "writes results.json, timing.json and the plots" in text


def test_version_names_metaloop_torch_and_python(capsys):
    import platform

    import torch

    import metaloop
    with pytest.raises(SystemExit) as e:
        main(["--version"])
    assert e.value.code == 0
    assert capsys.readouterr().out.strip() == (
        f"metaloop {metaloop.__version__} (torch {torch.__version__}, Python "
        f"{platform.python_version()})")

"""The comma-list flags of every command: a blank item or a number that is not finite is a
usage error naming the flag (exit 2); a list of blanks alone is left to the command, which
names the flag that needs at least one item."""

from __future__ import annotations

import pytest

from metaloop.cli._args import float_list, int_list
from metaloop.cli.main import main


@pytest.mark.parametrize("argv, flag, text", [
    (["vae", "--hidden", "64,,32"], "--hidden", "64,,32"),
    (["vae", "--sweep-latent", "2,"], "--sweep-latent", "2,"),
    (["vae", "--classes", ",1"], "--classes", ",1"),
    (["forgetting", "--hidden", "16, ,16"], "--hidden", "16, ,16"),
    (["eval", "--checkpoint", "run", "--steps", "0,,1"], "--steps", "0,,1"),
    (["vae", "--inversion-transfer", "--invert-lrs", "0.05,,0.01"], "--invert-lrs",
     "0.05,,0.01"),
])
def test_a_blank_item_is_a_usage_error_naming_the_flag(argv, flag, text, tmp_path, capsys):
    """Each was read without its blank: ``--hidden 64,,32`` trained a 64-32 MLP."""
    with pytest.raises(SystemExit) as e:
        main([*argv, "--out", str(tmp_path / "o")])
    assert e.value.code == 2
    err = capsys.readouterr().err
    assert f"argument {flag}: expected comma-separated" in err and repr(text) in err
    assert "empty item" in err and not (tmp_path / "o").exists()


@pytest.mark.parametrize("text", ["nan", "0.05,inf", "1e999", "0.05,-inf"])
def test_a_number_list_refuses_what_is_not_finite(text, tmp_path, capsys):
    with pytest.raises(SystemExit) as e:
        main(["vae", "--inversion-transfer", "--invert-lrs", text, "--out",
              str(tmp_path / "o")])
    assert e.value.code == 2
    assert (f"argument --invert-lrs: expected comma-separated finite numbers, got {text!r}"
            in capsys.readouterr().err)
    assert not (tmp_path / "o").exists()


def test_the_list_types_read_spaces_and_leave_an_all_blank_list_to_the_command():
    assert int_list(" 3 , 4 ") == [3, 4] and float_list("0.5, 1e-3") == [0.5, 1e-3]
    assert int_list(",") == [] == float_list("") == int_list(" , ")

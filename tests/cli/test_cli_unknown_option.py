"""An unknown option after a subcommand is that subcommand's usage error: ``metaloop
COMMAND: error: unrecognized arguments: ...`` after its own usage line, exit status 2,
nothing on stdout; before any subcommand it stays the top-level program's."""

from __future__ import annotations

import pytest

from metaloop.cli.main import COMMANDS, main

# what each command requires besides the unknown option (its own usage error otherwise)
REQUIRED = {"eval": ["--checkpoint", "r"],
            "predict": ["--checkpoint", "r", "--support", "s", "--query", "q"],
            "data": ["omniglot"]}


@pytest.mark.parametrize("command", COMMANDS)
def test_an_unknown_option_is_the_subcommands_error(command, capsys):
    with pytest.raises(SystemExit) as e:
        main([command, *REQUIRED.get(command, []), "--bogus"])
    assert e.value.code == 2
    got = capsys.readouterr()
    assert got.out == ""
    prog = command if command != "data" else "data omniglot"
    assert f"metaloop {prog}: error: unrecognized arguments: --bogus" in got.err
    assert f"usage: metaloop {prog} " in got.err


def test_an_unknown_option_before_a_subcommand_is_the_programs(capsys):
    with pytest.raises(SystemExit) as e:
        main(["--bogus"])
    assert e.value.code == 2
    assert "metaloop: error: unrecognized arguments: --bogus" in capsys.readouterr().err

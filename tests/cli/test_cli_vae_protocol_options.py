"""``metaloop vae --protocol iwae`` refuses the other runs' options that would change its
model or training, instead of training the paper's VAE regardless."""

from __future__ import annotations

import pytest

from metaloop.cli.main import build_parser, main
from metaloop.recipes.generative import _NOT_PROTOCOL


def test_the_protocols_own_values_are_the_command_defaults():
    args = build_parser().parse_args(["vae"])
    for name, keep in _NOT_PROTOCOL:
        assert getattr(args, name) == keep[0], name


@pytest.mark.parametrize("argv, named", [
    (["--arch", "conv"], "--arch conv"),
    (["--likelihood", "gaussian"], "--likelihood gaussian"),
    (["--beta", "0.5"], "--beta 0.5"),
    (["--binarize", "static"], "--binarize static"),
    (["--epochs", "3"], "--epochs 3"),
    (["--cpu-budget", "5"], "--cpu-budget 5.0"),
    (["--lr-end", "0.001", "--arch", "conv"], "--arch conv, --lr-end 0.001"),
])
def test_options_the_protocol_does_not_take_exit_2_naming_them(argv, named, tmp_path, capsys):
    out = tmp_path / "run"
    rc = main(["--threads", "1", "vae", "--protocol", "iwae", "--data", "fashion-mnist",
               "--root", str(tmp_path / "no-data"), "--stages", "1", "--out", str(out),
               "--no-progress", *argv])
    err = capsys.readouterr().err
    assert rc == 2 and "metaloop vae: error: --protocol iwae trains the paper's MLP VAE" in err
    assert f"drop {named}" in err
    assert not out.exists()


def test_the_protocols_values_given_explicitly_are_fine(tmp_path, capsys):
    # no data under --root: getting as far as loading it means the options were accepted
    rc = main(["vae", "--protocol", "iwae", "--data", "fashion-mnist", "--root",
               str(tmp_path / "no-data"), "--arch", "mlp", "--binarize", "dynamic",
               "--beta", "1", "--out", str(tmp_path / "run"), "--no-progress"])
    assert rc == 2 and "--protocol iwae trains" not in capsys.readouterr().err

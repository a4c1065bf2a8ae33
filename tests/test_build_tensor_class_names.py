"""A tensor file whose ``class_names`` holds an empty name: ``metaloop train`` names the file
and the key (it said only "split_classes: class names must be non-empty strings, got ''
at index 0")."""

from __future__ import annotations

import numpy as np

from metaloop.cli.main import main


def test_an_empty_class_name_names_the_file_and_key(tmp_path, capsys):
    path = tmp_path / "t.npz"
    y = np.repeat(np.arange(6), 4)
    x = np.random.default_rng(0).normal(size=(len(y), 8)).astype(np.float32)
    np.savez(path, x=x, y=y, class_names=np.array(["", "b", "c", "d", "e", "f"]))
    (tmp_path / "c.toml").write_text(
        f'[family]\nname = "tensors"\nroot = "{path}"\nways = 2\nshots = 1\nqueries = 2\n'
        'split_fractions = [0.5, 0.0, 0.5]\n[model]\nname = "mlp"\nhidden = [8]\n'
        '[method]\nname = "protonet"\n[train]\niterations = 1\nmeta_batch = 1\n'
        'checkpoint_every = 1\n[eval]\ntasks = 1\nsteps = [0]\n')
    assert main(["train", "--config", str(tmp_path / "c.toml"), "--out", str(tmp_path / "r"),
                 "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert f"tensor file {path}: its class_names (the key 'class_names') must be non-empty " \
           f"strings, got '' at index 0" in err

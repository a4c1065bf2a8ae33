"""``metaloop eval --checkpoint RUN`` at the run's stored ``family.root``: held-out examples
that changed since the run read them are refused by name (exit 2, nothing written), as
``--data-root`` refuses another copy; a run that stored no fingerprint of its data is
evaluated as before."""

import json
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import metaloop as ml
from metaloop.cli.main import main
from metaloop.recipes.evaluation import evaluate_run

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from conftest import (  # noqa: E402
    edit_state,
    folder_config,
    refused,
    tensor_config,
    train_run,
    write_image_folder,
    write_tensor_file,
)


def _folder_run(tmp_path: Path) -> tuple[Path, Path]:
    root = write_image_folder(tmp_path / "data" / "images", classes=6, per_class=6,
                              mixed=False)
    return train_run(tmp_path / "r", folder_config(root)), root


def _change_one_image(root: Path, cls: str) -> None:
    victim = sorted((root / cls).iterdir())[0]
    with Image.open(victim) as im:
        flipped = im.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
    flipped.save(victim)


def test_changed_images_at_the_stored_root_are_refused_naming_the_class(tmp_path, capsys):
    run, root = _folder_run(tmp_path)
    assert main(["eval", "--checkpoint", str(run), "--out", str(tmp_path / "before"),
                 "--no-progress"]) == 0
    cls = ml.load_run(run).classes["test"][0]
    _change_one_image(root, cls)
    record = tmp_path / "rec.json"
    refused(["eval", "--checkpoint", str(run), "--record", str(record), "--no-progress"],
            capsys, tmp_path,
            f"{root} (the family.root of {run}) changed since the run read it: "
            f"examples differ in class(es) [{cls!r}]")
    assert not record.exists()
    with pytest.raises(ValueError, match=r"examples differ in class\(es\)"):
        evaluate_run(ml.load_run(run))
    # and the held-out tasks a user draws from the loaded run themselves
    with pytest.raises(ValueError, match=r"changed since the run read it"):
        ml.load_run(run).heldout()


def test_a_changed_tensor_file_at_the_stored_root_is_refused(tmp_path, capsys):
    (tmp_path / "data").mkdir()
    root = write_tensor_file(tmp_path / "data" / "feats.npz")
    run = train_run(tmp_path / "r", tensor_config(root))
    test = ml.load_run(run).classes["test"]
    arrays = dict(np.load(root))
    arrays["x"][int(np.flatnonzero(arrays["y"] == int(test[0]))[0])] += 1.0
    np.savez(root, **arrays)
    refused(["eval", "--checkpoint", str(run), "--no-progress"], capsys, tmp_path,
            f"examples differ in class(es) [{test[0]!r}]")


def test_a_run_that_stored_no_fingerprint_is_still_evaluated(tmp_path):
    run, root = _folder_run(tmp_path)
    ckpt = run / (run / "LATEST").read_text().strip()
    edit_state(ckpt / "state.json", lambda s: s.pop("data"))
    assert ml.load_run(run).data is None
    _change_one_image(root, ml.load_run(run).classes["test"][0])
    out = tmp_path / "out"
    assert main(["eval", "--checkpoint", str(run), "--out", str(out), "--no-progress"]) == 0
    res = json.loads((out / "results.json").read_text())
    assert res["methods"]


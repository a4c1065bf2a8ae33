"""A run on your own data stores a fingerprint of what it reads (``metaloop.build.
data_fingerprint``) in its checkpoints: ``train --resume`` on changed data is refused, naming
what changed and the two ways on, instead of going on silently on other data; a class the
run's stored split names that the data no longer has is named as such, in eval and resume."""

import json
import shutil
import sys
from pathlib import Path

from PIL import Image

from metaloop import build
from metaloop.cli.main import main
from metaloop.train.checkpoint import atomic_write_text, latest_checkpoint

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from conftest import tensor_config, write_image_folder, write_tensor_file  # noqa: E402


def _folder_run(tmp_path) -> tuple[Path, Path]:
    """A 4-iteration r2d2 run on a generated folder, checkpointed at 2 and 4, with LATEST
    pointing back at iteration 2 (a run interrupted there); returns (run, root)."""
    root = write_image_folder(tmp_path / "images", classes=8, per_class=6, mixed=False)
    (tmp_path / "c.toml").write_text(
        f'[family]\nname = "folder"\nroot = "{root}"\ninvert = "auto"\nways = 2\nshots = 1\n'
        'queries = 2\nsplit_fractions = [0.5, 0.0, 0.5]\n[model]\nname = "conv4"\nchannels = 4\n'
        '[method]\nname = "r2d2"\n[train]\niterations = 4\nmeta_batch = 2\n'
        'checkpoint_every = 2\n[eval]\ntasks = 4\nsteps = [0]\n')
    run = tmp_path / "run"
    assert main(["train", "--config", str(tmp_path / "c.toml"), "--out", str(run),
                 "--no-progress"]) == 0
    atomic_write_text(run / "LATEST", "ckpt-00000002\n")
    return run, root


def _state(run: Path) -> dict:
    return json.loads((latest_checkpoint(run) / "state.json").read_text())


def test_resume_on_unchanged_data_goes_on(tmp_path, capsys):
    run, root = _folder_run(tmp_path)
    data = _state(run)["data"]
    fam = _state(run)["config"]["family"]
    assert data["family"] == "folder" and data["root"] == str(root)
    assert sorted(data["classes"]) == sorted(fam["train_classes"] + fam["test_classes"])
    assert "data" not in _state(run)["config"]            # beside the config, not in it
    assert main(["train", "--resume", str(run), "--no-progress"]) == 0
    assert _state(run)["iteration"] == 4 and _state(run)["data"] == data


def test_resume_on_changed_images_is_refused(tmp_path, capsys):
    run, root = _folder_run(tmp_path)
    cls = _state(run)["config"]["family"]["train_classes"][0]
    victim = sorted((root / cls).iterdir())[0]
    with Image.open(victim) as im:                                     # one image changed
        im.transpose(Image.Transpose.FLIP_LEFT_RIGHT).save(victim)
    capsys.readouterr()
    assert main(["train", "--resume", str(run), "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert "refusing to resume" in err and "the data changed since its checkpoint" in err
    assert f"examples changed in class(es) [{cls!r}]" in err and str(root) in err
    assert "restore the data" in err and "train.init" in err
    assert _state(run)["iteration"] == 2                       # nothing trained on


def test_a_class_gone_from_the_data_is_named_in_eval_and_resume(tmp_path, capsys):
    run, root = _folder_run(tmp_path)
    gone = _state(run)["config"]["family"]["test_classes"][0]
    shutil.move(root / gone, tmp_path / gone)
    for argv in (["eval", "--checkpoint", str(run), "--no-progress",
                  "--out", str(tmp_path / "eval")],
                 ["train", "--resume", str(run), "--no-progress"]):
        capsys.readouterr()
        assert main(argv) == 2
        err = capsys.readouterr().err
        assert (f"family.test_classes names 1 class(es) that the data at {root} no longer "
                f"has: [{gone!r}]") in err, err
        assert "unknown class" not in err


def test_tensor_file_runs_are_fingerprinted_too(tmp_path, capsys):
    path = write_tensor_file(tmp_path / "feats.npz")
    (tmp_path / "c.toml").write_text(tensor_config(path, iterations=2))
    run = tmp_path / "run"
    assert main(["train", "--config", str(tmp_path / "c.toml"), "--out", str(run),
                 "--no-progress"]) == 0
    import numpy as np
    arrays = dict(np.load(path))
    arrays["x"][0] += 1.0                                  # one example of class 0 changed
    np.savez(path, **arrays)
    capsys.readouterr()
    assert main(["train", "--resume", str(run), "--no-progress"]) == 2
    assert "examples changed in class(es) ['0']" in capsys.readouterr().err


def test_a_table_is_fingerprinted_by_its_bytes(tmp_path):
    table = tmp_path / "t.csv"
    table.write_text("text,label\na,x\nb,y\n")
    fcfg = {"name": "table", "root": str(table)}
    before = build.data_fingerprint(fcfg)
    assert build.data_fingerprint(fcfg) == before
    table.write_text("text,label\na,x\nc,y\n")
    assert build.data_fingerprint(fcfg)["sha256"] != before["sha256"]
    assert build.data_fingerprint({"name": "sinusoid"}) is None


def test_resume_with_the_config_file_keeps_the_runs_split(tmp_path, capsys):
    """``train --config FILE --resume RUN`` split the classes again from the data as it is
    now: a class folder added since was refused as "the config differs in
    family.test_classes" (the file had not changed). The run's stored split is used: an
    added class changes nothing, and a changed image is named as changed data."""
    run, root = _folder_run(tmp_path)
    shutil.copytree(root / sorted(p.name for p in root.iterdir() if p.is_dir())[0],
                    root / "zz added later")
    argv = ["train", "--config", str(tmp_path / "c.toml"), "--resume", str(run),
            "--no-progress"]
    assert main(argv) == 0
    assert _state(run)["iteration"] == 4
    assert "zz added later" not in json.dumps(_state(run)["config"]["family"])
    atomic_write_text(run / "LATEST", "ckpt-00000002\n")
    cls = _state(run)["config"]["family"]["test_classes"][0]
    victim = sorted((root / cls).iterdir())[0]
    with Image.open(victim) as im:
        im.transpose(Image.Transpose.FLIP_LEFT_RIGHT).save(victim)
    capsys.readouterr()
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert "the data changed since its checkpoint" in err and "config differs" not in err

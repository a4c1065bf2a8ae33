"""A finished meta-run in ``metaloop adapt --meta-dir`` is reused only on the weights it was
learned on: its config holds the checkpoint the metaloop ``--model`` was loaded from
(``model_checkpoint``: its name and tensors' sha256), so that a model folder retrained or
replaced in place, or whose LATEST moved to a newer checkpoint, is refused by name, and the
same checkpoint is reused."""

from __future__ import annotations

import hashlib
import json
import shutil
import sys
from pathlib import Path

import pytest

from metaloop.cli.main import main
from metaloop.train.checkpoint import latest_checkpoint

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from conftest import (  # noqa: E402
    folder_config,
    train_run,
    write_image_folder,
    write_next_checkpoint,
)

META = ["--approaches", "probe-ridge", "--steps", "2", "--meta", "fomaml",
        "--meta-iterations", "2", "--meta-batch", "1", "--split-fractions", "0.5,0,0.5"]


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """(a ProtoNet run on an image folder, the same config trained with another seed, a
    folder of 4 other classes to adapt to)."""
    d = tmp_path_factory.mktemp("adapt_meta_reuse")
    photos = write_image_folder(d / "photos", classes=8, per_class=6, mixed=False)
    run = train_run(d / "a", folder_config(photos))
    again = train_run(d / "b", folder_config(photos), "--seed", "1")
    other = write_image_folder(d / "other", classes=4, per_class=6, seed=5, mixed=False)
    return run, again, other


def _adapt(model: Path, data: Path, out: Path, meta_dir: Path) -> list[str]:
    return ["adapt", "--model", str(model), "--family", "folder", "--data", str(data),
            "--ways", "2", "--shots", "1", "--queries", "2", "--tasks", "3", "--out",
            str(out), "--no-progress", *META, "--meta-dir", str(meta_dir)]


def _named(ckpt: Path) -> str:
    """``ckpt`` as a meta-run's config records it: its name and its tensors' sha256."""
    digest = hashlib.sha256((ckpt / "tensors.safetensors").read_bytes()).hexdigest()
    return f"{ckpt.name} sha256 {digest[:16]}"


def _replace(model: Path, run: Path) -> None:
    """Replace the model folder by another run (trained anew into the same folder)."""
    shutil.rmtree(model)
    shutil.copytree(run, model)


@pytest.mark.parametrize("change", ["latest-moved", "retrained"])
def test_a_meta_run_on_other_weights_of_the_model_folder_is_refused(trained, tmp_path, capsys,
                                                                    change):
    run, again, other = trained
    model, meta_dir = tmp_path / "model", tmp_path / "meta"
    shutil.copytree(run, model)
    loaded = latest_checkpoint(model)
    assert loaded is not None
    learned_on = _named(loaded)
    assert main(_adapt(model, other, tmp_path / "o1", meta_dir)) == 0
    config = json.loads((tmp_path / "o1/results.json").read_text())["meta"]["fomaml"]["config"]
    assert config["model"] == str(model) and config["model_checkpoint"] == learned_on
    kept = (meta_dir / "fomaml/LATEST").read_text()
    # the same checkpoint: the finished meta-run is reused
    assert main(_adapt(model, other, tmp_path / "o2", meta_dir)) == 0
    assert (meta_dir / "fomaml/LATEST").read_text() == kept
    again_config = json.loads((tmp_path / "o2/results.json").read_text())["meta"]["fomaml"]
    assert again_config["config"] == config
    # other weights in the same folder: refused, naming both checkpoints
    if change == "latest-moved":
        write_next_checkpoint(model)
    else:
        _replace(model, again)
    now = latest_checkpoint(model)
    assert now is not None and _named(now) != learned_on
    capsys.readouterr()
    assert main(_adapt(model, other, tmp_path / "o3", meta_dir)) == 2
    err = capsys.readouterr().err
    assert f"refusing to resume {meta_dir / 'fomaml'}: the config differs in " \
           f"model_checkpoint ({learned_on!r} != {_named(now)!r})" in err
    assert not (tmp_path / "o3").exists()
    assert (meta_dir / "fomaml/LATEST").read_text() == kept


def test_the_checkpoint_given_again_under_its_run_folder_is_reused(trained, tmp_path):
    """The model folder's weights back where they were (the same checkpoint, the same
    sha256): the meta-run learned on them is reused."""
    run, again, other = trained
    model, meta_dir = tmp_path / "model", tmp_path / "meta"
    shutil.copytree(run, model)
    assert main(_adapt(model, other, tmp_path / "o1", meta_dir)) == 0
    kept = (meta_dir / "fomaml/LATEST").read_text()
    _replace(model, again)
    _replace(model, run)
    assert main(_adapt(model, other, tmp_path / "o2", meta_dir)) == 0
    assert (meta_dir / "fomaml/LATEST").read_text() == kept
    first, second = (json.loads((tmp_path / o / "results.json").read_text())["approaches"]
                     for o in ("o1", "o2"))
    assert second["meta-lora-fomaml"]["accuracy"] == first["meta-lora-fomaml"]["accuracy"]

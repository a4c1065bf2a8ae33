"""``metaloop adapt --class-depth``: an image folder of groups of classes,
``root/<group>/<class>/<image>``, adapted on with a depth-1 ``--model`` run, as the
nested-folder warning advises; the warning names this command's flag (not the config key
it lacks) once; the flag is refused where it would change nothing."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

from metaloop.cli.main import main
from metaloop.data.folder import NestedClassFoldersWarning

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from conftest import folder_config, train_run, write_image_folder  # noqa: E402


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    """(a depth-1 folder run, a folder of one group holding 6 classes of other images)."""
    d = tmp_path_factory.mktemp("adapt_depth")
    photos = write_image_folder(d / "photos", classes=6, per_class=4, mixed=False)
    run = train_run(d, folder_config(photos))
    nested = d / "nested"
    write_image_folder(nested / "grp", classes=6, per_class=4, seed=7, mixed=False)
    return run, nested


def _adapt(run, data, out, *extra):
    return ["adapt", "--model", str(run), "--family", "folder", "--data", str(data),
            "--ways", "2", "--shots", "1", "--queries", "2", "--tasks", "2", "--approaches",
            "probe-ridge", "--out", str(out), "--no-progress", *extra]


def test_a_nested_folder_is_warned_once_with_the_flag_of_adapt(setup, tmp_path, capsys):
    """It advised "set family.class_depth = 2", a key adapt has no way to set."""
    run, nested = setup
    with pytest.warns(NestedClassFoldersWarning) as seen:
        assert main(_adapt(run, nested, tmp_path / "out")) == 2
    hints = [str(w.message) for w in seen if w.category is NestedClassFoldersWarning]
    assert len(hints) == 1, hints
    assert hints[0].endswith("add --class-depth 2") and "family.class_depth" not in hints[0]
    assert "ways=2 exceeds the 1 classes" in capsys.readouterr().err


def test_class_depth_2_reads_the_classes_in_the_group(setup, tmp_path, capsys):
    run, nested = setup
    out = tmp_path / "out"
    assert main(_adapt(run, nested, out, "--class-depth", "2")) == 0
    assert "warning" not in capsys.readouterr().err
    data = json.loads((out / "results.json").read_text())["data"]
    assert data["heldout_classes"] == [f"grp/class_{k:02d}" for k in range(6)]
    assert data["class_depth"] == 2


def test_class_depth_is_refused_where_it_changes_nothing(setup, tmp_path, capsys):
    run, nested = setup
    argv = _adapt(run, nested, tmp_path / "out", "--class-depth", "2")
    argv[argv.index("folder")] = "tensors"
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert "--class-depth 2 applies to --family folder" in err


def test_the_help_says_the_default(capsys):
    with pytest.raises(SystemExit):
        main(["adapt", "--help"])
    out = " ".join(capsys.readouterr().out.split())
    assert "--class-depth {1,2}" in out and "overrides the --model run's" in out

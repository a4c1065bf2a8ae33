"""``metaloop adapt --skip-corrupt`` is kept where a reader looks for the run's data options:
its ``--record`` records hold ``skip_corrupt: true`` in their ``setting`` (as ``forgetting``'s
and ``vae``'s do), and results.json's ``data`` says whether the folder was read skipping
unreadable images (the flag's or the ``--model`` run's own ``family.skip_corrupt``)."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

from metaloop.cli.main import main

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from conftest import folder_config, train_run, write_image_folder  # noqa: E402


@pytest.fixture(scope="module")
def skipping_run(tmp_path_factory):
    """(a ProtoNet run trained with family.skip_corrupt = true on a folder whose last class
    holds broken.png, that folder, another folder with broken.png, a clean folder)."""
    d = tmp_path_factory.mktemp("adapt_skip_record")
    photos = write_image_folder(d / "photos", classes=8, per_class=6, mixed=False,
                                corrupt=True)
    config = folder_config(photos).replace("[family]\n", "[family]\nskip_corrupt = true\n")
    other = write_image_folder(d / "other", classes=4, per_class=6, seed=3, mixed=False,
                               corrupt=True)
    clean = write_image_folder(d / "clean", classes=4, per_class=6, seed=4, mixed=False)
    return train_run(d, config), photos, other, clean


def _adapt(run, data, out, records, *extra):
    return ["adapt", "--model", str(run), "--family", "folder", "--data", str(data), "--ways",
            "2", "--queries", "2", "--tasks", "2", "--approaches", "probe-ridge",
            "--no-progress", "--out", str(out), "--record", str(records), *extra]


def _record(folder: Path) -> tuple[Path, dict]:
    (path,) = folder.glob("*.json")
    return path, json.loads(path.read_text())


def test_skip_corrupt_is_in_the_records_setting_and_results_data(skipping_run, tmp_path):
    run, _, other, _ = skipping_run
    argv = _adapt(run, other, tmp_path / "out", tmp_path / "rec", "--skip-corrupt")
    assert main(argv) == 0
    path, rec = _record(tmp_path / "rec")
    assert rec["setting"]["skip_corrupt"] is True
    assert "--skip-corrupt" in rec["command"]
    data = json.loads((tmp_path / "out" / "results.json").read_text())["data"]
    assert data["skip_corrupt"] is True
    assert data["left_out"]["skipped"] == ["class_03/broken.png"]
    # a record written before its setting held the flag (its command has it) is the same
    # setting: the run replaces it, and the new one holds the flag
    del rec["setting"]["skip_corrupt"]
    path.write_text(json.dumps(rec))
    again = _adapt(run, other, tmp_path / "out2", tmp_path / "rec", "--skip-corrupt")
    assert main(again) == 0                 # (a new --out: the first run's is finished)
    assert _record(tmp_path / "rec")[1]["setting"]["skip_corrupt"] is True


def test_a_run_without_the_flag_records_none(skipping_run, tmp_path, capsys):
    run, photos, _, clean = skipping_run
    assert main(_adapt(run, clean, tmp_path / "out", tmp_path / "rec")) == 0
    assert "skip_corrupt" not in _record(tmp_path / "rec")[1]["setting"]
    assert json.loads((tmp_path / "out" / "results.json").read_text()
                      )["data"]["skip_corrupt"] is False
    # the run's own data is read with the run's family.skip_corrupt: results.json says so
    assert main(_adapt(run, photos, tmp_path / "own", tmp_path / "rec_own")) == 0
    data = json.loads((tmp_path / "own" / "results.json").read_text())["data"]
    assert data["skip_corrupt"] is True and data["left_out"]["skipped"] == [
        "class_07/broken.png"]
    # a record of another setting at the same path is refused by the flag's name
    capsys.readouterr()
    assert main(_adapt(run, clean, tmp_path / "out2", tmp_path / "rec",
                       "--skip-corrupt")) == 2
    assert "--skip-corrupt (not recorded in the record; this run's: True)" in \
        capsys.readouterr().err

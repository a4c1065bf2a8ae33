"""A table or image folder too small for the meta-training tasks of ``--meta``: the advice
names ``--meta-shots`` (with the learner's default) that sets their shots, not ``--shots``."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from metaloop.cli.main import main
from metaloop.recipes import adapt as recipe
from metaloop.tasks.episodes import SmallClassesError

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from conftest import folder_config, train_run, write_image_folder  # noqa: E402

TOPICS = ("sports", "music", "cooking", "weather", "finance", "health", "travel", "science")


def _table(tmp_path):
    lines = ["text,label"] + [f"text {i} about {t},{t}" for t in TOPICS for i in range(8)]
    path = tmp_path / "eight.csv"
    path.write_text("\n".join(lines) + "\n")
    return path


def test_the_cli_names_meta_shots_and_reptiles_default(tmp_path, capsys):
    out = tmp_path / "out"
    code = main(["--threads", "1", "adapt", "--family", "table", "--data", str(_table(tmp_path)),
                 "--ways", "2", "--shots", "1", "--queries", "5", "--meta", "reptile",
                 "--meta-iterations", "2", "--split-fractions", "0.5,0,0.5", "--out", str(out)])
    err = capsys.readouterr().err
    assert code == 2 and not out.exists()
    assert "(split 'train')" in err and "shots + queries = 5 + 5" in err
    assert ("meta-training tasks of --meta reptile, whose support examples per class are "
            "--meta-shots, by default 5 for reptile (not --shots): give a smaller --meta-shots "
            "or fewer --queries, or leave the small classes out: --drop-small") in err
    assert "--shots or" not in err


def test_a_given_meta_shots_is_named_with_its_value(tmp_path):
    s = recipe.AdaptSettings(family="table", data=str(_table(tmp_path)), ways=2, shots=1,
                             queries=5, meta="reptile,maml", meta_shots=4,
                             split_fractions="0.5,0,0.5")
    with pytest.raises(SmallClassesError, match=r"--meta reptile,maml, whose support examples "
                       r"per class are --meta-shots 4 \(not --shots\): give a smaller "
                       r"--meta-shots or fewer --queries"):
        recipe.prepare(s)


def test_one_meta_shot_leaves_only_the_queries_to_lower(tmp_path):
    s = recipe.AdaptSettings(family="table", meta="maml")
    advice = SmallClassesError("problem", recipe._meta_small_advice(s, 1), shots=1).advice
    assert advice == ("these are the meta-training tasks of --meta maml, whose support "
                      "examples per class are --meta-shots, by default 1 for maml (not "
                      "--shots): give fewer --queries, or leave the small classes out: "
                      "--drop-small")


def test_a_small_held_out_family_keeps_the_shots_advice(tmp_path):
    s = recipe.AdaptSettings(family="table", data=str(_table(tmp_path)), ways=2, shots=1,
                             queries=8, meta="maml", split_fractions="0.5,0,0.5")
    with pytest.raises(SmallClassesError, match="split 'test'") as e:
        recipe.prepare(s)
    assert "--meta-shots" not in str(e.value)


@pytest.fixture(scope="module")
def folder_run(tmp_path_factory):
    """(a ProtoNet run trained on an image folder of 8 classes of 6 images, that folder)."""
    d = tmp_path_factory.mktemp("folder_run")
    photos = write_image_folder(d / "photos", classes=8, per_class=6, mixed=False)
    return train_run(d, folder_config(photos)), photos


def test_an_image_folder_too_small_for_meta_training_names_meta_shots(folder_run, tmp_path,
                                                                      capsys):
    """The run's own folder: its 4 training classes of 6 images meta-train --meta reptile on
    5 + 2 images per class (its default --meta-shots); it said "give fewer --shots"."""
    run, photos = folder_run
    out = tmp_path / "out"
    code = main(["--threads", "1", "adapt", "--model", str(run), "--family", "folder",
                 "--data", str(photos), "--ways", "2", "--shots", "1", "--queries", "2",
                 "--meta", "reptile", "--meta-iterations", "1", "--out", str(out),
                 "--no-progress"])
    err = capsys.readouterr().err
    assert code == 2 and not out.exists()
    assert f"image folder {photos}: 4 class(es) have fewer than shots + queries = 5 + 2" in err
    assert ("meta-training tasks of --meta reptile, whose support examples per class are "
            "--meta-shots, by default 5 for reptile (not --shots): give a smaller --meta-shots "
            "or fewer --queries, or leave the small classes out: --drop-small") in err
    assert "--shots or" not in err


def test_the_second_meta_learners_shots_are_named_with_the_folder(folder_run):
    """--meta maml,reptile: maml's 1-shot family reads the folder, reptile's 5-shot one is
    that family with more shots (``with_shots``), whose error named neither the folder
    (it began "Episodes:") nor --meta-shots."""
    run, photos = folder_run
    s = recipe.AdaptSettings(family="folder", model=str(run), data=str(photos), ways=2,
                             shots=1, queries=2, meta="maml,reptile")
    with pytest.raises(SmallClassesError) as e:
        recipe.prepare(s)
    assert str(e.value).startswith(f"image folder {photos}: 4 class(es) have fewer than "
                                   f"shots + queries = 5 + 2 = 7 examples")
    assert e.value.advice == (
        "these are the meta-training tasks of --meta reptile, whose support examples per "
        "class are --meta-shots, by default 5 for reptile (not --shots): give a smaller "
        "--meta-shots or fewer --queries, or leave the small classes out: --drop-small")

"""A table too small for the meta-training tasks of ``--meta``: the advice names
``--meta-shots`` (with the learner's default) that sets their shots, not ``--shots``."""

from __future__ import annotations

import pytest

from metaloop.cli.main import main
from metaloop.recipes import adapt as recipe
from metaloop.tasks.episodes import SmallClassesError

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

"""Classes smaller than shots + queries: where the tasks take one shot already, the advice
names only what can be changed (the queries, dropping the classes, restoring examples),
never lowering the shots, in the API's, a config's and each command's words."""

import pickle
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from metaloop.cli.main import main
from metaloop.runs import load_run
from metaloop.tasks import Episodes
from metaloop.tasks.episodes import SmallClassesError, advice_for_shots

sys.path.insert(0, str(Path(__file__).resolve().parent))
from conftest import folder_config, train_run, write_image_folder  # noqa: E402


def test_one_shot_tasks_are_not_told_to_lower_the_shots():
    x, y = torch.randn(6, 3), torch.tensor([0, 0, 1, 1, 2, 2])
    with pytest.raises(SmallClassesError) as one:
        Episodes(x, y, ways=2, shots=1, queries=2)
    assert str(one.value).endswith("; give fewer queries, or leave them out: drop_small=True")
    assert one.value.shots == 1 and "shots/" not in one.value.advice
    with pytest.raises(SmallClassesError) as two:                  # more shots: lower them
        Episodes(x, y, ways=2, shots=2, queries=1)
    assert str(two.value).endswith("; give fewer shots/queries, or leave them out: "
                                   "drop_small=True")
    again = pickle.loads(pickle.dumps(one.value))
    assert (str(again), again.advice, again.shots) == (str(one.value), one.value.advice, 1)


def test_the_advice_s_shots_part_is_kept_where_the_shots_are_unknown():
    advice = "lower the [shots or ]queries"
    assert advice_for_shots(advice, 1) == "lower the queries"
    assert advice_for_shots(advice, 3) == advice_for_shots(advice, None) == \
        "lower the shots or queries"
    assert advice_for_shots("add texts, or drop them (drop_small=True)", 1) == \
        "add texts, or drop them (drop_small=True)"


def test_a_tensor_file_s_small_classes_keep_the_shots(tmp_path):
    np.savez(tmp_path / "x.npz", x=np.zeros((6, 3), np.float32), y=np.array([0, 0, 1, 1, 2, 2]))
    with pytest.raises(SmallClassesError, match=r"^tensor file .*x\.npz: 3 class\(es\) have "
                                                r"fewer than shots \+ queries = 1 \+ 2 = 3 "
                                                r"examples: .*; give fewer queries, or leave "
                                                r"them out: drop_small=True$") as e:
        Episodes.from_tensors(tmp_path / "x.npz", ways=2, shots=1, queries=2)
    assert e.value.shots == 1


def test_adapt_with_one_shot_names_only_its_queries_and_drop_small(tmp_path, trained_run,
                                                                    capsys):
    model = trained_run(folder_config(write_image_folder(tmp_path / "train", classes=4,
                                                         per_class=4, mixed=False)))
    data = write_image_folder(tmp_path / "mine", classes=3, per_class=2, mixed=False)
    capsys.readouterr()
    assert main(["adapt", "--family", "folder", "--data", str(data), "--model", str(model),
                 "--ways", "2", "--shots", "1", "--tasks", "2", "--approaches", "probe-ridge",
                 "--out", str(tmp_path / "out"), "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert "3 class(es) have fewer than shots + queries = 1 + 5 = 6 examples" in err, err
    assert err.rstrip().endswith("(2); give fewer --queries, or leave them out: "
                                 "--drop-small"), err
    assert "--shots" not in err, err
    assert not (tmp_path / "out").exists()


def test_eval_of_a_one_shot_run_asks_only_to_restore_the_examples(tmp_path, capsys):
    root = write_image_folder(tmp_path / "images", classes=4, per_class=4, mixed=False)
    run = train_run(tmp_path / "d", folder_config(root))           # 1 shot, 2 queries
    held = load_run(run).config["family"]["test_classes"][0]
    for image in sorted((root / held).iterdir())[2:]:               # 2 images left: < 3
        image.unlink()
    for flags in ([], ["--shots", "1"]):
        capsys.readouterr()
        assert main(["eval", "--checkpoint", str(run), "--no-progress", *flags]) == 2
        err = capsys.readouterr().err
        assert f"fewer than shots + queries = 1 + 2 = 3 examples: '{held}' (2); restore " \
               f"those classes' examples: the queries per class and family.drop_small are " \
               f"the run's own, which metaloop eval keeps" in err, err
        assert "--shots" not in err and "lower" not in err, err


def test_train_on_a_one_shot_config_names_only_the_queries_key(tmp_path, capsys):
    root = write_image_folder(tmp_path / "images", classes=4, per_class=2, mixed=False)
    (tmp_path / "c.toml").write_text(folder_config(root))           # 1 shot, 2 queries
    capsys.readouterr()
    assert main(["train", "--config", str(tmp_path / "c.toml"), "--out", str(tmp_path / "run"),
                 "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert "have fewer than shots + queries = 1 + 2 = 3 examples" in err, err
    assert err.rstrip().endswith("; lower the queries, or leave those classes out: "
                                 "family.drop_small = true"), err
    assert not (tmp_path / "run").exists()


def test_a_text_table_s_one_shot_tasks_are_not_told_to_lower_the_shots(tmp_path):
    from metaloop.tasks.text_table import TextTable

    table = tmp_path / "t.csv"
    table.write_text("text,label\n" + "".join(f"t{c}{i},c{c}\n" for c in range(3)
                                              for i in range(3)))
    with pytest.raises(SmallClassesError) as one:
        TextTable(table, ways=2, shots=1, queries=5)
    assert one.value.shots == 1
    assert str(one.value).endswith("; add texts, lower queries, or drop them "
                                   "(drop_small=True, --drop-small)"), one.value
    with pytest.raises(SmallClassesError) as two:
        TextTable(table, ways=2, shots=2, queries=5)
    assert "lower shots or queries" in str(two.value), two.value

"""Error messages on the user's own data name a fix that the caller can apply: the option of
the command that failed, the key of a config, or the argument of the function."""

import pickle
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from metaloop import build, config
from metaloop.cli.main import main
from metaloop.runs import load_run
from metaloop.tasks import Episodes
from metaloop.tasks.episodes import SmallClassesError
from metaloop.tasks.text_table import TextTable, read_text_table

sys.path.insert(0, str(Path(__file__).resolve().parent))
from conftest import (  # noqa: E402
    folder_config,
    tensor_config,
    train_run,
    write_image_folder,
    write_tensor_file,
)

# -- a run whose family.root is relative ---------------------------------------------------


def _relative_tensor_run(tmp_path, monkeypatch):
    """A run trained in ``tmp_path / "here"`` on the tensor file ``x.npz`` there, named by a
    relative family.root; the working folder is then ``tmp_path / "elsewhere"``."""
    here, elsewhere = tmp_path / "here", tmp_path / "elsewhere"
    here.mkdir()
    elsewhere.mkdir()
    write_tensor_file(here / "x.npz")
    monkeypatch.chdir(here)
    run = train_run(here, tensor_config("x.npz"))
    monkeypatch.chdir(elsewhere)
    return run, here, elsewhere


def test_a_run_evaluated_from_another_folder_says_its_relative_root_is_read_from_there(
        tmp_path, monkeypatch, capsys):
    run, here, elsewhere = _relative_tensor_run(tmp_path, monkeypatch)
    capsys.readouterr()
    assert main(["eval", "--checkpoint", str(run), "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert "tensor file x.npz does not exist" in err, err
    assert (f"family.root = 'x.npz' is a relative path, read from the working folder "
            f"{elsewhere}, which has no 'x.npz'") in err, err
    assert "run the command from the folder the run was trained in" in err, err
    monkeypatch.chdir(here)                     # from where it was trained: it is evaluated
    assert main(["eval", "--checkpoint", str(run), "--no-progress"]) == 0


def test_a_missing_absolute_root_gets_no_note_on_the_working_folder(tmp_path):
    cfg = config.validate({"family": {"name": "tensors", "root": str(tmp_path / "gone.npz"),
                                      "ways": 2, "shots": 1, "queries": 1}})
    with pytest.raises(ValueError, match=r"gone\.npz does not exist$"):
        build.build_family(cfg["family"], split="train")


# -- classes too small for shots + queries -------------------------------------------------


def test_small_classes_advice_is_the_api_s_and_the_error_pickles():
    x = torch.randn(7, 3)
    y = torch.tensor([0, 0, 0, 0, 1, 1, 1])
    with pytest.raises(SmallClassesError) as e:
        Episodes(x, y, ways=2, shots=2, queries=2)
    text = str(e.value)
    assert text.endswith("; give fewer shots/queries, or leave them out: drop_small=True")
    assert "metaloop" not in text and "config" not in text, text
    again = pickle.loads(pickle.dumps(e.value))
    assert (str(again), again.problem, again.advice) == (text, e.value.problem, e.value.advice)


def _drop_examples(path, classes, keep: int) -> None:
    """Keep only ``keep`` examples of each class named in ``classes`` in the tensor file."""
    data = np.load(path)
    x, y = data["x"], data["y"]
    out = np.ones(len(y), bool)
    for c in classes:
        out[np.flatnonzero(y == int(c))[keep:]] = False
    np.savez(path, x=x[out], y=y[out])


def test_eval_of_a_run_whose_held_out_class_shrank_names_what_eval_can_change(
        tmp_path, capsys):
    d = tmp_path / "d"
    d.mkdir()
    data = write_tensor_file(d / "x.npz")
    run = train_run(d, tensor_config(data))
    held = load_run(run).config["family"]["test_classes"]
    _drop_examples(data, held[:1], keep=3)     # 2 shots + 3 queries need 5
    capsys.readouterr()
    assert main(["eval", "--checkpoint", str(run), "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert f"1 class(es) have fewer than shots + queries = 2 + 3 = 5 examples: '{held[0]}' (3)" \
        in err, err
    assert "restore those classes' examples (or, for the held-out tasks, lower --shots)" in err
    for unusable in ("drop_small=True", "--drop-small", "family.drop_small = true", "--queries"):
        assert unusable not in err, (unusable, err)


def test_train_names_the_config_key_that_drops_small_classes(tmp_path, capsys):
    d = tmp_path / "d"
    d.mkdir()
    data = write_tensor_file(d / "x.npz")
    _drop_examples(data, [str(k) for k in range(12)], keep=4)    # 2 shots + 3 queries: 5
    (d / "c.toml").write_text(tensor_config(data))
    capsys.readouterr()
    assert main(["train", "--config", str(d / "c.toml"), "--out", str(d / "run"),
                 "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert "have fewer than shots + queries" in err, err
    assert err.rstrip().endswith("lower the shots or queries, or leave those classes out: "
                                 "family.drop_small = true"), err
    assert "--drop-small" not in err and "drop_small=True" not in err, err
    assert not (d / "run").exists()


def test_predict_with_a_run_whose_training_data_shrank_does_not_read_that_data(tmp_path,
                                                                               capsys):
    """A run of feature vectors takes its network's input size from its checkpoint, so
    predicting on given files needs none of its training data: classes that shrank since
    give no error (eval, which draws tasks from that data, still names them)."""
    d = tmp_path / "d"
    d.mkdir()
    data = write_tensor_file(d / "x.npz")
    run = train_run(d, tensor_config(data))
    _drop_examples(data, load_run(run).config["family"]["train_classes"][:1], keep=3)
    x = np.load(data)["x"]
    np.savez(d / "s.npz", x=x[:4], y=np.array([0, 0, 1, 1]))
    np.savez(d / "q.npz", x=x[:2])
    capsys.readouterr()
    assert main(["predict", "--checkpoint", str(run), "--support", str(d / "s.npz"),
                 "--query", str(d / "q.npz")]) == 0
    assert "fewer than shots + queries" not in capsys.readouterr().err


def test_adapt_names_its_own_flags_for_small_classes(tmp_path, trained_run, capsys):
    model = trained_run(folder_config(write_image_folder(tmp_path / "train", classes=4,
                                                         per_class=4, mixed=False)))
    data = write_image_folder(tmp_path / "mine", classes=3, per_class=3, mixed=False)
    capsys.readouterr()
    assert main(["adapt", "--family", "folder", "--data", str(data), "--model", str(model),
                 "--ways", "2", "--shots", "2", "--queries", "5", "--tasks", "2",
                 "--approaches", "probe-ridge", "--out", str(tmp_path / "out"),
                 "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert "3 class(es) have fewer than shots + queries = 2 + 5 = 7 examples" in err, err
    assert err.rstrip().endswith("give fewer --shots or --queries, or leave them out: "
                                 "--drop-small"), err
    assert "drop_small" not in err, err
    assert not (tmp_path / "out").exists()


# -- Episodes.from_dataset: image_size and channels are for PIL images ----------------------


def test_from_dataset_refuses_image_size_and_channels_for_tensor_items():
    items = [(torch.rand(1, 10, 10), k % 2) for k in range(6)]
    with pytest.raises(ValueError, match=r"from_dataset: image_size=8 applies to PIL images "
                                         r"only, but item 0's example is not one \(Tensor of "
                                         r"shape \[1, 10, 10\]\).*leave image_size out"):
        Episodes.from_dataset(items, ways=2, shots=1, queries=1, image_size=8)
    with pytest.raises(ValueError, match=r"channels=3 applies to PIL images only.*ndarray"):
        Episodes.from_dataset([(np.zeros(4, np.float32), 0)], channels=3)
    fam = Episodes.from_dataset(items, ways=2, shots=1, queries=1)          # as they are
    assert fam.input_shape == (1, 10, 10)


def test_from_dataset_tensors_of_other_shapes_get_a_hint_that_works_for_tensors():
    items = [(torch.rand(1, 10 + k % 2 * 2, 10), k % 2) for k in range(4)]
    with pytest.raises(ValueError, match=r"item 0 has shape \[1, 10, 10\] but item 1 has "
                                         r"\[1, 12, 10\]; bring the tensors or arrays to one "
                                         r"shape first") as e:
        Episodes.from_dataset(items, ways=2, shots=1, queries=1)
    assert "image_size=..." not in str(e.value)
    pil = [(Image.new("L", (10 + k % 2 * 2, 10)), k % 2) for k in range(4)]
    with pytest.raises(ValueError, match=r"give image_size=\.\.\. to resize every PIL image"):
        Episodes.from_dataset(pil, ways=2, shots=1, queries=1)
    fam = Episodes.from_dataset(pil, ways=2, shots=1, queries=1, image_size=8)   # the fix
    assert fam.input_shape == (1, 8, 8)


# -- text tables ---------------------------------------------------------------------------


def test_a_semicolon_table_with_commas_in_its_texts_is_told_the_delimiter(tmp_path):
    p = tmp_path / "t.csv"
    p.write_text("text;label\n" + "".join(f"one, two {i};c{i % 2}\n" for i in range(6)))
    with pytest.raises(ValueError, match=r"6 row\(s\) have more fields than the header's 1 "
                                         r".*the header splits into the columns \['text', "
                                         r"'label'\] on ';', not on ',': give delimiter=';' "
                                         r"\(--delimiter ';' in metaloop adapt") as e:
        read_text_table(p)
    assert "quote a text" not in str(e.value)
    assert read_text_table(p, delimiter=";")[1] == ["c0", "c1"] * 3        # the fix works
    tabs = tmp_path / "tabs.csv"
    tabs.write_text("text\tlabel\n" + "".join(f"one, two {i}\tc{i % 2}\n" for i in range(4)))
    with pytest.raises(ValueError, match=r"on '\\t', not on ',': give delimiter='\\t'"):
        read_text_table(tabs)


def test_a_header_that_splits_into_other_columns_keeps_the_quoting_advice(tmp_path):
    p = tmp_path / "t.csv"
    p.write_text("body;topic\n" + "".join(f"one, two {i};c{i % 2}\n" for i in range(4)))
    with pytest.raises(ValueError, match=r"quote a text that holds the delimiter ','") as e:
        read_text_table(p)                       # 'text' and 'label' are not its columns
    assert "give delimiter" not in str(e.value)


def test_a_split_with_too_few_classes_names_the_split_fractions(tmp_path):
    p = tmp_path / "t.csv"
    p.write_text("text,label\n" + "".join(f"text {i},c{i % 6}\n" for i in range(36)))
    with pytest.raises(ValueError, match=r"\(split 'test'\) has 1 class\(es\) with at least 3 "
                                         r"texts, fewer than ways = 3: \['c\d'\]; lower ways, "
                                         r"give split 'test' more classes \(it has 1 of the "
                                         r"table's 6 by split fractions \[0\.7, 0\.1, 0\.2\] "
                                         r"\(train, val, test\) and split_seed 0: fractions=, "
                                         r"--split-fractions in metaloop adapt, "
                                         r"family\.split_fractions in a config\), or bring "
                                         r"more classes"):
        TextTable(p, ways=3, shots=1, queries=2, split="test")
    fam = TextTable(p, ways=3, shots=1, queries=2, split="test", fractions=(0.5, 0.0, 0.5))
    assert fam.num_classes == 3
    with pytest.raises(ValueError, match=r"fewer than ways = 7: .*; lower ways, or bring more "
                                         r"classes$"):
        TextTable(p, ways=7, shots=1, queries=2)         # every class: no split to widen


def test_a_small_text_class_is_a_small_classes_error_with_the_api_advice(tmp_path):
    p = tmp_path / "t.csv"
    p.write_text("text,label\n" + "".join(f"text {i},c{i % 3}\n" for i in range(7)))
    with pytest.raises(SmallClassesError, match=r"'c1' \(2\), 'c2' \(2\); add texts, lower "
                                                r"queries, or drop them"):
        TextTable(p, ways=2, shots=1, queries=2)

"""``train.init = OLD`` on data that changed since OLD was trained: the class split is drawn
again from the data as it is now (one class more or less gives every split other classes),
so some of the new run's held-out classes may be classes OLD meta-trained on. ``metaloop
train`` warns before training, naming how many and which, and how to keep OLD's split;
``metaloop eval`` on the new run warns the same. Unchanged data (the same split) warns
nothing."""

import sys
from pathlib import Path

import numpy as np
import pytest

import metaloop as ml
from metaloop.cli.main import main

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from conftest import tensor_config, train_run, write_tensor_file  # noqa: E402


def _old_run(tmp_path: Path) -> tuple[Path, Path]:
    (tmp_path / "data").mkdir()
    root = write_tensor_file(tmp_path / "data" / "feats.npz")
    return train_run(tmp_path / "old", tensor_config(root)), root


def _init_config(root: Path, old: Path) -> str:
    return tensor_config(root).replace("[train]\n", f'[train]\ninit = "{old}"\n')


def _leaked(old: Path, new: Path) -> list[str]:
    seen = set(ml.load_run(old).classes["train"])
    return [c for c in ml.load_run(new).classes["test"] if c in seen]


def test_init_from_a_run_on_changed_data_warns_in_train_and_eval(tmp_path):
    old, root = _old_run(tmp_path)
    arrays = dict(np.load(root))
    keep = arrays["y"] != 11                                   # one class removed
    np.savez(root, x=arrays["x"][keep], y=arrays["y"][keep])
    # (the CLI prints it on stderr as "metaloop train: warning: ...")
    with pytest.warns(UserWarning, match="train.init") as told:
        new = train_run(tmp_path / "new", _init_config(root, old))
    leaked = _leaked(old, new)
    assert leaked                      # the premise: the split was drawn again
    (text,) = [str(w.message) for w in told]
    assert {w.category.__name__ for w in told} == {"InitSplitWarning"}
    assert text.startswith(f"train.init = {str(old)!r} meta-trained on {len(leaked)} of the "
                           f"classes this run holds out (test: {len(leaked)} of "), text
    assert all(repr(c) in text for c in leaked[:4])
    assert "family.train_classes, val_classes and test_classes" in text
    # evaluating the new run says it again
    with pytest.warns(UserWarning, match="train.init") as told:
        assert main(["eval", "--checkpoint", str(new), "--out", str(tmp_path / "ev"),
                     "--no-progress"]) == 0
    assert [str(w.message) for w in told] == [text]

def test_the_old_runs_split_copied_into_the_config_warns_nothing(tmp_path, capsys):
    old, root = _old_run(tmp_path)
    classes = ml.load_run(old).classes
    lists = "".join(f"{s}_classes = {list(classes[s])!r}\n".replace("'", '"')
                    for s in ("train", "test"))
    config = _init_config(root, old).replace("split_fractions = [0.5, 0.0, 0.5]\n", lists)
    capsys.readouterr()
    new = train_run(tmp_path / "new", config)
    assert "train.init" not in capsys.readouterr().err
    assert not _leaked(old, new)
    assert main(["eval", "--checkpoint", str(new), "--out", str(tmp_path / "ev"),
                 "--no-progress"]) == 0
    assert "train.init" not in capsys.readouterr().err


def test_unchanged_data_warns_nothing(tmp_path, capsys):
    old, root = _old_run(tmp_path)
    capsys.readouterr()
    train_run(tmp_path / "new", _init_config(root, old))
    assert "warning" not in capsys.readouterr().err


def test_init_from_a_run_on_other_data_with_the_same_class_names_warns_nothing(tmp_path):
    """Another data set whose classes carry the same names (0 .. 11) is not the old run's
    data: its held-out classes are new to the weights, whatever their names."""
    import warnings

    old, root = _old_run(tmp_path)
    (tmp_path / "other").mkdir()
    arrays = dict(np.load(root))
    keep = arrays["y"] != 11                       # a split drawn again, on another file
    other = tmp_path / "other" / "feats.npz"
    np.savez(other, x=arrays["x"][keep] + 1.0, y=arrays["y"][keep])
    with warnings.catch_warnings():
        warnings.simplefilter("error", UserWarning)
        train_run(tmp_path / "new", _init_config(other, old))

"""``train.init`` from a run meta-trained on a built-in family's split that this run holds
out (Omniglot's Vinyals / Lake splits, Fashion-MNIST's labels): warned as for a user's own
data (``InitSplitWarning``), at training and at evaluation; not for splits apart."""

from __future__ import annotations

import json
import warnings
from types import SimpleNamespace

import pytest

from metaloop import config
from metaloop.recipes import evaluation
from metaloop.recipes.training import InitSplitWarning, init_split_leak


def _init_run(tmp_path, family: str, split: str):
    """A ``ckpt-*`` directory whose ``state.json`` stores a run's ``[family]``."""
    ckpt = tmp_path / f"init_{family}_{split}" / "ckpt-00000010"
    ckpt.mkdir(parents=True)
    cfg = config.validate({"family": {"name": family, "split": split}})
    (ckpt / "state.json").write_text(json.dumps({"config": cfg}))
    return ckpt


def _cfg(family: str, split: str, held_out: str, init) -> dict:
    return config.validate({"family": {"name": family, "split": split},
                            "eval": {"split": held_out}, "train": {"init": str(init)}})


@pytest.mark.parametrize("family, theirs, ours, held_out, warned", [
    ("omniglot", "test", "train", "test", True),            # the tester's case
    ("omniglot", "trainval", "background", "evaluation", True),   # Vinyals' train in it
    ("omniglot", "evaluation", "train", "test", True),     # Lake's against Vinyals'
    ("omniglot", "background", "train", "test", False),    # background: no test characters
    ("omniglot", "train", "train", "test", False),
    ("fashion_mnist", "val", "train", "test", True),       # labels 5-9 both
    ("fashion_mnist", "train", "train", "test", False),
])
def test_builtin_splits(tmp_path, family, theirs, ours, held_out, warned):
    cfg = _cfg(family, ours, held_out, _init_run(tmp_path, family, theirs))
    text = init_split_leak(cfg)
    assert (text is not None) == warned, text
    if warned:
        assert text.startswith("train.init = ") and f"family.split = {theirs!r}" in text
        assert f"({held_out!r})" in text and "classes its weights have seen" in text


def test_another_family_or_its_own_shared_split_is_not_this_warning(tmp_path):
    init = _init_run(tmp_path, "fashion_mnist", "test")
    assert init_split_leak(_cfg("omniglot", "train", "test", init)) is None
    init = _init_run(tmp_path, "omniglot", "test")
    # this run trains on test itself: warn_shared_split says so, not this warning
    assert init_split_leak(_cfg("omniglot", "test", "test", init)) is None
    assert init_split_leak(_cfg("omniglot", "train", "test", tmp_path / "nothing")) is None


@pytest.mark.parametrize("theirs, ours, held_out, apart", [
    # the challenge configs' case: train on background_train, validate on background_val,
    # from a run meta-trained on all of background (a split that is no USER_SPLITS name)
    ("background", "background_train", "background_val", "evaluation"),
    ("test", "train", "test", "val"),
])
def test_evaluation_warns_for_a_builtin_split(tmp_path, theirs, ours, held_out, apart):
    init = _init_run(tmp_path, "omniglot", theirs)
    trained = _cfg("omniglot", ours, held_out, init)
    run = SimpleNamespace(config=trained, data=None, path=tmp_path / "run")
    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always")
        out = evaluation.warn_init_split(run, trained)
    assert len(out) == 1 and [w.category for w in seen] == [InitSplitWarning], out
    assert f"family.split = {theirs!r}" in out[0] and f"({held_out!r})" in out[0]
    other = {**trained, "eval": {**trained["eval"], "split": apart}}
    assert evaluation.warn_init_split(run, other) == []

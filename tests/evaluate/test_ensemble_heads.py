"""``metaloop eval`` of an ensemble whose members differ from the first run: a learned head of
another size is refused before any output, naming the run, instead of failing inside the
evaluation; a member trained on a Vinyals split is warned about as the first run would be."""

import sys
from pathlib import Path

import pytest

from metaloop.cli.main import main
from metaloop.config import HEAD_BASED, SharedSplitWarning
from metaloop.recipes.evaluation import eval_config, load_ensemble

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from conftest import sgd_keys  # noqa: E402


def _train(root, d, method, ways, split="train", seed=0):
    (d / f"{method}{ways}{split}.toml").write_text(
        f'[family]\nname = "omniglot"\nroot = "{root}"\nways = {ways}\nshots = 1\n'
        f'split = "{split}"\n'
        f'queries = 1\n[model]\nname = "conv4"\npool = "stride"\nchannels = 8\n'
        f'[method]\nname = "{method}"\n{sgd_keys(method)}'
        f'[train]\niterations = 1\nmeta_batch = 1\ncheckpoint_every = 1\n'
        f'[eval]\ntasks = 2\nsteps = [{0 if method in HEAD_BASED else 1}]\nqueries = 1\n')
    out = d / f"{method}{ways}{split}{seed}"
    assert main(["train", "--config", str(d / f"{method}{ways}{split}.toml"), "--out", str(out),
                 "--seed", str(seed), "--no-progress"]) == 0
    return out


@pytest.fixture(scope="module")
def runs(omniglot_root, tmp_path_factory):
    d = tmp_path_factory.mktemp("heads")
    return {name: _train(omniglot_root, d, *how)
            for name, how in {"maml5": ("maml", 5), "maml3": ("maml", 3),
                              "proto5": ("protonet", 5),
                              "proto5_s1": ("protonet", 5, "train", 1),
                              "proto5_bg": ("protonet", 5, "background")}.items()}


@pytest.mark.parametrize("members, named, outputs, ways", [
    (("maml5", "maml3"), "maml3", 3, 5),       # the second member's head is too small
    (("maml3", "maml5"), "maml5", 5, 3),       # ... too large (it used to crash inside)
    (("proto5", "maml3"), "maml3", 3, 5),      # a prototype head first takes any ways
])
def test_a_member_with_another_learned_head_is_named(runs, tmp_path, capsys, members, named,
                                                     outputs, ways):
    capsys.readouterr()
    assert main(["eval", "--checkpoint", *(str(runs[m]) for m in members), "--out",
                 str(tmp_path / "e"), "--record", str(tmp_path / "r" / "x.json"),
                 "--no-progress"]) == 2
    out, err = capsys.readouterr()
    assert out == "" and not (tmp_path / "e").exists() and not (tmp_path / "r").exists()
    assert (f"ensemble: {runs[named]} has a learned head of {outputs} outputs (maml trained "
            f"{outputs}-way), but the held-out tasks are {ways}-way") in err
    with pytest.raises(ValueError, match=f"{runs[named]} has a learned head"):
        eval_config(load_ensemble([runs[m] for m in members]))


def test_members_whose_heads_fit_the_tasks_are_evaluated(runs, capsys):
    assert main(["eval", "--checkpoint", str(runs["maml5"]), str(runs["proto5"]),
                 "--no-progress"]) == 0
    assert "ensemble of 2 runs: class probabilities averaged" in capsys.readouterr().out
    # protonet's prototypes take any number of ways; --ways sets them for every member
    assert main(["eval", "--checkpoint", str(runs["proto5"]), str(runs["proto5_s1"]),
                 "--ways", "3", "--no-progress"]) == 0


def test_an_ensemble_of_several_methods_is_named_by_them(runs, tmp_path, capsys):
    """An ensemble's table row and record row said only the first member's method ('maml'),
    and its results.json did not list the members."""
    import json

    members = [str(runs["maml5"]), str(runs["proto5"])]
    rec, out = tmp_path / "r" / "e.json", tmp_path / "e"
    capsys.readouterr()
    assert main(["eval", "--checkpoint", *members, "--out", str(out), "--record", str(rec),
                 "--no-progress"]) == 0
    printed = capsys.readouterr().out
    label = "ensemble of 2 runs (maml, protonet)"
    assert f"\n{label}  " in printed
    record = json.loads(rec.read_text())
    assert record["row"] == f"{label}, 5-way 1-shot"
    assert record["members"] == [{"checkpoint": members[0], "method": "maml"},
                                 {"checkpoint": members[1], "method": "protonet"}]
    res = json.loads((out / "results.json").read_text())
    assert list(res["methods"]) == [label]
    assert res["ensemble"] == {"members": record["members"], "combine": "probabilities"}
    # an ensemble of one method: its name, and how many runs
    assert main(["eval", "--checkpoint", str(runs["proto5"]), str(runs["proto5_s1"]),
                 "--no-progress"]) == 0
    assert "\nprotonet, ensemble of 2 runs  " in capsys.readouterr().out


def test_every_member_trained_on_a_vinyals_split_is_warned_about(runs, capsys):
    """Vinyals' train split holds characters of the evaluation alphabets: the challenge's
    error rate of any member trained on it is warned about, naming that member (the shared
    split warning; a note said so for Vinyals' val too, which holds none)."""
    flags = ["--within-alphabet", "--split", "evaluation", "--tasks", "2", "--no-progress"]
    assert main(["eval", "--checkpoint", str(runs["proto5_bg"]), *flags]) == 0
    with pytest.warns(SharedSplitWarning) as got:
        assert main(["eval", "--checkpoint", str(runs["proto5_bg"]), str(runs["proto5"]),
                     *flags]) == 0
    text = " ".join(str(w.message) for w in got)
    assert f"{runs['proto5']}: eval.split = 'evaluation' shares classes with family.split = " \
        f"'train'" in text and str(runs["proto5_bg"]) not in text

"""``metaloop compare`` on your own data stores one class split in every method's run, so a
resumed comparison (and ``metaloop eval --checkpoint`` of one of its runs) keeps the classes
it trained on and held out, whatever was added to the folder since; a comparison written
without the split is refused on resume, naming why and what to do."""

import json
import shutil
import sys
import warnings
from pathlib import Path

import pytest

from metaloop import build, config
from metaloop.cli.main import main
from metaloop.evaluate import evaluate
from metaloop.recipes import compare
from metaloop.runs import load_run
from metaloop.train.checkpoint import latest_checkpoint

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from conftest import edit_state, write_image_folder  # noqa: E402

METHODS = ["scratch", "maml", "r2d2"]


def _compare(tmp_path, root, *flags: str) -> int:
    cfg = tmp_path / "c.toml"
    cfg.write_text(
        f'[family]\nname = "folder"\nroot = "{root}"\ninvert = "auto"\nways = 3\nshots = 1\n'
        'queries = 2\nsplit_fractions = [0.5, 0.0, 0.5]\n[model]\nchannels = 4\n'
        '[train]\niterations = 2\nmeta_batch = 2\n[eval]\ntasks = 4\nsteps = [0, 1]\n')
    return main(["--threads", "1", "compare", "--config", str(cfg), "--methods",
                 ",".join(METHODS), "--out", str(tmp_path / "out"), "--no-progress", *flags])


def _split(run_dir: Path) -> dict:
    state = json.loads((latest_checkpoint(run_dir) / "state.json").read_text())
    return {k: state["config"]["family"][f"{k}_classes"] for k in ("train", "val", "test")}


def _add_class(root: Path, tmp_path: Path) -> None:
    """A new class folder (a copy of a generated one, under a name sorted first)."""
    extra = write_image_folder(tmp_path / "more", classes=1, per_class=6, mixed=False, seed=7)
    shutil.copytree(extra / "class_00", root / "aaa_new")


def test_every_run_stores_one_split_and_resume_keeps_it(tmp_path, capsys):
    root = write_image_folder(tmp_path / "images", classes=12, per_class=6, mixed=False)
    assert _compare(tmp_path, root) == 0
    runs = tmp_path / "out" / "runs"
    splits = {m: _split(runs / m) for m in METHODS}
    first = splits["maml"]
    assert len(first["train"]) == 6 and len(first["test"]) == 6 and first["val"] == []
    assert not set(first["train"]) & set(first["test"])
    assert all(s == first for s in splits.values())            # one split for all methods
    res = json.loads((tmp_path / "out" / "results.json").read_text())
    assert res["config"]["family"]["test_classes"] == first["test"]

    _add_class(root, tmp_path)
    capsys.readouterr()
    assert _compare(tmp_path, root, "--resume") == 0, capsys.readouterr().err
    assert {m: _split(runs / m) for m in METHODS} == splits     # held-out classes unchanged
    again = json.loads((tmp_path / "out" / "results.json").read_text())
    assert again["methods"] == res["methods"]                 # the same comparison
    # a run of the comparison evaluates on the classes it held out, not a new split
    assert main(["eval", "--checkpoint", str(runs / "maml"), "--no-progress",
                 "--out", str(tmp_path / "eval")]) == 0
    ev = json.loads((tmp_path / "eval" / "results.json").read_text())
    assert ev["config"]["family"]["test_classes"] == first["test"]


def test_a_comparison_without_a_stored_split_is_refused_on_resume(tmp_path, capsys):
    """Runs written before comparisons stored the split (empty class lists)."""
    root = write_image_folder(tmp_path / "images", classes=12, per_class=6, mixed=False)
    assert _compare(tmp_path, root) == 0
    for m in METHODS:                                   # as a comparison wrote them before
        sfile = latest_checkpoint(tmp_path / "out" / "runs" / m) / "state.json"
        edit_state(sfile, lambda s: s["config"]["family"].update(
            {f"{k}_classes": [] for k in ("train", "val", "test")}), as_older=True)
    _add_class(root, tmp_path)
    capsys.readouterr()
    assert _compare(tmp_path, root, "--resume") == 2
    err = capsys.readouterr().err
    assert "store no class split" in err and str(root) in err
    assert "without --resume, into a new --out" in err


def test_an_out_inside_the_image_folder_is_refused(tmp_path, capsys):
    """An --out inside family.root put the comparison's plots in a new "class" of the user's
    folder (named after the out folder): the next comparison on it stopped at that class of
    one image. Refused before anything is written; the folder is left as it was."""
    root = write_image_folder(tmp_path / "images", classes=12, per_class=6, mixed=False)
    before = sorted(p.relative_to(root) for p in root.rglob("*"))
    cfg = tmp_path / "c.toml"
    cfg.write_text(f'[family]\nname = "folder"\nroot = "{root}"\nways = 3\nshots = 1\n'
                   'queries = 2\nsplit_fractions = [0.5, 0.0, 0.5]\n[model]\nchannels = 4\n'
                   '[eval]\ntasks = 2\nsteps = [0, 1]\n')
    for out in (root / "compare", root):
        assert main(["--threads", "1", "compare", "--config", str(cfg), "--methods", "r2d2",
                     "--iterations", "1", "--out", str(out), "--no-progress"]) == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and f"--out {out} is inside the image folder" in err
        assert sorted(p.relative_to(root) for p in root.rglob("*")) == before


def test_with_split_leaves_builtin_families_alone():
    cfg = compare.load_config("sinusoid")
    assert compare.with_split(cfg) is cfg


def test_the_configs_test_time_shifts_are_applied_and_scoring_is_warned_about(tmp_path):
    """compare scored every method without the config's eval.support_shift / query_shift
    (and said nothing of eval.scoring or eval.refine, which it does not apply)."""
    root = write_image_folder(tmp_path / "images", classes=8, per_class=6, mixed=False)
    cfg_file = tmp_path / "c.toml"
    cfg_file.write_text(
        f'[family]\nname = "folder"\nroot = "{root}"\ninvert = "auto"\nways = 2\nshots = 1\n'
        'queries = 2\nsplit_fractions = [0.5, 0.0, 0.5]\n[model]\nchannels = 4\n'
        '[train]\niterations = 2\nmeta_batch = 2\n[eval]\ntasks = 3\nsteps = [0]\n'
        'support_shift = 1\nquery_shift = 1\nscoring = "transductive"\n')
    with pytest.warns(config.UnreadKeyWarning) as got:
        assert main(["--threads", "1", "compare", "--config", str(cfg_file), "--methods",
                     "r2d2", "--out", str(tmp_path / "out"), "--no-progress"]) == 0
    texts = [str(w.message) for w in got if issubclass(w.category, config.UnreadKeyWarning)]
    assert len(texts) == 1 and texts[0].startswith('config eval.scoring = "transductive"')
    assert "metaloop eval --scoring" in texts[0]
    res = json.loads((tmp_path / "out" / "results.json").read_text())
    # the same run evaluated by hand with and without the shifts: compare's number is the
    # shifted one
    cfg = compare.with_split(compare.load_config(None, cfg_file), tmp_path / "out", True)
    mcfg = compare.method_config(cfg, "r2d2")
    family = build.build_family(cfg["family"])
    heldout = build.eval_family(cfg, family)
    learner = load_run(tmp_path / "out" / "runs" / "r2d2").learner
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        shifted = evaluate(learner, heldout, tasks=3, steps=[0], seed=mcfg["eval"]["seed"],
                           support_shift=1, query_shift=1)
        plain = evaluate(learner, heldout, tasks=3, steps=[0], seed=mcfg["eval"]["seed"])
    got = res["methods"]["r2d2"]["loss"]["mean"][0]                  # query loss, step 0
    assert got == pytest.approx(shifted["loss"]["mean"][0], rel=1e-6)
    assert got != pytest.approx(plain["loss"]["mean"][0], rel=1e-3)


def test_shifts_of_examples_that_are_not_images_are_refused_before_training(tmp_path):
    cfg_file = tmp_path / "c.toml"
    cfg_file.write_text('[family]\nname = "sinusoid"\n[train]\niterations = 1\n'
                        '[eval]\nsupport_shift = 1\n')
    assert main(["--threads", "1", "compare", "--config", str(cfg_file), "--methods", "maml",
                 "--out", str(tmp_path / "out"), "--no-progress"]) == 2
    assert not (tmp_path / "out").exists()

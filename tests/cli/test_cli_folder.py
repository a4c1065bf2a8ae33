"""Your own data through the whole CLI: train, eval and predict on a generated image folder
(mixed formats, modes and sizes, one corrupt file) from the shipped example config; every
bad-input case exits 2 with a named error and writes nothing; tensor files."""

import json
import os
import re
import shutil
import sys
from pathlib import Path

import pytest
import torch

from metaloop import config as _config
from metaloop.cli.main import main

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from conftest import (  # noqa: E402
    REPO,
    tensor_config,
    train_run,
    write_image_folder,
    write_tensor_file,
)

EXAMPLE = REPO / "src" / "metaloop" / "configs" / "folder_example.toml"


def _config_file(tmp_path, root, **family) -> Path:
    """The shipped example config, shrunk to a few iterations and 8 filters, on ``root``;
    ``family`` keys replace the example's or are added to [family]."""
    lines = EXAMPLE.read_text().replace('root = "data/my_images"', f'root = "{root}"'
                                        ).replace("channels = 64", "channels = 8").splitlines()
    values = {"iterations": 4, "meta_batch": 2, "checkpoint_every": 4, "tasks": 20,
              **{k: json.dumps(v) for k, v in family.items()}}
    for key, value in values.items():
        at = [i for i, ln in enumerate(lines) if ln.startswith(f"{key} =")]
        if at:
            lines[at[0]] = f"{key} = {value}"
        else:
            lines.insert(lines.index("[family]") + 1, f"{key} = {value}")
    path = tmp_path / "cfg.toml"
    path.write_text("\n".join(lines) + "\n")
    return path


def test_example_config_is_valid():
    cfg = _config.load(EXAMPLE)
    assert cfg["family"]["name"] == "folder"
    _config.check_combinations(cfg)
    assert _config.unread_keys(cfg, _config.written_keys(EXAMPLE)) == []


def test_example_config_is_printed_and_runs_on_a_folder(tmp_path, capsys):
    """``metaloop train --example-config`` prints the shipped file (from the package, so an
    installed copy has it too); with its family.root set, ``--print-config`` accepts it."""
    capsys.readouterr()
    assert main(["train", "--example-config"]) == 0
    printed = capsys.readouterr()
    assert printed.out == EXAMPLE.read_text() and printed.err == ""
    assert "metaloop train --example-config > my_folder.toml" in printed.out
    root = write_image_folder(tmp_path / "images", classes=10, per_class=3, mixed=False)
    mine = tmp_path / "my_folder.toml"
    mine.write_text(printed.out.replace('root = "data/my_images"', f'root = "{root}"'))
    assert main(["train", "--print-config", "--config", str(mine)]) == 0
    cfg = _config.tomllib.loads(capsys.readouterr().out)
    assert (cfg["family"]["name"], cfg["family"]["root"]) == ("folder", str(root))


@pytest.mark.parametrize("flags", [["--config", "c.toml"], ["--out", "run"], ["--seed", "3"],
                                   ["--print-config"], ["--resume", "run"],
                                   ["--out", "run", "--no-progress"]])
def test_example_config_refuses_the_flags_it_would_ignore(flags, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    capsys.readouterr()
    assert main(["train", "--example-config", *flags]) == 2
    captured = capsys.readouterr()
    named = [f for f in flags if f.startswith("--")]
    assert captured.out == "" and list(tmp_path.iterdir()) == []
    assert captured.err.startswith("metaloop train: error: --example-config prints the shipped "
                                   f"example config and exits without training, so "
                                   f"{', '.join(named)} would change nothing"), captured.err


@pytest.fixture(scope="module")
def folder_run(tmp_path_factory):
    d = tmp_path_factory.mktemp("folder")
    root = write_image_folder(d / "images", classes=30, per_class=8, corrupt=True)
    cfg = _config_file(d, root, skip_corrupt=True)
    assert main(["train", "--config", str(cfg), "--out", str(d / "run"), "--no-progress"]) == 0
    return d, root


def test_train_saves_the_split_and_eval_uses_it(folder_run, capsys):
    d, root = folder_run
    assert main(["eval", "--checkpoint", str(d / "run"), "--no-progress",
                 "--out", str(d / "eval")]) == 0
    res = json.loads((d / "eval" / "results.json").read_text())
    fam = res["config"]["family"]
    assert len(fam["train_classes"]) == 21 and len(fam["test_classes"]) == 6
    assert not set(fam["train_classes"]) & set(fam["test_classes"])
    acc = res["methods"]["r2d2"]["accuracy"]["mean"][0]
    assert 0.2 <= acc <= 1.0
    # the resolved split is stored with the run, not recomputed
    state = json.loads(next((d / "run").glob("ckpt-*/state.json")).read_text())
    assert state["config"]["family"]["test_classes"] == fam["test_classes"]


def test_predict_applies_the_training_transform(folder_run, tmp_path, capsys, monkeypatch):
    """The support and query images predict feeds the network are exactly the training
    folder's cached images of the same files (same size, channels, inversion, uint8 steps)."""
    import metaloop.recipes.predict as predict_mod
    from metaloop.data.folder import load_folder

    d, root = folder_run
    test_classes = json.loads(next((d / "run").glob("ckpt-*/state.json")).read_text()
                              )["config"]["family"]["test_classes"][:5]
    support, truth = [], {}
    for c in test_classes:
        files = sorted(p for p in (root / c).iterdir() if p.suffix != ".txt"
                       and p.name != "broken.png" and not p.name.startswith("."))
        (tmp_path / "s" / c).mkdir(parents=True)
        shutil.copy(files[0], tmp_path / "s" / c / files[0].name)
        support.append(f"{c}/{files[0].name}")
        (tmp_path / "q").mkdir(exist_ok=True)
        for f in files[1:3]:
            shutil.copy(f, tmp_path / "q" / f"{c}_{f.name}")
            truth[f"{c}_{f.name}"] = c
    seen = {}
    real = predict_mod.predict_folders

    def spy(learner, sx, sy, qx, *args):
        seen.update(sx=sx, qx=qx)
        return real(learner, sx, sy, qx, *args)

    monkeypatch.setattr(predict_mod, "predict_folders", spy)
    capsys.readouterr()
    assert main(["predict", "--checkpoint", str(d / "run"), "--support", str(tmp_path / "s"),
                 "--query", str(tmp_path / "q"), "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert sorted(r["file"] for r in rows) == sorted(truth)
    assert all(r["class"] in test_classes for r in rows)
    cache = load_folder(root, invert="auto", skip_corrupt=True)
    want = torch.stack([cache.images[cache.files.index(f)] for f in support]).float() / 255
    torch.testing.assert_close(seen["sx"], want, atol=1e-6, rtol=0)


def test_tensor_file_family(tmp_path):
    run = train_run(tmp_path, tensor_config(write_tensor_file(tmp_path / "feats.npz"),
                                            'name = "maml"\ninner_lr = 0.1\n', iterations=3,
                                            eval_lines="tasks = 10\nsteps = [0, 1]\n"))
    assert main(["eval", "--checkpoint", str(run), "--no-progress",
                 "--out", str(tmp_path / "e")]) == 0
    res = json.loads((tmp_path / "e" / "results.json").read_text())
    assert len(res["config"]["family"]["test_classes"]) == 6


def _small_class(root):
    for f in sorted((root / "class_03").iterdir())[2:]:
        f.unlink()


def _few_classes(root):
    for k in range(2, 30):
        shutil.rmtree(root / f"class_{k:02d}")


@pytest.mark.parametrize("damage, family, match", [
    (lambda r: shutil.rmtree(r), {}, "does not exist"),
    (lambda r: [shutil.rmtree(p) for p in r.iterdir()], {}, "holds no images"),
    (_small_class, {}, r"class\(es\) have fewer than shots \+ queries .*'class_03' \(2\)"),
    (_few_classes, {"split_fractions": [1.0, 0.0, 0.0]}, "ways=5 exceeds the 2 classes"),
    (lambda r: (r / "class_01" / "bad.jpg").write_bytes(b"\xff\xd8junk"), {},
     r"cannot read image .*class_01/bad\.jpg.*; to leave unreadable files out instead, set "
     r"family\.skip_corrupt = true"),
    (lambda r: os.symlink("/nonexistent.png", r / "class_01" / "dangling.png"), {},
     r"class_01/dangling\.png is a link to /nonexistent\.png, which does not exist; remove "
     r"the link or restore its target; .*set family\.skip_corrupt = true"),
    (lambda r: (r.parent / "test.txt").write_text("class_00\nno_such_class\n"),
     {"split_files": ["TRAIN", "VAL", "TEST"]}, r"unknown class\(es\): \['no_such_class'\]"),
])
def test_bad_data_exits_2_naming_the_problem_and_writes_nothing(tmp_path, capsys, damage,
                                                                family, match):
    root = write_image_folder(tmp_path / "images", classes=30, per_class=8, mixed=False)
    for name in ("train", "val"):
        (tmp_path / f"{name}.txt").write_text("class_00\n")
    family = {k: [str(tmp_path / f"{s.lower()}.txt") for s in v] if k == "split_files" else v
              for k, v in family.items()}
    cfg = _config_file(tmp_path, root, **family)
    damage(root)
    capsys.readouterr()
    assert main(["train", "--config", str(cfg), "--out", str(tmp_path / "run"),
                 "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert "metaloop train: error:" in err
    assert re.search(match, err), err
    assert not (tmp_path / "run").exists()
    # the decoded cache is written whole or not at all (errors found after decoding, such as
    # small classes, leave a complete cache that the next run reuses)
    cache = root / ".metaloop-cache"
    assert not cache.exists() or len(list(cache.glob("*.json"))) == 1


def test_a_max_pool_conv4_on_images_below_16_pixels_exits_2(tmp_path, capsys):
    """model.pool = "max" with family.image_size 15 was a max_pool2d RuntimeError traceback
    (exit 1); now exit 2 naming the minimum, and nothing is written."""
    root = write_image_folder(tmp_path / "images", classes=12, per_class=6, mixed=False)
    cfg = _config_file(tmp_path, root, image_size=15, ways=2, queries=2)
    cfg.write_text(cfg.read_text().replace('pool = "stride"', 'pool = "max"'))
    capsys.readouterr()
    assert main(["train", "--config", str(cfg), "--out", str(tmp_path / "run"),
                 "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert "family.image_size = 15 is too small for model.pool = 'max'" in err, err
    assert "at least 16x16" in err
    assert "Traceback" not in err and not (tmp_path / "run").exists()


def test_skip_corrupt_leaves_out_a_link_to_nothing(tmp_path, capsys):
    """A dangling link stopped training with a raw '[Errno 2]' even with
    family.skip_corrupt = true; now it is skipped and counted like an unreadable image."""
    root = write_image_folder(tmp_path / "images", classes=12, per_class=6, mixed=False)
    os.symlink("/nonexistent.png", root / "class_01" / "dangling.png")
    cfg = _config_file(tmp_path, root, ways=2, queries=2, skip_corrupt=True)
    capsys.readouterr()
    assert main(["train", "--config", str(cfg), "--out", str(tmp_path / "run"),
                 "--no-progress"]) == 0
    assert "skipped 1 unreadable image(s), e.g. class_01/dangling.png" in \
        capsys.readouterr().err


def test_compare_runs_on_a_folder_config(tmp_path):
    root = write_image_folder(tmp_path / "images", classes=12, per_class=6, mixed=False)
    (tmp_path / "c.toml").write_text(
        f'[family]\nname = "folder"\nroot = "{root}"\ninvert = "auto"\nways = 3\nshots = 1\n'
        'queries = 2\nsplit_fractions = [0.5, 0.0, 0.5]\n[model]\nchannels = 4\n'
        '[train]\niterations = 2\nmeta_batch = 2\n[eval]\ntasks = 4\nsteps = [0, 1]\n')
    assert main(["--threads", "1", "compare", "--config", str(tmp_path / "c.toml"),
                 "--methods", "scratch,maml,r2d2", "--out", str(tmp_path / "out"),
                 "--no-progress"]) == 0
    res = json.loads((tmp_path / "out" / "results.json").read_text())
    assert res["family"] == "folder" and sorted(res["methods"]) == ["maml", "r2d2", "scratch"]
    assert res["config"]["family"]["root"] == str(root)


def _small_test_class(tmp_path, **family) -> Path:
    """A config on 20 classes split by files, whose test class class_03 has 2 images."""
    root = write_image_folder(tmp_path / "images", classes=20, per_class=8, mixed=False)
    splits = {"train": [0, 1, 2, 4, 5, 6, 7, 8, 9], "val": [15],
              "test": [3, 10, 11, 12, 13, 14]}
    for name, ks in splits.items():
        (tmp_path / f"{name}.txt").write_text("".join(f"class_{k:02d}\n" for k in ks))
    cfg = _config_file(tmp_path, root, **family, split_files=[
        str(tmp_path / f"{s}.txt") for s in ("train", "val", "test")])
    _small_class(root)
    return cfg


def test_a_small_class_in_the_held_out_split_is_named_before_training(tmp_path, capsys):
    """The held-out split is read when training starts, so a class too small for the
    evaluation's shots + queries is named then, not after the run when it is evaluated."""
    cfg = _small_test_class(tmp_path)
    capsys.readouterr()
    assert main(["train", "--config", str(cfg), "--out", str(tmp_path / "run"),
                 "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert re.search(r"class\(es\) have fewer than shots \+ queries .*'class_03' \(2\)", err), err
    assert not (tmp_path / "run").exists()


def test_eval_names_the_held_out_classes_drop_small_left_out(tmp_path, capsys):
    cfg = _small_test_class(tmp_path, drop_small=True)
    assert main(["train", "--config", str(cfg), "--out", str(tmp_path / "run"),
                 "--no-progress"]) == 0
    capsys.readouterr()
    assert main(["eval", "--checkpoint", str(tmp_path / "run"), "--no-progress"]) == 0
    err = capsys.readouterr().err
    assert "note: family.drop_small left out 1 held-out class(es) with fewer than " in err
    assert err.rstrip().endswith("examples: class_03"), err

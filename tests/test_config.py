"""``metaloop.config.load``: a config that ``extends`` another one."""

from __future__ import annotations

import copy
from pathlib import Path

import pytest

from metaloop import config
from metaloop.cli.main import main

CONFIGS = Path(__file__).resolve().parents[1] / "configs"

BASE = """\
[family]
name = "omniglot"
ways = 20
shots = 1
image_size = 28
[model]
name = "conv4"
channels = 64
[method]
name = "protonet"
[train]
iterations = 100
lr = 0.001
"""


def _by_hand(base: dict, **changes) -> dict:
    """The base's validated config with ``section.key`` values replaced one by one."""
    out = copy.deepcopy(base)
    for dotted, value in changes.items():
        section, key = dotted.split("__")
        out[section][key] = value
    return out


def test_a_child_replaces_the_keys_it_names_and_keeps_the_rest(tmp_path):
    (tmp_path / "base.toml").write_text(BASE)
    (tmp_path / "child.toml").write_text('extends = "base.toml"\n[family]\nways = 40\n'
                                         '[train]\nlr = 0.003\nseed = 7\n')
    base = config.load(tmp_path / "base.toml")
    want = _by_hand(base, family__ways=40, train__lr=0.003, train__seed=7)
    assert config.load(tmp_path / "child.toml") == want
    assert base["family"]["shots"] == 1 and want["family"]["shots"] == 1   # kept


def test_a_chain_of_extends_resolves_paths_relative_to_each_file(tmp_path):
    (tmp_path / "base").mkdir()
    (tmp_path / "base" / "root.toml").write_text(BASE)
    (tmp_path / "base" / "mid.toml").write_text('extends = "root.toml"\n[model]\nchannels = 32\n')
    (tmp_path / "leaf.toml").write_text('extends = "base/mid.toml"\n[model]\npool = "stride"\n'
                                        '[eval]\nways = 5\n')
    root = config.load(tmp_path / "base" / "root.toml")
    want = _by_hand(root, model__channels=32, model__pool="stride", eval__ways=5)
    assert config.load(tmp_path / "leaf.toml") == want


def test_a_deprecated_key_in_the_child_replaces_the_base_key_it_was_renamed_to(tmp_path):
    (tmp_path / "base.toml").write_text(BASE.replace('name = "protonet"',
                                                     'name = "maml"\nrecompute_inner_loop = false'))
    (tmp_path / "child.toml").write_text('extends = "base.toml"\n[method]\ncheckpoint = true\n')
    with pytest.warns(FutureWarning, match="method.checkpoint is deprecated"):
        cfg = config.load(tmp_path / "child.toml")
    assert cfg["method"]["recompute_inner_loop"] is True


def test_a_missing_base_is_named_with_the_file_that_extends_it(tmp_path):
    (tmp_path / "child.toml").write_text('extends = "nowhere.toml"\n')
    with pytest.raises(FileNotFoundError, match=r"child\.toml extends .*nowhere\.toml"):
        config.load(tmp_path / "child.toml")


def test_a_folder_in_place_of_a_config_file_is_named_as_a_folder(tmp_path):
    (tmp_path / "sub").mkdir()
    with pytest.raises(ValueError, match=r"sub is a folder, not a config file"):
        config.load(tmp_path / "sub")
    (tmp_path / "child.toml").write_text('extends = "sub"\n')
    with pytest.raises(ValueError, match=r"child\.toml extends .*sub, which is a folder"):
        config.read(tmp_path / "child.toml")


@pytest.mark.parametrize("value", ['""', "3", '["a.toml"]'])
def test_extends_that_is_not_a_path_string_is_named(tmp_path, value):
    (tmp_path / "child.toml").write_text(f"extends = {value}\n")
    with pytest.raises(ValueError, match="extends must name another config file"):
        config.load(tmp_path / "child.toml")


def test_a_cycle_of_extends_is_named(tmp_path):
    (tmp_path / "a.toml").write_text('extends = "b.toml"\n')
    (tmp_path / "b.toml").write_text('extends = "a.toml"\n')
    (tmp_path / "self.toml").write_text('extends = "./self.toml"\n')
    with pytest.raises(ValueError, match=r"makes a cycle: .*a\.toml -> .*b\.toml -> .*a\.toml"):
        config.load(tmp_path / "a.toml")
    with pytest.raises(ValueError, match="makes a cycle"):
        config.load(tmp_path / "self.toml")


def test_a_bad_key_in_the_child_is_named_as_in_any_config(tmp_path):
    (tmp_path / "base.toml").write_text(BASE)
    (tmp_path / "child.toml").write_text('extends = "base.toml"\n[train]\nlearning_rate = 1\n')
    with pytest.raises(ValueError, match=r"unknown key train\.learning_rate"):
        config.load(tmp_path / "child.toml")


def test_train_refuses_a_missing_base_with_exit_2_and_writes_nothing(tmp_path, capsys):
    (tmp_path / "child.toml").write_text('extends = "nowhere.toml"\n')
    out = tmp_path / "run"
    assert main(["train", "--config", str(tmp_path / "child.toml"), "--out", str(out)]) == 2
    assert "nowhere.toml" in capsys.readouterr().err
    assert not out.exists()


def test_shipped_configs_that_extend_another_name_a_shipped_config():
    """Every ``extends`` in ``configs/`` points at a file beside it, so a clone runs them."""
    children = 0
    for f in sorted(CONFIGS.glob("*.toml")):
        base = config.tomllib.loads(f.read_text()).get("extends")
        if base is not None:
            children += 1
            assert (CONFIGS / base).is_file(), f"{f.name} extends {base}, not in configs/"
    assert children > 0


def test_to_toml_reads_back_to_the_same_config_for_every_shipped_config(tmp_path):
    """``to_toml`` writes a resolved config whole (its extends chain applied), and
    ``load`` reads it back unchanged: the benchmarks hand configs to other processes so."""
    files = sorted(CONFIGS.glob("*.toml"))
    assert len(files) > 50
    for f in files:
        cfg = config.load(f)
        out = tmp_path / f.name
        out.write_text(config.to_toml(cfg))
        assert config.load(out) == cfg, f.name


def test_to_toml_refuses_a_non_finite_number(tmp_path):
    cfg = config.load(CONFIGS / "omniglot_challenge_pilot28_cpu.toml")
    cfg["train"]["lr"] = float("nan")
    with pytest.raises(ValueError, match="Out of range float values"):
        config.to_toml(cfg)


def test_train_print_config_prints_the_resolved_config_and_writes_nothing(tmp_path, capsys):
    (tmp_path / "base.toml").write_text(BASE)
    (tmp_path / "child.toml").write_text('extends = "base.toml"\n[train]\nlr = 0.003\n')
    assert main(["train", "--config", str(tmp_path / "child.toml"), "--print-config"]) == 0
    printed = tmp_path / "printed.toml"
    printed.write_text(capsys.readouterr().out)
    assert config.load(printed) == config.load(tmp_path / "child.toml")
    assert "extends" not in printed.read_text()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["base.toml", "child.toml",
                                                          "printed.toml"]
    assert main(["train", "--print-config"]) == 2
    assert "give --config FILE" in capsys.readouterr().err


def test_a_section_that_is_not_a_table_in_the_child_is_named(tmp_path):
    (tmp_path / "base.toml").write_text(BASE)
    (tmp_path / "child.toml").write_text('extends = "base.toml"\ntrain = 3\n')
    with pytest.raises(ValueError, match=r"config \[train\] must be a table, got 3"):
        config.load(tmp_path / "child.toml")


def test_a_config_that_is_not_utf8_is_named(tmp_path):
    (tmp_path / "bad.toml").write_bytes(b'[train]\nlr = 1e-3 # \xff\n')
    with pytest.raises(ValueError, match=r"config file .*bad\.toml is not UTF-8 text \(TOML "
                                         r"is\): byte 0xff at offset 20"):
        config.load(tmp_path / "bad.toml")


def test_a_split_with_fewer_classes_than_ways_is_named_with_its_fix(tmp_path):
    """12 classes split 70/10/20 leave 2 test classes for 5-way tasks: the error named
    neither the split nor what to change ('Episodes ways=5 exceeds the 2 classes available')."""
    import numpy as np

    from metaloop import build

    x = np.zeros((72, 1, 8, 8), np.uint8)
    y = np.repeat(np.arange(12), 6)
    np.savez(tmp_path / "t.npz", x=x, y=y)
    cfg = build.resolve_split(config.validate({"family": {
        "name": "tensors", "root": str(tmp_path / "t.npz"), "ways": 5, "shots": 1,
        "queries": 2}, "model": {"name": "mlp"}, "method": {"name": "protonet"}}))
    with pytest.raises(ValueError, match=r"ways=5 exceeds the 2 classes of the 'test' split "
                                         r"\(family\.test_classes; by family\.split_fractions = "
                                         r"\[0\.7, 0\.1, 0\.2\] .*lower family\.ways"):
        build.user_family(cfg["family"], "test", 1, 2)
    assert len(build.user_family(cfg["family"], "train", 1, 2).class_names) >= 5


def test_a_table_split_with_fewer_classes_than_ways_is_named_with_its_fix(tmp_path):
    """8 labels split 70/10/20 leave 1 validation class for 2-way tasks: the error said
    "(split 'classes') has 1 class(es)", naming neither the split nor what to change."""
    from metaloop import build

    rows = "".join(f"text {c} {j},c{c}\n" for c in range(8) for j in range(4))
    (tmp_path / "t.csv").write_text("text,label\n" + rows)
    cfg = build.resolve_split(config.validate({"family": {
        "name": "table", "root": str(tmp_path / "t.csv"), "ways": 2, "shots": 1,
        "queries": 1}, "model": {"name": "text"}, "method": {"name": "protonet"}}))
    with pytest.raises(ValueError, match=r"TextTable ways=2 exceeds the 1 classes of the 'val' "
                                         r"split \(family\.val_classes; by "
                                         r"family\.split_fractions = \[0\.7, 0\.1, 0\.2\] "
                                         r".*lower family\.ways"):
        build.user_family(cfg["family"], "val", 1, 1)


def test_image_augmentation_on_feature_vectors_names_the_key(tmp_path):
    """train.augment_shift on [N, D] features said 'Shifted needs an image family, not
    Episodes', naming neither the key nor the fix."""
    import numpy as np

    from metaloop import build

    np.savez(tmp_path / "f.npz", x=np.zeros((60, 16), np.float32), y=np.repeat(np.arange(6), 10))
    cfg = config.validate({"family": {"name": "tensors", "root": str(tmp_path / "f.npz"),
                                      "ways": 2, "shots": 1, "queries": 2},
                           "model": {"name": "mlp"}, "method": {"name": "protonet"},
                           "train": {"augment_shift": 2, "augment_rotate": 10}})
    fam = build.user_family(build.resolve_split(cfg)["family"], "train", 1, 2)
    with pytest.raises(ValueError, match=r"train\.augment_shift, train\.augment_rotate moves or "
                                         r"bends images, but this family's examples are not "
                                         r"images \(Episodes of shape \[16\]\): set "
                                         r"train\.augment_shift and train\.augment_rotate = 0"):
        build.training_family(cfg, fam)

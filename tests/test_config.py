"""``metaloop.config.load``: a config that ``extends`` another one."""

from __future__ import annotations

import copy
import re
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


@pytest.mark.parametrize("child, base, file, message", [
    ("[trian]\niterations = 3\n", "", "child", r"unknown config section \[trian\] \(did you "
                                                r"mean 'train'\?\)"),
    ("[train]\nitertions = 3\n", "", "child", r"unknown key train\.itertions \(did you mean "
                                              r"'iterations'\?\)"),
    ('[train]\niterations = "3"\n', "", "child", r"train\.iterations must be int, got str"),
    ("[train]\niterations = 3.0\n", "", "child", r"train\.iterations must be int, got float"),
    ("[train]\niterations = true\n", "", "child", r"train\.iterations must be int, got bool"),
    ("[train]\niterations = [3]\n", "", "child", r"train\.iterations must be int, got list"),
    ("[family]\nshots = 1\n", "[eval]\nsteps = [0, 1.5]\n", "base",
     r"eval\.steps must be a list of int"),
    ("[family]\nshots = 1\n", "[family]\nshotz = 1\n", "base", r"unknown key family\.shotz"),
    ("[family]\nshots = 1\n", "[train.sub]\nx = 1\n", "base", r"unknown key train\.sub"),
    ("iterations = 3\n", "", "child", r"key iterations is outside any section: put it under "
                                       r"\[train\] \(train\.iterations\)$"),
    ("seed = 3\n", "", "child", r"key seed is outside any section: put it under \[train\] "
                                 r"\(train\.seed\) or \[eval\] \(eval\.seed\)$"),
], ids=["section-typo", "key-typo", "str-for-int", "float-for-int", "bool-for-int",
        "list-for-int", "float-in-int-list-in-base", "key-typo-in-base", "nested-table-in-base",
        "key-outside-sections", "key-of-two-sections-outside-them"])
def test_a_bad_key_names_the_file_of_the_chain_that_sets_it(tmp_path, capsys, child, base,
                                                             file, message):
    """A bad key or type was named without its file: in an extends chain the user could
    not tell which file to fix."""
    (tmp_path / "base.toml").write_text(base)
    (tmp_path / "child.toml").write_text(f'extends = "base.toml"\n{child}')
    origin = str(tmp_path / "child.toml") if file == "child" else \
        f"{tmp_path / 'base.toml'} (which {tmp_path / 'child.toml'} extends)"
    with pytest.raises(ValueError) as e:
        config.load(tmp_path / "child.toml")
    assert str(e.value).startswith(f"config file {origin}: ")
    assert re.search(message, str(e.value))
    out = tmp_path / "run"
    assert main(["train", "--config", str(tmp_path / "child.toml"), "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and f"config file {origin}: " in err
    assert not out.exists()


def test_both_names_of_a_renamed_key_in_one_file_name_that_file(tmp_path):
    (tmp_path / "base.toml").write_text("[method]\ncheckpoint = true\n"
                                        "recompute_inner_loop = true\n")
    (tmp_path / "child.toml").write_text('extends = "base.toml"\n[train]\nseed = 1\n')
    with pytest.raises(ValueError, match=r"^config file .*base\.toml: method\.checkpoint is "
                                         r"the deprecated name of method\.recompute_inner_loop; "
                                         r"give method\.recompute_inner_loop only$"):
        config.load(tmp_path / "child.toml")


def test_a_bad_value_in_the_base_that_the_child_replaces_is_not_an_error(tmp_path):
    (tmp_path / "base.toml").write_text('[train]\niterations = "3"\n')
    (tmp_path / "child.toml").write_text('extends = "base.toml"\n[train]\niterations = 3\n')
    assert config.load(tmp_path / "child.toml")["train"]["iterations"] == 3
    assert config.written_keys(tmp_path / "child.toml") == {
        ("train", "iterations"): tmp_path / "child.toml"}


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


@pytest.mark.parametrize("root", ["photos/\U0001f600 party", "a\U0010ffff\U00010000b",
                                  "\\ud83d\\ude00 \\\U0001f600", 'q"uo\\te\nnew\ttab\x7f',
                                  "é中"])
def test_to_toml_reads_back_every_character_of_a_string(root, tmp_path, capsys):
    """A character past U+FFFF (an emoji in a folder's name) was written as JSON's surrogate
    pair \\ud83d\\ude00, which TOML refuses: --print-config printed a file that did not load."""
    cfg = config.validate({"family": {"name": "folder", "root": root},
                           "model": {"name": "conv4"}})
    text = config.to_toml(cfg)
    assert text.isascii()
    (tmp_path / "c.toml").write_text(text)
    assert config.load(tmp_path / "c.toml") == cfg
    assert main(["train", "--config", str(tmp_path / "c.toml"), "--print-config"]) == 0
    assert config.tomllib.loads(capsys.readouterr().out)["family"]["root"] == root


def test_to_toml_refuses_a_non_finite_number(tmp_path):
    cfg = config.load(CONFIGS / "omniglot_challenge_pilot28_cpu.toml")
    cfg["train"]["lr"] = float("nan")
    with pytest.raises(ValueError, match=r"config train\.lr = nan: no config key takes a "
                                         r"non-finite number"):
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
    with pytest.raises(ValueError, match=r"config file .*child\.toml: \[train\] must be a "
                                         r"table, got 3"):
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


def _vectors(tmp_path, **sections):
    """A validated tensors config over 6 classes of 10 feature vectors [16] (3 held out)."""
    import numpy as np

    from metaloop import build

    np.savez(tmp_path / "f.npz", x=np.zeros((60, 16), np.float32), y=np.repeat(np.arange(6), 10))
    cfg = config.validate(config.merge({
        "family": {"name": "tensors", "root": str(tmp_path / "f.npz"), "ways": 2, "shots": 1,
                   "queries": 2, "split_fractions": [0.5, 0.0, 0.5]},
        "model": {"name": "mlp"}, "method": {"name": "r2d2"}}, sections))
    return build.resolve_split(cfg)


@pytest.mark.parametrize("key", ["support_shift", "query_shift"])
def test_eval_shifts_on_feature_vectors_name_the_key(tmp_path, key):
    """A tensors run of feature vectors with eval.support_shift / query_shift trained, then
    could never be evaluated ('support_shift = 1 shifts images, but the tasks' inputs are
    [16]'): the check train makes before training names the key."""
    from metaloop import build

    cfg = _vectors(tmp_path, eval={key: 1})
    fam = build.build_family(cfg["family"])
    with pytest.raises(ValueError, match=rf"config eval\.{key} = 1 shifts images at test time, "
                                         rf"but this family's examples are not images "
                                         rf"\(Episodes of shape \[16\]\), so the run could not "
                                         rf"be evaluated: set eval\.{key} = 0"):
        build.check_eval_shifts(cfg, fam)
    build.check_eval_shifts(_vectors(tmp_path), fam)             # no shift: nothing to say


def test_held_out_ways_beyond_the_split_name_eval_ways(tmp_path):
    """eval.ways = 6 over a 3-class test split said 'lower family.ways (eval: --ways)', the
    key that was not at fault."""
    from metaloop import build

    with pytest.raises(ValueError, match=r"ways=6 exceeds the 3 classes of the 'test' split "
                                         r".*: lower eval\.ways \(--ways in metaloop eval\)"):
        build.eval_family(_vectors(tmp_path, eval={"ways": 6}), None)
    with pytest.raises(ValueError, match=r"lower family\.ways \(eval: --ways\)"):
        build.eval_family(_vectors(tmp_path, family={"ways": 4}), None)


def test_held_out_classes_too_small_name_the_eval_keys(tmp_path):
    """eval.shots = 8, eval.queries = 3 on classes of 10 said only 'Episodes: 3 class(es) have
    fewer than shots + queries = 8 + 3', not which keys or split set them."""
    from metaloop import build

    with pytest.raises(ValueError, match=r"^the held-out tasks \(eval\.split = 'test'; "
                                         r"eval\.shots = 8, eval\.queries = 3\): tensor file "
                                         r".*f\.npz: 3 class\(es\) have fewer than shots \+ "
                                         r"queries = 8 \+ 3"):
        build.eval_family(_vectors(tmp_path, eval={"shots": 8, "queries": 3}), None)
    # the family's shots and queries (eval's 0) on the held-out split: named as such
    with pytest.raises(ValueError, match=r"family\.shots = 8 \(eval\.shots = 0: the family's\), "
                                         r"family\.queries = 3 \(eval\.queries = 0: the "
                                         r"family's\)\): tensor file .*f\.npz: 3 class"):
        build.eval_family(_vectors(tmp_path, family={"shots": 8, "queries": 3}), None)


@pytest.mark.parametrize("method", ["r2d2", "metaoptnet", "protonet"])
def test_check_training_refuses_steps_for_a_solved_head(method):
    """eval.steps = [0, 1] for a closed-form head printed a '1 step' column equal to '0 steps'
    and recorded 'after 1 step'."""
    omniglot = {"name": "omniglot"}       # a solved head classifies
    cfg = config.validate({"family": omniglot, "method": {"name": method},
                           "eval": {"steps": [0, 1]}})
    with pytest.raises(ValueError, match=rf"config eval\.steps = \[0, 1\]: {method} solves its "
                                         rf"head per task, it is not stepped.*use eval\.steps "
                                         rf"= \[0\]"):
        config.check_training(cfg, {("eval", "steps")})
    config.check_training(cfg, set())          # the default (not written): evaluated at [0]
    config.check_training(config.validate({"family": omniglot, "method": {"name": method},
                                           "eval": {"steps": [0]}}), {("eval", "steps")})
    config.check_training(config.validate({"method": {"name": "maml"},
                                           "eval": {"steps": [0, 1]}}), {("eval", "steps")})


def test_check_training_refuses_reptile_batches_above_the_support_set():
    """method.inner_batch = 50 with a support set of 3 was accepted silently."""
    base = {"family": {"name": "omniglot", "ways": 3, "shots": 1}, "model": {"name": "conv4"}}
    cfg = config.validate({**base, "method": {"name": "reptile", "inner_batch": 50}})
    with pytest.raises(ValueError, match=r"config method\.inner_batch = 50 exceeds the support "
                                         r"set of family\.ways x family\.shots = 3 x 1 = 3 "
                                         r"examples.*set method\.inner_batch <= 3, or 0"):
        config.check_training(cfg)
    cfg = config.validate({**base, "method": {"name": "reptile", "test_batch": 7},
                           "eval": {"shots": 2}})
    with pytest.raises(ValueError, match=r"method\.test_batch = 7 exceeds the support set of "
                                         r"eval\.ways x eval\.shots = 3 x 2 \(0 = the family's\) "
                                         r"= 6 examples"):
        config.check_training(cfg)
    config.check_training({**cfg, "method": {**cfg["method"], "test_batch": 6}})  # 6 <= 3 x 2
    # a test-time support shift grows the support set (2s+1)^2-fold
    config.check_training(config.validate({**base, "method": {"name": "reptile",
                                                              "test_batch": 27},
                                           "eval": {"support_shift": 1}}))
    sine = config.validate({"method": {"name": "reptile", "inner_batch": 11}})
    with pytest.raises(ValueError, match=r"inner_batch = 11 exceeds the support set of "
                                         r"family\.shots = 10 examples"):
        config.check_training(sine)


@pytest.mark.parametrize("family, train, held_out, shared", [
    ("folder", "test", "test", True), ("folder", "train", "test", False),
    ("omniglot", "train", "test", False), ("omniglot", "trainval", "val", True),
    ("omniglot", "background_train", "background", True),
    ("omniglot", "background_train", "background_val", False),
    ("fashion_mnist", "val", "test", True), ("fashion_mnist", "train", "test", False),
    ("sinusoid", "train", "train", False),
    # Omniglot's two schemes: a background run held out on Vinyals' val is scored on 172
    # characters, 150 of them from background_train (this was not warned about)
    ("omniglot", "background_train", "val", True), ("omniglot", "background", "train", True),
    ("omniglot", "evaluation", "train", True), ("omniglot", "trainval", "evaluation", True),
    ("omniglot", "background_val", "test", False), ("omniglot", "evaluation", "val", False),
    ("omniglot", "test", "background", False),
])
def test_shared_split_tells_when_the_held_out_classes_are_trained_on(family, train, held_out,
                                                                     shared):
    assert config.shared_split({"name": family, "split": train}, held_out) is shared


@pytest.mark.slow
def test_the_omniglot_schemes_share_characters_as_shared_split_says():
    """Against the data: every pair of a Lake and a Vinyals split that has a character in
    common is called shared, and no other."""
    import metaloop as ml

    def chars(split):
        names = ml.tasks.Omniglot(split=split, ways=2, shots=1, queries=1).class_names
        return {n.rsplit("/rot", 1)[0] for n in names}

    lake = ["background_train", "background_val", "background", "evaluation"]
    vinyals = ["train", "val", "test", "trainval"]
    found = {s: chars(s) for s in lake + vinyals}
    for a in lake:
        for b in vinyals:
            common = bool(found[a] & found[b])
            assert config.shared_split({"name": "omniglot", "split": a}, b) is common, (a, b)
            assert config.shared_split({"name": "omniglot", "split": b}, a) is common, (b, a)


def test_warn_shared_split_names_both_keys():
    cfg = config.validate({"family": {"name": "omniglot", "split": "test"},
                           "model": {"name": "conv4"}})
    with pytest.warns(config.SharedSplitWarning, match=r"eval\.split = 'test' is family\.split "
                                                       r"= 'test', the split the run is "
                                                       r"meta-trained on, so the held-out "
                                                       r"evaluation scores the training "
                                                       r"classes"):
        config.warn_shared_split(cfg)
    assert config.warn_shared_split(config.validate({})) is None


def test_a_sinusoid_trained_on_its_held_out_seed_is_refused():
    # its held-out tasks differ from its training tasks only by seed: the same seed would
    # train on the very tasks it is scored on (scratch, which does not train, may)
    cfg = config.validate({"family": {"name": "sinusoid"}, "method": {"name": "maml"},
                           "train": {"seed": 7}, "eval": {"seed": 7}})
    with pytest.raises(ValueError, match="train.seed = eval.seed = 7: the sinusoid's held-out"):
        config.check_combinations(cfg)
    cfg["method"]["name"] = "scratch"
    config.check_combinations(cfg)


def test_validation_on_the_challenge_test_alphabets_is_refused():
    # validation reads eval.split while training: on "evaluation" it would watch the test
    cfg = config.validate({"family": {"name": "omniglot", "split": "background"},
                           "model": {"name": "conv4"}, "method": {"name": "protonet"},
                           "train": {"val_every": 100}, "eval": {"split": "evaluation"}})
    config.check_combinations(cfg)          # a trained run may be evaluated on the test
    with pytest.raises(ValueError, match="validation would read the challenge's test"):
        config.check_training(cfg)
    cfg["train"]["val_every"] = 0
    config.check_training(cfg)

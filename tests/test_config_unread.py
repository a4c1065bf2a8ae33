"""Config keys the run never reads: ``metaloop train`` warns (``config.UnreadKeyWarning``),
once per key a file sets, naming the file; defaults and keys the run reads never warn."""

from __future__ import annotations

import fnmatch
import warnings
from pathlib import Path

import pytest

from metaloop import config
from metaloop.cli.main import main
from metaloop.recipes import compare as _compare

CONFIGS = Path(__file__).resolve().parents[1] / "configs"

SINE = '[family]\nname = "sinusoid"\n[model]\nhidden = [4]\n[train]\niterations = 1\n' \
       'meta_batch = 2\n'

# Committed configs allowed to set keys their run does not read, with the reason.
EXCEPTIONS = {
    # ablations that extend a ProtoNet / Conv4 pilot inherit its keys (a config cannot unset
    # an inherited key): the output scale for non-solved heads, Conv4's pooling for ResNet-12
    "omniglot_challenge_pilot28_6k_pre_cpu.toml": {("method", "scale")},
    "omniglot_challenge_pilot28_maml_cpu.toml": {("method", "scale")},
    "omniglot_challenge_pilot28_resnet12_cpu.toml": {("model", "pool")},
}


def _train(tmp_path, text, name="c.toml"):
    f = tmp_path / name
    f.write_text(text)
    assert main(["train", "--config", str(f), "--out", str(tmp_path / "run"),
                 "--no-progress"]) == 0
    return f


def test_train_warns_once_per_written_key_the_method_does_not_read(tmp_path):
    text = SINE.replace("[model]", '[method]\nname = "reptile"\nlam = 0.5\n'
                        'recompute_inner_loop = false\ninner_lr = 0.02\n[model]')
    with pytest.warns(config.UnreadKeyWarning) as got:
        f = _train(tmp_path, text)
    msgs = [str(w.message) for w in got if w.category is config.UnreadKeyWarning]
    assert msgs == [
        f"config method.recompute_inner_loop = false ({f}) changes nothing for reptile (a key "
        f"of maml, fomaml and anil); remove it",
        f"config method.lam = 0.5 ({f}) changes nothing for reptile (the ridge strength of "
        f"r2d2 and metaoptnet); remove it"]


def test_a_clean_config_and_the_defaults_do_not_warn(tmp_path):
    with warnings.catch_warnings():
        warnings.simplefilter("error")     # (as the suite does) any warning fails the run
        _train(tmp_path, SINE.replace("[model]", '[method]\nname = "maml"\ninner_lr = 0.02\n'
                                      'first_order = true\n[model]'))
    cfg = config.validate({"method": {"name": "protonet"}, "model": {"name": "conv4"},
                           "family": {"name": "omniglot"}})
    # every key is in the validated config (defaults), none is written
    assert config.unread_keys(cfg, []) == []


@pytest.mark.parametrize("method,cfg,keys", [
    ("protonet", {"method": {"inner_lr": 0.4, "inner_steps": 3, "lam": 1.0, "scale": 10}},
     ["method.inner_lr", "method.inner_steps", "method.lam"]),
    ("metaoptnet", {"method": {"inner_lr": 0.4, "inner_steps": 3, "head": "svm"}},
     ["method.inner_lr"]),
    ("maml", {"method": {"inner_optimizer": "sgd", "transductive": True, "grad": "implicit"},
              "eval": {"refine": 0, "scoring": "as-trained"}},
     ["method.inner_optimizer", "method.grad", "method.transductive", "eval.scoring",
      "eval.refine"]),
    ("fomaml", {"method": {"first_order": False}}, ["method.first_order"]),
    ("fomaml", {"method": {"first_order": True}}, []),
    ("scratch", {"train": {"iterations": 5, "seed": 3, "dtype": "float32"}},
     ["train.iterations"]),
])
def test_which_method_keys_are_read(method, cfg, keys):
    written = [(s, k) for s, body in cfg.items() for k in body]
    cfg = config.validate(config.merge({"family": {"name": "omniglot"},
                                        "model": {"name": "conv4"},
                                        "method": {"name": method}}, cfg))
    assert [f"{s}.{k}" for s, k, _ in config.unread_keys(cfg, written)] == keys


def test_model_and_family_keys():
    def unread(family, model, written):
        cfg = config.validate({"family": {"name": family}, "model": {"name": model}})
        return [f"{s}.{k}" for s, k, _ in config.unread_keys(cfg, written)]
    assert unread("sinusoid", "mlp", [("model", "pool"), ("model", "channels"),
                                      ("model", "hidden"), ("family", "drawers"),
                                      ("family", "ways"), ("train", "augment_shift"),
                                      ("family", "shots"), ("eval", "split")]) == \
        ["family.ways", "family.drawers", "model.pool", "model.channels",
         "train.augment_shift", "eval.split"]
    assert unread("omniglot", "conv4", [("model", "hidden"), ("model", "pool"),
                                        ("family", "within_alphabet"),
                                        ("family", "class_depth")]) == \
        ["family.class_depth", "model.hidden"]
    assert unread("fashion_mnist", "resnet12", [("family", "within_alphabet"),
                                                ("model", "readout"), ("model", "channels"),
                                                ("train", "device_tasks")]) == \
        ["family.within_alphabet", "model.readout", "train.device_tasks"]


def test_an_inherited_key_names_the_file_that_sets_it(tmp_path):
    (tmp_path / "base.toml").write_text('[family]\nname = "omniglot"\n[model]\nname = '
                                        '"conv4"\n[method]\nname = "maml"\ninner_lr = 0.4\n')
    (tmp_path / "child.toml").write_text('extends = "base.toml"\n[method]\nname = '
                                         '"protonet"\ninner_steps = 2\n')
    cfg = config.load(tmp_path / "child.toml")
    assert config.written_keys(tmp_path / "child.toml")[("method", "name")] == \
        tmp_path / "child.toml"
    with pytest.warns(config.UnreadKeyWarning) as got:
        msgs = config.warn_unread(cfg, tmp_path / "child.toml")
    assert [str(w.message) for w in got] == msgs
    assert msgs[0].startswith(f"config method.inner_lr = 0.4 (inherited from "
                              f"{tmp_path / 'base.toml'}, which {tmp_path / 'child.toml'} "
                              f"extends) changes nothing for protonet")
    assert msgs[1] == (f"config method.inner_steps = 2 ({tmp_path / 'child.toml'}) changes "
                       f"nothing for protonet (it solves its head in closed form, with no "
                       f"steps); remove it")


def test_every_committed_config_sets_only_keys_its_run_reads():
    """New configs stay clean; the exceptions are listed above with their reasons."""
    files = sorted(CONFIGS.glob("*.toml"))
    assert len(files) > 50
    used = set()
    for f in files:
        allowed = set().union(*(keys for pat, keys in EXCEPTIONS.items()
                                if fnmatch.fnmatch(f.name, pat) and used.add(pat) is None))
        unread = {(s, k) for s, k, _ in config.unread_keys(config.load(f),
                                                          config.written_keys(f))}
        assert unread <= allowed, f"{f.name}: {sorted(unread - allowed)}"
    assert used == set(EXCEPTIONS)        # no stale exception


def test_the_shipped_compare_configs_set_no_key_that_every_method_ignores():
    for family in _compare.FAMILIES:
        cfg = _compare.load_config(family)
        raw = config.tomllib.loads(_compare.config_text(family))
        table = raw.pop("compare")
        written = {(s, k) for s, body in raw.items() for k in body}
        unread = None
        for m in _compare.methods_for(cfg):
            own = {(s, k) for s, body in table.get("per_method", {}).get(m, {}).items()
                   for k in body}
            keys = {(s, k) for s, k, _ in config.unread_keys(
                _compare.method_config(cfg, m), written | own)}
            unread = keys if unread is None else unread & keys
        assert not unread, f"compare_{family}.toml: {sorted(unread)}"


def test_a_resolved_config_that_spells_out_every_key_does_not_warn(tmp_path):
    f = tmp_path / "printed.toml"
    f.write_text(config.to_toml(config.load(CONFIGS / "omniglot_scratch_5w1s_cpu.toml")))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert config.warn_unread(config.load(f), f) == []


def test_compare_warns_for_a_key_no_compared_method_reads(tmp_path):
    """metaloop compare --config: a key is unread only if every compared method ignores it
    (lam is read by r2d2 and metaoptnet, by neither maml nor reptile)."""
    f = tmp_path / "cmp.toml"
    f.write_text('[family]\nname = "sinusoid"\n[method]\nlam = 0.5\n[train]\niterations = 2\n')
    with pytest.warns(config.UnreadKeyWarning) as got:
        assert main(["--threads", "1", "compare", "--config", str(f), "--methods",
                     "maml,reptile", "--tasks", "2", "--out", str(tmp_path / "out"),
                     "--no-progress"]) == 0
    texts = [str(w.message) for w in got if issubclass(w.category, config.UnreadKeyWarning)]
    assert texts == [f"config method.lam = 0.5 ({f}) changes nothing for any method compared "
                     f"(maml, reptile); remove it"]


@pytest.mark.parametrize("name, fix", [
    ("r2d2", "r2d2 needs a classification family, not 'sinusoid': remove it"),
    ("protonet", "protonet needs a classification family, not 'sinusoid': remove it"),
    ("ridge", "ridge is not one compare runs (its methods: scratch, pretrain, maml, fomaml, "
              "reptile, anil, r2d2, metaoptnet, protonet): train it with metaloop train, or "
              "remove it")])
def test_compare_warns_when_method_name_is_not_compared(tmp_path, name, fix):
    """metaloop compare --config with method.name = "r2d2" (a classification head, on a
    regression family: adding it to --methods would be refused) or a name compare does not
    run ran other methods without a word."""
    f = tmp_path / "cmp.toml"
    f.write_text(f'[family]\nname = "sinusoid"\n[method]\nname = "{name}"\n[train]\n'
                 f'iterations = 1\n')
    with pytest.warns(config.UnreadKeyWarning) as got:
        assert main(["--threads", "1", "compare", "--config", str(f), "--methods", "maml",
                     "--tasks", "2", "--out", str(tmp_path / "out"), "--no-progress"]) == 0
    texts = [str(w.message) for w in got if issubclass(w.category, config.UnreadKeyWarning)]
    assert texts == [f'config method.name = "{name}" ({f}) changes nothing for metaloop '
                     f'compare, which runs the methods of --methods or compare.methods '
                     f'(maml), each in place of it; {fix}']
    # a method among those compared: its row is there (docs/omniglot.md's use of a train
    # config), nothing to say
    f.write_text('[family]\nname = "sinusoid"\n[method]\nname = "maml"\n[train]\n'
                 'iterations = 1\n')
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert _compare.warn_unread([_compare.method_config(_compare.load_config(None, f),
                                                            "maml")], f) == []

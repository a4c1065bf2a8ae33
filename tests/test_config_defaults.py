"""The config's defaults (``metaloop.config.SCHEMA``) agree with the defaults of the library
calls they feed and with the defaults the docs and help texts state: a config that leaves a
key out runs as the same call from Python would."""

from __future__ import annotations

import inspect
import json
import re
from pathlib import Path

import pytest

import metaloop as ml
from metaloop import config
from metaloop.recipes.adapt import AdaptSettings, parse_fractions

DOCS = Path(__file__).resolve().parents[1] / "docs"


def _default(fn, name):
    return inspect.signature(fn).parameters[name].default


def _schema(dotted):
    section, key = dotted.split(".")
    return config.SCHEMA[section][key][1]


# (config key, library call, its argument): the config passes the value straight through
PASSED = [
    ("model.channels", ml.models.Conv4, "hidden"), ("model.pool", ml.models.Conv4, "pool"),
    ("family.image_size", ml.models.Conv4, "image_size"),
    ("model.hidden", ml.models.MLP, "hidden"),
    ("method.inner_lr", ml.meta.MAML, "inner_lr"),
    ("method.inner_steps", ml.meta.MAML, "inner_steps"),
    ("method.first_order", ml.meta.MAML, "first_order"),
    ("method.batching", ml.meta.MAML, "batching"), ("method.compile", ml.meta.MAML, "compile"),
    ("method.learn_inner_lr", ml.meta.MAML, "learn_lr"),
    ("method.inner_optimizer", ml.meta.Reptile, "inner_optimizer"),
    ("method.inner_batch", ml.meta.Reptile, "inner_batch"),
    ("method.test_batch", ml.meta.Reptile, "test_batch"),
    ("method.transductive", ml.meta.Reptile, "transductive"),
    ("method.adam_state", ml.meta.Reptile, "adam_state"),
    ("method.lam", ml.meta.R2D2, "lam"), ("method.lam", ml.meta.MetaOptNet, "lam"),
    ("method.head", ml.meta.MetaOptNet, "head"), ("method.grad", ml.meta.MetaOptNet, "grad"),
    ("method.refine", ml.meta.ProtoNet, "refine"),
    ("method.refine_temperature", ml.meta.ProtoNet, "refine_temperature"),
    ("method.refine_weight", ml.meta.ProtoNet, "refine_weight"),
    *((f"train.{k}", ml.train, k) for k in (
        "lr", "seed", "val_every", "val_tasks", "checkpoint_every", "lr_schedule",
        "clip_grad_norm", "optimizer", "weight_decay", "cuda_graph")),
    *((f"eval.{k}", ml.evaluate, k) for k in ("tasks", "seed", "support_shift",
                                              "query_shift")),
    *((f"family.{k}", ml.tasks.Omniglot, k) for k in (
        "split", "image_size", "within_alphabet", "rotations", "reflections", "drawers")),
    *((f"family.{k}", ml.tasks.Episodes.from_folder, arg) for k, arg in (
        ("image_size", "image_size"), ("channels", "channels"), ("invert", "invert"),
        ("class_depth", "class_depth"), ("split_fractions", "fractions"),
        ("split_seed", "seed"), ("drop_small", "drop_small"),
        ("skip_corrupt", "skip_corrupt"))),
]


@pytest.mark.parametrize("key, fn, arg", PASSED,
                         ids=[f"{k}-{getattr(f, '__qualname__', f)}" for k, f, _ in PASSED])
def test_a_config_default_is_the_library_default(key, fn, arg):
    want = _default(fn, arg)
    got = _schema(key)
    assert (list(got) if isinstance(got, list) else got) == \
        (list(want) if isinstance(want, tuple) else want), key


def test_eval_steps_and_split_fractions_are_the_library_defaults():
    assert config.SCHEMA["eval"]["steps"][1] == list(_default(ml.evaluate, "steps"))
    assert config.SCHEMA["family"]["split_fractions"][1] == \
        list(_default(ml.tasks.split_classes, "fractions"))


def test_the_defaults_the_docs_state_are_the_configs():
    data = (DOCS / "data.md").read_text()
    hidden = re.search(r"`model\.hidden`, default `(\[[\d, ]+\])`", data)
    assert hidden and json.loads(hidden[1]) == _schema("model.hidden")
    fractions = [float(v) for v in re.search(r"`--split-fractions\s+train,val,test`, default "
                                             r"`([\d.,]+)`", data)[1].split(",")]
    assert fractions == _schema("family.split_fractions")
    # metaloop adapt --meta splits the classes as a config's [family] does
    adapt = AdaptSettings()
    assert list(parse_fractions(adapt.split_fractions)) == _schema("family.split_fractions")
    assert adapt.split_seed == _schema("family.split_seed")


def test_a_metaoptnet_config_without_inner_steps_gets_metaoptnets_newton_steps(tmp_path):
    # method.inner_steps is MAML's one inner step by default; for metaoptnet it is the
    # Newton steps, whose library default (10) solves the head: one step would not
    want = _default(ml.meta.MetaOptNet, "steps")
    assert config.validate({"method": {"name": "metaoptnet"}})["method"]["inner_steps"] == want
    assert config.validate({"method": {"name": "metaoptnet", "inner_steps": 3}}
                           )["method"]["inner_steps"] == 3
    assert config.validate({"method": {"name": "maml"}})["method"]["inner_steps"] == 1
    path = tmp_path / "m.toml"
    path.write_text('[family]\nname = "omniglot"\n[method]\nname = "metaoptnet"\n')
    assert config.load(path)["method"]["inner_steps"] == want


def test_a_reptile_config_without_inner_steps_gets_reptiles_inner_steps(tmp_path):
    # Reptile's direction is about 0 after one inner step: its library default (5) applies
    want = _default(ml.meta.Reptile, "inner_steps")
    assert config.validate({"method": {"name": "reptile"}})["method"]["inner_steps"] == want
    assert config.validate({"method": {"name": "reptile", "inner_steps": 1}}
                           )["method"]["inner_steps"] == 1
    path = tmp_path / "r.toml"
    path.write_text('[method]\nname = "reptile"\n')
    assert config.load(path)["method"]["inner_steps"] == want

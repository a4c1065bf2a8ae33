"""The one config schema: TOML run configs, their defaults, validation and deprecated keys.

A config is a dict of sections ``[family] [model] [method] [train] [eval]``; ``SCHEMA`` lists
every key with its type and default. ``load(path)`` reads and validates a file, ``validate``
fills the defaults and checks keys and types of a dict, and ``check_combinations`` rejects the
values and combinations that are impossible whatever the data, before any data is read. The
command line, the recipes (``metaloop.recipes``) and ``metaloop.runs.load_run`` all validate
through here.
"""

from __future__ import annotations

import copy
import difflib
import importlib.util
import json
import math
import os
import re
import reprlib
import stat
import sys
import unicodedata
import warnings
from pathlib import Path

__all__ = ["FAMILIES", "METHODS", "MODELS", "RENAMED", "SCHEMA", "SharedSplitWarning",
           "UnreadKeyWarning", "check_combinations", "check_training", "load", "merge", "read",
           "shared_split", "to_toml", "unread_keys", "validate", "warn_shared_split",
           "warn_unread", "written_keys"]

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

# A config file is a few KB: one over MAX_CONFIG_BYTES, or with keys or arrays nested deeper
# than MAX_CONFIG_DEPTH (``a.a.a...``, ``[[[...]]]``), is refused before it is parsed (the TOML
# reader takes memory quadratic in a dotted key's depth, and recurses once per level).
MAX_CONFIG_BYTES = 1 << 20
MAX_CONFIG_DEPTH = 64

_SHORT = reprlib.Repr()
_SHORT.maxstring = 4200       # a path whole (PATH_MAX is 4096), a 10 MB string cut
_SHORT.maxother = 80
_SHORT.maxlist = _SHORT.maxdict = 8
_SHORT.maxlevel = 3


def _short(value) -> str:
    """``repr(value)`` cut to a readable length (a long string ends in ``...``), for messages
    that echo a value read from a file."""
    return _SHORT.repr(value)


SCHEMA: dict[str, dict[str, tuple[type | tuple, object]]] = {
    "family": {"name": (str, "sinusoid"), "shots": (int, 10), "queries": (int, 10),
               "ways": (int, 5), "root": (str, ""), "image_size": (int, 28),
               "split": (str, "train"),
               # omniglot: fraction of training tasks whose classes share one alphabet (the
               # original one-shot challenge's tasks), rotations as extra classes (Lake
               # splits only), and mirror images as extra classes (any split)
               "within_alphabet": ((int, float), 0.0), "rotations": (bool, False),
               "reflections": (bool, False),
               # omniglot: "any" drawer for each drawing, or "shared": every class of a task
               # by the same drawers (support by one, queries by another: the official runs)
               "drawers": (str, "any"),
               # your own data: "folder" (root = root/<class>/<image>) and "tensors" (root = an
               # .npz/.pt file with x and y). class_depth 2 reads root/<group>/<class>/<image>;
               # channels 1 (grey) or 3 (RGB); invert "never" | "always" | "auto" (per image)
               "class_depth": (int, 1), "channels": (int, 1), "invert": (str, "never"),
               # the class split: [train, val, test] fractions with a seed, or split files
               # (one class per line, [train, val, test] paths); metaloop train writes the
               # resolved class lists into the run's config (*_classes), so eval and predict
               # use exactly the classes the run held out
               "split_fractions": ((list, (int, float)), [0.7, 0.1, 0.2]), "split_seed": (int, 0),
               "split_files": ((list, str), []), "train_classes": ((list, str), []),
               "val_classes": ((list, str), []), "test_classes": ((list, str), []),
               # leave out classes with fewer than shots + queries images / unreadable images
               # (both counted and reported) instead of stopping with an error naming them
               "drop_small": (bool, False), "skip_corrupt": (bool, False),
               # "table" (root = a .csv / .tsv / .jsonl file, one text and label per row):
               # its columns, the CSV delimiter ("" = by extension), its quoting ("csv": quotes
               # read as CSV does; "none": every character as written, one row per line, as
               # in a GLUE-style TSV), and the Hugging Face encoder ("minilm", a folder or a
               # cached name) whose tokenizer encodes the texts to max_length tokens;
               # model.name = "text" is that encoder with a new head
               "text_column": (str, "text"), "label_column": (str, "label"),
               "delimiter": (str, ""), "quoting": (str, "csv"), "encoder": (str, "minilm"),
               "max_length": (int, 32)},
    "model": {"name": (str, "mlp"), "hidden": ((list, int), [40, 40]), "pool": (str, "max"),
              "channels": (int, 64),
              # conv4: "mean" (spatial mean) or "flatten" the last feature map; "" = the
              # pool's default (mean for stride, flatten for max)
              "readout": (str, "")},
    "method": {"name": (str, "maml"), "inner_lr": ((int, float), 0.01), "inner_steps": (int, 1),
               "first_order": (bool, False), "head_init": (str, "auto"),
               "batching": (str, "auto"), "inner_optimizer": (str, "sgd"),
               # MAML / ANIL: recompute each inner step in the backward pass (memory flat in
               # inner_steps, ~1.09x the time; docs/benchmarks.md); formerly "checkpoint"
               "recompute_inner_loop": (bool, False),
               # MAML / ANIL: torch.compile meta-training: the vmapped tasks as one function
               # (0.62-0.69x the eager time for the sinusoid MLP on the CPU), or each looped
               # task's query pass (the max-pool Conv4); needs a C++ compiler on the CPU;
               # at most torch._dynamo.config.recompile_limit (8) compiles per learner,
               # then eager (ml.meta.MAML's compile); docs/benchmarks.md
               "compile": (bool, False),
               # MAML / ANIL: meta-learn one inner step size per adapted tensor and inner
               # step (MAML++'s LSLR), starting at inner_lr
               "learn_inner_lr": (bool, False),
               # R2D2 / MetaOptNet: ridge strength (R2D2: its initial value), MetaOptNet's
               # head ("svm" | "logistic") and gradient ("implicit" | "unrolled"), initial
               # output scale (0: the method's default); MetaOptNet's Newton steps are
               # inner_steps (10 where a metaoptnet config leaves it out).
               "lam": ((int, float), 1.0), "head": (str, "svm"), "grad": (str, "implicit"),
               "scale": ((int, float), 0),
               # R2D2 / MetaOptNet / ProtoNet: false keeps the output scale fixed at
               # method.scale (protonet with scale = 1: Snell et al.'s plain distances)
               "learn_scale": (bool, True),
               # Reptile (Nichol et al.'s protocol): support examples per inner step in
               # meta-training / at test time, drawn without replacement (0: the whole support
               # set); Reptile and the solved heads (r2d2, metaoptnet, protonet):
               # transductive = false scores each query on its own, BatchNorm with the
               # support set's statistics, in meta-training as at test time
               "inner_batch": (int, 0), "test_batch": (int, 0), "transductive": (bool, True),
               # Reptile with inner Adam: "task" (fresh moments per task) or "shared" (one
               # Adam state runs on through meta-training and starts every test task, as
               # Nichol et al.'s code)
               "adam_state": (str, "task"),
               # protonet: soft k-means rounds that refine each training task's prototypes
               # with its queries inside the meta-loss (0 = off), the assignment's
               # temperature and the query set's weight; testing refines as eval.refine says
               "refine": (int, 0), "refine_temperature": ((int, float), 0.5),
               "refine_weight": ((int, float), 2.0)},
    "train": {"iterations": (int, 1000), "meta_batch": (int, 25), "lr": ((int, float), 1e-3),
              "seed": (int, 0), "val_every": (int, 0), "val_tasks": (int, 100),
              "checkpoint_every": (int, 1000), "dtype": (str, "float32"),
              "lr_schedule": (str, "constant"), "clip_grad_norm": ((int, float), 0.0),
              # the outer optimizer: "adam", or "sgd" (Reptile's outer step: lr = 1.0 with
              # lr_schedule = "linear" decays it linearly to 0, as Nichol et al.)
              "optimizer": (str, "adam"),
              # decoupled weight decay of every meta-parameter (AdamW: each step shrinks them
              # by lr * weight_decay; with "sgd" the usual L2 term); 0 = off
              "weight_decay": ((int, float), 0.0),
              # image families: translate each training image by up to this many pixels
              # (0 = off; held-out evaluation never shifts)
              "augment_shift": (int, 0), "augment_rotate": ((int, float), 0.0),
              # ... thicken or thin strokes by up to this fraction of a pixel (0..1), and
              # bend them elastically by this RMS displacement in pixels (0 = off)
              "augment_stroke": ((int, float), 0.0), "augment_elastic": ((int, float), 0.0),
              # draw the next meta-batch in a background thread: "auto" (on for a CUDA model
              # fed from the host), "on", "off"; the numbers are the same either way
              "prefetch": (str, "auto"),
              # a metrics line, progress update and non-finite check every k iterations;
              # 0 = 1 on the CPU, 100 on CUDA (each read waits for the GPU)
              "log_every": (int, 0),
              # omniglot: keep the images on the training device and draw tasks there
              # (no host->device copy per iteration; another task stream than the CPU's on CUDA)
              "device_tasks": (bool, False),
              # CUDA: record the whole training step as one CUDA graph and replay it
              # (metaloop.train.graphs): needs device_tasks, adam, clip_grad_norm = 0
              "cuda_graph": (bool, False),
              # start from a saved run's weights (a run or ckpt-* directory; "" = the seeded
              # initialisation): every tensor of the same name and shape is copied, the output
              # head only when its shape fits (metaloop.recipes.training.init_from)
              "init": (str, "")},
    # eval.ways: 0 = the family's; another value only for the head-based learners, whose head
    # is solved per task, and for a zero head (pretrain's default): higher-way training,
    # meta-train 20-way, test 5-way
    # eval.steps: a solved head (r2d2, metaoptnet, protonet) is scored after step 0 alone;
    # a config that gives it a step above 0 is refused by metaloop train (check_training)
    "eval": {"tasks": (int, 600), "shots": (int, 0), "queries": (int, 0), "ways": (int, 0),
             "steps": ((list, int), [0, 1, 5, 10]), "seed": (int, 1_000_003),
             "split": (str, "test"),
             # omniglot: held-out tasks drawn within one alphabet; the error rate is reported
             "within_alphabet": (bool, False),
             # omniglot: who drew a held-out task's images: "any" (each drawing's drawer at
             # random) or "shared" (the support set by one drawer and the queries by
             # another, as the challenge's official runs are built)
             "drawers": (str, "any"),
             # test-time augmentation of image tasks: each support set grown by every shift
             # of its images up to this many pixels ((2s+1)^2 copies); 0 = off
             "support_shift": (int, 0),
             # test-time augmentation of classification queries: each scored by its class
             # probabilities averaged over every shift up to this many pixels; 0 = off
             "query_shift": (int, 0),
             # how queries are scored: "as-trained" (the learner's method.transductive),
             # "transductive" (a task's queries normalised together by BatchNorm) or
             # "non-transductive" (each with its support set's statistics); the last two
             # for reptile, r2d2, metaoptnet and protonet
             "scoring": (str, "as-trained"),
             # protonet: soft k-means rounds that refine each task's prototypes with its
             # unlabelled queries before scoring them (transductive; 0 = off, also for a
             # run trained with method.refine), the
             # temperature of the queries' assignment to classes, the query set's
             # weight against the support set's, and whether an ensemble's members share
             # one assignment (their averaged class probabilities)
             "refine": (int, 0), "refine_temperature": ((int, float), 0.5),
             "refine_weight": ((int, float), 2.0), "refine_jointly": (bool, False)},
}
"""Every key a config may set: ``{section: {key: (type, default)}}`` for the sections
``family``, ``model``, ``method``, ``train`` and ``eval``. A type is a class, a tuple of
classes (``(int, float)``: either), or ``(list, item type)`` for a list; ``validate`` fills
each key a config leaves out with its default."""


def _suggest(key: str, options) -> str:
    """`` (did you mean 'x'?)`` for the option nearest ``key``: one that differs only in case
    first (``"MAML"``: ``'maml'``), else the closest by difflib, case ignored; "" if none
    (also for a key far longer than any option)."""
    if len(key) > 200:
        return ""
    by_case: dict[str, str] = {}
    for option in options:
        by_case.setdefault(str(option).lower(), str(option))
    near = difflib.get_close_matches(key.lower(), list(by_case), n=1)
    if key.lower() in by_case:
        near = [key.lower()]
    return f" (did you mean {by_case[near[0]]!r}?)" if near else ""


def _check_type(where: str, value, typ) -> None:
    if isinstance(typ, tuple) and typ and typ[0] is list:
        if not isinstance(value, list) or not all(
                isinstance(v, typ[1]) and not isinstance(v, bool) for v in value):
            what = getattr(typ[1], "__name__", "number")
            raise ValueError(f"config {where} must be a list of {what}, got {_short(value)}")
        return
    ok = isinstance(value, typ) and (typ is bool or not isinstance(value, bool))
    if not ok:
        want = typ.__name__ if isinstance(typ, type) else " or ".join(t.__name__ for t in typ)
        raise ValueError(f"config {where} must be {want}, got {type(value).__name__} "
                         f"{_short(value)}")


RENAMED = {"method": {"checkpoint": "recompute_inner_loop"}}
"""Keys renamed since they were introduced: ``{section: {old name: new name}}``. The old name
still loads, under the new one, with a FutureWarning (shown to command-line users, unlike a
DeprecationWarning); a section that gives both names is refused."""


def _renamed(section: str, body):
    """``body`` with the deprecated keys of ``section`` under their new names (warning)."""
    if not isinstance(body, dict) or not any(old in body for old in RENAMED.get(section, {})):
        return body
    body = dict(body)
    for old, new in RENAMED[section].items():
        if old not in body:
            continue
        if new in body:
            raise ValueError(f"config {section}.{old} is the deprecated name of "
                             f"{section}.{new}; give {section}.{new} only")
        warnings.warn(f"config key {section}.{old} is deprecated; it is now {section}.{new} "
                      f"(same meaning): rename it", FutureWarning, stacklevel=3)
        body[new] = body.pop(old)
    return body


def validate(cfg: dict) -> dict:
    """Fill defaults and check keys and types; returns a new dict.

    A deprecated key (``RENAMED``) is read under its new name, with a FutureWarning.

    Args:
        cfg: a config as ``{section: {key: value}}`` (e.g. parsed TOML), any of whose
            sections and keys may be left out; it is not changed.

    Returns:
        Every section and key of ``SCHEMA``: ``cfg``'s values, the defaults for the rest.

    Raises:
        ValueError: unknown section or key (with the nearest valid one), wrong type.
    """
    try:
        return _validate(cfg)
    except _KeyProblem as e:            # a plain ValueError: load names the file instead
        raise ValueError(str(e)) from None


def _validate(cfg: dict) -> dict:
    """``validate``, raising ``_KeyProblem`` for a bad section or key (``load`` names the
    file of the chain that sets it)."""
    if not isinstance(cfg, dict):
        raise ValueError(f"config must be a table, got {type(cfg).__name__}")
    cfg = {section: _renamed(section, body) for section, body in cfg.items()}
    out: dict[str, dict] = {}
    for section, body in cfg.items():
        homes = [s for s in SCHEMA if section in SCHEMA[s]]
        if section not in SCHEMA and not isinstance(body, dict) and homes:
            raise _KeyProblem((section, ""), f"config key {section} is outside any section: "
                              "put it under " + " or ".join(f"[{h}] ({h}.{section})"
                                                             for h in homes))
        if section not in SCHEMA:
            raise _KeyProblem((section, ""), f"unknown config section [{section}]"
                              f"{_suggest(section, SCHEMA)}; valid: {sorted(SCHEMA)}")
        if not isinstance(body, dict):
            raise _KeyProblem((section, ""), f"config [{section}] must be a table, got "
                              f"{_short(body)}")
        for key in body:
            if key == "extends":
                raise _KeyProblem((section, key), f"config key extends is under [{section}] "
                                  f"({section}.extends), where it names nothing: extends goes "
                                  f"at the top of the file, before any [section]")
            if key not in SCHEMA[section]:
                raise _KeyProblem((section, key), f"unknown key {section}.{key}"
                                  f"{_suggest(key, SCHEMA[section])}; valid: "
                                  f"{sorted(SCHEMA[section])}")
    for section, keys in SCHEMA.items():
        body = cfg.get(section, {})
        out[section] = {}
        for key, (typ, default) in keys.items():
            value = body.get(key, copy.deepcopy(default))
            try:
                _check_type(f"{section}.{key}", value, typ)
            except ValueError as e:
                raise _KeyProblem((section, key), str(e)) from None
            out[section][key] = value
    method = cfg.get("method", {})
    own = OWN_STEPS.get(method.get("name"))
    if own is not None and "inner_steps" not in method:
        # the learner's own default, not MAML's one inner step: MetaOptNet's Newton steps
        # (one leaves the head unsolved and its implicit gradient off), Reptile's inner
        # steps (its direction is about 0 after one)
        out["method"]["inner_steps"] = own
    return out


# method.inner_steps where a metaoptnet / reptile config leaves it out: the library's default
# (ml.meta.MetaOptNet(steps=10), ml.meta.Reptile(inner_steps=5))
METAOPTNET_STEPS = 10
REPTILE_STEPS = 5
OWN_STEPS = {"metaoptnet": METAOPTNET_STEPS, "reptile": REPTILE_STEPS}


class _KeyProblem(ValueError):
    """A ``_validate`` error about one section or key (``where``: ``(section, key)``, key ""
    for the section itself), so that ``load`` can name the file that sets it."""

    def __init__(self, where: tuple[str, str], message: str):
        super().__init__(message)
        self.where = where


# Classes per Omniglot split (Vinyals splits count the 4 rotations of each character) and
# examples per class, for checks that need no data on disk. Fashion-MNIST families use labels
# 0-4 (split "train") or 5-9 (other splits), with 6000 training images per class.
OMNIGLOT_CLASSES = {"train": 4112, "val": 688, "test": 1692, "trainval": 4800,
                    "background": 964, "evaluation": 659, "background_train": 775,
                    "background_val": 189}
# Characters of the largest alphabet of each Lake split: the most ways a within-alphabet task
# can have (Vinyals splits: rotations are classes of the same alphabet, so 4x).
OMNIGLOT_LARGEST_ALPHABET = {"background": 55, "evaluation": 47, "background_train": 52,
                             "background_val": 55, "train": 220, "val": 184, "test": 188,
                             "trainval": 220}
PER_CLASS = {"omniglot": 20, "fashion_mnist": 6000}
FASHION_MNIST_SPLITS = ("train", "val", "test")
# Families over the user's own data, and their class splits.
USER_FAMILIES = ("folder", "tensors", "table")
TEXT_FAMILIES = ("table",)
AUGMENTS = ("augment_shift", "augment_rotate", "augment_stroke", "augment_elastic")
USER_SPLITS = ("train", "val", "test")
INVERT = ("never", "always", "auto")
HEAD_BASED = ("r2d2", "metaoptnet", "protonet")
NON_TRANSDUCTIVE = ("reptile", *HEAD_BASED)   # learners that can score each query on its own
SCORING = ("as-trained", "transductive", "non-transductive")
METHODS = ("scratch", "pretrain", "maml", "fomaml", "reptile", "anil", "r2d2", "metaoptnet",
           "protonet")
"""The ``method.name`` values a config may give: the meta-learners and the two baselines
(``scratch``: the random initialisation, not meta-trained; ``pretrain``: ordinary supervised
training on every example of the meta-training tasks)."""
FAMILIES = ("sinusoid", "omniglot", "fashion_mnist", *USER_FAMILIES)
"""The ``family.name`` values a config may give: the built-in task families and your own
data (``folder``: an image folder; ``tensors``: an ``.npz`` / ``.pt`` file with ``x`` and
``y``; ``table``: a CSV / TSV / JSONL file of texts and labels)."""
IMAGE_MODELS = ("conv4", "resnet12")
MODELS = ("mlp", *IMAGE_MODELS, "text")
"""The ``model.name`` values a config may give: ``mlp`` (vectors), ``conv4`` and
``resnet12`` (images), ``text`` (the family's Hugging Face encoder with a new head)."""
# The SGD meta-learners with an inner loop to differentiate through, and the method keys
# that apply to them only.
MAML_FAMILY = ("maml", "fomaml", "anil")
MAML_ONLY = ("first_order", "recompute_inner_loop", "compile", "learn_inner_lr")
DTYPES = ("float32", "float64")


def _one_of(where: str, value, options) -> None:
    if value not in options:
        section, _, key = where.partition(".")
        raise _KeyProblem((section, key), f"config {where} = {_short(value)} is not one of "
                          f"{list(options)}{_suggest(str(value), options)}")


def _num_classes(family: str, split: str) -> int | None:
    if family == "omniglot":
        return OMNIGLOT_CLASSES[split]
    if family == "fashion_mnist":
        return 5
    return None


def _check_values(cfg: dict) -> None:
    """The checks of ``check_combinations`` that concern one key's value alone (a name from a
    fixed list, a count, a rate, a seed), whatever the other keys: ``_KeyProblem`` naming the
    key, so that ``load`` names the file that sets it."""
    f, m, me, t, ev = (cfg[k] for k in ("family", "model", "method", "train", "eval"))
    for where, value, options in (
            ("family.name", f["name"], FAMILIES), ("model.name", m["name"], MODELS),
            ("method.name", me["name"], METHODS), ("train.dtype", t["dtype"], DTYPES),
            ("train.lr_schedule", t["lr_schedule"], ("constant", "cosine", "linear")),
            ("train.optimizer", t["optimizer"], ("adam", "sgd")),
            ("model.pool", m["pool"], ("max", "stride")),
            ("model.readout", m["readout"], ("", "mean", "flatten")),
            ("method.head_init", me["head_init"], ("auto", "learned", "zero")),
            ("method.batching", me["batching"], ("auto", "loop", "vmap", "threads")),
            ("method.inner_optimizer", me["inner_optimizer"], ("sgd", "adam")),
            ("method.adam_state", me["adam_state"], ("task", "shared")),
            ("method.head", me["head"], ("svm", "logistic")),
            ("method.grad", me["grad"], ("implicit", "unrolled")),
            ("train.prefetch", t["prefetch"], ("auto", "on", "off"))):
        _one_of(where, value, options)

    def bad(sec: str, key: str, must: str) -> _KeyProblem:
        return _KeyProblem((sec, key), f"config {sec}.{key} must be {must}, got "
                                       f"{_short(cfg[sec][key])}")

    positive = [("family", k) for k in ("shots", "queries", "ways", "image_size")] + \
        [("model", "channels"), ("method", "inner_steps"), ("eval", "tasks")] + \
        [("train", k) for k in ("iterations", "meta_batch", "checkpoint_every", "val_tasks")]
    for sec, key in positive:
        if cfg[sec][key] <= 0:
            raise bad(sec, key, "a positive int")
    for sec, key in (("train", "lr"), ("method", "inner_lr")):
        v = cfg[sec][key]
        if not (v > 0 and v != float("inf")):
            raise bad(sec, key, "a positive number")
    for sec, key in (("train", "weight_decay"), ("train", "clip_grad_norm"),
                     ("method", "scale")):
        if not (cfg[sec][key] >= 0 and math.isfinite(cfg[sec][key])):
            off = "the method's default" if key == "scale" else "off"
            raise bad(sec, key, f"a finite number >= 0 (0: {off})")
    if not (me["lam"] > 0 and math.isfinite(me["lam"])):
        raise bad("method", "lam", "a finite number > 0")
    for sec, key in (("train", "val_every"), ("train", "seed"), ("train", "augment_shift"),
                     ("train", "log_every"), ("family", "split_seed"),
                     ("eval", "shots"), ("eval", "queries"), ("eval", "seed"), ("eval", "ways"),
                     ("eval", "support_shift"), ("eval", "query_shift"), ("eval", "refine"),
                     ("method", "refine")):
        if cfg[sec][key] < 0:
            raise bad(sec, key, ">= 0")
    for sec, key in (("train", "seed"), ("eval", "seed"), ("family", "split_seed")):
        if cfg[sec][key] >= 2 ** 64:
            raise bad(sec, key, "below 2**64 (it seeds a torch.Generator)")
    if not ev["steps"] or any(s < 0 for s in ev["steps"]):
        raise bad("eval", "steps", "a non-empty list of non-negative ints")
    if any(h <= 0 for h in m["hidden"]):
        raise bad("model", "hidden", "positive ints")
    if not 0 <= t["augment_rotate"] <= 180:
        raise bad("train", "augment_rotate", "in [0, 180] degrees")
    if not 0 <= t["augment_stroke"] <= 1:
        raise bad("train", "augment_stroke", "in [0, 1] pixels")
    if not (math.isfinite(t["augment_elastic"]) and t["augment_elastic"] >= 0):
        raise bad("train", "augment_elastic", "a finite number >= 0 pixels")
    if ev["scoring"] not in SCORING:
        raise bad("eval", "scoring", f"one of {list(SCORING)}")
    for sec, key in ((s, k) for s in ("eval", "method")
                     for k in ("refine_temperature", "refine_weight")):
        if not (math.isfinite(cfg[sec][key]) and cfg[sec][key] > 0):
            raise bad(sec, key, "a finite number > 0")


def check_combinations(cfg: dict) -> None:
    """Check values and combinations of a validated config that are impossible whatever the
    data; ``metaloop train`` calls it before any data is loaded or training starts.

    Args:
        cfg: a validated config (what ``validate`` or ``load`` returns: every section and
            key present).

    Raises:
        ValueError: naming the keys: an unknown name, a non-positive count, ``ways`` above the
            classes of a split, ``shots + queries`` above the examples per class,
            ``first_order`` on a learner without second-order variant (Reptile, the
            head-based R2D2/MetaOptNet...), a model that cannot read the family's inputs
            (an mlp on a folder's images, images smaller than the max-pools need), a
            negative or non-finite ridge strength, scale or gradient clip, a seed above
            what a torch.Generator takes, no eval.steps, a sinusoid trained on its held-out
            seed.
    """
    f, m, me, t, ev = (cfg[k] for k in ("family", "model", "method", "train", "eval"))
    _check_values(cfg)
    if f["name"] == "omniglot":
        _one_of("family.split", f["split"], OMNIGLOT_CLASSES)
        _one_of("eval.split", ev["split"], OMNIGLOT_CLASSES)
        for where, value in (("family.drawers", f["drawers"]), ("eval.drawers", ev["drawers"])):
            _one_of(where, value, ("any", "shared"))
        _check_within_alphabet(f, ev)
    elif f["within_alphabet"] or f["rotations"] or f["reflections"] \
            or ev["within_alphabet"] or f["drawers"] != "any" or ev["drawers"] != "any":
        raise ValueError(f"config family.within_alphabet, family.rotations, "
                         f"family.reflections, family.drawers, eval.within_alphabet and "
                         f"eval.drawers apply to omniglot, not "
                         f"family.name = {f['name']!r}")
    if f["name"] == "fashion_mnist":        # labels 0-4 for "train", 5-9 for the others
        _one_of("family.split", f["split"], FASHION_MNIST_SPLITS)
        _one_of("eval.split", ev["split"], FASHION_MNIST_SPLITS)
    if t["device_tasks"] and f["name"] != "omniglot":
        raise ValueError(f"config train.device_tasks = true applies to omniglot, not "
                         f"family.name = {f['name']!r}")
    if t["cuda_graph"]:
        needs = [what for what, bad in (
            ("train.device_tasks = true", not t["device_tasks"]),
            ("train.optimizer = \"adam\"", t["optimizer"] != "adam"),
            ("train.clip_grad_norm = 0", t["clip_grad_norm"] != 0),
            ("train.prefetch = \"auto\" or \"off\"", t["prefetch"] == "on")) if bad]
        if needs:
            raise ValueError(f"config train.cuda_graph = true replays one recorded step on the "
                             f"GPU; it needs {', '.join(needs)}")

    name = me["name"]
    if me["first_order"] and name not in MAML_FAMILY:
        why = (" (a head-based learner: its head is solved exactly, there is no first-order "
               "variant)" if name in HEAD_BASED else "")
        raise ValueError(f"config method.first_order = true: first_order applies to maml and "
                         f"anil, not {name!r}{why}")
    for key, what in (("recompute_inner_loop", "recomputing the inner loop"),
                      ("compile", "compiling meta-training")):
        if me[key] and name not in MAML_FAMILY:
            raise ValueError(f"config method.{key} = true: {what} applies to maml, fomaml "
                             f"and anil, not {name!r}")
    if me["recompute_inner_loop"] and me["batching"] == "vmap":
        raise ValueError('config method.recompute_inner_loop = true needs batching = "loop" '
                         'or "auto", not "vmap"')
    if me["compile"] and me["batching"] == "threads":
        raise ValueError('config method.compile = true needs batching = "loop", "vmap" or '
                         '"auto", not "threads" (it compiles the looped query pass on one '
                         'thread, or the vmapped tasks)')
    if me["batching"] == "threads" and name not in MAML_FAMILY:
        raise ValueError(f'config method.batching = "threads" applies to maml, fomaml and '
                         f'anil, not {name!r} (use "loop" or "auto")')
    if me["learn_inner_lr"] and name not in MAML_FAMILY:
        raise ValueError(f"config method.learn_inner_lr = true: learned inner step sizes "
                         f"apply to maml, fomaml and anil, not {name!r}")
    if me["learn_inner_lr"] and me["recompute_inner_loop"]:
        raise ValueError("config method.learn_inner_lr = true and method.recompute_inner_loop "
                         "= true: the recomputed inner step takes a fixed step size; drop one")
    zero_head = me["head_init"] == "zero" or (me["head_init"] == "auto" and name == "pretrain")
    if ev["ways"] not in (0, f["ways"]) and name not in HEAD_BASED and not zero_head:
        raise ValueError(f"config eval.ways = {ev['ways']} differs from family.ways = "
                         f"{f['ways']}: only {sorted(HEAD_BASED)}, pretrain and methods with "
                         f"method.head_init = 'zero' start each task's head afresh and can be "
                         f"tested at another number of ways; {name!r} has a learned head of "
                         f"family.ways outputs")
    if ev["ways"] == 1:
        raise ValueError("config eval.ways must be 0 (the family's) or >= 2, got 1")
    if f["name"] != "sinusoid" and f["ways"] == 1:
        raise ValueError("config family.ways must be >= 2 for classification: a 1-way task "
                         "is always answered right, got 1")
    if f["name"] == "sinusoid" and t["seed"] == ev["seed"] and name != "scratch":
        raise ValueError(f"config train.seed = eval.seed = {t['seed']}: the sinusoid's "
                         f"held-out tasks differ from its training tasks only by their seed, "
                         f"so training would see the very tasks it is scored on; give "
                         f"eval.seed another value")
    for key, default in (("inner_batch", 0), ("test_batch", 0), ("transductive", True)):
        if key == "transductive" and name in NON_TRANSDUCTIVE:
            continue
        if me[key] != default and name != "reptile":
            only = sorted(NON_TRANSDUCTIVE) if key == "transductive" else ["reptile"]
            raise ValueError(f"config method.{key} = {me[key]!r} applies to "
                             f"{', '.join(only)} only, not {name!r}")
        if key != "transductive" and me[key] < 0:
            raise ValueError(f"config method.{key} must be >= 0 (0: the whole support set), "
                             f"got {me[key]!r}")
    if me["adam_state"] != "task" and (name != "reptile" or me["inner_optimizer"] != "adam"):
        raise ValueError(f"config method.adam_state = {me['adam_state']!r} applies to reptile "
                         f"with method.inner_optimizer = \"adam\" only")
    if me["inner_optimizer"] != "sgd" and name != "reptile":
        raise ValueError(f"config method.inner_optimizer = {me['inner_optimizer']!r} applies "
                         f"to reptile only, not {name!r}")
    if m["readout"] and m["name"] != "conv4":
        raise ValueError(f"config model.readout = {m['readout']!r} applies to conv4 only, not "
                         f"model.name = {m['name']!r}")
    if (f["name"] in TEXT_FAMILIES) != (m["name"] == "text"):
        raise ValueError(f"config model.name = {m['name']!r} and family.name = {f['name']!r}: "
                         f"model 'text' (the family's encoder with a new head) reads the "
                         f"texts of family 'table', and only it does")
    if f["name"] in TEXT_FAMILIES:
        if f["max_length"] <= 0:
            raise ValueError(f"config family.max_length must be a positive int, got "
                             f"{f['max_length']!r}")
        for key in AUGMENTS:
            if t[key]:
                raise ValueError(f"config train.{key} = {t[key]} transforms images, but "
                                 f"family.name = 'table' gives texts")
    if ev["scoring"] != "as-trained" and me["name"] not in NON_TRANSDUCTIVE:
        raise ValueError(f"config eval.scoring = {ev['scoring']!r} applies to "
                         f"{', '.join(sorted(NON_TRANSDUCTIVE))}, not {me['name']!r}")
    if me["refine"] and me["name"] != "protonet":
        raise ValueError(f"config method.refine = {me['refine']} trains with prototypes refined "
                         f"by the queries, which only method.name = 'protonet' has, not "
                         f"{me['name']!r}")
    if me["refine"] and not me["transductive"]:
        raise ValueError(f"config method.refine = {me['refine']} refines the prototypes with "
                         f"all of a task's queries, but method.transductive = false scores each "
                         f"query on its own; drop one")
    if ev["refine"] and me["name"] != "protonet":
        raise ValueError(f"config eval.refine = {ev['refine']} refines prototypes, which only "
                         f"method.name = 'protonet' has, not {me['name']!r}")
    if ev["refine"] and (ev["scoring"] == "non-transductive" or (
            ev["scoring"] == "as-trained" and not me["transductive"])):
        raise ValueError(f"config eval.refine = {ev['refine']} refines the prototypes with all "
                         f"of a task's queries, but its queries are scored non-transductively "
                         f"(eval.scoring = {ev['scoring']!r}, method.transductive = "
                         f"{me['transductive']}); use eval.scoring = 'transductive' or "
                         f"eval.refine = 0")
    if ev["refine_jointly"] and not ev["refine"]:
        raise ValueError("config eval.refine_jointly = true shares the refinement's assignment "
                         "between an ensemble's members, but eval.refine = 0 refines nothing; "
                         "set eval.refine > 0 (metaloop eval --refine K), or turn "
                         "refine_jointly off (--no-refine-jointly)")
    if f["name"] in ("omniglot", "folder") and f["image_size"] < 16 and (
            m["name"] == "resnet12" or (m["name"] == "conv4" and m["pool"] == "max")):
        what = "model.pool = 'max'" if m["name"] == "conv4" else "model.name = 'resnet12'"
        fix = " or model.pool = 'stride' (any size)" if m["name"] == "conv4" else ""
        raise ValueError(f"config family.image_size = {f['image_size']} is too small for "
                         f"{what}: its four 2x2 max-pools need images of at least 16x16; set "
                         f"family.image_size >= 16{fix}")
    if f["name"] == "folder" and m["name"] == "mlp":
        raise ValueError("config model.name = 'mlp' reads vectors, but family.name = 'folder' "
                         "gives images: use model.name = 'conv4' or 'resnet12'")
    if f["name"] in USER_FAMILIES:
        _check_user_family(f, ev)
        return                      # the rest depends on the data: checked when it is read
    image = f["name"] != "sinusoid"
    if m["name"] == "mlp" and image:
        raise ValueError(f"config model.name = 'mlp' reads vectors, but family.name = "
                         f"{f['name']!r} gives images: use model.name = 'conv4'")
    if m["name"] in IMAGE_MODELS and not image:
        raise ValueError(f"config model.name = {m['name']!r} needs an image family, not "
                         f"'sinusoid': use model.name = 'mlp'")
    for key, what in zip(AUGMENTS, ("translates", "rotates", "thickens or thins",
                                    "bends")):
        if t[key] and not image:
            raise ValueError(f"config train.{key} = {t[key]} {what} images, but family.name "
                             f"= {f['name']!r} gives vectors")
    for key in ("support_shift", "query_shift"):
        if ev[key] and not image:
            raise ValueError(f"config eval.{key} = {ev[key]} shifts images, but "
                             f"family.name = {f['name']!r} gives vectors")
    if not image:
        return
    splits = [("family.split", f["split"]), ("eval.split", ev["split"])]
    if t["val_every"] and ev["split"] == "test":       # validation then uses split "val"
        splits.append(("eval.split (validation uses 'val')", "val"))
    for where, split in splits:
        n = _num_classes(f["name"], split)
        key, ways = ("eval.ways", ev["ways"]) if where != "family.split" and ev["ways"] \
            else ("family.ways", f["ways"])
        if ways > n:
            raise ValueError(f"impossible config: {key} = {ways} but {f['name']} "
                             f"{where} = {split!r} has only {n} classes")
    per_class = PER_CLASS[f["name"]]
    shots, queries = ev["shots"] or f["shots"], ev["queries"] or f["queries"]
    for what, s, q in (("family.shots + family.queries", f["shots"], f["queries"]),
                       ("eval.shots + eval.queries (0 = the family's)", shots, queries)):
        if s + q > per_class:
            raise ValueError(f"impossible config: {what} = {s} + {q} = {s + q} but {f['name']} "
                             f"has only {per_class} examples per class")


class UnreadKeyWarning(UserWarning):
    """A config file sets a key that the run it describes never reads (``warn_unread``)."""


class SharedSplitWarning(UserWarning):
    """The held-out tasks are drawn from classes the run meta-trains on (``shared_split``):
    their score measures the training classes, not new ones."""


# Omniglot splits that hold other splits' classes: (Vinyals) trainval = train + val; (Lake)
# background = background_train + background_val.
# The splits of one scheme made of smaller ones, and the pairs of the two schemes (Lake's
# background / evaluation alphabets, Vinyals' train / val / test characters) that share
# characters: Vinyals' val draws on background alphabets only, its test on evaluation
# alphabets only, its train on both.
_OMNIGLOT_ATOMS = {"trainval": {"train", "val"},
                   "background": {"background_train", "background_val"}}
_OMNIGLOT_CROSS = {("background_train", "train"), ("background_train", "val"),
                   ("background_val", "train"), ("background_val", "val"),
                   ("evaluation", "train"), ("evaluation", "test")}


def _omniglot_shared(a: str, b: str) -> bool:
    """Whether Omniglot's splits ``a`` and ``b`` (of either scheme) share characters."""
    left, right = _OMNIGLOT_ATOMS.get(a, {a}), _OMNIGLOT_ATOMS.get(b, {b})
    return bool(left & right) or any((x, y) in _OMNIGLOT_CROSS or (y, x) in _OMNIGLOT_CROSS
                                     for x in left for y in right)


def shared_split(family: dict, split: str) -> bool:
    """Whether the held-out ``split`` of the ``[family]`` section ``family`` shares classes
    with the split it meta-trains on (``family.split``): the same split, one that contains
    the other (Omniglot's ``trainval`` and ``background``), a split of Omniglot's other
    scheme with characters in common (Lake's alphabets and Vinyals' characters: all but
    background with Vinyals' test and evaluation with Vinyals' val), or Fashion-MNIST's
    held-out labels 5-9, which every split but ``train`` uses. Never for the sinusoid.

    Args:
        family: the ``[family]`` section of a validated config (its ``name`` and ``split``
            are read).
        split: the held-out split (``eval.split``).
    """
    name, train = family["name"], family["split"]
    if name == "sinusoid":
        return False
    if name == "fashion_mnist":
        return (train == "train") == (split == "train")
    if name == "omniglot":
        return _omniglot_shared(train, split)
    return train == split


def warn_shared_split(cfg: dict, *, family: dict | None = None, where: str = "") -> str | None:
    """Warn (``SharedSplitWarning``) when the held-out tasks of ``cfg`` (``eval.split``) come
    from the classes a run meta-trains on (``family``: that run's ``[family]`` section;
    default ``cfg``'s). Returns the message, or None when the splits share no class.

    Args:
        cfg: a validated config; its ``eval.split`` is the held-out split.
        family: the ``[family]`` section of the run meta-trained; None: ``cfg["family"]``.
        where: the text the message starts with, naming the run (an ensemble member's
            ``"<run path>: "``); "" names none.
    """
    family = cfg["family"] if family is None else family
    split = cfg["eval"]["split"]
    if not shared_split(family, split):
        return None
    same = "is" if family["split"] == split else "shares classes with"
    text = (f"{where}eval.split = {split!r} {same} family.split = {family['split']!r}, the "
            f"split the run is meta-trained on, so the held-out evaluation scores the training "
            f"classes, not new ones (its accuracy is not a few-shot result); hold out another "
            f"split (eval.split, or --split in metaloop eval)")
    warnings.warn(text, SharedSplitWarning, stacklevel=2)
    return text


def check_training(cfg: dict, written=()) -> None:
    """Check what only meta-training a new run needs (``metaloop train``, before any data is
    read); unlike ``check_combinations`` it is not asked of a trained run again when it is
    evaluated.

    Args:
        cfg: a validated config.
        written: the ``(section, key)`` pairs its file sets (``written_keys``; empty: none):
            ``eval.steps`` is refused for a solved head only when the file sets it (the
            default is evaluated after step 0 alone, see
            ``metaloop.recipes.evaluation.eval_config``).

    Raises:
        ValueError: ``eval.steps`` above 0 for r2d2, metaoptnet or protonet, whose head is
            solved per task, not stepped; one of them on the sinusoid (regression); a
            ``train.init`` that holds no saved run; validation on Omniglot's evaluation
            alphabets while training; Reptile's ``method.inner_batch`` above
            the support set of a training task, or ``method.test_batch`` above that of a
            held-out task (each naming both).
    """
    f, me, ev = cfg["family"], cfg["method"], cfg["eval"]
    name = me["name"]
    val_every = cfg["train"]["val_every"]
    if val_every and f["name"] == "omniglot" and ev["split"] == "evaluation":
        raise ValueError(f"config train.val_every = {val_every} with eval.split = "
                         f"'evaluation': validation would read the challenge's test alphabets "
                         f"while training; validate on held-out background alphabets "
                         f"(family.split = 'background_train', eval.split = 'background_val') "
                         f"and test with metaloop eval --split evaluation, or set "
                         f"train.val_every = 0")
    if name in HEAD_BASED and ("eval", "steps") in set(written) and max(ev["steps"],
                                                                         default=0) > 0:
        newton = (" (its Newton steps are method.inner_steps)" if name == "metaoptnet"
                  else "")
        raise ValueError(f"config eval.steps = {ev['steps']!r}: {name} solves its head per "
                         f"task, it is not stepped{newton}, so every step would score the "
                         f"same as step 0; use eval.steps = [0]")
    if name in HEAD_BASED and f["name"] == "sinusoid":
        raise ValueError(f"config method.name = {name!r} solves a classification head per "
                         f"task, but family.name = 'sinusoid' is regression: use maml, fomaml, "
                         f"reptile, anil, pretrain or scratch, or a classification family")
    init = cfg["train"]["init"]
    if init:
        from metaloop.train.checkpoint import saved_run
        if not saved_run(init):
            raise ValueError(f"train.init = {_short(init)}: no saved run there (a run directory "
                             f"with a LATEST file, or a ckpt-* directory)")
    if name != "reptile":
        return
    sine = f["name"] == "sinusoid"              # a regression task's support: its shots
    grown = (2 * ev["support_shift"] + 1) ** 2   # eval.support_shift's copies of each image
    for key, ways, shots, keys, copies in (
            ("inner_batch", f["ways"], f["shots"], ("family.ways", "family.shots"), 1),
            ("test_batch", ev["ways"] or f["ways"], ev["shots"] or f["shots"],
             ("eval.ways", "eval.shots"), grown)):
        size = (1 if sine else ways) * shots * copies
        if me[key] <= size:
            continue
        what = [f"{keys[1]} = {shots}"] if sine else \
            [f"{keys[0]} x {keys[1]} = {ways} x {shots}"]
        if key == "test_batch" and (ev["ways"] == 0 or ev["shots"] == 0):
            what[0] += " (0 = the family's)"
        if copies > 1:
            what.append(f"x {copies} shifted copies (eval.support_shift)")
        total = f" = {size}" if not sine or copies > 1 else ""
        raise ValueError(f"config method.{key} = {me[key]} exceeds the support set of "
                         f"{' '.join(what)}{total} examples, so every inner step would take "
                         f"all {size} (as method.{key} = 0 does); set method.{key} <= {size}, "
                         f"or 0 for the whole support set")


# Keys that only some families, models or methods read: (section, keys, whether a validated
# config reads them, what they are for). Every other key is read by every run (the names,
# shots / queries, the [train] and [eval] keys that apply to any learner), or its non-default
# values are refused by check_combinations where they apply to nothing; a key listed here is
# one a config may still write (its default, or a run of another kind) to no effect.
_IMAGE_FAMILIES = ("omniglot", "fashion_mnist", "folder", "tensors")   # tensors: maybe images
_SCRATCH_UNTRAINED = ("iterations", "meta_batch", "lr", "lr_schedule", "optimizer",
                      "weight_decay", "clip_grad_norm", "checkpoint_every", "val_every",
                      "val_tasks", "log_every", *AUGMENTS)
_READERS: tuple = (
    ("family", ("ways", "root", "split"), lambda c: c["family"]["name"] != "sinusoid",
     "family", "the sinusoid family draws its own functions"),
    ("eval", ("split",), lambda c: c["family"]["name"] != "sinusoid",
     "family", "the sinusoid family draws its own functions"),
    ("family", ("image_size",), lambda c: c["family"]["name"] in ("omniglot", "folder"),
     "family", "only omniglot and folder images are resized"),
    ("family", ("within_alphabet", "rotations", "reflections", "drawers"),
     lambda c: c["family"]["name"] == "omniglot", "family", "an Omniglot key"),
    ("family", ("class_depth", "channels", "invert", "skip_corrupt"),
     lambda c: c["family"]["name"] == "folder", "family", "an image-folder key"),
    ("family", ("split_fractions", "split_seed", "split_files", "train_classes",
                "val_classes", "test_classes", "drop_small"),
     lambda c: c["family"]["name"] in USER_FAMILIES, "family",
     "a key of your own data (folder, tensors, table)"),
    ("family", ("text_column", "label_column", "delimiter", "quoting", "encoder",
                "max_length"),
     lambda c: c["family"]["name"] in TEXT_FAMILIES, "family", "a key of the table family"),
    ("model", ("hidden",), lambda c: c["model"]["name"] == "mlp", "model",
     "the mlp's hidden widths"),
    ("model", ("pool", "readout"), lambda c: c["model"]["name"] == "conv4", "model",
     "a conv4 key"),
    ("model", ("channels",), lambda c: c["model"]["name"] in IMAGE_MODELS, "model",
     "the width of conv4 and resnet12"),
    ("method", ("inner_lr", "head_init"), lambda c: c["method"]["name"] not in HEAD_BASED,
     "method", "it solves its head in closed form, with no SGD steps"),
    ("method", ("inner_steps",), lambda c: c["method"]["name"] not in ("r2d2", "protonet"),
     "method", "it solves its head in closed form, with no steps"),
    # fomaml is maml with first_order = true: a config may say so, not the opposite
    ("method", ("first_order",), lambda c: c["method"]["name"] in ("maml", "anil") or (
        c["method"]["name"] == "fomaml" and c["method"]["first_order"]), "method",
     "fomaml is first-order whatever first_order says; the others have no second order"),
    ("method", ("recompute_inner_loop", "compile", "learn_inner_lr"),
     lambda c: c["method"]["name"] in MAML_FAMILY, "method", "a key of maml, fomaml and anil"),
    ("method", ("inner_optimizer", "inner_batch", "test_batch", "adam_state"),
     lambda c: c["method"]["name"] == "reptile", "method", "a Reptile key"),
    ("method", ("transductive",), lambda c: c["method"]["name"] in NON_TRANSDUCTIVE, "method",
     "only reptile and the solved heads can score queries one by one"),
    ("method", ("lam",), lambda c: c["method"]["name"] in ("r2d2", "metaoptnet"), "method",
     "the ridge strength of r2d2 and metaoptnet"),
    ("method", ("head", "grad"), lambda c: c["method"]["name"] == "metaoptnet", "method",
     "a MetaOptNet key"),
    ("method", ("scale", "learn_scale"), lambda c: c["method"]["name"] in HEAD_BASED, "method",
     "the output scale of r2d2, metaoptnet and protonet"),
    ("train", AUGMENTS, lambda c: c["family"]["name"] in _IMAGE_FAMILIES, "family",
     "it augments images"),
    ("train", ("device_tasks",), lambda c: c["family"]["name"] == "omniglot", "family",
     "an Omniglot key"),
    ("train", _SCRATCH_UNTRAINED, lambda c: c["method"]["name"] != "scratch", "method",
     "scratch is not meta-trained"),
    ("eval", ("within_alphabet", "drawers"), lambda c: c["family"]["name"] == "omniglot",
     "family", "an Omniglot key"),
    ("eval", ("support_shift", "query_shift"),
     lambda c: c["family"]["name"] in _IMAGE_FAMILIES, "family", "it shifts images"),
    ("eval", ("scoring",), lambda c: c["method"]["name"] in NON_TRANSDUCTIVE, "method",
     "only reptile and the solved heads can score queries one by one"),
    ("eval", ("refine", "refine_temperature", "refine_weight", "refine_jointly"),
     lambda c: c["method"]["name"] == "protonet", "method", "only protonet has prototypes"),
)


def check_compiler(cfg: dict, device) -> None:
    """A compiled run on the CPU needs a working C++ compiler (torch.compile's inductor
    builds its kernels with one): checked before any data is read (``metaloop train``), so
    a run without one is refused by name, not stopped by inductor's traceback at its first
    iteration. Cheap, and asked only when ``method.compile`` is true and ``device`` is the
    CPU (``metaloop.meta._strategies.cpu_compiler_problem``).

    Raises:
        ValueError: naming ``method.compile``, what was tried, and the way on.
    """
    me = cfg.get("method", {})
    if not me.get("compile") or me.get("name") not in MAML_FAMILY \
            or not str(device or "cpu").startswith("cpu"):
        return
    from metaloop.meta._strategies import compiler_advice, cpu_compiler_problem
    problem = cpu_compiler_problem()
    if problem:
        raise ValueError(f"method.compile = true "
                         f"{compiler_advice(problem, 'method.compile = false')}")


def unread_keys(cfg: dict, written) -> list[tuple[str, str, str]]:
    """The keys of ``written`` (``(section, key)`` pairs a file sets) that a run of the
    validated ``cfg`` never reads, as ``(section, key, why)`` in schema order: e.g.
    ``method.inner_lr`` for protonet, ``model.hidden`` for conv4, ``family.drawers`` for a
    family other than omniglot, ``train.augment_*`` for the sinusoid. Keys not written (the
    defaults ``validate`` fills in) are never listed.

    Args:
        cfg: a validated config: the run whose reads are asked about.
        written: the ``(section, key)`` pairs a config file sets (any iterable of them, e.g.
            the keys of ``written_keys(path)``).
    """
    written = set(written)
    out = []
    for section, keys, reads, by, why in _READERS:
        if reads(cfg):
            continue
        name = cfg[by]["name"]
        who = name if by == "method" else f"{by}.name = {name!r}"
        out += [(section, key, f"{who} ({why})") for key in keys if (section, key) in written]
    return sorted(out, key=lambda t: _SCHEMA_ORDER[t[:2]])


_SCHEMA_ORDER = {(s, k): i for i, (s, k) in enumerate((s, k) for s in SCHEMA for k in SCHEMA[s])}


def warn_unread(cfg: dict, path) -> list[str]:
    """Warn (``UnreadKeyWarning``, one per key) for each key the config file ``path`` or a
    file it ``extends`` sets that the run of ``cfg`` (``load(path)``, possibly changed since)
    never reads, naming the file that sets it. A warning, not an error: a config that
    extends a base written for another method inherits keys it cannot remove. A resolved
    config that sets every key (``to_toml``, ``metaloop train --print-config``) is not
    warned about: it spells out every default by design. Returns the messages.

    Args:
        cfg: the validated config of the run (``load(path)``, possibly changed since).
        path: the config file (its ``extends`` chain is read again, as ``written_keys``).

    Raises:
        FileNotFoundError: as :func:`written_keys` (which it calls on ``path``).
        ValueError: as :func:`written_keys`.
    """
    return warn_unread_by_all([cfg], path)


def warn_unread_by_all(cfgs: list[dict], path, also: dict | None = None) -> list[str]:
    """``warn_unread`` for several runs of one config file (``metaloop compare --config``:
    one validated config per method): the keys that no run of ``cfgs`` reads, with the
    first run's reason; ``also``: ``{(section, key): (why, fix)}`` for keys the caller does
    not read (compare's ``method.name``), warned about when the file sets them, with ``why``
    in place of the reason and ``fix`` in place of "remove it". Returns the messages."""
    path = Path(path)
    where = written_keys(path)
    if all((s, k) in where for s in SCHEMA for k in SCHEMA[s]):
        return []       # a resolved config (--print-config, to_toml) spells out every key
    unread = [{(s, k): why for s, k, why in unread_keys(c, where)} for c in cfgs]
    common = [sk for sk in unread[0] if all(sk in u for u in unread[1:])] if unread else []
    extra = {sk: why for sk, why in (also or {}).items() if sk in where}
    common = sorted({*common, *extra}, key=lambda sk: _SCHEMA_ORDER.get(sk, len(_SCHEMA_ORDER)))
    raw = read(path) if extra else {}
    cfg = cfgs[0] if cfgs else {}
    messages = []
    for (section, key) in common:
        why, own_fix = extra.get((section, key)) or (
            unread[0][(section, key)] if len(cfgs) == 1 else
            f"any method compared ({', '.join(c['method']['name'] for c in cfgs)})",
            "remove it")
        src = where[(section, key)]
        value = json.dumps(raw[section][key] if (section, key) in extra else
                           cfg[section][key])
        if src == path:
            origin, fix = f"({src})", own_fix
        else:
            origin = f"(inherited from {src}, which {path} extends)"
            fix = "a config cannot unset an inherited key: ignore this, or extend a base " \
                  "without it"
        messages.append(f"config {section}.{key} = {value} {origin} changes nothing for "
                        f"{why}; {fix}")
    for text in messages:
        warnings.warn(text, UnreadKeyWarning, stacklevel=2)
    return messages


def _check_user_family(f: dict, ev: dict) -> None:
    """The keys of the folder / tensors / table families that need no data to check."""
    if not f["root"]:
        what = {"folder": "image folder", "tensors": ".npz or .pt file with x and y",
                "table": ".csv, .tsv or .jsonl file of texts and labels"}[f["name"]]
        raise ValueError(f"config family.root must name the {what} for family.name = "
                         f"{f['name']!r}")
    for where, split in (("family.split", f["split"]), ("eval.split", ev["split"])):
        _one_of(where, split, USER_SPLITS)
    _one_of("family.class_depth", f["class_depth"], (1, 2))
    _one_of("family.channels", f["channels"], (1, 3))
    _one_of("family.invert", f["invert"], INVERT)
    _one_of("family.quoting", f["quoting"], ("csv", "none"))
    fr = f["split_fractions"]
    if len(fr) != 3 or not all(v >= 0 for v in fr) or not abs(sum(fr) - 1) <= 1e-6:
        raise ValueError(f"config family.split_fractions must be [train, val, test] >= 0 "
                         f"summing to 1, got {_short(fr)}")
    if f["split_files"] and len(f["split_files"]) != 3:
        raise ValueError(f"config family.split_files must list 3 files [train, val, test], "
                         f"got {_short(f['split_files'])}")
    # in Unicode NFC, as class names are matched: "café" and "cafe\u0301" are one class
    lists = [{unicodedata.normalize("NFC", str(c)) for c in f[f"{s}_classes"]}
             for s in USER_SPLITS]
    both = [(a, b) for a, b in ((0, 1), (0, 2), (1, 2)) if lists[a] & lists[b]]
    if both:
        a, b = both[0]
        shared = sorted(lists[a] & lists[b])
        raise ValueError(f"config family.{USER_SPLITS[a]}_classes and "
                         f"{USER_SPLITS[b]}_classes share classes {shared[:5]}")


def _check_within_alphabet(f: dict, ev: dict) -> None:
    """Omniglot's within-alphabet rate, rotations and the ways an alphabet can supply (with
    its rotations and mirror images in training)."""
    if not 0 <= f["within_alphabet"] <= 1:
        raise ValueError(f"config family.within_alphabet must be a rate in [0, 1], got "
                         f"{f['within_alphabet']!r}")
    if f["rotations"] and f["split"] in ("train", "val", "test", "trainval"):
        raise ValueError(f"config family.rotations = true applies to the Lake splits; "
                         f"family.split = {f['split']!r} (Vinyals) has rotations as classes "
                         f"already")
    for key, on, split, ways in (
            ("family.within_alphabet", f["within_alphabet"] > 0, f["split"], f["ways"]),
            ("eval.within_alphabet", ev["within_alphabet"], ev["split"], ev["ways"] or f["ways"])):
        train = key.startswith("family")
        copies = (4 if train and f["rotations"] else 1) * (2 if train and f["reflections"] else 1)
        most = OMNIGLOT_LARGEST_ALPHABET[split] * copies
        if on and ways > most:
            lower = "family.ways" if train else "eval.ways (--ways in metaloop eval)"
            raise ValueError(f"impossible config: {key} needs {ways} characters of one "
                             f"alphabet, but the largest alphabet of split {split!r} has "
                             f"{most}: lower {lower} to at most {most}")


def load(path) -> dict:
    """Read and validate a TOML config file.

    A config may start from another one: a top-level ``extends = "base.toml"`` (a path
    relative to the file that names it) reads that config first, and this file's keys then
    replace the base's one by one, section by section; keys it does not name keep the base's
    values. A base may extend another in turn. The result is validated as one config, so a
    run stores the whole resolved config, not the chain of files.

    Args:
        path: the TOML file (a ``str`` or ``os.PathLike``).

    Returns:
        The validated config (as :func:`validate` returns it).

    A leading UTF-8 byte-order mark is ignored. Besides keys and types, the values that no
    run can take whatever the other keys are (a count below 1, a non-finite rate, a name not
    in its list: the one-key checks of :func:`check_combinations`) are refused here, naming
    the file; the combinations are left to :func:`check_combinations`.

    Raises:
        FileNotFoundError: the file, or a config it extends, does not exist (both named).
        ValueError: a folder, device or pipe in place of the file or of a config it
            extends, a file over ``MAX_CONFIG_BYTES`` (1 MB) or nested deeper than
            ``MAX_CONFIG_DEPTH`` (64), invalid TOML,
            an ``extends`` that is not a path string (or that sits inside a section), a
            chain of ``extends`` that returns to a file already in it, a chain that sets no
            key at all (an empty file is usually a failed write), or a bad section, key,
            type or value, prefixed with the file of the chain that sets it (``config file
            child.toml: unknown key train.itertions ...``, ``config file base.toml (which
            child.toml extends): train.iterations must be a positive int, got -1``).
    """
    path = _or_shipped(Path(path), str(path))   # a named config's shipped copy, if not here
    where: dict[tuple[str, str], Path] = {}
    raw = _read_chain(path, (), where)
    try:
        cfg = _validate(raw)
        if not any(key for _, key in where):
            raise ValueError(f"config file {path} sets no key; an empty file is usually "
                             f"a failed write: give at least [family] name and [method] name, "
                             f"or use --example-config")
        _check_values(cfg)
    except _KeyProblem as e:
        raise _in_file(e, path, where) from None
    return cfg


def _in_file(problem: _KeyProblem, path: Path, where: dict) -> ValueError:
    """``problem`` as a ValueError prefixed with the file of ``path``'s chain that sets its
    key (``config file base.toml (which child.toml extends): train.iterations ...``); without
    a file when none sets it (a default)."""
    src = where.get(problem.where)
    if src is None:
        return ValueError(str(problem))
    origin = f"{src}" if src == path else f"{src} (which {path} extends)"
    return ValueError(f"config file {origin}: {str(problem).removeprefix('config ')}")


def read(path, *, check_except: tuple[str, ...] | None = None) -> dict:
    """The TOML of a config file with its ``extends`` chain applied (see :func:`load`), not
    filled with defaults: for callers that merge a partial config into another, as
    ``metaloop compare --config`` does. Raises as :func:`load` does for the files and the
    chain.

    Args:
        path: the config file.
        check_except: None: not validated. Else the top-level tables the caller checks
            itself (compare's ``("compare",)``); the rest is validated as :func:`load` does
            its sections, keys and types (not its values), a bad one named with the file of
            the chain that sets it.
    """
    path = _or_shipped(Path(path), str(path))   # a named config's shipped copy, if not here
    where: dict[tuple[str, str], Path] = {}
    raw = _read_chain(path, (), where)
    if check_except is not None:
        try:
            _validate({k: v for k, v in raw.items() if k not in check_except})
        except _KeyProblem as e:
            raise _in_file(e, path, where) from None
    return raw


def written_keys(path) -> dict[tuple[str, str], Path]:
    """Which file of a config's ``extends`` chain sets each key it sets: ``{(section, key):
    the file}`` (the last file in the chain that names it, i.e. the one whose value is
    used); keys no file names, which ``validate`` fills with defaults, are absent. A
    deprecated key (``RENAMED``) is listed under its new name. Raises as :func:`read`.

    Args:
        path: the config file (a ``str`` or ``os.PathLike``); the files it ``extends`` are
            read too.
    """
    where: dict[tuple[str, str], Path] = {}
    _read_chain(Path(path), (), where)
    return {sk: p for sk, p in where.items() if sk[1]}


def _read_chain(path: Path, chain: tuple[Path, ...],
                where: dict[tuple[str, str], Path] | None = None,
                text: str | None = None) -> dict:
    """The raw TOML of ``path`` on top of the config it ``extends`` (recursively); ``where``
    gets the file that sets each key (see :func:`written_keys`), and under ``(section, "")``
    the last file that names each top-level section or key. ``text``: the path as written
    (``--config``'s, an ``extends``'s), whose form decides the fallback to a shipped config
    (:func:`shipped_config`) when nothing is at ``path``."""
    text = str(path) if text is None else text
    path = _or_shipped(path, text)
    if path.is_dir():
        what = f"config file {chain[-1]} extends {path}, which" if chain else f"{path}"
        raise ValueError(f"{what} is a folder, not a config file (a config is a TOML file, "
                         f"e.g. one of configs/)")
    what = f"config file {chain[-1]} extends {path}, which" if chain else f"config file {path}"
    if not path.is_file():
        kind = _not_a_file(path)
        if kind is None:
            raise FileNotFoundError(f"{what} does not exist{_not_shipped(text)}")
        raise ValueError(f"{what} is {kind}, not a config file (a config is a TOML file, "
                         f"e.g. one of configs/)")
    size = path.stat().st_size
    if size > MAX_CONFIG_BYTES:
        raise ValueError(f"{what} is {size} bytes, more than a config file can be "
                         f"({MAX_CONFIG_BYTES} bytes); a config is a few KB of TOML")
    try:
        # utf-8-sig: a leading byte-order mark (PowerShell's Out-File -Encoding utf8) is
        # dropped, as TOML readers that take it do; anywhere else it stays invalid TOML
        text = path.read_text(encoding="utf-8-sig")
    except UnicodeDecodeError as e:
        raise ValueError(f"config file {path} is not UTF-8 text (TOML is): byte "
                         f"0x{e.object[e.start]:02x} at offset {e.start}") from e
    raw = _parse_toml(text, f"config file {path}")
    # deprecated keys under their new names, file by file, so either name overrides the other
    try:
        raw = {section: _renamed(section, body) for section, body in raw.items()}
    except ValueError as e:                 # both names in this file
        raise ValueError(f"config file {path}: {str(e).removeprefix('config ')}") from None
    if "extends" not in raw:
        _note(raw, path, where)
        return raw
    base = raw.pop("extends")
    if not isinstance(base, str) or not base.strip():
        raise ValueError(f"config file {path}: extends must name another config file (a "
                         f"path string, relative to this file), got {_short(base)}")
    base_path = _or_shipped(path.parent / base, base)
    seen = [p.resolve() for p in (*chain, path)]
    if base_path.resolve() in seen:
        names = " -> ".join(str(p) for p in (*chain, path, base_path))
        raise ValueError(f"config file {path}: extends {base!r} makes a cycle: {names}")
    merged = merge(_read_chain(base_path, (*chain, path), where, base), raw)
    _note(raw, path, where)                 # after the base's: this file's keys win
    return merged


# The named configs: the repository's configs/ folder (the docs' ``--config
# configs/NAME.toml``), shipped in the wheel as metaloop's package folder shipped_configs
# (in git a link to configs/, whose files the wheel copies).
SHIPPED_WHAT = "the repository's configs/ folder, shipped with metaloop"
_SHIPPED_NOTED: set[tuple[str, str]] = set()


def shipped_configs() -> Path | None:
    """The folder of the named configs: the installed package folder ``shipped_configs``
    of metaloop (in a checkout, the link to ``configs/``, resolved), else the checkout's
    ``configs/`` (a copy that lost the link); None when neither is there."""
    try:
        spec = importlib.util.find_spec(f"{__package__}.shipped_configs")
    except (ImportError, ValueError):
        spec = None
    for where in (spec.submodule_search_locations or []) if spec is not None else []:
        if Path(where).is_dir():               # (in a checkout: the link to configs/)
            return Path(where).resolve()
    checkout = Path(__file__).resolve().parents[2] / "configs"
    if (checkout.is_dir() and (checkout.parent / "pyproject.toml").is_file()
            and (checkout.parent / "src" / "metaloop").is_dir()):
        return checkout
    return None


def _shipped_name(text: str) -> str | None:
    """``NAME.toml`` when ``text`` (a path as given) has the form ``configs/NAME.toml``,
    ``NAME.toml`` or ``NAME``; else None."""
    parts = Path(text).parts
    if len(parts) == 2 and parts[0] == "configs" and parts[1].endswith(".toml"):
        return parts[1]
    if len(parts) != 1 or parts[0] in (".", ".."):
        return None
    name = parts[0]
    if name.endswith(".toml"):
        return name
    return None if "." in name else f"{name}.toml"


PACKAGE_WHAT = "metaloop's own configs/ folder: the compare settings and the folder example"


def package_configs() -> Path | None:
    """metaloop's own ``configs/`` package folder (``compare_sinusoid.toml``,
    ``compare_omniglot.toml``, ``folder_example.toml``: what ``metaloop compare
    --print-config`` and ``metaloop train --example-config`` print), or None."""
    folder = Path(__file__).resolve().parent / "configs"
    return folder if folder.is_dir() else None


def _named_folders() -> list[tuple[Path, str]]:
    """The folders of named configs, searched in this order, with how messages name them:
    the repository's configs/ (:func:`shipped_configs`), then metaloop's own
    (:func:`package_configs`)."""
    found = [(shipped_configs(), SHIPPED_WHAT), (package_configs(), PACKAGE_WHAT)]
    return [(f, what) for f, what in found if f is not None]


def _named(text) -> tuple[Path, str] | None:
    """The named config ``text`` names and how its folder is named, or None."""
    name = _shipped_name(os.fspath(text))
    if name is None:
        return None
    for folder, what in _named_folders():
        if (folder / name).is_file():
            return folder / name, what
    return None


def shipped_config(text) -> Path | None:
    """The shipped copy of a named config (``configs/NAME.toml``, ``NAME.toml`` or ``NAME``):
    the repository's configs/ first (:func:`shipped_configs`), then metaloop's own
    (:func:`package_configs`); None when ``text`` has another form or no named config has
    that name."""
    found = _named(text)
    return None if found is None else found[0]


def _or_shipped(path: Path, text: str) -> Path:
    """``path`` when anything is there (a path that exists always wins), else the shipped
    config ``text`` names, said once on stderr, else ``path`` (refused by the caller)."""
    if os.path.lexists(path):
        return path
    found = _named(text)
    if found is None:
        return path
    shipped, what = found
    if (str(path), str(shipped)) not in _SHIPPED_NOTED:
        _SHIPPED_NOTED.add((str(path), str(shipped)))
        print(f"metaloop: no config file {path} here; using the shipped config {shipped} "
              f"({what})", file=sys.stderr)
    return shipped


def _not_shipped(text: str) -> str:
    """What an error for a missing config adds when ``text`` (the path as written) has the
    form of a named config (``configs/NAME.toml``, ``NAME.toml``, ``NAME``): where the named
    configs are, and the close names among them; "" for another form."""
    name = _shipped_name(text)
    folders = _named_folders()
    if name is None or not folders:
        return ""
    names = sorted({p.name for folder, _ in folders for p in folder.glob("*.toml")})
    near = difflib.get_close_matches(name, names, n=3, cutoff=0.75)
    hint = ""
    if near:
        listed = ", ".join(repr(n) for n in near[:-1])
        hint = f"; did you mean {f'{listed} or ' if listed else ''}{near[-1]!r}?"
    where = "; ".join(f"{what}, {len(list(folder.glob('*.toml')))} files: {folder}"
                      for folder, what in folders)
    return (f", nor is {name!r} one of the named configs ({where}); `metaloop train "
            f"--example-config` prints the example config for an image folder of your own, "
            f"`metaloop compare --print-config` the comparison's{hint}")


def _not_a_file(path: Path) -> str | None:
    """What ``path`` is when it is there but neither a regular file nor a folder ("a
    character device", "a named pipe (FIFO)", "a socket", "a block device"); None when
    nothing is there (a dangling link included)."""
    try:
        mode = path.stat().st_mode
    except OSError:
        return None
    for test, kind in ((stat.S_ISCHR, "a character device"), (stat.S_ISBLK, "a block device"),
                       (stat.S_ISFIFO, "a named pipe (FIFO)"), (stat.S_ISSOCK, "a socket")):
        if test(mode):
            return kind
    return "not a regular file"


# What the depth scan reads: strings and comments (skipped whole, so their brackets and dots
# count for nothing) and the characters that open, close or separate a level.
_TOML_TOKENS = re.compile(r'"""(?:[^\\]|\\[\s\S])*?"""|\'\'\'[\s\S]*?\'\'\'|"(?:[^"\\\n]|\\.)*"'
                          r"|'[^'\n]*'|#[^\n]*|[\[\]{}.=,\n]")


def _toml_depth(text: str) -> int:
    """An upper bound, cheap to compute, of how deep the TOML ``text`` nests: open brackets
    and braces plus the dots of the dotted key (or number) being read, strings and comments
    skipped."""
    depth = dots = deepest = 0
    for m in _TOML_TOKENS.finditer(text):
        c = m.group()
        if c in "[{":
            depth += 1
        elif c in "]}":
            depth = max(depth - 1, 0)
        elif c == ".":
            dots += 1
        elif c in "=,\n":
            dots = 0
            continue
        else:
            continue
        deepest = max(deepest, depth + dots)
    return deepest


_LONG_DIGITS = re.compile(r"[0-9_]{1000,}")


def _long_integer(text: str) -> str | None:
    """Where ``text`` holds an integer too long for Python to convert (e.g. ``"an integer
    of 5000 digits on line 2 ..."``), or None if it holds none."""
    limit = getattr(sys, "get_int_max_str_digits", lambda: 4300)() or None
    for m in _LONG_DIGITS.finditer(text):
        digits = len(m.group().replace("_", ""))
        if limit is not None and digits > limit:
            line = text.count("\n", 0, m.start()) + 1
            return (f"an integer of {digits} digits on line {line}, longer than a number "
                    f"can be ({limit} digits); a config value is a few digits long")
    return None


def _parse_toml(text: str, where: str) -> dict:
    """``tomllib.loads(text)``, refusing first a text nested deeper than
    ``MAX_CONFIG_DEPTH``; any failure to parse is a ValueError that names ``where`` (e.g.
    ``"config file a.toml"``)."""
    depth = _toml_depth(text)
    if depth > MAX_CONFIG_DEPTH:
        raise ValueError(f"{where} nests keys or arrays {depth} levels deep, more than a "
                         f"config can ({MAX_CONFIG_DEPTH}); a config is [section] key = value")
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        raise ValueError(f"{where} is not valid TOML: {e}") from e
    except ValueError as e:
        # int() past Python's digit limit (sys.get_int_max_str_digits(), 4300 by default)
        # raises a plain ValueError from inside the reader, not a TOMLDecodeError
        raise ValueError(f"{where} is not valid TOML: {_long_integer(text) or e}") from None
    except (RecursionError, MemoryError) as e:
        raise ValueError(f"{where} could not be read: it nests too deep or is too large for "
                         f"the TOML reader ({type(e).__name__})") from None


def _note(raw: dict, path: Path, where: dict | None) -> None:
    if where is None:
        return
    for section, body in raw.items():
        where[(section, "")] = path
        if isinstance(body, dict):
            where.update({(section, key): path for key in body})


# JSON's escape of a character past U+FFFF is a surrogate pair (an emoji in a folder's name:
# \ud83d\ude00), which TOML refuses: it spells the character \U0001f600. An escaped
# backslash is matched first, so its text is never read as the start of an escape.
_SURROGATE_PAIR = re.compile(r"\\\\|\\u(d[89ab][0-9a-f]{2})\\u(d[c-f][0-9a-f]{2})")


def _toml_escapes(text: str) -> str:
    """JSON text (``json.dumps``, ASCII) with its surrogate pairs as TOML's ``\\U`` escapes."""
    def one(m: re.Match) -> str:
        if m[1] is None:
            return m[0]
        code = 0x10000 + ((int(m[1], 16) - 0xD800) << 10) + int(m[2], 16) - 0xDC00
        return f"\\U{code:08x}"
    return _SURROGATE_PAIR.sub(one, text)


def to_toml(cfg: dict) -> str:
    """A config as TOML text, one table per section, that :func:`load` reads back to the same
    config (e.g. a resolved ``extends`` chain written whole for another process).

    Args:
        cfg: a config as ``{section: {key: value}}`` (a validated one, to be read back by
            :func:`load`); values are booleans, numbers, strings or lists of them.

    Raises:
        ValueError: a non-finite number (TOML has them, but no config key takes one).
    """
    out = []
    for section, body in cfg.items():
        out.append(f"[{section}]")
        for k, v in body.items():
            try:        # scalars, strings and lists: JSON's quoting is valid TOML for them
                out.append(f"{k} = {_toml_escapes(json.dumps(v, allow_nan=False))}")
            except ValueError:
                raise ValueError(f"config {section}.{k} = {_short(v)}: no config key takes a "
                                 f"non-finite number") from None
        out.append("")
    return "\n".join(out)


def merge(base: dict, override: dict) -> dict:
    """Deep-merge override into a copy of base (section by section). A section that is not a
    table on either side (raw TOML before ``validate``, which names it) is replaced whole.

    Args:
        base: a config as ``{section: {key: value}}`` (validated or raw TOML); not changed.
        override: the sections and keys that replace ``base``'s, key by key; not changed.
    """
    out = copy.deepcopy(base)
    for section, body in override.items():
        if isinstance(body, dict) and isinstance(out.get(section, {}), dict):
            out.setdefault(section, {}).update(body)
        else:
            out[section] = body
    return out

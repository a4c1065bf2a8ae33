"""Config files (TOML): loading, defaults and validation. Only cli/ knows about them."""

from __future__ import annotations

import copy
import difflib
import sys
from pathlib import Path

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

# Every key a config may have, with its default and type. None = required / no default.
SCHEMA: dict[str, dict[str, tuple[type | tuple, object]]] = {
    "family": {"name": (str, "sinusoid"), "shots": (int, 10), "queries": (int, 10),
               "ways": (int, 5), "root": (str, ""), "image_size": (int, 28),
               "split": (str, "train")},
    "model": {"name": (str, "mlp"), "hidden": ((list, int), [40, 40]), "pool": (str, "max"),
              "channels": (int, 64),
              # conv4: "mean" (spatial mean) or "flatten" the last feature map; "" = the
              # pool's default (mean for stride, flatten for max)
              "readout": (str, "")},
    "method": {"name": (str, "maml"), "inner_lr": ((int, float), 0.01), "inner_steps": (int, 1),
               "first_order": (bool, False), "head_init": (str, "auto"),
               "batching": (str, "auto"), "inner_optimizer": (str, "sgd"),
               # MAML / ANIL: recompute each inner step in the backward pass (memory flat in
               # inner_steps, ~1.4x the time; docs/benchmarks.md)
               "checkpoint": (bool, False),
               # MAML / ANIL: torch.compile each task's query pass in meta-training (pays on
               # the stride-2 Conv4 on the CPU; docs/benchmarks.md)
               "compile": (bool, False),
               # MAML / ANIL: meta-learn one inner step size per adapted tensor and inner
               # step (MAML++'s LSLR), starting at inner_lr
               "learn_inner_lr": (bool, False),
               # R2D2 / MetaOptNet: ridge strength (R2D2: its initial value), MetaOptNet's
               # head ("svm" | "logistic") and gradient ("implicit" | "unrolled"), initial
               # output scale (0: the method's default); MetaOptNet's Newton steps are
               # inner_steps.
               "lam": ((int, float), 1.0), "head": (str, "svm"), "grad": (str, "implicit"),
               "scale": ((int, float), 0)},
    "train": {"iterations": (int, 1000), "meta_batch": (int, 25), "lr": ((int, float), 1e-3),
              "seed": (int, 0), "val_every": (int, 0), "val_tasks": (int, 100),
              "checkpoint_every": (int, 1000), "dtype": (str, "float32"),
              "lr_schedule": (str, "constant"), "clip_grad_norm": ((int, float), 0.0),
              # image families: translate each training image by up to this many pixels
              # (0 = off; held-out evaluation never shifts)
              "augment_shift": (int, 0), "augment_rotate": ((int, float), 0.0)},
    # eval.ways: 0 = the family's; another value only for the head-based learners, whose head
    # is solved per task (higher-way training: meta-train 20-way, test 5-way)
    "eval": {"tasks": (int, 600), "shots": (int, 0), "queries": (int, 0), "ways": (int, 0),
             "steps": ((list, int), [0, 1, 5, 10]), "seed": (int, 1_000_003),
             "split": (str, "test")},
}


def _suggest(key: str, options) -> str:
    near = difflib.get_close_matches(key, list(options), n=1)
    return f" (did you mean {near[0]!r}?)" if near else ""


def _check_type(where: str, value, typ) -> None:
    if isinstance(typ, tuple) and typ and typ[0] is list:
        if not isinstance(value, list) or not all(
                isinstance(v, typ[1]) and not isinstance(v, bool) for v in value):
            raise ValueError(f"config {where} must be a list of {typ[1].__name__}, "
                             f"got {value!r}")
        return
    ok = isinstance(value, typ) and (typ is bool or not isinstance(value, bool))
    if not ok:
        want = typ.__name__ if isinstance(typ, type) else " or ".join(t.__name__ for t in typ)
        raise ValueError(f"config {where} must be {want}, got {type(value).__name__} {value!r}")


def validate(cfg: dict) -> dict:
    """Fill defaults and check keys and types; returns a new dict.

    Raises:
        ValueError: unknown section or key (with the nearest valid one), wrong type.
    """
    if not isinstance(cfg, dict):
        raise ValueError(f"config must be a table, got {type(cfg).__name__}")
    out = {}
    for section, body in cfg.items():
        if section not in SCHEMA:
            raise ValueError(f"unknown config section [{section}]{_suggest(section, SCHEMA)}; "
                             f"valid: {sorted(SCHEMA)}")
        if not isinstance(body, dict):
            raise ValueError(f"config [{section}] must be a table, got {body!r}")
        for key in body:
            if key not in SCHEMA[section]:
                raise ValueError(f"unknown key {section}.{key}"
                                 f"{_suggest(key, SCHEMA[section])}; valid: "
                                 f"{sorted(SCHEMA[section])}")
    for section, keys in SCHEMA.items():
        body = cfg.get(section, {})
        out[section] = {}
        for key, (typ, default) in keys.items():
            value = body.get(key, copy.deepcopy(default))
            _check_type(f"{section}.{key}", value, typ)
            out[section][key] = value
    return out


# Classes per Omniglot split (Vinyals splits count the 4 rotations of each character) and
# examples per class, for checks that need no data on disk. Fashion-MNIST families use labels
# 0-4 (split "train") or 5-9 (other splits), with 6000 training images per class.
OMNIGLOT_CLASSES = {"train": 4112, "val": 688, "test": 1692, "trainval": 4800,
                    "background": 964, "evaluation": 659}
PER_CLASS = {"omniglot": 20, "fashion_mnist": 6000}
HEAD_BASED = ("r2d2", "metaoptnet")
# The SGD meta-learners with an inner loop to differentiate through, and the method keys
# that apply to them only.
MAML_FAMILY = ("maml", "fomaml", "anil")
MAML_ONLY = ("first_order", "checkpoint", "compile", "learn_inner_lr")
DTYPES = ("float32", "float64")


def _one_of(where: str, value, options) -> None:
    if value not in options:
        raise ValueError(f"config {where} = {value!r} is not one of {list(options)}"
                         f"{_suggest(str(value), [str(o) for o in options])}")


def _num_classes(family: str, split: str) -> int | None:
    if family == "omniglot":
        return OMNIGLOT_CLASSES[split]
    if family == "fashion_mnist":
        return 5
    return None


def check_combinations(cfg: dict) -> None:
    """Check values and combinations of a validated config that are impossible whatever the
    data; ``metaloop train`` calls it before any data is loaded or training starts.

    Raises:
        ValueError: naming the keys: an unknown name, a non-positive count, ``ways`` above the
            classes of a split, ``shots + queries`` above the examples per class,
            ``first_order`` on a learner without second-order variant (Reptile, the
            head-based R2D2/MetaOptNet...), a model that cannot read the family's inputs.
    """
    from metaloop.cli._build import FAMILIES, IMAGE_MODELS, METHODS, MODELS

    f, m, me, t, ev = (cfg[k] for k in ("family", "model", "method", "train", "eval"))
    for where, value, options in (
            ("family.name", f["name"], FAMILIES), ("model.name", m["name"], MODELS),
            ("method.name", me["name"], METHODS), ("train.dtype", t["dtype"], DTYPES),
            ("train.lr_schedule", t["lr_schedule"], ("constant", "cosine")),
            ("model.pool", m["pool"], ("max", "stride")),
            ("model.readout", m["readout"], ("", "mean", "flatten")),
            ("method.head_init", me["head_init"], ("auto", "learned", "zero")),
            ("method.batching", me["batching"], ("auto", "loop", "vmap", "threads")),
            ("method.inner_optimizer", me["inner_optimizer"], ("sgd", "adam"))):
        _one_of(where, value, options)
    if f["name"] == "omniglot":
        _one_of("family.split", f["split"], OMNIGLOT_CLASSES)
        _one_of("eval.split", ev["split"], OMNIGLOT_CLASSES)
    positive = [("family", k) for k in ("shots", "queries", "ways", "image_size")] + \
        [("model", "channels"), ("method", "inner_steps"), ("eval", "tasks")] + \
        [("train", k) for k in ("iterations", "meta_batch", "checkpoint_every", "val_tasks")]
    for sec, key in positive:
        if cfg[sec][key] <= 0:
            raise ValueError(f"config {sec}.{key} must be a positive int, got {cfg[sec][key]!r}")
    for sec, key in (("train", "lr"), ("method", "inner_lr")):
        v = cfg[sec][key]
        if not (v > 0 and v != float("inf")):
            raise ValueError(f"config {sec}.{key} must be a positive number, got {v!r}")
    for sec, key in (("train", "val_every"), ("train", "seed"), ("train", "augment_shift"),
                     ("eval", "shots"), ("eval", "queries"), ("eval", "seed"), ("eval", "ways")):
        if cfg[sec][key] < 0:
            raise ValueError(f"config {sec}.{key} must be >= 0, got {cfg[sec][key]!r}")
    if any(s < 0 for s in ev["steps"]):
        raise ValueError(f"config eval.steps must be non-negative ints, got {ev['steps']!r}")
    if any(h <= 0 for h in m["hidden"]):
        raise ValueError(f"config model.hidden must be positive ints, got {m['hidden']!r}")

    name = me["name"]
    if me["first_order"] and name not in MAML_FAMILY:
        why = (" (a head-based learner: its head is solved exactly, there is no first-order "
               "variant)" if name in HEAD_BASED else "")
        raise ValueError(f"config method.first_order = true: first_order applies to maml and "
                         f"anil, not {name!r}{why}")
    for key, what in (("checkpoint", "checkpointing the inner loop"),
                      ("compile", "compiling the query pass")):
        if me[key] and name not in MAML_FAMILY:
            raise ValueError(f"config method.{key} = true: {what} applies to maml, fomaml "
                             f"and anil, not {name!r}")
        if me[key] and me["batching"] == "vmap":
            raise ValueError(f"config method.{key} = true needs batching = \"loop\" or "
                             "\"auto\", not \"vmap\"")
    if me["compile"] and me["batching"] == "threads":
        raise ValueError('config method.compile = true needs batching = "loop" or "auto", '
                         'not "threads" (the compiled query pass runs on one thread)')
    if me["batching"] == "threads" and name not in MAML_FAMILY:
        raise ValueError(f'config method.batching = "threads" applies to maml, fomaml and '
                         f'anil, not {name!r} (use "loop" or "auto")')
    if me["learn_inner_lr"] and name not in MAML_FAMILY:
        raise ValueError(f"config method.learn_inner_lr = true: learned inner step sizes "
                         f"apply to maml, fomaml and anil, not {name!r}")
    if me["learn_inner_lr"] and me["checkpoint"]:
        raise ValueError("config method.learn_inner_lr = true and method.checkpoint = true: "
                         "the checkpointed inner step takes a fixed step size; drop one")
    if ev["ways"] not in (0, f["ways"]) and name not in HEAD_BASED:
        raise ValueError(f"config eval.ways = {ev['ways']} differs from family.ways = "
                         f"{f['ways']}: only {sorted(HEAD_BASED)} solve their head per task "
                         f"and can be tested at another number of ways; {name!r} has a head of "
                         f"family.ways outputs")
    if ev["ways"] == 1:
        raise ValueError("config eval.ways must be 0 (the family's) or >= 2, got 1")
    if me["inner_optimizer"] != "sgd" and name != "reptile":
        raise ValueError(f"config method.inner_optimizer = {me['inner_optimizer']!r} applies "
                         f"to reptile only, not {name!r}")
    if m["readout"] and m["name"] != "conv4":
        raise ValueError(f"config model.readout = {m['readout']!r} applies to conv4 only, not "
                         f"model.name = {m['name']!r}")
    image = f["name"] != "sinusoid"
    if m["name"] == "mlp" and image:
        raise ValueError(f"config model.name = 'mlp' reads vectors, but family.name = "
                         f"{f['name']!r} gives images: use model.name = 'conv4'")
    if m["name"] in IMAGE_MODELS and not image:
        raise ValueError(f"config model.name = {m['name']!r} needs an image family, not "
                         f"'sinusoid': use model.name = 'mlp'")
    if not 0 <= t["augment_rotate"] <= 180:
        raise ValueError(f"config train.augment_rotate must be in [0, 180] degrees, got "
                         f"{t['augment_rotate']!r}")
    for key, what in (("augment_shift", "translates"), ("augment_rotate", "rotates")):
        if t[key] and not image:
            raise ValueError(f"config train.{key} = {t[key]} {what} images, but family.name "
                             f"= {f['name']!r} gives vectors")
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


def load(path) -> dict:
    """Read and validate a TOML config file."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"config file {path} does not exist")
    try:
        raw = tomllib.loads(path.read_text())
    except tomllib.TOMLDecodeError as e:
        raise ValueError(f"config file {path} is not valid TOML: {e}") from e
    return validate(raw)


def merge(base: dict, override: dict) -> dict:
    """Deep-merge override into a copy of base (section by section)."""
    out = copy.deepcopy(base)
    for section, body in override.items():
        out.setdefault(section, {}).update(body)
    return out

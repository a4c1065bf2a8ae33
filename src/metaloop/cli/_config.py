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
              "channels": (int, 64)},
    "method": {"name": (str, "maml"), "inner_lr": ((int, float), 0.01), "inner_steps": (int, 1),
               "first_order": (bool, False), "head_init": (str, "auto"),
               "batching": (str, "auto"), "inner_optimizer": (str, "sgd")},
    "train": {"iterations": (int, 1000), "meta_batch": (int, 25), "lr": ((int, float), 1e-3),
              "seed": (int, 0), "val_every": (int, 0), "val_tasks": (int, 100),
              "checkpoint_every": (int, 1000)},
    "eval": {"tasks": (int, 600), "shots": (int, 0), "queries": (int, 0),
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

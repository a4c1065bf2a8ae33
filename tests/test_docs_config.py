"""docs/config.md, the config reference, against ``metaloop.config.SCHEMA``: one table per
section lists every key once, with its type and its default as ``SCHEMA`` has them (TOML
literals), and the page names no key that ``SCHEMA`` (or compare's ``[compare]`` table)
lacks, so the page cannot go stale."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from metaloop.config import RENAMED, SCHEMA
from metaloop.recipes.compare import COMPARE_KEYS

REPO = Path(__file__).resolve().parents[1]
PAGE = REPO / "docs" / "config.md"


def _tables(text: str) -> dict[str, list[list[str]]]:
    """``## `[section]``` heading -> the rows of the first table under it (cells stripped,
    the header and its rule left out)."""
    out: dict[str, list[list[str]]] = {}
    parts = re.split(r"^## `\[(\w+)\]`\s*$", text, flags=re.MULTILINE)
    for name, body in zip(parts[1::2], parts[2::2]):
        body = re.split(r"^## ", body, flags=re.MULTILINE)[0]
        lines = [ln for ln in body.splitlines() if ln.startswith("|")]
        rows = [[c.strip() for c in ln.strip().strip("|").split(" | ")] for ln in lines]
        assert len(rows) > 2 and set(rows[1][0]) <= {"-", "|"}, f"no table under [{name}]"
        out[name] = rows[2:]
    return out


def _type(typ) -> str:
    """A ``SCHEMA`` type as the page names it."""
    names = {str: "string", int: "int", bool: "bool", float: "number"}
    if isinstance(typ, tuple) and typ and typ[0] is list:
        return f"list of {_type(typ[1])}"
    if isinstance(typ, tuple):
        return "number" if set(typ) == {int, float} else " or ".join(map(_type, typ))
    return names[typ]


def _literal(default) -> str:
    """A default as a TOML literal: ``"stride"``, ``0.4``, ``[0.7, 0.1, 0.2]``, ``true``."""
    return f"`{json.dumps(default)}`"


def _key(cell: str) -> str:
    m = re.fullmatch(r"`(\w+)`", cell)
    assert m, f"a key cell is not one `name`: {cell!r}"
    return m[1]


def check(text: str) -> None:
    """AssertionError naming what the page ``text`` gets wrong against ``SCHEMA``."""
    tables = _tables(text)
    assert set(SCHEMA) | {"compare"} == set(tables), sorted(tables)
    for section, keys in SCHEMA.items():
        rows = tables[section]
        named = [_key(r[0]) for r in rows]
        twice = sorted({k for k in named if named.count(k) > 1})
        assert not twice, f"[{section}] lists {twice} more than once"
        unknown = sorted(set(named) - set(keys))
        assert not unknown, f"[{section}] lists {unknown}, which SCHEMA lacks"
        missing = [k for k in keys if k not in named]
        assert not missing, f"[{section}] lacks {missing}"
        for row in rows:
            key = _key(row[0])
            typ, default = keys[key]
            assert row[1] == _type(typ), f"{section}.{key}: type {row[1]!r}, not {_type(typ)!r}"
            assert row[2] == _literal(default), \
                f"{section}.{key}: default {row[2]} where SCHEMA has {_literal(default)}"
    cmp_keys = [_key(r[0]) for r in tables["compare"]]
    assert sorted(cmp_keys) == sorted(COMPARE_KEYS), cmp_keys
    # every `section.key` the prose names is a key (or a renamed one, or compare's)
    renamed = {(s, old) for s, olds in RENAMED.items() for old in olds}
    named = set(re.findall(r"`(family|model|method|train|eval|compare)\.(\w+)", text))
    wrong = sorted(f"{s}.{k}" for s, k in named
                   if not (k in SCHEMA.get(s, {}) or (s, k) in renamed
                           or (s == "compare" and k in COMPARE_KEYS)))
    assert not wrong, f"the page names keys SCHEMA lacks: {wrong}"


def test_the_config_reference_lists_every_key_with_its_schema_default():
    check(PAGE.read_text())


@pytest.mark.parametrize("change", [
    ('| `readout` | string | `""` |', '| `readout` | string | `"mean"` |'),
    ("| `split_fractions` | list of number | `[0.7, 0.1, 0.2]` |",
     "| `split_fractions` | list of number | `[0.8, 0.1, 0.1]` |"),
    ("| `inner_lr` | number | `0.01` |", "| `inner_lr` | number | `0.1` |"),
    ("| `prefetch` | string |", "| `prefetchh` | string |"),
    ("| `log_every` | int | `0` |", "| `log_every` | number | `0` |"),
    ("`train.log_every`", "`train.log_evry`"),
])
def test_the_check_fails_on_a_stale_page(change):
    text = PAGE.read_text()
    old, new = change
    assert old in text, f"the page no longer contains {old!r}"
    with pytest.raises(AssertionError):
        check(text.replace(old, new, 1))


def test_the_check_fails_on_a_missing_or_doubled_row():
    text = PAGE.read_text()
    row = next(ln for ln in text.splitlines() if ln.startswith("| `test_batch` |"))
    with pytest.raises(AssertionError, match="lacks"):
        check(text.replace(row + "\n", ""))
    with pytest.raises(AssertionError, match="more than once"):
        check(text.replace(row + "\n", row + "\n" + row + "\n"))


def test_the_example_config_is_one_metaloop_train_takes(tmp_path):
    """The page's TOML example, its ``extends`` pointed at an empty-enough base, loads and
    passes ``check_combinations``."""
    from metaloop.config import check_combinations, load

    blocks = re.findall(r"```toml\n(.*?)```", PAGE.read_text(), re.DOTALL)
    assert len(blocks) == 1, "docs/config.md should show one TOML example"
    (tmp_path / "base.toml").write_text("[train]\niterations = 10\n")
    (tmp_path / "c.toml").write_text(blocks[0])
    cfg = load(tmp_path / "c.toml")
    check_combinations(cfg)
    assert cfg["train"]["iterations"] == 10           # read from the base it extends

"""The two checks of a run's data against its stored fingerprint, on stand-in runs: at its
stored ``family.root`` (``check_own_data``) only the classes the fingerprint lists are
compared, and a fingerprint that cannot be compared passes; at a ``--data-root``
(``check_moved_data``) every class read must be one the run read, as it read it. Each names
the first member whose data differs, in its own words, and reads the data once."""

from __future__ import annotations

import re
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

import metaloop as ml
from metaloop import build, runs

NAMES = ["a", "b", "c"]


def _family(bump: str | None = None) -> ml.tasks.Episodes:
    """Three classes of four 1x2x2 images each; ``bump``: that class's first example + 1."""
    x = torch.arange(12 * 4, dtype=torch.uint8).reshape(12, 1, 2, 2)      # [N, C, H, W]
    y = torch.arange(3).repeat_interleave(4)                              # [N]
    if bump is not None:
        x[4 * NAMES.index(bump)] += 1
    return ml.tasks.Episodes(x, y, ways=2, shots=1, queries=1, class_names=NAMES)


def _run(path: str, data, *, name: str = "folder", root: str = "/data/own",
         stored_root: str | None = None) -> SimpleNamespace:
    return SimpleNamespace(path=path, data=data, stored_root=stored_root,
                           config={"family": {"name": name, "root": root}})


def _stored(keep=NAMES) -> dict:
    """The fingerprint of ``_family()`` as a run stores it, listing the classes ``keep``."""
    read = build.data_fingerprint({"name": "folder", "root": "/data/own"}, _family())
    return {**read, "classes": {c: d for c, d in read["classes"].items() if c in keep}}


def _own_words(root, run, change: str) -> str:
    return (f"{root} (the family.root of {run}) changed since the run read it: {change}; "
            f"restore the run's data there (or give --data-root the path of a copy of it), "
            f"or train a new run on the data as it is now")


def _moved_words(given, run, stored_root, change: str) -> str:
    return (f"--data-root {given} is not the data {run} was trained on (its stored "
            f"family.root: {stored_root}): {change}; give the path of the run's own data as "
            f"it read it, or train a new run on this data")


def test_a_class_the_run_never_read_passes_at_its_own_root_but_not_at_a_data_root():
    stored = _stored(keep=["a", "b"])
    runs.check_own_data(_run("runs/own", stored), _family())
    moved = _run("runs/moved", stored, root="/data/there", stored_root="/data/own")
    with pytest.raises(ValueError) as e:
        runs.check_moved_data(moved, _family())
    assert str(e.value) == _moved_words("/data/there", "runs/moved", "/data/own",
                                        "class(es) the run never read ['c']")


def test_changed_examples_are_named_in_each_checks_own_words():
    stored = _stored(keep=["a", "b"])
    with pytest.raises(ValueError) as own:
        runs.check_own_data(_run("runs/own", stored), _family(bump="b"))
    assert str(own.value) == _own_words("/data/own", "runs/own",
                                        "examples differ in class(es) ['b']")
    moved = _run("runs/moved", _stored(), root="/data/there", stored_root="/data/own")
    with pytest.raises(ValueError) as there:
        runs.check_moved_data(moved, _family(bump="b"))
    assert str(there.value) == _moved_words("/data/there", "runs/moved", "/data/own",
                                            "examples differ in class(es) ['b']")
    runs.check_moved_data(moved, _family())                    # the run's own data passes


def test_an_ensemble_is_read_once_and_the_first_member_that_differs_is_named(monkeypatch):
    other = {**_stored(), "classes": {**_stored()["classes"], "c": "0" * 16}}
    ensemble = SimpleNamespace(members=[_run("runs/m0", _stored()), _run("runs/m1", other),
                                        _run("runs/m2", other)])
    calls = []
    real = build.data_fingerprint
    monkeypatch.setattr(build, "data_fingerprint",
                        lambda *a: calls.append(a[0]["root"]) or real(*a))
    with pytest.raises(ValueError) as e:
        runs.check_own_data(ensemble, _family())
    assert str(e.value) == _own_words("/data/own", "runs/m1",
                                      "examples differ in class(es) ['c']")
    assert calls == ["/data/own"]
    calls.clear()
    for m in ensemble.members:
        m.stored_root, m.config["family"]["root"] = "/data/own", "/data/there"
    with pytest.raises(ValueError, match=re.escape("not the data runs/m1 was trained on")):
        runs.check_moved_data(ensemble, _family())
    assert calls == ["/data/there"]


def test_a_fingerprint_without_classes_passes_at_its_own_root_only():
    whole = {k: v for k, v in _stored().items() if k != "classes"}
    runs.check_own_data(_run("runs/own", {**whole, "sha256": "0" * 64}), _family())
    moved = _run("runs/moved", {**whole, "sha256": "0" * 64}, root="/data/there",
                 stored_root="/data/own")
    with pytest.raises(ValueError, match=re.escape("its file's sha256 differs")):
        runs.check_moved_data(moved, _family())
    runs.check_moved_data(_run("runs/moved", whole, root="/data/there",
                               stored_root="/data/own"), _family())


def test_a_table_is_compared_by_its_files_sha256(tmp_path: Path):
    table = tmp_path / "t.csv"
    table.write_text("text,label\nhi,a\n", encoding="utf-8")
    stored = build.data_fingerprint({"name": "table", "root": str(table)})
    runs.check_own_data(_run("runs/t", stored, name="table", root=str(table)), None)
    no_sum = {k: v for k, v in stored.items() if k != "sha256"}
    table.write_text("text,label\nho,a\n", encoding="utf-8")
    runs.check_own_data(_run("runs/t", no_sum, name="table", root=str(table)), None)
    with pytest.raises(ValueError) as e:
        runs.check_own_data(_run("runs/t", stored, name="table", root=str(table)), None)
    assert str(e.value) == _own_words(table, "runs/t", "its file's sha256 differs")
    moved = _run("runs/t", no_sum, name="table", root=str(table), stored_root="/old.csv")
    with pytest.raises(ValueError) as there:
        runs.check_moved_data(moved, None)
    assert str(there.value) == _moved_words(table, "runs/t", "/old.csv",
                                            "its file's sha256 differs")


def test_runs_of_a_built_in_family_or_without_a_fingerprint_pass():
    runs.check_own_data(_run("runs/s", None, name="sinusoid"), _family(bump="a"))
    runs.check_own_data(_run("runs/f", None), _family(bump="a"))
    runs.check_moved_data(_run("runs/f", None, stored_root="/data/own"), _family(bump="a"))

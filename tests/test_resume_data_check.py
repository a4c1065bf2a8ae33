"""A run's stored data fingerprint against the data read now: ``--data-root`` (eval, train
--resume; ``runs.check_same_data``) and a resume in place (``train.loop.check_resume_data``)
compare them by one function (``build.data_changes``) and name a class in the same words."""

import re

import pytest

from metaloop.build import data_changes
from metaloop.runs import check_same_data
from metaloop.train.loop import check_resume_data


def _fingerprint(root: str, classes: dict[str, str]) -> dict:
    """A fingerprint as ``build.data_fingerprint`` writes it, its whole digest made of the
    classes' (in order)."""
    whole = "".join(f"{n}={d};" for n, d in classes.items())
    return {"family": "folder", "root": root, "sha256": whole, "classes": dict(classes)}


def _refusal(check, *args) -> str:
    with pytest.raises(ValueError) as e:
        check(*args)
    return str(e.value)


def test_a_class_the_run_never_read_is_named_alike_by_data_root_and_resume():
    stored = _fingerprint("/data", {"cat": "1", "dog": "2"})
    read = _fingerprint("/data", {"cat": "1", "dog": "2", "owl": "3"})
    moved = _refusal(check_same_data, stored, read, "runs/x", "/data")
    resumed = _refusal(check_resume_data, "runs/x", {"data": stored}, read)
    said = "class(es) the run never read ['owl']"
    assert f"(its stored family.root: /data): {said}; give the path" in moved, moved
    assert f"the data changed since its checkpoint (folder /data: {said}), so" in resumed, \
        resumed
    assert "new in use" not in resumed


def test_changed_examples_gone_classes_and_order_on_resume():
    stored = _fingerprint("/data", {"cat": "1", "dog": "2", "eel": "4"})
    changed = _fingerprint("/data", {"cat": "9", "eel": "4"})
    assert data_changes(stored, changed) == "examples differ in class(es) ['cat']"
    assert data_changes(stored, changed, resume=True) == \
        "examples changed in class(es) ['cat']; class(es) gone ['dog']"
    reordered = _fingerprint("/data", {"dog": "2", "cat": "1", "eel": "4"})
    assert data_changes(stored, reordered) == ""           # a --data-root: every class matches
    assert data_changes(stored, reordered, resume=True) == "the class order changed"
    assert data_changes(stored, stored, resume=True) == ""
    many = _fingerprint("/data", {f"c{k}": "0" for k in range(7)})
    assert re.fullmatch(r"class\(es\) the run never read \['c0', .*'c4'\] \.\.\.",
                        data_changes(stored, many))


def test_a_table_is_compared_by_its_file_s_sha256():
    stored = {"family": "table", "root": "/t.csv", "sha256": "a"}
    assert data_changes(stored, {**stored, "sha256": "b"}) == "its file's sha256 differs"
    assert data_changes(stored, dict(stored), resume=True) == ""
    assert "its file's sha256 differs" in _refusal(
        check_same_data, stored, {**stored, "root": "/copy.csv", "sha256": "b"}, "runs/t",
        "/t.csv")

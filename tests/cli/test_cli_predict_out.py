"""``metaloop predict`` on an easy case, end to end: support images that are the query images
themselves are classified as their own class whatever the names' order, in every output
(the printed lines, --json and --out's results.json), and --out writes nothing on an error."""

import json
import sys
from pathlib import Path

import pytest

from metaloop.cli.main import main

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from conftest import drawing  # noqa: E402

# class names whose sorted order is not the order they are written in, and query files named
# so that no sorted order lines them up with the classes
TRUTH = {"q3.png": "zeta", "q0.png": "Alpha", "b/q1.png": "m", "q4.jpg": "c10", "a.png": "c2"}


@pytest.fixture
def proto_run(protonet_run):
    return str(protonet_run)


def _folders(root, one_shot=False):
    """support/<class>/0.png (or support/<class>.png) and the same drawings as queries."""
    for k, (qfile, cls) in enumerate(sorted(TRUTH.items())):
        im = drawing(k)
        s = root / "s" / (f"{cls}.png" if one_shot else f"{cls}/0.png")
        s.parent.mkdir(parents=True, exist_ok=True)
        im.save(s)
        (root / "q" / qfile).parent.mkdir(parents=True, exist_ok=True)
        im.save(root / "q" / qfile, **({"quality": 100} if qfile.endswith(".jpg") else {}))
    return str(root / "s"), str(root / "q")


@pytest.mark.parametrize("one_shot", [False, True])
def test_queries_equal_to_the_support_are_their_own_class(proto_run, tmp_path, capsys,
                                                          one_shot):
    s, q = _folders(tmp_path, one_shot)
    base = ["predict", "--checkpoint", proto_run, "--support", s, "--query", q]
    assert main(base) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines == [f"{f}\t{TRUTH[f]}" for f in sorted(TRUTH)]
    out = tmp_path / "out" / "deeper"
    assert main([*base, "--json", "--out", str(out)]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert {r["file"]: r["class"] for r in rows} == TRUTH
    for r in rows:
        assert max(r["scores"], key=r["scores"].get) == TRUTH[r["file"]]
    res = json.loads((out / "results.json").read_text())
    assert res["predictions"] == rows
    assert res["classes"] == sorted(TRUTH.values())
    assert res["checkpoints"] == [proto_run] and (res["support"], res["query"]) == (s, q)
    assert res["settings"]["invert"] == "auto" and res["settings"]["query_shift"] == 0
    assert [p.name for p in out.iterdir()] == ["results.json"]      # no temporary left


def test_an_ensemble_agrees_with_its_identical_members(proto_run, tmp_path, capsys):
    s, q = _folders(tmp_path)
    assert main(["predict", "--checkpoint", proto_run, "--support", s, "--query", q,
                 "--json"]) == 0
    one = json.loads(capsys.readouterr().out)
    assert main(["predict", "--checkpoint", proto_run, proto_run, "--support", s, "--query", q,
                 "--json"]) == 0
    two = json.loads(capsys.readouterr().out)
    assert [r["class"] for r in two] == [r["class"] for r in one]
    for a, b in zip(one, two):
        assert a["scores"] == pytest.approx(b["scores"], abs=2e-6)


def test_out_writes_nothing_on_an_error(proto_run, tmp_path, capsys):
    s, q = _folders(tmp_path)
    (tmp_path / "q" / "broken.png").write_bytes(b"\x89PNG not really")
    out = tmp_path / "new" / "out"
    assert main(["predict", "--checkpoint", proto_run, "--support", s, "--query", q,
                 "--out", str(out)]) == 2
    captured = capsys.readouterr()
    assert "cannot read image" in captured.err and "broken.png" in captured.err
    assert captured.out == "" and not (tmp_path / "new").exists()
    (tmp_path / "old").mkdir()
    (tmp_path / "old" / "results.json").write_text("{}\n")      # an earlier result is kept
    assert main(["predict", "--checkpoint", proto_run, "--support", s, "--query", q,
                 "--out", str(tmp_path / "old")]) == 2
    assert (tmp_path / "old" / "results.json").read_text() == "{}\n"


def test_a_progress_bar_counts_the_images_read(proto_run, tmp_path, capsys):
    """Every command shows a progress bar (docs/index.md); predict showed none while it read
    a folder of any size. --no-progress turns it off; stdout is the same either way."""
    s, q = _folders(tmp_path)
    base = ["predict", "--checkpoint", proto_run, "--support", s, "--query", q]
    assert main(base) == 0
    shown = capsys.readouterr()
    assert "reading images" in shown.err
    assert main([*base, "--no-progress"]) == 0
    quiet = capsys.readouterr()
    assert quiet.err == "" and quiet.out == shown.out

"""``metaloop predict`` with several unreadable query images reads every query first, then
refuses naming each unreadable one (up to 10, then how many more), with exit 2 and nothing
written; it stopped at the first, so each fix met the next broken file."""

import sys
from pathlib import Path

import pytest

from metaloop.cli.main import main
from metaloop.data.images import load_query

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from conftest import drawing  # noqa: E402


def _folders(root: Path, broken: int) -> tuple[str, str]:
    for k, cls in enumerate(("a", "b", "c", "d", "e")):
        (root / "s" / cls).mkdir(parents=True)
        drawing(k).save(root / "s" / cls / "0.png")
    (root / "q").mkdir()
    for k in range(3):
        drawing(k).save(root / "q" / f"ok{k}.png")
    for k in range(broken):
        (root / "q" / f"broken{k:02d}.png").write_bytes(b"\x89PNG not really")
    return str(root / "s"), str(root / "q")


@pytest.mark.parametrize("broken", [3, 13])
def test_every_unreadable_query_is_named_and_nothing_written(protonet_run, tmp_path, capsys,
                                                             broken):
    s, q = _folders(tmp_path, broken)
    out = tmp_path / "out"
    assert main(["predict", "--checkpoint", str(protonet_run), "--support", s, "--query", q,
                 "--out", str(out)]) == 2
    captured = capsys.readouterr()
    assert captured.out == "" and not out.exists()
    err = captured.err
    assert f"{broken} of the {broken + 3} query images in {q} cannot be read" in err, err
    named = [k for k in range(broken) if f"broken{k:02d}.png" in err]
    assert named == list(range(min(broken, 10))), err
    assert err.count("cannot read image") == min(broken, 10)
    assert ("and 3 more" in err) == (broken == 13)
    assert "ok0.png" not in err


def test_load_query_reads_all_before_it_refuses(tmp_path):
    _, q = _folders(tmp_path, 2)
    seen = []
    with pytest.raises(ValueError, match=r"2 of the 5 query images .* cannot be read") as e:
        load_query(q, progress=seen.append)
    assert "broken00.png" in str(e.value) and "broken01.png" in str(e.value)
    assert len(seen) == 3                 # the readable ones all decoded

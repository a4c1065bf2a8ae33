"""A marked table still to be measured (e.g. one only a GPU can fill) holds just
``NOT_MEASURED`` and passes ``gen_tables --check``; dropping its records in is all it takes
to fill it. Any other table without records is still reported (a misspelt marker)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from metaloop.evaluate.records import NOT_MEASURED, generate, main, write_record

ROOT = Path(__file__).resolve().parents[2]


def _record(**over) -> dict:
    rec = dict(table="gpu", row="MAML", metric="seconds per iteration", mean=0.05, ci95=None,
               n=60, budget={"iterations": 60}, device="NVIDIA H100", torch="2.11.0",
               date="2026-12-07", config=None, command="python benchmarks/bench_maml.py",
               published=None)
    rec.update(over)
    return rec


def test_a_table_holding_not_measured_passes_check_until_its_records_come(tmp_path, capsys):
    docs, recs = tmp_path / "docs", tmp_path / "docs" / "results"
    write_record(recs / "cpu.json", **_record(table="cpu", device="2-core CPU"))
    page = docs / "b.md"
    page.write_text(f"<!-- table:cpu -->\n<!-- /table -->\n\n<!-- table:gpu -->\n"
                    f"{NOT_MEASURED}<!-- /table -->\n")
    assert generate(docs, recs) == []                      # fills cpu, keeps gpu's line
    assert main(["--docs", str(docs), "--check"]) == 0
    assert f"<!-- table:gpu -->\n{NOT_MEASURED}<!-- /table -->" in page.read_text()
    write_record(recs / "gpu.json", **_record())           # the GPU's record dropped in
    assert main(["--docs", str(docs), "--check"]) == 1
    assert "table 'gpu' is stale" in capsys.readouterr().err
    assert generate(docs, recs) == []
    assert NOT_MEASURED not in page.read_text() and "NVIDIA H100" in page.read_text()
    assert main(["--docs", str(docs), "--check"]) == 0


def test_a_table_without_records_and_another_body_is_still_reported(tmp_path, capsys):
    docs, recs = tmp_path / "docs", tmp_path / "docs" / "results"
    write_record(recs / "cpu.json", **_record(table="cpu"))
    (docs / "b.md").write_text("<!-- table:cpu -->\n<!-- /table -->\n<!-- table:gpuu -->\n"
                               "<!-- /table -->\n")
    generate(docs, recs)
    assert main(["--docs", str(docs), "--check"]) == 1
    err = capsys.readouterr().err
    assert "table 'gpuu' has no records" in err and NOT_MEASURED.strip() in err


@pytest.mark.parametrize("body", [
    "| row | seconds |\n|---|---|\n| MAML | 0.05 |\n",       # a stale hand-written row
    f"{NOT_MEASURED}| MAML | 0.05 |\n",                       # the marker and more
    NOT_MEASURED.replace("yet", "yet!"),                      # a misspelt marker
])
def test_a_table_without_records_and_any_other_body_is_reported(tmp_path, capsys, body):
    """Only a body of exactly ``NOT_MEASURED`` passes without records; any other, empty or
    not, is reported and left as it is."""
    docs, recs = tmp_path / "docs", tmp_path / "docs" / "results"
    write_record(recs / "cpu.json", **_record(table="cpu"))
    page = docs / "b.md"
    page.write_text(f"<!-- table:cpu -->\n<!-- /table -->\n<!-- table:gpu -->\n{body}"
                    f"<!-- /table -->\n")
    assert generate(docs, recs) != []
    assert f"<!-- table:gpu -->\n{body}<!-- /table -->" in page.read_text()
    assert main(["--docs", str(docs), "--check"]) == 1
    assert "table 'gpu' has no records" in capsys.readouterr().err


def test_the_gpu_tables_of_benchmarks_md_take_a_gpu_record_dropped_in(tmp_path):
    """docs/benchmarks.md marks benchmarks-maml-gpu and benchmarks-maml-sinusoid-gpu: a
    bench_maml.py --device cuda record copied into (a copy of) docs/results fills its table."""
    text = (ROOT / "docs" / "benchmarks.md").read_text()
    for name in ("benchmarks-maml-gpu", "benchmarks-maml-sinusoid-gpu"):
        assert f"<!-- table:{name} -->\n" in text, name
    docs = tmp_path / "docs"
    docs.mkdir()
    for md in (ROOT / "docs").glob("*.md"):
        (docs / md.name).write_text(md.read_text())
    shutil.copytree(ROOT / "docs" / "results", docs / "results")
    assert main(["--docs", str(docs), "--check"]) == 0
    cpu = json.loads((docs / "results" /
                      "benchmarks_maml_second_order_maml_metaloop.json").read_text())
    gpu = {**cpu, "table": "benchmarks-maml-gpu", "device": "NVIDIA H100 80GB HBM3, TF32 off",
           "command": cpu["command"].replace("bench_maml.py", "bench_maml.py --device cuda")}
    write_record(docs / "results" / "benchmarks_maml_gpu_second_order_maml_metaloop.json",
                 **gpu)
    assert main(["--docs", str(docs)]) == 0
    assert main(["--docs", str(docs), "--check"]) == 0
    block = (docs / "benchmarks.md").read_text().split("<!-- table:benchmarks-maml-gpu -->")[1]
    assert "NVIDIA H100 80GB HBM3" in block.split("<!-- /table -->")[0]

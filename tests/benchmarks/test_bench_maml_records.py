"""``benchmarks/bench_maml.py --records``: a GPU run's records have their own file names and
tables (``benchmarks-maml-gpu``, ``benchmarks-maml-sinusoid-gpu``), so a GPU run written into
the folder of the CPU's records never replaces them; a CPU record's device is
``records.cpu_device()``'s."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
import torch

from metaloop.evaluate.records import cpu_device, validate_record

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "benchmarks"))

import bench_maml  # noqa: E402  (benchmarks/ is on the path)

RESULTS = {"metaloop": {"times": [0.5, 0.4, 0.6], "rss_mib": 300.0, "setup_mib": 100.0},
           "plain": {"times": [1.0, 0.8, 1.2], "rss_mib": 310.0, "setup_mib": 100.0}}


def _write(records: Path, argv: list[str], monkeypatch) -> list[dict]:
    """``write_records`` of ``RESULTS`` for ``argv`` into ``records``; the records written."""
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda *_: "Fake GPU 80GB")
    args = bench_maml.parse([*argv, "--records", str(records)])
    before = {p.name for p in records.glob("*.json")} if records.exists() else set()
    bench_maml.write_records(RESULTS, args, argv)
    made = sorted(p for p in records.glob("*.json") if p.name not in before)
    assert [p.name for p in made] == sorted(
        bench_maml.record_path(records, n, args).name for n in RESULTS)
    return [validate_record(json.loads(p.read_text())) for p in made]


@pytest.mark.parametrize("model, cpu_table", [([], "benchmarks-maml"),
                                              (["--model", "sinusoid"],
                                               "benchmarks-maml-sinusoid")])
def test_gpu_records_do_not_replace_the_cpus(tmp_path, monkeypatch, model, cpu_table):
    records = tmp_path / "results"
    cpu = _write(records, [*model, "--only", "metaloop,plain"], monkeypatch)
    gpu = _write(records, [*model, "--only", "metaloop,plain", "--device", "cuda"],
                 monkeypatch)
    assert len(list(records.glob("*.json"))) == 4                # the CPU's are still there
    assert {r["table"] for r in cpu} == {cpu_table}
    assert {r["table"] for r in gpu} == {f"{cpu_table}-gpu"}
    names = sorted(p.name for p in records.glob("*gpu*.json"))
    assert len(names) == 2 and all(n.startswith("benchmarks_maml_gpu_") for n in names)
    assert {r["device"] for r in gpu} == {"Fake GPU 80GB (TF32 off)"}
    assert {r["device"] for r in cpu} == {f"{cpu_device()}, shared"}
    assert all("peak_gpu_mib" in r for r in gpu) and all("peak_rss_mib" in r for r in cpu)


def test_the_record_names_and_tables_follow_the_device():
    cpu = bench_maml.parse([])
    gpu = bench_maml.parse(["--device", "cuda"])
    assert bench_maml.record_path("d", "metaloop", cpu).name == \
        "benchmarks_maml_second_order_maml_metaloop.json"            # as committed
    assert bench_maml.record_path("d", "metaloop", gpu).name == \
        "benchmarks_maml_gpu_second_order_maml_metaloop.json"
    assert (bench_maml.record_table(cpu), bench_maml.record_table(gpu)) == \
        ("benchmarks-maml", "benchmarks-maml-gpu")
    sine = bench_maml.parse(["--model", "sinusoid", "--device", "cuda", "--first-order"])
    assert bench_maml.record_path("d", "metaloop-loop", sine).name == \
        "benchmarks_maml_gpu_sinusoid_first_order_mb25_metaloop_loop.json"
    assert bench_maml.record_table(sine) == "benchmarks-maml-sinusoid-gpu"


def test_every_committed_bench_maml_record_keeps_its_name():
    """The committed CPU records are where a CPU run writes them, in the CPU tables."""
    committed = sorted((ROOT / "docs" / "results").glob("benchmarks_maml_*.json"))
    assert committed
    for path in committed:
        rec = json.loads(path.read_text())
        assert not path.name.startswith("benchmarks_maml_gpu_"), path.name
        assert rec["table"] in ("benchmarks-maml", "benchmarks-maml-sinusoid"), path.name

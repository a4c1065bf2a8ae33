"""Result records (write_record, load_records) and the table generator (--check)."""

from __future__ import annotations

import json
import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

from metaloop.evaluate import records

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from conftest import record_fields  # noqa: E402

from metaloop.evaluate.records import (
    RecordError,
    generate,
    load_records,
    main,
    render_grid,
    render_table,
    write_record,
)

REPO = Path(__file__).resolve().parents[2]


_fields = record_fields


def test_write_then_load_roundtrips_every_field_and_extras(tmp_path):
    p = write_record(tmp_path / "r" / "maml.json", **_fields(unit="%", extra={"k": [1, 2]}))
    assert p == tmp_path / "r" / "maml.json"
    (rec,) = load_records(tmp_path / "r")
    assert rec["_file"] == "maml.json"
    assert {k: v for k, v in rec.items() if k != "_file"} == _fields(unit="%",
                                                                      extra={"k": [1, 2]})
    # no temporary file is left beside it
    assert sorted(os.listdir(tmp_path / "r")) == ["maml.json"]


@pytest.mark.parametrize("over,names", [
    ({"mean": float("nan")}, "mean"),
    ({"ci95": -1.0}, "ci95"),
    ({"n": 0}, "n"),
    ({"table": "Omniglot Table"}, "table"),
    ({"budget": {"hours": 3}}, "budget has unknown key(s) hours"),
    ({"budget": {}}, "budget"),
    ({"date": "30/11/2026"}, "date"),
    ({"published": {"value": 1.0}}, "published"),
    ({"command": ""}, "command"),
    ({"training_curve": [[100, "high"]]}, "training_curve"),
    ({"training_curve": []}, "training_curve"),
    ({"projection": {"iterations": 0, "source": "s"}}, "projection"),
    ({"projection": {"iterations": 10}}, "projection"),
    ({"full_config": 3}, "full_config"),
    ({"digits": True}, "digits must be an int in 0..6"),         # f"{x:.{True}f}" fails
    # a mean of one value has no CI: a 0.0 would read as certainty
    ({"n": 1, "ci95": 0.0}, "ci95 must be null for a mean of one value"),
    # a grid cell is named by all three fields (render_grid would meet a KeyError)
    ({"grid": "omniglot"}, "the record has grid without grid_row and grid_column"),
    ({"grid_row": "MAML", "grid_column": "5w1s"},
     "the record has grid_row and grid_column without grid"),
])
def test_malformed_fields_raise_a_named_error_and_write_nothing(tmp_path, over, names):
    with pytest.raises(RecordError, match=names.replace("(", r"\(").replace(")", r"\)")):
        write_record(tmp_path / "bad.json", **_fields(**over))
    assert not list(tmp_path.iterdir())


def test_missing_fields_are_named(tmp_path):
    f = _fields()
    del f["ci95"], f["published"]
    with pytest.raises(ValueError, match="missing required field.*ci95, published"):
        write_record(tmp_path / "x.json", **f)


def test_null_ci_and_n_are_allowed_and_render_as_a_bare_value(tmp_path):
    write_record(tmp_path / "speed.json", **_fields(
        table="benchmarks-maml", row="metaloop vs learn2learn", metric="time ratio",
        mean=1.114, ci95=None, n=None, published=None, unit="x", digits=3,
        budget={"iterations": 20}))
    table = render_table(load_records(tmp_path))
    row = table.splitlines()[2]
    assert row == "| [metaloop vs learn2learn](#speed) | 1.114x | — | 20 it | — |"
    # no row has a CI: the header names the measurement, not "mean ± 95% CI"
    assert table.splitlines()[0] == "| method and setting | time ratio | n | budget | " \
                                    "published (source) |"


def test_write_is_atomic_an_existing_record_survives_a_failed_write(tmp_path, monkeypatch):
    p = write_record(tmp_path / "a.json", **_fields())
    before = p.read_text()

    def boom(*a):
        raise OSError("disk full")

    monkeypatch.setattr(records.os, "replace", boom)
    with pytest.raises(OSError, match="disk full"):
        write_record(p, **_fields(mean=12.0))
    assert p.read_text() == before
    assert sorted(os.listdir(tmp_path)) == ["a.json"]


def test_load_records_names_the_bad_file(tmp_path):
    write_record(tmp_path / "a.json", **_fields())
    (tmp_path / "b.json").write_text("{not json")
    with pytest.raises(ValueError, match="b.json: not valid JSON"):
        load_records(tmp_path)
    (tmp_path / "b.json").write_text(json.dumps({**_fields(), "n": -3}))
    with pytest.raises(ValueError, match="b.json: n must be a positive int"):
        load_records(tmp_path)
    with pytest.raises(FileNotFoundError, match="nope"):
        load_records(tmp_path / "nope")


def _layout(table: str):
    """A rendered table as (header cells, rows' cells, the line under it, the command said
    once or None, entries as (id, text, its own command or None))."""
    lines = table.splitlines()
    end = lines.index("")

    def cells(line):
        return [c.strip() for c in re.split(r"(?<!\\)\|", line.strip()[1:-1])]
    shared = re.search(r"^```bash\n(.*)\n```$", table, re.M)
    entries = re.findall(r'^- <a id="([^"]+)"></a>(.*)\n(?:\n    ```bash\n    (.*)\n    ```\n)?',
                         table, re.M)
    return (cells(lines[0]), [cells(x) for x in lines[2:end]], lines[end + 1],
            shared and shared[1], [(a, t, c or None) for a, t, c in entries])


def test_render_table_formats_value_budget_published_and_orders_rows(tmp_path):
    write_record(tmp_path / "a.json", **_fields(row="R2D2", mean=98.26, ci95=0.25, order=2,
                                                unit="%", note="head by ridge regression",
                                                command="metaloop eval --checkpoint runs/a"))
    write_record(tmp_path / "b.json", **_fields(row="MAML | 1st [fo]", order=1, unit="%",
                                                budget={"gpu_seconds": 95.4},
                                                published={"value": "98.3", "source": "s"}))
    head, rows, line, shared, entries = _layout(render_table(load_records(tmp_path)))
    # one metric and one device: said once, in the header and in the line under the table
    assert head == ["method and setting", "accuracy (%): mean ± 95% CI", "n", "budget",
                    "published (source)"]
    assert rows == [["[MAML \\| 1st \\[fo\\]](#b)", "97.40 ± 0.27%", "600", "95 GPU-s",
                     "98.3 (s)"],                              # pipes escaped, order first
                    ["[R2D2](#a)", "98.26 ± 0.25%", "600", "60,000 it, 54.7 CPU-min",
                     "98.7 ± 0.4% (Finn et al. 2017, Table 1)"]]
    assert line == ("*Generated from 2 record(s) in `docs/results/`; device: 2-core CPU; "
                    "torch 2.13.0; measured 2026-11-30. Below, each row's note and command:*")
    # each row's entry, in the rows' order, under the id its label links to
    assert shared is None and entries == [
        ("b", "**MAML | 1st [fo]**", _fields()["command"]),
        ("a", "**R2D2**: head by ridge regression", "metaloop eval --checkpoint runs/a")]


def test_a_metric_device_or_published_number_the_rows_differ_in_is_a_column(tmp_path):
    write_record(tmp_path / "t.json", **_fields(row="test", device="GPU", published=None,
                                                command="metaloop eval --tasks 600"))
    write_record(tmp_path / "v.json", **_fields(row="val", metric="validation accuracy (%)",
                                                published=None))
    head, rows, line, shared, entries = _layout(render_table(load_records(tmp_path)))
    assert head == ["method and setting", "metric", "measured (mean ± 95% CI)", "n",
                    "budget", "device"]
    assert rows[0] == ["[test](#t)", "accuracy (%)", "97.40 ± 0.27", "600",
                       "60,000 it, 54.7 CPU-min", "GPU"]
    assert rows[1][1] == "validation accuracy (%)" and rows[1][5] == "2-core CPU"
    # no row has a published number or a note
    assert line == ("*Generated from 2 record(s) in `docs/results/`; no published number; "
                    "torch 2.13.0; measured 2026-11-30. Below, each row's command:*")
    assert shared is None and entries == [("t", "**test**", "metaloop eval --tasks 600"),
                                          ("v", "**val**", _fields()["command"])]
    # a device and a published number every row shares are said once, under the table
    write_record(tmp_path / "v.json", **_fields(row="val", device="GPU"))
    write_record(tmp_path / "t.json", **_fields(row="test", device="GPU"))
    head, _, line, _, _ = _layout(render_table(load_records(tmp_path)))
    assert head == ["method and setting", "accuracy (%): mean ± 95% CI", "n", "budget"]
    assert "; device: GPU; published: 98.7 ± 0.4% (Finn et al. 2017, Table 1); torch" in line


def test_a_command_every_row_shares_is_said_once_and_entries_only_hold_notes(tmp_path):
    cmd = "python benchmarks/bench_heads.py --reps 15"
    write_record(tmp_path / "a.json", **_fields(row="ridge", command=cmd, note="closed form"))
    write_record(tmp_path / "b.json", **_fields(row="svm", command=cmd))
    table = render_table(load_records(tmp_path))
    _, rows, line, shared, entries = _layout(table)
    assert line.endswith("measured 2026-11-30. Every row's command, then each row's note:*")
    assert shared == cmd and table.count(cmd) == 1
    assert [r[0] for r in rows] == ["[ridge](#a)", "[svm](#b)"]
    assert entries == [("a", "**ridge**: closed form", None), ("b", "**svm**", None)]
    # without notes an entry would only repeat its row: none, and the labels link nowhere
    write_record(tmp_path / "a.json", **_fields(row="ridge", command=cmd))
    table = render_table(load_records(tmp_path))
    _, rows, line, shared, entries = _layout(table)
    assert line.endswith("measured 2026-11-30. Every row's command:*")
    assert shared == cmd and entries == [] and "<a id" not in table
    assert [r[0] for r in rows] == ["ridge", "svm"]
    assert table.endswith(f"Every row's command:*\n\n```bash\n{cmd}\n```\n")
    # one row keeps its command in its entry
    (tmp_path / "b.json").unlink()
    assert _layout(render_table(load_records(tmp_path)))[3:] == (None, [("a", "**ridge**",
                                                                         cmd)])


def test_an_entry_holds_the_exact_command_and_ids_are_unique_without_files():
    rec = _fields()
    odd = dict(rec, command="metaloop eval --checkpoint `ls -d runs/* | head -1` ```x```")
    table = render_table([rec, dict(rec, note="the same label twice"), odd])
    _, rows, _, _, _ = _layout(table)
    ids = re.findall(r'<a id="([^"]+)"></a>', table)
    assert ids == ["MAML-5-way-1-shot", "MAML-5-way-1-shot-2", "MAML-5-way-1-shot-3"]
    assert [r[0] for r in rows] == [f"[MAML, 5-way 1-shot](#{a})" for a in ids]
    # a command with backticks gets a longer fence, and stays exactly what it was
    assert "\n    ````bash\n    " + odd["command"] + "\n    ````\n" in table


def test_a_table_marked_twice_in_one_document_is_a_named_error_and_writes_nothing(
        tmp_path, capsys):
    docs, recs = _site(tmp_path)
    text = (docs / "results.md").read_text() + "<!-- table:sinusoid -->\n<!-- /table -->\n"
    (docs / "results.md").write_text(text)
    (docs / "other.md").write_text("<!-- table:omniglot -->\nold\n<!-- /table -->\n")
    assert main(["--docs", str(docs)]) == 2
    assert "results.md: the entries of its tables would repeat the id(s) #sine" in \
        capsys.readouterr().err
    assert (docs / "results.md").read_text() == text
    assert (docs / "other.md").read_text() == "<!-- table:omniglot -->\nold\n<!-- /table -->\n"


def _site(tmp_path) -> tuple[Path, Path]:
    docs, recs = tmp_path / "docs", tmp_path / "docs" / "results"
    write_record(recs / "maml.json", **_fields())
    write_record(recs / "sine.json", **_fields(table="sinusoid", row="MAML", metric="MSE",
                                               mean=0.218, ci95=0.029, digits=3))
    (docs / "results.md").write_text("# Results\n\n<!-- table:omniglot -->\nold\n"
                                     "<!-- /table -->\n\ntext\n\n<!-- table:sinusoid -->\n"
                                     "<!-- /table -->\nend\n")
    return docs, recs


def test_generate_fills_every_marked_table_and_check_then_passes(tmp_path):
    docs, recs = _site(tmp_path)
    assert main(["--docs", str(docs), "--check"]) == 1
    text = (docs / "results.md").read_text()
    assert "old" in text                                      # --check writes nothing
    assert generate(docs, recs) == []
    text = (docs / "results.md").read_text()
    assert "old" not in text and "| 97.40 ± 0.27 |" in text and "| 0.218 ± 0.029 |" in text
    assert text.startswith("# Results\n\n<!-- table:omniglot -->\n| method")
    assert text.endswith("<!-- /table -->\nend\n") and "\n\ntext\n\n" in text
    assert main(["--docs", str(docs), "--check"]) == 0
    assert generate(docs, recs) == []                         # idempotent
    assert (docs / "results.md").read_text() == text


def test_check_names_the_stale_table_after_a_record_changes(tmp_path, capsys):
    docs, recs = _site(tmp_path)
    generate(docs, recs)
    write_record(recs / "sine.json", **_fields(table="sinusoid", row="MAML", metric="MSE",
                                               mean=0.3, ci95=0.029, digits=3))
    assert main(["--docs", str(docs), "--check"]) == 1
    err = capsys.readouterr().err
    assert "table 'sinusoid' is stale" in err and "'omniglot'" not in err


def test_check_fails_on_a_marker_without_records_and_on_records_without_a_marker(
        tmp_path, capsys):
    docs, recs = _site(tmp_path)
    write_record(recs / "vae.json", **_fields(table="generative"))
    with open(docs / "results.md", "a") as f:
        f.write("<!-- table:continual -->\n<!-- /table -->\n")
    assert main(["--docs", str(docs), "--check"]) == 1
    err = capsys.readouterr().err
    assert "table 'continual' has no records" in err
    assert "table 'generative' (vae.json) is not marked in any document" in err


def test_a_malformed_record_exits_2_naming_it(tmp_path, capsys):
    docs, recs = _site(tmp_path)
    (recs / "bad.json").write_text(json.dumps({"table": "omniglot"}))
    assert main(["--docs", str(docs), "--check"]) == 2
    assert "bad.json: missing required field(s) row" in capsys.readouterr().err


def test_command_line_rebuilds_the_exact_subcommand():
    import argparse
    ns = argparse.Namespace(func=print, command="eval", threads=1, checkpoint="runs/my run",
                            tasks=600, steps=None, within_alphabet=False, no_progress=True,
                            device="cpu")
    cmd = records.command_line(ns)
    assert shlex.split(cmd) == ["metaloop", "--threads", "1", "eval", "--checkpoint",
                                "runs/my run", "--device", "cpu", "--no-progress", "--tasks",
                                "600", "--no-within-alphabet"]
    # the allocator is a global option: before the subcommand, and left out at its default
    assert records.command_line(argparse.Namespace(**{**vars(ns), "malloc": "heap"})) == cmd
    cmd = records.command_line(argparse.Namespace(**{**vars(ns), "malloc": "system"}))
    assert shlex.split(cmd)[:5] == ["metaloop", "--threads", "1", "--malloc", "system"]
    assert shlex.split(cmd)[5] == "eval"


def test_the_repository_documents_are_current():
    """The committed docs match the committed records (what CI runs with --check)."""
    r = subprocess.run([sys.executable, str(REPO / "docs" / "gen_tables.py"), "--check"],
                       capture_output=True, text=True)
    assert r.returncode == 0, r.stderr


def test_a_grid_pivots_its_records_into_method_by_setting_cells(tmp_path):
    recs = tmp_path / "results"
    cell = dict(grid="omni", table="omniglot")
    write_record(recs / "a.json", **_fields(**cell, grid_row="MAML", grid_column="20w1s",
                                            mean=89.39, order=2,
                                            published={"value": "95.8 ± 0.3%", "source": "s"}))
    write_record(recs / "b.json", **_fields(**cell, grid_row="MAML", grid_column="5w1s",
                                            order=1))
    write_record(recs / "c.json", **_fields(**cell, grid_row="R2D2", grid_column="5w5s",
                                            mean=99.5, published=None, order=5))
    docs = tmp_path
    (docs / "r.md").write_text("<!-- table:omniglot -->\n<!-- /table -->\n"
                               "<!-- grid:omni -->\nold\n<!-- /grid -->\n")
    assert generate(docs, recs) == []
    text = (docs / "r.md").read_text()
    head = "| method | 5-way 1-shot | 5-way 5-shot | 20-way 1-shot |"
    assert head in text                                      # settings by ways, then shots
    maml = next(line for line in text.splitlines() if line.startswith("| MAML |"))
    cells = [c.strip() for c in maml.strip("|").split("|")][1:]
    assert cells[0].startswith("**97.40 ± 0.27**<br>Finn et al. 2017: 98.7 (-1.30)")
    assert cells[1] == "not measured" and "(-6.41)" in cells[2]
    r2d2 = next(line for line in text.splitlines() if line.startswith("| R2D2 |"))
    assert "<br>" in r2d2 and ": " not in r2d2 and text.index("| MAML |") < text.index("| R2D2 |")
    # what the grid's footer says: each cell's source, device and command are with its row
    grid = text.split("<!-- grid:omni -->\n")[1]
    assert "*Generated from 3 record(s) in `docs/results/`; each cell is a row of the " \
           "tables below, where its source, device and command are given.*" in grid
    table = text.split("<!-- table:omniglot -->\n")[1].split("<!-- /table -->")[0]
    _, rows, line, shared, entries = _layout(table)
    assert [r[0] for r in rows] == ["MAML, 5-way 1-shot"] * 3 and shared == _fields()["command"]
    assert "95.8 ± 0.3% (s)" in rows[1] and "device: 2-core CPU" in line and entries == []
    assert main(["--docs", str(docs), "--check"]) == 0
    write_record(recs / "d.json", **_fields(**cell, grid_row="R2D2", grid_column="5w5s"))
    with pytest.raises(ValueError, match="both fill grid 'omni' cell"):
        generate(docs, recs)


def test_a_cut_short_last_line_or_a_null_accuracy_keeps_the_rest_of_the_curve(tmp_path):
    """One bad line threw the whole training curve away (the record then had none): a run
    killed while writing its last line, or a line whose accuracy is null."""
    lines = [json.dumps({"iteration": i, "accuracy": 0.5}) for i in range(1, 5)]
    lines.insert(2, json.dumps({"iteration": 3, "accuracy": None}))
    (tmp_path / "metrics.jsonl").write_text("\n".join(lines) + '\n{"iteration": 5, "acc')
    assert records.training_curve(tmp_path, points=4) == [[1, 50.0], [2, 50.0], [3, 50.0],
                                                          [4, 50.0]]
    # a line before the last that is not JSON is left out too: the curve is a side note of
    # the record, and the evaluation it is written with must not be lost for it
    (tmp_path / "metrics.jsonl").write_text(lines[0] + "\n{oops\n" + lines[1] + "\n")
    assert records.training_curve(tmp_path) == [[1, 50.0], [2, 50.0]]


def test_training_curve_averages_equal_windows_of_the_metrics(tmp_path):
    lines = [{"iteration": i, "loss": 1.0, "accuracy": 0.1 * ((i - 1) // 5), "time": i}
             for i in range(1, 21)]                    # 4 blocks of 5: 0.0, 0.1, 0.2, 0.3
    (tmp_path / "metrics.jsonl").write_text("".join(json.dumps(x) + "\n" for x in lines))
    assert records.training_curve(tmp_path, points=4) == [[5, 0.0], [10, 10.0], [15, 20.0],
                                                          [20, 30.0]]
    curve = records.training_curve(tmp_path, points=3)  # uneven windows: 6, 7, 7 lines
    assert [it for it, _ in curve] == [6, 13, 20]
    assert curve[0][1] == round(100 * (5 * 0.0 + 0.1) / 6, 2)
    assert records.training_curve(tmp_path, points=50)[-1] == [20, 30.0]   # one line each
    assert records.training_curve(tmp_path / "missing") is None
    (tmp_path / "m2").mkdir()
    (tmp_path / "m2" / "metrics.jsonl").write_text('{"iteration": 1, "loss": 0.5}\n')
    assert records.training_curve(tmp_path / "m2") is None              # a regression run
    with pytest.raises(ValueError, match="points >= 1"):
        records.training_curve(tmp_path, points=0)


@pytest.mark.parametrize("value, source, shown", [
    ("96.0%", "Snell et al. 2017, Prototypical Networks (60-way training), Table 1",
     "Snell et al. 2017: 96.0 (-1.95)"),
    ("98.90 ± 0.10%", "Nichol et al. 2018, Table 1 (Reptile, non-transductive)",
     "Nichol et al. 2018: 98.90 (-4.85)"),
    ("98.0 ± 0.3%", "Raghu et al. 2020 (ANIL)", "Raghu et al. 2020: 98.0 (-3.95)"),
    ("95", "the paper", "the paper: 95 (-0.95)"),
])
def test_a_grid_cell_quotes_the_published_digits_and_whose_number_it_is(value, source,
                                                                           shown):
    """A grid cell names the source's authors and year (a method's cell may quote another
    method's paper) and keeps the published digits as written: 96.0 stays 96.0."""
    rec = _fields(grid="omni", grid_row="R2D2", grid_column="20w1s", mean=94.05,
                  published={"value": value, "source": source})
    (r2d2,) = [line for line in render_grid([rec]).splitlines() if line.startswith("| R2D2")]
    assert f"**94.05 ± 0.27**<br>{shown}<br>60,000 it, 54.7 CPU-min" in r2d2


def test_the_short_block_lists_only_cells_below_the_paper_with_curve_and_price(tmp_path):
    recs = tmp_path / "results"
    cell = dict(grid="omni", table="omniglot")
    pub = {"value": "95.8 ± 0.3%", "source": "Finn et al. 2017, Table 1"}
    write_record(recs / "a.json", **_fields(**cell, grid_row="MAML", grid_column="20w1s",
                                            mean=89.39, published=pub,
                                            budget={"iterations": 2000, "cpu_seconds": 2400},
                                            training_curve=[[1000, 80.0], [2000, 85.5]],
                                            projection={"iterations": 120000,
                                                        "source": "the paper"},
                                            full_config="configs/x_full.toml"))
    write_record(recs / "b.json", **_fields(**cell, grid_row="MAML", grid_column="5w1s",
                                            mean=97.0))         # 1.7 short: not listed
    write_record(recs / "c.json", **_fields(**cell, grid_row="R2D2", grid_column="5w1s",
                                            mean=50.0, published=None))   # no paper
    docs = tmp_path
    (docs / "r.md").write_text("<!-- table:omniglot -->\n<!-- /table -->\n"
                               "<!-- short:omni -->\nold\n<!-- /short -->\n")
    assert generate(docs, recs) == []
    text = (docs / "r.md").read_text().split("<!-- short:omni -->")[1]
    rows = [line for line in text.splitlines() if line.startswith("| MAML")]
    assert len(rows) == 1 and "R2D2" not in text
    cells = [c.strip() for c in rows[0].strip("|").split("|")]
    assert cells[0] == "MAML, 20-way 1-shot" and cells[1] == "89.39 ± 0.27"
    assert cells[4] == "1,000: 80.0 · 2,000: 85.5"
    assert cells[5] == "120,000 it (the paper): ≈ 40.0 CPU-h"       # 1.2 CPU-s/it x 120k
    assert cells[6] == "`configs/x_full.toml`"
    assert "1 cell(s) more than 2 points below" in text
    assert main(["--docs", str(docs), "--check"]) == 0


def test_format_budget_names_an_ensembles_members():
    from metaloop.evaluate.records import format_budget
    assert format_budget({"iterations": 60000, "cpu_seconds": 3282}) == \
        "60,000 it, 54.7 CPU-min"
    assert format_budget({"members": 4, "iterations": 32000, "cpu_seconds": 3540}) == \
        "4 runs: 32,000 it, 59.0 CPU-min"


def test_a_detail_block_shows_one_records_own_table_and_check_sees_it_change(tmp_path,
                                                                             capsys):
    docs, recs = tmp_path / "docs", tmp_path / "docs" / "results"
    detail = "| samples | FD |\n|---|---|\n| real | 3.0 |\n| VAE | 95.8 |"
    write_record(recs / "gen_fashion.json", **_fields(table="gen", detail=detail))
    (docs / "g.md").write_text("<!-- table:gen -->\n<!-- /table -->\n\n"
                               "<!-- detail:gen_fashion -->\nstale\n<!-- /detail -->\n")
    assert generate(docs, recs) == []
    text = (docs / "g.md").read_text()
    block = text.split("<!-- detail:gen_fashion -->\n")[1].split("<!-- /detail -->")[0]
    assert block.startswith(detail + "\n\n*Generated from `docs/results/gen_fashion.json`; ")
    assert "2-core CPU; torch 2.13.0; measured 2026-11-30" in block
    assert main(["--docs", str(docs), "--check"]) == 0
    write_record(recs / "gen_fashion.json",
                 **_fields(table="gen", detail=detail.replace("95.8", "90.1")))
    assert main(["--docs", str(docs), "--check"]) == 1
    assert "detail 'gen_fashion' is stale" in capsys.readouterr().err


def test_a_detail_marker_naming_a_record_without_detail_is_reported(tmp_path, capsys):
    docs, recs = tmp_path / "docs", tmp_path / "docs" / "results"
    write_record(recs / "plain.json", **_fields(table="gen"))
    (docs / "g.md").write_text("<!-- table:gen -->\n<!-- /table -->\n"
                               "<!-- detail:plain -->\n<!-- /detail -->\n")
    assert main(["--docs", str(docs), "--check"]) == 1
    assert "detail 'plain' has no records" in capsys.readouterr().err


def test_a_detail_that_is_not_a_markdown_table_is_a_named_error(tmp_path):
    with pytest.raises(RecordError, match="detail must be a Markdown table"):
        write_record(tmp_path / "r.json", **_fields(detail="just words"))
    assert not (tmp_path / "r.json").exists()


def _per_task(values, **over) -> dict:
    import statistics

    from scipy.stats import t as student_t
    n = len(values)
    ci = student_t.ppf(0.975, n - 1) * statistics.stdev(values) / n ** 0.5 if n > 1 else None
    return _fields(**{"mean": sum(values) / len(values), "n": len(values), "ci95": ci,
                      "per_task": list(values), "split": "test", "seed": 7, **over})


def test_per_task_values_roundtrip_on_one_line_of_the_file(tmp_path):
    vals = [95.0, 100.0, 90.0, 97.5]
    p = write_record(tmp_path / "r.json", **_per_task(vals))
    (line,) = [ln for ln in p.read_text().splitlines() if '"per_task"' in ln]
    assert line.strip() == '"per_task": [95.0, 100.0, 90.0, 97.5],'
    (rec,) = load_records(tmp_path)
    assert rec["per_task"] == vals and rec["mean"] == 95.625


@pytest.mark.parametrize("over, message", [
    ({"per_task": [1.0, 2.0]}, "per_task has 2 values but n is 3"),
    ({"per_task": [1.0, 2.0, 3.5]}, "per_task averages 2.1667, not the record's mean 2.0"),
    ({"per_task": [1.0, "2", 3.0]}, "per_task must be a list of finite numbers"),
    ({"per_task": 2.0}, "per_task must be a list of finite numbers"),
    # the CI of [1, 2, 3] is Student's t_975(2) * 1 / sqrt(3) = 4.3027 / 1.7321 = 2.4841
    ({"per_task": [1.0, 2.0, 3.0], "ci95": 0.65},
     r"per_task gives the 95% CI t_975\(n - 1\) \* sd / sqrt\(n\) = 2.4841, not the record's "
     r"ci95 0.65"),
])
def test_malformed_per_task_values_are_named_and_nothing_is_written(tmp_path, over, message):
    rec = _fields(mean=2.0, n=3, **over)
    with pytest.raises(RecordError, match=message):
        write_record(tmp_path / "r.json", **rec)
    assert not (tmp_path / "r.json").exists()


@pytest.mark.parametrize("over, message", [
    ({"per_seed": [1.0, 2.0]}, "per_seed has 2 values but n is 3"),
    ({"per_seed": [1.0, 2.0, 3.5]}, "per_seed averages 2.167, not the record's mean 2.0"),
    ({"per_seed": [1.0, None, 3.0]}, "per_seed must be a list of finite numbers"),
    # Student's t_975(2) * 1 / sqrt(3) = 2.484 (to digits + 2): a rescaled CI is not it
    ({"per_seed": [1.0, 2.0, 3.0], "ci95": 0.4},
     r"per_seed gives the 95% CI t_975\(n - 1\) \* sd / sqrt\(n\) = 2.484, not the record's "
     r"ci95 0.4"),
])
def test_per_seed_values_must_be_the_n_behind_the_mean_and_ci(tmp_path, over, message):
    rec = _fields(mean=2.0, n=3, digits=1, **over)
    with pytest.raises(RecordError, match=message):
        write_record(tmp_path / "r.json", **rec)
    assert not (tmp_path / "r.json").exists()
    good = {**rec, "per_seed": [1.0, 2.0, 3.0], "ci95": 2.48}
    assert records.load_record(write_record(tmp_path / "r.json", **good))["per_seed"] == [
        1.0, 2.0, 3.0]


def test_a_record_ci_must_be_that_of_its_per_task_values(tmp_path):
    np = pytest.importorskip("numpy")
    vals = [92.5, 100.0, 85.0, 95.0, 90.0]
    student_t = pytest.importorskip("scipy.stats").t
    want = student_t.ppf(0.975, 4) * np.std(vals, ddof=1) / np.sqrt(len(vals))
    # rounded to the digits shown, within them, kept unrounded, or none
    for ci in (round(want, 2), round(want, 2) + 0.004, want * (1 + 1e-5), None):
        write_record(tmp_path / "r.json", **_per_task(vals, ci95=ci))
    with pytest.raises(RecordError, match=f"= {want:.4f}, not the record's ci95"):
        write_record(tmp_path / "r.json", **_per_task(vals, ci95=want + 0.006))
    # a population sd (ddof=0) or the normal's 1.96 is not what the records hold
    for wrong in (want * np.std(vals) / np.std(vals, ddof=1),
                  1.96 * np.std(vals, ddof=1) / np.sqrt(5)):
        with pytest.raises(RecordError, match="not the record's ci95"):
            write_record(tmp_path / "r.json", **_per_task(vals, ci95=wrong))


def test_an_unrounded_ci_must_be_the_t_interval_not_the_normal_one(tmp_path):
    """A ci95 stored unrounded is held to the t interval relatively: over 1,000 tasks the
    normal's 1.96 is 0.12% short of t_975(999) = 1.9623, less than the 0.005 that the two
    decimals shown allow, so only the relative check catches it."""
    vals = [float(x % 7) for x in range(1000)]                # 0..6: an sd of about 2
    from metaloop.evaluate.stats import ci95, t_975
    good = _per_task(vals, ci95=ci95(vals))
    normal = 1.96 * good["ci95"] / t_975(999)
    assert abs(normal - good["ci95"]) < 0.005                  # within the digits shown
    with pytest.raises(RecordError, match=re.escape(f"= {good['ci95']:.4f}, not the record's "
                                                    f"ci95 {normal!r}")):
        write_record(tmp_path / "r.json", **{**good, "ci95": normal})
    assert not (tmp_path / "r.json").exists()
    # the same CI rounded to the digits shown, or to 5 places, or unrounded, is accepted
    for ci in (round(good["ci95"], 2), round(good["ci95"], 5), good["ci95"]):
        assert write_record(tmp_path / "r.json", **{**good, "ci95": ci}).exists()


def test_paired_difference_is_the_mean_and_ci_of_the_task_by_task_differences():
    torch = pytest.importorskip("torch")
    g = torch.Generator().manual_seed(0)
    a = (torch.rand(50, generator=g) * 100).tolist()
    b = [x + float(d) for x, d in zip(a, torch.randn(50, generator=g))]
    d = records.paired_difference(_per_task(a), _per_task(b))
    diff = torch.tensor(a, dtype=torch.float64) - torch.tensor(b, dtype=torch.float64)
    assert d["n"] == 50
    assert d["mean"] == pytest.approx(float(diff.mean()), abs=1e-12)
    t49 = pytest.importorskip("scipy.stats").t.ppf(0.975, 49)
    assert d["ci95"] == pytest.approx(t49 * float(diff.std()) / 50 ** 0.5, abs=1e-12)
    # the records' own CIs are far wider: the pairing removes the tasks' shared difficulty
    own = t49 * float(torch.tensor(a).std()) / 50 ** 0.5
    assert d["ci95"] < own / 5


def test_records_of_other_tasks_or_without_per_task_values_are_not_paired():
    a = _per_task([1.0, 2.0, 3.0])
    with pytest.raises(RecordError, match=r"not measured on the same tasks: seed 7 != 8"):
        records.paired_difference(a, _per_task([1.0, 2.0, 3.0], seed=8))
    with pytest.raises(RecordError, match=r"n 3 != 2"):
        records.paired_difference(a, _per_task([1.0, 2.0]))
    with pytest.raises(RecordError, match="has no per_task values"):
        records.paired_difference(a, _fields())


@pytest.mark.parametrize("values", [[], ["1.0", 2.0], [1.0, float("nan")], [True, 1.0], 3.0])
def test_per_task_values_that_are_not_finite_numbers_are_named_before_pairing(values):
    # records built in Python (not loaded through load_record) reach paired_difference
    # unvalidated: an empty list divided by zero, a string raised a TypeError
    bad = {**_per_task([1.0, 2.0]), "per_task": values}
    with pytest.raises(RecordError, match=r"^the first record: per_task must be a non-empty "
                                          r"list of finite numbers"):
        records.paired_difference(bad, _per_task([1.0, 2.0]))
    with pytest.raises(RecordError, match=r"^the second record: per_task must be a"):
        records.paired_difference(_per_task([1.0, 2.0]), bad)


def _run_config(ways=5, within_alphabet=False) -> dict:
    return {"family": {"name": "omniglot", "ways": 5, "shots": 1, "queries": 3},
            "eval": {"ways": ways, "shots": 1, "queries": 1,
                     "within_alphabet": within_alphabet}}


@pytest.mark.parametrize("over_a, over_b, message", [
    # the challenge's official runs (one value per run) against 20 generated tasks
    ({"lake_runs": {"runs": 3, "runs_sha256": "ab"}, "error_rate": 2.0, "seed": None},
     {"error_rate": 2.0}, r"tasks 'official runs' != 'generated'"),
    ({"lake_runs": {"runs": 3, "runs_sha256": "ab"}, "error_rate": 2.0},
     {"lake_runs": {"runs": 3, "runs_sha256": "cd"}, "error_rate": 2.0},
     r"runs_sha256 'ab' != 'cd'"),
    # an error rate in % against an accuracy in % of other (within-alphabet) tasks
    ({"error_rate": 2.0, "run_config": _run_config(within_alphabet=True)},
     {"run_config": _run_config()},
     r"metric 'error rate' != 'not an error rate', within_alphabet True != False"),
    # 3-way against 5-way tasks drawn with the same seed
    ({"run_config": _run_config(ways=3)}, {"run_config": _run_config(ways=5)},
     r"ways 3 != 5"),
])
def test_records_of_other_kinds_of_tasks_are_not_paired(over_a, over_b, message):
    a = _per_task([1.0, 2.0, 3.0], **over_a)
    if a["seed"] is None:
        del a["seed"]
    with pytest.raises(RecordError, match=f"not measured on the same tasks: .*{message}"):
        records.paired_difference(a, _per_task([1.0, 2.0, 4.0], **over_b))
    # the same kinds of tasks pair, also when one record keeps no run_config
    b = {**a, "per_task": [1.0, 2.0, 4.0], "mean": 7 / 3}
    assert records.paired_difference(a, b)["mean"] == pytest.approx(-1 / 3)
    b.pop("run_config", None)
    assert records.paired_difference(a, b)["n"] == 3


def test_records_of_other_held_out_classes_are_not_paired_other_drawers_are():
    # another split of your own data's classes (family.test_classes) draws other tasks from
    # the same seed; eval.drawers = "shared" draws the same classes, task by task (other
    # drawings): the challenge records pair those on purpose
    shared = {**_run_config(), "eval": {**_run_config()["eval"], "drawers": "shared"}}
    a = _per_task([1.0, 2.0, 3.0], run_config=_run_config())
    assert records.paired_difference(a, _per_task([1.0, 2.0, 4.0], run_config=shared))["n"] == 3

    def folder(test_classes):
        return {"family": {"name": "folder", "ways": 2, "shots": 1, "queries": 3,
                           "test_classes": test_classes},
                "eval": {"split": "test", "ways": 0, "shots": 0, "queries": 0}}
    a = _per_task([1.0, 2.0, 3.0], run_config=folder(["cat", "dog", "owl"]))
    with pytest.raises(RecordError, match=r"same tasks: classes '3 classes, sha256 \w+' != "):
        records.paired_difference(a, _per_task([1.0, 2.0, 4.0],
                                               run_config=folder(["cat", "dog", "emu"])))
    same = _per_task([1.0, 2.0, 4.0], run_config=folder(["cat", "dog", "owl"]))
    assert records.paired_difference(a, same)["n"] == 3


def test_records_on_the_same_official_runs_pair_whatever_their_runs_were_trained_on():
    # the official runs are their files (runs_sha256): a 5-way run and a 20-way run scored
    # on them were scored on the same trials
    lake = {"lake_runs": {"runs": 3, "runs_sha256": "ab"}, "error_rate": 2.0}
    a = _per_task([1.0, 2.0, 3.0], run_config=_run_config(ways=0), **lake)
    twenty = {**_run_config(ways=0), "family": {**_run_config()["family"], "ways": 20}}
    b = _per_task([1.0, 2.0, 4.0], run_config=twenty, **lake)
    assert records.paired_difference(a, b)["mean"] == pytest.approx(-1 / 3)


def test_the_paired_command_prints_the_difference_and_names_a_bad_pair(tmp_path, capsys):
    write_record(tmp_path / "a.json", **_per_task([10.0, 20.0, 30.0], unit="%"))
    write_record(tmp_path / "b.json", **_per_task([5.0, 20.0, 25.0], unit="%"))
    write_record(tmp_path / "c.json", **_fields())
    a, b, c = (str(tmp_path / f"{x}.json") for x in "abc")
    assert main(["--paired", a, b]) == 0
    assert capsys.readouterr().out.strip() == (f"{a} - {b}: +3.33 ± 7.17 points "
                                               f"(paired, 3 tasks)")
    assert main(["--paired", a, c]) == 2
    assert f"{c} has no per_task values" in capsys.readouterr().err


def test_one_paired_task_has_no_ci(tmp_path, capsys):
    write_record(tmp_path / "a.json", **_per_task([10.0], unit="%"))
    write_record(tmp_path / "b.json", **_per_task([4.0], unit="%"))
    a, b = str(tmp_path / "a.json"), str(tmp_path / "b.json")
    assert records.paired_difference(load_records(tmp_path)[0], load_records(tmp_path)[1]) \
        == {"mean": 6.0, "ci95": None, "n": 1}
    assert main(["--paired", a, b]) == 0
    assert capsys.readouterr().out.strip() == f"{a} - {b}: +6.00 points (one task: no CI)"


def test_a_hand_written_grid_cell_without_its_row_is_one_named_error(tmp_path, capsys):
    docs, recs = _site(tmp_path)
    (recs / "cell.json").write_text(json.dumps({**_fields(), "grid": "omniglot"}))
    (docs / "results.md").write_text("<!-- table:omniglot -->\n<!-- /table -->\n"
                                     "<!-- table:sinusoid -->\n<!-- /table -->\n"
                                     "<!-- grid:omniglot -->\n<!-- /grid -->\n")
    assert main(["--docs", str(docs), "--check"]) == 2                  # not a KeyError
    err = capsys.readouterr().err
    assert "cell.json: grid, grid_row and grid_column name a grid cell together" in err


def test_a_document_that_cannot_be_generated_leaves_every_document_as_it_was(tmp_path,
                                                                              capsys):
    # a.md renders, b.md's grid has two records in one cell: exit 2 and nothing rewritten
    docs, recs = tmp_path, tmp_path / "results"
    cell = dict(grid="g", grid_row="MAML", grid_column="5w1s")
    write_record(recs / "a.json", **_fields(**cell))
    write_record(recs / "b.json", **_fields(**cell))
    (docs / "a.md").write_text("<!-- table:omniglot -->\nold\n<!-- /table -->\n")
    (docs / "b.md").write_text("<!-- grid:g -->\nold\n<!-- /grid -->\n")
    assert main(["--docs", str(docs)]) == 2
    assert "both fill grid 'g' cell" in capsys.readouterr().err
    assert (docs / "a.md").read_text() == "<!-- table:omniglot -->\nold\n<!-- /table -->\n"
    assert (docs / "b.md").read_text() == "<!-- grid:g -->\nold\n<!-- /grid -->\n"


def test_the_paired_command_shows_as_many_decimals_as_the_records(tmp_path, capsys):
    # query MSEs (digits 3): two decimals would print +0.00 ± 0.00, a difference with no spread
    a = [0.250, 0.262, 0.241, 0.270, 0.255, 0.248]
    b = [0.247, 0.258, 0.240, 0.266, 0.250, 0.246]
    for name, vals in (("a", a), ("b", b)):
        write_record(tmp_path / f"{name}.json", **_per_task(vals, digits=3, table="sinusoid",
                                                             metric="query loss"))
    pa, pb = str(tmp_path / "a.json"), str(tmp_path / "b.json")
    assert main(["--paired", pa, pb]) == 0
    d = [x - y for x, y in zip(a, b)]                        # mean 0.0032, sd 0.00147
    student_t = pytest.importorskip("scipy.stats").t
    import statistics
    ci = student_t.ppf(0.975, 5) * statistics.stdev(d) / 6 ** 0.5
    assert f"{ci:.3f}" == "0.002"
    assert capsys.readouterr().out.strip() == f"{pa} - {pb}: +0.003 ± 0.002 (paired, 6 tasks)"


def test_the_ci_tolerance_reads_the_last_decimal_of_an_exponent_form():
    """``repr(5e-05)`` has no ".", so the tolerance came out as 0.5, a hundred thousand
    times the value itself."""
    from metaloop.evaluate.records import _ci_tolerance

    assert _ci_tolerance(5e-05, 2) == pytest.approx(5e-06, rel=1e-4)
    assert _ci_tolerance(1.5e-05, 2) == pytest.approx(5e-07, rel=1e-4)
    assert _ci_tolerance(0.25, 2) == pytest.approx(0.005, rel=1e-4)   # rounded to the digits

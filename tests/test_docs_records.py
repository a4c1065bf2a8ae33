"""The committed records in docs/results against independent references: their statistics
against numpy and scipy, their rows against the grid cells they fill, their published numbers
against the papers' tables, and the paired changes their notes quote against ``--paired``.

(``tests/test_docs_commands.py`` checks that every record's ``command`` is accepted today.)
"""

from __future__ import annotations

import re
import statistics
from pathlib import Path

import pytest

from metaloop.evaluate.records import load_records, paired_difference

REPO = Path(__file__).resolve().parents[1]
RECORDS = {Path(r["_file"]).stem: r for r in load_records(REPO / "docs" / "results")}


def _check_values(key: str) -> list[str]:
    """The records holding ``key`` (``per_task`` or ``per_seed``), after checking that their
    ``n``, mean and Student's t CI are those values', to the digits each record shows."""
    np = pytest.importorskip("numpy")
    student_t = pytest.importorskip("scipy.stats").t
    checked = []
    for stem, r in RECORDS.items():
        if r.get(key) is None:
            continue
        v = np.asarray(r[key], dtype=np.float64)
        half = 0.5 * 10 ** -r.get("digits", 2) + 1e-9              # the digits it shows
        assert r["n"] == len(v), stem
        assert abs(v.mean() - r["mean"]) <= half, stem
        if len(v) == 1:
            assert r["ci95"] is None, stem
        elif r["ci95"] is not None or key == "per_seed":
            ci = student_t.ppf(0.975, len(v) - 1) * v.std(ddof=1) / np.sqrt(len(v))
            assert abs(ci - r["ci95"]) <= half, (stem, ci, r["ci95"])
        checked.append(stem)
    return checked


def test_every_per_task_record_has_the_mean_and_students_t_ci_of_its_values():
    assert len(_check_values("per_task")) >= 30


def test_every_per_seed_record_has_the_mean_and_students_t_ci_of_its_seeds():
    """The continual records (``metaloop forgetting --record``) hold each seed's value: their
    mean and CI are those values', not numbers rescaled from rounded ones."""
    checked = _check_values("per_seed")
    continual = [stem for stem, r in RECORDS.items() if r["table"] == "continual"]
    assert set(continual) <= set(checked) and len(continual) >= 26


def test_every_config_a_record_names_is_a_file_of_the_repository():
    # a record's config is the TOML it ran (or null where its command holds every setting:
    # one whose command trains with --config names it, as the next test checks)
    for stem, r in RECORDS.items():
        for key in ("config", "full_config"):
            if r.get(key) is not None:
                assert (REPO / r[key]).is_file(), (stem, key, r[key])


ROW_MAX = 120
"""A table row's label names the run and what differs; the rest of it goes in the note, shown
in the row's entry under the table."""


def test_every_row_label_is_short_enough_to_read_in_its_table():
    long = {stem: len(r["row"]) for stem, r in RECORDS.items() if len(r["row"]) > ROW_MAX}
    assert not long, f"row labels over {ROW_MAX} characters (move the rest to the note): {long}"


def test_every_grid_row_names_the_setting_its_cell_is_tested_at():
    # the row is the table's label of the cell: "20-way -shot test" named no shots
    for stem, r in RECORDS.items():
        assert not re.search(r"(^|\s)-(way|shot)\b", r["row"]), (stem, r["row"])
        if "grid" not in r:
            continue
        ways, shots = re.fullmatch(r"(\d+)w(\d+)s", r["grid_column"]).groups()
        named = re.findall(r"\b(\d+)-way (\d+)-shot\b", r["row"])
        assert named and named[-1] == (ways, shots), (stem, r["row"], r["grid_column"])


# The papers' tables, quoted exactly. Finn et al. 2017 Table 1 (MAML, Omniglot); Nichol et al.
# 2018 Table 2 (Reptile, non-transductive, and 1st-order MAML + Transduction, Omniglot); Raghu
# et al. 2020 Table 2 (ANIL, Omniglot 20-way); Snell et al. 2017 Table 1 (Prototypical
# Networks, Omniglot, no CIs); Lake et al. 2015 (people, BPL) with Koch et al. 2015's
# Siamese convnet.
PAPERS = {
    "omniglot_maml_5w1s": "98.7 ± 0.4%", "omniglot_maml_5w5s": "99.9 ± 0.1%",
    "omniglot_maml_20w1s": "95.8 ± 0.3%", "omniglot_maml_20w5s": "98.9 ± 0.2%",
    "omniglot_fomaml_5w1s": "98.3 ± 0.5%", "omniglot_fomaml_5w5s": "99.2 ± 0.2%",
    "omniglot_fomaml_20w1s": "89.4 ± 0.5%", "omniglot_fomaml_20w5s": "97.9 ± 0.1%",
    "omniglot_reptile_5w1s": "95.39 ± 0.09%", "omniglot_reptile_5w5s": "98.90 ± 0.10%",
    "omniglot_reptile_20w1s": "88.14 ± 0.15%", "omniglot_reptile_20w5s": "96.65 ± 0.33%",
    "omniglot_anil_20w1s": "96.2 ± 0.5%", "omniglot_anil_20w5s": "98.0 ± 0.3%",
    **{f"omniglot_heads_{m}_{s}": v for m in ("r2d2", "metaoptnet") for s, v in
       (("5w1s", "98.8%"), ("5w5s", "99.7%"), ("20w1s", "96.0%"), ("20w5s", "98.9%"))},
}
LAKE = "4.5% (people); BPL 3.3%; Siamese convnet (Koch et al. 2015) 8.0%"


def test_the_published_omniglot_numbers_are_the_papers_quoted_exactly():
    for stem, value in PAPERS.items():
        assert RECORDS[stem]["published"]["value"] == value, stem
    lake = [s for s, r in RECORDS.items() if r["published"] and "Lake" in
            r["published"]["source"]]
    assert lake and all(RECORDS[s]["published"]["value"] == LAKE for s in lake)
    # no grid cell against a paper is left out of this list
    cells = {s for s, r in RECORDS.items() if "grid" in r and r["published"] is not None}
    assert cells <= set(PAPERS), sorted(cells - set(PAPERS))


def _grid_cells(grid: str) -> dict[tuple[str, str], str]:
    """``{(row, column label): cell text}`` of a rendered grid."""
    lines = [line.strip("|").split(" | ") for line in grid.splitlines() if line.startswith("|")]
    head = [c.strip() for c in lines[0]]
    return {(row[0].strip(), head[i]): cell.strip() for row in lines[2:]
            for i, cell in enumerate(row) if i}


def test_a_grid_cell_quoting_another_methods_number_names_that_method():
    # R2D2's and MetaOptNet's cells quote Prototypical Networks' numbers (Snell et al. 2017):
    # "Snell et al. 2017: 96.0 (-1.95)" read as a gap to their own paper
    from metaloop.evaluate.records import render_grid
    grids: dict[str, list] = {}
    for r in RECORDS.values():
        if "grid" in r:
            grids.setdefault(r["grid"], []).append(r)
    methods = {r["grid_row"] for r in RECORDS.values() if "grid" in r} | {
        "Prototypical Networks", "MAML", "Reptile", "ANIL", "R2D2", "MetaOptNet"}
    checked = 0
    for members in grids.values():
        cells = _grid_cells(render_grid(members))
        for r in members:
            if r["published"] is None:
                continue
            others = [m for m in methods if m in r["published"]["source"]
                      and m not in r["grid_row"] and r["grid_row"] not in m]
            ways, shots = re.fullmatch(r"(\d+)w(\d+)s", r["grid_column"]).groups()
            cell = cells[(r["grid_row"], f"{ways}-way {shots}-shot")]
            for m in others:
                assert f"<br>{m}" in cell, (r["_file"], m, cell)
                checked += 1
    assert checked >= 8          # the four R2D2 and four MetaOptNet cells


def test_a_split_mnist_number_is_said_to_be_split_mnist_wherever_the_docs_show_it():
    # van de Ven et al.'s class-incremental numbers are on Split MNIST, not Fashion-MNIST
    quoted = {stem: r["published"]["value"] for stem, r in RECORDS.items()
              if stem.startswith("continual_split_fmnist_class") and r["published"]}
    assert len(quoted) == 3
    for stem in quoted:
        assert RECORDS[stem]["published"]["source"].startswith("Split MNIST digits, not "
                                                               "Fashion-MNIST")
    shown = 0
    for doc in sorted((REPO / "docs").glob("*.md")):
        for line in doc.read_text().splitlines():
            for stem, value in quoted.items():
                if f"(#{stem})" in line and value in line.split("|")[-2]:
                    assert "Split MNIST" in line, (doc.name, line)
                    shown += 1
    assert shown >= 3


# (record, the record it is paired with, the change its note quotes): the paired test-error
# changes between records that both keep their per-task errors
QUOTED_PAIRS = [
    ("ensemble40_all_nt", "ensemble40_all_retrained", "+6.54 ± 0.42"),
    ("ensemble40_all_nt_shared", "ensemble40_all_nt", "-0.94 ± 0.89"),
    ("ensemble40_all_shared", "ensemble40_all_retrained", "-1.50 ± 0.74"),
    ("ensemble40_all_retrained", "max28_all", "-0.37 ± 0.33"),
    ("max28_all", "ensemble40_all_retrained", "+0.37 ± 0.33"),
    ("pilot56_max_long", "pilot56_max_retrained", "-3.35 ± 0.47"),
    ("pilot56_max_long", "pilot84_max", "5.87 ± 0.63"),
    ("pilot56_max_wide", "pilot56_max_retrained", "-3.10 ± 0.48"),
    ("pilot56_max_wide", "pilot56_max_long", "+0.24 ± 0.47"),
    ("pilot56_max_shift4", "pilot56_max_retrained", "-0.68 ± 0.51"),
    ("pilot84_max", "pilot56_max_retrained", "+2.52 ± 0.61"),
    ("pilot56_max_rot", "pilot56_max_long", "-0.09 ± 0.50"),
    ("pilot56_max_rot40", "pilot56_max_rot", "-0.40 ± 0.46"),
    ("pilot56_max_rot40", "pilot56_max_long", "-0.49 ± 0.52"),
]


@pytest.mark.parametrize("a, b, quoted", QUOTED_PAIRS, ids=[f"{a}-{b}" for a, b, _ in QUOTED_PAIRS])
def test_a_paired_change_quoted_in_a_note_is_what_paired_gives(a, b, quoted):
    ra, rb = RECORDS[f"omniglot_challenge_{a}"], RECORDS[f"omniglot_challenge_{b}"]
    assert quoted in ra["note"]
    # "X ± C" is a's change against b; an unsigned quote is b's against a ("b validates
    # 3.13 worse than these ..., 5.87 ± 0.63 on the test")
    first, second = (ra, rb) if quoted[0] in "+-" else (rb, ra)
    d = paired_difference(first, second)
    shown = f"{d['mean']:+.2f} ± {d['ci95']:.2f}"
    assert shown == (quoted if quoted[0] in "+-" else f"+{quoted}")


# ------------------------------------------------ the generated tables of docs/*.md

DOCS = sorted((REPO / "docs").glob("*.md"))
TABLE = re.compile(r"<!-- table:(\S+) -->\n(.*?)<!-- /table -->", re.S)
ENTRY = re.compile(r'^- <a id="([^"]+)"></a>(.*)\n(?:\n    ```bash\n    (.*)\n    ```\n)?', re.M)
SHARED = re.compile(r"^```bash\n(.*)\n```$", re.M)


def _cells(line: str) -> list[str]:
    return [c.strip().replace("\\|", "|") for c in re.split(r"(?<!\\)\|", line.strip()[1:-1])]


def test_every_record_is_a_row_of_its_tables_and_its_note_and_command_are_its_entry():
    from metaloop.evaluate.records import NOT_MEASURED, format_budget, format_value

    seen = set()
    for doc in DOCS:
        for name, body in TABLE.findall(doc.read_text(encoding="utf-8")):
            where = f"{doc.name} table {name}"
            recs = sorted((r for r in RECORDS.values() if r["table"] == name),
                          key=lambda r: (r.get("order", float("inf")), r["_file"]))
            if body == NOT_MEASURED:                  # a table still to be measured
                assert not recs, where                # says so only while it has no record
                continue
            lines = body.splitlines()
            head = _cells(lines[0])
            rows = [dict(zip(head, _cells(x))) for x in lines[2:lines.index("")]]
            under = lines[lines.index("") + 1]
            entries = ENTRY.findall(body)
            stems = [Path(r["_file"]).stem for r in recs]
            shared = SHARED.findall(body)
            assert len(rows) == len(recs) and len(shared) <= 1, where
            if shared and not any(r.get("note") for r in recs):
                # one command, no notes: no entries, the command said once
                assert entries == [] and "<a id" not in body, where
                entries = [(s, f"**{' '.join(r['row'].split())}**", "")
                           for s, r in zip(stems, recs)]
            assert [e[0] for e in entries] == stems, where      # the rows' order, one each
            assert body.count("\n- ") == body.count("<a id") == len(ENTRY.findall(body)), where
            for r, row, (_, text, command) in zip(recs, rows, entries):
                stem = Path(r["_file"]).stem
                label = row["method and setting"]
                escaped = re.sub(r"([][\\])", r"\\\1", r["row"])     # [, ] and \ in a link
                assert label in (f"[{escaped}](#{stem})", r["row"] if shared else None), where
                assert bool(command) != bool(shared), (where, stem)   # its own, or said once
                assert (command or shared[0]) == r["command"], (where, stem)
                note = f": {' '.join(r['note'].split())}" if r.get("note") else ""
                assert text == f"**{' '.join(r['row'].split())}**{note}", (where, stem)
                assert list(row.values())[1 + ("metric" in row)] == format_value(r), where
                assert row["n"] == str(r["n"] or "—"), (where, stem)
                assert row["budget"] == format_budget(r["budget"]), (where, stem)
                # the metric, device and published number: a column, or said once
                assert row.get("metric") == r["metric"] or \
                    head[1] in (f"{r['metric']}: mean ± 95% CI", r["metric"]), (where, stem)
                assert row.get("device") == r["device"] or \
                    f"; device: {r['device']};" in under, (where, stem)
                pub = "—" if r["published"] is None else \
                    f"{r['published']['value']} ({r['published']['source']})"
                assert row.get("published (source)") == pub or \
                    (f"; published: {pub};" if r["published"] else "; no published number;") \
                    in under, (where, stem)
                seen.add(stem)
    assert seen == set(RECORDS), sorted(set(RECORDS) - seen)


def _page_html(doc: Path) -> str:
    """A page as the site renders it: Python-Markdown with mkdocs.yml's extensions."""
    markdown = pytest.importorskip("markdown")
    yaml = pytest.importorskip("yaml")
    config = yaml.safe_load((REPO / "mkdocs.yml").read_text())["markdown_extensions"]
    names = [e if isinstance(e, str) else next(iter(e)) for e in config]
    configs = {k: v for e in config if isinstance(e, dict) for k, v in e.items() if v}
    return markdown.markdown(doc.read_text(encoding="utf-8"), extensions=names,
                             extension_configs=configs)


@pytest.mark.parametrize("doc", [d for d in DOCS if "<!-- table:" in d.read_text()],
                         ids=lambda d: d.name)
def test_a_pages_ids_are_unique_and_each_row_links_to_its_entry_on_it(doc):
    from html.parser import HTMLParser

    class Ids(HTMLParser):
        def __init__(self):
            super().__init__()
            self.ids, self.links, self.entries = [], [], set()

        def handle_starttag(self, tag, attrs):
            a = dict(attrs)
            if a.get("id"):
                self.ids.append(a["id"])
                if tag == "a":
                    self.entries.add(a["id"])
            if tag == "a" and (a.get("href") or "").startswith("#"):
                self.links.append(a["href"][1:])

    page = Ids()
    page.feed(_page_html(doc))
    twice = sorted({i for i in page.ids if page.ids.count(i) > 1})
    assert not twice, f"{doc.name}: ids {twice} repeat"
    assert not set(page.links) - set(page.ids), sorted(set(page.links) - set(page.ids))
    # every entry of the generated tables is an id of the page that its row links to
    made = {e[0] for _, body in TABLE.findall(doc.read_text()) for e in ENTRY.findall(body)}
    assert made and made <= page.entries and made <= set(page.links), doc.name


def _comments(path: Path) -> str:
    """The comments of a config file as one line of text (``#`` and line breaks removed)."""
    lines = path.read_text().splitlines()
    return " ".join(" ".join(ln.split("#", 1)[1] for ln in lines if "#" in ln).split())


def _agrees(quoted: str, value: float) -> bool:
    """``quoted`` is ``value`` rounded to the digits it shows."""
    digits = len(quoted.split(".")[1]) if "." in quoted else 0
    return abs(float(quoted) - value) <= 0.5 * 10 ** -digits + 1e-9


def _timed_grid_records() -> dict[str, dict]:
    """The Omniglot grid records with a config, training iterations and CPU seconds."""
    return {stem: r for stem, r in RECORDS.items()
            if r.get("grid") == "omniglot" and r.get("config")
            and (r.get("budget") or {}).get("iterations") and "cpu_seconds" in r["budget"]}


def test_a_config_quotes_its_records_cpu_time_and_cpu_seconds_per_iteration():
    # the header's "12000 iterations in 44.6 CPU-minutes" is the table's rounding of the
    # record, and "0.223 CPU-s per iteration" its CPU seconds over its iterations
    checked = 0
    for stem, r in _timed_grid_records().items():
        text = _comments(REPO / r["config"])
        cpu, iterations = r["budget"]["cpu_seconds"], r["budget"]["iterations"]
        for m in re.finditer(r"(?<![\d.-])(\d+\.\d) CPU-minutes", text):
            assert m.group(1) == f"{cpu / 60:.1f}", (stem, r["config"], m.group(0))
            checked += 1
        for m in re.finditer(r"(?<![\d.-])(\d+\.\d+) CPU-s(?: per iteration|/it)", text):
            assert _agrees(m.group(1), cpu / iterations), (stem, r["config"], m.group(0))
            checked += 1
    assert checked >= 40


def test_the_omniglot_guides_cpu_seconds_per_iteration_are_its_records():
    text = " ".join((REPO / "docs" / "omniglot.md").read_text().split())
    found = re.findall(r"(first-order MAML|MAML|ANIL|Reptile) (\d\.\d+) s(?: \([^)]*\))? and "
                       r"(\d\.\d+) s", text)
    names = {"MAML": "maml", "first-order MAML": "fomaml", "ANIL": "anil", "Reptile": "reptile"}
    assert sorted(m[0] for m in found) == sorted(names)
    for method, five_way, twenty_way in found:
        for ways, quoted in (("5w1s", five_way), ("20w1s", twenty_way)):
            budget = RECORDS[f"omniglot_{names[method]}_{ways}"]["budget"]
            assert _agrees(quoted, budget["cpu_seconds"] / budget["iterations"]), (method, ways,
                                                                                   quoted)


def test_a_records_command_is_a_command_to_run_not_a_remark():
    # "... --out runs/x (train.iterations = 6500; /usr/bin/time -v)" cannot be pasted: what
    # the command does not say belongs in a config it names, and the rest in the note
    remarks = {stem: r["command"] for stem, r in RECORDS.items()
               if isinstance(r.get("command"), str)
               and re.search(r"\([^()]*\)\s*$", r["command"])}
    assert not remarks, remarks


def test_the_generative_guides_protocol_times_are_its_records():
    # "One pass is about 2.9 CPU-seconds ... 2.6 CPU-hours, plus 6 s per curve point (the
    # median) and about 8.5 CPU-minutes for the final k = 5,000 measurement"
    text = " ".join((REPO / "docs" / "generative.md").read_text().split())
    m = re.search(r"One pass is about (\d\.\d) CPU-seconds on one thread, so the whole protocol "
                  r"took (\d\.\d) CPU-hours, plus (\d+) s per curve point \(the median\) and "
                  r"about (\d+\.\d) CPU-minutes for the final k = 5,000", text)
    assert m, "the protocol's times are no longer quoted in docs/generative.md"
    r = RECORDS["generative_iwae_omniglot"]
    cpu, passes = r["budget"]["cpu_seconds"], r["passes"]
    assert m.group(1) == f"{cpu / passes:.1f}"
    assert m.group(2) == f"{cpu / 3600:.1f}"
    assert m.group(3) == f"{statistics.median(c['eval_cpu_s'] for c in r['curve']):.0f}"
    assert m.group(4) == f"{r['eval_cpu_s'] / 60:.1f}"


def _configs_named(command: str) -> list[str]:
    """The configs a record's command trains with (``--config PATH`` or ``--config=PATH``)."""
    import shlex
    words = shlex.split(command)
    named = [words[i + 1] for i, w in enumerate(words[:-1]) if w == "--config"]
    return named + [w.split("=", 1)[1] for w in words if w.startswith("--config=")]


def _trains_with_a_config(command: str) -> bool:
    """Whether one of a command line's commands is ``metaloop train --config PATH``."""
    import shlex
    parts = " ".join(shlex.split(command)).split("&&")
    return any("train" in p.split() and _configs_named(p) for p in parts)


def test_a_records_config_is_the_config_its_command_names():
    # the R2D2 5-way rows evaluate the 20-way model at --ways 5: their config is the 20-way one
    assert _configs_named("metaloop train --config a.toml --out r && metaloop train "
                          "--config=b.toml") == ["a.toml", "b.toml"]
    assert _trains_with_a_config("metaloop --threads 1 train --config=a.toml && metaloop adapt")
    assert not _trains_with_a_config("metaloop adapt --model runs/x --family omniglot")
    wrong = {}
    for stem, r in RECORDS.items():
        named = _configs_named(r["command"])
        if named and r["config"] is not None and r["config"] not in named:
            wrong[stem] = (r["config"], named)
        # null says the command holds every setting: not so where it trains with a config
        # (the Omniglot adaptation rows pretrain their body with one before metaloop adapt)
        if r["config"] is None and _trains_with_a_config(r["command"]):
            wrong[stem] = (None, named)
    assert not wrong, wrong
    assert RECORDS["omniglot_heads_r2d2_5w1s"]["config"] == "configs/omniglot_r2d2_20w1s_cpu.toml"

"""Result records: one JSON file per measured number, and the tables generated from them.

A record is a JSON object in ``docs/results/NAME.json``. It names the table it belongs to and
its row, and holds the measurement with everything needed to reproduce it:

```json
{
  "table": "omniglot", "row": "MAML, 5-way 1-shot", "metric": "accuracy (%)",
  "mean": 97.40, "ci95": 0.27, "n": 600,
  "budget": {"iterations": 60000, "cpu_seconds": 3300},
  "device": "2-core CPU", "torch": "2.13.0", "date": "2026-11-30",
  "config": "configs/omniglot_maml_5w1s_cpu.toml",
  "command": "metaloop eval --checkpoint runs/maml_5w1s --tasks 600",
  "published": {"value": "98.7 ± 0.4%", "source": "Finn et al. 2017, Table 1"}
}
```

``ci95`` is the half-width of the 95% confidence interval (``null`` where there is none, e.g.
a speed ratio, or a mean of one task or run); ``n`` is the number of tasks or repeats behind
the mean (``null`` if it does not apply); ``published`` is ``null`` or the paper's number
quoted exactly with its source. Extra fields are kept. A few change how the row is shown:
``unit`` (appended to the mean, e.g. ``"%"`` or ``"x"``), ``digits`` (decimals shown,
default 2), ``notation`` (``"e"`` for scientific), ``order`` (rows sort by it, then by file
name) and ``note`` (shown in the row's entry under the table).

Documents mark where each table goes::

    <!-- table:omniglot -->
    ...generated, do not edit...
    <!-- /table -->

A table has one row per record: its ``row``, the mean ± 95% CI, ``n``, the budget and the
published number with its source. A ``metric`` every row shares heads the measured column; a
``device`` every row shares, or a published number or ``command`` every row of two or more
shares, is said once under the table (the command in a code block); where rows differ in
one, it is a column, or for the command, part of each row's entry. The entries follow,
one per row in the same order: the row, its ``note`` and, unless said once, its ``command``
in a code block. An entry's id is its record's file stem (``#omniglot_maml_5w1s`` for
``omniglot_maml_5w1s.json``), and its row's label links to it. Rows that share their
command and have no note get no entries, which would only repeat them. A document whose
tables would give two entries the same id (a table marked twice) is an error.

A record with ``grid``, ``grid_row`` and ``grid_column`` (e.g. ``"omniglot"``, ``"MAML"``,
``"5w1s"``) is also a cell of a method x setting grid, marked ``<!-- grid:omniglot -->`` ...
``<!-- /grid -->``: each cell shows the measurement, the published number with its source's
authors and year and the gap to it, and the budget, and a cell without a record says "not
measured".

A grid record may also carry ``training_curve`` (``[[iteration, accuracy %], ...]``: the
training tasks' query accuracy after adaptation, averaged over equal windows of the run, as
``training_curve`` reads it from ``metrics.jsonl``) and ``projection`` (``{"iterations": N,
"source": "..."}``: the iterations of the paper's schedule). Its grid's cells that fall more
than 2 points short of the paper are listed, with those curves and the paper's schedule priced
at the measured cost per iteration, in a block marked ``<!-- short:omniglot -->`` ...
``<!-- /short -->``.

A record may carry ``detail``: a Markdown table of its parts that the headline row cannot
hold (every method of a comparison, every setting of a study), written by the recipe that
made the record. ``<!-- detail:STEM -->`` ... ``<!-- /detail -->`` shows the ``detail`` of
``STEM.json``, with the file named under it.

A record may carry ``per_task``: the metric of each of its ``n`` tasks, in the record's unit
and in task order (``metaloop eval --record`` writes it), so that two records measured on
the same tasks (same split and task seed) can be compared task by task (its mean and
``ci95``, Student's ``t_975(n - 1) * sd / sqrt(n)``, must then be theirs, to the record's
``digits``, or a ``ci95`` kept with more decimals to ``CI_RTOL`` of it):
``paired_difference(a, b)`` gives the mean difference with its paired 95% CI, which is
usually far narrower than the two records' own CIs suggest. A record measured over seeds
(``metaloop forgetting --record`` writes them) carries ``per_seed`` the same way: one value
per seed, whose mean and Student's t CI must be the record's.

A mean of values bounded in a range (an error rate or accuracy in %, 0 to 100) whose
``mean ± ci95`` would leave it (0.50 ± 1.05% over Lake's 20 runs, 19 of them without an
error) also carries ``ci95_low`` and ``ci95_high``, the ends of the interval that stays in
the range (``metaloop.evaluate.stats.bounded_ci95``, Korn and Graubard's; ``trials`` counts
the pooled trials where the record has it), and ``ci95_range`` (``[0, 100]``): the three
come together, ``ci95`` stays the t half-width, and the tables show the mean with
"(95% CI low to high)" instead of "± ci95". With ``per_task`` or ``per_seed``, the ends
must be those the values give, to the record's ``digits``. ``ci95_fields`` gives the three
fields where the t interval leaves the range, or where every value sits at 0 or 100 and the
record keeps its ``trials`` (its ``± 0`` is no interval; such a record without them is
refused), as ``metaloop eval --record`` writes them.

``python -m metaloop.evaluate.records`` (or ``python docs/gen_tables.py``) rewrites every
marked table, grid, short-cell list and detail in ``docs/*.md`` from ``docs/results/*.json``; with
``--check`` it writes nothing and exits 1, naming each stale table, when a document differs
from what the records give. ``--paired A.json B.json`` prints A's mean minus B's with the
paired 95% CI instead, to as many decimals as the records show (their ``digits``).
"""

from __future__ import annotations

import argparse
import decimal
import functools
import hashlib
import json
import math
import os
import re
import shlex
import sys
import tempfile
from collections.abc import Collection, Mapping
from pathlib import Path
from typing import TYPE_CHECKING

from metaloop.evaluate.stats import bounded_ci95
from metaloop.evaluate.stats import ci95 as _ci95

if TYPE_CHECKING:
    import torch

REQUIRED = ("table", "row", "metric", "mean", "ci95", "n", "budget", "device", "torch",
            "date", "config", "command", "published")
"""The fields every record must have (``null`` is allowed where noted in the module doc)."""



class RecordError(ValueError):
    """A record that is missing fields or has malformed ones (names the record and fields)."""


BUDGET_KEYS = ("iterations", "cpu_seconds", "gpu_seconds", "members")
_TABLE_NAME = re.compile(r"^[a-z0-9][a-z0-9_.-]*$")
_DATE = re.compile(r"^\d{4}-\d{2}-\d{2}$")
_BLOCK = re.compile(r"(<!-- table:(?P<name>[^ >]+) -->\n)(?P<body>.*?)(<!-- /table -->)",
                    re.DOTALL)
_SHORT = re.compile(r"(<!-- short:(?P<name>[^ >]+) -->\n)(?P<body>.*?)(<!-- /short -->)",
                    re.S)
_DETAIL = re.compile(r"(<!-- detail:(?P<name>[^ >]+) -->\n)(?P<body>.*?)(<!-- /detail -->)",
                     re.S)
_GRID = re.compile(r"(<!-- grid:(?P<name>[^ >]+) -->\n)(?P<body>.*?)(<!-- /grid -->)",
                   re.DOTALL)
_SETTING = re.compile(r"^(\d+)w(\d+)s$")
_ENTRY_ID = re.compile(r'^- <a id="([^"]+)"></a>', re.M)
NOT_MEASURED = "*Not measured yet.*\n"
"""The body of a marked table that has no records yet (e.g. one a GPU must measure): accepted
as current until its records are dropped in; any other body of a table without records is
reported (a misspelt marker)."""


def _number(x) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x)


CI_RTOL = 5e-4
"""How far (relative) a ``ci95`` stored with more decimals than its record shows may be from
the t interval of its ``per_task`` or ``per_seed`` values. A normal interval (1.96) falls
short of Student's t by more than this for up to 2,000 values (by 0.06% at 2,000, 0.12% at
1,000), so one stored unrounded is caught."""


def _ci_tolerance(stored: float, digits: int) -> float:
    """How far a stored ``ci95`` may be from the t interval its values give: half a unit of
    the record's ``digits`` when it is rounded to them; when it keeps more decimals, ``CI_RTOL``
    of it, or half a unit of its last decimal if that is more (a value rounded to 5 places)."""
    if round(stored, digits) == stored:
        return 0.5 * 10 ** -digits + 1e-9
    last = decimal.Decimal(repr(float(stored))).as_tuple().exponent   # 5e-05: -5, 0.25: -2
    assert isinstance(last, int)                        # (a finite float: never 'n' or 'F')
    return max(CI_RTOL * stored, 0.5 * 10.0 ** last) + 1e-12


def validate_record(rec: Mapping, where: str = "record") -> dict:
    """Check a record's fields and types; return it as a plain dict.

    A record with ``per_task`` (each task's value) or ``per_seed`` (each seed's, as
    ``metaloop forgetting --record`` writes) must hold ``n`` finite values whose mean and
    Student-t 95% CI are the record's ``mean`` and ``ci95``, to its ``digits``; a ``ci95``
    stored with more decimals than that must be the t interval to ``CI_RTOL`` (relative),
    so that one computed with 1.96 instead is caught.

    Args:
        rec: the record's fields. where: how the error names the record (e.g. its file).

    Raises:
        RecordError: (a ValueError) naming the record and each missing or malformed field.
    """
    if not isinstance(rec, Mapping):
        raise RecordError(f"{where}: a record must be a JSON object, got {type(rec).__name__}")
    missing = [k for k in REQUIRED if k not in rec]
    if missing:
        raise RecordError(f"{where}: missing required field(s) {', '.join(missing)}")
    bad = []
    if not isinstance(rec["table"], str) or not _TABLE_NAME.match(rec["table"]):
        bad.append(f"table must be a lower-case name like 'omniglot', got {rec['table']!r}")
    for k in ("row", "metric", "device", "torch", "command"):
        if not isinstance(rec[k], str) or not rec[k].strip():
            bad.append(f"{k} must be a non-empty string, got {rec[k]!r}")
    if not _number(rec["mean"]):
        bad.append(f"mean must be a finite number, got {rec['mean']!r}")
    if "detail" in rec and not (isinstance(rec["detail"], str)
                                and rec["detail"].lstrip().startswith("|")):
        bad.append(f"detail must be a Markdown table (a string starting with '|'), got "
                   f"{rec['detail']!r:.60}")
    if rec["ci95"] is not None and not (_number(rec["ci95"]) and rec["ci95"] >= 0):
        bad.append(f"ci95 must be a non-negative number or null, got {rec['ci95']!r}")
    n = rec["n"]
    if n is not None and not (isinstance(n, int) and not isinstance(n, bool) and n >= 1):
        bad.append(f"n must be a positive int or null, got {n!r}")
    elif n == 1 and rec["ci95"] is not None:
        bad.append(f"ci95 must be null for a mean of one value (n = 1 has no spread to "
                   f"measure), got {rec['ci95']!r}")
    budget = rec["budget"]
    if not isinstance(budget, Mapping) or not budget:
        bad.append(f"budget must be a non-empty object, got {budget!r}")
    else:
        unknown = sorted(set(budget) - set(BUDGET_KEYS))
        if unknown:
            bad.append(f"budget has unknown key(s) {', '.join(unknown)} "
                       f"(known: {', '.join(BUDGET_KEYS)})")
        for k, v in budget.items():
            if k in BUDGET_KEYS and not (_number(v) and v >= 0):
                bad.append(f"budget.{k} must be a non-negative number, got {v!r}")
    if not isinstance(rec["date"], str) or not _DATE.match(rec["date"]):
        bad.append(f"date must be YYYY-MM-DD, got {rec['date']!r}")
    if rec["config"] is not None and not (isinstance(rec["config"], str) and rec["config"]):
        bad.append(f"config must be a path string or null, got {rec['config']!r}")
    pub = rec["published"]
    if pub is not None and not (isinstance(pub, Mapping) and set(pub) == {"value", "source"}
                                and isinstance(pub["source"], str) and pub["source"]
                                and (isinstance(pub["value"], str) or _number(pub["value"]))):
        bad.append(f"published must be null or {{\"value\", \"source\"}}, got {pub!r}")
    if "digits" in rec and not (isinstance(rec["digits"], int) and not isinstance(
            rec["digits"], bool) and 0 <= rec["digits"] <= 6):
        bad.append(f"digits must be an int in 0..6, got {rec['digits']!r}")
    if "order" in rec and not _number(rec["order"]):
        bad.append(f"order must be a number, got {rec['order']!r}")
    for k in ("unit", "note", "grid", "grid_row", "grid_column", "full_config"):
        if k in rec and not isinstance(rec[k], str):
            bad.append(f"{k} must be a string, got {rec[k]!r}")
    cell = ("grid", "grid_row", "grid_column")
    if 0 < sum(k in rec for k in cell) < 3:
        bad.append(f"grid, grid_row and grid_column name a grid cell together; the record has "
                   f"{' and '.join(k for k in cell if k in rec)} without "
                   f"{' and '.join(k for k in cell if k not in rec)}")
    curve = rec.get("training_curve")
    if curve is not None and not (isinstance(curve, list) and curve and all(
            isinstance(p, list) and len(p) == 2 and _number(p[0]) and _number(p[1])
            for p in curve)):
        bad.append(f"training_curve must be a non-empty list of [iteration, value] pairs, "
                   f"got {curve!r}")
    proj = rec.get("projection")
    if proj is not None and not (isinstance(proj, Mapping) and set(proj) == {"iterations",
                                                                            "source"}
                                 and _number(proj["iterations"]) and proj["iterations"] > 0
                                 and isinstance(proj["source"], str) and proj["source"]):
        bad.append(f"projection must be null or {{\"iterations\": N > 0, \"source\": "
                   f"\"...\"}}, got {proj!r}")
    for key in ("per_task", "per_seed"):     # each task's or seed's value behind the mean
        values = rec.get(key)
        if values is None:
            continue
        if not (isinstance(values, list) and all(_number(v) for v in values)):
            bad.append(f"{key} must be a list of finite numbers, got {values!r:.60}")
        elif not isinstance(n, int) or len(values) != n:
            bad.append(f"{key} has {len(values)} values but n is {n!r}")
        elif _number(rec["mean"]):
            digits = rec.get("digits", 2) if isinstance(rec.get("digits", 2), int) else 2
            mean = math.fsum(values) / len(values)
            if abs(mean - rec["mean"]) > 0.5 * 10 ** -digits + 1e-9:
                bad.append(f"{key} averages {mean:.{digits + 2}f}, not the record's mean "
                           f"{rec['mean']!r}")
            ci = _ci95(values)
            if ci is not None and _number(rec["ci95"]) \
                    and abs(ci - rec["ci95"]) > _ci_tolerance(rec["ci95"], digits):
                bad.append(f"{key} gives the 95% CI t_975(n - 1) * sd / sqrt(n) = "
                           f"{ci:.{digits + 2}f}, not the record's ci95 {rec['ci95']!r}")
    if "notation" in rec and rec["notation"] not in ("f", "e"):
        bad.append(f"notation must be 'f' (fixed) or 'e' (scientific), got {rec['notation']!r}")
    bad += _bounded_problems(rec)
    if bad:
        raise RecordError(f"{where}: " + "; ".join(bad))
    return dict(rec)


_BOUNDED = ("ci95_low", "ci95_high", "ci95_range")


def _bounded_problems(rec: Mapping) -> list[str]:
    """What is wrong with a record's ``ci95_low``, ``ci95_high`` and ``ci95_range``."""
    have = [k for k in _BOUNDED if k in rec]
    if not have:
        return _unbounded_end(rec)
    if len(have) < 3:
        return [f"ci95_low, ci95_high and ci95_range come together; the record has "
                f"{' and '.join(have)} without "
                f"{' and '.join(k for k in _BOUNDED if k not in rec)}"]
    rng, lo, hi = rec["ci95_range"], rec["ci95_low"], rec["ci95_high"]
    if not (isinstance(rng, list) and len(rng) == 2 and all(_number(v) for v in rng)
            and rng[0] < rng[1]):
        return [f"ci95_range must be [low, high] with low < high, got {rng!r}"]
    if not (_number(lo) and _number(hi)):
        return [f"ci95_low and ci95_high must be finite numbers, got {lo!r} and {hi!r}"]
    digits = rec.get("digits", 2) if isinstance(rec.get("digits", 2), int) else 2
    tol = 0.5 * 10 ** -digits + 1e-9
    mean = rec["mean"]
    if not (rng[0] - 1e-9 <= lo <= hi <= rng[1] + 1e-9) or (
            _number(mean) and not lo - tol <= mean <= hi + tol):
        return [f"ci95_low {lo!r} and ci95_high {hi!r} must hold the mean {mean!r} inside "
                f"ci95_range {rng!r}"]
    trials = rec.get("trials")
    trials = trials if isinstance(trials, int) and not isinstance(trials, bool) \
        and trials >= 1 else None
    for key in ("per_task", "per_seed"):
        values = rec.get(key)
        if not (isinstance(values, list) and len(values) >= 2
                and all(_number(v) for v in values)):
            continue
        try:
            ends = bounded_ci95(values, rng[0], rng[1], trials=trials)
        except ValueError as e:
            return [f"{key} cannot give the bounded 95% CI: {e}"]
        if ends is not None and (abs(ends[0] - lo) > tol or abs(ends[1] - hi) > tol):
            return [f"{key} gives the bounded 95% CI {ends[0]:.{digits + 2}f} to "
                    f"{ends[1]:.{digits + 2}f}, not the record's ci95_low {lo!r} and "
                    f"ci95_high {hi!r}"]
    return []


def _unbounded_end(rec: Mapping) -> list[str]:
    """A record that keeps its ``trials`` (a proportion in %) and whose ``per_task`` or
    ``per_seed`` values all sit at 0 or 100 must carry the bounded interval they give: its
    ``ci95`` of 0 alone would read "± 0", which is no interval."""
    trials = rec.get("trials")
    if not (isinstance(trials, int) and not isinstance(trials, bool) and trials >= 1):
        return []
    for key in ("per_task", "per_seed"):
        values = rec.get(key)
        if isinstance(values, list) and all(_number(v) for v in values) \
                and at_an_end(values):
            return [f"every {key} value is {values[0]!r} and the record has trials "
                    f"({trials}): a 95% CI of 0 wide is no interval; add the bounded one, "
                    f"ci95_low, ci95_high and ci95_range (ci95_fields(..., trials={trials}))"]
    return []


def ci95_fields(values, low: float = 0, high: float = 100, *,
                trials: int | None = None) -> dict:
    """``{"ci95_low", "ci95_high", "ci95_range"}`` for a record whose mean of ``values``
    ± the t half-width ``ci95(values)`` would leave ``[low, high]``, or where every value is
    at one end and ``trials`` is known (a ``± 0`` that is no interval): the ends of
    ``metaloop.evaluate.stats.bounded_ci95``, rounded to 6 decimals; ``{}`` where the t
    interval stays inside (or there is none: fewer than 2 values).

    ``trials`` is the pooled number of trials behind ``values`` (tasks x each task's
    queries; the test examples of a continual run, counted once for seeds that share
    them), as the record keeps it in ``trials``. Without it, every
    value at one end gives ``{}`` too: the spread is 0 and the trials that would bound the
    interval are unknown, so there is no interval to give, and a caller shows none (``±
    n/a``, ``at_an_end``), never the t interval's ``± 0``. Every metaloop command that
    writes a bounded record passes ``trials``."""
    values = [float(v) for v in values]
    ci = _ci95(values)
    if ci is None:
        return {}
    mean = math.fsum(values) / len(values)
    at_an_end = ci == 0 and mean in (low, high) and trials is not None   # all 0 or all 100
    if low <= mean - ci and mean + ci <= high and not at_an_end:
        return {}
    ends = bounded_ci95(values, low, high, trials=trials)
    assert ends is not None
    return {"ci95_low": round(ends[0], 6), "ci95_high": round(ends[1], 6),
            "ci95_range": [low, high]}


def at_an_end(values, low: float = 0, high: float = 100) -> bool:
    """Whether two or more ``values`` all sit at ``low`` or all at ``high`` (every task at 0
    or 100%): their t interval is ``± 0``, which is no interval, and without the trials
    (``ci95_fields``) no bounded one can be given either, so it is shown as ``± n/a``."""
    values = [float(v) for v in values]
    return len(values) >= 2 and (all(v == low for v in values)
                                 or all(v == high for v in values))


def queries_per_task(cfg: Mapping) -> int | None:
    """The queries each held-out task of a classification config scores: ``ways x
    queries`` of its ``[eval]`` section, each 0 meaning the ``[family]``'s (as
    ``metaloop.build.eval_family`` builds the tasks); None where either is unknown (a
    regression family has no ways). Times the tasks, it is a record's ``trials``: the
    pooled trials that bound the 95% CI of an accuracy at 0 or 100% (``ci95_fields``)."""
    fam, ec = cfg.get("family", {}), cfg.get("eval", {})
    ways = ec.get("ways") or fam.get("ways")
    queries = ec.get("queries") or fam.get("queries")
    if not (isinstance(ways, int) and isinstance(queries, int) and ways > 0 and queries > 0):
        return None
    return ways * queries


def write_record(path, **fields) -> Path:
    """Validate a record and write it as JSON to ``path``, atomically.

    The JSON goes to a temporary file in the same folder, then ``os.replace`` moves it onto
    ``path``: a reader sees the old record or the new one, never half of one.

    Args:
        path: the record file, conventionally ``docs/results/NAME.json``.
        **fields: the record: every name in ``REQUIRED``, plus any extra fields.

    Returns:
        The path written.

    Raises:
        RecordError: (a ValueError) naming the missing or malformed fields; nothing is
            written.
        ValueError: a path that does not end in ``.json`` or a folder that cannot be written.
        RecordWriteError: (an OSError and a ValueError) the record could not be written (a
            full disk, an immutable file, another user's record in a sticky folder), naming
            the file, the system's reason and whether a record there before is unchanged
            (it always is: no temporary file is left).
    """
    path = Path(path)
    if path.suffix != ".json":
        raise ValueError(f"record path must end in .json, got {str(path)!r}")
    rec = validate_record(fields, where=str(path))
    check_record_path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise ValueError(f"cannot create the record's folder {path.parent}: {e.strerror}") from e
    text = dumps_record(rec)
    before = path.is_file()             # a record there before: kept whole where this fails
    try:
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    except OSError as e:
        raise _cannot_write_record(path, e, before) from e
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)
        os.replace(tmp, path)
    except BaseException as e:
        Path(tmp).unlink(missing_ok=True)
        if isinstance(e, OSError):
            raise _cannot_write_record(path, e, before) from e
        raise
    return path


class RecordWriteError(OSError, ValueError):
    """A record that could not be written (a full disk, a read-only or immutable file,
    another user's file in a sticky folder), naming the file, the system's reason and what
    is there now. An ``OSError``, and a ``ValueError`` so that the command line says it in
    one line with exit status 2."""


def _cannot_write_record(path: Path, e: OSError, before: bool) -> RecordWriteError:
    """``write_record``'s error for ``path`` after ``e``: the temporary file is gone and
    ``os.replace`` did not happen, so a record there before (``before``) is as it was."""
    reason = e.strerror or str(e) or type(e).__name__
    now = "the record there before is unchanged" if before and path.is_file() \
        else "no record was written"
    return RecordWriteError(f"cannot write the record {path}: {reason}; {now}")


def dumps_record(rec: Mapping) -> str:
    """A record as its file's text: sorted keys, two-space indents, ``per_task`` and
    ``per_seed`` (one number per task or seed) and ``ci95_range`` on one line each, and a
    final newline."""
    text = json.dumps(rec, indent=2, sort_keys=True, ensure_ascii=False) + "\n"
    return re.sub(r'("(?:per_task|per_seed|ci95_range)": )\[\n(.*?)\n\s*\]',
                  lambda m: m.group(1) + "[" + ", ".join(v.strip().rstrip(",") for v in
                                                      m.group(2).splitlines()) + "]",
                  text, flags=re.S)


def paired_difference(a: Mapping, b: Mapping) -> dict:
    """Record ``a``'s mean minus ``b``'s, task by task, with the paired 95% CI.

    Both records must hold ``per_task`` for the same tasks: the same ``n``; the same
    ``split`` and ``seed`` where both records name them; both on the challenge's official
    runs (``lake_runs``, the same ``runs_sha256``) or both on generated tasks; both error
    rates (``error_rate``) or neither; and, for generated tasks where both keep their
    ``run_config``, the same task family, held-out ways, shots, queries and
    ``within_alphabet``, and (your own data) the same held-out classes. Omniglot's
    ``drawers`` may differ: both streams draw the same classes task by task, so such records
    pair on the same characters, with other drawings.

    Returns:
        ``{"mean": mean of a - b, "ci95": t_975(n - 1) * sd / sqrt(n) of the differences (sd with
        n - 1; ``None`` for one task, which has no CI), "n": n}``.

    Raises:
        RecordError: (a ValueError) a record without ``per_task``, or with one that is not
            a non-empty list of finite numbers, or records whose tasks differ (naming what
            differs).
    """
    names = [r.get("_file", where) for r, where in ((a, "the first record"),
                                                     (b, "the second record"))]
    for r, name in zip((a, b), names):
        if r.get("per_task") is None:
            raise RecordError(f"{name} has no per_task values, so it cannot be paired: "
                              f"re-measure it with metaloop eval --record")
        values = r["per_task"]
        if not (isinstance(values, list) and values and all(_number(v) for v in values)):
            raise RecordError(f"{name}: per_task must be a non-empty list of finite numbers, "
                              f"got {values!r:.60}")
    ta, tb = _tasks_of(a), _tasks_of(b)
    differ = [k for k in ta if k in tb and ta[k] != tb[k]]
    if len(a["per_task"]) != len(b["per_task"]) and "n" not in differ:
        differ.insert(0, "n")
        ta["n"], tb["n"] = len(a["per_task"]), len(b["per_task"])
    if differ:
        raise RecordError(f"{names[0]} and {names[1]} were not measured on the same tasks: "
                          + ", ".join(f"{k} {ta.get(k)!r} != {tb.get(k)!r}" for k in differ))
    d = [x - y for x, y in zip(a["per_task"], b["per_task"])]
    n = len(d)
    mean = math.fsum(d) / n
    return {"mean": mean, "ci95": _ci95(d), "n": n}


def _tasks_of(rec: Mapping) -> dict:
    """What a record says of the tasks behind its ``per_task`` values, by name: ``n``,
    ``split`` and ``seed`` (where it names them), ``tasks`` ("official runs" or "generated"),
    ``runs_sha256`` (official runs), ``metric`` ("error rate" or not) and, for generated
    tasks, from its ``run_config``: the family's name, the held-out ``ways``, ``shots``,
    ``queries`` and ``within_alphabet``, and the held-out split's class list where the
    config has one (``family.test_classes``, ...; as a count and a digest)."""
    out = {k: rec[k] for k in ("n", "split", "seed") if k in rec}
    lake = rec.get("lake_runs")
    out["tasks"] = "official runs" if lake is not None else "generated"
    if isinstance(lake, Mapping) and "runs_sha256" in lake:
        out["runs_sha256"] = lake["runs_sha256"]
    out["metric"] = "error rate" if "error_rate" in rec else "not an error rate"
    cfg = rec.get("run_config")
    if lake is None and isinstance(cfg, Mapping) and isinstance(cfg.get("family"), Mapping) \
            and isinstance(cfg.get("eval"), Mapping):    # the official runs are their files
        fam, ec = cfg["family"], cfg["eval"]
        out["family"] = fam.get("name")
        for k in ("ways", "shots", "queries"):
            out[k] = ec.get(k) or fam.get(k)
        out["within_alphabet"] = bool(ec.get("within_alphabet"))
        held = fam.get(f"{ec.get('split')}_classes")  # your own data: the held-out classes
        if isinstance(held, list) and held:
            digest = hashlib.sha256("\n".join(map(str, held)).encode()).hexdigest()[:12]
            out["classes"] = f"{len(held)} classes, sha256 {digest}"
    return out


# The .json files a run writes in its --out folder (besides those in its checkpoints,
# ``ckpt-*``): a record there would be overwritten by the run, or would overwrite what it
# wrote.
VAE_FILES = ("results.json", "curve.json", re.compile(r"final-k\d+-n\d+\.json"))
"""The JSON files ``metaloop vae`` writes in its ``--out`` (``--protocol iwae --evaluate``:
``final-k*-n*.json``); its checkpoints' files (in ``ckpt-*`` folders) are its own too."""


def _run_file(path: Path, out, files) -> str | None:
    """The name of the file of the run folder ``out`` that ``path`` is (symbolic links
    resolved): one of ``files`` (names, or compiled patterns a name matches in full) or a
    file in one of its ``ckpt-*`` checkpoint folders; None otherwise."""
    try:
        rel = path.expanduser().resolve().relative_to(Path(out).expanduser().resolve())
    except (ValueError, OSError):
        return None
    parts = rel.parts
    if len(parts) > 1 and parts[0].startswith("ckpt-"):
        return rel.as_posix()
    if len(parts) == 1 and any(parts[0] == f if isinstance(f, str) else f.fullmatch(parts[0])
                               for f in files):
        return rel.as_posix()
    return None


def check_record_path(path, out=None, files=VAE_FILES) -> Path:
    """Fail early, before any work, if a record cannot be written at ``path``.

    Nothing is created: the folders the record needs are made when it is written
    (``write_record``), so work that fails in between leaves no empty folder behind.

    A record there is replaced (rerunning a record's command); any other file is not.

    Args:
        path: where the record goes.
        out: the run's output folder (``--out``), or None: a record path that is a file
            the run writes there (one of ``files``, or a file of a checkpoint folder) is
            refused, which would otherwise be found only once the work is done.
        files: the names of the JSON files the run writes in ``out`` (strings, or compiled
            patterns), by default ``metaloop vae``'s (``VAE_FILES``).

    Raises:
        ValueError: the path does not end in ``.json``, is a folder, a file the run writes
            in ``out``, or a file that is not a record (a checkpoint's ``state.json``, a
            ``results.json``), or its folder cannot be created (a file on the way) or
            written.
    """
    path = Path(path)
    if path.suffix != ".json":
        raise ValueError(f"record path must end in .json, got {str(path)!r}")
    mine = None if out is None else _run_file(path, out, files)
    if mine is not None:
        raise ValueError(f"record path {str(path)!r} is {mine}, a file that the run writes "
                         f"in its --out folder {out}: name another .json file for the "
                         f"record (nothing was written)")
    if path.is_dir():
        raise ValueError(f"record path {str(path)!r} is a folder")
    if path.exists() and not _holds_a_record(path):
        raise ValueError(f"record path {str(path)!r} is a file that is not a result record "
                         f"(it has no table, metric and mean); writing the record would "
                         f"replace it: name another .json file")
    have = path.parent                 # the nearest folder on the way that exists
    while not have.exists() and have != have.parent:
        have = have.parent
    if not have.is_dir():
        raise ValueError(f"cannot create the record's folder {path.parent}: {have} is not a "
                         f"folder")
    if not os.access(have, os.W_OK | os.X_OK):
        raise ValueError(f"the record's folder {have} is not writable")
    return path


def _holds_a_record(path: Path) -> bool:
    """Whether the file ``path`` holds a record (a JSON object with a table, metric and mean),
    which writing a record there may replace."""
    try:
        rec = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    return isinstance(rec, Mapping) and {"table", "metric", "mean"} <= set(rec)


def command_line(args: argparse.Namespace, program: str = "metaloop",
                 global_options: tuple[str, ...] = ("threads", "malloc"),
                 switches: Collection[str] | None = None) -> str:
    """The exact command a parsed ``metaloop`` subcommand stands for, rebuilt from ``args``.

    Every option with a value is written out (defaults included), so the line reproduces the
    run whatever the defaults become. ``global_options`` go before the subcommand; options
    that are ``None``, ``False`` (a flag not given) or ``0`` for a global option are left
    out, and so is ``--malloc heap`` (the allocator changes CPU time, not results). A
    two-way switch (``--key`` / ``--no-key``, an ``argparse.BooleanOptionalAction`` such as
    ``metaloop.cli._args.Switch``) that is ``False`` is written ``--no-key`` instead: the
    user turned it off, and leaving it out would leave the config's value. A list of numbers is
    written comma-separated (``--steps 0,1,5``), a list of strings as separate words
    (``--checkpoint runs/a runs/b``).

    Args:
        args: the parsed command line; ``args.command`` is the subcommand.
        program: the first word of the line.
        global_options: the options of ``args`` that go before the subcommand.
        switches: the dests of ``args`` that are two-way switches; ``None``: those of
            ``metaloop``'s own parser for ``args.command`` and its global options.
    """
    opts = {k: v for k, v in vars(args).items() if k not in ("func", "command")}
    two_way = _switch_dests(args.command) if switches is None else frozenset(switches)

    def flags(items) -> list[str]:
        out = []
        for k, v in items:
            if v is False and k in two_way:
                out.append("--no-" + k.replace("_", "-"))
                continue
            if v is None or v is False:
                continue
            out.append("--" + k.replace("_", "-"))
            if isinstance(v, (list, tuple)) and all(isinstance(x, str) for x in v):
                out.extend(v)
            elif isinstance(v, (list, tuple)):
                out.append(",".join(str(x) for x in v))
            elif v is not True:
                out.append(str(v))
        return out

    glob = [(k, opts.pop(k)) for k in global_options if k in opts]
    glob = [(k, v) for k, v in glob
            if (v or (v is False and k in two_way)) and not (k == "malloc" and v == "heap")]
    parts = [program, *flags(glob), args.command, *flags(sorted(opts.items()))]
    return shlex.join(parts)


@functools.lru_cache(maxsize=16)
def _switch_dests(command: str | None) -> frozenset[str]:
    """The dests of the two-way switches (``argparse.BooleanOptionalAction``) of ``metaloop``'s
    global options and of its subcommand ``command`` (none for a name it does not have)."""
    from metaloop.cli.main import build_parser

    parser = build_parser()
    actions = list(parser._actions)
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction) and command in action.choices:
            actions += action.choices[command]._actions
    return frozenset(a.dest for a in actions if isinstance(a, argparse.BooleanOptionalAction))


def training_curve(run_dir, points: int = 10, until: int | None = None
                   ) -> list[list[float]] | None:
    """The training tasks' query accuracy (%) against iterations, from ``run_dir/metrics.jsonl``.

    The run's logged lines up to iteration ``until`` (None: all; a ``ckpt-*`` folder's
    iteration, so that a record of an earlier checkpoint shows no later training) are cut
    into ``points`` equal consecutive windows; each point is
    ``[last iteration of the window, mean accuracy over the window in %]``. It is the
    accuracy on the training tasks' queries after the inner loop, so it shows whether a run
    was still improving when it stopped; it is not a held-out number.

    Lines without a numeric ``accuracy`` and ``iteration`` (``null`` included) are left out,
    as are lines that are not JSON (a last line cut short by a run killed while writing it):
    the curve is a record's side note, and one bad line must not cost the evaluation it is
    written with.

    Returns:
        The curve, or ``None`` when the folder has no readable metrics with an ``accuracy``.

    Raises:
        ValueError: if ``points`` < 1.
    """
    if points < 1:
        raise ValueError(f"training_curve needs points >= 1, got {points}")
    path = Path(run_dir) / "metrics.jsonl"
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except (OSError, ValueError):
        return None
    rows = []
    for line in lines:
        if not line.strip():
            continue
        try:
            rec = json.loads(line)
        except ValueError:                   # cut short while being written: left out
            continue
        if not isinstance(rec, dict):
            continue
        if not (_number(rec.get("iteration")) and _number(rec.get("accuracy"))):
            continue
        it, acc = int(rec["iteration"]), float(rec["accuracy"])
        if until is None or it <= until:
            rows.append((it, acc))
    if not rows:
        return None
    points = min(points, len(rows))
    curve = []
    for i in range(points):
        window = rows[len(rows) * i // points: len(rows) * (i + 1) // points]
        curve.append([window[-1][0], round(100.0 * sum(a for _, a in window) / len(window), 2)])
    return curve


def eval_record(cfg: Mapping, result: Mapping, metric: str, *, checkpoint, command: str,
                device: str = "cpu", evaluation: str | None = None,
                error_rate: Mapping | None = None, methods=None,
                checkpoint_dirs=None, checkpoint_states=None) -> dict:
    """The record of one ``metaloop eval``: the last evaluated step of ``result``.

    The table is the task family's name; the row names the method and, for classification,
    the ways and shots. The budget has the checkpoint's iterations and its training cost: on
    the CPU, the process CPU seconds the checkpoint stores (``metaloop.train``; none for a
    torchrun run or an older checkpoint); on CUDA, the training wall-clock between the first
    and last lines of the run's ``metrics.jsonl``, as GPU seconds. Edit the record's ``row``,
    ``table`` or ``published`` afterwards as the document needs.

    Args:
        cfg: the validated run config (``family``, ``method``, ``eval``).
        result: ``metaloop.evaluate.evaluate``'s result. metric: ``"accuracy"`` or ``"loss"``.
        checkpoint: the run folder or ``ckpt-*`` folder evaluated, or a list of them (an
            ensemble: the budget sums the members' iterations and seconds, counting the
            training of several checkpoints of one run once, ``members`` counts them, and
            the row says so).
        command: the exact command line. device: ``"cpu"`` or ``"cuda"``.
        evaluation: how the queries were scored, when not transductively (kept as
            ``"evaluation"``).
        error_rate: for within-alphabet Omniglot tasks, ``metaloop.recipes.evaluation
            .error_rate``'s block: the record is then the Omniglot challenge's measurement,
            in table ``"challenge"``: its mean, CI and ``per_task`` are the error rate in %,
            with ``error_rate`` and ``trials`` as the challenge's records have them.
        methods: each checkpoint's ``method.name``, in order (None: ``cfg``'s for every
            one). An ensemble's record lists its ``members`` (checkpoint and method); its
            row names the method, or, when the members differ, starts ``"ensemble of 3 runs
            (maml, r2d2, protonet)"``.
        checkpoint_dirs: the ``ckpt-*`` folder each checkpoint was loaded from, in order
            (``metaloop.recipes.evaluation.load_ensemble`` keeps it as each loaded run's
            ``checkpoint_dir``; one folder for one checkpoint; None in place of a folder, or
            for all: a run folder's ``LATEST`` as it is when the record is written). The
            budget and training curve are then those of the checkpoint evaluated, not of
            one that ``metaloop train --resume`` wrote into the run folder since.
        checkpoint_states: each ``checkpoint_dirs`` folder's ``state.json``, as read when it
            was loaded (``Run.state``; one dict for one checkpoint; None in place of one, or
            for all: the folder's file, read now). The budget is then read from it, so a
            loaded folder that a run training into the folder pruned since
            (``save_checkpoint`` keeps the newest 2) still gives its budget; the training
            curve and GPU seconds are the run's ``metrics.jsonl`` up to its iteration.

    With one task there is no confidence interval: ``ci95`` (and ``accuracy_ci95``) is
    ``null``.

    A classification record also has the accuracy under its own names (``accuracy_mean``,
    ``accuracy_ci95`` in %, ``tasks``) and the budget's ``iterations`` and CPU or GPU
    seconds at the top level, as the Omniglot table's cells list them, and ``trials``, the
    queries scored (tasks x ways x queries, ``queries_per_task``): its 95% CI is then the
    one ``metaloop eval`` prints, bounded to 0-100% (``ci95_low``, ``ci95_high``) where the
    t interval would leave that range or every task scored 0 or 100% (``ci95_fields``).
    """
    prov = _provenance(checkpoint, device, checkpoint_dirs, checkpoint_states)
    parts, run_dir, budget = prov["parts"], prov["run_dir"], prov["budget"]
    curve = training_curve(run_dir, until=budget.get("iterations")) \
        if metric == "accuracy" and len(parts) == 1 else None
    fam, ec = cfg["family"], cfg["eval"]
    row, members = _method_row(cfg, checkpoint, methods)
    ways = ec.get("ways") or fam.get("ways")
    shots = ec.get("shots") or fam.get("shots")
    if metric == "accuracy" and ways and shots:
        row += f", {ways}-way {shots}-shot"
    if ec.get("drawers", "any") != "any":
        row += f", drawers {ec['drawers']} by a task's classes"
    row += _test_time(ec, len(parts) if not members or _one_method(members) else 1,
                      evaluation)
    step = result["steps"][-1]
    scale = 100.0 if metric == "accuracy" else 1.0
    ci = None if int(result["tasks"]) == 1 else scale * result[metric]["ci95"][-1]
    rec = {
        "table": re.sub(r"[^a-z0-9_.-]", "-", str(fam["name"]).lower()),
        "row": row,
        "metric": f"query {metric}{' (%)' if scale == 100.0 else ''} after {step} "
                  f"step{'s' if step != 1 else ''}",
        "mean": scale * result[metric]["mean"][-1],
        "ci95": ci,
        "n": int(result["tasks"]),
        **prov["fields"],
        "command": command,
        "digits": 2 if scale == 100.0 else 3,
        "split": ec.get("split"),
        "seed": result.get("seed"),
        "run_config": dict(cfg),
        **({"accuracy_mean": scale * result[metric]["mean"][-1],
            "accuracy_ci95": ci, "tasks": int(result["tasks"]),
            **{k: budget[k] for k in ("iterations", "cpu_seconds", "gpu_seconds")
               if k in budget}} if metric == "accuracy" else {}),
        **({"evaluation": evaluation} if evaluation else {}),
        **({"members": members} if members else {}),
        **({"training_curve": curve} if curve else {}),
        "per_task": [round(scale * v, 6) for v in result["per_task"][metric][-1]],
    }
    if error_rate is not None and metric == "accuracy":
        e = error_rate
        rec.update(table="challenge",
                   metric=f"within-alphabet {e['ways']}-way {e['shots']}-shot error (%)",
                   mean=100 * e["mean"], ci95=None if ci is None else 100 * e["ci95"],
                   error_rate=100 * e["mean"],
                   trials=e["trials"], digits=2, unit="%",
                   per_task=[round(100 - 100 * v, 6) for v in result["per_task"][metric][-1]])
    elif metric == "accuracy" and (per := queries_per_task(cfg)) is not None:
        rec["trials"] = int(result["tasks"]) * per      # the queries scored, all tasks
    if scale == 100.0:
        rec.update(ci95_fields(rec["per_task"], trials=rec.get("trials")))
    return rec


def lake_runs_record(cfg: Mapping, res: Mapping, *, checkpoint, command: str,
                     device: str = "cpu", evaluation: str | None = None,
                     methods=None, checkpoint_dirs=None, checkpoint_states=None) -> dict:
    """The record of ``metaloop eval --lake-runs``: the error rate on the official runs of
    the Omniglot one-shot challenge, in table ``"challenge-official"``.

    Its ``n`` is the number of runs and ``per_task`` each run's error rate in %, so the mean
    and 95% CI are over runs, as ``score_lake_runs`` gives them (``null`` for one run);
    ``trials`` counts the test drawings and ``lake_runs`` names the runs scored (their count,
    folder names and ``runs_sha256``, the digest of their files:
    ``metaloop.data.lake_runs.runs_digest``). The budget, device and date are as
    :func:`eval_record` gives them.

    Args:
        cfg: the validated run config whose ``[eval]`` test-time settings were used.
        res: ``metaloop.recipes.evaluation.evaluate_lake_runs``'s result (with
            ``"runs_sha256"``). checkpoint, command, device, evaluation, methods,
            checkpoint_dirs, checkpoint_states: as :func:`eval_record`.
    """
    prov = _provenance(checkpoint, device, checkpoint_dirs, checkpoint_states)
    ec = cfg["eval"]
    row, members = _method_row(cfg, checkpoint, methods)
    row += ", official runs" + _test_time(
        ec, len(prov["parts"]) if not members or _one_method(members) else 1, evaluation)
    per_run = [round(100 * r["error_rate"], 6) for r in res["runs"]]
    return {
        "table": "challenge-official",
        "row": row,
        "metric": "within-alphabet one-shot error (%), the challenge's official runs",
        "mean": 100 * res["error_rate"],
        "ci95": 100 * res["ci95"] if len(per_run) > 1 else None,
        "n": len(per_run),
        **prov["fields"],
        "command": command,
        "digits": 2,
        "unit": "%",
        "split": "evaluation",
        "error_rate": 100 * res["error_rate"],
        "trials": int(res["trials"]),
        "lake_runs": {"runs": len(per_run), "names": [r["name"] for r in res["runs"]],
                      "runs_sha256": res["runs_sha256"]},
        "run_config": dict(cfg),
        **({"evaluation": evaluation} if evaluation else {}),
        **({"members": members} if members else {}),
        "per_task": per_run,
        **ci95_fields(per_run, trials=int(res["trials"])),
    }


def _one_method(members: list[dict]) -> bool:
    return len({m["method"] for m in members}) == 1


def _method_row(cfg: Mapping, checkpoint, methods) -> tuple[str, list[dict] | None]:
    """The start of a record's row and, for an ensemble, its ``members`` (``[{"checkpoint",
    "method"}]``): the method's name (an ensemble of one method: ``_test_time`` adds
    "ensemble of N runs"), or ``"ensemble of N runs (a, b, c)"`` when the methods differ."""
    paths = [checkpoint] if isinstance(checkpoint, (str, Path)) else list(checkpoint)
    name = str(cfg["method"]["name"])
    methods = [name] * len(paths) if methods is None else [str(m) for m in methods]
    if len(methods) != len(paths):
        raise ValueError(f"methods names {len(methods)} method(s) for {len(paths)} "
                         f"checkpoint(s); give one per checkpoint")
    if len(paths) == 1:
        return name, None
    members = [{"checkpoint": str(p), "method": m} for p, m in zip(paths, methods)]
    if _one_method(members):
        return methods[0], members
    return f"ensemble of {len(paths)} runs ({', '.join(methods)})", members


def _test_time(ec: Mapping, members: int, evaluation: str | None) -> str:
    """What a record's row adds for the ``[eval]`` test-time settings: shifts, an ensemble,
    and how the queries were scored when not transductively."""
    row = ""
    if ec.get("support_shift"):
        row += f", support shifted up to {ec['support_shift']} px"
    if ec.get("query_shift"):
        row += f", queries averaged over shifts up to {ec['query_shift']} px"
    if members > 1:
        row += f", ensemble of {members} runs"
    if evaluation and evaluation != "transductive":
        row += f", queries scored {evaluation}"
    return row


def cpu_name() -> str:
    """``"CPU (MODEL, CAPABILITY)"``: the processor's model name (``/proc/cpuinfo`` on Linux,
    else ``platform.processor()``) and the vector instructions torch's CPU kernels use here
    (``torch.backends.cpu.get_cpu_capability()``, e.g. ``AVX2``, ``AVX512``). Float32 results
    can differ between capabilities, so a record says which one measured it."""
    import platform

    import torch

    model = ""
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as f:
            model = next((ln.split(":", 1)[1].strip() for ln in f
                          if ln.lower().startswith("model name")), "")
    except OSError:
        pass
    model = model or platform.processor() or platform.machine() or "unknown"
    return f"CPU ({model}, {torch.backends.cpu.get_cpu_capability()})"


def cpu_device() -> str:
    """A CPU record's ``device``: ``cpu_name()`` and torch's thread count
    (``"CPU (AMD EPYC, AVX2), 1 thread"``)."""
    import torch

    n = torch.get_num_threads()
    return f"{cpu_name()}, {n} thread{'s' if n != 1 else ''}"


def gpu_device(device: int | torch.device | None = None) -> str:
    """A GPU record's ``device``: the CUDA device's name (``torch.cuda.get_device_name``)
    and whether TF32 was allowed in its float32 matmuls (``torch.backends.cuda.matmul
    .allow_tf32``) and cuDNN convolutions (``torch.backends.cudnn.allow_tf32``), which
    changes both the numbers (~1e-3 relative) and the speed on Ampere and later GPUs:
    ``"NVIDIA H100 80GB HBM3 (TF32 off)"``, ``"... (TF32 on)"``, or where the two differ
    (PyTorch's defaults), ``"... (TF32 on for convolutions, off for matmuls)"``.

    Args:
        device: the CUDA device, as ``torch.cuda.get_device_name`` takes it: an index, a
            ``torch.device`` or None (the current one).
    """
    import torch

    matmul = bool(torch.backends.cuda.matmul.allow_tf32)
    conv = bool(torch.backends.cudnn.allow_tf32)
    if matmul == conv:
        tf32 = f"TF32 {'on' if matmul else 'off'}"
    else:
        on, off = ("matmuls", "convolutions") if matmul else ("convolutions", "matmuls")
        tf32 = f"TF32 on for {on}, off for {off}"
    return f"{torch.cuda.get_device_name(device)} ({tf32})"


def _provenance(checkpoint, device: str, checkpoint_dirs=None,
                checkpoint_states=None) -> dict:
    """What a record of an evaluation says of where it ran: ``parts`` (each checkpoint's run
    directory and budget: that of its ``checkpoint_dirs`` folder, from its
    ``checkpoint_states`` entry where given, as :func:`eval_record` takes them), ``run_dir``
    (the first), ``budget`` (one run's, or an ensemble's members' summed, with ``members``),
    and ``fields``: the record's ``budget``, ``device``
    (``gpu_device``: the GPU's name and TF32 setting, or ``cpu_device``), ``torch``,
    ``date`` (UTC), and ``config`` and ``published`` left null.

    Raises:
        ValueError: ``checkpoint_dirs`` or ``checkpoint_states`` that do not give one entry
            per checkpoint, a folder that is not the checkpoint's, or a state without its
            folder (``_run_budget``).
    """
    import datetime

    import torch

    paths = [checkpoint] if isinstance(checkpoint, (str, Path)) else list(checkpoint)
    if checkpoint_dirs is None:
        loaded: list = [None] * len(paths)
    else:
        loaded = [checkpoint_dirs] if isinstance(checkpoint_dirs, (str, Path)) \
            else list(checkpoint_dirs)
        if len(loaded) != len(paths):
            raise ValueError(f"checkpoint_dirs names {len(loaded)} loaded folder(s) for "
                             f"{len(paths)} checkpoint(s); give one per checkpoint, in order")
    if checkpoint_states is None:
        states: list = [None] * len(paths)
    else:
        states = [checkpoint_states] if isinstance(checkpoint_states, Mapping) \
            else list(checkpoint_states)
        if len(states) != len(paths):
            raise ValueError(f"checkpoint_states gives {len(states)} loaded state(s) for "
                             f"{len(paths)} checkpoint(s); give one per checkpoint, in order")
    parts = [_run_budget(Path(p), device, None if d is None else Path(d), st)
             for p, d, st in zip(paths, loaded, states)]
    if len(parts) == 1:
        budget = parts[0][1]
    else:                             # an ensemble: its members' training, summed
        runs: dict = {}               # checkpoints of one run folder: its training once,
        for i, (run_dir, b) in enumerate(parts):     # the newest's (which holds the others')
            key: Path | int = Path(run_dir).resolve() if (Path(run_dir) / "LATEST").is_file() else i
            if key not in runs or b.get("iterations", 0) > runs[key].get("iterations", 0):
                runs[key] = b
        budget = {"members": len(parts)}
        for field in ("iterations", "cpu_seconds", "gpu_seconds"):
            if all(field in b for b in runs.values()):
                budget[field] = round(sum(b[field] for b in runs.values()), 2)
    if device == "cuda" and torch.cuda.is_available():
        dev = gpu_device(0)
    else:
        dev = cpu_device()
    return {"parts": parts, "run_dir": parts[0][0], "budget": budget,
            "fields": {"budget": budget, "device": dev, "torch": torch.__version__.split("+")[0],
                       "date": datetime.datetime.now(datetime.timezone.utc).strftime(
                           "%Y-%m-%d"),
                       "config": None, "published": None}}


def _run_budget(ckpt: Path, device: str, loaded: Path | None = None,
                state: Mapping | None = None) -> tuple[Path, dict]:
    """A run's (or ``ckpt-*`` folder's) run directory and training budget: iterations, and
    its stored CPU seconds (CPU) or its metrics.jsonl wall-clock up to the checkpoint's
    iteration (CUDA, as GPU seconds).

    Args:
        ckpt: the run folder or ``ckpt-*`` folder given.
        device: ``"cpu"`` or ``"cuda"``.
        loaded: the ``ckpt-*`` folder of ``ckpt`` that was loaded, whose ``state.json`` is
            read (a run folder's ``LATEST`` is then not read: it may have moved on since);
            None: ``ckpt`` itself, or a run folder's ``LATEST`` as it is now.
        state: None, or ``loaded``'s ``state.json`` as read when it was loaded
            (``Run.state``), used instead of the file, which may be gone since.

    Raises:
        ValueError: ``loaded`` that is neither ``ckpt`` nor a folder in the run folder
            ``ckpt`` (naming both), or, without ``state``, whose ``state.json`` cannot be
            read (a run training into the folder pruned it since the load); a ``state``
            without ``loaded``, or that is not a JSON object.
    """
    latest = ckpt / "LATEST"
    run_dir = ckpt if latest.exists() else ckpt.parent
    if loaded is not None:
        within = run_dir == ckpt                 # a run folder: one of its ckpt-* folders
        if (loaded.resolve().parent if within else loaded.resolve()) != ckpt.resolve():
            what = "a ckpt-* folder in that run folder" if within else "that ckpt-* folder"
            raise ValueError(f"the loaded folder {loaded} is not a checkpoint of {ckpt}: "
                             f"give {what}, as it was loaded")
        state_dir = loaded
    elif state is not None:
        raise ValueError(f"a loaded state of {ckpt} needs the ckpt-* folder it was read from: "
                         f"give loaded with state")
    else:
        state_dir = run_dir / latest.read_text(encoding="utf-8").strip() if latest.exists() \
            else ckpt
    budget: dict = {}
    if state is not None:                        # as read at the load: the folder may be gone
        if not isinstance(state, Mapping):
            raise ValueError(f"the loaded state of {loaded} must be its state.json's object, "
                             f"got {type(state).__name__}")
    else:
        try:
            from metaloop.train.checkpoint import read_state  # torch only when it is read
            state = read_state(state_dir / "state.json")
        except (OSError, ValueError) as e:
            if loaded is not None:               # the weights evaluated: their budget or none
                raise ValueError(f"{loaded}, the checkpoint evaluated, has no readable "
                                 f"state.json now ({type(e).__name__}: {e}): a run training "
                                 f"into {run_dir} keeps only its newest checkpoints, so its "
                                 f"budget cannot be recorded; give the state read when it was "
                                 f"loaded (Run.state), let that run finish, or evaluate a "
                                 f"copy of the run folder") from e
            state = {}
    if isinstance(state.get("iteration"), int):
        budget["iterations"] = state["iteration"]
    if device != "cuda" and isinstance(state.get("cpu_seconds"), (int, float)):
        budget["cpu_seconds"] = round(float(state["cpu_seconds"]), 2)
    times = []
    if device == "cuda":
        try:
            for line in (run_dir / "metrics.jsonl").read_text(encoding="utf-8").splitlines():
                row = json.loads(line) if line.strip() else None
                if row is not None and ("iterations" not in budget
                                        or int(row["iteration"]) <= budget["iterations"]):
                    times.append(float(row["time"]))
        except (OSError, ValueError, KeyError, TypeError):
            times = []
    if len(times) > 1:
        budget["gpu_seconds"] = round(times[-1] - times[0], 1)
    if not budget:
        budget["iterations"] = 0
    return run_dir, budget


def load_records(folder) -> list[dict]:
    """Read and validate every ``*.json`` record in ``folder``, sorted by file name.

    Each returned dict has the record's fields plus ``"_file"``, the file's name.

    Raises:
        FileNotFoundError: if ``folder`` does not exist.
        RecordError: (a ValueError) naming the file that is not JSON or not a valid record.
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise FileNotFoundError(f"records folder {folder} does not exist")
    out = []
    for p in sorted(folder.glob("*.json")):
        rec = load_record(p)
        rec["_file"] = p.name
        out.append(rec)
    return out


def load_record(path) -> dict:
    """Read and validate one record file.

    Raises:
        RecordError: (a ValueError) naming the file that is not JSON or not a valid record.
        OSError: the file cannot be read.
    """
    path = Path(path)
    try:
        rec = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as e:
        raise RecordError(f"{path}: not valid JSON ({e})") from e
    return validate_record(rec, where=str(path))


def _fmt(x: float, digits: int, notation: str = "f") -> str:
    return f"{x:.{digits}e}" if notation == "e" else f"{x:,.{digits}f}"


def _cell(s: str) -> str:
    return s.replace("|", "\\|").replace("\n", " ")


def format_budget(budget: Mapping) -> str:
    """``{"iterations": 60000, "cpu_seconds": 3282}`` -> ``"60,000 it, 54.7 CPU-min"``; an
    ensemble's (``members``: 4) -> ``"4 runs: 60,000 it, ..."`` (its members' sums)."""
    parts = []
    if "iterations" in budget:
        parts.append(f"{int(budget['iterations']):,} it")
    if "cpu_seconds" in budget:
        parts.append(f"{budget['cpu_seconds'] / 60:,.1f} CPU-min")
    if "gpu_seconds" in budget:
        parts.append(f"{budget['gpu_seconds']:,.0f} GPU-s")
    text = ", ".join(parts)
    return f"{int(budget['members'])} runs: {text}" if "members" in budget else text


def format_value(rec: Mapping) -> str:
    """The measured cell: ``mean ± ci95`` with the record's ``digits`` and ``unit``; for a
    record with ``ci95_low`` and ``ci95_high`` (a t interval that would leave the metric's
    range), ``mean (95% CI low to high)``, e.g. ``0.50% (95% CI 0.01 to 3.01)``."""
    d, notation = rec.get("digits", 2), rec.get("notation", "f")
    unit = rec.get("unit", "")
    s = _fmt(rec["mean"], d, notation)
    if rec.get("ci95_low") is not None and rec.get("ci95_high") is not None:
        return (f"{s}{unit} (95% CI {_fmt(rec['ci95_low'], d, notation)} to "
                f"{_fmt(rec['ci95_high'], d, notation)})")
    if rec["ci95"] is not None:
        s += f" ± {_fmt(rec['ci95'], d, notation)}"
    return s + unit


def record_anchor(rec: Mapping) -> str:
    """The id of a record's entry under its table: its file's stem (``omniglot_maml_5w1s``
    for ``omniglot_maml_5w1s.json``), with any character but letters, digits, ``_`` and ``-``
    made a ``-``; the row label, made so, for a record read from no file."""
    name = Path(rec["_file"]).stem if rec.get("_file") else rec["row"]
    return re.sub(r"[^A-Za-z0-9_-]+", "-", name).strip("-") or "record"


def _fence(command: str, indent: str) -> str:
    """The command as a fenced ``bash`` block, each line indented by ``indent``."""
    ticks = "`" * max(3, 1 + max((len(m) for m in re.findall(r"`+", command)), default=0))
    return "\n".join(indent + line for line in
                     [f"{ticks}bash", *(command.splitlines() or [""]), ticks])


def _published_cell(rec: Mapping) -> str:
    pub = rec["published"]
    return "—" if pub is None else f"{pub['value']} ({pub['source']})"


def render_table(records: list[Mapping]) -> str:
    """One Markdown table for ``records``, a line under it, and the rows' entries below.

    The table gives each row's label, its measurement (mean ± 95% CI), ``n`` and budget,
    and its metric, device and published number (with its source) where the rows differ in
    them: a metric every row shares heads the measurement's column, and a device every row
    shares, or a published number every row of two or more shares, is said in the line
    under the table, with the records' folder, torch versions and dates; a command every row
    of two or more shares is given once, in a code block under that line. Then, in the rows'
    order, each row's entry (its id from ``record_anchor``, which its label links to) gives
    its label, its ``note`` and, unless said once, its command in a code block; rows that
    share their command and have no note get no entries, which would only repeat them.

    Rows sort by the optional ``order`` field, then by file name.

    Raises:
        ValueError: no records.
    """
    if not records:
        raise ValueError("render_table needs at least one record")
    rows = sorted(records, key=lambda r: (r.get("order", math.inf), r.get("_file", ""),
                                          r["row"]))
    metrics = {r["metric"] for r in rows}
    devices = {r["device"] for r in rows}
    pubs = {_published_cell(r) for r in rows}
    pub_col = len(pubs) > 1 or len(rows) == 1
    one_command = len(rows) > 1 and len({r["command"] for r in rows}) == 1
    notes = any(r.get("note") for r in rows)
    entries = notes or not one_command              # an entry holds what the table does not
    anchors: list[str] = []
    for r in rows:                                  # unique in the table, files or not
        a = base = record_anchor(r)
        k = 1
        while a in anchors:
            k += 1
            a = f"{base}-{k}"
        anchors.append(a)

    # "mean ± 95% CI" where a row has a CI; a table of single measurements (medians of
    # timings, one NLL) says only what it measured
    spread = " ± 95% CI" if any(r.get("ci95") is not None for r in rows) else ""
    head = ["method and setting", *(["metric"] if len(metrics) > 1 else []),
            f"{next(iter(metrics))}: mean{spread}" if len(metrics) == 1 and spread
            else next(iter(metrics)) if len(metrics) == 1
            else f"measured (mean{spread})" if spread else "measured",
            "n", "budget", *(["device"] if len(devices) > 1 else []),
            *(["published (source)"] if pub_col else [])]
    lines = ["| " + " | ".join(_cell(h) for h in head) + " |", "|" + "---|" * len(head)]
    for r, a in zip(rows, anchors):
        label = re.sub(r"([\\\[\]])", r"\\\1", r["row"])        # [, ] and \ in a link
        cells = [f"[{label}](#{a})" if entries else r["row"],
                 *([r["metric"]] if len(metrics) > 1 else []),
                 format_value(r), "—" if r["n"] is None else str(r["n"]),
                 format_budget(r["budget"]), *([r["device"]] if len(devices) > 1 else []),
                 *([_published_cell(r)] if pub_col else [])]
        lines.append("| " + " | ".join(_cell(c) for c in cells) + " |")

    torches = sorted({r["torch"] for r in rows})
    dates = sorted(r["date"] for r in rows)
    when = dates[0] if dates[0] == dates[-1] else f"{dates[0]} to {dates[-1]}"
    said = [f"device: {next(iter(devices))}"] if len(devices) == 1 else []
    if not pub_col:
        said.append("no published number" if pubs == {"—"} else f"published: {pubs.pop()}")
    told = {(False, False): "Below, each row's command:",
            (False, True): "Below, each row's note and command:",
            (True, False): "Every row's command:",
            (True, True): "Every row's command, then each row's note:"}[(one_command, notes)]
    line = (f"Generated from {len(rows)} record(s) in `docs/results/`; "
            + "".join(f"{x}; " for x in said)
            + f"torch {', '.join(torches)}; measured {when}. {told}")
    lines += ["", f"*{' '.join(line.split())}*"]
    if one_command:
        lines += ["", _fence(rows[0]["command"], indent="")]
    if entries:
        lines.append("")
        for r, a in zip(rows, anchors):
            note = f": {r['note']}" if r.get("note") else ""
            lines.append(" ".join(f'- <a id="{a}"></a>**{r["row"]}**{note}'.split()))
            if not one_command:
                lines += ["", _fence(r["command"], indent="    "), ""]
    return "\n".join(lines).rstrip("\n") + "\n"


def _published_digits(rec: Mapping) -> str | None:
    """The leading number of the record's published value as the source writes it
    (``"96.0%"`` -> ``"96.0"``, ``"98.90 ± 0.10%"`` -> ``"98.90"``); ``None`` without one."""
    pub = rec["published"]
    if pub is None:
        return None
    m = re.match(r"\s*([0-9]+(?:\.[0-9]+)?)", str(pub["value"]))
    return m.group(1) if m else None


def _published_number(rec: Mapping) -> float | None:
    """The leading number of the record's published value (``"98.7 ± 0.4%"`` -> 98.7)."""
    digits = _published_digits(rec)
    return None if digits is None else float(digits)


def _source_short(source: str) -> str:
    """A published source's authors and year (``"Snell et al. 2017, Prototypical Networks
    (60-way training), Table 1"`` -> ``"Snell et al. 2017"``); without a year, the source up
    to its first comma."""
    m = re.match(r"[^,;(]*?\b(?:19|20)\d\d\b", source)
    return m.group(0).strip() if m else source.split(",")[0].strip()


def _column_key(col: str):
    m = _SETTING.match(col)
    return (0, int(m.group(1)), int(m.group(2)), col) if m else (1, 0, 0, col)


def _column_label(col: str) -> str:
    m = _SETTING.match(col)
    return f"{m.group(1)}-way {m.group(2)}-shot" if m else col


def render_grid(records: list[Mapping]) -> str:
    """A method x setting grid of the records that name it (``grid``, ``grid_row``,
    ``grid_column``): each cell the measured mean ± 95% CI, the published number (its digits
    as the source writes them, after the source's authors and year, since a method's cell
    may quote another paper's number) with the gap to it, and the budget; "not measured"
    where a cell has no record.

    Columns named like ``5w1s`` (ways, shots) sort by ways, then shots; rows by the
    smallest ``order`` of their records.

    Raises:
        ValueError: no records, or two records that fill the same cell (the same
            ``grid_row`` and ``grid_column``), naming both files.
        KeyError: a record without ``grid_row`` or ``grid_column``.
    """
    if not records:
        raise ValueError("render_grid needs at least one record")
    cells: dict[tuple[str, str], Mapping] = {}
    for r in records:
        key = (r["grid_row"], r["grid_column"])
        if key in cells:
            raise ValueError(f"records {cells[key].get('_file')} and {r.get('_file')} both "
                             f"fill grid {r['grid']!r} cell {key}")
        cells[key] = r
    cols = sorted({c for _, c in cells}, key=_column_key)
    first: dict[str, float] = {}
    for r in records:
        first[r["grid_row"]] = min(first.get(r["grid_row"], math.inf), r.get("order", math.inf))
    rows = sorted(first, key=lambda name: (first[name], name))
    lines = ["| method | " + " | ".join(_column_label(c) for c in cols) + " |",
             "|---|" + "---|" * len(cols)]
    for name in rows:
        out = []
        for col in cols:
            cell = cells.get((name, col))
            if cell is None:
                out.append("not measured")
                continue
            s = f"**{format_value(cell)}**"
            pub = _published_digits(cell)
            if pub is not None:
                s += (f"<br>{_source_short(cell['published']['source'])}: {pub} "
                      f"({cell['mean'] - float(pub):+.2f})")
            s += f"<br>{format_budget(cell['budget'])}"
            out.append(s)
        lines.append("| " + " | ".join(_cell(c) for c in [name, *out]) + " |")
    lines.append("")
    lines.append(f"*Generated from {len(records)} record(s) in `docs/results/`; each cell is "
                 f"a row of the tables below, where its source, device and command are "
                 f"given.*")
    return "\n".join(lines) + "\n"


SHORT_BY = 2.0
"""A grid cell is listed as short when its mean is more than this many points below the
paper's number."""


def _format_curve(curve) -> str:
    return " · ".join(f"{int(it):,}: {acc:.1f}" for it, acc in curve)


def render_short(records: list[Mapping]) -> str:
    """The cells of a grid more than ``SHORT_BY`` points below their paper, one row each: the
    measurement, the paper's number, the budget spent, the training curve (when the record
    has ``training_curve``) and the paper's schedule priced at the measured seconds per
    iteration (when it has ``projection``), with the config for that budget (``full_config``).
    """
    short = []
    for r in records:
        pub = _published_number(r)
        if pub is not None and r["mean"] < pub - SHORT_BY:
            short.append(r)
    short.sort(key=lambda r: (r.get("order", math.inf), r.get("_file", "")))
    head = ["cell", "measured", "paper", "spent", "training-query accuracy (%) by iteration",
            "the paper's schedule at this cost", "config for that budget"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in short:
        b, proj = r["budget"], r.get("projection")
        price = "—"
        if proj and b.get("iterations"):
            per = {k: b[k] / b["iterations"] for k in ("cpu_seconds", "gpu_seconds") if k in b}
            n = proj["iterations"]
            cost = ", ".join(f"{per[k] * n / 3600:,.1f} {k[:3].upper()}-h" for k in per)
            price = f"{int(n):,} it ({proj['source']})" + (f": ≈ {cost}" if cost else "")
        curve = r.get("training_curve")
        cells = [f"{r['grid_row']}, {_column_label(r['grid_column'])}", format_value(r),
                 f"{r['published']['value']} ({r['published']['source']})",
                 format_budget(b), _format_curve(curve) if curve else "—", price,
                 f"`{r['full_config']}`" if r.get("full_config") else "—"]
        lines.append("| " + " | ".join(_cell(c) for c in cells) + " |")
    lines.append("")
    lines.append(f"*Generated from the {len(records)} record(s) of the grid in "
                 f"`docs/results/`: {len(short)} cell(s) more than {SHORT_BY:g} points below "
                 f"the paper.*")
    return "\n".join(lines) + "\n"


def generate(docs_dir, records_dir, check: bool = False) -> list[str]:
    """Rewrite (or with ``check``, compare) every marked table in ``docs_dir/*.md``.

    Returns:
        The problems found, one line each: stale tables (``check`` only), markers naming a
        table without records (unless the table holds just ``NOT_MEASURED``), and records
        whose table no document marks. Empty when the
        documents are current.

    Raises:
        ValueError / FileNotFoundError: from ``load_records``; a ``ValueError`` too, naming
            the document and ids, where two entries of one document's tables would have the
            same id (a table marked twice in it). Nothing is written then.
    """
    docs_dir = Path(docs_dir)
    records = load_records(records_dir)
    by_table: dict[str, list[dict]] = {}
    for r in records:
        by_table.setdefault(r["table"], []).append(r)
    problems: list[str] = []
    used: dict[str, set[str]] = {"table": set(), "grid": set(), "short": set(), "detail": set()}
    by_stem = {Path(r["_file"]).stem: r for r in records}
    rewritten = []                    # written only once every document has rendered
    for doc in sorted(docs_dir.glob("*.md")):
        text = doc.read_text(encoding="utf-8")

        def filler(kind: str, members_of, render, doc=doc):
            """A ``re.sub`` callback filling one ``kind`` of marked block ("table", "grid",
            "short", "detail")."""
            def fill(m: re.Match) -> str:
                name = m.group("name")
                members = members_of(name)
                if not members:
                    if kind == "table" and m.group("body") == NOT_MEASURED:
                        return m.group(0)          # still to be measured, and says so
                    problems.append(f"{doc}: {kind} {name!r} has no records in {records_dir}"
                                    + (f" (a table still to be measured holds just the line "
                                       f"{NOT_MEASURED.strip()!r})" if kind == "table" else ""))
                    return m.group(0)
                used[kind].add(name)
                body = render(members)
                if check and m.group("body") != body:
                    problems.append(f"{doc}: {kind} {name!r} is stale; run "
                                    f"`python docs/gen_tables.py` to regenerate it")
                return m.group(1) + body + m.group(4)
            return fill

        new = _BLOCK.sub(filler("table", lambda n: by_table.get(n), render_table), text)
        ids = [i for b in _BLOCK.finditer(new) for i in _ENTRY_ID.findall(b.group("body"))]
        twice = sorted({i for i in ids if ids.count(i) > 1})
        if twice:
            raise ValueError(f"{doc}: the entries of its tables would repeat the id(s) "
                             f"{', '.join('#' + i for i in twice)} (a table marked twice, or "
                             f"record files whose names make the same id)")
        new = _GRID.sub(filler("grid", lambda n: [r for r in records if r.get("grid") == n],
                               render_grid), new)
        new = _SHORT.sub(filler("short", lambda n: [r for r in records if r.get("grid") == n],
                                render_short), new)
        new = _DETAIL.sub(filler("detail", lambda n: [by_stem[n]] if "detail" in by_stem.get(
            n, {}) else None, render_detail), new)
        if not check and new != text:
            rewritten.append((doc, new))
    for doc, new in rewritten:
        doc.write_text(new, encoding="utf-8")
    for name in sorted(set(by_table) - used["table"]):
        files = ", ".join(r["_file"] for r in by_table[name])
        problems.append(f"table {name!r} ({files}) is not marked in any document in "
                        f"{docs_dir} (add <!-- table:{name} --> ... <!-- /table -->)")
    return problems


def render_detail(records: list[Mapping]) -> str:
    """A ``detail`` block: the one record's ``detail`` Markdown, then its file name."""
    (r,) = records
    return (f"{r['detail'].rstrip()}\n\n*Generated from `docs/results/{r['_file']}`; "
            f"{r['device']}; torch {r['torch']}; measured {r['date']}.*\n")


def main(argv: list[str] | None = None) -> int:
    """Command line of the generator; returns the exit status (0 current, 1 stale, 2 bad)."""
    ap = argparse.ArgumentParser(prog="gen_tables", description="Regenerate the results "
                                 "tables in the documents from the JSON records.")
    ap.add_argument("--docs", default="docs", help="folder of the markdown documents")
    ap.add_argument("--records", default=None, help="folder of the records "
                    "(default: DOCS/results)")
    ap.add_argument("--check", action="store_true", help="write nothing; exit 1 naming each "
                    "table that differs from what the records give")
    ap.add_argument("--paired", nargs=2, metavar=("A", "B"), help="print record A's mean "
                    "minus record B's, task by task, with the paired 95%% CI, and exit")
    args = ap.parse_args(argv)
    if args.paired:
        try:
            recs = [{**load_record(f), "_file": f} for f in args.paired]
            d = paired_difference(*recs)
        except (ValueError, OSError) as e:
            print(f"gen_tables: error: {e}", file=sys.stderr)
            return 2
        unit = recs[0].get("unit", "")
        unit = " points" if unit == "%" else unit
        digits = max(r.get("digits", 2) for r in recs)      # as the records show their means
        ci = f" ± {d['ci95']:.{digits}f}{unit} (paired, {d['n']} tasks)" \
            if d["ci95"] is not None else f"{unit} (one task: no CI)"
        print(f"{args.paired[0]} - {args.paired[1]}: {d['mean']:+.{digits}f}{ci}")
        return 0
    records = args.records if args.records is not None else str(Path(args.docs) / "results")
    try:
        problems = generate(args.docs, records, check=args.check)
    except (ValueError, FileNotFoundError) as e:
        print(f"gen_tables: error: {e}", file=sys.stderr)
        return 2
    for p in problems:
        print(f"gen_tables: {p}", file=sys.stderr)
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())

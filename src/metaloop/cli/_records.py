"""What ``--record`` shares between the subcommands that write result records."""

from __future__ import annotations

import argparse
import os

from metaloop.evaluate import records


def rerun_command(args: argparse.Namespace, **changes) -> str:
    """The command a record reruns: ``args`` with ``changes``, every option written out
    (``records.command_line``), after ``OMP_NUM_THREADS=N`` where that is set (it sets
    torch's threads unless ``--threads`` does)."""
    line = records.command_line(argparse.Namespace(**{**vars(args), **changes}))
    omp = os.environ.get("OMP_NUM_THREADS")
    return f"OMP_NUM_THREADS={omp} {line}" if omp and not getattr(args, "threads", 0) \
        else line


def write_records(recs: dict) -> None:
    """Write ``{path: record fields}``, printing each path as written or replaced."""
    for file, rec in recs.items():
        existed = file.exists()
        records.write_record(file, **rec)
        print(f"{'replaced' if existed else 'wrote'} record {file}")

"""What ``--record`` shares between the subcommands that write result records: the command
a record reruns, the reading of an older record's command, and the writing."""

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


def parse_command(command: str, name: str) -> argparse.Namespace:
    """The arguments of the ``metaloop <name>`` command line ``command`` (a record's), read
    by ``metaloop``'s own parser: every flag, default, type and abbreviation as the command
    line reads them, global options before the subcommand (``metaloop --threads 1 <name>``)
    included. ``OMP_NUM_THREADS=N`` (or any ``VAR=value``) before it and the commands before
    ``&&`` are passed over; ``metaloop`` may be ``python -m metaloop``.

    Raises:
        ValueError: not one ``metaloop <name>`` command, or one the parser refuses (naming
            its message).
    """
    import contextlib
    import io
    import shlex

    from metaloop.cli.main import build_parser

    words = shlex.split(command)
    while "&&" in words:                       # e.g. "metaloop train ... && metaloop adapt"
        words = words[words.index("&&") + 1:]
    if "metaloop" not in words or any(w in words for w in (";", "|", "||")):
        raise ValueError(f"not one metaloop {name} command")
    argv = words[words.index("metaloop") + 1:]
    err = io.StringIO()
    try:
        with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
            args = build_parser().parse_args(argv)
    except SystemExit:                         # a usage error, or --help / --version
        lines = err.getvalue().strip().splitlines()
        raise ValueError(f"metaloop refuses it: {lines[-1]}" if lines else
                         "it runs nothing (--help or --version)") from None
    if getattr(args, "command", None) != name:
        raise ValueError(f"not a metaloop {name} command")
    return args


def write_records(recs: dict) -> None:
    """Write ``{path: record fields}``, printing each path as written or replaced."""
    for file, rec in recs.items():
        existed = file.exists()
        records.write_record(file, **rec)
        print(f"{'replaced' if existed else 'wrote'} record {file}")

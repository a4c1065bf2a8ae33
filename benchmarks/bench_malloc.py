"""CPU time and peak memory of training runs under glibc's default malloc and under
``metaloop --malloc heap`` (large blocks kept in the heap and reused, not mapped and unmapped
on every call), measured side by side in one run.

Each workload is a config from ``configs/`` trained for ``--iterations`` iterations by
``metaloop --threads 1 [--malloc MODE] train`` in a child process; the child's user and
system CPU seconds and its peak RSS come from ``os.wait4``. The two modes alternate
(system, heap, system, heap, ...) ``--reps`` times per workload, so drift on a shared machine
hits both alike; the printed ratio is heap / system of the summed CPU seconds, and the start-
up cost (imports, data loading) is in both.

Run:  python benchmarks/bench_malloc.py [--iterations 30] [--reps 2]
          [--configs omniglot_pretrain_5w1s_cpu,omniglot_maml_20w1s_cpu,...]
          [--records docs/results]

``--records DIR`` writes one record per workload, ``DIR/benchmarks_malloc_<config>.json``,
for the ``benchmarks-malloc`` table of docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import datetime
import difflib
import os
import platform
import re
import shlex
import subprocess
import sys
import tempfile
from pathlib import Path

import torch

from metaloop.evaluate.records import check_record_path, write_record

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _timing import maxrss_mib  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
DEFAULT = ("omniglot_pretrain_5w1s_cpu,omniglot_maml_20w1s_cpu,omniglot_anil_20w1s_cpu,"
           "omniglot_reptile_5w1s_cpu,omniglot_challenge_cpu")


def config_name(given: str) -> str:
    """The name of a config in ``configs/`` as ``--configs`` takes it: ``name``,
    ``name.toml``, ``configs/name`` and ``configs/name.toml`` are all ``name``.

    Raises:
        ValueError: a name that leaves ``configs/`` (naming it), or no such config (naming
            the file looked for, and the nearest names there).
    """
    name = given.strip().removeprefix("./").removeprefix("configs/").removesuffix(".toml")
    if not name or "/" in name or "\\" in name or name in (".", ".."):
        raise ValueError(f"{given!r} is not the name of a config in configs/ (give e.g. "
                         f"omniglot_challenge_cpu or configs/omniglot_challenge_cpu.toml)")
    if not (ROOT / "configs" / f"{name}.toml").is_file():
        near = difflib.get_close_matches(name, sorted(p.stem for p in
                                                      (ROOT / "configs").glob("*.toml")), 3)
        hint = f" (did you mean {', '.join(near)}?)" if near else ""
        raise ValueError(f"no config {name!r}: configs/{name}.toml does not exist{hint}")
    return name


def short_text(name: str, iterations: int) -> str:
    """The text of ``configs/<name>.toml``, set to train ``iterations`` iterations and write
    no intermediate checkpoint.

    Raises:
        OSError: no such config. ValueError: not exactly one ``iterations =`` line.
    """
    text = (ROOT / "configs" / f"{name}.toml").read_text()
    text, n = re.subn(r"(?m)^iterations\s*=\s*\d+", f"iterations = {iterations}", text)
    if n != 1:
        raise ValueError(f"configs/{name}.toml: expected one 'iterations =' line, found {n}")
    return re.sub(r"(?m)^checkpoint_every\s*=\s*\d+", "checkpoint_every = 1000000", text)


def short_config(name: str, iterations: int, folder: Path) -> Path:
    """``short_text(name, iterations)`` written into ``folder``; its path."""
    path = folder / f"{name}.toml"
    path.write_text(short_text(name, iterations))
    return path


def record_path(records: str, name: str) -> Path:
    """Where ``--records`` puts the record of config ``name``."""
    return Path(records) / f"benchmarks_malloc_{name}.json"


def run_once(config: Path, mode: str, out: Path) -> dict:
    """Train once in a child process; its CPU seconds (user, sys) and peak RSS (MiB)."""
    cmd = [sys.executable, "-m", "metaloop", "--threads", "1", "--malloc", mode, "train",
           "--config", str(config), "--out", str(out), "--no-progress"]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    _, status, usage = os.wait4(proc.pid, 0)
    err = proc.stderr.read()
    proc.stderr.close()
    if os.waitstatus_to_exitcode(status) != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed:\n{err[-2000:]}")
    return {"user": usage.ru_utime, "sys": usage.ru_stime, "rss_mib": maxrss_mib(usage.ru_maxrss)}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--configs", default=DEFAULT,
                    help="comma-separated names in configs/ (with or without configs/ and "
                         ".toml)")
    ap.add_argument("--iterations", type=int, default=30)
    ap.add_argument("--reps", type=int, default=2, help="alternating runs of each mode")
    ap.add_argument("--records", help="write one JSON record per workload into this folder")
    args = ap.parse_args(argv)
    if args.iterations <= 0 or args.reps <= 0:
        ap.error("--iterations and --reps must be positive")
    given = [n.strip() for n in args.configs.split(",") if n.strip()]
    if not given:
        ap.error(f"--configs {args.configs!r} names no config")
    names = []
    for n in given:
        try:
            names.append(config_name(n))
        except ValueError as e:
            ap.error(f"--configs: {e}")
    twice = next((n for i, n in enumerate(names) if n in names[:i]), None)
    if twice is not None:                   # one record per config: the second would replace it
        ap.error(f"--configs names {twice!r} twice; name each config once")
    for name in names:                      # every one before the first run: none fails late
        try:
            short_text(name, args.iterations)
        except (OSError, ValueError) as e:
            ap.error(f"--configs: {name}: {e}")
        if args.records:                    # and where the records go, before the runs
            try:
                check_record_path(record_path(args.records, name))
            except ValueError as e:
                ap.error(f"--records: {e}")
    cpu = platform.processor() or platform.machine()
    try:
        cpu = next(line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo")
                   if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    print(f"torch {torch.__version__}, 1 thread, {cpu}; {args.iterations} iterations per run, "
          f"{args.reps} alternating run(s) per mode")
    print(f"{'config':34s} {'system CPU-s (user+sys)':>24s} {'heap CPU-s (user+sys)':>22s} "
          f"{'heap/system':>11s} {'peak MiB sys/heap':>18s}")
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        for name in names:
            cfg = short_config(name, args.iterations, tmp)
            res = {"system": [], "heap": []}
            for r in range(args.reps):
                for mode in ("system", "heap"):
                    res[mode].append(run_once(cfg, mode, tmp / f"{name}-{mode}-{r}"))
            tot = {m: {k: sum(x[k] for x in v) for k in ("user", "sys")}
                   for m, v in res.items()}
            cpu_s = {m: t["user"] + t["sys"] for m, t in tot.items()}
            rss = {m: max(x["rss_mib"] for x in v) for m, v in res.items()}
            ratio = cpu_s["heap"] / cpu_s["system"]
            print(f"{name:34s} {cpu_s['system']:9.1f} ({tot['system']['user']:.1f}+"
                  f"{tot['system']['sys']:.1f}) {cpu_s['heap']:9.1f} ({tot['heap']['user']:.1f}+"
                  f"{tot['heap']['sys']:.1f}) {ratio:11.2f} {rss['system']:8.0f}/{rss['heap']:.0f}",
                  flush=True)
            rows.append({"config": f"configs/{name}.toml", "cpu_seconds": cpu_s,
                         "user_seconds": {m: t["user"] for m, t in tot.items()},
                         "sys_seconds": {m: t["sys"] for m, t in tot.items()},
                         "peak_rss_mib": rss, "heap_over_system": ratio})
    if args.records:
        command = shlex.join(["python", "benchmarks/bench_malloc.py",
                              *(sys.argv[1:] if argv is None else argv)])
        for i, r in enumerate(rows):
            name = Path(r["config"]).stem
            rec = {"table": "benchmarks-malloc", "order": 1100 + i,
                   "row": f"{r['config']}, {args.iterations} iterations (start-up included)",
                   "metric": "CPU time (user + sys), --malloc heap / system",
                   "mean": round(r["heap_over_system"], 2), "ci95": None, "unit": "x",
                   "digits": 2, "n": 2 * args.reps,
                   "budget": {"iterations": 2 * args.reps * args.iterations},
                   "device": f"CPU ({cpu}), 1 thread, shared", "config": r["config"],
                   "published": None, "command": command,
                   "note": (f"user + sys CPU-s: system {r['user_seconds']['system']:.1f} + "
                            f"{r['sys_seconds']['system']:.1f}, heap "
                            f"{r['user_seconds']['heap']:.1f} + {r['sys_seconds']['heap']:.1f}; "
                            f"peak RSS {r['peak_rss_mib']['system']:.0f} vs "
                            f"{r['peak_rss_mib']['heap']:.0f} MiB"),
                   "torch": torch.__version__.split("+")[0],
                   "date": datetime.date.today().isoformat()}
            write_record(record_path(args.records, name), **rec)
    return 0


if __name__ == "__main__":
    sys.exit(main())

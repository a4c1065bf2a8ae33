"""Ranks of a distributed run started by hand in tests (as on separate nodes, so each rank's
output is its own), shared by the distributed tests."""

import os
import socket
import subprocess
import sys

RANK_VARIABLES = ("WORLD_SIZE", "RANK", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT",
                  "TORCHELASTIC_RUN_ID")


def free_port() -> int:
    """A TCP port free on 127.0.0.1 now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def run_ranks(argvs: list[list[str]], env: dict | None = None,
              timeout: float = 120) -> list[subprocess.CompletedProcess]:
    """``python ARGV`` for each rank r of ``len(argvs)`` (``argvs[r]``), all at once, with
    RANK, LOCAL_RANK, WORLD_SIZE and a fresh MASTER_PORT on 127.0.0.1 set and any of the
    caller's own removed, one thread each, plus ``env``; each one's completed process, in
    rank order (a rank still running after ``timeout`` s is killed)."""
    port, world, procs = str(free_port()), len(argvs), []
    base = {k: v for k, v in os.environ.items() if k not in RANK_VARIABLES}
    for rank, argv in enumerate(argvs):
        rank_env = {**base, "OMP_NUM_THREADS": "1", **(env or {}), "RANK": str(rank),
                    "LOCAL_RANK": str(rank), "WORLD_SIZE": str(world),
                    "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": port}
        procs.append(subprocess.Popen([sys.executable, *argv], env=rank_env,
                                      stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                      text=True))
    done = []
    try:
        for p in procs:
            out, err = p.communicate(timeout=timeout)
            done.append(subprocess.CompletedProcess(p.args, p.returncode, out, err))
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.communicate()
    return done

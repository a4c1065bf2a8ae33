"""metaloop off glibc Linux: macOS, Windows, musl, and glibc systems without an ldconfig cache.

Each platform is simulated on Linux by monkeypatching what differs there (``sys.platform``,
a C library without ``mallopt``, no /proc, no ``resource`` or ``os.sched_getaffinity``):
the Linux-only paths must fall back as documented, never fail at import or start-up.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import json
import os
import platform
import subprocess
import sys
import textwrap
import types
from pathlib import Path

import pytest

from metaloop import _libc
from metaloop.generative import experiment
from metaloop.train import malloc

GLIBC = platform.libc_ver()[0] == "glibc"


@pytest.mark.skipif(not GLIBC, reason="needs glibc")
def test_glibc_is_found_where_find_library_finds_no_c_library(monkeypatch):
    monkeypatch.setattr(ctypes.util, "find_library", lambda name: None)   # NixOS, distroless
    assert _libc.libc_function("mallopt") is not None
    assert _libc.libc_function("malloc_trim") is not None


def test_a_c_library_without_mallopt_changes_nothing(monkeypatch):
    class MacLibc:          # macOS's libSystem (and musl): no mallopt, no malloc_trim
        def __getattr__(self, name):
            raise AttributeError(name)
    monkeypatch.setattr(ctypes, "CDLL", lambda *a, **k: MacLibc())
    assert _libc.libc_function("mallopt") is None
    assert malloc.keep_heap() is False


def test_windows_without_a_c_library_changes_nothing(monkeypatch):
    monkeypatch.setattr(_libc, "os", types.SimpleNamespace(name="nt"), raising=False)
    monkeypatch.setattr(ctypes.util, "find_library", lambda name: None)
    assert _libc.libc_function("mallopt") is None
    assert malloc.keep_heap() is False


def _no_proc(monkeypatch):
    read = Path.read_text

    def read_text(self, *a, **k):
        if str(self).startswith("/proc"):
            raise FileNotFoundError(2, "No such file or directory", str(self))
        return read(self, *a, **k)
    monkeypatch.setattr(Path, "read_text", read_text)


def test_cpu_device_names_a_macs_cpu(monkeypatch):
    _no_proc(monkeypatch)
    monkeypatch.setattr(sys, "platform", "darwin")
    monkeypatch.setattr(os, "cpu_count", lambda: 8)
    asked = []

    def run(cmd, **kw):
        asked.append(cmd)
        return subprocess.CompletedProcess(cmd, 0, stdout="Apple M2\n", stderr="")
    monkeypatch.setattr(subprocess, "run", run)
    assert experiment.cpu_device(1) == "CPU (8-core Apple M2), 1 thread"
    assert asked == [["sysctl", "-n", "machdep.cpu.brand_string"]]


def test_cpu_device_without_a_model_or_a_core_count(monkeypatch):
    _no_proc(monkeypatch)
    monkeypatch.setattr(sys, "platform", "linux")        # ARM Linux: no "model name" line
    monkeypatch.setattr(os, "cpu_count", lambda: None)   # os.cpu_count cannot tell
    assert experiment.cpu_device(2) == "CPU, 2 threads"
    monkeypatch.setattr(sys, "platform", "darwin")       # no sysctl on the PATH
    monkeypatch.setattr(subprocess, "run", lambda *a, **k: (_ for _ in ()).throw(
        FileNotFoundError("sysctl")))
    monkeypatch.setattr(os, "cpu_count", lambda: 4)
    assert experiment.cpu_device(1) == "CPU (4-core), 1 thread"



def test_bench_folder_names_a_macs_cpu(monkeypatch):
    """Its record's device read /proc/cpuinfo, which a Mac lacks: the benchmark failed with
    FileNotFoundError when it wrote its records, after all the work."""
    import importlib

    _no_proc(monkeypatch)
    monkeypatch.setattr(sys, "platform", "darwin")
    monkeypatch.delattr(os, "sched_getaffinity")
    monkeypatch.setattr(os, "cpu_count", lambda: 8)
    monkeypatch.setattr(subprocess, "run", lambda cmd, **kw: subprocess.CompletedProcess(
        cmd, 0, stdout="Apple M2\n", stderr=""))
    monkeypatch.syspath_prepend(str(Path(__file__).resolve().parents[1] / "benchmarks"))
    bench_folder = importlib.import_module("bench_folder")
    assert bench_folder.cpu_name() == "Apple M2 (8 cores)"


MAC = textwrap.dedent("""
    import ctypes, os, pathlib, sys, sysconfig
    import torch, torch._dynamo, torch.optim           # loaded as Linux builds of them
    sysconfig.get_config_vars()
    sys.platform = "darwin"

    class LibSystem:                                   # no mallopt, no malloc_trim
        def __getattr__(self, name):
            raise AttributeError(name)
    ctypes.CDLL = lambda *a, **k: LibSystem()
    for name in ("sched_getaffinity", "sched_setaffinity", "mkfifo"):
        delattr(os, name)
    sys.modules["resource"] = None                     # no such module
    read = pathlib.Path.read_text
    def read_text(self, *a, **k):
        if str(self).startswith("/proc"):
            raise FileNotFoundError(str(self))
        return read(self, *a, **k)
    pathlib.Path.read_text = read_text

    from metaloop.cli.main import main
    from metaloop.train.malloc import keep_heap
    assert keep_heap() is False
    sys.exit(main(sys.argv[1:]))
""")


def test_compare_runs_on_a_simulated_mac_cpu(tmp_path):
    out = tmp_path / "cmp"
    r = subprocess.run([sys.executable, "-c", MAC, "--threads", "1", "compare",
                        "--methods", "maml,anil", "--iterations", "2", "--tasks", "2",
                        "--out", str(out), "--no-progress"],
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    assert "Traceback" not in r.stderr
    results = json.loads((out / "results.json").read_text())
    assert set(results["methods"]) == {"maml", "anil"}

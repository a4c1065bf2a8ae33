"""``metaloop.train.malloc.keep_heap`` and the CLI's ``--malloc`` option.

What the setting changes is observable without timing anything: under glibc's defaults a
64 MiB tensor is an mmap'd block (``mallinfo2().hblkhd`` grows by its size); after
``keep_heap()`` the same allocation comes from the heap (``hblkhd`` unchanged). Each check
runs in a fresh interpreter so this test process keeps its own allocator settings.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import subprocess
import sys
import textwrap

import pytest

from metaloop.cli import main as cli_main

LIBC = ctypes.util.find_library("c")
HAS_MALLINFO2 = bool(LIBC) and hasattr(ctypes.CDLL(LIBC), "mallinfo2")

PROBE = textwrap.dedent("""
    import ctypes, ctypes.util, sys, torch
    from metaloop.train.malloc import keep_heap

    class Info(ctypes.Structure):
        _fields_ = [(f, ctypes.c_size_t) for f in ("arena", "ordblks", "smblks", "hblks",
                    "hblkhd", "usmblks", "fsmblks", "uordblks", "fordblks", "keepcost")]

    libc = ctypes.CDLL(ctypes.util.find_library("c"))
    libc.mallinfo2.restype = Info
    if sys.argv[1] == "heap-unfound":     # no ldconfig cache, no compiler (NixOS, distroless)
        ctypes.util.find_library = lambda name: None
    if sys.argv[1].startswith("heap"):
        assert keep_heap() is True
    if sys.argv[1] == "after-main":       # a program that ran a metaloop command in-process
        from metaloop.cli.main import main
        import contextlib, io
        with contextlib.redirect_stdout(io.StringIO()):
            assert main(["compare", "--print-config"]) == 0
    before = libc.mallinfo2().hblkhd
    t = torch.empty(64 << 20, dtype=torch.uint8)
    t.fill_(1)
    print(libc.mallinfo2().hblkhd - before)
""")


def _mapped_growth(mode: str) -> int:
    out = subprocess.run([sys.executable, "-c", PROBE, mode], capture_output=True, text=True,
                         check=True)
    return int(out.stdout.strip())


@pytest.mark.skipif(not HAS_MALLINFO2, reason="needs glibc >= 2.33 (mallinfo2)")
def test_keep_heap_serves_a_large_tensor_from_the_heap_not_a_fresh_mapping():
    assert _mapped_growth("system") >= 64 << 20          # glibc's default: mmap'd
    assert _mapped_growth("heap") == 0                   # keep_heap: from the heap


@pytest.mark.skipif(not HAS_MALLINFO2, reason="needs glibc >= 2.33 (mallinfo2)")
def test_keep_heap_reaches_glibc_where_find_library_finds_no_c_library():
    assert _mapped_growth("heap-unfound") == 0


def test_the_cli_keeps_the_heap_by_default_and_leaves_glibc_alone_with_system(monkeypatch):
    calls = []
    monkeypatch.setattr(cli_main, "keep_heap", lambda: calls.append(1) or True)
    assert cli_main.main(["compare", "--print-config"]) == 0
    assert calls == [1]
    assert cli_main.main(["--malloc", "system", "compare", "--print-config"]) == 0
    assert calls == [1]


def test_an_unknown_malloc_mode_is_a_usage_error(capsys):
    with pytest.raises(SystemExit) as e:
        cli_main.main(["--malloc", "jemalloc", "compare", "--print-config"])
    assert e.value.code == 2
    assert "--malloc" in capsys.readouterr().err


def test_the_help_says_what_malloc_does_without_glibc(capsys):
    with pytest.raises(SystemExit) as e:
        cli_main.main(["--help"])
    assert e.value.code == 0
    help_text = " ".join(capsys.readouterr().out.split())
    assert "Without glibc (macOS, Windows, musl) both leave the C allocator as it is" \
        in help_text


@pytest.mark.skipif(not HAS_MALLINFO2, reason="needs glibc >= 2.33 (mallinfo2)")
def test_a_program_that_ran_main_gets_glibcs_defaults_back():
    # main() keeps the heap while its command runs, then sets glibc's defaults back
    assert _mapped_growth("after-main") >= 64 << 20


def test_main_sets_the_callers_thread_count_back():
    import torch
    before = torch.get_num_threads()
    want = 1 if before != 1 else 2
    torch.set_num_threads(want)
    try:
        assert cli_main.main(["--threads", "3", "compare", "--print-config"]) == 0
        assert torch.get_num_threads() == want
    finally:
        torch.set_num_threads(before)

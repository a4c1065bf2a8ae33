"""An allocation that fails (sizes too large for the machine) ends a command as bad input
does: one line naming what could not be allocated and the sizes to make smaller, exit status
2, and the command's usual clean-up, the same as after a ValueError at that moment."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from metaloop.cli.main import main
from metaloop.tasks.sinusoid import Sinusoid

TINY = """
[family]
name = "sinusoid"
shots = 5
queries = 5
[model]
name = "mlp"
hidden = [8]
[method]
name = "maml"
[train]
iterations = 4
meta_batch = 2
checkpoint_every = 1
[eval]
tasks = 4
steps = [0, 1]
"""

CPU_MESSAGE = ("[enforce fail at alloc_cpu.cpp:127] err == 0. DefaultCPUAllocator: can't "
               "allocate memory: you tried to allocate 8000000000000 bytes. Error code 12 "
               "(Cannot allocate memory)")

FAILURES = {
    "cpu": (lambda: RuntimeError(CPU_MESSAGE),
            "out of memory: could not allocate 8000000000000 bytes (8.0 TB) on the CPU"),
    "cuda": (lambda: torch.OutOfMemoryError(
        "CUDA out of memory. Tried to allocate 7.28 TiB. GPU 0 has a total capacity of "
        "79.11 GiB of which 78.00 GiB is free.\nIncluding non-PyTorch memory, ..."),
             "out of memory: CUDA out of memory. Tried to allocate 7.28 TiB."),
    "python": (lambda: MemoryError(), "out of memory: Python could not allocate memory"),
    "numpy": (lambda: MemoryError("Unable to allocate 7.28 TiB for an array with shape "
                                  "(1000000000000,) and data type float64"),
              "out of memory: Unable to allocate 7.28 TiB for an array"),
}


def _fail_at(monkeypatch, call: int, error) -> None:
    """Sinusoid's task draws raise ``error()`` from their ``call``-th on."""
    real, calls = Sinusoid.sample_with_params, []

    def draw(self, *a, **k):
        calls.append(1)
        if len(calls) >= call:
            raise error()
        return real(self, *a, **k)
    monkeypatch.setattr(Sinusoid, "sample_with_params", draw)


def _tree(folder: Path) -> list[str]:
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*")) \
        if folder.exists() else ["(none)"]


def _run_failing(tmp_path, monkeypatch, capsys, argv, call, error) -> tuple[int, str, list]:
    """``main(argv)`` (``{out}`` in it: a fresh folder) with draws failing from ``call`` on:
    its status, its stderr and what it left in the folder above ``--out``."""
    base = tmp_path / f"o{len(list(tmp_path.glob('o*')))}"
    with monkeypatch.context() as mp:
        _fail_at(mp, call, error)
        rc = main([a.replace("{out}", str(base / "out")) for a in argv])
    return rc, capsys.readouterr().err, _tree(base)


@pytest.fixture
def config(tmp_path) -> Path:
    path = tmp_path / "c.toml"
    path.write_text(TINY)
    return path


@pytest.mark.parametrize("call", [1, 3])        # before any checkpoint, and after two
@pytest.mark.parametrize("kind", sorted(FAILURES))
def test_train_exits_2_naming_the_allocation_and_cleans_up_as_after_a_value_error(
        tmp_path, monkeypatch, capsys, config, kind, call):
    argv = ["train", "--config", str(config), "--out", "{out}", "--no-progress"]
    error, said = FAILURES[kind]
    rc, err, left = _run_failing(tmp_path, monkeypatch, capsys, argv, call, error)
    assert rc == 2, err
    line = err.strip()
    assert "\n" not in line and "Traceback" not in line, err
    assert line.startswith(f"metaloop train: error: {said}"), line
    assert line.endswith("give smaller ones: the config's sizes (train.meta_batch, "
                         "model.hidden, family.shots, family.queries, family.ways)"), line
    rc_v, err_v, left_v = _run_failing(tmp_path, monkeypatch, capsys, argv, call,
                                       lambda: ValueError("bad"))
    assert (rc_v, err_v.strip()) == (2, "metaloop train: error: bad")
    assert left == left_v                      # the same clean-up as a ValueError's
    assert (left == ["(none)"]) == (call == 1)  # nothing before the first checkpoint


@pytest.mark.parametrize(("kind", "call"), [("cpu", 1), ("python", 3)])
def test_compare_exits_2_and_cleans_up_as_after_a_value_error(tmp_path, monkeypatch, capsys,
                                                              config, kind, call):
    """Before the first checkpoint nothing is left; after it, the checkpoints (which a
    --resume continues) are kept, as after a ValueError."""
    argv = ["compare", "--config", str(config), "--methods", "maml", "--out", "{out}",
            "--no-progress"]
    error, said = FAILURES[kind]
    rc, err, left = _run_failing(tmp_path, monkeypatch, capsys, argv, call, error)
    assert rc == 2 and err.strip().startswith(f"metaloop compare: error: {said}"), err
    assert "--meta-batch, --ways, --shots, the config's sizes (train.meta_batch" in err
    rc_v, _, left_v = _run_failing(tmp_path, monkeypatch, capsys, argv, call,
                                   lambda: ValueError("bad"))
    assert rc_v == 2 and left == left_v
    assert (left == ["(none)"]) == (call == 1) and ("out/runs/maml/LATEST" in left) == (call > 1)


@pytest.mark.parametrize("kind", ["cpu", "cuda"])
def test_eval_exits_2_and_writes_no_out_folder(tmp_path, monkeypatch, capsys, config, kind):
    run = tmp_path / "run"
    assert main(["train", "--config", str(config), "--out", str(run), "--no-progress"]) == 0
    capsys.readouterr()
    argv = ["eval", "--checkpoint", str(run), "--out", "{out}", "--no-progress"]
    error, said = FAILURES[kind]
    rc, err, left = _run_failing(tmp_path, monkeypatch, capsys, argv, 1, error)
    assert rc == 2 and err.strip().startswith(f"metaloop eval: error: {said}"), err
    assert err.strip().endswith("give smaller ones: --ways, --shots"), err
    rc_v, _, left_v = _run_failing(tmp_path, monkeypatch, capsys, argv, 1,
                                   lambda: ValueError("bad"))
    assert rc_v == 2 and left == left_v == ["(none)"]


def test_other_runtime_errors_are_not_taken_for_memory(tmp_path, monkeypatch, config):
    """Only a failed allocation is bad input: any other error still propagates as it is."""
    _fail_at(monkeypatch, 1, lambda: RuntimeError("mat1 and mat2 shapes cannot be multiplied"))
    with pytest.raises(RuntimeError, match="shapes cannot be multiplied"):
        main(["train", "--config", str(config), "--out", str(tmp_path / "out"),
              "--no-progress"])
    assert not (tmp_path / "out").exists()


def test_a_model_too_large_to_allocate_exits_2(tmp_path, capsys, config):
    """The real failure: two 10**9-wide layers ask torch's CPU allocator for 4 EB (more than
    any address space: refused at once, nothing is allocated)."""
    config.write_text(TINY.replace("hidden = [8]", "hidden = [1000000000, 1000000000]"))
    out = tmp_path / "out"
    rc = main(["train", "--config", str(config), "--out", str(out), "--no-progress"])
    err = capsys.readouterr().err.strip()
    assert rc == 2 and err.startswith("metaloop train: error: out of memory: could not "
                                      "allocate 4000000000000000000 bytes (4.0 EB) on the "
                                      "CPU;"), err
    assert not out.exists()

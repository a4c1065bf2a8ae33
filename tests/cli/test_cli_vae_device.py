"""``metaloop vae --device``: ``cpu`` (the default) writes what a run without the option
writes, byte for byte; ``cuda`` where torch sees no CUDA device is a named error (exit 2,
nothing written); ``cuda`` runs one model or the protocol run on the GPU and refuses the
runs that stay on the CPU."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from metaloop.cli.main import main
from metaloop.generative import devices, experiment, protocol

PLAIN = ["--model", "vae", "--latent", "2", "--hidden", "16", "--epochs", "2", "--k", "3",
         "--test-examples", "20"]
PROTOCOL = ["--protocol", "iwae", "--latent", "2", "--hidden", "16", "--stages", "2",
            "--curve-k", "2", "--curve-examples", "5", "--k", "3"]
TIMES = ("cpu_s", "wall_s", "train_cpu_s", "train_wall_s", "eval_cpu_s", "eval_wall_s",
         "started", "state_sha256")       # (a checkpoint's hash of its state, times and all)


def _vae(root: Path, out: Path, *argv: str) -> int:
    return main(["--threads", "1", "vae", "--data", "fashion-mnist", "--root", str(root),
                 "--out", str(out), "--no-progress", *argv])


def _untimed(value):
    """``value`` without its clock readings (which differ between any two runs)."""
    if isinstance(value, dict):
        return {k: _untimed(v) for k, v in value.items() if k not in TIMES}
    if isinstance(value, list):
        return [_untimed(v) for v in value]
    return value


def _files(out: Path) -> dict[str, bytes]:
    return {str(p.relative_to(out)): p.read_bytes() for p in sorted(out.rglob("*"))
            if p.is_file() and not p.name.startswith(".")}


def _same_run(a: Path, b: Path) -> None:
    fa, fb = _files(a), _files(b)
    assert sorted(fa) == sorted(fb)
    for name in fa:
        if name.endswith(".json"):
            assert _untimed(json.loads(fa[name])) == _untimed(json.loads(fb[name])), name
        elif name.endswith(".jsonl"):
            rows = [[_untimed(json.loads(r)) for r in f[name].splitlines()] for f in (fa, fb)]
            assert rows[0] == rows[1], name
        else:                         # model and checkpoint tensors, pictures
            assert fa[name] == fb[name], name


@pytest.mark.parametrize("run", [PLAIN, PROTOCOL], ids=["plain", "protocol"])
def test_device_cpu_writes_what_the_default_writes(tiny_fashion_small, tmp_path, run):
    assert _vae(tiny_fashion_small, tmp_path / "default", *run) == 0
    assert _vae(tiny_fashion_small, tmp_path / "cpu", *run, "--device", "cpu") == 0
    _same_run(tmp_path / "default", tmp_path / "cpu")
    assert any(n.endswith(".safetensors") for n in _files(tmp_path / "cpu"))
    results = next((tmp_path / "cpu").glob("*.json"))
    assert "device" not in json.loads(results.read_text())      # a CPU run says nothing new


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a torch that sees no CUDA")
@pytest.mark.parametrize("run", [PLAIN, PROTOCOL], ids=["plain", "protocol"])
def test_device_cuda_without_cuda_exits_2_naming_it(tiny_fashion_small, tmp_path, capsys,
                                                    run):
    assert _vae(tiny_fashion_small, tmp_path / "out", *run, "--device", "cuda") == 2
    err = capsys.readouterr().err
    assert "--device cuda" in err and "torch sees no CUDA device" in err
    assert list(tmp_path.iterdir()) == []


def _fake_cuda(monkeypatch) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    monkeypatch.setattr(torch.cuda, "current_device", lambda: 0)


@pytest.mark.parametrize("argv, named", [
    (["--sweep-latent", "2"], "--sweep-latent"),
    (["--compare-inversion"], "--compare-inversion"),
    (["--inversion-transfer"], "--inversion-transfer"),
    (["--protocol", "iwae", "--evaluate", "--record", "rec.json"], "--record"),
])
def test_device_cuda_refuses_the_runs_that_stay_on_the_cpu(tiny_fashion_small, tmp_path,
                                                           monkeypatch, capsys, argv, named):
    _fake_cuda(monkeypatch)
    assert _vae(tiny_fashion_small, tmp_path / "out", *argv, "--device", "cuda") == 2
    err = capsys.readouterr().err
    assert f"{named} run(s) on the CPU only" in err and "drop --device cuda" in err
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("argv, module, name", [
    (PLAIN, experiment, "run"), (PROTOCOL, protocol, "run"),
    (["--protocol", "iwae", "--evaluate"], protocol, "evaluate_run"),
])
def test_device_cuda_runs_the_experiment_on_cuda(tiny_fashion_small, tmp_path, monkeypatch,
                                                 argv, module, name):
    """The recipe's call of the run sees the device (the GPU itself is not needed here: the
    run is replaced by one that records the device it is given)."""
    _fake_cuda(monkeypatch)
    seen = []

    def recorded(*args, **kwargs):
        seen.append(devices.device_or_cpu(kwargs.get("device")))
        raise KeyboardInterrupt("stop here")

    monkeypatch.setattr(module, name, recorded)
    assert _vae(tiny_fashion_small, tmp_path / "out", *argv, "--device", "cuda") == 130
    assert seen == [torch.device("cuda", 0)]

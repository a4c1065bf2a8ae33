"""``metaloop vae --device``: ``cpu`` (the default) writes what a run without the option
writes, byte for byte; ``cuda`` where torch sees no CUDA device is a named error (exit 2,
nothing written); ``cuda`` runs one model, the latent sweep, both inversion studies and the
protocol run on the GPU, and a GPU run's ``--record`` names the GPU, counts GPU seconds and
writes ``--device cuda`` into its command (checked on the stand-in device of
``tests/generative/fake_device.py`` where there is no GPU)."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
import torch

from metaloop.cli.main import main
from metaloop.generative import devices, experiment, inversion, protocol

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "generative"))
from fake_device import DEVICE, OnTheDevice, untimed  # noqa: E402

PLAIN = ["--model", "vae", "--latent", "2", "--hidden", "16", "--epochs", "2", "--k", "3",
         "--test-examples", "20"]
PROTOCOL = ["--protocol", "iwae", "--latent", "2", "--hidden", "16", "--stages", "2",
            "--curve-k", "2", "--curve-examples", "5", "--k", "3"]


def _vae(root: Path, out: Path, *argv: str) -> int:
    return main(["--threads", "1", "vae", "--data", "fashion-mnist", "--root", str(root),
                 "--out", str(out), "--no-progress", *argv])


def _files(out: Path) -> dict[str, bytes]:
    return {str(p.relative_to(out)): p.read_bytes() for p in sorted(out.rglob("*"))
            if p.is_file() and not p.name.startswith(".")}


def _same_run(a: Path, b: Path) -> None:
    fa, fb = _files(a), _files(b)
    assert sorted(fa) == sorted(fb)
    for name in fa:
        if name.endswith(".json"):
            assert untimed(json.loads(fa[name])) == untimed(json.loads(fb[name])), name
        elif name.endswith(".jsonl"):
            rows = [[untimed(json.loads(r)) for r in f[name].splitlines()] for f in (fa, fb)]
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


@pytest.mark.parametrize("argv, module, name", [
    (PLAIN, experiment, "run"), (PROTOCOL, protocol, "run"),
    (["--protocol", "iwae", "--evaluate"], protocol, "evaluate_run"),
    (["--sweep-latent", "2"], experiment, "sweep"),
    (["--compare-inversion"], inversion, "compare"),
    (["--inversion-transfer"], inversion, "transfer_study"),
    (["--sweep-latent", "2", "--record", "rec.json"], experiment, "sweep"),
    (["--protocol", "iwae", "--evaluate", "--record", "rec.json"], protocol, "evaluate_run"),
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


GPU_NAME = "NVIDIA H100 80GB HBM3"
GPU_RECORD = f"{GPU_NAME} (TF32 off)"
"""A record's ``device`` on that GPU with TF32 off, as ``stand_in_gpu`` sets it."""


@pytest.fixture()
def stand_in_gpu(monkeypatch, tf32_flags):
    """torch "sees" one CUDA device, named ``GPU_NAME``, with TF32 off; the generative runs
    put what they move to it on the stand-in device (run them inside ``OnTheDevice()``)."""
    _fake_cuda(monkeypatch)
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda d=None: GPU_NAME)
    tf32_flags(False, False)
    # torch.random.fork_rng (the classifiers' initialisation) keeps the CUDA generators too
    monkeypatch.setattr(torch.cuda, "get_rng_state", lambda device="cuda": torch.empty(0))
    monkeypatch.setattr(torch.cuda, "set_rng_state", lambda state, device="cuda": None)
    real = devices.device_or_cpu
    monkeypatch.setattr(devices, "device_or_cpu",
                        lambda d: DEVICE if d is not None and torch.device(d).type == "cuda"
                        else real(d))


STUDY_RECORDS = {
    "sweep": ["--sweep-latent", "2", "--latent", "50", "--hidden", "16", "--epochs", "1",
              "--classifier-epochs", "1", "--quality-samples", "10"],
    "compare": ["--compare-inversion", "--latent", "2", "--hidden", "16", "--epochs", "1",
                "--classifier-epochs", "1", "--quality-samples", "20", "--invert-steps", "3"],
    "transfer": ["--inversion-transfer", "--classifier-epochs", "1", "--quality-samples", "20",
                 "--invert-steps", "3", "--invert-lrs", "0.05"],
}


@pytest.mark.parametrize("study", list(STUDY_RECORDS))
def test_a_gpu_studys_record_names_the_gpu(study, tiny_fashion_small, tmp_path, stand_in_gpu):
    argv = STUDY_RECORDS[study]
    with OnTheDevice() as mode:
        assert _vae(tiny_fashion_small, tmp_path / "gpu", *argv, "--device", "cuda",
                    "--record", str(tmp_path / "gpu.json")) == 0
    assert mode.ops > 100
    assert _vae(tiny_fashion_small, tmp_path / "cpu", *argv,
                "--record", str(tmp_path / "cpu.json")) == 0
    gpu, cpu = (json.loads((tmp_path / f"{d}.json").read_text()) for d in ("gpu", "cpu"))
    assert gpu["device"] == GPU_RECORD and set(gpu["budget"]) == {"gpu_seconds"}
    assert cpu["device"].startswith("CPU") and set(cpu["budget"]) == {"cpu_seconds"}
    assert "--device cuda" in gpu["command"] and "--device" not in cpu["command"]
    assert gpu["command"].replace(" --device cuda", "").replace(
        str(tmp_path / "gpu"), str(tmp_path / "cpu")) == cpu["command"]
    assert gpu["mean"] == pytest.approx(cpu["mean"], rel=1e-6)
    assert json.loads((tmp_path / "gpu" / "results.json").read_text())["device"] == "meta"


def test_a_protocol_record_measured_on_a_gpu_names_it(tiny_fashion_small, tmp_path,
                                                       stand_in_gpu):
    """Trained on the CPU, measured on the GPU: the record names the GPU, its curve records
    (measured while training) the CPU."""
    out = tmp_path / "run"
    assert _vae(tiny_fashion_small, out, *PROTOCOL) == 0
    rec = tmp_path / "rec.json"
    with OnTheDevice() as mode:
        assert _vae(tiny_fashion_small, out, *PROTOCOL, "--k", "4", "--evaluate",  # measured
                    "--record", str(rec), "--device", "cuda") == 0                 # anew
    assert mode.ops > 10
    main_rec = json.loads(rec.read_text())
    assert main_rec["device"] == GPU_RECORD and "--device cuda" in main_rec["command"]
    curve = [json.loads(p.read_text()) for p in sorted(tmp_path.glob("rec_curve_*.json"))]
    assert curve and all(c["device"].startswith("CPU") and "--device" not in c["command"]
                         for c in curve)

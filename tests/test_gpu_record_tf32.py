"""A record measured on a GPU names the GPU and whether TF32 was allowed in its float32
matmuls (``torch.backends.cuda.matmul.allow_tf32``) and cuDNN convolutions
(``torch.backends.cudnn.allow_tf32``), which changes the numbers and the speed on Ampere and
later GPUs: ``metaloop eval``'s records and the generative runs' alike. No GPU is needed:
torch's view of CUDA is stood in for."""

from __future__ import annotations

import pytest
import torch

from metaloop import config as _config
from metaloop.evaluate import records
from metaloop.evaluate.stats import ci95
from metaloop.generative import devices

GPU = "NVIDIA H100 80GB HBM3"
SETTINGS = {(False, False): f"{GPU} (TF32 off)",
            (True, True): f"{GPU} (TF32 on)",
            (True, False): f"{GPU} (TF32 on for matmuls, off for convolutions)",
            (False, True): f"{GPU} (TF32 on for convolutions, off for matmuls)"}


@pytest.fixture()
def one_gpu(monkeypatch, tf32_flags):
    """torch "sees" one CUDA device, named ``GPU``; ``set(matmul, conv)`` sets the TF32
    flags (put back after the test). The names each asked for are in ``asked``."""
    asked = []
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    monkeypatch.setattr(torch.cuda, "current_device", lambda: 0)
    monkeypatch.setattr(torch.cuda, "get_device_name",
                        lambda device=None: asked.append(device) or GPU)

    def set_tf32(matmul: bool, conv: bool) -> list:
        tf32_flags(matmul, conv)
        return asked
    return set_tf32


@pytest.mark.parametrize(("matmul", "conv"), list(SETTINGS))
def test_gpu_device_says_whether_tf32_was_allowed_and_where(one_gpu, matmul, conv):
    asked = one_gpu(matmul, conv)
    assert torch.backends.cuda.matmul.allow_tf32 is matmul
    assert torch.backends.cudnn.allow_tf32 is conv
    assert records.gpu_device(0) == SETTINGS[matmul, conv]
    assert records.gpu_device() == SETTINGS[matmul, conv]
    assert asked == [0, None]


@pytest.mark.parametrize(("matmul", "conv"), list(SETTINGS))
def test_a_generative_runs_device_name_says_it_too(one_gpu, matmul, conv):
    asked = one_gpu(matmul, conv)
    assert devices.device_name("cuda") == SETTINGS[matmul, conv]
    assert devices.device_name("cuda:0") == SETTINGS[matmul, conv]
    assert asked == [torch.device("cuda", 0)] * 2
    assert devices.device_name("cpu") is None


@pytest.mark.parametrize(("matmul", "conv"), [(False, False), (True, True), (False, True)])
def test_an_eval_record_on_cuda_says_it_too(one_gpu, trained_run, matmul, conv):
    run = trained_run('[family]\nname = "sinusoid"\nshots = 5\n[method]\nname = "maml"\n'
                      '[train]\niterations = 2\nmeta_batch = 2\n[eval]\ntasks = 2\n'
                      'steps = [0, 1]\n')
    cfg = _config.load(run.parent / "c.toml")
    res = {"runs": [{"name": "run01", "error_rate": 0.25}, {"name": "run02",
                                                            "error_rate": 0.35}],
           "error_rate": 0.3, "ci95": ci95([0.25, 0.35]), "trials": 40,
           "runs_sha256": "0" * 64}
    one_gpu(matmul, conv)
    rec = records.lake_runs_record(cfg, res, checkpoint=run, command="metaloop eval",
                                   device="cuda")
    assert rec["device"] == SETTINGS[matmul, conv]
    assert records.validate_record(rec)["device"] == SETTINGS[matmul, conv]
    cpu = records.lake_runs_record(cfg, res, checkpoint=run, command="metaloop eval")
    assert cpu["device"].startswith("CPU") and "TF32" not in cpu["device"]

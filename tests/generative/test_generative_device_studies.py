"""The latent sweep, both inversion studies and one model's run on a device, checked without
a GPU: on the stand-in device of ``fake_device`` (CPU numbers, CUDA's rules on what may
meet what and which generator may draw where), each run gives the CPU's results and says
where it ran; and the records of a GPU run name the GPU and count GPU seconds.
``test_generative_cuda.py`` runs the same on a real GPU where there is one.
"""

from __future__ import annotations

import math
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch

from metaloop.evaluate import records
from metaloop.generative import devices
from metaloop.generative import experiment as E
from metaloop.generative import inversion as I
from metaloop.generative.fit import coin_generator, fit_generative
from metaloop.generative.quality import train_classifier
from metaloop.generative.vae import VAE

sys.path.insert(0, str(Path(__file__).resolve().parent))
from fake_device import DEVICE, OnDevice, OnTheDevice, untimed  # noqa: E402

# --- the stand-in device bites where CUDA does -------------------------------------------

def test_the_stand_in_device_refuses_what_cuda_refuses():
    with OnTheDevice() as mode:
        x = torch.ones(3, 4).to(DEVICE)
        assert isinstance(x, OnDevice) and x.device == DEVICE
        assert torch.equal((x * torch.tensor(2.0)).cpu(), torch.full((3, 4), 2.0))  # 0-dim
        with pytest.raises(RuntimeError, match="same device"):
            x + torch.ones(4)                                    # a host tensor [4]
        with pytest.raises(RuntimeError, match="generator on cpu"):
            torch.bernoulli(x / 2, generator=torch.Generator().manual_seed(0))
        with pytest.raises(RuntimeError, match="generator on cpu"):
            torch.randn(2, device=DEVICE, generator=torch.Generator())
        with pytest.raises(RuntimeError):
            x.numpy()
        assert float(x.sum()) == 12.0 and x[torch.tensor([0, 2])].cpu().shape == (2, 4)
    assert mode.ops >= 3


def test_a_model_trains_on_the_stand_in_device_as_on_the_cpu():
    """The stand-in's arithmetic is the CPU's: the same training, loss for loss."""
    images = (torch.rand(20, 1, 8, 8, generator=torch.Generator().manual_seed(0)) * 255
              ).to(torch.uint8)
    hist = {}
    for where in ("cpu", "device"):
        torch.manual_seed(0)
        model = VAE(2, image_shape=(1, 8, 8), hidden=(16,))
        with OnTheDevice():
            x = images
            if where == "device":
                model, x = model.to(DEVICE), images.to(DEVICE)
                assert isinstance(model.decoder.bias, OnDevice)
            hist[where] = [r["loss"] for r in fit_generative(model, x, epochs=2, batch_size=8,
                                                             progress=False)]
    assert hist["device"] == hist["cpu"]


def test_the_classifier_trains_where_its_images_are():
    images = (torch.rand(30, 1, 8, 8, generator=torch.Generator().manual_seed(1)) * 255
              ).to(torch.uint8)
    labels = torch.arange(30) % 3
    cpu = train_classifier(images, labels, 3, epochs=1, batch_size=8, progress=False)
    with OnTheDevice():
        on = train_classifier(images.to(DEVICE), labels.to(DEVICE), 3, epochs=1,
                              batch_size=8, progress=False)
        assert isinstance(on.head.weight, OnDevice)
        weights = {k: v.cpu() for k, v in on.state_dict().items()}
    for k, v in cpu.state_dict().items():
        assert torch.equal(weights[k], v), k
    with pytest.raises(ValueError, match="labels are on meta but the images on cpu"):
        train_classifier(images, labels.to("meta"), 3, progress=False)


# --- the studies on the device -----------------------------------------------------------


def _close(a, b, where: str = "") -> None:
    """Equal, floats to 1e-6 (the Frechet distances, differences of sums of eigenvalues,
    differ by about 1e-9 when the features pass through the dispatch mode)."""
    if isinstance(a, dict):
        assert sorted(a, key=str) == sorted(b, key=str), where
        for k in a:
            _close(a[k], b[k], f"{where}/{k}")
    elif isinstance(a, list | tuple):
        assert len(a) == len(b), where
        for i, (x, y) in enumerate(zip(a, b)):
            _close(x, y, f"{where}[{i}]")
    elif isinstance(a, float) and not isinstance(b, bool):
        assert a == pytest.approx(b, rel=1e-6, abs=1e-6) or (math.isnan(a) and math.isnan(b)), \
            where
    else:
        assert a == b, where


@pytest.fixture()
def on_the_device(monkeypatch):
    """``device="gpu"`` resolves to the stand-in device for the generative runs."""
    real = devices.device_or_cpu
    monkeypatch.setattr(devices, "device_or_cpu",
                        lambda d: DEVICE if d == "gpu" else real(d))


STUDIES = {
    "sweep": (lambda s, out, **kw: E.sweep(s, [2, 3], out, **kw), "sweep.png"),
    "compare": (lambda s, out, **kw: I.compare(s, I.InversionSettings(steps=4), out, **kw),
                I.FIGURE),
    "transfer": (lambda s, out, **kw: I.transfer_study(s, I.InversionSettings(steps=4),
                                                        [0.05, 0.1], out, **kw), None),
    "run": (lambda s, out, **kw: E.run(replace(s, model="cvae"), out, **kw), "classes.png"),
}


@pytest.mark.parametrize("study", list(STUDIES))
def test_a_study_on_the_device_is_the_cpus_study(study, tiny_fashion_small, tmp_path,
                                                 on_the_device):
    """Classifiers, models, inversions and scores on the device (nothing on the host meets
    them), the noise drawn by CPU generators: the CPU's results and pictures."""
    s = E.Settings(data="fashion-mnist", root=str(tiny_fashion_small), latent=2, hidden=(16,),
                   epochs=1, classifier_epochs=1, quality_samples=20, k=3, progress=False)
    fn, picture = STUDIES[study]
    cpu = fn(s, tmp_path / "cpu")
    with OnTheDevice() as mode:
        gpu = fn(s, tmp_path / "gpu", device="gpu")
    assert mode.ops > 200                          # the training and scoring ran there
    assert gpu.pop("device") == "meta" and "device" not in cpu
    _close(untimed(gpu), untimed(cpu))
    if picture:
        assert (tmp_path / "gpu" / picture).read_bytes() == \
            (tmp_path / "cpu" / picture).read_bytes()


# --- the coins of a CUDA fit --------------------------------------------------------------

def test_the_coins_are_the_runs_cpu_generators_on_the_cpu():
    g = torch.Generator().manual_seed(3)
    assert coin_generator(torch.device("cpu"), g, 3) is g
    assert coin_generator(DEVICE, g, 3) is g          # a device with no generators of its own


def test_the_coins_of_a_cuda_fit_are_tossed_by_a_generator_there(monkeypatch):
    made = []

    class Made:
        def __init__(self, device):
            made.append(torch.device(device))

        def manual_seed(self, seed):
            made.append(seed)
            return self

    monkeypatch.setattr(torch, "Generator", Made)
    coins = coin_generator(torch.device("cuda", 0), None, 7)
    assert isinstance(coins, Made) and made == [torch.device("cuda", 0), 7]


# --- the records of a GPU run -------------------------------------------------------------

def test_device_name_names_the_gpu(monkeypatch, tf32_flags):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    monkeypatch.setattr(torch.cuda, "current_device", lambda: 0)
    monkeypatch.setattr(torch.cuda, "get_device_name",
                        lambda d=None: f"NVIDIA H100 80GB HBM3 #{torch.device(d).index}")
    tf32_flags(False, False)
    assert devices.device_name("cuda") == "NVIDIA H100 80GB HBM3 #0 (TF32 off)"
    assert devices.device_name("cpu") is None


def _gpu_results(results: dict) -> dict:
    return {**results, "device": "cuda:0", "wall_s": 41.6}


@pytest.mark.parametrize("make", ["sweep", "compare", "transfer"])
def test_a_gpu_runs_record_names_the_gpu_and_counts_gpu_seconds(make, tiny_fashion_small,
                                                                tmp_path):
    s = E.Settings(data="fashion-mnist", root=str(tiny_fashion_small), latent=2, hidden=(16,),
                   epochs=1, classifier_epochs=1, quality_samples=20, k=0, progress=False)
    results = STUDIES[make][0](s, tmp_path / "out")
    build = {"sweep": E.sweep_record, "compare": I.record, "transfer": I.transfer_record}[make]
    cpu = records.validate_record(build(results, command="metaloop vae"))
    assert set(cpu["budget"]) == {"cpu_seconds"} and cpu["device"].startswith("CPU")
    gpu = records.validate_record(build(_gpu_results(results), command="metaloop vae",
                                        device="NVIDIA H100 80GB HBM3"))
    assert gpu["budget"] == {"gpu_seconds": 42} and gpu["device"] == "NVIDIA H100 80GB HBM3"
    assert np.isfinite(gpu["mean"])

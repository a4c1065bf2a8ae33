"""The generative code on a CUDA GPU (skipped where torch sees none): the same noise as on
the CPU from the same seeded CPU generators, a CUDA generator drawing on the GPU (the
training's binarisation coins among them), training and measuring one model, the latent
sweep, both inversion studies and the protocol run there, their records naming the GPU,
and a protocol checkpoint made on the GPU resuming on the CPU. A lent GPU runs them in
about two minutes:

    python -m pytest -q -p no:cacheprovider tests/generative/test_generative_cuda.py \
        tests/cli/test_cli_vae_device.py tests/generative/test_generative_device_studies.py
"""

from __future__ import annotations

import copy
import json
from dataclasses import replace

import pytest
import torch
from torch.overrides import TorchFunctionMode

from metaloop.cli.main import main
from metaloop.generative import experiment as E
from metaloop.generative import inversion as I
from metaloop.generative import protocol as P
from metaloop.generative.bounds import elbo, iwae_bound, reparameterize
from metaloop.generative.data import binarize_dynamic
from metaloop.generative.fit import fit_generative
from metaloop.generative.invert import invert_classifier
from metaloop.generative.quality import Classifier
from metaloop.generative.vae import VAE

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")

TINY = P.ProtocolSettings(latent=3, hidden=(16, 16), stages=2, curve_k=7, curve_examples=20,
                          curve_every=1, checkpoint_every=1)


def _g(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def test_a_cpu_generator_draws_the_same_noise_for_the_gpu():
    mu = torch.zeros(4, 3)                                       # [B, L]: z is eps itself
    assert torch.equal(reparameterize(mu.cuda(), mu.cuda(), n=2, generator=_g()).cpu(),
                       reparameterize(mu, mu, n=2, generator=_g()))
    images = (torch.rand(6, 1, 8, 8, generator=_g(1)) * 255).to(torch.uint8)
    on_gpu = binarize_dynamic(images.cuda(), _g(2))
    assert on_gpu.device.type == "cuda"
    assert torch.equal(on_gpu.cpu(), binarize_dynamic(images, _g(2)))


def test_a_cuda_generator_draws_on_the_gpu():
    """A caller's CUDA generator draws there, whatever device the result goes to."""
    g = torch.Generator(device="cuda").manual_seed(0)
    torch.manual_seed(0)
    model = VAE(3, image_shape=(1, 8, 8), hidden=(16,))
    assert model.sample(4, generator=g).device.type == "cpu"       # drawn on the GPU, moved
    coins = binarize_dynamic(torch.full((2, 1, 8, 8), 128, dtype=torch.uint8), g)
    assert coins.device.type == "cpu"
    model.cuda()
    assert model.sample(4, generator=g).device.type == "cuda"
    x = torch.bernoulli(torch.full((5, 1, 8, 8), 0.5, device="cuda"), generator=g)
    assert bool(torch.isfinite(elbo(model, x, generator=g)["elbo"]).all())


def test_the_bounds_on_the_gpu_are_the_cpus():
    torch.manual_seed(0)
    model = VAE(3, image_shape=(1, 8, 8), hidden=(16,)).eval()
    x = torch.bernoulli(torch.full((10, 1, 8, 8), 0.3), generator=_g(3))
    gpu = copy.deepcopy(model).cuda()
    for fn in (lambda m, x: elbo(m, x, generator=_g())["elbo"],
               lambda m, x: iwae_bound(m, x, 50, chunk=20, generator=_g())):
        torch.testing.assert_close(fn(gpu, x.cuda()).cpu(), fn(model, x), rtol=1e-4,
                                   atol=1e-3)


def test_fit_generative_trains_on_the_gpu_as_on_the_cpu(images):
    """With fixed pixels (static binarisation) the GPU's training is the CPU's: the same
    batches and noise, from the one CPU generator."""
    torch.manual_seed(0)
    model = VAE(3, image_shape=(1, 8, 8), hidden=(16,))
    gpu = copy.deepcopy(model).cuda()
    kw = dict(epochs=2, batch_size=16, binarize="static", progress=False)
    cpu_hist = fit_generative(model, images, **kw)
    gpu_hist = fit_generative(gpu, images.cuda(), **kw)
    for a, b in zip(cpu_hist, gpu_hist):                        # the same batches and noise
        assert a["loss"] == pytest.approx(b["loss"], rel=1e-3)


class Coins(TorchFunctionMode):
    """Record the device of every Bernoulli draw's generator and input."""

    def __init__(self) -> None:
        super().__init__()
        self.draws: list[tuple[str, str]] = []

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if getattr(func, "__name__", "") == "bernoulli" and kwargs.get("generator") is not None:
            self.draws.append((kwargs["generator"].device.type, args[0].device.type))
        return func(*args, **kwargs)


def test_a_gpu_fit_tosses_its_coins_on_the_gpu(images):
    """Dynamic binarisation on the GPU: the coins of every batch are tossed there, by a CUDA
    generator seeded with the run's seed (no copy to the host and back); the first batch's
    are those of ``binarize_dynamic`` with that generator."""
    torch.manual_seed(0)
    model = VAE(3, image_shape=(1, 8, 8), hidden=(16,)).cuda()
    seen = []
    loss = model.loss

    def recording(x, y=None, generator=None):
        seen.append(x.detach().clone())
        return loss(x, y, generator)

    model.loss = recording
    with Coins() as coins:
        fit_generative(model, images.cuda(), epochs=1, batch_size=16, seed=5, progress=False)
    assert coins.draws == [("cuda", "cuda")] * 4                  # 64 images, batches of 16
    first = torch.randperm(len(images), generator=_g(5))[:16]
    want = binarize_dynamic(images.cuda()[first.cuda()],
                            torch.Generator(device="cuda").manual_seed(5))
    assert torch.equal(seen[0], want)


def test_invert_classifier_runs_on_the_gpu():
    torch.manual_seed(0)
    clf = Classifier(3, 1, (8, 8)).cuda().eval()
    out = invert_classifier(clf, torch.tensor([0, 1, 2]), steps=3, jitter=1,
                            generator=_g(), image_shape=(1, 8, 8))
    assert out.device.type == "cuda" and out.shape == (3, 1, 8, 8)


def test_one_model_trains_and_is_measured_on_the_gpu(tiny_fashion_small, tmp_path):
    """With fixed pixels (the GPU tosses other dynamic coins) the GPU's numbers are the
    CPU's."""
    s = E.Settings(model="vae", data="fashion-mnist", root=str(tiny_fashion_small), latent=2,
                   hidden=(16,), epochs=2, k=5, test_examples=20, binarize="static",
                   progress=False)
    cpu = E.run(s, tmp_path / "cpu")
    gpu = E.run(s, tmp_path / "gpu", device="cuda")
    assert gpu["device"] == "cuda:0" and "device" not in cpu
    for name in ("elbo", "nll"):
        assert gpu["test"][name] == pytest.approx(cpu["test"][name], rel=1e-3)
    assert sorted(p.name for p in (tmp_path / "gpu").iterdir()) == \
        sorted(p.name for p in (tmp_path / "cpu").iterdir())


def test_a_protocol_run_on_the_gpu_resumes_on_the_cpu(images, x_test, tmp_path):
    out = tmp_path / "run"
    first = P.train_protocol(images, out, TINY, until_pass=2, device="cuda",
                             curve_fn=P.curve_evaluator(x_test, TINY))
    assert first["passes"] == 2 and first["sessions"][0]["device"] == "cuda:0"
    done = P.train_protocol(images, out, TINY, resume=True,
                            curve_fn=P.curve_evaluator(x_test, TINY))
    assert done["done"] and "device" not in done["sessions"][1]
    result = P.evaluate_run(out, k=5, x_test=x_test, s=TINY, device="cuda")
    assert result["device"] == "cuda:0" and result["test"]["nll"] > 0
    assert (out / "samples.png").exists()


def test_the_cli_trains_on_the_gpu(tiny_fashion_small, tmp_path):
    out = tmp_path / "out"
    assert main(["--threads", "1", "vae", "--data", "fashion-mnist", "--root",
                 str(tiny_fashion_small), "--out", str(out), "--no-progress", "--latent", "2",
                 "--hidden", "16", "--epochs", "1", "--k", "3", "--device", "cuda"]) == 0
    assert json.loads((out / "results.json").read_text())["device"] == "cuda:0"


SMALL = dict(data="fashion-mnist", latent=2, hidden=(16,), epochs=1, classifier_epochs=1,
             quality_samples=20, k=3, binarize="static", progress=False)


@pytest.mark.parametrize("study", ["sweep", "compare", "transfer"])
def test_the_studies_run_on_the_gpu(study, tiny_fashion_small, tmp_path):
    """Classifiers, models, inversions and scores on the GPU: the CPU's results, up to the
    GPU's arithmetic (its convolutions may use TF32)."""
    s = E.Settings(root=str(tiny_fashion_small), **SMALL)
    inv = I.InversionSettings(steps=4)
    fn = {"sweep": lambda out, **kw: E.sweep(s, [2], out, **kw),
          "compare": lambda out, **kw: I.compare(s, inv, out, **kw),
          "transfer": lambda out, **kw: I.transfer_study(s, inv, [0.05], out, **kw)}[study]
    cpu, gpu = fn(tmp_path / "cpu"), fn(tmp_path / "gpu", device="cuda")
    assert gpu.pop("device") == "cuda:0" and "device" not in cpu
    assert sorted(gpu) == sorted(cpu)
    acc_cpu, acc_gpu = cpu["classifier_test_accuracy"], gpu["classifier_test_accuracy"]
    if isinstance(acc_cpu, dict):
        for k in acc_cpu:
            assert acc_gpu[k] == pytest.approx(acc_cpu[k], abs=0.1)
    else:
        assert acc_gpu == pytest.approx(acc_cpu, abs=0.1)
    assert sorted(p.name for p in (tmp_path / "gpu").iterdir()) == \
        sorted(p.name for p in (tmp_path / "cpu").iterdir())


@pytest.mark.parametrize("argv", [
    ["--sweep-latent", "2", "--latent", "50", "--hidden", "16", "--epochs", "1",
     "--classifier-epochs", "1", "--quality-samples", "10"],
    ["--compare-inversion", "--latent", "2", "--hidden", "16", "--epochs", "1",
     "--classifier-epochs", "1", "--quality-samples", "20", "--invert-steps", "3"],
    ["--inversion-transfer", "--classifier-epochs", "1", "--quality-samples", "20",
     "--invert-steps", "3", "--invert-lrs", "0.05"],
], ids=["sweep", "compare", "transfer"])
def test_a_gpu_record_names_the_gpu(argv, tiny_fashion_small, tmp_path):
    rec = tmp_path / "rec.json"
    assert main(["--threads", "1", "vae", "--data", "fashion-mnist", "--root",
                 str(tiny_fashion_small), "--out", str(tmp_path / "out"), "--no-progress",
                 *argv, "--device", "cuda", "--record", str(rec)]) == 0
    r = json.loads(rec.read_text())
    tf32 = {(False, False): "TF32 off", (True, True): "TF32 on",
            (False, True): "TF32 on for convolutions, off for matmuls",
            (True, False): "TF32 on for matmuls, off for convolutions"}[
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32]
    assert r["device"] == f"{torch.cuda.get_device_name(0)} ({tf32})"
    assert set(r["budget"]) == {"gpu_seconds"} and "--device cuda" in r["command"]


def test_a_cvae_run_on_the_gpu_draws_its_classes(tiny_fashion_small, tmp_path):
    s = E.Settings(model="cvae", root=str(tiny_fashion_small), test_examples=20,
                   **{k: v for k, v in SMALL.items() if k != "binarize"})
    out = E.run(replace(s, classes=[0, 1]), tmp_path / "out", device="cuda")
    assert out["device"] == "cuda:0" and "classes.png" in out["pictures"]

"""What metaloop leaves in the caller's process: no gradient in the parameters after
``ml.train`` / ``fit_generative`` (a caller's own ``backward()`` would add to it), no
``HF_HUB_OFFLINE`` in the environment after a LoRA or text call (it stayed set for the rest of
the process and its children), torch's global generator untouched by building
``ml.tasks.Shifted``. (``metaloop.cli.main.main`` setting back threads and the allocator:
``tests/train/test_malloc.py``.)"""

import os

import torch

import metaloop as ml


def test_train_leaves_no_gradient_in_the_parameters(tmp_path):
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(1, 8), torch.nn.ReLU(), torch.nn.Linear(8, 1))
    learner = ml.meta.MAML(model, inner_lr=0.01, loss="mse")
    ml.train(learner, ml.tasks.Sinusoid(shots=5, queries=5), iterations=3, meta_batch=2,
             progress=False)
    assert all(p.grad is None for p in model.parameters())
    x = torch.randn(4, 1)
    model(x).pow(2).mean().backward()            # a caller's own gradient: only its own
    want = torch.autograd.grad(model(x).pow(2).mean(), list(model.parameters()))
    for p, g in zip(model.parameters(), want):
        torch.testing.assert_close(p.grad, g)


def test_fit_generative_leaves_no_gradient_in_the_parameters():
    from metaloop.generative import VAE, fit_generative
    torch.manual_seed(0)
    model = VAE(latent=2, image_shape=(1, 4, 4))
    images = (torch.rand(16, 1, 4, 4) * 255).to(torch.uint8)
    fit_generative(model, images, epochs=1, batch_size=8, progress=False)
    assert all(p.grad is None for p in model.parameters())


def test_a_lora_call_leaves_the_environment_as_it_was(monkeypatch):
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    model = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.ReLU(), torch.nn.Linear(8, 2))
    ml.adapt.add_lora(model, r=2, target_modules=["0"])
    assert "HF_HUB_OFFLINE" not in os.environ


def test_building_shifted_draws_nothing_from_torchs_global_generator(tmp_path):
    import numpy as np
    rng = np.random.default_rng(0)
    np.savez(tmp_path / "d.npz", x=rng.random((12, 1, 8, 8)).astype("float32"),
             y=np.arange(12) % 3)
    fam = ml.tasks.Episodes.from_tensors(tmp_path / "d.npz", ways=2, shots=1, queries=1)
    torch.manual_seed(5)
    before = torch.get_rng_state()
    ml.tasks.Shifted(fam, 2, max_rotate=10.0, max_stroke=0.5, elastic=1.0)
    assert torch.equal(torch.get_rng_state(), before)

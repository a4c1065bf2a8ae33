"""Random draws on the right device, and the device the generative runs train on.

A CPU ``torch.Generator`` cannot draw a CUDA tensor (torch raises "Expected a 'cuda' device
type for generator but found 'cpu'"), nor a CUDA one a CPU tensor. So every draw in the
generative code is made on its generator's device (``nets.draw_device``) and moved to where
it is used. Without a GPU this is checked two ways: the model and data put on the ``meta``
device while a function mode demands that each draw's output be on its generator's device
(as CUDA does), and a reading of the code that finds every torch draw given a generator.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest
import torch
from torch.overrides import TorchFunctionMode

import metaloop.generative as generative
from metaloop.generative import devices
from metaloop.generative.ae import AE
from metaloop.generative.bounds import elbo, log_weights, reparameterize
from metaloop.generative.data import binarize_dynamic, to_unit
from metaloop.generative.nets import draw_device
from metaloop.generative.vae import VAE

SOURCES = sorted(Path(generative.__file__).parent.glob("*.py"))


class DrawsOnTheGeneratorsDevice(TorchFunctionMode):
    """Fail any torch call given a generator whose output is on another device type than
    the generator, as CUDA kernels do; count the draws checked."""

    def __init__(self) -> None:
        super().__init__()
        self.draws = 0

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        out = func(*args, **kwargs)
        g = kwargs.get("generator")
        if isinstance(g, torch.Generator) and isinstance(out, torch.Tensor):
            self.draws += 1
            assert out.device.type == g.device.type, (
                f"{getattr(func, '__name__', func)} drew on {out.device} with a generator "
                f"on {g.device}")
        return out


def _meta_vae() -> VAE:
    torch.manual_seed(0)
    return VAE(2, image_shape=(1, 8, 8), hidden=(16,)).to("meta")


@pytest.mark.parametrize("what", ["reparameterize", "elbo", "log_weights", "vae_sample",
                                  "ae_sample"])
def test_a_cpu_generator_draws_for_a_model_on_another_device(what):
    """Model and data on ``meta`` stand in for a GPU: a draw made where the tensor lives
    (``torch.randn(..., device=mu.device, generator=cpu_generator)``) fails the check."""
    g = torch.Generator().manual_seed(0)
    model = _meta_vae()
    x = torch.empty(5, 1, 8, 8, device="meta")                  # [B, C, H, W]
    mu = torch.empty(5, 2, device="meta")                       # [B, L]
    calls = {
        "reparameterize": lambda: reparameterize(mu, mu, n=3, generator=g),
        "elbo": lambda: elbo(model, x, generator=g)["elbo"],
        "log_weights": lambda: log_weights(model, x, 3, generator=g),
        "vae_sample": lambda: model.sample(4, generator=g),
        "ae_sample": lambda: AE(2, image_shape=(1, 8, 8), hidden=(16,)).to("meta").sample(
            4, generator=g),
    }
    with DrawsOnTheGeneratorsDevice() as check:
        out = calls[what]()
    assert check.draws >= 1
    assert out.device.type == "meta"                            # moved to the model's device


def test_the_draws_on_the_cpu_are_the_draws_made_in_place():
    """On the CPU nothing moves: the same numbers as a draw on the tensor's own device (the
    committed CPU records stay reproducible)."""
    mu, logvar = torch.zeros(4, 3), torch.zeros(4, 3)
    z = reparameterize(mu, logvar, n=2, generator=torch.Generator().manual_seed(5))
    ref = torch.randn(2, 4, 3, generator=torch.Generator().manual_seed(5))
    assert torch.equal(z, ref)
    images = (torch.rand(6, 1, 4, 4, generator=torch.Generator().manual_seed(1)) * 255
              ).to(torch.uint8)
    coins = binarize_dynamic(images, torch.Generator().manual_seed(2))
    assert torch.equal(coins, torch.bernoulli(to_unit(images),
                                              generator=torch.Generator().manual_seed(2)))


def test_draw_device_is_the_generators_or_the_fallback():
    assert draw_device(torch.Generator(), "meta") == torch.device("cpu")
    assert draw_device(None, "meta") == torch.device("meta")


# --- every torch draw in the generative code, read from the source ---------------------

CREATORS = {"randn", "rand", "randint", "randperm", "normal", "randn_like", "rand_like",
            "randint_like"}
"""torch functions that make a new random tensor: on the CPU unless given ``device=``."""
FROM_INPUT = {"bernoulli", "multinomial", "poisson", "bernoulli_", "normal_", "uniform_",
              "random_", "exponential_", "geometric_", "log_normal_", "cauchy_"}
"""draws made on their input's device."""


def _is_draw_device_of(node: ast.AST, generator: ast.AST) -> bool:
    """``draw_device(<generator>, ...)``."""
    return (isinstance(node, ast.Call) and isinstance(node.func, ast.Name)
            and node.func.id == "draw_device" and bool(node.args)
            and ast.dump(node.args[0]) == ast.dump(generator))


def _local_cpu_generators(scope: ast.AST) -> set[str]:
    """Names bound in ``scope`` to a new CPU generator (``torch.Generator()...``) and not
    also its parameters (a caller's generator may be on any device)."""
    made, params = set(), set()
    for node in ast.walk(scope):
        if isinstance(node, ast.Assign) and ast.unparse(node.value).startswith(
                "torch.Generator()"):
            made |= {t.id for t in node.targets if isinstance(t, ast.Name)}
        if isinstance(node, ast.arguments):
            params |= {a.arg for a in node.args + node.kwonlyargs + node.posonlyargs}
    return made - params


def _draw_problems(tree: ast.Module, name: str) -> tuple[int, list[str]]:
    """The torch draws given a generator in ``tree``, and those that are not made on their
    generator's device."""
    draws, problems = 0, []
    for scope in tree.body:
        cpu_names = _local_cpu_generators(scope)
        for node in ast.walk(scope):
            if not isinstance(node, ast.Call) or not isinstance(node.func, ast.Attribute):
                continue
            gen = next((k.value for k in node.keywords if k.arg == "generator"), None)
            fn = node.func.attr
            if gen is None or fn not in CREATORS | FROM_INPUT:
                continue
            draws += 1
            where = f"{name}:{node.lineno} {ast.unparse(node)[:80]}"
            if fn in CREATORS:
                device = next((k.value for k in node.keywords if k.arg == "device"), None)
                cpu_gen = (ast.unparse(gen).startswith("torch.Generator()")
                           or (isinstance(gen, ast.Name) and gen.id in cpu_names))
                if device is None and not cpu_gen:
                    problems.append(f"{where}: drawn on the CPU with a generator that may "
                                    f"be on another device; pass device=draw_device(...)")
                elif device is not None and not _is_draw_device_of(device, gen):
                    problems.append(f"{where}: device= is not draw_device(<its generator>)")
            else:
                target = node.func.value if fn.endswith("_") else (
                    node.args[0] if node.args else None)
                moved = (isinstance(target, ast.Call) and isinstance(target.func, ast.Attribute)
                         and target.func.attr == "to" and bool(target.args)
                         and _is_draw_device_of(target.args[0], gen))
                if not moved:
                    problems.append(f"{where}: draws on its input's device; move the input "
                                    f"with .to(draw_device(<generator>, ...)) first")
    return draws, problems


def test_every_draw_given_a_generator_is_made_on_the_generators_device():
    draws, problems = 0, []
    for path in SOURCES:
        n, bad = _draw_problems(ast.parse(path.read_text()), path.name)
        draws, problems = draws + n, problems + bad
    assert draws >= 15, f"found only {draws} draws: is the reading still finding them?"
    assert not problems, "\n".join(problems)


@pytest.mark.parametrize("code, problem", [
    ("def f(mu, generator):\n    return torch.randn(3, generator=generator, "
     "device=mu.device)\n", "is not draw_device"),
    ("def f(generator):\n    return torch.randn(3, generator=generator)\n",
     "may be on another device"),
    ("def f(x, generator):\n    return torch.bernoulli(x, generator=generator)\n",
     "draws on its input's device"),
])
def test_the_reading_finds_the_draws_that_fail_on_cuda(code, problem):
    """The checks the reading makes, on the forms that failed on CUDA."""
    draws, problems = _draw_problems(ast.parse(code), "x.py")
    assert draws == 1 and len(problems) == 1 and problem in problems[0]


def test_the_reading_accepts_local_cpu_generators_and_draw_device():
    code = ("def f(n, x, generator):\n"
            "    g = torch.Generator().manual_seed(0)\n"
            "    a = torch.randperm(n, generator=g)\n"
            "    b = torch.randn(n, generator=generator, device=draw_device(generator, x.device))\n"
            "    return torch.bernoulli(x.to(draw_device(generator, x.device)), "
            "generator=generator)\n")
    assert _draw_problems(ast.parse(code), "x.py") == (3, [])


# --- the device of the runs ------------------------------------------------------------

def test_no_device_is_the_cpu():
    assert devices.device_or_cpu(None) == torch.device("cpu")
    assert devices.device_or_cpu("cpu") == torch.device("cpu")


@pytest.mark.parametrize("device, named", [("mps", "cpu or cuda"), ("gpu", "not a torch device"),
                                           (3.5, "not a torch device")])
def test_a_device_the_runs_do_not_take_is_a_named_error(device, named):
    with pytest.raises(ValueError, match=named):
        devices.resolve_device(device)


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a torch that sees no CUDA")
def test_cuda_without_cuda_is_a_named_error():
    with pytest.raises(ValueError, match="torch sees no CUDA device"):
        devices.device_or_cpu("cuda")


def test_cuda_resolves_to_the_current_cuda_device(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    monkeypatch.setattr(torch.cuda, "current_device", lambda: 1)
    assert devices.device_or_cpu("cuda") == torch.device("cuda", 1)
    assert devices.device_or_cpu("cuda:0") == torch.device("cuda", 0)
    with pytest.raises(ValueError, match="sees 2 CUDA device"):
        devices.resolve_device("cuda:2")


def test_a_protocol_record_says_which_passes_trained_on_a_gpu(images, x_test, tmp_path):
    """The record's device and CPU-second budget are the CPU's: a checkpoint with passes
    trained on a GPU says so in the note (the sessions name the device)."""
    from metaloop.evaluate import records
    from metaloop.generative import protocol as P

    s = P.ProtocolSettings(latent=2, hidden=(8,), stages=1, curve_k=2, curve_examples=5)
    P.train_protocol(images, tmp_path / "run", s)
    result = P.evaluate_run(tmp_path / "run", k=3, x_test=x_test, s=s)
    assert "device" not in result and "device" not in result["sessions"][0]
    assert "trained on" not in P.record(result, command="metaloop vae", device="CPU")["note"]
    gpu = {**result, "sessions": [{**result["sessions"][0], "device": "cuda:0"}]}
    rec = records.validate_record(P.record(gpu, command="metaloop vae", device="CPU"))
    assert "some passes trained on cuda:0 (its sessions say which)" in rec["note"]

"""``metaloop._random``: the one check of a ``generator`` argument and the one context that
seeds torch's global generators for a block, which the task families, ``metaloop.adapt``,
``metaloop.generative`` and ``evaluate`` share."""

import numpy as np
import pytest
import torch
from torch import nn

import metaloop as ml
from metaloop._random import check_generator, seeded_rng
from metaloop.adapt import finetune
from metaloop.generative.nets import check_generator as generative_check_generator
from metaloop.models import MLP
from metaloop.tasks.omniglot import check_generator as tasks_check_generator

HINT = r"for a seeded stream pass torch.Generator\(\).manual_seed"


@pytest.mark.parametrize("bad, seed", [(3, "3"), (np.int64(4), "4"), (True, "seed"),
                                       ("g", "seed"), (torch.tensor(5), "seed"),
                                       (2.0, "seed")])
def test_check_generator_names_the_owner_and_how_to_seed(bad, seed):
    with pytest.raises(TypeError, match=rf"^Thing.sample generator must be a torch.Generator "
                                        rf"or None, got {type(bad).__name__} .*; {HINT}"
                                        rf"\({seed}\)$"):
        check_generator("Thing.sample", bad)
    with pytest.raises(ValueError, match=rf"^thing: generator must be .*{HINT}\({seed}\)$"):
        check_generator("thing:", bad, kind=ValueError)
    check_generator("Thing.sample", None)
    check_generator("Thing.sample", torch.Generator().manual_seed(0), kind=ValueError)


def test_the_families_adapt_and_generative_share_the_check():
    """Each caller keeps its exception type and its lead (TypeError for the families and
    ``metaloop.adapt``, ValueError for ``metaloop.generative``), with one wording and one
    seed hint: a NumPy integer given as a generator is shown as the seed to pass."""
    assert tasks_check_generator is check_generator
    with pytest.raises(TypeError, match=rf"^Episodes.sample generator .*{HINT}\(7\)$"):
        tasks_check_generator("Episodes.sample", np.int64(7))
    with pytest.raises(ValueError, match=rf"^sample: generator .*{HINT}\(7\)$"):
        generative_check_generator("sample", np.int64(7))
    torch.manual_seed(0)
    x, y = torch.randn(6, 4), torch.arange(3).repeat(2)
    with pytest.raises(TypeError, match=rf"^finetune: generator .*{HINT}\(7\)$"):
        finetune(MLP(4, (8,), 3), x, y, steps=1, head_init="random", generator=np.int64(7))
    fam = ml.tasks.Episodes(torch.randn(40, 3), torch.arange(4).repeat_interleave(10),
                            ways=2, shots=2, queries=2)
    with pytest.raises(TypeError, match=rf"^Episodes.sample generator .*{HINT}\(7\)$"):
        fam.sample(2, np.int64(7))


def test_seeded_rng_seeds_the_block_and_restores_the_caller_state():
    torch.manual_seed(123)
    before = torch.random.get_rng_state()
    with seeded_rng(5, [torch.device("cpu"), "cpu", None]):
        a = torch.rand(4)
    assert torch.equal(torch.random.get_rng_state(), before)
    with seeded_rng(5):
        b = torch.rand(4)
    assert torch.equal(a, b) and torch.equal(a, torch.rand(4, generator=torch.Generator()
                                                           .manual_seed(5)))
    with seeded_rng(6):
        assert not torch.equal(torch.rand(4), a)


def test_seeded_rng_on_the_cpu_leaves_cuda_alone(monkeypatch):
    def no_cuda(*args, **kwargs):
        raise AssertionError("CUDA touched")

    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    monkeypatch.setattr(torch.cuda, "get_rng_state", no_cuda)
    monkeypatch.setattr(torch.cuda, "set_rng_state", no_cuda)
    monkeypatch.setattr(torch.cuda, "manual_seed_all", no_cuda)
    model = nn.Linear(2, 2)
    with seeded_rng(0, [p.device for p in model.parameters()]):
        torch.rand(2)


def _spy(monkeypatch, module):
    """Record each ``seeded_rng(seed, devices)`` that ``module`` enters (the real one runs)."""
    calls = []

    def spy(seed, devices=()):
        devices = list(devices)
        calls.append((seed, devices))
        return seeded_rng(seed, devices)

    monkeypatch.setattr(module, "seeded_rng", spy)
    return calls


def test_evaluate_scores_inside_the_shared_seeded_context(monkeypatch):
    import metaloop.evaluate.heldout as heldout

    calls = _spy(monkeypatch, heldout)
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(1, 8), nn.Dropout(0.5), nn.Linear(8, 1))
    learner = ml.meta.MAML(net, 0.05, 1, batching="loop")
    a = ml.evaluate(learner, ml.tasks.Sinusoid(5, 5), tasks=2, steps=(0, 1), seed=5)
    assert [seed for seed, _ in calls] == [5]
    assert {torch.device(d) for d in calls[0][1] if d is not None} == {torch.device("cpu")}
    torch.manual_seed(99)
    assert ml.evaluate(learner, ml.tasks.Sinusoid(5, 5), tasks=2, steps=(0, 1), seed=5) == a


def test_lora_dropout_masks_come_from_the_shared_seeded_context(monkeypatch):
    pytest.importorskip("peft")
    import metaloop.adapt._fit as fit
    from metaloop.adapt import add_lora, lora_finetune

    calls = _spy(monkeypatch, fit)
    torch.manual_seed(0)
    lora = add_lora(MLP(4, (8,), 3), r=2, dropout=0.5)
    x, y = torch.randn(6, 4), torch.arange(3).repeat(2)
    before = torch.random.get_rng_state()
    a = lora_finetune(lora, x, y, steps=2, generator=torch.Generator().manual_seed(1))
    assert torch.equal(torch.random.get_rng_state(), before)      # the caller's RNG kept
    assert len(calls) == 1 and calls[0][1] and all(d.type == "cpu" for d in calls[0][1])
    b = lora_finetune(lora, x, y, steps=2, generator=torch.Generator().manual_seed(1))
    assert all(torch.equal(a.params[n], b.params[n]) for n in a.params)

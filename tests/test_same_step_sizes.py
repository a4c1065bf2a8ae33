"""docs/concepts.md: learned step sizes give the network the plain MAML meta-gradient for the
same step sizes, and a gradient of their own (so a run that learns them trains elsewhere)."""

import torch

import metaloop as ml


def test_learned_step_sizes_give_the_network_plain_mamls_gradient_and_one_of_their_own():
    torch.manual_seed(0)
    model = ml.models.MLP(1, (16,), 1)
    batch = ml.tasks.Sinusoid(5, 5).sample(4, torch.Generator().manual_seed(0))
    plain = ml.meta.MAML(model, 0.01, 2, batching="loop").meta_gradient(batch)
    learned = ml.meta.MAML(model, 0.01, 2, batching="loop", learn_lr=True).meta_gradient(batch)
    assert set(learned) == {"inner_lr"} | {f"net.{k}" for k in plain}
    for k, g in plain.items():
        assert torch.equal(learned[f"net.{k}"], g), k
    assert float(learned["inner_lr"].abs().max()) > 0

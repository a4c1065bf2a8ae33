"""The forgetting curve of a BatchNorm body (Conv4) scores every experience with the
statistics of the training data being learned, as the accuracy matrix does: its last point
is the matrix's last row, not the per-test-set scores that hide the forgetting."""

from __future__ import annotations

import torch

import metaloop.continual as cl
from metaloop.continual.scenarios import Experience
from metaloop.models import Conv4


def _experiences():
    """Two 2-way image experiences told apart by their top half, whose inputs differ by a
    shift of 3 (A around -1, B around 2)."""
    g = torch.Generator().manual_seed(0)

    def exp(name, shift):
        def draw(m):
            y = torch.arange(m) % 2
            x = torch.randn(m, 1, 16, 16, generator=g) * 0.5 + shift
            x[:, :, :8] += (2.0 * y - 1.0)[:, None, None, None]
            return x, y
        return Experience(name, name, 2, (0, 1), draw(64), draw(16), draw(33))

    return [exp("A", -1.0), exp("B", 2.0)]


def test_the_curve_of_a_batchnorm_body_uses_the_learned_datas_statistics():
    exps = _experiences()
    torch.manual_seed(0)
    model = Conv4(1, 8, 2, image_size=16)
    p = cl.init_params(model, exps, torch.Generator().manual_seed(0))
    r = cl.run_sequence(model, p, exps, "naive", steps=30, batch_size=16, eval_every=10,
                        generator=torch.Generator().manual_seed(1))
    with_ref = cl.evaluate_experiences(model, r.params, exps, reference=exps[1].train[0])
    own = cl.evaluate_experiences(model, r.params, exps)     # each test set's own statistics
    assert own["A"] - with_ref["A"] > 0.3                    # the two really differ here
    last = r.curve[-1]
    assert last["step"] == 30 and last["accuracy"] == with_ref
    assert r.matrix[-1].tolist() == [last["accuracy"]["A"], last["accuracy"]["B"]]

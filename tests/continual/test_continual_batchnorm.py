"""A BatchNorm body (Conv4) is evaluated with the statistics of the data it learns from, as a
trained network in eval mode uses its running statistics: each experience's test set
normalised by its own statistics would undo the shift between experiences and hide the
forgetting, and make each score depend on the batch it is scored in."""

from __future__ import annotations

import torch

import metaloop.continual as cl
from metaloop.continual.scenarios import Experience
from metaloop.models import MLP, Conv4


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


def _naive_run():
    exps = _experiences()
    torch.manual_seed(0)
    model = Conv4(1, 8, 2, image_size=16)
    p = cl.init_params(model, exps, torch.Generator().manual_seed(0))
    r = cl.run_sequence(model, p, exps, "naive", steps=30, batch_size=16, eval_every=10,
                        generator=torch.Generator().manual_seed(1))
    return exps, model, r


def test_the_matrix_shows_the_forgetting_that_per_test_set_statistics_hide():
    exps, model, r = _naive_run()
    with_ref = cl.evaluate_experiences(model, r.params, exps, reference=exps[1].train[0])
    own = cl.evaluate_experiences(model, r.params, exps)     # each test set's own statistics
    assert with_ref["B"] > 0.9                                # B is learned
    assert with_ref["A"] < 0.6 < 0.9 < own["A"]               # A is forgotten; own stats hide it
    assert r.matrix[-1].tolist() == [with_ref["A"], with_ref["B"]]


def test_a_score_with_a_reference_does_not_depend_on_the_batch_size():
    exps, model, r = _naive_run()
    ref = exps[1].train[0]
    scores = [cl.evaluate_experiences(model, r.params, exps, batch_size=b, reference=ref)
              for b in (1, 5, 32, 1000)]
    assert all(s == scores[0] for s in scores)


def test_a_body_without_batchnorm_ignores_the_reference():
    flat = [e._replace(**{s: (getattr(e, s)[0].flatten(1), getattr(e, s)[1])
                          for s in ("train", "val", "test")}) for e in _experiences()]
    torch.manual_seed(0)
    model = MLP(256, (16,), 2)
    p = cl.init_params(model, flat, torch.Generator().manual_seed(0))
    assert cl.evaluate_experiences(model, p, flat, reference=flat[1].train[0]) == \
        cl.evaluate_experiences(model, p, flat)


def test_the_curve_of_a_batchnorm_body_uses_the_learned_datas_statistics():
    """The forgetting curve scores every experience with the statistics of the training data
    being learned, as the accuracy matrix does: its last point is the matrix's last row, not
    the per-test-set scores that hide the forgetting."""
    exps, model, r = _naive_run()
    with_ref = cl.evaluate_experiences(model, r.params, exps, reference=exps[1].train[0])
    own = cl.evaluate_experiences(model, r.params, exps)     # each test set's own statistics
    assert own["A"] - with_ref["A"] > 0.3                    # the two really differ here
    last = r.curve[-1]
    assert last["step"] == 30 and last["accuracy"] == with_ref
    assert r.matrix[-1].tolist() == [last["accuracy"]["A"], last["accuracy"]["B"]]

"""Held-out evaluation against a plain-Python reference: a nearest-prototype learner written
out here, scored task by task on the documented task stream, over more tasks than one
sampling chunk."""

import math

import pytest
import torch

import metaloop as ml
from metaloop.tasks import Episodes


class _Prototypes:
    """Step 0: no information (every prototype 0, so every query ties and gets class 0);
    step 1 on: the support's class means. Logits: minus the squared distance."""

    def __init__(self, batching):
        self.batching = batching

    def adapt_path(self, sx, sy, steps):
        ways = int(sy.max()) + 1
        yield torch.zeros(ways, sx.shape[-1])
        for _ in range(steps):
            yield torch.stack([sx[sy == c].mean(0) for c in range(ways)])   # [ways, D]

    def predict(self, params, x):
        return -torch.cdist(x, params) ** 2                              # [..., Q, ways]

    def adapt_path_batched(self, sx, sy, steps):
        return [torch.stack(list(p)) for p in
                zip(*(list(self.adapt_path(a, b, steps)) for a, b in zip(sx, sy)))]

    def predict_batched(self, params, x):
        return self.predict(params, x)


def _reference(family, tasks, seed, chunk=100):
    """Per-task query accuracy and cross-entropy after 0 and 1 steps, by hand."""
    g = torch.Generator().manual_seed(seed)
    acc, loss = ([], []), ([], [])
    left = tasks
    while left:
        b = family.sample(min(chunk, left), generator=g)
        left -= b.num_tasks
        for t in range(b.num_tasks):
            sx, sy, qx, qy = b.task(t)
            protos = [[sum(float(sx[i, d]) for i in range(len(sy)) if int(sy[i]) == c)
                       / int((sy == c).sum()) for d in range(sx.shape[1])]
                      for c in range(family.ways)]
            for k, ps in enumerate(([[0.0] * sx.shape[1]] * family.ways, protos)):
                right, nll = 0, 0.0
                for x, y in zip(qx.tolist(), qy.tolist()):
                    z = [-sum((a - b) ** 2 for a, b in zip(x, p)) for p in ps]
                    right += max(range(len(z)), key=lambda c: (z[c], -c)) == y
                    top = max(z)
                    nll += top + math.log(sum(math.exp(v - top) for v in z)) - z[y]
                acc[k].append(right / len(qy))
                loss[k].append(nll / len(qy))
    return acc, loss


@pytest.mark.parametrize("batching", ["loop", "vmap"])
def test_per_task_scores_are_the_reference_on_the_seeded_stream(batching):
    gen = torch.Generator().manual_seed(0)
    y = torch.arange(60) % 6
    x = torch.randn(60, 3, generator=gen) * 1.5 + torch.randn(6, 3, generator=gen)[y] * 2
    fam = Episodes(x, y, ways=3, shots=2, queries=4)
    tasks, seed = 130, 17                                  # two chunks: 100 and 30
    r = ml.evaluate(_Prototypes(batching), fam, tasks=tasks, steps=(1, 0), seed=seed,
                    loss="ce")
    acc, loss = _reference(fam, tasks, seed)
    assert r["steps"] == [0, 1] and len(r["per_task"]["accuracy"][1]) == tasks
    assert r["per_task"]["accuracy"][0] == pytest.approx([1 / 3] * tasks)
    for k in range(2):
        assert r["per_task"]["accuracy"][k] == pytest.approx(acc[k], abs=1e-6)
        assert r["per_task"]["loss"][k] == pytest.approx(loss[k], rel=1e-4, abs=1e-5)
    # the stream differs with the seed, and tasks really differ from one another
    other = ml.evaluate(_Prototypes(batching), fam, tasks=tasks, steps=(1,), seed=seed + 1,
                        loss="ce")
    assert other["per_task"]["loss"][0] != r["per_task"]["loss"][1]
    assert len(set(acc[1])) > 3


def test_shift_averaged_is_the_log_of_the_mean_probability_over_shifted_copies():
    """Against a pixel loop: every copy of the queries moved by (dy, dx) in [-1, 1]^2 with
    zero fill, scored by a fixed linear classifier, probabilities averaged, then the log."""
    from metaloop.evaluate.heldout import shift_averaged

    gen = torch.Generator().manual_seed(3)
    qx = torch.rand(4, 1, 5, 5, generator=gen)                            # [Q, 1, H, W]
    w = torch.randn(25, 3, generator=gen)

    def predict(params, x):
        return x.flatten(-3) @ params                                     # [..., 3]

    want = torch.zeros(4, 3)
    for dy in (-1, 0, 1):
        for dx in (-1, 0, 1):
            moved = torch.zeros_like(qx)
            for i in range(5):
                for j in range(5):
                    if 0 <= i - dy < 5 and 0 <= j - dx < 5:
                        moved[..., i, j] = qx[..., i - dy, j - dx]
            want += torch.softmax(predict(w, moved), -1) / 9
    got = shift_averaged(predict, w, qx, 1)
    assert got.shape == (4, 3)
    assert torch.allclose(got, want.log(), atol=1e-5)
    assert torch.equal(shift_averaged(predict, w, qx, 0), predict(w, qx))

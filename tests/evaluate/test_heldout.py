import math

import pytest
import torch

import metaloop as ml
from metaloop.meta import MAML, Scratch
from metaloop.models import MLP


def test_mean_ci_matches_hand_computation():
    v = [1.0, 2.0, 4.0, 7.0]
    m = sum(v) / 4
    sd = math.sqrt(sum((x - m) ** 2 for x in v) / 3)
    assert ml.mean_ci(v) == pytest.approx((m, 1.96 * sd / 2))
    with pytest.raises(ValueError):
        ml.mean_ci([])


@pytest.mark.parametrize("batching", ["loop", "vmap"])
def test_evaluate_matches_manual_adaptation_and_is_seeded(batching):
    torch.manual_seed(0)
    learner = MAML(MLP(1, (8,), 1), 0.05, 1, batching=batching)
    fam = ml.tasks.Sinusoid(5, 20)
    r = ml.evaluate(learner, fam, tasks=7, steps=(0, 2), seed=11)
    b = fam.sample(7, torch.Generator().manual_seed(11))
    manual = []
    for i in range(7):
        sx, sy, qx, qy = b.task(i)
        p = learner.adapt(sx, sy, steps=2)
        manual.append(float(((learner.predict(p, qx) - qy) ** 2).mean()))
    assert r["loss"]["mean"][1] == pytest.approx(sum(manual) / 7, rel=1e-5)
    done = []
    assert r == ml.evaluate(learner, fam, tasks=7, steps=(0, 2), seed=11, progress=done.append)
    assert len(r["loss"]["ci95"]) == 2
    assert done == ([1] * 7 if batching == "loop" else [7])     # every task reported once


def test_vmap_and_loop_evaluation_agree():
    torch.manual_seed(0)
    model = MLP(1, (8,), 1)
    fam = ml.tasks.Sinusoid(5, 20)
    a = ml.evaluate(Scratch(model, 0.05, batching="loop"), fam, tasks=5, steps=(0, 3))
    b = ml.evaluate(Scratch(model, 0.05, batching="vmap"), fam, tasks=5, steps=(0, 3))
    assert a["loss"]["mean"] == pytest.approx(b["loss"]["mean"], rel=1e-5)


def test_bad_evaluate_arguments():
    learner = MAML(MLP(), 0.01, 1)
    with pytest.raises(ValueError, match="tasks"):
        ml.evaluate(learner, ml.tasks.Sinusoid(), tasks=0)
    with pytest.raises(ValueError, match="steps"):
        ml.evaluate(learner, ml.tasks.Sinusoid(), tasks=2, steps=(-1,))

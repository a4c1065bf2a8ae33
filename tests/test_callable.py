"""The callable subpackages (``ml.train(...)``, ``ml.evaluate(...)``): a call reaches the
function, and ``inspect.signature`` of the module is the function's (it was ``(*args,
**kwargs)``, which IDEs and ``help`` showed)."""

import inspect

import metaloop as ml
from metaloop.evaluate.heldout import evaluate
from metaloop.train.loop import train


def test_the_modules_signature_is_the_functions():
    assert inspect.signature(ml.train) == inspect.signature(train)
    assert inspect.signature(ml.evaluate) == inspect.signature(evaluate)
    assert "iterations" in inspect.signature(ml.train).parameters
    assert ml.train.__call__.__doc__ == train.__doc__


def test_a_call_reaches_the_function_and_the_submodules_stay_importable():
    import metaloop.train.checkpoint as ckpt

    assert callable(ml.train) and ckpt.save_checkpoint is not None
    fam = ml.tasks.Sinusoid(shots=2, queries=2)
    learner = ml.meta.MAML(ml.models.MLP(in_dim=1, hidden=(4,), out_dim=1), inner_lr=0.01,
                           loss="mse")
    out = ml.evaluate(learner, fam, tasks=2, steps=(0,))
    assert out["steps"] == [0] and len(out["loss"]["mean"]) == 1

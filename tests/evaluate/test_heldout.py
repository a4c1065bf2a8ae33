import math
import re

import pytest
import torch

import metaloop as ml
from metaloop.evaluate import heldout_tasks
from metaloop.meta import MAML, Scratch
from metaloop.models import MLP


def test_mean_ci_matches_hand_computation():
    v = [1.0, 2.0, 4.0, 7.0]
    m = sum(v) / 4
    sd = math.sqrt(sum((x - m) ** 2 for x in v) / 3)
    t3 = pytest.importorskip("scipy.stats").t.ppf(0.975, 3)       # Student's t, 3 df
    assert ml.mean_ci(v) == pytest.approx((m, t3 * sd / 2))
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


@pytest.mark.parametrize("tasks, seed, message", [
    (True, 0, "tasks must be a positive int, got True"),        # not one task
    (2, 1.5, "seed must be an int, got 1.5"),                    # not torch's RuntimeError
    (2, None, "seed must be an int, got None"),
    (2, "3", "seed must be an int, got '3'"),
    (2, True, "seed must be an int, got True"),
    (2, 2 ** 70, "seed 1180591620717411303424 is outside what a torch.Generator takes"),
])
def test_a_bad_task_count_or_seed_is_named_before_any_task_is_drawn(tasks, seed, message):
    class Family:                     # any family: nothing may be drawn before the check
        def sample(self, *a, **k):
            raise AssertionError("a task was drawn")

    with pytest.raises(ValueError, match=message):
        ml.evaluate(MAML(MLP(), 0.01, 1), Family(), tasks=tasks, seed=seed)
    with pytest.raises(ValueError, match=message):
        next(heldout_tasks(Family(), tasks, seed))


@pytest.mark.parametrize("chunk", [0, -5, 1.5, True, None])
def test_a_bad_chunk_is_named_before_any_task_is_drawn(chunk):
    class Family:                     # chunk 0 would ask for 0 tasks forever
        def sample(self, *a, **k):
            raise AssertionError("a task was drawn")

    with pytest.raises(ValueError, match=rf"^chunk must be a positive int \(tasks sampled at "
                                         rf"once\), got {re.escape(repr(chunk))}$"):
        next(heldout_tasks(Family(), 3, 0, chunk=chunk))


def _protonet_on_images():
    """A small Conv4 ProtoNet and 3-way 1-shot tasks of random 16x16 images (8 classes)."""
    from metaloop.models import Conv4

    torch.manual_seed(0)
    learner = ml.meta.ProtoNet(Conv4(1, 4, 3, image_size=16))
    x = torch.rand(40, 1, 16, 16)
    return learner, ml.tasks.Episodes(x, torch.arange(40) % 8, ways=3, shots=1, queries=2)


def test_support_shift_adapts_on_every_shifted_support_image():
    """eval's test-time augmentation: the head is fitted to the support set grown by every
    shift (here a prototype head, whose prototypes average over the shifts); the queries are
    scored as they are. Checked against growing the support set by hand."""
    from metaloop.tasks.augment import all_shifts

    learner, fam = _protonet_on_images()
    r = ml.evaluate(learner, fam, tasks=5, steps=(0,), seed=3, support_shift=1)
    plain = ml.evaluate(learner, fam, tasks=5, steps=(0,), seed=3)
    assert r["support_shift"] == 1 and "support_shift" not in plain
    b = fam.sample(5, torch.Generator().manual_seed(3))
    want = []
    for i in range(5):
        sx, sy, qx, qy = b.task(i)
        gx = torch.cat([all_shifts(sx, 1)[k] for k in [4, 0, 1, 2, 3, 5, 6, 7, 8]])
        p = learner.adapt(gx, sy.repeat(9))
        want.append(float(ml.func.losses.accuracy(learner.predict(p, qx), qy)))
    assert r["accuracy"]["mean"][0] == pytest.approx(sum(want) / 5, abs=1e-6)
    with pytest.raises(ValueError, match="shifts images"):
        ml.evaluate(MAML(MLP(), 0.01, 1), ml.tasks.Sinusoid(), tasks=2, support_shift=1)
    with pytest.raises(ValueError, match="support_shift must be an int >= 0"):
        ml.evaluate(learner, fam, tasks=2, support_shift=-1)


def test_query_shift_scores_each_query_by_probabilities_averaged_over_its_shifts():
    """eval's query test-time augmentation, checked against shifting by hand: the log of
    the mean softmax over the 9 copies, predicted in one batch (transductive BatchNorm sees
    them together); loop and vmap agree."""
    from metaloop.tasks.augment import all_shifts

    learner, fam = _protonet_on_images()
    r = ml.evaluate(learner, fam, tasks=5, steps=(0,), seed=3, query_shift=1)
    plain = ml.evaluate(learner, fam, tasks=5, steps=(0,), seed=3)
    assert r["query_shift"] == 1 and "query_shift" not in plain
    b = fam.sample(5, torch.Generator().manual_seed(3))
    acc, loss = [], []
    for i in range(5):
        sx, sy, qx, qy = b.task(i)
        p = learner.adapt(sx, sy)
        copies = all_shifts(qx, 1)                                      # [9, Q, 1, 16, 16]
        out = learner.predict(p, copies.flatten(0, 1))                  # one batch [9*Q, 3]
        logp = torch.softmax(out, -1).unflatten(0, (9, -1)).mean(0).log()   # [Q, 3]
        acc.append(float((logp.argmax(-1) == qy).float().mean()))
        loss.append(float(torch.nn.functional.nll_loss(logp, qy)))
    assert r["accuracy"]["mean"][0] == pytest.approx(sum(acc) / 5, abs=1e-6)
    assert r["loss"]["mean"][0] == pytest.approx(sum(loss) / 5, rel=1e-4)
    learner.batching = "vmap"
    v = ml.evaluate(learner, fam, tasks=5, steps=(0,), seed=3, query_shift=1)
    assert v["accuracy"]["mean"][0] == pytest.approx(r["accuracy"]["mean"][0], abs=1e-6)
    with pytest.raises(ValueError, match="query_shift = 1 averages class probabilities"):
        ml.evaluate(MAML(MLP(), 0.01, 1), ml.tasks.Sinusoid(), tasks=2, query_shift=1)
    with pytest.raises(ValueError, match="query_shift must be an int >= 0"):
        ml.evaluate(learner, fam, tasks=2, query_shift=True)


def test_every_steps_ci_is_students_t_interval_over_tasks():
    """Each step's ci95 is t_975(tasks - 1) * sample sd / sqrt(tasks) of the per-task values
    (numpy's ddof=1, scipy's t quantile), for the loss and the accuracy; constant values give
    0, one value 0 (no spread)."""
    np = pytest.importorskip("numpy")
    t6 = pytest.importorskip("scipy.stats").t.ppf(0.975, 6)
    learner, fam = _protonet_on_images()
    r = ml.evaluate(learner, fam, tasks=7, steps=(0, 2), seed=5)
    for key in ("loss", "accuracy"):
        for k in range(2):
            v = np.asarray(r["per_task"][key][k], dtype=np.float64)
            assert len(v) == 7
            assert r[key]["mean"][k] == pytest.approx(v.mean(), abs=1e-12)
            assert r[key]["ci95"][k] == pytest.approx(t6 * v.std(ddof=1) / np.sqrt(7),
                                                      abs=1e-12)
    assert ml.mean_ci([0.8, 0.8, 0.8]) == pytest.approx((0.8, 0.0), abs=1e-12)
    assert ml.mean_ci([0.25]) == (0.25, None)


def test_one_value_has_no_ci():
    # QA: `adapt --tasks 1` printed "83.33 ± 0.00" and `forgetting --seeds 1` wrote
    # "ci95": 0.0, a zero-width interval read as certainty; one value has no spread to measure.
    from metaloop.evaluate import format_mean_ci

    assert ml.mean_ci([5 / 6]) == (5 / 6, None)
    assert format_mean_ci(5 / 6, None, scale=100) == "83.33 ± n/a"
    assert format_mean_ci(5 / 6, 0.05, ".1f", 100) == "83.3 ± 5.0"
    assert format_mean_ci(1.5, 0.25, ".3f") == "1.500 ± 0.250"
    learner, fam = _protonet_on_images()
    r = ml.evaluate(learner, fam, tasks=1, steps=(0, 2), seed=5)
    assert r["accuracy"]["ci95"] == [None, None] and r["loss"]["ci95"] == [None, None]


@pytest.mark.parametrize("steps,shown", [((1.5, 2.9), "1.5"), ((True,), "True"),
                                         ((0, -1), "-1"), (("1",), "'1'")])
def test_steps_must_be_non_negative_ints(steps, shown):
    """(1.5, 2.9) was reported as steps [1, 2] and (True,) as [1]."""
    learner = MAML(MLP(1, (8,), 1))
    with pytest.raises(ValueError, match=rf"steps must be non-negative ints, got .*\({shown} "
                                         rf"is not\)"):
        ml.evaluate(learner, ml.tasks.Sinusoid(5, 5), tasks=2, steps=steps)


def test_steps_is_a_sequence_not_a_bare_int():
    """The docstring and the docs give a sequence (``steps=(0,)``); a bare int gave
    "'int' object is not iterable", a string would be read digit by digit."""
    learner, fam = MAML(MLP(1, (8,), 1)), ml.tasks.Sinusoid(5, 5)
    with pytest.raises(ValueError, match=r"steps must be a sequence of step counts, got the "
                                         r"int 3; for that one count pass steps=\(3,\)"):
        ml.evaluate(learner, fam, tasks=2, steps=3)
    with pytest.raises(ValueError, match=r"got '01'"):
        ml.evaluate(learner, fam, tasks=2, steps="01")
    with pytest.raises(ValueError, match=r"non-negative ints, got \[\]"):
        ml.evaluate(learner, fam, tasks=2, steps=())
    r = ml.evaluate(learner, fam, tasks=2, steps=[torch.tensor(2), 0, 2])
    assert r["steps"] == [0, 2] and len(r["loss"]["mean"]) == 2


def test_evaluate_names_ways_beyond_the_head_under_vmap():
    """A 5-way family for a 3-output MAML: vmap's evaluation failed with torch's "index 3 is
    out of bounds"; now it gives the loop's ValueError."""
    fam = ml.tasks.Episodes(torch.randn(80, 4), torch.arange(8).repeat_interleave(10), ways=5,
                            shots=2, queries=3)
    for batching in ("vmap", "loop"):
        learner = MAML(MLP(4, (8,), 3), loss="ce", batching=batching)
        with pytest.raises(ValueError, match=r"labels must lie in \[0, C=3\).*found 4"):
            ml.evaluate(learner, fam, tasks=4, steps=(0, 1))


def test_a_model_with_dropout_scores_the_same_for_the_same_seed_and_leaves_the_rng():
    """Dropout in training mode drew from the global RNG: two calls with the same seed
    scored differently (query loss 1.755 vs 1.245), and the caller's RNG moved on."""
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Linear(1, 16), torch.nn.ReLU(), torch.nn.Dropout(0.5),
                              torch.nn.Linear(16, 1))
    learner = MAML(net, 0.05, 1, batching="loop")
    fam = ml.tasks.Sinusoid(5, 10)
    before = torch.random.get_rng_state()
    a = ml.evaluate(learner, fam, tasks=4, steps=(0, 1), seed=5)
    assert torch.equal(torch.random.get_rng_state(), before)           # the caller's RNG kept
    torch.manual_seed(123)                                             # whatever came before
    assert ml.evaluate(learner, fam, tasks=4, steps=(0, 1), seed=5) == a
    other = ml.evaluate(learner, fam, tasks=4, steps=(0, 1), seed=6)
    assert other["per_task"] != a["per_task"]



def test_seeding_a_cpu_model_leaves_cuda_alone(monkeypatch, recwarn):
    """fork_rng() saves every CUDA device's generator: on a machine with several GPUs a CPU
    evaluation initialised CUDA (and warned), and where CUDA cannot start it failed."""
    def no_cuda(*args, **kwargs):
        raise AssertionError("CUDA touched")

    torch.manual_seed(0)
    learner = MAML(MLP(1, (8,), 1), 0.05, 1, batching="loop")
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    monkeypatch.setattr(torch.cuda, "get_rng_state", no_cuda)
    monkeypatch.setattr(torch.cuda, "set_rng_state", no_cuda)
    monkeypatch.setattr(torch.cuda, "manual_seed_all", no_cuda)
    r = ml.evaluate(learner, ml.tasks.Sinusoid(5, 5), tasks=2, steps=(0, 1), seed=5)
    assert len(r["per_task"]["loss"][1]) == 2
    assert not [w for w in recwarn if "available devices" in str(w.message)]


def test_a_family_whose_sample_returns_no_taskbatch_is_named():
    """A tuple from ``sample`` ended in "'tuple' object has no attribute
    'is_classification'"."""
    class Tuples:
        kind = "regression"

        def sample(self, n, generator=None):
            return torch.zeros(n, 2, 1), torch.zeros(n, 2, 1)
    learner = MAML(MLP(1, (4,), 1), 0.05, 1)
    with pytest.raises(ValueError, match=r"Tuples.sample must return a metaloop.TaskBatch, "
                                         r"got tuple"):
        ml.evaluate(learner, Tuples(), tasks=2, steps=(0,))


def test_a_learner_or_family_of_the_wrong_kind_is_named_not_an_attribute_error():
    learner = MAML(MLP(), inner_lr=0.01, inner_steps=1)
    family = ml.tasks.Sinusoid(shots=5, queries=5)
    with pytest.raises(ValueError, match="learner must be a metaloop learner .* but MLP has "
                                         "no adapt_path or predict"):
        ml.evaluate(learner.model, family, tasks=2, steps=(0,))
    with pytest.raises(ValueError, match="family must be a task family with sample.* got "
                                         "TaskBatch"):
        ml.evaluate(learner, family.sample(2), tasks=2, steps=(0,))


def test_mean_ci_refuses_a_string_instead_of_reading_its_digits():
    with pytest.raises(ValueError, match="mean_ci needs a sequence of numbers, got the "
                                         "string '12'"):
        ml.evaluate.mean_ci("12")


def test_a_shift_as_large_as_the_images_is_named():
    """--support-shift 30 on 16x16 images grew each support set by copies moved off the image
    (blank ones among them, labelled as every class) and scored without a word."""
    learner, fam = _protonet_on_images()                       # 16 x 16 images
    for key in ("support_shift", "query_shift"):
        with pytest.raises(ValueError, match=rf"{key} = 16 moves images of \[16, 16\] pixels "
                                             r"by up to 16, so some of its copies hold no "
                                             r"image at all: give a shift below 16"):
            ml.evaluate(learner, fam, tasks=2, steps=(0,), **{key: 16})
    assert ml.evaluate(learner, fam, tasks=2, steps=(0,), support_shift=15)["tasks"] == 2


def test_a_progress_that_is_not_callable_is_named_before_any_task():
    """A progress that is neither a bool, None nor a callable failed with "'int' object is
    not callable" after the first task was scored."""
    fam = ml.tasks.Sinusoid(shots=2, queries=2)
    learner = ml.meta.MAML(ml.models.MLP(1, (4,), 1), 0.01, loss="mse")
    with pytest.raises(ValueError, match=r"evaluate: progress must be True \(a progress "
                                         r"bar\), False or None \(none\), or a callable "
                                         r"progress\(n\).*got 1$"):
        ml.evaluate(learner, fam, tasks=2, progress=1)


def test_progress_takes_bools_as_train_does(capsys):
    """ml.train takes progress=True/False; evaluate refused both. False is None (no bar),
    True draws a bar over the tasks, and neither changes the scores."""
    fam = ml.tasks.Sinusoid(shots=2, queries=2)
    learner = ml.meta.MAML(ml.models.MLP(1, (4,), 1), 0.01, loss="mse")
    none = ml.evaluate(learner, fam, tasks=3, steps=(0, 1))
    capsys.readouterr()
    assert ml.evaluate(learner, fam, tasks=3, steps=(0, 1), progress=False) == none
    assert capsys.readouterr().err == ""
    assert ml.evaluate(learner, fam, tasks=3, steps=(0, 1), progress=True) == none
    err = capsys.readouterr().err
    assert "evaluate" in err and "3/3" in err

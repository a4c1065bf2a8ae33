"""Bad input to the learners from a notebook: a clear ValueError naming the argument, never
a deep torch traceback or a silently wrong number."""

import pytest
import torch

import metaloop as ml
from metaloop.func import params_of, partition
from metaloop.func.losses import cross_entropy, mse
from metaloop.models import MLP, Conv4


def regression_batch(tasks=2):
    return ml.tasks.Sinusoid(shots=5, queries=5).sample(
        tasks, generator=torch.Generator().manual_seed(0))


def classification_batch(tasks=2, ways=3):
    g = torch.Generator().manual_seed(0)
    y = torch.arange(ways).repeat(tasks, 1)                                   # [B, ways]
    return ml.TaskBatch(torch.rand(tasks, ways, 1, 16, 16, generator=g), y,
                        torch.rand(tasks, ways, 1, 16, 16, generator=g), y)


def mlp():
    return MLP(in_dim=1, hidden=(8,), out_dim=1)


@pytest.mark.parametrize("make", [ml.meta.MAML, ml.meta.Reptile, ml.meta.Pretrain])
def test_infinite_inner_lr_is_refused(make):
    with pytest.raises(ValueError, match="inner_lr must be a positive float, got inf"):
        make(mlp(), inner_lr=float("inf"))


def test_a_model_that_is_not_a_module_is_named():
    with pytest.raises(ValueError, match="model must be a torch.nn.Module, got str"):
        ml.meta.MAML("mlp")


@pytest.mark.parametrize("flag", ["first_order", "compile", "learn_lr",
                                  "recompute_inner_loop"])
def test_string_flags_are_refused_not_read_as_true(flag):
    with pytest.raises(ValueError, match=f"{flag} must be True or False, got 'False'"):
        ml.meta.MAML(mlp(), **{flag: "False"})
    assert ml.meta.MAML(mlp(), first_order=1).first_order is True


def test_reptile_transductive_string_is_refused():
    with pytest.raises(ValueError, match="transductive must be True or False, got 'no'"):
        ml.meta.Reptile(mlp(), transductive="no")


def test_a_single_name_string_as_selector_is_refused():
    msg = r"got the string 'head.weight'; pass \['head.weight'\]"
    with pytest.raises(ValueError, match=msg):
        ml.meta.ANIL(mlp(), head="head.weight")
    with pytest.raises(ValueError, match=msg):
        partition(params_of(mlp()), "head.weight")


def test_adapt_takes_one_task_not_a_batch():
    learner, b = ml.meta.MAML(mlp()), regression_batch()
    with pytest.raises(ValueError, match=r"ONE task: support_y must be float targets \[S, out\], "
                                         r"got \[2, 5, 1\]"):
        learner.adapt(b.support_x, b.support_y)      # would adapt to both tasks' points at once
    with pytest.raises(ValueError, match=r"got \[5\]"):
        learner.adapt(b.support_x[0], b.support_y[0, :, 0])   # mse would broadcast to [5, 5]


def test_adapt_refuses_an_empty_or_mismatched_support_set():
    learner, b = ml.meta.MAML(mlp()), regression_batch()
    sx, sy = b.support_x[0], b.support_y[0]
    with pytest.raises(ValueError, match=r"support set is empty \(S = 0\)"):
        learner.adapt(sx[:0], sy[:0])
    with pytest.raises(ValueError, match=r"support_x \[5, 1\] and support_y \[3, 1\] differ"):
        learner.adapt(sx, sy[:3])
    with pytest.raises(ValueError, match="support set is empty"):
        ml.meta.Reptile(mlp(), inner_optimizer="adam").adapt(sx[:0], sy[:0])


def test_adapt_refuses_non_finite_support_data():
    learner, b = ml.meta.MAML(mlp()), regression_batch()
    sx = b.support_x[0].clone()
    sx[2, 0] = float("nan")
    with pytest.raises(ValueError, match=r"support_x \[5, 1\] has non-finite values"):
        learner.adapt(sx, b.support_y[0])


def test_dtype_and_device_mismatches_are_named():
    b = regression_batch()
    for learner in (ml.meta.MAML(mlp(), batching="loop"), ml.meta.MAML(mlp(), batching="vmap"),
                    ml.meta.Reptile(mlp()), ml.meta.Pretrain(mlp()), ml.meta.Scratch(mlp())):
        with pytest.raises(ValueError, match=r"support_x is torch.float64 but the model's "
                                             r"parameters are torch.float32"):
            learner.meta_gradient(b.to(dtype=torch.float64))
    learner = ml.meta.MAML(mlp())
    with pytest.raises(ValueError, match="support_x is torch.float64"):
        learner.adapt(b.support_x[0].double(), b.support_y[0].double())
    with pytest.raises(ValueError, match=r"x is torch.float64"):
        learner.predict(learner.adapt(b.support_x[0], b.support_y[0]), b.query_x[0].double())
    proto = ml.meta.ProtoNet(Conv4(1, 8, 3, image_size=16))
    with pytest.raises(ValueError, match="support_x is torch.float64"):
        proto.meta_loss(classification_batch().to(dtype=torch.float64))


def test_predict_refuses_params_the_model_does_not_have():
    learner, b = ml.meta.MAML(mlp()), regression_batch()
    params = learner.adapt(b.support_x[0], b.support_y[0])
    prefixed = {f"net.{k}": v for k, v in params.items()}    # would be ignored: unadapted output
    with pytest.raises(ValueError, match=r"names the model does not have: \['net.body"):
        learner.predict(prefixed, b.query_x[0])


def test_classification_labels_outside_the_model_outputs_are_named():
    b = classification_batch(ways=3)
    learner = ml.meta.MAML(Conv4(1, 8, 2, image_size=16), loss="ce")   # 2 outputs, 3 ways
    with pytest.raises(ValueError, match=r"labels must lie in \[0, C=2\).*found 2"):
        learner.meta_gradient(b)
    with pytest.raises(ValueError, match=r"labels must lie in \[0, C=2\).*found 2"):
        ml.meta.ANIL(Conv4(1, 8, 2, image_size=16), loss="ce").meta_loss(b)
    sx, sy, _, _ = b.task(0)
    good = ml.meta.MAML(Conv4(1, 8, 3, image_size=16), loss="ce")
    with pytest.raises(ValueError, match="found -1"):
        good.adapt(sx, sy - 1)
    with pytest.raises(ValueError, match="labels must be int64 class indices"):
        good.adapt(sx, sy.float())
    with pytest.raises(ValueError, match="got torch.int32; call .long()"):
        good.adapt(sx, sy.int())


def test_head_learners_refuse_an_empty_support_set():
    b = classification_batch()
    sx, sy, _, _ = b.task(0)
    for learner in (ml.meta.R2D2(Conv4(1, 8, 3, image_size=16)),
                    ml.meta.ProtoNet(Conv4(1, 8, 3, image_size=16)),
                    ml.meta.MetaOptNet(Conv4(1, 8, 3, image_size=16), steps=2)):
        with pytest.raises(ValueError, match=r"support set is empty \(S = 0\)"):
            learner.adapt(sx[:0], sy[:0])
        with pytest.raises(ValueError, match=r"got \[3, 1, 16, 16\] and \[2\]"):
            learner.adapt(sx, sy[:2])


def test_losses_refuse_shapes_torch_would_broadcast():
    with pytest.raises(ValueError, match=r"predictions \[4, 1\] and targets \[4\] differ"):
        mse(torch.zeros(4, 1), torch.zeros(4))
    with pytest.raises(ValueError, match="targets must be float"):
        mse(torch.zeros(4, 3), torch.zeros(4, 3, dtype=torch.int64))
    with pytest.raises(ValueError, match=r"logits must be \[N, C\] and labels \[N\]"):
        cross_entropy(torch.zeros(4, 3), torch.zeros(4, 1, dtype=torch.int64))
    probs = torch.full((4, 3), 1 / 3)                        # class probabilities stay allowed
    assert torch.allclose(cross_entropy(torch.zeros(4, 3), probs), torch.tensor(3.0).log())
    with pytest.raises(ValueError, match="mse"):
        ml.meta.MAML(mlp(), loss="mse").meta_loss(ml.TaskBatch(
            torch.zeros(2, 5, 1), torch.zeros(2, 5, 2), torch.zeros(2, 5, 1),
            torch.zeros(2, 5, 2)))                              # 2 targets, 1 output


@pytest.mark.parametrize("make", [
    lambda b: ml.meta.MAML(mlp(), loss="ce", batching=b),
    lambda b: ml.meta.ANIL(mlp(), loss="ce", batching=b),
    lambda b: ml.meta.Reptile(mlp(), loss="ce", batching=b),
    lambda b: ml.meta.Pretrain(mlp(), loss="ce", batching=b),
    lambda b: ml.meta.Scratch(mlp(), loss="ce", batching=b),
], ids=["maml", "anil", "reptile", "pretrain", "scratch"])
@pytest.mark.parametrize("batching", ["loop", "vmap"])
def test_cross_entropy_on_regression_targets_is_named_not_a_zero_gradient(make, batching):
    """loss="ce" read sinusoid targets [B, S, 1] as the probabilities of one class: the loss
    was 0 and every meta-gradient exactly zero, so training ran and learned nothing."""
    learner = make(batching)
    for call in (learner.meta_loss, learner.meta_gradient):
        with pytest.raises(ValueError, match=r"loss='ce' needs int64 class labels, but this "
                                             r"TaskBatch holds float regression targets "
                                             r"\[2, 5, 1\]; use loss='mse'"):
            call(regression_batch())


def test_mse_on_class_labels_is_named_by_the_learner():
    with pytest.raises(ValueError, match=r"loss='mse' needs float regression targets, but "
                                         r"this TaskBatch holds int64 class labels; use "
                                         r"loss='ce'"):
        ml.meta.MAML(Conv4(1, 4, 3, image_size=16), loss="mse").meta_gradient(
            classification_batch())


@pytest.mark.parametrize("make", [
    lambda net, b: ml.meta.MAML(net, batching=b),
    lambda net, b: ml.meta.Reptile(net, batching=b),
    lambda net, b: ml.meta.Pretrain(net, batching=b),
], ids=["maml", "reptile", "pretrain"])
def test_dropout_in_training_mode_runs_the_loop_and_vmap_names_it(make):
    """batching="auto" picked vmap for an MLP with dropout, whose random draws vmap refuses:
    meta_gradient, meta_loss and evaluate failed with torch's RuntimeError. Now "auto" picks
    the loop, and "vmap" names the layer; in eval mode (no random draws) vmap runs."""
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Linear(1, 8), torch.nn.ReLU(), torch.nn.Dropout(0.2),
                              torch.nn.Linear(8, 1))
    learner = make(net, "auto")
    assert learner.batching == "loop"
    learner.meta_gradient(regression_batch())
    batch = regression_batch()
    with pytest.raises(ValueError, match=r"batching='vmap' cannot run 2 \(Dropout\): in "
                                         r"training mode dropout draws random numbers.*eval "
                                         r"mode"):
        learner.adapt_path_batched(batch.support_x, batch.support_y)
    with pytest.raises(ValueError, match=r"cannot run 2 \(Dropout\)"):
        make(net, "vmap")
    net.eval()
    loop, vmap = make(net, "loop"), make(net, "auto")
    assert vmap.batching == "vmap"
    a, b = loop.meta_gradient(batch), vmap.meta_gradient(batch)
    assert all(torch.allclose(a[n], b[n], rtol=1e-5, atol=1e-7) for n in a)


def test_r2d2_with_a_dropout_backbone_runs_the_loop():
    g = torch.Generator().manual_seed(0)
    y = torch.tensor([[0, 1, 2, 0, 1, 2]] * 2)
    batch = ml.TaskBatch(torch.randn(2, 6, 4, generator=g), y, torch.randn(2, 6, 4, generator=g),
                         y)
    net = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.Dropout(0.2))
    learner = ml.meta.R2D2(net)
    assert learner.batching == "loop"
    assert learner.meta_loss(batch)[0].isfinite()


class TorchBatchNormNet(torch.nn.Module):
    """conv -> torch's BatchNorm2d -> ReLU -> spatial mean (features) -> linear head."""

    def __init__(self, bn: torch.nn.Module):
        super().__init__()
        self.conv, self.bn = torch.nn.Conv2d(1, 4, 3, padding=1), bn
        self.head = torch.nn.Linear(4, 3)

    def forward(self, x, head=True):
        h = torch.relu(self.bn(self.conv(x))).mean((2, 3))
        return self.head(h) if head else h


@pytest.mark.parametrize("make", [
    lambda net, t: ml.meta.ProtoNet(net, transductive=t),
    lambda net, t: ml.meta.R2D2(net, transductive=t),
    lambda net, t: ml.meta.Reptile(net, 0.1, 1, loss="ce", transductive=t),
], ids=["protonet", "r2d2", "reptile"])
def test_non_transductive_scoring_refuses_torch_batchnorm_by_name(make):
    """transductive=False records and reuses the support statistics of metaloop's BatchNorm
    only: with torch's BatchNorm2d, each query's score still depended on the other queries
    while the learner reported "non-transductive"."""
    bn = torch.nn.BatchNorm2d(4, track_running_stats=False)
    with pytest.raises(ValueError, match=r"transductive=False .* but (backbone\.)?bn "
                                         r"\(BatchNorm2d\) would still normalise a task's "
                                         r"queries together"):
        make(TorchBatchNormNet(bn), False)
    learner = make(TorchBatchNormNet(bn), True)
    with pytest.raises(ValueError, match=r"bn \(BatchNorm2d\)"):
        learner.transductive = False                               # set afterwards
    assert learner.transductive and learner.evaluation == "transductive"
    # in eval mode with running statistics, each query is normalised on its own: allowed
    frozen = make(TorchBatchNormNet(torch.nn.BatchNorm2d(4)).eval(), False)
    b = classification_batch()
    sx, sy, qx, _ = b.task(0)
    params = frozen.adapt(sx, sy)
    torch.testing.assert_close(frozen.predict(params, qx[:1]), frozen.predict(params, qx)[:1])


def test_a_batch_on_another_device_than_the_model_is_named():
    learner = ml.meta.MAML(mlp().to("meta"))
    with pytest.raises(ValueError, match=r"support_x is on cpu but the model's parameters are "
                                         r"on meta"):
        learner.meta_gradient(regression_batch())


def _ways_batch(ways=5, tasks=2):
    """``ways``-way tasks of 4-d vectors: more ways than a 3-output head has outputs."""
    x, y = torch.randn(80, 4), torch.arange(8).repeat_interleave(10)
    fam = ml.tasks.Episodes(x, y, ways=ways, shots=2, queries=3)
    return fam, fam.sample(tasks, torch.Generator().manual_seed(0))


@pytest.mark.parametrize("batching", ["vmap", "loop"])
@pytest.mark.parametrize("make", [ml.meta.MAML, ml.meta.ANIL])
def test_labels_beyond_the_head_are_named_on_every_batching_path(make, batching):
    """Under vmap the labels were not checked (cross_entropy cannot read them there):
    meta_loss, meta_gradient and evaluate failed with torch's "index 3 is out of bounds for
    dimension 2"; the loop path's ValueError now comes on both paths."""
    fam, b = _ways_batch()
    learner = make(MLP(4, (8,), 3), loss="ce", batching=batching)            # 3 outputs
    msg = r"cross_entropy: labels must lie in \[0, C=3\) \(C: the model's outputs\), found 4"
    with pytest.raises(ValueError, match=msg):
        learner.meta_loss(b)
    with pytest.raises(ValueError, match=msg):
        learner.meta_gradient(b)
    with pytest.raises(ValueError, match=msg):
        learner.adapt_path_batched(b.support_x, b.support_y, 1)
    with pytest.raises(ValueError, match=msg):
        ml.evaluate(learner, fam, tasks=4, steps=(0, 1))
    with pytest.raises(ValueError, match=msg):
        learner.adapt(*b.task(0)[:2])


def test_the_vmap_label_check_changes_no_result():
    """The labels are read once outside vmap; in range, the vmapped results are the loop's,
    and a zero head (sized to the labels) or another loss is left alone."""
    _, b = _ways_batch(ways=3)
    torch.manual_seed(0)
    model = MLP(4, (8,), 3)
    loop = ml.meta.MAML(model, loss="ce", batching="loop").meta_gradient(b)
    vmap = ml.meta.MAML(model, loss="ce", batching="vmap").meta_gradient(b)
    for k in loop:
        torch.testing.assert_close(vmap[k], loop[k])
    _, b5 = _ways_batch(ways=5)
    zero = ml.meta.MAML(MLP(4, (8,), 3), loss="ce", batching="vmap", head_init="zero")
    assert zero.meta_loss(b5)[0].isfinite()                  # the head is 5 wide here
    learner = ml.meta.MAML(mlp(), batching="vmap")
    from metaloop.meta._common import labels_checked
    assert labels_checked(learner.inner, b.support_y) is learner.inner          # mse


def _head_learners():
    return [("ProtoNet", ml.meta.ProtoNet(Conv4(1, 8, 3, image_size=16))),
            ("MetaOptNet", ml.meta.MetaOptNet(Conv4(1, 8, 3, image_size=16), steps=2)),
            ("R2D2", ml.meta.R2D2(Conv4(1, 8, 3, image_size=16)))]


@pytest.mark.parametrize("name,learner", _head_learners())
def test_head_learners_check_adapt_and_predict_as_maml_does(name, learner):
    """ProtoNet and MetaOptNet returned NaN heads for a NaN support set; all three let
    float64 x reach torch ("Input type (double) and bias type (float)") and took steps=-1."""
    sx, sy, qx, _ = classification_batch().task(0)
    nan = sx.clone()
    nan[1, 0, 3, 3] = float("nan")
    with pytest.raises(ValueError, match=rf"{name}: support_x \[3, 1, 16, 16\] has non-finite "
                                         rf"values"):
        learner.adapt(nan, sy)
    params = learner.adapt(sx, sy)
    msg = (rf"{name}: x is torch.float64 but the model's parameters are torch.float32; cast "
           rf"one of them")
    with pytest.raises(ValueError, match=msg):
        learner.predict(params, qx.double())
    with pytest.raises(ValueError, match=msg):
        learner.predict_batched(learner.batched(params), qx[None].double())
    for steps in (-1, 1.5, True):
        with pytest.raises(ValueError, match=rf"steps must be a non-negative int, got "
                                             rf"{steps!r}"):
            learner.adapt(sx, sy, steps=steps)
        with pytest.raises(ValueError, match="steps must be a non-negative int"):
            learner.adapt_path_batched(sx[None], sy[None], steps)
    assert learner.adapt(sx, sy, steps=0).keys() == params.keys()         # still ignored
    prefixed = {f"net.{k}": v for k, v in params.items()}
    with pytest.raises(ValueError, match=rf"{name}: params has names the model does not have"):
        learner.predict(prefixed, qx)
    with pytest.raises(ValueError, match=rf"{name}: params must be a dict"):
        learner.predict([params], qx)


def test_checkpoint_and_recompute_inner_loop_may_not_disagree():
    """``checkpoint`` (the older name) silently won over an explicit
    ``recompute_inner_loop=False``."""
    for old, new in ((True, False), (False, True)):
        with pytest.raises(ValueError, match=rf"MAML\(checkpoint={old}, recompute_inner_loop="
                                             rf"{new}\) conflict"):
            ml.meta.MAML(mlp(), checkpoint=old, recompute_inner_loop=new)
    with pytest.raises(ValueError, match="conflict"):
        ml.meta.ANIL(mlp(), checkpoint=True, recompute_inner_loop=False)
    assert ml.meta.MAML(mlp(), checkpoint=True, recompute_inner_loop=True).recompute_inner_loop
    assert ml.meta.MAML(mlp(), checkpoint=True).recompute_inner_loop
    assert not ml.meta.MAML(mlp(), checkpoint=False).recompute_inner_loop
    assert ml.meta.ANIL(mlp(), checkpoint=True).recompute_inner_loop


def _learners():
    return [
        ml.meta.MAML(MLP(in_dim=8, hidden=(8,), out_dim=3), loss="ce"),
        ml.meta.Reptile(MLP(in_dim=8, hidden=(8,), out_dim=3), loss="ce"),
        ml.meta.Pretrain(MLP(in_dim=8, hidden=(8,), out_dim=3), loss="ce"),
        ml.meta.R2D2(MLP(in_dim=8, hidden=(8,), out_dim=3)),
    ]


def _flat_task(tasks=2, ways=3):
    g = torch.Generator().manual_seed(0)
    y = torch.arange(ways).repeat(tasks, 2)                                  # [B, 2*ways]
    return torch.randn(tasks, 2 * ways, 8, generator=g), y


@pytest.mark.parametrize("learner", _learners(), ids=lambda l: type(l).__name__)
@pytest.mark.parametrize("dtype", [torch.uint8, torch.int64, torch.complex64])
def test_non_float_inputs_are_named_not_a_torch_matmul_error(learner, dtype):
    sx, sy = _flat_task()
    params = learner.adapt(sx[0], sy[0])
    bad = sx.to(dtype)
    with pytest.raises(ValueError, match=rf"support_x is {dtype} but inputs must be real "
                                         r"floating point"):
        learner.adapt(bad[0], sy[0])
    with pytest.raises(ValueError, match=rf"x is {dtype} but inputs must be real floating"):
        learner.predict(params, bad[0])
    with pytest.raises(ValueError, match=rf"support_x is {dtype} but inputs must be real"):
        learner.adapt_path_batched(bad, sy)


def test_integer_inputs_stay_allowed_for_a_model_with_its_own_embedding():
    model = torch.nn.Sequential(torch.nn.Embedding(10, 4), torch.nn.Flatten(),
                                torch.nn.Linear(8, 3))
    learner = ml.meta.MAML(model, loss="ce")
    x, y = torch.randint(0, 10, (6, 2)), torch.arange(3).repeat(2)
    params = learner.adapt(x, y)
    assert learner.predict(params, x).shape == (6, 3)


@pytest.mark.parametrize("learner", _learners(), ids=lambda l: type(l).__name__)
def test_predict_names_params_in_another_dtype(learner):
    sx, sy = _flat_task()
    params = learner.adapt(sx[0], sy[0])
    cast = {k: v.double() for k, v in params.items()}
    with pytest.raises(ValueError, match=r"params\['.*'\] is \[.*\] torch.float64 on cpu but the "
                                         r"model.s tensor of that name is \[.*\] torch.float32"):
        learner.predict(cast, sx[0])


def test_reptile_predict_names_params_that_are_not_a_dict():
    learner = ml.meta.Reptile(MLP(in_dim=8, hidden=(8,), out_dim=3), loss="ce")
    sx, sy = _flat_task()
    params = learner.adapt(sx[0], sy[0])
    with pytest.raises(ValueError, match="params must be a dict name -> tensor"):
        learner.predict(list(params.values()), sx[0])


@pytest.mark.parametrize("learner", _learners(), ids=lambda l: type(l).__name__)
def test_adapt_path_batched_names_mismatched_or_empty_batches(learner):
    sx, sy = _flat_task()
    with pytest.raises(ValueError, match=r"\[2, 6, 8\] and \[1, 6\]"):
        learner.adapt_path_batched(sx, sy[:1])
    with pytest.raises(ValueError, match=r"B = 0|B >= 1"):
        learner.adapt_path_batched(sx[:0], sy[:0])


@pytest.mark.parametrize("make, name", [(ml.meta.ANIL, "ANIL"), (ml.meta.MAML, "MAML"),
                                        (ml.meta.Reptile, "Reptile")])
def test_test_time_errors_name_the_learner_the_user_built(make, name):
    """ANIL's adapt/predict errors said "MAML:": ANIL is built as a MAML."""
    learner = make(mlp(), loss="ce")
    with pytest.raises(ValueError, match=rf"^{name}: support_x is torch.uint8"):
        learner.adapt(torch.zeros(6, 4, dtype=torch.uint8), torch.arange(3).repeat(2))
    with pytest.raises(ValueError, match=rf"^{name}: x is torch.int64"):
        learner.predict(dict(learner.model.named_parameters()), torch.zeros(2, 4).long())

"""Bad input to the continual-learning API from a notebook: a clear ValueError naming the
argument and value, never a deep torch traceback, a hang or a silently wrong number."""

from __future__ import annotations

import itertools

import pytest
import torch

from metaloop.continual import (
    evaluate_experiences,
    finetune_experience,
    init_heads,
    init_params,
    logits_of_head,
    mixed_batches,
)
from metaloop.continual.scenarios import (
    Experience,
    fashion_mnist_experiences,
    omniglot_alphabets,
)
from metaloop.models import MLP

D = 4


def experience(name="a", head="A", classes=2, n=20, seed=0, dtype=torch.float32):
    g = torch.Generator().manual_seed(seed)
    x, y = torch.randn(n, D, generator=g, dtype=dtype), torch.arange(n) % classes
    return Experience(name, head, classes, tuple(range(classes)), (x, y), (x[:4], y[:4]),
                      (x, y))


def body(dtype=torch.float32):
    torch.manual_seed(0)
    return MLP(in_dim=D, hidden=(8,), out_dim=2).to(dtype)


def replace(e, split, x=None, y=None):
    old_x, old_y = getattr(e, split)
    return e._replace(**{split: (old_x if x is None else x, old_y if y is None else y)})


@pytest.mark.parametrize("batch_size", [0, -1, 2.0, True])
def test_mixed_batches_refuses_a_batch_size_that_would_repeat_empty_batches(batch_size):
    e = experience()
    batches = mixed_batches(*e.train, None, batch_size, 0.0)
    with pytest.raises(ValueError, match="batch_size must be a positive int"):
        next(batches)


@pytest.mark.parametrize("batch_size", [0, -1])
def test_evaluate_experiences_refuses_a_bad_batch_size(batch_size):
    e, m = experience(), body()
    with pytest.raises(ValueError, match="batch_size must be a positive int"):
        evaluate_experiences(m, init_params(m, [e]), [e], batch_size=batch_size)


def test_evaluate_experiences_names_an_unknown_split():
    e, m = experience(), body()
    with pytest.raises(ValueError, match="split must be one of .* got 'valid'"):
        evaluate_experiences(m, init_params(m, [e]), [e], split="valid")


@pytest.mark.parametrize("sizes, dim, message", [
    ({"A": 2}, 0, "feature_dim must be a positive int, got 0"),
    ({"A": 0}, 4, "head 'A' needs a positive int number of outputs, got 0"),
])
def test_init_heads_names_bad_sizes(sizes, dim, message):
    with pytest.raises(ValueError, match=message):
        init_heads(sizes, dim)


def test_init_params_needs_an_experience():
    with pytest.raises(ValueError, match="init_params needs at least one experience"):
        init_params(body(), [])


def test_heads_follow_the_body_dtype_so_a_float64_body_trains():
    e, m = experience(dtype=torch.float64), body(torch.float64)
    params = init_params(m, [e], generator=torch.Generator().manual_seed(0))
    assert params["heads.A.weight"].dtype == torch.float64
    out = finetune_experience(m, params, e, steps=2, replay_ratio=0.0, eval_every=1)
    assert out.params["heads.A.weight"].dtype == torch.float64


def test_heads_of_a_float32_body_are_unchanged():
    e, m = experience(), body()
    a = init_params(m, [e], generator=torch.Generator().manual_seed(3))
    b = init_heads({"A": 2}, 8, torch.Generator().manual_seed(3))
    torch.testing.assert_close(a["heads.A.weight"], b["heads.A.weight"], rtol=0, atol=0)


def test_data_in_another_dtype_than_the_params_is_named():
    m, e = body(), experience()
    params = init_params(m, [e])
    with pytest.raises(ValueError, match="'a' has train inputs of dtype torch.float64 but the "
                                         "params are torch.float32"):
        finetune_experience(m, params, replace(e, "train", x=e.train[0].double()), steps=2,
                            replay_ratio=0.0)


def test_float_labels_are_named():
    m, e = body(), experience()
    params = init_params(m, [e])
    with pytest.raises(ValueError, match="'a' has train labels torch.float32 .* int64"):
        finetune_experience(m, params, replace(e, "train", y=e.train[1].float()), steps=2,
                            replay_ratio=0.0)


def test_nan_training_inputs_are_named_not_trained_into_nan_params():
    m, e = body(), experience()
    params = init_params(m, [e])
    x = e.train[0].clone()
    x[3, 1] = float("nan")
    with pytest.raises(ValueError, match="'a' has non-finite .* training inputs"):
        finetune_experience(m, params, replace(e, "train", x=x), steps=2, replay_ratio=0.0)


def test_nan_in_earlier_replay_data_is_named():
    m, a, b = body(), experience(), experience("b", "B", seed=1)
    params = init_params(m, [a, b])
    x = a.train[0].clone()
    x[0, 0] = float("inf")
    with pytest.raises(ValueError, match="'a' has non-finite"):
        finetune_experience(m, params, b, earlier=[replace(a, "train", x=x)], steps=2)


@pytest.mark.parametrize("keep", ["False", "yes", 1.0])
def test_keep_heads_given_as_a_string_is_named(keep):
    m, a, b = body(), experience(), experience("b", "B", seed=1)
    params = init_params(m, [a, b])
    with pytest.raises(ValueError, match="keep_heads must be True, False or a mapping"):
        finetune_experience(m, params, b, earlier=[a], keep_heads=keep, steps=2)


def test_a_finetuned_run_still_matches_itself():
    """The checks add nothing to the numbers: two seeded runs agree bit for bit."""
    def run():
        m, a, b = body(), experience(), experience("b", "B", seed=1)
        params = init_params(m, [a, b], generator=torch.Generator().manual_seed(0))
        return finetune_experience(m, params, b, earlier=[a], steps=3, batch_size=8,
                                   generator=torch.Generator().manual_seed(1)).params
    p, q = run(), run()
    for k in p:
        torch.testing.assert_close(p[k], q[k], rtol=0, atol=0)


@pytest.mark.parametrize("flatten", ["False", "no", None, 2])
def test_scenario_flatten_given_as_a_string_is_refused(flatten):
    with pytest.raises(ValueError, match="flatten must be True or False"):
        fashion_mnist_experiences([(0, 1)], flatten=flatten)
    with pytest.raises(ValueError, match="flatten must be True or False"):
        omniglot_alphabets(alphabets=1, flatten=flatten)


def test_omniglot_alphabets_by_one_name_and_no_repeats(omniglot_root):
    (first,) = omniglot_alphabets(omniglot_root, alphabets=1)
    (by_name,) = omniglot_alphabets(omniglot_root, alphabets=first.name)
    assert by_name.name == first.name
    with pytest.raises(ValueError, match="listed more than once"):
        omniglot_alphabets(omniglot_root, alphabets=[first.name, first.name])


def test_mixed_batches_unchanged_for_a_valid_batch_size():
    e = experience()
    a = list(itertools.islice(mixed_batches(*e.train, None, 4, 0.0,
                                            torch.Generator().manual_seed(0)), 3))
    b = list(itertools.islice(mixed_batches(*e.train, None, 4, 0.0,
                                            torch.Generator().manual_seed(0)), 3))
    assert all(torch.equal(u.x, v.x) and u.y.numel() == 4 for u, v in zip(a, b))


def test_inputs_and_labels_of_different_lengths_are_named():
    m, a, b = body(), experience(), experience("b", "B", seed=1)
    params = init_params(m, [a, b])
    short = replace(a, "train", y=a.train[1][:-3])
    with pytest.raises(ValueError, match=r"'a' has train inputs \[20, 4\] and labels \[17\]"):
        finetune_experience(m, params, b, earlier=[short], steps=2)


def test_replay_buffers_refuse_misaligned_inputs_and_labels():
    from metaloop.continual import replay_buffer, reservoir_update
    from metaloop.continual.replay import empty_buffer
    a = experience()
    short = replace(a, "train", y=a.train[1][:-1])
    with pytest.raises(ValueError, match=r"inputs \[20, 4\] and labels \[19\]"):
        replay_buffer([short])
    with pytest.raises(ValueError, match=r"inputs \[20, 4\] and labels \[19\]"):
        reservoir_update(empty_buffer(a.train[0]), a.train[0], a.train[1][:-1], 0, 5)


@pytest.mark.parametrize("pretrained", ["False", "True", None])
def test_run_sequence_refuses_pretrained_given_as_a_string(pretrained):
    from metaloop.continual import run_sequence
    m, a, b = body(), experience(), experience("b", "B", seed=1)
    with pytest.raises(ValueError, match="pretrained must be True or False"):
        run_sequence(m, init_params(m, [a, b]), [a, b], "naive", pretrained=pretrained,
                     steps=2)


def test_data_on_another_device_than_the_params_is_named():
    m, e = body(), experience()
    params = init_params(m, [e])
    with pytest.raises(ValueError, match="'a' has val inputs on meta but the params are on cpu"):
        finetune_experience(m, params, replace(e, "val", x=e.val[0].to("meta")), steps=2,
                            replay_ratio=0.0)


def test_logits_of_head_names_a_missing_head_or_features_that_do_not_fit():
    params = init_heads({"digits": 3}, 8, torch.Generator().manual_seed(0))
    assert logits_of_head(params, "digits", torch.randn(5, 8)).shape == (5, 3)
    with pytest.raises(ValueError, match=r"no head 'letters' .* its heads are \['digits'\]"):
        logits_of_head(params, "letters", torch.randn(5, 8))
    for feats in (torch.randn(5, 7), torch.randn(5, 8).double(), torch.randn(5, 8, device="meta")):
        with pytest.raises(ValueError, match=r"do not fit head 'digits', heads.digits.weight "
                                             r"\[3, 8\] torch.float32 on cpu"):
            logits_of_head(params, "digits", feats)


@pytest.mark.parametrize("progress", [True, 1])
def test_a_progress_that_is_not_callable_is_named_before_any_step(progress):
    """``ml.train`` turns its own bar on with progress=True; these call progress(n), and a
    bool failed deep inside with "'bool' object is not callable" after the first step."""
    from metaloop.continual import run_sequence

    m, a, b = body(), experience("a", "A"), experience("b", "B", seed=1)
    with pytest.raises(ValueError, match=rf"finetune_experience: progress must be None or "
                                         rf"False \(none\), or a callable progress\(n\).*"
                                         rf"got {progress}"):
        finetune_experience(m, init_params(m, [a]), a, steps=2, progress=progress)
    with pytest.raises(ValueError, match=rf"run_sequence: progress must be None or False "
                                         rf"\(none\), or a callable .*got {progress}"):
        run_sequence(m, init_params(m, [a, b]), [a, b], "naive", steps=2, progress=progress)


def test_progress_false_is_none_as_ml_evaluate_takes_it():
    """False (ml.train's and ml.evaluate's "no bar") was refused here as not callable."""
    from metaloop.continual import run_sequence

    m, a, b = body(), experience("a", "A"), experience("b", "B", seed=1)
    finetune_experience(m, init_params(m, [a]), a, steps=2, replay_ratio=0, progress=False)
    run_sequence(m, init_params(m, [a, b]), [a, b], "naive", steps=2, progress=False)


def test_a_stream_with_two_experiences_of_one_name_is_refused_before_any_training():
    """The accuracy matrix is by name: a repeated name merged two columns, and the stream
    was refused only when the repeat was reached, after the earlier experiences trained."""
    from metaloop.continual import run_sequence
    m = body()
    stream = [experience(n, h, seed=i) for i, (n, h) in enumerate(zip("abca", "ABCD"))]
    params = init_params(m, stream)
    steps = []
    with pytest.raises(ValueError, match=r"^the experiences of a stream need distinct names, "
                                         r"got \['a', 'b', 'c', 'a'\] \('a' more than once\)$"):
        run_sequence(m, params, stream, steps=5, progress=steps.append)
    assert steps == []                                   # nothing trained

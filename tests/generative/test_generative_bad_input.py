"""Bad input to the generative models from a notebook: a clear ValueError naming the
argument and value, never a deep torch traceback or a silently wrong number."""

from __future__ import annotations

import pytest
import torch

from metaloop.generative import (
    AE,
    CVAE,
    VAE,
    Classifier,
    evaluate_bounds,
    fit_code_gaussian,
    fit_generative,
    iwae_bound,
    sample_classes,
    sample_quality,
    train_classifier,
)
from metaloop.generative.quality import accuracy

NAN, INF = float("nan"), float("inf")


def vae(likelihood="bernoulli", **kw):
    torch.manual_seed(0)
    return VAE(3, hidden=(16,), likelihood=likelihood, **kw)


def images(n=12):
    return (torch.rand(n, 1, 28, 28, generator=torch.Generator().manual_seed(0)) * 255
            ).to(torch.uint8)


def binary(n=6):
    return (torch.rand(n, 1, 28, 28, generator=torch.Generator().manual_seed(1)) > 0.5).float()


@pytest.mark.parametrize("beta", [INF, NAN, -1.0, "1", None])
def test_vae_refuses_a_beta_that_is_not_a_finite_number(beta):
    with pytest.raises(ValueError, match="beta must be >= 0"):
        VAE(3, beta=beta)


@pytest.mark.parametrize("k", [0, 2.5, "5", True])
def test_iwae_bound_names_a_bad_k(k):
    with pytest.raises(ValueError, match="iwae_bound needs k >= 1"):
        iwae_bound(vae(), binary(), k)


@pytest.mark.parametrize("kw, message", [
    ({"k": -1}, "k must be an int >= 0"),
    ({"k": 2.0}, "k must be an int >= 0"),
    ({"batch_size": 0}, "batch_size must be a positive int"),
    ({"batch_size": -1}, "batch_size must be a positive int"),
    ({"chunk": 0}, "chunk must be a positive int"),
])
def test_evaluate_bounds_names_bad_sizes(kw, message):
    with pytest.raises(ValueError, match=message):
        evaluate_bounds(vae(), binary(), **kw)


def test_evaluate_bounds_refuses_no_data_instead_of_reporting_zeros():
    with pytest.raises(ValueError, match="N >= 1"):
        evaluate_bounds(vae(), binary()[:0])


@pytest.mark.parametrize("likelihood, x, message", [
    ("bernoulli", binary() * 255, r"pixels must lie in \[0, 1\]"),
    ("bernoulli", torch.rand(4, 1, 28, 28), "needs binary pixels"),
    ("gaussian", torch.full((4, 1, 28, 28), NAN), "finite"),
    ("cbernoulli", binary() * 2, r"pixels must lie in \[0, 1\]"),
])
def test_evaluate_bounds_refuses_pixels_that_do_not_suit_the_likelihood(likelihood, x, message):
    with pytest.raises(ValueError, match=message):
        evaluate_bounds(vae(likelihood), x)


def test_evaluate_bounds_names_labels_that_are_not_one_per_example():
    with pytest.raises(ValueError, match=r"labels must be one per example, \[6\]"):
        evaluate_bounds(CVAE(2, 3, hidden=(16,)), binary(), torch.zeros(3, dtype=torch.long))


def test_evaluate_bounds_unchanged_on_valid_input():
    m, x = vae(), binary()
    a, b = evaluate_bounds(m, x, k=3, batch_size=4), evaluate_bounds(m, x, k=3, batch_size=4)
    assert a == b and a["n"] == 6 and a["nll"] > 0


@pytest.mark.parametrize("kw, message", [
    ({"lr": 0.0}, "lr must be > 0"),
    ({"lr": INF}, "lr must be > 0"),
    ({"lr": -1e-3}, "lr must be > 0"),
    ({"lr_end": -1e-4}, "lr_end must be > 0"),
    ({"lr_end": 0.0}, "lr_end must be > 0"),
    ({"cpu_budget_s": -1}, "cpu_budget_s must be > 0"),
    ({"cpu_budget_s": 0}, "cpu_budget_s must be > 0"),
])
def test_fit_generative_names_bad_rates_and_budgets(kw, message):
    with pytest.raises(ValueError, match=message):
        fit_generative(vae(), images(), epochs=1, progress=False, **kw)


def test_fit_generative_refuses_no_images():
    with pytest.raises(ValueError, match="at least one training image"):
        fit_generative(vae(), images()[:0], epochs=1, progress=False)


@pytest.mark.parametrize("n", [6, 24])
def test_fit_generative_names_labels_that_are_not_one_per_image(n):
    labels = torch.arange(n) % 2
    with pytest.raises(ValueError, match=rf"labels must be one per image, \[12\], got \[{n}\]"):
        fit_generative(CVAE(2, 3, hidden=(16,)), images(), labels, epochs=1, progress=False)


def test_fit_generative_names_a_model_in_another_dtype():
    with pytest.raises(ValueError, match="model's parameters are torch.float64 but the training "
                                         "pixels are torch.float32"):
        fit_generative(vae().double(), images(), epochs=1, progress=False)


def test_cvae_labels_on_another_device_are_named():
    m = CVAE(2, 3, hidden=(16,))
    y = torch.zeros(4, dtype=torch.long, device="meta")
    with pytest.raises(ValueError, match="labels are on meta but the inputs are on cpu"):
        m.sample(4, y=y)


@pytest.mark.parametrize("classes, message", [
    ([0.7, 1.2], "classes must be integer class indices"),
    ([], "no classes to sample"),
])
def test_sample_classes_refuses_classes_it_would_truncate_or_drop(classes, message):
    with pytest.raises(ValueError, match=message):
        sample_classes(CVAE(2, 3, hidden=(16,)), classes, 2)


def test_ae_sample_names_a_code_gaussian_of_another_size():
    torch.manual_seed(0)
    m = AE(3, hidden=(16,))
    with pytest.raises(ValueError, match=r"code_gaussian must be \(mean \[L\], cov \[L, L\]\) "
                                         r"with L = 3 .* got \[\[5\], \[5, 5\]\]"):
        m.sample(2, code_gaussian=(torch.zeros(5), torch.eye(5)))


def test_fit_code_gaussian_names_a_bad_batch_size():
    torch.manual_seed(0)
    with pytest.raises(ValueError, match="batch_size must be a positive int, got 0"):
        fit_code_gaussian(AE(3, hidden=(16,)), binary(), batch_size=0)


@pytest.mark.parametrize("kw, message", [
    ({"batch_size": 0}, "batch_size must be a positive int"),
    ({"batch_size": -1}, "batch_size must be a positive int"),
    ({"lr": INF}, "lr must be > 0"),
])
def test_train_classifier_names_bad_options(kw, message):
    with pytest.raises(ValueError, match=message):
        train_classifier(images(), torch.arange(12) % 3, 3, epochs=1, progress=False, **kw)


@pytest.mark.parametrize("labels, message", [
    (torch.arange(12) % 3 + 1, r"labels must lie in \[0, n_classes=3\)"),
    ((torch.arange(12) % 3).float(), "labels must be int64"),
])
def test_train_classifier_names_bad_labels(labels, message):
    with pytest.raises(ValueError, match=message):
        train_classifier(images(), labels, 3, epochs=1, progress=False)


def test_train_classifier_refuses_no_images():
    with pytest.raises(ValueError, match="N >= 1"):
        train_classifier(images()[:0], torch.zeros(0, dtype=torch.long), 3, epochs=1,
                         progress=False)


def classifier():
    torch.manual_seed(0)
    return Classifier(3).eval()


@pytest.mark.parametrize("confidence", [90, 0.0, -0.5, NAN, True])
def test_sample_quality_refuses_a_confidence_that_is_not_a_probability(confidence):
    x = torch.rand(4, 1, 28, 28)
    with pytest.raises(ValueError, match=r"confidence must be a probability in \(0, 1\]"):
        sample_quality(classifier(), x, x, confidence=confidence)


@pytest.mark.parametrize("samples, message", [
    ((torch.rand(4, 1, 28, 28) * 255).to(torch.uint8), "samples must be float images"),
    (torch.rand(4, 1, 28, 28) * 255, r"samples must be finite pixels in \[0, 1\]"),
    (torch.full((4, 1, 28, 28), NAN), r"samples must be finite pixels in \[0, 1\]"),
])
def test_sample_quality_refuses_samples_outside_the_unit_range(samples, message):
    with pytest.raises(ValueError, match=message):
        sample_quality(classifier(), samples, torch.rand(4, 1, 28, 28))


@pytest.mark.parametrize("labels", [torch.zeros(4, 1, dtype=torch.long),
                                    torch.zeros(1, dtype=torch.long)])
def test_accuracy_refuses_labels_it_would_broadcast(labels):
    with pytest.raises(ValueError, match=r"one label per image, \[4\]"):
        accuracy(classifier(), torch.rand(4, 1, 28, 28), labels)


@pytest.mark.parametrize("x, message", [
    (torch.rand(2, 1, 32, 32), r"images must be float \[B, 1, 28, 28\] .* got torch.float32 "
                               r"\[2, 1, 32, 32\]"),
    ((torch.rand(2, 1, 28, 28) * 255).to(torch.uint8), r"images must be float \[B, 1, 28, 28\]"),
    (torch.rand(2, 784), r"images must be float \[B, 1, 28, 28\]"),
    (torch.rand(2, 1, 28, 28).double(), "x is torch.float64 but the model's parameters are "
                                        "torch.float32"),
])
def test_models_name_images_of_another_shape_or_dtype(x, message):
    for model in (vae(), AE(3, hidden=(16,))):
        with pytest.raises(ValueError, match=message):
            model.loss(x)


def test_decoding_codes_of_another_latent_size_is_named():
    with pytest.raises(ValueError, match=r"codes z must be \[..., B, L\] with L = 3 .* got "
                                         r"\[2, 5\]"):
        vae().decode_mean(torch.randn(2, 5))


def test_fit_generative_names_images_on_another_device():
    with pytest.raises(ValueError, match="images is on meta but the model's parameters are on "
                                         "cpu"):
        fit_generative(vae(), images().to("meta"), epochs=1, progress=False)


@pytest.mark.parametrize("kw", [{"tv": INF}, {"l2": INF}, {"tv": NAN}, {"l2": -1.0}])
def test_inversion_settings_refuse_a_penalty_that_is_not_finite(kw):
    # QA: tv = inf passed ("penalties must be >= 0") and failed after the training
    from metaloop.generative.inversion import InversionSettings, check_inversion_settings

    with pytest.raises(ValueError, match="inversion penalties must be >= 0 and finite"):
        check_inversion_settings(InversionSettings(**kw))
    check_inversion_settings(InversionSettings(tv=0.0, l2=0.0))


@pytest.mark.parametrize("minutes", [INF, NAN, 0.0, -1.0])
def test_protocol_refuses_max_minutes_that_is_not_a_finite_positive_number(minutes, monkeypatch):
    from metaloop.generative import protocol

    def no_data(s):
        raise AssertionError("the data was read before max_minutes was checked")
    monkeypatch.setattr(protocol, "load_protocol_data", no_data)
    with pytest.raises(ValueError, match="max_minutes must be a finite number > 0"):
        protocol.run(protocol.ProtocolSettings(), "unused", max_minutes=minutes)
    with pytest.raises(ValueError, match="max_minutes must be a finite number > 0"):
        protocol.train_protocol(images(), "unused", protocol.ProtocolSettings(),
                                max_minutes=minutes)


def _gen_calls(model, cvae):
    from metaloop.generative import binarize_dynamic, elbo, invert_classifier, reparameterize

    x = binary()
    return {
        "elbo": lambda g: elbo(model, x, generator=g),
        "iwae_bound": lambda g: iwae_bound(model, x, 2, generator=g),
        "reparameterize": lambda g: reparameterize(torch.zeros(2, 3), torch.zeros(2, 3),
                                                   generator=g),
        "sample": lambda g: model.sample(2, generator=g),
        "sample_classes": lambda g: sample_classes(cvae, [0, 1], 2, generator=g),
        "binarize_dynamic": lambda g: binarize_dynamic(images(), generator=g),
        "invert_classifier": lambda g: invert_classifier(Classifier(2), 0, steps=1,
                                                         generator=g),
    }


@pytest.mark.parametrize("bad", [3, "g", torch.tensor(3)])
def test_a_generator_of_another_type_is_named_before_torch_sees_it(bad):
    torch.manual_seed(0)
    calls = _gen_calls(vae(), CVAE(2, 3, hidden=(16,)))
    for name, call in calls.items():                # torch raised a TypeError naming neither
        with pytest.raises(ValueError, match=rf"^{name}: generator must be a "
                                             rf"torch.Generator or None, got"):
            call(bad)
        call(torch.Generator().manual_seed(0))        # a generator, and None, still work
        call(None)
    with pytest.raises(ValueError, match=r"^sample: generator .*manual_seed\(3\)"):
        AE(3, hidden=(16,)).sample(2, generator=3)


@pytest.mark.parametrize("seed", [1.5, "0", None, True, 2 ** 64])
def test_a_seed_that_torch_cannot_take_is_named_before_any_work(seed):
    from metaloop.generative import binarize_static
    from metaloop.generative.data import split_indices

    model, x = vae(), binary()
    calls = {"fit_generative": lambda: fit_generative(model, images(), epochs=1, seed=seed,
                                                      progress=False),
             "evaluate_bounds": lambda: evaluate_bounds(model, x, seed=seed),
             "train_classifier": lambda: train_classifier(images(4), torch.tensor([0, 1] * 2),
                                                          2, seed=seed, progress=False),
             "binarize_static": lambda: binarize_static(images(), seed=seed),
             "split_indices": lambda: split_indices(torch.tensor([0, 0, 1, 1]), 2, 0.5, seed)}
    before = {k: v.clone() for k, v in model.state_dict().items()}
    for name, call in calls.items():     # RuntimeError / TypeError from torch, or from "+ 1"
        with pytest.raises(ValueError, match=rf"^{name}: seed must be an int"):
            call()
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())


def test_fit_generative_names_a_seed_it_would_overflow_by_one():
    # the largest seed torch takes is 2**64 - 1, and the static binarisation uses seed + 1
    with pytest.raises(ValueError, match=r"seed must be an int in \[-2\*\*63, 2\*\*64 - 2\]"):
        fit_generative(vae(), images(), epochs=1, seed=2 ** 64 - 1, binarize="static",
                       progress=False)


@pytest.mark.parametrize("progress", ["no", None, 0])
def test_progress_that_is_not_true_or_false_is_named(progress):
    # "no" drew a bar (a true string); None passed for False
    model = vae()
    for name, call in {
            "fit_generative": lambda: fit_generative(model, images(), epochs=1,
                                                     progress=progress),
            "evaluate_bounds": lambda: evaluate_bounds(model, binary(), progress=progress),
            "train_classifier": lambda: train_classifier(images(4), torch.tensor([0, 1] * 2),
                                                         2, progress=progress)}.items():
        with pytest.raises(ValueError, match=rf"^{name}: progress must be True or False"):
            call()


def test_an_on_epoch_that_is_not_callable_is_named_before_training():
    model = vae()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    with pytest.raises(ValueError, match=r"on_epoch must be None or a callable"):
        fit_generative(model, images(), epochs=1, on_epoch="log", progress=False)
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())

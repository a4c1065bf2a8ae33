"""Bad input to the generative API and to ``metaloop vae`` is refused by a ValueError (the CLI:
status 2) that names the problem, before any training and before anything is written:
classifiers that inversion cannot use, images of another size than the model's, Gaussian
parameters of two shapes, a record path that is a file of the run's own --out, repeated
--classes, and data of one class for what needs two. NumPy integers are sizes like Python's."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from metaloop import generative as gen
from metaloop.cli.main import main
from metaloop.evaluate import records

sys.path.insert(0, str(Path(__file__).parent))
from user_images import write_shape_folder  # noqa: E402

TINY = ["--epochs", "1", "--hidden", "8", "--no-progress"]


def _refused(argv: list[str], out: Path, capsys, *words: str) -> str:
    """``metaloop vae`` with ``argv`` exits 2 naming each of ``words``, prints nothing on
    stdout and leaves no ``out``."""
    capsys.readouterr()
    assert main(["--threads", "1", "vae", "--out", str(out), *argv]) == 2
    captured = capsys.readouterr()
    assert captured.out == "" and not out.exists()
    for w in words:
        assert w in captured.err, (w, captured.err)
    return captured.err


# invert_classifier: classifiers it cannot follow

def _linear() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Flatten(), nn.Linear(16, 3))


@pytest.mark.parametrize("steps", [0, 3])
def test_nan_logits_are_refused_not_returned_as_nan_images(steps):
    def nan(x):
        return torch.full((len(x), 3), float("nan"))

    with pytest.raises(ValueError, match="NaN or infinite logits on the starting images"):
        gen.invert_classifier(nan, 0, steps=steps, image_shape=(1, 4, 4))


def test_logits_that_turn_nan_during_the_inversion_are_refused():
    calls = []

    def late(x):                        # finite on the starting images, then inf
        calls.append(1)
        out = x.flatten(1)[:, :3] * 1.0
        return out if len(calls) == 1 else out * float("inf")

    with pytest.raises(ValueError, match="NaN or infinite logits during the inversion"):
        gen.invert_classifier(late, 0, steps=3, image_shape=(1, 4, 4))


def test_a_classifier_not_differentiable_in_its_input_is_refused():
    a = _linear()

    def no_grad(x):
        with torch.no_grad():
            return a(x)

    for clf in (lambda x: a(x).detach(), no_grad):
        with pytest.raises(ValueError, match="do not depend differentiably on its input"):
            gen.invert_classifier(clf, 1, steps=2, l2=0.1, image_shape=(1, 4, 4))
    x = gen.invert_classifier(a, 1, steps=2, image_shape=(1, 4, 4),
                              generator=torch.Generator().manual_seed(0))
    assert x.shape == (1, 1, 4, 4) and bool(torch.isfinite(x).all())


# fit_generative, the bounds, the sizes

def test_fit_generative_names_images_of_another_size_than_the_model():
    u8 = torch.zeros(8, 1, 32, 32, dtype=torch.uint8)
    with pytest.raises(ValueError) as e:
        gen.fit_generative(gen.VAE(4), u8, epochs=1, progress=False)
    assert str(e.value) == ("images must be uint8 [N, 1, 28, 28] (the model's image_shape), "
                            "got uint8 [8, 1, 32, 32]")
    with pytest.raises(ValueError, match=r"uint8 \[N, 1, 28, 28\] .* got uint8 \[8, 3, 28"):
        gen.fit_generative(gen.AE(4), torch.zeros(8, 3, 28, 28, dtype=torch.uint8),
                           epochs=1, progress=False)


def test_gaussian_parameters_of_two_shapes_are_named():
    with pytest.raises(ValueError, match=r"gaussian_kl .* got mu \[2, 3\] and logvar \[2, 4\]"):
        gen.gaussian_kl(torch.zeros(2, 3), torch.zeros(2, 4))
    with pytest.raises(ValueError, match=r"reparameterize .* mu \[2, 3\] and logvar \[3\]"):
        gen.reparameterize(torch.zeros(2, 3), torch.zeros(3))
    with pytest.raises(ValueError, match=r"mu \[2, 3\] and logvar \[2, 1\]"):
        gen.reparameterize(torch.zeros(2, 3), torch.zeros(2, 1), n=2)
    assert gen.gaussian_kl(torch.zeros(2, 3), torch.zeros(2, 3)).tolist() == [0.0, 0.0]


def test_numpy_integers_are_sizes_and_bools_are_not():
    m = gen.VAE(np.int64(4), image_shape=(np.int64(1), 8, 8), hidden=(np.int32(6),),
                n_classes=np.int64(0))
    assert (m.latent, m.image_shape, m.n_classes) == (4, (1, 8, 8), 0)
    assert all(type(v) is int for v in (m.latent, *m.image_shape, m.n_classes))
    c = gen.CVAE(np.int64(2), np.int64(3), image_shape=(1, 8, 8), hidden=(6,))
    assert (c.n_classes, c.latent) == (2, 3) and type(c.n_classes) is int
    assert gen.AE(np.int16(3), image_shape=(1, 8, 8)).latent == 3
    assert gen.sample_classes(c, [1], np.int64(2)).shape == (1, 2, 1, 8, 8)
    assert c.sample(np.int64(2), y=torch.tensor([0, 1])).shape == (2, 1, 8, 8)
    for bad in (True, 2.0, 0, -1, "4"):
        with pytest.raises(ValueError, match="latent size must be a positive int"):
            gen.VAE(bad)
    for bad in (True, 1.0, -1):
        with pytest.raises(ValueError, match="n_classes must be an int >= 0"):
            gen.VAE(3, n_classes=bad)
    with pytest.raises(ValueError, match="n_classes of a CVAE must be a positive int"):
        gen.CVAE(np.bool_(True), 3)


# metaloop vae: refused before any training

@pytest.fixture(scope="module")
def shapes(tmp_path_factory) -> Path:
    """3 classes of 10 images."""
    return write_shape_folder(tmp_path_factory.mktemp("inputs") / "shapes", per_class=10)


def test_repeated_classes_are_refused(shapes, tmp_path, capsys):
    _refused(["--model", "cvae", "--data", str(shapes), "--latent", "2", "--classes",
              "2,2,1", *TINY], tmp_path / "out", capsys, "--classes 2,2,1 names 2 more than once")


@pytest.mark.parametrize("name", ["results.json", "curve.json", "ckpt-00000001/state.json",
                                  "final-k5000-n100.json"])
def test_a_record_that_is_a_file_of_the_runs_out_is_refused(name, tmp_path):
    out = tmp_path / "run"
    with pytest.raises(ValueError, match=f"record path .* is {name}, a file that the run "
                                         f"writes in its --out folder"):
        records.check_record_path(out / name, out=out)
    records.check_record_path(out / "record.json", out=out)       # another name: fine
    records.check_record_path(tmp_path / "results.json", out=out)   # beside --out: fine
    records.check_record_path(out / name)                          # no --out given


def test_vae_refuses_its_own_results_json_as_record_before_training(tmp_path, capsys):
    shapes = write_shape_folder(tmp_path / "shapes", per_class=20)   # enough for a sweep
    out = tmp_path / "sweep"
    _refused(["--sweep-latent", "2", "--data", str(shapes), "--k", "0",
              "--classifier-epochs", "1", "--quality-samples", "4", "--record",
              str(out / "results.json"), *TINY], out, capsys,
             f"record path '{out / 'results.json'}' is results.json, a file that the run "
             f"writes in its --out folder")


def test_one_class_is_named_before_the_test_split(tmp_path, capsys):
    one = write_shape_folder(tmp_path / "one", per_class=10, shapes=("circle",))
    _refused(["--model", "cvae", "--data", str(one), "--latent", "2", *TINY],
             tmp_path / "out", capsys,
             "the conditional VAE (--model cvae) needs at least 2 classes, but")
    _refused(["--sweep-latent", "2", "--data", str(one), "--k", "0", *TINY],
             tmp_path / "out", capsys,
             "the sweep's scoring classifier (--sweep-latent) needs at least 2 classes")


def test_the_inversion_studys_message_is_grammatical(tmp_path, capsys):
    one = write_shape_folder(tmp_path / "one", per_class=30, shapes=("circle",))
    _refused(["--inversion-transfer", "--data", str(one), "--no-progress"],
             tmp_path / "out", capsys,
             "each of the inversion study's classifiers needs at least 2 classes")


def test_invert_classifier_under_no_grad_and_inference_mode_is_the_same_inversion():
    """Under ``torch.inference_mode()`` the inversion blamed the classifier ("it detaches
    them or runs under torch.no_grad"): ``enable_grad`` does not leave inference mode."""
    from metaloop.generative.invert import invert_classifier

    torch.manual_seed(0)
    clf = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(784, 3))
    start = torch.rand(2, 1, 28, 28)

    def run():
        return invert_classifier(clf, [1, 2], steps=4, init=start, l2=0.1, tv=0.1)

    want = run()
    with torch.no_grad():
        assert torch.equal(run(), want)
    with torch.inference_mode():
        got = run()
    assert torch.equal(got, want) and not got.is_inference()
    assert torch.is_grad_enabled()


def test_only_the_runs_own_files_are_refused_as_record_paths(tmp_path):
    """A record path is refused where the run writes that file (vae: results.json,
    curve.json, final-k*-n*.json, its checkpoint folders' files), not for any name that
    merely starts with ``ckpt-`` or another command's file name."""
    out = tmp_path / "out"
    for name in ("results.json", "curve.json", "final-k5000-n100.json", "ckpt-3/state.json"):
        with pytest.raises(ValueError, match="a file that the run writes in its --out"):
            records.check_record_path(out / name, out=out)
    for name in ("ckpt-notes.json", "timing.json", "runs.json", "record.json"):
        assert records.check_record_path(out / name, out=out) == out / name


def test_training_the_quality_classifier_on_the_cpu_leaves_cuda_alone(monkeypatch, recwarn):
    """``train_classifier`` seeded its CPU-built classifier inside ``fork_rng()``, which
    saves every CUDA device's generator: CUDA was initialised in a CPU run (and warned on a
    machine with several GPUs). The classifier is the same as before: seeded on the CPU."""
    from metaloop.generative import quality
    from metaloop.generative.quality import Classifier, train_classifier

    def no_cuda(*args, **kwargs):
        raise AssertionError("CUDA touched")

    images = torch.randint(0, 256, (8, 1, 28, 28), dtype=torch.uint8)
    labels = torch.arange(2).repeat(4)
    torch.manual_seed(1)
    before = torch.get_rng_state()
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    monkeypatch.setattr(torch.cuda, "get_rng_state", no_cuda)
    monkeypatch.setattr(torch.cuda, "set_rng_state", no_cuda)
    monkeypatch.setattr(torch.cuda, "manual_seed_all", no_cuda)
    initial = []

    def classifier(*args):                         # the classifier as initialised
        clf = Classifier(*args)
        initial.append({k: v.clone() for k, v in clf.state_dict().items()})
        return clf

    monkeypatch.setattr(quality, "Classifier", classifier)
    train_classifier(images, labels, 2, epochs=1, seed=3, progress=False)
    assert torch.equal(torch.get_rng_state(), before)        # the caller's stream untouched
    torch.default_generator.manual_seed(3)
    want = Classifier(2, 1, (28, 28)).state_dict()           # seeded on the CPU, as before
    assert all(torch.equal(initial[0][k], want[k]) for k in want)
    assert not [w for w in recwarn if "available devices" in str(w.message)]

"""``metaloop vae`` on small or unsuited data and options: it runs, or it stops with status 2
and a message naming the problem before it writes anything; and the continuous likelihoods
get grey values."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
import torch

from metaloop.cli.main import main

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

TINY = ["--epochs", "1", "--hidden", "16", "--latent", "2", "--k", "3", "--no-progress"]






def _vae(root, out, *argv):
    """``metaloop vae`` with the TINY options that the run reads (it refuses the others)."""
    given = set(argv)
    tiny = list(TINY)
    if given & {"--sweep-latent", "--inversion-transfer"}:
        tiny.remove("--latent"), tiny.remove("2")                    # not read by either
    if given & {"--compare-inversion", "--inversion-transfer"} or (
            "--model" in argv and argv[argv.index("--model") + 1] == "ae"):
        tiny.remove("--k"), tiny.remove("3")                        # no NLL measured
    if "--inversion-transfer" in given:
        tiny = ["--no-progress"]                                     # no generator trained
    return main(["--threads", "1", "vae", "--root", str(root), "--out", str(out), *tiny, *argv])


@pytest.mark.parametrize("model", ["ae", "vae", "cvae"])
def test_a_test_set_smaller_than_the_picture_grids_still_gives_every_picture(
        model, tiny_fashion_small, tmp_path):
    # 5 test images: fewer than the 16 reconstructions and the CVAE's 64 labelled samples
    out = tmp_path / model
    assert _vae(tiny_fashion_small, out, "--model", model, "--test-examples", "5") == 0
    results = json.loads((out / "results.json").read_text())
    assert results["n_test"] == 5
    for name in results["pictures"]:
        assert (out / name).read_bytes()[:4] == b"\x89PNG"
    assert {"samples.png", "reconstructions.png", "interpolations.png"} <= set(
        results["pictures"])


@pytest.mark.parametrize("argv, message", [
    (["--test-examples", "1"],
     "need at least 2 test images, got 1: raise --test-examples (now 1)"),
    (["--model", "ae", "--train-examples", "1"],
     "need at least 2 training images, got 1: raise --train-examples (now 1)"),
    (["--sweep-latent", "2", "--test-examples", "3", "--classifier-epochs", "1"],
     "need --quality-samples >= 2 and at least 4 test images, got 2000 and 3"),
    (["--sweep-latent", "2", "--quality-samples", "1", "--classifier-epochs", "1"],
     "need --quality-samples >= 2 and at least 4 test images, got 1 and 60"),
    (["--cpu-budget", "nan"], "cpu budget must be a finite number > 0 of minutes, got nan"),
    (["--lr", "inf"], "learning rates must be finite and > 0, got lr=inf"),
    (["--beta", "inf"], "beta must be finite and >= 0, got inf"),
])
def test_too_little_data_or_bad_numbers_exit_2_before_any_output(argv, message, tiny_fashion_small,
                                                                 tmp_path, capsys):
    out = tmp_path / "run"
    assert _vae(tiny_fashion_small, out, *argv) == 2
    err = capsys.readouterr().err
    assert "metaloop vae: error:" in err and message in err and "Traceback" not in err
    assert not out.exists()


def test_compare_inversion_checks_the_decoder_against_the_data_before_training(
        tiny_fashion_small, tmp_path, capsys):
    # grey pixels for the Bernoulli decoder: refused before the classifiers are trained
    out = tmp_path / "inv"
    assert _vae(tiny_fashion_small, out, "--compare-inversion", "--binarize", "none",
                "--classifier-epochs", "1", "--quality-samples", "20",
                "--invert-steps", "2") == 2
    assert "the Bernoulli decoder needs binary pixels" in capsys.readouterr().err
    assert not out.exists()


@pytest.mark.parametrize("likelihood, binarize", [
    ("bernoulli", "dynamic"), ("gaussian", "none"), ("cbernoulli", "none")])
def test_binarisation_follows_the_likelihood_unless_given(likelihood, binarize, tiny_fashion_small,
                                                          tmp_path):
    out = tmp_path / likelihood
    assert _vae(tiny_fashion_small, out, "--likelihood", likelihood, "--test-examples", "20") == 0
    assert json.loads((out / "results.json").read_text())["settings"]["binarize"] == binarize
    # given explicitly, it is kept
    out = tmp_path / f"{likelihood}-static"
    assert _vae(tiny_fashion_small, out, "--likelihood", likelihood, "--binarize", "static",
                "--test-examples", "20") == 0
    assert json.loads((out / "results.json").read_text())["settings"]["binarize"] == "static"


def test_a_continuous_likelihood_is_measured_on_the_grey_test_images(tiny_fashion_small, tmp_path):
    # the continuous Bernoulli's density of binarised pixels grows without bound as the
    # decoder saturates; on the grey images the test ELBO is that of the grey values: the
    # same model's ELBO recomputed here on grey test pixels
    from safetensors.torch import load_file

    from metaloop.generative import VAE, evaluate_bounds
    from metaloop.generative import data as gdata

    out = tmp_path / "cb"
    assert _vae(tiny_fashion_small, out, "--likelihood", "cbernoulli", "--test-examples", "20",
                "--k", "0") == 0
    results = json.loads((out / "results.json").read_text())
    model = VAE(2, hidden=(16,), likelihood="cbernoulli")
    model.load_state_dict(load_file(str(out / "model.safetensors")))
    model.eval()
    s = results["settings"]
    te = gdata.load("fashion-mnist", "test", str(tiny_fashion_small))
    idx = torch.randperm(len(te.images), generator=torch.Generator().manual_seed(
        s["seed"] + 1))[:20]
    grey = gdata.to_unit(te.images[idx])
    want = evaluate_bounds(model, grey, k=0, batch_size=s["eval_batch"], seed=s["seed"])
    assert results["test"]["elbo"] == pytest.approx(want["elbo"], rel=1e-6)


@pytest.mark.parametrize("argv", [["--sweep-latent", "2"], ["--inversion-transfer"]])
def test_classes_outside_a_cvae_run_exit_2_instead_of_being_ignored(argv, tiny_fashion_small,
                                                                    tmp_path, capsys):
    out = tmp_path / "run"
    assert _vae(tiny_fashion_small, out, *argv, "--classes", "1", "--classifier-epochs", "1",
                "--quality-samples", "20", "--invert-steps", "2") == 2
    assert "--classes only applies to the CVAE" in capsys.readouterr().err
    assert not out.exists()

"""``metaloop vae``: outputs of a tiny run and a tiny sweep, and clear errors on bad input."""

from __future__ import annotations

import json

import pytest
import torch

from metaloop.cli.main import main

TINY = ["--train-examples", "400", "--test-examples", "100", "--epochs", "1",
        "--hidden", "32", "--no-progress", "--threads", "1"]


@pytest.fixture(autouse=True, scope="module")
def _restore_threads():
    n = torch.get_num_threads()
    yield
    torch.set_num_threads(n)


@pytest.mark.parametrize("model", ["vae", "cvae", "ae"])
def test_vae_command_writes_results_and_pictures(model, tmp_path, fashion_mnist_root, capsys):
    out = tmp_path / model
    rc = main(["vae", "--model", model, "--data", "fashion-mnist", "--root",
               str(fashion_mnist_root), "--latent", "3", "--k", "7", "--eval-every", "1",
               "--train-eval-examples", "50", "--out", str(out), *TINY])
    assert rc == 0
    results = json.loads((out / "results.json").read_text())
    assert results["settings"]["model"] == model and results["settings"]["latent"] == 3
    lines = (out / "metrics.jsonl").read_text().splitlines()
    assert len(lines) == 1 and "test_recon" in json.loads(lines[0])
    pictures = {"samples.png", "reconstructions.png", "interpolations.png"}
    if model == "ae":
        pictures.add("samples_fitted.png")
        assert set(results["test"]) == {"recon", "n"}
    else:
        assert {"elbo", "recon", "kl", "nll", "k"} <= set(results["test"])
        assert results["test"]["k"] == 7 and results["test"]["nll"] <= -results["test"]["elbo"] + 5
        assert results["train_subset"]["n"] == 50 and "nll" in results["train_subset"]
    if model == "cvae":
        pictures.add("classes.png")
    assert set(results["pictures"]) == pictures
    for name in pictures:
        assert (out / name).read_bytes()[:4] == b"\x89PNG"
    assert "results.json" in capsys.readouterr().out


def test_sweep_writes_the_picture(tmp_path, fashion_mnist_root):
    out = tmp_path / "sweep"
    rc = main(["vae", "--sweep-latent", "2,5", "--data", "fashion-mnist", "--root",
               str(fashion_mnist_root), "--classifier-epochs", "1", "--quality-samples", "40",
               "--out", str(out), *TINY])
    assert rc == 0
    results = json.loads((out / "results.json").read_text())
    assert results["latents"] == [2, 5]
    assert set(results["runs"]["2"]) == {"ae", "vae"}
    q = results["runs"]["5"]["ae"]["quality"]
    assert len(q) == 2 and all(0 <= v["recognisable"] <= 1 for v in q.values())
    assert (out / "sweep.png").stat().st_size > 1000


@pytest.mark.parametrize("argv, message", [
    (["--latent", "0"], "latent size (--latent) must be a positive int, got 0"),
    (["--latent", "-2"], "latent size (--latent) must be a positive int, got -2"),
    (["--sweep-latent", "2,0"], "latent size (--sweep-latent) must be a positive int, got 0"),
    (["--binarize", "none"], "the Bernoulli decoder needs binary pixels"),
    (["--model", "cvae", "--classes", "3,11"], "unknown class(es) [11] for CVAE sampling"),
    (["--model", "cvae", "--data", "omniglot"], "alphabets are disjoint"),
    (["--classes", "1"], "--classes only applies to the CVAE"),
])
def test_bad_input_exits_2_with_a_clear_message(argv, message, tmp_path, fashion_mnist_root,
                                                capsys):
    rc = main(["vae", "--root", str(fashion_mnist_root), "--out", str(tmp_path), *TINY, *argv])
    err = capsys.readouterr().err
    assert rc == 2
    assert "metaloop vae: error:" in err and message in err
    assert not (tmp_path / "results.json").exists()


def test_bad_argument_syntax_exits_2(capsys):
    with pytest.raises(SystemExit) as e:
        main(["vae", "--sweep-latent", "2,x"])
    assert e.value.code == 2
    assert "comma-separated integers" in capsys.readouterr().err

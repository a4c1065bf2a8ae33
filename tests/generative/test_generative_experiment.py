"""What the end-to-end runs (``metaloop.generative.experiment``) feed their models and checks."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from metaloop.generative import data as gdata
from metaloop.generative import experiment as E
from metaloop.generative.ae import AE


def _grey(n: int, seed: int) -> gdata.ImageData:
    g = torch.Generator().manual_seed(seed)
    images = torch.randint(0, 256, (n, 1, 8, 8), generator=g, dtype=torch.uint8)
    return gdata.ImageData(images, torch.arange(n) % 2, 2, ["a", "b"])


@pytest.mark.parametrize("binarize", ["none", "dynamic"])
def test_the_ae_code_gaussian_is_fitted_to_the_pixels_the_ae_was_trained_on(
        binarize, tmp_path, monkeypatch):
    # A continuous-likelihood AE trains on grey values (--binarize none); its codes were
    # fitted on a binarisation of the training images, inputs it never saw.
    tr, te = _grey(40, 0), _grey(20, 1)
    s = E.Settings(model="ae", likelihood="gaussian" if binarize == "none" else "bernoulli",
                   binarize=binarize, latent=2, hidden=(8,), progress=False)
    torch.manual_seed(0)
    model = AE(2, image_shape=(1, 8, 8), hidden=(8,), likelihood=s.likelihood)
    seen = []
    real_fit = E.fit_code_gaussian
    monkeypatch.setattr(E, "fit_code_gaussian",
                        lambda m, x, **kw: seen.append(x) or real_fit(m, x, **kw))
    want = gdata.eval_pixels(tr.images, binarize, s.seed)
    if binarize == "none":
        assert bool(((want > 0) & (want < 1)).any())            # grey values, as trained
    E.write_pictures(model, s, tr, te, gdata.eval_pixels(te.images, binarize), tmp_path)
    assert len(seen) == 1 and torch.equal(seen[0], want)       # samples_fitted.png
    E._sweep_samples("ae", model, tr, 4, s.seed, s.binarize)
    assert len(seen) == 2 and torch.equal(seen[1], want)       # the sweep's middle column


def test_run_checks_every_test_pixel_before_training_or_writing(tmp_path):
    # one grey pixel in the 1,041st test image, with the Bernoulli decoder and no binarisation
    n = 2100
    x = (np.random.default_rng(0).random((n, 4, 4)) < 0.3).astype(np.uint8) * 255
    y = np.arange(n) % 2
    _, test = gdata.split_indices(torch.as_tensor(y), 2, 0.5, gdata.SPLIT_SEED)
    x[int(test[1040]), 0, 0] = 128
    np.savez(tmp_path / "late_grey.npz", x=x, y=y)
    s = E.Settings(model="vae", data=str(tmp_path / "late_grey.npz"), image_size=4,
                   test_fraction=0.5, invert="never", binarize="none", latent=2,
                   hidden=(8,), epochs=1, k=0, progress=False)
    out = tmp_path / "run"
    with pytest.raises(ValueError, match="1 of the .* pixels lie strictly between 0 and 1"):
        E.run(s, out)
    assert not out.exists()


def test_the_sweep_refuses_omniglots_disjoint_test_alphabets(tmp_path, monkeypatch):
    # its classifier of the 30 background alphabets was "tested" on the labels 0..19 of the
    # 20 other, evaluation alphabets: a number that meant nothing
    monkeypatch.setattr(E, "load_data", lambda s: pytest.fail("loaded data"))
    s = E.Settings(data="omniglot", epochs=1, k=0, progress=False)
    with pytest.raises(ValueError, match="alphabets are disjoint.*omniglot-mixed"):
        E.sweep(s, [2], tmp_path / "sweep")
    assert not (tmp_path / "sweep").exists()


@pytest.mark.parametrize("study", ["run", "sweep", "compare"])
def test_grey_training_pixels_fail_before_anything_is_trained_or_written(
        study, tmp_path, monkeypatch):
    from metaloop.generative import inversion, quality

    x = (np.random.default_rng(0).random((200, 8, 8)) < 0.3).astype(np.uint8) * 255
    y = np.arange(200) % 2
    train, _ = gdata.split_indices(torch.as_tensor(y), 2, 0.5, gdata.SPLIT_SEED)
    x[int(train[5]), 0, 0] = 128                 # one grey pixel in one training image
    np.savez(tmp_path / "grey.npz", x=x, y=y)
    s = E.Settings(model="vae", data=str(tmp_path / "grey.npz"), image_size=8,
                   test_fraction=0.5, invert="never", binarize="none", latent=2, hidden=(8,),
                   epochs=1, k=0, classifier_epochs=1, quality_samples=20, progress=False)
    monkeypatch.setattr(quality, "train_classifier", lambda *a, **k: pytest.fail("trained"))
    out = tmp_path / study
    call = {"run": lambda: E.run(s, out), "sweep": lambda: E.sweep(s, [2], out),
            "compare": lambda: inversion.compare(s, inversion.InversionSettings(), out)}
    with pytest.raises(ValueError, match="1 of the 6,400 pixels lie strictly between 0 and 1"):
        call[study]()
    assert not out.exists()


def _shapes_npz(path):
    x = (np.random.default_rng(0).random((60, 8, 8)) < 0.3).astype(np.uint8) * 255
    np.savez(path, x=x, y=np.arange(60) % 3)
    return E.Settings(model="cvae", data=str(path), image_size=8, test_fraction=0.5,
                      invert="never", latent=2, hidden=(8,), epochs=1, k=0,
                      classifier_epochs=1, quality_samples=6, progress=False)


def test_a_new_run_leaves_no_file_of_the_earlier_run_in_its_folder(tmp_path):
    from dataclasses import replace

    from metaloop.generative import inversion

    s, out = _shapes_npz(tmp_path / "d.npz"), tmp_path / "run"
    E.run(s, out)
    assert (out / "classes.png").exists() and (out / "model.safetensors").exists()
    # a new run over a finished one is refused (test_finished_run_kept_in_python): the
    # CVAE run is one stopped before its results, its model and pictures left
    (out / "results.json").unlink()
    E.run(replace(s, model="vae"), out)
    # the CVAE's classes.png stayed beside the VAE's results, which did not list it
    assert not (out / "classes.png").exists()
    assert sorted(p.name for p in out.glob("*.png")) == sorted(
        __import__("json").loads((out / "results.json").read_text())["pictures"])
    # the transfer study left the VAE's model, metrics and pictures beside its own
    # results.json, which does not describe them
    (out / "results.json").unlink()   # a finished run is refused now: a run stopped before it
    inversion.transfer_study(s, inversion.InversionSettings(steps=1), [0.05], out)
    assert sorted(p.name for p in out.iterdir() if not p.name.startswith(".")) == [
        "results.json"]
    assert inversion.FIGURE in E.PICTURES           # the comparison's figure is one of them


def test_the_saved_model_follows_the_umask_as_the_other_files(tmp_path):
    import os
    import stat

    s, out = _shapes_npz(tmp_path / "d.npz"), tmp_path / "run"
    old = os.umask(0o022)
    try:
        E.run(s, out)
    finally:
        os.umask(old)
    modes = {p.name: stat.S_IMODE(p.stat().st_mode) for p in out.iterdir()
             if not p.name.startswith(".")}
    assert modes["model.safetensors"] == 0o644                # safetensors made it 0600
    assert modes["results.json"] == 0o644


def test_a_path_given_as_a_path_is_written_as_its_text(tmp_path):
    # results.json failed to be written (TypeError: PosixPath is not JSON serializable)
    # after the whole run had trained and drawn
    from dataclasses import replace

    s = _shapes_npz(tmp_path / "d.npz")
    s = replace(s, data=tmp_path / "d.npz", model="vae")
    assert s.data == str(tmp_path / "d.npz")
    r = E.run(s, tmp_path / "run")
    assert __import__("json").loads((tmp_path / "run" / "results.json").read_text())[
        "settings"]["data"] == r["settings"]["data"] == str(tmp_path / "d.npz")


def test_a_progress_setting_that_is_not_true_or_false_is_named_before_anything_is_written(
        tmp_path):
    from dataclasses import replace

    s = replace(_shapes_npz(tmp_path / "d.npz"), progress="no")
    with pytest.raises(ValueError, match="settings: progress must be True or False"):
        E.run(s, tmp_path / "run")
    assert not (tmp_path / "run").exists()

"""``metaloop.build``: every (family, model, method) combination the docs name builds from a
config and takes a finite meta-gradient step on tiny data; the others are refused by name."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from metaloop import build, config

METHODS = config.METHODS
REGRESSION = [m for m in METHODS if m not in config.HEAD_BASED]


def _tensors(path, shape) -> str:
    rng = np.random.default_rng(0)
    y = np.repeat(np.arange(10), 6)
    x = rng.random((len(y), *shape)).astype(np.float32)
    np.savez(path, x=x, y=y)
    return str(path)


def _config(tmp_path, family: str, model: str, method: str) -> dict:
    if family == "sinusoid":
        fam = {"name": "sinusoid", "shots": 3, "queries": 3}
    else:
        shape = (8,) if family == "vectors" else (1, 16, 16)
        fam = {"name": "tensors", "root": _tensors(tmp_path / f"{family}.npz", shape),
               "ways": 2, "shots": 1, "queries": 2, "split_fractions": [0.4, 0.2, 0.4]}
    mod = {"name": "mlp", "hidden": [8]} if model == "mlp" else {"name": model, "channels": 4}
    cfg = config.validate({"family": fam, "model": mod, "method": {"name": method},
                           "train": {"meta_batch": 2}})
    config.check_combinations(cfg)
    config.check_training(cfg)
    return build.resolve_split(cfg)


@pytest.mark.parametrize("family, model, method", [
    *(("sinusoid", "mlp", m) for m in REGRESSION),
    *(("vectors", "mlp", m) for m in METHODS),
    *(("images", "conv4", m) for m in METHODS),
    *(("images", "resnet12", m) for m in ("maml", "protonet")),
])
def test_a_documented_combination_builds_and_takes_a_step(tmp_path, family, model, method):
    torch.set_num_threads(1)
    cfg = _config(tmp_path, family, model, method)
    fam = build.build_family(cfg["family"])
    learner = build.build_learner(cfg, fam)
    batch = fam.sample(2, generator=torch.Generator().manual_seed(0))
    grads = learner.meta_gradient(batch)
    params = dict(learner.model.named_parameters())
    assert grads and set(grads) <= set(params)
    assert all(g.shape == params[k].shape and torch.isfinite(g).all() for k, g in grads.items())
    moved = any(g.abs().sum() > 0 for g in grads.values())
    assert moved == (method != "scratch")          # scratch is not meta-trained
    out = learner.predict(learner.adapt(batch.support_x[0], batch.support_y[0]),
                          batch.query_x[0])
    want = (batch.query_x.shape[1], 1 if family == "sinusoid" else cfg["family"]["ways"])
    assert tuple(out.shape) == want


@pytest.mark.parametrize("method", config.HEAD_BASED)
def test_a_solved_head_on_the_sinusoid_is_refused_by_the_config(method):
    cfg = config.validate({"method": {"name": method}})
    config.check_combinations(cfg)
    with pytest.raises(ValueError, match=rf"config method\.name = '{method}' solves a "
                                         rf"classification head per task, but family\.name = "
                                         rf"'sinusoid' is regression"):
        config.check_training(cfg)


@pytest.mark.parametrize("family, model, message", [
    ("vectors", "conv4", "model 'conv4' needs an image family"),
    ("images", "mlp", r"model 'mlp' reads feature vectors, but the family gives inputs of "
                      r"shape \[1, 16, 16\]: use model.name = 'conv4'"),
])
def test_a_model_that_cannot_read_the_tensors_is_named(tmp_path, family, model, message):
    """A tensor file's example shape is known only once it is read."""
    cfg = _config(tmp_path, family, model, "maml")
    fam = build.build_family(cfg["family"])
    with pytest.raises(ValueError, match=message):
        build.build_learner(cfg, fam)


@pytest.mark.parametrize("model, then", [("conv4", "then pad or resize them to a square"),
                                         ("mlp", "and use model.name = 'conv4'")])
def test_non_square_images_stored_channels_last_are_named_so(tmp_path, model, then):
    """x [N, 20, 24, 3] (numpy's and PIL's layout) was read as 20 channels of 24x3: conv4 said
    '24x3: pad or resize them to a square' and mlp 'use model.name = conv4', which led there;
    neither named the layout."""
    y = np.repeat(np.arange(10), 6)
    np.savez(tmp_path / "hwc.npz", x=np.zeros((len(y), 20, 24, 3), np.uint8), y=y)
    mod = {"name": "mlp", "hidden": [8]} if model == "mlp" else {"name": model, "channels": 4}
    cfg = build.resolve_split(config.validate({
        "family": {"name": "tensors", "root": str(tmp_path / "hwc.npz"), "ways": 2, "shots": 1,
                   "queries": 2, "split_fractions": [0.4, 0.2, 0.4]},
        "model": mod, "method": {"name": "r2d2"}}))
    fam = build.build_family(cfg["family"])
    with pytest.raises(ValueError, match=rf"look like 20x24 images stored channels-last "
                                         rf"\[N, H, W, C\] with 3 channel\(s\) last; save x as "
                                         rf"\[N, C, H, W\] \(x\.permute\(0, 3, 1, 2\).*{then}"):
        build.build_learner(cfg, fam)


def test_a_folder_cache_that_cannot_be_written_gives_advice_a_config_can_follow(tmp_path):
    """The message ended 'pass a writable cache_dir', which no config key nor flag takes."""
    from PIL import Image

    for k, c in enumerate(("a", "b")):
        (tmp_path / "images" / c).mkdir(parents=True)
        for i in range(3):
            Image.fromarray(np.full((8, 8), 40 * i + 20 * k, np.uint8)).save(
                tmp_path / "images" / c / f"{i}.png")
    (tmp_path / "images" / ".metaloop-cache").write_text("a file where the cache goes")
    cfg = config.validate({"family": {"name": "folder", "root": str(tmp_path / "images"),
                                      "ways": 2, "shots": 1, "queries": 1,
                                      "train_classes": ["a", "b"]}})
    with pytest.raises(ValueError, match=r"cannot write the decoded image cache of .*images to "
                                         r".*\.metaloop-cache: .*; make it writable") as e:
        build.build_family(cfg["family"], split="train")
    assert "cache_dir" not in str(e.value)


def test_the_decoding_bar_shows_every_image_read(tmp_path, capsys):
    """A folder decoded faster than tqdm's 0.1 s redraw left the bar at "0img" in a log; it
    is redrawn with the count reached before it closes."""
    from PIL import Image

    rng = np.random.default_rng(0)
    for c in range(6):
        (tmp_path / f"c{c}").mkdir()
        for i in range(4):
            Image.fromarray((rng.random((20, 20)) * 255).astype("uint8")).save(
                tmp_path / f"c{c}" / f"{i}.png")
    fam = config.validate({"family": {"name": "folder", "root": str(tmp_path), "ways": 2,
                                      "shots": 1, "queries": 1}})["family"]
    build.build_family_verbose(fam, "train")
    err = capsys.readouterr().err
    assert "decoding images (once, into the cache): 24img" in err, err

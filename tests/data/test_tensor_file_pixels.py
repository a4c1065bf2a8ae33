"""A tensor file's ``x`` is checked alike by every command that reads it (``train`` and
``eval`` through ``Episodes.from_tensors``, ``forgetting`` through ``load_labelled``, ``vae``
through ``load_user``, ``predict`` through ``classify_tensors``): uint8 or float, and float
images in [0, 1]; feature vectors may hold any finite value."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from metaloop.continual.scenarios import load_labelled
from metaloop.generative import data as gdata
from metaloop.tasks.episodes import Episodes, check_pixels, read_tensor_file

Y = np.arange(40) % 4                                                # 4 classes x 10


def _readers(path):
    return {"train": lambda: Episodes.from_tensors(path, ways=2, shots=1, queries=1),
            "forgetting": lambda: load_labelled(path),
            "vae": lambda: gdata.load_user(path, "train"),
            "predict query": lambda: read_tensor_file(path, labels=False)}


@pytest.mark.parametrize("shape", [(40, 1, 6, 6), (40, 6, 6)])
def test_float_images_of_0_to_255_are_refused_by_every_reader(shape, tmp_path):
    """0..255 float images trained silently (train, forgetting) and a folder's images,
    decoded to [0, 1], then reached the network 255 times darker; vae alone refused them."""
    path = tmp_path / "f255.npz"
    x = np.zeros(shape, np.float32)
    x[:, ..., 2:4, 2:4] = 255.0
    np.savez(path, x=x, y=Y)
    for name, read in _readers(path).items():
        with pytest.raises(ValueError) as e:
            read()
        assert str(e.value).startswith(f"tensor file {path}: float pixels x must lie in "
                                       f"[0, 1], got range [0, 255] (160 pixel(s) outside); "
                                       f"scale them (e.g. x / 255)"), (name, str(e.value))


def test_feature_vectors_may_hold_any_finite_value(tmp_path):
    path = tmp_path / "feats.npz"
    x = np.random.default_rng(0).normal(0, 50, (40, 5)).astype(np.float32)
    np.savez(path, x=x, y=Y)
    fam = Episodes.from_tensors(path, ways=2, shots=1, queries=1)
    assert fam.input_shape == (5,)
    assert torch.equal(load_labelled(path)[0], torch.from_numpy(x))
    assert torch.equal(read_tensor_file(path, labels=False)[0], torch.from_numpy(x))


def test_float_images_in_0_1_and_uint8_images_are_read(tmp_path):
    for x in (np.full((40, 1, 6, 6), 1.0, np.float32), np.full((40, 6, 6), 255, np.uint8)):
        np.savez(tmp_path / "ok.npz", x=x, y=Y)
        for name, read in _readers(tmp_path / "ok.npz").items():
            assert read() is not None, name


def test_check_pixels_names_the_dtype_and_a_range_just_above_1():
    with pytest.raises(ValueError, match=r"^f: x must be uint8 images \(0..255\) or floating "
                                         r"point, got torch.int16"):
        check_pixels(torch.zeros(2, 1, 3, 3, dtype=torch.int16), "f:")
    with pytest.raises(ValueError, match=r"got range \[0, 1.00000012\] \(1 pixel\(s\) outside\)"):
        check_pixels(torch.tensor([[[0.0, 1 + 1e-7]]], dtype=torch.float32), "f:")
    check_pixels(torch.full((2, 7), -3.0), "f:")                            # vectors: any

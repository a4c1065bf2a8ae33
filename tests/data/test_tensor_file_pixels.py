"""A tensor file's ``x`` is checked alike by every command that reads it (``train`` and
``eval`` through ``Episodes.from_tensors``, ``forgetting`` through ``load_labelled``, ``vae``
through ``load_user``, ``predict`` through ``classify_tensors``): uint8, bool (read as float
0/1) or float, and no float images that look like 0..255 pixels; standardised float images
and feature vectors are taken as they are (the vae alone refuses negative pixels)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from metaloop.continual.scenarios import load_labelled
from metaloop.generative import data as gdata
from metaloop.tasks.episodes import (
    Episodes,
    check_examples,
    check_image_dtype,
    check_pixels,
    read_tensor_file,
)

Y = np.arange(40) % 4                                                # 4 classes x 10


def _readers(path):
    return {"train": lambda: Episodes.from_tensors(path, ways=2, shots=1, queries=1),
            "forgetting": lambda: load_labelled(path),
            "vae": lambda: gdata.load_user(path, "train"),
            "predict query": lambda: read_tensor_file(path, labels=False)}


@pytest.mark.parametrize("shape", [(40, 1, 6, 6), (40, 6, 6)])
def test_float_images_of_0_to_255_are_refused_by_every_reader(shape, tmp_path):
    """0..255 float images trained silently (train, forgetting) and a folder's images,
    decoded to [0, 1], then reached the network 255 times darker."""
    path = tmp_path / "f255.npz"
    x = np.zeros(shape, np.float32)
    x[:, ..., 2:4, 2:4] = 255.0
    np.savez(path, x=x, y=Y)
    for name, read in _readers(path).items():
        with pytest.raises(ValueError) as e:
            read()
        assert str(e.value).startswith(f"tensor file {path}: float pixels x must lie in "
                                       f"[0, 1], got range [0, 255] (160 pixel(s) above 1): "
                                       f"0..255 pixels? scale them (e.g. x / 255)"), \
            (name, str(e.value))


def test_standardised_images_are_read_as_they_are_by_every_command_but_the_vae(tmp_path):
    """Mean 0, sd 1 images (and log-mel spectrograms: negative values) were refused as
    'outside [0, 1]' with advice (x / 255, clip) that would corrupt them, while
    ``Episodes(x, y)`` took them; the vae, whose pixels are probabilities of ink, refuses
    them with its own reason."""
    path = tmp_path / "z.npz"
    x = np.random.default_rng(0).normal(0, 1, (40, 1, 6, 6)).astype(np.float32)
    np.savez(path, x=x, y=Y)
    readers = _readers(path)
    store = readers.pop("train")().episode_store()[0]                     # [N, 1, 6, 6]
    assert torch.equal(store, torch.from_numpy(x))
    assert torch.equal(readers.pop("forgetting")()[0], torch.from_numpy(x))
    assert torch.equal(readers.pop("predict query")()[0], torch.from_numpy(x))
    assert torch.equal(Episodes(x, Y, ways=2, shots=1, queries=1).episode_store()[0], store)
    with pytest.raises(ValueError) as e:
        readers.pop("vae")()
    assert str(e.value).startswith(f"tensor file {path}: float pixels x must lie in [0, 1] "
                                   f"for the vae (each pixel is a probability of ink), got "
                                   f"range [{x.min():.9g}, {x.max():.9g}] ("), str(e.value)
    assert not readers


def test_bool_images_are_read_as_float_0_1_pixels_by_every_reader(tmp_path):
    """bool images were refused with the advice x.astype('uint8'), which makes 0/1 pixels of
    1/255 brightness; they are read as float 0/1, the pixels of the uint8 0/255 file (the
    vae's images alike, as it read them before)."""
    on = np.random.default_rng(1).random((40, 1, 6, 6)) > 0.5
    np.savez(tmp_path / "b.npz", x=on, y=Y)
    np.savez(tmp_path / "u.npz", x=on.astype(np.uint8) * 255, y=Y)
    got, ref = _readers(tmp_path / "b.npz"), _readers(tmp_path / "u.npz")
    want = torch.from_numpy(on).to(torch.float32)
    store = got["train"]().episode_store()[0]                             # [N, 1, 6, 6]
    assert store.dtype == torch.float32 and torch.equal(store, want)
    assert torch.equal(got["forgetting"]()[0], want)
    assert torch.equal(got["predict query"]()[0], want)
    assert torch.equal(got["vae"]().images, ref["vae"]().images)
    for given in (on, torch.from_numpy(on)):                            # the API alike
        fam = Episodes(given, Y, ways=2, shots=1, queries=1)
        assert torch.equal(fam.episode_store()[0], want)


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
    with pytest.raises(ValueError, match=r"got range \[0, 1.00000012\] \(1 pixel\(s\) above 1\)"):
        check_pixels(torch.tensor([[[0.0, 1 + 1e-7]]], dtype=torch.float32), "f:")
    v = torch.full((2, 7), 3.0)
    assert check_pixels(v, "f:") is v                                        # vectors: any


def test_uint16_is_told_to_scale_by_65535_not_to_wrap_with_astype_uint8():
    """astype('uint8') of 16-bit pixels keeps them modulo 256: 256 becomes 0."""
    with pytest.raises(ValueError) as e:
        check_image_dtype(torch.zeros(2, 1, 3, 3, dtype=torch.uint16), "f:")
    msg = str(e.value)
    assert msg.startswith("f: x must be uint8 images (0..255) or floating point, got "
                          "torch.uint16; scale 16-bit pixels to floats in [0, 1] (x / 65535) "
                          "or keep their high byte ((x >> 8).astype('uint8'))"), msg
    assert "convert it (e.g. x.astype('uint8')" not in msg
    with pytest.raises(ValueError, match=r"got torch.int64; store 0..255 pixels as uint8"):
        check_image_dtype(torch.zeros(2, 3, dtype=torch.int64), "f:")


@pytest.mark.parametrize("x", [np.array([["a"]]), np.zeros((4, 2), np.complex64),
                               torch.zeros(4, 2, dtype=torch.int32),
                               torch.zeros(4, 2, dtype=torch.complex64)],
                         ids=["numpy str", "numpy complex", "int32", "complex"])
def test_the_examples_check_and_the_tensor_file_check_refuse_a_dtype_in_the_same_words(x):
    """One check of the dtype (check_image_dtype) behind Episodes, numpy or tensor, and
    check_pixels: the same message, led by the caller's words."""
    with pytest.raises(ValueError) as want:
        check_image_dtype(x, "w:")
    with pytest.raises(ValueError) as got:
        check_examples(x, np.arange(4) % 2, what="w:")
    assert str(got.value) == str(want.value)
    if isinstance(x, torch.Tensor):
        with pytest.raises(ValueError) as got:
            check_pixels(x, "w:")
        assert str(got.value) == str(want.value)

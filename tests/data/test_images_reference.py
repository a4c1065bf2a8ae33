"""Decoding against Pillow and NumPy directly: what ``load_image`` gives for a colour image
and a 16-bit one, computed here without metaloop's code path."""

import numpy as np
import torch
from PIL import Image

from metaloop.data.images import load_image, load_support


def test_rgb_to_grey_uses_pillows_luma_weights(tmp_path):
    # every channel different, so that any other weighting (one channel, the plain mean)
    # gives other grey levels
    rgb = np.random.default_rng(0).integers(0, 256, (28, 28, 3), dtype=np.uint8)
    rgb[0, 0] = (255, 0, 0)
    rgb[0, 1] = (0, 255, 0)
    rgb[0, 2] = (0, 0, 255)
    Image.fromarray(rgb, "RGB").save(tmp_path / "colour.png")
    with Image.open(tmp_path / "colour.png") as im:
        want = np.asarray(im.convert("L"), dtype=np.float32) / np.float32(255)   # [28, 28]
    got = load_image(tmp_path / "colour.png", image_size=28, invert="never")
    assert got.shape == (1, 28, 28)
    torch.testing.assert_close(got[0], torch.from_numpy(want), atol=0, rtol=0)
    # ITU-R 601-2 luma: pure red, green and blue are 76, 150 and 29 of 255
    assert [round(float(v) * 255) for v in got[0, 0, :3]] == [76, 150, 29]


def test_sixteen_bit_greyscale_is_scaled_by_65535(tmp_path):
    values = np.array([[0, 256, 1000], [32768, 65534, 65535], [12345, 40000, 300]],
                      dtype=np.uint16)                                          # [3, 3]
    Image.fromarray(values).save(tmp_path / "deep.png")
    got = load_image(tmp_path / "deep.png", image_size=3, invert="never")
    want = torch.from_numpy(values.astype(np.float32) / np.float32(65535))
    torch.testing.assert_close(got[0], want, atol=1e-7, rtol=0)
    assert float(got.max()) == 1.0


def test_sixteen_bit_values_that_fit_eight_bits_are_scaled_by_255(tmp_path):
    values = np.array([[0, 17, 100], [128, 200, 254], [255, 1, 64]], dtype=np.uint16)
    Image.fromarray(values).save(tmp_path / "shallow.png")
    got = load_image(tmp_path / "shallow.png", image_size=3, invert="never")
    want = torch.from_numpy(values.astype(np.float32) / np.float32(255))
    torch.testing.assert_close(got[0], want, atol=1e-7, rtol=0)


def test_sixteen_bit_greyscale_as_rgb_repeats_the_grey_in_every_channel(tmp_path):
    values = np.array([[0, 40000], [65535, 1000]], dtype=np.uint16)            # [2, 2]
    Image.fromarray(values).save(tmp_path / "deep.png")
    got = load_image(tmp_path / "deep.png", image_size=2, invert="never", channels=3)
    want = torch.from_numpy(values.astype(np.float32) / np.float32(65535))
    assert got.shape == (3, 2, 2)
    for c in range(3):
        torch.testing.assert_close(got[c], want, atol=1e-7, rtol=0)


def test_support_folders_give_sorted_class_names_and_each_file_its_own_label(tmp_path):
    rng = np.random.default_rng(1)
    for name in ("zebra", "apple", "mango"):                   # created out of order
        (tmp_path / name).mkdir()
        for i in range(3):
            a = rng.integers(0, 256, (28, 28), dtype=np.uint8)
            Image.fromarray(a).save(tmp_path / name / f"{i}.png")
    x, y, names, files = load_support(tmp_path, image_size=28, invert="never")
    assert names == ["apple", "mango", "zebra"]
    assert y.tolist() == [0, 0, 0, 1, 1, 1, 2, 2, 2]
    assert [f.relative_to(tmp_path).as_posix() for f in files] == [
        f"{n}/{i}.png" for n in names for i in range(3)]
    for i, f in enumerate(files):
        with Image.open(f) as im:
            want = np.asarray(im.convert("L"), dtype=np.float32) / np.float32(255)
        torch.testing.assert_close(x[i, 0], torch.from_numpy(want), atol=0, rtol=0)

"""Decoding against Pillow and NumPy directly: what ``load_image`` gives for a colour image
and 16 and 32-bit ones, computed here without metaloop's code path."""

import struct
import zlib

import numpy as np
import pytest
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


@pytest.mark.parametrize("fmt, suffix", [("PNG", "png"), ("TIFF", "tif"), ("PPM", "pgm")])
def test_a_dark_sixteen_bit_image_is_scaled_by_its_bit_depth(tmp_path, fmt, suffix):
    """A 16-bit image whose values all fit 8 bits (a dark scan) was divided by 255, not
    65535: 257 times too bright, though a brighter image of the same file type was read
    right. The file's bit depth decides now (Pillow's mode ``I;16``, or ``I`` from a PGM
    of more than 8 bits), not its values."""
    values = np.array([[0, 17, 100], [128, 200, 254], [255, 1, 64]], dtype=np.uint16)
    Image.fromarray(values).save(tmp_path / f"dark.{suffix}", fmt)
    with Image.open(tmp_path / f"dark.{suffix}") as im:
        assert im.mode in ("I;16", "I")            # PNG and TIFF: I;16; a 16-bit PGM: I
    got = load_image(tmp_path / f"dark.{suffix}", image_size=3, invert="never")
    want = torch.from_numpy(values.astype(np.float32) / np.float32(65535))
    torch.testing.assert_close(got[0], want, atol=1e-7, rtol=0)
    Image.fromarray(values * 257).save(tmp_path / f"bright.{suffix}", fmt)
    bright = load_image(tmp_path / f"bright.{suffix}", image_size=3, invert="never")
    torch.testing.assert_close(bright, got * 257, atol=1e-6, rtol=0)


def test_a_32_bit_integer_image_is_scaled_by_2_to_the_31_less_1(tmp_path):
    """A 32-bit integer TIFF (mode I) was divided by 65535 when a value passed 255: every
    value above 65535 read as white. Its declared depth, signed 32-bit, scales it now;
    negative values are clipped to 0."""
    values = np.array([[0, 65535, 2 ** 30], [2 ** 31 - 1, -5, 300]], dtype=np.int32)
    Image.fromarray(values).save(tmp_path / "int32.tif")
    with Image.open(tmp_path / "int32.tif") as im:
        assert im.mode == "I"
    got = load_image(tmp_path / "int32.tif", image_size=3, invert="never")[0]  # [3, 3]
    want = np.clip(values.astype(np.float64) / (2 ** 31 - 1), 0, 1)           # [2, 3]
    torch.testing.assert_close(got[:2].double(), torch.from_numpy(want).double(),
                               atol=1e-7, rtol=0)
    assert float(got[1, 0]) == 1.0 and float(got[0, 1]) < 1e-4


def test_an_unsigned_32_bit_tiff_is_scaled_by_2_to_the_32_less_1(tmp_path):
    """Pillow holds an unsigned 32-bit TIFF as signed: its values from 2^31 up came out
    negative, read as black. They are read as unsigned now, over 2^32 - 1."""
    values = np.array([[0, 100], [2 ** 31 + 5, 2 ** 32 - 1]], dtype="<u4")     # [2, 2]
    data = values.tobytes()
    entries = [(256, 2), (257, 2), (258, 32), (259, 1), (262, 1), (273, 8 + 2 + 12 * 10 + 4),
               (277, 1), (278, 2), (279, len(data)), (339, 1)]      # 339: SampleFormat uint
    ifd = b"".join(struct.pack("<HHII", tag, 4, 1, value) for tag, value in entries)
    (tmp_path / "u32.tif").write_bytes(b"II*\x00" + struct.pack("<IH", 8, len(entries)) + ifd
                                       + struct.pack("<I", 0) + data)
    with Image.open(tmp_path / "u32.tif") as im:
        assert im.mode == "I" and int(np.asarray(im)[1, 1]) == -1   # as Pillow holds it
    got = load_image(tmp_path / "u32.tif", image_size=2, invert="never")[0]   # [2, 2]
    want = torch.from_numpy(values.astype(np.float64) / (2 ** 32 - 1))
    torch.testing.assert_close(got.double(), want, atol=1e-7, rtol=0)


def test_a_48_bit_colour_png_is_read_to_8_bits(tmp_path):
    """Pillow reads a 16-bit-per-channel RGB PNG as 8-bit RGB (the high byte of each
    value), so it comes within one grey level in 255 of its 16-bit values."""
    rng = np.random.default_rng(0)
    values = rng.integers(0, 65536, (4, 4, 3)).astype(np.uint16)              # [4, 4, 3]
    rows = b"".join(b"\0" + row.astype(">u2").tobytes() for row in values)

    def chunk(kind: bytes, data: bytes) -> bytes:
        return (struct.pack(">I", len(data)) + kind + data
                + struct.pack(">I", zlib.crc32(kind + data)))

    (tmp_path / "deep.png").write_bytes(
        b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", 4, 4, 16, 2, 0, 0, 0))
        + chunk(b"IDAT", zlib.compress(rows)) + chunk(b"IEND", b""))
    got = load_image(tmp_path / "deep.png", image_size=4, invert="never", channels=3)
    want = torch.from_numpy(values.astype(np.float32) / 65535).permute(2, 0, 1)
    assert float((got - want).abs().max()) <= 1 / 255
    torch.testing.assert_close(got, torch.from_numpy(
        (values >> 8).astype(np.float32) / np.float32(255)).permute(2, 0, 1), atol=0, rtol=0)


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

"""How many images ``load_folder`` tells its ``progress`` it has decoded: 0 as decoding
starts, the count while it runs (batched in time, not per image), the total when done, and
no call where the cache holds every image."""

import sys
import time
from pathlib import Path

from metaloop.data import folder as folder_mod
from metaloop.data.folder import load_folder

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from conftest import write_image_folder  # noqa: E402


def test_progress_opens_at_zero_and_ends_at_the_images_decoded(tmp_path):
    """A folder of fewer than 256 images was told its count once, after decoding: a bar
    opened then showed "0img" over a finished decode."""
    write_image_folder(tmp_path / "f", classes=3, per_class=5)
    calls: list[int] = []
    data = load_folder(tmp_path / "f", image_size=8, cache_dir=tmp_path / "c",
                       progress=calls.append)
    assert len(data.files) == 15
    assert calls[0] == 0 and calls[-1] == 15
    assert calls == sorted(calls) and all(0 <= n <= 15 for n in calls)
    calls.clear()                                   # a cache hit decodes nothing
    assert len(load_folder(tmp_path / "f", image_size=8, cache_dir=tmp_path / "c",
                           progress=calls.append).files) == 15
    assert calls == []


def test_progress_advances_while_a_slow_folder_decodes(tmp_path, monkeypatch):
    """Large photos decode slowly: the count is told as it grows, at most every
    ``PROGRESS_SECONDS``, not only at the end (nor per image)."""
    write_image_folder(tmp_path / "f", classes=2, per_class=6)
    decode = folder_mod._decode

    def slow(*args):
        time.sleep(0.02)
        return decode(*args)
    monkeypatch.setattr(folder_mod, "_decode", slow)
    monkeypatch.setattr(folder_mod, "PROGRESS_SECONDS", 0.1)
    calls: list[int] = []
    load_folder(tmp_path / "f", image_size=8, cache_dir=tmp_path / "c", workers=1,
                progress=calls.append)
    assert calls[0] == 0 and calls[-1] == 12 and calls == sorted(calls)
    middle = calls[1:-1]
    assert middle and all(0 < n <= 12 for n in middle), calls      # told while decoding
    assert len(middle) < 12, calls                    # batched: not once per image

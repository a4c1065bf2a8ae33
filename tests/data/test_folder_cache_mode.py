"""The image-folder cache follows the umask, as the Omniglot cache does: its files are
readable by the other users of a shared image folder (umask 022: 0644), who then open it
instead of rebuilding and replacing it, and private under umask 077 (0600)."""

from __future__ import annotations

import os
import stat
import sys
from pathlib import Path

import pytest

from metaloop.data.folder import load_folder

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from conftest import write_image_folder  # noqa: E402

pytestmark = pytest.mark.skipif(os.name == "nt", reason="POSIX file modes")


def _modes(cache: Path) -> dict[str, int]:
    return {p.name: stat.S_IMODE(p.stat().st_mode) for p in cache.iterdir() if p.is_file()}


@pytest.mark.parametrize("umask,mode", [(0o022, 0o644), (0o077, 0o600), (0o002, 0o664)])
def test_the_cache_files_follow_the_umask(tmp_path, umask, mode):
    root = write_image_folder(tmp_path / "imgs", classes=3, per_class=3, mixed=False)
    cache = tmp_path / "cache"
    old = os.umask(umask)
    try:
        load_folder(root, cache_dir=cache, workers=1)
    finally:
        os.umask(old)
    modes = _modes(cache)
    kinds = {n.rsplit(".", 2)[-2] if n.endswith(".npy") else n for n in modes}
    assert {"images", "labels", "stats"} <= kinds, modes          # each file of the cache
    assert any(n.endswith(".json") for n in modes), modes          # and its manifest
    assert not [n for n in modes if n.endswith(".tmp")], modes
    assert set(modes.values()) == {mode}, {n: oct(m) for n, m in modes.items()}


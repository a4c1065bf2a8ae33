"""A cache manifest is trusted only for its own arrays: one that names a file elsewhere (a
path, ``..``) is rebuilt, and the file it names is neither read nor deleted."""

import json

import numpy as np
import pytest
from PIL import Image

from metaloop.data.folder import load_folder


@pytest.fixture
def root(tmp_path):
    rng = np.random.default_rng(0)
    for c in ("a", "b"):
        (tmp_path / "root" / c).mkdir(parents=True)
        for i in range(2):
            Image.fromarray((rng.random((8, 8)) * 255).astype(np.uint8) + 1).save(
                tmp_path / "root" / c / f"{i}.png")
    return tmp_path / "root"


@pytest.mark.parametrize("where", ["absolute", "parent"])
def test_a_manifest_naming_a_file_outside_the_cache_is_rebuilt(root, tmp_path, where):
    first = load_folder(root, image_size=8, channels=1)
    assert first.cache_status == "built"
    want = first.images.clone()
    [manifest] = (root / ".metaloop-cache").glob("*.json")
    m = json.loads(manifest.read_text())
    planted = tmp_path / "planted.npy"
    np.save(planted, np.zeros(m["shape"], np.uint8))
    m["images"] = str(planted) if where == "absolute" else f"{m['images']}/../../../planted.npy"
    manifest.write_text(json.dumps(m))
    again = load_folder(root, image_size=8, channels=1)
    assert again.cache_status == "rebuilt (its manifest names files outside the cache)"
    assert bool((again.images == want).all()) and int(again.images.max()) > 0
    assert planted.exists()                            # not deleted either
    assert load_folder(root, image_size=8, channels=1).cache_status == "hit"

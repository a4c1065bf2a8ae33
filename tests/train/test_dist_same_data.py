"""``metaloop train`` on 2 gloo ranks, each reading its own copy of an image folder (as on two
nodes): the same data trains; a copy with one image changed is refused on every rank before
training (exit 2, printed once by rank 0, naming the rank, its folder and the class), leaving
no run directory. And a process group that cannot be joined says a timeout only where one
happened."""

import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch

from metaloop.recipes import training
from metaloop.train import distributed

sys.path.insert(0, str(Path(__file__).parent))
from _ranks import run_ranks  # noqa: E402

PIL = pytest.importorskip("PIL.Image")

CONFIG = """
[family]
name = "folder"
root = "imgs"
ways = 2
shots = 1
queries = 1
[model]
name = "conv4"
channels = 4
[method]
name = "protonet"
[train]
iterations = 2
meta_batch = 2
checkpoint_every = 2
seed = 0
dtype = "float64"
[eval]
split = "test"
tasks = 2
queries = 1
steps = [0]
"""

WORKER = textwrap.dedent("""
    import os, sys
    os.chdir(sys.argv[1])                   # this rank's node: its own copy of "imgs"
    from metaloop.cli.main import main
    sys.exit(main(["--threads", "1", "train", "--no-progress", "--dist-timeout", "60",
                   *sys.argv[2:]]))
""")


def _images(root: Path, classes: int = 12, per_class: int = 3) -> None:
    g = torch.Generator().manual_seed(0)
    for c in range(classes):
        d = root / f"class_{c:02d}"
        d.mkdir(parents=True)
        for i in range(per_class):
            pixels = torch.randint(0, 256, (12, 12), generator=g, dtype=torch.uint8)
            PIL.fromarray(pixels.numpy(), mode="L").save(d / f"img_{i}.png")


def _two_ranks(dirs: list[Path], *args: str) -> list[subprocess.CompletedProcess]:
    return run_ranks([["-c", WORKER, str(d), *args] for d in dirs], timeout=180)


def test_ranks_reading_different_data_are_refused_and_the_same_data_trains(tmp_path):
    node0, node1 = tmp_path / "node0", tmp_path / "node1"
    _images(node0 / "imgs")
    _images(node1 / "imgs")                         # an identical copy
    cfg = tmp_path / "c.toml"
    cfg.write_text(CONFIG)

    run = tmp_path / "same"
    r0, r1 = _two_ranks([node0, node1], "--config", str(cfg), "--out", str(run))
    assert (r0.returncode, r1.returncode) == (0, 0), r0.stderr + r1.stderr
    assert "trained protonet for 2 iterations on 2 ranks" in r0.stdout

    # rank 1's copy: the same class names, one image changed
    changed = node1 / "imgs" / "class_03" / "img_1.png"
    pixels = torch.randint(0, 256, (12, 12), generator=torch.Generator().manual_seed(7),
                           dtype=torch.uint8)
    PIL.fromarray(pixels.numpy(), mode="L").save(changed)
    run = tmp_path / "mixed"
    r0, r1 = _two_ranks([node0, node1], "--config", str(cfg), "--out", str(run))
    assert (r0.returncode, r1.returncode) == (2, 2), r0.stderr + r1.stderr
    assert "different data" in r0.stderr
    assert r0.stderr.count("metaloop train: error:") == 1
    assert "rank 1 of 2 read other data than rank 0" in r0.stderr
    assert str((node1 / "imgs").resolve()) in r0.stderr or str(node1 / "imgs") in r0.stderr
    assert "'class_03'" in r0.stderr
    assert "error" not in r1.stderr                 # printed once, by rank 0
    assert not run.exists()                         # nothing written
    assert "trained" not in r0.stdout


def test_the_content_digest_of_a_built_in_family_covers_its_images():
    class Fam:
        class_names = ["a", "b"]

        def __init__(self, images):
            self._images = images

    x = torch.zeros(4, 3, 3, dtype=torch.uint8)
    y = x.clone()
    y[2, 1, 1] = 1
    assert training._content_digest([Fam(x)]) == training._content_digest([Fam(x.clone())])
    assert training._content_digest([Fam(x)]) != training._content_digest([Fam(y)])
    assert training._content_digest([object()]) is None          # the sinusoid: nothing read


JOIN = textwrap.dedent("""
    import os, socket, sys, time
    s = socket.socket(); s.bind(("127.0.0.1", 0)); s.listen()    # the port is taken
    os.environ.update(WORLD_SIZE="2", RANK="0", LOCAL_RANK="0", MASTER_ADDR="127.0.0.1",
                      MASTER_PORT=str(s.getsockname()[1]))
    from metaloop.train import distributed
    start = time.monotonic()
    try:
        distributed.init("cpu", 300)
    except distributed.DistributedError as e:
        print(f"{time.monotonic() - start:.1f}", e)
""")


def test_a_join_that_fails_at_once_does_not_claim_a_timeout():
    done = subprocess.run([sys.executable, "-c", JOIN], capture_output=True, text=True,
                          timeout=120)
    seconds, text = done.stdout.split(" ", 1)
    assert float(seconds) < 60
    assert "could not join the gloo process group" in text
    assert "within 300 s" not in text
    assert "before the 300 s timeout" in text
    assert "EADDRINUSE" in text or "address already in use" in text


def test_a_join_that_timed_out_says_so(monkeypatch):
    monkeypatch.setenv("MASTER_ADDR", "10.0.0.1")
    monkeypatch.setenv("MASTER_PORT", "29500")
    e = RuntimeError("timed out")
    text = distributed._join_failure(e, "gloo", 1, 2, 30.0, 30.2)
    assert "within 30 s" in text and "before the" not in text
    text = distributed._join_failure(e, "gloo", 1, 2, 30.0, 1.5)
    assert "within 30 s" not in text and "failed after 1.5 s, before the 30 s timeout" in text

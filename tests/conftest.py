"""Shared fixtures. Data lives in ../shared beside the repository, never in it."""

from __future__ import annotations

import os
import shutil
import signal
import warnings
from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parents[1]


try:       # raised by matplotlib before 3.11 under pyparsing 3.3 (parseString, oneOf)
    from pyparsing.warnings import PyparsingDeprecationWarning
except ImportError:                        # a pyparsing that raises none
    PyparsingDeprecationWarning = None
if PyparsingDeprecationWarning is not None:     # matplotlib's import parses its rc file:
    with warnings.catch_warnings():             # before any conftest imports metaloop
        warnings.simplefilter("ignore", PyparsingDeprecationWarning)
        import matplotlib.backends.backend_agg  # noqa: F401


def pytest_configure(config):
    """Warnings are errors (pyproject.toml), except pyparsing's deprecations raised inside
    matplotlib before 3.11 (its own code, which the range matplotlib>=3.7 allows)."""
    if PyparsingDeprecationWarning is not None:
        config.addinivalue_line("filterwarnings",
                                "ignore::pyparsing.warnings.PyparsingDeprecationWarning")
SHARED = REPO.parent / "shared"
FASHION_MNIST = Path("/usr/share/datasets/fashion-mnist")


def _need(path: Path, what: str) -> Path:
    if path.exists():
        return path
    msg = f"{what} not found at {path}"
    if os.environ.get("CI"):
        pytest.fail(msg + " (CI must provide it)")
    pytest.skip(msg)


@pytest.fixture(scope="session", autouse=True)
def _data_cache(tmp_path_factory):
    """Data caches (resized Omniglot sets, downloads) go to a folder of this test session,
    never into the user's ``~/.cache``; subprocesses of the session share it."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("METALOOP_DATA", str(tmp_path_factory.mktemp("metaloop_data")))
        yield


@pytest.fixture
def float64():
    """Run a test in float64; the default dtype is restored for the rest of the suite."""
    old = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    yield
    torch.set_default_dtype(old)


@pytest.fixture
def omniglot_cache_home(tmp_path, monkeypatch) -> Path:
    """The Omniglot resized-set cache in this test's folder, on, and nothing decoded in this
    process yet (the files that test the cache make it autouse through their own
    ``cache_home``)."""
    from metaloop.data import omniglot as og
    monkeypatch.setenv("METALOOP_DATA", str(tmp_path / "data"))
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.delenv(og.CACHE_ENV, raising=False)
    og.clear_cache()
    yield tmp_path / "data" / "omniglot" / "resized"
    og.clear_cache()


@pytest.fixture(scope="session")
def omniglot_root() -> Path:
    """The packed Omniglot copy in ../shared/data/omniglot."""
    return _need(SHARED / "data" / "omniglot", "Omniglot")


@pytest.fixture(scope="session")
def fashion_mnist_root() -> Path:
    """Fashion-MNIST IDX files from the Debian package dataset-fashion-mnist."""
    return _need(FASHION_MNIST, "Fashion-MNIST (apt-get install dataset-fashion-mnist)")


@pytest.fixture(scope="session")
def save_tiny_bert(tmp_path_factory):
    """A function ``words -> folder``: a random (seeded) 2-layer BERT and its word-piece
    tokenizer over ``words``, saved like any Hugging Face model (needs the text extra)."""
    def save(words) -> Path:
        import transformers

        d = tmp_path_factory.mktemp("tiny_bert")
        (d / "vocab.txt").write_text("\n".join(words) + "\n")
        tok = transformers.BertTokenizer(str(d / "vocab.txt"))
        cfg = transformers.BertConfig(vocab_size=len(words), hidden_size=32, num_hidden_layers=2,
                                      num_attention_heads=2, intermediate_size=37,
                                      max_position_embeddings=64)
        torch.manual_seed(0)
        transformers.BertModel(cfg).save_pretrained(d / "model")
        tok.save_pretrained(d / "model")
        return d / "model"
    return save


# metaloop adapt --family wordnet reads WordNet 3.0 (Debian wordnet-base)
needs_wordnet = pytest.mark.skipif(not Path("/usr/share/wordnet/data.noun").is_file(),
                                   reason="WordNet not installed (apt-get install wordnet-base)")
WORDNET_WORDS = ("[PAD] [UNK] [CLS] [SEP] [MASK] a an the of or in to and that is for with by "
                 "as on from kind type part person plant animal act used small large genus "
                 "family").split()


@pytest.fixture(scope="session")
def wordnet_bert(save_tiny_bert) -> str:
    """``save_tiny_bert`` over ``WORDNET_WORDS``: the common words of WordNet's glosses."""
    return str(save_tiny_bert(WORDNET_WORDS))


# Tests use tiny tensors: one thread avoids OpenMP start-up and oversubscription costs
# that dominate at this size (measured 2-4x faster on the 2-core CI machines).
torch.set_num_threads(1)

# A suite started in the background of a shell (``pytest &``, ``nohup``) inherits SIGINT
# ignored, which metaloop respects (a background job's Ctrl-C is not its own): the tests
# that stop a run with SIGINT need Python's default handler, as in a terminal.
if signal.getsignal(signal.SIGINT) is signal.SIG_IGN:
    signal.signal(signal.SIGINT, signal.default_int_handler)


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)
    yield


@pytest.fixture(autouse=True)
def _restore_threads():
    """A command's ``--threads N`` sets torch's thread count for the whole process: put it
    back after every test."""
    n = torch.get_num_threads()
    yield
    torch.set_num_threads(n)


class CtrlCAt:
    """A task family that delivers a real SIGINT to this process while sampling its batch
    number ``at`` (1-based), as Ctrl-C in the middle of a run does."""

    def __init__(self, family, at: int):
        self.family, self.at, self.calls = family, at, 0

    def sample(self, n, generator=None):
        import signal

        self.calls += 1
        if self.calls == self.at:
            signal.raise_signal(signal.SIGINT)
        return self.family.sample(n, generator=generator)

    def __getattr__(self, name):
        return getattr(self.family, name)


def write_tensor_file(path: Path) -> Path:
    """12 classes of 10 feature vectors [6] (class k near 3 x one-hot(k % 6)) as ``x`` and
    ``y`` in the .npz ``path``, for a ``family.name = "tensors"`` config."""
    import numpy as np

    g = torch.Generator().manual_seed(0)
    y = torch.arange(12).repeat_interleave(10)                                  # [120]
    x = torch.randn(120, 6, generator=g) + torch.nn.functional.one_hot(y % 6, 6) * 3
    np.savez(path, x=x.numpy(), y=y.numpy())
    return path


def write_image_folder(root: Path, classes: int = 6, per_class: int = 8, side: int = 28,
                       seed: int = 0, corrupt: bool = False, mixed: bool = True) -> Path:
    """Write a small labelled image folder ``root/<class>/<image>``.

    Class k is a fixed random glyph (a few thick strokes, ink on a light background); each
    image is that glyph shifted by up to 2 px with speckle noise, so few-shot learners can
    tell the classes apart. With ``mixed``, files cycle through PNG (L, 16-bit, palette),
    JPEG (RGB), BMP, GIF, WebP (RGBA with transparency) and several sizes and aspect ratios;
    a ``notes.txt`` and a hidden ``.DS_Store`` sit in the first class folder. ``corrupt``
    adds ``broken.png`` (not an image) to the last class.
    """
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(seed)
    for k in range(classes):
        glyph = np.zeros((side, side), np.uint8)
        for _ in range(3):
            r0, c0 = rng.integers(4, side - 4, size=2)
            r1, c1 = rng.integers(4, side - 4, size=2)
            for t in np.linspace(0, 1, 4 * side):
                r, c = int(r0 + t * (r1 - r0)), int(c0 + t * (c1 - c0))
                glyph[max(r - 1, 0):r + 2, max(c - 1, 0):c + 2] = 255
        d = root / f"class_{k:02d}"
        d.mkdir(parents=True, exist_ok=True)
        for i in range(per_class):
            dr, dc = rng.integers(-2, 3, size=2)
            a = np.roll(glyph, (dr, dc), axis=(0, 1))
            a = np.where(rng.random(a.shape) < 0.02, 255 - a, a)
            paper = (255 - a).astype(np.uint8)                       # dark ink on light paper
            kind = (i + k) % 7 if mixed else 0
            if kind == 0:
                Image.fromarray(paper).save(d / f"{i:03d}.png")
            elif kind == 1:
                Image.fromarray(np.stack([paper] * 3, -1)).resize((side * 2, side * 2)).save(
                    d / f"{i:03d}.jpg", quality=95)
            elif kind == 2:
                Image.fromarray(paper).save(d / f"{i:03d}.bmp")
            elif kind == 3:
                Image.fromarray(paper).convert("P").save(d / f"{i:03d}.gif")
            elif kind == 4:
                rgba = np.zeros((side, side, 4), np.uint8)
                rgba[..., 3] = a                                     # ink opaque, paper clear
                Image.fromarray(rgba, "RGBA").save(d / f"{i:03d}.webp", lossless=True)
            elif kind == 5:
                wide = np.full((side, side + side // 2), 255, np.uint8)
                wide[:, side // 4:side // 4 + side] = paper
                Image.fromarray(wide).save(d / f"{i:03d}.png")
            else:
                Image.fromarray(paper.astype(np.uint16) * 257).save(d / f"{i:03d}.png")
        if mixed and k == 0:
            (d / "notes.txt").write_text("not an image")
            (d / ".DS_Store").write_bytes(b"\0junk")
    if corrupt:
        (root / f"class_{classes - 1:02d}" / "broken.png").write_bytes(b"this is not a png")
    return root


def drawing(k: int):
    """A 28 x 28 grey-level PIL image: dark strokes on white paper, different for every k."""
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(k)
    a = np.full((28, 28), 255, np.uint8)
    for _ in range(5):
        y, x = rng.integers(2, 22, 2)
        a[y:y + rng.integers(2, 6), x:x + rng.integers(3, 10)] = 0
    return Image.fromarray(a)


@pytest.fixture
def image_folder(tmp_path) -> Path:
    """A small mixed-format image folder (see ``write_image_folder``), no corrupt file."""
    return write_image_folder(tmp_path / "images")


@pytest.fixture(scope="session")
def tiny_fashion_small(tmp_path_factory) -> Path:
    """``write_tiny_fashion`` with 200 training and 60 test images, written once for the test
    run: read it, never change it."""
    return write_tiny_fashion(tmp_path_factory.mktemp("tiny_fashion_small"), 200, 60)


def write_tiny_fashion(root: Path, n_train: int, n_test: int) -> Path:
    """A made-up Fashion-MNIST in uncompressed IDX files under ``root``: class c (``i % 10``)
    is a bright bar in band c on grey noise, so nothing is downloaded or read from the
    system."""
    import struct

    import numpy as np

    def write_idx(path: Path, array) -> None:
        header = bytes([0, 0, 0x08, array.ndim]) + struct.pack(f">{array.ndim}I", *array.shape)
        path.write_bytes(header + array.astype(np.uint8).tobytes())

    rng = np.random.default_rng(0)
    for prefix, n in (("train", n_train), ("t10k", n_test)):
        labels = np.arange(n) % 10
        images = rng.integers(0, 60, (n, 28, 28))
        for i, c in enumerate(labels):
            images[i, 2 + 2 * c:4 + 2 * c, 4:24] = 255
        write_idx(root / f"{prefix}-images-idx3-ubyte", images)
        write_idx(root / f"{prefix}-labels-idx1-ubyte", labels)
    return root


def sgd_keys(method: str, inner_lr: float = 0.4, inner_steps: int = 1) -> str:
    """The ``[method]`` lines of the inner rule that ``method`` reads, for test configs
    written for several methods: a solved head reads no step size (metaoptnet reads its
    Newton steps), so writing them would warn (``config.UnreadKeyWarning``)."""
    lines = ""
    if method not in ("protonet", "r2d2", "metaoptnet"):
        lines += f"inner_lr = {inner_lr}\n"
    if method not in ("protonet", "r2d2"):
        lines += f"inner_steps = {inner_steps}\n"
    return lines


def train_run(d: Path, config: str, *flags: str) -> Path:
    """Write ``config`` to ``d/c.toml`` and train it into ``d/run`` with ``metaloop train
    --no-progress`` and ``flags``, which must exit 0; returns ``d/run``."""
    from metaloop.cli.main import main

    d.mkdir(parents=True, exist_ok=True)
    (d / "c.toml").write_text(config)
    assert main(["train", "--config", str(d / "c.toml"), "--out", str(d / "run"),
                 "--no-progress", *flags]) == 0
    return d / "run"


def refused(argv: list[str], capsys, tmp_path: Path, *words: str) -> str:
    """Run the command ``argv`` with ``--out``: it must exit 2 with each of ``words`` in its
    message, printing nothing on stdout and writing nothing; returns the message."""
    from metaloop.cli.main import main

    out = tmp_path / "out"
    capsys.readouterr()                                        # what came before
    assert main([*argv, "--out", str(out)]) == 2
    captured = capsys.readouterr()
    assert captured.out == "" and not out.exists()
    for w in words:
        assert w in captured.err, (w, captured.err)
    return captured.err


def edit_state(state_file: Path, change, *, as_older: bool = False) -> dict:
    """Apply ``change`` to the dict in a checkpoint's ``state.json`` and write it back.

    The file's own ``state_sha256`` is stamped again (sha256 of the canonical JSON, computed
    here, not by metaloop), as a consistent writer of that state would; ``as_older=True``
    removes it instead, as metaloop wrote checkpoints before it stored one."""
    import hashlib
    import json

    state = json.loads(Path(state_file).read_text())
    change(state)
    state.pop("state_sha256", None)
    if not as_older:
        text = json.dumps(state, sort_keys=True, separators=(",", ":"))
        state["state_sha256"] = hashlib.sha256(text.encode()).hexdigest()
    Path(state_file).write_text(json.dumps(state))
    return state


def copy_run(run: Path, dest: Path) -> Path:
    """A copy of the run folder ``run`` at ``dest`` (returned), for a test that changes it."""
    shutil.copytree(run, dest)
    return dest


@pytest.fixture(scope="session")
def trained_run(tmp_path_factory):
    """A function ``(config, *flags) -> run folder``: ``train_run`` of that config text and
    those flags, trained once for the whole test run and shared by every test that asks for
    the same, so a test must not change it (it changes a ``copy_run`` instead). The config
    file lies beside the run, at ``run.parent / "c.toml"``."""
    made = {}

    def get(config: str, *flags: str) -> Path:
        if (config, flags) not in made:
            made[config, flags] = train_run(tmp_path_factory.mktemp("run"), config, *flags)
        return made[config, flags]
    return get


def omniglot_config(root, method: str = "protonet", *, ways: int = 5, queries: int = 2,
                    channels: int = 8, iterations: int = 2, meta_batch: int = 2,
                    family_lines: str = "", method_lines: str = "",
                    eval_lines: str = "tasks = 2\nsteps = [0]\n") -> str:
    """A tiny Omniglot config: ``ways``-way 1-shot tasks with ``queries`` queries per class
    from ``root``, a strided Conv4 of ``channels`` filters, ``method`` with the inner-rule
    keys it reads (``sgd_keys``) and ``method_lines``, trained for ``iterations``
    meta-batches of ``meta_batch`` tasks with one checkpoint at the end. ``family_lines``
    are more [family] keys, ``eval_lines`` the [eval] section."""
    return (f'[family]\nname = "omniglot"\nroot = "{root}"\n{family_lines}ways = {ways}\n'
            f'shots = 1\nqueries = {queries}\n[model]\nname = "conv4"\npool = "stride"\n'
            f'channels = {channels}\n[method]\nname = "{method}"\n{sgd_keys(method)}'
            f'{method_lines}[train]\niterations = {iterations}\nmeta_batch = {meta_batch}\n'
            f'checkpoint_every = {iterations}\n[eval]\n{eval_lines}')


@pytest.fixture(scope="session")
def protonet_run(omniglot_root, trained_run) -> Path:
    """A ProtoNet run of ``omniglot_config``'s defaults (5-way 1-shot, 2 queries, 8 filters,
    2 iterations), trained once for the test run: read it, never change it."""
    return trained_run(omniglot_config(omniglot_root))


@pytest.fixture(scope="session")
def method_runs(omniglot_root, trained_run):
    """A function ``(method, family="omniglot", method_lines="") -> run folder`` (a str):
    ``method`` trained for 2 iterations on 3-way 1-shot Omniglot with a Conv4 of 4 filters
    (or, for ``family="sinusoid"``, on sinusoid with an MLP of 8 hidden units), evaluated
    after 0 steps for a solved head and 1 step for the others; each trained once for the
    test run (``trained_run``): read it, never change it."""
    from metaloop.config import HEAD_BASED

    def get(method: str, family: str = "omniglot", method_lines: str = "") -> str:
        steps = "[0]" if method in HEAD_BASED else "[1]"
        evals = f"tasks = 2\nsteps = {steps}\n"
        if family == "sinusoid":
            config = ('[family]\nname = "sinusoid"\n[model]\nname = "mlp"\nhidden = [8]\n'
                      f'[method]\nname = "{method}"\n{sgd_keys(method)}{method_lines}'
                      '[train]\niterations = 2\nmeta_batch = 2\ncheckpoint_every = 2\n'
                      f'[eval]\n{evals}')
        else:
            config = omniglot_config(omniglot_root, method, ways=3, channels=4,
                                     method_lines=method_lines, eval_lines=evals)
        return str(trained_run(config))
    return get


def folder_config(root: Path) -> str:
    """A config on the image folder ``root`` (``write_image_folder``, half of its classes held
    out for testing, no val split): 2-way 1-shot tasks with 2 queries, a Conv4 of 4 channels
    (strided), ProtoNet, 2 meta-batches of 2 tasks with one checkpoint at the end."""
    return (f'[family]\nname = "folder"\nroot = "{root}"\nways = 2\nshots = 1\nqueries = 2\n'
            f'split_fractions = [0.5, 0.0, 0.5]\n[model]\nname = "conv4"\npool = "stride"\n'
            f'channels = 4\n[method]\nname = "protonet"\n[train]\niterations = 2\n'
            f'meta_batch = 2\ncheckpoint_every = 2\n[eval]\ntasks = 2\nsteps = [0]\n')


def tensor_config(path: Path, method_lines: str = 'name = "r2d2"\n', iterations: int = 2,
                  eval_lines: str = "tasks = 4\nsteps = [0]\n") -> str:
    """A config on the tensor file ``path`` (``write_tensor_file``: 12 classes, half of them
    held out for testing, no val split): 2-way 2-shot tasks with 3 queries, an MLP of 16
    hidden units, the [method] ``method_lines``, ``iterations`` meta-batches of 2 tasks with
    one checkpoint at the end, and the [eval] ``eval_lines``."""
    return (f'[family]\nname = "tensors"\nroot = "{path}"\nways = 2\nshots = 2\nqueries = 3\n'
            'split_fractions = [0.5, 0.0, 0.5]\n[model]\nname = "mlp"\nhidden = [16]\n'
            f'[method]\n{method_lines}[train]\niterations = {iterations}\nmeta_batch = 2\n'
            f'checkpoint_every = {iterations}\n[eval]\n{eval_lines}')


def meta_gradient_cases(test):
    """``test`` parametrized over the exact meta-gradient cases of ``tiny_meta_batch``:
    ``method`` MAML or ANIL, ``steps`` 1 or 3, ``first_order`` or not, ``kind`` "mlp" or
    "conv4"."""
    from metaloop.meta import ANIL, MAML

    for mark in (pytest.mark.parametrize("method", [MAML, ANIL], ids=["maml", "anil"]),
                 pytest.mark.parametrize("steps", [1, 3]),
                 pytest.mark.parametrize("first_order", [False, True], ids=["second", "first"]),
                 pytest.mark.parametrize("kind", ["mlp", "conv4"])):
        test = mark(test)
    return test


def tiny_meta_batch(kind: str, tasks: int, seed: int, hidden=(16, 16)):
    """(model, loss name, batch) for exact meta-gradient checks in float64. ``kind`` "mlp":
    an MLP(1, hidden, 1) and ``tasks`` sinusoid tasks of 5 shots and 6 queries; "conv4": a
    Conv4 of 4 filters and ``tasks`` 3-way 1-shot tasks of random 16 x 16 images with 2
    queries per class. The model is drawn after ``torch.manual_seed(seed)``, the batch from
    a generator seeded with ``seed + 1``."""
    import metaloop as ml
    from metaloop.models import MLP, Conv4

    torch.manual_seed(seed)
    g = torch.Generator().manual_seed(seed + 1)
    if kind == "mlp":
        batch = ml.tasks.Sinusoid(5, 6).sample(tasks, g, dtype=torch.float64)
        return MLP(1, hidden, 1).double(), "mse", batch
    sy = torch.arange(3).repeat(tasks, 1)                              # [B, 3]: 3-way 1-shot
    qy = torch.arange(3).repeat(tasks, 2)                              # [B, 6]
    batch = ml.TaskBatch(torch.randn(tasks, 3, 1, 16, 16, generator=g), sy,
                         torch.randn(tasks, 6, 1, 16, 16, generator=g), qy)
    return Conv4(1, 4, 3, image_size=16).double(), "ce", batch


def committed_records(pattern: str) -> dict[str, dict]:
    """The committed records under docs/results/ whose file names match ``pattern``, by file
    name (at least one): what a benchmark script's ``--records`` must reproduce."""
    import json
    folder = Path(__file__).resolve().parents[1] / "docs" / "results"
    found = {p.name: json.loads(p.read_text()) for p in sorted(folder.glob(pattern))}
    assert found, f"no committed record matches docs/results/{pattern}"
    return found


def written_records(folder: Path) -> dict[str, dict]:
    """The records a run wrote into ``folder``, each validated, by file name."""
    import json

    from metaloop.evaluate.records import validate_record
    return {p.name: validate_record(json.loads(p.read_text()), where=p.name)
            for p in sorted(Path(folder).glob("*.json"))}


def write_next_checkpoint(run: Path, iteration: int | None = None, *, move: bool = True,
                          keep: int = 2, **state) -> Path:
    """Write a checkpoint into the run folder ``run`` and point its LATEST at it, as a run
    training on would (``metaloop train --resume``): at ``iteration`` (default: the newest's
    + 1), with other weights (the newest ones + 1; ``move=False``: the same) and the newest
    state's entries, ``state`` replacing some, keeping the newest ``keep`` checkpoints."""
    from metaloop.train.checkpoint import load_checkpoint, save_checkpoint
    tensors, old = load_checkpoint(run)
    rest = {k: v for k, v in old.items()
            if k not in ("format_version", "iteration", "tensors_sha256", "state_sha256")}
    if move:
        tensors = {k: v + 1 if k.startswith("model.") and v.is_floating_point() else v
                   for k, v in tensors.items()}
    it = old["iteration"] + 1 if iteration is None else iteration
    return save_checkpoint(run, it, tensors, {**rest, **state}, keep=keep)


@pytest.fixture
def tf32_flags():
    """``set(matmul, conv)`` sets torch's CUDA TF32 flags, given back after the test by hand:
    monkeypatch cannot undo them on every pytest (torch reads and writes them through
    ``__getattr__``/``__setattr__``; pytest 9.2 then fails at teardown and leaves the
    test's other patches, e.g. a stand-in ``torch.cuda.is_available``, in place)."""
    matmul, cudnn = torch.backends.cuda.matmul, torch.backends.cudnn
    before = matmul.allow_tf32, cudnn.allow_tf32

    def set_flags(mm: bool, conv: bool) -> None:
        matmul.allow_tf32, cudnn.allow_tf32 = mm, conv
    yield set_flags
    matmul.allow_tf32, cudnn.allow_tf32 = before


def record_fields(**over) -> dict:
    """The fields of a valid accuracy record (``metaloop.evaluate.records.write_record``'s
    keyword arguments), with ``over`` replacing or adding fields."""
    rec = dict(table="omniglot", row="MAML, 5-way 1-shot", metric="accuracy (%)", mean=97.4,
               ci95=0.27, n=600, budget={"iterations": 60000, "cpu_seconds": 3282},
               device="2-core CPU", torch="2.13.0", date="2026-11-30",
               config="configs/omniglot_maml_5w1s_cpu.toml",
               command="metaloop train --config configs/omniglot_maml_5w1s_cpu.toml",
               published={"value": "98.7 ± 0.4%", "source": "Finn et al. 2017, Table 1"})
    rec.update(over)
    return rec

"""The device-resident sampler, run on the CPU: valid, seeded tasks, the same stream as the
host families on the CPU, and a training run through it equal to one through the host."""

import copy

import pytest
import torch

import metaloop as ml
from metaloop.meta import MAML
from metaloop.models import Conv4
from metaloop.tasks.batch import TaskBatch
from metaloop.tasks.device import DeviceTasks


@pytest.fixture(scope="module")
def omniglot():
    return ml.tasks.Omniglot(split="val", ways=5, shots=2, queries=3, image_size=14)


def _fields(b):
    return (b.support_x, b.support_y, b.query_x, b.query_y, b.classes)


def _equal(a, b):
    return all(torch.equal(x, y) for x, y in zip(_fields(a), _fields(b)))


def test_device_tasks_are_valid_and_seeded(omniglot):
    dev = DeviceTasks(omniglot, "cpu")
    b = dev.sample(6, torch.Generator().manual_seed(3))
    TaskBatch(*_fields(b))                         # the checks it skipped pass
    assert b.support_x.shape == (6, 10, 1, 14, 14) and b.query_x.shape == (6, 15, 1, 14, 14)
    assert b.support_x.dtype == torch.float32 and 0 <= b.support_x.min() <= b.support_x.max() <= 1
    assert torch.equal(b.support_y[0], torch.arange(5).repeat_interleave(2))
    assert all(len(set(c.tolist())) == 5 for c in b.classes)     # distinct classes per task
    # each support/query image is one of its class's 20 drawings, none twice in a task
    imgs = omniglot.images.float().div(255)                      # [C, 20, 14, 14]
    x = torch.cat([b.support_x.view(6, 5, 2, 14, 14), b.query_x.view(6, 5, 3, 14, 14)], 2)
    for t in range(2):
        for w in range(5):
            pool = imgs[b.classes[t, w]].flatten(1)              # [20, 196]
            hits = (x[t, w].flatten(1)[:, None] == pool[None]).all(-1)   # [5, 20]
            assert hits.any(1).all() and hits.float().argmax(1).unique().numel() == 5
    again = dev.sample(6, torch.Generator().manual_seed(3))
    other = dev.sample(6, torch.Generator().manual_seed(4))
    assert _equal(b, again) and not _equal(b, other)


def test_on_the_cpu_the_device_stream_is_the_host_stream(omniglot):
    g1, g2 = torch.Generator().manual_seed(0), torch.Generator().manual_seed(0)
    dev = DeviceTasks(omniglot, "cpu")
    for _ in range(3):
        assert _equal(dev.sample(4, g1), omniglot.sample(4, g2))
    shifted = ml.tasks.Shifted(omniglot, max_shift=2, max_rotate=15.0)
    dev = DeviceTasks(shifted, "cpu")
    assert (dev.max_shift, dev.max_rotate) == (2, 15.0)
    for _ in range(3):
        assert _equal(dev.sample(4, g1), shifted.sample(4, g2))
    bent = ml.tasks.Shifted(omniglot, max_shift=1, max_stroke=0.5, elastic=1.0)
    dev = DeviceTasks(bent, "cpu")
    assert (dev.max_stroke, dev.elastic) == (0.5, 1.0) and "elastic=1.0" in repr(dev)
    for _ in range(2):
        assert _equal(dev.sample(4, g1), bent.sample(4, g2))
    assert torch.equal(g1.get_state(), g2.get_state())
    d64 = DeviceTasks(omniglot, "cpu", dtype=torch.float64).sample(2, g1)
    h64 = omniglot.sample(2, g2).to(dtype=torch.float64)
    assert d64.support_x.dtype == torch.float64 and _equal(d64, h64)


class Uneven:
    """RGB classes of 3 to 6 images, exposing its store through ``episode_store``."""

    ways, shots, queries, class_names = 3, 1, 2, ["a", "b", "c", "d"]

    def __init__(self):
        g = torch.Generator().manual_seed(0)
        self.images = torch.randint(0, 256, (18, 3, 6, 6), generator=g, dtype=torch.uint8)
        labels = torch.tensor([0] * 3 + [1] * 6 + [2] * 4 + [3] * 5)
        self.table, self.counts = ml.tasks.episodes.class_table(labels, 4)

    def episode_store(self):
        return self.images, self.table, self.counts


def test_a_family_with_uneven_classes_through_episode_store():
    from metaloop.tasks.omniglot import episode_indices
    fam = Uneven()
    dev = DeviceTasks(fam, "cpu")
    b = dev.sample(50, torch.Generator().manual_seed(5))
    TaskBatch(*_fields(b))
    assert b.support_x.shape == (50, 3, 3, 6, 6) and b.query_x.shape == (50, 6, 3, 6, 6)
    classes, idx = episode_indices(fam.table, fam.counts, 50, 3, 3,
                                   torch.Generator().manual_seed(5))
    assert torch.equal(b.classes, classes)
    x = fam.images[idx.flatten()].float().div(255).view(50, 3, 3, 3, 6, 6)
    assert torch.equal(b.support_x, x[:, :, :1].reshape(50, 3, 3, 6, 6))
    assert torch.equal(b.query_x, x[:, :, 1:].reshape(50, 6, 3, 6, 6))
    with pytest.raises(ValueError, match=r"shots \+ queries = 2 \+ 2 exceeds the 3 images"):
        dev.with_shots(2, 2)


def test_with_shots_shares_the_store_and_bad_input_is_named(omniglot):
    dev = DeviceTasks(omniglot, "cpu")
    five = dev.with_shots(5, 10)
    assert five._images is dev._images and (five.shots, five.queries) == (5, 10)
    assert five.sample(2, torch.Generator()).support_x.shape[1] == 25
    with pytest.raises(ValueError, match=r"shots \+ queries = 15 \+ 10 exceeds the 20"):
        dev.with_shots(15, 10)
    with pytest.raises(ValueError, match="Sinusoid has neither"):
        DeviceTasks(ml.tasks.Sinusoid(), "cpu")
    with pytest.raises(ValueError, match="DeviceTasks.sample n must be a positive int"):
        dev.sample(0)
    assert isinstance(dev, ml.tasks.TaskFamily)
    assert dev.input_shape == (1, 14, 14) and dev.num_classes == omniglot.num_classes
    fam = Uneven()
    fam.within_alphabet = 0.5                    # a rate without the tables to draw it from
    with pytest.raises(ValueError, match=r"has no index_tables\(\) to draw them from"):
        DeviceTasks(fam, "cpu")


CHALLENGE = [{"within_alphabet": 1.0}, {"within_alphabet": 0.5, "rotations": True},
             {"within_alphabet": 0.5, "reflections": True},
             {"drawers": "shared"}, {"within_alphabet": 0.5, "drawers": "shared"}]


@pytest.fixture(scope="module")
def challenge():
    """The one-shot challenge's task families on the 5 held-out background alphabets."""
    return [ml.tasks.Omniglot(split="background_val", ways=5, shots=1, queries=2,
                              image_size=14, **kw) for kw in CHALLENGE]


@pytest.mark.parametrize("which", range(len(CHALLENGE)), ids=[
    "-".join(f"{k}={v}" for k, v in kw.items()) for kw in CHALLENGE])
def test_the_challenge_tasks_on_the_cpu_are_the_host_tasks(challenge, which):
    fam = challenge[which]
    shifted = ml.tasks.Shifted(fam, max_shift=1)
    dev = DeviceTasks(shifted, "cpu")
    assert (dev.within_alphabet, dev.drawers) == (fam.within_alphabet, fam.drawers)
    g1, g2 = torch.Generator().manual_seed(7), torch.Generator().manual_seed(7)
    for _ in range(3):
        b = dev.sample(16, g1)
        assert _equal(b, shifted.sample(16, g2))
    assert torch.equal(g1.get_state(), g2.get_state())
    TaskBatch(*_fields(b))
    # what each option promises, read from the tasks themselves
    same = (fam.class_alphabet[b.classes] == fam.class_alphabet[b.classes[:, :1]]).all(1)
    if fam.within_alphabet == 1:
        assert same.all()
    elif fam.within_alphabet:
        assert same.any() and not same.all()     # 16 tasks at rate 0.5: both kinds
    if fam.drawers == "shared":                  # image j of every class by one drawer j
        _, idx = fam.sample_indices(16, torch.Generator().manual_seed(7))  # the same draws
        drawer = idx % 20                                           # [16, 5, 3]
        assert (drawer == drawer[:, :1]).all() and all(
            len(set(d.tolist())) == 3 for d in drawer[:, 0])


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_challenge_tasks_are_seeded_and_never_wait_for_the_device(challenge):
    for fam in challenge:
        dev = DeviceTasks(ml.tasks.Shifted(fam, 1), "cuda")
        g = torch.Generator(device=dev.generator_device)
        a, b = dev.sample(8, g.manual_seed(1)), dev.sample(8, g.manual_seed(1))
        assert _equal(a, b) and a.classes.is_cuda
        TaskBatch(*_fields(a))
        if fam.within_alphabet == 1:
            alpha = fam.class_alphabet.cuda()[a.classes]
            assert (alpha == alpha[:, :1]).all()
        torch.cuda.set_sync_debug_mode("error")
        try:
            dev.sample(8, g)
        finally:
            torch.cuda.set_sync_debug_mode("default")


def test_the_challenge_sampler_never_reads_a_value_back_to_the_host(challenge):
    for fam in challenge:
        dev = DeviceTasks(ml.tasks.Shifted(fam, 1), "meta")
        b = dev.sample(4)
        assert b.support_x.device.type == "meta" and b.classes.shape == (4, 5)
        assert all(x.shape == y.shape for x, y in zip(_fields(b), _fields(dev.sample(4))))


def test_a_within_alphabet_rate_needs_an_alphabet_of_ways_characters(challenge):
    dev = DeviceTasks(challenge[0], "cpu")
    big = copy.copy(dev)
    big.ways = 60                                # background_val's largest alphabet: 55
    with pytest.raises(ValueError, match="no alphabet has ways=60 characters"):
        big._validate()


def test_training_through_device_tasks_equals_the_host_path(omniglot, tmp_path):
    fam = ml.tasks.Shifted(omniglot.with_shots(1, 2), max_shift=1)
    params = []
    for family in (fam, DeviceTasks(fam, "cpu")):
        torch.manual_seed(0)
        learner = MAML(Conv4(1, 8, 5, pool="stride", image_size=14), 0.4, 1, loss="ce")
        ml.train(learner, family, iterations=3, meta_batch=2, progress=False)
        params.append([p.detach().clone() for p in learner.model.parameters()])
    assert all(torch.equal(a, b) for a, b in zip(*params))


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_device_tasks_are_seeded_and_stay_on_the_device(omniglot):
    dev = DeviceTasks(ml.tasks.Shifted(omniglot, 2, 10.0), "cuda")
    g = torch.Generator(device=dev.generator_device)
    a, b = dev.sample(8, g.manual_seed(1)), dev.sample(8, g.manual_seed(1))
    assert _equal(a, b) and a.support_x.is_cuda and a.classes.is_cuda
    TaskBatch(*_fields(a))
    torch.cuda.set_sync_debug_mode("error")          # sampling never waits for the device
    try:
        dev.sample(8, g)
    finally:
        torch.cuda.set_sync_debug_mode("default")


CONFIG = """
[family]
name = "omniglot"
split = "val"
ways = 3
shots = 1
queries = 2
image_size = 14
[model]
name = "conv4"
pool = "stride"
channels = 8
[method]
name = "maml"
inner_lr = 0.4
[train]
iterations = 4
meta_batch = 2
augment_shift = 1
"""


def _host_and_device_runs(tmp_path, config: str, device_lines: str):
    """``metaloop train`` of ``config`` as it is (run ``plain``) and with ``device_lines``
    appended to its last section, [train] (run ``fast``): both checkpoints' tensors."""
    from metaloop.cli.main import main
    from metaloop.train.checkpoint import load_checkpoint
    plain, fast = tmp_path / "plain.toml", tmp_path / "fast.toml"
    plain.write_text(config)
    fast.write_text(config + device_lines)
    for cfg in (plain, fast):
        assert main(["train", "--config", str(cfg), "--out", str(tmp_path / cfg.stem),
                     "--no-progress"]) == 0
    return [load_checkpoint(tmp_path / n)[0] for n in ("plain", "fast")]


def test_cli_device_tasks_prefetch_and_log_every_give_the_default_run(tmp_path, capsys):
    from metaloop.cli.main import main
    from metaloop.train.checkpoint import load_checkpoint
    a, b = _host_and_device_runs(tmp_path, CONFIG,
                                 'device_tasks = true\nprefetch = "on"\nlog_every = 3\n')
    assert all(torch.equal(a[k], b[k]) for k in a if k.startswith("model."))
    assert len((tmp_path / "fast" / "metrics.jsonl").read_text().splitlines()) == 2   # 3, 4
    plain = tmp_path / "plain.toml"
    assert main(["train", "--config", str(plain), "--out", str(tmp_path / "bf16"),
                 "--no-progress", "--precision", "bf16"]) == 0
    c = load_checkpoint(tmp_path / "bf16")[0]
    assert any(not torch.equal(a[k], c[k]) for k in a if k.startswith("model."))
    bad = tmp_path / "bad.toml"
    bad.write_text(CONFIG + 'prefetch = "yes"\n')
    assert main(["train", "--config", str(bad), "--out", str(tmp_path / "bad")]) == 2
    assert "train.prefetch = 'yes' is not one of ['auto', 'on', 'off']" in capsys.readouterr().err
    assert not (tmp_path / "bad").exists()


CHALLENGE_CONFIG = """
[family]
name = "omniglot"
split = "background_val"
ways = 5
shots = 1
queries = 2
image_size = 14
within_alphabet = 0.5
rotations = true
drawers = "shared"
[model]
name = "conv4"
pool = "stride"
channels = 8
[method]
name = "protonet"
[eval]
split = "evaluation"
within_alphabet = true
[train]
iterations = 3
meta_batch = 2
augment_shift = 1
"""


def test_cli_challenge_run_with_device_tasks_is_the_host_run(tmp_path):
    a, b = _host_and_device_runs(tmp_path, CHALLENGE_CONFIG, "device_tasks = true\n")
    assert all(torch.equal(a[k], b[k]) for k in a if k.startswith("model."))


def test_the_sampler_never_reads_a_value_back_to_the_host(omniglot):
    """On the meta device every tensor op works but any read of a value (``int``, ``.item``,
    ``nonzero``...) raises: sampling there proves it needs no host synchronisation."""
    dev = DeviceTasks(ml.tasks.Shifted(omniglot, 2, 10.0, max_stroke=0.5, elastic=1.0), "meta")
    b = dev.sample(4)
    assert b.support_x.device.type == "meta" and b.support_x.shape == (4, 10, 1, 14, 14)
    assert b.query_y.shape == (4, 15) and b.classes.shape == (4, 5)
    with pytest.raises(RuntimeError, match="meta"):
        TaskBatch(*_fields(b))                  # its checks read labels: a sync on a GPU
    # shapes are static across draws (what CUDA-graph capture needs)
    assert all(x.shape == y.shape for x, y in zip(_fields(b), _fields(dev.sample(4))))


def test_the_loop_bookkeeping_reads_the_device_only_at_its_cadence():
    from metaloop.train.loop import _Cast, _FiniteGuard, _Window
    loss = torch.tensor(0.5, device="meta")
    grads = {"w": torch.ones(3, device="meta")}
    window, guard = _Window(), _FiniteGuard("")
    for it in range(1, 4):                       # per step: no value is read
        window.add({"loss": loss, "accuracy": loss})
        guard.add(it, loss, grads)
    with pytest.raises(RuntimeError, match="meta"):
        window.read()                            # the reads happen here, once per window
    with pytest.raises(RuntimeError, match="meta"):
        guard.check()
    cast = _Cast(ml.tasks.Sinusoid(5, 5), torch.device("meta"), torch.float32)
    assert cast.sample(2, torch.Generator()).support_x.device.type == "meta"   # not rechecked

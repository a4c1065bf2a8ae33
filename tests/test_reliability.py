"""Bad input is named and loses nothing: one test per row of docs/reliability.md that other
test files do not already cover, and property-based fuzzing (hypothesis) of config parsing
and TaskBatch validation."""

import json
import os

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from metaloop import config as _config
from metaloop.cli.main import main
from metaloop.tasks.batch import TaskBatch
from metaloop.train.checkpoint import FORMAT_VERSION, latest_checkpoint

FUZZ = settings(max_examples=150, deadline=None, database=None,
                suppress_health_check=[HealthCheck.too_slow])
SMALL = '[family]\nshots = 2\nqueries = 2\n[model]\nhidden = [4]\n' \
        '[train]\niterations = 2\nmeta_batch = 2\ncheckpoint_every = 1\n'


def _train(tmp_path, body, *extra, out="run"):
    cfg = tmp_path / "c.toml"
    cfg.write_text(body)
    return main(["train", "--config", str(cfg), "--out", str(tmp_path / out), "--no-progress",
                 *extra])


# ---------------------------------------------------------------- config: before training

@pytest.mark.parametrize("body,message", [
    ('[method]\nname = "mamll"\n', "c.toml: method.name = 'mamll' is not one of"),
    ('[method]\nname = "mamll"\n', "did you mean 'maml'"),
    ('[train]\ndtype = "float16"\n', "c.toml: train.dtype = 'float16' is not one of"),
    ('[train]\nlr = nan\n', "c.toml: train.lr must be a positive number, got nan"),
    ('[train]\ncheckpoint_every = 0\n', "c.toml: train.checkpoint_every must be a positive int"),
    ('[train]\nval_every = -1\n', "c.toml: train.val_every must be >= 0"),
    ('[family]\nname = "fashion_mnist"\nways = 6\n[model]\nname = "conv4"\n',
     "impossible config: family.ways = 6 but fashion_mnist family.split = 'train' has only 5 "
     "classes"),
    ('[family]\nname = "omniglot"\nways = 700\n[model]\nname = "conv4"\n[train]\n'
     'val_every = 10\n', "omniglot eval.split (validation uses 'val') = 'val' has only 688 "
     "classes"),
    ('[family]\nname = "omniglot"\nways = 1000\nsplit = "background"\n[model]\n'
     'name = "conv4"\n', "omniglot family.split = 'background' has only 964 classes"),
    ('[family]\nname = "omniglot"\nshots = 5\nqueries = 16\n[model]\nname = "conv4"\n',
     "impossible config: family.shots + family.queries = 5 + 16 = 21 but omniglot has only 20 "
     "examples per class"),
    ('[family]\nname = "omniglot"\nshots = 1\nqueries = 15\n[eval]\nshots = 10\n'
     '[model]\nname = "conv4"\n', "eval.shots + eval.queries (0 = the family's) = 10 + 15"),
    ('[method]\nname = "reptile"\nfirst_order = true\n',
     "config method.first_order = true: first_order applies to maml and anil, not 'reptile'"),
    ('[method]\nname = "maml"\ninner_optimizer = "adam"\n',
     "method.inner_optimizer = 'adam' applies to reptile only"),
    ('[method]\nname = "reptile"\nadam_state = "shared"\n',
     "method.adam_state = 'shared' applies to reptile with method.inner_optimizer = \"adam\""),
    ('[method]\nname = "reptile"\ninner_optimizer = "adam"\nadam_state = "global"\n',
     "c.toml: method.adam_state = 'global' is not one of"),
    ('[family]\nname = "omniglot"\n', "config model.name = 'mlp' reads vectors"),
    ('[model]\nname = "conv4"\n', "config model.name = 'conv4' needs an image family"),
])
def test_impossible_configs_are_named_before_any_data_is_read(tmp_path, capsys, monkeypatch,
                                                              body, message):
    from metaloop import build as _build

    def no_data(*a, **k):
        raise AssertionError("data was loaded before the config was checked")
    monkeypatch.setattr(_build, "build_family", no_data)
    assert _train(tmp_path, body) == 2
    assert message in capsys.readouterr().err
    assert not (tmp_path / "run").exists()


def test_first_order_on_a_head_based_learner_is_named(monkeypatch):
    from metaloop import build as _build
    monkeypatch.setattr(_build, "METHODS", (*_build.METHODS, "r2d2", "metaoptnet"))
    cfg = _config.validate({"method": {"name": "metaoptnet", "first_order": True}})
    with pytest.raises(ValueError, match="not 'metaoptnet' .a head-based learner"):
        _config.check_combinations(cfg)


def test_a_missing_config_file_is_named(tmp_path, capsys):
    assert main(["train", "--config", str(tmp_path / "no.toml"), "--out", str(tmp_path)]) == 2
    assert f"config file {tmp_path / 'no.toml'} does not exist" in capsys.readouterr().err


def test_an_output_directory_that_cannot_be_created_is_named(tmp_path, capsys):
    (tmp_path / "file").write_text("x")
    assert _train(tmp_path, SMALL, out="file/run") == 2
    assert "cannot create output directory" in capsys.readouterr().err


def test_an_output_directory_that_is_not_writable_is_named(tmp_path, capsys, monkeypatch):
    (tmp_path / "ro").mkdir()
    real = os.access
    monkeypatch.setattr(os, "access", lambda p, m: False if str(p).endswith("ro") else real(p, m))
    assert _train(tmp_path, SMALL, out="ro") == 2        # (root ignores chmod, so fake it)
    assert f"output directory {tmp_path / 'ro'} is not writable" in capsys.readouterr().err
    assert not latest_checkpoint(tmp_path / "ro")


# ---------------------------------------------------------------- checkpoints and resume

def test_resume_with_a_different_config_names_the_keys(tmp_path, capsys):
    assert _train(tmp_path, SMALL) == 0
    capsys.readouterr()
    cfg = tmp_path / "c2.toml"
    cfg.write_text(SMALL.replace("iterations = 2", "iterations = 4") + "lr = 0.002\n")
    assert main(["train", "--config", str(cfg), "--resume", str(tmp_path / "run")]) == 2
    err = capsys.readouterr().err
    assert "refusing to resume" in err and "train.iterations (2 != 4)" in err \
        and "train.lr (0.001 != 0.002)" in err
    # more iterations for a finished run: the way on is a new run from its weights
    assert "start a new run from its weights (config train.init = the run's directory" in err


def test_resume_may_change_how_but_not_what_is_computed(tmp_path, capsys):
    assert _train(tmp_path, SMALL + '[method]\nbatching = "vmap"\n') == 0
    cfg = tmp_path / "c2.toml"
    cfg.write_text(SMALL.replace("checkpoint_every = 1", "checkpoint_every = 3")
                   + '[method]\nbatching = "loop"\n')
    assert main(["train", "--config", str(cfg), "--resume", str(tmp_path / "run"),
                 "--no-progress"]) == 0           # batching and checkpoint_every: allowed
    cfg.write_text(SMALL + '[method]\nbatching = "loop"\ninner_lr = 0.02\n')
    assert main(["train", "--config", str(cfg), "--resume", str(tmp_path / "run"),
                 "--no-progress"]) == 2
    assert "method.inner_lr" in capsys.readouterr().err


def test_a_checkpoint_from_before_a_config_key_existed_resumes(tmp_path, capsys):
    assert _train(tmp_path, SMALL) == 0
    state = latest_checkpoint(tmp_path / "run") / "state.json"
    old = json.loads(state.read_text())
    del old["config"]["train"]["dtype"], old["state_sha256"]   # as an older metaloop wrote it
    state.write_text(json.dumps(old))
    cfg = tmp_path / "c.toml"
    cfg.write_text(SMALL.replace("iterations = 2", "iterations = 3"))
    assert main(["train", "--config", str(cfg), "--resume", str(tmp_path / "run"),
                 "--no-progress"]) == 2                   # iterations differs: named
    assert "train.iterations (2 != 3)" in capsys.readouterr().err
    assert main(["train", "--resume", str(tmp_path / "run"), "--no-progress"]) == 0


@pytest.mark.parametrize("damage,message", [
    ("truncate_tensors", "tensors.safetensors is corrupt or truncated: sha256"),
    ("corrupt_state", "state.json is corrupt"),
    ("old_format", f"has format version 0, this metaloop reads {FORMAT_VERSION}"),
    ("no_checkpoint", "--resume: no checkpoint in"),
])
def test_a_damaged_checkpoint_is_named_on_resume(tmp_path, capsys, damage, message):
    assert _train(tmp_path, SMALL) == 0
    ck = latest_checkpoint(tmp_path / "run")
    if damage == "truncate_tensors":
        f = ck / "tensors.safetensors"
        f.write_bytes(f.read_bytes()[:-7])
    elif damage == "corrupt_state":
        f = ck / "state.json"
        f.write_text(f.read_text()[:40])
    elif damage == "old_format":
        f = ck / "state.json"
        f.write_text(json.dumps({**json.loads(f.read_text()), "format_version": 0}))
    else:
        (tmp_path / "run" / "LATEST").unlink()
    assert main(["train", "--resume", str(tmp_path / "run"), "--no-progress"]) == 2
    assert message in capsys.readouterr().err


def test_a_non_finite_loss_exits_1_naming_the_iteration(tmp_path, capsys):
    assert _train(tmp_path, SMALL.replace("[train]\n", "[train]\nlr = 1e300\n")
                  .replace("[model]\n", "[method]\ninner_lr = 1e300\n[model]\n")) == 1
    err = capsys.readouterr().err
    assert "non-finite meta-loss/gradient at iteration 1" in err and "Traceback" not in err


# ---------------------------------------------------------------- fuzzing

KEYS = sorted({k for body in _config.SCHEMA.values() for k in body})
values = st.one_of(st.integers(-3, 10**6), st.floats(allow_nan=True), st.booleans(),
                   st.text(max_size=8), st.lists(st.integers(-2, 50), max_size=3),
                   st.sampled_from(["maml", "reptile", "sinusoid", "omniglot", "conv4", "mlp",
                                    "float64", "fashion_mnist", "anil", "zero", "vmap"]))
names = st.one_of(st.sampled_from(KEYS), st.text(min_size=1, max_size=10))
sections = st.one_of(st.sampled_from(sorted(_config.SCHEMA)), st.text(min_size=1, max_size=8))
configs = st.dictionaries(sections, st.one_of(st.dictionaries(names, values, max_size=5),
                                              values), max_size=5)


@FUZZ
@given(configs)
def test_fuzz_config_validation_fails_only_with_a_named_value_error(raw):
    try:
        cfg = _config.validate(raw)
    except ValueError as e:
        msg = str(e)
        assert "config" in msg or "unknown" in msg
        bad = [f"{s}.{k}" for s, b in raw.items() if isinstance(b, dict) for k in b
               if s in _config.SCHEMA and k not in _config.SCHEMA[s]]
        assert not bad or any(b in msg for b in bad) or "section" in msg or "table" in msg
        return
    assert set(cfg) == set(_config.SCHEMA)
    for s, body in _config.SCHEMA.items():
        assert set(cfg[s]) == set(body)
    assert _config.validate(cfg) == cfg                    # idempotent
    try:
        _config.check_combinations(cfg)
    except ValueError as e:
        assert "config" in str(e)


@FUZZ
@given(st.text(max_size=200))
def test_fuzz_toml_text_loads_or_fails_with_a_value_error(tmp_path_factory, text):
    path = tmp_path_factory.mktemp("cfg") / "c.toml"
    path.write_text(text)
    try:
        _config.load(path)
    except ValueError:
        pass


DTYPES = [torch.float32, torch.float64, torch.int64, torch.int32, torch.bool]


@st.composite
def tensors(draw, b, n):
    extra = draw(st.lists(st.integers(0, 3), max_size=2))
    shape = draw(st.sampled_from([[b], [b, n, *extra], [b, n, *extra], [b, n, *extra]]))
    dtype = draw(st.sampled_from(DTYPES))
    if dtype.is_floating_point:
        return torch.randn(shape, dtype=dtype)
    if dtype == torch.bool:
        return torch.zeros(shape, dtype=dtype)
    return torch.randint(-1, 4, shape, dtype=dtype)


@st.composite
def batches(draw):
    """Well-formed classification or regression batches, often with one field spoiled."""
    b, s, q = draw(st.integers(0, 3)), draw(st.integers(0, 3)), draw(st.integers(0, 3))
    feat = draw(st.lists(st.integers(1, 2), max_size=2))
    if draw(st.booleans()):                                          # classification
        sy, qy = torch.randint(0, 3, (b, s)), torch.randint(0, 3, (b, q))
    else:
        out = draw(st.integers(1, 2))
        sy, qy = torch.randn(b, s, out), torch.randn(b, q, out)
    fields = [torch.randn(b, s, *feat), sy, torch.randn(b, q, *feat), qy]
    classes = draw(st.one_of(st.none(), st.just(torch.arange(3).repeat(b, 1))))
    spoil = draw(st.integers(0, 5))
    if spoil < 4:
        fields[spoil] = draw(tensors(draw(st.sampled_from([b, b + 1])), draw(st.integers(0, 3))))
    elif spoil == 4:
        classes = draw(tensors(b, 3))
    return fields, classes


@FUZZ
@given(batches())
def test_fuzz_taskbatch_validation(data):
    (sx, sy, qx, qy), classes = data
    try:
        batch = TaskBatch(sx, sy, qx, qy, classes)
    except ValueError as e:
        assert "TaskBatch" in str(e) or "labels" in str(e) or "regression" in str(e)
        return
    b = batch.num_tasks
    assert b >= 1 and all(t.shape[0] == b for t in (sx, sy, qx, qy))
    assert sx.shape[2:] == qx.shape[2:] and sx.is_floating_point()
    if batch.is_classification:
        assert sy.dtype == qy.dtype == torch.int64 and sy.min() >= 0
        assert int(qy.max()) < batch.ways
    else:
        assert sy.dim() == qy.dim() == 3 and classes is None
    # Every task of an accepted batch is consistent, so every shard is a valid batch.
    if batch.is_classification:
        assert bool((qy.max(1).values <= sy.max(1).values).all())
    for lo, hi in ((0, b), (0, 1), (b - 1, b)):
        part = batch.slice(lo, hi)
        assert part.num_tasks == hi - lo and torch.equal(part.query_x, qx[lo:hi])


@pytest.mark.parametrize("flags, message", [
    (["--tf32"], "--tf32 allows TF32 matmuls on CUDA, but --device is cpu, so it would "
                 "change nothing"),
    (["--dist-timeout", "60"], "--dist-timeout 60 sets how long a rank of a torchrun waits "
                               "for the others, but this is one process"),
])
def test_train_refuses_flags_that_change_nothing(tmp_path, capsys, monkeypatch, flags,
                                                 message):
    """Both were accepted and ignored by a one-process CPU run."""
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    cfg = tmp_path / "c.toml"
    cfg.write_text(SMALL)
    assert main(["train", "--config", str(cfg), "--out", str(tmp_path / "run"),
                 "--no-progress", *flags]) == 2
    assert message in capsys.readouterr().err
    assert not (tmp_path / "run").exists()

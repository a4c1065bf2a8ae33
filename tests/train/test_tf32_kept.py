"""TF32 set back: ``--tf32`` (``set_tf32``) changes two process-wide flags, which
``train_config(device="cuda")``, ``metaloop eval --device cuda`` and ``cli.main.main`` set
back when they return or raise, so that a program calling them keeps its own settings.
Checked on the CPU: the flags exist (and can be set) without a GPU."""

import pytest
import torch

from metaloop.train import distributed


@pytest.fixture
def tf32_flags():
    saved = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    yield
    torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = saved


def _flags():
    return torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32


@pytest.mark.parametrize("mine", [(False, True), (True, False)])
def test_tf32_kept_sets_both_flags_back_after_an_error(tf32_flags, mine):
    torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = mine
    with pytest.raises(RuntimeError, match="boom"):
        with distributed.tf32_kept():
            distributed.set_tf32(not mine[0])
            assert _flags() == (not mine[0], not mine[0])
            raise RuntimeError("boom")
    assert _flags() == mine


def test_train_config_on_cuda_sets_tf32_back(tf32_flags, monkeypatch, tmp_path):
    """The real ``train_config`` up to moving the model to the GPU (which fails on a CPU
    build, after ``set_tf32``): the caller's flags are back after it raises."""
    import contextlib

    from metaloop import build, config
    from metaloop.recipes import training

    seen = []
    real_set, real_build = distributed.set_tf32, build.build_learner
    monkeypatch.setattr(distributed, "set_tf32",
                        lambda on: (seen.append(on), real_set(on)))
    monkeypatch.setattr(distributed, "device_for", lambda device: torch.device("cuda", 0))
    monkeypatch.setattr(training, "seeded_rng", lambda *a, **k: contextlib.nullcontext())
    monkeypatch.setattr(build, "build_learner",
                        lambda cfg, family, device=None: real_build(cfg, family))
    cfg = config.validate({"family": {"name": "sinusoid"}, "train": {"iterations": 1}})
    torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = False, False
    if torch.cuda.is_available():
        pytest.skip("checks the set-back where moving to the GPU fails (a CPU build)")
    with pytest.raises((AssertionError, RuntimeError)):
        training.train_config(cfg, tmp_path / "run", device="cuda", tf32=True, progress=False)
    assert seen == [True]                       # it was turned on, then set back
    assert _flags() == (False, False)


def test_main_sets_tf32_back_after_eval_tf32(tf32_flags, monkeypatch, tmp_path):
    """``metaloop eval --device cuda --tf32`` through ``main``, its run loaded on the CPU
    and its evaluation replaced by one that records the flags it runs under."""
    from metaloop.cli import eval as eval_cli
    from metaloop.cli.main import main

    real_load = eval_cli.load_ensemble
    monkeypatch.setattr(eval_cli, "load_ensemble",
                        lambda runs, device=None, **k: real_load(runs, device="cpu", **k))
    seen = []
    monkeypatch.setattr(eval_cli, "_evaluate", lambda *a, **k: seen.append(_flags()) or 0)
    run = _a_run(tmp_path)
    torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = False, True
    assert main(["eval", "--checkpoint", str(run), "--device", "cuda", "--tf32"]) == 0
    assert seen == [(True, True)]               # eval ran with TF32 on
    assert _flags() == (False, True)            # and the caller's flags are back


def _a_run(tmp_path):
    from metaloop import config
    from metaloop.recipes import training

    cfg = config.validate({"family": {"name": "sinusoid"},
                           "train": {"iterations": 1, "meta_batch": 1, "checkpoint_every": 1}})
    training.train_config(cfg, tmp_path / "run", progress=False)
    return tmp_path / "run"


@pytest.fixture
def new_api():
    """torch's fp32_precision API, as a program of its own may use it (set back after)."""
    matmul = torch.get_float32_matmul_precision()
    yield
    # set back as a process that never used the API reads it (the legacy flags readable)
    torch.backends.fp32_precision = "none"
    torch.set_float32_matmul_precision(matmul)


def test_a_cpu_run_leaves_torchs_fp32_precision_api_alone(new_api, tmp_path):
    """A CPU run reads and writes neither TF32 flag: reading them raises in torch once its
    fp32_precision API has been used (the two may not be mixed)."""
    from metaloop.cli.main import main

    torch.backends.fp32_precision = "tf32"
    _a_run(tmp_path)                                        # train_config on the CPU
    assert main(["eval", "--checkpoint", str(tmp_path / "run"), "--tasks", "2"]) == 0
    assert torch.backends.fp32_precision == "tf32"
    torch.backends.fp32_precision = "none"
    torch.set_float32_matmul_precision("medium")
    assert main(["eval", "--checkpoint", str(tmp_path / "run"), "--tasks", "2"]) == 0
    assert torch.get_float32_matmul_precision() == "medium"

"""metaloop's own warnings print as ``metaloop COMMAND: warning: ...``, as errors do, without
the source line of the library that raised them (a subprocess: the tests turn warnings into
errors)."""

import subprocess
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from conftest import write_image_folder  # noqa: E402


def _train(tmp_path, *launcher: str) -> subprocess.CompletedProcess:
    """``metaloop --threads 1 train`` of ``tmp_path/c.toml`` in a subprocess, started by
    ``python *launcher -m metaloop`` (``launcher``: e.g. torchrun's module and flags)."""
    return subprocess.run([sys.executable, *launcher, "-m", "metaloop", "--threads", "1",
                           "train", "--config", str(tmp_path / "c.toml"), "--out",
                           str(tmp_path / "run"), "--no-progress"],
                          capture_output=True, text=True, timeout=300)


def test_an_unread_config_key_is_one_line_naming_the_command(tmp_path):
    (tmp_path / "c.toml").write_text(
        '[family]\nname = "sinusoid"\n[model]\nname = "mlp"\nhidden = [8]\nchannels = 8\n'
        '[method]\nname = "maml"\ninner_lr = 0.4\ninner_steps = 1\n[train]\niterations = 1\n'
        'meta_batch = 1\ncheckpoint_every = 1\n')
    done = _train(tmp_path)
    assert done.returncode == 0, done.stderr
    lines = [ln for ln in done.stderr.splitlines() if "model.channels" in ln]
    assert len(lines) == 1, done.stderr
    assert lines[0].startswith("metaloop train: warning: ")
    assert "UnreadKeyWarning" not in done.stderr and "config.py" not in done.stderr


def test_a_warning_under_torchrun_is_one_line_naming_the_command(tmp_path):
    """The pretrain baseline with BatchNorm on 2 ranks warned in Python's format
    ('.../training.py:181: UserWarning: Pretrain normalises ...' and the source line)."""
    root = write_image_folder(tmp_path / "images", classes=6, per_class=4, mixed=False)
    (tmp_path / "c.toml").write_text(
        f'[family]\nname = "folder"\nroot = "{root}"\nways = 2\nshots = 1\nqueries = 1\n'
        'split_fractions = [0.5, 0.0, 0.5]\n[model]\nname = "conv4"\npool = "stride"\n'
        'channels = 4\n[method]\nname = "pretrain"\n[train]\niterations = 1\nmeta_batch = 2\n'
        'checkpoint_every = 1\n[eval]\ntasks = 2\nsteps = [1]\n')
    done = _train(tmp_path, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node",
                  "2")
    assert done.returncode == 0, done.stderr
    lines = [ln for ln in done.stderr.splitlines() if "normalises its whole meta-batch" in ln]
    assert len(lines) == 1, done.stderr
    assert lines[0].startswith("metaloop train: warning: Pretrain normalises")
    assert "UserWarning" not in done.stderr and "ShardWarning" not in done.stderr

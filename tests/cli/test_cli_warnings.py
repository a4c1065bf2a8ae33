"""metaloop's own warnings print as ``metaloop COMMAND: warning: ...``, as errors do, without
the source line of the library that raised them (a subprocess: the tests turn warnings into
errors)."""

import subprocess
import sys


def test_an_unread_config_key_is_one_line_naming_the_command(tmp_path):
    (tmp_path / "c.toml").write_text(
        '[family]\nname = "sinusoid"\n[model]\nname = "mlp"\nhidden = [8]\nchannels = 8\n'
        '[method]\nname = "maml"\ninner_lr = 0.4\ninner_steps = 1\n[train]\niterations = 1\n'
        'meta_batch = 1\ncheckpoint_every = 1\n')
    done = subprocess.run([sys.executable, "-m", "metaloop", "--threads", "1", "train",
                           "--config", str(tmp_path / "c.toml"), "--out", str(tmp_path / "run"),
                           "--no-progress"], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    lines = [ln for ln in done.stderr.splitlines() if "model.channels" in ln]
    assert len(lines) == 1, done.stderr
    assert lines[0].startswith("metaloop train: warning: ")
    assert "UnreadKeyWarning" not in done.stderr and "config.py" not in done.stderr

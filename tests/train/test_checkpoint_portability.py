"""Checkpoints and atomic writes on other systems and locales: files are UTF-8 whatever the
locale (``atomic_write_text`` wrote in the locale's encoding, which under the C locale cannot
hold a character outside ASCII), and a system that cannot open a folder (Windows) still
writes them."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

SCRIPT = """
import json, locale, sys
from pathlib import Path
from metaloop.train.checkpoint import atomic_write_text
assert locale.getpreferredencoding(False).lower() in ("ascii", "ansi_x3.4-1968"), \\
    locale.getpreferredencoding(False)
out = Path(sys.argv[1])
name = "\\u0395\\u03bb\\u03bb\\u03b7\\u03bd\\u03b9\\u03ba\\u03ac"
atomic_write_text(out / "classes.json", json.dumps([name], ensure_ascii=False))
assert json.loads((out / "classes.json").read_bytes().decode("utf-8")) == [name]
print("ok")
"""


def test_text_is_written_as_utf8_under_an_ascii_locale(tmp_path):
    env = {**os.environ, "LC_ALL": "C", "LANG": "C", "PYTHONCOERCECLOCALE": "0",
           "PYTHONUTF8": "0", "PYTHONIOENCODING": "utf-8"}
    r = subprocess.run([sys.executable, "-c", SCRIPT, str(tmp_path)], env=env,
                       capture_output=True, text=True, encoding="utf-8", timeout=120)
    assert r.returncode == 0, r.stderr[-2000:]
    assert r.stdout.strip() == "ok"


def test_a_write_succeeds_where_a_folder_cannot_be_opened_as_on_windows(tmp_path, monkeypatch):
    """Windows refuses ``os.open`` on a folder (PermissionError), which the folder fsync
    after every rename did: every checkpoint and atomic write failed there, after the
    checkpoint folder had been moved into place."""
    import torch

    from metaloop.train import checkpoint
    real_open = os.open

    def windows_open(path, flags, *args, **kwargs):
        if os.path.isdir(path):
            raise PermissionError(13, "Permission denied", str(path))
        return real_open(path, flags, *args, **kwargs)
    monkeypatch.setattr(os, "open", windows_open)
    with monkeypatch.context() as m:
        m.setattr(checkpoint, "FOLDER_FSYNC", False)                       # os.name == "nt"
        checkpoint.atomic_write_text(tmp_path / "a.txt", "x\n")
        checkpoint.save_checkpoint(tmp_path / "run", 3, {"w": torch.ones(2)}, {"config": {}})
    assert (tmp_path / "a.txt").read_text() == "x\n"
    tensors, state = checkpoint.load_checkpoint(tmp_path / "run")
    assert state["iteration"] == 3 and torch.equal(tensors["w"], torch.ones(2))
    with pytest.raises(checkpoint.WriteError, match="Permission denied"):   # elsewhere: named
        checkpoint.atomic_write_text(tmp_path / "b.txt", "x\n")

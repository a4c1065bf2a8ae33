"""Progress bars off a terminal (stderr into a log file or a pipe) redraw at most every
``OFF_TERMINAL_INTERVAL`` seconds instead of ~8 times a second; on a terminal they are
tqdm's own, and tqdm's ``TQDM_*`` environment overrides still apply."""

from __future__ import annotations

import io
import sys

from metaloop import _progress
from metaloop._progress import OFF_TERMINAL_INTERVAL, tqdm_defaults
from metaloop.cli.main import main


class _Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_off_a_terminal_a_bar_redraws_once_a_minute(monkeypatch):
    monkeypatch.delenv("TQDM_MININTERVAL", raising=False)
    monkeypatch.delenv("TQDM_MAXINTERVAL", raising=False)
    assert tqdm_defaults(io.StringIO()) == {"mininterval": OFF_TERMINAL_INTERVAL,
                                            "maxinterval": OFF_TERMINAL_INTERVAL}
    assert OFF_TERMINAL_INTERVAL == 60
    assert tqdm_defaults(_Terminal()) == {}
    closed = io.StringIO()
    closed.close()
    assert tqdm_defaults(closed)["mininterval"] == OFF_TERMINAL_INTERVAL
    monkeypatch.setattr(sys, "stderr", _Terminal())
    assert tqdm_defaults() == {}                          # None: sys.stderr, as tqdm's


def test_the_environment_overrides_are_left_to_tqdm(monkeypatch):
    monkeypatch.setenv("TQDM_MININTERVAL", "5")
    monkeypatch.delenv("TQDM_MAXINTERVAL", raising=False)
    assert tqdm_defaults(io.StringIO()) == {"maxinterval": OFF_TERMINAL_INTERVAL}


def test_a_notebook_keeps_tqdms_defaults(monkeypatch):
    monkeypatch.setattr(_progress, "_notebook", lambda: True)
    assert tqdm_defaults(io.StringIO()) == {}


SINUSOID = ('[family]\nname = "sinusoid"\n[model]\nname = "mlp"\nhidden = [8]\n'
            '[method]\nname = "maml"\ninner_lr = 0.01\ninner_steps = 1\n'
            '[train]\niterations = 1500\nmeta_batch = 2\ncheckpoint_every = 1500\n')


def test_train_writes_a_few_bar_updates_into_a_log(tmp_path, capsys, monkeypatch):
    monkeypatch.delenv("TQDM_MININTERVAL", raising=False)
    (tmp_path / "c.toml").write_text(SINUSOID)
    assert main(["--threads", "1", "train", "--config", str(tmp_path / "c.toml"), "--out",
                 str(tmp_path / "run")]) == 0
    err = capsys.readouterr().err          # (not a terminal)
    assert err.count("\r") <= 4, err.count("\r")       # drawn, maybe once more, cleared

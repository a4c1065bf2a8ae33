"""Renamed config keys: ``method.checkpoint`` is now ``method.recompute_inner_loop``; the old
name still loads, with a FutureWarning that names the new one."""

from __future__ import annotations

import pytest

from metaloop import build as _build
from metaloop import config as _config


def test_the_old_key_loads_under_the_new_name_with_a_warning():
    with pytest.warns(FutureWarning, match=r"method\.checkpoint is deprecated; it is now "
                                           r"method\.recompute_inner_loop"):
        cfg = _config.validate({"method": {"name": "maml", "checkpoint": True}})
    assert cfg["method"]["recompute_inner_loop"] is True and "checkpoint" not in cfg["method"]
    assert _config.validate({"method": {"name": "maml"}})["method"]["recompute_inner_loop"] \
        is False


def test_the_new_key_builds_a_recomputing_learner():
    cfg = _config.validate({"family": {"name": "sinusoid"}, "model": {"hidden": [4]},
                            "method": {"name": "anil", "recompute_inner_loop": True}})
    _config.check_combinations(cfg)

    learner = _build.build_learner(cfg, _build.build_family(cfg["family"]))
    assert learner.recompute_inner_loop and learner.batching == "loop"


def test_both_names_at_once_and_the_key_on_other_methods_are_named_errors():
    with pytest.raises(ValueError, match="give method.recompute_inner_loop only"):
        _config.validate({"method": {"checkpoint": True, "recompute_inner_loop": True}})
    cfg = _config.validate({"method": {"name": "reptile", "recompute_inner_loop": True}})
    with pytest.raises(ValueError, match="method.recompute_inner_loop = true: recomputing the "
                                         "inner loop applies to maml, fomaml and anil"):
        _config.check_combinations(cfg)


def test_a_config_with_the_old_key_still_trains_and_evaluates(tmp_path, capsys):
    """A user's config (and every run saved before the rename) has method.checkpoint."""
    from metaloop.cli.main import main
    from metaloop.runs import load_run

    cfg = tmp_path / "c.toml"
    cfg.write_text('[family]\nname = "sinusoid"\n[model]\nhidden = [4]\n[method]\n'
                   'name = "maml"\ninner_steps = 2\ncheckpoint = true\n[train]\n'
                   'iterations = 2\nmeta_batch = 2\n')
    with pytest.warns(FutureWarning, match="method.recompute_inner_loop"):
        assert main(["train", "--config", str(cfg), "--out", str(tmp_path / "r"),
                     "--no-progress"]) == 0
    _run = load_run(tmp_path / "r")
    learner, saved = _run.learner, _run.config
    assert learner.recompute_inner_loop and saved["method"]["recompute_inner_loop"] is True


def test_the_command_line_prints_the_deprecation_as_its_own_warning(tmp_path):
    """Shown as ``metaloop train: warning: ...``, as metaloop's own warnings are, not as
    Python's ``.../config.py:NNN: FutureWarning:`` with a line of library source."""
    import subprocess
    import sys

    cfg = tmp_path / "c.toml"
    cfg.write_text('[family]\nname = "sinusoid"\n[model]\nhidden = [4]\n[method]\n'
                   'name = "maml"\ncheckpoint = true\n[train]\niterations = 1\nmeta_batch = 1\n')
    done = subprocess.run([sys.executable, "-m", "metaloop", "train", "--config", str(cfg),
                           "--out", str(tmp_path / "r"), "--no-progress"],
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert ("metaloop train: warning: config key method.checkpoint is deprecated; it is now "
            "method.recompute_inner_loop") in done.stderr, done.stderr
    assert "FutureWarning" not in done.stderr and "config.py:" not in done.stderr

"""A ``state.json`` nested deeper than the JSON reader recurses, or larger than a state can
be, is refused as a corrupt checkpoint by name (ValueError), not a RecursionError traceback
or a read of the whole file."""

import pytest
import torch

from metaloop import runs
from metaloop.train import checkpoint
from metaloop.train.checkpoint import load_checkpoint, save_checkpoint


@pytest.fixture
def ck(tmp_path):
    return save_checkpoint(tmp_path / "run", 3, {"w": torch.ones(2)}, {"config": {}})


def test_deeply_nested_state_json_is_named(ck, tmp_path):
    (ck / "state.json").write_text("[" * 200_000 + "]" * 200_000)
    with pytest.raises(ValueError, match=r"checkpoint .*state\.json is corrupt: its JSON "
                                         r"nests deeper than it can be read"):
        load_checkpoint(tmp_path / "run")
    with pytest.raises(ValueError, match=r"state\.json is corrupt"):
        load_checkpoint(ck)


def test_deeply_nested_state_json_is_named_by_load_pinned(ck, tmp_path):
    (ck / "state.json").write_text('{"a": ' + "[" * 200_000 + "]" * 200_000 + "}")
    with pytest.raises(ValueError, match=r"state\.json is corrupt"):
        runs.load_pinned(tmp_path / "run")


def test_oversized_state_json_is_refused_with_its_size(ck, tmp_path, monkeypatch):
    monkeypatch.setattr(checkpoint, "MAX_STATE_BYTES", 100, raising=False)
    text = (ck / "state.json").read_text()
    (ck / "state.json").write_text(text + " " * 200)
    size = (ck / "state.json").stat().st_size
    with pytest.raises(ValueError, match=rf"state\.json is corrupt: it is {size} bytes, more "
                                         r"than a state\.json can be \(100 bytes\)"):
        load_checkpoint(tmp_path / "run")


def test_state_cap_is_64_megabytes():
    assert checkpoint.MAX_STATE_BYTES == 64 << 20


def test_train_resume_and_compare_name_a_state_json_nested_too_deep(tmp_path, capsys):
    """``metaloop train --resume`` (and ``compare``, ``adapt``, ``eval --record``) read the
    newest state.json by a reader of their own, without the checkpoint's limits: a
    RecursionError traceback, exit 1."""
    from metaloop.cli.main import main

    cfg = tmp_path / "c.toml"
    cfg.write_text('[family]\nname = "sinusoid"\n[train]\niterations = 2\nmeta_batch = 2\n'
                   'checkpoint_every = 1\n')
    run = tmp_path / "run"
    assert main(["train", "--config", str(cfg), "--out", str(run), "--no-progress"]) == 0
    state = run / (run / "LATEST").read_text().strip() / "state.json"
    state.write_text("[" * 200_000 + "]" * 200_000)
    capsys.readouterr()
    code = main(["train", "--config", str(cfg), "--resume", str(run), "--no-progress"])
    err = capsys.readouterr().err
    assert code == 2, err[-2000:]
    assert "nests deeper than it can be read" in err and "Traceback" not in err

"""``load_checkpoint`` of a run whose LATEST is removed while it is read."""

import pytest

from metaloop.train import checkpoint


def test_latest_removed_while_read_is_a_named_error(tmp_path, monkeypatch):
    (tmp_path / "LATEST").write_text("ckpt-00000001\n")
    monkeypatch.setattr(checkpoint, "latest_checkpoint", lambda run_dir: None)
    with pytest.raises(FileNotFoundError, match=r"its LATEST was removed while it was read"):
        checkpoint.load_checkpoint(tmp_path)

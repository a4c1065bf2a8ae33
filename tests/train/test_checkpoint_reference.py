"""``save_checkpoint``'s pruning against hand-written lists: of earlier checkpoints the newest
``keep - 1`` stay beside the new one, and LATEST names the new one."""

import pytest
import torch

from metaloop.train.checkpoint import latest_checkpoint, load_checkpoint, save_checkpoint


@pytest.mark.parametrize("keep, left", [(1, [5]), (2, [4, 5]), (3, [3, 4, 5])])
def test_pruning_keeps_the_newest_checkpoints(tmp_path, keep, left):
    for it in range(1, 6):
        save_checkpoint(tmp_path, it, {"w": torch.full((2,), float(it))}, {}, keep=keep)
    assert sorted(p.name for p in tmp_path.glob("ckpt-*")) == [f"ckpt-{i:08d}" for i in left]
    assert latest_checkpoint(tmp_path) == tmp_path / "ckpt-00000005"
    tensors, state = load_checkpoint(latest_checkpoint(tmp_path))
    assert state["iteration"] == 5 and torch.equal(tensors["w"], torch.full((2,), 5.0))

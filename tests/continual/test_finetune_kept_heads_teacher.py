"""``batch_loss`` with kept heads needs the teacher they are distilled from."""

import pytest
import torch

from metaloop.continual.finetune import batch_loss


def test_kept_heads_without_a_teacher_are_a_named_error():
    with pytest.raises(ValueError, match=r"kept heads \['a'\] are distilled .* give teacher="):
        batch_loss(torch.nn.Linear(2, 2), {}, None, ["a", "b"], kept={"a": (1.0, [0])})

"""The inversion's smoothness penalty on grey images, against the definition computed by
hand: the mean absolute vertical plus the mean absolute horizontal difference."""

from __future__ import annotations

import torch

from metaloop.generative.invert import total_variation


def test_total_variation_of_grey_images_by_hand():
    x = torch.tensor([[[[0.0, 0.5], [0.2, 0.9]]],
                      [[[1.0, 0.1], [0.4, 0.4]]]], dtype=torch.float64)     # [2, 1, 2, 2]
    # image 0: vertical |0.2 - 0| and |0.9 - 0.5| (mean 0.3); horizontal |0.5 - 0| and
    # |0.9 - 0.2| (mean 0.6). Image 1: (0.6 + 0.3) / 2 and (0.9 + 0) / 2.
    want = torch.tensor([0.3 + 0.6, 0.45 + 0.45], dtype=torch.float64)
    assert torch.allclose(total_variation(x), want, rtol=1e-12)
    # two channels: every difference of both counted in the means
    both = torch.cat([x, 1 - x], dim=1)                                      # [2, 2, 2, 2]
    assert torch.allclose(total_variation(both), want, rtol=1e-12)

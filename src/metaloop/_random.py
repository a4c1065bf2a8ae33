"""Where a seeded random draw is made, for every module that takes a caller's generator."""

from __future__ import annotations

import torch


def draw_device(generator: torch.Generator | None, device: torch.device | str = "cpu"
                ) -> torch.device:
    """Where a random draw with ``generator`` is made: on the generator's own device (a CPU
    generator cannot draw on CUDA, nor a CUDA one on the CPU), or on ``device`` for torch's
    default generator (``generator`` None). Draw there, then move the result to where it is
    used: on the CPU nothing moves, and a seeded CPU generator gives the same numbers
    whichever device the model is on.

    Args:
        generator: the generator of the draw, or None.
        device: where the default generator draws.

    Returns:
        The device of the draw.
    """
    return torch.device(device) if generator is None else generator.device

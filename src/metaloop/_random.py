"""Seeded random draws for every module that takes a caller's generator or seed: where a draw
is made (``draw_device``), the check of a ``generator`` argument (``check_generator``), and
torch's global generators seeded for a block (``seeded_rng``)."""

from __future__ import annotations

import numbers
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar

import torch

_SEEDED: ContextVar[bool] = ContextVar("metaloop_seeded_rng", default=False)


def in_seeded_rng() -> bool:
    """Whether a ``seeded_rng`` block is active here (in this thread or task): its seed
    decides torch's global CPU stream, so ``metaloop.train`` leaves that stream as it is."""
    return _SEEDED.get()


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


def check_generator(owner: str, generator: object, *,
                    kind: type[Exception] = TypeError) -> None:
    """A ``generator`` argument takes a ``torch.Generator`` or None (torch's default one),
    not a seed: a seed given in its place failed deep inside torch, naming neither.

    Args:
        owner: what takes the argument, leading the message as it is (``"Omniglot.sample"``,
            ``"finetune:"``).
        generator: the argument.
        kind: the exception raised: ``TypeError`` (the task families, ``metaloop.adapt``) or
            ``ValueError`` (``metaloop.generative``).

    Raises:
        kind: naming ``owner`` and what was given, with how to make a seeded generator (from
            the integer given, where one was).
    """
    if generator is not None and not isinstance(generator, torch.Generator):
        seed = (generator if isinstance(generator, numbers.Integral)
                and not isinstance(generator, bool) else "seed")
        raise kind(f"{owner} generator must be a torch.Generator or None, got "
                   f"{type(generator).__name__} {generator!r}; for a seeded stream pass "
                   f"torch.Generator().manual_seed({seed})")


@contextmanager
def seeded_rng(seed: int, devices: Iterable[torch.device | str | None] = ()
               ) -> Iterator[None]:
    """While active, torch's global CPU generator and those of the CUDA devices among
    ``devices`` are seeded with ``seed``; afterwards each is back in the caller's state.
    Other CUDA devices are left alone: ``fork_rng()``'s default saves every device's state,
    which initialises CUDA in a run that does not use it (and warns on a machine with
    several GPUs).

    Args:
        seed: an int that ``torch.Generator.manual_seed`` takes.
        devices: where the seeded work runs (the devices of a model's parameters, a
            ``device=`` argument); None entries and non-CUDA devices add nothing, and
            ``"cuda"`` without an index is the current CUDA device.
    """
    places = [torch.device(d) for d in devices if d is not None]
    cuda = sorted({d.index if d.index is not None else torch.cuda.current_device()
                   for d in places if d.type == "cuda"})
    with torch.random.fork_rng(devices=cuda):
        torch.default_generator.manual_seed(seed)
        for d in cuda:
            torch.cuda.default_generators[d].manual_seed(seed)
        token = _SEEDED.set(True)
        try:
            yield
        finally:
            _SEEDED.reset(token)

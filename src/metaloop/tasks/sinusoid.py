"""Sinusoid regression tasks, exactly as MAML section 5.1 (Finn et al. 2017)."""

from __future__ import annotations

import math
import numbers

import torch

from metaloop._random import draw_device
from metaloop._repr import safe_repr
from metaloop.tasks.batch import TaskBatch
from metaloop.tasks.omniglot import check_generator, check_positive_int


class Sinusoid:
    """y = A sin(x - phase) with A ~ U[0.1, 5], phase ~ U[0, pi], x ~ U[-5, 5].

    Held-out tasks: the task distribution is continuous, so meta-training and held-out tasks
    are kept apart by drawing them from disjoint seed streams (``ml.train`` and
    ``ml.evaluate`` use different seeds); two streams give the same task with probability 0.

    Args:
        shots: S, support points per task (K in the MAML paper).
        queries: Q, query points per task.
        amplitude: (low, high) range of A.
        phase: (low, high) range of the phase.
        x_range: (low, high) range of the inputs.

    Raises:
        ValueError: ``shots`` or ``queries`` not a positive integer (an int or a numpy
            integer; a bool or a float is refused), or ``amplitude``, ``phase`` or
            ``x_range`` not a (low, high) pair of finite real numbers with low < high.
    """

    kind = "regression"
    in_dim = 1
    out_dim = 1
    input_shape = (1,)
    ways = num_classes = class_names = None    # regression: no classes (TaskFamily protocol)

    def __init__(self, shots: int = 10, queries: int = 10, amplitude=(0.1, 5.0),
                 phase=(0.0, math.pi), x_range=(-5.0, 5.0)):
        shots, queries = check_positive_int("Sinusoid", shots=shots, queries=queries)
        for name, r in (("amplitude", amplitude), ("phase", phase), ("x_range", x_range)):
            ok = isinstance(r, (tuple, list)) and len(r) == 2 and all(
                isinstance(v, numbers.Real) and not isinstance(v, bool) and math.isfinite(v)
                for v in r)
            if not ok:
                raise ValueError(f"Sinusoid {name} must be a (low, high) pair of finite "
                                 f"numbers, got {r!r}")
            lo, hi = r
            if not lo < hi:
                raise ValueError(f"Sinusoid {name} range must have low < high, got {(lo, hi)}")
        self.shots, self.queries = shots, queries
        self.amplitude, self.phase, self.x_range = tuple(amplitude), tuple(phase), tuple(x_range)

    @safe_repr
    def __repr__(self) -> str:
        """Its settings, e.g. ``Sinusoid(shots=10, queries=10, amplitude=(0.1, 5.0),
        phase=(0.0, 3.141592653589793), x_range=(-5.0, 5.0))``."""
        return (f"Sinusoid(shots={self.shots}, queries={self.queries}, "
                f"amplitude={self.amplitude}, phase={self.phase}, x_range={self.x_range})")

    def sample_params(self, n: int, generator: torch.Generator | None = None):
        """Draw n tasks' (amplitude [n], phase [n]).

        Raises:
            ValueError: ``n`` is not a positive int.
            TypeError: ``generator`` is not a torch.Generator or None.
        """
        n = _check_n(n)
        check_generator("Sinusoid.sample_params", generator)
        return self._params(n, generator)

    def _params(self, n: int, generator: torch.Generator | None):
        """``sample_params`` on checked arguments."""
        at = draw_device(generator)
        a = torch.empty(n, dtype=torch.float64, device=at).uniform_(*self.amplitude,
                                                                    generator=generator)
        p = torch.empty(n, dtype=torch.float64, device=at).uniform_(*self.phase,
                                                                    generator=generator)
        return a.cpu(), p.cpu()                                         # [n], [n]

    def sample(self, n: int, generator: torch.Generator | None = None,
               dtype: torch.dtype = torch.float32) -> TaskBatch:
        """Sample n tasks.

        Returns:
            TaskBatch with support_x/support_y ``[n, shots, 1]``, query ``[n, queries, 1]``.

        Raises:
            ValueError: ``n`` is not a positive integer, or ``dtype`` is not floating point.
            TypeError: ``generator`` is not a torch.Generator or None.
        """
        return self.sample_with_params(n, generator, dtype)[0]

    def sample_with_params(self, n: int, generator: torch.Generator | None = None,
                           dtype: torch.dtype = torch.float32):
        """``sample``, also returning each task's (amplitude ``[n]``, phase ``[n]``).

        Raises:
            ValueError: ``n`` is not a positive integer, or ``dtype`` is not a floating-point
                ``torch.dtype``.
            TypeError: ``generator`` is not a torch.Generator or None.
        """
        n = _check_n(n)
        check_generator("Sinusoid.sample", generator)
        if not (isinstance(dtype, torch.dtype) and dtype.is_floating_point):
            raise ValueError(f"Sinusoid.sample dtype must be a floating-point torch.dtype, "
                             f"got {dtype!r}")
        a, p = self._params(n, generator)
        at = draw_device(generator)
        x = torch.empty(n, self.shots + self.queries, 1, dtype=torch.float64, device=at)
        x = x.uniform_(*self.x_range, generator=generator).cpu()       # [n, S+Q, 1]
        y = a[:, None, None] * torch.sin(x - p[:, None, None])          # [n, S+Q, 1]
        x, y = x.to(dtype), y.to(dtype)
        s = self.shots
        return TaskBatch(x[:, :s], y[:, :s], x[:, s:], y[:, s:]), a, p

    def with_shots(self, shots: int, queries: int | None = None) -> Sinusoid:
        """The same family with another number of support (and query) points."""
        return Sinusoid(shots, self.queries if queries is None else queries, self.amplitude,
                        self.phase, self.x_range)

    @staticmethod
    def curve(amplitude: float, phase: float, x: torch.Tensor) -> torch.Tensor:
        """The true function of one task at inputs x (for plots)."""
        return amplitude * torch.sin(x - phase)


def _check_n(n) -> int:
    """The number of tasks ``n`` as an int; ValueError if it is not a positive integer."""
    (count,) = check_positive_int("Sinusoid", **{"number of tasks": n})
    return count

"""An ensemble of trained learners: each adapts to the task on its own, and their query
predictions are averaged.

For classification (a cross-entropy query loss) the members' class probabilities are
averaged and the ensemble's logits are their log, ``log (1/M) sum_m softmax(z_m)``, so the
query loss ``evaluate`` reports is the averaged model's negative log-likelihood and its
argmax the averaged vote. For regression (any other loss) the members' outputs are averaged.
Nothing is trained: an ensemble is a test-time learner for ``metaloop.evaluate`` and
``metaloop eval --checkpoint RUN RUN ...``, and its training cost is the sum of its members'.

Every member adapts with its own settings (step size, number of inner steps when ``steps``
is None, ridge strength, Newton steps, scoring, refinement); a ``steps`` given to
``adapt_path`` is every member's (a solved head ignores it). ``metaloop eval`` refuses
members whose configs evaluate them otherwise (``metaloop.recipes.evaluation.eval_config``).

Members that refine their prototypes with the queries (ProtoNet's ``refine``) do so each on
its own, unless ``refine_jointly``: then one assignment of the queries, from the members'
averaged class probabilities, moves every member's prototypes
(``metaloop.adapt.refine_prototypes_jointly``).
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence

import torch
from torch import nn

from metaloop._repr import safe_repr
from metaloop.adapt.ridge_head import head_logits
from metaloop.func.losses import cross_entropy
from metaloop.func.params import Params

__all__ = ["Ensemble"]

COMBINE = ("auto", "probabilities", "mean")


class Ensemble:
    """Average the predictions of several learners, each adapted on the same support set.

    Args:
        learners: two or more (one is allowed: it predicts exactly as its member) metaloop
            learners (``adapt_path``, ``predict``, ``inner.loss_fn``) with the same query
            loss, e.g. the same config trained with different seeds.
        combine: ``"probabilities"`` (classification: the log of the mean softmax),
            ``"mean"`` (the mean output, for regression), or ``"auto"``: probabilities for a
            cross-entropy loss, else the mean.
        refine_jointly: members that refine their prototypes with the queries (ProtoNet with
            ``refine = K``; every member the same K, temperature and weight) share one
            assignment of the queries, their averaged class probabilities, instead of each
            using its own. Needs members with prototype heads; off by default. Settable.

    Attributes:
        members: the learners. model: an ``nn.ModuleList`` of their models (``.to(device)``
            moves them all). inner: the first member's, for its ``loss_fn`` (every member's
            query loss is the same); the members adapt with their own.
        batching: ``"vmap"`` when every member scores whole batches of tasks, else ``"loop"``.
        evaluation: how the queries are scored: the members' label when they agree.

    Params are ``{"members": (params_0, ..., params_{M-1})}``, one adapted dict per member.

    Raises:
        ValueError: no learners, a member without ``adapt_path`` / ``predict``, members whose
            query losses differ, an unknown ``combine``, or ``refine_jointly`` with a member
            that has no prototypes to refine. At prediction: members that refine jointly
            with different settings.
    """

    meta_trains = False

    def __init__(self, learners: Sequence, combine: str = "auto", refine_jointly: bool = False):
        learners = list(learners)
        if not learners:
            raise ValueError("Ensemble needs at least one learner")
        for i, m in enumerate(learners):
            missing = [a for a in ("adapt_path", "predict", "inner") if not hasattr(m, a)]
            if missing:
                raise ValueError(f"Ensemble member {i} ({type(m).__name__}) lacks {missing}")
        losses = {getattr(m.inner.loss_fn, "__name__", repr(m.inner.loss_fn))
                  for m in learners}
        if len(losses) > 1:
            raise ValueError(f"Ensemble members have different query losses {sorted(losses)}; "
                             f"their predictions cannot be averaged")
        if combine not in COMBINE:
            raise ValueError(f"Ensemble combine must be one of {COMBINE}, got {combine!r}")
        if combine == "auto":
            combine = "probabilities" if learners[0].inner.loss_fn is cross_entropy \
                else "mean"
        self.members = learners
        self.combine = combine
        self.inner = learners[0].inner
        self.model = nn.ModuleList([m.model for m in learners])
        self.refine_jointly = refine_jointly

    @safe_repr
    def __repr__(self) -> str:
        """The members' methods and how they are combined, e.g. ``Ensemble(members=[MAML,
        MAML, ANIL], combine='mean', refine_jointly=False)``."""
        names = ", ".join(repr(m).split("(")[0] if type(m).__repr__ is not object.__repr__
                          else type(m).__name__ for m in self.members)
        return (f"Ensemble(members=[{names}], combine={self.combine!r}, "
                f"refine_jointly={self.refine_jointly!r})")

    @property
    def refine_jointly(self) -> bool:
        """Whether refining members share one assignment of the queries (see the class)."""
        return self._refine_jointly

    @refine_jointly.setter
    def refine_jointly(self, value: bool) -> None:
        if not isinstance(value, bool):
            raise ValueError(f"Ensemble refine_jointly must be True or False, got {value!r}")
        if value:
            for i, m in enumerate(self.members):
                if not (hasattr(m, "query_parts") and hasattr(m.inner, "refine_jointly")):
                    raise ValueError(f"Ensemble refine_jointly: member {i} "
                                     f"({type(m).__name__}) has no prototypes to refine with "
                                     f"the queries; only protonet's head has")
        self._refine_jointly = value

    def _joint(self) -> tuple[int, float, float] | None:
        """The members' shared (steps, temperature, weight) when they refine jointly now."""
        if not self.refine_jointly:
            return None
        settings = {(m.refine, m.refine_temperature, m.refine_weight) for m in self.members}
        if len(settings) > 1:
            raise ValueError(f"Ensemble refine_jointly: the members refine with different "
                             f"(steps, temperature, weight) {sorted(settings)}; one shared "
                             f"assignment needs one setting")
        steps, temperature, weight = settings.pop()
        return (steps, temperature, weight) if steps else None

    @property
    def batching(self) -> str:
        """``"vmap"`` when every member batches tasks that way, else ``"loop"`` (read from the
        members now, so a member whose scoring changed is followed)."""
        return "vmap" if all(getattr(m, "batching", "loop") == "vmap"
                             for m in self.members) else "loop"

    @property
    def evaluation(self) -> str:
        """The members' scoring label ("transductive", ...), or theirs joined by " / "."""
        labels = {getattr(m, "evaluation", "transductive") for m in self.members}
        label = labels.pop() if len(labels) == 1 else " / ".join(sorted(labels))
        if self._joint():
            label = label.replace("refined with the queries",
                                  "refined with the queries jointly by the members")
        return label

    def __len__(self) -> int:
        return len(self.members)

    def adapt_path(self, support_x: torch.Tensor, support_y: torch.Tensor,
                   steps: int | None = None) -> Iterator[Params]:
        """Yield every member's detached params after 0, 1, ..., ``steps`` steps, as
        ``{"members": tuple}``. A member whose path has ended (a solved head yields once)
        keeps its last params; the ensemble's path is as long as its longest member's.

        Raises:
            ValueError: a member's path yields no params at all while another's yields some
                (raised at that step); and whatever a member's own ``adapt_path`` raises on
                these inputs (e.g. a bad shape or ``steps``), once the path is iterated.
        """
        paths = [m.adapt_path(support_x, support_y, steps) for m in self.members]
        last: list = [None] * len(paths)
        while True:
            moved = False
            for i, p in enumerate(paths):
                nxt = next(p, None)
                if nxt is not None:
                    last[i], moved = nxt, True
            if not moved:
                return
            if any(v is None for v in last):       # a member yielded nothing at all
                raise ValueError("Ensemble: a member's adapt_path yielded no params")
            yield {"members": tuple(last)}  # type: ignore[dict-item]  # members' params

    def adapt(self, support_x: torch.Tensor, support_y: torch.Tensor,
              steps: int | None = None) -> Params:
        """Every member's adapted params for ONE task, ``{"members": tuple}``, detached."""
        *_, last = self.adapt_path(support_x, support_y, steps)
        return last

    def predict(self, params: Params, x: torch.Tensor) -> torch.Tensor:
        """The combined predictions ``[N, out]`` on x ``[N, ...]``: log mean probability
        (classification) or mean output (regression) over the members."""
        members = self._split(params)
        if self._joint():
            batched = [m.batched(p) for m, p in zip(self.members, members)]
            return self._combine(self._joint_logits(batched, x[None]))[0]
        return self._combine([m.predict(p, x) for m, p in zip(self.members, members)])

    def adapt_path_batched(self, support_x: torch.Tensor, support_y: torch.Tensor,
                           steps: int | None = None) -> list[Params]:
        """``adapt_path`` for B tasks at once (support ``[B, S, ...]``; every member must
        batch with vmap): a list over steps, each ``{"members": tuple}`` of the members'
        batched params, a shorter member's path padded with its last entry."""
        paths = [m.adapt_path_batched(support_x, support_y, steps) for m in self.members]
        n = max(len(p) for p in paths)
        return [{"members": tuple(p[min(t, len(p) - 1)] for p in paths)}  # type: ignore[dict-item]
                for t in range(n)]

    def predict_batched(self, params: Params, x: torch.Tensor) -> torch.Tensor:
        """``predict`` for batched params and x ``[B, N, ...]`` -> ``[B, N, out]``."""
        members = self._split(params)
        if self._joint():
            return self._combine(self._joint_logits(members, x))
        return self._combine([m.predict_batched(p, x) for m, p in zip(self.members, members)])

    def _joint_logits(self, members: Sequence[Params], x: torch.Tensor) -> list[torch.Tensor]:
        """Each member's logits ``[B, N, C]`` for x ``[B, N, ...]`` after refining all their
        prototypes with one shared assignment of the queries (batched params per member)."""
        joint = self._joint()
        assert joint is not None                        # the callers checked it
        steps, temperature, weight = joint
        parts = [m.query_parts(p, x) for m, p in zip(self.members, members)]   # feats, W, b, s
        heads = self.members[0].inner.refine_jointly(
            [(W, b) for _, W, b, _ in parts], [f for f, *_ in parts],
            [s for *_, s in parts], steps, temperature, weight)
        return [s * head_logits(f, W, b) for (f, _, _, s), (W, b) in zip(parts, heads)]

    def _split(self, params: Params) -> tuple:
        members = params.get("members") if isinstance(params, dict) else None
        if not isinstance(members, tuple) or len(members) != len(self.members):
            raise ValueError(f"Ensemble.predict: params must be {{'members': a tuple of "
                             f"{len(self.members)} dicts}} as adapt() returns")
        return members

    def _combine(self, outs: list[torch.Tensor]) -> torch.Tensor:
        shapes = {tuple(o.shape) for o in outs}
        if len(shapes) > 1:
            raise ValueError(f"Ensemble members predict different shapes "
                             f"{[list(o.shape) for o in outs]}: they must have as many "
                             f"outputs (classes) for the task")
        stacked = torch.stack(outs)                                     # [M, ..., out]
        if self.combine == "mean":
            return stacked.mean(0)
        logp = torch.log_softmax(stacked, dim=-1)                       # [M, ..., C]
        return torch.logsumexp(logp, dim=0) - math.log(len(outs))       # log mean softmax

"""Checks that the commands share: a flag that would change nothing for the loaded run or
ensemble, or has an impossible value, is refused by name (exit status 2), before any work."""

from __future__ import annotations

from metaloop.models.bn_stats import batchnorm_layers
from metaloop.recipes.predict import takes_steps


def seed_flag(seed: int | None) -> None:
    """ValueError naming ``--seed`` when a torch.Generator cannot take it (None: not given),
    before the config is read: it would be named as the config's ``train.seed``, which the
    file may not set.
    """
    if seed is not None and seed < 0:
        raise ValueError(f"--seed must be an integer >= 0, got {seed}")
    if seed is not None and seed >= 2**64:
        raise ValueError(f"--seed must be below 2**64 (it seeds a torch.Generator), got {seed}")


def members(loaded) -> tuple[list, list[str], str]:
    """(the runs, their method names, how a message names them: the run, or every member)."""
    runs = getattr(loaded, "members", [loaded])
    methods = [m.config["method"]["name"] for m in runs]
    what = (f"{methods[0]} ({loaded.path})" if len(runs) == 1 else
            f"every member ({', '.join(sorted(set(methods)))})")
    return runs, methods, what


def refuse_steps(steps: str, loaded) -> None:
    """``--steps STEPS`` for a run (every member) that solves its head in closed form.

    Raises:
        ValueError: naming the flag and the learner.
    """
    if takes_steps(loaded):
        return
    _, methods, what = members(loaded)
    newton = (" (metaoptnet's Newton steps are fixed by the run's method.inner_steps)"
              if "metaoptnet" in methods else "")
    raise ValueError(f"--steps {steps}: {what} solves its head in closed form and takes no "
                     f"adaptation steps, so --steps would change nothing{newton}; drop "
                     f"--steps")


def refuse_joint_with_one(refine_jointly: bool, checkpoints: list) -> None:
    """``--refine-jointly`` with one checkpoint: there are no members to share with.

    Raises:
        ValueError: naming the flag.
    """
    if refine_jointly and len(checkpoints) < 2:
        raise ValueError("--refine-jointly shares the refinement's assignment between the "
                         "members of an ensemble, but one --checkpoint is given, so it would "
                         "change nothing: give several checkpoints or drop --refine-jointly")


def check_refinable(refine: str, loaded, *, each_on_its_own_fix: str,
                    scored_as_trained: bool = True) -> None:
    """Refinement (named ``refine``, e.g. ``--refine 10``) needs every member to be a
    ProtoNet that scores a task's queries together.

    Raises:
        ValueError: naming ``refine`` and the member that cannot be refined.
    """
    runs, methods, _ = members(loaded)
    for m, name in zip(runs, methods):
        if name != "protonet":
            raise ValueError(f"{refine} refines prototypes, which only a protonet run has; "
                             f"{m.path} is {name}")
        if scored_as_trained and not getattr(m.learner, "transductive", True):
            raise ValueError(f"{refine} refines the prototypes with all of a task's queries "
                             f"together, but {m.path} scores each query on its own "
                             f"(method.transductive = false); {each_on_its_own_fix}")


def check_scoring(scoring: str | None, loaded) -> None:
    """``--scoring`` (None: not given) must change how some member scores: reptile, r2d2,
    metaoptnet and protonet score either way; the others always score a task's queries
    together; and only BatchNorm makes the two ways differ.

    Raises:
        ValueError: a run without BatchNorm layers (an MLP, a text encoder); ``as-trained``
            when no member can score another way; another mode for a member that cannot
            (naming the flag and that member).
    """
    if scoring is None:
        return
    runs, methods, what = members(loaded)
    fixed = [(m, n) for m, n in zip(runs, methods) if not hasattr(m.learner, "transductive")]
    if scoring == "as-trained" and len(fixed) == len(runs):
        raise ValueError(f"--scoring as-trained: {what} always scores a task's queries "
                         f"together, so --scoring would change nothing (reptile, r2d2, "
                         f"metaoptnet and protonet can score them either way); drop "
                         f"--scoring")
    if scoring != "as-trained" and fixed:
        m, name = fixed[0]
        raise ValueError(f"--scoring {scoring}: {m.path} is {name}, which always scores a "
                         f"task's queries together; reptile, r2d2, metaoptnet and protonet "
                         f"can score them either way")
    if not any(batchnorm_layers(m.learner.model) for m in runs):
        raise ValueError(f"--scoring {scoring} sets how BatchNorm normalises the queries, but "
                         f"{what} has no BatchNorm layers, so each query is scored on its own "
                         f"whatever it is given: drop --scoring")


def check_shifts(support_shift: int | None, query_shift: int | None) -> None:
    """``--support-shift`` / ``--query-shift`` (None: not given) must be >= 0 pixels.

    Raises:
        ValueError: naming the flag.
    """
    for flag, shift in (("--support-shift", support_shift), ("--query-shift", query_shift)):
        if shift is not None and shift < 0:
            raise ValueError(f"{flag} must be an int >= 0 pixels, got {shift}")


def refuse_tf32_off_cuda(tf32: bool, device: str) -> None:
    """``--tf32`` without ``--device cuda``: TF32 exists on CUDA only.

    Raises:
        ValueError: naming the flag and the device.
    """
    if tf32 and device != "cuda":
        raise ValueError(f"--tf32 allows TF32 matmuls on CUDA, but --device is {device}, so "
                         f"it would change nothing: give --device cuda or drop --tf32")

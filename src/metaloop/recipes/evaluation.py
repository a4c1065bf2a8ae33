"""Held-out evaluation of a saved run (``metaloop eval``), with the original Omniglot
challenge's error rate.

``evaluate_run(run, **changes)`` evaluates a loaded run (``metaloop.runs.load_run``) on the
held-out tasks of its config's ``[eval]`` section, with any of its keys changed, and returns
the mean and 95% CI per adaptation step. With ``within_alphabet=True`` on Omniglot (``split=
"evaluation", ways=20, shots=1``: Lake et al.'s one-shot challenge), every task's characters
come from one alphabet and the error rate over the trials is reported too.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from metaloop import build, config
from metaloop.evaluate import evaluate
from metaloop.runs import Run

__all__ = ["error_rate", "eval_config", "evaluate_run"]

EVAL_KEYS = ("tasks", "shots", "ways", "split", "within_alphabet", "steps", "queries", "seed",
             "support_shift")


def eval_config(run: Run, **changes) -> dict:
    """The run's validated config with the ``[eval]`` keys in ``changes`` replaced (None
    leaves a key as it is).

    Raises:
        ValueError: an unknown key, or an impossible held-out config (naming the key).
    """
    bad = sorted(set(changes) - set(EVAL_KEYS))
    if bad:
        raise ValueError(f"unknown eval key(s) {bad}; valid: {list(EVAL_KEYS)}")
    ec = {**run.config["eval"], **{k: v for k, v in changes.items() if v is not None}}
    if ec["tasks"] <= 0:               # named by its flag, before the config's own check
        raise ValueError(f"--tasks must be positive, got {ec['tasks']}")
    cfg = config.validate({**run.config, "eval": ec})
    config.check_combinations(cfg)
    return cfg


def error_rate(cfg: dict, result: dict) -> dict:
    """The error rate at the last evaluated step: ``1 - accuracy`` (the same 95% CI, over
    tasks), with the trial count ``tasks x ways x queries``."""
    f, ec = cfg["family"], cfg["eval"]
    ways, shots = ec["ways"] or f["ways"], ec["shots"] or f["shots"]
    queries = ec["queries"] or f["queries"]
    return {"mean": 1.0 - result["accuracy"]["mean"][-1],
            "ci95": result["accuracy"]["ci95"][-1],
            "trials": ec["tasks"] * ways * queries, "tasks": ec["tasks"], "ways": ways,
            "shots": shots, "queries": queries, "split": ec["split"]}


def evaluate_run(run: Run, *, config: dict | None = None, device=None,
                 progress: Callable[[int], None] | None = None, **changes) -> dict:
    """Evaluate ``run`` on held-out tasks.

    Args:
        run: a loaded run. config: the config to evaluate, already checked
            (``eval_config``); None: the run's, with ``changes``.
        device: where to adapt and score (the run's model must be there:
            ``load_run(path, device=...)``).
        progress: called with the number of tasks finished so far in each chunk.
        **changes: ``[eval]`` keys to change (``EVAL_KEYS``): tasks, shots, ways, split,
            within_alphabet, steps, queries, seed, support_shift (test-time shifts of the
            support images, see ``metaloop.evaluate.evaluate``).

    Returns:
        ``{"config": the config evaluated, "metric": "accuracy" or "loss", "result":
        ``evaluate``'s result (per-task values included), "evaluation": how the queries were
        scored ("transductive" or the learner's own label), "error_rate": ``error_rate`` for
        within-alphabet classification, else None}``.
    """
    if config is not None and changes:
        raise ValueError("give the eval changes or a config from eval_config, not both")
    cfg = config if config is not None else eval_config(run, **changes)
    ec = cfg["eval"]
    heldout = build.eval_family(cfg, None)
    device = None if device is None or torch.device(device).type == "cpu" else \
        torch.device(device)
    r = evaluate(run.learner, heldout, tasks=ec["tasks"], steps=ec["steps"], seed=ec["seed"],
                 device=device, progress=progress, support_shift=ec["support_shift"])
    metric = "accuracy" if "accuracy" in r else "loss"
    within = ec["within_alphabet"] and metric == "accuracy"
    return {"config": cfg, "metric": metric, "result": r,
            "evaluation": getattr(run.learner, "evaluation", "transductive"),
            "error_rate": error_rate(cfg, r) if within else None}

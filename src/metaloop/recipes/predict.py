"""Few-shot classification of your own image files with a saved run (``metaloop predict``).

``classify_folders(run, support, query)`` reads a support folder (one sub-folder of images per
class) and a query folder with the run's own image transform (``Run.transform``), adapts the
run's learner to the support set with its own rule, and scores every query image.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from metaloop.data.images import load_query, load_support
from metaloop.runs import Run

__all__ = ["QUERY_CHUNK", "Predictions", "classify_folders", "predict_folders"]

QUERY_CHUNK = 1024   # queries per forward pass (BatchNorm statistics come from each chunk)


@dataclass
class Predictions:
    """The scores of ``classify_folders``: ``files[i]`` (relative to the query folder) has
    softmax probabilities ``probs[i]`` (float32 ``[Q, n]``) over ``classes`` (n names)."""

    files: list[str]
    classes: list[str]
    probs: torch.Tensor

    @property
    def labels(self) -> list[str]:
        """The most probable class of each file."""
        return [self.classes[int(k)] for k in self.probs.argmax(-1)]


def predict_folders(learner, support_x, support_y, query_x, steps: int | None = None
                    ) -> torch.Tensor:
    """Adapt to one support set and score the queries.

    Args:
        support_x: ``[S, C, H, W]``; support_y: int64 ``[S]`` in ``0..n-1``.
        query_x: ``[Q, C, H, W]``.
        steps: adaptation steps (default the learner's inner steps).

    Returns:
        float32 ``[Q, n]`` softmax probabilities.
    """
    params = learner.adapt(support_x, support_y, steps)
    n = int(support_y.max()) + 1
    with torch.no_grad():
        logits = torch.cat([learner.predict(params, query_x[i:i + QUERY_CHUNK])
                            for i in range(0, len(query_x), QUERY_CHUNK)])  # [Q, out]
    return logits[:, :n].softmax(-1)                                          # [Q, n]


def classify_folders(run: Run, support, query, *, steps: int | None = None,
                     invert: str | None = None) -> Predictions:
    """Adapt ``run``'s learner to the images of ``support`` and classify those of ``query``.

    Args:
        run: a loaded image-classification run (``load_run``).
        support: a folder with one sub-folder of images per class (at least 2 classes).
        query: a folder of images to classify (sub-folders are searched too).
        steps: adaptation steps (default: the run's inner steps; >= 0).
        invert: polarity ("auto", "always", "never"; default: the run's transform).

    Returns:
        ``Predictions``; all queries are classified in one batch (per ``QUERY_CHUNK``), so
        BatchNorm sees the statistics of the query batch, as in training.

    Raises:
        ValueError: not an image-classification run; unreadable folders; a support set whose
            number of classes differs from a learned head's outputs (adapt from a zero head
            with ``load_run(..., head_init="zero")`` instead); negative ``steps``.
    """
    tf = run.transform
    if tf is None or run.config["family"]["name"] == "sinusoid":
        raise ValueError(f"{run.path}: predict needs an image-classification run (conv4 or "
                         f"resnet12); this one is family {run.config['family']['name']!r}, "
                         f"model {run.config['model']['name']!r}")
    if steps is not None and steps < 0:
        raise ValueError(f"--steps must be >= 0, got {steps}")
    size, chans = tf["image_size"], tf["channels"]
    invert = invert or tf["invert"]
    sx, sy, classes, _ = load_support(support, size, invert, tf["read_channels"])
    qx, names = load_query(query, size, invert, tf["read_channels"])
    if tf["quantize"]:                   # training saw uint8-quantised images: quantise alike
        sx, qx = (t.mul(255).round_().div_(255) for t in (sx, qx))
    sx, qx = sx.expand(-1, chans, -1, -1), qx.expand(-1, chans, -1, -1)
    # SGD learners with a learned head need as many classes as its outputs; a zero head
    # (pretrain, head_init "zero") and the solved heads of R2D2 / MetaOptNet take any number
    head = getattr(run.network, "head", None)
    head_out = head.out_features if isinstance(head, torch.nn.Linear) else None
    learned = getattr(getattr(run.learner, "inner", None), "head_init", None) == "learned"
    if learned and head_out is not None and len(classes) != head_out:
        raise ValueError(
            f"{support} has {len(classes)} classes but the checkpoint's learned head has "
            f"{head_out} outputs ({run.config['method']['name']} trained "
            f"{run.config['family']['ways']}-way); give {head_out} class folders, or pass "
            f"--head-init zero to adapt from a zero head of {len(classes)} outputs (usually "
            f"less accurate than the learned head)")
    return Predictions(names, classes, predict_folders(run.learner, sx, sy, qx, steps))

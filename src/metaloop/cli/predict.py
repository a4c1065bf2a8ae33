"""``metaloop predict --checkpoint DIR --support DIR --query DIR [--json]``: few-shot
classification of your own images.

``support/`` holds one sub-folder of images per class (the folder name is the class; any
number of classes >= 2 and of images per class, any size, any format Pillow reads). ``query/``
holds the images to classify (sub-folders are searched too). The checkpoint's model adapts to
the support set with its own rule (its inner learning rate and inner steps, from its config)
and each query file is printed as ``file<TAB>class``; ``--json`` prints a list of
``{"file", "class", "scores"}`` with the softmax probability of every class.

Images are preprocessed as in training. A checkpoint trained on your own folder
(``family.name = "folder"``) applies that folder's transform: its channels (grey or RGB), its
``invert`` setting, padding to a square and an antialiased resize to its image size. Other
checkpoints read greyscale with ink = 1 on a 0 background (a mostly-light image is inverted,
see ``metaloop.data.images``), padded to a square and resized to the checkpoint's image size.

The query images are classified together in one batch, as in training and ``metaloop eval``:
the Conv4's BatchNorm uses the statistics of the batch it sees (as MAML does), so give a few
queries at once rather than one at a time.

A learned head (MAML, first-order MAML, ANIL, Reptile, scratch) has one output per way of the
checkpoint. A support set with another number of classes is refused unless
``--head-init zero``, which starts adaptation from a zero head of the right size (the
pretrain baseline always does this).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from types import SimpleNamespace

import torch

from metaloop.cli import _build, _config
from metaloop.cli.main import UserError
from metaloop.data.images import INVERT_MODES, load_query, load_support
from metaloop.train.checkpoint import latest_checkpoint, load_checkpoint

QUERY_CHUNK = 1024   # queries per forward pass (BatchNorm statistics come from each chunk)


def register(sub) -> None:
    p = sub.add_parser("predict", help="classify your own images after few-shot adaptation",
                       description=__doc__,
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--checkpoint", required=True, help="run directory or ckpt-* directory")
    p.add_argument("--support", required=True, help="folder with one sub-folder per class")
    p.add_argument("--query", required=True, help="folder of images to classify")
    p.add_argument("--json", action="store_true", help="print JSON instead of file<TAB>class")
    p.add_argument("--steps", type=int,
                   help="adaptation steps (default: the checkpoint's inner steps)")
    p.add_argument("--head-init", choices=("checkpoint", "zero"), default="checkpoint",
                   help="'zero' adapts from a zero head sized to the support classes, needed "
                        "when their number differs from the checkpoint's ways")
    p.add_argument("--invert", choices=INVERT_MODES, default=None,
                   help="polarity: auto (invert images whose mean is above 0.5, i.e. dark "
                        "ink on light), always, never (default: the training folder's "
                        "family.invert, else auto)")
    p.set_defaults(func=run)


def load_predictor(path, head_init: str = "checkpoint") -> tuple[object, dict]:
    """Rebuild a checkpoint's learner without its training data.

    The network's shapes are read from the stored tensors (input channels, head outputs), so
    neither the Omniglot files nor Fashion-MNIST are needed to predict.

    Args:
        path: run directory (its newest checkpoint) or a ``ckpt-*`` directory.
        head_init: ``"checkpoint"`` (the config's rule) or ``"zero"``.

    Returns:
        (learner with the checkpoint's weights, validated config).

    Raises:
        ValueError: no checkpoint there, or not an image-classification checkpoint.
    """
    path = Path(path)
    if not path.is_dir():
        raise ValueError(f"checkpoint {path} does not exist")
    if not (path / "state.json").is_file() and latest_checkpoint(path) is None:
        raise ValueError(f"no checkpoint in {path} (no LATEST file or state.json)")
    tensors, state = load_checkpoint(path)
    cfg = _config.validate(state["config"])
    fam, mod = cfg["family"], cfg["model"]
    if fam["name"] == "sinusoid" or mod["name"] not in _build.IMAGE_MODELS:
        raise ValueError(f"{path}: predict needs an image-classification checkpoint "
                         f"({', '.join(_build.IMAGE_MODELS)}); "
                         f"this one is family {fam['name']!r}, model {mod['name']!r}")
    if head_init == "zero":
        cfg["method"]["head_init"] = "zero"
    conv = [k for k in tensors if k.startswith("model.")            # Conv4 / ResNet-12
            and k.endswith(("body.0.conv.weight", "body.0.conv1.weight"))]
    heads = [k for k in tensors if k.startswith("model.") and k.endswith("head.weight")]
    if not conv:
        raise ValueError(f"{path}: no first-layer weights (model.*body.0.conv.weight or "
                         f"conv1.weight) in the checkpoint")
    chans = int(tensors[conv[0]].shape[1])                               # [hidden, C, 3, 3]
    outputs = int(tensors[heads[0]].shape[0]) if heads else fam["ways"]  # head [out, D]
    family = SimpleNamespace(kind="classification", ways=fam["ways"], num_classes=outputs,
                             image_shape=(chans, fam["image_size"], fam["image_size"]))
    learner = _build.build_learner(cfg, family)
    params = dict(learner.model.named_parameters())
    missing = sorted(set(params) - {k[len("model."):] for k in tensors if k.startswith("model.")})
    if missing:
        raise ValueError(f"{path}: checkpoint lacks model tensors {missing}")
    with torch.no_grad():
        for n, p in params.items():
            t = tensors[f"model.{n}"]
            if t.shape != p.shape:
                raise ValueError(f"{path}: tensor model.{n} has shape {list(t.shape)}, the "
                                 f"config's model expects {list(p.shape)}")
            p.copy_(t)
    return learner, cfg


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


def run(args: argparse.Namespace) -> int:
    learner, cfg = load_predictor(args.checkpoint, args.head_init)
    fam = cfg["family"]
    size = fam["image_size"]
    user = fam["name"] in _config.USER_FAMILIES        # the training folder's transform
    invert = args.invert or (fam["invert"] if user else "auto")
    conv = next(m for m in learner.model.modules() if isinstance(m, torch.nn.Conv2d))
    chans = conv.in_channels
    read = chans if user else 1                         # built-in families: grey, repeated
    sx, sy, classes, _ = load_support(args.support, size, invert, read)
    qx, names = load_query(args.query, size, invert, read)
    if user:          # training saw uint8-quantised images: quantise alike
        sx, qx = (t.mul(255).round_().div_(255) for t in (sx, qx))
    sx, qx = sx.expand(-1, chans, -1, -1), qx.expand(-1, chans, -1, -1)
    # SGD learners with a learned head need as many classes as its outputs; a zero head
    # (pretrain, --head-init zero) and the solved heads of R2D2 / MetaOptNet take any number
    head = getattr(getattr(learner, "net", learner.model), "head", None)   # MAML: the net's
    head_out = head.out_features if isinstance(head, torch.nn.Linear) else None
    learned = getattr(getattr(learner, "inner", None), "head_init", None) == "learned"
    if learned and head_out is not None and len(classes) != head_out:
        raise UserError(
            f"{args.support} has {len(classes)} classes but the checkpoint's learned head has "
            f"{head_out} outputs ({cfg['method']['name']} trained {cfg['family']['ways']}-way); "
            f"give {head_out} class folders, or pass --head-init zero to adapt from a zero head "
            f"of {len(classes)} outputs (usually less accurate than the learned head)")
    steps = args.steps
    if steps is not None and steps < 0:
        raise UserError(f"--steps must be >= 0, got {steps}")
    probs = predict_folders(learner, sx, sy, qx, steps)                       # [Q, n]
    pred = probs.argmax(-1)
    if args.json:
        rows = [{"file": f, "class": classes[int(k)],
                 "scores": {c: round(float(p), 6) for c, p in zip(classes, row)}}
                for f, k, row in zip(names, pred, probs)]
        json.dump(rows, sys.stdout, indent=1)
        sys.stdout.write("\n")
    else:
        for f, k in zip(names, pred):
            print(f"{f}\t{classes[int(k)]}")
    return 0

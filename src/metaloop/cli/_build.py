"""Build families, models and learners from a validated config dict."""

from __future__ import annotations

import torch

from metaloop import meta, models, tasks
from metaloop.cli import _config

METHODS = ("scratch", "pretrain", "maml", "fomaml", "reptile", "anil", "r2d2", "metaoptnet")
FAMILIES = ("sinusoid", "omniglot", "fashion_mnist")
IMAGE_MODELS = ("conv4", "resnet12")
MODELS = ("mlp", *IMAGE_MODELS)


def _choice(kind: str, value: str, options) -> str:
    if value not in options:
        raise ValueError(f"unknown {kind} {value!r}; choose one of {list(options)}")
    return value


def build_family(fcfg: dict, split: str | None = None, shots: int = 0, queries: int = 0):
    """A task family from the [family] section (split/shots/queries override it)."""
    name = _choice("family", fcfg["name"], FAMILIES)
    shots, queries = shots or fcfg["shots"], queries or fcfg["queries"]
    split = split or fcfg["split"]
    if name == "sinusoid":
        return tasks.Sinusoid(shots, queries)
    root = fcfg["root"] or None
    if name == "omniglot":
        return tasks.Omniglot(root, split=split, ways=fcfg["ways"], shots=shots,
                              queries=queries, image_size=fcfg["image_size"])
    classes = range(0, 5) if split == "train" else range(5, 10)
    return tasks.FashionMNIST(root, classes=classes, ways=fcfg["ways"], shots=shots,
                              queries=queries)


def build_model(mcfg: dict, family, method: str) -> torch.nn.Module:
    """The network for this family; pretrain on classification gets one output per class."""
    name = _choice("model", mcfg["name"], MODELS)
    if family.kind == "regression":
        out = family.out_dim
    else:
        out = family.num_classes if method == "pretrain" else family.ways
    if name == "mlp":
        if family.kind != "regression":
            raise ValueError("model 'mlp' expects a regression family such as sinusoid; use conv4")
        return models.MLP(family.in_dim, tuple(mcfg["hidden"]), out)
    shape = getattr(family, "image_shape", None)
    if shape is None:
        raise ValueError(f"model {name!r} needs an image family, not {type(family).__name__}")
    if name == "resnet12":          # widths channels x (1, 2.5, 5, 10): 64 -> 64..640
        return models.ResNet12(shape[0], mcfg["channels"], out, image_size=shape[-1])
    return models.Conv4(shape[0], mcfg["channels"], out, pool=mcfg["pool"], image_size=shape[-1],
                         readout=mcfg["readout"] or None)


def batching_on(mc: dict, device) -> str:
    """The [method] batching to use on ``device``: ``"auto"`` becomes ``"vmap"`` on CUDA
    (5.7x faster than the loop for Omniglot Conv4 MAML on an H100, docs/benchmarks.md) unless
    the inner loop is checkpointed or the query pass compiled (both need the loop); elsewhere
    the learner's own "auto" rule decides."""
    cuda = device is not None and torch.device(device).type == "cuda"
    loop_only = mc["checkpoint"] or mc["compile"]
    return "vmap" if mc["batching"] == "auto" and cuda and not loop_only else mc["batching"]


def build_learner(cfg: dict, family, model=None, device=None):
    """The learner of the [method] section around a (new, seeded) model; ``device`` (where it
    will run) only chooses the batching, see ``batching_on``."""
    mc = {**cfg["method"], "batching": batching_on(cfg["method"], device)}
    name = _choice("method", mc["name"], METHODS)
    torch.manual_seed(cfg["train"]["seed"])
    model = model if model is not None else build_model(cfg["model"], family, name)
    loss = "mse" if family.kind == "regression" else "ce"
    head_init = mc["head_init"]
    if head_init == "auto":
        head_init = "zero" if (name == "pretrain" and family.kind != "regression") else "learned"
    if name in ("r2d2", "metaoptnet"):
        return _build_head_learner(name, mc, family, model)
    if mc["first_order"] and name not in _config.MAML_FAMILY:
        raise ValueError(f"first_order applies to maml and anil, not {name!r}")
    for key in ("checkpoint", "compile", "learn_inner_lr"):
        if mc[key] and name not in _config.MAML_FAMILY:
            raise ValueError(f"method.{key} applies to maml, fomaml and anil, not {name!r}")
    common = dict(inner_lr=mc["inner_lr"], inner_steps=mc["inner_steps"], loss=loss,
                  head_init=head_init, batching=mc["batching"])
    if name in ("maml", "fomaml"):
        return meta.MAML(model, first_order=mc["first_order"] or name == "fomaml",
                         checkpoint=mc["checkpoint"], compile=mc["compile"],
                         learn_lr=mc["learn_inner_lr"], **common)
    if name == "anil":
        return meta.ANIL(model, first_order=mc["first_order"], checkpoint=mc["checkpoint"],
                         compile=mc["compile"], learn_lr=mc["learn_inner_lr"], **common)
    if name == "reptile":
        return meta.Reptile(model, inner_optimizer=mc["inner_optimizer"], **common)
    return {"pretrain": meta.Pretrain, "scratch": meta.Scratch}[name](model, **common)


def _build_head_learner(name: str, mc: dict, family, model):
    """R2D2 / MetaOptNet around the model's features (classification families only)."""
    if family.kind != "classification":
        raise ValueError(f"method {name!r} needs a classification family such as omniglot, "
                         f"not {type(family).__name__}")
    if mc["first_order"] or mc["checkpoint"] or mc["compile"]:
        raise ValueError(f"first_order, checkpoint and compile apply to maml and anil, not "
                         f"{name!r}")
    from metaloop.meta.metaoptnet import MetaOptNet
    from metaloop.meta.r2d2 import R2D2

    kw = {"lam": mc["lam"], "batching": mc["batching"]}
    if mc["scale"]:                                  # 0: the method's default initial scale
        kw["scale"] = mc["scale"]
    if name == "r2d2":
        return R2D2(model, **kw)
    return MetaOptNet(model, head=mc["head"], steps=mc["inner_steps"], grad=mc["grad"], **kw)


def eval_family(cfg: dict, train_family):
    """The held-out family: [eval] split, ways, shots and queries (0 = same as training)."""
    ec = cfg["eval"]
    return build_family({**cfg["family"], "ways": ec["ways"] or cfg["family"]["ways"]},
                        split=ec["split"], shots=ec["shots"], queries=ec["queries"])


def training_family(cfg: dict, family):
    """The family meta-training samples from: ``family``, or with ``train.augment_shift`` /
    ``train.augment_rotate`` random translations / rotations of its images
    (``metaloop.tasks.Shifted``); evaluation keeps ``family``."""
    s, r = cfg["train"]["augment_shift"], cfg["train"]["augment_rotate"]
    return tasks.Shifted(family, s, r) if s or r else family

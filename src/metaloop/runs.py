"""A saved run, loaded in one place: ``load_run(path)``.

A run directory (what ``metaloop train`` or ``metaloop.train.train(out_dir=...)`` writes)
holds checkpoints whose ``state.json`` carries the validated config. ``load_run`` rebuilds the
learner the config describes, loads the checkpoint's weights into it, and returns them with
the config, the class split (your own data) and the image transform the run was trained
with. ``metaloop eval``, ``predict``, ``adapt --model RUN`` and ``train --resume`` all load
runs through it.

Image models are rebuilt from the shapes of the stored tensors (input channels, head outputs),
so loading an Omniglot or folder run needs neither the training images nor Fashion-MNIST; an
MLP on a tensor file's feature vectors takes its input size from its first layer's weights,
so its tensor file may have moved or changed; a text run needs its encoder
(``family.encoder``), not its table. What does read the data (``Run.heldout``, ``metaloop
eval``'s held-out tasks) reads and checks it then.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import torch

from metaloop import build, config
from metaloop.train.checkpoint import (
    load_checkpoint,
    load_extra_state,
    protocol_run,
    saved_run,
)

__all__ = ["Run", "load_run", "saved_run"]


@dataclass
class Run:
    """A loaded run.

    Attributes:
        path: the run directory (or ``ckpt-*`` directory) it was loaded from.
        config: the validated config the run trained with (a folder run's class lists
            included; ``head_init`` as asked for).
        learner: the learner of ``config["method"]`` with the checkpoint's weights, at the
            run's ``train.dtype`` (a float64 run's weights as stored, not rounded).
        iteration: the meta-training iteration the checkpoint was written at.
        data: what a run on the user's data read (``metaloop.build.data_fingerprint``:
            class digests and ``example_shape``), or None (a built-in family, an older run).
        heldout_config: None, or (an ensemble's, set by
            ``metaloop.recipes.evaluation.load_ensemble``) a function returning the config
            whose ``[eval]`` section draws the held-out tasks (raising ``ValueError`` where
            the members would draw other tasks).
    """

    path: Path
    config: dict
    learner: Any
    iteration: int
    data: dict | None = None
    heldout_config: Callable[[], dict] | None = field(default=None, repr=False, compare=False)

    @property
    def network(self) -> torch.nn.Module:
        """The adapted network itself (MAML and ANIL wrap it with their step sizes)."""
        return getattr(self.learner, "net", self.learner.model)

    @property
    def classes(self) -> dict[str, list[str]] | None:
        """Your own data (``folder`` / ``tensors`` / ``table``): the class names of each
        split, ``{"train": [...], "val": [...], "test": [...]}``; built-in families: None."""
        f = self.config["family"]
        if f["name"] not in config.USER_FAMILIES:
            return None
        return {s: list(f[f"{s}_classes"]) for s in config.USER_SPLITS}

    @property
    def transform(self) -> dict | None:
        """How an image is turned into the network's input, as in training: ``{"image_size",
        "channels" (the network's input channels), "read_channels" (what is read from the
        file: 1 grey, 3 RGB), "invert", "quantize" (round to uint8 steps, as the folder
        cache)}``; None for a model that does not read images."""
        f, m = self.config["family"], self.config["model"]
        if m["name"] not in config.IMAGE_MODELS:
            return None
        conv = next(x for x in self.network.modules() if isinstance(x, torch.nn.Conv2d))
        user = f["name"] in config.USER_FAMILIES
        size = f["image_size"]
        shape = (self.data or {}).get("example_shape") if f["name"] == "tensors" else None
        if shape and len(shape) == 3 and shape[1] == shape[2]:
            size = shape[1]              # a tensor file's images: the size they were read at
        return {"image_size": size, "channels": conv.in_channels,
                "read_channels": conv.in_channels if user else 1,
                "invert": f["invert"] if user else "auto", "quantize": user}

    def heldout(self):
        """The held-out task family of the config's ``[eval]`` section (reads the data), its
        tasks on the model's device in its dtype (a float64 run's: float64), as training's
        validation gives them.

        An ensemble (``metaloop.recipes.evaluation.load_ensemble``) draws the tasks
        ``metaloop eval`` evaluates it on (its ``heldout_config``): those of its members'
        common ``[eval]`` keys that draw tasks (``TASK_KEYS``, as ``eval_config`` takes
        them), not the first member's alone.

        Raises:
            ValueError: ensemble members that would draw other held-out tasks (another
                split, number of ways, shots or queries...), naming the key and both runs,
                as ``metaloop eval`` names them; the data's errors (``build.eval_family``:
                a tensor file or folder moved, classes gone); a tensor file whose examples
                are no longer of the shape the run was trained on (``check_inputs``).
        """
        from metaloop.train.loop import on_model

        cfg = self.config if self.heldout_config is None else self.heldout_config()
        family = build.eval_family(cfg, None)
        check_inputs(self, family)
        return on_model(family, self.learner.model)


def check_inputs(run: Run, family) -> None:
    """Check that ``family`` (the held-out tasks of ``run``'s tensor file, read now) gives
    examples of the shape ``run``'s network was trained on: ``[D]`` for an MLP (its first
    layer's inputs), the stored ``data["example_shape"]`` for an image network. Loading a
    run does not read its data, so a tensor file changed since is found here. Other
    families, and a run that stored no shape, pass unchecked (their data's own checks name
    what changed).

    Args:
        run: a loaded run, or an ensemble (each member is checked).
        family: the task family read from the run's data (``build.eval_family``).

    Raises:
        ValueError: examples of another shape, naming the file, both shapes and the run.
    """
    got = getattr(family, "input_shape", None)
    for m in getattr(run, "members", None) or [run]:
        fam = m.config["family"]
        if got is None or fam["name"] != "tensors":
            continue
        if m.transform is None:                             # an MLP: its first layer [h, D]
            first = next((x for x in m.network.modules() if isinstance(x, torch.nn.Linear)),
                         None)
            want = [first.in_features] if first is not None else None
        else:
            want = (m.data or {}).get("example_shape")
        if want and [int(v) for v in got] != [int(v) for v in want]:
            raise ValueError(f"tensor file {fam['root']} now holds examples of shape "
                             f"{[int(v) for v in got]}, but {m.path} was trained on examples "
                             f"of shape {[int(v) for v in want]}: the data changed since the "
                             f"run was trained; restore it, or train a new run on the data "
                             f"as it is now")


TASK_KEYS = ("split", "ways", "shots", "queries", "within_alphabet", "drawers")
"""The ``[eval]`` keys that choose the held-out tasks (``build.eval_family``); the others
(``tasks``, ``seed``, ``steps``, shifts, scoring, refinement) say how many are drawn from
them and how they are scored."""


def _stand_in(tensors: dict, fam: dict, path: Path, data: dict | None) -> SimpleNamespace:
    """The family attributes an image model is built from, read off the stored tensors (and
    a tensor file's images: the size they were read at, ``data["example_shape"]``)."""
    conv = [k for k in tensors if k.startswith("model.")                # Conv4 / ResNet-12
            and k.endswith(("body.0.conv.weight", "body.0.conv1.weight"))]
    heads = [k for k in tensors if k.startswith("model.") and k.endswith("head.weight")]
    if not conv:
        raise ValueError(f"{path}: no first-layer weights (model.*body.0.conv.weight or "
                         f"conv1.weight) in the checkpoint")
    chans = int(tensors[conv[0]].shape[1])                                # [hidden, C, 3, 3]
    outputs = int(tensors[heads[0]].shape[0]) if heads else fam["ways"]   # head [out, D]
    shape = (data or {}).get("example_shape") if fam["name"] == "tensors" else None
    size = tuple(shape[1:]) if shape and len(shape) == 3 else (fam["image_size"],) * 2
    return SimpleNamespace(kind="classification", ways=fam["ways"], num_classes=outputs,
                           image_shape=(chans, *size))


def _text_stand_in(tensors: dict, fam: dict) -> SimpleNamespace:
    """The family attributes a text model is built from: the family's encoder (whose
    tokenizer it copies) and the head's outputs, read off the stored tensors; the table
    itself is not read."""
    heads = [k for k in tensors if k.startswith("model.") and k.endswith("head.weight")]
    outputs = int(tensors[heads[0]].shape[0]) if heads else fam["ways"]   # head [out, D]
    enc = build.text_encoder(fam["encoder"], fam["max_length"])
    return SimpleNamespace(kind="classification", ways=fam["ways"], num_classes=outputs,
                           tokenizer=enc.tokenize)


def _vector_stand_in(tensors: dict, cfg: dict, path: Path, data: dict | None) -> SimpleNamespace:
    """The family attributes an MLP on feature vectors (a tensor file's) is built from: the
    input size read off the first layer's stored weight ``[hidden, D]`` (``head.weight``
    with no hidden layer), or else the run's ``data["example_shape"]`` ``[D]``; the head's
    outputs likewise. The tensor file itself is not read."""
    fam = cfg["family"]
    name = "body.fc0.weight" if cfg["model"]["hidden"] else "head.weight"
    first = [k for k in tensors if k.startswith("model.") and k.endswith(name)]
    heads = [k for k in tensors if k.startswith("model.") and k.endswith("head.weight")]
    shape = (data or {}).get("example_shape")
    if first:
        dim = int(tensors[first[0]].shape[-1])                           # [hidden, D]
    elif shape and len(shape) == 1:
        dim = int(shape[0])                                              # [D]
    else:
        raise ValueError(f"{path}: no first-layer weights (model.*{name}) in the checkpoint, "
                         f"and no stored example shape to size the MLP's input from")
    outputs = int(tensors[heads[0]].shape[0]) if heads else fam["ways"]   # head [out, h]
    return SimpleNamespace(kind="classification", ways=fam["ways"], num_classes=outputs,
                           input_shape=(dim,))


def load_run(path, *, device=None, head_init: str = "checkpoint") -> Run:
    """Load a saved run: its config, and its learner with the checkpoint's weights.

    Args:
        path: a run directory (its newest checkpoint, named by ``LATEST``) or one
            ``ckpt-*`` directory.
        device: where the learner will run (``"cpu"``, ``"cuda"``, a ``torch.device`` or
            None): the model is moved there and it chooses the batching
            (``metaloop.build.batching_on``).
        head_init: ``"checkpoint"`` (the config's rule) or ``"zero"`` (adapt from a zero
            head sized to each task's classes).

    Returns:
        A ``Run``. A config key renamed since the run was written loads under its new name
        with a FutureWarning.

    Raises:
        ValueError: no such directory, no checkpoint in it, a ``metaloop vae --protocol
            iwae`` run (a VAE, named as one), a run whose stored config lacks
            the family, model or method (``ml.train`` without a full ``config=``), a config
            that no longer validates, or stored tensors that do not fit the config's model
            (naming them).
    """
    path = Path(path)
    if not path.is_dir():
        raise ValueError(f"no checkpoint at {path}: " + ("it is a file, not a run folder"
                                                          if path.exists()
                                                          else "the folder does not exist"))
    if not saved_run(path):
        raise ValueError(f"no checkpoint in {path} (no LATEST file or state.json)")
    if head_init not in ("checkpoint", "zero"):
        raise ValueError(f"head_init must be 'checkpoint' or 'zero', got {head_init!r}")
    tensors, state = load_checkpoint(path)
    if protocol_run(state):
        raise ValueError(f"{path} holds a VAE of metaloop vae --protocol iwae (at pass "
                         f"{state['passes']}), not a meta-learning run: measure it with "
                         f"metaloop vae --protocol iwae --evaluate --out {path}")
    if not isinstance(state.get("config"), dict):
        raise ValueError(f"{path}: the checkpoint is corrupt: its state.json holds no config")
    lacking = [k for k in ("family", "model", "method") if k not in state["config"]]
    if lacking:     # ml.train(..., out_dir=...) stores only the config= it was given
        raise ValueError(f"{path} does not say what it was trained as: its stored config has "
                         f"no {', '.join(lacking)} section, so its learner cannot be rebuilt "
                         f"(a run written by ml.train(..., out_dir=...) stores only its "
                         f"config= argument); continue it with ml.train(..., resume=True) "
                         f"and the same learner and family, or train with metaloop train "
                         f"--config FILE, which stores the whole config")
    cfg = config.validate(state["config"])
    if head_init == "zero":
        cfg["method"]["head_init"] = "zero"
    data = state.get("data") if isinstance(state.get("data"), dict) else None
    if cfg["model"]["name"] in config.IMAGE_MODELS:
        family = _stand_in(tensors, cfg["family"], path, data)
    elif cfg["model"]["name"] == "text":
        family = _text_stand_in(tensors, cfg["family"])
    elif cfg["family"]["name"] == "tensors":        # an MLP on a tensor file's feature vectors
        family = _vector_stand_in(tensors, cfg, path, data)
    else:                              # sinusoid: drawn, no data to read
        family = build.build_family(cfg["family"])
    if device is not None and not isinstance(device, torch.device):
        try:
            device = torch.device(device)
        except RuntimeError as e:                   # torch: "Expected one of cpu, cuda, ..."
            raise ValueError(f"device {device!r} is not a torch device ({e})") from None
    if device is not None and device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError("device cuda requested but torch sees no CUDA device")
    if device is not None and device.type == "mps" and cfg["train"]["dtype"] == "float64":
        raise ValueError(f"{path} was trained in float64, which Apple's mps device does not "
                         f"have; load it on the CPU (device='cpu')")
    learner = build.build_learner(cfg, family, device=device)
    learner.model.to(dtype=getattr(torch, cfg["train"]["dtype"]))   # a float64 run stays exact
    params = dict(learner.model.named_parameters())
    stored = {k[len("model."):] for k in tensors if k.startswith("model.")}
    missing = sorted(set(params) - stored)
    if missing:
        raise ValueError(f"{path}: checkpoint lacks model tensors {missing}")
    extra = sorted(stored - set(params))
    if extra:                          # another network: a layer of it would be left out
        raise ValueError(f"{path}: checkpoint holds model tensors {extra} that the config's "
                         f"model does not have")
    with torch.no_grad():
        for n, p in params.items():
            t = tensors[f"model.{n}"]
            if t.shape != p.shape:
                raise ValueError(f"{path}: tensor model.{n} has shape {list(t.shape)}, the "
                                 f"config's model expects {list(p.shape)}")
            p.copy_(t)
    if device is not None:
        learner.model.to(device)
    try:
        load_extra_state(learner, tensors)
    except ValueError as e:
        raise ValueError(f"{path}: {e}") from None
    return Run(path=path, config=cfg, learner=learner, iteration=int(state.get("iteration", 0)),
               data=data)

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

Data that moved (another machine, a renamed folder, a relative ``family.root`` used from
another working folder): ``load_run(path, data_root=PATH)`` (``metaloop eval --data-root``)
reads the run's own data at ``PATH`` instead; what is read there is checked against the
run's stored fingerprint of its data (``check_moved_data``).
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import torch

from metaloop import build, config
from metaloop._random import seeded_rng
from metaloop.train.checkpoint import (
    latest_checkpoint,
    load_checkpoint,
    load_extra_state,
    protocol_run,
    read_state,
    saved_run,
    unlinked_advice,
)

__all__ = ["Run", "check_moved_data", "check_own_data", "load_pinned", "load_run", "moved_root",
           "saved_run"]


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
        stored_root: None, or (a run loaded with ``data_root``) the ``family.root`` its
            checkpoint stores, which ``config["family"]["root"]`` replaces with the
            ``data_root`` read instead.
        heldout_config: None, or (an ensemble's, set by
            ``metaloop.recipes.evaluation.load_ensemble``) a function returning the config
            whose ``[eval]`` section draws the held-out tasks (raising ``ValueError`` where
            the members would draw other tasks).
        state: None, or (a run loaded by ``load_pinned``) its checkpoint's ``state.json``
            as read when it was loaded (iteration, CPU seconds, ``tensors_sha256``, ...),
            from which ``metaloop eval --record`` writes the budget: a run training into the
            folder may prune that checkpoint (``save_checkpoint(keep=2)``) before the record
            is written.
        checkpoint_dir: None, or (a run loaded by ``load_pinned``) the ``ckpt-*`` folder it
            was loaded from (resolved).
    """

    path: Path
    config: dict
    learner: Any
    iteration: int
    data: dict | None = None
    stored_root: str | None = None
    heldout_config: Callable[[], dict] | None = field(default=None, repr=False, compare=False)
    state: dict | None = field(default=None, repr=False, compare=False)
    checkpoint_dir: Path | None = field(default=None, repr=False, compare=False)

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
        family = read_heldout(self, cfg)
        check_inputs(self, family)
        return on_model(family, self.learner.model)


def read_heldout(run: Run, cfg: dict):
    """``build.eval_family(cfg, None)``: the held-out family of ``run``'s data, whose error
    names ``--data-root`` where the run last read its data at another path
    (``last_read_hint``), or where its data of the user's own is no longer at its
    ``family.root``."""
    try:
        return build.eval_family(cfg, None)
    except ValueError as e:
        root = run.config["family"].get("root")
        hint = "" if run.stored_root is not None else last_read_hint(run.data, root)
        if not hint and run.stored_root is None and data_moved(run.config["family"]):
            hint = "; if the run's data moved, --data-root PATH reads it at PATH"
        if not hint or type(e) is not ValueError:    # (a subclass: the data was read)
            raise
        raise ValueError(f"{e}{hint}") from e


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

    A run loaded with ``data_root`` (``stored_root`` set) is also checked to read its own
    data there (``check_moved_data``), and one read at its stored ``family.root`` to find
    the examples it read there (``check_own_data``).

    Raises:
        ValueError: examples of another shape, naming the file, both shapes and the run;
            data at a run's ``data_root`` that is not the data the run read (naming the
            classes that differ).
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
    check_moved_data(run, family)     # (after the shapes: another shape is named as such)
    check_own_data(run, family)       # at the stored root: its examples changed since


def check_own_data(run, family) -> None:
    """Check that ``family`` (the held-out tasks read now at the stored ``family.root`` of
    ``run``, or of each ensemble member) holds the examples the run read there: each of its
    classes that the run's stored fingerprint lists (``Run.data``, ``metaloop.build
    .data_fingerprint``) has the same sha256 of its examples; a table, the same file
    sha256. The same wording as ``--data-root``'s check (``check_moved_data``,
    which checks runs loaded with ``data_root``; those are skipped here). Runs of a built-in
    family, runs that stored no fingerprint, and held-out classes the fingerprint does not
    list (nothing to compare them with) pass unchecked.

    Args:
        run: a loaded ``Run``, or an ensemble (each of its ``members`` is checked).
        family: the held-out task family read now from the run's data
            (``build.eval_family``).

    Raises:
        ValueError: naming the path, the run and the classes whose examples differ (a table:
            that its file's sha256 differs).
    """
    here = [m for m in getattr(run, "members", None) or [run]
            if getattr(m, "stored_root", None) is None and isinstance(m.data, dict)
            and m.config["family"]["name"] in config.USER_FAMILIES]
    found = _first_change(here, family, stored_classes_only=True)
    if found:
        m, change, _ = found
        raise ValueError(f"{here[0].config['family']['root']} (the family.root of {m.path}) "
                         f"changed since the run read it: {change}; restore the run's data "
                         f"there (or give --data-root the path of a copy of it), or train a "
                         f"new run on the data as it is now")


def moved_root(path, data: dict | None, fam: dict, data_root) -> str:
    """``data_root`` (the run's own data at another path: ``metaloop eval`` / ``train
    --resume`` ``--data-root``) as an absolute path, checked to be a thing the run's
    family reads: a folder for ``folder``, a file for ``tensors`` and ``table``.

    Args:
        path: the run (named by an error).
        data: the run's stored fingerprint (``state["data"]``); None: none stored.
        fam: the run's ``[family]`` section (its ``name`` and ``root`` are read).
        data_root: where the data is now (a ``str`` or ``os.PathLike``; ``~`` is expanded,
            a relative path is taken from the working folder).

    Raises:
        ValueError: a run without a stored fingerprint (a built-in family, whose loader
            finds its own data, or a run written before fingerprints were stored): data
            elsewhere could not be checked to be its own; a path that does not exist or
            is not what the family reads.
    """
    given = os.fspath(data_root)
    flag = f"--data-root {given}"
    if fam["name"] not in config.USER_FAMILIES:
        raise ValueError(f"{flag}: {path} is family {fam['name']!r}, which reads no data of "
                         f"yours (its loader finds its own, family.root = {fam['root']!r}), "
                         f"and stores no fingerprint of its data to check another path "
                         f"against; leave --data-root out")
    if not isinstance(data, dict):
        raise ValueError(f"{flag}: {path} stores no fingerprint of the data it read (it was "
                         f"written before runs stored one), so the data at {given} could not "
                         f"be checked to be the run's own; give family.root its data at the "
                         f"stored path {fam['root']!r} (a link to {given} will do), or train "
                         f"a new run there")
    where = Path(os.path.abspath(Path(given).expanduser()))
    want = "folder" if fam["name"] == "folder" else "file"
    if not where.exists():
        raise ValueError(f"{flag}: no such {want} (the run's family.root, {fam['root']!r}, "
                         f"is replaced by it)")
    if (want == "folder") != where.is_dir():
        what = "an image folder, root/<class>/<image>" if want == "folder" else \
            "a tensor file (.npz / .pt)" if fam["name"] == "tensors" else "a table file"
        raise ValueError(f"{flag} is a {'file' if want == 'folder' else 'folder'}, but "
                         f"{path} is family {fam['name']!r}, which reads {what}")
    return str(where)


def check_moved_data(run, family) -> None:
    """For a run loaded with ``data_root`` (an ensemble: each such member): check that
    ``family`` (read at that path) holds the run's own data: each class read has the
    sha256 of its examples that the run's stored fingerprint gives it
    (``metaloop.build.data_fingerprint``; a table: its file's sha256). Runs read at their
    stored path pass unchecked.

    Args:
        run: a loaded ``Run``, or an ensemble (each of its ``members`` is checked).
        family: the held-out task family read now at the run's ``data_root``
            (``build.eval_family``).

    Raises:
        ValueError: classes whose examples differ, or that the run never read (a class
            its fingerprint lacks cannot be checked), naming them, the path and the run.
    """
    moved = [m for m in getattr(run, "members", None) or [run]
             if getattr(m, "stored_root", None) is not None]
    found = _first_change(moved, family, stored_classes_only=False)
    if found:
        m, change, read = found
        raise _not_own_data(read, m.path, m.stored_root, change)


def check_same_data(stored: dict | None, read: dict | None, run, stored_root) -> None:
    """ValueError unless the fingerprint ``read`` (of the data at the path that replaced a
    run's ``family.root``) agrees with the run's ``stored`` one in every class it has (a
    table: the file's sha256), naming the classes whose examples differ and those the run
    never read (``metaloop.build.data_changes``)."""
    if not isinstance(stored, dict) or not isinstance(read, dict):
        return
    change = build.data_changes(stored, read)
    if change:
        raise _not_own_data(read, run, stored_root, change)


def _not_own_data(read: dict, run, stored_root, change: str) -> ValueError:
    """The refusal of data at a ``--data-root`` (fingerprint ``read``) that is not the
    data ``run`` read at its stored ``family.root`` ``stored_root``; ``change`` says how
    (``metaloop.build.data_changes``)."""
    return ValueError(f"--data-root {read['root']} is not the data {run} was trained on "
                      f"(its stored family.root: {stored_root}): {change}; give the path "
                      f"of the run's own data as it read it, or train a new run on this "
                      f"data")


def _first_change(members: list, family, *, stored_classes_only: bool
                  ) -> tuple[Any, str, dict] | None:
    """The first of ``members`` (runs, or ensemble members, of one family) whose stored
    fingerprint (``Run.data``) the examples of ``family`` do not match, with how they differ
    (``metaloop.build.data_changes``) and the fingerprint read (``metaloop.build
    .data_fingerprint``, of the first member's ``[family]``; a table: its file's sha256,
    read once for all members); None where every member's matches, or none can be
    compared.

    Args:
        members: the runs to check; a member that stored no fingerprint passes.
        family: the held-out tasks read now (``build.eval_family``).
        stored_classes_only: compare only the classes the stored fingerprint lists (the
            run's own ``family.root``, whose held-out classes it may never have read), and
            pass a fingerprint that cannot be compared so (a table's without a sha256,
            another without classes). Otherwise every class read is compared, and one the
            run never read differs (a ``--data-root``, which must be the run's own data).
    """
    if not members:
        return None
    fcfg = members[0].config["family"]
    table = fcfg["name"] == "table"
    read = build.data_fingerprint(fcfg, *([] if table else [family]))
    if not isinstance(read, dict):
        return None
    for m in members:
        stored, now = m.data, read
        if not isinstance(stored, dict):
            continue
        if stored_classes_only and table:
            if not stored.get("sha256"):
                continue
        elif stored_classes_only:
            if not (isinstance(stored.get("classes"), dict)
                    and isinstance(read.get("classes"), dict)):
                continue                # a fingerprint without classes: cannot be compared
            now = {**read, "classes": {c: d for c, d in read["classes"].items()
                                       if c in stored["classes"]}}
        change = build.data_changes(stored, now)
        if change:
            return m, change, read
    return None


def data_moved(family: dict) -> bool:
    """Whether ``family`` (a config's ``[family]``) reads data of the user's own at a
    ``root`` that is no longer there: the case ``--data-root PATH`` is for."""
    root = family.get("root")
    return bool(family["name"] in config.USER_FAMILIES and root
                and not os.path.exists(os.path.expanduser(str(root))))


def last_read_hint(data: dict | None, root) -> str:
    """Where a run last read its data, when its fingerprint ``data`` names another path than
    its ``family.root`` ``root`` (a run resumed with ``--data-root`` keeps its config's path
    and records the one it read in its fingerprint): the option that reads it there again;
    "" otherwise."""
    if not isinstance(data, dict) or not data.get("root") or data["root"] == str(root):
        return ""
    return (f"; the run last read its data at {data['root']} (a resume with --data-root): "
            f"give --data-root {data['root']} to read it there")


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


LOAD_TRIES = 3
"""How often ``load_pinned`` loads a run folder whose ``LATEST`` moves while it loads."""


def load_pinned(path, *, what: str | None = None, option: str | None = None,
                **kwargs) -> Run:
    """``load_run(path, **kwargs)`` (a run folder or one ``ckpt-*`` folder), with the
    ``ckpt-*`` folder it loaded as ``Run.checkpoint_dir`` (resolved) and that folder's
    ``state.json`` as ``Run.state``.

    A run folder's ``LATEST`` is read before and after the load, and the state in between:
    where a run training into the folder (``metaloop train --resume``) moved ``LATEST``
    meanwhile, the run is loaded again, so that ``checkpoint_dir`` and ``state`` are those
    of the weights loaded (``state["tensors_sha256"]`` is their file's sha256, which the load
    checks). A checkpoint written after the load changes neither, nor does one that prunes
    the folder loaded.

    Args:
        path: a run folder (its ``LATEST`` names the checkpoint) or one ``ckpt-*`` folder.
        what: how the refusal names ``path``; None: the path itself.
        option: the option that could name one ``ckpt-*`` folder instead (e.g.
            ``"--model"``), which the refusal suggests; None: no option named.
        **kwargs: passed to ``load_run`` (``device``, ``head_init``, ``data_root``).

    Raises:
        ValueError: what ``load_run`` raises, or a ``LATEST`` that moved during each of
            ``LOAD_TRIES`` loads (naming ``what``).
    """
    path = Path(path)

    def named() -> Path | None:
        """The ``ckpt-*`` folder ``path`` loads now; None where ``LATEST`` cannot be read
        (``load_run`` names it)."""
        if not (path / "LATEST").is_file():
            return path.resolve()
        try:
            found = latest_checkpoint(path)
        except (OSError, ValueError):
            return None
        return found.resolve() if found is not None else None

    def state_of(ckpt: Path | None) -> dict | None:
        """``ckpt/state.json``; None where it cannot be read (pruned since ``named``, or
        damaged: ``load_run`` names that)."""
        if ckpt is None:
            return None
        try:
            state = read_state(ckpt / "state.json")
        except (OSError, ValueError):       # a state.json too big or too deep included
            return None
        return state if isinstance(state, dict) else None

    for _ in range(LOAD_TRIES):
        before = named()
        state = state_of(before)
        run = load_run(path, **kwargs)
        if state is not None and named() == before:
            run.checkpoint_dir, run.state = before, state
            return run
    raise ValueError(f"{what or path}: its LATEST moved to a newer checkpoint during each of "
                     f"{LOAD_TRIES} loads (a run is training into the folder); let that run "
                     f"finish, or name one of its ckpt-* folders"
                     + (f" as {option}" if option else ""))


def adapt_meta_run(stored_config: dict) -> bool:
    """Whether a checkpoint's stored config is one of a LoRA meta-training run of
    ``metaloop adapt --meta`` (``metaloop.recipes.adapt``: a flat table, ``method =
    "fomaml"``, ``model = "minilm"``, the LoRA settings...), not the sectioned config of
    ``metaloop train`` or ``compare`` (``[method]``, ``[model]``, ...)."""
    return isinstance(stored_config.get("method"), str)


def load_run(path, *, device=None, head_init: str = "checkpoint", data_root=None) -> Run:
    """Load a saved run: its config, and its learner with the checkpoint's weights.

    Args:
        path: a run directory (its newest checkpoint, named by ``LATEST``) or one
            ``ckpt-*`` directory.
        device: where the learner will run (``"cpu"``, ``"cuda"``, a ``torch.device`` or
            None): the model is moved there and it chooses the batching
            (``metaloop.build.batching_on``).
        head_init: ``"checkpoint"`` (the config's rule) or ``"zero"`` (adapt from a zero
            head sized to each task's classes).
        data_root: None, or where the run's own data is now (its image folder, tensor file
            or table moved): the config's ``family.root`` becomes this path (absolute) and
            the stored one is kept as ``Run.stored_root``; whatever reads the data then
            (``Run.heldout``, ``metaloop.recipes.evaluation.evaluate_run``) checks it
            against the run's stored fingerprint (``check_moved_data``).

    Returns:
        A ``Run``. A config key renamed since the run was written loads under its new name
        with a FutureWarning.

    Raises:
        ValueError: no such directory, no checkpoint in it (or a ``LATEST`` that names
            one that lacks its files, naming it), a ``metaloop vae --protocol iwae`` run (a
            VAE, named as one), a LoRA meta-training run of ``metaloop adapt --meta``
            (``adapt_meta_run``: named as one), a run whose stored config lacks
            the family, model or method (``ml.train`` without a full ``config=``), a config
            that no longer validates, or stored tensors that do not fit the config's model
            (naming them); a ``data_root`` for a run that stores no fingerprint of its
            data (a built-in family: named), or that is not there (``moved_root``).
    """
    path = Path(path)
    if not path.is_dir():
        raise ValueError(f"no checkpoint at {path}: " + ("it is a file, not a run folder"
                                                          if path.exists()
                                                          else "the folder does not exist"))
    if not saved_run(path):
        advice = unlinked_advice(path, "then give the run folder again")
        raise ValueError(f"no checkpoint in {path} (no LATEST file or state.json)"
                         + (f": {advice}" if advice else ""))
    if head_init not in ("checkpoint", "zero"):
        raise ValueError(f"head_init must be 'checkpoint' or 'zero', got {head_init!r}")
    try:
        tensors, state = load_checkpoint(path)
    except FileNotFoundError as e:      # LATEST names a checkpoint that lacks its files
        raise ValueError(str(e)) from e
    if protocol_run(state):
        raise ValueError(f"{path} holds a VAE of metaloop vae --protocol iwae (at pass "
                         f"{state['passes']}), not a meta-learning run: measure it with "
                         f"metaloop vae --protocol iwae --evaluate --out {path}")
    if not isinstance(state.get("config"), dict):
        raise ValueError(f"{path}: the checkpoint is corrupt: its state.json holds no config")
    if adapt_meta_run(state["config"]):
        cfg = state["config"]
        run_dir = path.parent if (path / "state.json").is_file() else path   # a ckpt-*
        raise ValueError(f"{path} holds a LoRA meta-training run of metaloop adapt --meta "
                         f"{cfg['method']} (on model {cfg.get('model')!r}), not a metaloop "
                         f"train run: its config names no family, model and method sections "
                         f"to rebuild a learner from; metaloop adapt --meta {cfg['method']} "
                         f"--meta-dir {run_dir.parent} (with the adapt run's other options) "
                         f"reuses it, and that adapt run's results.json holds its scores")
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
    stored_root = None
    if data_root is not None:
        stored_root = str(cfg["family"]["root"])
        cfg["family"]["root"] = moved_root(path, data, cfg["family"], data_root)
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
    with seeded_rng(cfg["train"]["seed"]):     # the initial weights, replaced below: the
        learner = build.build_learner(cfg, family, device=device)   # caller's RNG is kept
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
               data=data, stored_root=stored_root)

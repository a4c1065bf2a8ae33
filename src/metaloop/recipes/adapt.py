"""The adaptation experiment (``metaloop adapt``): approaches 0-3 on a pretrained model, and
LoRA meta-learned by first-order MAML / MAML / Reptile, on the same held-out tasks.

Approaches, each adapting on a task's support set alone:

- 0, prompting: zero-shot label prompts; the prompt optimizer (text encoders only);
- 1, linear probe on frozen features: logistic (Newton; L-BFGS for many classes), ridge
  (closed form), SGD;
- 2, fine-tuning everything: zero head, random head, LP-FT (head warm-up first);
- 3, LoRA (peft) and soft prompts with a new head; with ``meta``, LoRA meta-learned on the
  meta-training classes, then fine-tuned like plain LoRA.

``prepare(AdaptSettings(...))`` loads the model and the task families (everything that can fail
on bad input), ``run(prepared, out)`` meta-trains (resumably), evaluates every approach on the
same held-out tasks and returns the ``results.json`` body; ``table``, ``paired_lines`` and
``bar_chart`` report it, and ``records`` makes it one result record per approach (``metaloop
adapt --record``; ``check_records`` checks their paths first).

On the user's own images (``family="folder"``: an image folder; ``"tensors"``: an ``.npz`` /
``.pt`` file) the model is a metaloop image run, and the images are read as that run reads
them (``Run.transform``). Data that holds every class the run read, with the same images
(told by the digests the run stores, wherever the data lies), is the run's own: it holds out
the run's test classes (and meta-learns LoRA on its train classes), read with the run's
``family.skip_corrupt``. Other data is held out as a table is, less any class that holds
exactly the images of one of the run's training classes (left out and named).

On the user's own text table, approaches 0-3 never see another class, so without
meta-training every class of the table is held out. Meta-learned LoRA trains on other
classes: then the classes are split by ``split_classes(labels, fractions, split_seed)``, the
meta-learners train on the train classes, and every approach is scored on the test classes,
so that no row of the table has seen a held-out class.
"""

from __future__ import annotations

import dataclasses
import functools
import math
import os
import re
import time
from collections.abc import Callable, Collection, Sequence
from pathlib import Path
from typing import Any, TypedDict, cast

import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from metaloop import runs_folder
from metaloop._progress import tqdm_defaults
from metaloop._random import seeded_rng
from metaloop.evaluate.heldout import format_mean_ci
from metaloop.recipes import _partial, report
from metaloop.recipes._record_setting import (
    check_same_setting,
    flag_value,
    old_record,
    written_from,
)
from metaloop.tasks.episodes import SmallClassesError
from metaloop.tasks.text_table import TextTable

__all__ = ["APPROACHES", "FAMILIES", "META", "PARTIAL", "RECORD_TABLE", "RECORD_TABLE_META",
           "AdaptSettings", "Prepared", "bar_chart", "check_given", "check_records",
           "check_resume", "default_lora_targets", "describe", "evaluate_strategies",
           "finished", "identity", "kept", "measured_setting", "paired", "paired_lines",
           "parse_fractions", "prepare", "record_path", "record_rows", "records", "run",
           "table", "table_families", "table_summary", "title"]

FAMILIES = ("wordnet", "table", "omniglot", "fashion_mnist", "folder", "tensors")
TEXT_FAMILIES = ("wordnet", "table")
USER_FAMILIES = ("table", "folder", "tensors")       # the user's data, given by --data
IMAGE_DATA = ("folder", "tensors")                   # the user's images
TEXT_ONLY = ("prompt-zero-shot", "prompt-optimized", "soft-prompt")
APPROACHES = {   # name -> approach number (0-3)
    "prompt-zero-shot": 0, "prompt-optimized": 0,
    "probe-logistic": 1, "probe-ridge": 1, "probe-sgd": 1,
    "finetune-zero": 2, "finetune-random": 2, "lp-ft": 2,
    "lora": 3, "soft-prompt": 3,
}
META = ("fomaml", "reptile", "maml")
# The meta-learners' inner loop: SGD on LoRA + a zero head with one step size, on the
# cross-entropy of 30 x logits (see lora_learner's logit_scale). Features are unit vectors;
# with no scale, a step of 5 let first-order MAML's adapters blow up after ~55 outer steps
# (train accuracy 0.9 -> 0.25) and a step of 1 left the logits so small (temperature ~5)
# that the meta-loss only rewarded spreading all features apart: it plateaued after 50 steps
# without any gain in accuracy. Scale 30 and step 0.05: the head moves like a step of 45,
# the adapters like one of ~2 (docs/results.md has the measurements). Reptile's
# 5-shot inner loop takes 0.02: at 0.05 the head overshoots on 25 examples (support loss rises
# again by the 4th step on validation tasks).
META_INNER = {"fomaml": {"inner_lr": 0.05, "inner_steps": 3, "logit_scale": 30.0},
              "maml": {"inner_lr": 0.05, "inner_steps": 3, "logit_scale": 30.0},
              "reptile": {"inner_lr": 0.02, "inner_steps": 4, "logit_scale": 30.0}}
# Meta-training tasks are 5-way 1-shot for MAML, whose query loss sees several examples of a
# class; Reptile learns from the support set alone, and with one shot per class its only
# signal is to push the support examples apart, so it meta-trains on 5-shot tasks.
META_SHOTS = {"fomaml": 1, "maml": 1, "reptile": 5}
META_OUTER_LR = 1e-3


@dataclasses.dataclass
class AdaptSettings:
    """Everything ``metaloop adapt`` takes (its flags, with the same names and defaults).

    ``model``: "minilm", a Hugging Face model folder or cached name, or a metaloop run folder
    (an image model); ``family``: one of ``FAMILIES``; ``approaches``: a comma list of
    ``APPROACHES`` (None: all that apply); ``meta``: a comma list of ``META`` learners over
    LoRA + head; ``data``: the file or folder of ``family="table"``, ``"folder"`` or
    ``"tensors"``, and the table options: how ``family="table"`` reads it; ``skip_corrupt``
    (``family="folder"``): leave out unreadable images instead of stopping (the data a
    ``--model`` run was trained on is read with that run's ``family.skip_corrupt`` either
    way); ``class_depth`` (``family="folder"``): 1 reads ``root/<class>/<image>``, 2
    ``root/<group>/<class>/<image>`` (classes named ``group/class``); None: a folder
    ``--model`` run's ``family.class_depth`` where ``--data`` has that layout, else 1.
    """

    model: str = "minilm"
    family: str = "wordnet"
    ways: int = 5
    shots: int = 1
    queries: int = 5
    tasks: int = 100
    approaches: str | None = None
    steps: int = 20
    lora_r: int = 8
    lora_targets: str | None = None
    prompt_tokens: int = 8
    max_length: int = 32
    meta: str = ""
    meta_iterations: int = 300
    meta_batch: int = 4
    meta_shots: int | None = None
    meta_dir: str | None = None
    seed: int = 0
    root: str | None = None
    data: str | None = None
    text_column: str = "text"
    label_column: str = "label"
    delimiter: str | None = None
    quoting: str = "csv"
    split_fractions: str = "0.7,0.1,0.2"
    split_seed: int = 0
    drop_small: bool = False
    skip_corrupt: bool = False
    class_depth: int | None = None


@dataclasses.dataclass
class Prepared:
    """What ``prepare`` loaded: the model (and its kind, "text" or "image"), the held-out
    family, each meta-learner's training family, the table summary (``family="table"``) and
    the lines describing the data; ``data``: which of the user's images are held out and
    which meta-train (``family="folder"`` or ``"tensors"``; a folder's also whether it was
    read with ``skip_corrupt``, the flag's or the ``--model`` run's)."""

    settings: AdaptSettings
    model: object
    kind: str
    heldout: object
    train_families: dict
    table: dict | None
    description: str
    data: dict | None = None
    checkpoint: str | None = None
    """The checkpoint a metaloop ``--model`` was loaded from, as ``identity`` records it
    (``_load_run``); None for a Hugging Face encoder."""
    notes: list = dataclasses.field(default_factory=list)
    """What the command says on stderr of the model loaded: a metaloop ``--model`` run still
    training (``_load_run``), whose checkpoint a ``--resume`` of this run needs."""


def _check_seeds(s: AdaptSettings) -> None:
    """``seed`` and ``split_seed`` are ints that seed torch's generators: each held-out task
    ``i`` seeds ``seed * 100003 + i`` (``run``), so that must stay below 2**64 too.

    Raises:
        ValueError: naming the seed (torch said "Overflow when unpacking long long" once
            the model had loaded).
    """
    for name, seed in (("seed", s.seed), ("split_seed", s.split_seed)):
        if not isinstance(seed, int) or isinstance(seed, bool) or seed < 0:
            raise ValueError(f"{name} must be an int >= 0, got {seed!r}")
        top = seed * 100_003 + s.tasks if name == "seed" else seed     # an int: checked first
        if top >= 2**64:
            raise ValueError(f"{name} {seed} is too large: the seeds it gives torch's "
                             f"generators must stay below 2**64"
                             + (" (seed * 100003 + tasks)" if name == "seed" else ""))


def prepare(s: AdaptSettings, given: Collection[str] | None = None) -> Prepared:
    """Check the settings, load the model and build the task families.

    Everything that can fail on bad input fails here, before any output is written.

    Args:
        s: the settings.
        given: the names of the settings the user gave (``metaloop adapt``'s flags), each
            refused (``check_given``) where it would change nothing; None: those that differ
            from the defaults.

    Raises:
        ValueError: naming the bad setting, file or model, or a given setting that would
            change nothing.
    """
    _positive(ways=s.ways, shots=s.shots, queries=s.queries, tasks=s.tasks,
              steps=s.steps, max_length=s.max_length, lora_r=s.lora_r,
              prompt_tokens=s.prompt_tokens)
    if s.family not in FAMILIES:
        raise ValueError(f"unknown family {s.family!r}; choose one of {list(FAMILIES)}")
    if s.ways < 2:
        raise ValueError(f"ways must be >= 2: a {s.ways}-way task is always answered right")
    _check_seeds(s)
    if s.approaches is not None:
        _approach_names(s.approaches, "text")            # names, before loading anything
    methods = _meta_methods(s.meta)
    given = _given_settings(s) if given is None else set(given)
    check_given(s, given)
    _lora_targets(s, "text")                             # a well-formed list, before loading
    if s.meta:
        _positive(meta_iterations=s.meta_iterations, meta_batch=s.meta_batch)
    if s.meta_shots is not None:        # 0 is refused, not taken for the default
        _positive(meta_shots=s.meta_shots)
    if methods and s.meta_dir:
        _check_meta_dir(Path(s.meta_dir).expanduser())
    meta_shots = {m: s.meta_shots or META_SHOTS[m] for m in methods}
    if s.family not in USER_FAMILIES:
        for opt in ("data", "delimiter"):
            if getattr(s, opt) is not None:
                raise ValueError(f"--{opt} applies to --family table, folder or tensors, not "
                                 f"{s.family}" if opt == "data" else
                                 f"--{opt} applies to --family table, not {s.family}")
    elif s.root is not None:
        raise ValueError(f"--root applies to the built-in families; give "
                         f"{'the table' if s.family == 'table' else 'your data'} as --data")
    elif s.family == "table":   # read and check the table before loading any model
        _table_families(s, None, s.shots, s.queries, meta_shots.values())
    elif s.delimiter is not None:
        raise ValueError(f"--delimiter applies to --family table, not {s.family}")
    elif not s.data:
        raise ValueError(f"--family {s.family} needs --data PATH: "
                         + ("an image folder (one sub-folder per class)" if s.family == "folder"
                            else "an .npz or .pt file with x and y"))
    if s.class_depth is not None and (s.class_depth not in (1, 2)
                                      or isinstance(s.class_depth, bool)):
        raise ValueError(f"--class-depth must be 1 (root/<class>/<image>) or 2 "
                         f"(root/<group>/<class>/<image>), got {s.class_depth!r}")
    if s.family in IMAGE_DATA:
        from metaloop.data.folder import nested_warnings_once
        with nested_warnings_once("add --class-depth 2"):    # once, naming this flag
            return _prepare_images(s, meta_shots, given)
    notes: list[str] = []
    model, kind, checkpoint = load_model(s.model, s.family, s.max_length, checkpoint=True,
                                         notes=notes)
    names = _approach_names(s.approaches, kind)          # text-only approaches on images
    if kind == "text":
        _check_length(s, model, "soft-prompt" in names)
        if "lora" in names or methods:
            _lora_targets(s, kind, model)                # the default: known layer names
    table, description = None, ""
    if s.family == "table":
        heldout, by_shots = _table_families(s, model.tokenize, s.shots, s.queries,
                                            meta_shots.values())
        train_families = {m: by_shots[k] for m, k in meta_shots.items()}
        table = table_summary(heldout, by_shots)
        description = describe(heldout, by_shots)
        cut, total = _texts_cut(model, s.max_length, heldout, by_shots)
        if cut:                       # what of the table the encoder does not read
            limit = model.max_positions()
            more = ("; a larger --max-length reads more of them" if limit is None else
                    f"; --max-length up to {limit} reads more of them"
                    if s.max_length < limit else "")
            description += (f"\n{cut} of {total} texts are longer than --max-length "
                            f"{s.max_length} tokens (with the tokenizer's special ones) and "
                            f"are cut to their first {s.max_length}{more}")
    else:
        heldout = build_family(s, model, kind, "test", s.shots, s.queries)
        train_families = {}
        for m, k in meta_shots.items():
            train_families[m] = (next(iter(train_families.values())).with_shots(k, s.queries)
                                 if train_families
                                 else build_family(s, model, kind, "train", k, s.queries))
    return Prepared(s, model, kind, heldout, train_families, table, description,
                    checkpoint=checkpoint, notes=notes)


def _prepare_images(s: AdaptSettings, meta_shots: dict[str, int], given: set[str]
                    ) -> Prepared:
    """``prepare`` for the user's images: the image run of ``--model`` and the families of
    ``--data``, read as the run reads images.

    Whether ``--data`` is the data the run was trained on is told by what it holds, not by
    its path (``_run_data``): that data keeps the run's class split and is read with the
    run's ``family.skip_corrupt``. Of other data, every class that holds exactly the images
    of one of the run's training classes, under any name, is left out and named: no row
    scores a class the run meta-trained on as held out."""
    assert s.data is not None              # prepare refuses an image family without --data
    path = Path(s.model).expanduser()
    if not _is_checkpoint(path):
        load_model(s.model, s.family, s.max_length)   # names what --model is instead
    notes: list[str] = []
    run, checkpoint = _load_run(path, notes)
    tf = run.transform
    if tf is None:
        raise ValueError(f"--model {s.model} is a {run.config['model']['name']} run (family "
                         f"{run.config['family']['name']}); --family {s.family} needs an image "
                         f"model (conv4 or resnet12)")
    model = _body(run)
    fam = run.config["family"]
    folder_run = fam["name"] == "folder" and s.family == "folder"
    depth = (s.class_depth if s.class_depth is not None        # given: it, not the run's
             else _class_depth(s.data, fam["class_depth"]) if folder_run else 1)
    run_skips = folder_run and bool(fam.get("skip_corrupt"))
    skip = s.skip_corrupt or run_skips       # the run's, for its own data (checked below)

    def read(shots: int, *, split: str | None = None, classes=None, ways: int = s.ways,
             queries: int = s.queries, drop_small: bool = s.drop_small):
        kw: dict[str, Any] = dict(ways=ways, shots=shots, queries=queries,
                                  drop_small=drop_small)
        if classes is not None:
            kw["classes"] = classes
        elif split is not None:
            kw.update(split=split, fractions=parse_fractions(s.split_fractions),
                      seed=s.split_seed)
        from metaloop.tasks import Episodes
        assert s.data is not None          # as above: mypy narrows no attribute in a closure
        try:
            if s.family == "tensors":
                out = Episodes.from_tensors(s.data, **kw)
            else:
                out = Episodes.from_folder(
                    s.data, image_size=tf["image_size"], channels=tf["read_channels"],
                    invert=tf["invert"], class_depth=depth, skip_corrupt=skip, **kw)
        except ValueError as e:
            raise _naming_data(e, s) from e
        want = (tf["read_channels"], tf["image_size"], tf["image_size"])
        if tuple(out.input_shape) != want:
            raise ValueError(f"--data {s.data} holds inputs of shape {list(out.input_shape)}, "
                             f"but {s.model} reads images of shape {list(want)} (channels, "
                             f"height, width)")
        return out

    whole = _every_class(read)
    own, trained = _run_data(run, s, {} if whole is None else _class_digests(s, whole))
    if own and {"split_fractions", "split_seed"} & given:
        raise ValueError(f"--data {s.data} is the data {s.model} was trained on, so its own "
                         f"class split is used (family.train_classes and test_classes), and "
                         f"--split-fractions / --split-seed would change nothing: drop them")
    skipped = whole.report["skipped"] if whole is not None and run_skips else []
    if skipped and not own and not s.skip_corrupt:
        raise ValueError(f"image folder {s.data}: {len(skipped)} unreadable image(s), e.g. "
                         f"{skipped[0]}; {s.model} leaves unreadable images out of the data it "
                         f"was trained on (family.skip_corrupt = true), but {s.data} is other "
                         f"data: to leave them out of it too, give --skip-corrupt")
    meta = bool(meta_shots)
    held: list[str] | None
    train: list[str] | None
    if own:
        held, train = list(fam["test_classes"]), list(fam["train_classes"])
        where = f"the test classes of {s.model}"
    elif trained:
        assert whole is not None           # classes matched: --data was read
        rest = [c for c in whole.all_class_names if c not in set(trained)]
        if len(rest) < s.ways:
            raise ValueError(f"--data {s.data}: {len(trained)} of its classes hold the same "
                             f"images as classes {s.model} meta-trained on ({_listed(trained)}), "
                             f"and are not held out; the {len(rest)} other class(es) are fewer "
                             f"than --ways {s.ways}: bring classes the run has not seen")
        if meta:
            train, _, held = _split_rest(rest, s)
            where = (f"split 'test' by --split-fractions {s.split_fractions} of the classes "
                     f"{s.model} did not meta-train on")
        else:
            held, train = rest, None
            where = f"every class {s.model} did not meta-train on (no meta-training)"
    elif meta:
        held = train = None
        where = f"split 'test' by --split-fractions {s.split_fractions}"
    else:
        held, train, where = None, None, "every class (no meta-training)"

    heldout = read(s.shots, split="test" if meta and held is None else None, classes=held)
    train_families: dict[str, Any] = {}
    for m, k in meta_shots.items():
        try:
            train_families[m] = (next(iter(train_families.values())).with_shots(k, s.queries)
                                 if train_families else
                                 read(k, split="train" if train is None else None,
                                      classes=train))
        except ValueError as e:   # too small for the meta-training tasks: their --meta-shots
            small = next((c for c in (e, e.__cause__) if isinstance(c, SmallClassesError)),
                         None)
            if small is None:
                raise
            problem = str(_naming_data(ValueError(small.problem), s))
            raise SmallClassesError(problem, _meta_small_advice(s, small.shots),
                                    small.shots) from e
    first = next(iter(train_families.values()), None)
    report_ = getattr(heldout, "report", None)
    if report_ and whole is not None:     # the cache as this command found it, first read
        heldout.report = report_ = {**report_, "cache_status": whole.report["cache_status"]}
    data = {"data": str(s.data), "heldout": where, "heldout_classes": heldout.class_names,
            "train_classes": first.class_names if first is not None else [],
            "dropped_classes": sorted(set(heldout.dropped).union(
                *(f.dropped for f in train_families.values()))),
            "trained_classes_left_out": trained,
            # unreadable images left out: by the flag, or the run's own data by its setting
            # (other data is refused above where the run's setting would skip one)
            **({"skip_corrupt": s.skip_corrupt or (own and run_skips), "class_depth": depth}
               if s.family == "folder" else {}),
            **({"left_out": {k: report_[k] for k in LEFT_OUT}} if report_ else {}),
            "transform": {k: tf[k] for k in ("image_size", "read_channels", "invert")}}
    # what was read and left out, the line metaloop train prints
    lines = [f"{s.family} {s.data}: {heldout.describe()}"]
    if trained:
        lines.append(f"left out {len(trained)} class(es) holding the same images as classes "
                     f"{s.model} meta-trained on: {_listed(trained)}")
    lines.append(f"{s.data}: held-out classes, {where}: {heldout.num_classes} "
                 f"({_listed(heldout.class_names)})")
    if first is not None:
        lines.append(f"meta-training classes: {first.num_classes} "
                     f"({_listed(first.class_names)})")
    if data["dropped_classes"]:
        d = data["dropped_classes"]
        lines.append(f"dropped {len(d)} class(es) with too few images: {_listed(d)}")
    return Prepared(s, model, "image", heldout, train_families, None, "\n".join(lines), data,
                    checkpoint=checkpoint, notes=notes)


LEFT_OUT = ("ignored", "ignored_files", "hidden", "loose", "empty", "skipped")
"""What ``results.json``'s ``data.left_out`` keeps of an image folder's ``report``
(``Episodes.from_folder``): the entries it read no image from."""


def _class_depth(data: str, depth: int) -> int:
    """The class depth a folder run of ``family.class_depth = depth`` reads ``--data`` at: its
    own where the folder has that layout (``root/<group>/<class>/<image>``), else 1."""
    if depth == 1:
        return 1
    from metaloop.data.folder import scan_folder
    try:
        scan_folder(data, depth)
    except ValueError:       # not that layout: the read at depth 1 names what is wrong
        return 1
    return depth


def _every_class(read):
    """``read``'s family of every class of ``--data`` with the two examples a task needs at
    least, to tell by their images which classes the run read; None where no class has two
    (the held-out family's read names that). An unreadable image, or a cache that cannot be
    written, is raised here: the reads after it would decode the folder again."""
    from metaloop.data.folder import CacheWriteError, UnreadableImagesError
    try:
        return read(1, ways=1, queries=1, drop_small=True)
    except ValueError as e:
        if isinstance(e.__cause__, (UnreadableImagesError, CacheWriteError)):
            raise
        return None          # every problem left is raised again by the held-out read


def _class_digests(s: AdaptSettings, family) -> dict[str, str]:
    """The digest of each class of ``family``, by name, as a run stores those it read
    (``metaloop.build.data_fingerprint``)."""
    from metaloop.build import data_fingerprint
    fingerprint = data_fingerprint({"name": s.family, "root": str(s.data)}, family)
    return dict(fingerprint["classes"]) if fingerprint else {}


def _run_data(run, s: AdaptSettings, digests: dict[str, str]) -> tuple[bool, list[str]]:
    """Whether ``--data`` is the data ``run`` was trained on, and the classes of ``--data``
    that hold exactly the images of one of the run's training classes.

    A run stores a digest of the images of each class it read (``Run.data``): ``--data`` is
    its data where each of those classes is in it under its name with the same images,
    wherever it lies (a copy, another path, a relative ``family.root`` seen from another
    working folder). Of a run that stores none (a built-in family, or trained before runs
    stored them), ``--data`` is its data where it is the folder or file of ``family.root``.

    Args:
        digests: the digest of each class of ``--data`` (``_class_digests``).
    """
    fam = run.config["family"]
    stored = (run.data or {}).get("classes")
    if not stored:
        own = fam["name"] == s.family and fam.get("root") is not None and \
            Path(fam["root"]).expanduser().resolve() == Path(str(s.data)).expanduser().resolve()
        return own, []
    if all(digests.get(name) == d for name, d in stored.items()):
        return True, []
    seen = {stored[c] for c in fam.get("train_classes") or () if c in stored}
    return False, [name for name, d in digests.items() if d in seen]


def _split_rest(names: list[str], s: AdaptSettings) -> tuple[list[str], list[str], list[str]]:
    """The train, val and test classes of ``names`` by ``--split-fractions`` and
    ``--split-seed`` (``metaloop.tasks.split_classes``)."""
    from metaloop.tasks import split_classes
    return split_classes(names, parse_fractions(s.split_fractions), s.split_seed)


def _naming_data(error: ValueError, s: AdaptSettings) -> ValueError:
    """``error`` of ``Episodes`` about the user's images, led by the file or folder of
    ``--data`` instead of the class's name ("Episodes y must be ..." -> "tensor file PATH: y
    must be ..."); unreadable images with the flag that leaves them out (``--skip-corrupt``);
    an error that names the data already is returned as it is."""
    from metaloop.data.folder import CacheWriteError, UnreadableImagesError

    if isinstance(error, CacheWriteError):          # --data takes no cache_dir
        return error.without_cache_dir()
    if isinstance(error, UnreadableImagesError):    # the command's flag, not the API's
        return ValueError(f"image folder {s.data}: {error.problem}; to leave unreadable "
                          f"images out instead, give --skip-corrupt")
    text = str(error)
    if not text.startswith("Episodes"):
        return error
    what = "tensor file" if s.family == "tensors" else "image folder"
    return ValueError(f"{what} {s.data}: {text[len('Episodes'):].lstrip(': ')}")


def _body(run):
    """The network ``adapt`` works on: a MAML / ANIL run's network, or the meta-learned body
    of R2D2, MetaOptNet and ProtoNet (their solved head unused), in float32 as every
    approach computes (a float64 run's weights rounded)."""
    from metaloop.meta._head_learner import HeadNet
    net = run.network
    return (net.backbone if isinstance(net, HeadNet) else net).float()


# The settings only some runs read: name -> (what reads it, does this run read it?). The
# approaches a run reads them through are those of --approaches that its model can run
# (text-only ones dropped on an image family; their explicit naming is refused elsewhere).
STEPPED = ("finetune-zero", "finetune-random", "lp-ft", "lora", "soft-prompt")
TABLE_ONLY = ("text_column", "label_column", "quoting")


def _readers(s: AdaptSettings, names: list[str], meta: bool) -> dict:
    text, table, user = s.family in TEXT_FAMILIES, s.family == "table", \
        s.family in USER_FAMILIES
    return {
        "steps": (f"the approaches {', '.join(STEPPED)} and --meta", meta
                  or any(n in STEPPED for n in names)),
        "lora_r": ("the lora approach and --meta", meta or "lora" in names),
        "lora_targets": ("the lora approach and --meta", meta or "lora" in names),
        "prompt_tokens": ("the soft-prompt approach (text models)", "soft-prompt" in names),
        "max_length": ("text models (--family wordnet or table)", text),
        **{k: ("--meta", meta) for k in ("meta_iterations", "meta_batch", "meta_shots",
                                         "meta_dir")},
        **{k: ("--family table", table) for k in TABLE_ONLY},
        "drop_small": ("--family table, folder or tensors", user),
        "skip_corrupt": ("--family folder (image folders)", s.family == "folder"),
        "class_depth": ("--family folder (image folders)", s.family == "folder"),
        **{k: ("--family table, folder or tensors with --meta (without it every class is "
               "held out)", user and meta) for k in ("split_fractions", "split_seed")},
    }


def _given_settings(s: AdaptSettings) -> set[str]:
    """The names of the settings that differ from ``AdaptSettings``' defaults."""
    return {f.name for f in dataclasses.fields(s) if getattr(s, f.name) != f.default}


def check_given(s: AdaptSettings, given: Collection[str]) -> None:
    """Refuse a given setting that this run would not read, naming its flag and what reads
    it: an option of the approaches that are not run, of --meta without it, of the table
    without --family table, of text models with an image model.

    Raises:
        ValueError: naming the first such flag.
    """
    kind = "text" if s.family in TEXT_FAMILIES else "image"
    names = [a for a in _approach_names(s.approaches, "text")
             if kind == "text" or a not in TEXT_ONLY]
    run = ", ".join(names) + (f" and --meta {s.meta}" if _meta_methods(s.meta) else "")
    for key, (what, read) in _readers(s, names, bool(_meta_methods(s.meta))).items():
        if key in given and not read:
            flag = f"--{key.replace('_', '-')}"
            value = "" if isinstance(getattr(s, key), bool) else f" {getattr(s, key)}"
            raise ValueError(f"{flag}{value} applies to {what}; this run ({s.family}: {run}) "
                             f"does not read it, so it would change nothing: drop {flag}")


def title(s: AdaptSettings) -> str:
    """The experiment in one line: family, data file, ways, shots, model and tasks."""
    data = f" {Path(s.data).name}" if s.family in USER_FAMILIES and s.data else ""
    return (f"{s.family}{data} {s.ways}-way {s.shots}-shot, {s.model}: {s.tasks} held-out "
            f"tasks")


def run(p: Prepared, out, *, progress: bool = False, resume: bool = False,
        on_resume: Callable[[int], None] | None = None) -> dict:
    """Meta-train the ``meta`` learners (resumably, under ``meta_dir`` or ``out/meta``),
    evaluate every approach on the same held-out tasks and return the ``results.json`` body:
    the settings, ``"approaches"`` (``evaluate_strategies``' result), ``"paired"``
    (meta-learned LoRA against plain LoRA on the same tasks), ``"meta"`` (each meta-run's
    config and budget) and ``"table"`` (the table summary, ``family="table"``).

    The tasks scored so far are kept in ``out/partial.json`` (``PARTIAL``), rewritten
    atomically after each task; ``resume`` continues from them (``kept``), to the same
    results as a run never stopped (each task's seed is its own; only the times of the tasks
    scored after the resume are measured anew); ``on_resume(tasks_done)`` is called once the
    kept state is accepted, before anything else is done. Without ``resume`` an earlier run's
    ``results.json`` and ``accuracy.png`` are removed once every approach and meta-run is
    built (a run refused there leaves them); an interrupted run's ``partial.json`` and a
    finished run's files are never removed: those are refused first, as ``metaloop adapt``
    refuses them (below). The caller writes ``results.json`` and then removes
    ``partial.json`` (a kill in between leaves a ``finished`` run).

    Raises:
        ValueError: ``resume`` of a run with other settings, model or data (naming them); a
            new run into an ``out`` that holds another command's kept state (``metaloop
            forgetting``'s partial.json) or run (``metaloop.runs_folder.check``), the
            ``partial.json`` of an interrupted run of this command (``resume=True`` continues
            it; the command's own error, ``check_resume``), a
            ``results.json`` that no metaloop run wrote, or a finished run of this command
            (its results.json: the error ``metaloop adapt`` turns into exit status 2);
            before anything is written.
    """
    out = Path(out)
    if not resume:
        _partial.check_own(out, "adapt")           # another command's kept work: not removed
        _partial.check_resume(out, False, "adapt", "approaches")   # nor an interrupted run
        runs_folder.check(out, "adapt")            # another command's run: not replaced
        _check_finished(out)                       # nor this command's finished run
    s = p.settings
    ident = identity(p, out)
    state = kept(out, ident) if resume else None
    if state is not None and on_resume is not None:
        on_resume(state["tasks_done"])
    for tmp in (*out.glob(f".{PARTIAL}.*"), *out.glob(".results.json.*"),
                out / ".accuracy.png.partial"):       # what a kill mid-write left
        tmp.unlink(missing_ok=True)
    if not resume:      # (a results.json no metaloop run wrote: runs_folder.check refused it)
        # partial.json first: a kill here leaves no old one to pass for kept work
        (out / PARTIAL).unlink(missing_ok=True)
    rows = strategies(s, p.model, p.kind, p.heldout)
    meta_rows, meta_info = meta_strategies(s, p.model, p.kind, out, p.train_families,
                                           progress=progress, checkpoint=p.checkpoint)
    rows.update(meta_rows)
    if not resume:     # only now: a refused approach or meta-run leaves the last results
        for old in ("results.json", "accuracy.png"):
            (out / old).unlink(missing_ok=True)
    t0 = time.perf_counter() - (state["eval_seconds"] if state else 0.0)

    # partial.json holds every task scored so far, so writing it after every task would cost
    # time growing with the square of the tasks (3,000 tasks: half the run's wall time):
    # it is written once the time since the last write is 20 times that write's, and at an
    # interruption, with the lists cut to the last finished task
    last = {"at": -math.inf, "cost": 0.0}
    pending: list[tuple[dict, int, float]] = []

    def write(per: dict, done: int, when: float) -> None:
        start = time.perf_counter()
        out.mkdir(parents=True, exist_ok=True)       # a library caller's new folder
        cut = {n: {k: v[:done] if isinstance(v, list) else v for k, v in row.items()}
               for n, row in per.items()}            # a task in progress left out
        report.write_json(out / PARTIAL, {"identity": ident, "tasks_done": done, "per": cut,
                                          "eval_seconds": when - t0})
        last.update(at=time.perf_counter(), cost=time.perf_counter() - start)
        pending.clear()

    def save(per: dict, done: int) -> None:
        now = time.perf_counter()
        pending[:] = [(per, done, now)]
        if now - last["at"] >= 20 * last["cost"]:
            write(per, done, now)

    try:
        results = evaluate_strategies(rows, p.heldout, s.tasks, s.seed, progress=progress,
                                      kept=state, on_task=save)
    except BaseException:
        if pending:                    # the last finished task's state, not yet written
            write(*pending[0])
        raise
    diffs = paired(results, _meta_pairs(list(meta_info)))
    return {"model": s.model, "family": s.family, "ways": s.ways, "shots": s.shots,
            "queries": s.queries, "tasks": s.tasks, "seed": s.seed, "steps": s.steps,
            "eval_seconds": time.perf_counter() - t0, "meta": meta_info,
            "threads": torch.get_num_threads(), "paired": diffs, "approaches": results,
            **({"table": p.table} if p.table is not None else {}),
            **({"data": p.data} if p.data is not None else {})}


PARTIAL = _partial.PARTIAL
"""The held-out tasks an unfinished run has scored, in its ``--out``: ``identity`` (what the
results depend on), ``tasks_done``, ``per`` (each row's per-task accuracies and seconds,
trainable parameters and info) and ``eval_seconds``."""


OUT_META = "<--out>/meta"
"""How an identity records ``--meta-dir`` where it is the run folder's own ``meta``."""


def identity(p: Prepared, out_dir=None) -> dict:
    """What an adapt run's results depend on: every setting (paths made absolute, the model
    as ``_model_identity``, the approaches and the LoRA targets as sorted lists of names:
    their order and an omitted default change no number), the threads torch computes on,
    the checkpoint a metaloop ``--model`` was loaded from (``p.checkpoint``: its name and the
    sha256 of its tensors, for a run folder and a ``ckpt-*`` folder alike; one a run
    training into that folder has written since changes neither), and the sha256 of the
    user's data (``--family table``, ``folder``, ``tensors``). With ``out_dir`` (the run's
    ``--out``), ``--meta``'s default ``meta_dir`` is ``out_dir/meta``, whether given or not,
    and recorded as ``OUT_META``: a run folder moved elsewhere (``mv runs/a runs/b``)
    resumes there."""
    s = p.settings
    out = dataclasses.asdict(s)
    if s.meta and not s.meta_dir and out_dir is not None:   # the default is one folder
        out["meta_dir"] = str(Path(out_dir) / "meta")
    out["model"] = _model_identity(s.model)
    out["approaches"] = sorted(_approach_names(s.approaches, p.kind))
    if "lora" in out["approaches"] or s.meta:       # the rows that read --lora-targets
        out["lora_targets"] = sorted(set(_lora_targets(s, p.kind, p.model)))
    out["threads"] = torch.get_num_threads()
    if not s.skip_corrupt:         # as a kept run that had no such setting recorded it
        del out["skip_corrupt"]
    if s.class_depth is None:      # as a kept run that had no such setting recorded it
        del out["class_depth"]
    if s.quoting == "csv":         # as a kept run that had no such setting recorded it
        del out["quoting"]
    for key in ("data", "root", "meta_dir"):
        if out[key] is not None:
            out[key] = str(Path(out[key]).expanduser().resolve())
    if out["meta_dir"] is not None and out_dir is not None and \
            out["meta_dir"] == str(Path(out_dir).expanduser().resolve() / "meta"):
        out["meta_dir"] = OUT_META           # moves with --out: a moved run resumes there
    if p.checkpoint is not None:             # a metaloop run: the weights it loaded
        out["model_checkpoint"] = p.checkpoint
    if s.family == "table":
        out["data_sha256"] = _table_identity(p.heldout)["sha256"]
    elif s.family in IMAGE_DATA:
        out["data_sha256"] = _data_identity(s, p.heldout)["sha256"]
    return out


_WHAT = {"model_checkpoint": "the checkpoint of --model", "data_sha256": "the contents of --data"}


def finished(out) -> bool:
    """True where ``out`` holds a ``partial.json`` beside a complete ``results.json``: the run
    was stopped after writing its results (atomically, last) and before removing
    ``partial.json``, so it finished and the ``partial.json`` is stale."""
    return _partial.finished(out, "approaches")


def check_resume(out, resume: bool) -> None:
    """Before anything is loaded: ``resume`` needs a kept ``partial.json`` in ``out``; a new
    run refuses to discard one of an interrupted run, and to replace a finished run (its
    results.json, also one killed while it removed its ``partial.json``: ``finished``),
    naming its settings (``metaloop.runs_folder.check_finished``). Whether the kept state
    fits the command is ``kept``'s to say, once the model is loaded. A folder that holds
    another command's run (``metaloop.runs_folder.check``) is refused too.

    Raises:
        ValueError: naming the folder and what it holds.
    """
    _partial.check_resume(out, resume, "adapt", "approaches")
    runs_folder.check(out, "adapt")      # another command's run: not replaced or mixed
    if not resume:                       # nor this command's finished one
        _check_finished(out)


def _check_finished(out) -> None:
    """Before a new run (no ``resume``) writes in ``out``: refuse a folder that holds a
    finished ``metaloop adapt`` run (its results.json, also one beside a stale
    ``partial.json``), naming its settings (``metaloop.runs_folder.check_finished``).
    ``run`` and ``check_resume`` (the command, before the model loads) both call it.

    Raises:
        ValueError: naming the folder, the run's settings and files; nothing was written or
            removed.
    """
    runs_folder.check_finished(out, "adapt", _finished_settings(out))


def _finished_settings(out) -> str:
    """The key settings of the finished run in ``out`` (its results.json), as a refusal of a
    new run there names them; ``""`` where it cannot be read."""
    res = runs_folder.results_of(out)
    approaches = res.get("approaches")
    parts = [f"--{k} {res[k]}" for k in ("family", "model", "ways", "shots", "tasks")
             if isinstance(res.get(k), (str, int)) and not isinstance(res.get(k), bool)]
    if isinstance(approaches, dict):
        parts.append(f"--approaches {','.join(map(str, approaches))}")
    return ", ".join(parts)


def kept(out: Path, ident: dict) -> dict:
    """The kept state of ``out / PARTIAL`` for a resume with ``ident`` (``identity``).

    A metaloop ``--model`` is the same where its checkpoint is (``model_checkpoint``: the
    ``ckpt-*`` name and the sha256 of its weights), by whatever path it is given now (the run
    folder then, its ``ckpt-*`` folder or a copy of it now).

    Raises:
        ValueError: the file is missing or corrupt, or was written by a run with other
            settings, model or data (naming each difference, kept value first; another
            checkpoint of ``--model``: whether the kept one still exists, to resume with, or
            not, and then that the kept tasks cannot be resumed), or by another command
            (naming it).
    """
    path, state = _partial.read(out, "adapt")
    try:
        old, done, per = state["identity"], state["tasks_done"], state["per"]
        float(state["eval_seconds"])
    except (ValueError, TypeError, KeyError) as e:
        raise _partial.corrupt(path, e) from e
    if not (isinstance(old, dict) and isinstance(per, dict) and isinstance(done, int)
            and all(isinstance(r, dict) and all(len(r.get(k) or ()) == done for k in
                                                ("accuracy", "adapt_seconds"))
                    and len(r.get("cpu_seconds", r.get("adapt_seconds")) or ()) == done
                    for r in per.values())):
        raise ValueError(f"{path} is corrupt: not the state of a metaloop adapt run; remove "
                         f"it to start again")
    # the same checkpoint (its name and the sha256 of its weights) by another path: the
    # run folder given then and its ckpt-* folder (or a copy of it) given now, as a
    # refused resume advises once training into the folder has moved on
    same = ("model",) if isinstance(old.get("model_checkpoint"), str) \
        and old.get("model_checkpoint") == ident.get("model_checkpoint") else ()
    diff = _partial.differences(old, ident, _WHAT, same=same)
    if diff:
        if old.get("model_checkpoint") != ident.get("model_checkpoint") \
                and isinstance(old.get("model_checkpoint"), str):
            raise ValueError(f"refusing to resume {out}: this command differs from the kept "
                             f"run's in {', '.join(diff)}; {_kept_checkpoint(old)}")
        raise _partial.refuse(out, diff)
    if not 0 <= done <= ident["tasks"]:
        raise ValueError(f"{path} is corrupt: {done} tasks scored of a run of "
                         f"{ident['tasks']}; remove it to start again")
    return state


def _kept_checkpoint(old: dict) -> str:
    """Whether the checkpoint a kept run's ``--model`` loaded (its identity's ``model`` and
    ``model_checkpoint``: ``"<ckpt-* name> sha256 <16 hex digits>"``) is still there, for a
    refused resume: a run that was training moves ``LATEST`` on and prunes its older
    checkpoints, so ``--model RUN`` loads another one."""
    from metaloop.train.checkpoint import read_state
    name, _, digest = str(old["model_checkpoint"]).partition(" sha256 ")
    model = Path(str(old.get("model", ""))).expanduser()
    ckpt = model if model.name == name else model / name
    try:
        state = read_state(ckpt / "state.json")
        same = str(state["tensors_sha256"]).startswith(digest)
    except (OSError, ValueError, TypeError, KeyError):
        same = False
    if same:
        return (f"the kept run's checkpoint still exists: resume with the kept run's "
                f"arguments and --model {ckpt} (or a copy of that folder, made now: training "
                f"into {model} prunes it once it has newer checkpoints)")
    return (f"the kept run's checkpoint {name} of {model} no longer exists (training keeps "
            f"only its newest checkpoints), so the kept tasks cannot be resumed: start "
            f"without --resume in a new --out")


# ----------------------------------------------------------------------------- set-up

def _positive(**values) -> None:
    for name, v in values.items():
        if v is None or v <= 0:
            raise ValueError(f"--{name.replace('_', '-')} must be positive, got {v}")


def _check_length(s: AdaptSettings, model, soft_prompt: bool) -> None:
    """Refuse a ``max_length`` (plus the soft prompt's tokens, which come before the text's)
    longer than the encoder's position embeddings, or too short to hold a token of the text
    beside the tokenizer's special tokens, before any text reaches the model."""
    special = model.special_tokens()
    if s.max_length <= special:
        raise ValueError(f"--max-length {s.max_length} leaves no token of the text: the "
                         f"tokenizer of model {s.model} adds {special} special token(s) to every "
                         f"text; give --max-length {special + 1} or more")
    limit = model.max_positions()     # RoBERTa-style encoders: 2 positions fewer than stored
    if limit is None:
        return
    if s.max_length > limit:
        raise ValueError(f"--max-length {s.max_length} exceeds the {limit} token positions of "
                         f"model {s.model}")
    if soft_prompt and s.max_length + s.prompt_tokens > limit:
        raise ValueError(f"--max-length {s.max_length} + --prompt-tokens {s.prompt_tokens} = "
                         f"{s.max_length + s.prompt_tokens} exceeds the {limit} token positions "
                         f"of model {s.model} (soft-prompt puts its tokens before the text's); "
                         f"lower one of them")


def _check_meta_dir(path: Path) -> None:
    """Refuse a ``--meta-dir`` that cannot become a folder (a file on its path, or a parent
    that is not writable), before anything is trained."""
    existing = next(p for p in (path, *path.parents) if p.exists())
    if not existing.is_dir():
        raise ValueError(f"--meta-dir {path}: {existing} is a file, not a folder")
    if not os.access(existing, os.W_OK):
        raise ValueError(f"--meta-dir {path}: {existing} is not writable")


def _is_checkpoint(path: Path) -> bool:
    return path.is_dir() and ((path / "LATEST").is_file() or (path / "state.json").is_file())


def load_model(spec: str, family: str, max_length: int = 32, *, checkpoint: bool = False,
               notes: list | None = None):
    """(model, kind) for ``--model``: ``"text"`` for Hugging Face encoders, ``"image"`` for
    metaloop checkpoints; with ``checkpoint``, (model, kind, the checkpoint loaded as
    ``identity`` records it (``_load_run``), None for a Hugging Face encoder). ``notes``: a
    list the note on a metaloop run still training is appended to (``_load_run``)."""
    path = Path(spec).expanduser()
    if _is_checkpoint(path):
        if family in TEXT_FAMILIES:
            raise ValueError(f"{spec} is a metaloop run; family {family} adapts a Hugging Face "
                             f"text encoder (--model minilm, or a model folder), whatever the "
                             f"run was trained on (metaloop eval and predict score a text "
                             f"run)")
        run, loaded = _load_run(path, notes)
        return (_body(run), "image", loaded) if checkpoint else (_body(run), "image")
    if family not in TEXT_FAMILIES:
        if spec == "minilm" or (path / "config.json").is_file():
            raise ValueError(f"--model {spec} is a text encoder; family {family} needs an image "
                             f"model: a metaloop checkpoint folder (e.g. the pretrain baseline "
                             f"from 'metaloop train')")
        if not path.exists():
            raise ValueError(f"model path {spec} does not exist")
        raise ValueError(f"{spec} is not a metaloop checkpoint folder (no LATEST file)")
    from metaloop.models.text import load_text_encoder
    try:
        # seeded: the new head's init, which every approach replaces but a --meta run's
        # checkpoint stores, is the same in every run; the caller's RNG is left as it was
        with seeded_rng(0):
            model = load_text_encoder(spec, max_length=max_length)
    except ModuleNotFoundError as e:
        raise ValueError(str(e)) from e
    return (model, "text", None) if checkpoint else (model, "text")


def _load_run(path: Path, notes: list | None = None):
    """The metaloop run at ``path`` (a run folder or one ``ckpt-*`` folder), pinned to the
    checkpoint it loaded (``metaloop.runs.load_pinned``: a ``LATEST`` moved during the load
    is loaded again), and that checkpoint as ``identity`` records it: ``"<ckpt-* name> sha256
    <the first 16 hex digits of the sha256 of its tensors.safetensors>"``
    (``metaloop.recipes.evaluation.checkpoint_identity``, which ``metaloop eval`` and
    ``predict`` record too), the same for a run folder and for its ``ckpt-*`` folder. Once
    loaded, a newer checkpoint changes neither. A run folder a process is still training
    (``metaloop.recipes.evaluation.in_progress``) appends a note to ``notes``: a ``--resume``
    needs that checkpoint, which training prunes once it has newer ones.

    Raises:
        ValueError: what ``load_run`` raises, or a ``LATEST`` that moved during each of
            ``metaloop.runs.LOAD_TRIES`` loads (naming ``--model``).
    """
    from metaloop.recipes.evaluation import checkpoint_identity, in_progress, in_progress_note
    from metaloop.runs import load_pinned
    run = load_pinned(path, what=f"--model {path}", option="--model")
    assert run.checkpoint_dir is not None and run.state is not None
    writer = in_progress(run) if notes is not None else None
    if writer is not None and notes is not None:
        notes.append(in_progress_note(
            run, writer, f"adapted from as it is; a --resume of this run will need that same "
                         f"checkpoint, and training keeps only its newest ones: wait for the "
                         f"run to finish, or copy {run.checkpoint_dir} elsewhere and pass that "
                         f"folder as --model"))
    return run, checkpoint_identity(run)


def build_family(s, model, kind: str, split: str, shots: int, queries: int):
    """The task family of ``--family`` on ``split`` (held-out: ``test``)."""
    if s.family not in FAMILIES:
        raise ValueError(f"unknown family {s.family!r}; choose one of {list(FAMILIES)}")
    from metaloop import tasks
    from metaloop.tasks.wordnet import WordNet
    if s.family == "wordnet":
        return WordNet(s.root, split=split, ways=s.ways, shots=shots, queries=queries,
                       tokenizer=model.tokenize)
    if s.family == "table":         # held out: every class, or the test classes with --meta
        meta = split == "train" or bool(_meta_methods(s.meta))
        heldout, train = _table_families(s, model.tokenize, shots, queries,
                                         [shots] if meta else [])
        return train[shots] if split == "train" else heldout
    if s.family == "omniglot":
        return tasks.Omniglot(s.root, split=split, ways=s.ways, shots=shots,
                              queries=queries)
    classes = range(0, 5) if split == "train" else range(5, 10)
    return tasks.FashionMNIST(s.root, classes=classes, ways=s.ways, shots=shots,
                              queries=queries, split="train" if split == "train" else "test")


def _table_families(s, tokenizer, shots: int, queries: int, meta_shots):
    """``table_families`` with the table options of ``s``.

    Raises:
        SmallClassesError: classes of a meta-training family too small, its advice naming
            ``--meta-shots`` (its default for the ``--meta`` learners), not ``--shots``.
    """
    if not s.data:
        raise ValueError("--family table needs --data PATH: a .csv, .tsv or .jsonl file with "
                         f"a {s.text_column!r} and a {s.label_column!r} column")
    try:
        return table_families(s.data, ways=s.ways, shots=shots, queries=queries,
                              meta_shots=meta_shots, tokenizer=tokenizer,
                              text_column=s.text_column, label_column=s.label_column,
                              delimiter=s.delimiter, quoting=s.quoting,
                              fractions=parse_fractions(s.split_fractions),
                              split_seed=s.split_seed, drop_small=s.drop_small)
    except _MetaSmallClassesError as e:
        raise SmallClassesError(e.problem, _meta_small_advice(s, e.shots), e.shots) from e


def _meta_small_advice(s, shots: int | None) -> str:
    """The advice of a meta-training family's ``SmallClassesError`` (tasks of ``shots``
    support examples per class): those shots are ``--meta-shots`` (or the default of the
    ``--meta`` learners that take them), not ``--shots``."""
    methods = [m for m in _meta_methods(s.meta) if (s.meta_shots or META_SHOTS[m]) == shots]
    who = f"--meta {','.join(methods)}" if methods else "--meta"
    given = (f"--meta-shots {s.meta_shots}" if s.meta_shots is not None else
             f"--meta-shots, by default {shots} for {', '.join(methods) or 'them'}")
    return (f"these are the meta-training tasks of {who}, whose support examples per class "
            f"are {given} (not --shots): give [a smaller --meta-shots or ]fewer --queries, "
            f"or leave the small classes out: --drop-small")


def _meta_methods(text: str) -> list[str]:
    """The learners of ``--meta`` ("" : none); an empty item or an unknown name is an error."""
    if not text:
        return []
    methods = [m.strip() for m in text.split(",")]
    if not all(methods):
        raise ValueError(f"--meta {text!r} has an empty item; give a comma list of "
                         f"{list(META)}, or leave --meta out")
    bad = [m for m in methods if m not in META]
    if bad:
        raise ValueError(f"unknown --meta method(s) {bad}; choose from {list(META)}")
    _no_repeats("--meta", text, methods)
    return methods


def _no_repeats(flag: str, text: str, names: list[str]) -> None:
    """Refuse a name given twice: its row (or meta-training) would be done twice, once
    silently overwritten."""
    twice = sorted({n for n in names if names.count(n) > 1})
    if twice:
        raise ValueError(f"{flag} {text!r} names {', '.join(twice)} more than once")


def _approach_names(text: str | None, kind: str) -> list[str]:
    """The approaches of ``--approaches`` (None: all that apply to ``kind``); an empty list,
    an empty item or an unknown name is an error."""
    allowed = [a for a in APPROACHES if kind == "text" or a not in TEXT_ONLY]
    if text is None:
        return allowed
    names = [a.strip() for a in text.split(",")]
    if not any(names):
        raise ValueError(f"--approaches {text!r} names no approach; give a comma list of "
                         f"{list(APPROACHES)}, or leave --approaches out for all that apply")
    if not all(names):
        raise ValueError(f"--approaches {text!r} has an empty item (a comma too many); give "
                         f"a comma list of {list(APPROACHES)}")
    bad = [a for a in names if a not in APPROACHES]
    if bad:
        raise ValueError(f"unknown approach(es) {bad}; choose from {list(APPROACHES)}")
    _no_repeats("--approaches", text, names)
    wrong = [a for a in names if a not in allowed]
    if wrong:
        raise ValueError(f"approach(es) {wrong} need a text encoder; the model is an image model")
    return names


def strategies(s, model, kind: str, family) -> dict:
    """name -> (approach number, callable(support_x, support_y, classes) -> Adapted)."""
    from metaloop.adapt.finetune import finetune, lpft
    from metaloop.adapt.linear_probe import linear_probe

    names = _approach_names(s.approaches, kind)
    steps = s.steps
    targets = _lora_targets(s, kind, model)
    # Rates: a new head learns at 1e-2; the pretrained body at 1e-4 (full fine-tuning) or
    # 1e-3 (LoRA); soft prompts at 1e-2 (Lester et al. use large prompt rates).
    body_lr = 1e-4 if kind == "text" else 1e-3
    places = [p.device for p in model.parameters()]     # the adapters' inits: seeded there
    out = {}
    for name in names:
        if name == "prompt-zero-shot":
            from metaloop.adapt.prompting import zero_shot
            cache: dict = {}
            fn: Any = functools.partial(_zero_shot, zero_shot, model, family, cache)
        elif name == "prompt-optimized":
            from metaloop.adapt.prompting import fill_cache, optimize_prompt
            cache = {}
            fn = functools.partial(_prompt_opt, optimize_prompt, model, family, cache)
            fn.refill = functools.partial(_prompt_fill, fill_cache, model, family, cache)
        elif name.startswith("probe-"):
            solver = name.split("-")[1]
            kw: dict[str, Any] = {"lam": 0.1} if solver != "sgd" else {"lr": 0.1, "steps": 100}
            fn = _ignore_classes(functools.partial(linear_probe, model, solver=solver, **kw))
        elif name in ("finetune-zero", "finetune-random"):
            fn = _ignore_classes(functools.partial(
                finetune, model, steps=steps, lr=body_lr, head_lr=1e-2,
                head_init=name.split("-")[1]))
        elif name == "lp-ft":
            fn = _ignore_classes(functools.partial(lpft, model, steps=steps, lr=body_lr,
                                                   head_lr=1e-2, warmup_kw={"lam": 0.1}))
        elif name == "lora":
            from metaloop.adapt.lora import add_lora, lora_finetune
            with seeded_rng(0, places):   # the adapter init the --meta learners start from
                lora = add_lora(model, r=s.lora_r, alpha=2.0 * s.lora_r,
                                target_modules=targets)
            fn = _ignore_classes(functools.partial(lora_finetune, lora, steps=steps, lr=1e-3,
                                                   head_lr=1e-2))
        else:  # soft-prompt
            from metaloop.adapt.soft_prompt import add_soft_prompt, soft_prompt_finetune
            with seeded_rng(s.seed, places):
                sp = add_soft_prompt(model, s.prompt_tokens)
            fn = _ignore_classes(functools.partial(soft_prompt_finetune, sp, steps=steps,
                                                   lr=1e-2, head_lr=1e-2))
        out[name] = (APPROACHES[name], fn)
    return out


def _lora_targets(s, kind: str, model=None) -> list[str]:
    """``--lora-targets`` as a list (spaces around the commas allowed), or the default:
    the attention's query and value projections for text encoders (``_text_lora_targets``:
    ``query`` and ``value`` for BERT), the convolutions for image models (named by their
    last name component: ``conv`` for Conv4; ``conv1``, ``conv2``, ``conv3`` and
    ``shortcut`` for ResNet-12, where ``conv`` matched nothing)."""
    if s.lora_targets is None:
        if kind == "text":
            return _text_lora_targets(s, model) if model is not None else ["query", "value"]
        layers = model.named_modules() if model is not None else ()
        convs = {name.rpartition(".")[2] for name, m in layers
                 if isinstance(m, (torch.nn.Conv1d, torch.nn.Conv2d, torch.nn.Conv3d))}
        return sorted(convs) or ["conv"]
    names = [n.strip() for n in s.lora_targets.split(",")]
    if not all(names):
        raise ValueError(f"--lora-targets {s.lora_targets!r} has an empty item; give a comma "
                         f"list of module names (e.g. query,value), or leave --lora-targets "
                         f"out for the default")
    return names


# The attention's query and value projections under the names architectures give them
# (BERT, RoBERTa, ALBERT, ELECTRA; DistilBERT; DeBERTa-v2; BART, Llama...; T5; GPT-2's fused
# Conv1D), tried after peft's own table for the model type.
QUERY_VALUE = (("query", "value"), ("q_lin", "v_lin"), ("query_proj", "value_proj"),
               ("q_proj", "v_proj"), ("q", "v"), ("c_attn",))


def _text_lora_targets(s, model) -> list[str]:
    """The default LoRA targets of a text encoder: its attention's query and value layers,
    by peft's table for its model type or by the names of ``QUERY_VALUE``.

    Raises:
        ValueError: an encoder with none of those names, listing its layers' names for
            ``--lora-targets``.
    """
    return _query_value(s, model.encoder)


def _query_value(s, encoder) -> list[str]:
    """``_text_lora_targets`` of the Hugging Face ``encoder`` (weights or none)."""
    from peft.utils import TRANSFORMERS_MODELS_TO_LORA_TARGET_MODULES_MAPPING as by_type

    from metaloop.adapt.lora import adaptable_layers

    leaves = {n.rpartition(".")[2] for n in adaptable_layers(encoder)}
    model_type: Any = getattr(getattr(encoder, "config", None), "model_type", None)
    for names in (by_type.get(model_type), *QUERY_VALUE):
        if names and set(names) <= leaves:
            return list(names)
    raise ValueError(f"model {s.model} ({model_type}) has no attention query / value layers "
                     f"under a known name, the default LoRA targets; choose them with "
                     f"--lora-targets from {sorted(leaves)}")


def default_lora_targets(s: AdaptSettings) -> list[str] | None:
    """The LoRA targets of ``s.model`` without ``--lora-targets`` (``_lora_targets``'
    default), sorted, told without loading the model's weights. A text encoder's default
    is read from its ``config.json`` alone: the encoder is built from it on torch's
    ``meta`` device (no memory, no weights), and its layer names give the attention's query
    and value layers as ``_text_lora_targets`` finds them in the loaded model. A metaloop
    image run's default (its convolutions) is read from the names and shapes in its
    checkpoint's safetensors header (a weight of 3 to 5 dimensions is a convolution's), not
    from the tensors.

    This is what ``--record`` compares before the model loads (``measured_setting``), so
    that ``--lora-targets`` naming the default is the setting of a run without it.

    Returns:
        The sorted names, or None where they cannot be told so (a model that does not load:
        ``prepare`` names what is wrong with it).
    """
    try:
        if s.family in TEXT_FAMILIES:
            return sorted(set(_config_text_targets(s)))
        return _checkpoint_conv_targets(Path(s.model).expanduser())
    except (ValueError, OSError, ImportError, KeyError, TypeError, RuntimeError):
        return None


def _config_text_targets(s: AdaptSettings) -> list[str]:
    """The default LoRA targets of the Hugging Face encoder ``s.model``, read from its
    config (offline, as ``load_hf`` reads the model)."""
    from metaloop.models.text import _resolve, hub_offline, require_text_extra

    transformers, _ = require_text_extra()
    source = _resolve(s.model)
    with hub_offline(True):
        config = transformers.AutoConfig.from_pretrained(source, local_files_only=True)
    with torch.device("meta"):                    # the layers' names, no weights
        encoder = transformers.AutoModel.from_config(config)
    return _query_value(s, encoder)


def _checkpoint_conv_targets(path: Path) -> list[str] | None:
    """The last name components of the convolutions of the metaloop run at ``path``, as
    ``_lora_targets`` names an image model's (``["conv"]`` where there is none), read from
    its newest checkpoint's tensor names and shapes; None where it has no such file."""
    from safetensors import safe_open

    from metaloop.train.checkpoint import latest_checkpoint

    ckpt = cast(Path, latest_checkpoint(path)) if (path / "LATEST").is_file() else path
    file = ckpt / "tensors.safetensors"
    if not file.is_file():
        return None
    convs = set()
    with safe_open(str(file), framework="pt") as f:
        for key in f.keys():
            if key.startswith("model.") and key.endswith(".weight") \
                    and 3 <= len(f.get_slice(key).get_shape()) <= 5:
                convs.add(key[:-len(".weight")].rpartition(".")[2])
    return sorted(convs) or ["conv"]


def _ignore_classes(fn):
    return lambda sx, sy, classes: fn(sx, sy)


def _zero_shot(zero_shot, model, family, cache, sx, sy, classes):
    return zero_shot(model, [w["name"] for w in family.wordings(classes)], cache=cache)


def _prompt_opt(optimize_prompt, model, family, cache, sx, sy, classes):
    return optimize_prompt(model, sx, sy, family.wordings(classes), cache=cache)


def _prompt_fill(fill_cache, model, family, cache, sx, sy, classes):
    fill_cache(model, family.wordings(classes), cache)


# ----------------------------------------------------------------------------- meta-learning

def meta_strategies(s, model, kind: str, out: Path, train_families: dict | None = None,
                    progress: bool = False, *, checkpoint: str | None = None
                    ) -> tuple[dict, dict]:
    """Train (or resume) each ``--meta`` learner over LoRA + head.

    ``train_families`` maps each method to its meta-training family (default: built here
    from ``s``, an ``AdaptSettings``). ``checkpoint``: the checkpoint a metaloop ``--model``
    was loaded from (``Prepared.checkpoint``), which each meta-run's config then holds as
    ``model_checkpoint`` beside the model's path, so that a run in ``--meta-dir`` learned on
    other weights of that folder (retrained in place, or its ``LATEST`` moved) is refused
    by the resume check, naming both checkpoints; None (a Hugging Face encoder): the model
    is its name or path alone.

    Rows per method: ``meta-lora-M`` fine-tunes the meta-learned LoRA exactly like the plain
    ``lora`` row (Adam, ``--steps``); ``meta-lora-M inner`` adapts by the learner's own inner
    loop (SGD); ``lora inner-M`` is plain LoRA from the pretrained start under that same inner
    loop, one row for the methods whose inner loops are the same (fomaml and maml: the first
    of them names it, see ``_inner_baseline``). Runs are
    checkpointed in ``--meta-dir`` and resumed (a finished run is reused); the CPU and wall
    seconds spent on each are kept in its ``budget.json``.
    """
    from metaloop.adapt.lora import lora_finetune
    from metaloop.meta.lora_meta import lora_learner
    from metaloop.train import train

    methods = _meta_methods(s.meta)
    if not methods:
        return {}, {}
    _positive(meta_iterations=s.meta_iterations, meta_batch=s.meta_batch)
    targets = _lora_targets(s, kind, model)
    meta_dir = Path(s.meta_dir) if s.meta_dir else out / "meta"
    places = [p.device for p in model.parameters()]
    rows, info, baselines = {}, {}, {}
    for method in methods:
        hp = {"r": s.lora_r, "alpha": 2.0 * s.lora_r, "target_modules": targets,
              **META_INNER[method]}
        shots = s.meta_shots or META_SHOTS[method]
        train_family = (train_families[method] if train_families is not None
                        else build_family(s, model, kind, "train", shots, s.queries))
        run_dir = meta_dir / method
        config = {"method": method, "model": _model_identity(s.model),
                  **({"model_checkpoint": checkpoint} if checkpoint is not None else {}),
                  "family": s.family, "ways": s.ways, "shots": shots, "queries": s.queries,
                  "max_length": s.max_length, "iterations": s.meta_iterations,
                  "meta_batch": s.meta_batch, "outer_lr": META_OUTER_LR, **hp}
        if s.family == "table":    # resume only on the same table and classes
            config["table"] = _table_identity(train_family)
        elif s.family in IMAGE_DATA:     # ... and on the same images and classes
            config["data"] = _data_identity(s, train_family)
        _same_inputs_elsewhere(run_dir, config)
        # seeded: the adapters' init, and the meta-training's draws from torch's global RNG
        # (those a checkpoint stores); the caller's RNG is left as it was
        with seeded_rng(0, places):
            learner = lora_learner(model, method, **hp)
            cpu0, wall0 = time.process_time(), time.perf_counter()
            try:
                train(learner, train_family, iterations=s.meta_iterations,
                      meta_batch=s.meta_batch, lr=META_OUTER_LR, seed=0, out_dir=run_dir,
                      resume=(run_dir / "LATEST").is_file(), checkpoint_every=25,
                      config=config, progress=progress, desc=f"meta-train {method}")
            except KeyboardInterrupt:   # Ctrl-C or SIGTERM: the seconds spent count too
                if run_dir.is_dir():
                    _add_budget(run_dir, time.process_time() - cpu0,
                                time.perf_counter() - wall0)
                raise
            except ValueError as e:     # a kept meta-run of other settings or data
                if str(e).startswith("refusing to resume"):
                    raise ValueError(f"{e}; the meta-learned runs are kept in --meta-dir "
                                     f"({run_dir.parent}) to be resumed: give another "
                                     f"--meta-dir, or remove {run_dir} to train it "
                                     f"again") from None
                raise
        info[method] = {"config": config, "run_dir": str(run_dir),
                        **_add_budget(run_dir, time.process_time() - cpu0,
                                      time.perf_counter() - wall0)}
        lr_kw = {"steps": s.steps, "lr": 1e-3, "head_lr": 1e-2}
        rows[f"meta-lora-{method}"] = (3, _ignore_classes(
            functools.partial(lora_finetune, learner.model, **lr_kw)))
        rows[f"meta-lora-{method} inner"] = (3, _inner(learner))
        key = (META_INNER[method]["inner_lr"], META_INNER[method]["inner_steps"])
        if key not in baselines:      # fomaml and maml adapt alike: one row for both
            with seeded_rng(0, places):
                baselines[key] = lora_learner(model, method, **hp)
            rows[_inner_baseline(methods, method)] = (3, _inner(baselines[key]))
    return rows, info


def _meta_pairs(methods: Sequence[str]) -> list[tuple[str, str]]:
    """The rows ``run`` compares task by task (``paired``): each meta-learned start against
    the pretrained one adapted alike, ``meta-lora-M`` against ``lora`` and
    ``meta-lora-M inner`` against its ``lora inner-M``."""
    return ([(f"meta-lora-{m}", "lora") for m in methods]
            + [(f"meta-lora-{m} inner", _inner_baseline(methods, m)) for m in methods])


def _inner_baseline(methods: Sequence[str], method: str) -> str:
    """The ``lora inner-M`` row ``method``'s inner loop is compared with: that of the first
    of ``methods`` whose inner loop is the same (fomaml and maml share one)."""
    def key(m):
        return META_INNER[m]["inner_lr"], META_INNER[m]["inner_steps"]
    return f"lora inner-{next(m for m in methods if key(m) == key(method))}"


def _table_identity(family) -> dict:
    """The file (absolute path and content hash), columns and classes a table family
    reads, and its quoting where it is not ``"csv"`` (absent: a table read as CSV)."""
    import hashlib
    digest = hashlib.sha256(family.path.read_bytes()).hexdigest()
    return {"data": str(family.path.resolve()), "sha256": digest,
            "text_column": family.text_column, "label_column": family.label_column,
            **({"quoting": family.quoting} if family.quoting != "csv" else {}),
            "classes": family.class_names}


def _model_identity(spec: str) -> str:
    """``--model`` as a meta-run's config stores it: a local folder as its absolute path
    (the same model from another working folder is the same), a name as it is."""
    path = Path(spec).expanduser()
    return str(path.resolve()) if path.exists() else spec


def _same_inputs_elsewhere(run_dir: Path, config: dict) -> None:
    """Let a meta-run in ``run_dir`` resume on its data and model named by another path.

    The data a run reads is identified by its sha256 (and classes); its path (``data`` of
    the config's ``table`` or ``data`` section) only records where it was. Where the stored
    config has the same sha256 under another path (relative, or from another working
    folder, or a copy), ``config`` takes the stored path, so that the resume check compares
    what the data is, not where it lies. A changed file (another sha256) is still refused by
    the resume check, naming the path and the sha256. A model stored as a relative path (by
    metaloop before it stored absolute ones) that names the same folder from here is taken
    as the same too. A checkpoint that cannot be read is left for that check to name."""

    from metaloop.train.checkpoint import latest_checkpoint, read_state

    if not (run_dir / "LATEST").is_file():
        return
    try:
        state = read_state(cast(Path, latest_checkpoint(run_dir))     # LATEST: a file
                           / "state.json")
        stored = state["config"]
    except (OSError, ValueError, TypeError, KeyError):
        return
    if not isinstance(stored, dict):
        return
    for key in ("table", "data"):
        old, new = stored.get(key), config.get(key)
        if (isinstance(old, dict) and isinstance(new, dict) and "data" in old
                and old.get("sha256") == new.get("sha256")):
            new["data"] = old["data"]
    model = stored.get("model")
    if isinstance(model, str) and model != config["model"]:
        path = Path(model).expanduser()
        if path.exists() and str(path.resolve()) == config["model"]:
            config["model"] = model


def _data_identity(s: AdaptSettings, family) -> dict:
    """The user's images a meta-training family reads: the path, a sha256 of the examples of
    its classes (as decoded) and the classes."""
    import hashlib

    x, table, pad = family.episode_store()             # [N, ...], [K', M], [K'] or None
    rows = table.flatten() if pad is None else torch.cat(
        [r[:int(n)] for r, n in zip(table, pad)])
    used = x.index_select(0, rows.sort().values).contiguous()
    digest = hashlib.sha256(used.numpy().tobytes()).hexdigest()
    assert s.data is not None          # prepare refuses an image family without --data
    return {"data": str(Path(s.data).expanduser().resolve()), "sha256": digest,
            "classes": family.class_names}


def _add_budget(run_dir: Path, cpu: float, wall: float) -> dict:
    """Accumulate the meta-training CPU and wall seconds of a run in ``budget.json``."""
    import json
    path = run_dir / "budget.json"
    total = json.loads(path.read_text(encoding="utf-8")) if path.exists() else {"cpu_seconds": 0.0,
                                                               "wall_seconds": 0.0}
    total = {"cpu_seconds": total["cpu_seconds"] + cpu,
             "wall_seconds": total["wall_seconds"] + wall}
    report.write_json(path, total)
    return total


def _inner(learner):
    """The learner's own test-time adaptation (its inner SGD loop) as an Adapted."""
    from metaloop.adapt._fit import Adapted

    def fn(sx, sy, classes):
        params = learner.adapt(sx, sy)
        return Adapted(learner.model, params, sum(p.numel() for p in params.values()))
    return fn


# The rows whose callables keep a cache between tasks (label-prompt embeddings, computed in
# one batch of the texts not yet cached): a resume replays them on the tasks it skips, so the
# cache is filled by the same batches as in a run never stopped. A callable's ``refill``
# attribute, where it has one, does only that (prompt-optimized: the prompts are embedded,
# no candidate is scored), and is replayed in its place.
CACHED = ("prompt-zero-shot", "prompt-optimized")


def evaluate_strategies(rows: dict, family, tasks: int, seed: int, progress: bool = False,
                        *, kept: dict | None = None,
                        on_task: Callable[[dict, int], None] | None = None) -> dict:
    """Adapt every strategy on each held-out task's support set; score its query set.

    Every strategy sees the same tasks (``heldout_tasks(family, tasks, seed)``) and is given
    only the support set and the task's class ids (for label wordings); query labels are
    used for scoring, after adaptation. Predictors with a frozen body share one computation
    of the query features per task, in eval mode as ``Adapted`` scores. While each strategy
    adapts to task ``i`` and is scored, torch's global RNG is seeded ``seed * 100003 + i``,
    so its numbers do not depend on the tasks before it; the caller's RNG is left as it was.

    ``kept`` (``{"tasks_done": n, "per": ...}`` as ``on_task`` was given them): the first
    ``n`` tasks are taken from it, not adapted again (only ``CACHED`` rows are replayed on
    them, by their callable's ``refill`` where it has one). ``on_task(per, done)`` is
    called after each task with the rows' values so far.

    Each row's adaptation of each task is timed twice: ``adapt_seconds`` (wall clock) and
    ``cpu_seconds`` (this process's CPU time, on all its threads). A kept row without
    ``cpu_seconds`` (kept by an earlier metaloop) takes its kept tasks' wall seconds.

    Returns:
        name -> ``{"approach", "accuracy": {"mean", "ci95"}, "trainable", "adapt_seconds",
        "per_task": {"accuracy": [...], "adapt_seconds": [...], "cpu_seconds": [...]},
        "info"}``.

    Raises:
        ValueError: ``kept`` of more tasks than ``tasks``, or of other rows than ``rows``.
    """
    from metaloop.evaluate import heldout_tasks, mean_ci
    from metaloop.func.params import eval_mode, forward

    skip = kept["tasks_done"] if kept else 0
    if kept and not (0 <= skip <= tasks and set(kept["per"]) == set(rows)):
        raise ValueError(f"the kept state ({skip} tasks of the rows {sorted(kept['per'])}) is "
                         f"not that of a run of {tasks} tasks of the rows {sorted(rows)}")
    per: dict[str, dict[str, Any]] = {
        n: {"accuracy": [], "adapt_seconds": [], "cpu_seconds": [], "trainable": 0,
            "info": None} for n in rows}
    for n, r in (kept["per"] if kept else {}).items():       # copies: ``kept`` is left as it is
        per[n].update(r, accuracy=list(r["accuracy"]), adapt_seconds=list(r["adapt_seconds"]),
                      cpu_seconds=list(r.get("cpu_seconds", r["adapt_seconds"])))
    bar = tqdm(total=tasks, initial=skip, desc="held-out tasks", disable=not progress,
               leave=False, **tqdm_defaults())
    done = 0
    for batch in heldout_tasks(family, tasks, seed):
        for i in range(batch.num_tasks):
            sx, sy, qx, qy = batch.task(i)
            task_seed = seed * 100_003 + done     # each row's, adapting and scoring task i
            if done < skip:               # scored before the resume: refill the caches
                for name in CACHED:
                    if name in rows:
                        with seeded_rng(task_seed, [sx.device]):
                            fn = rows[name][1]
                            getattr(fn, "refill", fn)(sx, sy, batch.classes[i])
                done += 1
                continue
            feats: dict[int, torch.Tensor] = {}
            for name, (_, fn) in rows.items():
                # seeded for this row and task (adapting and scoring); the caller's RNG kept
                with seeded_rng(task_seed, [sx.device]):
                    t0, c0 = time.perf_counter(), time.process_time()
                    adapted = fn(sx, sy, batch.classes[i])
                    per[name]["adapt_seconds"].append(time.perf_counter() - t0)
                    per[name]["cpu_seconds"].append(time.process_time() - c0)
                    with torch.no_grad():
                        if adapted.info.get("frozen_body"):
                            key = id(adapted.model)
                            if key not in feats:     # in eval mode, as ``Adapted`` scores
                                with eval_mode(adapted.model):
                                    feats[key] = forward(adapted.model, adapted.params, qx,
                                                         head=False)            # [Q, D]
                            w, b = (adapted.params[n] for n in ("head.weight", "head.bias"))
                            logits = F.linear(feats[key], w, b)                 # [Q, C]
                        else:
                            logits = adapted(qx)                                # [Q, C]
                per[name]["accuracy"].append(float((logits.argmax(-1) == qy).float().mean()))
                per[name]["trainable"] = adapted.trainable
                per[name]["info"] = per[name]["info"] or _jsonable(adapted.info)
            done += 1
            if on_task is not None:
                on_task(per, done)
            bar.update(1)
    bar.close()
    results = {}
    for name, r in per.items():
        m, c = mean_ci(r["accuracy"])
        results[name] = {"approach": rows[name][0], "accuracy": {"mean": m, "ci95": c},
                         "trainable": r["trainable"],
                         "adapt_seconds": sum(r["adapt_seconds"]) / len(r["adapt_seconds"]),
                         "per_task": {"accuracy": r["accuracy"],
                                      "adapt_seconds": r["adapt_seconds"],
                                      "cpu_seconds": r["cpu_seconds"]},
                         "info": r["info"]}
    return results


def paired(results: dict, pairs) -> dict:
    """Paired accuracy differences ``a - b`` over the same held-out tasks.

    Two rows evaluated on the same tasks differ less from task to task than either varies,
    so the CI of the per-task difference is the test of "a beats b", tighter than comparing
    the two rows' own intervals.

    Returns:
        ``"a - b" -> {"mean", "ci95", "wins", "ties", "losses"}`` for each pair present.
    """
    from metaloop.evaluate import mean_ci

    out = {}
    for a, b in pairs:
        if a not in results or b not in results:
            continue
        xa, xb = (results[n]["per_task"]["accuracy"] for n in (a, b))
        d = [u - v for u, v in zip(xa, xb)]
        m, c = mean_ci(d)
        out[f"{a} - {b}"] = {"mean": m, "ci95": c, "wins": sum(x > 0 for x in d),
                             "ties": sum(x == 0 for x in d), "losses": sum(x < 0 for x in d)}
    return out


def paired_lines(diffs: dict) -> str:
    """One line per pair: difference in points ± 95% CI, and task wins / ties / losses."""
    return "\n".join(f"{k}: {100 * v['mean']:+.2f} ± "
                     f"{'n/a' if v['ci95'] is None else format(100 * v['ci95'], '.2f')} points "
                     f"(tasks won / tied / lost: {v['wins']} / {v['ties']} / {v['losses']})"
                     for k, v in diffs.items())


def _jsonable(info: dict) -> dict:
    return {k: v for k, v in info.items() if isinstance(v, (str, int, float, bool))}


def table(results: dict, trials: int | None = None) -> str:
    """approach | # | accuracy (%) mean ± 95% CI | trainable parameters | s / task.

    With ``trials`` (each task's queries, ways x queries), an accuracy whose ``mean ± ci95``
    would leave [0, 100]%, or whose tasks all scored 0 or 100%, shows the bounded interval
    its record carries, ``"100.00 (93.03 to 100.00)"`` (``metaloop.evaluate.records
    .ci95_fields``, as ``metaloop eval`` prints it); every task at 0 or 100% without
    ``trials``: ``± n/a``, never the t interval's ``± 0.00``."""
    from metaloop.evaluate.records import at_an_end, ci95_fields

    head = ["approach", "#", "accuracy %", "trainable", "s/task"]
    rows = [head]
    for name, r in results.items():
        a = r["accuracy"]
        per_task = [100 * v for v in r.get("per_task", {}).get("accuracy", [])]
        ends = ci95_fields(per_task, trials=trials * len(per_task) if trials else None) \
            if per_task else {}
        if ends:
            cell = f"{100 * a['mean']:.2f} ({ends['ci95_low']:.2f} to {ends['ci95_high']:.2f})"
        elif per_task and at_an_end(per_task):
            cell = format_mean_ci(a["mean"], None, ".2f", 100)      # ± 0 is no interval
        else:
            cell = format_mean_ci(a["mean"], a["ci95"], ".2f", 100)
        rows.append([name, str(r["approach"]), cell, f"{r['trainable']:,}",
                     f"{r['adapt_seconds']:.3f}"])
    return report.aligned(rows, right=(2, 3, 4))


def bar_chart(results: dict, path: Path, title: str) -> None:
    """Horizontal bars of accuracy with 95% CI error bars, one per approach, written to
    ``path`` whole or not at all (an interruption leaves any earlier file as it was).

    Raises:
        metaloop.train.checkpoint.WriteError: ``path`` could not be written (a full disk, a
            folder made read-only), naming it and why.
    """
    names = list(results)
    means = [100 * results[n]["accuracy"]["mean"] for n in names]
    cis = [100 * (results[n]["accuracy"]["ci95"] or 0.0) for n in names]   # one task: no bar
    colors = [f"C{results[n]['approach']}" for n in names]
    fig = report.figure((7, 0.45 * len(names) + 1.5))
    ax = fig.subplots()
    ax.barh(range(len(names)), means, xerr=cis, color=colors, capsize=3)
    ax.set_yticks(range(len(names)), [f"{n} ({results[n]['approach']})" for n in names])
    ax.invert_yaxis()
    lo = min(m - c for m, c in zip(means, cis))
    ax.set_xlim(max(0.0, math.floor(lo / 10) * 10 - 10), 100)
    ax.set_xlabel("held-out query accuracy (%), 95% CI")
    ax.set_title(title)
    ax.grid(axis="x", alpha=0.3)
    fig.tight_layout()
    report.save_figure(fig, path, 110)          # a rename: never half a PNG


# ----------------------------------------------------------------------------- records

RECORD_TABLE = "adaptation"
"""The docs' table (docs/results.md) that ``records`` writes rows of."""

RECORD_TABLE_META = "adaptation-meta-lora"
"""The docs' table of the records of a ``--meta`` run: meta-learned LoRA beside the rows it
is compared with, all of one run, on the same held-out tasks."""

FAMILY_LABELS = {"wordnet": "WordNet", "omniglot": "Omniglot", "fashion_mnist": "Fashion-MNIST"}


def _slug(text: str) -> str:
    """``text`` as a part of a file name: lower case, each run of other characters than
    letters and digits one ``_`` (``"meta-lora-fomaml inner"`` -> ``meta_lora_fomaml_inner``)."""
    return "_".join(re.findall(r"[a-z0-9]+", text.lower())) or "x"


def _record_setting(s: AdaptSettings) -> tuple[str, str]:
    """A run's part of its records' file names and row labels: the family (the user's data:
    the family and the file or folder's name), the model where it is not WordNet's default
    MiniLM (a folder or a Hugging Face name: its last part), the ways and the shots.
    ``("wordnet_5w1s", "WordNet 5-way 1-shot, MiniLM")``; ``--family table --data
    sentences.csv --model runs/bert``: ``("table_sentences_bert_5w1s", "table sentences.csv
    5-way 1-shot, bert")``."""
    if s.family in USER_FAMILIES:
        name = Path(str(s.data)).name
        stem, label = f"{s.family}_{_slug(Path(name).stem)}", f"{s.family} {name}"
    else:
        stem, label = s.family, FAMILY_LABELS.get(s.family, s.family)
    if s.family in TEXT_FAMILIES and s.model == "minilm":
        model = "MiniLM"
    else:
        model = Path(str(s.model)).name or str(s.model)
        stem += f"_{_slug(model)}"
    return (f"{stem}_{s.ways}w{s.shots}s",
            f"{label} {s.ways}-way {s.shots}-shot, {model}")


def record_path(folder, s: AdaptSettings, approach: str) -> Path:
    """Where ``records`` puts an approach's record in ``folder``:
    ``adaptation_<setting>_<approach>.json`` (``adaptation_wordnet_5w1s_lora.json``,
    ``adaptation_wordnet_5w5s_prompt_zero_shot.json``; see ``_record_setting``); a ``meta``
    run's records: ``adaptation_meta_lora_<setting>_<approach>.json``
    (``adaptation_meta_lora_wordnet_5w1s_meta_lora_fomaml_inner.json``), so that the
    records of a run with ``--meta`` and of one without never share a path."""
    stem, _ = _record_setting(s)
    prefix = "adaptation_meta_lora" if _meta_methods(s.meta) else "adaptation"
    return Path(folder) / f"{prefix}_{stem}_{_slug(approach)}.json"


def record_rows(s: AdaptSettings) -> list[str]:
    """The rows a run of ``s`` scores and ``records`` records, in the order of its results:
    the approaches (those of its family's kind), then each ``--meta`` learner's
    ``meta-lora-M``, ``meta-lora-M inner`` and ``lora inner-M`` (one for the learners whose
    inner loops are the same, see ``meta_strategies``), then the paired differences of a
    ``--meta`` run (``"meta-lora-M minus lora, paired"``: ``paired_row``), those whose two
    rows it scores."""
    kind = "text" if s.family in TEXT_FAMILIES else "image"
    names = _approach_names(s.approaches, kind)
    methods = _meta_methods(s.meta)
    for m in methods:
        names += [f"meta-lora-{m}", f"meta-lora-{m} inner"]
        if _inner_baseline(methods, m) not in names:
            names.append(_inner_baseline(methods, m))
    return names + [paired_row(a, b) for a, b in _meta_pairs(methods)
                    if a in names and b in names]


def paired_row(a: str, b: str) -> str:
    """The record name of the paired difference of rows ``a`` and ``b`` (``paired``'s
    ``"a - b"``): ``"a minus b, paired"``."""
    return f"{a} minus {b}, paired"


def _pair_of(name: str) -> tuple[str, str] | None:
    """``(a, b)`` of a ``paired_row`` name; None for a row's."""
    if not name.endswith(", paired") or " minus " not in name:
        return None
    a, _, b = name[:-len(", paired")].partition(" minus ")
    return a, b


def _row_method(name: str) -> tuple[str | None, bool]:
    """The ``--meta`` learner a row belongs to (None: an approach's row), and whether the
    row adapts a meta-learned start (``meta-lora-M``, ``meta-lora-M inner``) rather than the
    pretrained one (``lora inner-M``)."""
    if name.startswith("meta-lora-"):
        return name[len("meta-lora-"):].removesuffix(" inner"), True
    if name.startswith("lora inner-"):
        return name[len("lora inner-"):], False
    return None, False


def check_records(folder, s: AdaptSettings,
                  read_command: Callable[[str], AdaptSettings] | None = None) -> list[Path]:
    """Before any work: the record of each approach ``s`` runs can be written in ``folder``
    (``metaloop.evaluate.records.check_record_path``: a folder that can be made and written,
    and no file there that is not a record), and replaces no record of another setting
    there (``measured_setting``; a record without ``setting`` is told by
    ``read_command(its command)``, the settings of that command line, which the command
    line gives: ``metaloop.cli.adapt.command_settings``). Returns the paths, in approach
    order.

    A ``--meta`` run's rows (``record_rows``) are checked alike, under their own names
    (``record_path``). The model's default LoRA targets are told from its config
    (``default_lora_targets``), once, and only where a record is already there.

    Raises:
        ValueError: naming the path and the problem, or each setting in which the record
            there differs (its value first).
    """
    from metaloop.evaluate.records import check_record_path

    if s.family not in FAMILIES:
        raise ValueError(f"unknown family {s.family!r}; choose one of {list(FAMILIES)}")
    folder = Path(folder)
    if folder.exists() and not folder.is_dir():
        raise ValueError(f"--record {folder} is a file: it names a folder for the records")
    names = record_rows(s)
    paths = [check_record_path(record_path(folder, s, name)) for name in names]
    targets = _Targets(s)
    for path, name in zip(paths, names):
        _check_same_setting(path, s, name, read_command, targets)
    return paths


class _Targets:
    """``default_lora_targets(s)``, told on first use and kept (a model's config is read
    once per check)."""

    value: list[str] | None

    def __init__(self, s: AdaptSettings):
        self.s, self.value, self.told = s, None, False

    def __call__(self) -> list[str] | None:
        if not self.told:
            self.value, self.told = default_lora_targets(self.s), True
        return self.value


def measured_setting(s: AdaptSettings, approach: str, *,
                     lora_targets: Callable[[], list[str] | None] | None = None) -> dict:
    """What an approach's record measured (its ``setting``): the model (a local folder as
    its absolute path), family, ways, shots, queries, held-out tasks and their seed (which
    picks the tasks: records of one seed pair task by task), and the options the approach
    reads: ``--steps`` (approaches 2-3 and ``meta-lora-M``), ``--lora-r`` and
    ``--lora-targets`` (lora and the ``--meta`` rows; the targets the run adapts, a sorted
    list, whether given or the model's default: ``default_lora_targets(s)``, which
    ``lora_targets()`` gives where the caller has it, None where it cannot be told),
    ``--prompt-tokens`` (soft-prompt), ``--max-length`` (text models), and the user's data
    (``--data`` as an absolute path, ``--drop-small``, ``skip_corrupt: true`` where
    ``--skip-corrupt`` left an image folder's unreadable images out, and the table's columns
    and delimiter, and ``quoting`` where it is not ``"csv"``). Every record of a ``--meta``
    run (``record_rows``) also holds the meta-training: ``--meta`` (the learners, sorted),
    ``--meta-iterations``, ``--meta-batch`` and ``--meta-shots`` (each learner's, its
    default filled in), with the
    user's data the class split (``--split-fractions``, ``--split-seed``), and a
    record of a run without ``--meta`` none of them, so that neither replaces the other.
    ``--root`` (where a family's data lies), ``--meta-dir``, ``--threads``, ``--out`` and
    ``--approaches`` are not part of it: they change no accuracy of the approach. A
    ``paired_row`` holds what either of its two rows reads."""
    pair = _pair_of(approach)
    if pair is not None:         # a paired difference: what both of its rows read
        return {**measured_setting(s, pair[1], lora_targets=lora_targets),
                **measured_setting(s, pair[0], lora_targets=lora_targets)}
    out = {"model": _model_identity(s.model), "family": s.family, "ways": s.ways,
           "shots": s.shots, "queries": s.queries, "tasks": s.tasks, "seed": s.seed}
    method, learned = _row_method(approach)
    if approach in STEPPED or (learned and not approach.endswith(" inner")):
        out["steps"] = s.steps
    if approach == "lora" or method is not None:
        out["lora_r"] = s.lora_r
        out["lora_targets"] = (sorted(set(_lora_targets(s, "text")))
                               if s.lora_targets is not None
                               else (lora_targets or _Targets(s))())
    methods = _meta_methods(s.meta)
    if methods:
        out.update(meta=sorted(methods), meta_iterations=s.meta_iterations,
                   meta_batch=s.meta_batch,
                   meta_shots={m: s.meta_shots or META_SHOTS[m] for m in sorted(methods)})
        if s.family in USER_FAMILIES:    # the class split picks every row's held-out classes
            out.update(split_fractions=list(parse_fractions(s.split_fractions)),
                       split_seed=s.split_seed)
    if approach == "soft-prompt":
        out["prompt_tokens"] = s.prompt_tokens
    if s.family in TEXT_FAMILIES:
        out["max_length"] = s.max_length
    if s.family in USER_FAMILIES:
        out["data"] = str(Path(str(s.data)).expanduser().resolve())
        out["drop_small"] = s.drop_small
    if s.family == "folder" and s.skip_corrupt:    # (absent: a record of a run without it)
        out["skip_corrupt"] = True
    if s.family == "folder" and s.class_depth is not None:   # (absent: the flag left out)
        out["class_depth"] = s.class_depth
    if s.family == "table":
        out.update(text_column=s.text_column, label_column=s.label_column,
                   delimiter=s.delimiter)
        if s.quoting != "csv":       # (absent: a record of a table read as CSV)
            out["quoting"] = s.quoting
    return out


_PATHS = ("model", "data")       # the settings that name a local file or folder


def _portable(setting: dict) -> dict:
    """A record's ``setting`` as written: a model folder or data file inside the working
    folder as its path relative to it (a record committed with a project names no folder of
    the machine that measured it); ``_resolved`` reads it back."""
    out, here = dict(setting), Path.cwd().resolve()
    for key in _PATHS:
        value = out.get(key)
        if isinstance(value, str) and Path(value).is_absolute():
            try:
                out[key] = Path(value).relative_to(here).as_posix()
            except ValueError:                      # (outside the working folder: as it is)
                pass
    return out


def _resolved(setting: dict, base: Path | None = None) -> dict:
    """A record's stored ``setting`` as ``measured_setting`` gives it here: a relative model
    folder or data file (``_portable``) that exists from the folder the record was written
    from (``base``, ``_record_setting.written_from``) as its absolute path. Where that folder
    cannot be told (``base`` None), the path is read from the working folder; one that is not
    there (a Hugging Face model's name, say) stays as it is, never read from another folder,
    where a file of the same name may be another one."""
    out = dict(setting)
    for key in _PATHS:
        value = out.get(key)
        if not isinstance(value, str) or not value or Path(value).is_absolute():
            continue
        there = Path(value).expanduser() if base is None or value.startswith("~") \
            else base / value
        if there.exists():
            out[key] = str(there.resolve())
    return out


def _check_same_setting(path: Path, s: AdaptSettings, approach: str,
                        read_command: Callable[[str], AdaptSettings] | None,
                        targets: _Targets | None = None) -> None:
    """ValueError naming each setting (``measured_setting``) in which the record already at
    ``path`` (its ``setting``, else read from its ``command``) was measured otherwise: this
    approach's record would replace it. No record there, or one of the same setting, passes
    (``_record_setting.check_same_setting``). A record's ``lora_targets`` of None (the
    model's default, as records stored it before they stored the targets themselves) is
    the default of this run's model where the record's model is this run's."""
    if not old_record(path):
        return
    targets = targets or _Targets(s)
    mine = measured_setting(s, approach, lora_targets=targets)

    def theirs(old: dict) -> dict:
        base = written_from(path, old)
        if isinstance(old.get("setting"), dict):
            setting = _resolved(old["setting"], base)
            if ("skip_corrupt" not in setting and setting.get("family") == "folder"
                    and "--skip-corrupt" in str(old.get("command", "")).split()):
                setting["skip_corrupt"] = True      # stored before the setting held it
        elif read_command is None:
            raise ValueError("it has no setting, and no reader of its command was given")
        else:
            other = read_command(old["command"])
            # its relative paths read as a setting's are: from the folder it was written from
            given = {k: v for k in _PATHS if isinstance(v := getattr(other, k), str) and v
                     and not v.startswith("~") and not Path(v).is_absolute()} \
                if base is not None else {}
            given = _resolved(given, base)
            same = given.get("model", _model_identity(other.model)) == mine["model"] and \
                other.family == s.family
            setting = measured_setting(other, approach,
                                       lora_targets=targets if same else None)
            setting.update({k: v for k, v in given.items() if k in setting})
        if setting.get("lora_targets", 0) is None and setting.get("model") == mine["model"]:
            setting["lora_targets"] = targets()
        return setting

    check_same_setting(path, mine, theirs, approach)


def _train_commands(command: str) -> list[dict]:
    """The ``metaloop train`` commands of a command line (those before ``&&``): each one's
    ``--config``, ``--out`` and ``--seed`` as written (absent ones left out)."""
    import shlex
    try:
        words = shlex.split(command)
    except ValueError:                   # (unbalanced quotes: no command to read)
        return []
    out, part = [], []
    for word in [*words, "&&"]:
        if word != "&&":
            part.append(word)
            continue
        if "train" in part and any(w == "metaloop" or w.endswith("metaloop") for w in part):
            out.append({key: value for key in ("config", "out", "seed")
                        if (value := flag_value(part, key)) is not None})
        part = []
    return out


def _same_folder(a: str | Path, b: str | Path) -> bool:
    try:
        return Path(a).expanduser().resolve() == Path(b).expanduser().resolve()
    except (OSError, RuntimeError):
        return False


def _trained_with(config_path: str, stored: dict) -> dict | None:
    """The config of the file ``config_path`` (a file here), loaded, where it is the config
    a run whose ``state.json`` holds ``stored`` was trained with: the same whole config but
    for ``train.seed`` (``metaloop train --seed``) and ``family.root`` (where the data was
    read: ``--data-root``); else None."""
    import copy
    import warnings

    from metaloop import config as _config
    path = Path(config_path).expanduser()
    if not path.is_file():
        return None
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            loaded = _config.load(path)
    except (ValueError, OSError):
        return None
    cfg, stored = copy.deepcopy(loaded), copy.deepcopy(stored)
    for section, key in (("train", "seed"), ("family", "root")):
        if isinstance(cfg.get(section), dict) and isinstance(stored.get(section), dict):
            cfg[section].pop(key, None)
            stored[section].pop(key, None)
    return loaded if cfg == stored else None


def _trained_run(s: AdaptSettings, command: str, older: Sequence[str] = ()) -> dict | None:
    """The ``metaloop train`` run ``--model`` names, as its records report it; None where
    ``--model`` is no metaloop run (a Hugging Face encoder). ``cpu_seconds`` and
    ``iterations`` are those its checkpoint's ``state.json`` holds (every session of the
    run; ``cpu_seconds`` None for a run trained before metaloop measured it); ``config`` the
    config file it was trained with, as a path relative to the working folder where it is
    inside it, or None where none can be told; ``train`` the ``metaloop train`` command that
    trains it, to write before the adapt command (None for a ``ckpt-*`` folder or without
    ``config``).

    A run folder stores a copy of its config, not the file's path, so ``config`` is the
    ``--config`` of a ``metaloop train ... --out <the model>`` in ``command`` or in
    ``older`` (the commands of the records it replaces), or else a ``configs/*.toml``
    of the working folder (the one named as the run folder first): in each case a file that
    exists and whose config is the copy the run stores (``_trained_with``).
    """
    from metaloop.runs import adapt_meta_run
    from metaloop.train.checkpoint import latest_checkpoint, read_state

    model = Path(s.model).expanduser()
    if not _is_checkpoint(model):
        return None
    run_dir = (model / "LATEST").is_file()
    try:
        ckpt = cast(Path, latest_checkpoint(model)) if run_dir else model
        state = read_state(ckpt / "state.json")
    except (OSError, ValueError, TypeError):
        return None
    if not isinstance(state, dict):
        return None
    stored = state.get("config")
    if not isinstance(stored, dict) or adapt_meta_run(stored):
        return None
    cpu = state.get("cpu_seconds")
    info: dict[str, Any] = {
        "cpu_seconds": float(cpu) if isinstance(cpu, (int, float)) else None,
        "iterations": state.get("iteration"), "config": None, "train": None}
    here = Path.cwd().resolve()

    def rel(path: Path) -> str:
        full = path.expanduser().resolve()
        try:
            return full.relative_to(here).as_posix()
        except ValueError:
            return str(full)

    named = [c for text in (command, *older) for c in _train_commands(text)]
    candidates = [c["config"] for c in named
                  if "config" in c and "out" in c and _same_folder(c["out"], model)]
    configs = here / "configs"
    if configs.is_dir():
        found = sorted(configs.glob("*.toml"), key=lambda p: (p.stem != model.name, p.name))
        candidates += [str(p) for p in found]
    loaded = None
    for cand in dict.fromkeys(candidates):
        loaded = _trained_with(cand, stored)
        if loaded is not None:
            info["config"] = rel(Path(cand))
            break
    if loaded is not None and run_dir:     # (a ckpt-* folder: no command ends there)
        import shlex
        threads = state.get("threads")
        words = ["metaloop"] + (["--threads", str(threads)]
                                if isinstance(threads, int) and threads > 0 else [])
        words += ["train", "--config", info["config"], "--out", rel(model)]
        written = loaded.get("train", {}).get("seed")
        seed = (stored.get("train") or {}).get("seed")
        if seed is not None and seed != written:               # metaloop train --seed
            words += ["--seed", str(seed)]
        if state.get("precision") not in (None, "float32"):
            words += ["--precision", str(state["precision"])]
        info["train"] = " ".join(shlex.quote(w) for w in words)
    return info


def records(results: dict, folder, s: AdaptSettings, *, command: str,
            read_command: Callable[[str], AdaptSettings] | None = None) -> dict[Path, dict]:
    """One result record per approach of a finished run (``run``'s results, or its
    results.json read back), keyed by its path in ``folder`` (``record_path``).

    Each record is a row of table ``RECORD_TABLE``, labelled ``"<setting>: <approach>"``
    (``"WordNet 5-way 1-shot, MiniLM: lora"``): query accuracy in %, its mean and ``ci95``
    (Student's ``t_975(n - 1) * sd / sqrt(n)``, null for one task) over the ``n`` held-out
    tasks (with ``ci95_low``, ``ci95_high`` and ``ci95_range`` where ``mean ± ci95`` would
    leave [0, 100]%: ``metaloop.evaluate.records.ci95_fields``), each task's accuracy in
    ``per_task`` (in task order: records of runs with the
    same ``seed``, family, ways, shots and queries pair task by task), ``seed``, the
    trainable parameters, the mean wall seconds of adaptation per task and a note with them
    and the mean CPU seconds (``"75,653 trainable, 3.038 s/task (2.013 CPU-s)"``: on a
    machine shared with other work, the wall seconds grow and the CPU seconds do not).
    The budget is the CPU seconds of the approach's adaptation over all tasks, and the
    optimiser steps of the approaches that take ``--steps``. Device, torch and date (UTC)
    are as ``metaloop eval --record`` gives them; ``setting`` is ``measured_setting``. An
    earlier record at the path keeps its ``row``, ``order`` and ``published``, and one of
    another setting is refused (``check_records``); a new record is ordered after the
    records of its table already in ``folder``, in approach order.

    A ``meta`` run's records (every row of ``record_rows``, at ``record_path``'s
    ``adaptation_meta_lora_...`` names) are rows of table ``RECORD_TABLE_META``, with the
    same fields. The budget of a row that adapts a meta-learned start (``meta-lora-M``,
    ``meta-lora-M inner``) adds the meta-training's CPU seconds (``results["meta"][M]``,
    all of that run's, resumes included) to its adaptation's, and its iterations are the
    meta-training's outer steps (``--meta-iterations``); ``lora inner-M``'s iterations
    are its inner loop's steps. Their note names the meta-training. Each of the run's
    ``paired`` differences is a record too (``paired_row``: ``"meta-lora-M minus lora,
    paired"``, metric ``"accuracy difference (points)"``): ``per_task`` holds each task's
    difference in points, the CI is the paired one, and the budget is the meta-training's
    and both rows' adaptation.

    Where ``--model`` is a ``metaloop train`` run (``_trained_run``), its records name the
    config it was trained with (``config``; null where none can be told), their command
    trains it first (``metaloop train --config C --out <the model> && metaloop adapt ...``,
    as the record's command reruns everything it measured), and every row's budget adds
    the training's CPU seconds (from its checkpoint's ``state.json``) to the adaptation's;
    its iterations are the training's (a ``meta-lora-M`` row's stay the meta-training's).
    Their note says so, and gives the adaptation's steps per task.

    Args:
        results: the run's results (``approaches`` with their ``per_task`` values).
        folder: where the records go. s: the run's settings. command: the command line.

    Raises:
        metaloop.evaluate.records.RecordError: a record that would not be valid.
        ValueError: a record of another setting at a path, naming the differences.
    """
    import datetime

    from metaloop.evaluate.records import ci95_fields, cpu_device, validate_record
    from metaloop.evaluate.stats import ci95

    _, setting = _record_setting(s)
    table_name = RECORD_TABLE_META if _meta_methods(s.meta) else RECORD_TABLE
    targets = _Targets(s)
    older = [c for name in [*results["approaches"], *(paired_row(*k.split(" - "))
                                                      for k in results.get("paired", {}))]
             if isinstance(c := old_record(record_path(folder, s, name)).get("command"), str)]
    trained = _trained_run(s, command, older)
    train_cpu, trained_note = 0.0, ""
    if trained is not None:
        train_cpu = trained["cpu_seconds"] or 0.0
        if trained["train"] is not None and not any(
                _same_folder(c.get("out", ""), s.model) for c in _train_commands(command)):
            command = f"{trained['train']} && {command}"
        trained_note = (f"; body trained by metaloop train"
                        f"{' --config ' + trained['config'] if trained['config'] else ''}: "
                        f"{trained['iterations']} iterations, "
                        + (f"{train_cpu:.1f} CPU-s in the budget"
                           if trained["cpu_seconds"] is not None
                           else "CPU seconds not recorded (not in the budget)"))
    common = {
        "table": table_name, "metric": "accuracy (%)", "unit": "%",
        "config": trained["config"] if trained is not None else None,
        "published": None, "command": command, "device": cpu_device(),
        "torch": torch.__version__.split("+")[0],
        "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d"),
        "seed": s.seed}
    last = max((r["order"] for r in map(old_record, Path(folder).glob("*.json"))
                if r.get("table") == table_name and isinstance(r.get("order"), (int, float))
                and not isinstance(r.get("order"), bool)), default=0)
    out = {}

    def place(path: Path, rec: dict) -> None:        # keeps an earlier record's place
        nonlocal last
        old = old_record(path)
        if "order" not in old:
            last += 1
        rec.update({"order": last, **{k: old[k] for k in ("row", "order", "published")
                                      if k in old}})
        out[path] = validate_record(rec, where=str(path))

    for name, r in results["approaches"].items():
        path = record_path(folder, s, name)
        _check_same_setting(path, s, name, read_command, targets)
        acc = [round(100 * a, 4) for a in r["per_task"]["accuracy"]]
        ci = ci95(acc)
        cpu = r["per_task"].get("cpu_seconds", r["per_task"]["adapt_seconds"])
        seconds = round(r["adapt_seconds"], 3)
        method, learned = _row_method(name)
        meta_cpu = float(results["meta"][method]["cpu_seconds"]) if learned else 0.0
        budget = {"cpu_seconds": round(train_cpu + meta_cpu + math.fsum(cpu), 1)}
        if learned:
            budget["iterations"] = s.meta_iterations
        elif trained is not None and isinstance(trained["iterations"], int):
            budget["iterations"] = trained["iterations"]
        elif method is not None:
            budget["iterations"] = META_INNER[method]["inner_steps"]
        elif name in STEPPED:
            budget["iterations"] = s.steps
        note = (f"{r['trainable']:,} trainable, {seconds:.3f} s/task "
                f"({math.fsum(cpu) / len(cpu):.3f} CPU-s)")
        if learned:
            note += (f"; meta-trained by {method}: {s.meta_iterations} outer steps of "
                     f"{s.meta_batch} tasks, {meta_cpu:.1f} CPU-s")
        if trained is not None:
            note += trained_note
            if name in STEPPED or (learned and not name.endswith(" inner")):
                note += f"; {s.steps} adaptation steps per task"
            elif method is not None:
                note += f"; {META_INNER[method]['inner_steps']} adaptation steps per task"
        rec = {**common, "row": f"{setting}: {name}", "approach": name,
               "setting": _portable(measured_setting(s, name, lora_targets=targets)),
               "mean": round(math.fsum(acc) / len(acc), 4),
               "ci95": None if ci is None else round(ci, 4), "n": len(acc), "per_task": acc,
               "budget": budget, "trainable": r["trainable"], "seconds_per_task": seconds,
               # where mean ± ci95 leaves [0, 100] or every task scored 0 or 100%: bounded
               # by the queries scored (each task's ways x queries)
               "note": note, "trials": len(acc) * s.ways * s.queries,
               **ci95_fields(acc, trials=len(acc) * s.ways * s.queries)}
        place(path, rec)
    for key, d in results.get("paired", {}).items():
        a, b = key.split(" - ")
        name = paired_row(a, b)
        path = record_path(folder, s, name)
        _check_same_setting(path, s, name, read_command, targets)
        rows = results["approaches"][a]["per_task"], results["approaches"][b]["per_task"]
        diff = [round(100 * (x - y), 4) for x, y in zip(rows[0]["accuracy"],
                                                         rows[1]["accuracy"])]
        ci = ci95(diff)
        cpu = math.fsum(math.fsum(r.get("cpu_seconds", r["adapt_seconds"])) for r in rows)
        method = _row_method(a)[0]
        rec = {**common, "metric": "accuracy difference (points)",
               "row": f"{setting}: {name}", "approach": name,
               "setting": _portable(measured_setting(s, name, lora_targets=targets)),
               "mean": round(math.fsum(diff) / len(diff), 4), "digits": 2,
               "ci95": None if ci is None else round(ci, 4), "n": len(diff),
               "per_task": diff,
               "budget": {"cpu_seconds": round(train_cpu
                                               + float(results["meta"][method]["cpu_seconds"])
                                               + cpu, 1),
                          "iterations": s.meta_iterations},
               "note": f"{a} minus {b} on the same tasks (points); tasks won / tied / lost: "
                       f"{d['wins']} / {d['ties']} / {d['losses']}{trained_note}"}
        del rec["unit"]
        place(path, rec)
    return out


class _TableOptions(TypedDict):
    """How ``table_families`` reads the table: the keyword arguments of ``TextTable`` other
    than the task sizes and the split."""

    text_column: str
    label_column: str
    delimiter: str | None
    quoting: str
    fractions: Sequence[float]
    split_seed: int
    drop_small: bool
    tokenizer: Callable | None


def table_families(path: str | os.PathLike, *, ways: int, shots: int, queries: int,
                   meta_shots: Sequence[int] = (), tokenizer: Callable | None = None,
                   text_column: str = "text", label_column: str = "label",
                   delimiter: str | None = None, quoting: str = "csv",
                   fractions: Sequence[float] = (0.7, 0.1, 0.2),
                   split_seed: int = 0, drop_small: bool = False
                   ) -> tuple[TextTable, dict[int, TextTable]]:
    """The held-out family and the meta-training families of a text table.

    Args:
        path: a CSV, TSV or JSONL table (see ``metaloop.tasks.text_table``).
        ways: classes per held-out task.
        shots: examples per class in a held-out task's support set.
        queries: examples per class in a held-out task's query set.
        meta_shots: the support sizes the meta-learners train with (one family each, on the
            train classes, with ``queries`` queries); empty: no meta-training, and every
            class is held out.
        tokenizer: ``texts -> [N, L]`` token ids (``TextEncoder.tokenize``), or None.
        text_column: the table's text column.
        label_column: the table's label column.
        delimiter: the field separator (None: by extension).
        quoting: how the table's quotes are read: ``"csv"`` or ``"none"`` (as written, one
            row per line; ``TextTable``).
        fractions: the class split ``(train, val, test)`` used with meta-training.
        split_seed: the seed of that split.
        drop_small: drop classes with fewer texts than a family's ``shots + queries``
            (``family.dropped`` names them) instead of raising.

    Returns:
        ``(heldout, {shots: train family})``.

    Raises:
        ValueError: naming the file: any error of ``TextTable`` (an unreadable table, missing
            columns, empty labels or texts, too few classes in a split, small classes).
    """
    kw: _TableOptions = dict(text_column=text_column, label_column=label_column,
                             delimiter=delimiter, quoting=quoting, fractions=fractions,
                             split_seed=split_seed,
                             drop_small=drop_small, tokenizer=tokenizer)
    meta = sorted(set(meta_shots))
    heldout = TextTable(path, ways=ways, shots=shots, queries=queries,
                        split="test" if meta else "all", **kw)
    train: dict[int, TextTable] = {}
    for s in meta:
        try:
            train[s] = (next(iter(train.values())).with_shots(s, queries) if train else
                        TextTable(path, ways=ways, shots=s, queries=queries, split="train",
                                  **kw))
        except SmallClassesError as e:      # the same error, known as a meta-training one's
            raise _MetaSmallClassesError(e.problem, e.advice, e.shots) from None
    return heldout, train


class _MetaSmallClassesError(SmallClassesError):
    """The ``SmallClassesError`` of a meta-training family of ``table_families``: its
    message, advice and shots those of the ``TextTable`` error it stands for."""


def table_summary(heldout: TextTable, train: dict[int, TextTable]) -> dict:
    """What ``results.json`` records about the table: the file, its columns and quoting, the
    held-out and meta-training classes, the classes dropped as too small, and the split."""
    first = next(iter(train.values()), None)
    dropped = sorted(set(heldout.dropped).union(*(f.dropped for f in train.values())))
    return {"data": str(heldout.path), "text_column": heldout.text_column,
            "label_column": heldout.label_column, "quoting": heldout.quoting,
            "heldout_split": heldout.split,
            "heldout_classes": heldout.class_names,
            "train_classes": first.class_names if first is not None else [],
            "dropped_classes": dropped, "fractions": list(heldout.fractions),
            "split_seed": heldout.split_seed, "texts": len(heldout.texts)}


def describe(heldout: TextTable, train: dict[int, TextTable]) -> str:
    """Lines for the user: which classes are held out and which meta-train, what was
    dropped, and how many rows repeat an earlier one (read once)."""
    where = ("every class (no meta-training)" if heldout.split == "all"
             else f"split {heldout.split!r}")
    lines = [f"{heldout.path}: held-out classes, {where}: {heldout.num_classes} "
             f"({_listed(heldout.class_names)}), {len(heldout.texts)} texts"]
    first = next(iter(train.values()), None)
    if first is not None:
        lines.append(f"meta-training classes: {first.num_classes} "
                     f"({_listed(first.class_names)})")
    summary = table_summary(heldout, train)
    if summary["dropped_classes"]:
        d = summary["dropped_classes"]
        lines.append(f"dropped {len(d)} class(es) with too few texts: {_listed(d)}")
    if heldout.repeated:
        lines.append(f"{heldout.repeated} row(s) repeat an earlier row's text (up to case "
                     f"and spacing) and label: "
                     f"each text is read once")
    return "\n".join(lines)


def _texts_cut(model, max_length: int, heldout: TextTable, train: dict[int, TextTable]
               ) -> tuple[int, int]:
    """How many texts of the held-out and meta-training classes have more than
    ``max_length`` tokens (the tokenizer's special tokens included), of how many: the
    encoder reads only their first ``max_length``."""
    first = next(iter(train.values()), None)
    texts = heldout.texts + (first.texts if first is not None else [])
    cut = 0
    for i in range(0, len(texts), 1024):
        ids = model.tokenizer(texts[i:i + 1024], truncation=True,
                              max_length=max_length + 1)["input_ids"]
        cut += sum(len(t) > max_length for t in ids)
    return cut, len(texts)


def _listed(names: Sequence[str], limit: int = 12) -> str:
    """The first ``limit`` names, comma-separated, and " ..." when there are more."""
    return ", ".join(names[:limit]) + (" ..." if len(names) > limit else "")


def parse_fractions(text: str) -> tuple[float, float, float]:
    """``"0.7,0.1,0.2"`` -> ``(0.7, 0.1, 0.2)``: ``--split-fractions`` (train, val, test).

    Raises:
        ValueError: naming the text, where it is not three comma-separated numbers, one of
            them is negative, infinite or NaN, or they do not sum to 1 (within 1e-6).
    """
    try:
        parts = tuple(float(p) for p in text.split(","))
    except ValueError:
        parts = ()
    if (len(parts) != 3 or not all(math.isfinite(p) and p >= 0 for p in parts)
            or abs(sum(parts) - 1.0) > 1e-6):
        raise ValueError(f"--split-fractions must be three numbers >= 0 (train,val,test) "
                         f"summing to 1, got {text!r}")
    return parts

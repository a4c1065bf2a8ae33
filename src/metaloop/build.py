"""Build the task families, models and learners a validated config describes.

``build_family`` / ``eval_family`` / ``training_family`` give the meta-training, held-out and
augmented families of a config, ``build_model`` the network, ``build_learner`` the learner of
its ``[method]`` section around that network; ``resolve_split`` writes a folder's class split
into the config so a run stores exactly which classes it trained on.
"""

from __future__ import annotations

import functools

import torch

from metaloop import config as _config
from metaloop import meta, models, tasks
from metaloop.config import FAMILIES, METHODS, MODELS
from metaloop.data.folder import CacheWriteError, UnreadableImagesError
from metaloop.tasks.episodes import SmallClassesError

__all__ = ["batching_on", "build_family", "build_learner", "build_model", "check_eval_shifts",
           "data_fingerprint", "eval_family", "resolve_split", "training_family", "user_family"]


def _choice(kind: str, value: str, options) -> str:
    if value not in options:
        raise ValueError(f"unknown {kind} {value!r}; choose one of {list(options)}")
    return value


def build_family(fcfg: dict, split: str | None = None, shots: int = 0, queries: int = 0,
                 progress=None, ways_key: str = "family.ways"):
    """A task family from the [family] section (split/shots/queries override it).

    Args:
        fcfg: the validated config's ``[family]`` section (``name``, ``ways``, ``shots``,
            ``queries``, ``split``, ``root`` and the keys of that family).
        split: the class split to sample from: ``"train"``, ``"val"`` or ``"test"`` (Omniglot
            also ``"trainval"``, ``"background"``, ``"evaluation"``; Fashion-MNIST: classes
            0-4 for ``"train"``, 5-9 for any other); None: ``fcfg["split"]``.
        shots: support examples per class; 0: ``fcfg["shots"]``.
        queries: query examples per class; 0: ``fcfg["queries"]``.
        progress: called as ``progress(n)`` with how many images a folder family has
            decoded so far, while it decodes; None: not told.
        ways_key: the config key that set ``fcfg["ways"]``, which an error names (see
            ``user_family``).
    """
    name = _choice("family", fcfg["name"], FAMILIES)
    shots, queries = shots or fcfg["shots"], queries or fcfg["queries"]
    split = split or fcfg["split"]
    if name == "sinusoid":
        return tasks.Sinusoid(shots, queries)
    if name in _config.USER_FAMILIES:
        return user_family(fcfg, split, shots, queries, progress, ways_key=ways_key)
    root = fcfg["root"] or None
    if name == "omniglot":
        return tasks.Omniglot(root, split=split, ways=fcfg["ways"], shots=shots,
                              queries=queries, image_size=fcfg["image_size"],
                              within_alphabet=fcfg.get("within_alphabet", 0.0),
                              rotations=fcfg.get("rotations", False),
                              reflections=fcfg.get("reflections", False),
                              drawers=fcfg.get("drawers", "any"))
    classes = range(0, 5) if split == "train" else range(5, 10)
    return tasks.FashionMNIST(root, classes=classes, ways=fcfg["ways"], shots=shots,
                              queries=queries)


def build_family_verbose(fcfg: dict, split: str | None = None, shots: int = 0,
                         queries: int = 0, show: bool = True, progress: bool = True):
    """``build_family`` for the CLI: a progress bar while a folder decodes, then one line on
    stderr saying what was read, ignored, skipped and dropped (user data only)."""
    import sys

    from tqdm.auto import tqdm

    from metaloop._progress import tqdm_defaults

    bar = None

    def tick(n: int) -> None:
        nonlocal bar
        if bar is None:
            bar = tqdm(desc="decoding images (once, into the cache)", unit="img",
                       disable=not (show and progress), leave=False, **tqdm_defaults())
        bar.update(n - bar.n)

    try:
        family = build_family(fcfg, split, shots, queries, progress=tick)
    finally:
        if bar is not None:
            bar.refresh()              # the count reached: tqdm redraws at most every 0.1 s
            bar.close()
    if show and fcfg["name"] in _config.USER_FAMILIES:
        print(f"{fcfg['name']} {fcfg['root']} ({split or fcfg['split']}): {family.describe()}",
              file=sys.stderr)
    return family


def _split_args(fcfg: dict, split: str) -> dict:
    """The class-split keyword arguments of ``Episodes.from_folder`` / ``from_tensors``: the
    resolved ``*_classes`` lists when the config has them, else fractions or split files."""
    lists = {s: fcfg[f"{s}_classes"] for s in _config.USER_SPLITS}
    if any(lists.values()):
        return {"classes": lists[split]}
    files = dict(zip(_config.USER_SPLITS, fcfg["split_files"])) or None
    return {"split": split, "fractions": tuple(fcfg["split_fractions"]),
            "seed": fcfg["split_seed"], "split_files": files}


def user_family(fcfg: dict, split: str, shots: int, queries: int, progress=None,
                ways_key: str = "family.ways"):
    """An ``Episodes`` family over the user's folder or tensor file, or a ``TextTable``
    (one class split).

    Args:
        fcfg: the ``[family]`` section of a ``folder``, ``tensors`` or ``table`` family
            (``root``, ``ways``, the class split: ``{train,val,test}_classes`` lists, else
            ``split_fractions`` and ``split_seed``, or ``split_files``).
        split: the class split: ``"train"``, ``"val"`` or ``"test"``.
        shots: support examples per class.
        queries: query examples per class.
        progress: called as ``progress(n)`` with how many images a folder has decoded so
            far, while it decodes into its cache; None: not told.
        ways_key: the config key that set ``fcfg["ways"]``, which an error names
            (``"eval.ways"`` for held-out tasks of another number of ways).

    Raises:
        ValueError: more ways than the split has classes, unreadable images (naming
            ``family.skip_corrupt``), a cache that cannot be written, classes too small
            (``SmallClassesError``, naming ``family.drop_small``), a relative
            ``family.root`` not found, classes the config lists that the data no longer
            has, or any other error of ``Episodes`` / ``TextTable``.
    """
    split_args = _split_args(fcfg, split)
    have = split_args.get("classes")
    if have is not None and len(have) < fcfg["ways"]:
        how = ("family.split_files" if fcfg["split_files"] else
               f"family.split_fractions = {fcfg['split_fractions']} (train, val, test)")
        kind = "TextTable" if fcfg["name"] == "table" else "Episodes"
        lower = "eval.ways (--ways in metaloop eval)" if ways_key == "eval.ways" else \
            f"{ways_key} (eval: --ways)"
        raise ValueError(f"{kind} ways={fcfg['ways']} exceeds the {len(have)} "
                         f"classes of the {split!r} split (family.{split}_classes; by {how} "
                         f"unless the config lists them): lower {lower}, give that split "
                         f"more classes (family.split_fractions or family.split_files), or "
                         f"bring more classes")
    try:
        if fcfg["name"] == "table":
            return _text_table(fcfg, split, shots, queries)
        common = dict(ways=fcfg["ways"], shots=shots, queries=queries,
                      drop_small=fcfg["drop_small"], **split_args)
        if fcfg["name"] == "tensors":
            return tasks.Episodes.from_tensors(fcfg["root"], **common)
        return tasks.Episodes.from_folder(
            fcfg["root"], image_size=fcfg["image_size"], channels=fcfg["channels"],
            invert=fcfg["invert"], class_depth=fcfg["class_depth"],
            skip_corrupt=fcfg["skip_corrupt"], progress=progress, **common)
    except UnreadableImagesError as e:         # the config's way to skip them, not the API's
        raise ValueError(f"{e.problem}; to leave unreadable files out instead, set "
                         f"family.skip_corrupt = true") from e
    except CacheWriteError as e:               # a config has no cache_dir to pass
        raise e.without_cache_dir() from e
    except SmallClassesError as e:             # the config's keys, not the API's arguments
        raise SmallClassesError(e.problem, SMALL_ADVICE, shots=e.shots) from e
    except ValueError as e:
        moved = _relative_root_missing(fcfg["root"])
        if moved:
            raise ValueError(f"{e}: {moved}") from e
        if have is None:
            raise
        gone = _classes_gone(fcfg, have)
        if not gone:
            raise
        raise ValueError(
            f"family.{split}_classes names {len(gone)} class(es) that the data at "
            f"{fcfg['root']} no longer has: {gone[:10]}{' ...' if len(gone) > 10 else ''}; "
            f"a run stores the class list it was trained with, so the data changed since: "
            f"restore those classes under {fcfg['root']}, or train a new run on the data as "
            f"it is now") from None


SMALL_ADVICE = ("lower the [shots or ]queries, or leave those classes out: "
                "family.drop_small = true")
"""``SmallClassesError.advice`` for a family built from a config, its part on the shots in
brackets (``metaloop.tasks.episodes.advice_for_shots``)."""


def _relative_root_missing(root) -> str:
    """Why a relative ``family.root`` that does not exist was not found, and what to do;
    "" for an absolute path or one that exists."""
    import os
    from pathlib import Path

    path = Path(os.fspath(root)).expanduser()
    if not str(root) or path.is_absolute() or path.exists():
        return ""
    name = str(root)
    return (f"family.root = {name!r} is a relative path, read from the working folder "
            f"{Path.cwd()}, which has no {name!r}; a run stores family.root as its config gave "
            f"it, so run the command from the folder the run was trained in (the one that "
            f"path is relative to), or give the data's path with --data-root (metaloop "
            f"eval, train --resume), or make {name!r} here a link to the data (in a config "
            f"of your own: give family.root as an absolute path)")


def _classes_gone(fcfg: dict, have) -> list[str]:
    """The names of ``have`` that the data of ``fcfg`` lacks (empty when it cannot tell)."""
    try:
        names = _class_names(fcfg)
    except (ValueError, OSError):
        return []
    from metaloop.tasks.episodes import class_positions
    return class_positions(list(have), names)[1]        # matched in NFC, as classes are


def data_fingerprint(fcfg: dict, *families) -> dict | None:
    """What a run on the user's data reads, to tell on resume whether it changed: a table's
    file hash, or the sha256 of each class's decoded examples (``episode_store``), in class
    order over ``families`` (training, then held-out), with one digest over them all. None
    for a built-in family.

    Args:
        fcfg: the ``[family]`` section (``name`` and ``root``).
        *families: the ``Episodes`` families built from it (training, then held-out); a
            class in several is read once. Not read for a table, whose file is hashed.

    Returns:
        ``{"family", "root", "sha256"}``, plus ``"classes": {name: digest}`` and
        ``"example_shape"`` (what the network reads of one example: ``[C, H, W]`` or ``[D]``)
        for Episodes.
    """
    import hashlib

    from metaloop.train.checkpoint import sha256_file

    if fcfg["name"] not in _config.USER_FAMILIES:
        return None
    out = {"family": fcfg["name"], "root": str(fcfg["root"])}
    if fcfg["name"] == "table":
        return {**out, "sha256": sha256_file(fcfg["root"])}
    classes: dict[str, str] = {}
    for fam in families:
        x, table, counts = fam.episode_store()
        for k, name in enumerate(fam.class_names):
            if name in classes:
                continue
            n = int(counts[k]) if counts is not None else table.shape[1]
            xs = x.index_select(0, table[k, :n]).contiguous()
            h = hashlib.sha256(f"{list(xs.shape)} {xs.dtype}\n".encode())
            h.update(xs.numpy().tobytes())
            classes[name] = h.hexdigest()[:16]
    # class folder names that are not UTF-8 hash as the bytes the file system holds
    whole = hashlib.sha256("".join(f"{n}\0{d}\n" for n, d in classes.items())
                           .encode("utf-8", "surrogateescape"))
    shape = [int(v) for v in families[0].input_shape] if families else None
    return {**out, "sha256": whole.hexdigest(), "classes": classes, "example_shape": shape}


def data_changes(stored: dict, read: dict, *, resume: bool = False) -> str:
    """How the data fingerprint ``read`` now (``metaloop.build.data_fingerprint``) differs
    from a run's ``stored`` one; "" where it does not. One wording for every check of a
    run's data: ``metaloop.runs.check_same_data`` (``--data-root``) and
    ``metaloop.train.loop.check_resume_data`` (``train --resume``, ``compare --resume``).

    Per class (both fingerprints list their classes' sha256s): the classes whose examples
    differ, and those the run never read. With ``resume`` the data is the run's own path
    read again, where every class the run read must be there as it was: the examples of a
    class "changed" (since the checkpoint), and the classes gone, or else a class order that
    changed, are named too. Otherwise (a table, or a fingerprint without classes): the
    file's sha256.

    Args:
        stored: the run's fingerprint (its checkpoint's ``state["data"]``).
        read: the fingerprint of the data read now.
        resume: compare every class and their order (a resume), not only those read now.
    """
    old, new = stored.get("classes"), read.get("classes")
    if not (isinstance(old, dict) and isinstance(new, dict)):
        return "" if stored.get("sha256") == read.get("sha256") else \
            "its file's sha256 differs"
    verb = "changed" if resume else "differ"
    named = {f"examples {verb} in class(es)": [c for c in new if c in old and old[c] != new[c]],
             "class(es) the run never read": [c for c in new if c not in old],
             "class(es) gone": [c for c in old if c not in new] if resume else []}
    change = "; ".join(f"{label} {names[:5]}{' ...' if len(names) > 5 else ''}"
                       for label, names in named.items() if names)
    if not change and resume and stored.get("sha256") != read.get("sha256"):
        return "the class order changed"
    return change


def resolve_split(cfg: dict) -> dict:
    """``cfg`` with the class split of a folder / tensors family written out as
    ``family.{train,val,test}_classes`` (from fractions and seed, or split files), so that a
    run stores exactly which classes it trained on and held out. Other families, and configs
    that list their classes already, are returned as they are.

    Args:
        cfg: a validated config; only its ``[family]`` section is read (a new dict is
            returned, ``cfg`` is not changed).

    Raises:
        ValueError: as ``split_classes`` / ``read_split_files``, naming the problem.
    """
    f = cfg["family"]
    if f["name"] not in _config.USER_FAMILIES or \
            any(f[f"{s}_classes"] for s in _config.USER_SPLITS):
        return cfg
    names, nested = _data_classes(f)
    need = sum(1 for x in f["split_fractions"] if x > 0)
    if not f["split_files"] and len(names) < need:
        raise ValueError(_too_few_classes(f, names, need, nested))
    try:
        lists = {s: tasks.episodes.select_split(names, s, tuple(f["split_fractions"]),
                                                 f["split_seed"],
                                                 _split_args(f, s)["split_files"])
                 for s in _config.USER_SPLITS}
    except ValueError as e:
        head = "split_classes: class names"
        if f["name"] != "tensors" or not str(e).startswith(head):
            raise
        raise ValueError(f"tensor file {f['root']}: its class_names (the key 'class_names')"
                         f"{str(e)[len(head):]}") from e
    return {**cfg, "family": {**f, **{f"{s}_classes": v for s, v in lists.items()}}}


@functools.lru_cache(maxsize=2)
def text_encoder(source: str, max_length: int):
    """The ``TextEncoder`` of a table family's ``encoder``, loaded once per process (the
    family keeps it for its tokenizer; ``build_model`` copies it)."""
    from metaloop.models.text import load_text_encoder
    return load_text_encoder(source, max_length=max_length)


def _text_table(fcfg: dict, split: str, shots: int, queries: int):
    """A ``TextTable`` over one class split of ``family.root``, tokenized for its encoder."""
    from metaloop.tasks.splits import read_split_files
    from metaloop.tasks.text_table import TextTable

    args = _split_args(fcfg, split)
    if "classes" in args:
        where = {"classes": args["classes"]}
    elif args["split_files"]:
        # none shared; the names in NFC, which TextTable matches to the labels in NFC
        where = {"classes": read_split_files(args["split_files"])[split]}
    else:
        where = {"split": split, "fractions": args["fractions"], "split_seed": args["seed"]}
    enc = text_encoder(fcfg["encoder"], fcfg["max_length"])
    return TextTable(fcfg["root"], text_column=fcfg["text_column"],
                     label_column=fcfg["label_column"], delimiter=fcfg["delimiter"] or None,
                     quoting=fcfg["quoting"],
                     ways=fcfg["ways"], shots=shots, queries=queries,
                     drop_small=fcfg["drop_small"], tokenizer=enc.tokenize, **where)


def _class_names(f: dict) -> list[str]:
    """The class names of a folder (a scan: nothing decoded), a tensor file or a table."""
    return _data_classes(f)[0]


def _data_classes(f: dict) -> tuple[list[str], str]:
    """(class names, nesting hint) of a folder (a scan: nothing decoded), a tensor file or a
    table; the hint is a folder's ``FolderScan.nested`` (its images one level deeper than
    ``family.class_depth`` reads them), "" for the others."""
    if f["name"] == "table":
        from metaloop.tasks.text_table import read_text_table
        labels = read_text_table(f["root"], f["text_column"], f["label_column"],
                                 f["delimiter"] or None, quoting=f["quoting"])[1]
        return sorted(set(labels)), ""
    if f["name"] == "folder":
        from metaloop.data.folder import scan_folder
        scan = scan_folder(f["root"], f["class_depth"])
        return scan.classes, scan.nested
    fam = tasks.Episodes.from_tensors(f["root"], ways=1, shots=1, queries=1, drop_small=True)
    return fam.all_class_names, ""


def _too_few_classes(f: dict, names: list[str], need: int, nested: str) -> str:
    """The error for data of ``f`` whose classes ``names`` are fewer than the ``need``
    non-empty splits of ``family.split_fractions``: naming the data, its classes, and,
    for a folder whose images sit a level deeper (``nested``), ``family.class_depth = 2``."""
    from pathlib import Path

    shown = ", ".join(map(repr, names[:5])) + (" ..." if len(names) > 5 else "")
    splits = (f"too few for the {need} non-empty class splits of family.split_fractions = "
              f"{list(f['split_fractions'])} (train, val, test: each split has classes of "
              f"its own)")
    root = Path(f["root"]).expanduser()
    if f["name"] == "folder":
        held = f"image folder {root} holds {len(names)} class folder(s) with images ({shown})"
        if f["class_depth"] == 2:
            held = (f"image folder {root} holds {len(names)} class(es) in its group folders "
                    f"(family.class_depth = 2: root/<group>/<class>/<image>; {shown})")
        if nested:
            return (f"{held}, {splits}: its images sit one level deeper, in sub-folders of "
                    f"the class folders: {nested}"
                    + (f" (or give family.root = {str(root / names[0])!r}, the folder that "
                       f"holds the class folders)" if len(names) == 1 else ""))
        fix = ("; family.root must be the folder whose sub-folders are the classes "
               "(root/<class>/<image>, one folder per class)" if f["class_depth"] == 1 else "")
        return f"{held}, {splits}: give it more classes{fix}"
    what = "text table" if f["name"] == "table" else "tensor file"
    kind = "label(s)" if f["name"] == "table" else "class(es)"
    return f"{what} {root} holds {len(names)} {kind} ({shown}), {splits}: give it more classes"


def build_model(mcfg: dict, family, method: str) -> torch.nn.Module:
    """The network for this family; pretrain on classification gets one output per class.

    Args:
        mcfg: the validated config's ``[model]`` section (``name``: ``"mlp"``, ``"conv4"``,
            ``"resnet12"`` or ``"text"``; ``hidden``, ``channels``, ``pool``, ``readout``).
        family: the task family the network reads: its ``kind`` (``"regression"`` or
            ``"classification"``), ``ways`` and ``num_classes``, and its input shape
            (``in_dim`` / ``out_dim`` for regression, ``input_shape`` ``[D]`` or
            ``image_shape`` ``[C, H, W]``; a ``table`` family's ``tokenizer``, whose
            encoder ``"text"`` copies).
        method: the ``[method]`` name; ``"pretrain"`` sizes the head by ``num_classes``,
            any other by ``ways``.

    Raises:
        ValueError: an unknown model name, or a model that cannot read the family's
            inputs (``mlp`` on images, an image model on vectors or non-square images,
            ``text`` without a table family), naming the shapes and what to use.
    """
    name = _choice("model", mcfg["name"], MODELS)
    if family.kind == "regression":
        out = family.out_dim
    else:
        out = family.num_classes if method == "pretrain" else family.ways
    if name == "mlp":
        if family.kind == "regression":
            return models.MLP(family.in_dim, tuple(mcfg["hidden"]), out)
        if len(family.input_shape) != 1:
            raise ValueError(f"model 'mlp' reads feature vectors, but the family gives inputs "
                             f"of shape {list(family.input_shape)}: "
                             + (_channels_last(family.input_shape, "pad or resize them to a square "
                                                                   "and use model.name = 'conv4'")
                                or "use model.name = 'conv4'"))
        return models.MLP(family.input_shape[0], tuple(mcfg["hidden"]), out)
    if name == "text":              # the table family's encoder (a copy), with a new head
        import copy

        from metaloop.models.text import TextEncoder
        enc = getattr(getattr(family, "tokenizer", None), "__self__", None)
        if not isinstance(enc, TextEncoder):
            raise ValueError(f"model 'text' needs family 'table' (its encoder tokenizes the "
                             f"texts), not {type(family).__name__}")
        model = copy.deepcopy(enc)
        model.head = torch.nn.Linear(model.feature_dim, out)
        return model
    shape = getattr(family, "image_shape", None)
    if shape is None or len(shape) != 3:
        raise ValueError(f"model {name!r} needs an image family, not {type(family).__name__}")
    if shape[-2] != shape[-1]:
        raise ValueError(f"model {name!r} reads square images; the family gives "
                         f"{shape[-2]}x{shape[-1]}: "
                         + (_channels_last(shape, "pad or resize them to a square")
                            or "pad or resize them to a square"))
    if name == "resnet12":          # widths channels x (1, 2.5, 5, 10): 64 -> 64..640
        return models.ResNet12(shape[0], mcfg["channels"], out, image_size=shape[-1])
    return models.Conv4(shape[0], mcfg["channels"], out, pool=mcfg["pool"], image_size=shape[-1],
                         readout=mcfg["readout"] or None)


def _channels_last(shape, then: str) -> str:
    """The advice for examples ``[C, H, W]`` that are images stored channels-last, ``[H, W,
    1 or 3]`` (as numpy and PIL give them; ``Episodes`` names the square ones itself), ending
    in ``then``; "" when ``shape`` does not look so."""
    if len(shape) != 3 or shape[-1] not in (1, 3) or shape[0] in (1, 3):
        return ""
    h, w, c = (int(v) for v in shape)
    return (f"they look like {h}x{w} images stored channels-last [N, H, W, C] with {c} "
            f"channel(s) last; save x as [N, C, H, W] (x.permute(0, 3, 1, 2), or "
            f"x.transpose(0, 3, 1, 2) for numpy), then {then}")


def batching_on(mc: dict, device, model: torch.nn.Module | None = None) -> str:
    """The [method] batching to use on ``device``: ``"auto"`` becomes ``"vmap"`` on CUDA
    (5.7x faster than the loop for Omniglot Conv4 MAML on an H100, docs/benchmarks.md) unless
    the inner loop is recomputed (which needs the loop), vmap cannot run ``model`` now
    (``metaloop.meta._common.vmap_refusal``: torch's recurrent layers, dropout in training mode,
    BatchNorm updating running statistics), or second-order
    MAML adapts a ``model`` with torch's BatchNorm, InstanceNorm or LayerNorm (a text encoder,
    say), whose double backward is wrong under vmap (``metaloop.meta.maml.
    vmap_wrong_norms``); elsewhere the learner's own "auto" rule decides. ``build_learner``
    builds a learner whose "auto" became "vmap" here with "auto" and then switches it to
    vmap (``metaloop.meta._common.prefer_vmap``), so it keeps "auto"'s switch to the loop at the
    first call vmap cannot run (a forward that draws random numbers or changes a buffer).

    Args:
        mc: the validated config's ``[method]`` section (``name``, ``batching``,
            ``first_order``, ``recompute_inner_loop``; with ``compile`` the vmapped tasks
            are compiled, not yet timed on a GPU).
        device: where the learner will run: a ``torch.device``, a string such as
            ``"cuda"``, or None (taken as not CUDA).
        model: the network the learner adapts, checked for torch's norm layers; None: not
            checked.

    Returns:
        ``mc["batching"]``, or ``"vmap"`` for ``"auto"`` where the rule above picks it.
    """
    from metaloop.meta._common import vmap_refusal
    from metaloop.meta.maml import vmap_wrong_norms

    cuda = device is not None and torch.device(device).type == "cuda"
    second_order_maml = mc["name"] == "maml" and not mc["first_order"]
    torch_norms = model is not None and bool(vmap_wrong_norms(model))
    no_vmap = model is not None and vmap_refusal(model) is not None
    loop_only = mc["recompute_inner_loop"] or no_vmap or (second_order_maml and torch_norms)
    return "vmap" if mc["batching"] == "auto" and cuda and not loop_only else mc["batching"]


def build_learner(cfg: dict, family, model=None, device=None):
    """The learner of the [method] section around a (new, seeded) model; ``device`` (where it
    will run) only chooses the batching, see ``batching_on``.

    It seeds torch's global generators with ``train.seed`` (``torch.manual_seed``) and leaves
    them so: that seed carries on into the training that follows (Reptile's per-task
    mini-batch seeds, the ``rng.torch`` a checkpoint stores). A caller scopes it, building
    and training inside one ``with metaloop._random.seeded_rng(seed, [device]):``, so that
    its own generator is as it was afterwards (``metaloop.recipes.compare.run``,
    ``metaloop.recipes.training.train_config``; ``metaloop.runs.load_run``, which trains
    nothing, scopes the build alone).

    Args:
        cfg: a validated config; its ``[method]``, ``[model]`` and ``train.seed`` are read.
        family: the training task family (its ``kind`` chooses the loss: ``"mse"`` for
            regression, else ``"ce"``; ``build_model`` reads the rest).
        model: the network to wrap; None: a new one from ``cfg["model"]``
            (``build_model``), built after the seed is set.
        device: where the learner will run (a ``torch.device``, a string, or None: not
            CUDA); it only chooses the batching (``batching_on``), nothing is moved there.

    Raises:
        ValueError: an unknown method, or ``[method]`` settings that do not apply to it
            or to the family (naming them).
    """
    name = _choice("method", cfg["method"]["name"], METHODS)
    torch.manual_seed(cfg["train"]["seed"])
    model = model if model is not None else build_model(cfg["model"], family, name)
    # "auto" that becomes vmap on the device is built as "auto" and switched after, so that
    # it keeps "auto"'s switch to the loop (an explicit "vmap" raises there instead)
    vmap_for_auto = (cfg["method"]["batching"] == "auto"
                     and batching_on(cfg["method"], device, model) == "vmap")
    learner = _build_learner(name, cfg["method"], family, model)
    if vmap_for_auto:
        from metaloop.meta._common import prefer_vmap
        prefer_vmap(learner, model)
    return learner


def _build_learner(name: str, mc: dict, family, model):
    """``build_learner``'s learner of ``name`` around ``model``, with ``mc``'s batching."""
    loss = "mse" if family.kind == "regression" else "ce"
    head_init = mc["head_init"]
    if head_init == "auto":
        head_init = "zero" if (name == "pretrain" and family.kind != "regression") else "learned"
    if name in _config.HEAD_BASED:
        return _build_head_learner(name, mc, family, model)
    if mc["first_order"] and name not in _config.MAML_FAMILY:
        raise ValueError(f"first_order applies to maml and anil, not {name!r}")
    for key in ("recompute_inner_loop", "compile", "learn_inner_lr"):
        if mc[key] and name not in _config.MAML_FAMILY:
            raise ValueError(f"method.{key} applies to maml, fomaml and anil, not {name!r}")
    common = dict(inner_lr=mc["inner_lr"], inner_steps=mc["inner_steps"], loss=loss,
                  head_init=head_init, batching=mc["batching"])
    if name in ("maml", "fomaml"):
        return meta.MAML(model, first_order=mc["first_order"] or name == "fomaml",
                         recompute_inner_loop=mc["recompute_inner_loop"], compile=mc["compile"],
                         learn_lr=mc["learn_inner_lr"], **common)
    if name == "anil":
        return meta.ANIL(model, first_order=mc["first_order"],
                         recompute_inner_loop=mc["recompute_inner_loop"], compile=mc["compile"],
                         learn_lr=mc["learn_inner_lr"], **common)
    if name == "reptile":
        return meta.Reptile(model, inner_optimizer=mc["inner_optimizer"],
                            inner_batch=mc.get("inner_batch", 0),
                            test_batch=mc.get("test_batch", 0),
                            transductive=mc.get("transductive", True),
                            adam_state=mc.get("adam_state", "task"), **common)
    return {"pretrain": meta.Pretrain, "scratch": meta.Scratch}[name](model, **common)


def _build_head_learner(name: str, mc: dict, family, model):
    """R2D2 / MetaOptNet / ProtoNet around the model's features (classification only)."""
    if family.kind != "classification":
        raise ValueError(f"method {name!r} needs a classification family such as omniglot, "
                         f"not {type(family).__name__}")
    if mc["first_order"] or mc["recompute_inner_loop"] or mc["compile"]:
        raise ValueError(f"first_order, recompute_inner_loop and compile apply to maml and anil, "
                         f"not {name!r}")
    from metaloop.meta.metaoptnet import MetaOptNet
    from metaloop.meta.protonet import ProtoNet
    from metaloop.meta.r2d2 import R2D2

    kw = {"lam": mc["lam"], "batching": mc["batching"],
          "transductive": mc.get("transductive", True),
          "learn_scale": mc.get("learn_scale", True)}
    if mc["scale"]:                                  # 0: the method's default initial scale
        kw["scale"] = mc["scale"]
    if name == "r2d2":
        return R2D2(model, **kw)
    if name == "protonet":                           # no ridge strength: lam is unused
        return ProtoNet(model, refine=mc["refine"], refine_temperature=mc["refine_temperature"],
                        refine_weight=mc["refine_weight"],
                        **{k: v for k, v in kw.items() if k != "lam"})
    return MetaOptNet(model, head=mc["head"], steps=mc["inner_steps"], grad=mc["grad"], **kw)


def eval_family(cfg: dict, train_family):
    """The held-out family: [eval] split, ways, shots and queries (0 = same as training);
    Omniglot tasks within one alphabet if ``eval.within_alphabet``, drawn by
    ``eval.drawers``, never rotated or mirrored.

    Args:
        cfg: a validated config; its ``[family]`` and ``[eval]`` sections are read.
        train_family: not read: the held-out family is built from ``cfg`` alone (callers
            pass the training family or None).

    Raises:
        ValueError: as ``build_family``; a held-out class too small names the ``eval``
            (or ``family``) keys that set its shots and queries.
    """
    ec, f = cfg["eval"], cfg["family"]
    within = 1.0 if ec.get("within_alphabet", False) else 0.0
    try:
        return build_family({**f, "ways": ec["ways"] or f["ways"],
                             "within_alphabet": within, "rotations": False,
                             "reflections": False,
                             "drawers": ec.get("drawers", "any")},
                            split=ec["split"], shots=ec["shots"], queries=ec["queries"],
                            ways_key="eval.ways" if ec["ways"] else "family.ways")
    except ValueError as e:
        if not isinstance(e, SmallClassesError) and "shots + queries" not in str(e):
            raise
        # a class of the held-out split too small: say which keys set its shots and queries
        keys = [f"eval.{k} = {ec[k]}" if ec[k] else f"family.{k} = {f[k]} (eval.{k} = 0: "
                f"the family's)" for k in ("shots", "queries")]
        lead = f"the held-out tasks (eval.split = {ec['split']!r}; {', '.join(keys)})"
        if isinstance(e, SmallClassesError):          # its advice kept for a caller to fit
            raise SmallClassesError(f"{lead}: {e.problem}", e.advice, shots=e.shots) from e
        raise ValueError(f"{lead}: {e}") from e


def check_eval_shifts(cfg: dict, family) -> None:
    """ValueError naming ``eval.support_shift`` / ``eval.query_shift`` when they are set but
    ``family``'s examples are not images (feature vectors of a tensor file): a run trained
    with them could not be evaluated (``metaloop train`` checks this before training).

    Args:
        cfg: a validated config; its ``[eval]`` section is read.
        family: the family the run reads; its examples are images when it has an
            ``image_shape`` (``[C, H, W]``).

    Raises:
        ValueError: naming the shift keys set, the family and its example shape.
    """
    on = [f"eval.{k} = {cfg['eval'][k]}" for k in ("support_shift", "query_shift")
          if cfg["eval"][k]]
    if on and getattr(family, "image_shape", None) is None:
        keys = " and ".join(k.split(" =")[0] for k in on)
        shape = getattr(family, "input_shape", None)
        shape = f" of shape {list(shape)}" if shape is not None else ""
        raise ValueError(f"config {', '.join(on)} shifts images at test time, but this "
                         f"family's examples are not images ({type(family).__name__}{shape}), "
                         f"so the run could not be evaluated: "
                         f"set {keys} = 0")


def training_family(cfg: dict, family):
    """The family meta-training samples from: ``family``, or with ``train.augment_shift`` /
    ``augment_rotate`` / ``augment_stroke`` / ``augment_elastic`` random translations /
    rotations / stroke widths / elastic bends of its images (``metaloop.tasks.Shifted``);
    evaluation keeps ``family``.

    Args:
        cfg: a validated config; its ``[train]`` augment keys are read (missing: 0, off).
        family: the meta-training family, returned as it is when no augment is on.

    Raises:
        ValueError: an augment set on a family whose examples are not images (no
            ``image_shape``), naming the keys to set to 0.
    """
    t = cfg["train"]
    s, r, w, e = (t.get(k, 0) for k in ("augment_shift", "augment_rotate", "augment_stroke",
                                        "augment_elastic"))
    if not (s or r or w or e):
        return family
    if getattr(family, "image_shape", None) is None:
        on = [f"train.{k}" for k, v in zip(_config.AUGMENTS, (s, r, w, e)) if v]
        raise ValueError(f"{', '.join(on)} moves or bends images, but this family's "
                         f"examples are not images ({type(family).__name__} of shape "
                         f"{list(family.input_shape)}): set {' and '.join(on)} = 0")
    return tasks.Shifted(family, s, r, max_stroke=w, elastic=e)

"""The main job: meta-train the methods and both baselines on one family, evaluate them on
the same held-out tasks.

The methods (``ALL``): the baselines scratch and pretrain, MAML, first-order MAML, Reptile and
ANIL, and on classification the solved heads R2D2, MetaOptNet and ProtoNet. The shipped
configs run every method that applies (sinusoid: the first six); ``methods``
(``--methods``) chooses among them.

The settings live in TOML files shipped with the package, ``metaloop/configs/
compare_<family>.toml`` (``config_text(family)`` returns one to copy). Besides the sections of
any metaloop config (``[family] [model] [method] [train] [eval]``) a compare config has a
``[compare]`` table:

- ``methods``: the methods run by default, in order;
- ``[compare.per_method.<name>.<section>]``: keys that apply to that method only (Reptile's
  inner optimizer, first-order MAML's flag...), never the ``[family]`` and ``[eval]`` keys
  or ``train.seed``, which every method shares;
- ``[compare.per_ways.<ways>.<section>]``: keys that apply at that number of ways (the MAML
  paper's 20-way Omniglot rule).

``load_config`` merges the shipped file, the per-ways rule, a user's file (only the keys it
sets) and explicit overrides; ``run`` trains and evaluates; ``record`` is what
``metaloop compare`` writes to ``results.json``. The same config and seed give the same record.
"""

from __future__ import annotations

import copy
import json
import os
import time
from collections.abc import Callable, Sequence
from importlib import resources
from pathlib import Path
from typing import Any

from metaloop import build as _build
from metaloop import config as _config
from metaloop._random import seeded_rng
from metaloop.evaluate import evaluate
from metaloop.train import train
from metaloop.train.loop import check_resume_data

ALL = ("scratch", "pretrain", "maml", "fomaml", "reptile", "anil", "r2d2", "metaoptnet",
       "protonet")
# Methods whose head is a classifier solved per task (no SGD steps: scored at every step of
# eval.steps with the same head): not run on regression families.
CLASSIFICATION_ONLY = ("r2d2", "metaoptnet", "protonet")
REGRESSION_FAMILIES = ("sinusoid",)
# Methods that are not meta-trained (train's iterations and meta-batch change nothing).
NOT_META_TRAINED = ("scratch",)
# The families with a shipped compare config (metaloop/configs/compare_<family>.toml).
FAMILIES = ("sinusoid", "omniglot")
COMPARE_KEYS = ("methods", "per_method", "per_ways")

__all__ = ["ALL", "FAMILIES", "check_out_outside_data", "config_path", "config_text",
           "load_config", "method_config", "methods_for", "queries_per_task", "record",
           "run", "warn_unread", "with_split"]


def config_path(family: str):
    """The shipped compare config of ``family`` (an ``importlib.resources`` traversable).

    Raises:
        ValueError: ``family`` has no compare config (naming the ones that do).
    """
    if family not in FAMILIES:
        raise ValueError(f"unknown family {family!r}; choose one of {sorted(FAMILIES)}")
    return resources.files("metaloop") / "configs" / f"compare_{family}.toml"


def config_text(family: str) -> str:
    """The shipped compare config of ``family`` as TOML text, comments included: a starting
    point for a user's own (``metaloop compare FAMILY --print-config > mine.toml``)."""
    return config_path(family).read_text()


def _read(text: str, where: str) -> dict:
    return _config._parse_toml(text, f"config file {where}")


def _check_compare(table, where: str) -> dict:
    """The ``[compare]`` table of ``where``, checked: known keys, method names, sections."""
    if not isinstance(table, dict):
        raise ValueError(f"{where}: [compare] must be a table, got {table!r}")
    bad = sorted(set(table) - set(COMPARE_KEYS))
    if bad:
        hints = "".join(_config._suggest(key, COMPARE_KEYS) for key in bad)
        raise ValueError(f"{where}: unknown key(s) compare.{', compare.'.join(bad)}{hints}; "
                         f"valid: {list(COMPARE_KEYS)}")
    methods = table.get("methods", [])
    if not isinstance(methods, list) or not all(isinstance(m, str) for m in methods):
        raise ValueError(f"{where}: compare.methods must be a list of method names, got "
                         f"{methods!r}")
    if "methods" in table:                   # missing: the family's default
        _check_names(f"{where}: compare.methods = {methods!r}", methods,
                     "list the methods to compare, or leave compare.methods out for the "
                     "family's default")
    wrong = [m for m in [*methods, *table.get("per_method", {})] if m not in ALL]
    if wrong:
        raise ValueError(f"{where}: unknown method(s) {wrong} in [compare]"
                         f"{_config._suggest(wrong[0], ALL)}; choose from "
                         f"{list(ALL)}")
    for kind in ("per_method", "per_ways"):
        for key, body in table.get(kind, {}).items():
            if kind == "per_ways" and not key.isdigit():
                raise ValueError(f"{where}: compare.per_ways keys are numbers of ways, got "
                                 f"{key!r}")
            if not isinstance(body, dict) or not all(isinstance(v, dict) for v in body.values()):
                raise ValueError(f"{where}: compare.{kind}.{key} must hold tables of config "
                                 f"sections, got {body!r}")
            try:                             # its sections and keys exist, with their types
                _config.validate(body)
            except ValueError as e:
                raise ValueError(f"{where}: compare.{kind}.{key}: {e}") from None
            if kind == "per_method":
                _check_shared(body, f"{where}: compare.per_method.{key}")
    return table


# What every method of a comparison shares, so no method may set it alone: the tasks it
# trains on ([family], whose data is built once for all), the training seed, and its
# held-out tasks and how they are scored ([eval]).
_SHARED: dict[str, tuple[str, ...] | None] = {"family": None, "eval": None, "train": ("seed",)}


def _check_shared(body: dict, where: str) -> None:
    """ValueError naming the keys of one method's ``per_method`` tables that ``_SHARED`` says
    every method shares (a per-method family key was ignored, an eval key scored that method
    on other tasks than the rest)."""
    bad = [f"{section}.{k}" for section, keys in body.items() if section in _SHARED
           for k in keys if _SHARED[section] is None or k in _SHARED[section]]  # type: ignore[operator]  # not None here
    if bad:
        sections = sorted({f"[{b.split('.')[0]}]" for b in bad})
        raise ValueError(f"{where} sets {', '.join(bad)}, but every method of a comparison "
                         f"trains on the same tasks with the same seed and is scored on the "
                         f"same held-out tasks: set {'them' if len(bad) > 1 else 'it'} for "
                         f"all methods, in the file's {' and '.join(sections)}")


def _split(raw: dict, where: str) -> tuple[dict, dict]:
    """(the config sections, the checked [compare] table) of a parsed file."""
    raw = copy.deepcopy(raw)
    table = _check_compare(raw.pop("compare", {}), where)
    _config.validate(raw)                    # unknown sections / keys, wrong types: named
    return raw, table


def _merge_compare(base: dict, over: dict) -> dict:
    out = copy.deepcopy(base)
    if "methods" in over:
        out["methods"] = list(over["methods"])
    for kind in ("per_method", "per_ways"):
        for key, body in over.get(kind, {}).items():
            mine = out.setdefault(kind, {}).setdefault(key, {})
            for section, keys in body.items():
                mine.setdefault(section, {}).update(keys)
    return out


def _without(table: dict, given: dict) -> dict:
    """``table`` with the per-method keys that ``given`` (the user's) sets removed: a key the
    user sets applies to every method, over the shipped file's per-method value."""
    out = copy.deepcopy(table)
    for body in out.get("per_method", {}).values():
        for section, keys in body.items():
            for key in given.get(section, {}):
                keys.pop(key, None)
    return out


def load_config(family: str | None = None, path=None, overrides: dict | None = None) -> dict:
    """The validated compare config.

    Merged in this order, each overriding the one before: the shipped file of the family,
    its ``per_ways`` rule for the ways in effect, the keys ``path`` sets, ``overrides``. A key
    that ``path`` or ``overrides`` sets applies to every method (the shipped file's
    ``per_method`` value for it is dropped); ``path``'s own ``per_method`` tables apply after
    that, except for the keys ``overrides`` sets (the CLI's flags win over everything).

    Args:
        family: a family with a shipped config (``FAMILIES``); None: the one ``path``'s
            ``family.name`` names, else ``"sinusoid"``.
        path: a user's TOML file: a full copy of a shipped config, or only the keys to change;
            it may ``extends`` another file (``metaloop.config.load``).
        overrides: ``{section: {key: value}}`` applied last (the CLI's flags).

    Returns:
        Every section of a metaloop config, filled and type-checked, plus ``"compare"``.

    Raises:
        ValueError: an unknown family, section, key, method or type, or a file that is not
            TOML (naming it); FileNotFoundError: ``path`` does not exist.
    """
    user: dict[str, Any] = {}
    user_cmp: dict[str, Any] = {}
    if path is not None:
        path = Path(path)
        # its extends chain applied; a bad section, key or type named with its file
        user, user_cmp = _split(_config.read(path, check_except=("compare",)),
                                f"config file {path}")
    family = family or user.get("family", {}).get("name") or "sinusoid"
    # your own data ("folder", "tensors"): the Omniglot config's methods and settings, with
    # the [family] section of your file alone
    shipped = "omniglot" if family in _config.USER_FAMILIES else family
    base, table = _split(_read(config_text(shipped), f"compare_{shipped}.toml"),
                         f"compare_{shipped}.toml")
    if shipped != family:
        base = {**base, "family": {"name": family}}
    named = user.get("family", {}).get("name", family)
    if named != family:
        raise ValueError(f"config file {path} sets family.name = {named!r} but the family "
                         f"asked for is {family!r}")
    overrides = overrides or {}
    table = _without(_merge_compare(_without(table, _config.merge(user, overrides)),
                                    user_cmp), overrides)
    ways = {**base.get("family", {}), **user.get("family", {}),
            **overrides.get("family", {})}.get("ways")
    cfg = _config.merge(base, table.get("per_ways", {}).get(str(ways), {}))
    cfg = _config.validate(_config.merge(_config.merge(cfg, user), overrides))
    return {**cfg, "compare": table}


def methods_for(cfg: dict, methods: Sequence[str] | str | None = None, *,
                given_as: str = "methods") -> list[str]:
    """The methods to run: ``methods`` (a list or a comma list), else the config's
    ``compare.methods``, else (no such key) all that apply to the family. ``given_as``
    names ``methods`` in errors (``metaloop compare``: ``"--methods"``).

    Raises:
        ValueError: an unknown method, or a classification-only one on a regression family;
            a list that names no method (``[]``: not "all"), has an empty item or names a
            method twice (it would be trained and scored twice, one row).
    """
    family = cfg["family"]["name"]
    regression = family in REGRESSION_FAMILIES
    fix = (f"give a list of {list(ALL)}, or "
           + (f"leave {given_as} out" if given_as.startswith("--") else "None")
           + " for the config's methods")
    if isinstance(methods, str):
        what = f"{given_as} {methods!r}"
        methods = [m.strip() for m in methods.split(",")]
        if any(methods) and not all(methods):
            raise ValueError(f"{what} has an empty item (a comma too many); {fix}")
        methods = [m for m in methods if m]
    elif methods is not None:
        what = f"{given_as} {list(methods)!r}"
    elif "methods" in cfg.get("compare", {}):
        methods = cfg["compare"]["methods"]
        what, fix = f"compare.methods = {methods!r}", ("list the methods to compare, or leave "
                                                       "compare.methods out for the family's "
                                                       "default")
    else:
        what, methods = "", [m for m in ALL if not (regression and m in CLASSIFICATION_ONLY)]
    methods = list(methods)
    _check_names(what, methods, fix)
    bad = [m for m in methods if m not in ALL]
    if bad:
        raise ValueError(f"unknown method(s) {bad}; choose from {list(ALL)}")
    wrong = [m for m in methods if regression and m in CLASSIFICATION_ONLY]
    if wrong:
        raise ValueError(f"method(s) {wrong} need a classification family, not {family!r}")
    return methods


def _check_names(what: str, methods: list, fix: str) -> None:
    """ValueError naming ``what`` (how the list was given) when it names no method or a
    method more than once."""
    if not methods:
        raise ValueError(f"{what} names no method; {fix}")
    twice = sorted({m for m in methods if methods.count(m) > 1})
    if twice:
        raise ValueError(f"{what} names {', '.join(twice)} more than once; name each method "
                         f"once")


def method_config(cfg: dict, name: str) -> dict:
    """The validated config one method trains with: the shared sections, the keys of the
    MAML family switched off for the other methods, then ``compare.per_method.<name>``.

    Raises:
        ValueError: an impossible combination of keys, or a method that adapts by SGD steps
            (all but the closed-form heads) with no ``eval.steps`` above 0: it would be
            scored unadapted, at chance.
    """
    sections = {k: v for k, v in cfg.items() if k != "compare"}
    off: dict[str, bool | str] = ({} if name in _config.MAML_FAMILY
                                  else {k: False for k in _config.MAML_ONLY})
    if name not in _config.MAML_FAMILY and cfg["method"].get("batching") == "threads":
        off["batching"] = "auto"
    mcfg = _config.merge(sections, {"method": {"name": name, **off}})
    mcfg = _config.merge(mcfg, cfg.get("compare", {}).get("per_method", {}).get(name, {}))
    mcfg = _config.validate(mcfg)
    _config.check_combinations(mcfg)
    steps = mcfg["eval"]["steps"]
    if name not in CLASSIFICATION_ONLY and max(steps, default=0) <= 0:
        raise ValueError(f"eval.steps = {steps}: {name} adapts by SGD steps, so it would be "
                         f"scored unadapted (chance); give eval.steps a step above 0, e.g. "
                         f"[0, 1, 3], or compare only the closed-form heads (--methods "
                         f"{','.join(CLASSIFICATION_ONLY)})")
    return mcfg


def warn_unread(mcfgs: list[dict], path) -> list[str]:
    """Warn (``metaloop.config.UnreadKeyWarning``) for each key of the user's config file
    ``path`` that no compared method reads (``config.warn_unread_by_all`` over ``mcfgs``,
    each method's ``method_config``), and for a ``method.name`` that names none of the
    compared methods: a comparison runs the methods of ``--methods`` / ``compare.methods``,
    each in place of the file's (a method ``ALL`` lacks is said to be one compare does not
    run), and for the ``eval`` keys compare does not apply (``scoring`` and the
    refinement: every method is scored as it was trained). Returns the messages."""
    names = [c["method"]["name"] for c in mcfgs]
    raw = _config.read(path).get("method", {})
    named = raw.get("name") if isinstance(raw, dict) else None
    also = {}
    if isinstance(named, str) and named not in names:
        why = f"metaloop compare, which runs the methods of --methods or compare.methods " \
              f"({', '.join(names)}), each in place of it"
        family = mcfgs[0]["family"]["name"] if mcfgs else None
        if named in CLASSIFICATION_ONLY and family in REGRESSION_FAMILIES:
            fix = f"{named} needs a classification family, not {family!r}: remove it"
        elif named in ALL:
            fix = f"add {named} to --methods to compare it"
        else:
            fix = f"{named} is not one compare runs (its methods: {', '.join(ALL)}): train " \
                  f"it with metaloop train, or remove it"
        also[("method", "name")] = (why, fix)
    for key in _UNREAD_EVAL:                   # each method is scored as it was trained
        also[("eval", key)] = ("metaloop compare, which scores every method as it was "
                               "trained", f"evaluate one run with metaloop eval "
                               f"--{key.replace('_', '-')} instead, or remove it")
    for key in _UNREAD_TRAIN:                  # every method from its own initial weights
        also[("train", key)] = ("metaloop compare, which trains every method on the CPU from "
                                "its own initial weights, without validation",
                                "train one run with metaloop train instead, or remove it")
    return _config.warn_unread_by_all(mcfgs, path, also=also)


# eval keys of a config that compare does not apply: how queries are scored and refined is
# per method (only some can change it), so compare scores each as it was trained
_UNREAD_EVAL = ("scoring", "refine", "refine_temperature", "refine_weight", "refine_jointly")
# train keys of a config that compare does not apply: metaloop train's initialisation from
# another run, validation during training, and the GPU's device-resident tasks and CUDA graph
_UNREAD_TRAIN = ("init", "val_every", "val_tasks", "device_tasks", "cuda_graph")


def resumable(mcfgs: dict[str, dict], out_dir, resume: bool,
              flags: dict[str, str] | None = None) -> dict[str, bool]:
    """Which methods continue from a checkpoint in ``out_dir/runs/<method>``.

    Args:
        mcfgs: each method's config (``method_config``). out_dir: the comparison's folder
            (None: nothing is saved, nothing resumes). resume: continue the runs there.

    Returns:
        method -> whether its run resumes (False: it starts afresh).

    Raises:
        ValueError: ``out_dir`` is one checkpoint (``ckpt-*``) of a run, runs there without
            ``resume`` (they would be overwritten; those of methods not in ``mcfgs`` too),
            ``resume`` with no run there, or with runs there of methods not in ``mcfgs``
            (the results would be rewritten without them), a run whose ``ckpt-*`` folders
            are there but not its ``LATEST`` (it would be trained again from iteration 0),
            or a run whose config differs from its method's (naming the keys, and the flag
            that set each where ``flags`` names it: ``"eval.tasks"`` -> ``"--tasks"``),
            all before any training.
    """
    from metaloop.train.checkpoint import latest_checkpoint, load_checkpoint, unlinked_advice
    from metaloop.train.loop import check_resume_config, refuse_foreign

    if out_dir is None:
        if resume:
            raise ValueError("--resume continues the runs in --out; give --out")
        return {name: False for name in mcfgs}
    if (Path(out_dir) / "state.json").is_file():
        raise ValueError(f"{out_dir} is one checkpoint of a run (it holds state.json), not a "
                         f"comparison's folder: the comparison's runs and results would be "
                         f"written inside it, and removed with it when its run moves on; give "
                         f"another --out (nothing was written)")
    runs = {name: Path(out_dir) / "runs" / name for name in mcfgs}
    have = {name: latest_checkpoint(run) is not None for name, run in runs.items()}
    others = _other_runs(Path(out_dir) / "runs", mcfgs)
    if not resume and (any(have.values()) or others):
        raise ValueError(f"{out_dir} already holds runs of "
                         f"{', '.join([n for n, h in have.items() if h] + others)}; use "
                         f"--resume to continue them (an interrupted comparison), or another "
                         f"--out")
    if resume and others:       # the results would be rewritten without them
        every = ",".join([*mcfgs, *others])
        raise ValueError(f"refusing to resume {out_dir}: it holds the run(s) of "
                         f"{', '.join(others)} (in {Path(out_dir) / 'runs'}), which this "
                         f"comparison's methods ({', '.join(mcfgs)}) leave out: its "
                         f"results.json and plots would be rewritten without them; resume "
                         f"with the comparison's own methods (--methods {every}), or compare "
                         f"{', '.join(mcfgs)} in another --out (nothing was trained)")
    for name, run in runs.items():             # a run that lost its LATEST: not retrained
        if not have[name]:
            advice = unlinked_advice(run, "then the same command with --resume")
            if advice is not None:
                raise ValueError(f"refusing to {'resume' if resume else 'compare in'} "
                                 f"{out_dir}: the {name} run would be trained again from "
                                 f"iteration 0: {advice} (nothing was trained)")
    if resume and not any(have.values()):
        raise ValueError(f"--resume: no run to continue in {Path(out_dir) / 'runs'}")
    for name, run in runs.items():             # train's own check of the differing keys;
        if have[name]:                         # it checks the rest when the run resumes
            check_resume_config(run, load_checkpoint(run)[1], mcfgs[name], flags)
        else:                                  # train's own refusal, before any method trains
            refuse_foreign(run, f"{run}, the folder of the {name} run,",
                           "move them, or give another --out")
    return have


def _other_runs(runs: Path, mcfgs: dict[str, dict]) -> list[str]:
    """The methods not in ``mcfgs`` whose runs ``runs`` (a comparison's ``runs`` folder)
    holds: a folder with a ``LATEST`` or a ``ckpt-*`` folder, sorted."""
    try:
        found = sorted(d.name for d in runs.iterdir() if d.is_dir() and d.name not in mcfgs
                       and (os.path.lexists(d / "LATEST") or any(d.glob("ckpt-*"))))
    except OSError:                            # none yet, or unreadable: train names it
        return []
    return found


def _stored_state(run_dir: Path) -> dict | None:
    """The ``state.json`` of the newest checkpoint of ``run_dir`` (None: none, or one that
    cannot be read; ``resumable`` and the resume name those)."""
    from metaloop.train.checkpoint import latest_checkpoint, read_state

    try:
        ckpt = latest_checkpoint(run_dir)
        state = None if ckpt is None else read_state(ckpt / "state.json")
    except (OSError, ValueError):
        return None
    return state if isinstance(state, dict) else None


def check_out_outside_data(family: dict, out_dir) -> None:
    """ValueError when ``out_dir`` lies inside the image folder of a ``folder`` family
    (``metaloop.runs_folder.check_outside_data``): the comparison's plots would become
    images of a class, which every later run on that folder would read."""
    if out_dir is not None and family["name"] == "folder" and family["root"]:
        from metaloop import runs_folder

        runs_folder.check_outside_data(out_dir, family["root"], "family.root")


def with_split(cfg: dict, out_dir=None, resume: bool = False) -> dict:
    """``cfg`` with the class split of the user's data (folder / tensors / table) written out
    as ``family.{train,val,test}_classes``, one split for every method of the comparison, so
    that each run stores the classes it trained on and held out: a fresh comparison resolves
    it from the data (``metaloop.build.resolve_split``), a resumed one takes the split its
    runs store. Built-in families, and configs that list their classes, are returned as
    they are.

    Raises:
        ValueError: resuming runs in ``out_dir`` that store no class split (written before
            comparisons stored it: resuming would split the data again as it is now), or
            runs that store different splits.
    """
    f = cfg["family"]
    if f["name"] not in _config.USER_FAMILIES:
        return cfg
    keys = [f"{s}_classes" for s in _config.USER_SPLITS]
    runs = Path(out_dir) / "runs" if out_dir is not None else None
    if resume and runs is not None and runs.is_dir():
        stored = {}
        for run_dir in sorted(p for p in runs.iterdir() if p.is_dir()):
            state = _stored_state(run_dir)
            fam = (state or {}).get("config", {}).get("family")
            if isinstance(fam, dict):
                stored[run_dir.name] = {k: list(fam.get(k) or []) for k in keys}
        none = [n for n, split in stored.items() if not any(split.values())]
        if none:
            raise ValueError(
                f"refusing to resume {out_dir}: the run(s) of {', '.join(none)} store no class "
                f"split (family.train_classes, val_classes and test_classes are empty: they "
                f"were written before a comparison stored its split), so resuming would split "
                f"the classes of {f['root']} again as they are now, and a class added or "
                f"removed since would move classes between training and held-out; re-run the "
                f"comparison without --resume, into a new --out")
        splits = {json.dumps(split, sort_keys=True) for split in stored.values()}
        if len(splits) > 1:
            raise ValueError(f"refusing to resume {out_dir}: its runs store different class "
                             f"splits (family.*_classes of {', '.join(stored)}); re-run the "
                             f"comparison without --resume, into a new --out")
        if stored and not any(f[k] for k in keys):
            return {**cfg, "family": {**f, **next(iter(stored.values()))}}
    return _build.resolve_split(cfg)


def run(cfg: dict, methods: Sequence[str] | str | None = None, *, out_dir=None,
        progress: bool = False, on_method: Callable[[str], None] | None = None,
        resume: bool = False, flags: dict[str, str] | None = None) -> dict:
    """Meta-train each method, then evaluate it on the config's held-out tasks.

    Every method gets the same training seed and the same held-out tasks (``eval.seed``).

    Args:
        cfg: a config from ``load_config``. methods: see ``methods_for``.
        out_dir: if given, each method's run (checkpoints, ``metrics.jsonl``) goes to
            ``out_dir/runs/<method>``.
        progress: per-iteration progress bars. on_method: called with each method's name
            before it starts.
        resume: continue the runs in ``out_dir`` of an interrupted comparison (each from its
            newest checkpoint, exactly; a finished one is only evaluated again). The result
            is the uninterrupted comparison's. On your own data every run stores the class
            split (``with_split``) and a fingerprint of the data (``metaloop.build.
            data_fingerprint``); a resume on changed data is refused, as is one with
            fewer methods than the runs in ``out_dir`` (the results would lose them).
        flags: config key -> the command-line flag that set it (``"eval.tasks"`` ->
            ``"--tasks"``), named beside the key where a resumed run's config differs.

    Returns:
        ``{"family", "metric" ("loss" or "accuracy"), "config", "methods": {name: the
        ``evaluate`` result, per-task values included}, "evaluation": {name: how its
        queries were scored}, "timing": {name: {"train_s", "eval_s", "threads" (torch's
        intra-op threads, ``torch.get_num_threads()``: a convolution model's numbers depend
        on it; each checkpoint stores it too, and a resume with another count warns),
        "resumed" (only for a run continued from a checkpoint: its train_s is the time it
        took to finish)}},
        "wall_s" (this call's), "learners": {name: learner}, "heldout": the held-out
        family}``.

    Raises:
        ValueError: a bad method list or an impossible per-method config, a regression
            family's ``train.seed`` equal to its ``eval.seed`` (training on the held-out
            tasks), an ``out_dir`` inside a ``folder`` family's root, runs in ``out_dir``
            without ``resume`` or none with it, runs to resume that store no class split
            or were trained on other data, before training.
        KeyboardInterrupt: after Ctrl-C/SIGTERM, once the method in training checkpointed.

    Warns:
        metaloop.config.SharedSplitWarning: ``eval.split`` shares classes with
            ``family.split``: every method would be scored on its training classes.
    """
    names = methods_for(cfg, methods)
    for key in ("iterations", "meta_batch"):
        if cfg["train"][key] <= 0:
            raise ValueError(f"--{key.replace('_', '-')} must be positive, got "
                             f"{cfg['train'][key]}")
    tseed, eseed = cfg["train"]["seed"], cfg["eval"]["seed"]
    trains = any(n not in NOT_META_TRAINED for n in names)
    if cfg["family"]["name"] in REGRESSION_FAMILIES and tseed == eseed and trains:
        raise ValueError(f"train.seed = eval.seed = {tseed}: {cfg['family']['name']}'s "
                         f"held-out tasks differ from its training tasks only by their seed, "
                         f"so every method would be trained on the tasks it is scored on; "
                         f"give them different seeds")
    check_out_outside_data(cfg["family"], out_dir)
    cfg = with_split(cfg, out_dir, resume)     # your own data: one class split, stored
    mcfgs = {name: method_config(cfg, name) for name in names}   # all checked before training
    _config.warn_shared_split(cfg)             # held out from the training classes?
    resumes = resumable(mcfgs, out_dir, resume, flags)
    t_start = time.perf_counter()
    family = _build.build_family(cfg["family"])
    heldout = _build.eval_family(cfg, family)
    _build.check_eval_shifts(cfg, heldout)     # test-time shifts need images, before training
    data = _build.data_fingerprint(cfg["family"], family, heldout)
    for name, again in resumes.items():        # changed data: refused before any training
        if again:
            run_dir = Path(out_dir) / "runs" / name
            check_resume_data(run_dir, _stored_state(run_dir) or {}, data)
    # torch imports torch._dynamo on a process's first optimizer (over a second on a CPU):
    # here, or the first method's train_s carried it (scratch, which trains nothing, first)
    import torch._dynamo  # noqa: F401
    results, learners, timing, evaluation = {}, {}, {}, {}
    for name, mcfg in mcfgs.items():
        if on_method is not None:
            on_method(name)
        tc, ec = mcfg["train"], mcfg["eval"]
        # the initial weights from train.seed (train seeds its own draws from it); the
        with seeded_rng(tc["seed"]):               # caller's RNG is as it was (on the CPU)
            learner = _build.build_learner(mcfg, family)
            learner.model.to(dtype=getattr(torch, tc["dtype"]))   # as metaloop train does
            t0 = time.perf_counter()
            train(learner, _build.training_family(mcfg, family), iterations=tc["iterations"],
                  meta_batch=tc["meta_batch"], lr=tc["lr"], lr_schedule=tc["lr_schedule"],
                  clip_grad_norm=tc["clip_grad_norm"], seed=tc["seed"],
                  out_dir=None if out_dir is None else Path(out_dir) / "runs" / name,
                  checkpoint_every=tc["checkpoint_every"], config=mcfg, progress=progress,
                  desc=name, optimizer=tc["optimizer"],
                  weight_decay=tc["weight_decay"], resume=resumes[name], data=data,
                  prefetch={"on": True, "off": False}.get(tc["prefetch"], "auto"),
                  log_every=tc["log_every"] or None)
            t1 = time.perf_counter()
        results[name] = evaluate(learner, heldout, tasks=ec["tasks"], steps=ec["steps"],
                                 seed=ec["seed"], support_shift=ec["support_shift"],
                                 query_shift=ec["query_shift"])
        timing[name] = {"train_s": t1 - t0, "eval_s": time.perf_counter() - t1,
                        "threads": torch.get_num_threads(),     # (torch: imported above)
                        **({"resumed": True} if resumes[name] else {})}
        evaluation[name] = getattr(learner, "evaluation", "transductive")
        learners[name] = learner
    metric = "accuracy" if "accuracy" in next(iter(results.values())) else "loss"
    return {"family": cfg["family"]["name"], "metric": metric, "config": cfg,
            "methods": results, "evaluation": evaluation, "timing": timing,
            "wall_s": time.perf_counter() - t_start, "learners": learners, "heldout": heldout}


def queries_per_task(cfg: dict) -> int | None:
    """The queries each held-out task of ``cfg`` scores (``ways x queries``; None for a
    regression family): the trials per task that bound an accuracy's 95% CI at 0 or 100%,
    as ``metaloop eval`` passes them (``metaloop.evaluate.records.queries_per_task``)."""
    from metaloop.evaluate.records import queries_per_task

    return None if cfg["family"]["name"] in REGRESSION_FAMILIES else queries_per_task(cfg)


def record(result: dict) -> dict:
    """The JSON record of a ``run`` (what ``metaloop compare`` writes to results.json): the
    config, the metric, and each method's means and 95% CIs per step with the per-task
    values they come from (``per_task``, as ``evaluate`` gives them) and, for
    classification, ``trials``: the queries scored over all its tasks (tasks x ways x
    queries, as a ``metaloop eval --record`` record keeps them), so that every printed
    interval can be recomputed (``metaloop.evaluate.records.ci95_fields``) and two runs on
    the same tasks compared task by task. No timings: the same config and seed give the
    same record."""
    per = queries_per_task(result["config"]) if result["metric"] == "accuracy" else None
    methods = {k: {**v, **({"trials": int(v["tasks"]) * per} if per is not None else {})}
               for k, v in result["methods"].items()}
    return {"family": result["family"], "config": result["config"], "metric": result["metric"],
            "evaluation": result["evaluation"], "methods": methods}

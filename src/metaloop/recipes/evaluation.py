"""Held-out evaluation of a saved run (``metaloop eval``), with the original Omniglot
challenge's error rate.

``evaluate_run(run, **changes)`` evaluates a loaded run (``metaloop.runs.load_run``) on the
held-out tasks of its config's ``[eval]`` section, with any of its keys changed, and returns
the mean and 95% CI per adaptation step. With ``within_alphabet=True`` on Omniglot (``split=
"evaluation", ways=20, shots=1``: Lake et al.'s one-shot challenge), every task's characters
come from one alphabet and the error rate over the trials is reported too.

``load_ensemble(paths)`` loads several runs as one ``Run`` whose learner is a
``metaloop.meta.Ensemble`` (``metaloop eval --checkpoint RUN RUN ...``): every member adapts
to each task with its own method settings (step sizes, ridge strength, Newton steps, model)
and their probabilities are averaged. The ``[eval]`` settings are the members' common ones:
``eval_config`` refuses members whose ``[eval]`` sections disagree on a key that no change
sets for all of them (``eval.steps`` is compared only between members that take steps).

``scoring`` (``eval.scoring``, ``metaloop eval --scoring``) scores a run's queries
transductively or each on its own whatever it was trained with, for the learners that can
(Reptile and the solved heads). ``refining`` (``eval.refine``, ``metaloop eval --refine``)
refines a ProtoNet's prototypes with each task's unlabelled queries before scoring them.

The held-out data of a run on the user's data is checked against the run's stored
fingerprint as it is read, at a ``--data-root`` (``metaloop.runs.check_moved_data``) and at
the stored ``family.root`` alike (``metaloop.runs.check_own_data``): examples that
changed since the run read them are refused by class, not scored.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from contextlib import contextmanager
from pathlib import Path

import torch

from metaloop import config, runlock
from metaloop._callable import check_progress
from metaloop.adapt.proto_head import REFINE_TEMPERATURE, REFINE_WEIGHT
from metaloop.evaluate import evaluate
from metaloop.meta.ensemble import Ensemble
from metaloop.recipes.predict import score_lake_runs, takes_steps
from metaloop.runs import (
    TASK_KEYS,
    Run,
    check_inputs,
    check_own_data,
    load_pinned,
    read_heldout,
)
from metaloop.train.loop import on_model

__all__ = ["check_distinct", "check_own_data", "checkpoint_identity", "error_rate",
           "eval_config", "evaluate_lake_runs", "evaluate_run", "in_progress",
           "in_progress_note", "load_ensemble", "loaded_checkpoint", "members", "refining",
           "run_label", "scoring", "unfinished", "warn_shared_split"]

# what every member of an ensemble must share with the first: the data and inputs it reads,
# and the classes it holds out (training ways and splits may differ)
SAME_FAMILY = ("name", "root", "image_size", "channels", "invert", "class_depth",
               "val_classes", "test_classes", "encoder", "max_length", "text_column",
               "label_column", "quoting")

EVAL_KEYS = ("tasks", "shots", "ways", "split", "within_alphabet", "drawers", "steps",
             "queries", "seed", "support_shift", "query_shift", "scoring", "refine",
             "refine_temperature", "refine_weight", "refine_jointly")

# the [eval] keys that tune a refinement: an ensemble's members may differ in them when
# nothing is refined
REFINE_SETTINGS = ("refine_temperature", "refine_weight", "refine_jointly")

# the [eval] keys of the held-out tasks' size (0: the family's)
TASK_SIZES = ("ways", "shots", "queries")

# the [eval] keys that metaloop eval sets by a flag of the same name
FLAGGED = ("tasks", "shots", "ways", "split", "steps", "within_alphabet", "drawers",
           "support_shift", "query_shift", "scoring", "refine", "refine_temperature",
           "refine_weight", "refine_jointly")


@contextmanager
def scoring(learner, how: str):
    """Score queries ``how`` while active: ``"as-trained"`` (no change), ``"transductive"``
    or ``"non-transductive"`` (``eval.scoring``), for the learner or every member of an
    ``Ensemble``; each learner's own mode is restored afterwards. Non-transductive scoring
    also leaves out a refinement the learner was trained with (``method.refine``), which
    would score a task's queries together.

    Raises:
        ValueError: an unknown ``how``, or a learner that cannot change how it scores
            (only Reptile and the solved heads can; named).
    """
    if how not in config.SCORING:
        raise ValueError(f"scoring must be one of {list(config.SCORING)}, got {how!r}")
    if how == "as-trained":
        yield
        return
    members = _members(learner)
    for m in members:
        if not hasattr(m, "transductive"):
            raise ValueError(f"eval.scoring = {how!r}: {type(m).__name__} always scores a "
                             f"task's queries together; reptile, r2d2, metaoptnet and "
                             f"protonet can score them either way")
    off = {"refine": 0} if how == "non-transductive" else {}
    with _set_on([m for m in members if hasattr(m, "refine")] if off else [], **off), \
            _set_on(members, transductive=how == "transductive"):
        yield


@contextmanager
def refining(learner, steps: int, temperature: float = REFINE_TEMPERATURE,
             weight: float = REFINE_WEIGHT, jointly: bool = False):
    """Refine the prototypes with each task's queries while active (``eval.refine``): ``steps``
    soft k-means rounds at ``temperature``, the queries weighing ``weight`` times the support
    set (``metaloop.adapt.refine_prototypes``), for the learner or every member of an
    ``Ensemble``; each learner's own setting is restored afterwards. ``steps = 0`` scores
    the plain prototypes, also those of a run trained with refined ones (``method.refine``),
    and leaves learners without prototypes alone. Enter it after ``scoring``. ``jointly``
    (``eval.refine_jointly``): an ensemble's members share one assignment of the queries
    (``Ensemble.refine_jointly``); a single learner is unaffected.

    Raises:
        ValueError: a learner without prototypes (only ProtoNet has them) or one that scores
            each query on its own (named).
    """
    members = _members(learner)
    if not steps:
        with _set_on([m for m in members if hasattr(m, "refine")], refine=0):
            yield
        return
    for m in members:
        if not hasattr(m, "refine"):
            raise ValueError(f"eval.refine = {steps}: {type(m).__name__} has no prototypes to "
                             f"refine; only protonet has")
    ensemble = [learner] if isinstance(learner, Ensemble) else []
    with _set_on(members, refine_temperature=temperature, refine_weight=weight, refine=steps), \
            _set_on(ensemble, refine_jointly=jointly):
        yield


def _members(learner) -> list:
    """The learners that score: an ``Ensemble``'s members, or the learner itself."""
    return learner.members if isinstance(learner, Ensemble) else [learner]


@contextmanager
def _set_on(members: list, **values):
    """Set the attributes ``values``, in their order, on every member while active; each
    member's own values are restored afterwards, in the reverse order (so a setting that
    depends on another is undone first), also when setting one fails."""
    before = [{k: getattr(m, k) for k in values} for m in members]
    try:
        for m in members:
            for k, v in values.items():
                setattr(m, k, v)
        yield
    finally:
        for m, b in zip(members, before):
            for k in reversed(b):
                setattr(m, k, b[k])


def members(run: Run) -> list[dict]:
    """What an ensemble is made of: ``[{"checkpoint": path, "method": method.name}]``, one
    per member in order (a single run: itself)."""
    return [{"checkpoint": str(m.path), "method": m.config["method"]["name"]}
            for m in getattr(run, "members", None) or [run]]


def run_label(run: Run) -> str:
    """How tables name a run: its method; an ensemble of one method ``"protonet, ensemble
    of 2 runs"``; of several ``"ensemble of 3 runs (maml, r2d2, protonet)"`` (the members'
    methods in order)."""
    methods = [m["method"] for m in members(run)]
    if len(methods) == 1:
        return methods[0]
    if len(set(methods)) == 1:
        return f"{methods[0]}, ensemble of {len(methods)} runs"
    return f"ensemble of {len(methods)} runs ({', '.join(methods)})"


def warn_shared_split(run: Run, cfg: dict) -> list[str]:
    """Warn (``metaloop.config.SharedSplitWarning``) for each run, or ensemble member, whose
    meta-training split shares classes with the held-out split of ``cfg`` (``eval.split``):
    its score would be on training classes. Returns the messages."""
    runs = getattr(run, "members", None) or [run]
    out = []
    for m in runs:
        where = f"{m.path}: " if len(runs) > 1 else ""
        text = config.warn_shared_split(cfg, family=m.config["family"], where=where)
        if text is not None:
            out.append(text)
    return out


def warn_init_split(run: Run, cfg: dict) -> list[str]:
    """Warn (``metaloop.recipes.training.InitSplitWarning``) for each run, or ensemble
    member, started from another run's weights (``train.init``) that meta-trained on classes
    of the held-out split of ``cfg`` (``eval.split``): its score is partly on classes its
    weights have seen. Returns the messages."""
    from metaloop.recipes.training import BUILTIN_SPLITS, InitSplitWarning, init_split_leak

    runs = getattr(run, "members", None) or [run]
    split = cfg["eval"]["split"]
    out = []
    for m in runs:
        own = {**cfg, "family": m.config["family"], "train": m.config["train"]}
        text = init_split_leak(own, [split], digests=(m.data or {}).get("classes")) \
            if split in config.USER_SPLITS or own["family"]["name"] in BUILTIN_SPLITS \
            else None
        if text is not None:
            text = f"{m.path}: {text}" if len(runs) > 1 else text
            warnings.warn(text, InitSplitWarning, stacklevel=2)
            out.append(text)
    return out


def eval_config(run: Run, **changes) -> dict:
    """The run's validated config with the ``[eval]`` keys in ``changes`` replaced (None
    leaves a key as it is). A run (every member of an ensemble) whose head is solved, not
    stepped (r2d2, metaoptnet, protonet), is evaluated after step 0 alone unless ``changes``
    gives ``steps``: every other step would score the same.

    An ensemble (``load_ensemble``) is evaluated with its members' common ``[eval]`` keys: a
    key that ``changes`` gives applies to every member; any other must be the same in every
    member's config (``steps`` in those of the members that take steps, which decide it
    even when the first run is a solved head; ``refine_temperature``, ``refine_weight`` and
    ``refine_jointly`` only when the prototypes are refined; ``ways``, ``shots`` and
    ``queries`` as the tasks they draw, 0 being the member's ``family`` value).

    Raises:
        ValueError: an unknown key, an impossible held-out config (naming the key), an
            ensemble member whose learned head has another number of outputs than the
            held-out tasks have ways (naming the run), or ensemble members whose configs
            give an ``[eval]`` key that ``changes`` leaves alone different values (naming
            the key and both runs).
    """
    bad = sorted(set(changes) - set(EVAL_KEYS))
    if bad:
        raise ValueError(f"unknown eval key(s) {bad}; valid: {list(EVAL_KEYS)}")
    given = {k: v for k, v in changes.items() if v is not None}
    ec = {**run.config["eval"], **_members_eval(run, given), **given}
    if changes.get("steps") is None and not takes_steps(run):
        ec["steps"] = [0]              # a solved head: steps would repeat step 0's score
    # named by its flag, before the config's own check (which names a str or a float)
    if isinstance(ec["tasks"], int) and ec["tasks"] <= 0:
        raise ValueError(f"--tasks must be positive, got {ec['tasks']}")
    cfg = config.validate({**run.config, "eval": ec})
    config.check_combinations(cfg)
    _check_member_heads(run, cfg)
    _check_member_tasks(run, given)
    return cfg


def _members_eval(run: Run, given: dict) -> dict:
    """The ``[eval]`` keys an ensemble's members share and ``given`` (the changes, which
    apply to every member) leaves alone, each as the first member it applies to has it;
    ``{}`` for a single run.

    Raises:
        ValueError: a member whose config gives one of them another value than that member
            (naming the key, both runs and the flag of ``metaloop eval`` that sets it).
    """
    runs = getattr(run, "members", None)
    if not runs or len(runs) < 2:
        return {}
    shared: dict = {}
    for key in EVAL_KEYS:                     # refine before the keys that tune it
        if key in given or key in TASK_SIZES:       # those: _check_member_tasks
            continue
        refine = given.get("refine", shared.get("refine"))
        if key in REFINE_SETTINGS and not refine:
            continue                           # nothing refined: they change nothing
        these = [m for m in runs if key != "steps" or takes_steps(m)]
        if not these:                          # every member a solved head: steps [0]
            continue
        first, value = these[0], these[0].config["eval"][key]
        for m in these[1:]:
            other = m.config["eval"][key]
            if _eval_value(key, other) != _eval_value(key, value):
                who = "the first run that takes steps" if key == "steps" and \
                    first is not runs[0] else "the first run"
                raise ValueError(f"ensemble: {m.path} has eval.{key} = {other!r}, {who} "
                                 f"({first.path}) {value!r}; the members are evaluated "
                                 f"together with one eval.{key}: {_fix(key)}")
        shared[key] = value
    return shared


def _check_member_tasks(run: Run, given: dict) -> None:
    """ValueError unless every member of an ensemble would draw held-out tasks of as many
    ways, shots and queries as the first: ``eval.ways = 0`` (shots, queries) is its own
    ``family.ways``, which members trained otherwise differ in. A key in ``given`` (the
    changes) applies to every member."""
    runs = getattr(run, "members", None) or [run]
    for key in TASK_SIZES:
        if key in given:
            continue
        (first, value), *others = [(m, _task_size(m, key)) for m in runs]
        for m, other in others:
            if other != value:
                raise ValueError(f"ensemble: {m.path} draws held-out tasks of {other} {key} "
                                 f"({_said(m, key)}), the first run ({first.path}) {value} "
                                 f"({_said(first, key)}); the members are evaluated on the "
                                 f"same tasks: {_fix(key)}")


def _task_size(run: Run, key: str) -> int:
    """The held-out tasks' ``ways``, ``shots`` or ``queries`` in a run's config."""
    return run.config["eval"][key] or run.config["family"][key]


def _said(run: Run, key: str) -> str:
    """Where a run's config says ``_task_size``."""
    value = run.config["eval"][key]
    return f"eval.{key} = {value}" if value else f"eval.{key} = 0: its family.{key}"


def _fix(key: str) -> str:
    """How a user gives every member of an ensemble one ``eval.key``."""
    flag = f"--{key.replace('_', '-')}" if key in FLAGGED else None
    if key in ("within_alphabet", "refine_jointly"):      # switches: on or off
        assert flag is not None                           # both are FLAGGED
        flag = f"{flag} or --no-{flag[2:]}"
    return (f"give {flag} (metaloop eval) to set it for every member, or " if flag
            else "give ") + f"every member's config the same eval.{key}"


def _eval_value(key: str, value):
    """An ``[eval]`` value as members compare it: ``steps`` as ``evaluate`` reads them
    (sorted, repeats once), every other key as it is."""
    return sorted(set(value)) if key == "steps" else value


def _check_member_heads(run: Run, cfg: dict) -> None:
    """ValueError unless every classifying member of an ensemble with a learned head has one
    output per way of the held-out tasks (the first run's config checks only its own)."""
    members = getattr(run, "members", None)
    if not members or getattr(run.learner, "combine", None) != "probabilities":
        return
    ways = cfg["eval"]["ways"] or cfg["family"]["ways"]
    for m in members:
        head = getattr(m.network, "head", None)
        outputs = head.out_features if isinstance(head, torch.nn.Linear) else None
        learned = getattr(getattr(m.learner, "inner", None), "head_init", None) == "learned"
        if learned and outputs is not None and outputs != ways:
            raise ValueError(f"ensemble: {m.path} has a learned head of {outputs} outputs "
                             f"({m.config['method']['name']} trained "
                             f"{m.config['family']['ways']}-way), but the held-out tasks are "
                             f"{ways}-way; every member with a learned head must have one "
                             f"output per way (the pretrain baseline, protonet, r2d2 and "
                             f"metaoptnet take any number)")


def load_ensemble(paths, *, device=None, head_init: str = "checkpoint",
                  same: tuple[str, ...] = SAME_FAMILY, data_root=None) -> Run:
    """Load several runs as one ``Run`` whose learner averages them (``metaloop.meta.Ensemble``).

    Args:
        paths: two or more run (or ``ckpt-*``) directories, e.g. one config trained with
            different seeds (``metaloop train --seed``); one path loads that run alone.
        device: as ``metaloop.runs.load_run``, for every member.
        head_init: as ``metaloop.runs.load_run``, for every member.
        same: the ``family`` keys every member must share with the first (default: what
            the held-out tasks depend on; ``metaloop predict``, which draws no tasks, asks
            only that the members read their inputs alike).
        data_root: None, or where the runs' own data is now (``metaloop eval
            --data-root``): every member reads it there (``metaloop.runs.load_run``), and
            the held-out tasks read are checked against each member's stored fingerprint.

    Returns:
        A ``Run`` with the first run's path, config and iteration, and an ``Ensemble``
        learner; ``Run.members`` lists the loaded runs. ``eval_config`` evaluates it with
        the ``[eval]`` keys its members share (members that differ in one are refused there,
        where a change can still set it for all). Each loaded run (the one, or each member)
        has ``checkpoint_dir``: the ``ckpt-*`` folder it was loaded from, and ``state``: that
        folder's ``state.json`` as read then (``metaloop.runs.load_pinned``).
        With ``data_root``, an ensemble's ``stored_root`` is its first member's.

    Raises:
        ValueError: no paths, a path that is not a run (named), a run folder whose
            ``LATEST`` moved during each of ``metaloop.runs.LOAD_TRIES`` loads, a run whose
            task family differs from the first's in a key the held-out tasks depend on
            (``root``: the folder the data are read from, however it is named), or whose
            ``train.dtype`` differs from the first's (named).
    """
    paths = [paths] if isinstance(paths, (str, bytes)) or not hasattr(paths, "__iter__") \
        else list(paths)
    if not paths:
        raise ValueError("load_ensemble needs at least one run directory")
    runs = [load_pinned(Path(p), device=device, head_init=head_init, data_root=data_root)
            for p in paths]
    if len(runs) == 1:
        return runs[0]
    first = runs[0].config["family"]
    for r in runs[1:]:
        fam = r.config["family"]
        for key in same:
            if _data_key(fam, key) != _data_key(first, key):
                raise ValueError(f"ensemble: {r.path} has family.{key} = {fam.get(key)!r}, the "
                                 f"first run ({runs[0].path}) {first.get(key)!r}; every member "
                                 f"must be trained on the same kind of task")
        if r.config["train"]["dtype"] != runs[0].config["train"]["dtype"]:
            raise ValueError(f"ensemble: {r.path} has train.dtype = "
                             f"{r.config['train']['dtype']!r}, the first run ({runs[0].path}) "
                             f"{runs[0].config['train']['dtype']!r}; every member must compute "
                             f"in the same dtype")
    learner = Ensemble([r.learner for r in runs])
    ens = Run(path=runs[0].path, config=runs[0].config, learner=learner,
              iteration=runs[0].iteration, stored_root=runs[0].stored_root)
    ens.members = runs  # type: ignore[attr-defined]  # an ensemble's Run: read by getattr
    ens.heldout_config = lambda: _heldout_config(ens)
    return ens


def _heldout_config(ens: Run) -> dict:
    """The config whose ``[eval]`` draws an ensemble's held-out tasks (``Run.heldout``):
    the members' common task keys (``runs.TASK_KEYS``, as ``eval_config`` takes them); the
    keys that only say how the tasks are scored are the first run's (members may differ in
    them: ``metaloop eval`` refuses that unless a flag sets the key).

    Raises:
        ValueError: members that would draw other tasks, named as ``eval_config`` names them.
    """
    scored = {k: v for k, v in ens.config["eval"].items() if k not in TASK_KEYS}
    return eval_config(ens, **scored)


def _checkpoint_dir(run: Run) -> Path:
    """The ``ckpt-*`` folder a run was loaded from (resolved): the one ``load_ensemble``
    recorded as it loaded the run (``metaloop.runs.load_pinned``); for a ``Run`` loaded
    otherwise, its path, or a run folder's ``LATEST`` as it is now."""
    if run.checkpoint_dir is not None:
        return run.checkpoint_dir
    path = Path(run.path)
    latest = path / "LATEST"
    if latest.is_file():
        path = path / latest.read_text(encoding="utf-8").strip()
    return path.resolve()


def check_distinct(run: Run) -> None:
    """ValueError naming two members of an ensemble (``load_ensemble``) loaded from one
    checkpoint (a run given twice, or a run folder and the ``ckpt-*`` folder its ``LATEST``
    named when it was loaded; one written since changes nothing):
    ``metaloop eval`` would report "an ensemble of 2 runs", and its record sum that run's
    budget twice, for what is that one run.

    Raises:
        ValueError: two of ``run.members`` (a single run is its own only member) come from
            the same ``ckpt-*`` folder, naming them and the folder.
    """
    seen: dict[Path, Run] = {}
    for r in getattr(run, "members", None) or [run]:
        ckpt = _checkpoint_dir(r)
        if ckpt in seen:
            what = f"{r.path} is given twice" if str(r.path) == str(seen[ckpt].path) else \
                f"{seen[ckpt].path} and {r.path} are one checkpoint"
            raise ValueError(f"ensemble: {what} ({ckpt}): an ensemble of it is that one run, "
                             f"counted twice; give each run once")
        seen[ckpt] = r


def checkpoint_identity(run: Run) -> str:
    """The checkpoint ``run`` was loaded from, as ``metaloop adapt``'s identity records its
    ``--model``: ``"<ckpt-* name> sha256 <the first 16 hex digits of the sha256 of its
    tensors.safetensors>"``, the same for a run folder and for its ``ckpt-*`` folder (a run
    loaded by ``metaloop.runs.load_pinned``, as ``load_ensemble`` loads each member; another:
    its ``ckpt-*`` folder's name alone). A checkpoint written since changes nothing."""
    ckpt = _checkpoint_dir(run)
    digest = (run.state or {}).get("tensors_sha256")
    return f"{ckpt.name} sha256 {digest[:16]}" if isinstance(digest, str) else ckpt.name


def unfinished(run: Run) -> bool:
    """Whether ``run`` was loaded from a run folder whose checkpoint is short of its
    config's ``train.iterations`` (a run stopped early, or one still training); not a
    ``ckpt-*`` folder given on purpose, nor a run with nothing to meta-train (``scratch``:
    its one checkpoint is at iteration 0, and it is finished)."""
    return (getattr(run.learner, "meta_trains", True) and (Path(run.path) / "LATEST").is_file()
            and run.iteration < run.config["train"]["iterations"])


def in_progress(run: Run) -> dict | None:
    """The process training into the run folder ``run`` was loaded from, now (its lock
    held: ``metaloop.runlock.writer``'s pid, host and command), where ``run`` is
    ``unfinished``; None otherwise: a finished run, one that stopped (its lock free), a
    ``ckpt-*`` folder given on purpose, or a run with nothing to meta-train."""
    return runlock.writer(run.path) if unfinished(run) else None


def in_progress_note(run: Run, writer: dict, then: str) -> str:
    """The note printed (on stderr) for a ``run`` that ``writer`` (``in_progress``) still
    trains: its folder, the process, the iteration and identity of the checkpoint loaded
    (its newest complete one), and ``then`` (what the command does with it)."""
    import socket
    host = writer.get("host")
    on = f" on host {host}" if host and host != socket.gethostname() else ""
    return (f"note: {run.path} is in progress (pid {writer.get('pid', '?')}{on}, iteration "
            f"{run.iteration} of {run.config['train']['iterations']} in its newest "
            f"checkpoint, {checkpoint_identity(run)}); {then}")


def loaded_checkpoint(run: Run, writer: dict | None) -> dict:
    """Which checkpoint the one run ``run`` was loaded from, as ``metaloop eval`` and
    ``predict`` write it into results.json (a list of these, one per member of an ensemble,
    in the order given): ``{"run_dir": the folder given, "checkpoint": the ckpt-* folder's
    name, "iteration", "identity": checkpoint_identity, "in_progress": whether ``writer``
    (``in_progress(run)``, read once by the caller, which notes it) was training into the
    folder}``."""
    return {"run_dir": str(run.path), "checkpoint": _checkpoint_dir(run).name,
            "iteration": run.iteration, "identity": checkpoint_identity(run),
            "in_progress": writer is not None}


def _data_key(family: dict, key: str):
    """A ``family`` key as an ensemble's members compare it: ``root`` as the folder (or file)
    the data are read from, so that one data set named two ways is one (``data/x`` and
    ``./data/x``; Omniglot or Fashion-MNIST found by the default search, ``root = ""``, and
    named by its folder); every other key as it is."""
    value = family.get(key)
    if key != "root":
        return value
    if family.get("name") in config.USER_FAMILIES:
        return str(Path(value).expanduser().resolve()) if value else value
    from metaloop.data import fashion_mnist, omniglot

    data = {"omniglot": omniglot, "fashion_mnist": fashion_mnist}.get(family.get("name"))  # type: ignore[arg-type]  # None: no such family
    for folder in data.search_dirs(value or None) if data is not None else ():
        if folder.is_dir() and any(folder.iterdir()):   # the first that holds files
            return str(folder.resolve())
    return value


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
        progress: called with 0 once the held-out data is read and checked (a caller
            can draw its progress bar then, after any data error), then with the number of
            tasks finished in each chunk.
        **changes: ``[eval]`` keys to change (``EVAL_KEYS``): tasks, shots, ways, split,
            within_alphabet, drawers, steps, queries, seed, support_shift and query_shift
            (test-time shifts of the support and the query images, see
            ``metaloop.evaluate.evaluate``), scoring (``scoring``), and refine,
            refine_temperature, refine_weight and refine_jointly (``refining``).

    Returns:
        ``{"config": the config evaluated, "metric": "accuracy" or "loss", "result":
        ``evaluate``'s result (per-task values included), "evaluation": how the queries were
        scored ("transductive" or the learner's own label), "error_rate": ``error_rate`` for
        within-alphabet classification, else None, "dropped": the held-out classes that
        ``family.drop_small`` left out (user data; else empty)}``.

    Raises:
        ValueError: the held-out data's errors (``metaloop.build.eval_family``: the data
            moved, classes gone, too few examples), a tensor file whose examples are no
            longer of the shape the run was trained on, for a run loaded with
            ``data_root``, data there that is not the run's own (``metaloop.runs
            .check_inputs``), or, for a run read at its stored ``family.root``, held-out
            examples that changed since it read them (``check_own_data``).

    Warns:
        metaloop.config.SharedSplitWarning: the held-out split shares classes with the split
            the run (a member) meta-trained on (``warn_shared_split``).
        metaloop.recipes.training.InitSplitWarning: the run (a member) started from the
            weights of a run that meta-trained on held-out classes (``warn_init_split``).
    """
    if config is not None and changes:
        raise ValueError("give the eval changes or a config from eval_config, not both")
    progress = check_progress("evaluate_run", progress)        # before the held-out data is read
    cfg = config if config is not None else eval_config(run, **changes)
    ec = cfg["eval"]
    warn_shared_split(run, cfg)
    warn_init_split(run, cfg)
    heldout = read_heldout(run, cfg)
    check_inputs(run, heldout)       # a tensor file changed since training, changed data
    if progress is not None:
        progress(0)                                 # the tasks are read: none scored yet
    device = None if device is None or torch.device(device).type == "cpu" else \
        torch.device(device)
    with scoring(run.learner, ec["scoring"]), \
            refining(run.learner, ec["refine"], ec["refine_temperature"], ec["refine_weight"],
                     ec["refine_jointly"]):
        # the tasks in the model's dtype, as training's validation casts them: a float64
        # run is evaluated in float64
        r = evaluate(run.learner, on_model(heldout, run.learner.model), tasks=ec["tasks"],
                     steps=ec["steps"], seed=ec["seed"], device=device, progress=progress,
                     support_shift=ec["support_shift"], query_shift=ec["query_shift"])
        evaluation = getattr(run.learner, "evaluation", "transductive")
    metric = "accuracy" if "accuracy" in r else "loss"
    within = ec["within_alphabet"] and metric == "accuracy"
    return {"config": cfg, "metric": metric, "result": r,
            "evaluation": evaluation,
            "error_rate": error_rate(cfg, r) if within else None,
            "dropped": list(getattr(heldout, "dropped", None) or [])}


def evaluate_lake_runs(run: Run, root, config: dict) -> dict:
    """The error rate on the official runs of the Omniglot one-shot challenge in ``root``
    (``metaloop eval --lake-runs``), scored with ``config``'s ``[eval]`` test-time settings:
    support and query shifts, scoring, the refinement, and the largest of its
    ``steps``.

    Args:
        run: a loaded run or ensemble (``load_ensemble``). root: Lake's ``all_runs`` folder
            unpacked, or one run folder. config: from ``eval_config(run, ...)``.

    Returns:
        ``metaloop.recipes.predict.score_lake_runs``'s result, with ``"evaluation"``: how
        the queries were scored.
    """
    ec = config["eval"]
    with scoring(run.learner, ec["scoring"]), \
            refining(run.learner, ec["refine"], ec["refine_temperature"], ec["refine_weight"],
                     ec["refine_jointly"]):
        res = score_lake_runs(run, root, steps=max(ec["steps"]),
                              support_shift=ec["support_shift"], query_shift=ec["query_shift"])
        res["evaluation"] = getattr(run.learner, "evaluation", "transductive")
    return res

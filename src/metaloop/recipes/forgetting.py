"""The forgetting experiment (``metaloop forgetting``): continual fine-tuning with and
without the remedies for forgetting, over seeds.

For each seed, experience 0 is learned once (plain training) and every strategy then
fine-tunes that same model through the rest of the stream. ``run`` returns, as mean ± 95% CI
over the seeds: new-task accuracy (the last experience), old-task accuracy (the earlier ones,
at the end), the fraction of each earlier experience's accuracy retained, forgetting,
backward transfer (BWT) and the average accuracy, with the accuracy matrices and curves;
``write`` saves results.json, metrics.jsonl (every evaluation during fine-tuning),
old_accuracy_vs_steps.png, accuracy_matrix.png and runs.json (``RUNS``).

With ``out``, ``run`` keeps each finished (seed, strategy) run in ``out/partial.json``
(``PARTIAL``), and ``run(..., out=out, resume=True)`` continues from them to the results of a
run never stopped, or adds seeds to them; ``write`` moves ``partial.json`` to ``runs.json``
(``RUNS``) after results.json, so that a resume may add seeds to a finished run too.

    s = settings("two-task", strategies="naive,replay,joint", seeds=3)
    runs, results = run(s, experiences("two-task"))

On your own data (an image folder ``root/<class>/<image>`` or a ``.npz``/``.pt`` file):
``experiences("split-data-class", data="photos", classes_per_experience=2)``.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import textwrap
import time
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, cast

import torch

from metaloop import runs_folder
from metaloop._random import seeded_rng
from metaloop.continual import metrics, plots
from metaloop.continual.finetune import finetune_experience
from metaloop.continual.heads import init_params
from metaloop.continual.replay import check_replay_ratio
from metaloop.continual.scenarios import SCENARIOS
from metaloop.continual.sequence import STRATEGIES, chosen_step, run_sequence
from metaloop.evaluate.heldout import format_mean_ci, mean_ci
from metaloop.models import MLP
from metaloop.recipes import _partial, report
from metaloop.recipes._record_setting import check_same_setting, old_record
from metaloop.tasks.episodes import describe_folder, describe_report, folder_report
from metaloop.train.checkpoint import WriteError, atomic_write_text

__all__ = ["DATA_OPTIONS", "DATA_SCENARIOS", "DEFAULTS", "FILES", "HEADLINE", "METRICS",
           "PARTIAL", "PUBLISHED", "RECORD_TABLE", "RUNS", "STRATEGY_DEFAULTS",
           "STRATEGY_OPTIONS",
           "UNITS", "accuracy_trials", "adds_seeds", "check_records", "check_resume",
           "describe_folder", "early_stop_note", "experiences", "finished", "finished_seeds",
           "forgetting_table",
           "identity", "kept", "record_path", "records", "run", "settings", "table",
           "total_steps", "write"]

# Per-scenario defaults, sized so that six strategies x 3 seeds take < 15 min on 2 cores.
# The network is van de Ven et al.'s Split-MNIST MLP with 256 instead of 400 units.
DEFAULTS = {
    "two-task": {"steps": 500, "batch_size": 128, "eval_every": 50},
    "split-fmnist-task": {"steps": 200, "batch_size": 128, "eval_every": 50},
    "split-fmnist-class": {"steps": 200, "batch_size": 128, "eval_every": 50},
    "omniglot-alphabets": {"steps": 150, "batch_size": 64, "eval_every": 25},
    "split-data-task": {"steps": 200, "batch_size": 64, "eval_every": 25},
    "split-data-class": {"steps": 200, "batch_size": 64, "eval_every": 25},
}
# The scenarios on the user's own data (``--data``).
DATA_SCENARIOS = ("split-data-task", "split-data-class")
# The options of ``experiences`` that choose the data, recorded in results.json to reproduce
# a result (``root``, where the built-in data lies, changes nothing in it).
DATA_OPTIONS = ("data", "train_per_class", "val_per_class", "test_per_class", "alphabets",
                "classes_per_experience", "image_size", "channels", "skip_corrupt",
                "class_depth", "drop_small")
# The class setting of each scenario on your own data: a head per experience, or one shared.
_DATA_SETTING = {"split-data-task": "task", "split-data-class": "class"}
# The strategy options, their defaults and the strategies that read them; ``joint`` replays
# all earlier data at its own ratio, so it reads neither replay option.
STRATEGY_DEFAULTS = {"replay_ratio": 0.1, "head_weight": 1.0, "temperature": 2.0,
                     "lora_rank": 8}
STRATEGY_OPTIONS = {"replay_ratio": ("replay", "replay+heads"),
                    "buffer_size": ("replay", "replay+heads"),
                    "head_weight": ("heads", "replay+heads"),
                    "temperature": ("heads", "replay+heads"),
                    "lora_rank": ("lora",)}
# Seed s learns experience 0 with torch seed s and fine-tunes with FINETUNE_SEED + s; the
# seeds torch takes.
FINETUNE_SEED = 1000
SEED_RANGE = (-2**63, 2**64 - 1 - FINETUNE_SEED)
METRICS = (("new_accuracy", "new acc"), ("old_accuracy", "old acc"), ("retained", "retained"),
           ("forgetting", "forgetting"), ("bwt", "BWT"), ("average_accuracy", "avg acc"))
# The records (``records``): their table, and the metric each scenario's row shows (the
# others go in ``other_metrics``): a stream of two experiences is summed up by what it
# retains of the first, a longer one by its average accuracy.
RECORD_TABLE = "continual"
HEADLINE = {"two-task": "retained"}
# The metrics that are accuracies in % (``retained`` may pass 100, forgetting and BWT are
# differences): a record of one carries the 95% CI kept in [0, 100] where mean ± ci95 leaves
# it (``records``: ``ci95_low``, ``ci95_high``, ``ci95_range``).
_ACCURACIES = ("new_accuracy", "old_accuracy", "average_accuracy")
_BOUNDED = ("ci95_low", "ci95_high", "ci95_range")
# The published number a new record quotes (``records``), by scenario and file-name stem:
# van de Ven et al. measured Split MNIST, the handwritten digits, not the Fashion-MNIST of
# split-fmnist-class, so their source says so first.
_VAN_DE_VEN = ("Split MNIST digits, not Fashion-MNIST: van de Ven, Tuytelaars & Tolias "
               "2022, class-incremental")
PUBLISHED = {("split-fmnist-class", "naive"): {"value": "19.9", "source": _VAN_DE_VEN},
             ("split-fmnist-class", "replay"): {"value": "88.8", "source": _VAN_DE_VEN
                                                + ", experience replay"},
             ("split-fmnist-class", "joint"): {"value": "98.2", "source": _VAN_DE_VEN}}




def settings(scenario: str = "two-task", *, strategies: str = ",".join(STRATEGIES),
             seeds: int = 3, seed: int = 0, steps: int | None = None,
             pretrain_steps: int | None = None, batch_size: int | None = None,
             lr: float = 1e-3, eval_every: int | None = None, early_stop: int | None = None,
             replay_ratio: float | str | None = None, buffer_size: int | None = None,
             head_weight: float | None = None, temperature: float | None = None,
             lora_rank: int | None = None, hidden=(256, 256)) -> dict:
    """The checked settings of one experiment (None: the scenario's ``DEFAULTS``, or the
    strategy options' ``STRATEGY_DEFAULTS``).

    Args:
        scenario: one of ``metaloop.continual.scenarios.SCENARIOS``.
        strategies: a comma list of distinct ``STRATEGIES``. seeds, seed: seeds
            ``seed .. seed + seeds - 1``.
        steps: fine-tuning steps per experience after the first.
        pretrain_steps: fine-tuning steps on experience 0.
        replay_ratio: the replayed fraction of each batch, or "balanced" (t/(t+1) on
            experience t). The other keys: see ``metaloop.continual.sequence.run_sequence``.
            A strategy option (``STRATEGY_OPTIONS``) given when none of ``strategies``
            reads it is refused: it would change nothing.

    Raises:
        ValueError: naming the bad setting, the strategy option that no chosen strategy
            reads, seeds torch cannot take, or ``lora`` without peft (the ``text`` extra).
    """
    if scenario not in SCENARIOS:
        raise ValueError(f"unknown scenario {scenario!r}; choose one of {sorted(SCENARIOS)}")
    d = DEFAULTS[scenario]
    names = _strategies(strategies)
    given = {"replay_ratio": replay_ratio, "buffer_size": buffer_size,
             "head_weight": head_weight, "temperature": temperature, "lora_rank": lora_rank}
    _check_strategy_options(names, {k: v for k, v in given.items() if v is not None})
    replay_ratio, head_weight, temperature, lora_rank = (
        _given(given[k], STRATEGY_DEFAULTS[k])
        for k in ("replay_ratio", "head_weight", "temperature", "lora_rank"))
    s = {"scenario": scenario, "strategies": names,
         "seeds": list(range(seed, seed + seeds)),
         "steps": _given(steps, d["steps"]), "batch_size": _given(batch_size, d["batch_size"]),
         "eval_every": _given(eval_every, d["eval_every"]), "lr": lr,
         "early_stop": early_stop, "replay_ratio": replay_ratio,
         "buffer_size": buffer_size, "head_weight": head_weight,
         "temperature": temperature, "lora_rank": lora_rank, "hidden": list(hidden)}
    s["pretrain_steps"] = _given(pretrain_steps, s["steps"])
    for key in ("steps", "pretrain_steps", "batch_size", "eval_every", "lora_rank"):
        if s[key] <= 0:
            raise ValueError(f"--{key.replace('_', '-')} must be positive, got {s[key]}")
    for key in ("early_stop", "buffer_size"):
        if s[key] is not None and s[key] <= 0:
            raise ValueError(f"--{key.replace('_', '-')} must be positive, got {s[key]}")
    if seeds <= 0:
        raise ValueError(f"--seeds must be positive, got {seeds}")
    if not SEED_RANGE[0] <= seed <= seed + seeds - 1 <= SEED_RANGE[1]:
        raise ValueError(f"--seed {seed} with --seeds {seeds} gives seeds outside "
                         f"{SEED_RANGE[0]}..{SEED_RANGE[1]}, which torch cannot take (each "
                         f"seed s also seeds the fine-tuning with {FINETUNE_SEED} + s)")
    if not hidden or min(hidden) <= 0:
        raise ValueError(f"--hidden must be positive widths, got {list(hidden)}")
    for flag, value, ok, low in (("lr", lr, lr > 0, "> 0"),
                                 ("temperature", temperature, temperature > 0, "> 0"),
                                 ("head-weight", head_weight, head_weight >= 0, ">= 0")):
        if not (ok and math.isfinite(value)):
            raise ValueError(f"--{flag} must be a finite number {low}, got {value}")
    if replay_ratio != "balanced":
        check_replay_ratio(replay_ratio)  # type: ignore[arg-type]  # any other value: refused
    if "lora" in names:                      # named now, not after the other strategies ran
        _check_lora_available(names)
    return s


def _check_lora_available(strategies: list[str]) -> None:
    """ValueError naming the missing package when ``lora`` is chosen without peft (the
    ``text`` extra), which it would otherwise raise only when its turn came."""
    from metaloop.models.text import require_text_extra

    try:
        require_text_extra()
    except ModuleNotFoundError as e:
        others = ",".join(n for n in strategies if n != "lora")
        raise ValueError(f"--strategies has lora, whose adapters come from peft: {e}; or "
                         f"leave lora out" + (f" (--strategies {others})" if others else "")
                         ) from e


def _check_strategy_options(strategies: list[str], given: dict) -> None:
    """ValueError naming each given strategy option (``--replay-ratio`` ...) that none of
    ``strategies`` reads, so that it would change nothing."""
    for key, value in given.items():
        readers = STRATEGY_OPTIONS[key]
        if not set(readers) & set(strategies):
            flag = f"--{key.replace('_', '-')}"
            raise ValueError(f"{flag} {value} applies to the strateg"
                             f"{'y' if len(readers) == 1 else 'ies'} {', '.join(readers)}, "
                             f"none of which is in --strategies {','.join(strategies)}, so it "
                             f"would change nothing: add one of them or drop {flag}")


def _given(value, default):
    """``value``, or ``default`` when not given (None); 0 stays 0, for the check to refuse."""
    return default if value is None else value


def experiences(scenario: str, *, root=None, train_per_class: int | None = None,
                val_per_class: int | None = None, test_per_class: int | None = None,
                alphabets: int | None = None, data=None,
                classes_per_experience: int | None = None, image_size: int | None = None,
                channels: int | None = None, skip_corrupt: bool | None = None,
                class_depth: int | None = None, drop_small: bool | None = None,
                log: Callable[[str], None] | None = None) -> list:
    """The experiences of ``scenario`` (None: the scenario's own sizes; Omniglot: 5
    alphabets; your own data: 2 classes per experience, 28x28 greyscale images, 20% test and
    10% validation images per class).

    Args:
        scenario: one of ``SCENARIOS``.
        root: the built-in scenarios' data folder.
        data: ``split-data-task`` / ``split-data-class``: an image folder
            ``root/<class>/<image>`` or a ``.npz``/``.pt`` file with ``x`` and ``y``
            (``metaloop.continual.scenarios.user_experiences``).
        classes_per_experience: how many classes each experience of those scenarios holds.
        image_size: a folder's images' side after decoding.
        channels: a folder's images' channels after decoding (1 or 3).
        skip_corrupt: a folder's unreadable images (and symbolic links to nothing) are left
            out instead of refused (``metaloop.data.folder.load_folder``).
        class_depth: a folder's layout: 1 (the default) ``root/<class>/<image>``, 2
            ``root/<group>/<class>/<image>`` (classes named ``"group/class"``).
        drop_small: your own data's classes too small to hold out a test and a validation
            image and keep one for training are left out (``split_classes_of``) instead of
            refused.
        log: told, for a folder, one line on what was read of it and what was left out
            (ignored, hidden, empty class folders, loose images, unreadable images skipped, exact
            copies of an image of the same class, classes dropped by ``drop_small``),
            worded as ``metaloop train`` words it (``describe_folder``); for a tensor file,
            a line on the classes ``drop_small`` dropped, if any.

    Raises:
        ValueError: an option the scenario does not read (it would change nothing):
            ``test_per_class`` on Omniglot, ``alphabets`` outside it, ``data`` and its
            options on built-in data, ``root`` on your own data, ``skip_corrupt``,
            ``image_size``, ``channels`` or ``class_depth`` on a tensor file; a data
            scenario without ``data``; fewer than two experiences; missing or bad data
            (naming it; an unreadable image without ``skip_corrupt`` names
            ``--skip-corrupt``, classes too small without ``drop_small`` name
            ``--drop-small``); a count that is not positive (``val_per_class`` may
            be 0), before any data is read.
    """
    if scenario in DATA_SCENARIOS:
        from metaloop.data.folder import CacheWriteError

        try:
            return _data_experiences(scenario, data, root=root, alphabets=alphabets,
                                     train_per_class=train_per_class,
                                     val_per_class=val_per_class,
                                     test_per_class=test_per_class,
                                     classes_per_experience=classes_per_experience,
                                     image_size=image_size, channels=channels,
                                     skip_corrupt=bool(skip_corrupt),
                                     class_depth=class_depth,
                                     drop_small=bool(drop_small), log=log)
        except CacheWriteError as e:                        # this takes no cache_dir
            raise e.without_cache_dir() from e
    given = {"data": data, "classes_per_experience": classes_per_experience,
             "image_size": image_size, "channels": channels,
             "skip_corrupt": skip_corrupt or None, "class_depth": class_depth,
             "drop_small": drop_small or None}
    for key, value in given.items():
        if value is not None:
            flag = f"--{key.replace('_', '-')}"
            shown = "" if value is True else f" {value}"
            raise ValueError(f"{flag}{shown} applies to the scenarios "
                             f"{', '.join(DATA_SCENARIOS)} (your own data); {scenario} reads "
                             f"its built-in data, so it would change nothing: drop {flag}")
    kw = {"root": root}
    if train_per_class is not None:
        kw["train_per_class"] = train_per_class
    if val_per_class is not None:
        kw["val_per_class"] = val_per_class
    if scenario == "omniglot-alphabets":
        if test_per_class is not None:
            raise ValueError("--test-per-class is for Fashion-MNIST; Omniglot tests on the "
                             "drawings left after --train-per-class and --val-per-class")
        alphabets = 5 if alphabets is None else alphabets
        _check_counts(train_per_class=train_per_class, val_per_class=val_per_class)
        exps = SCENARIOS[scenario](alphabets=alphabets, **kw)
    else:
        if alphabets is not None:
            raise ValueError(f"--alphabets {alphabets} sets the length of the "
                             f"omniglot-alphabets stream; {scenario} is Fashion-MNIST, so it "
                             f"would change nothing: drop --alphabets")
        _check_counts(train_per_class=train_per_class, val_per_class=val_per_class,
                      test_per_class=test_per_class)
        exps = SCENARIOS[scenario](test_per_class=test_per_class, **kw)
    if len(exps) < 2:                        # named here, before any output
        raise ValueError(f"a stream needs at least two experiences, got {len(exps)}"
                         + (f" (--alphabets {alphabets})" if scenario == "omniglot-alphabets"
                            else ""))
    return exps


def _data_experiences(scenario: str, data, *, root, alphabets, train_per_class,
                      val_per_class, test_per_class, classes_per_experience, image_size,
                      channels, skip_corrupt: bool = False, class_depth: int | None = None,
                      drop_small: bool = False,
                      log: Callable[[str], None] | None = None) -> list:
    """``split-data-task`` / ``split-data-class``: the built-in options refused by name, then
    the experiences of the options given: a folder's by ``_folder_experiences``, a tensor
    file's by ``SCENARIOS[scenario](data, ...)``."""
    for flag, value, what in (("--root", root, "the folder the built-in scenarios search for "
                               "Fashion-MNIST or Omniglot"),
                              ("--alphabets", alphabets, "the length of the "
                               "omniglot-alphabets stream")):
        if value is not None:
            raise ValueError(f"{flag} {value} is {what}; {scenario} reads --data, so it would "
                             f"change nothing: drop {flag}")
    if data is None:
        raise ValueError(f"--scenario {scenario} needs --data PATH: an image folder "
                         f"root/<class>/<image>, or a .npz/.pt file with x [N, ...] and "
                         f"y [N]")
    _check_counts(train_per_class=train_per_class, val_per_class=val_per_class,
                  test_per_class=test_per_class,
                  classes_per_experience=classes_per_experience, image_size=image_size)
    kw = {k: v for k, v in (("train_per_class", train_per_class),
                            ("val_per_class", val_per_class),
                            ("test_per_class", test_per_class),
                            ("classes_per_experience", classes_per_experience),
                            ("image_size", image_size), ("channels", channels),
                            ("class_depth", class_depth))
          if v is not None}
    path = Path(data).expanduser()
    if drop_small:
        kw["drop_small"] = True
    if path.is_dir():
        return _folder_experiences(scenario, path, skip_corrupt=skip_corrupt, log=log, **kw)
    if skip_corrupt and path.exists():
        raise ValueError(f"--skip-corrupt leaves a folder's unreadable images out; {path} is "
                         f"a tensor file, read as it is, so it would change nothing: drop "
                         f"--skip-corrupt")
    dropped: list[str] = []
    exps = SCENARIOS[scenario](data, dropped=dropped, **kw)
    if dropped and log is not None:
        log(f"data {path}: {_dropped_clause(dropped)}")
    return exps


def _dropped_clause(dropped: Sequence[str]) -> str:
    """What ``--drop-small`` left out, as ``metaloop train`` words the classes it drops
    (``describe_report``)."""
    return (f"dropped {len(dropped)} class(es) too small to hold out test and validation "
            f"images and keep one for training, e.g. {dropped[0]!r}")


def _folder_experiences(scenario: str, root: Path, *, skip_corrupt: bool,
                        log: Callable[[str], None] | None, image_size: int = 28,
                        channels: int = 1, class_depth: int = 1, **split) -> list:
    """The experiences of the image folder ``root``, as ``SCENARIOS[scenario](root, ...)``
    makes them (``load_labelled``'s decoding, then ``split_classes_of``), but decoded with
    ``skip_corrupt`` and telling ``log`` what was read and left out.

    Raises:
        ValueError: as ``user_experiences``; an unreadable image without ``skip_corrupt``
            names ``--skip-corrupt``.

    Warns:
        metaloop.data.folder.NestedClassFoldersWarning: as ``load_folder``, its advice
            naming ``--class-depth 2``.
    """
    from metaloop.continual.scenarios import split_classes_of
    from metaloop.data.folder import (
        NestedClassFoldersWarning,
        UnreadableImagesError,
        load_folder,
    )

    try:
        with warnings.catch_warnings(record=True) as seen:
            warnings.simplefilter("always", NestedClassFoldersWarning)
            d = load_folder(root, image_size=image_size, channels=channels, invert="never",
                            skip_corrupt=skip_corrupt, class_depth=class_depth)
    except UnreadableImagesError as e:        # the command line's way to skip them
        raise ValueError(f"{e.problem}; to leave unreadable files out instead, add "
                         f"--skip-corrupt") from e
    finally:
        for w in seen:                        # the command line's way to read the classes
            if issubclass(w.category, NestedClassFoldersWarning):
                warnings.warn(f"{w.message}; here: add --class-depth 2",
                              NestedClassFoldersWarning, stacklevel=3)
            else:
                warnings.warn_explicit(w.message, w.category, w.filename, w.lineno)
    dropped: list[str] = []
    exps = split_classes_of(d.images, d.labels, list(d.class_names),
                            setting=_DATA_SETTING[scenario], dropped=dropped, **split)
    if log is not None:
        if dropped:                           # the classes in use are those left
            in_use = int(torch.unique(d.labels).numel()) - len(dropped)
            line = (f"{describe_report(folder_report(d), in_use)}; "
                    f"{_dropped_clause(dropped)}")
        else:
            line = describe_folder(d)
        log(f"data {root}: {line}")
    return exps


def _check_counts(**counts) -> None:
    """ValueError naming the flag of a count that is not positive (``val_per_class``: < 0),
    before any data is read (a folder is decoded in full before the library's checks)."""
    for key, value in counts.items():
        low = 0 if key == "val_per_class" else 1
        if value is not None and value < low:
            raise ValueError(f"--{key.replace('_', '-')} must be "
                             f"{'>= 0' if low == 0 else 'positive'}, got {value}")


def total_steps(s: dict, exps: list, done=()) -> int:
    """Optimiser steps of the whole experiment (for a progress bar), or of what is left of it
    once the ``(seed, strategy)`` runs ``done`` are kept: a seed with a strategy left learns
    experience 0 again."""
    done = set(map(tuple, done))
    total = 0
    for seed in s["seeds"]:
        left = sum((seed, name) not in done for name in s["strategies"])
        if left:
            total += s["pretrain_steps"] + s["steps"] * (len(exps) - 1) * left
    return total


def run(s: dict, exps: list, progress: Callable[[int], None] | None = None, *,
        data: dict | None = None, out=None, resume: bool = False,
        on_resume: Callable[[list[tuple[int, str]]], None] | None = None
        ) -> tuple[dict, dict]:
    """Every strategy over every seed; ``progress(n)`` is told of each ``n`` steps done.

    Args:
        data: the ``DATA_OPTIONS`` given to ``experiences`` (None: not given), recorded in
            the results: ``data_options`` those given, and ``data`` the data's absolute
            path, so that a result can be reproduced from its file.
        out: the run's folder, or None. Each finished (seed, strategy) run is kept in
            ``out/partial.json`` (``PARTIAL``), rewritten atomically; without ``resume`` an
            earlier run's files (``FILES``) are removed first, but an interrupted run (its
            ``partial.json``) or a finished one is refused (below), as ``metaloop
            forgetting`` refuses it.
        resume: continue from ``out/partial.json`` (``kept``): the kept runs are not run
            again, to the same results as a run never stopped (each (seed, strategy) run is
            seeded on its own; a seed with a strategy left learns experience 0 again, as it
            did; only the times of the runs done after the resume are measured anew, and
            added to the kept ones' in ``wall_s`` and ``cpu_seconds``). ``s``
            may have more seeds than the kept run (``adds_seeds``): only the new seeds' runs
            are done, to the results of a run started with all of them; the files of a
            kept run that had finished are removed first (its ``runs.json`` is the kept
            ``partial.json`` again).
        on_resume: called with the kept ``(seed, strategy)`` runs once they are accepted,
            before any work.

    Returns:
        ``(runs, results)``: per strategy the list of per-seed runs (matrix, curve,
        boundaries), and the summary written to results.json, with the run's ``wall_s``
        and ``cpu_seconds`` (this process's CPU time, on all its threads), each the sum over
        the segments of a resumed run.

    Raises:
        ValueError: ``resume`` without ``out``, or of a run with other settings or data
            (naming them, ``kept``) or a kept run that is not one of these experiences (a
            damaged partial.json), or with ``early_stop`` of kept runs that record no step
            kept (``chosen``: an earlier metaloop's, whose early stopping could keep the
            parameters from before an experience's fine-tuning); a new run into an ``out``
            that holds another command's kept state (``metaloop adapt``'s partial.json), the
            ``partial.json`` of an interrupted run of this command (``resume=True``
            continues it; the command's own error, ``check_resume``), another command's
            run (``runs_folder.check``), or a finished run of this
            command (its results.json or runs.json: the error ``metaloop forgetting`` turns
            into exit status 2; ``resume=True`` with more seeds adds seeds to it); before
            anything is written or run.
    """
    _check_early_stop(s, exps)
    if resume and out is None:
        raise ValueError("resume=True continues the run kept in a folder: give out")
    if out is not None and not resume:
        _partial.check_own(out, "forgetting")      # another command's kept work: not removed
        _partial.check_resume(out, False, "forgetting", "strategies")  # nor an interrupted run
        runs_folder.check(out, "forgetting")       # another command's run: not replaced
        _check_finished(out)                       # nor this command's finished one
    update = progress or (lambda n: None)
    ident = identity(s, exps, data) if out is not None else None
    state = kept(out, cast(dict, ident)) if resume else None        # resume: out given
    names = [e.name for e in exps]
    try:                              # before any work: not after the runs left
        units = {(u["seed"], u["strategy"]): _unit(u, names) for u in state["units"]} \
            if state else {}
    except (ValueError, TypeError, KeyError, AttributeError) as e:
        raise _partial.corrupt(Path(out) / PARTIAL, e) from e
    unchosen = sorted(k for k, u in units.items() if u["chosen"] is None)
    if unchosen and s["early_stop"] is not None:
        raise ValueError(f"{Path(out)}: the kept runs {unchosen[:4]}"
                         f"{' ...' if len(unchosen) > 4 else ''} were made by an earlier "
                         f"metaloop, whose --early-stop could keep the parameters from before "
                         f"an experience's fine-tuning, and recorded no step kept: continuing "
                         f"them would mix two rules; remove its {PARTIAL} and {RUNS} to "
                         f"start again, or give another --out")
    if state is not None and on_resume is not None:
        on_resume(list(units))
    if out is not None:
        out = Path(out)
        for tmp in (t for name in (PARTIAL, *FILES) for t in out.glob(f".{name}.*")):
            tmp.unlink(missing_ok=True)           # what a kill mid-write left
        if not resume:   # partial.json first: a kill here leaves no old one to pass for kept work
            for old in (PARTIAL, *FILES):
                (out / old).unlink(missing_ok=True)
        else:
            if not (out / PARTIAL).is_file():    # a finished run's runs: kept, as they were
                os.replace(out / RUNS, out / PARTIAL)
            if adds_seeds(cast(dict, state), s):  # a finished run's files are not more seeds'
                for old in FILES:
                    (out / old).unlink(missing_ok=True)
    # the kept segments' seconds (a partial.json of an earlier metaloop kept no CPU time:
    # its wall-clock seconds stand in for it)
    t_start = time.perf_counter() - (state["wall_s"] if state else 0.0)
    c_start = time.process_time() - (_kept_cpu_seconds(state) if state else 0.0)

    def keep(seed: int, name: str, r: dict) -> None:
        units[(seed, name)] = r
        if out is not None:
            out.mkdir(parents=True, exist_ok=True)     # a library caller's new folder
            report.write_json(out / PARTIAL, {
                "command": "forgetting", "identity": ident,
                "units": [{"strategy": n, **_jsonable_unit(u)} for (_, n), u in units.items()],
                "wall_s": time.perf_counter() - t_start,
                "cpu_seconds": time.process_time() - c_start})

    for seed in s["seeds"]:
        left = [name for name in s["strategies"] if (seed, name) not in units]
        if left:
            units.update(((seed, name), r) for name, r in _one_seed(
                s, exps, seed, update, left, lambda name, r, seed=seed: keep(seed, name, r)
            ).items())
    runs = {name: [units[(seed, name)] for seed in s["seeds"]] for name in s["strategies"]}
    results = _results(s, exps, runs, time.perf_counter() - t_start)
    results["cpu_seconds"] = time.process_time() - c_start
    if data is not None:
        given = {k: data[k] for k in DATA_OPTIONS if data.get(k) is not None}
        if "data" in given:
            results["data"] = given["data"] = str(Path(given["data"]).expanduser().resolve())
        results["data_options"] = given
    return runs, results


def _check_early_stop(s: dict, exps: list) -> None:
    """ValueError naming the flags when ``--early-stop`` has no validation data to stop on."""
    empty = [e.name for e in exps if e.val[1].numel() == 0]
    if s["early_stop"] is not None and empty:
        raise ValueError(f"--early-stop {s['early_stop']} stops on each experience's "
                         f"validation accuracy, but {len(empty)} experience(s) have no "
                         f"validation images ({', '.join(map(repr, empty[:3]))}"
                         f"{' ...' if len(empty) > 3 else ''}; --val-per-class 0?): hold out "
                         f"at least one per class, or drop --early-stop")


def _strategies(text: str) -> list[str]:
    """The names of ``--strategies``; an empty item (``"naive,,replay"``), an unknown name
    or a repeat is an error."""
    names = [s.strip() for s in text.split(",")]
    if any(names) and not all(names):
        raise ValueError(f"--strategies {text!r} has an empty item (a comma too many); give "
                         f"a comma list of distinct names from {list(STRATEGIES)}")
    names = [s for s in names if s]
    bad = [s for s in names if s not in STRATEGIES]
    if bad or not names or len(set(names)) != len(names):
        raise ValueError(f"bad --strategies {text!r}: choose distinct names from "
                        f"{list(STRATEGIES)}")
    return names


def _one_seed(s, exps, seed, update, strategies=None, on_unit=None) -> dict:
    """Learn experience 0 once, then each of ``strategies`` (None: all) from there, calling
    ``on_unit(name, run)`` after each. Each strategy's fine-tuning has its own generator,
    seeded ``FINETUNE_SEED + seed``, so its run does not depend on the strategies before it.
    Torch's global RNG is seeded ``seed`` while the network is made (its initial weights) and
    trained; the caller's RNG is left as it was."""
    with seeded_rng(seed):
        g = torch.Generator().manual_seed(seed)
        model = MLP(exps[0].train[0].shape[1], tuple(s["hidden"]), 1)
        ft = {k: s[k] for k in ("batch_size", "lr", "eval_every", "early_stop")}
        first = finetune_experience(model, init_params(model, exps, g), exps[0],
                                    replay_ratio=0.0, steps=s["pretrain_steps"], generator=g,
                                    progress=update, **ft)
        out = {}
        for name in s["strategies"] if strategies is None else strategies:
            t0 = time.perf_counter()
            r = run_sequence(model, first.params, exps, name, pretrained=True,
                             replay_ratio=s["replay_ratio"], head_weight=s["head_weight"],
                             lora_rank=s["lora_rank"], buffer_size=s["buffer_size"],
                             temperature=s["temperature"], steps=s["steps"],
                             generator=torch.Generator().manual_seed(FINETUNE_SEED + seed),
                             progress=update, **ft)
            out[name] = {"seed": seed, "matrix": r.matrix, "curve": r.curve,
                         "boundaries": r.boundaries,
                         "chosen": [chosen_step(0, first), *r.chosen],
                         "wall_s": time.perf_counter() - t0}
            if on_unit is not None:
                on_unit(name, out[name])
        return out


PARTIAL = _partial.PARTIAL
"""The (seed, strategy) runs an unfinished run has done, in its ``out``: ``"command":
"forgetting"``, ``identity`` (what the results depend on), ``units`` (each run's seed,
strategy, accuracy matrix, curve, boundaries, ``chosen``: the step kept of each experience,
as ``SequenceResult.chosen``, and seconds), ``wall_s`` and ``cpu_seconds``."""
RUNS = "runs.json"
"""A finished run's (seed, strategy) runs, in its ``out``: its ``PARTIAL``, moved there after
results.json, from which a resume with more seeds goes on (``kept``)."""
FILES = ("results.json", "metrics.jsonl", "old_accuracy_vs_steps.png", "accuracy_matrix.png",
         RUNS)
# Names of the identity's keys in a refused resume, other than their flags.
_WHAT = {"data_sha256": "the contents of the data (--data, or the scenario's files)",
         "threads": "--threads or OMP_NUM_THREADS"}     # torch's threads, however they were set


def identity(s: dict, exps: list, data: dict | None = None) -> dict:
    """What a run's results depend on: the settings (the first seed and their number as
    ``seed`` and ``seeds``; the strategies as a sorted list, their order changing no run),
    the threads torch computes on, the ``DATA_OPTIONS`` given (``data`` as an absolute path)
    and the sha256 of the experiences (every split's inputs and labels, and their names,
    heads and classes)."""
    ident = {k: v for k, v in s.items() if k not in ("seeds", "strategies")}
    ident.update(seed=s["seeds"][0], seeds=len(s["seeds"]), strategies=sorted(s["strategies"]),
                 threads=torch.get_num_threads())
    for key, value in (data or {}).items():
        if key in DATA_OPTIONS and value is not None:
            ident[key] = (str(Path(value).expanduser().resolve()) if key == "data"
                          else value)
    digest = hashlib.sha256()
    for e in exps:
        digest.update(json.dumps([e.name, e.head, e.num_outputs, list(map(int, e.classes))]
                                 ).encode())
        for x, y in (e.train, e.val, e.test):
            for t in (x, y):
                digest.update(f"{t.dtype}{list(t.shape)}".encode())
                digest.update(t.detach().cpu().contiguous().numpy().tobytes())
    ident["data_sha256"] = digest.hexdigest()
    return json.loads(json.dumps(ident))        # as read back from partial.json


def adds_seeds(state: dict, s: dict) -> bool:
    """Whether a resume with settings ``s`` of the kept ``state`` (``kept``) adds seeds to
    those the kept run was started with: an earlier ``results.json`` beside it is then not
    this run's result."""
    return state["identity"]["seeds"] < len(s["seeds"])


def finished(out) -> bool:
    """True where ``out`` holds a ``partial.json`` beside a complete ``results.json``: the run
    was stopped after writing its results (atomically) and before moving ``partial.json`` to
    ``runs.json``, so it finished and the ``partial.json`` is stale."""
    return _partial.finished(out, "strategies")


def check_resume(out, resume: bool, s: dict | None = None) -> None:
    """Before any data is read: ``resume`` needs a kept ``partial.json`` in ``out``, or the
    ``runs.json`` (``RUNS``) of a finished run with another number of seeds than ``s``
    (settings) has (more add seeds; fewer are refused by ``kept``, by name, as for a stopped
    run); a new run refuses to discard a ``partial.json`` of an interrupted run, and to
    replace a finished run (its results.json or ``runs.json``, also one stopped before its
    ``partial.json`` was moved: ``finished``), naming its settings and ``--resume`` to add
    seeds (``runs_folder.check_finished``). Whether the kept runs fit the command is
    ``kept``'s to say.

    Raises:
        ValueError: naming the folder and what it holds.
    """
    out = Path(out)
    if not resume:
        _partial.check_resume(out, resume, "forgetting", "strategies")   # an interrupted run
        _check_finished(out)
        return
    if s is not None and not (out / PARTIAL).is_file() and (out / RUNS).is_file():
        seeds = finished_seeds(out)
        if _is_count(seeds) and seeds != len(s["seeds"]):
            return            # seeds to add to a finished run, or fewer, which kept names
    _partial.check_resume(out, resume, "forgetting", "strategies")


def _check_finished(out) -> None:
    """Before a new run (no ``resume``) writes in ``out``: refuse a folder that holds a
    finished ``metaloop forgetting`` run (its results.json or ``runs.json``, ``RUNS``), which
    the new run would replace, naming its settings and, where its runs are kept, ``--resume``
    with more ``--seeds`` to add seeds to it (``runs_folder.check_finished``). ``run`` and
    ``check_resume`` (the command, before any data is read) both call it.

    Raises:
        ValueError: naming the folder, the run's settings and files; nothing was written or
            removed.
    """
    out = Path(out)
    kept_runs = (out / RUNS).is_file() or (out / PARTIAL).is_file()   # seeds to add to
    runs_folder.check_finished(out, "forgetting", _finished_settings(out),
                               "the same command with --resume and more --seeds to add "
                               "seeds to it" if kept_runs else "",
                               files=("results.json", RUNS))


def _finished_settings(out: Path) -> str:
    """The key settings of the finished run in ``out``, as a refusal names them: from its
    results.json, else its ``runs.json`` (``RUNS``); ``""`` where neither can be read."""
    res = runs_folder.results_of(out)
    settings = res.get("settings")
    if isinstance(settings, dict):
        seeds = settings.get("seeds")
        strategies = settings.get("strategies")
        n = len(seeds) if isinstance(seeds, list) else None
    else:
        try:
            settings = json.loads((out / RUNS).read_text(encoding="utf-8"))["identity"]
        except (OSError, ValueError, KeyError, TypeError):
            return ""
        if not isinstance(settings, dict):
            return ""
        n, strategies = settings.get("seeds"), settings.get("strategies")
    parts = [f"--scenario {settings['scenario']}" if "scenario" in settings else "",
             f"--strategies {','.join(map(str, strategies))}"
             if isinstance(strategies, list) else "",
             f"--seeds {n}" if n is not None else "",
             f"--steps {settings['steps']}" if "steps" in settings else ""]
    return ", ".join(x for x in parts if x)


def finished_seeds(out):
    """The number of seeds a finished run in ``out`` kept (its ``runs.json``'s
    ``identity.seeds``, as written: an int unless the file was edited), or None where there
    is no such file or it cannot be read."""
    try:
        return json.loads((Path(out) / RUNS).read_text(encoding="utf-8"))["identity"]["seeds"]
    except (OSError, ValueError, KeyError, TypeError):
        return None


def _is_count(n) -> bool:
    return isinstance(n, int) and not isinstance(n, bool) and n > 0


def kept(out, ident: dict) -> dict:
    """The kept state of ``out / PARTIAL`` (else of a finished run, ``out / RUNS``) for a
    resume with ``ident`` (``identity``).

    A resume may add seeds: ``ident`` with more ``seeds`` (from the same first ``seed``) keeps
    the runs of the kept seeds, and the new seeds run after them (``adds_seeds``).

    Raises:
        ValueError: the file is missing or corrupt, the kept state of another command
            (naming it), or that of a run with other settings or data (naming each
            difference, kept value first; fewer seeds are a difference; a data option given
            in one command and not in the other is no difference where the experiences are
            the same).
    """
    finished_runs = not (Path(out) / PARTIAL).is_file() and (Path(out) / RUNS).is_file()
    path, state = _partial.read(out, "forgetting", RUNS if finished_runs else PARTIAL)
    try:
        old, units = state["identity"], state["units"]
        float(state["wall_s"])
        _kept_cpu_seconds(state)
        if not (isinstance(old, dict) and isinstance(units, list)):
            raise TypeError("identity must be an object and units a list")
        for u in units:
            _unit(u)
    except (ValueError, TypeError, KeyError, AttributeError) as e:
        raise _partial.corrupt(path, e) from e
    same_data = old.get("data_sha256") == ident["data_sha256"]
    more_seeds = _is_count(old.get("seeds")) and old["seeds"] < ident["seeds"]
    diff = _partial.differences(old, ident, _WHAT, same=[
        k for k in DATA_OPTIONS if same_data and k != "data"] + (["seeds"] if more_seeds
                                                                  else []))
    fewer = _is_count(old.get("seeds")) and old["seeds"] > ident["seeds"]
    diff = [f"--seeds ({old['seeds']} != {ident['seeds']}: a resume may add seeds, not drop "
            f"kept ones)" if fewer and d.startswith("--seeds (") else d for d in diff]
    if diff:
        raise _partial.refuse(out, diff)
    seeds = range(ident["seed"], ident["seed"] + ident["seeds"])
    runs = [(u["seed"], u["strategy"]) for u in units]
    bad = [r for r in runs if r[0] not in seeds or r[1] not in ident["strategies"]]
    if bad or len(set(runs)) != len(runs):
        raise ValueError(f"{path} is corrupt: its runs {bad or runs} are not those of a run of "
                         f"seeds {list(seeds)} and strategies {ident['strategies']}; remove "
                         f"it to start again")
    return state


def _kept_cpu_seconds(state: dict) -> float:
    """The CPU seconds a kept run (``kept``) took before it stopped: its ``cpu_seconds``, or
    the wall-clock ``wall_s`` where a ``partial.json`` of an earlier metaloop has none."""
    return float(state.get("cpu_seconds", state["wall_s"]))


def _jsonable_unit(r: dict) -> dict:
    return {**r, "matrix": r["matrix"].tolist()}


def _unit(u: dict, names: list[str] | tuple[()] = ()) -> dict:
    """A kept run as ``_one_seed`` returned it: its matrix a float64 tensor again, and each
    point of its curve with its keys in their order (partial.json's are sorted), the
    accuracies in the order of the experiences ``names``. With ``names``, a run of another
    stream (a matrix that is not ``[T, T]``, other boundaries or curve points) is refused.

    Raises:
        KeyError, TypeError, ValueError, AttributeError: not a kept run (of ``names``).
    """
    m = torch.tensor(u["matrix"], dtype=torch.float64)
    if m.dim() != 2 or m.shape[0] != m.shape[1] or not isinstance(u["strategy"], str) \
            or not isinstance(u["seed"], int) or not isinstance(u["curve"], list) \
            or not isinstance(u["boundaries"], list) \
            or not all(isinstance(b, int) for b in u["boundaries"]):
        raise ValueError("a kept run needs a seed, a strategy, a square matrix, a curve and "
                         "boundaries")
    order = {n: i for i, n in enumerate(names)}
    curve = [{"step": p["step"], "experience": p["experience"],
              "accuracy": dict(sorted(p["accuracy"].items(),
                                      key=lambda kv: order.get(kv[0], len(order))))}
             for p in u["curve"]]
    if names and (m.shape[0] != len(names) or len(u["boundaries"]) != len(names) - 1 or any(
            not (isinstance(p["step"], int) and isinstance(p["experience"], int))
            or p["experience"] not in range(1, len(names))
            or list(p["accuracy"]) != names[:p["experience"] + 1]
            or not all(isinstance(a, float) for a in p["accuracy"].values()) for p in curve)):
        raise ValueError(f"a kept run of a stream of {len(names)} experiences needs a "
                         f"{len(names)}x{len(names)} matrix, {len(names) - 1} boundaries and "
                         f"a curve over them")
    chosen = u.get("chosen")              # None: kept by a metaloop that recorded none
    if chosen is not None and (not isinstance(chosen, list) or (names and len(chosen) != len(
            names)) or not all(isinstance(c, dict) and isinstance(c.get("best_step"), int)
                               for c in chosen)):
        raise ValueError("a kept run's chosen steps must be one object per experience")
    return {"seed": u["seed"], "matrix": metrics.check_matrix(m), "curve": curve,
            "boundaries": u["boundaries"], "chosen": chosen, "wall_s": float(u["wall_s"])}


def _results(s, exps, runs, wall_s) -> dict:
    strategies = {}
    for name, rs in runs.items():
        per_seed = [metrics.summarize(r["matrix"]) for r in rs]
        summary = {key: _summary([p[key] for p in per_seed], [r["seed"] for r in rs])
                   for key, _ in METRICS}
        stack = torch.stack([r["matrix"] for r in rs])                  # [S, T, T]
        forgot = torch.stack([metrics.experience_forgetting(r["matrix"]) for r in rs])
        strategies[name] = {                                            # forgot: [S, T-1]
            "summary": summary,
            "matrix": {"mean": stack.mean(0).tolist(), "per_seed": stack.tolist()},
            "experience_forgetting": forgot.tolist(),
            "experience_forgetting_mean": forgot.mean(0).tolist(),
            "chosen": {key: [[c[key] for c in r["chosen"]] if r.get("chosen") else None
                             for r in rs]
                       for key in ("best_step", "steps", "val_start", "val_best")},
            "wall_s": [r["wall_s"] for r in rs]}
    return {"scenario": s["scenario"], "settings": s, "wall_s": wall_s, "units": UNITS,
            "experiences": [{"name": e.name, "head": e.head, "outputs": e.num_outputs,
                             "classes": list(e.classes), "train": e.train[1].numel(),
                             "val": e.val[1].numel(), "test": e.test[1].numel()} for e in exps],
            "rows": "R[i][j]: test accuracy on experience j after training on experience i",
            "strategies": strategies}


UNITS = {"accuracy": "fraction in [0, 1], printed in %: summary, matrix, "
                        "experience_forgetting(_mean), chosen val_start and val_best, and "
                        "metrics.jsonl's accuracy",
         "step": "optimiser steps: chosen best_step and steps, metrics.jsonl's step",
         "time": "seconds: wall_s, cpu_seconds"}
"""results.json's ``units``: what its numbers measure."""


def _summary(values: list[float], seeds: list[int]) -> dict:
    """Mean ± 95% CI of one metric over the seeds where it is defined (finite).

    ``retained`` is 0/0, undefined (NaN from ``metrics.summarize``), in a seed whose earlier
    experiences all scored 0 right after each was learned: nothing was learned, so nothing
    can be retained. Such a seed is left out of the mean and named in ``undefined_seeds``;
    ``n`` counts the seeds averaged. ``mean`` is None when no seed is defined, ``ci95``
    when fewer than two are (one value has no CI)."""
    defined = [v for v in values if math.isfinite(v)]
    m, c = mean_ci(defined) if defined else (None, None)
    return {"mean": m, "ci95": c, "n": len(defined),
            "undefined_seeds": [s for s, v in zip(seeds, values) if not math.isfinite(v)],
            "per_seed": values}


def _cell(summary: dict, trials: int | None = None, accuracy: bool = False) -> str:
    """``mean ± ci95`` in % (``± n/a``: one seed), with ``(k of n seeds)`` where the metric
    is undefined in some seeds, and ``undefined`` where it is in all. An ``accuracy``
    (``_ACCURACIES``; ``trials``: each seed's test examples) whose ``mean ± ci95`` would
    leave [0, 100]%, or whose seeds all scored 0 or 100%, shows the interval its record
    carries, ``"42.0 (0.0 to 99.9)"`` (``metaloop.evaluate.records.ci95_fields``, with
    ``trials`` counted once for all seeds, which share the test examples); all at 0
    or 100% without ``trials``: ``± n/a``, never ``± 0.0``."""
    from metaloop.evaluate.records import at_an_end, ci95_fields

    total = len(summary["per_seed"])
    if summary["mean"] is None:
        return "undefined" if total == 1 else f"undefined (0 of {total} seeds)"
    cell = format_mean_ci(summary["mean"], summary["ci95"], ".1f", 100)
    if accuracy:                                      # in [0, 1], printed in %
        vals = [100 * v for v in summary["per_seed"] if v is not None and math.isfinite(v)]
        ends = ci95_fields(vals, trials=trials) if trials and vals else {}
        if ends:
            cell = (f"{100 * summary['mean']:.1f} ({ends['ci95_low']:.1f} to "
                    f"{ends['ci95_high']:.1f})")
        elif at_an_end(vals):
            cell = format_mean_ci(summary["mean"], None, ".1f", 100)   # ± 0 is no interval
    return cell if summary["n"] == total else f"{cell} ({summary['n']} of {total} seeds)"


def accuracy_trials(results: dict) -> dict[str, int]:
    """The test examples behind one seed's value of each accuracy (``_ACCURACIES``), from
    results' ``experiences``: the last experience's for new-task accuracy, the earlier ones'
    for old-task accuracy, all of them for the average accuracy. They are the trials that
    bound the accuracy's 95% CI (``ci95_fields``, a record's ``trials``), counted once:
    every seed scores the same test examples, so more seeds add no trials;
    ``{}`` for results without the experiences' test counts."""
    try:
        test = [int(e["test"]) for e in results["experiences"]]
    except (KeyError, TypeError, ValueError):
        return {}
    if len(test) < 2 or min(test) < 1:
        return {}
    return {"new_accuracy": test[-1], "old_accuracy": sum(test[:-1]),
            "average_accuracy": sum(test)}


def table(strategies: dict, trials: dict[str, int] | None = None) -> str:
    """Strategies x metrics, each ``mean ± ci95`` in % over the seeds (``± n/a``: one seed,
    no CI), then a note on any metric undefined in some seed. With ``trials``
    (``accuracy_trials``), the accuracies whose ``mean ± ci95`` would leave [0, 100]%, or
    whose seeds all scored 0 or 100%, show the bounded interval their records carry
    (``_cell``), as ``records`` writes them."""
    trials = trials or {}
    rows = [["strategy"] + [label for _, label in METRICS]]
    for name, r in strategies.items():
        rows.append([name] + [_cell(r["summary"][k], trials.get(k), k in _ACCURACIES)
                              for k, _ in METRICS])
    lines = [report.aligned(rows)]
    undefined = {name: r["summary"]["retained"]["undefined_seeds"]
                 for name, r in strategies.items()
                 if r["summary"]["retained"].get("undefined_seeds")}
    if undefined:
        where = "; ".join(f"{name}: seed{'s' if len(v) > 1 else ''} "
                          f"{', '.join(map(str, v))}" for name, v in undefined.items())
        some = any(r["summary"]["retained"]["n"] for r in strategies.values())
        note = (f"retained is undefined ({where}) where the earlier experiences scored 0% "
                f"right after each was learned: nothing was learned, so nothing can be "
                f"retained (0/0)." + (" Its mean is over the seeds where it is defined."
                                      if some else ""))
        lines += [""] + textwrap.wrap(note, 95)
    return "\n".join(lines)


def forgetting_table(results: dict) -> str:
    """Forgetting of each earlier experience (``metrics.experience_forgetting``: its best
    accuracy before the last experience minus its final one), in %, mean over the seeds:
    strategies x the experiences before the last."""
    names = [e["name"] for e in results["experiences"]][:-1]
    rows = [["strategy"] + names]
    for name, r in results["strategies"].items():
        rows.append([name] + [f"{100 * v:.1f}" for v in r["experience_forgetting_mean"]])
    return report.aligned(rows)


def early_stop_note(results: dict) -> str:
    """With ``early_stop``: how many fine-tunings stopped early, and every one whose
    validation accuracy at the step kept was no higher than before it (the last evaluated
    step is then kept, never the starting parameters); experience 0, learned once per seed
    for every strategy, is counted once. "" without early stopping."""
    patience = results["settings"].get("early_stop")
    if patience is None:
        return ""
    names = [e["name"] for e in results["experiences"]]
    seeds = results["settings"]["seeds"]
    flat, stopped = [], []
    for k, (strategy, r) in enumerate(results["strategies"].items()):
        chosen = r.get("chosen") or {}
        for i, seed in enumerate(seeds):
            steps = (chosen.get("best_step") or [None] * len(seeds))[i]
            for t, best in enumerate(steps or []):
                if t == 0 and k > 0:             # experience 0: the same run for each
                    continue
                start, val = chosen["val_start"][i][t], chosen["val_best"][i][t]
                taken = chosen["steps"][i][t]
                planned = results["settings"]["pretrain_steps" if t == 0 else "steps"]
                stopped.append(taken < planned)
                if start is not None and val is not None and val <= start:
                    who = "every strategy" if t == 0 else strategy
                    flat.append(f"{who}, seed {seed}, {names[t]!r}: step {best} of {taken} "
                                f"(validation {100 * val:.1f}%, {100 * start:.1f}% before)")
    lines = textwrap.wrap(
        f"--early-stop {patience}: each experience keeps the parameters of its evaluation "
        f"with the highest validation accuracy after a step (ties: the later one; never "
        f"those from before its fine-tuning); {sum(stopped)} of {len(stopped)} "
        f"fine-tunings stopped early. The steps kept are in results.json (chosen).", 95,
        break_on_hyphens=False)
    if flat:
        lines += textwrap.wrap(
            f"Early stopping kept a step before any improvement on validation in "
            f"{len(flat)} fine-tuning(s): the validation accuracy never rose above its value "
            f"before fine-tuning (too few validation images? --val-per-class):", 95,
            break_on_hyphens=False)
        lines += [f"  {f}" for f in flat[:10]]
        if len(flat) > 10:
            lines.append(f"  ... and {len(flat) - 10} more (results.json, chosen)")
    return "\n".join(lines)


def write(out, s, exps, runs, results) -> None:
    """metrics.jsonl, the two plots and, last, results.json, in ``out``.

    A write that fails or is interrupted (a full disk, Ctrl-C) removes the files it had
    made, so no results.json stands beside missing plots. An earlier run's results.json in
    ``out`` is removed first: a run cut short at any point (even killed) leaves no finished
    result beside the files it replaced. ``partial.json`` (``run``'s kept runs) is moved to
    ``runs.json`` (``RUNS``) after results.json: the result is complete, and a resume with
    more seeds goes on from its runs; without one (``run`` without ``out``) an earlier
    ``runs.json``, not of these results, is removed.

    Raises:
        metaloop.train.checkpoint.WriteError: a file could not be written, naming it.
    """
    out = Path(out)
    lines = [json.dumps({"strategy": name, "seed": r["seed"], **point,
                         "unit": "fraction"})
             for name, rs in runs.items() for r in rs for point in r["curve"]]
    writes = [
        (out / "metrics.jsonl",
         lambda f: atomic_write_text(f, "\n".join(lines) + "\n")),
        (out / "old_accuracy_vs_steps.png",
         lambda f: plots.old_accuracy_curves(runs, exps[0].name, f, f"{s['scenario']}: "
                                             f"accuracy on {exps[0].name} while fine-tuning")),
        (out / "accuracy_matrix.png",
         lambda f: plots.matrix_heatmaps(results["strategies"], [e.name for e in exps], f,
                                         s["scenario"])),
        (out / "results.json", lambda f: report.write_json(f, results))]
    made = []
    try:
        (out / "results.json").unlink(missing_ok=True)   # none of this run's until the last
        for f, write_file in writes:
            if not f.exists():
                made.append(f)
            try:
                write_file(f)
            except WriteError:
                raise
            except OSError as e:                       # a plot on a full disk: named
                raise WriteError(f"cannot write {f}: {e.strerror or e}") from e
    except BaseException:
        for f in made:
            f.unlink(missing_ok=True)
        raise
    if (out / PARTIAL).is_file():
        os.replace(out / PARTIAL, out / RUNS)
    else:
        (out / RUNS).unlink(missing_ok=True)


def _strategy_stem(name: str, s: dict) -> tuple[str, str]:
    """A strategy's part of its record's file name and its row label: ``replay+heads`` ->
    ``replay_heads``, with a suffix for each strategy option it reads (``STRATEGY_OPTIONS``)
    that is not the default. A replay ratio is named after ``replay`` (``replay-balanced``,
    ``replay-0.2_heads``), and, with the default ratio, a buffer its size
    (``replay-buffer1000``); the row label names any buffer (``replay-balanced (1,000-example
    reservoir)``). The kept heads' options follow the name (``heads-weight0.5-temperature4``,
    ``replay_heads-temperature4``), and so does a LoRA rank (``lora-rank4``). Settings that
    no name tells apart (a buffer with a ratio other than the default, the steps, the data)
    are ``check_records``' to refuse."""
    label = name
    replays = name in STRATEGY_OPTIONS["replay_ratio"]
    if replays:
        ratio = s["replay_ratio"]
        if ratio != STRATEGY_DEFAULTS["replay_ratio"]:
            suffix = ratio if ratio == "balanced" else f"{ratio:g}"
        elif s["buffer_size"] is not None:
            suffix = f"buffer{s['buffer_size']}"
        else:
            suffix = None
        if suffix is not None:
            label = name.replace("replay", f"replay-{suffix}", 1)
    for key, word in (("head_weight", "weight"), ("temperature", "temperature"),
                      ("lora_rank", "rank")):
        if name in STRATEGY_OPTIONS[key] and s[key] != STRATEGY_DEFAULTS[key]:
            label += f"-{word}{s[key]:g}"
    stem = label.replace("+", "_")
    if replays and s["buffer_size"] is not None:
        label += f" ({s['buffer_size']:,}-example reservoir)"
    return stem, label


def record_path(folder, s: dict, strategy: str) -> Path:
    """Where ``records`` puts a strategy's record in ``folder``:
    ``continual_<scenario>_<strategy>.json``, the scenario's hyphens and the strategy's ``+``
    written as ``_`` (``continual_split_fmnist_class_replay_heads``;
    see ``_strategy_stem`` for the strategy options' suffixes)."""
    stem, _ = _strategy_stem(strategy, s)
    return Path(folder) / f"continual_{s['scenario'].replace('-', '_')}_{stem}.json"


# The settings a strategy's record depends on besides its strategy options and data options;
# the seeds are not among them (a record of more seeds measures the same setting).
_RECORD_SETTINGS = ("steps", "pretrain_steps", "batch_size", "eval_every", "lr",
                    "early_stop", "hidden")


def _record_setting(s: dict, data: dict | None, strategy: str) -> dict:
    """What a strategy's record measured, besides its scenario: ``_RECORD_SETTINGS``, the
    strategy options it reads, and the data options given (``data`` as an absolute path)."""
    setting = {k: s[k] for k in _RECORD_SETTINGS}
    setting.update((k, s[k]) for k, readers in STRATEGY_OPTIONS.items() if strategy in readers)
    for key, value in (data or {}).items():
        if key in DATA_OPTIONS and value is not None:
            setting[key] = (str(Path(value).expanduser().resolve()) if key == "data"
                            else value)
    return json.loads(json.dumps(setting))


def _command_setting(options: dict, strategy: str) -> tuple[str, dict]:
    """``(scenario, _record_setting)`` of the command that measured a record written without
    ``setting``, from its options as the command line read them (``read_command``:
    ``scenario``, the keywords of ``settings`` and the ``DATA_OPTIONS``).

    Raises:
        ValueError, KeyError, TypeError: options that are not such a command's, or settings
            that are refused.
    """
    given = dict(options)
    scenario = given.pop("scenario")
    keys = ("strategies", "seeds", "seed", "steps", "pretrain_steps", "batch_size", "lr",
            "eval_every", "early_stop", "replay_ratio", "buffer_size", "head_weight",
            "temperature", "lora_rank", "hidden")
    if given.get("strategies") is not None:     # lora's check for peft is not this record's
        given["strategies"] = ",".join(n for n in given["strategies"].split(",")
                                       if n.strip() != "lora" or strategy == "lora")
    s = settings(scenario, **{k: given[k] for k in keys if given.get(k) is not None})
    return scenario, _record_setting(s, {k: given.get(k) for k in DATA_OPTIONS}, strategy)


def _check_same_setting(path: Path, s: dict, data: dict | None, strategy: str,
                        read_command: Callable[[str], dict] | None) -> None:
    """ValueError naming each setting in which the record already at ``path`` (its
    ``scenario`` and ``setting``, else read from its ``command`` by ``read_command``) was
    measured otherwise: this strategy's record would replace it. No record there, or one of
    the same setting, passes (``_record_setting.check_same_setting``)."""
    def theirs(old: dict) -> dict:
        if isinstance(old.get("setting"), dict):
            return {**old["setting"], "scenario": old.get("scenario")}
        if read_command is None:
            raise ValueError("it has no setting, and no reader of its command was given")
        scenario, setting = _command_setting(read_command(old["command"]), strategy)
        return {**setting, "scenario": scenario}

    check_same_setting(path, {**_record_setting(s, data, strategy), "scenario": s["scenario"]},
                       theirs, strategy, first=("scenario",))


def check_records(folder, s: dict, data: dict | None = None, *,
                  read_command: Callable[[str], dict] | None = None) -> list[Path]:
    """Before any work: the record of each strategy of ``s`` can be written in ``folder``
    (``metaloop.evaluate.records.check_record_path``: a folder that can be made and written,
    and no file there that is not a record), and replaces no record of another setting
    there. Returns the paths, in strategy order.

    A record already at a path is replaced only where it measured the same setting: the
    same scenario, ``_RECORD_SETTINGS``, options of its strategy and data options given
    (``data``: the ``DATA_OPTIONS`` given to ``experiences``), whatever its seeds. A setting
    that ``record_path`` tells apart by name never meets another's file; the others (a
    buffer with a replay ratio other than the default, the steps, the data ...) are refused.
    A record without ``setting`` (written by an earlier metaloop) is told by
    ``read_command(its command)``: the options of that command line as the command line
    reads them (``scenario``, the keywords of ``settings`` and the ``DATA_OPTIONS``), which
    the command line gives (``metaloop.cli.forgetting.command_settings``); without
    ``read_command`` such a record is refused, its setting untold.

    Raises:
        ValueError: naming the path and the problem, or each setting in which the record
            there differs (its value first).
    """
    from metaloop.evaluate.records import check_record_path

    folder = Path(folder)
    if folder.exists() and not folder.is_dir():
        raise ValueError(f"--record {folder} is a file: it names a folder for the records")
    paths = [check_record_path(record_path(folder, s, name)) for name in s["strategies"]]
    for path, name in zip(paths, s["strategies"]):
        _check_same_setting(path, s, data, name, read_command)
    return paths


def records(results: dict, folder, *, command: str,
            read_command: Callable[[str], dict] | None = None) -> dict[Path, dict]:
    """One result record per strategy of a finished run (``run``'s results, or its
    results.json read back), keyed by its path in ``folder`` (``record_path``).

    Each record is a row of table ``RECORD_TABLE``: its metric is the scenario's
    ``HEADLINE`` (``retained (%)`` for two-task, else ``avg acc (%)``), with ``mean``,
    ``ci95`` (Student's ``t_975(n - 1) * sd / sqrt(n)``, null for one seed) and ``n`` over the
    seeds where it is defined, and those seeds' values in ``per_seed`` (in %, in seed order;
    ``seeds`` names them, ``undefined_seeds`` the others); ``other_metrics`` has every
    metric's mean, CI and per-seed values. An accuracy in % (``_ACCURACIES``, the record's
    or one in ``other_metrics``) keeps ``trials``, the test examples each seed scored
    (``accuracy_trials``: the seeds share them), and where its ``mean ± ci95`` would leave
    [0, 100] or every seed scored 0 or 100% also carries ``ci95_low``, ``ci95_high`` and
    ``ci95_range`` (``metaloop.evaluate.records.ci95_fields``), as the table prints them.
    The budget is the optimiser steps of a strategy on one seed (experience 0 and the
    fine-tuning) and the CPU seconds of the whole run (every strategy and seed, every segment of
    a resumed run), which ``run`` measured
    (``results["cpu_seconds"]``; a results.json of an earlier metaloop without it: its
    wall-clock seconds, ``results["wall_s"]``); device, torch and date (UTC) are as
    ``metaloop eval --record`` gives them. ``setting`` holds what
    the record measured (``_record_setting``: the settings but the seeds, the strategy's
    options and the data options given), and ``published`` the paper's number it is
    compared with (``PUBLISHED``, else null). An earlier record at the path keeps its
    ``row``, ``order``, ``published`` and ``note``; one of another setting is refused
    (``check_records``, with ``read_command``).

    A strategy whose headline metric is defined in no seed has no mean, so no record: it is
    left out.

    Args:
        results: the run's results (``scenario``, ``settings``, ``experiences``,
            ``strategies``). folder: where the records go. command: the exact command line.
        read_command: reads the options of an older record's command (``check_records``).

    Raises:
        metaloop.evaluate.records.RecordError: a record that would not be valid.
        ValueError: a record of another setting at a path, naming the differences.
    """
    import datetime

    from metaloop.evaluate.records import ci95_fields, cpu_device, validate_record
    from metaloop.evaluate.stats import ci95

    s, scenario = results["settings"], results["scenario"]
    key = HEADLINE.get(scenario, "average_accuracy")
    labels = dict(METRICS)
    common = {
        "table": RECORD_TABLE, "metric": f"{labels[key]} (%)", "digits": 1,
        "budget": None, "config": None, "published": None, "command": command,
        "device": cpu_device(),
        "torch": torch.__version__.split("+")[0],
        "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d"),
        "scenario": scenario}
    steps = s["pretrain_steps"] + s["steps"] * (len(results["experiences"]) - 1)
    trials = accuracy_trials(results)
    out = {}
    for name, r in results["strategies"].items():
        seeds = s["seeds"]
        metrics_: dict[str, dict[str, Any]] = {}
        for k in labels:
            values = r["summary"][k]["per_seed"]
            ok = [(seed, 100 * v) for seed, v in zip(seeds, values)
                  if v is not None and math.isfinite(v)]
            vals = [v for _, v in ok]
            per_seed = [round(v, 4) for v in vals]
            metrics_[k] = {
                "mean": round(math.fsum(vals) / len(vals), 4) if vals else None,
                "ci95": None if len(vals) < 2 else round(cast(float, ci95(vals)), 4),
                "per_seed": per_seed,
                "seeds": [seed for seed, _ in ok],
                # an accuracy in %, where mean ± ci95 would leave [0, 100] or every seed
                # scored 0 or 100%: bounded by the test examples (the same for every seed)
                **({"trials": trials[k]}
                   if k in _ACCURACIES and k in trials and per_seed else {}),
                **(ci95_fields(per_seed, trials=trials.get(k))
                   if k in _ACCURACIES else {})}
        head = metrics_[key]
        if head["mean"] is None:
            continue
        path = record_path(folder, s, name)
        _check_same_setting(path, s, results.get("data_options"), name, read_command)
        stem, label = _strategy_stem(name, s)
        rec = {**common, "row": f"{scenario}: {label}", "strategy": name,
               "published": PUBLISHED.get((scenario, stem)),
               "setting": _record_setting(s, results.get("data_options"), name),
               "mean": head["mean"], "ci95": head["ci95"], "n": len(head["per_seed"]),
               "per_seed": head["per_seed"], "seeds": head["seeds"],
               "budget": {"iterations": steps, "cpu_seconds": round(
                   results.get("cpu_seconds", results["wall_s"]), 1)},
               "other_metrics": {labels[k]: {f: m[f] for f in ("mean", "ci95", "per_seed",
                                                             *_BOUNDED, "trials") if f in m}
                                 for k, m in metrics_.items()},
               **{f: head[f] for f in (*_BOUNDED, "trials") if f in head}}
        undefined = [seed for seed in seeds if seed not in head["seeds"]]
        if undefined:
            rec["undefined_seeds"] = undefined
        old = old_record(path)
        rec.update({k: old[k] for k in ("row", "order", "published", "note") if k in old})
        out[path] = validate_record(rec, where=str(path))
    return out

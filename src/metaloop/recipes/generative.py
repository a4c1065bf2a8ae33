"""The generative experiments behind ``metaloop vae``: train an AE / VAE / CVAE, sweep the
latent size, compare an inverted classifier with them, measure how inverted images transfer
between classifiers, and the IWAE paper's protocol as a resumable run.

``run(options, log=log)`` dispatches on the options (any object with the attributes of
``metaloop vae``'s flags, such as its parsed arguments), checks that they go together, runs
the experiment and writes its files and records; the experiments themselves are
``metaloop.generative.experiment``, ``.inversion`` and ``.protocol``.
"""

from __future__ import annotations

import argparse
import json
import shutil
from collections.abc import Callable
from contextlib import contextmanager
from pathlib import Path
from typing import Any

__all__ = ["run"]


def _data(args: argparse.Namespace) -> str:
    """``--data``: a built-in data set's name, or your own data's path made absolute (a run
    resumed from another folder finds it, and compares it, the same). Whether the path holds
    data is checked by the run, with its settings, before it writes anything."""
    from metaloop.generative.data import is_user_data

    if not is_user_data(args.data):
        return args.data
    return str(Path(args.data).expanduser().resolve())


@contextmanager
def _described(args: argparse.Namespace):
    """For the body of a ``with``: for an image folder as ``--data``, one line on stderr,
    once the body has run, on what was read of it and what was left out (non-images, hidden
    entries, class folders without images, images outside any class folder, unreadable
    images skipped with ``--skip-corrupt``, exact copies of an image of the same class),
    worded as ``metaloop train`` words it (``metaloop.tasks.episodes.describe_folder``).
    The folder is decoded before the body as the run decodes it (``metaloop.generative.
    data.read_user``), into the cache the run then opens.

    Raises:
        ValueError: the run's data options refused (``check_data_options``); an unreadable
            image without ``--skip-corrupt``, named with it; ``--skip-corrupt`` with a tensor
            file; before the body runs.
    """
    import sys

    from metaloop.data.folder import CacheWriteError, UnreadableImagesError, load_folder
    from metaloop.generative import data as gdata
    from metaloop.tasks.episodes import describe_folder

    path = Path(args.data).expanduser()
    opts = _data_options(args)
    if opts["skip_corrupt"] and path.is_file():
        raise ValueError(f"--skip-corrupt leaves an image folder's unreadable images out; "
                         f"{path} is a tensor file, read as it is, so it would change "
                         f"nothing: drop --skip-corrupt")
    if opts["class_depth"] != 1 and path.is_file():
        raise ValueError(f"--class-depth {opts['class_depth']} is an image folder's layout; "
                         f"{path} is a tensor file, whose classes are its y, so it would "
                         f"change nothing: drop --class-depth")
    if not gdata.is_user_data(args.data) or not path.is_dir():
        yield
        return
    gdata.check_data_options(str(path), **opts)
    try:
        d = load_folder(path, image_size=opts["image_size"], channels=opts["channels"],
                        invert=gdata.applied_invert(opts["invert"], opts["channels"]),
                        skip_corrupt=opts["skip_corrupt"], class_depth=opts["class_depth"])
    except UnreadableImagesError as e:     # the Python API's advice is no command's
        raise ValueError(f"{e.problem}; to leave unreadable files out instead, add "
                         f"--skip-corrupt") from e
    except CacheWriteError as e:           # --data takes no cache_dir
        raise e.without_cache_dir() from e
    yield
    print(f"data {path}: {describe_folder(d)}", file=sys.stderr)


def _data_options(args: argparse.Namespace) -> dict:
    """The options of your own data (``--image-size``, ``--invert``, ``--test-fraction``,
    ``--channels``, ``--skip-corrupt``, ``--class-depth``)."""
    return {k: getattr(args, k, OPTION_DEFAULTS[k]) for k in _USER_DATA}


def _settings(args: argparse.Namespace):
    from metaloop.generative.experiment import Settings

    k = args.k if args.k is not None else (0 if args.sweep_latent else 5000)
    return Settings(model=args.model, data=_data(args), latent=args.latent, arch=args.arch,
                    hidden=tuple(args.hidden), likelihood=args.likelihood,
                    binarize=args.binarize, beta=args.beta, epochs=args.epochs,
                    batch_size=100 if args.batch_size is None else args.batch_size,
                    lr=args.lr, lr_end=args.lr_end,
                    cpu_budget_min=args.cpu_budget, k=k, eval_batch=args.eval_batch,
                    eval_every=args.eval_every, train_examples=args.train_examples,
                    test_examples=args.test_examples,
                    train_eval_examples=args.train_eval_examples, classes=args.classes,
                    classifier_epochs=args.classifier_epochs,
                    quality_samples=args.quality_samples, seed=args.seed, root=args.root,
                    resample=args.resample, **_data_options(args),
                    progress=not args.no_progress)


def _summary(results: dict) -> str:
    if "scores" in results:
        from metaloop.generative.inversion import table

        acc = results["classifier_test_accuracy"]
        return (f"{results['data']}: classifier test accuracy {acc['inverted']:.3f} "
                f"(A, inverted) / {acc['independent']:.3f} (B, independent); chance "
                f"{results['chance']:.3f}\n{table(results)}")
    if "runs" in results:
        lines = [f"classifier test accuracy {results['classifier_test_accuracy']:.3f}; real "
                 f"images: recognisable {results['real']['recognisable']:.2f}"]
        for latent, kinds in results["runs"].items():
            for q in kinds.values():
                for col, v in q["quality"].items():
                    lines.append(f"latent {latent:>4} {col:<34} recognisable "
                                 f"{v['recognisable']:.2f}  FD {v['frechet']:.1f}")
        return "\n".join(lines)
    return json.dumps(results["test"])


def _record_command(args: argparse.Namespace) -> str:
    from metaloop.evaluate import records

    lists = {k: ",".join(map(str, v)) for k, v in vars(args).items()
             if isinstance(v, list | tuple)}                           # as int_list reads them
    return records.command_line(argparse.Namespace(**{**vars(args), **lists}))


_PROTOCOL_OPTIONS = ("threads", "command", "protocol", "data", "resample", "root", "latent",
                     "hidden",
                     "batch_size", "lr", "stages", "seed", "curve_k", "curve_examples",
                     "curve_every", "checkpoint_every", "train_examples", "out")


def _own_data_options(args: argparse.Namespace) -> tuple[str, ...]:
    """The data options a record's command spells out: your own data's, or none."""
    from metaloop.generative.data import is_user_data

    return _USER_DATA if is_user_data(args.data) else ()


def _protocol_command(args: argparse.Namespace, evaluate: bool) -> str:
    """The exact protocol command (every option that matters, defaults included): the
    evaluation with its ``--k``/``--test-examples``/``--record``, or the training one with
    ``--resume``."""
    keep = {k: getattr(args, k) for k in (*_PROTOCOL_OPTIONS, *_own_data_options(args))
            if hasattr(args, k)}
    keep["batch_size"] = 20 if args.batch_size is None else args.batch_size
    if evaluate:
        keep.update(evaluate=True, k=5000 if args.k is None else args.k,
                    test_examples=args.test_examples, record=args.record,
                    **({"device": args.device} if hasattr(args, "device") else {}))
    else:
        keep.update(resume=True, no_progress=True)
    return _record_command(argparse.Namespace(**keep))


_TRANSFER_OPTIONS = ("threads", "command", "inversion_transfer", "data", "root",
                     "classifier_epochs", "quality_samples", "invert_steps", "invert_lr",
                     "invert_until", "invert_lrs", "seed", "device", "out", "record")


def _transfer_command(args: argparse.Namespace) -> str:
    """The exact ``--inversion-transfer`` command: every option it reads, defaults included."""
    return _record_command(argparse.Namespace(**{
        k: getattr(args, k) for k in (*_TRANSFER_OPTIONS, *_own_data_options(args))
        if hasattr(args, k)}))


# Options of the other runs that would change the protocol's model or training, with the
# values that leave it as it is (the paper's MLP, Bernoulli decoder, dynamic binarisation,
# ELBO, stage schedule): any other value is refused rather than ignored.
_NOT_PROTOCOL = (("arch", ("mlp",)), ("likelihood", ("bernoulli",)), ("beta", (1.0,)),
                 ("binarize", (None, "dynamic")), ("epochs", (20,)), ("lr_end", (1e-4,)),
                 ("cpu_budget", (None,)))


# The options only some runs read, with ``metaloop vae``'s defaults. A run refuses each that
# it does not read unless it has its default value: the records' commands spell out every
# option, defaults included (see ``_record_command``), so a default given explicitly is
# accepted wherever it goes.
OPTION_DEFAULTS: dict[str, Any] = {
    "model": "vae", "latent": 50, "arch": "mlp", "hidden": [200, 200],
    "likelihood": "bernoulli", "binarize": None, "beta": 1.0, "epochs": 20,
    "batch_size": None, "lr": 1e-3, "lr_end": 1e-4, "cpu_budget": None, "k": None,
    "eval_batch": 100, "eval_every": 0, "test_examples": None, "train_eval_examples": 0,
    "classifier_epochs": 2, "quality_samples": 2000, "invert_steps": 400, "invert_lr": 0.05,
    "invert_until": 0.99, "invert_l2": 0.3, "invert_tv": 1.0, "invert_jitter": 2,
    "invert_lrs": [0.05, 0.01, 0.0025], "stages": 8, "curve_k": 500, "curve_examples": 1000,
    "curve_every": 200, "checkpoint_every": 50, "inversion_transfer": False,
    "root": None, "resample": "bilinear", "image_size": 28, "invert": "auto",
    "test_fraction": 0.1, "channels": 1, "skip_corrupt": False, "class_depth": 1}
_USER_DATA = ("image_size", "invert", "test_fraction", "channels", "skip_corrupt",
              "class_depth")
_PROTOCOL_ONLY = ("stages", "curve_k", "curve_examples", "curve_every", "checkpoint_every")
_SCORING = ("classifier_epochs", "quality_samples")
_INVERSION = ("invert_steps", "invert_lr", "invert_until", "invert_l2", "invert_tv",
              "invert_jitter", "invert_lrs")
_REGULARISED = ("invert_l2", "invert_tv", "invert_jitter")
_GENERATOR = ("latent", "arch", "hidden", "likelihood", "binarize", "beta", "epochs",
              "batch_size", "lr", "lr_end", "cpu_budget", "eval_batch", "eval_every")


def _protocol_passes(stages) -> int | None:
    """The passes of a protocol run of ``stages`` stages (None for a bad ``stages``, which
    the run names)."""
    from metaloop.generative import protocol

    try:
        return protocol.stage_ends(protocol.iwae_schedule(stages))[-1]
    except (ValueError, TypeError):
        return None


def _unread(args) -> tuple[str, list[tuple[tuple[str, ...], str]]]:
    """The run ``args`` ask for, and the options it does not read, in groups with the
    reason."""
    protocol = ("--protocol iwae trains the paper's VAE on its own schedule, checkpoints and "
                "curve (the options of the other runs' training, scoring classifiers and "
                "inversions are not its)")
    groups: list[tuple[tuple[str, ...], str]]
    if args.protocol is not None:
        groups = [(("eval_batch", "eval_every", "train_eval_examples", *_SCORING,
                    *_INVERSION, "inversion_transfer"), protocol)]
        if not args.evaluate:
            groups.append((("test_examples",), "--protocol iwae measures the whole test set "
                           "when it finishes; --test-examples goes with --evaluate"))
            total = _protocol_passes(getattr(args, "stages", 8))
            until = getattr(args, "until_pass", None)
            if total is not None and until is not None and until < total:
                groups.append((("k",), f"--protocol iwae measures the test set with --k "
                               f"samples only when the run reaches its last pass ({total:,}), "
                               f"and --until-pass {until} stops it before (the curve's "
                               f"samples are --curve-k); --k goes with --evaluate, or with a "
                               f"call that runs to the last pass"))
        return "--protocol iwae", groups
    not_protocol = (_PROTOCOL_ONLY, "it is not a --protocol iwae run")
    if args.inversion_transfer:
        return "--inversion-transfer", [
            (("model", "k", "train_eval_examples", *_GENERATOR),
             "--inversion-transfer trains only the two classifiers (no generator, no NLL)"),
            (_REGULARISED, "--inversion-transfer inverts without regularisers (those of "
             "--compare-inversion)"), not_protocol]
    if args.compare_inversion:
        return "--compare-inversion", [
            (("model",), "--compare-inversion trains all three models (AE, VAE, CVAE)"),
            (("k", "train_eval_examples"), "--compare-inversion measures no NLL and no "
             "training-set bounds"),
            (("invert_lrs",), "--invert-lrs is --inversion-transfer's; --compare-inversion "
             "inverts at --invert-lr"), not_protocol]
    if args.sweep_latent is not None:
        return "--sweep-latent", [
            (("model",), "--sweep-latent trains both the AE and the VAE"),
            (("latent",), "--sweep-latent sets the latent sizes"),
            (("train_eval_examples",), "--sweep-latent measures the test set only"),
            (_INVERSION, "--sweep-latent inverts no classifier"), not_protocol]
    groups = [(_SCORING + _INVERSION, f"--model {args.model} trains one model and draws its "
               f"samples; classifiers are trained by --sweep-latent, --compare-inversion and "
               f"--inversion-transfer"), not_protocol]
    if args.model == "ae":
        groups.append((("beta", "k"), "the AE has no KL term and no importance-sampled NLL"))
    return f"--model {args.model}", groups


def _stands_for(args, name: str):
    """The value the help gives as the default of an option whose parser default is None
    (it differs by run): given explicitly to a run that does not read it, it changes
    nothing, as any default."""
    if name == "binarize":
        return "dynamic" if getattr(args, "likelihood", "bernoulli") == "bernoulli" else "none"
    return {"k": 5000, "batch_size": 100}.get(name, OPTION_DEFAULTS[name])


def _check_read(args) -> None:
    """ValueError naming the first option, given with other than its default value, that
    the run does not read (it would change nothing)."""
    from metaloop.generative.data import is_user_data

    run, groups = _unread(args)
    data = getattr(args, "data", "fashion-mnist")
    if is_user_data(data):
        groups.append((("root",), "--root is where the built-in data sets are found; "
                       "--data PATH names your own data"))
        groups.append((("resample",), "--resample is the Omniglot data sets' 105 -> 28 "
                       "kernel; your own images are resized to --image-size"))
    else:
        groups.append((_USER_DATA, f"--data {data} is a built-in data set, grey 28x28 images "
                       f"with a test split of its own; --image-size, --invert, "
                       f"--test-fraction, --channels, --skip-corrupt and --class-depth go "
                       f"with --data PATH "
                       f"(an image folder or a .npz/.pt file)"))
    if (getattr(args, "arch", "mlp") == "conv" and args.protocol is None
            and not args.inversion_transfer):        # both refuse --arch conv itself
        groups.append((("hidden",), "--arch conv has no hidden widths (they are the MLP's)"))
    for names, why in groups:
        for name in names:
            value = getattr(args, name, OPTION_DEFAULTS[name])
            default = OPTION_DEFAULTS[name]
            if isinstance(value, tuple | list):
                value, default = list(value), list(default or [])
            if value != default and value != _stands_for(args, name):
                flag = f"--{name.replace('_', '-')}"
                shown = (",".join(map(str, value)) if isinstance(value, list)
                         else "" if isinstance(value, bool) else value)
                raise ValueError(f"{flag} {shown}".rstrip() + f" would change nothing in "
                                 f"this run ({run}): {why}; drop {flag}")


# The protocol run's settings that --evaluate takes from its checkpoint (``--resample`` is
# checked by ``evaluate_run``): the options must be the run's, since they would change
# nothing in the measurement but the record's training command is written from them.
_EVALUATED_KEYS = ("data", "latent", "hidden", "batch_size", "lr", "stages", "seed",
                   "train_examples", "curve_k", "curve_examples", "curve_every",
                   "checkpoint_every", "image_size", "invert", "test_fraction", "channels",
                   "skip_corrupt", "class_depth")


def _protocol_settings(args: argparse.Namespace):
    from metaloop.generative import protocol

    return protocol.settings_from(
        data=_data(args), **_data_options(args), latent=args.latent, hidden=tuple(args.hidden),
        batch_size=args.batch_size, lr=args.lr, stages=args.stages, seed=args.seed,
        curve_k=args.curve_k, curve_examples=args.curve_examples,
        curve_every=args.curve_every, checkpoint_every=args.checkpoint_every,
        train_examples=args.train_examples, root=args.root, resample=args.resample)


def _shown(value) -> str:
    """An option's value as the command line writes it (lists comma-separated)."""
    return ",".join(map(str, value)) if isinstance(value, list | tuple) else str(value)


def _check_evaluated_run(args: argparse.Namespace) -> None:
    """ValueError naming each option of ``--evaluate`` whose value is not that of the run in
    --out (nothing to check without a checkpoint: ``evaluate_run`` names that)."""
    from dataclasses import asdict

    from metaloop.generative import protocol
    from metaloop.train import checkpoint as ckpt

    out = Path(args.out)
    if not out.is_dir() or ckpt.latest_checkpoint(out) is None:
        return
    _, state = ckpt.load_checkpoint(out)
    saved = {**asdict(protocol.ProtocolSettings()), **state["settings"]}
    given = asdict(_protocol_settings(args))
    bad = [k for k in _EVALUATED_KEYS if _shown(given[k]) != _shown(saved[k])]
    if bad:
        flags = ", ".join(f"--{k.replace('_', '-')} {_shown(given[k])} (the run's: "
                          f"{_shown(saved[k])})" for k in bad)
        raise ValueError(f"--evaluate measures the run in {out} as it was trained, and its "
                         f"record's training command is written from these options: {flags}; "
                         f"give the run's values")


def _check_protocol_run(out: Path) -> None:
    """ValueError if the run folder ``out`` holds a checkpoint of a meta-learning run
    (``metaloop train`` / ``compare``), which shares the checkpoint format but is no VAE to
    resume or measure (a damaged checkpoint is named where the run reads it)."""
    from metaloop.train import checkpoint as ckpt

    try:
        found = out.is_dir() and ckpt.latest_checkpoint(out) is not None
        state = ckpt.load_checkpoint(out)[1] if found else None
    except (ValueError, OSError):
        return
    if state is not None and not ckpt.protocol_run(state):
        raise ValueError(f"{out} holds a meta-learning run (metaloop train or compare, at "
                         f"iteration {state['iteration']}), not a --protocol iwae run: give "
                         f"the --out of a --protocol iwae run, or another --out for a new one")


def _check_new_protocol_run(out: Path) -> None:
    """ValueError if the folder of a new protocol run holds another run
    (``protocol.check_new_run_folder``); a folder with a checkpoint is left to the run's own
    refusal, which names it and ``--resume``."""
    from metaloop.generative import protocol
    from metaloop.train import checkpoint as ckpt

    try:
        if out.is_dir() and ckpt.latest_checkpoint(out) is not None:
            return
    except (ValueError, OSError):       # a damaged LATEST: named where the run reads it
        return
    protocol.check_new_run_folder(out)


def _has_checkpoint(out: Path) -> bool:
    """Whether the run folder ``out`` holds a checkpoint (or a damaged one: kept too)."""
    from metaloop.train import checkpoint as ckpt

    try:
        return ckpt.latest_checkpoint(out) is not None or any(
            p.name.startswith("ckpt-") for p in out.iterdir())
    except (ValueError, OSError):
        return True


def _remove_stale_of_no_run(out: Path) -> None:
    """Before a new protocol run in ``out``: remove the temporary files a run killed before
    its first checkpoint left there (``--resume`` removes those of a run with one). A folder
    that holds a run is left to the run's own refusal."""
    from metaloop.train import checkpoint as ckpt

    try:
        if ckpt.latest_checkpoint(out) is not None:
            return
    except ValueError:                      # a damaged LATEST: named where the run reads it
        return
    ckpt.remove_stale(out)


@contextmanager
def _output(out, *, checkpoints: bool = False):
    """The run's output folder ``out``, created before the run reads any data, for the body
    of a ``with``.

    If the body fails or is interrupted, a folder this call created is removed with what
    the run wrote in it (a run stopped before its results leaves nothing behind), and so are
    the empty parents it created; with ``checkpoints`` (a resumable run), it is kept once it
    holds a checkpoint. A folder that existed before is never removed.

    Raises:
        ValueError: naming the folder and why it cannot be created or written (a file in
            the way), before anything is written.
        metaloop.runlock.RunInUseError: another process writes to the folder (holds its
            lock), naming it; before anything is read or written.
    """
    from metaloop import runlock
    from metaloop.recipes.report import prepare_out

    path = Path(out)
    try:
        made = [d for d in (path, *path.parents) if not d.exists() and not d.is_symlink()]
    except OSError:                     # a name too long: runlock.hold names it
        made = []
    with runlock.hold(path):            # another process writing there: refused, first
        prepare_out(path)
        try:
            yield path
        except BaseException:
            if made and not (checkpoints and _has_checkpoint(path)):
                shutil.rmtree(path, ignore_errors=True)
                for d in made[1:]:                                    # deepest first
                    if d.is_dir() and not any(d.iterdir()):
                        d.rmdir()
            raise


def _check_no_finished_run(out: Path) -> None:
    """Before a new run (a model, --sweep-latent, --compare-inversion, --inversion-transfer)
    writes in ``out``: refuse a folder that holds a finished ``metaloop vae`` run (its
    results.json), which the new run would replace, naming its settings
    (``metaloop.generative.experiment.check_no_finished_run``); nothing is written or
    removed."""
    from metaloop.generative import experiment

    experiment.check_no_finished_run(out)


def _check_out_outside_data(args: argparse.Namespace) -> None:
    """Before anything is written: an --out inside the image folder --data is refused
    (``metaloop.runs_folder.check_outside_data``); its PNGs would join the data."""
    from metaloop import runs_folder
    from metaloop.generative.data import is_user_data

    if is_user_data(args.data):
        runs_folder.check_outside_data(args.out, args.data)


def _device(args: argparse.Namespace) -> str:
    """``args.device`` (``--device``; default the CPU), checked before anything is read.

    Raises:
        ValueError: CUDA where torch sees none.
    """
    from metaloop.generative.devices import resolve_device

    device = getattr(args, "device", None) or "cpu"
    if device == "cpu":
        return device
    try:
        resolve_device(device)
    except ValueError as e:
        raise ValueError(f"--device {device}: {e}") from None
    return device


def _record_device(device: str, threads: int | None = None) -> str:
    """A record's ``device`` for a run on ``device``: the GPU's name, or the CPU's model,
    cores and ``threads`` (default torch's)."""
    from metaloop.generative.devices import device_name
    from metaloop.generative.experiment import cpu_device

    return device_name(device) or cpu_device(threads)


def _curve_device(result: dict, device: str) -> str:
    """The ``device`` of a protocol run's curve records: the curve is measured where the
    passes trained, the CPU's unless a session trained on a GPU (named as this process
    sees it when the evaluation runs there too, else by the sessions' devices)."""
    gpus = sorted({r["device"] for r in result["sessions"] if "device" in r})
    if not gpus:
        threads = sorted({r["threads"] for r in result["sessions"]})
        return _record_device("cpu", threads[-1])
    return _record_device(device) if device != "cpu" else ", ".join(gpus)


def _protocol(args: argparse.Namespace, log: Callable = print, device: str = "cpu") -> int:
    """``--protocol iwae``: train/resume the run in --out, or --evaluate its checkpoint."""
    from metaloop.evaluate.heldout import format_mean_ci
    from metaloop.generative import protocol

    if args.compare_inversion or args.sweep_latent is not None or args.model != "vae":
        raise ValueError("--protocol iwae trains one VAE; drop --compare-inversion, "
                        "--sweep-latent and --model")
    if args.classes is not None:
        raise ValueError("--classes only applies to the CVAE (--model cvae)")
    _check_read(args)
    given = [f"--{k.replace('_', '-')} {getattr(args, k)}" for k, keep in _NOT_PROTOCOL
             if getattr(args, k, keep[0]) not in keep]
    if given:
        raise ValueError(f"--protocol iwae trains the paper's MLP VAE (Bernoulli decoder, "
                         f"dynamic binarisation, the stage schedule of --stages and --lr; "
                         f"stop it with --until-pass or --max-minutes); drop "
                         f"{', '.join(given)}")
    if args.record and not args.evaluate:
        raise ValueError("--record goes with --evaluate: the record is of a measured "
                        "checkpoint")
    _check_protocol_run(Path(args.out))
    if args.evaluate:
        if args.resume or args.until_pass is not None or args.max_minutes is not None:
            raise ValueError("--evaluate measures the checkpoint; it does not train: drop "
                            "--resume, --until-pass and --max-minutes")
        if args.record:
            from metaloop.evaluate import records

            records.check_record_path(args.record, out=args.out)
        _check_evaluated_run(args)
        result = protocol.evaluate_run(args.out, k=5000 if args.k is None else args.k,
                                       examples=args.test_examples, root=args.root,
                                       resample=args.resample,
                                       progress=not args.no_progress, device=device)
        t = result["test"]
        log(f"{result['passes']}/{result['total_passes']} passes: test NLL "
              f"{format_mean_ci(t['nll'], t['nll_ci95'])} (k = {t['k']}, {t['n']} images), "
              f"ELBO {t['elbo']:.2f}")
        if args.record:
            from metaloop.evaluate import records

            threads = sorted({r["threads"] for r in result["sessions"]})
            rec = protocol.record(result, command=_protocol_command(args, evaluate=True),
                                  device=_record_device(device, threads[-1]))
            # the curve, one record per point, beside it (its command is the training one),
            # then the main record: a stop between them leaves no new main record beside an
            # earlier evaluation's curve
            train_cmd = _protocol_command(args, evaluate=False)
            stem = args.record[:-len(".json")]
            for c in protocol.curve_records(result, command=train_cmd,
                                            device=_curve_device(result, device)):
                records.write_record(f"{stem}_curve_{c['passes']:04d}.json", **c)
            log(f"wrote {len(result['curve'])} curve records {stem}_curve_*.json")
            records.write_record(args.record, **rec)
            log(f"wrote {args.record}")
        return 0
    s = _protocol_settings(args)
    if not args.resume:                 # another run's folder: refused before anything is made
        _check_new_protocol_run(Path(args.out))
    with _output(args.out, checkpoints=True), _described(args):
        if not args.resume:
            _remove_stale_of_no_run(Path(args.out))
        state = protocol.run(s, args.out, resume=args.resume, until_pass=args.until_pass,
                             max_minutes=args.max_minutes,
                             final_k=5000 if args.k is None else args.k, log=log,
                             device=device)
    stopped = state.get("interrupted")
    log(f"{state['passes']}/{state['total_passes']} passes in {args.out} "
          f"({state['train_cpu_s'] / 60:.1f} CPU-min of training)"
          + ("" if state["done"] and not stopped else "; continue with --resume"))
    if stopped:      # checkpointed, but a chain (cmd && next) must not go on: exit 130
        raise KeyboardInterrupt(f"stopped by {stopped}")
    if state.get("final"):
        t = state["final"]["test"]
        log(f"test NLL {format_mean_ci(t['nll'], t['nll_ci95'])} (k = {t['k']}, {t['n']} "
            f"images)")
    return 0


NESTED_ADVICE = "add --class-depth 2"
"""What ``metaloop vae`` advises for an image folder whose images sit a level deeper than
its class folders (``metaloop.data.folder.NestedClassFoldersWarning``), in place of the
config key that ``metaloop train`` reads."""


def run(args, log: Callable[[str], None] = print) -> int:
    """Run the experiment the options ask for; returns 0. An image folder whose images sit
    a level below its class folders is warned of once, with ``NESTED_ADVICE``.

    Raises:
        ValueError: options that do not go together, or bad input (naming it).
    """
    from metaloop.data.folder import nested_warnings_once

    with nested_warnings_once(NESTED_ADVICE):
        return _run(args, log)


def _run(args, log: Callable[[str], None] = print) -> int:
    """``run``'s body."""
    from metaloop.generative import experiment
    from metaloop.generative.data import default_binarize
    from metaloop.generative.devices import device_name

    device = _device(args)
    _check_out_outside_data(args)
    # the commands written into records name --device only for a GPU's (a CPU run's are
    # those of a run without the option)
    args = argparse.Namespace(**{k: v for k, v in vars(args).items()
                                 if k != "device" or device != "cpu"})
    if args.protocol is not None:
        return _protocol(args, log, device=device)
    if args.classes is not None and (args.model != "cvae" or args.compare_inversion
                                     or args.inversion_transfer):
        raise ValueError("--classes only applies to the CVAE (--model cvae)")
    if args.sweep_latent is not None and args.model == "cvae":
        raise ValueError("--sweep-latent trains the AE and the VAE; drop --model cvae")
    if args.inversion_transfer and (args.compare_inversion or args.sweep_latent is not None):
        raise ValueError("--inversion-transfer is a run of its own; drop --compare-inversion "
                        "and --sweep-latent")
    if args.compare_inversion and args.sweep_latent is not None:
        raise ValueError("--compare-inversion and --sweep-latent are separate runs; pick one")
    _check_read(args)
    if getattr(args, "binarize", None) is None:       # follows the likelihood; recorded
        args = argparse.Namespace(**{**vars(args),
                                     "binarize": default_binarize(args.likelihood)})
    protocol_only = [f for f, v in (("--resume", args.resume),
                                    ("--until-pass", args.until_pass is not None),
                                    ("--max-minutes", args.max_minutes is not None),
                                    ("--evaluate", args.evaluate)) if v]
    if protocol_only:
        raise ValueError(f"{', '.join(protocol_only)} go(es) with --protocol iwae")
    if args.record and not (args.compare_inversion or args.inversion_transfer
                            or args.sweep_latent is not None):
        raise ValueError("--record goes with --compare-inversion, --inversion-transfer, "
                         "--sweep-latent or --protocol iwae --evaluate")
    if args.record:
        from metaloop.evaluate import records

        records.check_record_path(args.record, out=args.out)
    s = _settings(args)
    _check_no_finished_run(Path(args.out))     # before the folder is made or emptied
    if args.inversion_transfer:
        from metaloop.generative import inversion

        inv = inversion.InversionSettings(steps=args.invert_steps, lr=args.invert_lr,
                                          until=args.invert_until)
        with _output(args.out), _described(args):
            results = inversion.transfer_study(s, inv, args.invert_lrs, args.out,
                                               device=device)
        log(f"{results['data']}: classifier test accuracy "
              f"{results['classifier_test_accuracy']['inverted']:.3f} (A) / "
              f"{results['classifier_test_accuracy']['independent']:.3f} (B); chance "
              f"{results['chance']:.3f}\n{inversion.transfer_table(results)}")
        if args.record:
            from metaloop.evaluate import records

            records.write_record(args.record, **inversion.transfer_record(
                results, command=_transfer_command(args), device=device_name(device)))
            log(f"wrote {args.record}")
        log(f"wrote {args.out}/results.json")
        return 0
    if args.compare_inversion:
        from metaloop.generative import inversion

        inv = inversion.InversionSettings(steps=args.invert_steps, lr=args.invert_lr,
                                          until=args.invert_until, l2=args.invert_l2,
                                          tv=args.invert_tv, jitter=args.invert_jitter)
        with _output(args.out), _described(args):
            results = inversion.compare(s, inv, args.out, device=device)
        if args.record:
            from metaloop.evaluate import records

            records.write_record(args.record, **inversion.record(
                results, command=_record_command(args), device=device_name(device)))
            log(f"wrote {args.record}")
    elif args.sweep_latent is not None:
        with _output(args.out), _described(args):
            results = experiment.sweep(s, args.sweep_latent, args.out, device=device)
        if args.record:
            from metaloop.evaluate import records

            records.write_record(args.record, **experiment.sweep_record(
                results, command=_record_command(args), device=device_name(device)))
            log(f"wrote {args.record}")
    else:
        with _output(args.out), _described(args):
            results = experiment.run(s, args.out, device=device)
    log(_summary(results))
    log(f"wrote {args.out}/results.json")
    return 0

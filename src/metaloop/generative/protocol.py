"""The IWAE paper's training protocol for the VAE, as a resumable run (``metaloop vae
--protocol iwae``).

Burda et al. (2016), section 5: an MLP 784-200-200-50 (tanh) VAE with one stochastic layer,
a Bernoulli decoder, batch size 20, Adam (beta1 0.9, beta2 0.999, eps 1e-4) and
sum_{i=0}^{7} 3^i = 3,280 passes over the training data, with learning rate 0.001 * 10^(-i/7)
during the 3^i passes of stage i. Training images are binarised afresh in every batch
(dynamic binarisation, as the paper does); the test numbers use one fixed, seeded
binarisation of the test set (``data.eval_pixels``).

The run lives in a folder and can be stopped and resumed any number of times:

- ``ckpt-<passes>/`` and ``LATEST``: atomic checkpoints (``metaloop.train.checkpoint``) every
  ``checkpoint_every`` passes, at the end of every stage and when the run stops. A checkpoint
  holds the model, Adam's moments and step counts, the state of the one torch generator that
  draws the shuffling, the binarisation and the reparameterisation noise (nothing else is
  random), the pass counter, the CPU seconds so far and the curve. Resuming from it gives the
  same parameters, bit for bit, as a run that never stopped (same torch build and thread
  count).
- ``curve.json``: the test NLL against passes, measured at every stage end and every
  ``curve_every`` passes with a cheaper estimate (``curve_k`` samples on a fixed random
  ``curve_examples`` of the test images).
- ``final-k<k>-n<n>.json`` and ``samples.png`` from ``evaluate_run``: the IWAE_k NLL of the
  latest checkpoint, and 64 of its samples.
"""

from __future__ import annotations

import json
import math
import numbers
import os
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, fields, replace
from pathlib import Path

import torch
from tqdm.auto import tqdm

from metaloop import runlock, runs_folder
from metaloop._progress import tqdm_defaults
from metaloop._random import seeded_rng
from metaloop.evaluate.heldout import mean_ci
from metaloop.generative import data as gdata
from metaloop.generative import devices, plots
from metaloop.generative.bounds import elbo, evaluate_bounds, iwae_bound
from metaloop.generative.nets import check_number, check_positive, logit_of_mean
from metaloop.generative.vae import VAE
from metaloop.train import checkpoint as ckpt
from metaloop.train.signals import StopSignals

PROTOCOLS = ("iwae",)


def iwae_schedule(stages: int = 8, lr: float = 1e-3) -> list[tuple[int, float]]:
    """The IWAE paper's stages: ``[(3**i passes, lr * 10**(-i/7)) for i < stages]``.

    With the defaults: 3,280 passes in all, the learning rate falling from 1e-3 to 1e-4.

    Raises:
        ValueError: if ``stages`` < 1 or ``lr`` <= 0.
    """
    check_positive("stages", stages)
    if not lr > 0:
        raise ValueError(f"learning rate must be > 0, got {lr!r}")
    return [(3 ** i, lr * 10 ** (-i / 7)) for i in range(stages)]


def stage_ends(schedule: list[tuple[int, float]]) -> list[int]:
    """Cumulative passes at the end of each stage: ``[1, 4, 13, 40, ...]``."""
    ends, total = [], 0
    for passes, _ in schedule:
        total += passes
        ends.append(total)
    return ends


def stage_of(epoch: int, schedule: list[tuple[int, float]]) -> tuple[int, float]:
    """(stage index, learning rate) of 0-based pass ``epoch``.

    Raises:
        ValueError: if ``epoch`` is outside the schedule.
    """
    for i, end in enumerate(stage_ends(schedule)):
        if 0 <= epoch < end:
            return i, schedule[i][1]
    raise ValueError(f"pass {epoch} is outside the schedule's {stage_ends(schedule)[-1]} "
                     f"passes")


@dataclass
class ProtocolSettings:
    """What a protocol run depends on; stored in every checkpoint.

    Attributes:
        data: one of ``data.DATASETS`` (the paper's Omniglot sizes: ``"omniglot-mixed"``),
            or the path of your own image folder or tensor file (``data.load_user``; a
            ``Path`` is kept as its text, as is ``root``).
        latent: size of z (50 in the paper).
        hidden: MLP hidden widths (200, 200 in the paper).
        batch_size: examples per Adam step (20).
        lr: the first stage's learning rate (1e-3).
        stages: number of stages; stage i has 3^i passes (8: 3,280 passes).
        seed: seed of the initialisation and of the training generator.
        curve_k: importance samples of the curve's NLL estimates.
        curve_examples: test images of the curve (a fixed random subset; None: all).
        curve_every: also measure the curve every this many passes (0: stage ends only).
        checkpoint_every: checkpoint every this many passes (and at stage ends and stops).
        train_examples: use only this many training images (None: all; for quick checks).
        root: data folder (None: the loader's default search).
        resample: Omniglot's 105 -> 28 kernel (``data.RESAMPLE``; "bilinear").
        image_size, invert, test_fraction, channels, skip_corrupt, class_depth: your own
            data's options (``data.load_user``).
        data_hash: your own data's ``data.user_data_hash`` (None for the built-in sets;
            ``run`` fills it in), so that a resumed run refuses changed data.
    """

    data: str = "omniglot-mixed"
    latent: int = 50
    hidden: tuple[int, ...] = (200, 200)
    batch_size: int = 20
    lr: float = 1e-3
    stages: int = 8
    seed: int = 0
    curve_k: int = 500
    curve_examples: int | None = 1000
    curve_every: int = 200
    checkpoint_every: int = 50
    train_examples: int | None = None
    root: str | None = None
    resample: str = "bilinear"
    image_size: int = gdata.IMAGE_SIZE
    invert: str = gdata.INVERT
    test_fraction: float = gdata.TEST_FRACTION
    channels: int = 1
    skip_corrupt: bool = False
    class_depth: int = 1
    data_hash: str | None = None

    def __post_init__(self) -> None:
        # a path given as a Path is kept as the text every checkpoint's state.json holds
        # (it failed there, after the first pass)
        for name in ("data", "root"):
            if isinstance(getattr(self, name), os.PathLike):
                setattr(self, name, os.fspath(getattr(self, name)))


# Settings that change the trained parameters, or what a curve point measures and when
# (one curve of one estimator at one cadence); a resumed run must keep them.
_TRAINING_KEYS = ("data", "latent", "hidden", "batch_size", "lr", "stages", "seed",
                  "train_examples", "resample", "image_size", "invert", "test_fraction",
                  "channels", "skip_corrupt", "class_depth", "data_hash", "curve_every",
                  "curve_k", "curve_examples")


def _saved_settings(state: dict) -> dict:
    """A checkpoint's settings; one added since the checkpoint was written had its default."""
    return {**asdict(ProtocolSettings()), **state["settings"]}


def check_protocol_settings(s: ProtocolSettings) -> None:
    """Raise ``ValueError`` naming the first bad setting (a learning rate that is not a
    finite number > 0, a ``curve_every`` that is not an int >= 0, ...)."""
    gdata.check_data_options(s.data, resample=s.resample, test_fraction=s.test_fraction,
                             root=s.root, **gdata.decoding(s))
    for name in ("latent", "batch_size", "stages", "curve_k", "checkpoint_every"):
        check_positive(name, getattr(s, name), exact=True)
    if not s.hidden or any(h < 1 for h in s.hidden):
        raise ValueError(f"hidden widths must be >= 1, got {list(s.hidden)}")
    check_number("learning rate", s.lr)                  # finite: lr=inf trains to NaN
    if not isinstance(s.curve_every, numbers.Integral) or isinstance(s.curve_every, bool) \
            or s.curve_every < 0:
        raise ValueError(f"curve_every must be an int >= 0 (passes), got {s.curve_every!r}")
    for name in ("curve_examples", "train_examples"):
        if getattr(s, name) is not None:
            check_positive(name, getattr(s, name), exact=True)


def build_vae(s: ProtocolSettings, train_images: torch.Tensor) -> VAE:
    """The untrained MLP VAE (seeded by ``s.seed``), its output bias the logit of the
    training images' mean (as the IWAE code does). ``train_images``: uint8 ``[N, C, H, W]``."""
    bias = logit_of_mean(gdata.to_unit(train_images))
    with seeded_rng(s.seed):            # the initial weights; the caller's RNG is kept
        return VAE(s.latent, image_shape=tuple(train_images.shape[1:]), arch="mlp",
                   hidden=tuple(s.hidden), likelihood="bernoulli", output_bias=bias)


def _adam(model: VAE, lr: float) -> torch.optim.Adam:
    # fused: the same update as the for-loop Adam, about 30% faster per step here
    return torch.optim.Adam(model.parameters(), lr=lr, betas=(0.9, 0.999), eps=1e-4,
                            fused=True)


def _tensors(model: VAE, opt: torch.optim.Adam, g: torch.Generator) -> dict[str, torch.Tensor]:
    out = {f"model.{k}": v for k, v in model.state_dict().items()}
    for i, st in opt.state_dict()["state"].items():
        for name, v in st.items():
            out[f"adam.{i}.{name}"] = v
    out["generator"] = g.get_state()
    return out


def _restore(tensors: dict[str, torch.Tensor], model: VAE, opt: torch.optim.Adam,
             g: torch.Generator) -> None:
    model.load_state_dict({k[len("model."):]: v for k, v in tensors.items()
                           if k.startswith("model.")})
    sd = opt.state_dict()
    state: dict[int, dict[str, torch.Tensor]] = {}
    for k, v in tensors.items():
        if k.startswith("adam."):
            _, i, name = k.split(".", 2)
            state.setdefault(int(i), {})[name] = v
    sd["state"] = state
    opt.load_state_dict(sd)
    g.set_state(tensors["generator"])


def check_stops(until_pass: int | None, max_minutes: float | None) -> None:
    """ValueError naming ``until_pass`` below 1, or ``max_minutes`` that is not a finite
    number > 0 (``inf`` would never stop the run: leave it out)."""
    if until_pass is not None and until_pass < 1:
        raise ValueError(f"until_pass must be >= 1, got {until_pass}")
    if max_minutes is not None and not (math.isfinite(max_minutes) and max_minutes > 0):
        raise ValueError(f"max_minutes must be a finite number > 0, got {max_minutes!r}")


# What the other ``metaloop vae`` runs (one model, the latent sweep, the inversion studies)
# write in their folder, which a protocol run never writes (its ``samples.png`` comes with a
# checkpoint): a new protocol run beside them would mix two runs' files in one folder.
_OTHER_RUN_FILES = ("results.json", "model.safetensors", "metrics.jsonl",
                    "samples_fitted.png", "reconstructions.png", "interpolations.png",
                    "classes.png", "sweep.png", "inversion_compare.png")


def check_new_run_folder(out: str | os.PathLike) -> None:
    """Before a new protocol run (no ``resume``) writes in ``out``: refuse a folder that holds
    another command's run (``runs_folder.check``) or another ``metaloop vae`` run's files
    (an AE, VAE or CVAE run, a latent sweep, an inversion study), as a plain run refuses a
    folder holding a protocol run. A missing or empty folder, or one holding a protocol run
    (refused by ``train_protocol`` without ``resume``), passes.

    Raises:
        ValueError: naming the folder, the run it holds and its files; nothing was written.
    """
    out = Path(out)
    runs_folder.check(out, "vae --protocol iwae")
    try:
        there = [name for name in _OTHER_RUN_FILES if (out / name).is_file()]
    except OSError:                       # unreadable: named where the run writes
        return
    if there:
        raise ValueError(f"{out} holds a metaloop vae run ({', '.join(there)}), not a "
                         f"--protocol iwae run, which would mix its files with that run's: "
                         f"give another --out (nothing was written)")


def _write_curve(out: Path, passes: int, total: int, cpu_s: float, s: ProtocolSettings,
                 curve: list[dict]) -> None:
    """Write ``curve.json``, the curve of the checkpoint at ``passes``, atomically."""
    ckpt.atomic_write_text(out / "curve.json", json.dumps(
        {"passes": passes, "total_passes": total, "train_cpu_s": cpu_s,
         "settings": asdict(s), "curve": curve}, indent=1) + "\n")


@runlock.locked("out")
def train_protocol(images: torch.Tensor, out: str | os.PathLike, s: ProtocolSettings, *,
                   resume: bool = False, until_pass: int | None = None,
                   max_minutes: float | None = None,
                   curve_fn: Callable[[VAE], dict] | None = None,
                   log: Callable[[str], None] | None = None,
                   device: str | torch.device | None = None) -> dict:
    """Train (or continue training) the protocol's VAE on ``images``, checkpointing in ``out``.

    Args:
        images: uint8 ``[N, C, H, W]`` training images, 255 = ink.
        out: the run folder; without ``resume`` it must not hold a checkpoint yet, nor
            another run's files (``check_new_run_folder``).
        s: the settings (with ``resume``, the training ones must equal the checkpoint's).
        resume: continue from the latest checkpoint in ``out``.
        until_pass: stop once this many passes are done (None: the whole schedule).
        max_minutes: stop after the first pass that ends past this many wall-clock minutes
            of this call.
        curve_fn: called with the model at each curve point; returns the numbers to store
            (e.g. ``{"nll": ..., "elbo": ...}``). None: no curve.
        log: called with a line of progress text at each checkpoint.
        device: where the model trains (None: the CPU). The images stay where they are:
            each batch is binarised there and moved,
            and every random draw is made by the one CPU generator, so the checkpoints hold
            the same generator state on every device and a run resumes on another device.

    Returns:
        The state of the run: ``passes``, ``total_passes``, ``done``, ``interrupted`` (the
        name of the signal, SIGINT or SIGTERM, that stopped it, else None), ``train_cpu_s``,
        ``curve`` (one dict per curve point: ``passes``, ``stage``, ``lr``, ``train_cpu_s`` and
        what ``curve_fn`` returned), ``settings``, ``sessions``.

    Raises:
        ValueError: for bad settings or images, a checkpoint in ``out`` without ``resume``
            (or another run's files), no checkpoint with ``resume``, settings that differ
            from the checkpoint's, or a device this process cannot use.
    """
    check_protocol_settings(s)
    device = devices.device_or_cpu(device)
    if images.dtype != torch.uint8 or images.dim() != 4:
        raise ValueError(f"images must be uint8 [N, C, H, W], got {images.dtype} "
                         f"{list(images.shape)}")
    check_stops(until_pass, max_minutes)
    out = Path(out)
    schedule = iwae_schedule(s.stages, s.lr)
    ends = stage_ends(schedule)
    total = ends[-1]
    model = build_vae(s, images).to(device)
    opt = _adam(model, s.lr)                # after the move: fused Adam runs where the model is
    g = torch.Generator().manual_seed(s.seed)
    found = ckpt.latest_checkpoint(out) if out.exists() else None
    if resume:
        if found is None:
            raise ValueError(f"--resume: no checkpoint in {out} (no LATEST file); start the "
                             f"run without --resume")
        ckpt.remove_stale(out)
        tensors, state = ckpt.load_checkpoint(out)
        saved = _saved_settings(state)
        diff = [k for k in _TRAINING_KEYS
                if json.dumps(saved.get(k)) != json.dumps(asdict(s)[k])]
        if diff == ["data_hash"]:
            raise ValueError(f"the data {s.data} is not what the run in {out} was trained "
                             f"and split on (its images, labels or class names changed); "
                             f"resume it on the same data, or start a new run in another "
                             f"--out")
        if diff:
            raise ValueError("the run in {} was trained with other settings: {}".format(
                out, ", ".join(f"{k}={saved.get(k)!r} (now {asdict(s)[k]!r})" for k in diff)))
        _restore(tensors, model, opt, g)
        passes, cpu_s, curve = state["passes"], state["train_cpu_s"], state["curve"]
        train_log, sessions = state["train_log"], state["sessions"]
        # a run killed between its checkpoint and curve.json left the previous curve there
        _write_curve(out, passes, total, cpu_s, s, curve)
    else:
        if found is not None:
            raise ValueError(f"{out} already holds a run (checkpoint {found.name}); add "
                             f"--resume to continue it, or choose another --out")
        check_new_run_folder(out)
        out.mkdir(parents=True, exist_ok=True)
        passes, cpu_s, curve, train_log, sessions = 0, 0.0, [], [], []
    stop_at = total if until_pass is None else min(until_pass, total)
    sessions.append({"from_passes": passes, "threads": torch.get_num_threads(),
                     "torch": torch.__version__, "started": time.strftime(
                         "%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                     **({"device": str(device)} if device.type != "cpu" else {})})
    n = len(images)
    wall0 = time.perf_counter()
    curve_at = set(ends) | ({p for p in range(s.curve_every, total + 1, s.curve_every)}
                            if s.curve_every else set())

    def save() -> None:
        sessions[-1]["to_passes"] = passes
        state = {"passes": passes, "total_passes": total, "train_cpu_s": cpu_s,
                 "curve": curve, "train_log": train_log, "sessions": sessions,
                 "settings": asdict(s), "schedule": schedule}
        ckpt.save_checkpoint(out, passes, _tensors(model, opt, g), state)
        _write_curve(out, passes, total, cpu_s, s, curve)
        if log is not None:
            last = curve[-1] if curve else {}
            log(f"passes {passes}/{total}  train cpu {cpu_s / 60:.1f} min  "
                f"last curve point {json.dumps(last)}")

    model.train()
    with StopSignals() as stop:
        while passes < stop_at:
            stage, lr = stage_of(passes, schedule)
            for group in opt.param_groups:
                group["lr"] = lr
            cpu0 = time.process_time()
            perm = torch.randperm(n, generator=g)
            loss_sum, batches = 0.0, 0
            for start in range(0, n, s.batch_size):
                x = gdata.binarize_dynamic(images[perm[start:start + s.batch_size]], g)
                x = x.to(device)                                   # [b, 1, H, W]
                loss, _ = model.loss(x, generator=g)
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                loss_sum, batches = loss_sum + float(loss.detach()), batches + 1
            cpu_s += time.process_time() - cpu0
            passes += 1
            train_log.append([passes, round(loss_sum / batches, 4)])
            if curve_fn is not None and passes in curve_at:
                cpu1 = time.process_time()
                point = curve_fn(model)
                model.train()
                curve.append({"passes": passes, "stage": stage, "lr": lr,
                              "train_cpu_s": round(cpu_s, 1), **point,
                              "eval_cpu_s": round(time.process_time() - cpu1, 1)})
            out_of_time = (max_minutes is not None
                           and time.perf_counter() - wall0 >= 60 * max_minutes)
            stopping = passes >= stop_at or out_of_time or stop.name is not None
            if stopping or passes in ends or passes % s.checkpoint_every == 0:
                save()
            if stopping:
                break
    return {"passes": passes, "total_passes": total, "done": passes >= total,
            "interrupted": stop.name, "train_cpu_s": cpu_s, "curve": curve,
            "settings": asdict(s), "sessions": sessions}


def _subset(n: int, k: int | None, seed: int) -> torch.Tensor:
    """A fixed random ``k`` of ``range(n)`` (sorted), or all of it."""
    if k is None or k >= n:
        return torch.arange(n)
    return torch.randperm(n, generator=torch.Generator().manual_seed(seed))[:k].sort().values


def _load(s: ProtocolSettings, split: str) -> gdata.ImageData:
    return gdata.load(s.data, split, s.root, s.resample, test_fraction=s.test_fraction,
                      **gdata.decoding(s))


def with_data_hash(s: ProtocolSettings) -> ProtocolSettings:
    """``s`` with your own data's ``data_hash`` filled in (unchanged for the built-in sets)."""
    if not gdata.is_user_data(s.data):
        return s
    return replace(s, data_hash=gdata.user_data_hash(s.data, **gdata.decoding(s)))


def load_protocol_data(s: ProtocolSettings) -> tuple[torch.Tensor, torch.Tensor]:
    """uint8 training images ``[N, 1, S, S]`` and the statically binarised test pixels
    ``[M, 1, S, S]`` of ``s.data`` (S = 28 for the built-in sets)."""
    images = _load(s, "train").images
    if s.train_examples is not None:
        images = images[_subset(len(images), s.train_examples, s.seed)]
    x_te = gdata.eval_pixels(_load(s, "test").images, "dynamic")
    return images, x_te


def curve_evaluator(x_test: torch.Tensor, s: ProtocolSettings) -> Callable[[VAE], dict]:
    """The curve's measurement: ELBO and IWAE_{curve_k} NLL on a fixed random
    ``curve_examples`` of the binarised test pixels ``x_test`` ``[M, C, H, W]``."""
    idx = _subset(len(x_test), s.curve_examples, s.seed + 1)
    x = x_test[idx]

    def measure(model: VAE) -> dict:
        model.eval()
        m = evaluate_bounds(model, x.to(model.decoder.bias.device), k=s.curve_k,
                            batch_size=100, seed=s.seed)
        return {"elbo": round(m["elbo"], 4), "nll": round(m["nll"], 4), "k": s.curve_k,
                "n": m["n"]}
    return measure


@runlock.locked("out")
def run(s: ProtocolSettings, out: str | os.PathLike, *, resume: bool = False,
        until_pass: int | None = None, max_minutes: float | None = None, final_k: int = 5000,
        log: Callable[[str], None] | None = print,
        device: str | torch.device | None = None) -> dict:
    """Load ``s.data`` and train (or resume) the protocol run in ``out``; see
    ``train_protocol``. When the run reaches the last pass, it also measures the full test
    set with ``final_k`` importance samples (``evaluate_run``; the result is ``"final"``).
    Both on ``device`` (None: the CPU)."""
    check_protocol_settings(s)
    check_stops(until_pass, max_minutes)                # before the data is read
    device = devices.device_or_cpu(device)
    images, x_te = load_protocol_data(s)
    s = with_data_hash(s)
    state = train_protocol(images, out, s, resume=resume, until_pass=until_pass,
                           max_minutes=max_minutes, curve_fn=curve_evaluator(x_te, s), log=log,
                           device=device)
    if state["done"] and not state["interrupted"]:      # stopped: --resume measures it
        state["final"] = evaluate_run(out, k=final_k, x_test=x_te, s=s, device=device)
    return state


@runlock.locked("out", create=False)
def evaluate_run(out: str | os.PathLike, *, k: int = 5000, examples: int | None = None,
                 x_test: torch.Tensor | None = None, s: ProtocolSettings | None = None,
                 root: str | None = None, resample: str | None = None,
                 progress: bool = False, device: str | torch.device | None = None) -> dict:
    """The IWAE_k NLL of the latest checkpoint in ``out`` on the test set (or on a fixed
    random ``examples`` of it); writes ``final-k<k>-n<n>.json`` in ``out`` and returns it.
    If that file already holds this checkpoint's measurement, it is returned as it is.

    Args:
        out: the run folder.
        k: importance samples per test image.
        examples: measure a fixed random subset of this many test images (None: all).
        x_test: the binarised test pixels ``[M, C, H, W]`` (None: loaded from the run's data).
        s: the run's settings (None: the checkpoint's, with ``root`` if given).
        root: data folder, when ``s`` is None.
        resample: the Omniglot kernel the run must have been trained on (None: the
            checkpoint's, unchecked).
        progress: show a progress bar.
        device: where the model is measured (None: the CPU); the noise
            is drawn by a CPU generator on every device.

    Returns:
        ``passes``, ``total_passes``, ``train_cpu_s``, ``test`` (``nll``, ``nll_ci95``,
        ``elbo``, ``k``, ``n``), ``test_examples``, ``n_test``, ``eval_cpu_s``,
        ``eval_wall_s``, ``threads``, ``settings``, ``binarization_entropy`` (the mean
        entropy of the measured test images' binarisation, ``data.binarization_entropy``,
        the floor under any model's expected NLL; None for a given ``x_test``), ``curve``
        and ``sessions``; and ``read_from`` (the file's name) when the measurement was
        read from ``final-k<k>-n<n>.json`` rather than made by this call.

    Raises:
        ValueError: if ``k`` or ``examples`` is not positive, ``out`` has no checkpoint, or
            ``resample`` is not the run's.
    """
    check_positive("k", k, exact=True)
    if examples is not None:
        check_positive("examples", examples, exact=True)
    device = devices.device_or_cpu(device)
    out = Path(out)
    if ckpt.latest_checkpoint(out) is None:
        raise ValueError(f"no checkpoint in {out} to evaluate")
    tensors, state = ckpt.load_checkpoint(out)
    if s is None:
        saved = _saved_settings(state)
        s = ProtocolSettings(**{**saved, "hidden": tuple(saved["hidden"]),
                                "root": root if root is not None else saved["root"]})
        if gdata.is_user_data(s.data) and with_data_hash(s).data_hash != s.data_hash:
            raise ValueError(f"the data {s.data} is not what the run in {out} was trained "
                             f"and split on (its images, labels or class names changed): "
                             f"its test set would be another")
    if resample is not None and resample != s.resample:
        raise ValueError(f"the run in {out} was trained on Omniglot downsampled with "
                         f"resample={s.resample!r}, not {resample!r}: evaluate it with "
                         f"--resample {s.resample}")
    grey = None
    if x_test is None:
        grey = _load(s, "test").images                                     # uint8 [M, 1, H, W]
        x_test = gdata.eval_pixels(grey, "dynamic")
    idx = _subset(len(x_test), examples, s.seed + 2)
    entropy = None if grey is None else float(gdata.binarization_entropy(grey[idx]).mean())
    name = f"final-k{k}-n{len(idx)}.json"

    def saved_model() -> VAE:
        model = VAE(s.latent, image_shape=tuple(x_test.shape[1:]), arch="mlp",
                    hidden=tuple(s.hidden), likelihood="bernoulli")
        model.load_state_dict({k_[len("model."):]: v for k_, v in tensors.items()
                               if k_.startswith("model.")})
        return model.to(device).eval()

    if (out / name).exists():                 # measured already (e.g. at the end of the run)
        done = json.loads((out / name).read_text())
        if done.get("passes") == state["passes"] and "nll_ci95" in done.get("test", {}):
            if entropy is not None and done.get("binarization_entropy") is None:
                done["binarization_entropy"] = entropy
                ckpt.atomic_write_text(out / name, json.dumps(done, indent=1) + "\n")
            if not (out / "samples.png").exists():    # lost (removed, or an older kill)
                _draw_samples(saved_model(), s, state["passes"], done["test"]["nll"], k, out)
            return {**done, "read_from": name}
    model = saved_model()
    cpu0, wall0 = time.process_time(), time.perf_counter()
    m = _per_example(model, x_test[idx].to(device), k=k, seed=s.seed, progress=progress)
    result = {"passes": state["passes"], "total_passes": state["total_passes"],
              "train_cpu_s": state["train_cpu_s"], "test": m,
              "test_examples": "all" if examples is None or examples >= len(x_test)
              else examples, "n_test": len(x_test),
              "eval_cpu_s": time.process_time() - cpu0,
              "eval_wall_s": time.perf_counter() - wall0,
              "threads": torch.get_num_threads(), "settings": asdict(s),
              "binarization_entropy": entropy,
              "curve": state["curve"], "sessions": state["sessions"],
              **({"device": str(device)} if device.type != "cpu" else {})}
    _draw_samples(model, s, state["passes"], m["nll"], k, out)
    # last: the json's presence means the measurement and its samples are complete
    ckpt.atomic_write_text(out / name, json.dumps(result, indent=1) + "\n")
    return result


def _draw_samples(model: VAE, s: ProtocolSettings, passes: int, nll: float, k: int,
                  out: Path) -> None:
    """``samples.png``: 64 of the model's samples (seeded by ``s.seed``), titled with its
    test NLL ``nll`` (IWAE_``k``)."""
    samples = model.sample(64, generator=torch.Generator().manual_seed(s.seed))   # [64, 1, H, W]
    plots.save_grid(samples, out / "samples.png", ncol=8, title=(
        f"VAE {gdata.data_label(s.data)}, IWAE protocol, {passes:,} passes\n"
        f"decoder means for z ~ N(0, I); test NLL {nll:.2f} (k = {k})"))


@torch.no_grad()
def _per_example(model: VAE, x: torch.Tensor, *, k: int, seed: int, progress: bool,
                 batch_size: int = 100) -> dict:
    """Means over ``x`` ``[N, C, H, W]`` of the ELBO and the IWAE_k NLL, with the NLL's 95%
    half-width over examples (``metaloop.evaluate.mean_ci``: Student's t; None for N = 1)."""
    g = torch.Generator().manual_seed(seed)
    nll, elbos = [], []
    for start in tqdm(range(0, len(x), batch_size), desc=f"eval (k={k})", disable=not progress,
                      leave=False, **tqdm_defaults()):
        xb = x[start:start + batch_size]
        elbos.append(elbo(model, xb, generator=g)["elbo"])                      # [b]
        nll.append(-iwae_bound(model, xb, k, chunk=500, generator=g))           # [b]
    nll_t, elbo_t = torch.cat(nll).double(), torch.cat(elbos).double()            # [N]
    n = len(nll_t)
    ci = mean_ci(nll_t.tolist())[1]
    return {"nll": float(nll_t.mean()), "nll_ci95": ci, "elbo": float(elbo_t.mean()),
            "k": k, "n": n}


PUBLISHED = {"value": "108.11",
             "source": "Burda, Grosse & Salakhutdinov 2016, Importance Weighted Autoencoders "
                       "(ICLR), Table 1: OMNIGLOT, 1 stochastic layer, VAE, k = 1; NLL "
                       "estimated with k = 5000"}


# The data and model of the paper's number: the built-in Omniglot split of its sizes
# (omniglot-mixed: 24,345 / 8,070 images, 28x28), all of its training images, and the
# paper's VAE and schedule. Either Omniglot kernel (the row names a bicubic one).
PAPER_K = 5000           # the paper's NLL estimate: IWAE_k with k = 5000, every test image
PAPER_SETTINGS = {"data": "omniglot-mixed", "latent": 50, "hidden": [200, 200],
                  "batch_size": 20, "lr": 1e-3, "stages": 8, "train_examples": None}


def published_for(s: dict) -> dict | None:
    """``PUBLISHED`` for a run of saved settings ``s`` that measure what the paper measured
    (``PAPER_SETTINGS``), else None: the paper's NLL is no reference for other data, another
    model or another schedule."""
    same = all(json.dumps(s.get(k)) == json.dumps(v) for k, v in PAPER_SETTINGS.items())
    return PUBLISHED if same else None


def _default_kernel(s: dict) -> bool:
    return s.get("resample", "bilinear") == "bilinear"


def _kernel_label(s: dict) -> str:
    """How the row names a run's Omniglot kernel: nothing for the default."""
    return "" if _default_kernel(s) else f", {s['resample']} downsampling"


def _layers(s: dict) -> str:
    """The MLP's layer sizes, e.g. ``784-200-200-50`` (the paper's), from saved settings."""
    pixels = s.get("channels", 1) * s.get("image_size", gdata.IMAGE_SIZE) ** 2
    return "-".join(str(n) for n in (pixels, *s["hidden"], s["latent"]))


def record(result: dict, *, command: str, device: str) -> dict:
    """The docs record (``metaloop.evaluate.records.write_record`` fields) of an
    ``evaluate_run`` result: the test NLL with its passes, CPU time, curve and projection;
    ``published`` is the paper's number for a run at the paper's data and settings
    (``published_for``) whose NLL is estimated as the paper's (k >= ``PAPER_K`` on every
    test image), else None."""
    s, test = result["settings"], result["test"]
    total, passes = result["total_passes"], result["passes"]
    subset = result["test_examples"]
    which = ("all {:,} test images".format(result["n_test"]) if subset == "all"
             else f"a fixed random {subset:,} of the {result['n_test']:,} test images")
    curve = result["curve"]
    proj = None if passes >= total else projection(curve, total)
    if proj is not None:          # the measured NLL moved by the curve's projected gain
        proj = test["nll"] + proj - projection(curve, passes)
    note = (f"{passes:,} of {total:,} passes" + ("" if passes >= total else
                                                 ", run stopped short; resumable"))
    ent = result.get("binarization_entropy")
    if ent is not None:
        note += (f"; {ent:.2f} nats of it at least are the binarisation's own entropy, "
                 "the floor under any model's NLL on these images")
    gpus = sorted({r["device"] for r in result["sessions"] if "device" in r})
    if gpus:                      # the budget is the CPU seconds of every session
        note += (f"; some passes trained on {', '.join(gpus)} (its sessions say which), "
                 f"counted in the budget by their CPU seconds")
    if result.get("read_from"):
        note += (f"; the test NLL was measured at the end of training ({result['read_from']} "
                 f"in the run folder, {result['threads']} thread(s)), which the command read")
    return {
        "table": "generative_iwae",
        "row": f"VAE {_layers(s)}, IWAE protocol, {s['data']}{_kernel_label(s)}",
        "note": note,
        "metric": f"test NLL (nats), k = {test['k']:,}, {which}",
        "mean": round(test["nll"], 2),
        "ci95": None if test["nll_ci95"] is None else round(test["nll_ci95"], 2), "n": test["n"],
        "digits": 2,
        "budget": {"iterations": passes, "cpu_seconds": round(result["train_cpu_s"])},
        "device": device, "torch": torch.__version__.split("+")[0],
        "date": time.strftime("%Y-%m-%d", time.gmtime()),
        "config": None, "command": command,
        # the paper's NLL beside the paper's estimate only: k = 5000 on every test image
        "published": (published_for(s) if test["k"] >= PAPER_K and subset == "all"
                      else None),
        "passes": passes, "total_passes": total, "k": test["k"],
        "test_elbo": round(test["elbo"], 3),
        "test_binarization_entropy": None if ent is None else round(ent, 2),
        "test_examples": subset, "n_test": result["n_test"],
        "eval_cpu_s": round(result["eval_cpu_s"], 1), "threads": result["threads"],
        "settings": s, "schedule": iwae_schedule(s["stages"], s["lr"]),
        "curve": curve, "curve_estimate": (
            f"IWAE_k with k = {s['curve_k']} on a fixed random {s['curve_examples']} "
            f"of the test images (seed {s['seed'] + 1}), at every stage end and every "
            f"{s['curve_every']} passes"),
        "projection_nll_at_end": None if proj is None else round(proj, 2),
        "sessions": result["sessions"],
    }


def curve_records(result: dict, *, command: str, device: str) -> list[dict]:
    """One docs record per curve point of an ``evaluate_run`` result (table
    ``generative_iwae_curve``, rows in order of passes), so the curve is a generated table:
    the NLL estimate of the curve (``curve_k`` samples, ``curve_examples`` fixed test images),
    its passes and the training CPU time so far. ``command`` is the training command."""
    s = result["settings"]
    date = time.strftime("%Y-%m-%d", time.gmtime())
    ends = stage_ends(iwae_schedule(s["stages"], s["lr"]))
    out = []
    for c in result["curve"]:
        what = (f"end of stage {c['stage']}" if c["passes"] in ends
                else f"stage {c['stage']}")
        out.append({
            "table": "generative_iwae_curve" + ("" if _default_kernel(s) else
                                                f"_{s['resample']}"),
            "row": f"{c['passes']:,} pass{'es' if c['passes'] != 1 else ''} "
                   f"({what}, lr {c['lr']:.3g})",
            "metric": f"test NLL (nats), k = {c['k']}, a fixed random {c['n']:,} test images",
            "mean": round(c["nll"], 2), "ci95": None, "n": c["n"], "digits": 2,
            "order": c["passes"],
            "budget": {"iterations": c["passes"], "cpu_seconds": round(c["train_cpu_s"])},
            "device": device, "torch": torch.__version__.split("+")[0], "date": date,
            "config": None, "command": command, "published": None,
            "passes": c["passes"], "stage": c["stage"], "lr": c["lr"],
            "test_elbo": c["elbo"], "eval_cpu_s": c["eval_cpu_s"],
        })
    return out


def settings_from(**kwargs) -> ProtocolSettings:
    """``ProtocolSettings`` from keyword arguments, ignoring None values; unknown names
    raise ``ValueError``."""
    names = {f.name for f in fields(ProtocolSettings)}
    bad = sorted(set(kwargs) - names)
    if bad:
        raise ValueError(f"unknown protocol settings: {', '.join(bad)}")
    return ProtocolSettings(**{k: v for k, v in kwargs.items() if v is not None})


def projection(curve: list[dict], total_passes: int, key: str = "nll") -> float | None:
    """Extrapolate ``key`` to ``total_passes``: a least-squares line in log(passes) through
    the curve points of the last stage reached (its learning rate is constant), or through the
    last two points if that stage has fewer than two. None with fewer than two points. A
    rough guide, not a measurement.
    """
    pts = [c for c in curve if key in c]
    if len(pts) < 2:
        return None
    last = [c for c in pts if c["stage"] == pts[-1]["stage"]]
    pts = last if len(last) >= 2 else pts[-2:]
    xs = [math.log(c["passes"]) for c in pts]
    ys = [c[key] for c in pts]
    mx, my = sum(xs) / len(xs), sum(ys) / len(ys)
    slope = (sum((x - mx) * (y - my) for x, y in zip(xs, ys))
             / sum((x - mx) ** 2 for x in xs))
    return my + slope * (math.log(total_passes) - mx)

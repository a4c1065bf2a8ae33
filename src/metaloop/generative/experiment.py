"""End-to-end runs behind ``metaloop vae``: train one model and report it, or sweep latent sizes.

``run`` trains an AE, VAE or CVAE, then writes under ``out``:

- ``results.json``: the settings, the test ELBO and its parts, the IWAE NLL (VAE/CVAE), the
  AE's test reconstruction, timings and the list of pictures; written last, atomically, so
  its presence means the run finished (a new run in the folder removes the old one first);
- ``metrics.jsonl``: one line per epoch (training means, and every ``eval_every`` epochs the
  ELBO on a fixed random 1,000 of the test images);
- ``model.safetensors``: the trained weights;
- PNGs: ``samples.png``, ``reconstructions.png``, ``interpolations.png``; the AE adds
  ``samples_fitted.png`` (z from a Gaussian fitted to its codes), the CVAE ``classes.png``.

``sweep`` trains the AE and the VAE at each latent size and draws the lecture's picture,
``sweep.png``, scored by a classifier trained on the real data (``quality``).
"""

from __future__ import annotations

import json
import math
import os
import platform
import subprocess
import sys
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any, cast

import torch
from safetensors import SafetensorError
from safetensors.torch import save_file

from metaloop import runlock, runs_folder
from metaloop._random import seeded_rng
from metaloop.generative import data as gdata
from metaloop.generative import devices, likelihoods, plots, quality
from metaloop.generative.ae import AE, fit_code_gaussian
from metaloop.generative.bounds import evaluate_bounds
from metaloop.generative.cvae import CVAE, check_classes, sample_classes
from metaloop.generative.fit import fit_generative
from metaloop.generative.nets import check_flag, check_positive, logit_of_mean
from metaloop.generative.vae import VAE
from metaloop.train import checkpoint as ckpt

MODELS = ("ae", "vae", "cvae")


@dataclass
class Settings:
    """Everything a run depends on; written to ``results.json``.

    Attributes:
        model: ``"ae"``, ``"vae"`` or ``"cvae"``.
        data: one of ``data.DATASETS``, or the path of your own image folder or tensor
            file (``data.load_user``; a ``Path`` is kept as its text, as is ``root``).
        latent: size of z.
        arch: ``"mlp"`` (IWAE 784-200-200-L, tanh) or ``"conv"``.
        hidden: MLP hidden widths.
        likelihood: ``"bernoulli"``, ``"gaussian"`` or ``"cbernoulli"``.
        binarize: ``"dynamic"``, ``"static"`` or ``"none"`` (training); test data is
            statically binarised unless ``"none"``.
        beta: KL weight in the training loss.
        epochs: passes over the training data (an upper limit with ``cpu_budget_min``).
        batch_size: examples per step.
        lr: initial Adam learning rate.
        lr_end: final learning rate of the geometric decay.
        cpu_budget_min: stop training after this many CPU minutes (None: no limit).
        k: importance samples of the NLL estimate (0: skip).
        eval_batch: test examples per pass of the NLL estimate.
        eval_every: epochs between test-ELBO checks in ``metrics.jsonl`` (0: never).
        train_examples: use only this many training images (None: all).
        test_examples: use only this many test images (None: all).
        train_eval_examples: also report the bounds on this many random (statically
            binarised) training images, to tell overfitting from a train/test shift.
        classes: classes drawn in the CVAE's ``classes.png`` (None: all): integer indices,
            or class names as ``classes.png`` labels them (``resolve_classes``); the run
            stores their indices.
        classifier_epochs: epochs of the sweep's quality classifier.
        quality_samples: samples scored per generator in the sweep.
        seed: seed of everything random.
        root: data folder (None: the loader's default search).
        resample: Omniglot's 105 -> 28 kernel (``data.RESAMPLE``; "bilinear").
        image_size: your own images' side (the built-in sets are 28x28).
        invert: your own images' inversion, ``"auto"``, ``"always"`` or ``"never"``.
        test_fraction: share of each class of your own data held out as the test split.
        channels: your own images' channels, 1 (grey) or 3 (RGB colour).
        skip_corrupt: leave your own folder's unreadable images out instead of refusing it.
        class_depth: your own folder's layout, 1 ``root/<class>/<image>`` or 2
            ``root/<group>/<class>/<image>``.
        progress: show progress bars.
    """

    model: str = "vae"
    data: str = "fashion-mnist"
    latent: int = 50
    arch: str = "mlp"
    hidden: tuple[int, ...] = (200, 200)
    likelihood: str = "bernoulli"
    binarize: str = "dynamic"
    beta: float = 1.0
    epochs: int = 20
    batch_size: int = 100
    lr: float = 1e-3
    lr_end: float = 1e-4
    cpu_budget_min: float | None = None
    k: int = 5000
    eval_batch: int = 100
    eval_every: int = 0
    train_examples: int | None = None
    test_examples: int | None = None
    train_eval_examples: int = 0
    classes: list[int | str] | None = None
    classifier_epochs: int = 2
    quality_samples: int = 2000
    seed: int = 0
    root: str | None = None
    resample: str = "bilinear"
    image_size: int = gdata.IMAGE_SIZE
    invert: str = gdata.INVERT
    test_fraction: float = gdata.TEST_FRACTION
    channels: int = 1
    skip_corrupt: bool = False
    class_depth: int = 1
    progress: bool = True

    def __post_init__(self) -> None:
        # a path given as a Path, as the loaders take it, is kept as the text that
        # results.json holds (it failed there, after the whole run)
        for name in ("data", "root"):
            if isinstance(getattr(self, name), os.PathLike):
                setattr(self, name, os.fspath(getattr(self, name)))


def check_settings(s: Settings) -> None:
    """Fail early, with the offending value named, before any data is loaded.

    Raises:
        ValueError: for any bad setting.
    """
    if s.model not in MODELS:
        raise ValueError(f"unknown model {s.model!r}; choose one of {', '.join(MODELS)}")
    gdata.check_data_options(s.data, resample=s.resample, test_fraction=s.test_fraction,
                             root=s.root, **gdata.decoding(s))
    check_positive("latent size (--latent)", s.latent, exact=True)
    check_flag("settings", "progress", s.progress)      # read only once training starts
    likelihoods.check_kind(s.likelihood)
    gdata.check_binarize(s.binarize)
    for name in ("epochs", "batch_size", "eval_batch", "classifier_epochs", "quality_samples"):
        check_positive(name, getattr(s, name), exact=True)
    if s.train_eval_examples < 0:
        raise ValueError(f"train_eval_examples must be >= 0, got {s.train_eval_examples}")
    for name in ("train_examples", "test_examples"):
        if getattr(s, name) is not None:
            check_positive(name, getattr(s, name), exact=True)
    if s.k < 0 or s.eval_every < 0:
        raise ValueError(f"k and eval_every must be >= 0, got k={s.k}, "
                         f"eval_every={s.eval_every}")
    if not (0 < s.lr < math.inf and 0 < s.lr_end < math.inf):
        raise ValueError(f"learning rates must be finite and > 0, got lr={s.lr}, "
                         f"lr_end={s.lr_end}")
    if not 0 <= s.beta < math.inf:
        raise ValueError(f"beta must be finite and >= 0, got {s.beta}")
    if s.cpu_budget_min is not None and not 0 < s.cpu_budget_min < math.inf:
        raise ValueError(f"cpu budget must be a finite number > 0 of minutes, got "
                         f"{s.cpu_budget_min}")
    if s.model == "cvae" and s.data == "omniglot":
        raise ValueError("the CVAE needs the same classes in train and test, but Omniglot's "
                         "background and evaluation alphabets are disjoint; use "
                         "--data fashion-mnist")


def _subset(d: gdata.ImageData, n: int | None, seed: int) -> gdata.ImageData:
    if n is None or n >= len(d.images):
        return d
    idx = torch.randperm(len(d.images), generator=torch.Generator().manual_seed(seed))[:n]
    return d._replace(images=d.images[idx], labels=d.labels[idx])


def load_split(s: Settings, split: str, classes_for: str | None = None) -> gdata.ImageData:
    """The whole ``split`` of ``s.data`` (``data.load`` with the settings' data options;
    ``classes_for``: what needs 2 classes or more, checked first)."""
    return gdata.load(s.data, split, s.root, s.resample, test_fraction=s.test_fraction,
                      classes_for=classes_for, **gdata.decoding(s))


def load_data(s: Settings, classes_for: str | None = None
              ) -> tuple[gdata.ImageData, gdata.ImageData]:
    """The (possibly subsampled) train and test splits of ``s.data``.

    Args:
        s: the settings.
        classes_for: what needs at least 2 classes (``data.require_classes``), checked
            before the split of your own data; None: any number.

    Raises:
        ValueError: if the data has one class where ``classes_for`` needs two, or either
            split has fewer than 2 images (a Gaussian fitted to codes, an interpolation and
            a Frechet distance each need two).
    """
    tr = _subset(load_split(s, "train", classes_for), s.train_examples, s.seed)
    te = _subset(load_split(s, "test", classes_for), s.test_examples, s.seed + 1)
    for split, d, n in (("training", tr, s.train_examples), ("test", te, s.test_examples)):
        if len(d.images) < 2:
            flag = f"--{'train' if split == 'training' else 'test'}-examples"
            fix = [f"raise {flag} (now {n})"] if n is not None and n < 2 else []
            if not fix and gdata.is_user_data(s.data):
                fix = ["add images to --data" + (
                    f", or raise --test-fraction (now {s.test_fraction:g})"
                    if split == "test" else "")]
            elif not fix:
                fix = ["use the whole data set in --root" if s.root else
                       "use the whole data set"]
            raise ValueError(f"need at least 2 {split} images, got {len(d.images)}: "
                             f"{fix[0]}")
    return tr, te


def _class_list(names: list[str], most: int = 20) -> str:
    """``0 'a', 1 'b', ...``: the classes by index and name (the first ``most``)."""
    shown = ", ".join(f"{i} {n!r}" for i, n in enumerate(names[:most]))
    return shown + (f", ... ({len(names)} classes)" if len(names) > most else "")


def resolve_classes(classes, names: list[str], data: str = "the data") -> list[int]:
    """``Settings.classes`` as class indices.

    An item may be a class index (an int, or its digits) or a class name as ``classes.png``
    labels it (an image folder's sub-folder name, a tensor file's ``class_names``). Digits
    within ``[0, len(names))`` are an index, whatever the names: a class whose folder is
    named with digits is given by its index (the error for an unknown class lists both).

    Args:
        classes: the items.
        names: the data's class names, in label order.
        data: how the messages name the data.

    Returns:
        The indices, in the order given.

    Raises:
        ValueError: an unknown name, an index outside ``[0, len(names))`` or a class given
            twice, listing the classes by index and name.
    """
    k = len(names)
    index = {str(n): i for i, n in enumerate(names)}
    out: list[int] = []
    bad: list[object] = []
    for c in classes:
        if isinstance(c, bool):
            bad.append(c)
            continue
        if isinstance(c, int):
            (out if 0 <= c < k else bad).append(c)
            continue
        text = str(c)
        try:
            number = int(text)
        except ValueError:
            number = None
        if number is not None and 0 <= number < k:     # digits are an index, as always
            out.append(number)
        elif text in index:
            out.append(index[text])
        else:
            bad.append(text)
    if bad:
        shown = ", ".join(map(str, bad))
        raise ValueError(f"unknown class(es) [{shown}] for CVAE sampling: {data} has classes "
                         f"0..{k - 1} ({_class_list(names)}); give indices or names")
    twice = sorted({i for i in out if out.count(i) > 1})
    if twice:
        raise ValueError(f"--classes {','.join(map(str, classes))} names "
                         f"{', '.join(f'class {i} ({names[i]!r})' for i in twice)} more than "
                         f"once")
    return out


def data_identity(s: Settings) -> dict:
    """For your own data, ``{"data_hash": ...}`` (``data.user_data_hash``) to store beside
    the settings; nothing for the built-in sets."""
    if not gdata.is_user_data(s.data):
        return {}
    return {"data_hash": gdata.user_data_hash(s.data, **gdata.decoding(s))}


def build_model(kind: str, s: Settings, train_images: torch.Tensor, n_classes: int
                ) -> AE | VAE:
    """An untrained ``kind`` model whose output bias is the logit of the training mean."""
    bias = logit_of_mean(gdata.to_unit(train_images), likelihoods.n_params(s.likelihood))
    common: dict[str, Any] = dict(image_shape=tuple(train_images.shape[1:]), arch=s.arch,
                                  hidden=s.hidden, likelihood=s.likelihood, output_bias=bias)
    with seeded_rng(s.seed):            # the initial weights; the caller's RNG is kept
        if kind == "ae":
            return AE(s.latent, **common)
        if kind == "vae":
            return VAE(s.latent, beta=s.beta, **common)
        return CVAE(n_classes, s.latent, beta=s.beta, **common)


def checked_pixels(s: Settings, tr: gdata.ImageData, te: gdata.ImageData) -> torch.Tensor:
    """The test pixels (``data.eval_pixels``), after checking that they and the training
    pixels the models will see suit ``s.likelihood`` (``likelihoods.check_data``): so that
    bad data fails before anything is trained or written.

    Raises:
        ValueError: as ``likelihoods.check_data`` (grey pixels for the Bernoulli decoder
            with ``binarize = "none"``, ...).
    """
    if s.binarize == "none":              # binarised pixels suit every likelihood
        likelihoods.check_data(gdata.to_unit(tr.images), s.likelihood)
    x_te = gdata.eval_pixels(te.images, s.binarize)
    likelihoods.check_data(x_te, s.likelihood)
    return x_te


# Every picture a run of this module or of ``inversion`` draws in its folder.
PICTURES = ("samples.png", "samples_fitted.png", "reconstructions.png", "interpolations.png",
            "classes.png", "sweep.png", "inversion_compare.png")


def check_no_finished_run(out: str | os.PathLike) -> None:
    """Before a new run (a model, a sweep, an inversion study) writes in ``out``: refuse a
    folder that holds a finished ``metaloop vae`` run (its results.json), which the new run
    would replace, naming its model (or study), data and epochs
    (``metaloop.runs_folder.check_finished``); ``run``, ``sweep`` and ``metaloop vae`` call
    it before anything is read or written.

    Args:
        out: the output folder; a missing one, or one with no finished run, passes.

    Raises:
        ValueError: naming the folder, the run's settings and files; nothing was written or
            removed.
    """
    res = runs_folder.results_of(out)
    settings = res.get("settings")
    if not isinstance(settings, dict):
        settings = {}
    if isinstance(res.get("latents"), list):
        kind = f"--sweep-latent {','.join(map(str, res['latents']))}"
    elif "inversion" in res:
        kind = "an inversion study (--compare-inversion or --inversion-transfer)"
    elif "model" in settings:
        kind = f"--model {settings['model']}"
    else:
        kind = ""
    parts = [kind, *(f"--{k.replace('_', '-')} {settings[k]}" for k in ("data", "epochs")
                     if isinstance(settings.get(k), (str, int)))]
    runs_folder.check_finished(out, "vae", ", ".join(x for x in parts if x))


def _start_out(out: Path) -> None:
    """Make the folder ``out`` for a new run: an earlier run's ``results.json``,
    ``model.safetensors`` and pictures (``PICTURES``) are removed and ``metrics.jsonl``
    emptied, so that neither a run stopped before its end (``results.json`` is written last,
    by ``_write_results``) nor one that draws other pictures (a VAE after a CVAE) leaves
    files behind that describe another run; the temporary files a killed writer left are
    removed (``checkpoint.remove_stale``). A folder that holds another command's run is
    refused first (``runs_folder.check``), and so is one that holds a finished run of
    ``metaloop vae`` (``check_no_finished_run``; ``inversion.compare`` too)."""
    runs_folder.check(out, "vae")               # another command's run: not emptied
    check_no_finished_run(out)                  # nor a finished one of this command
    out.mkdir(parents=True, exist_ok=True)
    ckpt.remove_stale(out)
    for name in ("results.json", "model.safetensors", *PICTURES):  # an earlier run's
        (out / name).unlink(missing_ok=True)
    (out / "metrics.jsonl").write_text("")


def _save_model(model: torch.nn.Module, path: Path) -> None:
    """Save ``model``'s weights to ``path`` through a temporary file renamed over it: a
    run stopped while saving leaves no truncated model.

    Raises:
        metaloop.train.checkpoint.WriteError: ``path`` could not be written (a full disk, a
            folder made read-only), naming it and why; ``path`` is as it was.
    """
    tmp = path.with_name(f".{path.name}.{os.getpid()}")
    try:
        save_file(model.state_dict(), str(tmp))
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)          # safetensors makes 0600; a run is for sharing
        os.replace(tmp, path)
    except BaseException as e:
        tmp.unlink(missing_ok=True)
        if isinstance(e, (OSError, SafetensorError)):  # safetensors' "File too large"
            raise ckpt.WriteError(f"cannot write {path}: "
                                  f"{getattr(e, 'strerror', None) or e}") from e
        raise


def _write_results(out: Path, results: dict) -> None:
    """Write ``results.json`` atomically (``checkpoint.atomic_write_text``): a run stopped
    while writing it leaves none, never a partial file. Call it after every file it
    describes is written."""
    ckpt.atomic_write_text(out / "results.json", json.dumps(results, indent=2) + "\n")


def _jsonl(path: Path):
    def write(record: dict) -> None:
        with open(path, "a") as f:
            f.write(json.dumps(record) + "\n")
    return write


@torch.no_grad()
def heldout_metrics(model: AE | VAE, x: torch.Tensor, y: torch.Tensor | None, *, k: int,
                    batch: int, seed: int, progress: bool) -> dict[str, float]:
    """VAE/CVAE: ``evaluate_bounds`` (ELBO, recon, KL, NLL). AE: mean test log p(x | f(x))."""
    model.eval()
    if isinstance(model, AE):
        recon = sum(float(model.log_px(x[i:i + batch], model.codes(x[i:i + batch])).sum())
                    for i in range(0, len(x), batch))
        return {"recon": recon / len(x), "n": len(x)}
    return evaluate_bounds(model, x, y if model.conditional else None, k=k, batch_size=batch,
                    seed=seed, progress=progress)


def _train_model(model, s: Settings, tr: gdata.ImageData, x_te, y_te, log) -> list[dict]:
    # a fixed random subset: test sets can be ordered (Omniglot's by alphabet)
    watch = torch.randperm(len(x_te), generator=torch.Generator().manual_seed(s.seed))[:1000]

    def on_epoch(rec: dict) -> None:
        if s.eval_every and rec["epoch"] % s.eval_every == 0:
            m = heldout_metrics(model, x_te[watch], y_te[watch], k=0, batch=500, seed=s.seed,
                                progress=False)
            model.train()
            rec.update({f"test_{n}": v for n, v in m.items() if n != "n"})
        log(rec)

    budget = None if s.cpu_budget_min is None else 60 * s.cpu_budget_min
    return fit_generative(model, tr.images, tr.labels, epochs=s.epochs, batch_size=s.batch_size,
                 lr=s.lr, lr_end=s.lr_end, binarize=s.binarize, cpu_budget_s=budget,
                 seed=s.seed, on_epoch=on_epoch, progress=s.progress)


def _pairs(y: torch.Tensor, n: int, same_class: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """n index pairs (a, b) into the test set; for a CVAE both share a class."""
    a = torch.arange(n)
    if not same_class:
        return a, a + n
    b = torch.tensor([int(torch.nonzero(y == y[i])[-1]) for i in range(n)])
    return a, b


def code_pixels(images: torch.Tensor, binarize: str, seed: int, n: int = 10_000
                ) -> torch.Tensor:
    """The pixels an AE's code Gaussian is fitted to (``fit_code_gaussian``): the first ``n``
    training ``images`` in the form the AE was trained on, as ``data.eval_pixels`` gives
    them: the grey values for ``binarize`` ``"none"`` (the continuous likelihoods), else a
    seeded binarisation."""
    return gdata.eval_pixels(images[:n], binarize, seed)


@torch.no_grad()
def write_pictures(model: AE | VAE, s: Settings, tr: gdata.ImageData, te: gdata.ImageData,
                   x_te: torch.Tensor, out: Path) -> list[str]:
    """Samples, reconstructions, interpolations (and AE fitted samples / CVAE class rows)."""
    model.eval()
    g = torch.Generator().manual_seed(s.seed)
    cond = getattr(model, "conditional", False)
    files = {}
    # a CVAE's 64 samples take the labels of the first 64 test images, cycled if fewer
    y64 = te.labels[torch.arange(64) % len(te.labels)] if cond else None      # [64]
    files["samples.png"] = (model.sample(64, y=y64, generator=g) if isinstance(model, VAE)
                            else model.sample(64, generator=g))
    if isinstance(model, AE):
        fitted = fit_code_gaussian(model, code_pixels(tr.images, s.binarize, s.seed))
        files["samples_fitted.png"] = model.sample(64, generator=g, code_gaussian=fitted)
    kw = {"y": te.labels[:16]} if cond else {}
    rec = model.reconstruct(x_te[:16], **kw)                          # [min(16, N), C, H, W]
    shown = gdata.to_unit(te.images)      # what is shown; the model saw x_te (binarised)
    # rows of 8: test images, their reconstructions (twice with 16 or more test images)
    w = min(8, len(rec))
    rows: list[torch.Tensor] | torch.Tensor             # then the classes' samples [K, 10, ...]
    rows = ([shown[:w], rec[:w]] if len(rec) < 16 else
            [shown[:8], rec[:8], shown[8:16], rec[8:16]])
    files["reconstructions.png"] = torch.stack(rows)                  # [R, w, C, H, W]
    n_pairs = min(8, len(x_te) // 2)
    a, b = _pairs(te.labels, n_pairs, cond)
    ya = {"y": te.labels[a]} if cond else {}
    za, zb = model.codes(x_te[a], **ya), model.codes(x_te[b], **ya)   # [P, L]
    t = torch.linspace(0, 1, 10).reshape(1, 10, 1)
    z = (1 - t) * za[:, None] + t * zb[:, None]                      # [P, 10, L]
    path = model.decode_mean(z.transpose(0, 1), **ya).transpose(0, 1)  # [P, 10, C, H, W]
    files["interpolations.png"] = torch.cat([shown[a, None], path, shown[b, None]], dim=1)
    for name, images in files.items():
        plots.save_grid(images, out / name, title=_title(name, s), ncol=8)
    names = list(files)
    if cond:
        classes = check_classes(cast(VAE, model), [int(c) for c in s.classes]
                                if s.classes is not None else range(model.n_classes))
        rows = sample_classes(cast(VAE, model), classes, 10, generator=g)    # [K, 10, C, H, W]
        labels = [tr.class_names[int(c)] for c in classes]
        plots.save_grid(rows, out / "classes.png", title=_title("classes.png", s),
                        row_labels=labels)
        names.append("classes.png")
    return names


_TITLES = {
    "samples.png": "samples, z ~ N(0, I)",
    "samples_fitted.png": "samples, z ~ Gaussian fitted to the codes",
    "reconstructions.png": "rows: test images (not binarised), reconstructions",
    "interpolations.png": "test image, 10 codes on the line between, test image",
    "classes.png": "one row per class",
}


def _title(name: str, s: Settings) -> str:
    return f"{s.model.upper()} {gdata.data_label(s.data)}, latent {s.latent}\n{_TITLES[name]}"


@runlock.locked("out")
def run(s: Settings, out: str | os.PathLike, *, device: str | torch.device | None = None
        ) -> dict:
    """Train, evaluate and draw one model; write ``results.json``, ``metrics.jsonl``, PNGs.

    Args:
        s: the settings.
        out: output folder (created).
        device: where the model trains and is measured (None: the CPU). The
            data are moved there; the pictures are drawn with the
            model moved back to the CPU, and the noise is drawn by CPU generators, so the
            same seed draws the same noise on every device.

    Returns:
        The ``results.json`` content (with ``"device"``, where the model trained, when that
        was not the CPU).

    Raises:
        ValueError: for bad settings or data unsuited to the likelihood, a device this
            process cannot use (``devices.resolve_device``), or an ``out`` that holds a
            finished ``metaloop vae`` run (``check_no_finished_run``: the error the command
            turns into exit status 2; nothing is read or written).
        FileNotFoundError: if the data set is missing.
    """
    check_no_finished_run(out)            # before anything is read or written
    check_settings(s)
    device = devices.device_or_cpu(device)
    if s.classes is not None and s.model != "cvae":
        raise ValueError("--classes only applies to the CVAE (--model cvae)")
    cvae = "the conditional VAE (--model cvae)" if s.model == "cvae" else None
    tr, te = load_data(s, cvae)
    if cvae:
        gdata.require_classes(tr, s.data, cvae)
    if s.model == "cvae" and s.classes is not None:
        s = replace(s, classes=list[int | str](resolve_classes(s.classes, tr.class_names,
                                                                s.data)))
    x_te = checked_pixels(s, tr, te)
    model = build_model(s.model, s, tr.images, tr.n_classes)      # bad widths: before output
    model.to(device)                      # on the CPU, the tensors below are the same ones
    on = tr.to(device)
    x_on, y_on = x_te.to(device), te.labels.to(device)
    out = Path(out)
    _start_out(out)
    cpu0, wall0 = time.process_time(), time.perf_counter()
    history = _train_model(model, s, on, x_on, y_on, _jsonl(out / "metrics.jsonl"))
    train_cpu, train_wall = time.process_time() - cpu0, time.perf_counter() - wall0
    cpu0, wall0 = time.process_time(), time.perf_counter()
    test = heldout_metrics(model, x_on, y_on, k=s.k, batch=s.eval_batch, seed=s.seed,
                           progress=s.progress)
    eval_cpu, eval_wall = time.process_time() - cpu0, time.perf_counter() - wall0
    train_eval = None
    if s.train_eval_examples:
        pick = torch.randperm(len(tr.images), generator=torch.Generator().manual_seed(s.seed))
        pick = pick[:s.train_eval_examples]                    # random: Omniglot is ordered
        x_tr = gdata.eval_pixels(tr.images[pick], s.binarize)
        train_eval = heldout_metrics(model, x_tr.to(device), tr.labels[pick].to(device),
                                     k=s.k, batch=s.eval_batch, seed=s.seed,
                                     progress=s.progress)
    model.cpu()                           # the pictures and model.safetensors: on the CPU
    pictures = write_pictures(model, s, tr, te, x_te, out)
    results = {"settings": asdict(s), **data_identity(s), "test": test,
               "train_subset": train_eval,
               "final_train": history[-1],
               "epochs_done": history[-1]["epoch"], "steps": history[-1]["steps"],
               "train_cpu_s": train_cpu, "train_wall_s": train_wall, "eval_cpu_s": eval_cpu,
               "eval_wall_s": eval_wall, "n_train": len(tr.images), "n_test": len(te.images),
               "threads": torch.get_num_threads(), "pictures": pictures,
               **({"device": str(device)} if device.type != "cpu" else {})}
    _save_model(model, out / "model.safetensors")
    _write_results(out, results)                     # last: it marks the run complete
    return results


SWEEP_COLUMNS = ("AE, z ~ N(0, I)", "AE, z ~ Gaussian fitted to codes", "VAE, z ~ N(0, I)")


def _sweep_samples(kind: str, model: AE | VAE, tr: gdata.ImageData, n: int, seed: int,
                   binarize: str) -> dict[str, torch.Tensor]:
    """The sweep's ``n`` samples of each column of ``kind``, on the model's device (drawn by
    CPU generators; the AE's code pixels binarised on the CPU from ``tr``'s images)."""
    g = torch.Generator().manual_seed(seed)
    model.eval()
    if kind == "vae":
        return {SWEEP_COLUMNS[2]: model.sample(n, generator=g)}
    pixels = code_pixels(tr.images.cpu(), binarize, seed).to(model.decoder.bias.device)
    fitted = fit_code_gaussian(cast(AE, model), pixels)                   # "ae": an AE
    return {SWEEP_COLUMNS[0]: model.sample(n, generator=g),
            SWEEP_COLUMNS[1]: cast(AE, model).sample(n, generator=g, code_gaussian=fitted)}


@runlock.locked("out")
def sweep(s: Settings, latents: list[int], out: str | os.PathLike, *,
          device: str | torch.device | None = None) -> dict:
    """Train the AE and the VAE at each latent size; score and draw their samples.

    The quality classifier is trained on the real training images; ``quality_samples``
    samples of each generator are scored against the real test images (``quality``). The
    real test images themselves give the ceiling (``results["real"]``), and the classifier's
    accuracy on them is ``results["classifier_test_accuracy"]``.

    Args:
        s: settings (``s.model`` and ``s.latent`` are ignored).
        latents: the latent sizes, each > 0.
        out: output folder: ``results.json``, ``metrics.jsonl``, ``sweep.png``.
        device: where the classifier and the models train and everything is scored (None:
            the CPU); the noise is drawn by CPU generators (as ``run``'s) and the picture
            on the CPU.

    Returns:
        The ``results.json`` content (with ``"device"`` when that was not the CPU).

    Raises:
        ValueError: for a latent size <= 0 or any bad setting, Omniglot's Lake split
            (``"omniglot"``), whose test alphabets are not the classifier's, a device this
            process cannot use (``devices.resolve_device``), or an ``out`` that holds a
            finished ``metaloop vae`` run (``check_no_finished_run``; nothing is read or
            written).
    """
    check_no_finished_run(out)            # before anything is read or written
    if not latents:
        raise ValueError("--sweep-latent needs at least one latent size")
    for latent in latents:
        check_positive("latent size (--sweep-latent)", latent, exact=True)
    check_settings(Settings(**{**asdict(s), "model": "vae", "latent": latents[0]}))
    if s.data == "omniglot":
        raise ValueError("the sweep's scoring classifier is trained on the training classes and "
                         "measured on the test images, but Omniglot's background and "
                         "evaluation alphabets are disjoint (its test accuracy would compare "
                         "unrelated labels); use --data omniglot-mixed")
    device = devices.device_or_cpu(device)
    cpu_start, wall_start = time.process_time(), time.perf_counter()
    scorer = "the sweep's scoring classifier (--sweep-latent)"
    tr, te = load_data(s, scorer)
    gdata.require_classes(tr, s.data, scorer)
    x_te = checked_pixels(s, tr, te)
    real = gdata.to_unit(te.images)
    n = min(s.quality_samples, len(real) // 2)    # samples scored; as many real test images
    if n < 2:
        raise ValueError(f"the sweep scores at least 2 samples against as many real test "
                         f"images: need --quality-samples >= 2 and at least 4 test images, "
                         f"got {s.quality_samples} and {len(real)}")
    # everything the classifier and the models see, on the device (on the CPU: the same
    # tensors); the CPU's images stay for the pictures and the AE's code pixels
    on = tr.to(device)
    x_te, y_te, real = x_te.to(device), te.labels.to(device), real.to(device)
    out = Path(out)
    _start_out(out)
    log = _jsonl(out / "metrics.jsonl")
    clf = quality.train_classifier(on.images, on.labels, tr.n_classes,
                                   epochs=s.classifier_epochs, seed=s.seed, progress=s.progress)
    results = {"settings": asdict(s), **data_identity(s), "latents": list(latents),
               "classifier_test_accuracy": quality.accuracy(clf, real, y_te),
               "real": quality.sample_quality(clf, real[:n], real[n:]), "n_scored": n,
               "runs": {}}
    panels: dict[int, dict[str, torch.Tensor]] = {}
    scores: dict[int, dict[str, Any]] = {}
    for latent in latents:
        sl = Settings(**{**asdict(s), "latent": latent})
        panels[latent], scores[latent], results["runs"][latent] = {}, {}, {}
        for kind in ("ae", "vae"):
            sl.model = kind
            model = build_model(kind, sl, tr.images, tr.n_classes).to(device)
            cpu0 = time.process_time()
            hist = _train_model(model, sl, on, x_te, y_te,
                                lambda r, k=kind, lat=latent: log({"model": k, "latent": lat,
                                                                   **r}))
            test = heldout_metrics(model, x_te, y_te, k=s.k if kind == "vae" else 0,
                                   batch=s.eval_batch, seed=s.seed, progress=False)
            entry = {"test": test, "epochs_done": hist[-1]["epoch"],
                     "train_cpu_s": time.process_time() - cpu0, "quality": {}}
            for col, samples in _sweep_samples(kind, model, tr, n, s.seed,
                                               s.binarize).items():
                scores[latent][col] = entry["quality"][col] = quality.sample_quality(
                    clf, samples, real[n:])
                panels[latent][col] = samples[:32].cpu()                # drawn on the CPU
            results["runs"][latent][kind] = entry
    plots.save_sweep(panels, scores, out / "sweep.png")
    results["pictures"] = ["sweep.png"]
    results["cpu_s"] = time.process_time() - cpu_start
    results["wall_s"] = time.perf_counter() - wall_start
    results["threads"] = torch.get_num_threads()
    if device.type != "cpu":
        results["device"] = str(device)
    _write_results(out, results)
    return results


DATA_LABELS = {"fashion-mnist": "Fashion-MNIST",
               "omniglot-mixed": "Omniglot (mixed split, 50 alphabets)"}


def cpu_model() -> str:
    """The CPU's model name: Linux's /proc/cpuinfo ``model name``, macOS's ``sysctl
    machdep.cpu.brand_string`` ("Apple M2"), Windows' ``platform.processor()``; "" where
    none says (ARM Linux, say)."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    if sys.platform == "darwin":
        try:
            return subprocess.run(["sysctl", "-n", "machdep.cpu.brand_string"],
                                  capture_output=True, text=True, timeout=10).stdout.strip()
        except (OSError, subprocess.SubprocessError):
            return ""
    return platform.processor().strip() if sys.platform == "win32" else ""


def cpu_device(threads: int | None = None) -> str:
    """``"CPU (<n>-core <model>), <t> thread(s)"``, the model from ``cpu_model`` (left out
    where unknown, as is the core count where ``os.cpu_count`` cannot tell) and ``t`` the
    given ``threads`` (default: torch's current thread count)."""
    cores = os.cpu_count()
    what = " ".join(w for w in (f"{cores}-core" if cores else "", cpu_model()) if w)
    where = f" ({what})" if what else ""
    t = torch.get_num_threads() if threads is None else threads
    return f"CPU{where}, {t} thread{'s' if t != 1 else ''}"


def _sweep_run(results: dict, latent: int) -> dict:
    """``results["runs"]`` of one latent size, keyed by int (``sweep``'s result) or by str
    (the same read back from ``results.json``)."""
    runs = results["runs"]
    return runs[latent] if latent in runs else runs[str(latent)]


def sweep_table(results: dict) -> str:
    """``sweep``'s scores as Markdown: one row per latent size, the Frechet distance of each
    generator's samples (lowest in bold) and the test likelihoods, then the real images'."""
    head = ("| latent | " + " | ".join(f"{c}: FD" for c in SWEEP_COLUMNS)
            + " | AE test recon (nats) | VAE test ELBO (nats) |\n"
            + "|---" * (len(SWEEP_COLUMNS) + 3) + "|")
    rows = [head]
    for latent in results["latents"]:
        run = _sweep_run(results, latent)
        fd = {c: run[k]["quality"][c]["frechet"] for k in ("ae", "vae")
              for c in run[k]["quality"]}
        best = min(fd.values())
        cells = [f"**{fd[c]:.1f}**" if fd[c] == best else f"{fd[c]:.1f}" for c in SWEEP_COLUMNS]
        rows.append(f"| {latent} | " + " | ".join(cells)
                    + f" | {run['ae']['test']['recon']:.1f} | {run['vae']['test']['elbo']:.1f} |")
    rows.append(f"| real test images | {results['real']['frechet']:.2f} | | | | |")
    return "\n".join(rows)


def run_budget(results: dict, cpu_s: float) -> dict:
    """A study's record ``budget``: ``cpu_s`` CPU seconds, or for a run on a GPU (its
    ``results["device"]``) its wall-clock seconds as GPU seconds."""
    if "device" in results:
        return {"gpu_seconds": round(results["wall_s"])}
    return {"cpu_seconds": round(cpu_s)}


def sweep_record(results: dict, command: str, device: str | None = None) -> dict:
    """The docs record (``metaloop.evaluate.records``) of one latent sweep.

    The headline is the Frechet distance of the VAE's samples at the largest latent size (no
    CI: one set of samples); every latent size and generator is in ``detail``
    (``sweep_table``) and ``runs``.

    Args:
        results: ``sweep``'s result. command: the exact command line.
        device: what ran it (default: the CPU model, cores and torch threads; give a GPU
            run's GPU, as ``devices.device_name`` names it). A GPU run's budget is its
            wall-clock GPU seconds (``run_budget``).
    """
    import datetime

    data = results["settings"]["data"]
    latent = results["latents"][-1]
    run = _sweep_run(results, latent)
    epochs = results["settings"]["epochs"]
    return {
        "table": "generative_sweep",
        "row": (f"{DATA_LABELS.get(data, data)}, AE and VAE at latent sizes "
                f"{', '.join(str(z) for z in results['latents'])}, {epochs} epochs each"),
        "metric": f"FD of the VAE's samples at latent size {latent} (z ~ N(0, I))",
        "mean": run["vae"]["quality"][SWEEP_COLUMNS[2]]["frechet"], "ci95": None,   # as shown
        "n": results["n_scored"], "digits": 1,
        "budget": run_budget(results, results["cpu_s"]),
        "device": device or cpu_device(results.get("threads")),
        "torch": torch.__version__.split("+")[0],
        "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d"),
        "config": None, "command": command, "published": None, "detail": sweep_table(results),
        **{k: results[k] for k in ("settings", "latents", "classifier_test_accuracy", "real",
                                   "n_scored", "runs", "cpu_s", "wall_s") if k in results},
    }

"""The lecture's generative argument on one figure and one score table (``metaloop vae
--compare-inversion``).

1. **Invert a classifier.** Train classifier A, then optimise images until A is sure they show
   class c (``invert_classifier``). Three ways, all in the figure: from noise until A's
   probability reaches 99%; from noise with the total-variation, L2 and jitter regularisers
   for all the steps; from a real training image of another class until 99% (the classic
   adversarial example). A fourth, from noise for all the steps without regularisers, is in
   the table only.
2. **Autoencoder samples.** Decode z ~ N(0, I) with a trained AE.
3. **VAE and CVAE samples.** Decode z ~ N(0, I) with a trained VAE, and with a CVAE given
   each class.

Everything is scored by classifier B, trained like A on the same data but from another seed
(the held-out classifier, never optimised against):

- ``frechet``: Frechet distance between Gaussians fitted to B's penultimate features of the
  samples and of real test images (``quality.frechet_distance``; lower is better);
- for the class-conditional generators (inversion, CVAE): ``accuracy_independent``, the
  fraction of samples meant as class c that B classifies as c (chance is 1 / classes);
  ``frechet_class``, the Frechet distance of the samples meant as class c to the real test
  images of class c, averaged over the classes (``quality.class_frechet_distance``: an image
  inverted from a real image of another class looks real, so ``frechet`` is low, but it
  lies far from the class it was meant as); and ``mean_confidence_inverted``, A's mean
  probability of the intended class (``invert.confidence_report``);
- for every generator: A's and B's mean top-class probability.

Real test images give the ceiling. Every row is scored on the same number of images: the
real row's come from the first half of the test set, the FD's reference is the rest, so a
test set too small to give ``quality_samples`` real images lowers every row's count to what
it holds (``fit_scored``). ``reliability`` names, in ``results["warnings"]``, the scores that
such small counts leave unreliable. Omniglot runs on the ``omniglot-mixed`` split (labels are
the 50 alphabets, present in both train and test): Lake's split has disjoint train and test
alphabets, so neither a classifier's accuracy nor the CVAE's classes would carry over.

Outputs under ``out``: ``results.json``, ``metrics.jsonl`` (the generators' training
epochs) and ``inversion_compare.png``.
"""

from __future__ import annotations

import math
import os
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any, cast

import torch
from matplotlib.figure import Figure

from metaloop import runlock
from metaloop.generative import data as gdata
from metaloop.generative import devices, plots, quality
from metaloop.generative.cvae import sample_classes
from metaloop.generative.experiment import (
    DATA_LABELS,
    PICTURES,
    Settings,
    _jsonl,
    _start_out,
    _train_model,
    _write_results,
    build_model,
    check_no_finished_run,
    check_settings,
    checked_pixels,
    cpu_device,
    data_identity,
    heldout_metrics,
    load_data,
    run_budget,
)
from metaloop.generative.invert import confidence_report, invert_classifier
from metaloop.generative.nets import check_positive
from metaloop.generative.vae import VAE

FIGURE = "inversion_compare.png"
# name -> (how it is made, in the figure?)
METHODS = {
    "inversion": "inverted classifier, from noise until A is 99% sure",
    "inversion_regularised": "inverted classifier + TV, L2, jitter (all steps)",
    "inversion_from_real": "inverted classifier, from a real image of another class",
    "inversion_all_steps": "inverted classifier, from noise, all steps",
    "ae": "AE, z ~ N(0, I)",
    "vae": "VAE, z ~ N(0, I)",
    "cvae": "CVAE, z ~ N(0, I), class given",
}


def method_labels(until: float) -> dict[str, str]:
    """``METHODS`` with the noise inversion's "until A is sure" probability ``until``."""
    return {**METHODS, "inversion": f"inverted classifier, from noise until A is "
                                    f"{100 * until:g}% sure"}


# B's penultimate features (``quality.Classifier.features``) have 128 dimensions: a Gaussian
# fitted to fewer images than that has a singular covariance, and the FD's bias, which falls
# like 1/n, is most of what it measures (two sets of real images of one class score far above
# 0). Below this many images on either side an FD is flagged as unreliable.
FD_MIN_IMAGES = 128
# The lesson's "A is fooled, B is not" was measured with classifiers trained to convergence on
# 487 (Omniglot, mixed split) to 6,000 (Fashion-MNIST) training images per class on average
# (docs/generative.md). Trained on 4 to 250 Fashion-MNIST images per class, B gave the
# intended class to 22-31% of A's inversions from noise (chance 10%), on 500 per class 14%:
# with fewer training images per class on average than this, the claim is flagged.
LESSON_MIN_TRAIN_PER_CLASS = 400

CONDITIONAL = ("inversion", "inversion_regularised", "inversion_from_real",
               "inversion_all_steps", "cvae")
# the figure's panels, 2 rows of 3: per-class panels on the left of each row
PANELS = (("inversion", "inversion_regularised", "inversion_from_real"),
          ("cvae", "ae", "vae"))


@dataclass
class InversionSettings:
    """How the classifier is inverted (``invert_classifier``) and how much is drawn.

    Attributes:
        steps: Adam steps per image.
        lr: Adam learning rate on the pixel logits.
        until: the "until A is sure" probability of the noise and real-image variants.
        l2: L2 weight of the regularised variant.
        tv: total-variation weight of the regularised variant.
        jitter: largest random shift (pixels) of the regularised variant.
        figure_classes: classes drawn (the first ones; all are scored).
        figure_per_class: images per class row and per panel row.
    """

    steps: int = 400
    lr: float = 0.05
    until: float = 0.99
    l2: float = 0.3
    tv: float = 1.0
    jitter: int = 2
    figure_classes: int = 10
    figure_per_class: int = 10


def check_inversion_settings(inv: InversionSettings) -> None:
    """Fail early, naming the bad value.

    Raises:
        ValueError: for any bad setting.
    """
    for name in ("steps", "figure_classes", "figure_per_class"):
        check_positive(f"inversion {name}", getattr(inv, name), exact=True)
    if not (math.isfinite(inv.lr) and inv.lr > 0):
        raise ValueError(f"inversion lr must be > 0, got {inv.lr}")
    if not 0 < inv.until <= 1:
        raise ValueError(f"inversion until must be a probability in (0, 1], got {inv.until}")
    if not all(math.isfinite(w) and w >= 0 for w in (inv.l2, inv.tv)) \
            or isinstance(inv.jitter, bool) or inv.jitter < 0:
        raise ValueError(f"inversion penalties must be >= 0 and finite, got l2={inv.l2}, "
                         f"tv={inv.tv}, jitter={inv.jitter}")


def split_name(data: str) -> str:
    """The split the comparison runs on: Omniglot's class-sharing ``omniglot-mixed``."""
    return "omniglot-mixed" if data == "omniglot" else data


def _other_class_images(tr: gdata.ImageData, targets: torch.Tensor, seed: int
                        ) -> tuple[torch.Tensor, torch.Tensor]:
    """For each target, a random training image of another class: float ``[n, 1, H, W]``
    and its labels ``[n]``."""
    g = torch.Generator().manual_seed(seed)
    idx = torch.randint(len(tr.labels), (len(targets),), generator=g)     # [n]
    for _ in range(1000):
        same = tr.labels[idx] == targets
        if not bool(same.any()):
            break
        idx[same] = torch.randint(len(tr.labels), (int(same.sum()),), generator=g)
    else:
        raise ValueError("could not find training images of another class")
    return gdata.to_unit(tr.images[idx]), tr.labels[idx]


def _scores(samples: torch.Tensor, targets: torch.Tensor | None, A, B, f_real: torch.Tensor,
            ref_labels: torch.Tensor) -> dict:
    """B's and A's scores of ``samples [n, 1, H, W]`` (meant as ``targets [n]`` when given),
    against B's features ``f_real [M, 128]`` of real images with labels ``ref_labels [M]``."""
    pa, _ = quality.predict(A, samples)                                  # [n, K]
    pb, fb = quality.predict(B, samples)                                 # [n, K], [n, 128]
    out = {"n": len(samples), "frechet": quality.frechet_distance(fb, f_real),
           "top_confidence_inverted": float(pa.max(-1).values.mean()),
           "top_confidence_independent": float(pb.max(-1).values.mean())}
    if targets is not None:
        r = confidence_report(samples, targets, A, B)
        out.update({k: v for k, v in r.items() if isinstance(v, float)})
        out["frechet_class"] = quality.class_frechet_distance(fb, targets, f_real, ref_labels)
    return out


def _setup(s: Settings, inv: InversionSettings):
    """Check the settings and load the data: ``(s with the split's name, train, test,
    classes k, samples per class, the test images in [0, 1])``."""
    s = replace(s, data=split_name(s.data))
    check_settings(replace(s, model="cvae"))
    check_inversion_settings(inv)
    classifiers = "each of the inversion study's classifiers"
    tr, te = load_data(s, classifiers)
    gdata.require_classes(tr, s.data, classifiers)
    k = tr.n_classes
    return s, tr, te, k, max(1, s.quality_samples // k), gdata.to_unit(te.images)


def _more_test_images(s: Settings) -> str:
    """What gives the run more test images: the option that limits them, or more data."""
    if s.test_examples is not None:
        return f"raise --test-examples (now {s.test_examples})"
    if gdata.is_user_data(s.data):
        return f"raise --test-fraction (now {s.test_fraction:g}) or add images"
    return "use more test images"


def fit_scored(s: Settings, n_test: int, k: int, per_class: int) -> tuple[int, str | None]:
    """How many images per class every row of ``compare`` is scored on, and a note when
    that is fewer than ``per_class`` (``quality_samples // k``).

    The real row is scored on the first ``per_class * k`` test images and every FD is
    measured against the rest, which must be at least as many: a test set of ``n_test``
    images gives each row at most ``n_test // 2 // k`` per class, and every row is scored
    on the same number (an FD fitted to fewer images is larger, so rows scored on different
    counts do not compare).

    Raises:
        ValueError: the test set's first half holds fewer than 2 images per class (the
            class-wise FD needs 2), naming the counts and what gives more test images.
    """
    fit = n_test // 2 // k
    if fit >= per_class or per_class < 2:    # one per class: check_class_scoring names it
        return per_class, None
    if fit < 2:
        raise ValueError(
            f"every row is scored on the same number of images, the real row on the first "
            f"half of the test set, and the class-wise Frechet distance needs at least 2 per "
            f"class: {k} classes need {4 * k} test images, but there are {n_test}: "
            f"{_more_test_images(s)}")
    return fit, (f"--quality-samples {s.quality_samples} asks for {per_class} images per "
                 f"class, but the first half of the {n_test} test images, on which the real "
                 f"row is scored, holds {n_test // 2}: every row is scored on {fit * k} "
                 f"images ({fit} per class)")


def reliability(*, n: int, ref: int, per_class: int, ref_per_class: torch.Tensor,
                train_per_class: torch.Tensor, chance: float,
                independent_accuracy: float | None, scored_note: str | None = None,
                real_frechet: float | None = None) -> list[dict[str, str]]:
    """The warnings of an inversion study run on small data, each ``{"kind", "message"}``.

    Kinds: ``"scored"`` (``scored_note``: fewer images scored than asked), ``"frechet"``
    (a row's ``n`` images or the ``ref`` real test images of the FD's reference fewer than
    ``FD_MIN_IMAGES``), ``"frechet_class"`` (``per_class`` images made per class, or a
    class's real reference images ``ref_per_class [K]``, fewer than ``FD_MIN_IMAGES``) and
    ``"lesson"`` (fewer than ``LESSON_MIN_TRAIN_PER_CLASS`` training images per class on
    average, of ``train_per_class [K]``; ``independent_accuracy`` is B's accuracy on the
    images inverted from noise, against ``chance``). ``real_frechet`` is the real row's FD, the
    floor of the FD at this size.
    """
    out = []
    if scored_note:
        out.append({"kind": "scored", "message": scored_note})
    lo = FD_MIN_IMAGES
    if n < lo or ref < lo:
        floor = ("" if real_frechet is None else
                 f"; real test images themselves score {real_frechet:.1f}, the floor at this "
                 f"size")
        out.append({"kind": "frechet", "message": (
            f"the FD column is unreliable: each row's {n} images are compared with {ref} real "
            f"test images in B's 128 features, and below {lo} images on either side a "
            f"fitted covariance is singular and the FD mostly measures how few images there "
            f"are{floor}; compare the rows with one another only (all scored on {n} "
            f"images), not with runs on more data")})
    used = ref_per_class[ref_per_class >= 2]
    if len(used) and (per_class < lo or int(used.min()) < lo):
        out.append({"kind": "frechet_class", "message": (
            f"the FD-to-class-c column is unreliable: {per_class} images per class are "
            f"compared with {int(used.min())} to {int(used.max())} real test images of their "
            f"class, below the {lo} that a Gaussian in B's 128 features needs")})
    few = float(train_per_class.double().mean())
    if few < LESSON_MIN_TRAIN_PER_CLASS:
        seen = ("" if independent_accuracy is None else
                f"; here B gives the intended class to {100 * independent_accuracy:.1f}% of "
                f"the images inverted from noise (chance {100 * chance:.1f}%)")
        out.append({"kind": "lesson", "message": (
            f"the lesson's claim (an image inverted until A is sure fools A, not the "
            f"independent B: B at chance) is untested at this size: the classifiers learn "
            f"from {few:.0f} training images per class, and the claim was measured with "
            f"classifiers trained to convergence on 487 or more per class; on fewer than "
            f"{LESSON_MIN_TRAIN_PER_CLASS}, two classifiers trained on the same images share "
            f"more of what an inversion changes, and B agrees with A's inversions above "
            f"chance (docs/generative.md){seen}")})
    return out


def check_class_scoring(s: Settings, te: gdata.ImageData, scored: int | None,
                        per_class: int) -> None:
    """Fail before any training when ``frechet_class`` cannot be measured.

    The class-wise Frechet distance compares, class by class, images meant as class c with
    the real test images of class c in the reference half of the test set
    (``te.labels[len(te) // 2:]``, or ``[scored:]``): it needs a class with at least 2 of
    each. ``scored`` is how many test images are scored as the "real" row (their class
    counted the same way), None where there is no such row; ``per_class`` is how many
    images are made for each class.

    Raises:
        ValueError: naming the counts, and what to raise (``--test-examples``,
            ``--test-fraction``, ``--quality-samples``) or add.
    """
    split = len(te.labels) // 2 if scored is None else scored
    ref = torch.bincount(te.labels[split:], minlength=te.n_classes)              # [K]
    sides = [("the images made for each class", torch.full_like(ref, per_class))]
    if scored is not None:
        sides.append(("the scored real test images",
                      torch.bincount(te.labels[:split], minlength=te.n_classes)))
    fix = _more_test_images(s)
    for what, made in sides:
        if not bool(((made >= 2) & (ref >= 2)).any()):
            more = ", ..." if te.n_classes > 8 else ""
            raise ValueError(
                f"the class-wise Frechet distance (frechet_class) needs a class with at least "
                f"2 of {what} and 2 real test images in the reference half of the test set "
                f"({len(te.labels) - split} of {len(te.labels)} test images), but no class "
                f"has both (per class: {made.tolist()[:8]}{more} and "
                f"{ref.tolist()[:8]}{more}): {fix}" + ("" if per_class >= 2 else
                                 f", and --quality-samples (now {s.quality_samples}) to at "
                                 f"least 2 per class"))


def _classifiers(s: Settings, tr, k: int, device: torch.device):
    """Classifier A (seed ``s.seed``), inverted, and the independent B (``s.seed + 1``),
    trained on ``device``."""
    images, labels = tr.images.to(device), tr.labels.to(device)
    return tuple(quality.train_classifier(images, labels, k, epochs=s.classifier_epochs,
                                          seed=seed, progress=s.progress)
                 for seed in (s.seed, s.seed + 1))


@runlock.locked("out")
def compare(s: Settings, inv: InversionSettings, out: str | os.PathLike, *,
            device: str | torch.device | None = None) -> dict:
    """Train classifiers A and B, an AE, a VAE and a CVAE; invert A; score and draw it all.

    Args:
        s: the generators' settings (``model`` is ignored: all three are trained;
            ``quality_samples`` samples of each generator are scored, split evenly over the
            classes for the class-conditional ones, and as many real test images: fewer,
            the same for every row, where the test set's first half holds fewer
            (``fit_scored``); ``classifier_epochs`` trains A and B;
            A has seed ``seed``, B ``seed + 1``).
        inv: the inversion settings.
        out: output folder (created): ``results.json``, ``metrics.jsonl``,
            ``inversion_compare.png``.
        device: where the classifiers and generators train, the inversions run and
            everything is scored (None: the CPU); the noise and the starting images are
            drawn by CPU generators and the figure on the CPU.

    Returns:
        The ``results.json`` content: ``scores`` per method (``METHODS``) and for ``real``
        test images, each on ``n_scored`` images, the classifiers' test accuracies,
        ``warnings`` (``reliability``: the scores small counts leave unreliable), timings
        and settings (and ``"device"`` when that was not the CPU).

    Raises:
        ValueError: for bad settings, a device this process cannot use, or an ``out`` that
            holds a finished ``metaloop vae`` run (``experiment.check_no_finished_run``, the
            error the command turns into exit status 2; the data is read first, but nothing
            is written or removed).
        FileNotFoundError: if the data set is missing.
    """
    cpu_start, wall_start = time.process_time(), time.perf_counter()
    s, tr, te, k, per_class, real = _setup(s, inv)
    device = devices.device_or_cpu(device)
    if min(per_class * k, len(real) // 2) < 2:
        raise ValueError(f"need at least 4 test images, got {len(real)}")
    check_class_scoring(s, te, min(per_class * k, len(real) // 2), per_class)
    per_class, scored_note = fit_scored(s, len(real), k, per_class)
    n = m = per_class * k                 # every row, the real one too, on n images
    check_class_scoring(s, te, m, per_class)
    # the generators' data must suit their likelihood: fail now, not after the classifiers
    x_te = checked_pixels(s, tr, te)
    # what the models see and are scored against, on the device (on the CPU: the same
    # tensors); the CPU's images stay for the draws made from them
    on = tr.to(device)
    x_te, y_te, real = x_te.to(device), te.labels.to(device), real.to(device)
    out = Path(out)
    _start_out(out)
    log = _jsonl(out / "metrics.jsonl")
    cpu = {}

    t0 = time.process_time()
    A, B = _classifiers(s, tr, k, device)
    cpu["classifiers"] = time.process_time() - t0
    f_real, ref_labels = quality.predict(B, real[m:])[1], y_te[m:]      # [M, 128], [M]
    settings = {name: v for name, v in asdict(s).items() if name != "model"}
    results = {"settings": settings, **data_identity(s), "inversion": asdict(inv),
               "data": s.data,
               "n_classes": k, "class_names": tr.class_names, "per_class": per_class,
               "n_scored": n, "n_train": len(tr.images), "n_test": len(te.images),
               "classifier_test_accuracy": {"inverted": quality.accuracy(A, real, y_te),
                                            "independent": quality.accuracy(B, real, y_te)},
               "chance": 1 / k, "methods": method_labels(inv.until), "scores": {}, "generators": {}}
    results["scores"]["real"] = _scores(real[:m], y_te[:m], A, B, f_real, ref_labels)

    targets = torch.arange(k).repeat_interleave(per_class)               # [n]
    samples: dict[str, torch.Tensor] = {}
    common: dict[str, Any] = dict(steps=inv.steps, lr=inv.lr)
    init_real, init_labels = _other_class_images(tr, targets, s.seed + 2)   # drawn on the CPU
    targets, init_real = targets.to(device), init_real.to(device)
    init_labels = init_labels.to(device)
    variants: dict[str, dict[str, Any]] = {
        "inversion": dict(until=inv.until),
        "inversion_regularised": dict(l2=inv.l2, tv=inv.tv, jitter=inv.jitter),
        "inversion_from_real": dict(until=inv.until, init=init_real),
        "inversion_all_steps": {},
    }
    for name, kw in variants.items():
        t0 = time.process_time()
        samples[name] = invert_classifier(A, targets, generator=torch.Generator().manual_seed(
            s.seed + 3), image_shape=tuple(tr.images.shape[1:]), **common, **kw)
        cpu[name] = time.process_time() - t0
    src = quality.predict(B, samples["inversion_from_real"])[0].argmax(-1)
    results["from_real_independent_says_source"] = float((src == init_labels).float().mean())

    for kind in ("ae", "vae", "cvae"):
        t0 = time.process_time()
        model = build_model(kind, s, tr.images, k).to(device)
        hist = _train_model(model, s, on, x_te, y_te,
                            lambda r, kind=kind: log({"model": kind, **r}))
        cpu[kind] = time.process_time() - t0
        test = heldout_metrics(model, x_te, y_te, k=0, batch=s.eval_batch, seed=s.seed,
                               progress=False)
        results["generators"][kind] = {"test": test, "epochs_done": hist[-1]["epoch"],
                                       "train_cpu_s": cpu[kind]}
        g = torch.Generator().manual_seed(s.seed + 4)
        model.eval()
        if kind == "cvae":
            samples[kind] = sample_classes(cast(VAE, model), range(k), per_class,   # a CVAE
                                           generator=g).reshape(
                n, *tr.images.shape[1:])
        else:
            samples[kind] = model.sample(n, generator=g)

    for name in METHODS:
        results["scores"][name] = _scores(samples[name], targets if name in CONDITIONAL
                                          else None, A, B, f_real, ref_labels)
    results["warnings"] = reliability(
        n=n, ref=len(real) - m, per_class=per_class,
        ref_per_class=torch.bincount(te.labels[m:], minlength=k),
        train_per_class=torch.bincount(tr.labels, minlength=k), chance=1 / k,
        independent_accuracy=results["scores"]["inversion"]["accuracy_independent"],
        scored_note=scored_note, real_frechet=results["scores"]["real"]["frechet"])
    save_figure({name: x.cpu() for name, x in samples.items()}, results, inv, out / FIGURE)
    results["pictures"] = [FIGURE]
    results["cpu_s"] = {**cpu, "total": time.process_time() - cpu_start}
    results["wall_s"] = time.perf_counter() - wall_start
    results["threads"] = torch.get_num_threads()
    if device.type != "cpu":
        results["device"] = str(device)
    _write_results(out, results)
    return results


def record(results: dict, command: str, device: str | None = None) -> dict:
    """The docs record (``metaloop.evaluate.records``) of one comparison.

    The headline number is the independent classifier's accuracy on the samples inverted
    from noise until A was 99% sure (the lesson's "fools A, not B"), with a normal-
    approximation 95% interval over the samples; every method's scores ride along under
    ``scores``.

    Args:
        results: ``compare``'s result.
        command: the exact command line.
        device: what ran it (default: the CPU model, cores and torch threads; give a GPU
            run's GPU, as ``devices.device_name`` names it). A GPU run's budget is its
            wall-clock GPU seconds (``experiment.run_budget``).
    """
    import datetime

    sc = results["scores"]["inversion"]
    p, n = sc["accuracy_independent"], sc["n"]
    keep = ("data", "n_classes", "per_class", "n_scored", "n_train", "n_test",
            "classifier_test_accuracy", "chance", "from_real_independent_says_source",
            "settings", "inversion", "methods", "scores", "generators", "cpu_s", "wall_s",
            "threads", "warnings")
    return {
        "table": "generative_inversion",
        "row": DATA_LABELS.get(results["data"], results["data"]),
        "metric": "classifier B's accuracy on images inverted from classifier A (%)",
        "mean": round(100 * p, 2), "ci95": round(100 * 1.96 * math.sqrt(p * (1 - p) / n), 2),
        "n": n, "unit": "%", "digits": 1,
        "budget": run_budget(results, results["cpu_s"]["total"]),
        "device": device or cpu_device(),
        "torch": torch.__version__.split("+")[0],
        "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d"),
        "config": None, "command": command, "published": None, "detail": table(results),
        **{k: results[k] for k in keep if k in results},
    }


TRANSFER_STARTS = ("noise", "real")


@runlock.locked("out")
def transfer_study(s: Settings, inv: InversionSettings, lrs: list[float],
                   out: str | os.PathLike, *, device: str | torch.device | None = None
                   ) -> dict:
    """Does an inversion that fools A fool B? The answer as a function of the step size.

    Trains A and B as ``compare`` does (same seeds, so the same classifiers), then inverts
    A from noise and from a real training image of another class until A gives the target
    ``inv.until``, with Adam at each learning rate in ``lrs`` (``inv.steps * inv.lr / lr``
    steps at most, the same largest change of a pixel logit), no regularisers. Smaller steps
    stop closer to the least change that makes A sure. ``s.quality_samples`` images are
    inverted per setting, split evenly over the classes.

    Args:
        s: the settings (``data``, ``classifier_epochs``, ``quality_samples``, ``seed``,
            ``root``, ``progress`` are used).
        inv: the inversion settings (``lrs`` replaces ``lr``).
        lrs: Adam learning rates on the pixel logits, each > 0.
        out: output folder (created): ``results.json``, written at the end, when an
            earlier run's model, metrics and pictures there (``experiment.PICTURES``) are
            removed; a study stopped before leaves the folder as it was.
        device: where the classifiers train, the inversions run and everything is scored
            (None: the CPU); the noise and the starting images are drawn by CPU generators.

    Returns:
        ``rows``: one dict per (start, lr): ``start``, ``lr``, ``max_steps`` and the scores
        (``accuracy_independent``, ``mean_confidence_inverted``,
        ``fraction_confident_inverted``, ``frechet``, ``mean_abs_change``: the mean absolute
        pixel change from the starting image, and for real starts
        ``independent_says_source``); the classifiers' accuracies, chance, ``warnings``
        (``reliability``), timings, settings (and ``"device"`` when that was not the CPU).

    Raises:
        ValueError: for bad settings or learning rates, a device this process cannot use, or
            an ``out`` that holds a finished ``metaloop vae`` run
            (``experiment.check_no_finished_run``: the error the command turns into exit
            status 2; nothing is read or written).
    """
    check_no_finished_run(out)            # before anything is read or written
    if not lrs:
        raise ValueError("--invert-lrs needs at least one learning rate")
    for lr in lrs:
        if not (math.isfinite(lr) and lr > 0):
            raise ValueError(f"inversion learning rates must be > 0, got {lr}")
    cpu_start, wall_start = time.process_time(), time.perf_counter()
    s, tr, te, k, per_class, real = _setup(s, inv)
    device = devices.device_or_cpu(device)
    check_class_scoring(s, te, None, per_class)
    A, B = _classifiers(s, tr, k, device)
    targets = torch.arange(k).repeat_interleave(per_class)               # [n]
    init_real, init_labels = _other_class_images(tr, targets, s.seed + 2)
    shape = tuple(tr.images.shape[1:])
    starts = {"noise": torch.sigmoid(torch.randn(len(targets), *shape, generator=torch.Generator()
                                                 .manual_seed(s.seed + 3))),
              "real": init_real.clamp(0.01, 0.99)}                       # [n, 1, H, W] each
    # drawn on the CPU (as they always were), used on the device
    targets, init_real, init_labels = (targets.to(device), init_real.to(device),
                                       init_labels.to(device))
    starts = {name: x.to(device) for name, x in starts.items()}
    real, y_te = real.to(device), te.labels.to(device)
    f_real = quality.predict(B, real[len(real) // 2:])[1]                # [M, 128]
    ref_labels = y_te[len(real) // 2:]                                   # [M]
    rows = []
    for start in TRANSFER_STARTS:
        for lr in lrs:
            t0 = time.process_time()
            max_steps = math.ceil(inv.steps * inv.lr / lr)
            x = invert_classifier(A, targets, steps=max_steps, lr=lr, until=inv.until,
                                  init="noise" if start == "noise" else init_real,
                                  generator=torch.Generator().manual_seed(s.seed + 3),
                                  image_shape=shape)
            sc = _scores(x, targets, A, B, f_real, ref_labels)
            row = {"start": start, "lr": lr, "max_steps": max_steps, **sc,
                   "mean_abs_change": float((x - starts[start]).abs().mean()),
                   "cpu_s": time.process_time() - t0}
            if start == "real":
                pb = quality.predict(B, x)[0].argmax(-1)
                row["independent_says_source"] = float((pb == init_labels).float().mean())
            rows.append(row)
            if s.progress:
                print(f"{start} lr {lr}: B accuracy {row['accuracy_independent']:.3f}")
    results = {"data": s.data, **data_identity(s), "n_classes": k, "per_class": per_class,
               "n_scored": len(targets), "chance": 1 / k,
               "classifier_test_accuracy": {"inverted": quality.accuracy(A, real, y_te),
                                            "independent": quality.accuracy(B, real, y_te)},
               "settings": {name: v for name, v in asdict(s).items() if name != "model"},
               "inversion": {**asdict(inv), "lrs": list(lrs)}, "rows": rows,
               "warnings": reliability(
                   n=len(targets), ref=len(real) - len(real) // 2, per_class=per_class,
                   ref_per_class=torch.bincount(te.labels[len(real) // 2:], minlength=k),
                   train_per_class=torch.bincount(tr.labels, minlength=k), chance=1 / k,
                   independent_accuracy=min((r for r in rows if r["start"] == "noise"),
                                            key=lambda r: r["lr"])["accuracy_independent"]),
               "cpu_s": time.process_time() - cpu_start,
               "wall_s": time.perf_counter() - wall_start, "threads": torch.get_num_threads(),
               **({"device": str(device)} if device.type != "cpu" else {})}
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    for name in ("model.safetensors", "metrics.jsonl", *PICTURES):     # an earlier run's,
        (out / name).unlink(missing_ok=True)          # which this results.json would replace
    _write_results(out, results)
    return results


def transfer_table(results: dict) -> str:
    """``transfer_study``'s rows as Markdown."""
    lines = ["| start | Adam lr (max steps) | A >= 99% sure | B says class c | "
             "B says the source class | mean pixel change | FD (B's features) | "
             "FD to class c |",
             "|---|---|---|---|---|---|---|---|"]
    for r in results["rows"]:
        src = (f"{100 * r['independent_says_source']:.1f}%"
               if "independent_says_source" in r else "–")
        what = "noise" if r["start"] == "noise" else "real image of another class"
        lines.append(f"| {what} | {r['lr']:g} ({r['max_steps']:,}) | "
                     f"{100 * r['fraction_confident_inverted']:.1f}% | "
                     f"{100 * r['accuracy_independent']:.1f}% | {src} | "
                     f"{r['mean_abs_change']:.3f} | {r['frechet']:.1f} | "
                     f"{r['frechet_class']:.1f} |")
    return "\n".join(lines) + warning_lines(results)


def warning_lines(results: dict) -> str:
    """The study's warnings (``reliability``) as paragraphs after its table, each starting
    ``warning:``; nothing without any."""
    return "".join(f"\n\nwarning: {w['message']}" for w in results.get("warnings", ()))


def transfer_record(results: dict, command: str, device: str | None = None) -> dict:
    """The docs record of a ``transfer_study``: B's accuracy on the images inverted from
    noise with the smallest step (the least change that makes A sure), a normal-approximation
    95% interval; every row rides along under ``rows``. ``device`` and the budget as
    ``record``'s."""
    import datetime

    noise = [r for r in results["rows"] if r["start"] == "noise"]
    head = min(noise, key=lambda r: r["lr"])
    p, n = head["accuracy_independent"], head["n"]
    label = DATA_LABELS.get(results["data"], results["data"])
    acc, epochs = results["classifier_test_accuracy"], results["settings"]["classifier_epochs"]
    return {
        "table": "generative_inversion_transfer",
        "row": f"{label}, classifiers trained {epochs} epoch{'s' if epochs != 1 else ''} "
               f"({100 * acc['inverted']:.1f}% / {100 * acc['independent']:.1f}%), from noise, "
               f"Adam lr {head['lr']:g}",
        "metric": "classifier B's accuracy on images inverted from A until A is "
                  f"{100 * results['inversion']['until']:g}% sure (%)",
        "mean": round(100 * p, 2), "ci95": round(100 * 1.96 * math.sqrt(p * (1 - p) / n), 2),
        "n": n, "unit": "%", "digits": 1,
        "order": 1 if results["data"] == "fashion-mnist" else 2,
        "budget": run_budget(results, results["cpu_s"]),
        "device": device or cpu_device(),
        "torch": torch.__version__.split("+")[0],
        "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d"),
        "config": None, "command": command, "published": None,
        "detail": transfer_table(results),
        **{k: results[k] for k in ("data", "n_classes", "per_class", "n_scored", "chance",
                                   "classifier_test_accuracy", "settings", "inversion",
                                   "rows", "cpu_s", "wall_s", "threads")},
        **({"warnings": results["warnings"]} if "warnings" in results else {}),
    }


def _panel(images: torch.Tensor, name: str, k: int, per_class: int, inv: InversionSettings
           ) -> torch.Tensor:
    """``[rows, cols, C, H, W]``: per-class rows for the conditional ones, else a block."""
    rows, cols = min(inv.figure_classes, k), min(inv.figure_per_class, per_class)
    if name in CONDITIONAL:
        return images.reshape(k, per_class, *images.shape[1:])[:rows, :cols]
    return images[:rows * cols].reshape(rows, cols, *images.shape[1:])


def _label(name: str, sc: dict, chance: float) -> str:
    text = f"FD {sc['frechet']:.1f}"
    if "frechet_class" in sc:
        text += f" (to class c {sc['frechet_class']:.1f})"
    if "accuracy_independent" in sc:
        text += (f"   B acc {100 * sc['accuracy_independent']:.0f}% (chance "
                 f"{100 * chance:.0f}%)\nA conf. in class "
                 f"{100 * sc['mean_confidence_inverted']:.1f}%")
    else:
        text += (f"\nA top conf. {100 * sc['top_confidence_inverted']:.0f}%   "
                 f"B top conf. {100 * sc['top_confidence_independent']:.0f}%")
    return text


def save_figure(samples: dict[str, torch.Tensor], results: dict, inv: InversionSettings,
                path: str | os.PathLike, dpi: int = 80) -> None:
    """The comparison's one figure: 2 rows of 3 panels (``PANELS``), scores under each."""
    k, per_class = results["n_classes"], results["per_class"]
    names = results["class_names"][:min(inv.figure_classes, k)]
    acc = results["classifier_test_accuracy"]
    texts, family = plots.figure_text([*(str(nm)[:14] for nm in names),
                                       gdata.data_label(results["data"])])
    kinds = {w["kind"] for w in results.get("warnings", ())}
    unreliable = [what for kind, what in (("frechet", "FD"), ("frechet_class", "FD to class c"),
                                          ("lesson", "B accuracy as a test of the lesson"))
                  if kind in kinds]
    panels = {name: _panel(samples[name], name, k, per_class, inv)
              for row in PANELS for name in row}
    r, c = panels["inversion"].shape[:2]
    # a panel as wide as its score lines under it, however few images per row it shows
    fig = Figure(figsize=(3 * max(0.32 * c, 3.2) + 2.2, 2 * (0.32 * r + 1.3) + 0.5), dpi=dpi)
    for i, row in enumerate(PANELS):
        for j, name in enumerate(row):
            ax = fig.add_subplot(len(PANELS), len(row), i * len(row) + j + 1)
            plots.show(ax, plots.tile(panels[name]))
            ax.set_xticks([])
            ax.set_yticks([])
            if j == 0 and name in CONDITIONAL:
                hh = panels[name].shape[-2] + 1
                ax.set_yticks([q * hh + hh / 2 - 1 for q in range(len(names))],
                              texts[:-1], fontsize=8, fontfamily=family)
                ax.tick_params(length=0)
            title = results.get("methods", METHODS)[name]
            title = title.replace(", from", ",\nfrom").replace(" + ", "\n+ ")
            ax.set_title(title, fontsize=9)
            ax.set_xlabel(_label(name, results["scores"][name], results["chance"]), fontsize=8)
    fig.suptitle(f"{texts[-1]}: A (inverted) and B (independent) classifiers, test "
                 f"accuracy {100 * acc['inverted']:.1f}% / {100 * acc['independent']:.1f}%; "
                 f"FD in B's features (real images: "
                 f"{results['scores']['real']['frechet']:.1f})\n{results['n_scored']:,} "
                 f"images per row" + ("" if not unreliable else
                                      f"; {', '.join(unreliable)} unreliable at this size "
                                      f"(warnings in results.json)"), fontsize=10,
                 fontfamily=family)
    fig.tight_layout()
    plots._save(fig, path, colour=panels["inversion"].shape[-3] == 3)


def table(results: dict) -> str:
    """The score table as Markdown, one row per method and one for real test images."""
    head = ("| samples | FD (B features) | FD to class c | B accuracy on class c | "
            "A confidence in class c | A >= 99% | A top conf. | B top conf. |\n"
            "|---|---|---|---|---|---|---|---|")
    rows = [head]
    for name in ("real", *METHODS):
        sc = results["scores"][name]
        what = "real test images" if name == "real" else results.get("methods", METHODS)[name]

        def pct(key, sc=sc):
            return f"{100 * sc[key]:.1f}%" if key in sc else "–"

        fdc = f"{sc['frechet_class']:.1f}" if "frechet_class" in sc else "–"
        rows.append(f"| {what} | {sc['frechet']:.1f} | {fdc} | {pct('accuracy_independent')} | "
                    f"{pct('mean_confidence_inverted')} | {pct('fraction_confident_inverted')} | "
                    f"{pct('top_confidence_inverted')} | {pct('top_confidence_independent')} |")
    return "\n".join(rows) + warning_lines(results)



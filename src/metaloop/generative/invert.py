"""The lecture's first, failed idea: run a trained classifier backwards to generate.

Start from noise (or from a real image of another class) and ascend the classifier's
log-probability of a target class by gradient steps on the pixels. The classifier soon
reports the target with near certainty, but the images are adversarial patterns, not class
members: they look like noise and lie far from real images in the features of a classifier
that was not optimised against (a large Frechet distance). A second classifier trained the
same way from another seed (``confidence_report``) names the intended class at about chance
when both are trained to convergence; under-trained classifiers share the patterns (making a
soft classifier sure takes a larger change, which the other one reads too), so a second
classifier's verdict is no proof of class membership either (docs/generative.md has the
measured numbers for both). That is why generating needs a model of p(x) (the VAE), not a
model of p(y|x).

The pixels are ``sigmoid(u)`` of free logits u, so they stay in [0, 1], and u is optimised by
Adam. The usual "make it look less like noise" tricks are options, each a per-image term of
the minimised objective::

    -log p(target | jitter(x)) + l2 * mean(x^2) + tv * total_variation(x)

- ``l2`` pulls pixels towards 0, the background (ink = 1), so images get sparser;
- ``tv`` (anisotropic total variation, ``total_variation``) penalises differences between
  neighbouring pixels, so images get smoother;
- ``jitter`` shifts the image by a random whole number of pixels (circularly, up to
  ``jitter`` in each direction, one shift per step for the whole batch) before the
  classifier sees it, so a pattern must work at several positions.

They change the images (smoother, sparser) and help a little, but the images are still not
class members (docs/generative.md).
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Callable, Sequence
from typing import cast

import torch
from torch import nn

from metaloop.adapt.sgd import autograd_usable, gradients_on
from metaloop.func.params import eval_mode
from metaloop.generative.nets import check_generator, draw_device

DEFAULT_IMAGE_SHAPE = (1, 28, 28)   # the generative models' images (quality.Classifier's input)
INIT_EPS = 0.01                      # an init image's pixels are clamped to [eps, 1 - eps]


def total_variation(x: torch.Tensor) -> torch.Tensor:
    """Anisotropic total variation per image: mean |vertical| + mean |horizontal| differences.

    Args:
        x: ``[N, C, H, W]`` images.

    Returns:
        ``[N]``: 0 for a constant image, at most 2 for images in [0, 1].

    Raises:
        ValueError: ``x`` is not 4-dimensional.
    """
    if x.dim() != 4:
        raise ValueError(f"total_variation expects [N, C, H, W], got {list(x.shape)}")
    dv = (x[..., 1:, :] - x[..., :-1, :]).abs().flatten(1)             # [N, C*(H-1)*W]
    dh = (x[..., :, 1:] - x[..., :, :-1]).abs().flatten(1)             # [N, C*H*(W-1)]
    zero = x.new_zeros(len(x))
    return (dv.mean(1) if dv.shape[1] else zero) + (dh.mean(1) if dh.shape[1] else zero)


def _check_classifier(classifier) -> None:
    if not (isinstance(classifier, nn.Module) or callable(classifier)):
        raise ValueError(f"classifier must be an nn.Module or a callable mapping images "
                         f"[n, C, H, W] to logits [n, n_classes], got "
                         f"{type(classifier).__name__}")


def _is_number(value) -> bool:
    """A real number that is not a bool (Python's or NumPy's: ``numbers.Real``)."""
    return isinstance(value, numbers.Real) and not isinstance(value, bool)


def _is_int(value) -> bool:
    """An integer that is not a bool (Python's or NumPy's: ``numbers.Integral``)."""
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


def _check_penalty(name: str, value) -> float:
    if not _is_number(value) or not math.isfinite(value) or value < 0:
        raise ValueError(f"{name} penalty must be a finite number >= 0, got {value!r}")
    return float(value)


def _check_count(name: str, value, low: int) -> int:
    if not _is_int(value) or value < low:
        raise ValueError(f"{name} must be an int >= {low}, got {value!r}")
    return int(value)


def _check_image_shape(image_shape) -> tuple[int, int, int]:
    try:
        shape = tuple(image_shape)
    except TypeError:
        shape = None
    if shape is None or len(shape) != 3 or any(not _is_int(v) or v <= 0 for v in shape):
        raise ValueError(f"image_shape must be (C, H, W) with positive ints, got "
                         f"{image_shape!r}")
    return cast(tuple[int, int, int], tuple(int(v) for v in shape))        # three, checked


def _as_target(target) -> torch.Tensor:
    """The target as int64, 0-d or ``[n]``; a ValueError for anything else."""
    if isinstance(target, bool):
        raise ValueError(f"target must be integer class indices, got the bool {target!r}")
    if isinstance(target, torch.Tensor):
        t = target
    else:
        if isinstance(target, float) or (isinstance(target, Sequence) and any(
                not _is_int(v) for v in target)):
            raise ValueError(f"target must be integer class indices, got {target!r}")
        try:
            t = torch.as_tensor(target)
        except (TypeError, ValueError, RuntimeError) as e:
            raise ValueError(f"target must be an int or a sequence/tensor of ints, got "
                             f"{target!r}") from e
    if t.numel() == 0:
        raise ValueError("target is empty: give a class, or one class per image")
    if t.dtype == torch.bool or t.is_floating_point() or t.is_complex():
        raise ValueError(f"target must be integer class indices, got dtype {t.dtype}")
    if t.dim() > 1:
        raise ValueError(f"target must be an int or a 1-D tensor [n], got shape "
                         f"{list(t.shape)}")
    return t.to(torch.int64)


def _init_logits(init, n: int, shape: tuple[int, ...], generator, dtype, device
                 ) -> torch.Tensor:
    """Free logits u ``[n, C, H, W]`` whose sigmoid is the starting image."""
    if isinstance(init, str):
        u = torch.randn(n, *shape, generator=generator, dtype=dtype,
                        device=draw_device(generator, "cpu"))          # [n, C, H, W]
        return u.to(device)
    x = init.detach().to(device=device, dtype=dtype)
    x = x.expand(n, *shape) if x.dim() == 3 or len(x) == 1 else x
    return torch.logit(x.clamp(INIT_EPS, 1 - INIT_EPS)).contiguous()


def _check_init(init, n: int | None, image_shape) -> torch.Tensor | None:
    """Validate ``init``; the init tensor (or None for noise)."""
    if isinstance(init, str):
        if init != "noise":
            raise ValueError(f"init must be 'noise' or an image tensor [n, C, H, W] / "
                             f"[C, H, W] in [0, 1], got {init!r}")
        return None
    if not isinstance(init, torch.Tensor):
        raise ValueError(f"init must be 'noise' or an image tensor, got "
                         f"{type(init).__name__}")
    if not init.is_floating_point() or init.dim() not in (3, 4):
        raise ValueError(f"init images must be float [n, C, H, W] or [C, H, W], got "
                         f"{init.dtype} {list(init.shape)}")
    if init.dim() == 4 and n is not None and len(init) not in (1, n):
        raise ValueError(f"init has {len(init)} images but n = {n}")
    if image_shape is not None and tuple(init.shape[-3:]) != tuple(image_shape):
        raise ValueError(f"init images {list(init.shape)} do not match image_shape "
                         f"{tuple(image_shape)}")
    if init.numel() == 0 or not bool(torch.isfinite(init).all()) or init.min() < 0 \
            or init.max() > 1:
        raise ValueError("init images must be finite pixels in [0, 1]")
    return init


def _classify(classifier, x: torch.Tensor) -> torch.Tensor:
    try:
        return classifier(x)
    except (RuntimeError, TypeError, ValueError) as e:
        raise ValueError(f"the classifier failed on images of shape {list(x.shape)} "
                         f"(image_shape (C, H, W) = {tuple(x.shape[1:])}): {e}") from e


def _check_logits(logits, n: int) -> int:
    """The number of classes, after checking the classifier's output is ``[n, K]`` logits."""
    if not isinstance(logits, torch.Tensor):
        raise ValueError(f"the classifier must return a logits tensor [n, n_classes], got "
                         f"{type(logits).__name__}")
    if logits.dim() != 2 or logits.shape[0] != n or logits.shape[1] < 2 \
            or not logits.is_floating_point():
        raise ValueError(f"the classifier must return float logits [n, n_classes] with "
                         f"n = {n} and n_classes >= 2, got {logits.dtype} "
                         f"{list(logits.shape)}")
    return logits.shape[1]


def _check_finite(values: torch.Tensor, when: str) -> None:
    """A ValueError unless the classifier's logits (or the image logits they moved) are
    finite."""
    if not bool(torch.isfinite(values).all()):
        raise ValueError(f"the classifier returned NaN or infinite logits {when}: the "
                         f"inversion would make NaN images")


def _module_dtype_device(classifier) -> tuple[torch.dtype, torch.device]:
    if isinstance(classifier, nn.Module):
        for p in classifier.parameters():
            if p.is_floating_point():
                return p.dtype, p.device
    return torch.get_default_dtype(), torch.device("cpu")


def invert_classifier(classifier: nn.Module | Callable[[torch.Tensor], torch.Tensor],
                      target, *, n: int | None = None, steps: int = 200, lr: float = 0.1,
                      init: str | torch.Tensor = "noise", l2: float = 0.0, tv: float = 0.0,
                      jitter: int = 0, until: float | None = None,
                      generator: torch.Generator | None = None,
                      image_shape: Sequence[int] | None = None) -> torch.Tensor:
    """Images that a trained classifier assigns to ``target``, by gradient ascent on the input.

    Minimises, for each image independently, ``-log p(target | jitter(x)) + l2 * mean(x^2) +
    tv * total_variation(x)`` over free logits u with ``x = sigmoid(u)``, by ``steps`` Adam
    steps of learning rate ``lr``. The classifier is run in eval mode (restored afterwards) and
    its parameters get no gradients.

    Args:
        classifier: an ``nn.Module`` or callable mapping images ``[n, C, H, W]`` in [0, 1] to
            logits ``[n, K]`` (K >= 2), e.g. a trained ``quality.Classifier``.
        target: the class to make, an int for every image, or one int per image (a list or
            int tensor ``[n]``), each in ``[0, K)``.
        n: number of images (default: ``len(target)`` for a 1-D target, else the init's batch
            size for a 4-D init, else 1).
        steps: Adam steps, >= 0 (0 returns the starting images; an ``init`` image
            clamped to [0.01, 0.99]).
        lr: Adam learning rate on the logits u, > 0.
        init: ``"noise"`` (u ~ N(0, 1): grey noise around 0.5) or images ``[n, C, H, W]``,
            ``[1, C, H, W]`` or ``[C, H, W]`` in [0, 1] to start from (e.g. a real image of
            another class; pixels are clamped to [0.01, 0.99] so the logits are finite).
        l2: weight >= 0 of the mean squared pixel (pulls pixels to 0, the background).
        tv: weight >= 0 of ``total_variation`` (smoother images).
        jitter: largest random circular shift in pixels, >= 0 and < H, W (0: none).
        until: stop changing an image once the classifier's probability of its target
            (on the unshifted image) reaches this value, in (0, 1] (None: run all ``steps``
            for every image). "Optimise the input until the classifier is sure": about the
            least change that fools it.
        generator: random generator of the noise and the shifts (None: the global one), on
            any device: they are drawn on its device and moved to the classifier's.
        image_shape: ``(C, H, W)``; default the init's shape, else ``(1, 28, 28)``.

    Returns:
        ``[n, C, H, W]`` images in [0, 1], detached, on the classifier's device and dtype.

    Raises:
        ValueError: naming the problem, for a classifier that is not an ``nn.Module`` or
            callable, fails on the images, does not return finite float logits ``[n, K]``
            or returns logits that are not differentiable in the images; a target
            that is not integer or lies outside ``[0, K)``; a bad ``image_shape``, ``init`` or
            ``n``; a negative ``l2`` or ``tv``; a bad ``steps``, ``lr`` or ``jitter``; a
            ``generator`` that is not a ``torch.Generator`` or None.
    """
    _check_classifier(classifier)
    check_generator("invert_classifier", generator)
    l2, tv = _check_penalty("l2", l2), _check_penalty("tv", tv)
    steps = _check_count("steps", steps, 0)
    jitter = _check_count("jitter", jitter, 0)
    if not _is_number(lr) or not (math.isfinite(lr) and lr > 0):
        raise ValueError(f"lr must be a finite number > 0, got {lr!r}")
    if until is not None and (not _is_number(until) or not 0 < until <= 1):
        raise ValueError(f"until must be a probability in (0, 1], got {until!r}")
    lr, until = float(lr), None if until is None else float(until)
    if n is not None:
        n = _check_count("n", n, 1)
    if image_shape is not None:
        image_shape = _check_image_shape(image_shape)
    init_images = _check_init(init, n, image_shape)
    t = _as_target(target)
    if n is None:
        n = len(t) if t.dim() == 1 else (
            len(init_images) if init_images is not None and init_images.dim() == 4 else 1)
    if t.dim() == 1 and len(t) != n:
        raise ValueError(f"target has {len(t)} classes for n = {n} images")
    if init_images is not None and init_images.dim() == 4 and len(init_images) not in (1, n):
        raise ValueError(f"init has {len(init_images)} images but n = {n}")
    shape = image_shape or (tuple(init_images.shape[-3:]) if init_images is not None
                            else DEFAULT_IMAGE_SHAPE)
    if jitter and jitter >= min(shape[1], shape[2]):
        raise ValueError(f"jitter must be smaller than the image's height and width "
                         f"{shape[1:]}, got {jitter}")
    dtype, device = _module_dtype_device(classifier)
    with gradients_on():           # under no_grad or inference_mode too: u is optimised
        return _invert(classifier, init, n, shape, t, generator, dtype, device, steps, lr,
                       until, l2, tv, jitter)


def _invert(classifier, init, n: int, shape, t: torch.Tensor, generator, dtype, device,
            steps: int, lr: float, until: float | None, l2: float, tv: float,
            jitter: int) -> torch.Tensor:
    """``invert_classifier``'s optimisation, its arguments checked, inside
    ``gradients_on()``: the images ``[n, C, H, W]``."""
    t, init = autograd_usable(t), autograd_usable(init)    # made under inference_mode?
    u = _init_logits(init, n, shape, generator, dtype, device)         # [n, C, H, W]
    with eval_mode(classifier):
        with torch.no_grad():
            logits = _classify(classifier, torch.sigmoid(u))
            k = _check_logits(logits, n)
            _check_finite(logits, "on the starting images")
        bad = t[(t < 0) | (t >= k)]
        if bad.numel():
            raise ValueError(f"target class(es) {sorted(set(bad.tolist()))} out of range: the "
                             f"classifier has {k} classes, 0..{k - 1}")
        t = t.to(device).expand(n)                                     # [n]
        u.requires_grad_(True)
        opt = torch.optim.Adam([u], lr=lr)
        rows = torch.arange(n, device=device)
        done = torch.zeros(n, dtype=torch.bool, device=device)          # [n]
        for _ in range(steps):
            x = torch.sigmoid(u)                                   # [n, C, H, W]
            seen = x
            if jitter:
                dy, dx = torch.randint(-jitter, jitter + 1, (2,), generator=generator,
                                       device=draw_device(generator, "cpu"))
                seen = torch.roll(x, (int(dy), int(dx)), dims=(2, 3))
            logp = torch.log_softmax(_classify(classifier, seen), dim=-1)[rows, t]  # [n]
            if not logp.requires_grad:
                raise ValueError("the classifier's logits do not depend differentiably "
                                 "on its input images (it detaches them or runs under "
                                 "torch.no_grad): the inversion follows their gradient "
                                 "with respect to the images")
            obj = -logp
            if l2:
                obj = obj + l2 * x.square().flatten(1).mean(1)
            if tv:
                obj = obj + tv * total_variation(x)
            if until is not None:
                if jitter:                                 # judged on the image as it is
                    with torch.no_grad():
                        now = torch.log_softmax(classifier(x), dim=-1)[rows, t]
                else:
                    now = logp.detach()
                done |= now >= math.log(until)
                if bool(done.all()):
                    break
                obj = obj.masked_fill(done, 0.0)
            (u.grad,) = torch.autograd.grad(obj.sum(), u)
            if until is not None and bool(done.any()):
                kept = u.detach()[done].clone()
                opt.step()                                         # momentum moves all
                with torch.no_grad():
                    u[done] = kept
            else:
                opt.step()
    _check_finite(u.detach(), "during the inversion")   # once: no read back per step
    return torch.sigmoid(u.detach())


@torch.no_grad()
def class_probabilities(classifier, images: torch.Tensor, batch_size: int = 1000
                        ) -> torch.Tensor:
    """Softmax of the classifier's logits, ``[N, C, H, W]`` -> ``[N, K]``, in batches, eval mode.

    Float images are cast to an ``nn.Module`` classifier's dtype, so the float64 images made
    against a float64 classifier score on a float32 one (``confidence_report``).

    Raises:
        ValueError: a classifier that fails on the images, does not return float logits
            ``[n, K]`` with ``K >= 2``, or returns NaN or infinite logits for an image.
    """
    if isinstance(classifier, nn.Module) and images.is_floating_point():
        images = images.to(_module_dtype_device(classifier)[0])
    with eval_mode(classifier):
        p = []
        for s in range(0, len(images), batch_size):
            x = images[s:s + batch_size]
            logits = _classify(classifier, x)
            _check_logits(logits, len(x))
            p.append(torch.softmax(logits, dim=-1))
    probs = torch.cat(p)                                                        # [N, K]
    bad = (~torch.isfinite(probs).all(-1)).nonzero()
    if len(bad):
        raise ValueError(f"the classifier returned NaN or infinite logits for {len(bad)} of "
                         f"{len(probs)} images (the first is image {int(bad[0])}): their "
                         f"class probabilities would be NaN")
    return probs


def confidence_report(images: torch.Tensor, target, inverted, independent, *,
                      confident: float = 0.99) -> dict:
    """How sure the inverted classifier and an independent one are that images show ``target``.

    Adversarial images fool the classifier they were made against (high ``inverted``
    confidence). An independently trained one is not, when both are trained to convergence
    (it named the intended class at chance in docs/generative.md); under-trained classifiers
    share the patterns (about half transferred on Fashion-MNIST after 2 epochs), so a second
    classifier's verdict is no proof of class membership either.

    Args:
        images: ``[n, C, H, W]`` in [0, 1], e.g. from ``invert_classifier``.
        target: the intended class of each image: an int or int ``[n]``.
        inverted: the classifier the images were made against.
        independent: a classifier trained independently (another seed).
        confident: the probability that counts as fooled/confident (0.99).

    Returns:
        Per image (tensors ``[n]``): ``"confidence_inverted"``, ``"confidence_independent"``
        (each classifier's probability of the target) and ``"predicted_inverted"``,
        ``"predicted_independent"`` (int64 argmax); summaries (floats):
        ``"mean_confidence_inverted"``, ``"fraction_confident_inverted"`` (probability >=
        ``confident``), ``"accuracy_inverted"``, ``"mean_confidence_independent"``,
        ``"accuracy_independent"`` (the independent argmax is the target).

    Raises:
        ValueError: for images that are not float ``[n, C, H, W]`` finite pixels in [0, 1]
            (uint8 images: divide by 255), a bad target, a ``confident`` that is not a
            probability in (0, 1], or a classifier that is not an ``nn.Module`` or callable,
            fails on the images, or does not return float logits ``[n, K]`` with ``K >= 2``
            (as ``invert_classifier`` checks).
    """
    if not isinstance(images, torch.Tensor) or images.dim() != 4 or len(images) == 0:
        raise ValueError(f"images must be a tensor [n, C, H, W] with n >= 1, got "
                         f"{getattr(images, 'shape', type(images).__name__)}")
    if not images.is_floating_point():
        hint = " (divide uint8 images by 255)" if images.dtype == torch.uint8 else ""
        raise ValueError(f"images must be float pixels in [0, 1], got dtype {images.dtype}"
                         f"{hint}")
    if not bool(torch.isfinite(images).all()) or images.min() < 0 or images.max() > 1:
        raise ValueError("images must be finite pixels in [0, 1] (no NaN or inf)")
    if not _is_number(confident) or not 0 < confident <= 1:
        raise ValueError(f"confident must be a probability in (0, 1], got {confident!r}")
    _check_classifier(inverted)
    _check_classifier(independent)
    n = len(images)
    t = _as_target(target).expand(n) if _as_target(target).dim() == 0 else _as_target(target)
    if len(t) != n:
        raise ValueError(f"target has {len(t)} classes for {n} images")
    out: dict[str, torch.Tensor | float] = {}
    for name, clf in (("inverted", inverted), ("independent", independent)):
        p = class_probabilities(clf, images)                           # [n, K]
        _check_logits(p, n)
        bad = t[(t < 0) | (t >= p.shape[1])]
        if bad.numel():
            raise ValueError(f"target class(es) {sorted(set(bad.tolist()))} out of range for "
                             f"the {name} classifier's {p.shape[1]} classes")
        conf = p[torch.arange(n, device=p.device), t.to(p.device)]     # [n]
        pred = p.argmax(-1)                                            # [n]
        out[f"confidence_{name}"] = conf
        out[f"predicted_{name}"] = pred
        out[f"mean_confidence_{name}"] = float(conf.mean())
        out[f"accuracy_{name}"] = float((pred == t.to(pred.device)).float().mean())
        if name == "inverted":
            out["fraction_confident_inverted"] = float((conf >= confident).float().mean())
    return out

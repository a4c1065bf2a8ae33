import math

import pytest
import torch

import metaloop as ml
from metaloop.tasks import Omniglot, Shifted, rotate_images, shift_images
from metaloop.tasks.augment import (
    ELASTIC_SIGMA,
    all_shifts,
    augment_images,
    elastic_images,
    shifted_support,
    stroke_images,
)


def _reference_shift(img: torch.Tensor, dy: int, dx: int) -> torch.Tensor:
    """Move a [C, H, W] image by (dy, dx) pixels with zero fill, written out pixel by pixel."""
    out = torch.zeros_like(img)
    _, h, w = img.shape
    for i in range(h):
        for j in range(w):
            si, sj = i - dy, j - dx
            if 0 <= si < h and 0 <= sj < w:
                out[:, i, j] = img[:, si, sj]
    return out


def test_shift_images_matches_a_pixel_loop_for_every_offset():
    x = torch.rand(3, 4, 2, 6, 5)                                    # [..., C, H, W]
    y = shift_images(x, 2, torch.Generator().manual_seed(0))
    assert y.shape == x.shape and y.dtype == x.dtype
    seen = set()
    for xi, yi in zip(x.reshape(-1, 2, 6, 5), y.reshape(-1, 2, 6, 5)):
        match = [(dy, dx) for dy in range(-2, 3) for dx in range(-2, 3)
                 if torch.equal(_reference_shift(xi, dy, dx), yi)]
        assert len(match) == 1                                       # exactly one offset
        seen.add(match[0])
    assert len(seen) > 3                                             # offsets differ per image
    assert shift_images(x, 0) is x


def test_shift_images_is_reproducible_and_rejects_bad_input():
    x = torch.rand(8, 1, 7, 7)
    a = shift_images(x, 1, torch.Generator().manual_seed(3))
    assert torch.equal(a, shift_images(x, 1, torch.Generator().manual_seed(3)))
    with pytest.raises(ValueError, match="max_shift"):
        shift_images(x, -1)
    with pytest.raises(ValueError, match=r"\[\.\.\., C, H, W\]"):
        shift_images(torch.rand(7, 7), 1)


def test_shift_images_keeps_colour_images_in_the_plain_layout():
    """Three-channel images come back contiguous NCHW, not channels-last: a convolution
    after them then stays on torch's plain kernels (its output is NCHW too), where a
    channels-last batch would take the inexact channels-last float32 BatchNorm."""
    x = torch.rand(2, 5, 3, 12, 12)                                  # [B, N, C, H, W]
    y = shift_images(x, 2, torch.Generator().manual_seed(0))
    assert y.is_contiguous() and y.stride() == x.stride()
    flat = y.reshape(-1, 3, 12, 12)
    assert not flat.is_contiguous(memory_format=torch.channels_last)
    out = torch.nn.Conv2d(3, 4, 3)(flat)
    assert out.is_contiguous() and not out.is_contiguous(memory_format=torch.channels_last)
    for xi, yi in zip(x.reshape(-1, 3, 12, 12), flat):                # the same pixels moved
        assert any(torch.equal(_reference_shift(xi, dy, dx), yi)
                   for dy in range(-2, 3) for dx in range(-2, 3))


def test_shifted_family_moves_only_the_images(omniglot_root):
    fam = Omniglot(omniglot_root, "test", ways=3, shots=1, queries=2)
    plain = fam.sample(2, torch.Generator().manual_seed(5))
    b = Shifted(fam, 2).sample(2, torch.Generator().manual_seed(5))
    assert torch.equal(b.support_y, plain.support_y) and torch.equal(b.classes, plain.classes)
    assert b.query_x.shape == plain.query_x.shape and not torch.equal(b.query_x, plain.query_x)
    # ink is conserved unless a stroke is pushed over the border (2 pixels at most)
    assert torch.allclose(b.support_x.sum((-1, -2)), plain.support_x.sum((-1, -2)), rtol=0.2)
    assert Shifted(fam, 2).num_classes == fam.num_classes
    with pytest.raises(ValueError, match="max_shift, max_rotate, max_stroke or elastic on"):
        Shifted(fam, 0)
    with pytest.raises(ValueError, match="max_shift must be an int >= 0"):
        Shifted(fam, -1, max_rotate=5.0)
    rotated = Shifted(fam, 0, max_rotate=10.0).sample(2, torch.Generator().manual_seed(5))
    assert torch.equal(rotated.query_y, plain.query_y)
    assert not torch.equal(rotated.support_x, plain.support_x)
    with pytest.raises(ValueError, match="max_degrees"):
        Shifted(fam, 1, max_rotate=200.0)


def _reference_rotate(img: torch.Tensor, degrees: float) -> torch.Tensor:
    """Turn a [C, H, W] image counter-clockwise (as displayed) about its centre, bilinear,
    zero fill, written out pixel by pixel in pixel coordinates."""
    c, h, w = img.shape
    a = math.radians(degrees)
    cy, cx = (h - 1) / 2, (w - 1) / 2
    out = torch.zeros_like(img, dtype=torch.float64)
    src = img.double()
    for i in range(h):
        for j in range(w):
            # output (row i, col j) reads the input at the point turned clockwise by a
            y, x = i - cy, j - cx
            sx, sy = math.cos(a) * x - math.sin(a) * y + cx, math.sin(a) * x + math.cos(a) * y + cy
            x0, y0 = math.floor(sx), math.floor(sy)
            for yy, xx in ((y0, x0), (y0, x0 + 1), (y0 + 1, x0), (y0 + 1, x0 + 1)):
                wgt = (1 - abs(sx - xx)) * (1 - abs(sy - yy))
                if 0 <= yy < h and 0 <= xx < w and wgt > 0:
                    out[:, i, j] += wgt * src[:, yy, xx]
    return out.to(img.dtype)


def test_rotate_images_matches_a_pixel_loop_and_rot90():
    x = torch.rand(2, 3, 1, 7, 7)                                    # [..., C, H, W]
    y = rotate_images(x, 20.0, torch.Generator().manual_seed(4))
    u = torch.rand(6, generator=torch.Generator().manual_seed(4), dtype=torch.float64)
    angles = ((2 * u - 1) * 20.0).tolist()                           # the draws, one per image
    assert y.shape == x.shape and len({round(a, 3) for a in angles}) == 6
    for xi, yi, a in zip(x.reshape(-1, 1, 7, 7), y.reshape(-1, 1, 7, 7), angles):
        torch.testing.assert_close(yi, _reference_rotate(xi, a), atol=1e-5, rtol=0)
    # a quarter turn is torch.rot90 exactly (to rounding): the sign convention
    quarter = _reference_rotate(x[0, 0], 90.0)
    torch.testing.assert_close(quarter, torch.rot90(x[0, 0], 1, (-2, -1)), atol=1e-5, rtol=0)
    assert rotate_images(x, 0) is x
    assert torch.equal(y, rotate_images(x, 20.0, torch.Generator().manual_seed(4)))
    for bad in (-1.0, 181, float("nan"), True):
        with pytest.raises(ValueError, match="max_degrees"):
            rotate_images(x, bad)
    with pytest.raises(ValueError, match="float"):
        rotate_images(torch.ones(1, 5, 5, dtype=torch.uint8), 10.0)


def test_all_shifts_gives_every_offset_in_order_against_a_pixel_loop():
    x = torch.rand(2, 3, 1, 5, 6)                                    # [..., C, H, W]
    out = all_shifts(x, 2)
    assert out.shape == (25, 2, 3, 1, 5, 6)
    for k, (dy, dx) in enumerate((dy, dx) for dy in range(-2, 3) for dx in range(-2, 3)):
        for xi, oi in zip(x.reshape(-1, 1, 5, 6), out[k].reshape(-1, 1, 5, 6)):
            assert torch.equal(oi, _reference_shift(xi, dy, dx))
    assert torch.equal(out[12], x) and torch.equal(all_shifts(x, 0)[0], x)
    for bad in (-1, 1.5, True):
        with pytest.raises(ValueError, match="shift must be an int >= 0"):
            all_shifts(x, bad)
    with pytest.raises(ValueError, match=r"\[\.\.\., C, H, W\]"):
        all_shifts(torch.rand(4, 4), 1)


def test_shifted_support_grows_a_task_or_a_batch_with_its_labels():
    sx, sy = torch.rand(6, 1, 5, 5), torch.tensor([0, 1, 2, 0, 1, 2])    # one task
    x, y = shifted_support(sx, sy, 1)
    assert x.shape == (54, 1, 5, 5) and torch.equal(x[:6], sx)         # the plain images first
    assert torch.equal(y, sy.repeat(9))
    copies = all_shifts(sx, 1)
    for j in range(54):                                               # each a shift of its own
        assert any(torch.equal(x[j], copies[k][j % 6]) for k in range(9))
    bx, by = torch.rand(3, 6, 1, 5, 5), torch.randint(0, 3, (3, 6))  # a batch of 3 tasks
    x, y = shifted_support(bx, by, 1)
    assert x.shape == (3, 54, 1, 5, 5) and y.shape == (3, 54)
    for b in range(3):
        tx, ty = shifted_support(bx[b], by[b], 1)
        assert torch.equal(x[b], tx) and torch.equal(y[b], ty)
    assert shifted_support(sx, sy, 0) == (sx, sy)
    with pytest.raises(ValueError, match="S, C, H, W"):
        shifted_support(torch.rand(6, 5), sy, 1)


def _draws(seed: int, *shape: int) -> torch.Tensor:
    """The uniform [-1, 1) float64 draws an augmentation makes from a fresh generator."""
    return 2 * torch.rand(*shape, generator=torch.Generator().manual_seed(seed),
                          dtype=torch.float64) - 1


def test_stroke_images_blends_toward_a_pixel_loop_dilation_or_erosion():
    x = (torch.rand(3, 2, 1, 8, 9) > 0.6).float() * 0.9 + 0.05      # ink 0.95 on 0.05
    y = stroke_images(x, 0.7, torch.Generator().manual_seed(3))
    t = (_draws(3, 6) * 0.7).float()                                  # one t per image
    assert (t > 0).any() and (t < 0).any()
    for xi, yi, ti in zip(x.reshape(-1, 8, 9), y.reshape(-1, 8, 9), t):
        bg = float(xi.min())
        want = torch.empty_like(xi)
        for i in range(8):
            for j in range(9):
                nb = [float(xi[a, b]) if 0 <= a < 8 and 0 <= b < 9 else bg
                      for a in range(i - 1, i + 2) for b in range(j - 1, j + 2)]
                morph = max(nb) if ti > 0 else min(nb)
                want[i, j] = xi[i, j] + abs(float(ti)) * (morph - xi[i, j])
        torch.testing.assert_close(yi, want)
        assert yi.min() >= xi.min() - 1e-6 and yi.max() <= xi.max() + 1e-6
    # a full step thickens a one-pixel dot into a 3x3 square and erases it when thinning
    dot = torch.zeros(1, 1, 5, 5)
    dot[0, 0, 2, 2] = 1.0
    full = stroke_images(dot.expand(400, 1, 5, 5), 1.0, torch.Generator().manual_seed(0))
    t = _draws(0, 400)
    grown, gone = full[int(t.argmax())], full[int(t.argmin())]
    assert grown[0, 1:4, 1:4].min() > 0.99 and grown.sum() < 9 + 1e-4
    assert gone.max() < 0.01
    assert stroke_images(x, 0) is x
    assert torch.equal(y, stroke_images(x, 0.7, torch.Generator().manual_seed(3)))
    for bad in (-0.1, 1.5, float("nan"), True, "1"):
        with pytest.raises(ValueError, match="max_change must be a number in"):
            stroke_images(x, bad)
    with pytest.raises(ValueError, match="float"):
        stroke_images(torch.ones(1, 5, 5, dtype=torch.uint8), 0.5)


def test_elastic_images_matches_scipy_smoothing_and_bilinear_sampling():
    ndimage = pytest.importorskip("scipy.ndimage")
    x = torch.rand(2, 1, 12, 10, dtype=torch.float64)                # [N, C, H, W]
    alpha, sigma = 1.5, 2.0
    y = elastic_images(x, alpha, sigma, torch.Generator().manual_seed(7))
    noise = _draws(7, 2, 2, 12, 10).numpy()                          # [N, (dx, dy), H, W]
    for n in range(2):
        coords = []
        for axis in (1, 0):                          # rows move by dy, columns by dx
            f = ndimage.gaussian_filter(noise[n, axis], sigma, mode="nearest", truncate=3.0)
            f = f * alpha / (f ** 2).mean() ** 0.5                   # RMS alpha pixels
            coords.append(f)
        rows, cols = torch.meshgrid(torch.arange(12.0), torch.arange(10.0), indexing="ij")
        at = [rows.numpy() + coords[0], cols.numpy() + coords[1]]
        want = ndimage.map_coordinates(x[n, 0].numpy(), at, order=1, mode="grid-constant",
                                       cval=0.0)
        torch.testing.assert_close(y[n, 0], torch.from_numpy(want), atol=1e-9, rtol=0)
    assert elastic_images(x, 0) is x
    assert torch.equal(y, elastic_images(x, alpha, sigma, torch.Generator().manual_seed(7)))
    # a bigger alpha moves pixels further: the change from the input grows with it
    smooth = torch.zeros(1, 1, 28, 28)
    smooth[..., 8:20, 8:20] = 1.0
    diffs = [float((elastic_images(smooth, a, 3.0, torch.Generator().manual_seed(1))
                    - smooth).abs().sum()) for a in (0.5, 1.0, 2.0)]
    assert diffs[0] < diffs[1] < diffs[2]
    for kw, match in (({"alpha": -1.0}, "alpha"), ({"alpha": float("inf")}, "alpha"),
                      ({"alpha": 1.0, "sigma": 0.0}, "sigma"), ({"alpha": True}, "alpha")):
        with pytest.raises(ValueError, match=match):
            elastic_images(x, **kw)
    with pytest.raises(ValueError, match="float"):
        elastic_images(torch.ones(1, 5, 5, dtype=torch.uint8), 1.0)


def test_elastic_field_is_alpha_rms_over_the_image_but_weaker_in_the_middle():
    """What the docstring says of the field at 28x28, sigma 3: RMS alpha over the image,
    about 0.7 alpha in the middle, about 2.7 alpha at the corners (the smoothing replicates
    the edges' noise)."""
    from metaloop.tasks.augment import _smoothing, _uniform

    alpha, n = 2.0, 400
    x = torch.zeros(n, 1, 28, 28, dtype=torch.float64)
    # the field as elastic_images builds it, from the same draws
    f = _uniform(n, torch.Generator().manual_seed(0), x, 2, 28, 28)
    f = _smoothing(28, 3.0, x) @ f @ _smoothing(28, 3.0, x).T
    f = f * alpha / f.square().mean((2, 3), keepdim=True).sqrt()        # [n, 2, H, W]
    torch.testing.assert_close(f.square().mean((2, 3)).sqrt(), torch.full((n, 2), alpha,
                                                                          dtype=f.dtype))
    rms = f.square().mean((0, 1)).sqrt()                                # [H, W]
    assert 0.65 * alpha < float(rms[10:18, 10:18].mean()) < 0.78 * alpha
    assert 2.4 * alpha < float(rms[[0, 0, -1, -1], [0, -1, 0, -1]].mean()) < 3.0 * alpha
    # elastic_images moves pixels by that field: bilinear sampling of the coordinates gives
    # it back wherever the displaced position stays inside the image
    rows, cols = torch.meshgrid(torch.arange(28.0, dtype=torch.float64),
                                torch.arange(28.0, dtype=torch.float64), indexing="ij")
    coords = torch.stack([cols, rows]).expand(n, 2, 28, 28).contiguous()   # [n, (x, y), H, W]
    moved = elastic_images(coords, alpha, 3.0, torch.Generator().manual_seed(0)) - coords
    torch.testing.assert_close(moved[:, :, 10:18, 10:18], f[:, :, 10:18, 10:18])


def test_augment_images_composes_in_order_and_draws_nothing_for_a_step_that_is_off(
        omniglot_root):
    x = torch.rand(4, 6, 1, 9, 9)
    g = torch.Generator().manual_seed(5)
    y = augment_images(x, g, 1, 10.0, 0.5, 1.0)
    h = torch.Generator().manual_seed(5)
    want = shift_images(rotate_images(elastic_images(stroke_images(x, 0.5, h), 1.0,
                                                     ELASTIC_SIGMA, h), 10.0, h), 1, h)
    assert torch.equal(y, want)
    # with stroke and elastic off, the stream is the rotate-then-shift one
    a = augment_images(x, torch.Generator().manual_seed(2), 2, 5.0)
    h = torch.Generator().manual_seed(2)
    assert torch.equal(a, shift_images(rotate_images(x, 5.0, h), 2, h))
    fam = Omniglot(omniglot_root, ways=3, shots=1, queries=2)
    aug = Shifted(fam, 0, max_stroke=0.5, elastic=1.0)
    assert "max_stroke=0.5" in repr(aug) and "elastic=1.0" in repr(aug)
    b = aug.sample(2, torch.Generator().manual_seed(0))
    plain = fam.sample(2, torch.Generator().manual_seed(0))
    assert torch.equal(b.support_y, plain.support_y) and not torch.equal(b.support_x,
                                                                         plain.support_x)
    assert float(b.support_x.min()) >= 0.0 and float(b.support_x.max()) <= 1.0 + 1e-6
    again = aug.with_shots(1, 3)
    assert (again.max_stroke, again.elastic, again.queries) == (0.5, 1.0, 3)
    with pytest.raises(ValueError, match="max_change"):
        Shifted(fam, 0, max_stroke=2.0)
    with pytest.raises(ValueError, match="alpha"):
        Shifted(fam, 0, elastic=-1.0)


def test_training_on_bent_and_restroked_tasks_resumes_bit_for_bit(omniglot_root, tmp_path):
    fam = Shifted(Omniglot(omniglot_root, ways=3, shots=1, queries=2), 1, max_stroke=0.5,
                  elastic=1.0)

    def learner():
        torch.manual_seed(0)
        return ml.meta.ProtoNet(ml.models.Conv4(1, hidden=4, out_dim=3, pool="stride",
                                                image_size=14))

    def params(lrn):
        return {n: p.detach().clone() for n, p in lrn.model.named_parameters()}

    full = learner()
    ml.train(full, fam, iterations=4, meta_batch=2, progress=False, out_dir=tmp_path / "a",
             checkpoint_every=2)
    part = learner()
    ml.train(part, fam, iterations=2, meta_batch=2, progress=False, out_dir=tmp_path / "b",
             checkpoint_every=2)
    resumed = learner()
    ml.train(resumed, fam, iterations=4, meta_batch=2, progress=False, out_dir=tmp_path / "b",
             checkpoint_every=2, resume=True)
    a, b = params(full), params(resumed)
    assert all(torch.equal(a[n], b[n]) for n in a)


def test_a_shift_as_large_as_the_images_is_named():
    """A shift of the images' side or more moves some copies off the image entirely (blank
    inputs, labelled as their class): training augmentation, the support's shifted copies
    (metaloop predict, the official runs) and the queries' were all silent."""
    from metaloop.tasks.augment import all_shifts, shift_images, shifted_support

    x = torch.rand(2, 1, 6, 8)                                        # [N, C, H, W]
    with pytest.raises(ValueError, match=r"shift_images max_shift = 6 moves images of \[6, "
                                         r"8\] pixels by up to 6, .* give a shift below 6"):
        shift_images(x, 6)
    with pytest.raises(ValueError, match="give a shift below 6"):
        all_shifts(x, 7)
    with pytest.raises(ValueError, match="give a shift below 6"):
        shifted_support(x, torch.tensor([0, 1]), 6)
    assert shift_images(x, 5).shape == x.shape                       # below: as before
    fam = ml.tasks.Episodes(torch.rand(12, 1, 6, 6), torch.arange(12) % 3, ways=2, shots=1,
                            queries=1)
    with pytest.raises(ValueError, match="give a shift below 6"):
        Shifted(fam, max_shift=6)
    assert Shifted(fam, max_shift=5).sample(2).support_x.shape[-2:] == (6, 6)

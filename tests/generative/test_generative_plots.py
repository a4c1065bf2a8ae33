"""``metaloop.generative.plots``: grey grids are drawn ink-dark and saved as grey PNGs, colour
grids are drawn as they are and saved as RGB PNGs; other channel counts are named."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from metaloop.generative import plots


def test_tile_keeps_grey_flat_and_colour_in_three_channels():
    grey = torch.rand(5, 1, 4, 3)
    a = plots.tile(grey, ncol=3, pad=1)                         # 2 rows of 3 (one empty)
    assert a.shape == (2 * 5 - 1, 3 * 4 - 1)
    assert np.array_equal(a[:4, 4:7], grey[1, 0].numpy())      # row 0, column 1
    assert a[4].max() == 0 and a[5:, 8:].max() == 0            # gaps and the empty cell: no ink
    colour = torch.rand(2, 2, 3, 4, 3)                          # [R, K, C, H, W]
    c = plots.tile(colour, pad=1)
    assert c.shape == (2 * 5 - 1, 2 * 4 - 1, 3)
    assert np.array_equal(c[5:9, 4:7], colour[1, 1].permute(1, 2, 0).numpy())
    assert (c[4] == 1).all() and (c[:, 3] == 1).all()           # white gaps between them
    flat = plots.tile(torch.rand(3, 3, 4, 4), ncol=2, pad=1)    # 2 rows of 2, one cell empty
    assert (flat[5:, 5:] == 1).all()                            # ... left white
    with pytest.raises(ValueError, match=r"C = 1 or 3, got \[2, 2, 4, 4\]"):
        plots.tile(torch.rand(2, 2, 4, 4))


@pytest.mark.parametrize("channels, mode", [(1, "L"), (3, "RGB")])
def test_grids_are_saved_grey_or_in_colour(channels, mode, tmp_path):
    images = torch.zeros(4, channels, 8, 8)
    if channels == 3:
        images[:, 0] = 1.0                                      # pure red
    else:
        images[:, :, 2:6, 2:6] = 1.0                            # an ink square
    plots.save_grid(images, tmp_path / "grid.png", title="t", ncol=2)
    with Image.open(tmp_path / "grid.png") as im:
        assert im.mode == mode
        px = np.asarray(im)
    if channels == 3:                                           # red drawn as red
        red = (px[..., 0] > 200) & (px[..., 1] < 60) & (px[..., 2] < 60)
        assert red.sum() > 100
    else:                                                       # ink drawn dark
        assert (px < 60).sum() > 100
    plots.save_sweep({2: {"a": images}}, {}, tmp_path / "sweep.png")
    with Image.open(tmp_path / "sweep.png") as im:
        assert im.mode == mode


def test_own_text_is_written_as_it_is_not_as_mathtext_or_empty_boxes(tmp_path, monkeypatch):
    from matplotlib import rcParams

    texts, _ = plots.figure_text(["$5 and $10", "a $x^$"])         # dollars, not mathtext
    assert texts == [r"\$5 and \$10", r"a \$x^\$"]
    fonts = {"default.ttf": {ord(c) for c in "abcdefghijklmnopqrstuvwxyz $^ñú"},
             "other.ttf": {ord("日")}}
    monkeypatch.setattr(plots, "_font_chars", lambda path: fonts.get(path, set()))
    monkeypatch.setattr("matplotlib.font_manager.findfont", lambda *a, **k: "default.ttf")
    monkeypatch.setattr(plots, "_installed_fonts", lambda: (("Other", "other.ttf"),))
    texts, family = plots.figure_text(["日本", "ñandú"])     # 日 from Other; 本 from none
    assert texts == ["日\\u672c", "ñandú"]
    assert family == [*rcParams["font.family"], "Other"]
    monkeypatch.undo()
    # a class folder named in broken mathtext stopped the run at its first picture; a name
    # in a script the font lacks was drawn as empty boxes with a warning (an error here)
    plots.save_grid(torch.rand(3, 2, 1, 8, 8), tmp_path / "g.png", title="VAE 写真",
                    row_labels=["a $x^$", "日本", "$5 and $10"])
    with Image.open(tmp_path / "g.png") as im:
        assert im.mode == "L"


def test_the_inversion_figure_writes_own_class_names_and_path_as_they_are(tmp_path):
    from metaloop.generative import inversion

    k, per = 2, 3
    scores = {name: {"frechet": 1.0, "top_confidence_inverted": 0.5,
                     "top_confidence_independent": 0.5} for name in ("real", *inversion.METHODS)}
    for name in inversion.CONDITIONAL:
        scores[name].update(frechet_class=2.0, accuracy_independent=0.5,
                            mean_confidence_inverted=0.5)
    results = {"n_classes": k, "per_class": per, "class_names": ["a $x^$", "日本"],
               "data": "/data/$x^$/写真", "chance": 0.5, "scores": scores, "n_scored": k * per,
               "classifier_test_accuracy": {"inverted": 0.9, "independent": 0.9}}
    samples = {name: torch.rand(k * per, 1, 8, 8) for name in inversion.METHODS}
    inversion.save_figure(samples, results, inversion.InversionSettings(), tmp_path / "f.png")
    with Image.open(tmp_path / "f.png") as im:
        assert im.mode == "L"
        # 3 images a row: each panel still as wide as its score line "FD .. (to class c ..)
        # B acc ..% (chance ..%)", about 3 inches at 80 dpi (they overlapped and were cut)
        assert im.width >= 3 * 3.2 * 80

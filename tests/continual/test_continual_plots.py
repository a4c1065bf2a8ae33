"""The forgetting curve's mean and CI over seeds, one value per seed and step."""

from __future__ import annotations

import pytest
import torch

from metaloop.continual.heads import init_params
from metaloop.continual.plots import band, mean_curve
from metaloop.continual.scenarios import Experience
from metaloop.continual.sequence import run_sequence
from metaloop.evaluate.heldout import mean_ci
from metaloop.models import MLP

D = 8


def _blobs(name, shift, seed):
    """Two Gaussian blobs in D dims, told apart by dimension 1; dimension 0 = ``shift``."""
    g = torch.Generator().manual_seed(seed)

    def draw(m):
        y = torch.arange(m) % 2
        x = torch.randn(m, D, generator=g) * 0.5
        x[:, 0] = shift
        x[:, 1] += 2.0 * y - 1.0
        return x, y

    return Experience(name, name, 2, (0, 1), draw(64), draw(16), draw(32))


def _point(step, experience, acc):
    return {"step": step, "experience": experience, "accuracy": {"A": acc}}


def test_a_boundary_step_counts_once_per_seed_with_the_later_point():
    # each seed: experience 1 ends at step 10, experience 2 starts there (other parameters,
    # as early stopping returned an earlier step's)
    seeds = [[_point(0, 1, 0.9), _point(10, 1, 0.8), _point(10, 2, 0.6), _point(20, 2, 0.5)],
             [_point(0, 1, 0.7), _point(10, 1, 0.6), _point(10, 2, 0.4), _point(20, 2, 0.3)]]
    steps, means, cis = mean_curve(seeds[:1], "A")
    assert steps == [0, 10, 20] and means == pytest.approx([0.9, 0.6, 0.5])
    assert cis == [None, None, None]                  # one seed: no CI, at the boundary too
    steps, means, cis = mean_curve(seeds, "A")
    m, c = mean_ci([0.6, 0.4])                        # two values, not four
    assert means[1] == pytest.approx(m) and cis[1] == pytest.approx(c)


def test_mean_curve_of_a_stream_with_early_stopping():
    exps = [_blobs(f"E{i}", -3.0 + 2 * i, i) for i in range(3)]
    torch.manual_seed(0)
    model = MLP(D, (16,), 1)
    params = init_params(model, exps, torch.Generator().manual_seed(0))
    r = run_sequence(model, params, exps, "naive", steps=40, batch_size=16, lr=3e-2,
                     eval_every=5, early_stop=2, generator=torch.Generator().manual_seed(3))
    start = r.boundaries[1]                           # experience 2's first evaluation
    at_start = [c["accuracy"]["E0"] for c in r.curve if c["step"] == start]
    assert len(at_start) == 2                         # end of experience 1, start of 2
    steps, means, cis = mean_curve([r.curve], "E0")
    assert len(steps) == len(set(steps)) and all(c is None for c in cis)
    assert means[steps.index(start)] == at_start[-1]


def test_dotted_lines_mark_only_the_experience_starts_every_run_shares(tmp_path, monkeypatch):
    from matplotlib.figure import Figure

    from metaloop.continual import plots

    saved = []
    def savefig(self, fname, **kw):            # keep the figure; write an empty file
        saved.append(self)
        open(fname, "wb").close()
    monkeypatch.setattr(Figure, "savefig", savefig)
    curve = [_point(0, 1, 0.9), _point(10, 1, 0.8), _point(10, 2, 0.7), _point(30, 2, 0.6),
             _point(30, 3, 0.6), _point(40, 3, 0.5)]
    stopped = [_point(0, 1, 0.9), _point(5, 1, 0.8), _point(5, 2, 0.7), _point(30, 2, 0.6),
               _point(30, 3, 0.6), _point(40, 3, 0.5)]
    runs = {"naive": [{"curve": curve, "boundaries": [0, 10, 30]}],   # first run listed
            "replay": [{"curve": stopped, "boundaries": [0, 5, 30]}]}  # stopped early
    plots.old_accuracy_curves(runs, "A", tmp_path / "curve.png", "t")
    (ax,) = saved[0].axes
    dotted = sorted(line.get_xdata()[0] for line in ax.get_lines()
                    if line.get_linestyle() == ":")
    assert dotted == [30]                    # not 10, where only the first run started


def test_the_drawn_band_stays_within_0_and_100_percent():
    # two seeds near the top and two near the bottom: their t-intervals reach past [0, 1]
    means, ci = [], []
    for values in ([0.99, 0.95], [0.01, 0.05], [0.5, 0.55, 0.6]):
        m, c = mean_ci(values)
        means.append(m)
        ci.append(c)
    assert means[0] + ci[0] > 1 and means[1] - ci[1] < 0        # the interval does reach past
    lo, hi = band(means + [0.4], ci + [None])                    # the last: one seed
    assert hi[0] == 100.0 and lo[1] == 0.0
    assert lo[0] == pytest.approx(100 * (means[0] - ci[0]))
    assert hi[1] == pytest.approx(100 * (means[1] + ci[1]))
    assert (lo[2], hi[2]) == pytest.approx((100 * (0.55 - ci[2]), 100 * (0.55 + ci[2])))
    assert lo[3] == hi[3] == pytest.approx(40.0)                 # no CI: no width


@pytest.mark.parametrize("plot", ["curves", "heatmaps"])
def test_a_plot_that_cannot_be_written_leaves_the_earlier_picture_whole(tmp_path, monkeypatch,
                                                                        plot):
    """The forgetting plots were written in place by savefig: a full disk left the earlier
    run's PNG truncated, and the recipe removes only files it made itself."""
    from matplotlib.figure import Figure

    from metaloop.continual import plots
    from metaloop.train.checkpoint import WriteError
    path = tmp_path / "p.png"
    path.write_bytes(b"earlier")

    def full(self, fname, **kw):
        with open(fname, "wb") as f:
            f.write(b"half")
        raise OSError(28, "No space left on device")
    monkeypatch.setattr(Figure, "savefig", full)
    with pytest.raises(WriteError, match="No space left on device"):
        if plot == "curves":
            runs = {"naive": [{"curve": [_point(0, 1, 0.9), _point(10, 1, 0.8)],
                               "boundaries": [0, 10]}]}
            plots.old_accuracy_curves(runs, "A", path, "t")
        else:
            plots.matrix_heatmaps({"naive": {"matrix": {"mean": [[0.9, 0.1], [0.5, 0.8]]}}},
                                  ["a", "b"], path, "t")
    assert path.read_bytes() == b"earlier"
    assert [p.name for p in tmp_path.iterdir()] == ["p.png"]

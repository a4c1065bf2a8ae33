"""The fits of each method on one held-out sinusoid task after 0, 1 and 10 steps."""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import torch  # noqa: E402


def plot_fits(learners: dict, family, seed: int, path, steps=(0, 1, 10)) -> None:
    """One panel per method: true curve, support points, predictions after ``steps``."""
    batch, amp, phase = family.sample_with_params(1, torch.Generator().manual_seed(seed))
    sx, sy = batch.support_x[0], batch.support_y[0]
    xs = torch.linspace(-5, 5, 200).unsqueeze(1)                          # [200, 1]
    fig, axes = plt.subplots(1, len(learners), figsize=(3.2 * len(learners), 3), sharey=True,
                             squeeze=False)
    for ax, (name, learner) in zip(axes[0], learners.items()):
        ax.plot(xs, family.curve(float(amp[0]), float(phase[0]), xs), "k", lw=2, label="truth")
        path_ = list(learner.adapt_path(sx, sy, max(steps)))
        for s in steps:
            with torch.no_grad():
                ys = learner.predict(path_[min(s, len(path_) - 1)], xs)
            ax.plot(xs, ys, "--", label=f"{s} step{'s' if s != 1 else ''}")
        ax.scatter(sx, sy, c="red", zorder=3, label="support")
        ax.set_title(name)
    axes[0][0].legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)

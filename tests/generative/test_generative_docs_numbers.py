"""Numbers that docs/generative.md quotes in its text (outside the generated tables) are the
committed records' numbers, or follow from them."""

from __future__ import annotations

import json
import math
import re
from pathlib import Path

DOCS = Path(__file__).resolve().parents[2] / "docs"
TEXT = " ".join((DOCS / "generative.md").read_text().split())      # lines joined


def _record(name: str) -> dict:
    return json.loads((DOCS / "results" / f"{name}.json").read_text())


def _wilson(k: int, n: int, z: float = 1.959963984540054) -> tuple[float, float]:
    p = k / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return centre - half, centre + half


def test_the_quoted_wilson_interval_is_the_wilson_interval():
    m = re.search(r"for ([\d.]+)% of (\d+) images the Wilson interval is ([\d.]+) to ([\d.]+)%",
                  TEXT)
    assert m, "the Wilson example is gone from docs/generative.md"
    p, n = float(m[1]) / 100, int(m[2])
    lo, hi = _wilson(round(p * n), n)
    assert (m[3], m[4]) == (f"{100 * lo:.1f}", f"{100 * hi:.1f}")


def test_the_quoted_binarisation_floors_and_gaps_are_the_records():
    bilinear = _record("generative_iwae_omniglot")
    bicubic = _record("generative_iwae_omniglot_bicubic")
    assert (f"a floor of {bicubic['test_binarization_entropy']:.2f} nats per test image "
            f"against {bilinear['test_binarization_entropy']:.2f}") in TEXT
    published = float(bilinear["published"]["value"])
    assert f"{bilinear['mean'] - published:.2f} nats above the published" in TEXT
    assert f"{bicubic['mean'] - published:.2f} nats above the published" in TEXT
    curve = {c["passes"]: c["nll"] for c in bilinear["curve"]}
    assert f"the curve reads {curve[3280]:.2f} against {bilinear['mean']:.2f}" in TEXT
    assert f"fell by only {curve[2000] - curve[3280]:.1f} nats" in TEXT

"""argparse value types shared by the subcommands."""

from __future__ import annotations

import argparse


def int_list(text: str) -> list[int]:
    """``"1,2,3"`` -> ``[1, 2, 3]``; anything else is a usage error naming the text."""
    try:
        return [int(t) for t in text.split(",") if t.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers, got {text!r}"
                                         ) from None


def float_list(text: str) -> list[float]:
    """``"0.05,0.01"`` -> ``[0.05, 0.01]``; an argparse error names a bad item."""
    try:
        return [float(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated numbers, got {text!r}"
                                         ) from None

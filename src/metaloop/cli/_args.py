"""argparse value types shared by the subcommands."""

from __future__ import annotations

import argparse
import math


def _items(text: str, what: str) -> list[str]:
    """The items of a comma list; none for a list of blanks alone (``","``: each command
    names the flag that needs one), a usage error for a blank among items (``"64,,32"``)."""
    items = [t.strip() for t in text.split(",")]
    if not any(items):
        return []
    if not all(items):
        raise argparse.ArgumentTypeError(f"expected comma-separated {what}, got {text!r}, "
                                         f"which has an empty item (a comma too many)")
    return items


def int_list(text: str) -> list[int]:
    """``"1,2,3"`` -> ``[1, 2, 3]``; anything else is a usage error naming the text."""
    items = _items(text, "integers")
    try:
        return [int(t) for t in items]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers, got {text!r}"
                                         ) from None


def float_list(text: str) -> list[float]:
    """``"0.05,0.01"`` -> ``[0.05, 0.01]``; an argparse error names a bad item (not a number,
    or not finite: ``nan``, ``inf``, ``1e999``)."""
    items = _items(text, "numbers")
    try:
        values = [float(v) for v in items]
    except ValueError:
        values = None
    if values is None or not all(math.isfinite(v) for v in values):
        raise argparse.ArgumentTypeError(f"expected comma-separated finite numbers, got "
                                         f"{text!r}") from None
    return values


def path(text: str) -> str:
    """A file or folder path (``--out DIR``...); an empty one is a usage error, not the
    current directory: a run that failed removed the folder it took for its own, with all
    that was there."""
    if not text.strip():
        raise argparse.ArgumentTypeError(f"expected a path, got {text!r}")
    return text


class Switch(argparse.BooleanOptionalAction):
    """A setting the command line turns on (``--key``) or off (``--no-key``); absent, it is
    ``None``: the config's (or checkpoint's) own value stands. Both in one command line are a
    usage error naming them, not the last one winning silently (``--key`` twice is the
    same as once).

    Example: ``p.add_argument("--within-alphabet", action=Switch, help=...)``.
    """

    def __init__(self, option_strings, dest, default=None, **kwargs):
        if default is not None:
            raise ValueError(f"{'/'.join(option_strings)}: a Switch's default is None (the "
                             f"config's value), got {default!r}")
        super().__init__(option_strings, dest, default=None, **kwargs)

    def __call__(self, parser, namespace, values, option_string=None):
        value = not option_string.startswith("--no-")
        before = getattr(namespace, self.dest, None)
        if before is not None and before != value:
            on = next(o for o in self.option_strings
                      if o.startswith("--") and not o.startswith("--no-"))
            off = f"--no-{on[2:]}"
            raise argparse.ArgumentError(self, f"{on} and {off} both given: they contradict "
                                               f"each other; give one")
        setattr(namespace, self.dest, value)

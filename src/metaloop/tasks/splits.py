"""Deterministic class splits (meta-train / validation / test classes) and split files.

Class names are compared in Unicode NFC: ``"caf\\xe9"`` typed in a split file and
``"cafe\\u0301"`` (the same letters decomposed, as macOS writes folder names) are one class.
"""

from __future__ import annotations

import math
import numbers
import os
import unicodedata
from collections.abc import Mapping, Sequence
from pathlib import Path

import torch


def check_name_list(what: str, names: object) -> None:
    """Refuse one string (or bytes) where a list of class names is expected: iterating it
    would make each character a class name (``"10"`` -> ``["1", "0"]``).

    Raises:
        ValueError: naming ``what`` and the string, and how to pass it as one name.
    """
    if isinstance(names, (str, bytes)):
        raise ValueError(f"{what} must be a list of class names, not one string: got "
                         f"{names!r}, whose characters would each be a class; for a single "
                         f"name pass [{names!r}]")


def nfc(name: str) -> str:
    """A class name in Unicode NFC, the form class names are compared in (macOS writes file
    names decomposed, NFD: ``"cafe\u0301"`` is ``"caf\xe9"``)."""
    return unicodedata.normalize("NFC", name)


def same_in_nfc(names: Sequence[str]) -> list[tuple[str, str]]:
    """Pairs of different ``names`` that are equal in NFC (each pair once, in order)."""
    seen: dict[str, str] = {}
    pairs = []
    for n in names:
        first = seen.setdefault(nfc(n), n)
        if first != n:
            pairs.append((first, n))
    return pairs


def check_one_spelling(what: str, names: Sequence[str]) -> None:
    """A ValueError, led by ``what``, where two ``names`` differ only in their Unicode form
    (``same_in_nfc``): two classes that look the same. Names the first pair, each also in
    ``ascii`` so that the difference shows."""
    forms = same_in_nfc(names)
    if forms:
        a, b = forms[0]
        raise ValueError(f"{what} {a!r} and {b!r} differ only in their Unicode form "
                         f"({ascii(a)} and {ascii(b)}), so they would be two classes that "
                         f"look the same; give each class one spelling")


def _whole(x: float) -> int:
    """``floor(x)``, but a product that float arithmetic left within 1e-6 of a whole number
    is that number: 0.29 * 100 = 28.999999999999996 counts 29 classes."""
    n = round(x)
    return n if abs(x - n) < 1e-6 else math.floor(x)


def split_classes(class_names: Sequence[str], fractions: Sequence[float] = (0.7, 0.1, 0.2),
                  seed: int = 0) -> tuple[list[str], list[str], list[str]]:
    """Split class names into disjoint train / validation / test lists.

    The names are sorted first, so the result depends on the set of names, the fractions and
    the seed only (not on the order they were listed in), and is the same on every machine.
    Counts are ``floor(f * C)`` for validation and test, a product within 1e-6 of a whole
    number taken as that number (0.29 of 100 classes is 29, where float arithmetic gives
    28.999...; numpy float32 fractions too), at least
    1 where ``f > 0``, and capped so that every split with ``f > 0`` keeps at least one
    class; train gets the rest. Each list keeps sorted order.

    Args:
        class_names: C distinct non-empty strings (distinct in Unicode NFC too).
        fractions: (train, val, test), each >= 0, summing to 1.
        seed: permutation seed.

    Returns:
        (train names, val names, test names).

    Raises:
        ValueError: one string instead of a list of names, a name that is empty or not a
            string (``None``, ``3``; named with its index), duplicated names (two names
            that differ only in their Unicode form included, naming both),
            fractions that are not three non-negative numbers summing to 1, too few
            classes for every non-zero fraction, or a seed that is not an int a
            ``torch.Generator`` takes.
    """
    check_name_list("split_classes class_names", class_names)
    names = list(class_names)
    if not names:
        raise ValueError("split_classes needs at least one class name")
    odd = next((i for i, n in enumerate(names) if not isinstance(n, str) or not n), None)
    if odd is not None:
        raise ValueError(f"split_classes: class names must be non-empty strings, got "
                         f"{names[odd]!r} at index {odd}")
    names = [str(n) for n in names]            # numpy's str_ (an array of names): plain str
    dup = sorted({n for n in names if names.count(n) > 1}) if len(set(names)) != len(names) \
        else []
    if dup:
        raise ValueError(f"split_classes: duplicated class names {dup[:5]}")
    check_one_spelling("split_classes: class names", names)
    fr = tuple(fractions)
    if len(fr) != 3 or any(not isinstance(f, numbers.Real) or isinstance(f, bool) or f < 0
                           or not math.isfinite(f) for f in fr):
        raise ValueError(f"split_classes fractions must be three numbers >= 0 "
                         f"(train, val, test), got {fractions!r}")
    fr = tuple(float(f) for f in fr)                # numpy scalars included
    if abs(sum(fr) - 1.0) > 1e-6:
        raise ValueError(f"split_classes fractions must sum to 1, got {fractions!r} "
                         f"(sum {sum(fr):g})")
    if not isinstance(seed, numbers.Integral) or isinstance(seed, bool):
        raise ValueError(f"split_classes seed must be an int, got {seed!r}")
    c = len(names)
    need = sum(1 for f in fr if f > 0)
    if c < need:
        raise ValueError(f"split_classes: {c} class(es) cannot fill {need} non-empty splits "
                         f"with fractions {fractions!r}")
    n_val, n_test = (max(1, _whole(f * c)) if f > 0 else 0 for f in fr[1:])
    if fr[0] > 0:   # leave train one class, and test one where it asks for any
        n_val = min(n_val, c - 1 - (n_test > 0))
        n_test = min(n_test, c - 1 - n_val)
    n_train = c - n_val - n_test
    order = sorted(names)
    try:
        g = torch.Generator().manual_seed(int(seed))
    except (RuntimeError, ValueError) as e:        # torch: "Overflow when unpacking long long"
        raise ValueError(f"split_classes seed {seed} is outside what a torch.Generator takes "
                         f"({e})") from e
    perm = torch.randperm(c, generator=g).tolist()
    picked = [order[i] for i in perm]
    test, val, train = picked[:n_test], picked[n_test:n_test + n_val], picked[n_test + n_val:]
    assert len(train) == n_train
    return sorted(train), sorted(val), sorted(test)


def read_split_file(path: str | os.PathLike, known: Sequence[str] | None = None) -> list[str]:
    """Class names from a split file: one per line (blank lines and ``#`` comments skipped),
    like Vinyals et al.'s Omniglot lists. UTF-8, with or without a byte-order mark.

    Names are compared in Unicode NFC, so a name typed composed (``"caf\\xe9"``) matches a
    class folder macOS wrote decomposed (``"cafe\\u0301"``) and the other way round.

    Args:
        path: the text file.
        known: the classes that exist; every listed name must be one of them.

    Returns:
        The names in file order, spelled as ``known`` spells them (in NFC without
        ``known``).

    Raises:
        ValueError: a missing or empty file, one that is not UTF-8 text (naming the byte
            offset), duplicated names (equal in NFC), names not in ``known`` (the first few
            are listed), or a name that matches two classes of ``known`` (equal in NFC).
    """
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"split file {path} does not exist")
    try:
        text = path.read_bytes().decode("utf-8").removeprefix("\ufeff")  # BOM: not a name
    except UnicodeDecodeError as e:
        line = e.object[:e.start].count(b"\n") + 1
        raise ValueError(f"split file {path} is not UTF-8 text: byte 0x{e.object[e.start]:02x} "
                         f"at offset {e.start} (line {line})") from e
    names = [nfc(ln.strip()) for ln in text.splitlines()
             if ln.strip() and not ln.lstrip().startswith("#")]
    if not names:
        raise ValueError(f"split file {path} lists no classes")
    if len(set(names)) != len(names):
        dup = sorted({n for n in names if names.count(n) > 1})
        raise ValueError(f"split file {path} lists classes twice: {dup[:5]}")
    if known is None:
        return names
    have = {nfc(k): k for k in known}                     # NFC -> the data's spelling
    unknown = [n for n in names if n not in have]
    if unknown:
        raise ValueError(f"split file {path} names {len(unknown)} unknown class(es): "
                         f"{unknown[:5]}; the data has {len(set(known))} classes, e.g. "
                         f"{sorted(set(known))[:3]}")
    for a, b in same_in_nfc(list(known)):
        if nfc(a) in names:
            raise ValueError(f"split file {path} names {nfc(a)!r}, which matches two classes "
                             f"of the data that differ only in their Unicode form "
                             f"({ascii(a)} and {ascii(b)}); give each class one spelling")
    return [have[n] for n in names]


def read_split_files(split_files: Mapping[str, str | os.PathLike],
                     known: Sequence[str] | None = None) -> dict[str, list[str]]:
    """Class names of several split files (``{"train": path, ...}``), which must not share
    classes.

    Args:
        split_files: split name -> file, each read as ``read_split_file``.
        known: the classes that exist.

    Returns:
        split name -> the names in file order.

    Raises:
        ValueError: as ``read_split_file``, or two files that list the same class (naming
            both files and the first few shared classes).
    """
    lists = {s: read_split_file(p, known) for s, p in split_files.items()}
    splits = list(lists)
    for i, a in enumerate(splits):
        for b in splits[i + 1:]:
            shared = sorted(set(lists[a]) & set(lists[b]))
            if shared:
                raise ValueError(f"split files {split_files[a]} ({a}) and {split_files[b]} ({b}) "
                                 f"share {len(shared)} class(es): {shared[:5]}")
    return lists

"""The adaptation experiment on the user's own text table (``metaloop adapt --family table``):
which classes are held out, which ones meta-training may see, and the task families over them.

Approaches 0-3 adapt on each task's support set alone and never see another class, so without
meta-training every class of the table is held out. Meta-learned LoRA trains on other
classes: then the classes are split by ``split_classes(labels, fractions, split_seed)``, the
meta-learners train on the train classes, and every approach is scored on the test classes,
so that no row of the table has seen a held-out class.
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable, Sequence

from metaloop.tasks.text_table import TextTable


def table_families(path: str | os.PathLike, *, ways: int, shots: int, queries: int,
                   meta_shots: Sequence[int] = (), tokenizer: Callable | None = None,
                   text_column: str = "text", label_column: str = "label",
                   delimiter: str | None = None, fractions: Sequence[float] = (0.7, 0.1, 0.2),
                   split_seed: int = 0, drop_small: bool = False
                   ) -> tuple[TextTable, dict[int, TextTable]]:
    """The held-out family and the meta-training families of a text table.

    Args:
        path: a CSV, TSV or JSONL table (see ``metaloop.tasks.text_table``).
        ways, shots, queries: the held-out tasks.
        meta_shots: the support sizes the meta-learners train with (one family each, on the
            train classes, with ``queries`` queries); empty: no meta-training, and every
            class is held out.
        tokenizer: ``texts -> [N, L]`` token ids (``TextEncoder.tokenize``), or None.
        text_column, label_column, delimiter: how to read the table.
        fractions, split_seed: the class split ``(train, val, test)`` used with meta-training.
        drop_small: drop classes with fewer texts than a family's ``shots + queries``
            (``family.dropped`` names them) instead of raising.

    Returns:
        ``(heldout, {shots: train family})``.

    Raises:
        ValueError: naming the file: any error of ``TextTable`` (an unreadable table, missing
            columns, empty labels or texts, too few classes in a split, small classes).
    """
    kw = dict(text_column=text_column, label_column=label_column, delimiter=delimiter,
              fractions=fractions, split_seed=split_seed, drop_small=drop_small,
              tokenizer=tokenizer)
    meta = sorted(set(meta_shots))
    heldout = TextTable(path, ways=ways, shots=shots, queries=queries,
                        split="test" if meta else "all", **kw)
    train = {}
    for s in meta:
        if not train:
            train[s] = TextTable(path, ways=ways, shots=s, queries=queries, split="train", **kw)
        else:
            train[s] = next(iter(train.values())).with_shots(s, queries)
    return heldout, train


def table_summary(heldout: TextTable, train: dict[int, TextTable]) -> dict:
    """What ``results.json`` records about the table: the file, its columns, the held-out and
    meta-training classes, the classes dropped as too small, and the split."""
    first = next(iter(train.values()), None)
    dropped = sorted(set(heldout.dropped).union(*(f.dropped for f in train.values())))
    return {"data": str(heldout.path), "text_column": heldout.text_column,
            "label_column": heldout.label_column, "heldout_split": heldout.split,
            "heldout_classes": heldout.class_names,
            "train_classes": first.class_names if first is not None else [],
            "dropped_classes": dropped, "fractions": list(heldout.fractions),
            "split_seed": heldout.split_seed, "texts": len(heldout.texts)}


def describe(heldout: TextTable, train: dict[int, TextTable]) -> str:
    """Lines for the user: which classes are held out and which meta-train, and what was
    dropped."""
    def names(fam):
        return ", ".join(fam.class_names[:12]) + (" ..." if fam.num_classes > 12 else "")
    where = ("every class (no meta-training)" if heldout.split == "all"
             else f"split {heldout.split!r}")
    lines = [f"{heldout.path}: held-out classes, {where}: {heldout.num_classes} "
             f"({names(heldout)}), {len(heldout.texts)} texts"]
    first = next(iter(train.values()), None)
    if first is not None:
        lines.append(f"meta-training classes: {first.num_classes} ({names(first)})")
    summary = table_summary(heldout, train)
    if summary["dropped_classes"]:
        d = summary["dropped_classes"]
        lines.append(f"dropped {len(d)} class(es) with too few texts: {', '.join(d[:12])}"
                     f"{' ...' if len(d) > 12 else ''}")
    return "\n".join(lines)


def parse_fractions(text: str) -> tuple[float, float, float]:
    """``"0.7,0.1,0.2"`` -> ``(0.7, 0.1, 0.2)``; ValueError naming the text otherwise."""
    try:
        parts = tuple(float(p) for p in text.split(","))
    except ValueError:
        parts = ()
    if (len(parts) != 3 or not all(math.isfinite(p) and p >= 0 for p in parts)
            or abs(sum(parts) - 1.0) > 1e-6):
        raise ValueError(f"--split-fractions must be three numbers >= 0 (train,val,test) "
                         f"summing to 1, got {text!r}")
    return parts

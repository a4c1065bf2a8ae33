"""``metaloop predict``: classify your own images or texts with a saved run."""

from __future__ import annotations

import argparse
import json
import math
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from tqdm.auto import tqdm

from metaloop import runlock
from metaloop._progress import tqdm_defaults
from metaloop.adapt.proto_head import REFINE_TEMPERATURE, REFINE_WEIGHT
from metaloop.cli import _checks
from metaloop.cli._args import path
from metaloop.data.images import INVERT_MODES
from metaloop.recipes import report
from metaloop.recipes.evaluation import (
    in_progress,
    in_progress_note,
    load_ensemble,
    loaded_checkpoint,
    refining,
    scoring,
)
from metaloop.recipes.predict import (
    TENSOR_SUFFIXES,
    check_image_run,
    classify_folders,
    classify_tensors,
    classify_texts,
    takes_steps,
    tsv_line,
)

DESCRIPTION = """\
Classify your own images (or texts, with a text run: see the end) after few-shot adaptation.
SUPPORT holds one sub-folder of images per class (the folder name is the class; 2 or more
classes, any number of images, any size, PNG, JPEG, BMP, GIF, WebP, TIFF or PNM by their
suffix; other files such as README.txt are left out, and counted on stderr); QUERY holds the
images to classify. The run's model adapts to the support images with its own rule (inner
learning rate and steps) and each query file is printed as FILE<TAB>CLASS, or with --json as
{"file", "class", "scores"} with the probability of every class. A file or class name holding a
tab, a line break or a double quote is printed in double quotes, a quote inside doubled (the
tab dialect of Python's csv module, read back by csv.reader(f, dialect="excel-tab")); other
names are printed as they are. --out DIR also writes them, with the classes and settings, to
DIR/results.json (atomically; nothing is written on an error), and which checkpoint of each
run answered ("loaded": its folder name, iteration and identity). A run still training
answers with its newest complete checkpoint, noted on stderr with its iteration. A flag
that would change nothing for the run's learner (--steps for a solved head, --head-init for
one, --scoring for a learner that scores one way only, --refine for a learner without
prototypes, a refine setting without --refine) is refused by name.

Images are read as in training: a run on your own folder uses that folder's channels,
polarity, padding and size; other runs read greyscale with light ink on a dark background
(dark-on-light images are inverted). Queries are classified together, as in training
(BatchNorm uses the batch's statistics): up to 1024 in one batch, more in equal batches
(within one) of at most 1024 (1500 queries: two of 750), each normalised by its own
statistics. So give a few at once, or score each on its own with --scoring non-transductive
(BatchNorm with the support images' statistics, as Lake's protocol scores one drawing at a
time): then a query's class does not depend on the other query images (reptile, r2d2,
metaoptnet and protonet runs). A learned head (MAML, ANIL, Reptile, scratch) has one output
per training way: another number of support classes needs --head-init zero. A ProtoNet run
can also refine its prototypes with the query images (--refine K, as metaloop eval
--refine): transductive, like the batch statistics.

The test-time settings of metaloop eval apply here too: several checkpoints are an ensemble
(their class probabilities averaged; --refine-jointly shares the refinement's assignment
between them), --support-shift S adapts to every shift of the support images up to S pixels
as well, and --query-shift S scores each query over its shifts up to S pixels.

For one-shot tasks SUPPORT may instead hold only images, each its own class named by its file
name: the training folder of one of Lake's Omniglot one-shot runs, classified with the
challenge record's settings by
  metaloop predict --checkpoint RUN0 RUN1 --support run01/training --query run01/test
  --support-shift 2 --query-shift 1 --refine 10

A text run (model "text", trained on a table family) classifies texts instead: SUPPORT is a
CSV, TSV or JSONL table of labelled texts (its distinct labels are the classes) and QUERY a
table with a text column or a .txt file with one text per line (the i-th query is line i;
a blank line between two texts, or a line with no visible character, is refused by its
number; blank lines after the last text are ignored); each query is printed as
TEXT<TAB>CLASS, in the file's order, or with --json as {"text", "class", "scores"}. The
columns are the run's (family.text_column, family.label_column) unless --text-column and
--label-column name others, and CSV and TSV tables are read with the run's family.quoting
unless --quoting says otherwise (none: every character as written, one row per line, as in
a GLUE-style TSV). Only the checkpoint and its encoder are read, not the training
table. The image flags (--invert, the shifts, --scoring) are refused for a text run, and the
table flags for an image run.

A SUPPORT file ending in .npz or .pt holds labelled examples as arrays (x and y, and
optionally class_names), and QUERY then is such a file of examples to classify (x): feature
vectors for a run of them (model "mlp", family "tensors"), or images for an image run. Each
row of the query file is printed as ROW<TAB>CLASS, or with --json as {"index", "class",
"scores"}."""


def register(sub) -> None:
    p = sub.add_parser("predict", help="classify your own images or texts after few-shot "
                                          "adaptation",
                       description=DESCRIPTION,
                       formatter_class=argparse.RawDescriptionHelpFormatter,
                       epilog="example:\n  metaloop predict --checkpoint runs/mine --support "
                              "support/ --query query/ --json\n\n"
                              "machine-readable output: --json (a JSON list on stdout), and "
                              "OUT/results.json (--out)")
    p.add_argument("--checkpoint", type=path, required=True, nargs="+", metavar="RUN",
                   help="run directory or ckpt-* directory; several: their ensemble "
                        "(averaged probabilities)")
    p.add_argument("--support", type=path, required=True,
                   help="folder with one sub-folder per class, or only images, one per class; "
                        "a .npz or .pt file of labelled examples (x, y); for a text run, a "
                        "CSV, TSV or JSONL table of labelled texts")
    p.add_argument("--query", type=path, required=True,
                   help="folder of images to classify; with a .npz / .pt support, such a "
                        "file of examples (x); for a text run, a table with a text column or "
                        "a .txt file, one text per line (a blank line between texts is "
                        "refused by its number)")
    p.add_argument("--json", action="store_true",
                   help="print JSON instead of file<TAB>class lines (in which a name "
                        "holding a tab, line break or double quote is double-quoted, as the "
                        "csv module's excel-tab dialect writes it)")
    p.add_argument("--out", type=path, metavar="DIR",
                   help="also write results.json here: the checkpoints, folders, classes, "
                        "settings and the --json predictions (an earlier predict's are "
                        "replaced; a folder holding another command's run is refused)")
    p.add_argument("--no-progress", action="store_true",
                   help="no progress bar while the images are read")
    p.add_argument("--steps", type=int,
                   help="adaptation steps (default: the checkpoint's inner steps); refused for "
                        "a run whose head is solved, not stepped (protonet, r2d2, metaoptnet)")
    p.add_argument("--head-init", choices=("checkpoint", "zero"), default="checkpoint",
                   help="'zero' adapts from a zero head sized to the support classes, needed "
                        "when their number differs from the checkpoint's ways (a learned "
                        "head); refused for a solved head (protonet, r2d2, metaoptnet)")
    p.add_argument("--invert", choices=INVERT_MODES, default=None,
                   help="polarity: auto (invert images whose mean is above 0.5, i.e. dark "
                        "ink on light), always, never (default: the training folder's "
                        "family.invert, else auto)")
    p.add_argument("--scoring", choices=("as-trained", "transductive", "non-transductive"),
                   help="how the queries are scored: as the run was trained (the default; "
                        "method.transductive), transductive (the query images normalised "
                        "together by BatchNorm) or non-transductive (each with the support "
                        "images' BatchNorm statistics, so its class does not depend on the "
                        "other queries); reptile, r2d2, metaoptnet and protonet")
    p.add_argument("--refine", type=int, metavar="K",
                   help="protonet: refine the prototypes with the query images by K soft "
                        "k-means steps before scoring them (transductive; 0 = off, the "
                        "default; the two settings below without --refine are refused)")
    p.add_argument("--refine-temperature", type=float, metavar="T",
                   help=f"with --refine: multiply the logits that assign queries to classes "
                        f"by T (default {REFINE_TEMPERATURE:g})")
    p.add_argument("--refine-weight", type=float, metavar="W",
                   help=f"with --refine: the query images weigh W times the support images "
                        f"(default {REFINE_WEIGHT:g})")
    p.add_argument("--refine-jointly", action="store_true",
                   help="with --refine and several checkpoints: the members share one "
                        "assignment of the queries (their averaged class probabilities)")
    p.add_argument("--text-column", metavar="NAME",
                   help="text run: the tables' text column (default: the run's "
                        "family.text_column)")
    p.add_argument("--label-column", metavar="NAME",
                   help="text run: the support table's label column (default: the run's "
                        "family.label_column)")
    p.add_argument("--delimiter", metavar="CHAR",
                   help="text run: the field separator of CSV and TSV tables (default: ',' "
                        "for .csv, tab for .tsv)")
    p.add_argument("--quoting", choices=("csv", "none"),
                   help="text run: how the quotes of CSV and TSV tables are read: csv (as CSV "
                        "does) or none (every character as written, one row per line: a "
                        "GLUE-style TSV); default: the run's family.quoting")
    p.add_argument("--support-shift", type=int, default=0, metavar="S",
                   help="adapt to every shift of the support images up to S pixels as well "
                        "((2S+1)^2 copies, as metaloop eval --support-shift; 0 = off)")
    p.add_argument("--query-shift", type=int, default=0, metavar="S",
                   help="score each query by its class probabilities averaged over its shifts "
                        "up to S pixels ((2S+1)^2 copies, as metaloop eval --query-shift; "
                        "0 = off)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    # a process still writing --out is named before anything is read
    with runlock.hold(args.out or None, create=False):
        return _run(args)


def _run(args: argparse.Namespace) -> int:
    _check_flags(args)
    loaded = load_ensemble(args.checkpoint, head_init=args.head_init, same=READ_ALIKE)
    _check_read_alike(loaded)
    kind = _check_flags_apply(args, loaded)             # "texts", "tensors" or "images"
    loaded_ckpts = _note_in_progress(loaded)      # (stderr: --json's stdout stays JSON)
    pred: Any                       # TextPredictions, TensorPredictions or Predictions
    items: Sequence[object]
    with report.output_dir(args.out or None, command="predict") as out:
        with scoring(loaded.learner, args.scoring or "as-trained"), \
                refining(loaded.learner, args.refine, args.refine_temperature,
                         args.refine_weight, args.refine_jointly), \
                tqdm(desc="scoring texts" if kind == "texts" else "reading images",
                     unit="text" if kind == "texts" else "image",
                     disable=args.no_progress or kind == "tensors", leave=False,
                     **tqdm_defaults()) as bar:
            if kind == "texts":
                pred = classify_texts(loaded, args.support, args.query, steps=args.steps,
                                      text_column=args.text_column,
                                      label_column=args.label_column,
                                      delimiter=args.delimiter, quoting=args.quoting,
                                      progress=bar.update)
                key, items = "text", pred.texts
            elif kind == "tensors":
                pred = classify_tensors(loaded, args.support, args.query, steps=args.steps,
                                        support_shift=args.support_shift,
                                        query_shift=args.query_shift)
                key, items = "index", list(range(len(pred.probs)))
            else:
                pred = classify_folders(loaded, args.support, args.query, steps=args.steps,
                                        invert=args.invert, support_shift=args.support_shift,
                                        query_shift=args.query_shift, progress=bar.update)
                key, items = "file", pred.files
            bar.refresh()              # the count reached: tqdm redraws at most every 0.1 s
            evaluation = getattr(loaded.learner, "evaluation", "transductive")
        rows: list[dict[str, Any]] = [
            {key: f, "class": label,
             "scores": {c: round(float(p), 6) for c, p in zip(pred.classes, row)}}
            for f, label, row in zip(items, pred.labels, pred.probs)]
        printed = (json.dumps(rows, indent=1) + "\n" if args.json else
                   _encoded("".join(tsv_line([str(r[key]), r["class"]]) for r in rows)))
        if out is not None:
            settings = {k: getattr(args, k) for k in (
                "steps", "head_init", "refine", "refine_temperature", "refine_weight",
                "refine_jointly")}
            if kind == "texts":
                fam = loaded.config["family"]
                settings.update(text_column=args.text_column or fam["text_column"],
                                label_column=args.label_column or fam["label_column"],
                                delimiter=args.delimiter,
                                quoting=args.quoting or fam["quoting"])
            else:
                settings.update(support_shift=args.support_shift, query_shift=args.query_shift,
                                scoring=args.scoring or "as-trained")
            if kind == "images":
                settings["invert"] = args.invert or loaded.transform["invert"]  # type: ignore[index]  # an image run's
            if kind != "texts" or args.refine:  # a text encoder has no BatchNorm: one way
                settings["evaluation"] = evaluation     # how the queries were scored
            report.write_json(out / "results.json", {
                "checkpoints": [str(c) for c in args.checkpoint], "loaded": loaded_ckpts,
                "support": str(args.support),
                "query": str(args.query), "classes": pred.classes, "settings": settings,
                **({"ignored": pred.ignored, "hidden": pred.hidden} if kind == "images"
                   else {}),
                "predictions": rows})
    if kind == "images" and (pred.ignored or pred.hidden):   # as train's folder summary
        eg = f" (by suffix, e.g. {pred.ignored[0]})" if pred.ignored else ""
        print(f"metaloop predict: ignored {len(pred.ignored)} non-image{eg} and "
              f"{pred.hidden} hidden entries", file=sys.stderr)
    if isinstance(printed, bytes):
        sys.stdout.flush()
        sys.stdout.buffer.write(printed)
    else:
        sys.stdout.write(printed)
    return 0


def _note_in_progress(loaded) -> list[dict]:
    """A note on stderr for each run a process is still training (``metaloop eval``'s): the
    answers are its newest complete checkpoint's, which the note names (iteration and
    identity), and another call may answer with a newer one. Returns which checkpoint of
    each run was loaded (``loaded_checkpoint``, as results.json records it)."""
    loaded_ckpts = []
    for m in getattr(loaded, "members", None) or [loaded]:
        writer = in_progress(m)
        loaded_ckpts.append(loaded_checkpoint(m, writer))
        if writer is not None:
            print(in_progress_note(m, writer, "its answers are that checkpoint's (a later "
                                              "call may load a newer one)"), file=sys.stderr)
    return loaded_ckpts


# what the members of an ensemble must share to read the same inputs: predict draws no tasks,
# so the data they were trained on and the classes they held out may differ
READ_ALIKE = ("encoder", "max_length")


def _check_read_alike(loaded) -> None:
    """ValueError unless every member reads images as the first does (``Run.transform``);
    text members share the encoder by ``READ_ALIKE``."""
    runs = getattr(loaded, "members", [loaded])
    first = runs[0].transform
    for r in runs[1:]:
        if r.transform != first:
            raise ValueError(f"ensemble: {r.path} reads images as {r.transform}, the first run "
                             f"({runs[0].path}) as {first}; every member must read the "
                             f"images alike (size, channels, polarity)")


def _encoded(text: str) -> str | bytes:
    """The lines as stdout's bytes where it has a byte buffer: a file name that is not
    valid UTF-8 (decoded by Python with surrogate escapes) is written back as its own bytes,
    as ls and find do, where a strict stdout would fail after part of the output.

    Raises:
        ValueError: a name stdout's encoding cannot write (naming it), before anything is
            written.
    """
    buffer, encoding = getattr(sys.stdout, "buffer", None), getattr(sys.stdout, "encoding", None)
    if buffer is None or not encoding:
        return text
    try:
        return text.encode(encoding, "surrogateescape")
    except UnicodeEncodeError as e:
        raise ValueError(f"stdout's encoding {encoding} cannot write the name "
                         f"{e.object[max(0, e.start - 20):e.end + 20]!r}; use --json (ASCII) "
                         f"or a UTF-8 stdout (PYTHONIOENCODING=utf-8)") from None


def _check_flags(args: argparse.Namespace) -> None:
    """ValueError naming the flag unless the settings are possible; fills in the refine
    defaults (a refine setting given without ``--refine`` would change nothing)."""
    if args.steps is not None and args.steps < 0:
        raise ValueError(f"--steps must be >= 0, got {args.steps}")
    _checks.check_shifts(args.support_shift, args.query_shift)
    if args.refine is not None and args.refine < 0:
        raise ValueError(f"--refine must be an int >= 0 (soft k-means rounds, 0 = off), got "
                         f"{args.refine}")
    for flag, key, default in (("--refine-temperature", "refine_temperature", REFINE_TEMPERATURE),
                               ("--refine-weight", "refine_weight", REFINE_WEIGHT)):
        value = getattr(args, key)
        if value is None:
            setattr(args, key, default)
        elif args.refine is None:     # an explicit --refine 0 (a sweep's baseline) may keep it
            raise ValueError(f"{flag} {value:g} sets how --refine refines the prototypes, but "
                             f"no --refine K is given (off), so it would change nothing: give "
                             f"--refine K or drop {flag}")
        elif not (math.isfinite(value) and value > 0):
            raise ValueError(f"{flag} must be a finite number > 0, got {value!r}")
    args.refine_given = args.refine is not None      # (an explicit --refine 0 is checked too)
    args.refine = args.refine or 0
    if args.refine_jointly and not args.refine:
        raise ValueError("--refine-jointly shares the refinement's assignment between the "
                         "members, but --refine is 0: give --refine K")
    _checks.refuse_joint_with_one(args.refine_jointly, args.checkpoint)


def _check_flags_apply(args: argparse.Namespace, loaded) -> str:
    """What the run classifies here: ``"texts"`` (a text run), ``"tensors"`` (a ``.npz`` /
    ``.pt`` support file) or ``"images"`` (folders); ValueError naming the flag and the
    learner where a flag would change nothing for the loaded run or ensemble (the solved
    heads: every member), or cannot apply to it."""
    if loaded.config["model"]["name"] == "text":
        kind, what = "texts", f"{loaded.path} classifies texts (model 'text')"
        others: tuple[tuple[str, object], ...] = (
            ("--invert", args.invert is not None), ("--support-shift", args.support_shift),
            ("--query-shift", args.query_shift), ("--scoring", args.scoring is not None))
        reads = "a run that classifies images (it shifts, inverts or normalises them with " \
                "BatchNorm)"
    elif Path(args.support).suffix.lower() in TENSOR_SUFFIXES:
        kind, what = "tensors", f"--support {args.support} is a tensor file of examples"
        others = (("--invert", args.invert is not None),)
        reads = "image files (it sets their polarity as they are decoded)"
    else:
        kind = "images"
        check_image_run(loaded)       # before the progress bar: a run of vectors reads none
        others, what, reads = (), "", ""
    if kind != "texts":
        others += tuple((flag, value is not None) for flag, value in (
            ("--text-column", args.text_column), ("--label-column", args.label_column),
            ("--delimiter", args.delimiter), ("--quoting", args.quoting)))
        reads = reads or "a table of texts"
        what = what or (f"{loaded.path} classifies images (model "
                        f"{loaded.config['model']['name']!r}) from folders")
    given = [flag for flag, on in others if on]
    if given:
        text_flag = given[0] in ("--text-column", "--label-column", "--delimiter", "--quoting")
        raise ValueError(f"{given[0]} applies to "
                         f"{'a table of texts' if text_flag else reads}, but {what}, so it "
                         f"would change nothing: drop {given[0]}")
    if args.steps is not None:
        _checks.refuse_steps(str(args.steps), loaded)
    if args.head_init == "zero" and not takes_steps(loaded):
        raise ValueError(f"--head-init zero: {_checks.members(loaded)[2]} solves a fresh head "
                         f"for the support classes (any number of them), so there is no "
                         f"learned head to replace; drop --head-init")
    _checks.check_scoring(args.scoring, loaded)
    if args.refine and args.scoring == "non-transductive":
        raise ValueError(f"--refine {args.refine} refines the prototypes with all the query "
                         f"images together, but --scoring non-transductive scores each on its "
                         f"own: drop one of them")
    if args.refine == 0 and getattr(args, "refine_given", False) \
            and "protonet" not in _checks.members(loaded)[1]:
        raise ValueError(f"--refine 0: {_checks.members(loaded)[2]} has no prototypes to "
                         f"refine (only protonet has), so --refine would change nothing; drop "
                         f"--refine")
    if args.refine:
        _checks.check_refinable(f"--refine {args.refine}", loaded,
                                scored_as_trained=args.scoring in (None, "as-trained"),
                                each_on_its_own_fix="give --scoring transductive or drop "
                                                    "--refine")
    return kind

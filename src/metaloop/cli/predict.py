"""``metaloop predict``: classify your own images with a saved run."""

from __future__ import annotations

import argparse
import json
import sys

from tqdm.auto import tqdm

from metaloop.adapt.proto_head import REFINE_TEMPERATURE, REFINE_WEIGHT
from metaloop.data.images import INVERT_MODES
from metaloop.recipes import report
from metaloop.recipes.evaluation import load_ensemble, refining
from metaloop.recipes.predict import classify_folders

DESCRIPTION = """\
Classify your own images after few-shot adaptation. SUPPORT holds one sub-folder of images
per class (the folder name is the class; 2 or more classes, any number of images, any size
or format Pillow reads); QUERY holds the images to classify. The run's model adapts to the
support images with its own rule (inner learning rate and steps) and each query file is
printed as FILE<TAB>CLASS, or with --json as {"file", "class", "scores"} with the probability
of every class. --out DIR also writes them, with the classes and settings, to
DIR/results.json (atomically; nothing is written on an error).

Images are read as in training: a run on your own folder uses that folder's channels,
polarity, padding and size; other runs read greyscale with light ink on a dark background
(dark-on-light images are inverted). Queries are classified together in one batch, as in
training (BatchNorm uses the batch's statistics), so give a few at once. A learned head
(MAML, ANIL, Reptile, scratch) has one output per training way: another number of support
classes needs --head-init zero. A ProtoNet run can also refine its prototypes with the query
images (--refine K, as metaloop eval --refine): transductive, like the batch statistics.

The test-time settings of metaloop eval apply here too: several checkpoints are an ensemble
(their class probabilities averaged; --refine-jointly shares the refinement's assignment
between them), --support-shift S adapts to every shift of the support images up to S pixels
as well, and --query-shift S scores each query over its shifts up to S pixels.

For one-shot tasks SUPPORT may instead hold only images, each its own class named by its file
name: the training folder of one of Lake's Omniglot one-shot runs, classified with the
challenge record's settings by
  metaloop predict --checkpoint RUN0 RUN1 --support run01/training --query run01/test
  --support-shift 2 --query-shift 1 --refine 10"""


def register(sub) -> None:
    p = sub.add_parser("predict", help="classify your own images after few-shot adaptation",
                       description=DESCRIPTION,
                       formatter_class=argparse.RawDescriptionHelpFormatter,
                       epilog="example:\n  metaloop predict --checkpoint runs/mine --support "
                              "support/ --query query/ --json")
    p.add_argument("--checkpoint", required=True, nargs="+", metavar="RUN",
                   help="run directory or ckpt-* directory; several: their ensemble "
                        "(averaged probabilities)")
    p.add_argument("--support", required=True,
                   help="folder with one sub-folder per class, or only images, one per class")
    p.add_argument("--query", required=True, help="folder of images to classify")
    p.add_argument("--json", action="store_true", help="print JSON instead of file<TAB>class")
    p.add_argument("--out", metavar="DIR",
                   help="also write results.json here: the checkpoints, folders, classes, "
                        "settings and the --json predictions")
    p.add_argument("--no-progress", action="store_true",
                   help="no progress bar while the images are read")
    p.add_argument("--steps", type=int,
                   help="adaptation steps (default: the checkpoint's inner steps)")
    p.add_argument("--head-init", choices=("checkpoint", "zero"), default="checkpoint",
                   help="'zero' adapts from a zero head sized to the support classes, needed "
                        "when their number differs from the checkpoint's ways")
    p.add_argument("--invert", choices=INVERT_MODES, default=None,
                   help="polarity: auto (invert images whose mean is above 0.5, i.e. dark "
                        "ink on light), always, never (default: the training folder's "
                        "family.invert, else auto)")
    p.add_argument("--refine", type=int, default=0, metavar="K",
                   help="protonet: refine the prototypes with the query images by K soft "
                        "k-means steps before scoring them (transductive; 0 = off, the "
                        "default)")
    p.add_argument("--refine-temperature", type=float, default=REFINE_TEMPERATURE, metavar="T",
                   help="with --refine: multiply the logits that assign queries to classes "
                        "by T (default %(default)g)")
    p.add_argument("--refine-weight", type=float, default=REFINE_WEIGHT, metavar="W",
                   help="with --refine: the query images weigh W times the support images "
                        "(default %(default)g)")
    p.add_argument("--refine-jointly", action="store_true",
                   help="with --refine and several checkpoints: the members share one "
                        "assignment of the queries (their averaged class probabilities)")
    p.add_argument("--support-shift", type=int, default=0, metavar="S",
                   help="adapt to every shift of the support images up to S pixels as well "
                        "((2S+1)^2 copies, as metaloop eval --support-shift; 0 = off)")
    p.add_argument("--query-shift", type=int, default=0, metavar="S",
                   help="score each query by its class probabilities averaged over its shifts "
                        "up to S pixels ((2S+1)^2 copies, as metaloop eval --query-shift; "
                        "0 = off)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    if args.refine_jointly and not args.refine:
        raise ValueError("--refine-jointly shares the refinement's assignment between the "
                         "members, but --refine is 0: give --refine K")
    loaded = load_ensemble(args.checkpoint, head_init=args.head_init)
    with report.output_dir(args.out or None) as out:
        with refining(loaded.learner, args.refine, args.refine_temperature,
                      args.refine_weight, args.refine_jointly), \
                tqdm(desc="reading images", unit="image", disable=args.no_progress,
                     leave=False) as bar:
            pred = classify_folders(loaded, args.support, args.query, steps=args.steps,
                                    invert=args.invert, support_shift=args.support_shift,
                                    query_shift=args.query_shift, progress=bar.update)
        rows = [{"file": f, "class": label,
                 "scores": {c: round(float(p), 6) for c, p in zip(pred.classes, row)}}
                for f, label, row in zip(pred.files, pred.labels, pred.probs)]
        if out is not None:
            settings = {k: getattr(args, k) for k in (
                "steps", "head_init", "refine", "refine_temperature", "refine_weight",
                "refine_jointly", "support_shift", "query_shift")}
            settings["invert"] = args.invert or loaded.transform["invert"]
            report.write_json(out / "results.json", {
                "checkpoints": [str(c) for c in args.checkpoint], "support": str(args.support),
                "query": str(args.query), "classes": pred.classes, "settings": settings,
                "predictions": rows})
    if args.json:
        json.dump(rows, sys.stdout, indent=1)
        sys.stdout.write("\n")
    else:
        for row in rows:
            print(f"{row['file']}\t{row['class']}")
    return 0

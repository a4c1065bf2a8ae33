"""``metaloop adapt``: adapt a pretrained model to few-shot tasks, every approach on the same
held-out tasks."""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
from pathlib import Path

from metaloop import runlock, runs_folder
from metaloop.cli._args import path
from metaloop.cli._records import parse_command, rerun_command, write_records
from metaloop.recipes import _partial, report
from metaloop.recipes import adapt as recipe
from metaloop.recipes.report import output_dir

DESCRIPTION = """\
Adapt a pretrained model to few-shot classification tasks in every way the library knows,
and score each way on the same held-out tasks: query accuracy (mean and 95% CI), the number
of adapted parameters, and the adaptation time per task.

  0  prompting: zero-shot label prompts, and a prompt optimised on the support set
  1  linear probe on frozen features: logistic (Newton; L-BFGS for many classes), ridge
     (closed form), SGD
  2  full fine-tuning: zero head, random head, LP-FT (head warm-up first)
  3  LoRA and soft prompts with a new head; with --meta, LoRA meta-learned by first-order
     MAML / MAML / Reptile on the meta-training classes, then fine-tuned like plain LoRA

Families: wordnet (WordNet noun categories), table (your own labelled texts: a CSV, TSV or
JSONL file given by --data, one text and label per row), omniglot and fashion_mnist (image
models), folder and tensors (your own images for an image model: an image folder with one
sub-folder per class, or an .npz / .pt file with x and y, given by --data and read as the
--model run reads images). On your own data every class is held out unless --meta trains on
some: then the classes are split by --split-fractions and every approach is scored on the
test classes. The data a --model run was trained on keeps that run's split: its test classes
are held out, and --meta trains on its train classes. That data is told by its images, not
its path: every class the run read, with the same images (a copy, or the run's relative
family.root seen from another folder, is the same data); it is read with the run's
family.skip_corrupt. Of other data, a class holding exactly the images of a class the run
meta-trained on (under any name) is left out and named, never held out. The first line
printed says what a folder held that was not read (hidden and non-image files, empty class
folders, loose and skipped images), as metaloop train says it; results.json keeps it as
data.left_out, and whether unreadable images were left out as data.skip_corrupt.

Models: minilm (all-MiniLM-L6-v2, offline), a Hugging Face model folder or cached name, or a
metaloop run folder (an image model, e.g. the Omniglot pretrain baseline). Writes
results.json and accuracy.png to --out; bad input writes nothing there. A flag that this
run would not read is refused by name: an approach's option without that approach
(--steps without approaches 2-3 or --meta, --lora-r and --lora-targets without lora or
--meta, --prompt-tokens without soft-prompt), --max-length with an image model, the --meta-*
options without --meta, the table's options without --family table (--split-fractions and
--split-seed also need --meta, and are refused for a run's own data; --drop-small also
applies to folder and tensors), --skip-corrupt and --class-depth without --family folder.
A folder's classes are its sub-folders (root/<class>/<image>), or with --class-depth 2 the
sub-folders of its group folders (root/<group>/<class>/<image>); left out, the --model
run's family.class_depth is used where --data has that layout, else 1.

The held-out tasks scored so far are kept in OUT/partial.json, rewritten atomically once
the time since its last write is 20 times that write's (at most a few percent of the run),
and at Ctrl-C or a termination signal with every finished task; stopped (Ctrl-C, a kill:
a kill -9 loses the tasks since the last write), the same command with --resume continues
from them, to the
results.json of a run never stopped (the same accuracies, CIs and per-task numbers; a kept
task keeps the seconds measured when it ran). A command that differs from the kept run's in
anything but --no-progress (--threads included; not the order of names in --approaches or
--lora-targets, nor a default given explicitly), or whose --model checkpoint or --data
contents changed, is refused by name, and so is a new run into a folder holding one.
results.json is written last, and partial.json removed after it; a run stopped in between
has finished: --resume removes its partial.json and exits 0. A new run (without --resume)
into an --out that holds a finished run (its results.json, also one stopped in between) is
refused (exit 2), naming the folder and the run's settings, before the model loads and
before anything is written or removed: give another --out, or remove the folder to run
again. --resume-if-any resumes where --out holds a partial.json and otherwise starts the
run (a finished run there is refused as without it): one command for a job scheduler to
rerun after a kill. --meta runs resume from --meta-dir either way.

A --model run folder that metaloop train is still writing is read at its newest complete
checkpoint, noted on stderr: a --resume needs that same checkpoint, which training prunes
once it has newer ones, so wait for the run to finish or copy the ckpt-* folder and give it
as --model. A resume refused because --model now loads another checkpoint says whether the
kept one still exists (then --model naming it, or a copy, resumes: the checkpoint is the
same by its name and the sha256 of its weights, whatever its path) or not (the kept tasks
cannot be resumed: start without --resume in a new --out).

--record DIR writes, after the run, one result record per approach for the docs' tables
(metaloop.evaluate.records): DIR/adaptation_<setting>_<approach>.json, table adaptation,
row "<setting>: <approach>". The setting is the family (your own data: the family and the
file or folder's name), the model unless it is WordNet's MiniLM, the ways and the shots:
adaptation_wordnet_5w1s_lora.json is "WordNet 5-way 1-shot, MiniLM: lora". Each record
holds the accuracy (%) of every held-out task (per_task, in task order), their mean and
Student-t 95% CI, the trainable parameters, the seconds per task, the CPU seconds of the
approach's adaptation (and its --steps where it trains) as its budget, and this command
(with every option a recorded row's setting reads written out, its default included, so
that it reruns the same setting whatever the defaults become; --out as runs/<its name>
where it lies outside the working folder: where the results go changes no number), and its
setting: the model, family, ways, shots, --queries, --tasks,
--seed (it picks the tasks) and the options the approach reads (--steps, --lora-r,
--lora-targets: the layers adapted, the model's default when it is left out, read from the
model's config or checkpoint header, so naming the default is no difference; --prompt-tokens,
--max-length, --data, --skip-corrupt, --class-depth and the table's options; not --root,
--threads, --out or --approaches). A record already there is replaced only by a run of the
same setting (an older record's setting is read from its command), and keeps its row, order
and published;
one of another setting is refused, naming each difference (its value first), and nothing
is written. DIR is checked before the model loads; a resumed run writes the records of a
run never stopped.
With --meta, every row of the run is recorded (table adaptation-meta-lora,
DIR/adaptation_meta_lora_<setting>_<row>.json: never the path of a run without --meta),
each row's setting adds --meta, --meta-iterations, --meta-batch and --meta-shots, and the
budget of meta-lora-M and meta-lora-M inner adds the meta-training's CPU seconds (its
outer steps as iterations); each paired difference of the run is a record too
("<setting>: meta-lora-M minus lora, paired": every task's difference in points, the
paired CI)."""


def register(sub) -> None:
    p = sub.add_parser("adapt", help="adapt a pretrained model to few-shot tasks: prompting, "
                       "linear probes, fine-tuning, LoRA / soft prompts, meta-learned LoRA",
                       description=DESCRIPTION,
                       formatter_class=argparse.RawDescriptionHelpFormatter,
                       epilog="examples:\n  metaloop adapt --family wordnet --shots 1\n"
                              "  metaloop adapt --family table --data sentences.csv --meta "
                              "fomaml\n  metaloop adapt --model runs/pretrain --family omniglot\n"
                              "  metaloop adapt --model runs/my_folder --family folder --data "
                              "photos/\n\n"
                              "machine-readable output: OUT/results.json (--out), and the "
                              "JSON records in --record DIR")
    p.add_argument("--model", type=path, default="minilm",
                   help="minilm, a Hugging Face model folder or cached name, or a metaloop "
                        "checkpoint folder (image models)")
    p.add_argument("--family", default="wordnet", help=f"one of {', '.join(recipe.FAMILIES)}")
    p.add_argument("--ways", type=int, default=5, help="classes per task")
    p.add_argument("--shots", type=int, default=1, help="support examples per class")
    p.add_argument("--queries", type=int, default=5, help="query examples per class")
    p.add_argument("--tasks", type=int, default=100, help="held-out tasks")
    p.add_argument("--approaches", help="comma list (default: all that apply); choose from "
                   + ", ".join(recipe.APPROACHES))
    p.add_argument("--steps", type=int,
                   help="optimiser steps of approaches 2-3 and of --meta's fine-tuned rows "
                        "(default 20)")
    p.add_argument("--lora-r", type=int, help="LoRA rank (lora and --meta; default 8)")
    p.add_argument("--lora-targets",
                   help="comma list of LoRA target modules (lora and --meta; default: "
                        "the attention's query and value layers for text (query,value for "
                        "BERT, q_lin,v_lin for DistilBERT, c_attn for GPT-2), the "
                        "convolutions for image models)")
    p.add_argument("--prompt-tokens", type=int, help="soft prompt length (soft-prompt; "
                   "default 8)")
    p.add_argument("--max-length", type=int,
                   help="text models: longest input in tokens (default 32); longer texts are "
                        "cut (93%% of WordNet glosses fit in 32; longer ones lose the end of "
                        "their usage examples; a table run says how many of its texts are "
                        "cut); with soft-prompt's --prompt-tokens it must fit the "
                        "model's token positions (512 for BERT, 512 of RoBERTa's 514)")
    p.add_argument("--meta", default="", help="comma list of meta-learners over LoRA + head "
                   f"to train and add ({', '.join(recipe.META)})")
    p.add_argument("--meta-iterations", type=int,
                   help="with --meta: outer steps per method (default 300)")
    p.add_argument("--meta-batch", type=int, help="with --meta: tasks per outer step "
                   "(default 4)")
    p.add_argument("--meta-shots", type=int, help="support examples per class when "
                   "meta-training (default: 1 for MAML, 5 for Reptile)")
    p.add_argument("--meta-dir", type=path, help="where meta-learned runs are kept and resumed "
                   "from (default OUT/meta)")
    p.add_argument("--seed", type=int, default=0, help="seed of the held-out tasks")
    p.add_argument("--root", type=path,
                   help="data folder of the family (default: its usual places)")
    t = p.add_argument_group("your own data (--family table, folder or tensors)")
    t.add_argument("--data", type=path,
                   help="table: a .csv, .tsv or .jsonl file, one example per row; "
                   "folder: an image folder, one sub-folder per class; tensors: an .npz or "
                   ".pt file with x and y")
    t.add_argument("--text-column", help="column of the texts (default text)")
    t.add_argument("--label-column", help="column of the labels (classes; default label)")
    t.add_argument("--delimiter", help="CSV/TSV field separator (default: by extension)")
    t.add_argument("--quoting", choices=("csv", "none"),
                   help="how a CSV/TSV table's quotes are read: csv (as CSV does; the default) "
                        "or none (every character as written, one row per line: a GLUE-style "
                        "TSV)")
    t.add_argument("--split-fractions",
                   help="train,val,test fractions of the classes, used with --meta (default "
                        "0.7,0.1,0.2)")
    t.add_argument("--split-seed", type=int, help="seed of the class split, used with --meta "
                   "(default 0)")
    t.add_argument("--drop-small", action="store_true",
                   help="drop classes with fewer than shots + queries examples (default: "
                        "error)")
    t.add_argument("--skip-corrupt", action="store_true",
                   help="folder: leave out unreadable images, named in results.json "
                        "(default: error; the data a --model run was trained on is read with "
                        "the run's family.skip_corrupt)")
    t.add_argument("--class-depth", type=int, choices=(1, 2), default=None,
                   help="folder: 1 root/<class>/<image>, 2 root/<group>/<class>/<image> "
                        "(classes named group/class; e.g. Omniglot's alphabets/characters); "
                        "given, it overrides the --model run's (default: the run's "
                        "family.class_depth where --data has that layout, else 1)")
    p.add_argument("--out", type=path, default="runs/adapt", help="output directory")
    p.add_argument("--resume", action="store_true",
                   help="continue an interrupted run in --out: the same command plus --resume "
                        "(one with other settings, --threads, model weights or data is refused "
                        "by name; --no-progress, the order of --approaches and a default "
                        "given or left out may differ)")
    p.add_argument("--resume-if-any", action="store_true",
                   help="resume where --out holds this command's kept tasks (partial.json), "
                        "else start the run (a missing or empty --out); a finished run there "
                        "is refused as without it: one command for a job scheduler to rerun "
                        "after a kill")
    p.add_argument("--record", type=path, default=None, metavar="DIR",
                   help="write one result record per approach in DIR (e.g. docs/results), "
                        "named adaptation_<setting>_<approach>.json; with --meta one per row "
                        "and paired difference, named adaptation_meta_lora_<setting>_<row>.json")
    p.add_argument("--no-progress", action="store_true")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    # a flag left out is None (or False): the settings' default, and not "given"
    given = {f.name: v for f in dataclasses.fields(recipe.AdaptSettings)
             if (v := getattr(args, f.name)) is not None and v is not False}
    if args.resume_if_any and args.resume:
        raise ValueError("--resume-if-any starts the run in --out, or resumes it where --out "
                         "holds its kept tasks: give it without --resume, which resumes only")
    with runlock.hold(args.out, create=False):    # a run still at work there is named first
        if args.resume_if_any:                    # decided under --out's lock
            args = argparse.Namespace(**{**vars(args), "resume": _resumable(args.out)})
        recipe.check_resume(args.out, args.resume)     # before the model loads
    if args.family == "folder" and args.data is not None:   # no PNG of the run in the data
        for flag, folder in (("--out", args.out), ("--meta-dir", args.meta_dir)):
            if folder is not None:
                runs_folder.check_outside_data(folder, args.data, out_option=flag)
    if args.record is not None:
        recipe.check_records(args.record, recipe.AdaptSettings(**given),
                             read_command=command_settings)
    prepared = recipe.prepare(recipe.AdaptSettings(**given), given=set(given))
    for note in prepared.notes:        # a --model run still training: its checkpoint named
        print(note, file=sys.stderr)

    def describe(out=None, resumed: int | None = None) -> None:
        """The data summary, printed once the run goes ahead (and, resuming in ``out``,
        how much is kept): a resume refused by ``kept`` prints nothing but its error."""
        if prepared.description:
            print(prepared.description)
        if resumed is not None:
            print(f"resuming {out}: {resumed} of {args.tasks} held-out tasks scored, kept in "
                  f"{recipe.PARTIAL}")
    # bad input found while running: no folder left; another command's run: refused
    with output_dir(args.out, command="adapt") as out:
        if args.resume and recipe.finished(out):    # stopped after writing its results.json
            recipe.kept(out, recipe.identity(prepared, out))   # or refused, naming the change
            done = json.loads((out / "results.json").read_text(encoding="utf-8"))
            recs = recipe.records(done, args.record, prepared.settings,
                                  command=_command(args, prepared.settings, done["approaches"]),
                                  read_command=command_settings) \
                if args.record is not None else {}    # checked before partial.json goes
            (out / recipe.PARTIAL).unlink()
            print(f"{out}: the run had finished (its results.json is complete); removed the "
                  f"{recipe.PARTIAL} left beside it, nothing to resume")
            write_records(recs)
            return 0
        if not args.resume:
            describe()
        try:
            res = recipe.run(prepared, out, progress=not args.no_progress, resume=args.resume,
                             on_resume=lambda done: describe(out, done))
            title = recipe.title(prepared.settings)
            print(f"\n{title} ({args.queries} queries per class)")
            print(recipe.table(res["approaches"], trials=prepared.settings.ways
                               * prepared.settings.queries))
            if res["paired"]:
                print("\npaired differences on the same tasks (accuracy, 95% CI):")
                print(recipe.paired_lines(res["paired"]))
            recs = recipe.records(res, args.record, prepared.settings,
                                  command=_command(args, prepared.settings, res["approaches"]),
                                  read_command=command_settings) \
                if args.record is not None else {}     # a record refused: no results.json
            # results.json last: where it is, the chart is complete beside it
            recipe.bar_chart(res["approaches"], out / "accuracy.png", title)
            report.write_json(out / "results.json", res)
        except KeyboardInterrupt:
            print(_partial.stopped(out, "adapt", "the held-out tasks scored",
                                   "any held-out task was scored"), file=sys.stderr)
            raise
        (out / recipe.PARTIAL).unlink(missing_ok=True)      # the result is complete
    print(f"\nwrote {out / 'results.json'} and {out / 'accuracy.png'}")
    write_records(recs)
    return 0


def _resumable(out) -> bool:
    """Whether ``--resume-if-any`` resumes in ``out``: it holds a ``partial.json`` (this
    command's kept tasks, also one left beside a finished run's results.json; another
    command's, which the resume refuses by name). Else the run starts afresh: in a missing
    or empty folder, or one a kill left before the first kept task (its lock file alone);
    a finished run there is refused by name, as a new run refuses it."""
    try:
        return (Path(out) / recipe.PARTIAL).is_file()
    except OSError:                 # a path the system refuses: the output folder names it
        return False


# the options that name a path, written relative to the working folder where they lie in it
PATHS = ("model", "data", "root", "meta_dir", "record")


# the options a record's setting may depend on whose flag defaults to None (the settings'
# default then): written out with the value the run used where its setting depends on them
FILLED = ("steps", "lora_r", "lora_targets", "prompt_tokens", "max_length", "meta_iterations",
          "meta_batch", "meta_shots", "split_fractions", "split_seed", "text_column",
          "label_column")


def _command(args: argparse.Namespace, s: recipe.AdaptSettings | None = None,
             approaches=()) -> str:
    """The command a record reruns: this one, every option with a value written out (as
    ``metaloop.evaluate.records.command_line`` writes them), without --resume (a rerun
    from scratch gives the same results) and --no-progress, after ``OMP_NUM_THREADS=N``
    where that is set (it sets torch's threads unless --threads does). Paths under the
    working folder are written relative to it; an --out outside it as ``runs/<its name>``:
    where the results go changes no number, and a temporary folder would not be one to
    rerun into.

    With ``s`` (the run's settings) and ``approaches`` (the names of the rows recorded),
    every option of ``FILLED`` that a row's setting depends on
    (``recipe.measured_setting``) is written with the value the run used, its default
    included, so that the command measures the same whatever the defaults become:
    ``--lora-targets`` as the targets adapted (the model's default where it was left out
    and can be told), ``--meta-shots`` where every learner of ``--meta`` meta-trains with
    one number of shots. An option no row depends on is left out where it was not given
    (a rerun would refuse it as one that changes nothing)."""
    cwd = Path.cwd().resolve()

    def rel(text: str) -> str | None:
        p = Path(text).expanduser()
        full = p if p.is_absolute() else cwd / p
        try:
            return str(full.resolve().relative_to(cwd))
        except ValueError:
            return None

    opts = {"resume": False, "resume_if_any": False, "no_progress": False,
            "meta": args.meta or None}
    if s is not None:
        opts.update(_filled(args, s, approaches))
    for key in PATHS:
        value = getattr(args, key, None)
        if value is not None and (key != "model" or Path(value).exists()):
            opts[key] = rel(value) or value
    opts["out"] = rel(args.out) or f"runs/{Path(args.out).resolve().name}"
    return rerun_command(args, **opts)


def _filled(args: argparse.Namespace, s: recipe.AdaptSettings, approaches) -> dict:
    """The ``FILLED`` options left out of ``args`` that the setting of a row in
    ``approaches`` depends on, with the values ``s`` ran them with (``_command``)."""
    setting: dict = {}
    for name in approaches:
        setting.update(recipe.measured_setting(s, name))
    out = {}
    for key in FILLED:
        if getattr(args, key, None) is not None or key not in setting:
            continue
        value = setting[key] if key in ("lora_targets", "meta_shots") else getattr(s, key)
        if key == "lora_targets":
            value = ",".join(value) if value else None        # None: it cannot be told
        elif key == "meta_shots":
            shots = set(value.values())
            value = shots.pop() if len(shots) == 1 else None   # learners of other defaults
        if value is not None:
            out[key] = value
    return out


def command_settings(command: str) -> recipe.AdaptSettings:
    """The settings of the ``metaloop adapt`` command line that measured a record written
    without ``setting``, read by ``metaloop``'s own parser (paths relative to the working
    folder; ``OMP_NUM_THREADS=N`` before it and commands before ``&&`` ignored).

    Raises:
        ValueError: not a ``metaloop adapt`` command, or one the parser refuses.
    """
    args = parse_command(command, "adapt")
    return recipe.AdaptSettings(**{f.name: v for f in dataclasses.fields(recipe.AdaptSettings)
                            if (v := getattr(args, f.name, None)) is not None
                            and v is not False})

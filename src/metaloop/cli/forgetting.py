"""``metaloop forgetting``: continual fine-tuning with and without the remedies for
forgetting."""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

from tqdm.auto import tqdm

from metaloop import runlock, runs_folder
from metaloop._progress import tqdm_defaults
from metaloop.cli._args import int_list, path
from metaloop.cli._records import parse_command, rerun_command, write_records
from metaloop.continual.scenarios import SCENARIOS
from metaloop.continual.sequence import STRATEGIES
from metaloop.recipes import _partial
from metaloop.recipes import forgetting as recipe
from metaloop.recipes.report import output_dir

DESCRIPTION = """\
Fine-tune a model on a stream of tasks ("experiences") and measure what it forgets, with
and without the remedies: replaying about 10% old data (replay), keeping the old heads
training (heads), both, LoRA on the new task (lora: needs peft, metaloop's text extra:
pip install -e '.[text]' in a checkout), and joint training as the upper bound.

Scenarios: two-task and split-fmnist-task/-class (Fashion-MNIST), omniglot-alphabets, and
split-data-task/-class on your own labelled data: --data is an image folder
root/<class>/<image> or a .npz/.pt file with x [N, ...] and y [N]. Its classes (a
folder's in name order, a file's in label order) are grouped --classes-per-experience at a
time; -task gives each experience its own head, -class one shared head over all classes.
Each class holds out 20% test and 10% validation images (at least one each;
--test-per-class and --val-per-class set counts instead), chosen by a fixed seed. Folder
images are decoded to --image-size pixels with --channels 1 or 3; the MLP's input size
follows the data. A folder of groups of classes, root/<group>/<class>/<image>, is read with
--class-depth 2 (classes named group/class). An unreadable image is refused by name unless
--skip-corrupt leaves it out. A class too small to hold out a test and a validation image
and keep one for training is refused by name unless --drop-small leaves it out (before the
classes are grouped). One line on stderr says what was read of a folder and what was left
out (non-images, hidden entries, class folders without images, images outside any class
folder, unreadable images skipped, classes dropped).

For each seed, experience 0 is learned once and every strategy then fine-tunes that same
model through the rest of the stream. The table gives, as mean ± 95% CI over the seeds:
new-task accuracy (the last experience), old-task accuracy (the earlier ones, at the end),
the fraction of each earlier experience's accuracy retained, forgetting, backward transfer
(BWT) and the average accuracy; a second table gives the forgetting of each earlier
experience, mean over the seeds. --out gets results.json, metrics.jsonl (every evaluation
during fine-tuning), old_accuracy_vs_steps.png, accuracy_matrix.png and runs.json (every
run, to add seeds to); their accuracies are fractions in [0, 1] (results.json's units says
so, metrics.jsonl's lines have "unit": "fraction"), the printed tables in %.

--early-stop PATIENCE stops an experience's fine-tuning once its validation accuracy has not
risen above its best so far (its value before fine-tuning included) for PATIENCE
evaluations, and keeps the parameters of the evaluation after a step with the highest
validation accuracy, the later one on a tie: never those from before the fine-tuning. The
step kept of each experience and seed is in results.json and runs.json (chosen), and a note
under the tables names each fine-tuning whose validation accuracy never rose above its
value before it (a step kept before any improvement: too few validation images?).

Each finished run of a strategy on a seed is kept in OUT/partial.json (rewritten
atomically); stopped (Ctrl-C or SIGTERM: exit 130, a kill), the same command with --resume
continues from the next one, to the results.json, metrics.jsonl and plots of a run never
stopped (the same accuracies, CIs and matrices; a kept run keeps the seconds measured when it
ran), all written at the end from the kept and the new runs. A seed with a strategy left
learns experience 0 again. More --seeds than the kept run's (from the same --seed) add
seeds, to a stopped run or to one that finished (OUT/runs.json keeps its runs): the kept
runs stay and only the new seeds run, to the files of a run started with all of them; the
same seeds have nothing to resume in a finished run. A command that differs from
the kept run's in anything else but --no-progress, the order of --strategies and a default
given or left out (torch's threads count, --threads or OMP_NUM_THREADS; --data as an
absolute path; another data option that leaves the experiences the same is no difference;
fewer --seeds are one), or whose data changed, is refused by name, and so is a damaged or
another command's partial.json, and a new run into a folder holding one.
results.json is written last, and partial.json moved to runs.json after it; a run stopped
in between has finished: --resume moves its partial.json and exits 0 (with more --seeds, it
adds them). A new run (without --resume) into an --out that holds a finished run (its
results.json or runs.json, also one stopped in between) is refused (exit 2), naming the
folder and the run's settings, before anything is read or written: give another --out,
remove the folder to run again, or add seeds to it with --resume and more --seeds.
--resume-if-any resumes where --out holds the kept runs (partial.json, or a finished run's
runs.json with other --seeds), exits 0 with nothing to do where the run there finished with
the same settings, else starts the run: one fixed command for a job scheduler to rerun after
a kill.

An option that would change nothing is refused by name: a strategy's option without that
strategy in --strategies (--replay-ratio and --buffer-size: replay, replay+heads;
--head-weight and --temperature: heads, replay+heads; --lora-rank: lora), --alphabets
outside omniglot-alphabets, --test-per-class on it, --data, --classes-per-experience,
--image-size, --channels, --skip-corrupt, --class-depth and --drop-small outside
split-data-task/-class, --image-size, --channels, --skip-corrupt and --class-depth with a
tensor file, --root and --alphabets on split-data-task/-class.

--record DIR writes, after the run, one result record per strategy for the docs' tables
(metaloop.evaluate.records): DIR/continual_<scenario>_<strategy>.json, the scenario's
hyphens and the strategy's + written as _ (continual_split_fmnist_class_replay_heads.json;
a replay ratio other than 0.1 gives replay-balanced or replay-0.2, a buffer
with the default ratio replay-buffer1000; a head weight, temperature or LoRA rank other than
the default gives heads-weight0.5, heads-temperature4 or lora-rank4), table continual, the
metric retained (%) on two-task and avg acc (%) elsewhere, its mean and Student-t 95% CI
over the seeds with each seed's value (per_seed), every metric in other_metrics, the
settings it measured (setting), and this command. A record already there of the same
setting (any seeds) is replaced, keeping its row, order, published and note; one of another
setting (its setting, or an older record's command, tells: a buffer with a ratio other than
0.1, other steps or data ...) is refused by name. The Split MNIST numbers of van de Ven et al.
that the split-fmnist-class records of naive, replay and joint quote (published) are on
handwritten digits, not Fashion-MNIST, and say so. DIR is checked before any work; --resume
of a run that had finished writes the records from its results.json."""
SETTINGS = ("strategies", "seeds", "seed", "steps", "pretrain_steps", "batch_size", "lr",
            "eval_every", "early_stop", "replay_ratio", "buffer_size", "head_weight",
            "temperature", "lora_rank", "hidden")


def _ratio(text: str) -> float | str:
    if text == "balanced":
        return text
    try:
        return float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number or 'balanced', got {text!r}"
                                         ) from None


def register(sub) -> argparse.ArgumentParser:
    """Add the ``forgetting`` subcommand."""
    p = sub.add_parser("forgetting", help="continual fine-tuning with and without the "
                       "remedies for forgetting", description=DESCRIPTION,
                       formatter_class=argparse.RawDescriptionHelpFormatter,
                       epilog="examples:\n  metaloop forgetting --scenario two-task\n"
                              "  metaloop forgetting --scenario split-fmnist-class "
                              "--strategies naive,replay,joint\n  metaloop forgetting "
                              "--scenario omniglot-alphabets --alphabets 5 --seeds 5\n"
                              "  metaloop forgetting --scenario split-data-class --data "
                              "my_images --classes-per-experience 2 --channels 3")
    p.add_argument("--scenario", choices=sorted(SCENARIOS), default="two-task",
                   help="the stream of experiences (default two-task): two-task and "
                        "split-fmnist-task/-class on Fashion-MNIST, omniglot-alphabets, "
                        "split-data-task/-class on --data; -task gives each experience its "
                        "own head, -class one shared head"),
    p.add_argument("--strategies", default=",".join(STRATEGIES),
                   help=f"comma list from {','.join(STRATEGIES)}")
    p.add_argument("--seeds", type=int, default=3, help="seeds 0..N-1 (+ --seed)")
    p.add_argument("--seed", type=int, default=0, help="first seed")
    p.add_argument("--steps", type=int,
                   help="fine-tuning steps per experience (default by --scenario: 500 "
                        "two-task, 200 split-fmnist-* and split-data-*, 150 "
                        "omniglot-alphabets)")
    p.add_argument("--pretrain-steps", type=int, help="steps on experience 0 (default --steps)")
    p.add_argument("--batch-size", type=int,
                   help="examples per fine-tuning step, replayed ones included (default by "
                        "--scenario: 128 two-task and split-fmnist-*, 64 omniglot-alphabets "
                        "and split-data-*)")
    p.add_argument("--lr", type=float, default=1e-3, help="Adam learning rate")
    p.add_argument("--eval-every", type=int,
                   help="fine-tuning steps between evaluations (also one before the first "
                        "step and one after the last), which metrics.jsonl and the "
                        "accuracy-vs-steps plot show and --early-stop counts (default by "
                        "--scenario: 50 two-task and split-fmnist-*, 25 omniglot-alphabets "
                        "and split-data-*)")
    p.add_argument("--early-stop", type=int, default=None, metavar="PATIENCE",
                   help="stop on the new task's validation accuracy after this many "
                        "evaluations without improvement, keeping its best evaluation "
                        "after a step (ties: the later; never the parameters from before)")
    p.add_argument("--replay-ratio", type=_ratio, default=None,
                   help="replay, replay+heads: fraction of each batch replayed from earlier "
                        "data (default 0.1), or 'balanced': t/(t+1) on experience t, so the "
                        "new experience gets 1/(t+1)")
    p.add_argument("--buffer-size", type=int, default=None,
                   help="replay, replay+heads: reservoir sample of the earlier data (default: "
                        "all of it)")
    p.add_argument("--head-weight", type=float, default=None,
                   help="heads, replay+heads: weight of each kept head (default 1)")
    p.add_argument("--temperature", type=float, default=None,
                   help="heads, replay+heads: kept heads' distillation T (default 2)")
    p.add_argument("--lora-rank", type=int, default=None,
                   help="lora: rank of the adapters (default 8)")
    p.add_argument("--hidden", type=int_list, default=[256, 256], metavar="H1,H2",
                   help="MLP hidden widths (default 256,256)")
    p.add_argument("--train-per-class", type=int, default=None,
                   help="Fashion-MNIST, your data: at most this many training images per "
                        "class (default all; Omniglot: 12)")
    p.add_argument("--val-per-class", type=int, default=None,
                   help="validation images per class (Fashion-MNIST 500, Omniglot 3, your "
                        "data 10%% of each class, at least 1)")
    p.add_argument("--test-per-class", type=int, default=None,
                   help="Fashion-MNIST: test images per class (default all 1,000); your "
                        "data: held out per class (default 20%%, at least 1)")
    p.add_argument("--alphabets", type=int, default=None,
                   help="omniglot-alphabets: number of alphabets (default 5)")
    p.add_argument("--root", type=path, default=None, help="built-in scenarios: data folder "
                   "(default: the loader's search)")
    p.add_argument("--data", type=path, default=None, metavar="PATH",
                   help="split-data-task/-class: an image folder root/<class>/<image>, or a "
                        ".npz/.pt file with x and y (and optionally class_names)")
    p.add_argument("--classes-per-experience", type=int, default=None, metavar="N",
                   help="split-data-task/-class: classes per experience, in label order "
                        "(a folder's: by class name); the last gets what is left (default 2)")
    p.add_argument("--image-size", type=int, default=None,
                   help="split-data-task/-class with a folder: image side in pixels "
                        "(default 28)")
    p.add_argument("--channels", type=int, default=None, choices=(1, 3),
                   help="split-data-task/-class with a folder: 1 greyscale, 3 RGB "
                        "(default 1)")
    p.add_argument("--class-depth", type=int, default=None, choices=(1, 2),
                   help="split-data-task/-class with a folder: 1 root/<class>/<image> "
                        "(default), 2 root/<group>/<class>/<image> (classes named "
                        "group/class); recorded with the data options")
    p.add_argument("--skip-corrupt", action="store_true", default=None,
                   help="split-data-task/-class with a folder: leave unreadable images (and "
                        "links to nothing) out, listed on stderr, instead of refusing the "
                        "folder; recorded with the data options")
    p.add_argument("--drop-small", action="store_true", default=None,
                   help="split-data-task/-class: leave out the classes too small to hold out "
                        "a test and a validation image and keep one for training, named on "
                        "stderr (default: error); recorded with the data options")
    p.add_argument("--out", type=path, default="runs/forgetting", help="output directory")
    p.add_argument("--resume", action="store_true",
                   help="continue an interrupted run in --out (a new run into a folder "
                        "holding a run is refused): the same command plus --resume "
                        "(one with other settings, --threads or data is refused by name; "
                        "--no-progress, the order of --strategies and a default given or "
                        "left out may differ; more --seeds add seeds to the kept runs, "
                        "also to a finished run's)")
    p.add_argument("--resume-if-any", action="store_true",
                   help="resume the run in --out where it holds this command's kept runs "
                        "(partial.json, or a finished run's runs.json with other --seeds), "
                        "as --resume, do nothing where the run there finished with the same "
                        "settings, else start it: one command for a job scheduler to "
                        "rerun after a kill; what --resume and a new run refuse is refused "
                        "alike")
    p.add_argument("--record", type=path, default=None, metavar="DIR",
                   help="write one result record per strategy in DIR (e.g. docs/results), "
                        "named continual_<scenario>_<strategy>.json with _ for the "
                        "scenario's - and the strategy's + (continual_two_task_"
                        "replay_heads.json); one there of another setting is refused by name")
    p.add_argument("--no-progress", action="store_true", help="no progress bar on stderr")
    p.set_defaults(func=run)
    return p


def run(args: argparse.Namespace) -> int:
    # a process still writing --out is named before anything is read
    with runlock.hold(args.out, create=False):
        return _run(args)


def _run(args: argparse.Namespace) -> int:
    if args.resume_if_any and args.resume:
        raise ValueError("--resume-if-any starts the run in --out, or resumes it where --out "
                         "holds its kept runs: give it without --resume, which resumes only")
    options = _options(args)
    s = recipe.settings(args.scenario, **{k: options[k] for k in SETTINGS})
    done = False                      # --resume-if-any on a run finished with these seeds
    if args.resume_if_any:            # decided under --out's lock: resume what is kept there
        args = argparse.Namespace(**{**vars(args), "resume": _resumable(args.out, s)})
        done = not args.resume and _finished_alike(args.out, s)
    if not done:                      # (its settings are compared once the data is read)
        recipe.check_resume(args.out, args.resume, s)   # before any data is read
    if args.data is not None:                           # no file of the run in the data
        runs_folder.check_outside_data(args.out, args.data)
    data = {k: options[k] for k in recipe.DATA_OPTIONS}
    if args.record is not None:
        recipe.check_records(args.record, s, data, read_command=command_settings)
    exps = recipe.experiences(args.scenario, root=args.root, **data,
                              log=lambda line: print(line, file=sys.stderr))
    with output_dir(args.out) as out:
        # stopped after writing its results.json, and resumed with no seeds added; or
        # finished, and given again with --resume-if-any (a scheduler's rerun)
        stale = args.resume and recipe.finished(out)
        if (stale or done) and not recipe.adds_seeds(
                recipe.kept(out, recipe.identity(s, exps, data)), s):   # or refused by name
            if args.record is not None:     # checked before partial.json is moved
                recs = recipe.records(
                    json.loads((out / "results.json").read_text(encoding="utf-8")),
                    args.record, command=_command(args), read_command=command_settings)
            if stale:
                os.replace(out / recipe.PARTIAL, out / recipe.RUNS)
                print(f"{out}: the run had finished (its results.json is complete); moved "
                      f"the {recipe.PARTIAL} left beside it to {recipe.RUNS}, nothing to "
                      f"resume")
            else:
                print(f"{out}: the run had finished with these settings (its results.json "
                      f"is complete); nothing to resume")
            if args.record is not None:
                write_records(recs)
            return 0
        try:
            with tqdm(total=recipe.total_steps(s, exps), desc="steps",
                      disable=args.no_progress, **tqdm_defaults()) as bar:
                def on_resume(done):
                    bar.total = recipe.total_steps(s, exps, done)
                    bar.refresh()
                    tqdm.write(f"resuming {out}: {len(done)} of "
                               f"{len(s['seeds']) * len(s['strategies'])} runs (seed, "
                               f"strategy) done, kept in {recipe.PARTIAL}", file=sys.stderr)
                runs, results = recipe.run(s, exps, bar.update, data=data, out=out,
                                           resume=args.resume, on_resume=on_resume)
            recs = recipe.records(results, args.record, command=_command(args),
                                  read_command=command_settings) \
                if args.record is not None else {}     # a record refused: no results.json
            recipe.write(out, s, exps, runs, results)
        except KeyboardInterrupt:
            said = _partial.stopped(out, "forgetting", "the runs (seed, strategy) finished",
                                    "any run (seed, strategy) finished")
            if args.resume_if_any:            # the same command, as it is, continues
                said = said.replace(" with --resume", "").replace(" (without --resume)", "")
            print(said, file=sys.stderr)
            raise
    n = len(s["seeds"])
    over = f"mean ± 95% CI over {n} seeds" if n > 1 else "one seed, so no 95% CI: ± n/a"
    print(f"\n{s['scenario']}: {len(exps)} experiences; {over} (accuracies in %)")
    print(recipe.table(results["strategies"], trials=recipe.accuracy_trials(results)))
    print(f"\nforgetting of each earlier experience (%, mean over {n} seed"
          f"{'s' if n > 1 else ''}: its best accuracy before the last experience minus its "
          f"final one)")
    print(recipe.forgetting_table(results))
    note = recipe.early_stop_note(results)
    if note:
        print(f"\n{note}")
    print(f"wrote {out / 'results.json'}, metrics.jsonl and plots in {out} "
          f"({results['wall_s']:.0f} s)", file=sys.stderr)     # status, not results
    write_records(recs)
    return 0


def _resumable(out, s: dict) -> bool:
    """Whether ``--resume-if-any`` resumes in ``out``: it holds a ``partial.json`` (this
    command's or another's, which the resume names), or the ``runs.json`` of a finished run
    with another number of seeds than ``s`` has (seeds to add; fewer are refused by name).
    Else the run starts afresh: in a missing folder, one a kill left before the first kept
    run (its lock file alone), or one whose finished run a new run refuses by name."""
    out = Path(out)
    if (out / recipe.PARTIAL).is_file():
        return True
    seeds = recipe.finished_seeds(out)
    return isinstance(seeds, int) and seeds != len(s["seeds"])


def _finished_alike(out, s: dict) -> bool:
    """Whether ``out`` holds a finished run (``runs.json`` and its results.json, no
    ``partial.json``) of as many seeds as ``s``: ``--resume-if-any`` then has nothing to do
    and exits 0, as ``train`` and ``compare`` do on a finished run, once ``recipe.kept``
    has found the run's settings and data the command's (else refused by name)."""
    out = Path(out)
    if (out / recipe.PARTIAL).is_file() or not (out / "results.json").is_file():
        return False
    seeds = recipe.finished_seeds(out)
    return isinstance(seeds, int) and seeds == len(s["seeds"])


def _command(args: argparse.Namespace) -> str:
    """The command a record reruns: this one, every option written out, without --resume
    (a rerun from scratch gives the same results) and --no-progress, after
    ``OMP_NUM_THREADS=N`` where that is set (it sets torch's threads unless --threads does)."""
    return rerun_command(args, resume=False, resume_if_any=False, no_progress=False)


def _options(args: argparse.Namespace) -> dict:
    """What the command line gives the recipe: ``scenario``, the keywords of
    ``recipe.settings`` (``SETTINGS``) and the data options of ``recipe.experiences``
    (``recipe.DATA_OPTIONS``)."""
    return {"scenario": args.scenario, **{k: getattr(args, k) for k in SETTINGS},
            **{k: getattr(args, k) for k in recipe.DATA_OPTIONS}}


def command_settings(command: str) -> dict:
    """The options (``_options``) of the ``metaloop forgetting`` command line that measured a
    record written without ``setting``, read by ``metaloop``'s own parser, as a run of that
    command reads them (``metaloop.cli._records.parse_command``): the ``read_command`` of
    ``recipe.check_records`` and ``recipe.records``.

    Raises:
        ValueError: not a ``metaloop forgetting`` command, or one the parser refuses.
    """
    return _options(parse_command(command, "forgetting"))

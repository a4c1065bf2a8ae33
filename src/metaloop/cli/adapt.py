"""``metaloop adapt``: adaptation approaches 0-3 on a pretrained model, on held-out tasks.

Each row is an approach: query accuracy (mean and 95% CI over the held-out tasks, the same
tasks for every row), the number of adapted parameters, and the adaptation time per task.

  0  prompting: zero-shot label prompts; the prompt optimizer (support set only)
  1  linear probe on frozen features: logistic (Newton), ridge (closed form), SGD
  2  fine-tuning everything: zero head, random head, LP-FT (head warm-up first)
  3  LoRA and soft prompts with a new head; with --meta, LoRA meta-learned by first-order
     MAML / Reptile on the meta-training categories, fine-tuned like plain LoRA

Families: ``wordnet`` (WordNet noun categories), ``table`` (your own labelled texts: a CSV,
TSV or JSONL file given by ``--data``, one text and label per row; the labels are the classes
and their prompt wordings), ``omniglot`` and ``fashion_mnist`` (image models). On a table,
every class is held out unless ``--meta`` trains on some: then the classes are split by
``--split-fractions`` (train, val, test), meta-learners train on the train classes and every
approach is scored on the test classes.

Models: ``minilm`` (all-MiniLM-L6-v2, offline), a Hugging Face model folder or cached name,
or a metaloop checkpoint folder (an image model, e.g. the Omniglot pretrain baseline).
Writes ``results.json`` and ``accuracy.png`` to ``--out``; bad input writes nothing there.
"""

from __future__ import annotations

import argparse
import functools
import time
from pathlib import Path

import torch

from metaloop.cli import _adapt_eval, _output
from metaloop.cli.main import UserError

FAMILIES = ("wordnet", "table", "omniglot", "fashion_mnist")
TEXT_FAMILIES = ("wordnet", "table")
TEXT_ONLY = ("prompt-zero-shot", "prompt-optimized", "soft-prompt")
APPROACHES = {   # name -> approach number (0-3)
    "prompt-zero-shot": 0, "prompt-optimized": 0,
    "probe-logistic": 1, "probe-ridge": 1, "probe-sgd": 1,
    "finetune-zero": 2, "finetune-random": 2, "lp-ft": 2,
    "lora": 3, "soft-prompt": 3,
}
META = ("fomaml", "reptile", "maml")
# The meta-learners' inner loop: SGD on LoRA + a zero head with one step size, on the
# cross-entropy of 30 x logits (see lora_learner's logit_scale). Features are unit vectors;
# with no scale, a step of 5 let first-order MAML's adapters blow up after ~55 outer steps
# (train accuracy 0.9 -> 0.25) and a step of 1 left the logits so small (temperature ~5)
# that the meta-loss only rewarded spreading all features apart: it plateaued after 50 steps
# without any gain in accuracy. Scale 30 and step 0.05: the head moves like a step of 45,
# the adapters like one of ~2 (docs/results.md has the measurements). Reptile's
# 5-shot inner loop takes 0.02: at 0.05 the head overshoots on 25 examples (support loss rises
# again by the 4th step on validation tasks).
META_INNER = {"fomaml": {"inner_lr": 0.05, "inner_steps": 3, "logit_scale": 30.0},
              "maml": {"inner_lr": 0.05, "inner_steps": 3, "logit_scale": 30.0},
              "reptile": {"inner_lr": 0.02, "inner_steps": 4, "logit_scale": 30.0}}
# Meta-training tasks are 5-way 1-shot for MAML, whose query loss sees several examples of a
# class; Reptile learns from the support set alone, and with one shot per class its only
# signal is to push the support examples apart, so it meta-trains on 5-shot tasks.
META_SHOTS = {"fomaml": 1, "maml": 1, "reptile": 5}
META_OUTER_LR = 1e-3


def register(sub) -> None:
    p = sub.add_parser("adapt", help="adapt a pretrained model to few-shot tasks: prompting, "
                       "linear probes, fine-tuning, LoRA / soft prompts, meta-learned LoRA",
                       description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default="minilm",
                   help="minilm, a Hugging Face model folder or cached name, or a metaloop "
                        "checkpoint folder (image models)")
    p.add_argument("--family", default="wordnet", help=f"one of {', '.join(FAMILIES)}")
    p.add_argument("--ways", type=int, default=5, help="classes per task")
    p.add_argument("--shots", type=int, default=1, help="support examples per class")
    p.add_argument("--queries", type=int, default=5, help="query examples per class")
    p.add_argument("--tasks", type=int, default=100, help="held-out tasks")
    p.add_argument("--approaches", help="comma list (default: all that apply); choose from "
                   + ", ".join(APPROACHES))
    p.add_argument("--steps", type=int, default=20, help="optimiser steps of approaches 2-3")
    p.add_argument("--lora-r", type=int, default=8, help="LoRA rank")
    p.add_argument("--lora-targets",
                   help="comma list of LoRA target modules (default: query,value for text, "
                        "conv for Conv4)")
    p.add_argument("--prompt-tokens", type=int, default=8, help="soft prompt length")
    p.add_argument("--max-length", type=int, default=32,
                   help="text models: longest input in tokens; longer texts are cut (93%% "
                        "of WordNet glosses fit in 32; longer ones lose the end of their usage "
                        "examples)")
    p.add_argument("--meta", default="", help="comma list of meta-learners over LoRA + head "
                   f"to train and add ({', '.join(META)})")
    p.add_argument("--meta-iterations", type=int, default=300, help="outer steps per method")
    p.add_argument("--meta-batch", type=int, default=4, help="tasks per outer step")
    p.add_argument("--meta-shots", type=int, help="support examples per class when "
                   "meta-training (default: 1 for MAML, 5 for Reptile)")
    p.add_argument("--meta-dir", help="where meta-learned runs are kept and resumed from "
                   "(default OUT/meta)")
    p.add_argument("--seed", type=int, default=0, help="seed of the held-out tasks")
    p.add_argument("--root", help="data folder of the family (default: its usual places)")
    t = p.add_argument_group("your own text (--family table)")
    t.add_argument("--data", help="the table: a .csv, .tsv or .jsonl file, one example per row")
    t.add_argument("--text-column", default="text", help="column of the texts")
    t.add_argument("--label-column", default="label", help="column of the labels (classes)")
    t.add_argument("--delimiter", help="CSV/TSV field separator (default: by extension)")
    t.add_argument("--split-fractions", default="0.7,0.1,0.2",
                   help="train,val,test fractions of the classes, used with --meta")
    t.add_argument("--split-seed", type=int, default=0, help="seed of the class split")
    t.add_argument("--drop-small", action="store_true",
                   help="drop classes with fewer than shots + queries texts (default: error)")
    p.add_argument("--out", default="runs/adapt", help="output directory")
    p.add_argument("--no-progress", action="store_true")
    p.set_defaults(func=run)


# ----------------------------------------------------------------------------- set-up

def _positive(**values) -> None:
    for name, v in values.items():
        if v is None or v <= 0:
            raise ValueError(f"--{name.replace('_', '-')} must be positive, got {v}")


def _is_checkpoint(path: Path) -> bool:
    return path.is_dir() and ((path / "LATEST").is_file() or (path / "state.json").is_file())


def load_model(spec: str, family: str, max_length: int = 32):
    """(model, kind) for ``--model``: ``"text"`` for Hugging Face encoders, ``"image"`` for
    metaloop checkpoints."""
    path = Path(spec).expanduser()
    if _is_checkpoint(path):
        if family in TEXT_FAMILIES:
            raise ValueError(f"{spec} is a metaloop (image) checkpoint; family {family} needs a "
                             f"text model such as --model minilm")
        from metaloop.cli.predict import load_predictor
        learner = load_predictor(path)[0]
        return getattr(learner, "net", learner.model), "image"     # MAML: the network itself
    if family not in TEXT_FAMILIES:
        if spec == "minilm" or (path / "config.json").is_file():
            raise ValueError(f"--model {spec} is a text encoder; family {family} needs an image "
                             f"model: a metaloop checkpoint folder (e.g. the pretrain baseline "
                             f"from 'metaloop train')")
        if not path.exists():
            raise ValueError(f"model path {spec} does not exist")
        raise ValueError(f"{spec} is not a metaloop checkpoint folder (no LATEST file)")
    from metaloop.models.text import load_text_encoder
    try:
        return load_text_encoder(spec, max_length=max_length), "text"
    except ModuleNotFoundError as e:
        raise UserError(str(e)) from e


def build_family(args, model, kind: str, split: str, shots: int, queries: int):
    """The task family of ``--family`` on ``split`` (held-out: ``test``)."""
    if args.family not in FAMILIES:
        raise ValueError(f"unknown family {args.family!r}; choose one of {list(FAMILIES)}")
    from metaloop import tasks
    from metaloop.tasks.wordnet import WordNet
    if args.family == "wordnet":
        return WordNet(args.root, split=split, ways=args.ways, shots=shots, queries=queries,
                       tokenizer=model.tokenize)
    if args.family == "table":         # held out: every class, or the test classes with --meta
        meta = split == "train" or bool(_meta_methods(args.meta))
        heldout, train = _table_families(args, model.tokenize, shots, queries,
                                         [shots] if meta else [])
        return train[shots] if split == "train" else heldout
    if args.family == "omniglot":
        return tasks.Omniglot(args.root, split=split, ways=args.ways, shots=shots,
                              queries=queries)
    classes = range(0, 5) if split == "train" else range(5, 10)
    return tasks.FashionMNIST(args.root, classes=classes, ways=args.ways, shots=shots,
                              queries=queries, split="train" if split == "train" else "test")


def _table_families(args, tokenizer, shots: int, queries: int, meta_shots):
    """``recipes.adapt.table_families`` with the table options of ``args``."""
    from metaloop.recipes.adapt import parse_fractions, table_families
    if not args.data:
        raise ValueError("--family table needs --data PATH: a .csv, .tsv or .jsonl file with "
                         f"a {args.text_column!r} and a {args.label_column!r} column")
    return table_families(args.data, ways=args.ways, shots=shots, queries=queries,
                          meta_shots=meta_shots, tokenizer=tokenizer,
                          text_column=args.text_column, label_column=args.label_column,
                          delimiter=args.delimiter,
                          fractions=parse_fractions(args.split_fractions),
                          split_seed=args.split_seed, drop_small=args.drop_small)


def _meta_methods(text: str) -> list[str]:
    methods = [m.strip() for m in text.split(",") if m.strip()]
    bad = [m for m in methods if m not in META]
    if bad:
        raise ValueError(f"unknown --meta method(s) {bad}; choose from {list(META)}")
    return methods


def _approach_names(text: str | None, kind: str) -> list[str]:
    allowed = [a for a in APPROACHES if kind == "text" or a not in TEXT_ONLY]
    if not text:
        return allowed
    names = [a.strip() for a in text.split(",") if a.strip()]
    bad = [a for a in names if a not in APPROACHES]
    if bad or not names:
        raise ValueError(f"unknown approach(es) {bad or text!r}; choose from {list(APPROACHES)}")
    wrong = [a for a in names if a not in allowed]
    if wrong:
        raise ValueError(f"approach(es) {wrong} need a text encoder; the model is an image model")
    return names


def strategies(args, model, kind: str, family) -> dict:
    """name -> (approach number, callable(support_x, support_y, classes) -> Adapted)."""
    from metaloop.adapt.finetune import finetune, lpft
    from metaloop.adapt.linear_probe import linear_probe

    names = _approach_names(args.approaches, kind)
    steps = args.steps
    targets = (args.lora_targets.split(",") if args.lora_targets
               else ["query", "value"] if kind == "text" else ["conv"])
    # Rates: a new head learns at 1e-2; the pretrained body at 1e-4 (full fine-tuning) or
    # 1e-3 (LoRA); soft prompts at 1e-2 (Lester et al. use large prompt rates).
    body_lr = 1e-4 if kind == "text" else 1e-3
    out = {}
    for name in names:
        if name == "prompt-zero-shot":
            from metaloop.adapt.prompting import zero_shot
            cache: dict = {}
            fn = functools.partial(_zero_shot, zero_shot, model, family, cache)
        elif name == "prompt-optimized":
            from metaloop.adapt.prompting import optimize_prompt
            cache = {}
            fn = functools.partial(_prompt_opt, optimize_prompt, model, family, cache)
        elif name.startswith("probe-"):
            solver = name.split("-")[1]
            kw = {"lam": 0.1} if solver != "sgd" else {"lr": 0.1, "steps": 100}
            fn = _ignore_classes(functools.partial(linear_probe, model, solver=solver, **kw))
        elif name in ("finetune-zero", "finetune-random"):
            fn = _ignore_classes(functools.partial(
                finetune, model, steps=steps, lr=body_lr, head_lr=1e-2,
                head_init=name.split("-")[1]))
        elif name == "lp-ft":
            fn = _ignore_classes(functools.partial(lpft, model, steps=steps, lr=body_lr,
                                                   head_lr=1e-2, warmup_kw={"lam": 0.1}))
        elif name == "lora":
            from metaloop.adapt.lora import add_lora, lora_finetune
            torch.manual_seed(0)      # the same adapter init as the --meta learners start from
            lora = add_lora(model, r=args.lora_r, alpha=2.0 * args.lora_r,
                            target_modules=targets)
            fn = _ignore_classes(functools.partial(lora_finetune, lora, steps=steps, lr=1e-3,
                                                   head_lr=1e-2))
        else:  # soft-prompt
            from metaloop.adapt.soft_prompt import add_soft_prompt, soft_prompt_finetune
            torch.manual_seed(args.seed)
            sp = add_soft_prompt(model, args.prompt_tokens)
            fn = _ignore_classes(functools.partial(soft_prompt_finetune, sp, steps=steps,
                                                   lr=1e-2, head_lr=1e-2))
        out[name] = (APPROACHES[name], fn)
    return out


def _ignore_classes(fn):
    return lambda sx, sy, classes: fn(sx, sy)


def _zero_shot(zero_shot, model, family, cache, sx, sy, classes):
    return zero_shot(model, [w["name"] for w in family.wordings(classes)], cache=cache)


def _prompt_opt(optimize_prompt, model, family, cache, sx, sy, classes):
    return optimize_prompt(model, sx, sy, family.wordings(classes), cache=cache)


# ----------------------------------------------------------------------------- meta-learning

def meta_strategies(args, model, kind: str, out: Path, train_families: dict | None = None
                    ) -> tuple[dict, dict]:
    """Train (or resume) each ``--meta`` learner over LoRA + head.

    ``train_families`` maps each method to its meta-training family (default: built here
    from ``args``).

    Rows per method: ``meta-lora-M`` fine-tunes the meta-learned LoRA exactly like the plain
    ``lora`` row (Adam, ``--steps``); ``meta-lora-M inner`` adapts by the learner's own inner
    loop (SGD); ``lora inner-M`` is plain LoRA from the pretrained start under that same inner
    loop. Runs are checkpointed in ``--meta-dir`` and resumed (a finished run is reused); the
    CPU and wall seconds spent on each are kept in its ``budget.json``.
    """
    from metaloop.adapt.lora import lora_finetune
    from metaloop.meta.lora_meta import lora_learner
    from metaloop.train import train

    methods = _meta_methods(args.meta)
    if not methods:
        return {}, {}
    _positive(meta_iterations=args.meta_iterations, meta_batch=args.meta_batch)
    targets = (args.lora_targets.split(",") if args.lora_targets
               else ["query", "value"] if kind == "text" else ["conv"])
    meta_dir = Path(args.meta_dir) if args.meta_dir else out / "meta"
    rows, info, baselines = {}, {}, {}
    for method in methods:
        hp = {"r": args.lora_r, "alpha": 2.0 * args.lora_r, "target_modules": targets,
              **META_INNER[method]}
        shots = args.meta_shots or META_SHOTS[method]
        train_family = (train_families[method] if train_families is not None
                        else build_family(args, model, kind, "train", shots, args.queries))
        torch.manual_seed(0)
        learner = lora_learner(model, method, **hp)
        run_dir = meta_dir / method
        config = {"method": method, "model": args.model, "family": args.family,
                  "ways": args.ways, "shots": shots, "queries": args.queries,
                  "max_length": args.max_length, "iterations": args.meta_iterations,
                  "meta_batch": args.meta_batch, "outer_lr": META_OUTER_LR, **hp}
        if args.family == "table":    # resume only on the same table and classes
            config["table"] = _table_identity(train_family)
        cpu0, wall0 = time.process_time(), time.perf_counter()
        train(learner, train_family, iterations=args.meta_iterations,
              meta_batch=args.meta_batch, lr=META_OUTER_LR, seed=0, out_dir=run_dir,
              resume=(run_dir / "LATEST").is_file(), checkpoint_every=25, config=config,
              progress=not args.no_progress, desc=f"meta-train {method}")
        info[method] = {"config": config, "run_dir": str(run_dir),
                        **_add_budget(run_dir, time.process_time() - cpu0,
                                      time.perf_counter() - wall0)}
        lr_kw = {"steps": args.steps, "lr": 1e-3, "head_lr": 1e-2}
        rows[f"meta-lora-{method}"] = (3, _ignore_classes(
            functools.partial(lora_finetune, learner.model, **lr_kw)))
        rows[f"meta-lora-{method} inner"] = (3, _inner(learner))
        key = (META_INNER[method]["inner_lr"], META_INNER[method]["inner_steps"])
        if key not in baselines:
            torch.manual_seed(0)
            baselines[key] = lora_learner(model, method, **hp)
            rows[f"lora inner-{method}"] = (3, _inner(baselines[key]))
    return rows, info


def _table_identity(family) -> dict:
    """The file (path and content hash), columns and classes a table family reads."""
    import hashlib
    digest = hashlib.sha256(family.path.read_bytes()).hexdigest()
    return {"data": str(family.path), "sha256": digest, "text_column": family.text_column,
            "label_column": family.label_column, "classes": family.class_names}


def _add_budget(run_dir: Path, cpu: float, wall: float) -> dict:
    """Accumulate the meta-training CPU and wall seconds of a run in ``budget.json``."""
    import json
    path = run_dir / "budget.json"
    total = json.loads(path.read_text()) if path.exists() else {"cpu_seconds": 0.0,
                                                               "wall_seconds": 0.0}
    total = {"cpu_seconds": total["cpu_seconds"] + cpu,
             "wall_seconds": total["wall_seconds"] + wall}
    _output.write_json(path, total)
    return total


def _inner(learner):
    """The learner's own test-time adaptation (its inner SGD loop) as an Adapted."""
    from metaloop.adapt._fit import Adapted

    def fn(sx, sy, classes):
        params = learner.adapt(sx, sy)
        return Adapted(learner.model, params, sum(p.numel() for p in params.values()))
    return fn


def _train_seconds(run_dir: Path) -> float | None:
    """Wall time of the whole meta-training run from its metrics.jsonl timestamps."""
    import json
    log = run_dir / "metrics.jsonl"
    if not log.exists():
        return None
    times = [json.loads(line)["time"] for line in log.read_text().splitlines() if line]
    return times[-1] - times[0] if len(times) > 1 else None


def run(args: argparse.Namespace) -> int:
    _positive(ways=args.ways, shots=args.shots, queries=args.queries, tasks=args.tasks,
              steps=args.steps, max_length=args.max_length, lora_r=args.lora_r,
              prompt_tokens=args.prompt_tokens)
    if args.family not in FAMILIES:
        raise ValueError(f"unknown family {args.family!r}; choose one of {list(FAMILIES)}")
    if args.approaches is not None:
        _approach_names(args.approaches, "text")            # names, before loading anything
    methods = _meta_methods(args.meta)
    if args.meta:
        _positive(meta_iterations=args.meta_iterations, meta_batch=args.meta_batch)
    meta_shots = {m: args.meta_shots or META_SHOTS[m] for m in methods}
    if args.family != "table":
        for opt in ("data", "delimiter"):
            if getattr(args, opt) is not None:
                raise ValueError(f"--{opt} applies to --family table, not {args.family}")
    elif args.root is not None:
        raise ValueError("--root applies to the built-in families; give the table as --data")
    else:   # read and check the table before loading any model
        _table_families(args, None, args.shots, args.queries, meta_shots.values())
    # Everything that can fail on bad input happens before --out is created.
    model, kind = load_model(args.model, args.family, args.max_length)
    table = None
    if args.family == "table":
        heldout, by_shots = _table_families(args, model.tokenize, args.shots, args.queries,
                                            meta_shots.values())
        train_families = {m: by_shots[s] for m, s in meta_shots.items()}
        from metaloop.recipes.adapt import describe, table_summary
        table = table_summary(heldout, by_shots)
        print(describe(heldout, by_shots))
    else:
        heldout = build_family(args, model, kind, "test", args.shots, args.queries)
        train = {}
        for m, s in meta_shots.items():
            train[m] = (next(iter(train.values())).with_shots(s, args.queries) if train
                        else build_family(args, model, kind, "train", s, args.queries))
        train_families = train
    rows = strategies(args, model, kind, heldout)
    out = _output.prepare_out(args.out)
    meta_rows, meta_info = meta_strategies(args, model, kind, out, train_families)
    rows.update(meta_rows)
    t0 = time.perf_counter()
    results = _adapt_eval.evaluate_strategies(rows, heldout, args.tasks, args.seed,
                                              progress=not args.no_progress)
    data = f" {Path(args.data).name}" if args.family == "table" else ""
    title = (f"{args.family}{data} {args.ways}-way {args.shots}-shot, {args.model}: "
             f"{args.tasks} held-out tasks")
    print(f"\n{title} ({args.queries} queries per class)")
    print(_adapt_eval.table(results))
    methods = meta_info.keys()
    diffs = _adapt_eval.paired(results, [(f"meta-lora-{m}", "lora") for m in methods]
                               + [(f"meta-lora-{m} inner", f"lora inner-{m}") for m in methods])
    if diffs:
        print("\npaired differences on the same tasks (accuracy, 95% CI):")
        print(_adapt_eval.paired_lines(diffs))
    _output.write_json(out / "results.json", {
        "model": args.model, "family": args.family, "ways": args.ways, "shots": args.shots,
        "queries": args.queries, "tasks": args.tasks, "seed": args.seed, "steps": args.steps,
        "eval_seconds": time.perf_counter() - t0, "meta": meta_info,
        "threads": torch.get_num_threads(), "paired": diffs, "approaches": results,
        **({"table": table} if table is not None else {})})
    _adapt_eval.bar_chart(results, out / "accuracy.png", title)
    print(f"\nwrote {out / 'results.json'} and {out / 'accuracy.png'}")
    return 0

"""``metaloop forgetting``: continual fine-tuning with and without the remedies for forgetting.

Examples::

    metaloop forgetting --scenario two-task
    metaloop forgetting --scenario split-fmnist-class --strategies naive,replay,joint
    metaloop forgetting --scenario omniglot-alphabets --alphabets 5 --seeds 5

For each seed, experience 0 is learned once (plain training) and every strategy then
fine-tunes that same model through the rest of the stream. The table gives, as mean ± 95% CI
over the seeds: new-task accuracy (the last experience), old-task accuracy (the earlier ones,
at the end), the fraction of each earlier experience's accuracy retained, forgetting,
backward transfer (BWT) and the average accuracy. ``--out`` gets results.json,
metrics.jsonl (every evaluation during fine-tuning), old_accuracy_vs_steps.png (accuracy on
the first experience against fine-tuning steps) and accuracy_matrix.png.
"""

from __future__ import annotations

import argparse
import json
import time

import torch
from tqdm.auto import tqdm

from metaloop.cli import _output
from metaloop.cli._args import int_list
from metaloop.cli.main import UserError
from metaloop.continual import metrics, plots
from metaloop.continual.finetune import finetune
from metaloop.continual.heads import init_params
from metaloop.continual.replay import check_replay_ratio
from metaloop.continual.scenarios import SCENARIOS
from metaloop.continual.sequence import STRATEGIES, run_sequence
from metaloop.evaluate.heldout import mean_ci
from metaloop.models import MLP
from metaloop.train.checkpoint import atomic_write_text

# Per-scenario defaults, sized so that six strategies x 3 seeds take < 15 min on 2 cores.
# The network is van de Ven et al.'s Split-MNIST MLP with 256 instead of 400 units.
DEFAULTS = {
    "two-task": {"steps": 500, "batch_size": 128, "eval_every": 50},
    "split-fmnist-task": {"steps": 200, "batch_size": 128, "eval_every": 50},
    "split-fmnist-class": {"steps": 200, "batch_size": 128, "eval_every": 50},
    "omniglot-alphabets": {"steps": 150, "batch_size": 64, "eval_every": 25},
}
METRICS = (("new_accuracy", "new acc"), ("old_accuracy", "old acc"), ("retained", "retained"),
           ("forgetting", "forgetting"), ("bwt", "BWT"), ("average_accuracy", "avg acc"))


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
                       "remedies for forgetting", description=__doc__,
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--scenario", choices=sorted(SCENARIOS), default="two-task")
    p.add_argument("--strategies", default=",".join(STRATEGIES),
                   help=f"comma list from {','.join(STRATEGIES)}")
    p.add_argument("--seeds", type=int, default=3, help="seeds 0..N-1 (+ --seed)")
    p.add_argument("--seed", type=int, default=0, help="first seed")
    p.add_argument("--steps", type=int, help="fine-tuning steps per experience")
    p.add_argument("--pretrain-steps", type=int, help="steps on experience 0 (default --steps)")
    p.add_argument("--batch-size", type=int)
    p.add_argument("--lr", type=float, default=1e-3, help="Adam learning rate")
    p.add_argument("--eval-every", type=int, help="steps between evaluations")
    p.add_argument("--early-stop", type=int, default=None, metavar="PATIENCE",
                   help="stop on the new task's validation accuracy after this many "
                        "evaluations without improvement")
    p.add_argument("--replay-ratio", type=_ratio, default=0.1,
                   help="fraction of each batch replayed from earlier data (default 0.1), or "
                        "'balanced': t/(t+1) on experience t, an equal share per experience")
    p.add_argument("--buffer-size", type=int, default=None,
                   help="reservoir sample of the earlier data (default: all of it)")
    p.add_argument("--head-weight", type=float, default=1.0, help="weight of each kept head")
    p.add_argument("--temperature", type=float, default=2.0, help="kept heads' distillation T")
    p.add_argument("--lora-rank", type=int, default=8)
    p.add_argument("--hidden", type=int_list, default=[256, 256], metavar="H1,H2",
                   help="MLP hidden widths (default 256,256)")
    p.add_argument("--train-per-class", type=int, default=None,
                   help="Fashion-MNIST: training images per class (default all; Omniglot: 12)")
    p.add_argument("--val-per-class", type=int, default=None,
                   help="validation images per class (Fashion-MNIST 500, Omniglot 3)")
    p.add_argument("--test-per-class", type=int, default=None,
                   help="Fashion-MNIST: test images per class (default all 1,000)")
    p.add_argument("--alphabets", type=int, default=5, help="Omniglot: number of alphabets")
    p.add_argument("--root", default=None, help="data folder (default: the loader's search)")
    p.add_argument("--out", default="runs/forgetting", help="output directory")
    p.add_argument("--no-progress", action="store_true")
    p.set_defaults(func=run)
    return p


def _strategies(text: str) -> list[str]:
    names = [s.strip() for s in text.split(",") if s.strip()]
    bad = [s for s in names if s not in STRATEGIES]
    if bad or not names or len(set(names)) != len(names):
        raise UserError(f"bad --strategies {text!r}: choose distinct names from "
                        f"{list(STRATEGIES)}")
    return names


def _settings(args) -> dict:
    d = DEFAULTS[args.scenario]
    s = {"scenario": args.scenario, "strategies": _strategies(args.strategies),
         "seeds": list(range(args.seed, args.seed + args.seeds)),
         "steps": args.steps or d["steps"], "batch_size": args.batch_size or d["batch_size"],
         "eval_every": args.eval_every or d["eval_every"], "lr": args.lr,
         "early_stop": args.early_stop, "replay_ratio": args.replay_ratio,
         "buffer_size": args.buffer_size, "head_weight": args.head_weight,
         "temperature": args.temperature, "lora_rank": args.lora_rank, "hidden": args.hidden}
    s["pretrain_steps"] = args.pretrain_steps or s["steps"]
    for key in ("steps", "pretrain_steps", "batch_size", "eval_every", "lora_rank"):
        if s[key] <= 0:
            raise UserError(f"--{key.replace('_', '-')} must be positive, got {s[key]}")
    for key in ("early_stop", "buffer_size"):
        if s[key] is not None and s[key] <= 0:
            raise UserError(f"--{key.replace('_', '-')} must be positive, got {s[key]}")
    if args.seeds <= 0:
        raise UserError(f"--seeds must be positive, got {args.seeds}")
    if not args.hidden or min(args.hidden) <= 0:
        raise UserError(f"--hidden must be positive widths, got {args.hidden}")
    if not (args.lr > 0 and args.head_weight >= 0 and args.temperature > 0):
        raise UserError("--lr and --temperature must be positive, --head-weight >= 0")
    if args.replay_ratio != "balanced":
        check_replay_ratio(args.replay_ratio)
    return s


def _experiences(args):
    kw = {"root": args.root}
    if args.train_per_class is not None:
        kw["train_per_class"] = args.train_per_class
    if args.val_per_class is not None:
        kw["val_per_class"] = args.val_per_class
    if args.scenario == "omniglot-alphabets":
        if args.test_per_class is not None:
            raise UserError("--test-per-class is for Fashion-MNIST; Omniglot tests on the "
                            "drawings left after --train-per-class and --val-per-class")
        return SCENARIOS[args.scenario](alphabets=args.alphabets, **kw)
    return SCENARIOS[args.scenario](test_per_class=args.test_per_class, **kw)


def run(args: argparse.Namespace) -> int:
    """Run the subcommand; bad input raises ValueError/UserError (exit status 2)."""
    s = _settings(args)
    out = _output.prepare_out(args.out)
    t_start = time.perf_counter()
    exps = _experiences(args)
    later = s["steps"] * (len(exps) - 1) * len(s["strategies"])
    bar = tqdm(total=len(s["seeds"]) * (s["pretrain_steps"] + later), desc="steps",
               disable=args.no_progress)
    runs = {name: [] for name in s["strategies"]}
    for seed in s["seeds"]:
        for name, r in _one_seed(s, exps, seed, bar.update).items():
            runs[name].append(r)
    bar.close()
    results = _results(s, exps, runs, time.perf_counter() - t_start)
    _write(out, s, exps, runs, results)
    print(f"\n{s['scenario']}: {len(exps)} experiences; mean ± 95% CI over "
          f"{len(s['seeds'])} seeds (accuracies in %)")
    print(_table(results["strategies"]))
    print(f"\nwrote {out / 'results.json'}, metrics.jsonl and plots in {out} "
          f"({results['wall_s']:.0f} s)")
    return 0


def _one_seed(s, exps, seed, update) -> dict:
    """Learn experience 0 once, then every strategy from there."""
    torch.manual_seed(seed)
    g = torch.Generator().manual_seed(seed)
    model = MLP(exps[0].train[0].shape[1], tuple(s["hidden"]), 1)
    ft = {k: s[k] for k in ("batch_size", "lr", "eval_every", "early_stop")}
    first = finetune(model, init_params(model, exps, g), exps[0], replay_ratio=0.0,
                     steps=s["pretrain_steps"], generator=g, progress=update, **ft)
    out = {}
    for name in s["strategies"]:
        t0 = time.perf_counter()
        r = run_sequence(model, first.params, exps, name, pretrained=True,
                         replay_ratio=s["replay_ratio"], head_weight=s["head_weight"],
                         lora_rank=s["lora_rank"], buffer_size=s["buffer_size"],
                         temperature=s["temperature"], steps=s["steps"],
                         generator=torch.Generator().manual_seed(1000 + seed), progress=update,
                         **ft)
        out[name] = {"seed": seed, "matrix": r.matrix, "curve": r.curve,
                     "boundaries": r.boundaries, "wall_s": time.perf_counter() - t0}
    return out


def _results(s, exps, runs, wall_s) -> dict:
    strategies = {}
    for name, rs in runs.items():
        per_seed = [metrics.summarize(r["matrix"]) for r in rs]
        summary = {}
        for key, _ in METRICS:
            values = [p[key] for p in per_seed]
            m, c = mean_ci(values)
            summary[key] = {"mean": m, "ci95": c, "per_seed": values}
        stack = torch.stack([r["matrix"] for r in rs])                  # [S, T, T]
        strategies[name] = {
            "summary": summary,
            "matrix": {"mean": stack.mean(0).tolist(), "per_seed": stack.tolist()},
            "experience_forgetting": [metrics.experience_forgetting(r["matrix"]).tolist()
                                      for r in rs],
            "wall_s": [r["wall_s"] for r in rs]}
    return {"scenario": s["scenario"], "settings": s, "wall_s": wall_s,
            "experiences": [{"name": e.name, "head": e.head, "outputs": e.num_outputs,
                             "classes": list(e.classes), "train": e.train[1].numel(),
                             "val": e.val[1].numel(), "test": e.test[1].numel()} for e in exps],
            "rows": "R[i][j]: test accuracy on experience j after training on experience i",
            "strategies": strategies}


def _table(strategies: dict) -> str:
    rows = [["strategy"] + [label for _, label in METRICS]]
    for name, r in strategies.items():
        rows.append([name] + [f"{100 * r['summary'][k]['mean']:.1f} ± "
                              f"{100 * r['summary'][k]['ci95']:.1f}" for k, _ in METRICS])
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(r, widths)) for r in rows]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def _write(out, s, exps, runs, results) -> None:
    _output.write_json(out / "results.json", results)
    lines = [json.dumps({"strategy": name, "seed": r["seed"], **point})
             for name, rs in runs.items() for r in rs for point in r["curve"]]
    atomic_write_text(out / "metrics.jsonl", "\n".join(lines) + "\n")
    plots.old_accuracy_curves(runs, exps[0].name, out / "old_accuracy_vs_steps.png",
                              f"{s['scenario']}: accuracy on {exps[0].name} while "
                              f"fine-tuning")
    plots.matrix_heatmaps(results["strategies"], [e.name for e in exps],
                          out / "accuracy_matrix.png", s["scenario"])

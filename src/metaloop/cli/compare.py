"""``metaloop compare [FAMILY]``: meta-train every method and both baselines, evaluate them
on the same held-out tasks, print the table, write results.json and plots."""

from __future__ import annotations

import argparse
import time

from tqdm.auto import tqdm

from metaloop.cli import _build, _config, _output
from metaloop.evaluate import evaluate
from metaloop.train import train

# Per-family defaults. Sinusoid: MAML section 5.1 (MLP 40-40, inner SGD lr 0.01, Adam 1e-3,
# meta-batch 25), with iterations cut so that the six methods finish in < 5 min on 2 cores.
DEFAULTS = {
    "sinusoid": {
        "family": {"name": "sinusoid", "shots": 5, "queries": 10},   # train as tested: 5-shot
        "model": {"name": "mlp", "hidden": [40, 40]},
        "method": {"inner_lr": 0.01, "inner_steps": 1},
        "train": {"iterations": 4000, "meta_batch": 25, "lr": 1e-3, "checkpoint_every": 1000},
        # 600 held-out tasks as in the MAML paper; 100 query points per task for a low-noise MSE
        "eval": {"tasks": 600, "shots": 5, "queries": 100, "steps": list(range(11))},
    },
    "omniglot": {
        "family": {"name": "omniglot", "ways": 5, "shots": 1, "queries": 15, "split": "train"},
        "model": {"name": "conv4", "pool": "stride", "channels": 64},
        "method": {"inner_lr": 0.4, "inner_steps": 1},
        "train": {"iterations": 2000, "meta_batch": 32, "lr": 1e-3, "checkpoint_every": 500},
        "eval": {"tasks": 600, "steps": [0, 1, 3], "split": "test"},
    },
}
# Settings that depend on the ways: the MAML paper's 20-way Omniglot rule (5 inner steps at
# 0.1, meta-batch 16, evaluated after 5 steps) instead of the 5-way one.
WAYS_DEFAULTS = {
    ("omniglot", 20): {"method": {"inner_lr": 0.1, "inner_steps": 5},
                       "train": {"meta_batch": 16}, "eval": {"steps": [0, 1, 5]}},
}
# Method-specific settings on top of the family's (Reptile takes several inner steps).
METHOD_OVERRIDES = {"reptile": {"inner_steps": 5}, "anil": {}, "fomaml": {"first_order": True},
                    "metaoptnet": {"inner_steps": 10}}     # Newton steps of the SVM head
ALL = ("scratch", "pretrain", "maml", "fomaml", "reptile", "anil", "r2d2", "metaoptnet")
# Methods whose head is a classifier solved per task: not run on regression families.
CLASSIFICATION_ONLY = ("r2d2", "metaoptnet")
REGRESSION_FAMILIES = ("sinusoid",)


def register(sub) -> None:
    p = sub.add_parser("compare", help="meta-train all methods and baselines; compare them",
                       description=__doc__)
    p.add_argument("family", nargs="?", default="sinusoid", help="sinusoid (default), omniglot")
    p.add_argument("--methods", help=f"comma list from {','.join(ALL)} (default: all that "
                   f"apply to the family; {','.join(CLASSIFICATION_ONLY)} need classification)")
    p.add_argument("--iterations", type=int, help="meta-training iterations per method")
    p.add_argument("--meta-batch", type=int, help="tasks per meta-batch")
    p.add_argument("--ways", type=int, help="classes per task (classification families)")
    p.add_argument("--shots", type=int, help="support examples per class (or per task)")
    p.add_argument("--tasks", type=int, help="held-out evaluation tasks")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--config", help="TOML file overriding the family defaults")
    p.add_argument("--out", default="runs/compare", help="output directory")
    p.add_argument("--no-progress", action="store_true")
    p.set_defaults(func=run)


def _config_for(args) -> dict:
    if args.family not in DEFAULTS:
        raise ValueError(f"unknown family {args.family!r}; choose one of {sorted(DEFAULTS)}")
    cfg = _config.merge(DEFAULTS[args.family], {"train": {"seed": args.seed}})
    if args.ways is not None and (args.family, args.ways) in WAYS_DEFAULTS:
        cfg = _config.merge(cfg, WAYS_DEFAULTS[(args.family, args.ways)])
    if args.config:
        _config.load(args.config)  # validates the file, naming it; defaults are not merged:
        with open(args.config, "rb") as f:  # only the keys it sets override the family's
            cfg = _config.merge(cfg, _config.tomllib.load(f))
    over = {"train": {}, "family": {}, "eval": {}}
    if args.iterations is not None:
        over["train"]["iterations"] = args.iterations
    if args.meta_batch is not None:
        over["train"]["meta_batch"] = args.meta_batch
    if args.ways is not None:
        over["family"]["ways"] = args.ways
    if args.shots is not None:
        over["family"]["shots"] = args.shots
        over["eval"]["shots"] = args.shots
    if args.tasks is not None:
        over["eval"]["tasks"] = args.tasks
    return _config.validate(_config.merge(cfg, over))


def _methods(text: str | None, family: str) -> list[str]:
    regression = family in REGRESSION_FAMILIES
    if text is None:
        return [m for m in ALL if not (regression and m in CLASSIFICATION_ONLY)]
    methods = [m.strip() for m in text.split(",") if m.strip()]
    bad = [m for m in methods if m not in ALL]
    if bad or not methods:
        raise ValueError(f"unknown method(s) {bad or text!r}; choose from {list(ALL)}")
    wrong = [m for m in methods if regression and m in CLASSIFICATION_ONLY]
    if wrong:
        raise ValueError(f"method(s) {wrong} need a classification family, not {family!r}")
    return methods


def run(args: argparse.Namespace) -> int:
    cfg = _config_for(args)
    methods = _methods(args.methods, cfg["family"]["name"])
    for key in ("iterations", "meta_batch"):
        if cfg["train"][key] <= 0:
            raise ValueError(f"--{key.replace('_', '-')} must be positive, got {cfg['train'][key]}")
    out = _output.prepare_out(args.out)
    family = _build.build_family(cfg["family"])
    heldout = _build.eval_family(cfg, family)
    results, learners, timing = {}, {}, {}
    for name in tqdm(methods, desc="methods", disable=args.no_progress):
        # keys of the MAML family that a --config may set: off for the other methods
        off = ({} if name in _config.MAML_FAMILY else
               {k: False for k in _config.MAML_ONLY})
        if name not in _config.MAML_FAMILY and cfg["method"].get("batching") == "threads":
            off["batching"] = "auto"
        mcfg = _config.merge(cfg, {"method": {"name": name, **off,
                                              **METHOD_OVERRIDES.get(name, {})}})
        mcfg = _config.validate(mcfg)
        learner = _build.build_learner(mcfg, family)
        t0 = time.perf_counter()
        tc = mcfg["train"]
        train(learner, _build.training_family(mcfg, family), iterations=tc["iterations"],
              meta_batch=tc["meta_batch"],
              lr=tc["lr"], lr_schedule=tc["lr_schedule"],
              clip_grad_norm=tc["clip_grad_norm"], seed=tc["seed"],
              out_dir=out / "runs" / name,
              checkpoint_every=tc["checkpoint_every"], config=mcfg,
              progress=not args.no_progress, desc=name)
        t1 = time.perf_counter()
        ec = mcfg["eval"]
        results[name] = evaluate(learner, heldout, tasks=ec["tasks"], steps=ec["steps"],
                                 seed=ec["seed"])
        timing[name] = {"train_s": t1 - t0, "eval_s": time.perf_counter() - t1}
        learners[name] = learner
    _report(cfg, results, learners, heldout, out, timing)
    return 0


def _report(cfg, results, learners, heldout, out, timing) -> None:
    metric = "accuracy" if "accuracy" in next(iter(results.values())) else "loss"
    fam = cfg["family"]["name"]
    print(f"\n{fam}: held-out query {metric} (mean ± 95% CI over {cfg['eval']['tasks']} tasks)")
    print(_output.table(results, metric))
    _output.write_json(out / "results.json", {
        "family": fam, "config": cfg, "metric": metric,
        "methods": {k: _output.strip_per_task(v) for k, v in results.items()}})
    _output.write_json(out / "timing.json", timing)
    title = f"{fam}: {'MSE' if metric == 'loss' else metric} after adaptation"
    _output.plot_curves(results, metric, out / f"{metric}_vs_steps.png", title)
    if fam == "sinusoid":
        from metaloop.cli._sinusoid_plot import plot_fits
        plot_fits(learners, heldout, cfg["eval"]["seed"], out / "fits.png")
    print(f"\nwrote {out / 'results.json'} and plots in {out}")

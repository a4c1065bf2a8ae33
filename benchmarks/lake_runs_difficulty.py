"""How much easier Lake's 20 official one-shot runs are than tasks built the same way at random.

Lake's runs (``all_runs.zip``) are 20-way within-alphabet one-shot tasks whose 20 training
drawings are all by one drawer and whose 20 test drawings are all by another. metaloop's
generated tasks (``metaloop eval --within-alphabet --drawers shared``) are built the same
way, with the alphabet, the 20 characters and the two drawers drawn at random. This script
matches every drawing of the runs to the evaluation set (each is one of its images), then
scores one trained run on four sets of tasks, all in the runs' 10 alphabets and with the
same scoring (``metaloop eval``'s default, transductive BatchNorm, no shifts):

- ``official``: the 20 runs themselves, rebuilt from the evaluation set's images;
- ``characters``: each run's 20 characters, two other drawers drawn at random;
- ``drawers``: each run's two drawers, 20 other characters of its alphabet drawn at random;
- ``random``: the run's alphabet, characters and drawers all drawn at random.

Each task's error (%) is a record's ``per_task`` (table ``challenge-official-difficulty``).
The gap between ``official`` and ``random`` is how much the choice of the runs' characters
and drawers lowers the error, beyond what their alphabets do.

    unzip all_runs.zip -d all_runs
    metaloop --threads 1 train --config configs/omniglot_challenge_pilot28_6k_cpu.toml \\
        --out runs/challenge_pilot28_6k
    python benchmarks/lake_runs_difficulty.py runs/challenge_pilot28_6k --lake-runs all_runs \\
        --config configs/omniglot_challenge_pilot28_6k_cpu.toml --records docs/results
"""

from __future__ import annotations

import argparse
import datetime
import shlex
import sys
from pathlib import Path

import torch

import metaloop as ml
from metaloop.data.lake_runs import read_lake_runs
from metaloop.evaluate.heldout import mean_ci
from metaloop.evaluate.records import _run_budget, cpu_device, write_record
from metaloop.recipes import predict as P
from metaloop.runs import load_run
from metaloop.tasks.omniglot import episode_batch

SETS = {
    "official": "Lake's 20 official runs, rebuilt from the evaluation set's images",
    "characters": "each run's 20 characters, its two drawers replaced by two drawn at random",
    "drawers": "each run's two drawers, its 20 characters replaced by 20 of its alphabet "
               "drawn at random",
    "random": "each run's alphabet, with 20 characters and two drawers drawn at random",
}


def match_drawings(fam, run, lake_root) -> list[tuple[list[tuple[int, int]], list[int]]]:
    """Each official run as ``(supports, query_of)``: the (class, drawing) of its training
    drawings in class order, and, per class, the drawing of its test drawing. A drawing is
    matched to the evaluation image nearest to it as the run's learner reads it (L1 over
    the pixels); a match farther than rounding is refused."""
    tf = P._checked_transform(run, None, 0, 0)
    size = tf["image_size"]
    store = fam.images.reshape(-1, size * size).float() / 255.0     # [C*20, H*W]

    def where(f) -> tuple[int, int]:
        x = P._as_trained(tf, P.load_image(f, size, tf["invert"], 1)[None]).reshape(-1)
        d = (store - x).abs().sum(1)
        best = int(d.argmin())
        if float(d[best]) > 0.05 * size:
            raise ValueError(f"{f} matches no evaluation image (nearest L1 {float(d[best]):.2f})")
        return best // 20, best % 20

    out = []
    for lake in read_lake_runs(lake_root):
        sup = [where(f) for f in lake.support]
        qry = {lab: where(lake.query[i]) for i, lab in enumerate(lake.labels)}
        if any(qry[j][0] != sup[j][0] for j in range(len(sup))):
            raise ValueError(f"{lake.name}: a test drawing's class is not its label's")
        out.append((sup, [qry[j][1] for j in range(len(sup))]))
    return out


def task_sets(fam, runs, per_run: int, seed: int) -> dict[str, tuple[torch.Tensor, ...]]:
    """Each set's tasks as (classes [n, W], support drawing [n, W], query drawing [n, W]), W
    the runs' ways (20 in Lake's; every run must have the same)."""
    g = torch.Generator().manual_seed(seed)
    alpha = fam.class_alphabet

    def pair(n: int) -> tuple[torch.Tensor, torch.Tensor]:
        s = torch.randint(0, 20, (n,), generator=g)
        return s, (s + torch.randint(1, 20, (n,), generator=g)) % 20   # two distinct drawers

    ways = len(runs[0][0])

    def chars(c0: int, n: int) -> torch.Tensor:
        pool = (alpha == alpha[c0]).nonzero().flatten()
        return torch.stack([pool[torch.randperm(len(pool), generator=g)[:ways]]
                            for _ in range(n)])

    cls = torch.tensor([[c for c, _ in sup] for sup, _ in runs])            # [20, 20]
    ds = torch.tensor([[d for _, d in sup] for sup, _ in runs])
    dq = torch.tensor([q for _, q in runs])

    def rep(t: torch.Tensor) -> torch.Tensor:                   # each run's row per_run times
        return t.repeat_interleave(per_run, 0)

    out = {"official": (cls, ds, dq)}
    s, q = pair(len(runs) * per_run)
    out["characters"] = (rep(cls), s[:, None].expand(-1, ways), q[:, None].expand(-1, ways))
    drawn = torch.cat([chars(int(c[0]), per_run) for c in cls])
    out["drawers"] = (drawn, rep(ds), rep(dq))
    drawn = torch.cat([chars(int(c[0]), per_run) for c in cls])
    s, q = pair(len(runs) * per_run)
    out["random"] = (drawn, s[:, None].expand(-1, ways), q[:, None].expand(-1, ways))
    return out


def errors(learner, fam, classes, ds, dq) -> list[float]:
    """Each task's error (%), scored as ``metaloop eval`` scores generated tasks."""
    idx = torch.stack([classes * 20 + ds, classes * 20 + dq], -1)         # [n, W, 2]
    batch = episode_batch(fam._images, classes, idx, 1)

    class Fixed:
        kind, ways, shots, queries, at = "classification", classes.shape[1], 1, 1, 0

        def sample(self, n, generator=None):
            self.at += n
            return batch.slice(self.at - n, self.at)

    res = ml.evaluate(learner, Fixed(), tasks=len(classes), steps=(0,))
    return [round(100.0 * (1.0 - a), 6) for a in res["per_task"]["accuracy"][0]]


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("checkpoint", help="a trained Omniglot run (28x28 or any size)")
    ap.add_argument("--lake-runs", required=True, help="all_runs.zip unpacked")
    ap.add_argument("--data-root", default="", help="Omniglot (default: the usual search)")
    ap.add_argument("--tasks-per-run", type=int, default=25)
    ap.add_argument("--seed", type=int, default=7)
    ap.add_argument("--records", default="", help="write one record per set here")
    ap.add_argument("--config", default="",
                    help="the config the run was trained with (metaloop --threads 1 train), "
                         "named in the records with the training command")
    args = ap.parse_args(argv)
    run = load_run(args.checkpoint)
    size = run.config["family"]["image_size"]
    fam = ml.tasks.Omniglot(args.data_root or None, split="evaluation", ways=20, shots=1,
                            queries=1, image_size=size)
    runs = match_drawings(fam, run, args.lake_runs)
    command = "python benchmarks/lake_runs_difficulty.py " + shlex.join(
        argv if argv is not None else sys.argv[1:])
    if args.config:                            # the run's training, as the record's budget
        command = (f"metaloop --threads 1 train --config {shlex.quote(args.config)} --out "
                   f"{shlex.quote(args.checkpoint)} && {command}")
    for order, (name, (c, s, q)) in enumerate(task_sets(fam, runs, args.tasks_per_run,
                                                         args.seed).items()):
        per_task = errors(run.learner, fam, c, s, q)
        mean, ci = mean_ci(per_task)
        print(f"{name:10s} {mean:6.2f} ± {ci:.2f}% ({len(per_task)} tasks): {SETS[name]}")
        if args.records:
            write_record(
                Path(args.records) / f"omniglot_challenge_difficulty_{name}.json",
                table="challenge-official-difficulty", row=f"{name}: {SETS[name]}",
                metric="within-alphabet 20-way 1-shot error (%)", unit="%",
                mean=round(mean, 2), ci95=round(ci, 2), n=len(per_task), digits=2,
                per_task=per_task, order=order,
                budget=_run_budget(Path(args.checkpoint), "cpu")[1],
                device=cpu_device(), torch=torch.__version__.split("+")[0],
                date=datetime.date.today().isoformat(),
                config=args.config or args.checkpoint,
                command=command, published=None,
                note=("every task in one of the official runs' 10 evaluation alphabets, its "
                      "training drawings by one drawer and its test drawings by another; "
                      "scored as metaloop eval scores generated tasks (transductive "
                      "BatchNorm, no shifts, no refinement)"))
    return 0


if __name__ == "__main__":
    sys.exit(main())

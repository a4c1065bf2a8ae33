"""Run by test_resume_buffers.py under ``torchrun --nproc_per_node 2``: a user's model with
torch BatchNorm (``bn``) and one with dropout (``dropout``), each trained 4 iterations whole,
and 2 then resumed to 4, with validation, on a meta-batch of 5 (shards of 2 and 3 tasks);
each rank writes ``OUT/rank<r>.safetensors`` with the final state_dicts
(``<kind>.whole.<name>``, ``<kind>.resumed.<name>``)."""

import sys
from pathlib import Path

import torch
from safetensors.torch import save_file
from torch import nn

import metaloop as ml
from metaloop.train import distributed

out = Path(sys.argv[1])
owner = distributed.init("cpu", timeout_s=60)
rank, world = distributed.rank_world()
assert owner and world == 2, (owner, world)


def run(kind: str, run_dir: Path, iterations: int, resume: bool = False) -> dict:
    torch.manual_seed(0)
    middle = nn.BatchNorm1d(8) if kind == "bn" else nn.Dropout(0.3)
    model = nn.Sequential(nn.Linear(1, 8), middle, nn.ReLU(), nn.Linear(8, 1))
    learner = ml.meta.MAML(model.double(), 0.01, 1, batching="loop")
    ml.train(learner, ml.tasks.Sinusoid(4, 4), iterations=iterations, meta_batch=5, seed=3,
             out_dir=run_dir, resume=resume, checkpoint_every=2, progress=False,
             val_family=ml.tasks.Sinusoid(4, 4), val_every=1, val_tasks=2)
    return {k: v.clone() for k, v in learner.model.state_dict().items()}


states = {}
for kind in ("bn", "dropout"):
    states.update({f"{kind}.whole.{k}": v for k, v in run(kind, out / kind, 4).items()})
    run(kind, out / f"{kind}_cut", 2)
    states.update({f"{kind}.resumed.{k}": v
                   for k, v in run(kind, out / f"{kind}_cut", 4, resume=True).items()})
save_file(states, str(out / f"rank{rank}.safetensors"))
distributed.barrier("the end of the worker")   # no rank leaves while gloo still talks
distributed.destroy()

"""Two gloo ranks started in-process for test_dist_quick.py (``torch.multiprocessing``, spawn,
a ``FileStore``): each rank runs every case in ``CASES`` inside the process group and saves
what it holds (tensors, and the ``stop`` case's message) to ``OUT/rank<r>.pt``; the test
compares that with one process's arithmetic over the whole meta-batch. The learners and
meta-batches are built here, the same way in the ranks and in the test.

Every meta-batch has ``META_BATCH = 5`` tasks: shards of 2 and 3 on 2 ranks, so the ranks'
weights (2/5 and 3/5) differ from ``1 / world``.
"""

from __future__ import annotations

import datetime
import os
import signal
import warnings
from pathlib import Path

import torch
import torch.distributed as dist
from torch import nn

import metaloop as ml
from metaloop.meta import MAML, Reptile
from metaloop.models import MLP
from metaloop.train import distributed
from metaloop.train.loop import _step_gradient, _StopSignals

WORLD = 2
META_BATCH = 5
SEED = 3
STEP_SEED = 5                 # the global RNG at the start of a step, on every rank
CLIP = 0.05                   # well below the meta-gradient norms of ``train_clip``
F64 = torch.float64


# --- learners and meta-batches (the ranks' and the test's) ---------------------------------

def reduce_inputs(rank: int) -> tuple[dict[str, torch.Tensor], dict[str, float]]:
    """Rank ``rank``'s shard gradient (three parameters, a 0-d one among them) and metrics."""
    g = torch.Generator().manual_seed(100 + rank)
    grads = {"w": torch.randn(2, 3, generator=g, dtype=F64),
             "b": torch.randn(3, generator=g, dtype=F64),
             "s": torch.randn((), generator=g, dtype=F64)}
    return grads, {"loss": 1.0 + 3.0 * rank, "accuracy": 0.25 + 0.5 * rank}


# reduce_step's calls: (the ranks that asked to stop, the ranks that drew) -> what all agree
FLAG_CALLS = [((1,), (0,)), ((0,), ()), ((), (1,)), ((), ())]
FLAGS_AGREED = [[True, True], [True, False], [False, True], [False, False]]


def weight(rank: int) -> float:
    lo, hi = distributed.shard_bounds(META_BATCH, rank, WORLD)
    return (hi - lo) / META_BATCH


def maml() -> MAML:
    torch.manual_seed(0)
    return MAML(MLP(1, (16, 16), 1).double(), 0.01, 1)


def reptile() -> Reptile:
    """Reptile with inner mini-batches: each task's order is drawn from the global RNG."""
    torch.manual_seed(0)
    return Reptile(MLP(1, (16,), 1).double(), 0.02, 3, inner_batch=4)


def dropout() -> MAML:
    """A user's network with dropout: a step draws from the global RNG."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(1, 8), nn.Dropout(0.3), nn.ReLU(), nn.Linear(8, 1))
    return MAML(model.double(), 0.01, 1, batching="loop")


def batchnorm() -> MAML:
    """A user's network with torch BatchNorm: its running statistics are buffers."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(1, 8), nn.BatchNorm1d(8), nn.ReLU(), nn.Linear(8, 1))
    return MAML(model.double(), 0.01, 1, batching="loop")


def family(shots: int = 5):
    return ml.tasks.Sinusoid(shots, 5)


def batch(shots: int = 5) -> ml.TaskBatch:
    """The first meta-batch ``ml.train(seed=SEED)`` draws."""
    return family(shots).sample(META_BATCH, generator=torch.Generator().manual_seed(SEED)).to(
        dtype=F64)


TRAIN = {       # name -> (learner, family shots, ml.train keyword arguments)
    "train_clip": (maml, 5, {"iterations": 3, "optimizer": "sgd", "lr": 0.05,
                             "clip_grad_norm": CLIP}),
    "train_reptile": (reptile, 10, {"iterations": 2, "lr": 0.01}),
    "train_bn": (batchnorm, 5, {"iterations": 1, "optimizer": "sgd", "lr": 0.05}),
}


def train(name: str, learner=None):
    """Run ``TRAIN[name]`` (in one process, or on this rank); returns (learner, result)."""
    make, shots, kwargs = TRAIN[name]
    lrn = make() if learner is None else learner
    result = ml.train(lrn, family(shots), meta_batch=META_BATCH, seed=SEED, progress=False,
                      **kwargs)
    return lrn, result


# --- what each rank runs --------------------------------------------------------------------

def _case_reduce(rank: int) -> dict[str, torch.Tensor]:
    grads, metrics = reduce_inputs(rank)
    out = {}
    for call, (stop, drew) in enumerate(FLAG_CALLS):
        stop, drew = rank in stop, rank in drew
        got, m, agreed, drew_any = distributed.reduce_step(
            grads, metrics, weight(rank), stop, f"iteration {call + 1}", drew)
        out.update({f"{call}.grad.{n}": g.clone() for n, g in got.items()})
        out.update({f"{call}.metric.{k}": torch.tensor(v, dtype=F64) for k, v in m.items()})
        out[f"{call}.flags"] = torch.tensor([agreed, drew_any])
    out["inputs_kept"] = torch.tensor(all(torch.equal(grads[n], g)
                                          for n, g in reduce_inputs(rank)[0].items()))
    return out


def _case_step(rank: int) -> dict[str, torch.Tensor]:
    out = {}
    for name, make, b in (("maml", maml, batch()), ("reptile", reptile, batch(10)),
                          ("dropout", dropout, batch())):
        torch.manual_seed(STEP_SEED)
        grads, metrics, agreed = _step_gradient(make(), b, (rank, WORLD), _StopSignals(), 1)
        out.update({f"{name}.grad.{n}": g for n, g in grads.items()})
        out.update({f"{name}.metric.{k}": torch.tensor(v, dtype=F64)
                    for k, v in metrics.items()})
        out[f"{name}.agreed"] = torch.tensor(agreed)
        out[f"{name}.rng"] = torch.get_rng_state()
    return out


def _case_train(rank: int) -> dict[str, torch.Tensor]:
    out = {}
    for name in TRAIN:
        lrn = TRAIN[name][0]()
        if rank == 1:               # other parameters and random state on rank 1: the run
            with torch.no_grad():   # starts from rank 0's
                for p in lrn.model.parameters():
                    p.add_(1.0)
            torch.rand(3)
        lrn, result = train(name, lrn)
        out.update({f"{name}.state.{k}": v.clone() for k, v in lrn.model.state_dict().items()})
        out.update({f"{name}.last.{k}": torch.tensor(v, dtype=F64)
                    for k, v in result["last"].items()})
    return out


class CtrlCOnRank1:
    """Sinusoid tasks; Ctrl-C reaches rank 1 alone while it samples the second meta-batch."""

    def __init__(self, rank: int):
        self.family, self.rank, self.calls = family(), rank, 0

    def sample(self, n, generator=None):
        self.calls += 1
        if self.rank == 1 and self.calls == 2:
            signal.raise_signal(signal.SIGINT)
        return self.family.sample(n, generator=generator)


def _case_stop(rank: int) -> dict:
    lrn = maml()
    try:
        ml.train(lrn, CtrlCOnRank1(rank), iterations=5, meta_batch=META_BATCH, seed=SEED,
                 progress=False)
        text = "no KeyboardInterrupt"
    except KeyboardInterrupt as e:
        text = str(e)
    return {"message": text, **{f"param.{n}": p.detach() for n, p in
                                lrn.model.named_parameters()}}


CASES = {"reduce": _case_reduce, "step": _case_step, "train": _case_train, "stop": _case_stop}


def _rank_main(rank: int, world: int, out: str) -> None:
    warnings.simplefilter("error")              # as the tests run
    torch.set_num_threads(1)
    store = dist.FileStore(os.path.join(out, "store"), world)
    dist.init_process_group("gloo", store=store, rank=rank, world_size=world,
                            timeout=datetime.timedelta(seconds=60))
    try:
        results = {}
        for case, fn in CASES.items():
            results.update({f"{case}.{k}": v for k, v in fn(rank).items()})
        torch.save(results, os.path.join(out, f"rank{rank}.pt"))
        dist.barrier()                          # no rank leaves while gloo still talks
    finally:
        dist.destroy_process_group()


def launch(out: Path) -> list[dict]:
    """Run every case on ``WORLD`` ranks; returns each rank's results, by rank. A rank that
    raises makes this raise (with its traceback), and the other ranks are stopped."""
    out.mkdir(parents=True, exist_ok=True)
    torch.multiprocessing.start_processes(_rank_main, args=(WORLD, str(out)), nprocs=WORLD,
                                          join=True, start_method="spawn")
    return [torch.load(out / f"rank{r}.pt", weights_only=True) for r in range(WORLD)]

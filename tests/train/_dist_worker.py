"""Run by test_distributed.py under ``torchrun --nproc_per_node 2``: distributed results.

Writes, on rank 0, ``OUT/dist.safetensors`` with each learner's all-reduced meta-gradient of
one meta-batch (``<kind>.grad.<name>``) and its parameters after 5 distributed training
iterations (``<kind>.param.<name>``), all in float64; then runs ``metaloop train`` (the CLI)
inside the same process group into ``OUT/cli``, and a run that Ctrl-C stops on rank 1 alone
into ``OUT/stop``.
"""

import signal
import sys
from pathlib import Path

from safetensors.torch import save_file

import metaloop as ml
from metaloop.cli.main import main
from metaloop.train import distributed
from metaloop.train.loop import _step_gradient, _StopSignals

sys.path.insert(0, str(Path(__file__).parent))
from _dist_common import KINDS, META_BATCH, SEED, batch, family, learner  # noqa: E402

out = Path(sys.argv[1])
owner = distributed.init("cpu", timeout_s=60)
rank, world = distributed.rank_world()
assert owner and world == 2, (owner, world)
results = {}
for kind in KINDS:
    lrn = learner(kind)
    grads, _, _ = _step_gradient(lrn, batch(kind), (rank, world), _StopSignals(), 1)
    results.update({f"{kind}.grad.{n}": g for n, g in grads.items()})
    lrn = learner(kind)
    ml.train(lrn, family(kind), iterations=5, meta_batch=META_BATCH, seed=SEED,
             progress=False, out_dir=out / kind if kind == "maml" else None, checkpoint_every=2)
    results.update({f"{kind}.param.{n}": p.detach() for n, p in lrn.model.named_parameters()})
assert main(["train", "--config", sys.argv[2], "--out", str(out / "cli"), "--no-progress"]) == 0


class CtrlCOnRank1:
    """Ctrl-C reaches rank 1 alone, while it samples the third meta-batch."""

    def __init__(self):
        self.family, self.calls = family("maml"), 0

    def sample(self, n, generator=None):
        self.calls += 1
        if rank == 1 and self.calls == 3:
            signal.raise_signal(signal.SIGINT)
        return self.family.sample(n, generator=generator)


try:
    ml.train(learner("maml"), CtrlCOnRank1(), iterations=50, meta_batch=META_BATCH,
             progress=False, out_dir=out / "stop", checkpoint_every=100)
    raise AssertionError("no KeyboardInterrupt")
except KeyboardInterrupt as e:     # every rank stops after the same iteration
    who = "SIGINT" if rank == 1 else "another rank"
    assert str(e) == f"stopped by {who} after iteration 3; checkpoint in {out / 'stop'}", e
if rank == 0:
    save_file(results, str(out / "dist.safetensors"))
distributed.barrier("the end of the worker")   # no rank leaves while gloo still talks
distributed.destroy()

"""Two gloo ranks in-process (``_dist_quick.launch``: one spawn for the module, a few seconds):
the all-reduced meta-gradient, metrics and flags, the sharded step, and short training runs
(clipping, Reptile's per-task draws, BatchNorm buffers, dropout's RNG) against one process's
arithmetic over the whole meta-batch. The torchrun tests (test_distributed.py,
test_dist_resume.py, test_resume_buffers.py) check the same through the CLI and resumes."""

import sys
from pathlib import Path

import pytest
import torch
import torch.distributed as dist

sys.path.insert(0, str(Path(__file__).parent))
import _dist_quick as q  # noqa: E402

import metaloop as ml  # noqa: E402
from metaloop.train import distributed  # noqa: E402
from metaloop.train.loop import model_buffers, shard_gradient  # noqa: E402

pytestmark = pytest.mark.skipif(not (dist.is_available() and dist.is_gloo_available()),
                                reason="this torch build has no gloo backend")


@pytest.fixture(scope="module")
def ranks(tmp_path_factory) -> list[dict]:
    return q.launch(tmp_path_factory.mktemp("dist_quick"))


def _close(got: torch.Tensor, want: torch.Tensor, atol: float, what: str) -> None:
    assert got.dtype == want.dtype and got.shape == want.shape, (what, got, want)
    torch.testing.assert_close(got, want, rtol=0, atol=atol, msg=what)


def _of(results: dict, prefix: str) -> dict[str, torch.Tensor]:
    return {k[len(prefix):]: v for k, v in results.items() if k.startswith(prefix)}


def test_reduce_step_sums_the_ranks_means_weighted_by_shard_size(ranks):
    """Shards of 2 and 3 tasks: weights 2/5 and 3/5, not 1/2; every parameter, 0-d too."""
    inputs = [q.reduce_inputs(r) for r in range(q.WORLD)]
    assert q.weight(0) == 0.4 and q.weight(1) == 0.6
    want = {n: sum(g[n] * q.weight(r) for r, (g, _) in enumerate(inputs))
            for n in inputs[0][0]}
    metrics = {k: sum(m[k] * q.weight(r) for r, (_, m) in enumerate(inputs))
               for k in inputs[0][1]}
    for rank, res in enumerate(ranks):
        for call in range(len(q.FLAG_CALLS)):
            got = _of(res, f"reduce.{call}.grad.")
            assert sorted(got) == sorted(want), (rank, call, sorted(got))
            for n, g in want.items():
                _close(got[n], g, 1e-14, f"rank {rank} call {call} {n}")
            got_m = _of(res, f"reduce.{call}.metric.")
            assert sorted(got_m) == sorted(metrics)
            for k, v in metrics.items():
                assert float(got_m[k]) == pytest.approx(float(v), rel=0, abs=1e-14), (rank, k)
        assert bool(res["reduce.inputs_kept"]), "reduce_step changed its input gradients"


def test_reduce_step_stops_and_reports_draws_if_any_rank_does(ranks):
    """Each of stop and drew, from rank 0 alone, from rank 1 alone, from neither."""
    for rank, res in enumerate(ranks):
        for call, want in enumerate(q.FLAGS_AGREED):
            assert res[f"reduce.{call}.flags"].tolist() == want, (rank, q.FLAG_CALLS[call])


@pytest.mark.parametrize("name", ["maml", "reptile"])
def test_sharded_step_gives_the_whole_batch_gradient_and_metrics(ranks, name):
    """The trainer's step (``_step_gradient``) on 2 ranks equals ``meta_gradient`` of the
    whole meta-batch in one process; Reptile's per-task draws (inner mini-batches) are the
    ones a single process makes, and every rank ends in its RNG state."""
    make, b = (q.maml, q.batch()) if name == "maml" else (q.reptile, q.batch(10))
    torch.manual_seed(q.STEP_SEED)
    grads, metrics = make().meta_gradient(b, with_metrics=True)
    rng = torch.get_rng_state()
    assert all(g.abs().max() > 1e-3 for g in grads.values())
    for rank, res in enumerate(ranks):
        got = _of(res, f"step.{name}.grad.")
        assert sorted(got) == sorted(grads), (rank, sorted(got))
        for n, g in grads.items():
            _close(got[n], g, 1e-10, f"rank {rank} {name} {n}")
        got_m = _of(res, f"step.{name}.metric.")
        assert sorted(got_m) == sorted(metrics)
        for k, v in metrics.items():
            assert float(got_m[k]) == pytest.approx(float(v), rel=0, abs=1e-10), (rank, name, k)
        assert not bool(res[f"step.{name}.agreed"])
        assert torch.equal(res[f"step.{name}.rng"], rng), (rank, name)


def test_a_step_that_drew_leaves_every_rank_in_rank0s_rng_state(ranks):
    """Dropout draws for each rank's own tasks; afterwards every rank holds rank 0's state
    (as a resume restores it), not its own."""
    states = []
    for r in range(q.WORLD):
        torch.manual_seed(q.STEP_SEED)
        shard_gradient(q.dropout(), q.batch(), *distributed.shard_bounds(q.META_BATCH, r,
                                                                          q.WORLD))
        states.append(torch.get_rng_state())
    assert not torch.equal(states[0], states[1])
    for rank, res in enumerate(ranks):
        assert torch.equal(res["step.dropout.rng"], states[0]), rank


@pytest.mark.parametrize("name", ["train_clip", "train_reptile", "train_bn"])
def test_two_rank_training_matches_one_process(ranks, name):
    """``ml.train`` on 2 ranks (rank 1 built with other parameters and global random state:
    rank 0's are sent; Reptile's per-task draws depended on rank 1's own state) ends
    with the parameters and last metrics of the one-process run. ``train_clip`` clips the
    averaged meta-gradient with SGD (Adam's first steps would hide a scale), ``train_reptile``
    draws per task from the global RNG, ``train_bn`` has BatchNorm buffers."""
    lrn, result = q.train(name)
    if name == "train_clip":            # the clipping acted on every step
        assert result["last"]["grad_norm"] > 5 * q.CLIP
    params = dict(lrn.model.named_parameters())
    for rank, res in enumerate(ranks):
        state = _of(res, f"train.{name}.state.")
        assert sorted(state) == sorted(lrn.model.state_dict()), rank
        for n, p in params.items():
            _close(state[n], p.detach(), 1e-9, f"rank {rank} {name} {n}")
        last = _of(res, f"train.{name}.last.")
        assert sorted(last) == sorted(result["last"])
        for k, v in result["last"].items():
            assert float(last[k]) == pytest.approx(float(v), rel=0, abs=1e-9), (rank, name, k)


def test_batchnorm_buffers_after_a_step_are_rank0s_on_every_rank(ranks):
    """Each rank updates BatchNorm's running statistics on its own shard; after the step
    every rank holds rank 0's (2 tasks), not its own nor the whole batch's."""
    shards = []
    for r in range(q.WORLD):
        lrn = q.batchnorm()
        shard_gradient(lrn, q.batch(), *distributed.shard_bounds(q.META_BATCH, r, q.WORLD))
        shards.append({n: b.clone() for n, b in model_buffers(lrn.model).items()})
    assert sorted(shards[0]) == ["1.num_batches_tracked", "1.running_mean", "1.running_var"]
    assert not any(torch.equal(shards[0][n], shards[1][n]) for n in shards[0])
    for rank, res in enumerate(ranks):
        state = _of(res, "train.train_bn.state.")
        for n, b in shards[0].items():
            _close(state[n], b, 1e-12, f"rank {rank} {n}")


def test_ctrl_c_on_one_rank_stops_every_rank_after_the_same_iteration(ranks):
    """Rank 1 alone gets Ctrl-C while it draws the second meta-batch: both ranks finish
    iteration 2 (the step applied, as in one process) and stop there."""
    lrn = q.maml()
    ml.train(lrn, q.family(), iterations=2, meta_batch=q.META_BATCH, seed=q.SEED,
             progress=False)
    for rank, res in enumerate(ranks):
        who = "SIGINT" if rank == 1 else "another rank"
        assert res["stop.message"] == f"stopped by {who} after iteration 2", rank
        for n, p in lrn.model.named_parameters():
            _close(res[f"stop.param.{n}"], p.detach(), 1e-9, f"rank {rank} {n}")

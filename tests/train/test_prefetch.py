"""Prefetching the next meta-batch in a background thread changes no number: the same
parameters, metrics and checkpoints as drawing in the training thread, exact resume, and the
thread's errors raised in the caller."""

import json
import signal
import threading

import pytest
import torch

import metaloop as ml
from metaloop.meta import MAML
from metaloop.models import MLP
from metaloop.train.checkpoint import latest_checkpoint, load_checkpoint
from metaloop.train.loop import _resolve_prefetch


def _learner():
    torch.manual_seed(0)
    return MAML(MLP(1, (8, 8), 1), 0.01, 1)


def _params(learner):
    return {n: p.detach().clone() for n, p in learner.model.named_parameters()}


def _same(a, b):
    assert a.keys() == b.keys() and all(torch.equal(a[n], b[n]) for n in a)


def _losses(run):
    return [json.loads(x)["loss"] for x in (run / "metrics.jsonl").read_text().splitlines()]


class Recording:
    """A sinusoid family that records the thread of each draw; ``fail_at``: the call that
    raises, ``sigint_at``: the call that sends this process a SIGINT."""

    kind, ways, num_classes, class_names = "regression", None, None, None

    def __init__(self, fail_at=0, sigint_at=0):
        self.fam, self.threads = ml.tasks.Sinusoid(5, 5), []
        self.fail_at, self.sigint_at = fail_at, sigint_at
        self.shots, self.queries = self.fam.shots, self.fam.queries

    def sample(self, n, generator=None):
        self.threads.append(threading.current_thread().name)
        if len(self.threads) == self.fail_at:
            raise OSError(f"cannot read image {len(self.threads)}.png")
        if len(self.threads) == self.sigint_at:
            signal.raise_signal(signal.SIGINT)
        return self.fam.sample(n, generator)


KW = dict(iterations=12, meta_batch=4, progress=False, checkpoint_every=5)


def test_prefetch_gives_the_same_run_and_draws_in_a_background_thread(tmp_path):
    runs = {}
    for prefetch in (False, True):
        fam, learner = Recording(), _learner()
        ml.train(learner, fam, out_dir=tmp_path / str(prefetch), prefetch=prefetch, **KW)
        runs[prefetch] = (learner, fam)
    _same(_params(runs[False][0]), _params(runs[True][0]))
    assert _losses(tmp_path / "False") == _losses(tmp_path / "True")
    main = threading.main_thread().name
    assert runs[False][1].threads == [main] * 12
    # the first batch is drawn by the training thread, the other 11 ahead by the prefetcher,
    # and none past the last iteration
    assert runs[True][1].threads[0] == main and len(runs[True][1].threads) == 12
    assert all(t.startswith("metaloop-prefetch") for t in runs[True][1].threads[1:])
    # the checkpoint (iteration 12) and the one before (10) hold the same generator state
    # as without prefetching
    for it in (10, 12):
        a = load_checkpoint(tmp_path / "False" / f"ckpt-{it:08d}")[0]["rng.tasks"]
        b = load_checkpoint(tmp_path / "True" / f"ckpt-{it:08d}")[0]["rng.tasks"]
        assert torch.equal(a, b)


def test_an_error_in_the_prefetch_thread_is_raised_at_its_iteration_and_resume_is_exact(
        tmp_path):
    full = _learner()
    ml.train(full, Recording(), out_dir=tmp_path / "ref", prefetch=False, **KW)
    fam = Recording(fail_at=8)                   # the batch of iteration 8, drawn during 7
    with pytest.raises(OSError, match=r"cannot read image 8\.png"):
        ml.train(_learner(), fam, out_dir=tmp_path / "run", prefetch=True, **KW)
    assert fam.threads[7].startswith("metaloop-prefetch")
    # iteration 7 finished and was logged; the checkpoint is the one of iteration 5
    assert len(_losses(tmp_path / "run")) == 7
    assert latest_checkpoint(tmp_path / "run").name == "ckpt-00000005"
    resumed = _learner()
    ml.train(resumed, Recording(), out_dir=tmp_path / "run", prefetch=True, resume=True, **KW)
    _same(_params(full), _params(resumed))
    assert _losses(tmp_path / "run") == _losses(tmp_path / "ref")


def test_a_prefetching_run_stopped_with_a_batch_drawn_ahead_resumes_exactly(tmp_path):
    full = _learner()
    ml.train(full, Recording(), out_dir=tmp_path / "ref", prefetch=True, **KW)
    fam = Recording(sigint_at=7)                 # Ctrl-C while the batch of 7 is drawn ahead
    with pytest.raises(KeyboardInterrupt, match="stopped by SIGINT"):
        ml.train(_learner(), fam, out_dir=tmp_path / "run", prefetch=True, **KW)
    stopped = load_checkpoint(tmp_path / "run")[1]["iteration"]
    assert stopped in (6, 7)    # the iteration in flight when the handler ran
    # the checkpoint holds the generator state before the batch drawn ahead: it equals the
    # state after `stopped` draws in the training thread
    g = torch.Generator().manual_seed(0)
    for _ in range(stopped):
        ml.tasks.Sinusoid(5, 5).sample(4, g)
    assert torch.equal(load_checkpoint(tmp_path / "run")[0]["rng.tasks"], g.get_state())
    resumed = _learner()
    ml.train(resumed, Recording(), out_dir=tmp_path / "run", prefetch=True, resume=True, **KW)
    _same(_params(full), _params(resumed))
    assert _losses(tmp_path / "run") == _losses(tmp_path / "ref")


def test_prefetch_auto_is_off_on_the_cpu_and_bad_values_are_named():
    model = MLP(1, (8,), 1)
    assert _resolve_prefetch("auto", ml.tasks.Sinusoid(), model) is False
    assert _resolve_prefetch(True, ml.tasks.Sinusoid(), model) is True
    with pytest.raises(ValueError, match="prefetch must be True, False or 'auto', got 'yes'"):
        ml.train(_learner(), ml.tasks.Sinusoid(), iterations=2, meta_batch=2,
                 progress=False, prefetch="yes")


def test_a_one_iteration_run_draws_nothing_ahead():
    fam = Recording()
    ml.train(_learner(), fam, iterations=1, meta_batch=2, progress=False, prefetch=True)
    assert fam.threads == [threading.main_thread().name]

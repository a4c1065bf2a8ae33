"""Identical runs write identical checkpoints: the same ``state_sha256``, whatever state the
process's global RNGs were in (a new run seeds Python's and NumPy's from its seed, a resume
restores them), and a resumed run ends with the uninterrupted run's state."""

import json
import random
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

import metaloop as ml
from metaloop.cli.main import main
from metaloop.meta import MAML
from metaloop.models import MLP
from metaloop.train.checkpoint import latest_checkpoint, load_checkpoint

sys.path.insert(0, str(Path(__file__).parent))
from _cli import write_config  # noqa: E402


def _state(run: Path) -> dict:
    return json.loads((latest_checkpoint(run) / "state.json").read_text())


def _disturb(seed: int) -> None:
    """Put the global RNGs in another state, as another process starts with."""
    random.seed(seed)
    np.random.seed(seed)


def test_two_identical_command_line_runs_store_the_same_state_sha256(tmp_path):
    cfg = write_config(tmp_path / "c.toml", iterations=3, meta_batch=2, checkpoint_every=2,
                       seed=4)
    for i, name in enumerate(("a", "b")):
        _disturb(100 + i)
        assert main(["train", "--config", str(cfg), "--out", str(tmp_path / name),
                     "--no-progress"]) == 0
    a, b = _state(tmp_path / "a"), _state(tmp_path / "b")
    assert a["state_sha256"] == b["state_sha256"]
    assert a["rng"] == b["rng"] and a["tensors_sha256"] == b["tensors_sha256"]
    assert {k: v for k, v in a.items() if k != "cpu_seconds"} \
        == {k: v for k, v in b.items() if k != "cpu_seconds"}


class _NoisySinusoid:
    """A user's family that adds noise from NumPy's global RNG to the query targets."""

    def __init__(self):
        self.family = ml.tasks.Sinusoid(5, 5)
        self.kind, self.shots, self.queries = "regression", 5, 5

    def sample(self, n, generator=None):
        b = self.family.sample(n, generator=generator)
        noise = torch.from_numpy(np.random.normal(size=tuple(b.query_y.shape))).float()
        return ml.TaskBatch(b.support_x, b.support_y, b.query_x, b.query_y + 0.1 * noise)

    def __getattr__(self, name):
        return getattr(self.family, name)


def _run(out: Path, iterations: int, resume: bool = False) -> MAML:
    torch.manual_seed(0)
    learner = MAML(MLP(1, (8, 8), 1), 0.01, 1)
    ml.train(learner, _NoisySinusoid(), iterations=iterations, meta_batch=3, progress=False,
             out_dir=out, checkpoint_every=2, resume=resume, seed=7)
    return learner


def test_a_resumed_run_ends_in_the_uninterrupted_runs_state_and_numbers(tmp_path):
    """A family that draws from NumPy's global RNG gives the same numbers in every run, and a
    resume (in a process whose global RNGs are elsewhere) restores what the uninterrupted run
    had: the same parameters, metrics and ``state_sha256``."""
    _disturb(1)
    full = _run(tmp_path / "full", 4)
    _disturb(2)
    _run(tmp_path / "part", 2)
    _disturb(3)
    resumed = _run(tmp_path / "part", 4, resume=True)
    a, b = _state(tmp_path / "full"), _state(tmp_path / "part")
    assert a["iteration"] == b["iteration"] == 4
    assert a["state_sha256"] == b["state_sha256"]
    for (n, p), q in zip(full.model.named_parameters(), resumed.model.parameters()):
        assert torch.equal(p, q), n
    logs = [[json.loads(x)["loss"] for x in (tmp_path / r / "metrics.jsonl").read_text()
             .splitlines()] for r in ("full", "part")]
    assert len(logs[0]) == 4 and logs[0] == logs[1]


def test_the_measured_cpu_seconds_are_outside_the_digest_and_the_rest_inside(tmp_path):
    """``cpu_seconds`` differs between identical runs: an edit of it is no corruption, an edit
    of anything else is named; a digest of the whole state, as metaloop stored it before it
    left the CPU seconds out, is still read."""
    import hashlib

    _run(tmp_path / "run", 2)
    sfile = latest_checkpoint(tmp_path / "run") / "state.json"
    state = json.loads(sfile.read_text())
    state["cpu_seconds"] = 1234.5
    sfile.write_text(json.dumps(state))
    assert load_checkpoint(tmp_path / "run")[1]["cpu_seconds"] == 1234.5
    body = {k: v for k, v in state.items() if k != "state_sha256"}
    state["state_sha256"] = hashlib.sha256(
        json.dumps(body, sort_keys=True, separators=(",", ":")).encode()).hexdigest()
    sfile.write_text(json.dumps(state))
    assert load_checkpoint(tmp_path / "run")[1]["cpu_seconds"] == 1234.5
    state["iteration"] = 3
    sfile.write_text(json.dumps(state))
    with pytest.raises(ValueError, match="is corrupt or was edited"):
        load_checkpoint(tmp_path / "run")


def test_a_runs_checkpoints_say_which_build_wrote_them(tmp_path):
    """``state.json`` stores metaloop's, torch's and Python's versions under ``software``,
    as ``metaloop --version`` prints them, inside the digest that load checks."""
    import platform

    from metaloop.train.checkpoint import state_digest

    cfg = write_config(tmp_path / "c.toml", iterations=2, meta_batch=2, checkpoint_every=2,
                       seed=4)
    assert main(["train", "--config", str(cfg), "--out", str(tmp_path / "r"),
                 "--no-progress"]) == 0
    state = _state(tmp_path / "r")
    assert state["software"] == {"metaloop": ml.__version__, "torch": torch.__version__,
                                 "python": platform.python_version()}
    assert state_digest({**state, "software": {}}) != state["state_sha256"]
    load_checkpoint(tmp_path / "r")                       # the digest holds with it

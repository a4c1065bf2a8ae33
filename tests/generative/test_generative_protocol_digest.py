"""The IWAE protocol's checkpoint digest leaves its measured times out, as ``metaloop train``'s
leaves out ``cpu_seconds``: identical runs store the same ``state_sha256``, and checkpoints
written with the digest of the whole state still load and resume."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from metaloop.generative import protocol as P
from metaloop.train import checkpoint as ckpt

TINY = P.ProtocolSettings(latent=2, hidden=(8,), stages=2, curve_k=2, curve_examples=5,
                          curve_every=1)


def _state_file(run: Path) -> Path:
    return run / (run / "LATEST").read_text().strip() / "state.json"


def _run(images, x_test, run: Path, **kw) -> dict:
    return P.train_protocol(images, run, TINY, curve_fn=P.curve_evaluator(x_test, TINY), **kw)


def test_identical_runs_store_the_same_digest(images, x_test, tmp_path):
    a, b = tmp_path / "a", tmp_path / "b"
    _run(images, x_test, a, until_pass=2)
    _run(images, x_test, b, until_pass=2)
    sa, sb = (json.loads(_state_file(r).read_text()) for r in (a, b))
    measured = {"train_cpu_s": -1.0}                  # times as they would differ run to run
    sa = {**sa, **measured, "curve": [{**c, "train_cpu_s": 7.0, "eval_cpu_s": 9.0}
                                      for c in sa["curve"]],
          "sessions": [{**s, "started": "1999-01-01T00:00:00Z"} for s in sa["sessions"]]}
    assert len(sa["curve"]) == 2 and sa["curve"][0]["train_cpu_s"] != sb["curve"][0][
        "train_cpu_s"]
    assert ckpt.state_digest(sa) == ckpt.state_digest(sb) == sb["state_sha256"]


def test_the_measured_times_and_sessions_are_left_out_and_nothing_else(images, x_test, tmp_path):
    run = tmp_path / "run"
    _run(images, x_test, run, until_pass=1)
    path = _state_file(run)
    state = json.loads(path.read_text())
    state["train_cpu_s"] += 100.0
    state["curve"][0]["eval_cpu_s"] += 5.0
    state["sessions"][0]["started"] = "2000-01-01T00:00:00Z"
    state["sessions"][0]["threads"] += 1              # how each start or resume ran
    path.write_text(json.dumps(state))
    assert ckpt.load_checkpoint(run)[1]["train_cpu_s"] == state["train_cpu_s"]
    changed = json.loads(path.read_text())            # what the run computed
    changed["train_log"][0][1] += 0.5
    path.write_text(json.dumps(changed))
    with pytest.raises(ValueError, match="is corrupt or was edited"):
        ckpt.load_checkpoint(run)


def test_a_checkpoint_with_the_digest_of_the_whole_state_loads_and_resumes(images, x_test,
                                                                           tmp_path):
    """Protocol checkpoints written before the times were left out hash the whole state."""
    run = tmp_path / "run"
    _run(images, x_test, run, until_pass=1)
    path = _state_file(run)
    state = json.loads(path.read_text())
    whole = ckpt._digest(state)
    assert whole != state["state_sha256"]
    path.write_text(json.dumps({**state, "state_sha256": whole}))
    assert ckpt.load_checkpoint(run)[1]["state_sha256"] == whole
    assert _run(images, x_test, run, resume=True, until_pass=2)["passes"] == 2
    assert P.evaluate_run(run, k=2, x_test=x_test, s=TINY)["passes"] == 2


def test_a_train_state_digest_is_unchanged():
    """``metaloop train``'s states hold none of the protocol's measured entries: their digest
    is the one they had, leaving out ``cpu_seconds`` only."""
    state = {"iteration": 3, "config": {"seed": 1}, "cpu_seconds": 2.5, "data": {"x": [1, 2]}}
    body = {k: v for k, v in state.items() if k != "cpu_seconds"}
    assert ckpt.state_digest(state) == ckpt._digest(body)

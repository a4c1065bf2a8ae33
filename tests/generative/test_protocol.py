"""The IWAE protocol run: its schedule, exact resumption, crash-safe checkpoints, errors and
the record it writes."""

from __future__ import annotations

import math

import pytest
import torch

from metaloop.evaluate import records
from metaloop.generative import protocol as P
from metaloop.train import checkpoint as ckpt

# 3 stages = 1 + 3 + 9 = 13 passes over 64 tiny 8x8 images, 4 steps of 20 (the last of 4)
TINY = P.ProtocolSettings(latent=3, hidden=(16, 16), stages=3, curve_k=7, curve_examples=20,
                          curve_every=2, checkpoint_every=5)


def _train(images, x_test, out, **kw):
    return P.train_protocol(images, out, TINY, curve_fn=P.curve_evaluator(x_test, TINY), **kw)


def _assert_same_checkpoints(a, b) -> None:
    (ta, sa), (tb, sb) = ckpt.load_checkpoint(a), ckpt.load_checkpoint(b)
    assert set(ta) == set(tb)
    assert any(k.startswith("adam.") for k in ta) and "generator" in ta
    for name in ta:
        assert torch.equal(ta[name], tb[name]), name
    assert sa["passes"] == sb["passes"] and sa["train_log"] == sb["train_log"]

    def measured(curve):                      # the curve without its timings
        return [{k: v for k, v in c.items() if "cpu" not in k} for c in curve]
    assert measured(sa["curve"]) == measured(sb["curve"])
    # the run and its resume store one digest: their sessions (when and how each ran) differ
    assert sa["state_sha256"] == sb["state_sha256"]


def test_the_paper_schedule():
    sched = P.iwae_schedule()
    assert [p for p, _ in sched] == [1, 3, 9, 27, 81, 243, 729, 2187]
    assert P.stage_ends(sched)[-1] == 3280 == sum(3 ** i for i in range(8))
    assert sched[0][1] == pytest.approx(1e-3) and sched[-1][1] == pytest.approx(1e-4)
    assert P.stage_of(0, sched) == (0, sched[0][1])
    assert P.stage_of(3, sched)[0] == 1 and P.stage_of(4, sched)[0] == 2
    assert P.stage_of(3279, sched)[0] == 7
    with pytest.raises(ValueError, match="pass 3280 is outside the schedule's 3280 passes"):
        P.stage_of(3280, sched)


def test_the_model_is_the_papers_mlp():
    imgs = torch.zeros(4, 1, 28, 28, dtype=torch.uint8)
    model = P.build_vae(P.ProtocolSettings(), imgs)
    shapes = [tuple(p.shape) for n, p in model.named_parameters() if n.endswith("weight")]
    assert shapes == [(200, 784), (200, 200), (100, 200), (200, 50), (200, 200), (784, 200)]


def test_resuming_gives_the_same_parameters_bit_for_bit(images, x_test, tmp_path):
    straight = _train(images, x_test, tmp_path / "straight")
    assert straight["done"] and straight["passes"] == 13
    # stop in the middle of stage 2 (passes 5..13), then twice more, once by until_pass
    first = _train(images, x_test, tmp_path / "resumed", until_pass=6)
    assert first["passes"] == 6 and not first["done"]
    assert ckpt.latest_checkpoint(tmp_path / "resumed").name == "ckpt-00000006"
    _train(images, x_test, tmp_path / "resumed", resume=True, until_pass=9)
    last = _train(images, x_test, tmp_path / "resumed", resume=True)
    assert last["done"] and [s["from_passes"] for s in last["sessions"]] == [0, 6, 9]
    _assert_same_checkpoints(tmp_path / "straight", tmp_path / "resumed")
    # the curve: every stage end (1, 4, 13) and every 2 passes, in order
    assert [c["passes"] for c in last["curve"]] == [1, 2, 4, 6, 8, 10, 12, 13]
    assert all(c["k"] == 7 and c["n"] == 20 and c["nll"] > 0 for c in last["curve"])
    assert (tmp_path / "resumed" / "curve.json").exists()


def test_a_stop_request_checkpoints_and_resumes_exactly(images, x_test, tmp_path,
                                                        monkeypatch):
    # max_minutes that runs out after the first pass stands in for a SIGTERM between passes
    _train(images, x_test, tmp_path / "straight", until_pass=5)
    ticks = iter(range(0, 10 ** 6, 60))
    monkeypatch.setattr(P.time, "perf_counter", lambda: float(next(ticks)))
    out = _train(images, x_test, tmp_path / "sliced", max_minutes=1.0)
    monkeypatch.undo()
    assert out["passes"] == 1
    _train(images, x_test, tmp_path / "sliced", resume=True, until_pass=5)
    _assert_same_checkpoints(tmp_path / "straight", tmp_path / "sliced")


def test_sigterm_stops_after_the_pass_with_a_checkpoint(images, x_test, tmp_path):
    import os
    import signal

    measure = P.curve_evaluator(x_test, TINY)

    def curve_then_term(model):                # SIGTERM arrives during pass 2's curve point
        point = measure(model)
        os.kill(os.getpid(), signal.SIGTERM)
        return point

    before = signal.getsignal(signal.SIGTERM)
    out = P.train_protocol(images, tmp_path / "run", TINY, curve_fn=curve_then_term)
    assert out["passes"] == 1 and not out["done"]       # the first curve point is at pass 1
    assert out["interrupted"] == "SIGTERM"          # the CLI then exits 130, not 0
    assert ckpt.latest_checkpoint(tmp_path / "run").name == "ckpt-00000001"
    assert signal.getsignal(signal.SIGTERM) == before             # the handler is restored


def test_a_second_signal_stops_at_once_and_an_ignored_one_stays_ignored(images, x_test,
                                                                        tmp_path, monkeypatch):
    import os
    import signal

    from metaloop.train import signals

    measure = P.curve_evaluator(x_test, TINY)
    clock = iter([0.0, 5.0])                   # the second press comes 5 s after the first
    monkeypatch.setattr(signals.time, "monotonic", lambda: next(clock))

    def curve_then_two_presses(model):
        point = measure(model)
        os.kill(os.getpid(), signal.SIGINT)
        os.kill(os.getpid(), signal.SIGINT)
        return point

    before = signal.getsignal(signal.SIGINT)
    with pytest.raises(KeyboardInterrupt, match="second SIGINT"):
        P.train_protocol(images, tmp_path / "run", TINY, curve_fn=curve_then_two_presses)
    assert signal.getsignal(signal.SIGINT) == before             # the handler is restored

    old = signal.signal(signal.SIGINT, signal.SIG_IGN)       # nohup-style: ignored stays so
    try:
        def curve_then_press(model):
            point = measure(model)
            os.kill(os.getpid(), signal.SIGINT)
            return point

        out = P.train_protocol(images, tmp_path / "ignored", TINY, until_pass=2,
                               curve_fn=curve_then_press)
        assert out["passes"] == 2 and out["interrupted"] is None
        assert signal.getsignal(signal.SIGINT) is signal.SIG_IGN
    finally:
        signal.signal(signal.SIGINT, old)


def test_an_interrupted_checkpoint_write_leaves_the_previous_one(images, x_test, tmp_path,
                                                                  monkeypatch):
    _train(images, x_test, tmp_path / "straight", until_pass=6)
    run = tmp_path / "run"
    _train(images, x_test, run, until_pass=4)

    def half_written(tensors, path):          # a write killed halfway through the file
        with open(path, "wb") as f:
            f.write(b"\0" * 100)
        raise KeyboardInterrupt

    monkeypatch.setattr(ckpt, "save_file", half_written)
    with pytest.raises(KeyboardInterrupt):
        _train(images, x_test, run, resume=True, until_pass=6)
    monkeypatch.undo()
    assert ckpt.latest_checkpoint(run).name == "ckpt-00000004"
    assert ckpt.load_checkpoint(run)[1]["passes"] == 4
    _train(images, x_test, run, resume=True, until_pass=6)
    _assert_same_checkpoints(tmp_path / "straight", run)


def test_bad_runs_raise_clear_errors(images, x_test, tmp_path):
    with pytest.raises(ValueError, match="no checkpoint in .* start the run without --resume"):
        _train(images, x_test, tmp_path / "empty", resume=True)
    _train(images, x_test, tmp_path / "run", until_pass=1)
    with pytest.raises(ValueError, match="already holds a run .* add --resume"):
        _train(images, x_test, tmp_path / "run")
    other = P.ProtocolSettings(**{**TINY.__dict__, "batch_size": 10, "seed": 3})
    with pytest.raises(ValueError, match=r"other settings: batch_size=20 \(now 10\), seed=0"):
        P.train_protocol(images, tmp_path / "run", other, resume=True)
    with pytest.raises(ValueError, match="until_pass must be >= 1, got 0"):
        _train(images, x_test, tmp_path / "run", resume=True, until_pass=0)
    with pytest.raises(ValueError, match="images must be uint8"):
        _train(images.float(), x_test, tmp_path / "x")
    with pytest.raises(ValueError, match="unknown data set 'mnist'"):
        P.check_protocol_settings(P.ProtocolSettings(data="mnist"))
    with pytest.raises(ValueError, match="stages must be a positive int, got 0"):
        P.iwae_schedule(0)
    with pytest.raises(ValueError, match="unknown protocol settings: epochs"):
        P.settings_from(epochs=3)
    with pytest.raises(ValueError, match="no checkpoint in .* to evaluate"):
        P.evaluate_run(tmp_path / "empty", k=5, x_test=x_test, s=TINY)


@pytest.mark.parametrize("change", [{"curve_every": 3}, {"curve_k": 9},
                                    {"curve_examples": 10}])
def test_a_resume_keeps_what_a_curve_point_measures_and_when(images, x_test, tmp_path, change):
    """A changed --curve-every, --curve-k or --curve-examples was resumed: one curve.json
    then held points of two cadences, or of two estimators."""
    _train(images, x_test, tmp_path / "run", until_pass=1)
    other = P.ProtocolSettings(**{**TINY.__dict__, **change})
    (name, now), = change.items()
    with pytest.raises(ValueError, match=rf"other settings: {name}=\d+ \(now {now}\)"):
        P.train_protocol(images, tmp_path / "run", other, resume=True,
                         curve_fn=P.curve_evaluator(x_test, other))


def test_the_downsampling_kernel_is_a_training_setting(images, x_test, tmp_path):
    import json

    _train(images, x_test, tmp_path / "run", until_pass=1)
    bicubic = P.ProtocolSettings(**{**TINY.__dict__, "resample": "bicubic"})
    with pytest.raises(ValueError, match=r"other settings: resample='bilinear' \(now 'bicubic'\)"):
        P.train_protocol(images, tmp_path / "run", bicubic, resume=True)
    with pytest.raises(ValueError, match="trained on Omniglot downsampled with "
                                         "resample='bilinear', not 'bicubic'"):
        P.evaluate_run(tmp_path / "run", k=5, resample="bicubic")
    # a checkpoint written before the setting existed has its default, bilinear
    state = tmp_path / "run" / (tmp_path / "run" / "LATEST").read_text().strip() / "state.json"
    meta = json.loads(state.read_text())
    del meta["settings"]["resample"], meta["state_sha256"]   # as an older metaloop wrote it
    state.write_text(json.dumps(meta))
    assert "resample" not in ckpt.load_checkpoint(tmp_path / "run")[1]["settings"]
    assert _train(images, x_test, tmp_path / "run", resume=True, until_pass=2)["passes"] == 2
    with pytest.raises(ValueError, match="unknown resample kernel 'area'"):
        P.check_protocol_settings(P.ProtocolSettings(resample="area"))
    with pytest.raises(ValueError, match="applies to the Omniglot data sets"):
        P.check_protocol_settings(P.ProtocolSettings(data="fashion-mnist", resample="bicubic"))


def test_evaluation_and_its_record(images, x_test, tmp_path):
    _train(images, x_test, tmp_path / "run", until_pass=9)
    result = P.evaluate_run(tmp_path / "run", k=50, x_test=x_test, s=TINY)
    t = result["test"]
    assert t["n"] == 30 and t["k"] == 50 and t["nll_ci95"] > 0
    assert t["nll"] >= -t["elbo"] - 1.0      # IWAE_50 is tighter than the ELBO, up to noise
    assert (tmp_path / "run" / "final-k50-n30.json").exists()
    assert (tmp_path / "run" / "samples.png").read_bytes()[:4] == b"\x89PNG"
    again = P.evaluate_run(tmp_path / "run", k=50, x_test=x_test, s=TINY)
    assert again["test"] == t                # read back, not measured again: same timings
    assert again["eval_cpu_s"] == result["eval_cpu_s"]
    assert "read_from" not in result and again["read_from"] == "final-k50-n30.json"
    note = P.record(again, command="metaloop vae --evaluate", device="CPU")["note"]
    assert note.endswith("the test NLL was measured at the end of training (final-k50-n30.json "
                         f"in the run folder, {again['threads']} thread(s)), which the command "
                         "read")
    sub = P.evaluate_run(tmp_path / "run", k=50, examples=10, x_test=x_test, s=TINY)
    assert sub["test"]["n"] == 10 and sub["test_examples"] == 10
    rec = P.record(result, command="metaloop vae --protocol iwae --evaluate", device="CPU")
    records.validate_record(rec)
    assert rec["budget"]["iterations"] == 9 and rec["note"].endswith("resumable")
    assert rec["published"] is None          # a tiny model of 3 stages: not the paper's
    paper = {**result, "settings": {**result["settings"], "latent": 50, "hidden": [200, 200],
                                    "stages": 8}}
    # the paper's settings, but its NLL estimated with k = 50 on 30 images: not the paper's
    assert P.record(paper, command="metaloop vae --protocol iwae --evaluate",
                    device="CPU")["published"] is None
    paper = {**paper, "test": {**paper["test"], "k": 5000}, "test_examples": "all"}
    assert P.record(paper, command="metaloop vae --protocol iwae --evaluate",
                    device="CPU")["published"]["value"] == "108.11"
    assert rec["projection_nll_at_end"] is not None
    assert result["binarization_entropy"] is None and rec["test_binarization_entropy"] is None
    rec = P.record({**result, "binarization_entropy": 63.266},
                   command="metaloop vae --protocol iwae --evaluate", device="CPU")
    assert rec["test_binarization_entropy"] == 63.27
    assert "63.27 nats of it at least are the binarisation's own entropy" in rec["note"]
    assert rec["row"] == "VAE 784-16-16-3, IWAE protocol, omniglot-mixed"
    curve = P.curve_records(result, command="metaloop vae", device="CPU")
    assert {c["table"] for c in curve} == {"generative_iwae_curve"}
    bicubic = {**result, "settings": {**result["settings"], "resample": "bicubic"}}
    rec = P.record(bicubic, command="metaloop vae", device="CPU")
    assert rec["row"] == "VAE 784-16-16-3, IWAE protocol, omniglot-mixed, bicubic downsampling"
    paper = {**result, "settings": {**result["settings"], "hidden": [200, 200], "latent": 50}}
    assert P.record(paper, command="metaloop vae", device="CPU")["row"] == (
        "VAE 784-200-200-50, IWAE protocol, omniglot-mixed")
    colour = {**result, "settings": {**result["settings"], "data": "/data/photos",
                                     "image_size": 32, "channels": 3}}
    assert P.record(colour, command="metaloop vae", device="CPU")["row"] == (
        "VAE 3072-16-16-3, IWAE protocol, /data/photos")
    curve = P.curve_records(bicubic, command="metaloop vae", device="CPU")
    assert {c["table"] for c in curve} == {"generative_iwae_curve_bicubic"}


def test_one_test_image_has_no_ci(images, x_test, tmp_path):
    # mean_ci gives None for one value (no spread), not a 0.0 that reads as certainty
    out = _train(images, x_test, tmp_path / "run", until_pass=1)
    assert out["interrupted"] is None
    result = P.evaluate_run(tmp_path / "run", k=5, examples=1, x_test=x_test, s=TINY)
    assert result["test"]["n"] == 1 and result["test"]["nll_ci95"] is None
    rec = P.record(result, command="metaloop vae --protocol iwae --evaluate", device="CPU")
    assert rec["ci95"] is None and rec["n"] == 1
    records.validate_record(rec)


def test_projection_follows_the_last_stage_in_log_passes():
    curve = [{"passes": p, "stage": s, "nll": v} for p, s, v in
             [(40, 3, 130.0), (100, 4, 120.0), (200, 4, 120.0 - 2 * math.log(2)),
              (400, 4, 120.0 - 2 * math.log(4))]]
    assert P.projection(curve, 800) == pytest.approx(120.0 - 2 * math.log(8))
    assert P.projection(curve[:1], 800) is None
    # a single point in the last stage: the line through the last two points
    assert P.projection(curve[:2], 400) == pytest.approx(
        120.0 - 10.0 * math.log(4) / math.log(2.5))


@pytest.mark.parametrize("kw, match", [
    ({"lr": float("inf")}, "learning rate must be > 0"),
    ({"lr": float("nan")}, "learning rate must be > 0"),
    ({"lr": 0.0}, "learning rate must be > 0"),
    ({"curve_every": float("nan")}, "curve_every must be an int >= 0"),
    ({"curve_every": -1}, "curve_every must be an int >= 0"),
    ({"curve_every": 2.5}, "curve_every must be an int >= 0"),
])
def test_check_protocol_settings_needs_a_finite_lr_and_an_int_curve_every(kw, match):
    with pytest.raises(ValueError, match=match):
        P.check_protocol_settings(P.settings_from(**kw))


def test_a_path_given_as_a_path_is_checkpointed_as_its_text(tmp_path):
    # the loaders take a Path; the run trained its first pass, then failed to write the
    # checkpoint's state.json (TypeError: PosixPath is not JSON serializable)
    import numpy as np

    x = (np.random.default_rng(0).random((40, 8, 8)) < 0.3).astype(np.uint8) * 255
    np.savez(tmp_path / "d.npz", x=x, y=np.arange(40) % 2)
    s = P.ProtocolSettings(data=tmp_path / "d.npz", image_size=8, test_fraction=0.25,
                           invert="never", latent=2, hidden=(8,), stages=1, curve_k=2,
                           curve_examples=4)
    assert s.data == str(tmp_path / "d.npz")
    state = P.run(s, tmp_path / "run", final_k=2, log=None)
    assert state["done"] and state["settings"]["data"] == str(tmp_path / "d.npz")
    assert ckpt.load_checkpoint(tmp_path / "run")[1]["settings"]["data"] == s.data

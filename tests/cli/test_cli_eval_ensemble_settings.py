"""``metaloop eval --checkpoint RUN RUN``: members whose configs evaluate them otherwise are
refused (exit 2, naming the key, both runs and the flag that sets it for every member, with
nothing written); with that flag, or members alike, the ensemble is evaluated."""

import json
import sys
from pathlib import Path

from metaloop.cli.main import main

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from conftest import refused, tensor_config, train_run, write_tensor_file  # noqa: E402

SINUSOID = ('[family]\nname = "sinusoid"\nshots = 5\nqueries = 5\n[model]\nname = "mlp"\n'
            'hidden = [8]\n[method]\nname = "maml"\ninner_lr = 0.1\ninner_steps = {inner}\n'
            '[train]\niterations = 2\nmeta_batch = 2\ncheckpoint_every = 2\n'
            '[eval]\ntasks = 3\nsteps = {steps}\n')


def test_members_evaluated_after_other_steps_are_refused_until_steps_is_given(
        trained_run, tmp_path, capsys):
    a = str(trained_run(SINUSOID.format(inner=1, steps="[0, 1]")))
    b = str(trained_run(SINUSOID.format(inner=3, steps="[0, 3]")))
    record = tmp_path / "r" / "e.json"
    refused(["eval", "--checkpoint", a, b, "--record", str(record), "--no-progress"], capsys,
            tmp_path, f"ensemble: {b} has eval.steps = [0, 3], the first run ({a}) [0, 1]",
            "give --steps (metaloop eval) to set it for every member")
    assert not record.parent.exists()
    out = tmp_path / "e"
    assert main(["eval", "--checkpoint", a, b, "--steps", "0,3", "--out", str(out),
                 "--no-progress"]) == 0
    res = json.loads((out / "results.json").read_text())
    assert res["config"]["eval"]["steps"] == [0, 3]
    assert [m["checkpoint"] for m in res["ensemble"]["members"]] == [a, b]


def _with_stored_shift(run: Path, dest: Path) -> Path:
    """A copy of ``run`` whose stored config has ``eval.support_shift = 1``: a vector run
    trained before ``metaloop train`` refused that."""
    import shutil

    from metaloop.train.checkpoint import latest_checkpoint, state_digest

    shutil.copytree(run, dest)
    state = latest_checkpoint(dest) / "state.json"
    data = json.loads(state.read_text())
    data["config"]["eval"]["support_shift"] = 1
    data["state_sha256"] = state_digest(data)
    state.write_text(json.dumps(data))
    return dest


def test_a_vector_member_with_a_stored_shift_is_evaluated_with_the_shift_turned_off(
        tmp_path, capsys):
    """Only the first member's stored shift was looked at: a second member's was left to
    the members' comparison, which asked for --support-shift 0, which was then refused as
    turning off nothing."""
    plain = train_run(tmp_path / "a", tensor_config(write_tensor_file(tmp_path / "v.npz")))
    shifted = _with_stored_shift(plain, tmp_path / "shifted")
    members = [str(plain), str(shifted)]
    refused(["eval", "--checkpoint", *members, "--no-progress"], capsys, tmp_path,
            f"eval.support_shift = 1 (the config of {shifted}) shifts images, but {plain} "
            f"reads no images", "give --support-shift 0 to evaluate it without")
    out = tmp_path / "e"
    assert main(["eval", "--checkpoint", *members, "--support-shift", "0", "--out", str(out),
                 "--no-progress"]) == 0
    assert json.loads((out / "results.json").read_text())["config"]["eval"][
        "support_shift"] == 0

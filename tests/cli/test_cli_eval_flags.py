"""``metaloop eval``'s flags: one that would change nothing for the run(s) given is refused
by name (exit 2, nothing written, before any evaluation), a bad value is named by its flag,
and every command of the committed records (docs/results) is still accepted."""

import json
import re
import shlex
from pathlib import Path

import pytest

from metaloop import config
from metaloop.cli import eval as eval_cli
from metaloop.cli.main import main

RESULTS = Path(__file__).resolve().parents[2] / "docs" / "results"


def _refused(argv, capsys, tmp_path, *words):
    """``metaloop eval`` with --out and --record: exit 2, the words in the message, nothing
    printed or written."""
    out, rec = tmp_path / "out", tmp_path / "rec" / "r.json"
    capsys.readouterr()
    assert main(["eval", *argv, "--out", str(out), "--record", str(rec), "--no-progress"]) == 2
    captured = capsys.readouterr()
    assert captured.out == "" and not out.exists() and not rec.parent.exists()
    for w in words:
        assert w in captured.err, (w, captured.err)
    return captured.err


@pytest.mark.parametrize("method", ["protonet", "r2d2", "metaoptnet"])
def test_steps_are_refused_for_a_solved_head(method_runs, tmp_path, capsys, method):
    """A closed-form head takes no adaptation steps: every --steps gave the same numbers."""
    _refused(["--checkpoint", method_runs(method), "--steps", "0,1,5"], capsys, tmp_path,
             f"--steps 0,1,5: {method} (", "solves its head in closed form",
             "would change nothing")


def test_refine_settings_without_refine_are_refused(method_runs, tmp_path, capsys):
    """The run's eval.refine is 0 and no --refine is given: the temperature and the weight
    refined nothing, and the run was evaluated as without them."""
    for flag in ("--refine-temperature", "--refine-weight"):
        _refused(["--checkpoint", method_runs("protonet"), flag, "2"], capsys, tmp_path,
                 f"{flag} 2.0 sets how --refine refines the prototypes",
                 "would change nothing")
    # an explicit --refine 0 (a sweep's baseline) keeps them, as predict does
    assert main(["eval", "--checkpoint", method_runs("protonet"), "--refine", "0",
                 "--refine-temperature", "2", "--tasks", "1", "--no-progress"]) == 0


def test_refine_jointly_with_one_checkpoint_is_refused(method_runs, tmp_path, capsys):
    _refused(["--checkpoint", method_runs("protonet"), "--refine", "2", "--refine-jointly"], capsys,
             tmp_path, "--refine-jointly", "one --checkpoint is given", "change nothing")


def test_scoring_for_a_learner_that_scores_one_way_is_refused(method_runs, tmp_path, capsys):
    _refused(["--checkpoint", method_runs("maml"), "--scoring", "as-trained"], capsys, tmp_path,
             "--scoring as-trained: maml (", "always scores a task's queries together",
             "would change nothing")
    # transductive: the first run's config names the flag
    _refused(["--checkpoint", method_runs("maml"), "--scoring", "transductive"], capsys, tmp_path,
             "--scoring transductive: config eval.scoring = 'transductive' applies to")
    # an ensemble: every member is checked, before any task is drawn
    _refused(["--checkpoint", method_runs("protonet"), method_runs("maml"), "--scoring",
              "non-transductive"], capsys, tmp_path,
             f"--scoring non-transductive: {method_runs('maml')} is maml")


def test_refine_for_a_member_without_prototypes_is_named(method_runs, tmp_path, capsys):
    _refused(["--checkpoint", method_runs("protonet"), method_runs("maml"), "--refine", "2"],
             capsys, tmp_path, "--refine 2 refines prototypes, which only a protonet run has; "
             f"{method_runs('maml')} is maml")


def test_omniglot_flags_on_another_family_are_refused(method_runs, tmp_path, capsys):
    sin = method_runs("maml", "sinusoid")
    for flags in (["--drawers", "any"], ["--drawers", "shared"], ["--within-alphabet"]):
        _refused(["--checkpoint", sin, *flags], capsys, tmp_path, " ".join(flags),
                 "is family 'sinusoid'", "choose Omniglot's alphabets and drawers")


def test_image_shifts_and_ways_on_sinusoid_are_refused(method_runs, tmp_path, capsys):
    sin = method_runs("maml", "sinusoid")
    for flags in (["--support-shift", "0"], ["--query-shift", "1"]):
        _refused(["--checkpoint", sin, *flags], capsys, tmp_path, " ".join(flags),
                 "shifts images, but", "reads no images (family 'sinusoid'")
    _refused(["--checkpoint", sin, "--ways", "5"], capsys, tmp_path,
             "--ways 5 sets the classes per held-out task", "sinusoid is regression")
    _refused(["--checkpoint", sin, "--lake-runs", "nosuch"], capsys, tmp_path,
             "--lake-runs scores Omniglot drawings, but", "reads no images")
    for split in ("val", "test"):              # the sinusoid has no splits: both are the same
        _refused(["--checkpoint", sin, "--split", split], capsys, tmp_path,
                 f"--split {split}:", "is family 'sinusoid'", "has no splits")


def test_tf32_without_cuda_and_several_steps_on_the_official_runs_are_refused(
        method_runs, tmp_path, capsys):
    _refused(["--checkpoint", method_runs("maml"), "--tf32"], capsys, tmp_path,
             "--tf32 allows TF32 matmuls on CUDA, but --device is cpu")
    _refused(["--checkpoint", method_runs("maml"), "--lake-runs", "nosuch", "--steps", "0,3"],
             capsys, tmp_path, "--steps 0,3: --lake-runs scores the official runs after one "
             "number of steps (the largest, 3)", "give one, e.g. --steps 3",
             "or none for a run of r2d2, metaoptnet or protonet")


@pytest.mark.parametrize("flags, message", [
    (["--refine", "-1"], "--refine -1: config eval.refine must be >= 0, got -1"),
    (["--refine", "2", "--refine-temperature", "0"],
     "--refine-temperature 0.0: config eval.refine_temperature must be a finite number > 0"),
    (["--support-shift", "-1"], "--support-shift must be an int >= 0 pixels, got -1"),
    (["--query-shift", "-2"], "--query-shift must be an int >= 0 pixels, got -2"),
    (["--ways", "1"], "--ways must be >= 2"),
    (["--steps", "-1"], "--steps must be non-negative ints, got -1"),
    (["--split", "nosuch"], "--split nosuch: "),
])
def test_bad_values_are_named_by_their_flag(method_runs, tmp_path, capsys, flags, message):
    _refused(["--checkpoint", method_runs("protonet"), *flags], capsys, tmp_path, message)


def _committed_eval_commands() -> list[str]:
    """Every ``metaloop eval`` command of the committed records, each with its train
    command's config (or None)."""
    found = set()

    def walk(o):
        if isinstance(o, dict):
            for k, v in o.items():
                walk(v) if k != "command" or not isinstance(v, str) else found.add(v)
        elif isinstance(o, list):
            for v in o:
                walk(v)
    for f in sorted(RESULTS.glob("*.json")):
        walk(json.loads(f.read_text()))
    out = []
    for command in sorted(found):
        parts = [p.strip() for p in command.split("&&")]
        train = next((p for p in parts if " train " in p), "")
        cfg = re.search(r"--config (\S+)", train)
        out += [(p, cfg and cfg.group(1)) for p in parts if " eval " in p]
    return out


def _copy(run: str, dest: Path) -> str:
    """A copy of the run folder ``run`` at ``dest`` (made once): another checkpoint."""
    import shutil

    if not dest.exists():
        shutil.copytree(run, dest)
    return str(dest)


def test_the_committed_records_commands_are_still_accepted(method_runs, tmp_path, monkeypatch):
    """The reproduction commands of docs/results, on small runs of the same method and
    family: every flag check passes (the evaluation itself is left out)."""
    commands = _committed_eval_commands()
    assert len(commands) > 20
    done = []
    monkeypatch.setattr(eval_cli, "_evaluate", lambda *a: done.append("tasks") or 0)
    monkeypatch.setattr(eval_cli, "_lake_runs", lambda *a: done.append("lake") or 0)
    root = RESULTS.parents[1]
    for command, cfg in commands:
        argv = shlex.split(command)[1:]
        method = config.load(root / cfg)["method"]["name"] if cfg else "protonet"
        family = "sinusoid" if "sinusoid" in command else "omniglot"
        method = method if method in ("protonet", "r2d2", "metaoptnet", "reptile") else "maml"
        i = argv.index("--checkpoint") + 1
        j = next((k for k in range(i, len(argv)) if argv[k].startswith("--")), len(argv))
        run = method_runs(method, family)     # an ensemble's other members: copies of it
        argv[i:j] = [run, *(_copy(run, tmp_path / f"{method}-{family}-{k}") for k in
                            range(1, j - i))]
        if "--record" in argv:
            argv[argv.index("--record") + 1] = str(tmp_path / "r.json")
        assert main(argv) == 0, command
    assert len(done) == len(commands) and "lake" in done


def test_refine_0_for_runs_without_prototypes_is_refused(method_runs, tmp_path, capsys):
    """--refine 0 turns off a protonet's refinement; for runs with no prototypes it changed
    nothing and was accepted."""
    _refused(["--checkpoint", method_runs("maml"), "--refine", "0"], capsys, tmp_path,
             f"--refine 0: maml ({method_runs('maml')}) has no prototypes to refine",
             "would change nothing")
    _refused(["--checkpoint", method_runs("maml"), method_runs("r2d2"), "--refine", "0"],
             capsys, tmp_path, "--refine 0: every member (maml, r2d2) has no prototypes")
    # a member with prototypes: --refine 0 applies to it
    assert main(["eval", "--checkpoint", method_runs("maml"), method_runs("protonet"),
                 "--refine", "0", "--no-progress"]) == 0

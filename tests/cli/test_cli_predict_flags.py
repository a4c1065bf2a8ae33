"""``metaloop predict``'s flags: one that would change nothing for the run's learner is refused
by name (exit 2, nothing written), a bad value is named by its flag, and the
``file<TAB>class`` lines stay readable whatever characters the names hold."""

import csv
import io
import json
import os
import sys
from pathlib import Path

import pytest

from metaloop.cli.main import main
from metaloop.recipes.predict import classify_folders, tsv_line
from metaloop.runs import load_run

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from conftest import drawing, edit_state, refused  # noqa: E402


def _folders(root, classes=("a", "b", "c"), queries=None):
    """support/<class>/0.png and query/<file> (each query the drawing of its class)."""
    queries = queries or {f"q{k}.png": c for k, c in enumerate(classes)}
    for k, c in enumerate(classes):
        (root / "s" / c).mkdir(parents=True)
        drawing(k).save(root / "s" / c / "0.png")
    for f, c in queries.items():
        (root / "q" / f).parent.mkdir(parents=True, exist_ok=True)
        drawing(classes.index(c)).save(root / "q" / f)
    return str(root / "s"), str(root / "q")


def _with_family(run, dest, **changes):
    """A copy of ``run`` whose stored config has ``family`` keys ``changes``."""
    import shutil
    shutil.copytree(run, dest)
    ckpt = next(Path(dest).glob("ckpt-*"))
    edit_state(ckpt / "state.json", lambda s: s["config"]["family"].update(changes))
    return str(dest)


def test_an_ensemble_needs_members_that_read_alike_not_the_same_training_data(
        method_runs, tmp_path, capsys):
    """predict draws no tasks: members trained on other data (another family.root) were
    refused as for eval; members that read images otherwise still are."""
    run = method_runs("protonet")
    moved = _with_family(run, tmp_path / "moved", root=str(tmp_path / "elsewhere"))
    s, q = _folders(tmp_path)
    capsys.readouterr()
    assert main(["predict", "--checkpoint", run, moved, "--support", s, "--query", q]) == 0
    assert len(capsys.readouterr().out.splitlines()) == 3
    refused(["eval", "--checkpoint", run, moved], capsys, tmp_path, "family.root")
    bigger = _with_family(run, tmp_path / "bigger", image_size=32)
    refused(["predict", "--checkpoint", run, bigger, "--support", s, "--query", q], capsys,
            tmp_path, "read the images alike", "'image_size': 32")


@pytest.mark.parametrize("method", ["protonet", "r2d2", "metaoptnet"])
def test_steps_and_head_init_are_refused_for_a_solved_head(method_runs, tmp_path, capsys, method):
    """A solved head takes no adaptation steps and has no learned head to replace: --steps
    and --head-init zero changed nothing, and predict ran as if they were not given."""
    run = method_runs(method)
    s, q = _folders(tmp_path)
    base = ["predict", "--checkpoint", run, "--support", s, "--query", q]
    err = refused([*base, "--steps", "5"], capsys, tmp_path, "--steps 5", method, run,
                   "no adaptation steps")
    assert ("method.inner_steps" in err) == (method == "metaoptnet")
    refused([*base, "--head-init", "zero"], capsys, tmp_path, "--head-init zero", method)
    refused(["predict", "--checkpoint", run, run, "--support", s, "--query", q, "--steps",
              "2"], capsys, tmp_path, "--steps 2", f"every member ({method})")
    assert main(base) == 0                                     # without them: as before
    assert len(capsys.readouterr().out.splitlines()) == 3
    with pytest.raises(ValueError, match=f"steps = 4: .*{method}.*no adaptation steps"):
        classify_folders(load_run(run), s, q, steps=4)


@pytest.mark.parametrize("method", ["maml", "anil", "reptile"])
def test_steps_are_taken_by_a_learner_that_steps(method_runs, tmp_path, capsys, method):
    run = method_runs(method)
    s, q = _folders(tmp_path)
    capsys.readouterr()
    scores = []
    for steps in ("0", "3"):
        assert main(["predict", "--checkpoint", run, "--support", s, "--query", q, "--json",
                     "--steps", steps]) == 0
        scores.append([r["scores"] for r in json.loads(capsys.readouterr().out)])
    assert scores[0] != scores[1]                               # --steps changed them


def test_an_ensemble_with_a_learner_that_steps_takes_steps(method_runs, tmp_path, capsys):
    """--steps applies to the members that step; the solved head's member ignores it."""
    s, q = _folders(tmp_path)
    maml, proto = method_runs("maml"), method_runs("protonet")
    capsys.readouterr()
    assert main(["predict", "--checkpoint", maml, proto, "--support", s,
                 "--query", q, "--steps", "2"]) == 0
    assert len(capsys.readouterr().out.splitlines()) == 3


def test_bad_values_and_idle_refine_settings_are_named_by_their_flag(method_runs, tmp_path, capsys):
    """Shift errors named the Python keyword (query_shift), and a refine setting without
    --refine (or --refine-jointly with one checkpoint) was silently ignored."""
    s, q = _folders(tmp_path)
    proto = ["predict", "--checkpoint", method_runs("protonet"), "--support", s, "--query", q]
    for flags, message in (
            (["--support-shift", "-1"], "--support-shift must be an int >= 0 pixels, got -1"),
            (["--query-shift", "-2"], "--query-shift must be an int >= 0 pixels, got -2"),
            (["--steps", "-1"], "--steps must be >= 0, got -1"),
            (["--refine", "-1"], "--refine must be an int >= 0"),
            (["--refine", "2", "--refine-weight", "0"],
             "--refine-weight must be a finite number > 0, got 0.0"),
            (["--refine", "2", "--refine-temperature", "nan"],
             "--refine-temperature must be a finite number > 0, got nan"),
            (["--refine-weight", "2"], "--refine-weight 2 sets how --refine refines"),
            (["--refine-temperature", "0.5"], "no --refine K is given"),
            (["--refine", "2", "--refine-jointly"], "one --checkpoint is given")):
        err = refused([*proto, *flags], capsys, tmp_path, message)
        assert "_shift" not in err and "refine_" not in err
    maml = method_runs("maml")
    refused(["predict", "--checkpoint", maml, "--support", s, "--query", q, "--refine", "2"],
             capsys, tmp_path, "--refine 2", "only a protonet run", f"{maml} is maml")


def test_refine_0_for_a_run_without_prototypes_is_refused(method_runs, tmp_path, capsys):
    """As in metaloop eval: --refine 0 turns off a protonet's refinement; for a run with no
    prototypes it changed nothing and was accepted."""
    s, q = _folders(tmp_path)
    maml = method_runs("maml")
    refused(["predict", "--checkpoint", maml, "--support", s, "--query", q, "--refine", "0"],
            capsys, tmp_path, "--refine 0: maml", "has no prototypes to refine",
            "would change nothing")
    assert main(["predict", "--checkpoint", method_runs("protonet"), "--support", s,
                 "--query", q, "--refine", "0"]) == 0


def test_a_non_transductive_protonet_refuses_refine_by_flag(method_runs, tmp_path, capsys):
    run = method_runs("protonet", method_lines="transductive = false\n")
    s, q = _folders(tmp_path)
    refused(["predict", "--checkpoint", run, "--support", s, "--query", q, "--refine", "3"],
             capsys, tmp_path, "--refine 3", run, "method.transductive = false")


def test_tsv_quotes_names_with_tabs_line_breaks_and_quotes(method_runs, tmp_path, capsys):
    """A class or file name with a tab or a line break made a line that reads as other
    files and classes; such names are now quoted as the csv module's tab dialect does."""
    classes = ("tab\there", "line\nbreak", 'say "hi"')
    queries = {"ordinary.png": "tab\there", "a\tb.png": "line\nbreak", "c\rd.png": 'say "hi"',
               "sub/e\nf.png": "tab\there"}
    s, q = _folders(tmp_path, classes, queries)
    base = ["predict", "--checkpoint", method_runs("protonet"), "--support", s, "--query", q]
    capsys.readouterr()
    assert main([*base, "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert {r["file"]: r["class"] for r in rows} == queries   # each query is its own class
    assert main(base) == 0
    out = capsys.readouterr().out
    assert list(csv.reader(io.StringIO(out, newline=""), dialect="excel-tab")) == \
        [[r["file"], r["class"]] for r in rows]
    assert out.startswith('"a\tb.png"\t"line\nbreak"\n"c\rd.png"\t"say ""hi"""\n')
    assert "\nordinary.png\t\"tab\there\"\n" in out


def test_tsv_line_leaves_ordinary_names_as_they_are():
    assert tsv_line(["q 1.png", "class é,'x'"]) == "q 1.png\tclass é,'x'\n"
    assert tsv_line(["a\tb", 'x"y']) == '"a\tb"\t"x""y"\n'


def test_a_file_name_that_is_not_utf8_is_printed_as_its_bytes(method_runs, tmp_path, capsysbinary):
    """On a strict UTF-8 stdout such a name failed after --out's results.json was written
    (exit 2, "surrogates not allowed"); now it is printed as its own bytes, as ls does."""
    s, q = _folders(tmp_path)
    drawing(0).save(os.fsdecode(os.path.join(os.fsencode(q), b"bad\xff.png")))
    run = method_runs("protonet")
    capsysbinary.readouterr()
    out = tmp_path / "out"
    assert main(["predict", "--checkpoint", run, "--support", s, "--query", q, "--no-progress",
                 "--out", str(out)]) == 0
    lines = capsysbinary.readouterr().out.splitlines()
    assert lines[0] == b"bad\xff.png\ta" and len(lines) == 4
    assert json.loads((out / "results.json").read_text())["predictions"][0]["file"] == \
        "bad\udcff.png"

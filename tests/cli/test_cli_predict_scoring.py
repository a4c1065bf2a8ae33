"""``metaloop predict --scoring``: a query image scored on its own (BatchNorm with the support
images' statistics) gets the same class probabilities whatever other images the query folder
holds; the flag is refused by name where it would change nothing or cannot apply."""

import json
import shutil
import sys
from pathlib import Path

import numpy as np
import pytest

from metaloop.cli.main import main
from metaloop.recipes.evaluation import scoring
from metaloop.recipes.predict import classify_folders
from metaloop.runs import load_run

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from conftest import drawing, refused  # noqa: E402

CLASSES = ("a", "b", "c")


@pytest.fixture
def runs(method_runs):
    """``(method, extra [method] lines) -> run directory`` (3-way, shared by the test run)."""
    return lambda method, extra="": method_runs(method, method_lines=extra)


def _folders(root: Path, queries: int = 6) -> tuple[str, str]:
    """support/<class>/0.png and query/q<k>.png: 6 queries, drawings unlike the support's."""
    for k, c in enumerate(CLASSES):
        (root / "s" / c).mkdir(parents=True)
        drawing(k).save(root / "s" / c / "0.png")
    (root / "q").mkdir()
    for k in range(queries):
        drawing(100 + k).save(root / "q" / f"q{k}.png")
    return str(root / "s"), str(root / "q")


def _scores(capsys, argv) -> dict[str, list[float]]:
    capsys.readouterr()
    assert main([*argv, "--json", "--no-progress"]) == 0
    return {r["file"]: [r["scores"][c] for c in CLASSES]
            for r in json.loads(capsys.readouterr().out)}


@pytest.mark.parametrize("method", ["protonet", "r2d2"])
def test_a_query_scored_on_its_own_does_not_depend_on_the_other_queries(runs, tmp_path,
                                                                         capsys, method):
    """Transductively (the default for a run trained so) a query's scores change with the
    other images of the query folder; with --scoring non-transductive they do not."""
    run = runs(method)
    s, q = _folders(tmp_path)
    alone = tmp_path / "alone"
    alone.mkdir()
    shutil.copy(Path(q) / "q0.png", alone / "q0.png")
    base = ["predict", "--checkpoint", run, "--support", s]
    together = _scores(capsys, [*base, "--query", q])
    single = _scores(capsys, [*base, "--query", str(alone)])
    assert not np.allclose(together["q0.png"], single["q0.png"], atol=1e-4)
    nt = ["--scoring", "non-transductive"]
    together = _scores(capsys, [*base, "--query", q, *nt])
    single = _scores(capsys, [*base, "--query", str(alone), *nt])
    np.testing.assert_allclose(together["q0.png"], single["q0.png"], atol=2e-6)
    # with test-time shifts too: each query's copies are scored with the support statistics
    shifts = ["--support-shift", "1", "--query-shift", "1", *nt]
    together = _scores(capsys, [*base, "--query", q, *shifts])
    single = _scores(capsys, [*base, "--query", str(alone), *shifts])
    np.testing.assert_allclose(together["q0.png"], single["q0.png"], atol=2e-6)


def test_the_cli_scores_as_the_library_does_and_restores_the_learner(runs, tmp_path, capsys):
    """--scoring non-transductive is classify_folders under ``scoring``; the run's own mode
    is back afterwards, and --scoring transductive on a run trained non-transductively
    normalises the queries together again (its scores then depend on the others)."""
    run = runs("protonet")
    s, q = _folders(tmp_path)
    loaded = load_run(run)
    with scoring(loaded.learner, "non-transductive"):
        expected = classify_folders(loaded, s, q)
    assert loaded.learner.transductive is True
    cli = _scores(capsys, ["predict", "--checkpoint", run, "--support", s, "--query", q,
                           "--scoring", "non-transductive"])
    for f, p in zip(expected.files, expected.probs):
        np.testing.assert_allclose(cli[f], p.tolist(), atol=1e-6)

    nt_run = runs("protonet", "transductive = false\n")
    as_trained = _scores(capsys, ["predict", "--checkpoint", nt_run, "--support", s,
                                  "--query", q])
    loaded = load_run(nt_run)
    assert loaded.learner.transductive is False
    with scoring(loaded.learner, "transductive"):
        expected = classify_folders(loaded, s, q)
    cli = _scores(capsys, ["predict", "--checkpoint", nt_run, "--support", s, "--query", q,
                           "--scoring", "transductive"])
    for f, p in zip(expected.files, expected.probs):
        np.testing.assert_allclose(cli[f], p.tolist(), atol=1e-6)
    assert not np.allclose([cli[f] for f in sorted(cli)],
                           [as_trained[f] for f in sorted(cli)], atol=1e-4)


def test_results_json_records_how_the_queries_were_scored(runs, tmp_path, capsys):
    run = runs("protonet")
    s, q = _folders(tmp_path)
    for flags, setting, evaluation in (
            ([], "as-trained", "transductive"),
            (["--scoring", "non-transductive"], "non-transductive", "non-transductive"),
            (["--refine", "2"], "as-trained", "transductive, prototypes refined")):
        out = tmp_path / f"out{len(flags)}"
        assert main(["predict", "--checkpoint", run, "--support", s, "--query", q,
                     "--no-progress", "--out", str(out), *flags]) == 0
        settings = json.loads((out / "results.json").read_text())["settings"]
        assert settings["scoring"] == setting
        assert settings["evaluation"].startswith(evaluation), settings["evaluation"]




def test_scoring_is_refused_where_it_cannot_apply_or_would_change_nothing(runs, tmp_path,
                                                                          capsys):
    s, q = _folders(tmp_path)
    maml, proto = runs("maml"), runs("protonet")
    base = ["--support", s, "--query", q]
    refused(["predict", "--checkpoint", maml, *base, "--scoring", "non-transductive"],
             capsys, tmp_path, "--scoring non-transductive", f"{maml} is maml",
             "always scores a task's queries together")
    refused(["predict", "--checkpoint", maml, *base, "--scoring", "as-trained"], capsys,
             tmp_path, "--scoring as-trained", "would change nothing", "drop --scoring")
    refused(["predict", "--checkpoint", proto, maml, *base, "--scoring", "transductive"],
             capsys, tmp_path, "--scoring transductive", f"{maml} is maml")
    refused(["predict", "--checkpoint", proto, *base, "--scoring", "non-transductive",
              "--refine", "3"], capsys, tmp_path, "--refine 3", "--scoring non-transductive",
             "drop one of them")
    nt_run = runs("protonet", "transductive = false\n")
    refused(["predict", "--checkpoint", nt_run, *base, "--refine", "3"], capsys, tmp_path,
             "--refine 3", "method.transductive = false", "give --scoring transductive")
    capsys.readouterr()
    assert main(["predict", "--checkpoint", nt_run, *base, "--refine", "3", "--scoring",
                 "transductive", "--no-progress"]) == 0          # the fix the message names
    assert len(capsys.readouterr().out.splitlines()) == 6
    # an ensemble of a protonet and a learner that always scores together: as-trained is
    # accepted (it changes the protonet nothing, but is the default spelled out)
    assert main(["predict", "--checkpoint", proto, maml, *base, "--scoring", "as-trained",
                 "--no-progress"]) == 0
    assert len(capsys.readouterr().out.splitlines()) == 6

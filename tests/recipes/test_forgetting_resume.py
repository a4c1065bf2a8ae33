"""``metaloop forgetting``'s kept runs (``run(..., out=, resume=)``): a run cut short resumes
to the uninterrupted run's files; a kept state of other settings, data or another command is
refused by name; what a run cut short leaves in an --out that holds an earlier run's results
must not pass for a finished result."""

import json
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from metaloop.recipes import forgetting


def _fixed_seeds(monkeypatch, matrix):
    def one_seed(s, exps, seed, tick=None, strategies=None, on_unit=None):
        r = torch.tensor(matrix, dtype=torch.float64)
        curve = [{"step": 0, "experience": 0, "accuracy": {e.name: 0.5 for e in exps}}]
        return {name: {"seed": seed, "matrix": r, "curve": curve, "boundaries": [0, 4],
                       "wall_s": 0.0} for name in strategies or s["strategies"]}
    monkeypatch.setattr(forgetting, "_one_seed", one_seed)


def _exps(tmp_path):
    x = np.arange(4).repeat(10)[:, None] * np.ones((1, 4), np.float32)
    np.savez(tmp_path / "d.npz", x=x.astype(np.float32), y=np.arange(4).repeat(10))
    return forgetting.experiences("split-data-class", data=tmp_path / "d.npz")


@pytest.mark.parametrize("at", ["old_accuracy_curves", "matrix_heatmaps"])
def test_a_rerun_cut_short_leaves_no_earlier_results_beside_its_files(monkeypatch, tmp_path,
                                                                      at):
    """A second run into the same --out, stopped after it had replaced metrics.jsonl (or a
    plot), left the first run's results.json beside the second run's files, a finished
    result that no run gave. (A kill at that moment leaves what Ctrl-C's cleanup does not
    get to remove: results.json must already be gone.)"""
    from metaloop.continual import plots

    exps = _exps(tmp_path)
    out = tmp_path / "out"
    out.mkdir()
    _fixed_seeds(monkeypatch, [[0.9, 0.1], [0.5, 0.8]])
    s = forgetting.settings("split-data-class", strategies="naive", seeds=1, steps=4)
    forgetting.write(out, s, exps, *forgetting.run(s, exps, lambda n: None))
    assert json.loads((out / "results.json").read_text())["settings"]["steps"] == 4

    _fixed_seeds(monkeypatch, [[0.7, 0.2], [0.3, 0.6]])
    s = forgetting.settings("split-data-class", strategies="naive", seeds=1, steps=8)
    runs, results = forgetting.run(s, exps, lambda n: None)
    seen, plot = {}, getattr(plots, at)

    def killed(*a, **k):
        seen.update({p.name: p.read_bytes() for p in out.iterdir()})   # what a kill leaves
        raise KeyboardInterrupt
    monkeypatch.setattr(plots, at, killed)
    with pytest.raises(KeyboardInterrupt):
        forgetting.write(out, s, exps, runs, results)
    assert "results.json" not in seen, sorted(seen)
    assert not (out / "results.json").exists()
    monkeypatch.setattr(plots, at, plot)
    forgetting.write(out, s, exps, runs, results)        # the run again: complete
    assert json.loads((out / "results.json").read_text())["settings"]["steps"] == 8


# -- resume --------------------------------------------------------------------------------

TINY = dict(strategies="naive,replay", seeds=2, steps=4, eval_every=2, batch_size=8,
            hidden=(8,))


def _data(tmp_path, shift: float = 0.0):
    """A 6-class .npz (three experiences of two classes): noisy one-hot feature vectors."""
    g = torch.Generator().manual_seed(0)
    y = torch.arange(6).repeat_interleave(8)
    x = torch.nn.functional.one_hot(y, 6).float() * 2 + torch.randn(len(y), 6, generator=g)
    path = tmp_path / "d.npz"
    np.savez(path, x=(x + shift).numpy(), y=y.numpy())
    return path


def _run(s, exps, out, **kw):
    data = {"data": kw.pop("path", None)}
    runs, results = forgetting.run(s, exps, data=data, out=out, **kw)
    forgetting.write(out, s, exps, runs, results)
    return json.loads((out / "results.json").read_text())


def _without_times(res: dict) -> dict:
    res = json.loads(json.dumps(res))
    res.pop("wall_s"), res.pop("cpu_seconds")
    for r in res["strategies"].values():
        r.pop("wall_s")
    return res


def _cut_after(monkeypatch, n: int) -> list:
    """``_one_seed`` raises KeyboardInterrupt once ``n`` (seed, strategy) runs have finished
    (after each was kept), as a Ctrl-C in the next would; returns the runs done, as
    ``(seed, strategy)``."""
    real, done = forgetting._one_seed, []

    def cut(s, exps, seed, update, strategies=None, on_unit=None):
        def each(name, r):
            on_unit(name, r)
            done.append((seed, name))
            if len(done) == n:
                raise KeyboardInterrupt
        return real(s, exps, seed, update, strategies, each)
    monkeypatch.setattr(forgetting, "_one_seed", cut)
    return done


@pytest.mark.parametrize("n", [1, 2, 3])       # within seed 0, after it, within seed 1
def test_a_run_cut_short_resumes_to_the_uninterrupted_files(monkeypatch, tmp_path, n):
    path = _data(tmp_path)
    exps = forgetting.experiences("split-data-class", data=path)
    s = forgetting.settings("split-data-class", **TINY)
    whole = _run(s, exps, tmp_path / "whole", path=path)
    out = tmp_path / "out"
    with monkeypatch.context() as m:
        _cut_after(m, n)
        with pytest.raises(KeyboardInterrupt):
            _run(s, exps, out, path=path)
    state = json.loads((out / forgetting.PARTIAL).read_text())
    assert state["command"] == "forgetting" and len(state["units"]) == n
    assert sorted(p.name for p in out.iterdir()) == [forgetting.PARTIAL]
    done = _cut_after(monkeypatch, 0)             # counts the runs the resume does
    told = []
    res = _run(s, exps, out, path=path, resume=True, on_resume=told.append)
    assert len(told) == 1 and len(told[0]) == n and len(done) == 4 - n
    assert _without_times(res) == _without_times(whole)
    for name in ("metrics.jsonl", "old_accuracy_vs_steps.png", "accuracy_matrix.png"):
        assert (out / name).read_bytes() == (tmp_path / "whole" / name).read_bytes(), name
    assert not (out / forgetting.PARTIAL).exists()


@pytest.mark.parametrize("n", [1, 4])       # within seed 0, every run of seeds 0 and 1
def test_a_resume_with_more_seeds_runs_only_theirs_to_the_run_of_all_seeds(monkeypatch,
                                                                           tmp_path, n):
    """Two seeds kept, three asked for: the kept runs stay, only the others run, and the
    files are those of a run started with three seeds; fewer seeds stay refused."""
    path = _data(tmp_path)
    exps = forgetting.experiences("split-data-class", data=path)
    s2 = forgetting.settings("split-data-class", **TINY)
    s3 = forgetting.settings("split-data-class", **(TINY | {"seeds": 3}))
    whole = _run(s3, exps, tmp_path / "whole", path=path)
    out = tmp_path / "out"
    with monkeypatch.context() as m:
        kept = _cut_after(m, n)
        with pytest.raises(KeyboardInterrupt):
            _run(s2, exps, out, path=path)
    done = _cut_after(monkeypatch, 0)
    told = []
    res = _run(s3, exps, out, path=path, resume=True, on_resume=told.append)
    assert told == [kept] and sorted(done) == sorted(
        (seed, name) for seed in (0, 1, 2) for name in ("naive", "replay")
        if (seed, name) not in kept)
    assert _without_times(res) == _without_times(whole)
    for name in ("metrics.jsonl", "old_accuracy_vs_steps.png", "accuracy_matrix.png"):
        assert (out / name).read_bytes() == (tmp_path / "whole" / name).read_bytes(), name
    assert not (out / forgetting.PARTIAL).exists()


def test_a_finished_run_resumed_with_more_seeds_adds_them(monkeypatch, tmp_path):
    """Stopped after its results.json, before removing partial.json: a resume with more
    seeds removes the finished run's files first, so a kill during the new seeds leaves no
    results.json of fewer seeds beside the kept runs, then adds the seeds."""
    path = _data(tmp_path)
    exps = forgetting.experiences("split-data-class", data=path)
    s2 = forgetting.settings("split-data-class", **TINY)
    s3 = forgetting.settings("split-data-class", **(TINY | {"seeds": 3}))
    whole = _run(s3, exps, tmp_path / "whole", path=path)
    out = tmp_path / "out"
    runs, results = forgetting.run(s2, exps, data={"data": path}, out=out)
    stale = (out / forgetting.PARTIAL).read_bytes()
    forgetting.write(out, s2, exps, runs, results)
    (out / forgetting.PARTIAL).write_bytes(stale)
    assert forgetting.finished(out)
    with monkeypatch.context() as m:
        _cut_after(m, 1)
        with pytest.raises(KeyboardInterrupt):
            _run(s3, exps, out, path=path, resume=True)
    assert sorted(p.name for p in out.iterdir()) == [forgetting.PARTIAL]
    assert not forgetting.finished(out)
    done = _cut_after(monkeypatch, 0)
    res = _run(s3, exps, out, path=path, resume=True)
    assert done == [(2, "replay")]
    assert _without_times(res) == _without_times(whole)


def test_a_run_that_finished_keeps_its_runs_and_a_resume_adds_seeds_to_them(monkeypatch,
                                                                          tmp_path):
    """A finished run's kept runs move to runs.json; a resume with more seeds runs only the
    new seeds, to the files of a run started with all of them, and a kill while it adds
    them leaves them kept in partial.json, with no results.json of fewer seeds."""
    path = _data(tmp_path)
    exps = forgetting.experiences("split-data-class", data=path)
    s2 = forgetting.settings("split-data-class", **TINY)
    s3 = forgetting.settings("split-data-class", **(TINY | {"seeds": 3}))
    whole = _run(s3, exps, tmp_path / "whole", path=path)
    out = tmp_path / "out"
    _run(s2, exps, out, path=path)
    assert sorted(p.name for p in out.iterdir()) == sorted(forgetting.FILES)
    assert len(json.loads((out / forgetting.RUNS).read_text())["units"]) == 4
    with monkeypatch.context() as m:
        _cut_after(m, 1)
        with pytest.raises(KeyboardInterrupt):
            _run(s3, exps, out, path=path, resume=True)
    assert sorted(p.name for p in out.iterdir()) == [forgetting.PARTIAL]
    assert len(json.loads((out / forgetting.PARTIAL).read_text())["units"]) == 5
    done = _cut_after(monkeypatch, 0)
    res = _run(s3, exps, out, path=path, resume=True)
    assert done == [(2, "replay")]
    assert _without_times(res) == _without_times(whole)
    for name in ("metrics.jsonl", "old_accuracy_vs_steps.png", "accuracy_matrix.png"):
        assert (out / name).read_bytes() == (tmp_path / "whole" / name).read_bytes(), name
    assert sorted(p.name for p in out.iterdir()) == sorted(forgetting.FILES)
    with pytest.raises(ValueError, match=r"--steps \(4 != 6\)"):   # still checked
        forgetting.run(forgetting.settings("split-data-class", **(TINY | {"seeds": 4,
                                                                         "steps": 6})),
                       exps, data={"data": path}, out=out, resume=True)
    assert sorted(p.name for p in out.iterdir()) == sorted(forgetting.FILES)


def test_the_progress_of_a_resume_counts_the_work_left(tmp_path):
    exps = forgetting.experiences("split-data-class", data=_data(tmp_path))
    s = forgetting.settings("split-data-class", **TINY)
    whole = forgetting.total_steps(s, exps)
    assert whole == 2 * (4 + 4 * 2 * 2)
    assert forgetting.total_steps(s, exps, [(0, "naive")]) == whole - 4 * 2   # exp 0 again
    assert forgetting.total_steps(s, exps, [(0, "naive"), (0, "replay")]) == whole / 2


def _kept(monkeypatch, tmp_path, n=1, **over):
    """(out holding a run cut short after ``n`` runs, the data's path, the experiences)."""
    path = _data(tmp_path)
    exps = forgetting.experiences("split-data-class", data=path)
    s = forgetting.settings("split-data-class", **(TINY | over))
    out = tmp_path / "out"
    with monkeypatch.context() as m:
        _cut_after(m, n)
        with pytest.raises(KeyboardInterrupt):
            forgetting.run(s, exps, data={"data": path}, out=out)
    return out, path, exps


def _files(d):
    return {p.name: p.read_bytes() for p in d.iterdir()}


def test_a_resume_with_other_settings_or_data_is_refused_naming_each(monkeypatch, tmp_path):
    out, path, exps = _kept(monkeypatch, tmp_path)
    before = _files(out)
    s = forgetting.settings("split-data-class", **(TINY | {"steps": 6, "seeds": 1}))
    with pytest.raises(ValueError, match="refusing to resume") as e:
        forgetting.run(s, exps, data={"data": path}, out=out, resume=True)
    assert "--seeds (2 != 1: a resume may add seeds, not drop kept ones)" in str(e.value)
    assert "--steps (4 != 6)" in str(e.value) and "--lr" not in str(e.value)
    s = forgetting.settings("split-data-class", **(TINY | {"steps": 6, "seeds": 3}))
    with pytest.raises(ValueError, match="refusing to resume") as e:   # more seeds: no
        forgetting.run(s, exps, data={"data": path}, out=out, resume=True)   # difference
    assert "--steps (4 != 6)" in str(e.value) and "--seeds" not in str(e.value)
    s = forgetting.settings("split-data-class", **(TINY | {"seed": 1, "seeds": 3}))
    with pytest.raises(ValueError, match=r"in --seed \(0 != 1\); give"):     # other seeds
        forgetting.run(s, exps, data={"data": path}, out=out, resume=True)
    other = forgetting.experiences("split-data-class", data=_data(tmp_path, shift=1.0))
    s = forgetting.settings("split-data-class", **TINY)
    with pytest.raises(ValueError, match=r"in the contents of the data \(--data"):
        forgetting.run(s, other, data={"data": path}, out=out, resume=True)
    fewer = forgetting.experiences("split-data-class", data=path, classes_per_experience=3)
    with pytest.raises(ValueError, match=r"--classes-per-experience \(not recorded in the "
                                         r"kept run; this command's: 3\), the contents"):
        forgetting.run(s, fewer, data={"data": path, "classes_per_experience": 3}, out=out,
                       resume=True)
    assert _files(out) == before


def test_a_resume_with_a_default_given_or_the_strategies_reordered_goes_on(monkeypatch,
                                                                         tmp_path):
    """The strategies' order, and a data option given at its default, change no run."""
    out, path, exps = _kept(monkeypatch, tmp_path)
    whole = _run(forgetting.settings("split-data-class", **(TINY | {"strategies": "replay,"
                                                                    "naive"})),
                 exps, tmp_path / "whole", path=path)
    s = forgetting.settings("split-data-class", **(TINY | {"strategies": "replay,naive"}))
    same = forgetting.experiences("split-data-class", data=path, classes_per_experience=2)
    runs, res = forgetting.run(s, same, data={"data": path, "classes_per_experience": 2},
                               out=out, resume=True)
    forgetting.write(out, s, same, runs, res)
    res = _without_times(json.loads((out / "results.json").read_text()))
    assert res.pop("data_options") == {"data": str(path.resolve()),
                                       "classes_per_experience": 2}
    assert res == {k: v for k, v in _without_times(whole).items() if k != "data_options"}
    assert res["settings"]["strategies"] == ["replay", "naive"]


@pytest.mark.parametrize("text,match", [
    ('{"identity": ', r"partial.json is corrupt \(JSONDecodeError"),
    ('[1, 2]', "is corrupt: not the state of a metaloop forgetting run"),
    ('{"command": "forgetting", "identity": {}}', r"is corrupt \(KeyError: 'units'\)"),
    ('{"identity": {"model": "minilm"}, "tasks_done": 1, "per": {}, "eval_seconds": 0}',
     "is the kept state of an interrupted metaloop adapt, not of metaloop forgetting"),
])
def test_a_damaged_or_foreign_partial_json_is_refused_by_name(tmp_path, text, match):
    exps = forgetting.experiences("split-data-class", data=_data(tmp_path))
    s = forgetting.settings("split-data-class", **TINY)
    out = tmp_path / "out"
    out.mkdir()
    (out / forgetting.PARTIAL).write_text(text)
    with pytest.raises(ValueError, match=match):
        forgetting.run(s, exps, out=out, resume=True)
    assert (out / forgetting.PARTIAL).read_text() == text


def test_kept_runs_of_other_seeds_are_refused_as_corrupt(monkeypatch, tmp_path):
    out, path, exps = _kept(monkeypatch, tmp_path)
    state = json.loads((out / forgetting.PARTIAL).read_text())
    state["units"][0]["seed"] = 7
    (out / forgetting.PARTIAL).write_text(json.dumps(state))
    s = forgetting.settings("split-data-class", **TINY)
    with pytest.raises(ValueError, match=r"is corrupt: its runs \[\(7, 'naive'\)\] are not"):
        forgetting.run(s, exps, data={"data": path}, out=out, resume=True)


def test_adapt_names_a_forgetting_run_kept_in_its_out(monkeypatch, tmp_path):
    from metaloop.recipes import adapt

    out, _, _ = _kept(monkeypatch, tmp_path)
    with pytest.raises(ValueError, match="is the kept state of an interrupted metaloop "
                                         "forgetting, not of metaloop adapt"):
        adapt.kept(out, {})
    with pytest.raises(ValueError, match="holds an interrupted metaloop forgetting"):
        adapt.check_resume(out, False)
    # a new library run refuses to remove it (before the Prepared run is even read)
    before = (out / forgetting.PARTIAL).read_bytes()
    with pytest.raises(ValueError, match="kept state of an interrupted metaloop forgetting, "
                                         "which a new metaloop adapt run there would remove"):
        adapt.run(SimpleNamespace(settings=None), out)
    assert (out / forgetting.PARTIAL).read_bytes() == before


def test_a_new_library_run_keeps_another_commands_kept_state(tmp_path):
    """run(out=DIR) without resume removed DIR's partial.json first, whichever command's:
    an interrupted metaloop adapt there was lost."""
    exps = forgetting.experiences("split-data-class", data=_data(tmp_path))
    s = forgetting.settings("split-data-class", **TINY)
    out = tmp_path / "out"
    out.mkdir()
    text = '{"identity": {"model": "minilm"}, "tasks_done": 1, "per": {}, "eval_seconds": 0}'
    (out / forgetting.PARTIAL).write_text(text)
    (out / "results.json").write_text("{}")
    with pytest.raises(ValueError, match=r"partial\.json is the kept state of an interrupted "
                                         r"metaloop adapt, which a new metaloop forgetting "
                                         r"run there would remove"):
        forgetting.run(s, exps, out=out)
    assert (out / forgetting.PARTIAL).read_text() == text
    assert (out / "results.json").read_text() == "{}"


def test_resume_needs_a_folder(tmp_path):
    exps = forgetting.experiences("split-data-class", data=_data(tmp_path))
    s = forgetting.settings("split-data-class", **TINY)
    with pytest.raises(ValueError, match="give out"):
        forgetting.run(s, exps, resume=True)


@pytest.mark.parametrize("damage", [
    lambda u: u["curve"][0].update(accuracy=0.5),             # AttributeError: no .items()
    lambda u: u.update(boundaries=None),                       # crashed in the plot, at the end
    lambda u: u.update(matrix=[[0.5, 0.5], [0.5, 0.5]]),       # 2x2 of 3: crashed in a stack
    lambda u: u["curve"][0]["accuracy"].pop(next(iter(u["curve"][0]["accuracy"]))),
])
def test_a_damaged_kept_run_is_refused_as_corrupt_before_any_work(monkeypatch, tmp_path,
                                                                  damage):
    """A kept run that is no run of this stream was a traceback, or was taken and crashed
    only after the runs left had been done."""
    out, path, exps = _kept(monkeypatch, tmp_path)
    state = json.loads((out / forgetting.PARTIAL).read_text())
    damage(state["units"][0])
    (out / forgetting.PARTIAL).write_text(json.dumps(state))
    before = _files(out)
    done = _cut_after(monkeypatch, 0)
    s = forgetting.settings("split-data-class", **TINY)
    with pytest.raises(ValueError, match=r"partial.json is corrupt \(.*remove it to start"):
        forgetting.run(s, exps, data={"data": path}, out=out, resume=True)
    assert done == [] and _files(out) == before


def test_a_resume_removes_what_a_kill_mid_write_left(monkeypatch, tmp_path):
    """A kill while metrics.jsonl was written atomically left its temporary file, which a
    finished resume kept beside the results."""
    out, path, exps = _kept(monkeypatch, tmp_path)
    for name in (".metrics.jsonl.k1x2", ".partial.json.a8b9", ".results.json.zz"):
        (out / name).write_text("{")
    s = forgetting.settings("split-data-class", **TINY)
    _run(s, exps, out, path=path, resume=True)
    assert sorted(p.name for p in out.iterdir()) == sorted(forgetting.FILES)

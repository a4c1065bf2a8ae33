"""``metaloop compare --resume`` continues the same command's comparison, and throws none of
its runs away quietly: a method left out of ``--methods`` is refused by name (the results would
be rewritten without it), a method's run whose ``LATEST`` is gone is refused with the line
that names its newest checkpoint again (it was trained again from iteration 0), and a config
key a flag changed is named with the flag."""

from __future__ import annotations

import shutil

import pytest

from metaloop.cli.main import main

BASE = ["compare", "--iterations", "2", "--tasks", "3", "--no-progress"]


@pytest.fixture(scope="module")
def compared(tmp_path_factory):
    out = tmp_path_factory.mktemp("cmp") / "k"
    assert main([*BASE, "--methods", "scratch,maml,reptile", "--out", str(out)]) == 0
    return out


def _copy(compared, tmp_path):
    out = tmp_path / "k"
    shutil.copytree(compared, out)
    return out


def _snapshot(out):
    return {p.relative_to(out).as_posix(): p.read_bytes() for p in out.rglob("*")
            if p.is_file() and p.name != "runlock"}


def test_a_resume_with_a_method_left_out_is_refused_by_name(compared, tmp_path, capsys):
    """It rewrote results.json and the plots without reptile, whose run stayed in runs/."""
    out = _copy(compared, tmp_path)
    before = _snapshot(out)
    capsys.readouterr()
    assert main([*BASE, "--methods", "scratch,maml", "--out", str(out), "--resume"]) == 2
    err = capsys.readouterr().err
    assert f"refusing to resume {out}: it holds the run(s) of reptile" in err, err
    assert "--methods scratch,maml,reptile" in err
    assert _snapshot(out) == before


def test_a_new_comparison_over_another_ones_runs_is_refused(compared, tmp_path, capsys):
    out = _copy(compared, tmp_path)
    before = _snapshot(out)
    capsys.readouterr()
    assert main([*BASE, "--methods", "fomaml", "--out", str(out)]) == 2
    assert f"{out} already holds runs of maml, reptile, scratch" in capsys.readouterr().err
    assert _snapshot(out) == before


def test_a_run_without_its_latest_is_not_trained_again(compared, tmp_path, capsys):
    """It was trained again from iteration 0, silently."""
    out = _copy(compared, tmp_path)
    (out / "runs" / "maml" / "LATEST").unlink()
    before = _snapshot(out)
    capsys.readouterr()
    assert main([*BASE, "--methods", "scratch,maml,reptile", "--out", str(out),
                 "--resume"]) == 2
    err = capsys.readouterr().err
    ptr = out / "runs" / "maml" / "LATEST"
    assert "the maml run would be trained again from iteration 0" in err, err
    assert f"echo ckpt-00000002 > {ptr}" in err
    assert _snapshot(out) == before
    ptr.write_text("ckpt-00000002\n")                               # the advice, followed
    assert main([*BASE, "--methods", "scratch,maml,reptile", "--out", str(out),
                 "--resume"]) == 0
    assert (out / "results.json").read_bytes() == before["results.json"]


def test_a_changed_flag_is_named_beside_its_key(compared, tmp_path, capsys):
    out = _copy(compared, tmp_path)
    capsys.readouterr()
    assert main(["compare", "--iterations", "2", "--tasks", "4", "--no-progress",
                 "--methods", "scratch,maml,reptile", "--out", str(out), "--resume"]) == 2
    assert "the config differs in eval.tasks (--tasks) (3 != 4)" in \
        capsys.readouterr().err

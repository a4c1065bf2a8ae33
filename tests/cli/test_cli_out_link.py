"""An ``--out`` that is a symbolic link to a file, or a dangling one (or lies in one), is
refused with exit status 2, naming the link and its target, before anything is written; a
link to a folder is an output folder like any other."""

from __future__ import annotations

import os

import pytest

from metaloop.cli.main import main

CONFIG = ('[family]\nname = "sinusoid"\nshots = 5\n[method]\nname = "maml"\n'
          '[train]\niterations = 2\nmeta_batch = 2\n[eval]\ntasks = 2\nsteps = [0]\n')


def _listing(d) -> list[str]:
    return sorted(str(p.relative_to(d)) for p in d.rglob("*"))


@pytest.mark.parametrize("case", ["file", "dangling", "below a dangling link"])
def test_an_out_link_that_leads_to_no_folder_is_named(case, trained_run, tmp_path, capsys):
    run = trained_run(CONFIG)
    (tmp_path / "afile").write_text("mine\n")
    target = "afile" if case == "file" else str(tmp_path / "gone")
    os.symlink(target, tmp_path / "link")
    out = tmp_path / "link" / "sub" if case.startswith("below") else tmp_path / "link"
    before = _listing(tmp_path)
    capsys.readouterr()
    assert main(["eval", "--checkpoint", str(run), "--out", str(out), "--no-progress"]) == 2
    captured = capsys.readouterr()
    what = "a file, not a folder" if case == "file" else "missing (a dangling link)"
    assert captured.err == (f"metaloop eval: error: cannot create output directory {out}: "
                            f"{tmp_path / 'link'} is a symbolic link to {target}, which is "
                            f"{what}; give a folder, or a link to one\n")
    assert captured.out == ""
    assert _listing(tmp_path) == before and not (tmp_path / "gone").exists()
    assert (tmp_path / "afile").read_text() == "mine\n"


def test_an_out_link_to_a_folder_is_written_through(trained_run, tmp_path, capsys):
    run = trained_run(CONFIG)
    (tmp_path / "real").mkdir()
    os.symlink("real", tmp_path / "link")
    assert main(["eval", "--checkpoint", str(run), "--out", str(tmp_path / "link"),
                 "--no-progress"]) == 0
    assert (tmp_path / "real" / "results.json").is_file()

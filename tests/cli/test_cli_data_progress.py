"""``metaloop data omniglot --no-progress`` turns off the download's progress bar, so without
``--download`` it is a usage error (exit 2) naming both options, before anything is read or
written."""

from __future__ import annotations

import pytest

from metaloop.cli.main import main


@pytest.mark.parametrize("extra", [[], ["--check"]])
def test_no_progress_without_download_is_a_usage_error(tmp_path, capsys, monkeypatch, extra):
    root = tmp_path / "omniglot"
    monkeypatch.setenv("METALOOP_DATA", str(tmp_path / "data"))
    capsys.readouterr()
    assert main(["data", "omniglot", "--root", str(root), "--no-progress", *extra]) == 2
    out, err = capsys.readouterr()
    assert out == ""
    assert "--no-progress turns off the download progress bar, but --download is not " \
           "given" in err
    assert "drop --no-progress, or add --download" in err
    assert not root.exists() and not (tmp_path / "data").exists()


def test_without_no_progress_the_report_still_runs(tmp_path, capsys):
    root = tmp_path / "omniglot"
    root.mkdir()
    capsys.readouterr()
    assert main(["data", "omniglot", "--root", str(root)]) == 2       # every file missing
    out, err = capsys.readouterr()
    assert out.startswith(f"Omniglot, searched in {root}:") and "--no-progress" not in err


def test_the_help_says_no_progress_goes_with_download(capsys):
    with pytest.raises(SystemExit) as done:
        main(["data", "omniglot", "--help"])
    assert done.value.code == 0
    text = " ".join(capsys.readouterr().out.split())
    assert "--no-progress with --download: no download progress bar on stderr (without " \
           "--download nothing is downloaded: a usage error)" in text

"""``metaloop train --config FILE --out DIR --resume-if-any``: one command that starts the run,
and resumes it where DIR holds its checkpoint, as a torchrun restart (``--max-restarts``)
reruns the command it was given. Without the flag a new run into a folder that holds one is
still refused (a typo'd --out)."""

import json
import shutil
import sys
from pathlib import Path

from metaloop.cli.main import main

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "train"))
from _cli import write_config  # noqa: E402


def _lines(run: Path) -> list[dict]:
    lines = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines() if x]
    return [{k: v for k, v in d.items() if k != "time"} for d in lines]


def test_resume_if_any_starts_then_resumes_and_the_plain_command_still_refuses(tmp_path,
                                                                               capsys):
    cfg = write_config(tmp_path / "c.toml", iterations=4, meta_batch=2, checkpoint_every=2,
                       seed=0)
    ref = tmp_path / "ref"
    assert main(["train", "--config", str(cfg), "--out", str(ref), "--no-progress"]) == 0

    run = tmp_path / "run"
    assert main(["train", "--config", str(cfg), "--out", str(run), "--no-progress",
                 "--resume-if-any"]) == 0                    # nothing there: a new run
    assert _lines(run) == _lines(ref)
    # a crash after iteration 2's checkpoint: the newest one gone, LATEST naming ckpt-2
    latest = (run / "LATEST").read_text().strip()
    assert latest == "ckpt-00000004" and (run / latest).is_dir()
    shutil.rmtree(run / latest)
    (run / "LATEST").write_text("ckpt-00000002\n")
    capsys.readouterr()
    assert main(["train", "--config", str(cfg), "--out", str(run), "--no-progress"]) == 2
    assert "already holds a run; use --resume" in capsys.readouterr().err
    # the restart's command: resumes from iteration 2, to the uninterrupted run's numbers
    assert main(["train", "--config", str(cfg), "--out", str(run), "--no-progress",
                 "--resume-if-any"]) == 0
    assert "for 4 iterations" in capsys.readouterr().out
    assert _lines(run) == _lines(ref)
    assert (run / "LATEST").read_text().strip() == "ckpt-00000004"
    assert _lines(run) == _lines(ref)


def test_resume_if_any_needs_config_and_out_and_no_resume(tmp_path, capsys):
    cfg = write_config(tmp_path / "c.toml", iterations=2, meta_batch=2, checkpoint_every=2,
                       seed=0)
    for args in (["--config", str(cfg)], ["--out", str(tmp_path / "r")],
                 ["--config", str(cfg), "--resume", str(tmp_path / "r")]):
        assert main(["train", *args, "--resume-if-any"]) == 2
        assert "--resume-if-any starts the run of --config in --out" in capsys.readouterr().err
    assert not (tmp_path / "r").exists()

"""``metaloop train``'s own messages: what a run that stopped on a non-finite loss leaves, and
what ``--resume`` then does."""

from pathlib import Path

from metaloop.cli.main import main

# Adam at lr 1e30: the first step is finite (its checkpoint is written), the second is not
DIVERGING = """
[family]
name = "sinusoid"
shots = 5
queries = 5
[model]
hidden = [8]
[method]
name = "maml"
[train]
iterations = 10
meta_batch = 2
checkpoint_every = 1
lr = 1e30
"""


def _checkpoints(run: Path) -> dict:
    return {str(p.relative_to(run)): p.read_bytes() for p in sorted(run.rglob("*"))
            if p.is_file() and p.name != "metrics.jsonl"}


def test_a_non_finite_stop_says_that_resume_repeats_it_and_resume_does(tmp_path, capsys):
    cfg, run = tmp_path / "c.toml", tmp_path / "run"
    cfg.write_text(DIVERGING)
    assert main(["train", "--config", str(cfg), "--out", str(run), "--no-progress"]) == 1
    first = capsys.readouterr().err.strip()
    assert first == (f"metaloop train: error: non-finite meta-loss/gradient at iteration 2 "
                     f"(loss nan); the last good checkpoint in {run} (iteration 1) is kept; "
                     f"--resume would repeat the same steps to the same stop: change the "
                     f"config (a lower train.lr, a train.clip_grad_norm) in a new run with "
                     f"another --out, afresh or from this checkpoint's weights (train.init = "
                     f"{str(run)!r})"), first
    kept = _checkpoints(run)
    assert "LATEST" in kept and (run / "LATEST").read_text().strip() == "ckpt-00000001"
    assert main(["train", "--resume", str(run), "--no-progress"]) == 1
    assert capsys.readouterr().err.strip() == first          # the same stop, said alike
    assert _checkpoints(run) == kept                          # the good checkpoint as it was
    assert len((run / "metrics.jsonl").read_text().splitlines()) == 1


def test_a_non_finite_stop_before_any_checkpoint_gives_no_resume_advice(tmp_path, capsys):
    cfg, run = tmp_path / "c.toml", tmp_path / "run"
    cfg.write_text(DIVERGING.replace("checkpoint_every = 1", "checkpoint_every = 5"))
    assert main(["train", "--config", str(cfg), "--out", str(run), "--no-progress"]) == 1
    err = capsys.readouterr().err.strip()
    assert err.endswith(f"no checkpoint was written to {run} yet") and "--resume" not in err


def test_resume_and_out_naming_one_folder_through_a_link_resume_it(tmp_path, capsys):
    """``--resume LINK --out DIR`` where LINK is a symbolic link to DIR: one run directory
    (it was refused as "two run directories"); another folder is still refused."""
    cfg, run = tmp_path / "c.toml", tmp_path / "run"
    cfg.write_text(DIVERGING.replace("lr = 1e30", "lr = 1e-3").replace("iterations = 10",
                                                                      "iterations = 2"))
    assert main(["train", "--config", str(cfg), "--out", str(run), "--no-progress"]) == 0
    link = tmp_path / "link"
    link.symlink_to(run, target_is_directory=True)
    capsys.readouterr()
    assert main(["train", "--resume", str(link), "--out", str(run), "--no-progress"]) == 0
    assert "trained maml for 2 iterations" in capsys.readouterr().out
    (tmp_path / "other").mkdir()
    assert main(["train", "--resume", str(link), "--out", str(tmp_path / "other"),
                 "--no-progress"]) == 2
    assert "name two run directories" in capsys.readouterr().err

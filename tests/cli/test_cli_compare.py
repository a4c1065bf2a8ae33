"""``metaloop compare``: the shipped configs from the command line (--print-config, --config
with a copy), and bad input (exit 2, a named error, nothing written)."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from metaloop.cli.main import main
from metaloop.recipes import compare
from metaloop.train.checkpoint import latest_checkpoint, load_checkpoint

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from conftest import CtrlCAt  # noqa: E402


@pytest.mark.parametrize("family", ["sinusoid", "omniglot"])
def test_print_config_prints_the_shipped_file(family, capsys):
    assert main(["compare", family, "--print-config"]) == 0
    assert capsys.readouterr().out == compare.config_text(family)


def test_a_printed_config_runs_back_through_config(tmp_path, capsys):
    assert main(["compare", "--print-config"]) == 0
    mine = tmp_path / "mine.toml"
    mine.write_text(capsys.readouterr().out.replace("tasks = 600", "tasks = 4"))
    argv = ["compare", "--config", str(mine), "--methods", "scratch,maml", "--iterations", "2",
            "--meta-batch", "2", "--no-progress", "--out", str(tmp_path / "o")]
    assert main(argv) == 0
    res = json.loads((tmp_path / "o" / "results.json").read_text())
    assert res["config"]["eval"]["tasks"] == 4 and res["config"]["train"]["iterations"] == 2
    assert res["config"]["compare"]["methods"] == compare.load_config()["compare"]["methods"]
    assert set(res["methods"]) == {"scratch", "maml"}
    assert res["evaluation"] == {"scratch": "transductive", "maml": "transductive"}


@pytest.mark.parametrize("text,message", [
    ('[compare]\nmethodz = ["maml"]\n', "unknown key(s) compare.methodz"),
    ('[compare.per_method.maml.method]\ninner_batch = 4\n', "applies to reptile only"),
    ('[method]\ntransductive = false\n', "applies to metaoptnet, protonet, r2d2, reptile only"),
    ('[train]\noptimizer = "rmsprop"\n', "train.optimizer = 'rmsprop' is not one of"),
])
def test_bad_compare_configs_exit_2_and_write_nothing(tmp_path, capsys, text, message):
    bad = tmp_path / "bad.toml"
    bad.write_text(text)
    out = tmp_path / "o"
    assert main(["compare", "--config", str(bad), "--no-progress", "--out", str(out)]) == 2
    assert message in capsys.readouterr().err
    assert not out.exists()


@pytest.mark.parametrize("family, shipped", [("omniglot", "omniglot"),
                                             ("folder", "omniglot"), ("sinusoid", "sinusoid")])
def test_print_config_with_a_config_prints_its_familys_shipped_file(tmp_path, capsys, family,
                                                                   shipped):
    """The family of ``--config`` (the one the comparison runs), not sinusoid's; your own
    data runs with the Omniglot file."""
    (tmp_path / "mine.toml").write_text(f'[family]\nname = "{family}"\n')
    assert main(["compare", "--config", str(tmp_path / "mine.toml"), "--print-config"]) == 0
    assert capsys.readouterr().out == compare.config_text(shipped)


@pytest.mark.parametrize("text, message", [
    ("family = 3\n", "bad.toml: [family] must be a table, got 3"),
    ('[family]\nname = "omniglot"\n', "sets family.name = 'omniglot' but the family asked "
     "for is 'sinusoid'"),
])
def test_print_config_with_a_bad_config_is_named(tmp_path, capsys, text, message):
    """--print-config reads the family of --config as a comparison would: a file it could
    not run is named, exit 2 (a [family] that is not a table was a traceback)."""
    (tmp_path / "bad.toml").write_text(text)
    assert main(["compare", "sinusoid", "--config", str(tmp_path / "bad.toml"),
                 "--print-config"]) == 2
    out, err = capsys.readouterr()
    assert out == "" and message in err


def test_sgd_methods_without_an_adapting_eval_step_are_refused(tmp_path, capsys):
    """A file whose eval.steps is [0] (a closed-form head's config, as the example that
    metaloop train --example-config prints) would score every SGD learner unadapted, at
    chance: named, exit 2, nothing written; the closed-form heads alone still run."""
    np.savez(tmp_path / "feats.npz", x=np.random.default_rng(0).normal(size=(120, 6)),
             y=np.arange(12).repeat(10))
    (tmp_path / "mine.toml").write_text(
        f'[family]\nname = "tensors"\nroot = "{tmp_path / "feats.npz"}"\nways = 2\nshots = 1\n'
        'queries = 2\nsplit_fractions = [0.5, 0.0, 0.5]\n[model]\nname = "mlp"\n'
        'hidden = [8]\n[eval]\nsteps = [0]\nsplit = "test"\nqueries = 2\n')
    argv = ["compare", "--config", str(tmp_path / "mine.toml"), "--iterations", "2",
            "--meta-batch", "2", "--tasks", "2", "--no-progress"]
    assert main([*argv, "--methods", "r2d2,maml", "--out", str(tmp_path / "o")]) == 2
    assert "eval.steps = [0]: maml adapts by SGD steps" in capsys.readouterr().err
    assert not (tmp_path / "o").exists()
    assert main([*argv, "--methods", "r2d2,metaoptnet", "--out", str(tmp_path / "h")]) == 0
    with pytest.raises(ValueError, match="scratch adapts by SGD steps"):
        compare.method_config(compare.load_config(overrides={"eval": {"steps": [0]}}),
                              "scratch")


def test_ways_on_a_regression_family_is_refused(tmp_path, capsys):
    """--ways sets the classes of a classification family; on sinusoid (regression) it
    would be ignored, so it is named instead, exit 2, nothing written."""
    argv = ["compare", "--ways", "5", "--iterations", "2", "--tasks", "2", "--methods", "maml",
            "--no-progress", "--out", str(tmp_path / "o")]
    assert main(argv) == 2
    assert "--ways" in (err := capsys.readouterr().err) and "sinusoid is regression" in err
    assert not (tmp_path / "o").exists()
    (tmp_path / "s.toml").write_text('[family]\nname = "sinusoid"\n')
    assert main([*argv[:1], "--config", str(tmp_path / "s.toml"), *argv[1:]]) == 2
    assert "sinusoid is regression" in capsys.readouterr().err


@pytest.mark.parametrize("flags, named", [
    (["--ways", "5"], "--ways"),
    (["--methods", "maml", "--iterations", "3"], "--methods, --iterations"),
    (["--out", "o", "--no-progress"], "--out, --no-progress"),
    (["--resume", "--seed", "2"], "--seed, --resume"),
])
def test_print_config_with_flags_of_a_run_is_refused(tmp_path, capsys, monkeypatch, flags,
                                                      named):
    """--print-config prints the shipped file and exits: the flags that set up a comparison
    changed nothing (the file printed was the shipped one), so they are named instead."""
    monkeypatch.chdir(tmp_path)
    assert main(["compare", "omniglot", "--print-config", *flags]) == 2
    out, err = capsys.readouterr()
    assert out == "" and f"so {named} would change nothing" in err
    assert not list(tmp_path.iterdir())


def test_a_training_seed_equal_to_the_held_out_seed_is_refused(tmp_path, capsys):
    """Sinusoid's held-out tasks are its training tasks drawn from eval.seed: with --seed
    1000003 (the shipped eval.seed) and --meta-batch 100 the first training batch was the
    first 100 held-out tasks, exactly. The flag is named (it was named as the config key
    train.seed, with the fix "give eval.seed another value"); a file's key by its key."""
    argv = ["compare", "--methods", "maml", "--iterations", "2", "--meta-batch", "100",
            "--tasks", "2", "--no-progress", "--out", str(tmp_path / "o")]
    assert main([*argv, "--seed", "1000003"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "--seed 1000003 is the held-out tasks' seed" in err
    assert "tasks it is scored on" in err and "give another --seed" in err
    assert "train.seed" not in err and not (tmp_path / "o").exists()
    (tmp_path / "c.toml").write_text("[train]\nseed = 1000003\n")
    assert main([*argv, "--config", str(tmp_path / "c.toml")]) == 2
    err = capsys.readouterr().err
    assert "train.seed = eval.seed = 1000003" in err and "--seed" not in err
    assert not (tmp_path / "o").exists()


def test_training_flags_with_only_scratch_are_refused(tmp_path, capsys):
    """scratch is not meta-trained: --iterations and --meta-batch changed nothing."""
    assert main(["compare", "--methods", "scratch", "--iterations", "5", "--meta-batch", "3",
                 "--tasks", "2", "--no-progress", "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err
    assert "--iterations, --meta-batch: scratch is not meta-trained" in err
    assert "would change nothing" in err and not (tmp_path / "o").exists()


def test_print_config_of_an_unknown_family_is_named(capsys):
    assert main(["compare", "mnist", "--print-config"]) == 2
    assert "unknown family 'mnist'" in capsys.readouterr().err


@pytest.mark.parametrize("family, flags, message", [
    ('name = "folder"\nroot = "{d}/no_such_folder"\n', [], "does not exist"),
    ('name = "tensors"\nroot = "{d}/feats.npz"\nways = 2\nshots = 1\nqueries = 2\n'
     'split_fractions = [0.5, 0.0, 0.5]\n', ["--ways", "9"], "ways=9 exceeds the 6 classes"),
])
@pytest.mark.parametrize("out", ["o/sub", None])
def test_bad_data_exits_2_and_leaves_no_out_folder(tmp_path, capsys, monkeypatch, family,
                                                   flags, message, out):
    np.savez(tmp_path / "feats.npz", x=np.random.default_rng(0).normal(size=(120, 6)),
             y=np.arange(12).repeat(10))
    (tmp_path / "bad.toml").write_text("[family]\n" + family.format(d=tmp_path))
    monkeypatch.chdir(tmp_path)                          # no --out: ./runs/compare
    argv = ["compare", "--config", "bad.toml", "--methods", "maml", "--no-progress", *flags]
    assert main([*argv, *(["--out", out] if out else [])]) == 2
    assert message in capsys.readouterr().err
    assert not (tmp_path / "o").exists() and not (tmp_path / "runs").exists()


def test_your_own_datas_family_without_its_data_is_named(tmp_path, capsys, monkeypatch):
    """``metaloop compare folder`` with no file giving the folder: the folder family's own
    error (it was sinusoid's, about the Omniglot file's conv4), exit 2, nothing written."""
    monkeypatch.chdir(tmp_path)
    assert main(["compare", "folder", "--methods", "maml", "--iterations", "2",
                 "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert "family.root must name the image folder for family.name = 'folder'" in err, err
    assert not list(tmp_path.iterdir())


def test_an_interrupted_comparison_resumes_to_the_uninterrupted_result(tmp_path, capsys,
                                                                     monkeypatch):
    """Ctrl-C in the second method's training checkpoints it; --resume evaluates the first
    method's finished run again, continues the second and trains the third, and results.json
    is the uninterrupted comparison's."""
    from metaloop import build

    argv = ["compare", "--methods", "maml,fomaml,reptile", "--iterations", "6",
            "--meta-batch", "2", "--tasks", "4", "--no-progress"]
    assert main([*argv, "--out", str(tmp_path / "ref")]) == 0
    real = build.build_family
    monkeypatch.setattr(build, "build_family", lambda *a, **k: CtrlCAt(real(*a, **k), 9))
    out = tmp_path / "run"
    capsys.readouterr()
    assert main([*argv, "--out", str(out)]) == 130
    assert "with --resume continues them" in capsys.readouterr().err
    assert not (out / "results.json").exists() and (out / "runs" / "fomaml").is_dir()
    monkeypatch.setattr(build, "build_family", real)
    assert main([*argv, "--out", str(out)]) == 2               # runs there: not overwritten
    assert "already holds runs of maml, fomaml; use --resume" in capsys.readouterr().err
    assert main([*argv, "--out", str(out), "--resume"]) == 0
    got, want = (json.loads((d / "results.json").read_text()) for d in (out, tmp_path / "ref"))
    assert got == want
    # timing.json says which runs continued (their train_s is only the time to finish them)
    timing = json.loads((out / "timing.json").read_text())["methods"]
    assert {m: t.get("resumed", False) for m, t in timing.items()} == \
        {"maml": True, "fomaml": True, "reptile": False}
    # each method's own run is the uninterrupted one: its checkpoints' parameters and its
    # metrics.jsonl (but for the wall-clock times)
    for m in ("maml", "fomaml", "reptile"):
        a, b = (d / "runs" / m for d in (out, tmp_path / "ref"))
        assert _untimed(a / "metrics.jsonl") == _untimed(b / "metrics.jsonl"), m
        ca, cb = latest_checkpoint(a), latest_checkpoint(b)
        assert ca.name == cb.name
        pa, pb = (load_checkpoint(d)[0] for d in (a, b))
        assert pa.keys() == pb.keys() and all(torch.equal(pa[k], pb[k]) for k in pa), m


def _untimed(path) -> list[dict]:
    return [{k: v for k, v in json.loads(line).items() if k != "time"}
            for line in path.read_text().splitlines()]


def test_ctrl_c_before_any_checkpoint_does_not_offer_resume(tmp_path, capsys, monkeypatch):
    """Stopped while the first method's data is built, nothing is checkpointed and the folder
    is removed: the hint says to start again, not to --resume (which would find no run)."""
    from metaloop import build

    def stopped(*a, **k):
        raise KeyboardInterrupt

    monkeypatch.setattr(build, "build_family", stopped)
    out = tmp_path / "o"
    argv = ["compare", "--methods", "maml", "--iterations", "2", "--meta-batch", "2",
            "--tasks", "2", "--no-progress", "--out", str(out)]
    assert main(argv) == 130
    err = capsys.readouterr().err
    assert "stopped before any run was checkpointed" in err and "--resume continues" not in err
    assert not out.exists()


def test_resume_refuses_a_changed_config_and_an_empty_folder(tmp_path, capsys):
    argv = ["compare", "--methods", "maml", "--iterations", "2", "--meta-batch", "2",
            "--tasks", "2", "--no-progress", "--out", str(tmp_path / "o")]
    assert main([*argv, "--resume"]) == 2
    assert "--resume: no run to continue in" in capsys.readouterr().err
    assert main(argv) == 0
    capsys.readouterr()
    assert main([*argv[:4], "3", *argv[5:], "--resume"]) == 2
    err = capsys.readouterr().err
    assert "refusing to resume" in err and "train.iterations (--iterations) (2 != 3)" in err, err


@pytest.mark.parametrize("flags, text, message", [
    # an empty compare.methods ran every method; a repeat trained maml twice, one row
    ([], '[compare]\nmethods = []\n', "compare.methods = [] names no method"),
    ([], '[compare]\nmethods = ["maml", "maml"]\n',
     "compare.methods = ['maml', 'maml'] names maml more than once"),
    (["--methods", "maml,maml"], None, "--methods 'maml,maml' names maml more than once"),
    (["--methods", "maml,,fomaml"], None, "--methods 'maml,,fomaml' has an empty item"),
    (["--methods", ","], None, "--methods ',' names no method"),
    (["--methods", ""], None, "--methods '' names no method"),
])
def test_an_empty_or_repeated_method_list_is_named(tmp_path, capsys, flags, text, message):
    argv = ["compare", "--iterations", "1", "--tasks", "2", "--no-progress", "--out",
            str(tmp_path / "o"), *flags]
    if text is not None:
        (tmp_path / "c.toml").write_text(text)
        argv += ["--config", str(tmp_path / "c.toml")]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "metaloop compare: error: " in err and message in err
    assert not (tmp_path / "o").exists()
    if flags and "names no method" in message:      # a command line cannot pass None
        assert "or leave --methods out for the config's methods" in err and "None" not in err


def test_a_config_without_compare_methods_keeps_the_default(tmp_path):
    (tmp_path / "c.toml").write_text('[compare]\n')
    cfg = compare.load_config(path=tmp_path / "c.toml")
    assert cfg["compare"]["methods"] == compare.load_config()["compare"]["methods"]


@pytest.mark.parametrize("flags, text, message", [
    # the flags are named by flag (they were named as config keys they had set)...
    (["--shots", "0"], None, "--shots must be positive, got 0"),
    (["--tasks", "-2"], None, "--tasks must be positive, got -2"),
    (["--seed", "-1"], None, "--seed must be an integer >= 0, got -1"),
    # (--ways 1 was named as the config key family.ways, which the file may not set)
    (["--ways", "1", "omniglot"], None, "--ways must be >= 2: a 1-way task is always "
                                        "answered right, got 1"),
    (["--seed", str(2**64)], None, f"--seed must be below 2**64 (it seeds a torch.Generator), "
                                   f"got {2**64}"),
    # ... and a config file's value by its file and key (it was named as the flag
    # --iterations)
    ([], '[train]\niterations = 0\n', "c.toml: train.iterations must be a positive int, got 0"),
    ([], '[train]\nmeta_batch = 0\n', "c.toml: train.meta_batch must be a positive int, got 0"),
])
def test_bad_values_are_named_where_they_were_given(tmp_path, capsys, flags, text, message):
    argv = ["compare", "--methods", "maml", "--no-progress", "--out", str(tmp_path / "o"),
            *flags]
    if text is not None:
        (tmp_path / "c.toml").write_text(text)
        argv += ["--config", str(tmp_path / "c.toml")]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert message in err and "--iterations" not in err
    assert not (tmp_path / "o").exists()


def test_a_checkpoint_of_a_run_as_out_is_refused(tmp_path, capsys):
    """--out naming one ckpt-* folder of a run wrote the comparison's results.json, plots and
    runs/ inside that checkpoint, which its run deletes once it has two newer ones: refused,
    exit 2, the checkpoint left as it was."""
    argv = ["compare", "--methods", "maml", "--iterations", "2", "--meta-batch", "2",
            "--tasks", "2", "--no-progress"]
    assert main([*argv, "--out", str(tmp_path / "a")]) == 0
    ckpt = latest_checkpoint(tmp_path / "a" / "runs" / "maml")
    before = sorted(p.name for p in ckpt.iterdir())
    capsys.readouterr()
    assert main([*argv, "--out", str(ckpt)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and f"{ckpt} is one checkpoint of a run" in err
    assert "give another --out" in err
    assert sorted(p.name for p in ckpt.iterdir()) == before



def test_a_methods_folder_of_other_files_is_refused_before_any_method_trains(tmp_path,
                                                                            capsys):
    """The check came from the method's own ml.train: maml trained and wrote its
    checkpoints first, and the message then said "nothing was written" and "out_dir"."""
    out = tmp_path / "cmp"
    (out / "runs" / "reptile").mkdir(parents=True)
    (out / "runs" / "reptile" / "notes.txt").write_text("mine")
    assert main(["--threads", "1", "compare", "--methods", "maml,reptile", "--iterations", "2",
                 "--meta-batch", "2", "--tasks", "2", "--no-progress", "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert "the folder of the reptile run, holds files that no metaloop run wrote " \
           "('notes.txt')" in err and "give another --out (nothing was written)" in err
    assert not (out / "runs" / "maml").exists()

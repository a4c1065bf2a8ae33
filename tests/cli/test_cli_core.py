"""The core CLI: compare, train, eval, and their errors (exit 2, clear message, no output)."""

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from metaloop.cli.main import main

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from conftest import train_run  # noqa: E402

SMALL = ["compare", "--iterations", "20", "--tasks", "20", "--no-progress",
         "--methods", "scratch,pretrain,maml,fomaml,reptile,anil"]


def test_compare_writes_results_plots_and_is_reproducible(tmp_path, capsys):
    assert main([*SMALL, "--out", str(tmp_path / "a")]) == 0
    table = capsys.readouterr().out
    assert "maml" in table and "±" in table
    res = json.loads((tmp_path / "a" / "results.json").read_text())
    assert set(res["methods"]) == {"scratch", "pretrain", "maml", "fomaml", "reptile", "anil"}
    assert res["methods"]["maml"]["steps"] == list(range(11))
    assert len(res["methods"]["maml"]["loss"]["ci95"]) == 11
    for png in ("loss_vs_steps.png", "fits.png"):
        assert (tmp_path / "a" / png).read_bytes()[:4] == b"\x89PNG"
    assert main([*SMALL, "--out", str(tmp_path / "b")]) == 0
    assert (tmp_path / "a" / "results.json").read_text() == \
        (tmp_path / "b" / "results.json").read_text()


def test_compare_applies_maml_only_config_keys_to_the_maml_family_only(tmp_path):
    cfg = tmp_path / "c.toml"
    cfg.write_text('[method]\nlearn_inner_lr = true\ninner_steps = 2\n')
    assert main(["compare", "--iterations", "3", "--tasks", "5", "--no-progress", "--methods",
                 "scratch,maml,reptile", "--config", str(cfg), "--out", str(tmp_path / "o")]) == 0
    res = json.loads((tmp_path / "o" / "results.json").read_text())
    assert set(res["methods"]) == {"scratch", "maml", "reptile"}
    assert res["config"]["method"]["learn_inner_lr"] is True


def test_recomputed_inner_loop_from_a_config_trains(tmp_path):
    run = train_run(tmp_path, '[family]\nname = "sinusoid"\n[method]\nname = "maml"\n'
                    'inner_steps = 2\nrecompute_inner_loop = true\n[train]\niterations = 3\n'
                    'meta_batch = 4\n')
    from metaloop.runs import load_run
    _run = load_run(run)
    learner, _ = _run.learner, _run.config
    assert learner.inner.checkpoint


def test_learned_inner_lr_trains_resumes_and_evaluates_with_the_learned_table(tmp_path):
    run = train_run(tmp_path, '[family]\nname = "sinusoid"\n[method]\nname = "maml"\n'
                    'inner_steps = 2\nlearn_inner_lr = true\n[train]\niterations = 4\n'
                    'checkpoint_every = 2\nmeta_batch = 4\n[eval]\ntasks = 5\nsteps = [0, 3]\n')
    from metaloop.runs import load_run
    from metaloop.train.checkpoint import load_checkpoint
    _run = load_run(run)
    learner, _ = _run.learner, _run.config
    table = load_checkpoint(run)[0]["model.inner_lr"]               # [2 steps, 6 tensors]
    assert table.shape == (2, 6) and not torch.allclose(table, torch.full_like(table, 0.01))
    assert torch.equal(learner.model.inner_lr.detach(), table)      # loaded, not re-made
    assert main(["eval", "--checkpoint", str(run), "--out", str(tmp_path / "ev")]) == 0
    res = json.loads((tmp_path / "ev" / "results.json").read_text())
    assert res["methods"]["maml"]["steps"] == [0, 3]


def test_compile_from_a_config_reaches_the_learner_with_either_batching():
    from metaloop import build as _build
    from metaloop import config as _config
    cfg = _config.validate({"family": {"name": "omniglot"}, "model": {"name": "conv4"},
                            "method": {"name": "anil", "compile": True}})
    assert _build.batching_on(cfg["method"], "cuda") == "vmap"      # compiles the vmapped tasks
    cfg["method"]["name"] = "fomaml"
    model = _build.build_model(cfg["model"], _FakeFamily(), "fomaml")
    learner = _build.build_learner(cfg, _FakeFamily(), model)
    assert learner.compile and learner.first_order and learner.batching == "loop"   # Conv4, CPU
    cfg["method"]["batching"] = "vmap"
    learner = _build.build_learner(cfg, _FakeFamily(), model)
    assert learner.compile and learner.batching == "vmap"


def test_auto_batching_on_cuda_keeps_the_loop_for_second_order_maml_over_torch_norm_layers():
    # torch's LayerNorm/BatchNorm give a wrong double backward under vmap: "auto" must not
    # pick vmap for second-order MAML over such a model (a text encoder), which the learner
    # would refuse, but still picks it for first-order MAML and for models without them.
    from metaloop import build as _build
    from metaloop import config as _config
    cfg = _config.validate({"family": {"name": "omniglot"}, "model": {"name": "conv4"},
                            "method": {"name": "maml"}})
    normed = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(784, 8),
                                 torch.nn.LayerNorm(8), torch.nn.Linear(8, 5))
    assert _build.batching_on(cfg["method"], "cuda", normed) == "auto"
    assert _build.build_learner(cfg, _FakeFamily(), normed, device="cuda").batching == "loop"
    plain = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(784, 5))
    assert _build.batching_on(cfg["method"], "cuda", plain) == "vmap"
    cfg["method"]["name"] = "fomaml"
    assert _build.batching_on(cfg["method"], "cuda", normed) == "vmap"


def test_threads_batching_from_a_config_reaches_the_learner():
    from metaloop import build as _build
    from metaloop import config as _config
    cfg = _config.validate({"family": {"name": "omniglot"}, "model": {"name": "conv4"},
                            "method": {"name": "anil", "batching": "threads"}})
    model = _build.build_model(cfg["model"], _FakeFamily(), "anil")
    assert _build.build_learner(cfg, _FakeFamily(), model).batching == "threads"


class _FakeFamily:
    kind, ways, image_shape = "classification", 5, (1, 28, 28)


@pytest.mark.parametrize("name", ["conv4", "resnet12"])
def test_a_non_square_image_family_is_named_when_the_model_is_built(name):
    from metaloop import build as _build
    from metaloop import config as _config

    class Wide(_FakeFamily):
        image_shape = (1, 20, 40)

    cfg = _config.validate({"family": {"name": "omniglot"}, "model": {"name": name},
                            "method": {"name": "protonet"}})
    with pytest.raises(ValueError, match=f"model '{name}' reads square images; the family "
                                         f"gives 20x40: pad or resize"):
        _build.build_model(cfg["model"], Wide(), "protonet")


def test_train_then_eval_roundtrip(tmp_path, capsys):
    run = train_run(tmp_path, '[family]\nname = "sinusoid"\nshots = 5\n[method]\nname = "maml"\n'
                    '[train]\niterations = 6\ncheckpoint_every = 3\nmeta_batch = 4\n'
                    '[eval]\ntasks = 10\nsteps = [0, 1]\n')
    assert (run / "LATEST").read_text().strip() == "ckpt-00000006"
    assert main(["eval", "--checkpoint", str(run), "--out", str(tmp_path / "ev")]) == 0
    res = json.loads((tmp_path / "ev" / "results.json").read_text())
    assert res["methods"]["maml"]["steps"] == [0, 1]
    # a second train into the same directory must not clobber it
    assert main(["train", "--config", str(run.parent / "c.toml"), "--out", str(run)]) == 2
    assert "already holds a run" in capsys.readouterr().err
    assert main(["eval", "--checkpoint", str(run), "--tasks", "0"]) == 2
    assert "--tasks must be positive, got 0" in capsys.readouterr().err
    if not torch.cuda.is_available():
        assert main(["eval", "--checkpoint", str(run), "--device", "cuda"]) == 2
        assert "torch sees no CUDA device" in capsys.readouterr().err


@pytest.mark.parametrize("argv,message", [
    (["compare", "mnist"], "unknown family 'mnist'"),
    (["compare", "--methods", "maml,ridge"], "unknown method"),
    (["compare", "--iterations", "0"], "--iterations must be positive"),
    (["compare", "--iterations", "-3"], "--iterations must be positive"),
    (["eval", "--checkpoint", "/nonexistent"], "no checkpoint"),
    (["train"], "--out"),
    # an empty comma list: eval named it eval.steps, vae refused it only after training
    (["eval", "--checkpoint", "/nonexistent", "--steps", ","],
     "eval: error: --steps needs at least one number of adaptation steps, got none"),
    (["vae", "--model", "cvae", "--classes", ","],
     "vae: error: --classes needs at least one class index (C1,C2,...), got none"),
])
def test_bad_input_exits_2_with_message(argv, message, tmp_path, capsys):
    assert main([*argv, *(["--out", str(tmp_path / "o")] if argv[0] == "compare" else [])]) == 2
    assert message in capsys.readouterr().err
    assert not (tmp_path / "o" / "results.json").exists()


@pytest.mark.parametrize("body,message", [
    ('[method]\nname = "maml"\ninner_lr = "big"\n', "method.inner_lr must be int or float"),
    ('[method]\ninnr_lr = 0.1\n', "did you mean 'inner_lr'"),
    ('[trian]\n', "did you mean 'train'"),
    ('[method]\nname = "reptile"\nfirst_order = true\n', "first_order applies"),
    ('[method]\nname = "reptile"\nrecompute_inner_loop = true\n',
     "applies to maml, fomaml and anil"),
    ('[method]\nrecompute_inner_loop = true\nbatching = "vmap"\n', "needs batching"),
    ('[method]\nname = "r2d2"\ncompile = true\n', "compiling meta-training applies to maml"),
    ('[method]\ncompile = true\nbatching = "threads"\n', 'not "threads"'),
    ('[method]\nname = "reptile"\nbatching = "threads"\n', '"threads" applies to maml'),
    ('[method]\nname = "reptile"\nlearn_inner_lr = true\n', "learned inner step sizes apply"),
    ('[method]\nlearn_inner_lr = true\nrecompute_inner_loop = true\n', "drop one"),
    ('[method]\ninner_steps = 0\n', "inner_steps must be a positive int"),
    ('[method]\ninner_lr = -0.1\n', "inner_lr must be a positive"),
    ('[train]\niterations = 0\n', "iterations must be a positive int"),
    ('[train]\nweight_decay = -0.01\n', "train.weight_decay must be a finite number >= 0"),
    ('[train]\nweight_decay = nan\n', "train.weight_decay must be a finite number >= 0"),
    ('[family]\nname = "sinusoid"\nshots = 0\n', "shots must be a positive int"),
    ('not toml [', "not valid TOML"),
])
def test_bad_config_is_named_before_training(body, message, tmp_path, capsys):
    cfg = tmp_path / "bad.toml"
    cfg.write_text(body)
    assert main(["train", "--config", str(cfg), "--out", str(tmp_path / "run")]) == 2
    assert message in capsys.readouterr().err
    assert not (tmp_path / "run" / "LATEST").exists()


@pytest.mark.parametrize("body, message", [
    ('[family]\nname = "sinusoid"\n[train]\nlog_every = -1\n',
     "train.log_every must be >= 0, got -1"),
    ('[family]\nname = "sinusoid"\n[train]\nprefetch = "bogus"\n',
     "train.prefetch = 'bogus' is not one of"),
    ('[method]\nname = "r2d2"\n[eval]\nsteps = [0, 1]\n', "r2d2 solves its head per task"),
])
def test_print_config_refuses_what_train_refuses(body, message, tmp_path, capsys):
    """--print-config printed these configs (exit 0) though train refuses them."""
    cfg = tmp_path / "c.toml"
    cfg.write_text(body)
    assert main(["train", "--config", str(cfg), "--print-config"]) == 2
    assert message in capsys.readouterr().err


def test_print_config_prints_the_seed_the_run_takes_and_refuses_run_flags(tmp_path, capsys):
    """--print-config --seed 7 printed the file's seed (the run trains with 7), and a flag
    only a run reads (--out, --resume, ...) was accepted and ignored."""
    cfg = tmp_path / "c.toml"
    cfg.write_text('[family]\nname = "sinusoid"\n[train]\nseed = 4\n')
    assert main(["train", "--config", str(cfg), "--print-config", "--seed", "7"]) == 0
    train = capsys.readouterr().out.split("[train]")[1].split("\n[")[0]
    assert "\nseed = 7\n" in train
    assert main(["train", "--config", str(cfg), "--print-config", "--seed", "-1"]) == 2
    assert "--seed must be an integer >= 0, got -1" in capsys.readouterr().err
    assert main(["train", "--config", str(cfg), "--print-config", "--out",
                 str(tmp_path / "run"), "--tf32"]) == 2
    out, err = capsys.readouterr()
    assert out == "" and "--out, --tf32 would change nothing" in err
    assert not (tmp_path / "run").exists()


def test_the_closing_line_names_a_log_window_as_one(tmp_path, capsys):
    """With train.log_every > 1 the line said "last meta-batch" of a mean over the window."""
    train_run(tmp_path, '[family]\nname = "sinusoid"\n[method]\nname = "maml"\n'
              '[train]\niterations = 4\nmeta_batch = 2\nlog_every = 2\n')
    out = capsys.readouterr().out
    assert 'mean over the last log window (log_every = 2) {"loss"' in out
    assert "last meta-batch" not in out


@pytest.mark.parametrize("command", ["train", "compare"])
def test_a_folder_given_as_config_is_named_as_a_folder(command, tmp_path, capsys):
    assert main([command, "--config", str(tmp_path), "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err
    assert f"{tmp_path} is a folder, not a config file" in err and "does not exist" not in err
    assert not (tmp_path / "o").exists()


def test_python_dash_m_entry_point():
    r = subprocess.run([sys.executable, "-m", "metaloop", "--help"], capture_output=True,
                       text=True, check=True)
    assert "compare" in r.stdout and "train" in r.stdout


def test_resuming_a_finished_run_says_so_without_an_empty_meta_batch(tmp_path, capsys):
    run = train_run(tmp_path, '[family]\nname = "sinusoid"\n[method]\nname = "maml"\n'
                    '[train]\niterations = 2\nmeta_batch = 2\n')
    assert 'last meta-batch {"loss"' in capsys.readouterr().out
    assert main(["train", "--resume", str(run), "--no-progress"]) == 0
    out = capsys.readouterr().out
    assert "trained maml for 2 iterations; checkpoint in" in out and "{}" not in out


@pytest.mark.parametrize("argv", [
    ["train", "--config", "c.toml", "--out", ""],        # removed everything in the folder
    ["train", "--resume", ""],                           # the command was started from
    ["train", "--config", "c.toml", "--out", " "],
    ["compare", "--out", ""],                            # wrote runs/compare
    ["vae", "--out", ""],                                # wrote into the current folder
    ["forgetting", "--out", ""],
    ["adapt", "--out", ""],
])
def test_an_empty_out_is_refused_and_the_current_folder_is_left_alone(argv, tmp_path,
                                                                      monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "c.toml").write_text('[family]\nname = "sinusoid"\n[train]\niterations = 1\n')
    (tmp_path / "mine.txt").write_text("kept")
    with pytest.raises(SystemExit) as e:
        main(argv)
    assert e.value.code == 2
    flag = "--resume" if "--resume" in argv else "--out"
    assert f"argument {flag}: expected a path, got '" in capsys.readouterr().err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["c.toml", "mine.txt"]


def test_a_failed_train_never_removes_the_folder_it_runs_in(tmp_path, monkeypatch):
    from metaloop.cli.train import _discard

    (tmp_path / "sub").mkdir()
    monkeypatch.chdir(tmp_path / "sub")
    (tmp_path / "sub" / "mine.txt").write_text("kept")
    assert not _discard("") and not _discard(".") and not _discard(tmp_path)
    assert (tmp_path / "sub" / "mine.txt").read_text() == "kept"
    (tmp_path / "made").mkdir()
    assert _discard(tmp_path / "made") and not (tmp_path / "made").exists()


@pytest.mark.parametrize("extra", [[], ["--print-config"]])
def test_a_seed_above_what_torch_takes_is_named_as_the_flag(extra, tmp_path, capsys):
    """It was named as the config's key (``config train.seed must be below 2**64``), which
    the file did not set."""
    cfg = tmp_path / "c.toml"
    cfg.write_text('[family]\nname = "sinusoid"\n[train]\niterations = 1\n')
    out = [] if extra else ["--out", str(tmp_path / "run")]
    assert main(["train", "--config", str(cfg), "--seed", str(2**64), *out, *extra]) == 2
    out_text, err = capsys.readouterr()
    assert f"train: error: --seed must be below 2**64 (it seeds a torch.Generator), got " \
           f"{2**64}" in err and out_text == ""
    assert not (tmp_path / "run").exists()


def test_train_into_a_folder_of_other_files_exits_2_naming_them(tmp_path, capsys):
    cfg = tmp_path / "c.toml"
    cfg.write_text('[family]\nname = "sinusoid"\n[train]\niterations = 1\nmeta_batch = 2\n')
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "metrics.jsonl").write_text("precious\n")
    assert main(["train", "--config", str(cfg), "--out", str(mine), "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert f"{mine} holds files that no metaloop run wrote ('metrics.jsonl')" in err
    assert "give an empty or new --out (nothing was written)" in err
    assert [p.name for p in mine.iterdir()] == ["metrics.jsonl"]
    assert (mine / "metrics.jsonl").read_text() == "precious\n"

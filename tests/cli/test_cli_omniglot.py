"""Omniglot from the CLI: the configs/ profiles, and ``metaloop compare omniglot`` end to end
for all six methods (tiny sizes; data read from ../shared/data/omniglot, nothing downloaded)."""

import json
import re
from pathlib import Path

import pytest

from metaloop import config as _config
from metaloop.cli.main import main

CONFIGS = Path(__file__).resolve().parents[2] / "configs"
METHODS = ("maml", "fomaml", "reptile", "anil", "scratch", "pretrain")
SETTINGS = ("5w1s", "5w5s", "20w1s", "20w5s")


def _cfg(method, setting, profile):
    return _config.load(CONFIGS / f"omniglot_{method}_{setting}_{profile}.toml")


@pytest.mark.parametrize("profile", ["cpu", "full"])
def test_every_profile_exists_and_follows_the_paper(profile):
    evals = set()
    for method in METHODS:
        for setting in SETTINGS:
            c = _cfg(method, setting, profile)
            ways, shots = map(int, re.match(r"(\d+)w(\d+)s", setting).groups())
            if method == "reptile":          # Nichol et al.'s own protocol, not MAML's
                _check_reptile_protocol(c, ways, shots, profile)
                evals.add((c["eval"]["tasks"], c["eval"]["seed"], c["eval"]["queries"]))
                continue
            # the setting tested; a cpu profile may train at another (higher ways, 1 shot)
            # and test this one through [eval], so one run can fill several cells
            tested = (c["eval"]["ways"] or c["family"]["ways"],
                      c["eval"]["shots"] or c["family"]["shots"])
            assert (c["family"]["name"], *tested) == ("omniglot", ways, shots)
            if tested != (c["family"]["ways"], c["family"]["shots"]):
                assert profile == "cpu" and c["family"]["ways"] >= ways \
                    and c["family"]["shots"] <= shots
            assert c["model"] == {**c["model"], "name": "conv4", "pool": "stride",
                                  "channels": 64}
            assert c["family"]["image_size"] == 28
            # the Vinyals train split, or train + val (the 1200 characters the papers train on)
            assert c["family"]["split"] in ("train", "trainval")
            m = c["method"]
            train_ways = c["family"]["ways"]   # the rule of the ways it trains at (pretrain's
            # cpu run trains 20-way and fine-tunes with MAML's 20-way rule at every setting)
            paper = (0.4, 1) if train_ways == 5 else (0.1, 5 if method != "reptile" else 1)
            got = (m["inner_lr"], m["inner_steps"] if method != "reptile" else 1)
            if m["learn_inner_lr"]:
                # only cpu profiles of the MAML family learn their step sizes: from the
                # paper's rate; at 20 ways they train 1 step and test 5
                assert profile == "cpu" and method in ("maml", "fomaml", "anil")
                assert got[0] == paper[0] and got[1] in (1, paper[1])
            else:
                assert got == paper
            assert m["first_order"] == (method == "fomaml")
            if profile == "full" and method != "scratch":   # (scratch does not iterate)
                assert c["train"]["iterations"] == 60000 and c["train"]["lr"] == 1e-3
                assert c["train"]["meta_batch"] == (32 if ways == 5 else 16)
            e = c["eval"]
            assert e["tasks"] >= 600 and e["split"] == "test"
            assert (3 if ways == 5 else 5) in e["steps"]
            evals.add((e["tasks"], e["seed"], e["queries"]))
    assert len(evals) == 1          # the same held-out episodes for every method


def _check_reptile_protocol(c, ways, shots, profile):
    """Nichol et al. 2018's Omniglot protocol: inner Adam (beta1 = 0) on mini-batches of 10
    training shots per class, outer SGD from 1.0 decaying linearly, meta-batch 5, 50 Adam
    steps at test time, non-transductive scoring."""
    f, m, t, e = c["family"], c["method"], c["train"], c["eval"]
    assert (f["name"], f["ways"], f["shots"], f["split"]) == ("omniglot", ways, 10, "trainval")
    assert c["model"] == {**c["model"], "name": "conv4", "pool": "stride", "channels": 64}
    assert (m["name"], m["inner_optimizer"], m["transductive"]) == ("reptile", "adam", False)
    assert m["adam_state"] == "shared"          # the code's one Adam optimizer
    five = ways == 5
    assert (m["inner_lr"], m["inner_steps"], m["inner_batch"], m["test_batch"]) == \
        ((0.001, 5, 10, 5) if five else (0.0005, 10, 20, 10))
    assert (t["optimizer"], t["lr"], t["lr_schedule"], t["meta_batch"]) == \
        ("sgd", 1.0, "linear", 5)
    if profile == "full":
        assert t["iterations"] == (100000 if five else 200000)
    assert (e["shots"], e["split"], 50 in e["steps"]) == (shots, "test", True)
    assert e["tasks"] >= 600


def test_every_config_value_is_commented():
    files = sorted(CONFIGS.glob("omniglot_*.toml"))
    core = [f for f in files if f.name.split("_")[1] in METHODS]
    assert len(core) == len(METHODS) * len(SETTINGS) * 2      # beside them: r2d2, metaoptnet
    for f in files:
        for i, line in enumerate(f.read_text().splitlines(), 1):
            s = line.strip()
            if s and s[0] not in "#[":
                assert "#" in s, f"{f.name}:{i} has no comment: {s}"


def test_every_config_file_validates():
    """Every shipped config, the challenge's pilots and GPU configs included, passes the
    schema and the cross-key checks that ``metaloop train`` applies before it writes."""
    files = sorted(CONFIGS.glob("*.toml"))
    assert len(files) > 50
    for f in files:
        cfg = _config.load(f)
        assert cfg["family"]["name"] and cfg["method"]["name"], f.name


def _compare(tmp_path, root, methods):
    small = tmp_path / "small.toml"
    small.write_text(f'[family]\nroot = "{root}"\nqueries = 2\n'
                     '[model]\nchannels = 8\n[eval]\nsteps = [0, 1]\nqueries = 2\n')
    argv = ["compare", "omniglot", "--iterations", "2", "--meta-batch", "2", "--tasks", "4",
            "--ways", "5", "--shots", "1", "--methods", ",".join(methods), "--config",
            str(small), "--no-progress", "--out", str(tmp_path / "out")]
    assert main(argv) == 0
    res = json.loads((tmp_path / "out" / "results.json").read_text())
    assert set(res["methods"]) == set(methods) and res["family"] == "omniglot"
    for r in res["methods"].values():
        assert r["steps"] == [0, 1] and all(0 <= a <= 1 for a in r["accuracy"]["mean"])
    assert (tmp_path / "out" / "accuracy_vs_steps.png").read_bytes()[:4] == b"\x89PNG"


def test_compare_omniglot_with_a_partial_config(tmp_path, omniglot_root, capsys):
    # pretrain (a 4112-output head, zero head at test) and one meta-learner; the config file
    # overrides only the keys it sets
    _compare(tmp_path, omniglot_root, ("pretrain", "maml"))
    assert "omniglot: held-out query accuracy" in capsys.readouterr().out


@pytest.mark.slow
def test_compare_omniglot_runs_all_six_methods(tmp_path, omniglot_root):
    _compare(tmp_path, omniglot_root, METHODS)


@pytest.mark.parametrize("ways,rule", [(5, (0.4, 1, 32, 3)), (20, (0.1, 5, 16, 5))])
def test_compare_omniglot_uses_the_papers_rule_for_the_ways(ways, rule):
    import argparse

    from metaloop.cli import compare
    p = argparse.ArgumentParser()
    compare.register(p.add_subparsers())
    c = compare._config_for(p.parse_args(["compare", "omniglot", "--ways", str(ways)]))
    lr, steps, batch, eval_steps = rule
    assert (c["method"]["inner_lr"], c["method"]["inner_steps"]) == (lr, steps)
    assert c["train"]["meta_batch"] == batch and eval_steps in c["eval"]["steps"]


def test_a_missing_omniglot_root_is_one_line_and_exit_2(tmp_path, capsys):
    cfg = tmp_path / "om.toml"
    cfg.write_text(f'[family]\nname = "omniglot"\nroot = "{tmp_path / "nowhere"}"\n'
                   f'[model]\nname = "conv4"\n')
    capsys.readouterr()
    assert main(["train", "--config", str(cfg), "--out", str(tmp_path / "run"),
                 "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "not found" in err and str(tmp_path / "nowhere") in err
    assert not (tmp_path / "run").exists()

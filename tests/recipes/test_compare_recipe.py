"""``metaloop.recipes.compare``: the shipped configs, how a user's file and flags merge onto
them, and the recipe on a tiny config (the record is what ``metaloop compare`` writes)."""

from __future__ import annotations

import json

import pytest

from metaloop import config as _config
from metaloop.cli.main import main
from metaloop.recipes import compare

TINY = {"train": {"iterations": 3, "meta_batch": 4, "checkpoint_every": 100},
        "eval": {"tasks": 6, "steps": [0, 1, 3]}}


@pytest.mark.parametrize("family", compare.FAMILIES)
def test_shipped_configs_load_validate_and_name_their_family(family):
    cfg = compare.load_config(family)
    assert cfg["family"]["name"] == family
    assert _config.validate({k: v for k, v in cfg.items() if k != "compare"}) == \
        {k: v for k, v in cfg.items() if k != "compare"}
    for name in compare.methods_for(cfg):
        mcfg = compare.method_config(cfg, name)
        assert mcfg["method"]["name"] == name
    assert "# " in compare.config_text(family)          # commented, for users to copy


def test_sinusoid_defaults_are_the_stable_main_job():
    cfg = compare.load_config()
    assert compare.methods_for(cfg) == ["scratch", "pretrain", "maml", "fomaml", "reptile",
                                        "anil"]
    assert cfg["eval"]["steps"] == list(range(11)) and cfg["eval"]["tasks"] == 600
    assert cfg["train"]["clip_grad_norm"] > 0 and cfg["method"]["inner_steps"] == 2
    assert compare.method_config(cfg, "fomaml")["method"]["first_order"] is True
    assert compare.method_config(cfg, "scratch")["method"]["first_order"] is False


@pytest.mark.parametrize("methods, message", [
    # QA: the library took [] for every method and kept repeats (trained twice, one row)
    ([], r"methods \[\] names no method"),
    ("", r"methods '' names no method"),
    (["maml", "anil", "maml"], r"methods \['maml', 'anil', 'maml'\] names maml more than once"),
    ("maml,maml", r"methods 'maml,maml' names maml more than once"),
    ("maml,,anil", r"methods 'maml,,anil' has an empty item"),
])
def test_methods_for_refuses_an_empty_or_repeated_list(methods, message):
    with pytest.raises(ValueError, match=message):
        compare.methods_for(compare.load_config(), methods)


@pytest.mark.parametrize("listed, message", [
    ([], r"compare.methods = \[\] names no method"),
    (["maml", "maml"], r"compare.methods = \['maml', 'maml'\] names maml more than once"),
])
def test_a_configs_empty_or_repeated_methods_are_refused(listed, message, tmp_path):
    cfg = compare.load_config()
    cfg["compare"]["methods"] = listed               # a config built in Python
    with pytest.raises(ValueError, match=message):
        compare.methods_for(cfg)
    f = tmp_path / "c.toml"                          # and a file, by its name
    f.write_text(f"[compare]\nmethods = {listed!r}\n".replace("'", '"'))
    with pytest.raises(ValueError, match=f"{f}: {message}"):
        compare.load_config(path=f)
    del cfg["compare"]["methods"]                    # no key: the family's default
    assert compare.methods_for(cfg) == compare.methods_for(compare.load_config())


def test_a_users_file_and_flags_override_only_the_keys_they_set(tmp_path):
    f = tmp_path / "mine.toml"
    f.write_text('[family]\nname = "omniglot"\nways = 20\n[train]\niterations = 7\n'
                 '[compare]\nmethods = ["maml", "r2d2"]\n'
                 '[compare.per_method.reptile.method]\ninner_steps = 3\n')
    cfg = compare.load_config(None, f, {"eval": {"tasks": 9}})
    assert cfg["family"]["name"] == "omniglot"           # the file's family, not sinusoid
    assert cfg["train"]["iterations"] == 7 and cfg["eval"]["tasks"] == 9
    # the 20-way rule of the shipped file applies under the file's keys
    assert (cfg["method"]["inner_lr"], cfg["method"]["inner_steps"]) == (0.1, 5)
    assert cfg["train"]["meta_batch"] == 16 and 5 in cfg["eval"]["steps"]
    assert compare.methods_for(cfg) == ["maml", "r2d2"]
    assert compare.method_config(cfg, "reptile")["method"]["inner_steps"] == 3
    assert compare.method_config(cfg, "metaoptnet")["method"]["inner_steps"] == 10


def test_flags_and_a_users_keys_apply_to_every_method():
    cfg = compare.load_config("sinusoid", overrides={"train": {"iterations": 3}})
    assert {compare.method_config(cfg, m)["train"]["iterations"]
            for m in compare.methods_for(cfg)} == {3}
    shipped = compare.load_config("sinusoid")
    assert compare.method_config(shipped, "maml")["train"]["iterations"] != \
        compare.method_config(shipped, "fomaml")["train"]["iterations"]


@pytest.mark.parametrize("family", compare.FAMILIES)
def test_a_copy_of_the_shipped_file_gives_the_same_config(tmp_path, family):
    f = tmp_path / "copy.toml"
    f.write_text(compare.config_text(family))
    assert compare.load_config(None, f) == compare.load_config(family)
    # flags still win over the copy's per-method values
    cfg = compare.load_config(None, f, {"train": {"iterations": 2}})
    assert {compare.method_config(cfg, m)["train"]["iterations"]
            for m in compare.methods_for(cfg)} == {2}


@pytest.mark.parametrize("family", ["folder", "tensors"])
def test_your_own_datas_family_named_as_the_argument_is_kept(tmp_path, family):
    """``metaloop compare tensors --config mine.toml`` with a [family] that gives the data but
    not its name: the comparison is over that family (it was sinusoid, the data ignored)."""
    f = tmp_path / "mine.toml"
    f.write_text(f'[family]\nroot = "{tmp_path / "data"}"\nways = 2\n')
    cfg = compare.load_config(family, f)
    assert cfg["family"]["name"] == family and cfg["family"]["root"] == str(tmp_path / "data")
    assert cfg["family"]["ways"] == 2 and cfg["model"]["name"] == "conv4"   # omniglot's file
    assert compare.load_config(family)["family"]["name"] == family


def test_a_file_that_extends_another_is_the_two_merged(tmp_path):
    """A user's compare config may extend another partial one: the same config as the two
    files' keys written into one."""
    (tmp_path / "mine.toml").write_text('[train]\niterations = 7\nlr = 0.002\n'
                                        '[compare]\nmethods = ["maml", "reptile"]\n')
    (tmp_path / "more.toml").write_text('extends = "mine.toml"\n[train]\niterations = 9\n')
    (tmp_path / "both.toml").write_text('[train]\niterations = 9\nlr = 0.002\n'
                                        '[compare]\nmethods = ["maml", "reptile"]\n')
    got = compare.load_config("sinusoid", tmp_path / "more.toml")
    assert got == compare.load_config("sinusoid", tmp_path / "both.toml")
    assert got["train"]["iterations"] == 9 and got["compare"]["methods"] == ["maml", "reptile"]


@pytest.mark.parametrize("text,match", [
    ('[compare]\nmethod = ["maml"]\n', r"unknown key\(s\) compare.method"),
    ('[compare]\nmethods = ["maml", "protonets"]\n', r"unknown method\(s\) \['protonets'\]"),
    ('[compare.per_method.maml.method]\ninner_step = 2\n', "unknown key method.inner_step"),
    ('[compare.per_ways.twenty.method]\ninner_lr = 0.1\n', "keys are numbers of ways"),
    ('[trian]\niterations = 2\n', r"unknown config section \[trian\]"),
    ('[family]\nname = "omniglot"\n', "sets family.name = 'omniglot' but the family asked"),
    # what every method shares: one method's held-out tasks, training tasks or seed
    ('[compare.per_method.maml.eval]\nseed = 5\ntasks = 3\n',
     r"compare.per_method.maml sets eval.seed, eval.tasks, but every method"),
    ('[compare.per_method.reptile.family]\nshots = 10\n',
     r"per_method.reptile sets family.shots, .* in the file's \[family\]"),
    ('[compare.per_method.anil.train]\nseed = 3\niterations = 9\n',
     r"per_method.anil sets train.seed, but every method .* the same seed"),
])
def test_bad_files_are_named(tmp_path, text, match):
    f = tmp_path / "bad.toml"
    f.write_text(text)
    with pytest.raises(ValueError, match=match):
        compare.load_config("sinusoid", f)


def test_the_recipe_on_a_tiny_config_is_reproducible_and_is_what_the_cli_writes(tmp_path):
    cfg = compare.load_config("sinusoid", overrides=TINY)
    runs = [compare.run(cfg, "maml,reptile,scratch") for _ in range(2)]
    rec = compare.record(runs[0])
    assert rec == compare.record(runs[1])                 # same config and seed: same numbers
    assert set(rec["methods"]) == {"maml", "reptile", "scratch"} and rec["metric"] == "loss"
    for r in rec["methods"].values():
        assert r["steps"] == [0, 1, 3] and len(r["loss"]["mean"]) == 3
        assert all(m > 0 for m in r["loss"]["mean"])
    # the per-task values its CIs come from are kept (regression: no trials)
    assert rec["methods"]["maml"]["per_task"] == runs[0]["methods"]["maml"]["per_task"]
    assert "trials" not in rec["methods"]["maml"]
    # step 0 is the untrained-for-the-task start: MAML and Reptile moved it, scratch did not
    assert set(runs[0]["timing"]) == {"maml", "reptile", "scratch"} and runs[0]["wall_s"] > 0
    argv = ["compare", "--methods", "maml,reptile,scratch", "--iterations", "3",
            "--meta-batch", "4", "--tasks", "6", "--no-progress", "--out", str(tmp_path / "o")]
    small = tmp_path / "small.toml"
    small.write_text('[train]\ncheckpoint_every = 100\n[eval]\nsteps = [0, 1, 3]\n')
    assert main([*argv, "--config", str(small)]) == 0
    written = json.loads((tmp_path / "o" / "results.json").read_text())
    assert written == json.loads(json.dumps(rec))
    timing = json.loads((tmp_path / "o" / "timing.json").read_text())
    assert set(timing["methods"]) == {"maml", "reptile", "scratch"} and timing["wall_s"] > 0


def test_every_method_is_scored_on_the_same_tasks_and_scratch_is_the_shared_init(
        monkeypatch):
    """The held-out tasks each method is scored on (support and query, recorded as they are
    scored) are one list for all; scratch is the initialisation MAML starts from."""
    import torch

    from metaloop import build
    from metaloop.evaluate import heldout

    seen, current = {}, []
    real = heldout.heldout_tasks

    def recorded(family, tasks, seed, chunk=100):
        for batch in real(family, tasks, seed, chunk):
            seen.setdefault(current[-1], []).append(
                [t.clone() for t in (batch.support_x, batch.support_y, batch.query_x,
                                     batch.query_y)])
            yield batch

    monkeypatch.setattr(heldout, "heldout_tasks", recorded)
    cfg = compare.load_config("sinusoid", overrides=TINY)
    res = compare.run(cfg, "scratch,pretrain,maml,reptile", on_method=current.append)
    assert list(seen) == ["scratch", "pretrain", "maml", "reptile"]
    first = seen["scratch"]
    for name, batches in seen.items():
        assert len(batches) == len(first) and all(
            torch.equal(a, b) for x, y in zip(batches, first) for a, b in zip(x, y)), name
    assert sum(b[0].shape[0] for b in first) == cfg["eval"]["tasks"]
    init = build.build_learner(compare.method_config(cfg, "maml"),
                               build.build_family(cfg["family"])).model.state_dict()
    scratch = res["learners"]["scratch"].model.state_dict()
    assert all(torch.equal(init[k], scratch[k]) for k in init)


def test_the_first_methods_train_time_does_not_carry_torchs_lazy_imports(tmp_path):
    """torch imports torch._dynamo (over a second on a CPU) on a process's first optimizer,
    which the first method built inside its timed training: scratch, first in the shipped
    list, was charged that second in timing.json while it trains nothing. In a fresh
    process, the import is done before the first method's training starts."""
    import subprocess
    import sys

    script = (
        "import sys, torch\n"
        "from metaloop.recipes import compare\n"
        "seen = []\n"
        "real = compare.train\n"
        "def train(*a, **k):\n"
        "    seen.append('torch._dynamo' in sys.modules)\n"
        "    return real(*a, **k)\n"
        "compare.train = train\n"
        "assert 'torch._dynamo' not in sys.modules\n"
        "cfg = compare.load_config('sinusoid', overrides={'train': {'iterations': 1, "
        "'meta_batch': 2}, 'eval': {'tasks': 2, 'steps': [0, 1]}})\n"
        "compare.run(cfg, 'scratch,maml')\n"
        "print(seen)\n")
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                         cwd=tmp_path, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[True, True]"

"""R2D2 and MetaOptNet from the CLI: their Omniglot configs, train -> eval round trip,
``metaloop compare omniglot`` with them, and the errors (tiny sizes, data from ../shared)."""

import json
import sys
from pathlib import Path

import pytest
import torch

from metaloop import build as _build
from metaloop import config as _config
from metaloop.cli.main import main
from metaloop.runs import load_run

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from conftest import sgd_keys  # noqa: E402

CONFIGS = Path(__file__).resolve().parents[2] / "configs"


@pytest.mark.parametrize("method", ["r2d2", "metaoptnet"])
@pytest.mark.parametrize("ways", [5, 20])
def test_cpu_configs_build_the_learner(method, ways):
    cfg = _config.load(CONFIGS / f"omniglot_{method}_{ways}w1s_cpu.toml")
    _config.check_combinations(cfg)
    # tested at the file's ways; meta-trained on 20-way tasks (higher-way training)
    assert (cfg["eval"]["ways"] or cfg["family"]["ways"], cfg["family"]["shots"],
            cfg["method"]["name"]) == (ways, 1, method)
    assert cfg["family"]["ways"] == 20
    assert cfg["eval"]["tasks"] >= 600 and cfg["eval"]["split"] == "test"

    class Fam:   # build_learner only needs the family's kind, ways and image shape
        kind, image_shape, num_classes = "classification", (1, 28, 28), 100
    Fam.ways = ways
    learner = _build.build_learner(cfg, Fam())
    assert learner.meta_trains and learner.batching == "loop"
    assert ("log_lam" in dict(learner.model.named_parameters())) == (method == "r2d2")


def _small(tmp_path, root, method, model="conv4"):
    cfg = tmp_path / f"{method}.toml"
    steps = "[0]" if method in _config.HEAD_BASED else "[0, 1]"     # a solved head: step 0
    model, _, readout = model.partition("-")
    conv = f'pool = "stride"\nreadout = "{readout}"\n' if model == "conv4" else ""
    cfg.write_text(f'[family]\nname = "omniglot"\nroot = "{root}"\nways = 3\nshots = 1\n'
                   f'queries = 2\n[model]\nname = "{model}"\nchannels = 4\n{conv}'
                   f'[method]\nname = "{method}"\n{sgd_keys(method, inner_steps=6)}'
                   f'[train]\niterations = 2\nmeta_batch = 2\ncheckpoint_every = 1\n'
                   f'[eval]\ntasks = 4\nsteps = {steps}\nqueries = 2\n')
    return cfg


@pytest.mark.parametrize("method,model", [("r2d2", "conv4"), ("metaoptnet", "conv4"),
                                          ("r2d2", "resnet12"), ("r2d2", "conv4-flatten")])
def test_train_then_eval_roundtrip(tmp_path, omniglot_root, method, model):
    run = tmp_path / "run"
    assert main(["train", "--config", str(_small(tmp_path, omniglot_root, method, model)),
                 "--out", str(run), "--no-progress"]) == 0
    _run = load_run(run)
    learner, _ = _run.learner, _run.config
    assert type(learner.model.backbone).__name__ == {"conv4": "Conv4", "conv4-flatten": "Conv4",
                                                      "resnet12": "ResNet12"}[model]
    if model == "conv4-flatten":           # the 4 x 2 x 2 map of the stride net, not its mean
        assert learner.model.backbone.feature_dim == 16
    assert float(learner.model.log_scale.detach()) != pytest.approx(
        float(torch.log(torch.tensor(10.0 if method == "r2d2" else 8.0))), abs=1e-6)
    assert main(["eval", "--checkpoint", str(run), "--out", str(tmp_path / "ev")]) == 0
    r = json.loads((tmp_path / "ev" / "results.json").read_text())["methods"][method]
    assert r["steps"] == [0]           # a solved head: step 0 alone (eval.steps = [0, 1] refused)


def test_compare_omniglot_with_both(tmp_path, omniglot_root):
    small = tmp_path / "small.toml"
    small.write_text(f'[family]\nroot = "{omniglot_root}"\nqueries = 2\n'
                     '[model]\nchannels = 8\n[eval]\nsteps = [0, 1]\nqueries = 2\n')
    argv = ["compare", "omniglot", "--iterations", "2", "--meta-batch", "2", "--tasks", "4",
            "--ways", "3", "--shots", "1", "--methods", "r2d2,metaoptnet", "--config",
            str(small), "--no-progress", "--out", str(tmp_path / "out")]
    assert main(argv) == 0
    res = json.loads((tmp_path / "out" / "results.json").read_text())
    assert set(res["methods"]) == {"r2d2", "metaoptnet"}
    for r in res["methods"].values():
        assert all(0 <= a <= 1 for a in r["accuracy"]["mean"])


@pytest.mark.parametrize("argv,message", [
    (["compare", "--methods", "maml,r2d2"], "need a classification family, not 'sinusoid'"),
    (["compare", "sinusoid", "--methods", "metaoptnet"], "need a classification family"),
])
def test_head_methods_refuse_regression(argv, message, tmp_path, capsys):
    assert main([*argv, "--out", str(tmp_path / "o")]) == 2
    assert message in capsys.readouterr().err
    assert not (tmp_path / "o").exists()


def test_bad_lam_in_a_config_is_named(tmp_path, capsys):
    cfg = tmp_path / "bad.toml"
    cfg.write_text('[family]\nname = "omniglot"\n[model]\nname = "conv4"\n'
                   '[method]\nname = "r2d2"\nlam = -1.0\n')
    assert main(["train", "--config", str(cfg), "--out", str(tmp_path / "run")]) == 2
    assert "lam must be a finite number > 0" in capsys.readouterr().err
    cfg.write_text('[family]\nname = "omniglot"\n[model]\nname = "conv4"\nreadout = "sum"\n'
                   '[method]\nname = "r2d2"\n')
    assert main(["train", "--config", str(cfg), "--out", str(tmp_path / "run")]) == 2
    assert "model.readout" in capsys.readouterr().err
    cfg.write_text('[family]\nname = "omniglot"\n[model]\nname = "resnet12"\n'
                   'readout = "flatten"\n[method]\nname = "r2d2"\n')
    assert main(["train", "--config", str(cfg), "--out", str(tmp_path / "run")]) == 2
    assert "applies to conv4 only" in capsys.readouterr().err


@pytest.mark.parametrize("method,checkpoint", [("maml", False), ("maml", True),
                                               ("anil", True), ("r2d2", False)])
@pytest.mark.parametrize("device", ["cpu", None, "cuda"])
def test_auto_batching_is_vmap_on_cuda(method, checkpoint, device):
    """Building for CUDA only chooses the batching (nothing is moved, so no GPU is needed)."""
    cfg = _config.validate({"family": {"name": "omniglot"},
                            "model": {"name": "conv4", "channels": 4},
                            "method": {"name": method, "recompute_inner_loop": checkpoint}})

    class Fam:
        kind, image_shape, num_classes, ways = "classification", (1, 28, 28), 100, 5
    learner = _build.build_learner(cfg, Fam(), device=device)
    assert learner.batching == ("vmap" if device == "cuda" and not checkpoint else "loop")
    assert next(learner.model.parameters()).device.type == "cpu"


def test_higher_way_training_evaluates_at_the_eval_ways(tmp_path, omniglot_root, capsys):
    """Train 3-way, test 2-way (config eval.ways, and eval --ways): the head is solved for the
    classes each test task has; the test tasks are those of a 2-way family."""
    cfg = _small(tmp_path, omniglot_root, "r2d2")
    cfg.write_text(cfg.read_text().replace("[eval]\n", "[eval]\nways = 2\n"))
    run = tmp_path / "run"
    assert main(["train", "--config", str(cfg), "--out", str(run), "--no-progress"]) == 0
    _run = load_run(run)
    learner, saved = _run.learner, _run.config
    heldout = _build.eval_family(saved, None)
    assert (saved["family"]["ways"], heldout.ways) == (3, 2)
    assert main(["eval", "--checkpoint", str(run), "--out", str(tmp_path / "e2"),
                 "--no-progress"]) == 0
    r2 = json.loads((tmp_path / "e2" / "results.json").read_text())
    assert main(["eval", "--checkpoint", str(run), "--ways", "3", "--out", str(tmp_path / "e3"),
                 "--no-progress"]) == 0
    r3 = json.loads((tmp_path / "e3" / "results.json").read_text())
    assert (r2["config"]["eval"]["ways"], r3["config"]["eval"]["ways"]) == (2, 3)
    fam3 = _build.eval_family(_config.validate({**saved, "eval": r3["config"]["eval"]}), None)
    b = fam3.sample(4, generator=torch.Generator().manual_seed(r3["config"]["eval"]["seed"]))
    want = sum(float((learner.predict(learner.adapt(sx, sy), qx).argmax(-1) == qy)
                     .float().mean()) for sx, sy, qx, qy in (b.task(i) for i in range(4))) / 4
    assert r3["methods"]["r2d2"]["accuracy"]["mean"][0] == pytest.approx(want, abs=1e-6)


def test_a_zero_head_learner_is_tested_at_other_ways(tmp_path, omniglot_root):
    """pretrain starts each test task from a zero head sized by the task's labels, so a run
    trained on 3-way tasks is tested on 2-way ones: the number equals adapting and scoring
    the same held-out tasks by hand."""
    cfg = _small(tmp_path, omniglot_root, "pretrain")
    run = tmp_path / "run"
    assert main(["train", "--config", str(cfg), "--out", str(run), "--no-progress"]) == 0
    assert main(["eval", "--checkpoint", str(run), "--ways", "2", "--tasks", "4", "--steps",
                 "2", "--out", str(tmp_path / "e2"), "--no-progress"]) == 0
    res = json.loads((tmp_path / "e2" / "results.json").read_text())
    assert res["config"]["eval"]["ways"] == 2
    learner = load_run(run).learner
    fam2 = _build.eval_family(_config.validate({**load_run(run).config,
                                                "eval": res["config"]["eval"]}), None)
    b = fam2.sample(4, generator=torch.Generator().manual_seed(res["config"]["eval"]["seed"]))
    want = []
    for i in range(4):
        sx, sy, qx, qy = b.task(i)
        assert int(sy.max()) == 1                                        # 2-way tasks
        adapted = learner.adapt(sx, sy, steps=2)
        assert adapted[learner.inner.head[0]].shape[0] == 2              # a 2-output head
        want.append(float((learner.predict(adapted, qx).argmax(-1) == qy).float().mean()))
    assert res["methods"]["pretrain"]["accuracy"]["mean"][0] == pytest.approx(
        sum(want) / 4, abs=1e-6)


@pytest.mark.parametrize("body,message", [
    ('[method]\nname = "maml"\n[eval]\nways = 3\n',
     "config eval.ways = 3 differs from family.ways = 5: only ['metaoptnet', 'protonet', "
     "'r2d2'], pretrain and methods with method.head_init = 'zero'"),
    ('[method]\nname = "r2d2"\n[eval]\nways = 1\n', "eval.ways must be 0 (the family's) or >= 2"),
    ('[method]\nname = "protonet"\n[eval]\nsupport_shift = -1\n',
     "bad.toml: eval.support_shift must be >= 0, got -1"),
    ('[method]\nname = "protonet"\n[eval]\nquery_shift = -2\n',
     "bad.toml: eval.query_shift must be >= 0, got -2"),
    ('[method]\nname = "r2d2"\n[eval]\nways = 2000\n',
     "impossible config: eval.ways = 2000 but omniglot eval.split = 'test' has only 1692"),
])
def test_bad_eval_ways_is_named(tmp_path, capsys, body, message):
    cfg = tmp_path / "bad.toml"
    cfg.write_text('[family]\nname = "omniglot"\n[model]\nname = "conv4"\n' + body)
    assert main(["train", "--config", str(cfg), "--out", str(tmp_path / "run")]) == 2
    assert message in capsys.readouterr().err


def test_one_way_classification_is_named_before_anything_is_written(tmp_path, capsys):
    cfg = tmp_path / "bad.toml"
    cfg.write_text('[family]\nname = "omniglot"\nways = 1\n[model]\nname = "conv4"\n'
                   '[method]\nname = "maml"\n')
    assert main(["train", "--config", str(cfg), "--out", str(tmp_path / "run")]) == 2
    assert "config family.ways must be >= 2 for classification: a 1-way task is always " \
        "answered right, got 1" in capsys.readouterr().err
    assert not (tmp_path / "run").exists()


def test_augment_shift_trains_on_shifted_images_only(tmp_path, omniglot_root, capsys):
    cfg = _small(tmp_path, omniglot_root, "r2d2")
    cfg.write_text(cfg.read_text().replace("[train]\n", "[train]\naugment_shift = 2\n"
                                                         "augment_rotate = 10\n"))
    loaded = _config.load(cfg)
    fam = _build.training_family(loaded, _build.build_family(loaded["family"]))
    assert type(fam).__name__ == "Shifted" and (fam.max_shift, fam.max_rotate) == (2, 10)
    assert main(["train", "--config", str(cfg), "--out", str(tmp_path / "run"),
                 "--no-progress"]) == 0
    bad = tmp_path / "bad.toml"
    bad.write_text('[family]\nname = "sinusoid"\n[train]\naugment_shift = 1\n')
    assert main(["train", "--config", str(bad), "--out", str(tmp_path / "r2")]) == 2
    assert "augment_shift" in capsys.readouterr().err
    bad.write_text('[family]\nname = "sinusoid"\n[train]\naugment_rotate = 5.0\n')
    assert main(["train", "--config", str(bad), "--out", str(tmp_path / "r3")]) == 2
    assert "train.augment_rotate = 5.0 rotates images" in capsys.readouterr().err
    bad.write_text(cfg.read_text().replace("augment_rotate = 10", "augment_rotate = 270"))
    assert main(["train", "--config", str(bad), "--out", str(tmp_path / "r4")]) == 2
    assert "augment_rotate must be in [0, 180]" in capsys.readouterr().err
    for text, message in (("augment_stroke = 1.5", "augment_stroke must be in [0, 1]"),
                          ("augment_elastic = -1.0", "augment_elastic must be a finite"),
                          ("augment_elastic = inf", "augment_elastic must be a finite")):
        bad.write_text(cfg.read_text().replace("augment_rotate = 10", text))
        assert main(["train", "--config", str(bad), "--out", str(tmp_path / "r5")]) == 2
        assert message in capsys.readouterr().err
    bad.write_text('[family]\nname = "sinusoid"\n[train]\naugment_elastic = 1.0\n')
    assert main(["train", "--config", str(bad), "--out", str(tmp_path / "r6")]) == 2
    assert "train.augment_elastic = 1.0 bends images" in capsys.readouterr().err
    assert not (tmp_path / "r5").exists() and not (tmp_path / "r6").exists()


def test_stroke_and_elastic_augmentation_reach_the_training_family(tmp_path, omniglot_root):
    cfg = _small(tmp_path, omniglot_root, "protonet")
    cfg.write_text(cfg.read_text().replace("[train]\n", "[train]\naugment_stroke = 0.5\n"
                                                         "augment_elastic = 1.0\n"))
    loaded = _config.load(cfg)
    fam = _build.training_family(loaded, _build.build_family(loaded["family"]))
    assert (fam.max_shift, fam.max_rotate, fam.max_stroke, fam.elastic) == (0, 0, 0.5, 1.0)
    assert main(["train", "--config", str(cfg), "--out", str(tmp_path / "run"),
                 "--no-progress"]) == 0


def test_eval_scoring_switches_modes_records_them_and_names_bad_input(tmp_path, omniglot_root,
                                                                      capsys):
    cfg = _small(tmp_path, omniglot_root, "protonet")
    run, run_nt = tmp_path / "run", tmp_path / "run_nt"
    assert main(["train", "--config", str(cfg), "--out", str(run), "--no-progress"]) == 0
    nt = tmp_path / "nt.toml"
    nt.write_text(cfg.read_text().replace("[method]\n", "[method]\ntransductive = false\n"))
    assert main(["train", "--config", str(nt), "--out", str(run_nt), "--no-progress"]) == 0
    assert load_run(run_nt).learner.evaluation == "non-transductive"
    accs = {}
    for path, how in ((run, "as-trained"), (run, "non-transductive"), (run_nt, "as-trained"),
                      (run_nt, "transductive")):
        capsys.readouterr()
        rec = tmp_path / "results" / f"{path.name}_{how}.json"
        out_dir = tmp_path / f"e_{path.name}_{how}"
        assert main(["eval", "--checkpoint", str(path), "--scoring", how, "--tasks", "4",
                     "--out", str(out_dir), "--record", str(rec), "--no-progress"]) == 0
        printed = capsys.readouterr().out
        record = json.loads(rec.read_text())
        scored = "non-transductive" if (path, how) in ((run, "non-transductive"),
                                                        (run_nt, "as-trained")) else None
        assert record.get("evaluation") == scored
        assert ("queries scored non-transductive" in printed) == bool(scored)
        assert record["row"].endswith(", queries scored non-transductive") == bool(scored)
        assert f"--scoring {how}" in record["command"]
        accs[path.name, how] = record["accuracy_mean"]
    # the same trained model, scored two ways, and each run's own mode restored afterwards
    assert accs["run", "as-trained"] != accs["run", "non-transductive"]
    assert load_run(run).learner.evaluation == "transductive"
    # an ensemble of one of each: the label names both
    capsys.readouterr()
    assert main(["eval", "--checkpoint", str(run), str(run_nt), "--tasks", "2",
                 "--no-progress"]) == 0
    assert "queries scored non-transductive / transductive" in capsys.readouterr().out
    maml = _small(tmp_path, omniglot_root, "maml")
    maml.write_text(maml.read_text() + 'scoring = "non-transductive"\n')
    assert main(["train", "--config", str(maml), "--out", str(tmp_path / "m")]) == 2
    err = capsys.readouterr().err
    assert "eval.scoring = 'non-transductive' applies to metaoptnet, protonet, r2d2, reptile" \
        in err and not (tmp_path / "m").exists()
    with pytest.raises(SystemExit):
        main(["eval", "--checkpoint", str(run), "--scoring", "alone"])
    assert "invalid choice: 'alone'" in capsys.readouterr().err


def test_eval_support_shift_is_recorded_and_printed(tmp_path, omniglot_root, capsys):
    cfg = _small(tmp_path, omniglot_root, "protonet")
    run = tmp_path / "run"
    assert main(["train", "--config", str(cfg), "--out", str(run), "--no-progress"]) == 0
    rec = tmp_path / "results" / "r.json"
    capsys.readouterr()
    assert main(["eval", "--checkpoint", str(run), "--support-shift", "1", "--tasks", "3",
                 "--query-shift", "1", "--out", str(tmp_path / "e"), "--record", str(rec),
                 "--no-progress"]) == 0
    out = capsys.readouterr().out
    assert "support sets grown 9x by every shift of their images up to 1 px" in out
    assert "queries scored by their class probabilities averaged over 9 shifts up to 1 px" in out
    res = json.loads((tmp_path / "e" / "results.json").read_text())
    assert res["config"]["eval"]["support_shift"] == 1
    assert res["config"]["eval"]["query_shift"] == 1
    record = json.loads(rec.read_text())
    assert record["row"].endswith(", support shifted up to 1 px, queries averaged over shifts "
                                  "up to 1 px")
    assert "--support-shift 1" in record["command"] and "--query-shift 1" in record["command"]
    assert "--malloc" not in record["command"]
    bad = tmp_path / "sin.toml"
    for key in ("support_shift", "query_shift"):
        bad.write_text(f'[family]\nname = "sinusoid"\n[eval]\n{key} = 1\n')
        assert main(["train", "--config", str(bad), "--out", str(tmp_path / "r2")]) == 2
        assert f"eval.{key} = 1 shifts images" in capsys.readouterr().err


def test_eval_refine_is_recorded_printed_restored_and_bad_input_named(tmp_path, omniglot_root,
                                                                      capsys):
    cfg = _small(tmp_path, omniglot_root, "protonet")
    run = tmp_path / "run"
    assert main(["train", "--config", str(cfg), "--out", str(run), "--no-progress"]) == 0
    recs = {}
    for flags in ([], ["--refine", "4"], ["--refine", "4", "--refine-temperature", "2",
                                          "--refine-weight", "3"]):
        capsys.readouterr()
        rec = tmp_path / "results" / f"r{len(flags)}.json"
        assert main(["eval", "--checkpoint", str(run), "--tasks", "4", *flags,
                     "--out", str(tmp_path / f"e{len(flags)}"), "--record", str(rec),
                     "--no-progress"]) == 0
        out = capsys.readouterr().out
        record = json.loads(rec.read_text())
        label = (f"transductive, prototypes refined with the queries (4 soft k-means steps, "
                 f"temperature {'2' if len(flags) > 2 else '0.5'}, query weight "
                 f"{'3' if len(flags) > 2 else '2'})")
        assert (f"queries scored {label}" in out) == bool(flags)
        assert record.get("evaluation") == (label if flags else None)
        assert record["row"].endswith(f"queries scored {label}") == bool(flags)
        assert all(f in record["command"] for f in flags)
        res = json.loads((tmp_path / f"e{len(flags)}" / "results.json").read_text())
        assert res["config"]["eval"]["refine"] == (4 if flags else 0)
        recs[len(flags)] = record["accuracy_mean"]
    # the refined prototypes score the queries differently from the plain ones
    assert len({recs[0], recs[2], recs[6]}) > 1
    assert load_run(run).learner.refine == 0
    for flags, message in (
            (["--refine", "-1"], "config eval.refine must be >= 0, got -1"),
            (["--refine", "2", "--refine-temperature", "0"],
             "eval.refine_temperature must be a finite number > 0, got 0.0"),
            (["--refine", "2", "--refine-weight", "nan"],
             "eval.refine_weight must be a finite number > 0, got nan"),
            (["--refine", "2", "--scoring", "non-transductive"],
             "eval.refine = 2 refines the prototypes with all of a task's queries, but its "
             "queries are scored non-transductively")):
        out_dir = tmp_path / "bad"
        assert main(["eval", "--checkpoint", str(run), *flags, "--tasks", "2", "--out",
                     str(out_dir), "--no-progress"]) == 2
        assert message in capsys.readouterr().err and not out_dir.exists()
    r2d2 = tmp_path / "r2d2"
    assert main(["train", "--config", str(_small(tmp_path, omniglot_root, "r2d2")), "--out",
                 str(r2d2), "--no-progress"]) == 0
    assert main(["eval", "--checkpoint", str(r2d2), "--refine", "2", "--tasks", "2"]) == 2
    assert "eval.refine = 2 refines prototypes, which only method.name = 'protonet' has, " \
           "not 'r2d2'" in capsys.readouterr().err


def test_a_run_trained_with_refined_prototypes_is_scored_as_eval_says(tmp_path, omniglot_root,
                                                                      capsys):
    cfg = _small(tmp_path, omniglot_root, "protonet")
    cfg.write_text(cfg.read_text().replace('name = "protonet"\n',
                                           'name = "protonet"\nrefine = 3\n'))
    run = tmp_path / "run"
    assert main(["train", "--config", str(cfg), "--out", str(run), "--no-progress"]) == 0
    assert load_run(run).learner.refine == 3
    label = ("transductive, prototypes refined with the queries (3 soft k-means steps, "
             "temperature 0.5, query weight 2)")
    for flags, scored in ((["--refine", "3"], label),
                          (["--refine", "5"], label.replace("3 soft", "5 soft")),
                          ([], "transductive"),
                          (["--scoring", "non-transductive"], "non-transductive")):
        capsys.readouterr()
        rec = tmp_path / "results" / f"r{'_'.join(flags)}.json"
        assert main(["eval", "--checkpoint", str(run), "--tasks", "4", *flags,
                     "--record", str(rec), "--no-progress"]) == 0
        out = capsys.readouterr().out
        assert ("refined" in out) == ("refined" in scored)
        assert scored == "transductive" or f"queries scored {scored}" in out
        assert json.loads(rec.read_text()).get("evaluation", "transductive") == scored
    bad = tmp_path / "bad.toml"
    bad.write_text(cfg.read_text().replace("refine = 3\n", "refine = 3\ntransductive = false\n"))
    assert main(["train", "--config", str(bad), "--out", str(tmp_path / "bad"),
                 "--no-progress"]) == 2
    assert "method.transductive = false scores each query on its own; drop one" in \
        capsys.readouterr().err and not (tmp_path / "bad").exists()


def test_eval_refine_jointly_is_recorded_and_bad_input_named(tmp_path, omniglot_root, capsys):
    cfg = _small(tmp_path, omniglot_root, "protonet")
    runs = [tmp_path / "run0", tmp_path / "run1"]
    for seed, run in enumerate(runs):
        assert main(["train", "--config", str(cfg), "--seed", str(seed), "--out", str(run),
                     "--no-progress"]) == 0
    acc = {}
    for name, ckpts, flags in (("own", runs, []), ("joint", runs, ["--refine-jointly"]),
                               ("one", runs[:1], [])):
        capsys.readouterr()
        rec = tmp_path / "results" / f"{name}.json"
        assert main(["eval", "--checkpoint", *map(str, ckpts), "--tasks", "4", "--refine", "3",
                     *flags, "--out", str(tmp_path / name), "--record", str(rec),
                     "--no-progress"]) == 0
        out = capsys.readouterr().out
        record = json.loads(rec.read_text())
        joint = name == "joint"               # one checkpoint: nothing to share
        label = ("transductive, prototypes refined with the queries"
                 f"{' jointly by the members' if joint else ''} (3 soft k-means steps, "
                 "temperature 0.5, query weight 2)")
        assert f"queries scored {label}" in out and record["evaluation"] == label
        assert ("--refine-jointly" in record["command"]) == bool(flags)
        res = json.loads((tmp_path / name / "results.json").read_text())
        assert res["config"]["eval"]["refine_jointly"] == bool(flags)
        acc[name] = record["accuracy_mean"]
    out_dir = tmp_path / "bad"
    assert main(["eval", "--checkpoint", *map(str, runs), "--refine-jointly", "--tasks", "2",
                 "--out", str(out_dir), "--no-progress"]) == 2
    assert "eval.refine_jointly = true shares the refinement's assignment between an " \
           "ensemble's members, but eval.refine = 0 refines nothing; set eval.refine > 0 " \
           "(metaloop eval --refine K), or turn refine_jointly off (--no-refine-jointly)" \
           in capsys.readouterr().err
    assert not out_dir.exists()

"""The original Omniglot one-shot challenge from the CLI: a ProtoNet trained on background
alphabets, ``metaloop eval --within-alphabet`` (error rate, CI, trial count), named config
errors that write nothing, and ``metaloop predict`` on official-style 105x105 1-bit PNGs."""

import json
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from metaloop import build as _build
from metaloop import config as _config
from metaloop.cli.main import main
from metaloop.data.lake_runs import OFFICIAL_RUNS_SHA256, read_lake_runs, runs_digest
from metaloop.data.omniglot import load_omniglot_images
from metaloop.evaluate import records
from metaloop.evaluate.heldout import heldout_tasks
from metaloop.evaluate.records import validate_record
from metaloop.runs import load_run

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from conftest import omniglot_config  # noqa: E402


def _config_text(root, family_extra="", eval_extra=""):
    return omniglot_config(root, family_lines=f'split = "background_train"\n{family_extra}',
                           iterations=3,
                           eval_lines=f'split = "background_val"\nwithin_alphabet = true\n'
                           f'ways = 20\nqueries = 1\ntasks = 4\nsteps = [0]\n{eval_extra}')


@pytest.fixture(scope="module")
def run(omniglot_root, trained_run):
    return trained_run(_config_text(omniglot_root, "within_alphabet = 0.5\n"))


def test_eval_within_alphabet_reports_the_error_rate(run, tmp_path, capsys):
    assert main(["eval", "--checkpoint", str(run), "--split", "evaluation", "--within-alphabet",
                 "--tasks", "20", "--out", str(tmp_path / "e"), "--no-progress"]) == 0
    out = capsys.readouterr().out
    res = json.loads((tmp_path / "e" / "results.json").read_text())
    err, acc = res["error_rate"], res["methods"]["protonet"]["accuracy"]
    assert err["mean"] == pytest.approx(1 - acc["mean"][-1]) and err["ci95"] == acc["ci95"][-1]
    assert (err["trials"], err["tasks"], err["ways"], err["shots"], err["queries"]) == \
        (400, 20, 20, 1, 1)
    assert err["split"] == "evaluation" and res["config"]["eval"]["within_alphabet"] is True
    assert (f"within-alphabet 20-way 1-shot error rate: {100 * err['mean']:.2f}% ± "
            f"{100 * err['ci95']:.2f}% (95% CI over 20 tasks, 400 trials)") in out
    # the held-out tasks are within one evaluation alphabet, and the same for every model
    cfg = _config.validate(res["config"])
    fam = _build.eval_family(cfg, None)
    assert fam.split == "evaluation" and fam.within_alphabet == 1.0 and not fam.rotations
    assert not fam.reflections
    batch = next(heldout_tasks(fam, 20, cfg["eval"]["seed"]))
    a = fam.class_alphabet[batch.classes]
    assert (a == a[:, :1]).all()
    # without the flag or the key: no error rate
    assert main(["eval", "--checkpoint", str(run), "--split", "evaluation", "--tasks", "2",
                 "--no-progress"]) == 0
    assert "error rate" in capsys.readouterr().out      # eval.within_alphabet = true in config
    # --drawers shared: every task's support set by one drawer, its queries by another
    assert main(["eval", "--checkpoint", str(run), "--split", "evaluation", "--within-alphabet",
                 "--drawers", "shared", "--tasks", "20", "--out", str(tmp_path / "d"),
                 "--record", str(tmp_path / "d.json"), "--no-progress"]) == 0
    res = json.loads((tmp_path / "d" / "results.json").read_text())
    cfg = _config.validate(res["config"])
    assert cfg["eval"]["drawers"] == "shared" and "drawers shared" in \
        json.loads((tmp_path / "d.json").read_text())["row"]
    fam = _build.eval_family(cfg, None)
    assert fam.drawers == "shared" and fam.within_alphabet == 1.0
    classes, idx = fam.sample_indices(20, torch.Generator().manual_seed(cfg["eval"]["seed"]))
    assert (idx % 20 == (idx % 20)[:, :1]).all() and (a == a[:, :1]).all()


def test_seed_and_ensemble_of_runs(run, trained_run, tmp_path, capsys):
    """``train --seed`` trains another member of one config; ``eval --checkpoint A B`` scores
    the ensemble (averaged probabilities), as the Ensemble learner does, and its record sums
    the members' budgets."""
    from metaloop.meta import Ensemble
    from metaloop.recipes.evaluation import evaluate_run, load_ensemble
    second = trained_run((run.parent / "c.toml").read_text(), "--seed", "1")
    a, b = load_run(run), load_run(second)
    assert (a.config["train"]["seed"], b.config["train"]["seed"]) == (0, 1)
    wa, wb = (dict(r.learner.model.named_parameters()) for r in (a, b))
    assert not all(torch.equal(wa[k], wb[k]) for k in wa)
    capsys.readouterr()
    rec = tmp_path / "ens.json"
    assert main(["eval", "--checkpoint", str(run), str(second), "--split", "evaluation",
                 "--tasks", "6", "--record", str(rec), "--out", str(tmp_path / "e"),
                 "--no-progress"]) == 0
    out = capsys.readouterr().out
    assert "ensemble of 2 runs: class probabilities averaged" in out
    res = json.loads((tmp_path / "e" / "results.json").read_text())
    ens = load_ensemble([run, second])
    assert isinstance(ens.learner, Ensemble) and len(ens.members) == 2
    want = evaluate_run(ens, split="evaluation", tasks=6)["result"]
    assert res["methods"]["protonet"]["accuracy"]["mean"] == want["accuracy"]["mean"]
    r = json.loads(rec.read_text())
    sa, sb = (json.loads((p / "ckpt-00000003" / "state.json").read_text())
              for p in (run, second))
    assert r["budget"]["members"] == 2 and r["budget"]["iterations"] == 6
    assert r["budget"]["cpu_seconds"] == pytest.approx(sa["cpu_seconds"] + sb["cpu_seconds"],
                                                       abs=0.02)
    assert r["row"].endswith("ensemble of 2 runs") and "training_curve" not in r
    # a within-alphabet evaluation is the challenge's measurement: the error rate in %, per
    # task too (each task's 1 - accuracy), in the challenge table
    err = res["error_rate"]
    assert r["table"] == "challenge" and r["metric"] == "within-alphabet 20-way 1-shot error (%)"
    assert r["mean"] == r["error_rate"] == pytest.approx(100 * err["mean"])
    assert r["ci95"] == pytest.approx(100 * err["ci95"]) and r["trials"] == err["trials"]
    acc = want["per_task"]["accuracy"][-1]
    assert r["per_task"] == pytest.approx([100 - 100 * a for a in acc])
    # one run alone is not an ensemble
    assert main(["eval", "--checkpoint", str(run), "--tasks", "2", "--no-progress"]) == 0
    assert "ensemble" not in capsys.readouterr().out


def test_bad_seed_and_mismatched_ensembles_exit_2(run, tmp_path, capsys):
    assert main(["train", "--config", str(run.parent / "c.toml"), "--seed", "-1", "--out",
                 str(tmp_path / "r"), "--no-progress"]) == 2
    assert "--seed must be an integer >= 0, got -1" in capsys.readouterr().err
    assert not (tmp_path / "r").exists()
    assert main(["train", "--resume", str(run), "--seed", "3", "--no-progress"]) == 2
    assert (f"--seed 3: the run in {run} was trained with seed 0, and a resumed run keeps its "
            f"seed; give --seed 0 or leave --seed out") in capsys.readouterr().err
    # a member trained at another resolution reads other images: named, nothing written
    text = (run.parent / "c.toml").read_text().replace("ways = 5\n", "ways = 5\nimage_size = 20\n")
    (tmp_path / "c20.toml").write_text(text)
    assert main(["train", "--config", str(tmp_path / "c20.toml"), "--out",
                 str(tmp_path / "r20"), "--no-progress"]) == 0
    capsys.readouterr()
    assert main(["eval", "--checkpoint", str(run), str(tmp_path / "r20"), "--out",
                 str(tmp_path / "e"), "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert "family.image_size = 20" in err and "same kind of task" in err
    assert not (tmp_path / "e").exists()
    assert main(["eval", "--checkpoint", str(run), str(tmp_path / "nope"),
                 "--no-progress"]) == 2
    assert "no checkpoint at" in capsys.readouterr().err


@pytest.mark.parametrize("change, message", [
    ({"family": {"within_alphabet": 1.5}}, "family.within_alphabet must be a rate in [0, 1]"),
    ({"family": {"rotations": True, "split": "train"}},
     "family.rotations = true applies to the Lake splits; family.split = 'train' (Vinyals)"),
    ({"family": {"within_alphabet": 1.0, "ways": 53}},
     "family.within_alphabet needs 53 characters of one alphabet, but the largest alphabet "
     "of split 'background_train' has 52: lower family.ways to at most 52"),
    ({"eval": {"split": "evaluation", "ways": 48}},
     "eval.within_alphabet needs 48 characters of one alphabet, but the largest alphabet of "
     "split 'evaluation' has 47: lower eval.ways (--ways in metaloop eval) to at most 47"),
    ({"eval": {"drawers": "one"}}, "eval.drawers = 'one' is not one of ['any', 'shared']"),
    ({"family": {"within_alphabet": 1.0, "ways": 417, "rotations": True,
                 "reflections": True}},
     "family.within_alphabet needs 417 characters of one alphabet, but the largest alphabet "
     "of split 'background_train' has 416"),
])
def test_bad_challenge_configs_exit_2_and_write_nothing(omniglot_root, tmp_path, capsys,
                                                        change, message):
    from metaloop.config import tomllib  # tomli before Python 3.11
    cfg = tomllib.loads(_config_text(omniglot_root))
    for section, body in change.items():
        cfg[section].update(body)
    lines = []
    for section, body in cfg.items():
        lines.append(f"[{section}]")
        lines += [f"{k} = {json.dumps(v)}" for k, v in body.items()]
    (tmp_path / "c.toml").write_text("\n".join(lines) + "\n")
    assert main(["train", "--config", str(tmp_path / "c.toml"), "--out",
                 str(tmp_path / "run"), "--no-progress"]) == 2
    assert message in " ".join(capsys.readouterr().err.split())
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize("key", ["within_alphabet = 0.5", 'drawers = "shared"'])
def test_within_alphabet_needs_omniglot(tmp_path, capsys, key):
    (tmp_path / "c.toml").write_text(f'[family]\nname = "sinusoid"\n{key}\n')
    assert main(["train", "--config", str(tmp_path / "c.toml"), "--out",
                 str(tmp_path / "run"), "--no-progress"]) == 2
    assert "apply to omniglot, not family.name = 'sinusoid'" in capsys.readouterr().err
    assert not (tmp_path / "run").exists()


def _save_official(ink: torch.Tensor, path):
    """A 105x105 drawing saved as the official files are: 1-bit PNG, white paper, black ink."""
    Image.fromarray(ink.numpy() == 0).convert("1").save(path)


def test_predict_on_official_105px_pngs(run, omniglot_root, tmp_path, capsys):
    images, names = load_omniglot_images(omniglot_root, "evaluation", 105)   # [659, 20, ...]
    chars = [0, 1, 2, 3, 4]                        # 5 characters of the first alphabet
    for c in chars:
        folder = tmp_path / "support" / names[c].replace("/", "_")
        folder.mkdir(parents=True)
        _save_official(images[c, 0], folder / f"{c + 965:04d}_01.png")
    (tmp_path / "query").mkdir()
    for c in chars:
        for d in (1, 2):
            _save_official(images[c, d], tmp_path / "query" / f"{c + 965:04d}_{d + 1:02d}.png")
    with Image.open(tmp_path / "query" / "0965_02.png") as im:
        assert im.mode == "1" and im.size == (105, 105)
    assert main(["predict", "--checkpoint", str(run), "--support", str(tmp_path / "support"),
                 "--query", str(tmp_path / "query"), "--json"]) == 0
    got = {r["file"].split("/")[-1]: r for r in json.loads(capsys.readouterr().out)}
    assert sorted(got) == sorted(f"{c + 965:04d}_{d + 1:02d}.png" for c in chars for d in (1, 2))
    # the same prediction as the learner on the loader's 28x28 images of those drawings
    _run = load_run(run)
    learner, _ = _run.learner, _run.config
    small, _ = load_omniglot_images(omniglot_root, "evaluation", 28)
    sx = small[chars, 0].float().div(255).unsqueeze(1)                       # [5, 1, 28, 28]
    qx = small[chars][:, 1:3].flatten(0, 1).float().div(255).unsqueeze(1)    # [10, 1, 28, 28]
    with torch.no_grad():
        probs = learner.predict(learner.adapt(sx, torch.arange(5)), qx).softmax(-1)
    classes = sorted(names[c].replace("/", "_") for c in chars)
    for i, (c, d) in enumerate((c, d) for c in chars for d in (1, 2)):
        r = got[f"{c + 965:04d}_{d + 1:02d}.png"]
        scores = np.array([r["scores"][k] for k in classes])
        assert np.abs(scores - probs[i].numpy()).max() < 0.02
        assert r["class"] == classes[int(probs[i].argmax())]


def _episode_folders(images, chars, drawings, root) -> None:
    """``root/support/c<char>/0.png`` (drawing 0 of each character) and
    ``root/query/<char>_<drawing>.png``, from the loader's uint8 images."""
    for c in chars:
        folder = root / "support" / f"c{c}"
        folder.mkdir(parents=True)
        Image.fromarray(images[c, 0].numpy()).save(folder / "0.png")
    (root / "query").mkdir()
    for c in chars:
        for d in drawings:
            Image.fromarray(images[c, d].numpy()).save(root / "query" / f"{c}_{d}.png")


def test_predict_refines_the_prototypes_with_the_queries(run, omniglot_root, tmp_path, capsys):
    images, names = load_omniglot_images(omniglot_root, "evaluation", 28)     # [659, 20, ...]
    chars = [0, 1, 2, 3, 4]
    _episode_folders(images, chars, (1, 2), tmp_path)
    scores = {}
    for k in (0, 4):
        assert main(["predict", "--checkpoint", str(run), "--support", str(tmp_path / "support"),
                     "--query", str(tmp_path / "query"), "--json", "--refine", str(k),
                     "--refine-weight", "3"]) == 0
        got = {r["file"]: r["scores"] for r in json.loads(capsys.readouterr().out)}
        scores[k] = np.array([[got[f"{c}_{d}.png"][f"c{j}"] for j in chars]
                              for c in chars for d in (1, 2)])               # [10, 5]
    # the learner refining with the same queries, on the same images
    learner = load_run(run).learner
    learner.refine, learner.refine_weight = 4, 3.0
    sx = images[chars, 0].float().div(255).unsqueeze(1)                      # [5, 1, 28, 28]
    qx = images[chars][:, 1:3].flatten(0, 1).float().div(255).unsqueeze(1)   # [10, 1, 28, 28]
    with torch.no_grad():
        probs = learner.predict(learner.adapt(sx, torch.arange(5)), qx).softmax(-1)
    assert np.abs(scores[4] - probs.numpy()).max() < 1e-4
    assert np.abs(scores[4] - scores[0]).max() > 1e-3                         # it changed them
    for flags, message in ((["--refine", "2", "--refine-weight", "0"],
                            "--refine-weight must be a finite number > 0, got 0.0"),
                           (["--refine", "-1"], "refine must be an int >= 0")):
        assert main(["predict", "--checkpoint", str(run), "--support", str(tmp_path / "support"),
                     "--query", str(tmp_path / "query"), *flags]) == 2
        captured = capsys.readouterr()
        assert message in captured.err and captured.out == ""


def _moved(x: torch.Tensor, dy: int, dx: int) -> torch.Tensor:
    """Images ``[N, 1, H, W]`` moved down dy and right dx pixels, zero fill (by hand)."""
    out = torch.zeros_like(x)
    h, w = x.shape[-2:]
    out[..., max(dy, 0):h + min(dy, 0), max(dx, 0):w + min(dx, 0)] = \
        x[..., max(-dy, 0):h + min(-dy, 0), max(-dx, 0):w + min(-dx, 0)]
    return out


def test_predict_an_ensemble_with_shifts_and_joint_refinement(run, trained_run, omniglot_root,
                                                               tmp_path, capsys):
    """``predict --checkpoint A B --support-shift --query-shift --refine --refine-jointly``
    gives the probabilities written out by hand: the support grown by every shift, each
    query's probabilities averaged over its shifts, the members' prototypes refined with
    one shared assignment of all those query copies, and the members averaged."""
    from metaloop.recipes.evaluation import load_ensemble, refining
    second = trained_run((run.parent / "c.toml").read_text(), "--seed", "1")
    images, _ = load_omniglot_images(omniglot_root, "evaluation", 28)       # [659, 20, ...]
    chars = [0, 1, 2, 3, 4]
    _episode_folders(images, chars, (1,), tmp_path)
    capsys.readouterr()
    assert main(["predict", "--checkpoint", str(run), str(second), "--support",
                 str(tmp_path / "support"), "--query", str(tmp_path / "query"), "--json",
                 "--support-shift", "1", "--query-shift", "1", "--refine", "3",
                 "--refine-jointly"]) == 0
    got = {r["file"]: r["scores"] for r in json.loads(capsys.readouterr().out)}
    scores = np.array([[got[f"{c}_1.png"][f"c{j}"] for j in chars] for c in chars])  # [5, 5]
    sx = images[chars, 0].float().div(255).unsqueeze(1)                      # [5, 1, 28, 28]
    qx = images[chars, 1].float().div(255).unsqueeze(1)                      # [5, 1, 28, 28]
    moves = [(dy, dx) for dy in (-1, 0, 1) for dx in (-1, 0, 1)]
    sx9 = torch.cat([_moved(sx, dy, dx) for dy, dx in moves])               # [45, 1, 28, 28]
    qx9 = torch.cat([_moved(qx, dy, dx) for dy, dx in moves])               # [45, 1, 28, 28]
    ens = load_ensemble([run, second])
    with torch.no_grad(), refining(ens.learner, 3, jointly=True):
        logp = ens.learner.predict(ens.learner.adapt(sx9, torch.arange(5).repeat(9)), qx9)
    probs = logp.softmax(-1).view(9, 5, 5).mean(0)                          # [Q, C]
    assert np.abs(scores - probs.numpy()).max() < 1e-4
    with torch.no_grad():
        plain = ens.learner.predict(ens.learner.adapt(sx, torch.arange(5)), qx).softmax(-1)
    assert np.abs(scores - plain.numpy()).max() > 1e-3                      # they changed it
    for flags, message in ((["--refine-jointly"], "--refine-jointly shares the refinement's "
                                                  "assignment between the members, but "
                                                  "--refine is 0"),
                           (["--support-shift", "-1"], "--support-shift must be an int >= 0 "
                                                       "pixels, got -1"),
                           (["--query-shift", "-2"], "--query-shift must be an int >= 0 "
                                                     "pixels, got -2")):
        assert main(["predict", "--checkpoint", str(run), str(second), "--support",
                     str(tmp_path / "support"), "--query", str(tmp_path / "query"),
                     *flags]) == 2
        captured = capsys.readouterr()
        assert message in captured.err and captured.out == ""


def test_predict_on_a_run_folder_laid_out_as_lakes(run, omniglot_root, tmp_path, capsys):
    """One of Lake's one-shot runs as distributed: ``training/classNN.png`` (one drawing per
    character, no class folders) and ``test/itemNN.png``; predict names each item's class,
    as the learner decides on the same drawings."""
    images, _ = load_omniglot_images(omniglot_root, "evaluation", 105)       # [659, 20, ...]
    chars = [3, 0, 4, 1, 2]                               # item k is a drawing of chars[k]
    (tmp_path / "run01" / "training").mkdir(parents=True)
    (tmp_path / "run01" / "test").mkdir()
    for k in range(5):
        _save_official(images[k, 0], tmp_path / "run01" / "training" / f"class{k + 1:02d}.png")
        _save_official(images[chars[k], 1], tmp_path / "run01" / "test" / f"item{k + 1:02d}.png")
    assert main(["predict", "--checkpoint", str(run), "--support",
                 str(tmp_path / "run01" / "training"), "--query",
                 str(tmp_path / "run01" / "test")]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert [line.split("\t")[0] for line in lines] == [f"item{k:02d}.png" for k in range(1, 6)]
    small, _ = load_omniglot_images(omniglot_root, "evaluation", 28)
    learner = load_run(run).learner
    sx = small[:5, 0].float().div(255).unsqueeze(1)                          # [5, 1, 28, 28]
    qx = small[chars, 1].float().div(255).unsqueeze(1)                       # [5, 1, 28, 28]
    with torch.no_grad():
        want = learner.predict(learner.adapt(sx, torch.arange(5)), qx).argmax(-1)
    assert [line.split("\t")[1] for line in lines] == [f"class{int(k) + 1:02d}" for k in want]


def _lake_runs(images, root, runs):
    """Official-style runs from the loader's 105x105 images: run r uses characters
    ``chars`` (drawing 0 in training/, drawing 1 in test/, item k drawn of ``chars[perm[k]]``)
    and a class_labels.txt as Lake's."""
    for name, chars, perm in runs:
        (root / name / "training").mkdir(parents=True)
        (root / name / "test").mkdir()
        lines = []
        for k, c in enumerate(chars):
            _save_official(images[c, 0], root / name / "training" / f"class{k + 1:02d}.png")
        for i, k in enumerate(perm):
            _save_official(images[chars[k], 1], root / name / "test" / f"item{i + 1:02d}.png")
            lines.append(f"{name}/test/item{i + 1:02d}.png {name}/training/class{k + 1:02d}.png")
        (root / name / "class_labels.txt").write_text("\n".join(lines) + "\n")


def test_eval_scores_the_official_runs(run, omniglot_root, tmp_path, capsys):
    images, _ = load_omniglot_images(omniglot_root, "evaluation", 105)
    small, _ = load_omniglot_images(omniglot_root, "evaluation", 28)
    runs = [("run01", [0, 1, 2, 3, 4], [3, 0, 4, 1, 2]), ("run02", [5, 6, 7, 8, 9, 10],
                                                          [5, 4, 3, 2, 1, 0])]
    _lake_runs(images, tmp_path / "all_runs", runs)
    capsys.readouterr()
    assert main(["eval", "--checkpoint", str(run), "--lake-runs", str(tmp_path / "all_runs"),
                 "--out", str(tmp_path / "e")]) == 0
    out = capsys.readouterr().out
    res = json.loads((tmp_path / "e" / "results.json").read_text())["lake_runs"]
    # the learner on the loader's 28x28 images of the same drawings, run by run
    learner = load_run(run).learner
    errors = []
    for (name, chars, perm), got in zip(runs, res["runs"]):
        sx = small[chars, 0].float().div(255).unsqueeze(1)
        qx = small[[chars[k] for k in perm], 1].float().div(255).unsqueeze(1)
        with torch.no_grad():
            pred = learner.predict(learner.adapt(sx, torch.arange(len(chars))), qx).argmax(-1)
        wrong = int((pred != torch.tensor(perm)).sum())
        assert (got["name"], got["trials"], got["errors"]) == (name, len(perm), wrong)
        assert f"{name}: {wrong} of {len(perm)} wrong" in out
        errors.append(wrong / len(perm))
    assert res["trials"] == 11 and res["error_rate"] == pytest.approx(np.mean(errors))
    t1 = pytest.importorskip("scipy.stats").t.ppf(0.975, 1)         # Student's t, 2 runs
    assert res["ci95"] == pytest.approx(t1 * np.std(errors, ddof=1) / np.sqrt(2))
    head = (f"official one-shot runs ({tmp_path / 'all_runs'}): error rate "
            f"{100 * res['error_rate']:.2f}% ")
    ends = records.ci95_fields([100 * e for e in errors], trials=11)
    if ends:          # the t interval leaves [0, 100]%: the bounded one the record carries
        assert (f"{head}(95% CI {ends['ci95_low']:.2f} to {ends['ci95_high']:.2f}%, bounded, "
                f"over 2 runs, 11 trials)") in out
    else:
        assert (f"{head}± {100 * res['ci95']:.2f}% (95% CI over 2 runs, 11 trials)") in out
    # with the record's test-time settings: as predict decides on the run folder
    assert main(["eval", "--checkpoint", str(run), "--lake-runs", str(tmp_path / "all_runs"
                                                                       / "run02"),
                 "--support-shift", "1", "--query-shift", "1", "--refine", "3"]) == 0
    out = capsys.readouterr().out
    assert "prototypes refined with the queries (3 soft k-means steps" in out
    assert main(["predict", "--checkpoint", str(run), "--support",
                 str(tmp_path / "all_runs" / "run02" / "training"), "--query",
                 str(tmp_path / "all_runs" / "run02" / "test"), "--support-shift", "1",
                 "--query-shift", "1", "--refine", "3"]) == 0
    decided = [line.split("\t")[1] for line in capsys.readouterr().out.splitlines()]
    wrong = sum(d != f"class{k + 1:02d}" for d, k in zip(decided, runs[1][2]))
    assert f"run02: {wrong} of 6 wrong" in out
    for flags, message in ((["--record", str(tmp_path / "r.txt")],
                            "record path must end in .json"),
                           ([], "holds no one-shot run")):
        target = tmp_path / ("all_runs" if flags else "e")
        assert main(["eval", "--checkpoint", str(run), "--lake-runs", str(target),
                     *flags]) == 2
        captured = capsys.readouterr()
        assert message in captured.err and captured.out == ""
    assert not (tmp_path / "r.txt").exists()


def test_eval_records_the_official_runs(run, omniglot_root, tmp_path, capsys, monkeypatch):
    """--lake-runs --record: a challenge record over the runs, naming the runs scored; the
    zip of the runs scores as the folder does."""
    import shutil
    images, _ = load_omniglot_images(omniglot_root, "evaluation", 105)
    runs = [("run01", [0, 1, 2, 3, 4], [3, 0, 4, 1, 2]), ("run02", [5, 6, 7, 8, 9, 10],
                                                          [5, 4, 3, 2, 1, 0])]
    _lake_runs(images, tmp_path / "all_runs", runs)
    record = tmp_path / "docs" / "official.json"
    assert main(["eval", "--checkpoint", str(run), "--lake-runs", str(tmp_path / "all_runs"),
                 "--support-shift", "1", "--out", str(tmp_path / "e"),
                 "--record", str(record)]) == 0
    assert "the runs are not Lake's official 20" in capsys.readouterr().out
    res = json.loads((tmp_path / "e" / "results.json").read_text())["lake_runs"]
    rec = validate_record(json.loads(record.read_text()))
    assert rec["table"] == "challenge-official" and rec["unit"] == "%"
    assert rec["split"] == "evaluation" and rec["n"] == 2 and rec["trials"] == 11
    assert rec["per_task"] == pytest.approx([100 * r["errors"] / r["trials"]
                                             for r in res["runs"]])
    assert rec["mean"] == pytest.approx(100 * res["error_rate"]) == rec["error_rate"]
    assert rec["ci95"] == pytest.approx(100 * res["ci95"])
    assert rec["lake_runs"] == {"runs": 2, "names": ["run01", "run02"],
                                "runs_sha256": runs_digest(read_lake_runs(
                                    tmp_path / "all_runs"))}
    assert res["official"] is False and rec["lake_runs"]["runs_sha256"] != OFFICIAL_RUNS_SHA256
    assert "support shifted up to 1 px" in rec["row"] and "--lake-runs" in rec["command"]
    assert rec["run_config"]["eval"]["support_shift"] == 1 and rec["budget"]["iterations"] > 0
    monkeypatch.setenv("METALOOP_DATA", str(tmp_path / "cache"))
    zipped = shutil.make_archive(str(tmp_path / "all_runs"), "zip", tmp_path / "all_runs")
    assert main(["eval", "--checkpoint", str(run), "--lake-runs", zipped, "--support-shift",
                 "1", "--out", str(tmp_path / "z")]) == 0
    from_zip = json.loads((tmp_path / "z" / "results.json").read_text())["lake_runs"]
    assert from_zip["runs"] == res["runs"] and from_zip["runs_sha256"] == res["runs_sha256"]

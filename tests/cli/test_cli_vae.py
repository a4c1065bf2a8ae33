"""``metaloop vae``: outputs of a tiny run and a tiny sweep, and clear errors on bad input."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
import torch

from metaloop.cli.main import build_parser, main

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from conftest import write_tiny_fashion  # noqa: E402

TINY = ["--train-examples", "400", "--test-examples", "100", "--epochs", "1",
        "--hidden", "32", "--no-progress", "--threads", "1"]



@pytest.mark.parametrize("model", ["vae", "cvae", "ae"])
def test_vae_command_writes_results_and_pictures(model, tmp_path, fashion_mnist_root, capsys):
    out = tmp_path / model
    k = [] if model == "ae" else ["--k", "7"]          # the AE has no NLL: --k is refused
    rc = main(["vae", "--model", model, "--data", "fashion-mnist", "--root",
               str(fashion_mnist_root), "--latent", "3", *k, "--eval-every", "1",
               "--train-eval-examples", "50", "--out", str(out), *TINY])
    assert rc == 0
    results = json.loads((out / "results.json").read_text())
    assert results["settings"]["model"] == model and results["settings"]["latent"] == 3
    lines = (out / "metrics.jsonl").read_text().splitlines()
    assert len(lines) == 1 and "test_recon" in json.loads(lines[0])
    pictures = {"samples.png", "reconstructions.png", "interpolations.png"}
    if model == "ae":
        pictures.add("samples_fitted.png")
        assert set(results["test"]) == {"recon", "n"}
    else:
        assert {"elbo", "recon", "kl", "nll", "k"} <= set(results["test"])
        assert results["test"]["k"] == 7 and results["test"]["nll"] <= -results["test"]["elbo"] + 5
        assert results["train_subset"]["n"] == 50 and "nll" in results["train_subset"]
    if model == "cvae":
        pictures.add("classes.png")
    assert set(results["pictures"]) == pictures
    for name in pictures:
        assert (out / name).read_bytes()[:4] == b"\x89PNG"
    assert "results.json" in capsys.readouterr().out


def test_sweep_writes_the_picture_and_the_record(tmp_path, fashion_mnist_root):
    from metaloop.evaluate.records import load_record

    out, rec = tmp_path / "sweep", tmp_path / "sweep.json"
    rc = main(["vae", "--sweep-latent", "2,5", "--data", "fashion-mnist", "--root",
               str(fashion_mnist_root), "--classifier-epochs", "1", "--quality-samples", "40",
               "--out", str(out), "--record", str(rec), *TINY])
    assert rc == 0
    results = json.loads((out / "results.json").read_text())
    assert results["latents"] == [2, 5]
    assert set(results["runs"]["2"]) == {"ae", "vae"}
    q = results["runs"]["5"]["ae"]["quality"]
    assert len(q) == 2 and all(0 <= v["recognisable"] <= 1 for v in q.values())
    assert (out / "sweep.png").stat().st_size > 1000
    # the record: the VAE's FD at the largest latent size, every cell in its detail table
    r = load_record(rec)
    vae5 = results["runs"]["5"]["vae"]["quality"]["VAE, z ~ N(0, I)"]["frechet"]
    assert r["table"] == "generative_sweep" and r["mean"] == vae5
    assert r["ci95"] is None and r["n"] == results["n_scored"]
    assert r["budget"]["cpu_seconds"] == round(results["cpu_s"])
    assert "--sweep-latent 2,5" in r["command"] and f"--record {rec}" in r["command"]
    lines = r["detail"].splitlines()
    assert len(lines) == 2 + 2 + 1                    # head, rule, latents 2 and 5, real
    for latent, line in zip((2, 5), lines[2:4]):
        run = results["runs"][str(latent)]
        cells = [c.strip().strip("*") for c in line.strip("|").split("|")]
        fds = [run[k]["quality"][c]["frechet"] for k, c in (
            ("ae", "AE, z ~ N(0, I)"), ("ae", "AE, z ~ Gaussian fitted to codes"),
            ("vae", "VAE, z ~ N(0, I)"))]
        assert cells == [str(latent), *(f"{v:.1f}" for v in fds),
                         f"{run['ae']['test']['recon']:.1f}",
                         f"{run['vae']['test']['elbo']:.1f}"]
        assert line.count("**") == 2 and f"**{min(fds):.1f}**" in line
    assert f"{results['real']['frechet']:.2f}" in lines[4]


@pytest.mark.parametrize("argv, message", [
    (["--latent", "0"], "latent size (--latent) must be a positive int, got 0"),
    (["--latent", "-2"], "latent size (--latent) must be a positive int, got -2"),
    (["--sweep-latent", "2,0"], "latent size (--sweep-latent) must be a positive int, got 0"),
    (["--binarize", "none"], "the Bernoulli decoder needs binary pixels"),
    (["--model", "cvae", "--classes", "3,11"], "unknown class(es) [11] for CVAE sampling"),
    (["--model", "cvae", "--data", "omniglot"], "alphabets are disjoint"),
    (["--classes", "1"], "--classes only applies to the CVAE"),
    (["--resample", "bicubic"], "resample 'bicubic' applies to the Omniglot data sets"),
])
def test_bad_input_exits_2_with_a_clear_message(argv, message, tmp_path, fashion_mnist_root,
                                                capsys):
    rc = main(["vae", "--root", str(fashion_mnist_root), "--out", str(tmp_path), *TINY, *argv])
    err = capsys.readouterr().err
    assert rc == 2
    assert "metaloop vae: error:" in err and message in err
    assert not (tmp_path / "results.json").exists()


def test_bad_argument_syntax_exits_2(capsys):
    with pytest.raises(SystemExit) as e:
        main(["vae", "--sweep-latent", "2,x"])
    assert e.value.code == 2
    assert "comma-separated integers" in capsys.readouterr().err



@pytest.fixture(scope="module")
def tiny_fashion(tmp_path_factory):
    """A made-up Fashion-MNIST in IDX files: class c is a bright bar in band c, plus noise
    (300 training and 100 test images), so nothing is downloaded or read from the system."""
    return write_tiny_fashion(tmp_path_factory.mktemp("tiny_fashion"), 300, 100)


def test_global_threads_option_reaches_vae(tiny_fashion, tmp_path, capsys):
    # `metaloop --threads 1 vae ...` used to die with a TypeError: vae's own --threads
    # (default None) overwrote the global value
    parser = build_parser()
    assert parser.parse_args(["--threads", "3", "vae"]).threads == 3
    assert parser.parse_args(["vae"]).threads == 0
    assert parser.parse_args(["vae", "--threads", "2"]).threads == 2          # old lines
    assert parser.parse_args(["--threads", "3", "vae", "--threads", "2"]).threads == 2
    bad = ["--root", str(tiny_fashion), "--out", str(tmp_path), "--latent", "0"]
    seen, real = [], torch.set_num_threads        # the command's count (main sets it back)
    with pytest.MonkeyPatch.context() as m:
        m.setattr(torch, "set_num_threads", lambda n: seen.append(n) or real(n))
        assert main(["--threads", "1", "vae", *bad]) == 2
        assert seen[0] == 1
        seen.clear()
        assert main(["vae", "--threads", "2", *bad]) == 2
        assert seen[0] == 2
    err = capsys.readouterr().err
    assert err.count("latent size (--latent) must be a positive int, got 0") == 2
    assert "TypeError" not in err
    with pytest.raises(SystemExit) as e:
        main(["vae", "--threads", "-1", *bad])
    assert e.value.code == 2


def test_compare_inversion_end_to_end(tiny_fashion, tmp_path, capsys):
    from metaloop.generative.inversion import FIGURE, METHODS

    out = tmp_path / "inv"
    rc = main(["--threads", "1", "vae", "--compare-inversion", "--root", str(tiny_fashion),
               "--latent", "2", "--hidden", "16", "--epochs", "1", "--classifier-epochs", "2",
               "--quality-samples", "40", "--invert-steps", "15", "--invert-lr", "0.2",
               "--invert-until", "0.9",
               "--no-progress", "--out", str(out), "--record", str(tmp_path / "rec.json")])
    assert rc == 0
    r = json.loads((out / "results.json").read_text())
    # the noise inversion is labelled with the --invert-until it ran with, not a fixed 99%
    assert r["methods"]["inversion"] == "inverted classifier, from noise until A is 90% sure"
    assert r["data"] == "fashion-mnist" and r["n_classes"] == 10 and r["per_class"] == 4
    assert r["inversion"]["steps"] == 15 and r["settings"]["latent"] == 2
    assert set(r["scores"]) == {"real", *METHODS}
    for name, sc in r["scores"].items():
        assert sc["frechet"] >= 0 and 0 <= sc["top_confidence_independent"] <= 1
        conditional = name == "real" or name == "cvae" or name.startswith("inversion")
        assert ("accuracy_independent" in sc) == conditional, name
        if conditional:
            assert 0 <= sc["accuracy_independent"] <= 1
            assert 0 <= sc["mean_confidence_inverted"] <= 1
        assert ("frechet_class" in sc) == conditional, name
    # the real images meant as their own labels lie closer to their classes than the
    # images inverted from another class's real images
    assert r["scores"]["real"]["frechet_class"] < r["scores"]["inversion_from_real"][
        "frechet_class"]
    assert set(r["generators"]) == {"ae", "vae", "cvae"}
    assert r["pictures"] == [FIGURE]
    assert (out / FIGURE).read_bytes()[:4] == b"\x89PNG"
    lines = (out / "metrics.jsonl").read_text().splitlines()
    assert [json.loads(line)["model"] for line in lines] == ["ae", "vae", "cvae"]
    printed = capsys.readouterr().out
    assert "| samples | FD (B features) | FD to class c |" in printed
    assert "from noise until A is 90% sure" in printed and "until A is 99% sure" not in printed
    assert "results.json" in printed
    from metaloop.evaluate.records import load_records

    (rec,) = load_records(tmp_path)                    # a valid docs record
    assert rec["table"] == "generative_inversion" and rec["row"] == "Fashion-MNIST"
    assert rec["n"] == 40 and rec["scores"] == r["scores"]
    assert rec["mean"] == pytest.approx(100 * r["scores"]["inversion"]["accuracy_independent"],
                                        abs=0.01)
    assert rec["command"].startswith("metaloop --threads 1 vae ")
    assert "--compare-inversion" in rec["command"] and "--hidden 16 " in rec["command"]



@pytest.mark.parametrize("argv, message", [
    (["--sweep-latent", "2"], "--compare-inversion and --sweep-latent are separate runs"),
    (["--invert-until", "0"], r"inversion until must be a probability in (0, 1], got 0.0"),
    (["--invert-tv", "-1"], "--invert-tv must be a finite number >= 0, got -1.0"),
    (["--invert-steps", "0"], "inversion steps must be a positive int, got 0"),
    (["--classes", "1"], "--classes only applies to the CVAE"),
    (["--record", "rec.txt"], "record path must end in .json"),
])
def test_compare_inversion_bad_input(argv, message, tiny_fashion, tmp_path, capsys):
    rc = main(["vae", "--compare-inversion", "--root", str(tiny_fashion), "--out",
               str(tmp_path), *argv])
    assert rc == 2
    assert message in capsys.readouterr().err
    assert not (tmp_path / "results.json").exists()


def test_record_needs_a_measured_study(tmp_path, capsys):
    rc = main(["vae", "--record", str(tmp_path / "r.json"), "--out", str(tmp_path)])
    err = capsys.readouterr().err
    assert rc == 2 and "--record goes with --compare-inversion, --inversion-transfer, " \
        "--sweep-latent" in err


def test_compare_inversion_runs_omniglot_on_the_class_sharing_split():
    from metaloop.generative.inversion import split_name

    assert split_name("omniglot") == "omniglot-mixed"
    assert split_name("fashion-mnist") == "fashion-mnist"


PROTOCOL = ["--protocol", "iwae", "--data", "fashion-mnist", "--stages", "2", "--latent", "3",
            "--hidden", "16,16", "--curve-k", "5", "--curve-examples", "20",
            "--no-progress"]


def test_protocol_run_stops_resumes_and_writes_a_record(tiny_fashion, tmp_path, capsys,
                                                        monkeypatch):
    out = tmp_path / "iwae"
    common = ["--threads", "1", "vae", *PROTOCOL, "--root", str(tiny_fashion), "--out",
              str(out)]
    assert main([*common, "--until-pass", "2"]) == 0
    printed = capsys.readouterr().out
    assert "2/4 passes" in printed and "continue with --resume" in printed
    assert main([*common, "--resume", "--k", "20"]) == 0          # passes 3, 4, then k = 20
    printed = capsys.readouterr().out
    assert "4/4 passes" in printed and "test NLL" in printed
    final = json.loads((out / "final-k20-n100.json").read_text())
    assert final["passes"] == 4 and [s["from_passes"] for s in final["sessions"]] == [0, 2]
    assert [c["passes"] for c in final["curve"]] == [1, 4]        # the two stage ends
    rec_path = tmp_path / "docs" / "generative_iwae.json"
    from metaloop.evaluate import records

    written, write = [], records.write_record
    monkeypatch.setattr(records, "write_record",
                        lambda path, **kw: (written.append(Path(path).name), write(path, **kw)))
    assert main([*common, "--evaluate", "--k", "10", "--test-examples", "30", "--record",
                 str(rec_path)]) == 0
    # the main record last: a stop before it leaves none beside an earlier curve
    assert written == ["generative_iwae_curve_0001.json", "generative_iwae_curve_0004.json",
                       "generative_iwae.json"]
    from metaloop.evaluate.records import load_records

    recs = load_records(rec_path.parent)
    (rec,) = [r for r in recs if r["table"] == "generative_iwae"]
    curve = sorted((r for r in recs if r["table"] == "generative_iwae_curve"),
                   key=lambda r: r["order"])
    assert [r["budget"]["iterations"] for r in curve] == [1, 4]      # the stage ends
    assert [r["mean"] for r in curve] == [round(c["nll"], 2) for c in final["curve"]]
    assert all("--resume" in r["command"] and "--evaluate" not in r["command"] for r in curve)
    assert (tmp_path / "docs" / "generative_iwae_curve_0004.json").exists()
    assert rec["n"] == 30 and rec["budget"]["iterations"] == 4
    assert rec["metric"] == "test NLL (nats), k = 10, a fixed random 30 of the 100 test images"
    # Fashion-MNIST at 4 passes is not what the paper measured: no published number
    assert rec["published"] is None and rec["device"].endswith("1 thread")
    assert rec["command"].startswith("metaloop --threads 1 vae ")
    assert "--protocol iwae" in rec["command"] and "--evaluate" in rec["command"]


@pytest.mark.parametrize("argv, message", [
    (["--resume"], "--resume go(es) with --protocol iwae"),
    (["--protocol", "iwae", "--resume"], "no checkpoint in"),
    (["--protocol", "iwae", "--evaluate"], "no checkpoint in"),
    (["--protocol", "iwae", "--model", "cvae"], "--protocol iwae trains one VAE"),
    (["--protocol", "iwae", "--stages", "0"], "stages must be a positive int, got 0"),
    (["--protocol", "iwae", "--record", "r.json"], "--record goes with --evaluate"),
    (["--protocol", "iwae", "--evaluate", "--resume"], "--evaluate measures the checkpoint"),
    (["--protocol", "iwae", "--data", "fashion-mnist", "--resample", "bicubic"],
     "Fashion-MNIST is 28x28 already"),
])
def test_protocol_bad_input_exits_2(argv, message, tiny_fashion, tmp_path, capsys):
    rc = main(["vae", "--root", str(tiny_fashion), "--out", str(tmp_path / "run"), *argv])
    assert rc == 2
    assert message in capsys.readouterr().err
    assert not (tmp_path / "run" / "LATEST").exists()


def test_vae_help_has_an_example(capsys):
    with pytest.raises(SystemExit):
        main(["vae", "--help"])
    assert "--protocol iwae --data omniglot-mixed" in capsys.readouterr().out


def test_inversion_transfer_end_to_end(tiny_fashion, tmp_path, capsys):
    out = tmp_path / "transfer"
    rc = main(["--threads", "1", "vae", "--inversion-transfer", "--root", str(tiny_fashion),
               "--classifier-epochs", "1", "--quality-samples", "20", "--invert-steps", "10",
               "--invert-lr", "0.2", "--invert-lrs", "0.2,0.1", "--no-progress", "--out",
               str(out), "--record", str(tmp_path / "rec" / "t.json")])
    assert rc == 0
    r = json.loads((out / "results.json").read_text())
    assert [(row["start"], row["lr"], row["max_steps"]) for row in r["rows"]] == [
        ("noise", 0.2, 10), ("noise", 0.1, 20), ("real", 0.2, 10), ("real", 0.1, 20)]
    for row in r["rows"]:
        assert row["n"] == 20 and 0 <= row["accuracy_independent"] <= 1
        assert row["mean_abs_change"] > 0
        assert ("independent_says_source" in row) == (row["start"] == "real")
        assert row["frechet_class"] >= 0
    assert "| noise | 0.1 (20) |" in capsys.readouterr().out
    from metaloop.evaluate.records import load_records

    (rec,) = load_records(tmp_path / "rec")
    assert rec["table"] == "generative_inversion_transfer" and rec["n"] == 20
    acc = r["classifier_test_accuracy"]
    assert rec["row"] == (f"Fashion-MNIST, classifiers trained 1 epoch "
                          f"({100 * acc['inverted']:.1f}% / {100 * acc['independent']:.1f}%), "
                          f"from noise, Adam lr 0.1")
    assert rec["detail"].startswith("| start | Adam lr (max steps) |")
    assert "| FD (B's features) | FD to class c |" in rec["detail"]
    assert rec["mean"] == pytest.approx(100 * r["rows"][1]["accuracy_independent"], abs=0.01)
    assert "--invert-lrs 0.2,0.1" in rec["command"]


@pytest.mark.parametrize("argv, message", [
    (["--invert-lrs", "0.1,0"], "inversion learning rates must be > 0, got 0.0"),
    (["--compare-inversion"], "--inversion-transfer is a run of its own"),
])
def test_inversion_transfer_bad_input(argv, message, tiny_fashion, tmp_path, capsys):
    rc = main(["vae", "--inversion-transfer", "--root", str(tiny_fashion), "--out",
               str(tmp_path / "t"), "--classifier-epochs", "1", "--quality-samples", "20",
               "--no-progress", *argv])
    assert rc == 2 and message in capsys.readouterr().err


@pytest.mark.parametrize("hidden, message", [
    (",", "--hidden needs at least one width (H1,H2,...), got none"),     # an MLP with no
    ("", "--hidden needs at least one width (H1,H2,...), got none"),      # layer was trained
    ("0", "--hidden must be positive widths, got 0"),
    ("-3", "--hidden must be positive widths, got -3"),
    ("64,0", "--hidden must be positive widths, got 64,0"),
])
def test_bad_hidden_widths_exit_2_naming_hidden_and_write_nothing(hidden, message,
                                                                  tiny_fashion, tmp_path,
                                                                  capsys):
    out = tmp_path / "run"
    assert main(["vae", "--root", str(tiny_fashion), f"--hidden={hidden}", "--out", str(out),
                 "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert err == f"metaloop vae: error: {message}\n"
    assert not out.exists()


def test_a_blank_hidden_width_is_a_usage_error_naming_hidden(tmp_path, capsys):
    """``--hidden 64,,32`` trained a 64-32 MLP as if the blank were not there."""
    with pytest.raises(SystemExit) as e:
        main(["vae", "--hidden", "64,,32", "--out", str(tmp_path / "run")])
    assert e.value.code == 2
    err = capsys.readouterr().err
    assert "argument --hidden: expected comma-separated integers, got '64,,32'" in err
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize("seed", [str(2**64 - 4), str(-2**63 - 1)])
def test_a_seed_torch_cannot_take_is_named_before_the_data_is_read(seed, tiny_fashion,
                                                                   tmp_path, capsys):
    """It was torch's 'Overflow when unpacking long long', naming no flag (the run also
    seeds with --seed + 1 .. + 4, so 2**64 - 4 overflowed too)."""
    out = tmp_path / "run"
    assert main(["vae", "--root", str(tiny_fashion), "--out", str(out), "--no-progress",
                 f"--seed={seed}"]) == 2
    assert f"metaloop vae: error: --seed {seed} is outside " in capsys.readouterr().err
    assert not out.exists()


@pytest.mark.parametrize("argv, message", [
    (["--sweep-latent", "2,8,2"], "--sweep-latent 2,8,2 names 2 more than once"),
    (["--inversion-transfer", "--invert-lrs", "0.05,0.05"],
     "--invert-lrs 0.05,0.05 names 0.05 more than once"),
])
def test_a_repeated_value_of_a_list_is_named(argv, message, tiny_fashion, tmp_path, capsys):
    """The sweep keeps one result per latent size (a repeat was trained again and overwrote
    it); the transfer study scored a repeated step size twice."""
    out = tmp_path / "run"
    assert main(["vae", "--root", str(tiny_fashion), "--out", str(out), "--no-progress",
                 *argv]) == 2
    assert message in capsys.readouterr().err
    assert not out.exists()

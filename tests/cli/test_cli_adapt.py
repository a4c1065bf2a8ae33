"""``metaloop adapt``: the table, results.json and the bar chart, on a tiny text model and a
tiny Omniglot checkpoint; named errors with exit status 2."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from metaloop.cli.main import main

pytest.importorskip("transformers", reason="pip install 'metaloop[text]'")
pytest.importorskip("peft", reason="pip install 'metaloop[text]'")

if not Path("/usr/share/wordnet/data.noun").is_file():
    pytest.skip("WordNet not installed (apt-get install wordnet-base)", allow_module_level=True)

WORDS = ("[PAD] [UNK] [CLS] [SEP] [MASK] a an the of or in to and that is for with by as on "
         "from kind type part person plant animal act used small large genus family").split()


@pytest.fixture(scope="module")
def tiny_bert(save_tiny_bert) -> str:
    return str(save_tiny_bert(WORDS))


def test_text_table_results_json_and_chart(tiny_bert, tmp_path, capsys):
    out = tmp_path / "out"
    argv = ["adapt", "--model", tiny_bert, "--family", "wordnet", "--ways", "3", "--shots",
            "1", "--queries", "2", "--tasks", "2", "--steps", "2", "--meta", "fomaml,reptile",
            "--meta-iterations", "2", "--meta-batch", "1", "--out", str(out), "--no-progress"]
    assert main(argv) == 0
    text = capsys.readouterr().out
    for row in ("prompt-optimized", "probe-ridge", "lp-ft", "lora", "soft-prompt",
                "meta-lora-fomaml", "meta-lora-reptile inner", "lora inner-fomaml"):
        assert row in text
    res = json.loads((out / "results.json").read_text())
    rows = res["approaches"]
    assert rows["prompt-zero-shot"]["approach"] == 0 and rows["prompt-optimized"]["trainable"] == 0
    assert rows["probe-logistic"]["trainable"] == 3 * 32 + 3
    assert rows["lora"]["trainable"] == rows["meta-lora-fomaml"]["trainable"]
    assert rows["finetune-zero"]["trainable"] > rows["lora"]["trainable"]
    for r in rows.values():
        assert 0 <= r["accuracy"]["mean"] <= 1 and len(r["per_task"]["accuracy"]) == 2
        assert r["adapt_seconds"] > 0
    assert res["meta"]["fomaml"]["cpu_seconds"] > 0
    d = res["paired"]["meta-lora-fomaml - lora"]     # the per-task difference, recomputed
    diff = [a - b for a, b in zip(rows["meta-lora-fomaml"]["per_task"]["accuracy"],
                                  rows["lora"]["per_task"]["accuracy"])]
    assert d["mean"] == pytest.approx(sum(diff) / 2)
    assert d["ci95"] == pytest.approx(1.96 * abs(diff[0] - diff[1]) / 2 ** 0.5 / 2 ** 0.5)
    assert d["wins"] + d["ties"] + d["losses"] == 2
    assert set(res["paired"]) == {"meta-lora-fomaml - lora", "meta-lora-reptile - lora",
                                  "meta-lora-fomaml inner - lora inner-fomaml",
                                  "meta-lora-reptile inner - lora inner-reptile"}
    assert "paired differences on the same tasks" in text
    assert (out / "accuracy.png").read_bytes()[:4] == b"\x89PNG"
    # a second call reuses the finished meta-training and scores the same tasks alike
    assert main([*argv[:-3], "--out", str(tmp_path / "again"), "--meta-dir",
                 str(out / "meta"), "--approaches", "probe-ridge,prompt-optimized",
                 "--no-progress"]) == 0
    again = json.loads((tmp_path / "again" / "results.json").read_text())["approaches"]
    for name in ("probe-ridge", "prompt-optimized", "meta-lora-fomaml inner"):
        assert again[name]["per_task"]["accuracy"] == rows[name]["per_task"]["accuracy"]


def test_image_checkpoint_rows(omniglot_root, tmp_path, capsys):
    cfg = tmp_path / "c.toml"
    cfg.write_text(f'[family]\nname = "omniglot"\nroot = "{omniglot_root}"\nways = 3\n'
                   f'shots = 1\nqueries = 2\n[model]\nname = "conv4"\npool = "stride"\n'
                   f'channels = 8\n[method]\nname = "pretrain"\nhead_init = "zero"\n'
                   f'[train]\niterations = 2\nmeta_batch = 2\ncheckpoint_every = 2\n')
    assert main(["train", "--config", str(cfg), "--out", str(tmp_path / "run"),
                 "--no-progress"]) == 0
    out = tmp_path / "out"
    assert main(["adapt", "--model", str(tmp_path / "run"), "--family", "omniglot",
                 "--root", str(omniglot_root), "--ways", "3", "--shots", "1", "--queries",
                 "2", "--tasks", "2", "--steps", "2", "--out", str(out), "--no-progress"]) == 0
    rows = json.loads((out / "results.json").read_text())["approaches"]
    assert sorted(rows) == ["finetune-random", "finetune-zero", "lora", "lp-ft",
                            "probe-logistic", "probe-ridge", "probe-sgd"]
    assert rows["probe-ridge"]["trainable"] == 3 * 8 + 3             # head on 8 features
    # LoRA r=8 on four 3x3 convs (1->8, then 8->8 channels): A r*cin*9, B cout*r; and the head
    assert rows["lora"]["trainable"] == (8 * 9 + 64) + 3 * (8 * 8 * 9 + 64) + 27


@pytest.mark.parametrize("extra,message", [
    (["--model", "/no/such/model"], "model path /no/such/model does not exist"),
    (["--ways", "106"], "ways=106 exceeds the 105 categories of split 'test'"),
    (["--shots", "0"], "--shots must be positive, got 0"),
    (["--approaches", "lora,magic"], "unknown approach(es) ['magic']"),
    (["--lora-targets", "attn", "--approaches", "lora"],
     "['attn'] match no Linear or Conv layer of TextEncoder; available: ['encoder.encoder"),
    (["--family", "mnist"], "unknown family 'mnist'"),
    (["--meta", "anil"], "unknown --meta method(s) ['anil']"),
])
def test_bad_input_exits_2_with_a_named_error(tiny_bert, tmp_path, capsys, extra, message):
    argv = ["adapt", "--model", tiny_bert, "--tasks", "1", "--approaches", "probe-ridge",
            "--out", str(tmp_path / "o"), "--no-progress", *extra]
    assert main(argv) == 2
    assert message in capsys.readouterr().err


def test_a_text_model_cannot_adapt_to_images(tmp_path, capsys):
    assert main(["adapt", "--model", "minilm", "--family", "omniglot",
                 "--out", str(tmp_path)]) == 2
    assert "is a text encoder; family omniglot needs an image model" in capsys.readouterr().err

"""``metaloop adapt``: the table, results.json and the bar chart, on a tiny text model (WordNet
and the user's own text tables) and a tiny Omniglot checkpoint; named errors with exit status 2
that write nothing."""

from __future__ import annotations

import csv
import json
import shutil
import sys
from pathlib import Path

import pytest

from metaloop.cli.main import main
from metaloop.recipes.adapt import STEPPED
from metaloop.runs import load_run

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from conftest import WORDNET_WORDS, needs_wordnet  # noqa: E402

pytest.importorskip("transformers", reason="pip install -e '.[text]'")
pytest.importorskip("peft", reason="pip install -e '.[text]'")



@needs_wordnet
def test_wordnet_results_json_and_chart(wordnet_bert, tmp_path, capsys):
    out = tmp_path / "out"
    argv = ["adapt", "--model", wordnet_bert, "--family", "wordnet", "--ways", "3", "--shots",
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
    t1 = pytest.importorskip("scipy.stats").t.ppf(0.975, 1)        # Student's t, 2 tasks
    assert d["ci95"] == pytest.approx(t1 * abs(diff[0] - diff[1]) / 2 ** 0.5 / 2 ** 0.5)
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


def _image_rows(omniglot_root, tmp_path, method_lines: str, *extra: str) -> dict:
    """Train a 2-iteration 3-way Conv4 (8 filters) run with ``[method]`` ``method_lines``,
    then ``metaloop adapt`` it on 2 held-out Omniglot tasks; the approaches' rows."""
    cfg = tmp_path / "c.toml"
    cfg.write_text(f'[family]\nname = "omniglot"\nroot = "{omniglot_root}"\nways = 3\n'
                   f'shots = 1\nqueries = 2\n[model]\nname = "conv4"\npool = "stride"\n'
                   f'channels = 8\n[method]\n{method_lines}'
                   f'[train]\niterations = 2\nmeta_batch = 2\ncheckpoint_every = 2\n')
    assert main(["train", "--config", str(cfg), "--out", str(tmp_path / "run"),
                 "--no-progress"]) == 0
    out = tmp_path / "out"
    assert main(["adapt", "--model", str(tmp_path / "run"), "--family", "omniglot",
                 "--root", str(omniglot_root), "--ways", "3", "--shots", "1", "--queries",
                 "2", "--tasks", "2", *extra, "--out", str(out), "--no-progress"]) == 0
    return json.loads((out / "results.json").read_text())["approaches"]


def test_image_checkpoint_rows(omniglot_root, tmp_path, capsys):
    rows = _image_rows(omniglot_root, tmp_path, 'name = "pretrain"\nhead_init = "zero"\n',
                       "--steps", "2")
    assert sorted(rows) == ["finetune-random", "finetune-zero", "lora", "lp-ft",
                            "probe-logistic", "probe-ridge", "probe-sgd"]
    assert rows["probe-ridge"]["trainable"] == 3 * 8 + 3             # head on 8 features
    # LoRA r=8 on four 3x3 convs (1->8, then 8->8 channels): A r*cin*9, B cout*r; and the head
    assert rows["lora"]["trainable"] == (8 * 9 + 64) + 3 * (8 * 8 * 9 + 64) + 27


@pytest.mark.parametrize("method", ["r2d2", "protonet"])
def test_a_solved_head_run_adapts_its_meta_learned_body(omniglot_root, tmp_path, method):
    """An R2D2 / ProtoNet run's network is its HeadNet (body + output scale): adapt called
    it with head=False and stopped with a TypeError; the approaches adapt its body."""
    rows = _image_rows(omniglot_root, tmp_path, f'name = "{method}"\n', "--steps", "1",
                       "--approaches", "probe-ridge,finetune-zero")
    assert rows["probe-ridge"]["trainable"] == 3 * 8 + 3             # head on 8 features
    body = load_run(tmp_path / "run").network.backbone
    assert rows["finetune-zero"]["trainable"] == sum(
        p.numel() for n, p in body.named_parameters() if not n.startswith("head.")) + 3 * 8 + 3


@needs_wordnet
@pytest.mark.parametrize("extra,message", [
    (["--model", "/no/such/model"], "model path /no/such/model does not exist"),
    (["--ways", "106"], "ways=106 exceeds the 105 categories of split 'test'"),
    (["--shots", "0"], "--shots must be positive, got 0"),
    (["--ways", "1"], "ways must be >= 2: a 1-way task is always answered right"),
    (["--approaches", "lora,magic"], "unknown approach(es) ['magic']"),
    (["--lora-targets", "attn", "--approaches", "lora"],
     "['attn'] match no Linear or Conv layer of TextEncoder; available: ['encoder.encoder"),
    (["--family", "mnist"], "unknown family 'mnist'"),
    (["--meta", "anil"], "unknown --meta method(s) ['anil']"),
])
def test_bad_input_exits_2_with_a_named_error(wordnet_bert, tmp_path, capsys, extra, message):
    argv = ["adapt", "--model", wordnet_bert, "--tasks", "1", "--approaches", "probe-ridge",
            "--out", str(tmp_path / "o"), "--no-progress", *extra]
    assert main(argv) == 2
    assert message in capsys.readouterr().err


@pytest.mark.parametrize("damage, message", [
    ("truncated-weights", "cannot load model folder"),
    ("no-weights", "no file named model.safetensors"),
    ("empty-config", "cannot load model folder"),
])
def test_a_broken_model_folder_is_named_on_one_line(wordnet_bert, tmp_path, capsys, damage,
                                                    message):
    """A truncated model.safetensors crashed with a SafetensorError traceback; a folder
    without weights was called 'not a local folder'; an empty config.json gave transformers'
    five-line message without the folder's name."""
    model = tmp_path / "model"
    shutil.copytree(wordnet_bert, model)
    weights = model / "model.safetensors"
    if damage == "truncated-weights":
        weights.write_bytes(weights.read_bytes()[:1000])
    elif damage == "no-weights":
        weights.unlink()
    else:
        (model / "config.json").write_text("{}")
        for f in model.glob("vocab*"):
            f.unlink()
    data = write_sentences(tmp_path / "s.csv")
    out = tmp_path / "out"
    assert main(_table_argv(str(model), data, out, "--approaches", "probe-ridge")) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"metaloop adapt: error: cannot load model folder '{model}': ")
    assert message in err and err.count("\n") == 1 and "not a local folder" not in err
    assert not out.exists()


@pytest.mark.parametrize("damage, message", [
    ("no-tokenizer", "its tokenizer has no vocabulary, only its 5 special tokens"),
    ("another-tokenizer", f"its tokenizer has {len(WORDNET_WORDS) + 12} tokens, but the "
                          f"encoder has {len(WORDNET_WORDS)} token embeddings"),
])
def test_a_model_folder_whose_tokenizer_does_not_fit_it_is_named(wordnet_bert, tmp_path, capsys,
                                                                damage, message):
    """Without its tokenizer files transformers built an empty vocabulary: every word was
    [UNK] and every row scored noise, exit 0; another model's larger tokenizer stopped
    in torch with an IndexError traceback."""
    import transformers

    model = tmp_path / "model"
    shutil.copytree(wordnet_bert, model)
    for f in ("vocab.txt", "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json"):
        (model / f).unlink(missing_ok=True)
    if damage == "another-tokenizer":
        # ids shifted up
        other = [*WORDNET_WORDS[:5], *(f"w{i}" for i in range(12)), *WORDNET_WORDS[5:]]
        (tmp_path / "vocab.txt").write_text("\n".join(other) + "\n")
        transformers.BertTokenizer(str(tmp_path / "vocab.txt")).save_pretrained(model)
    data = write_sentences(tmp_path / "s.csv")
    out = tmp_path / "out"
    assert main(_table_argv(str(model), data, out, "--approaches", "probe-ridge")) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"metaloop adapt: error: model {model}: ") and message in err
    assert err.count("\n") == 1 and not out.exists()


def test_a_text_model_cannot_adapt_to_images(tmp_path, capsys):
    assert main(["adapt", "--model", "minilm", "--family", "omniglot",
                 "--out", str(tmp_path)]) == 2
    assert "is a text encoder; family omniglot needs an image model" in capsys.readouterr().err


# ----------------------------------------------------------------------------- --family table

KEYWORDS = ("person", "plant", "animal", "act", "genus", "family", "kind", "type", "part",
            "small", "large", "used")
FILLER = ("a", "the", "of", "or", "in", "to", "and", "that", "is", "for", "with", "by", "on")


def write_sentences(path: Path, classes=KEYWORDS, per_class=8, skip=()) -> Path:
    """A table of labelled sentences (CSV, TSV or JSONL by extension): the texts of class c
    all contain the word c among filler words; rows listed in ``skip`` leave out the label."""
    rows = []
    for ci, c in enumerate(classes):
        for j in range(per_class):
            words = [FILLER[(ci * 7 + j * 3 + k) % len(FILLER)] for k in range(5)]
            words.insert(j % 5, c)
            rows.append({"text": " ".join(words), "label": "" if len(rows) in skip else c})
    if path.suffix == ".jsonl":
        path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    else:
        with path.open("w", newline="") as f:
            w = csv.DictWriter(f, ["text", "label"],
                               delimiter="\t" if path.suffix == ".tsv" else ",")
            w.writeheader()
            w.writerows(rows)
    return path


def _table_argv(model: str, data: Path, out: Path, *extra) -> list[str]:
    """The command on a table, with --steps 2 where an approach or --meta takes steps (it is
    refused where none does)."""
    names = extra[extra.index("--approaches") + 1] if "--approaches" in extra else "lora"
    steps = (["--steps", "2"] if "--meta" in extra
             or any(n.strip() in STEPPED for n in names.split(",")) else [])
    return ["adapt", "--model", model, "--family", "table", "--data", str(data), "--ways", "2",
            "--shots", "1", "--queries", "2", "--tasks", "2", *steps, "--out", str(out),
            "--no-progress", *extra]


def test_table_every_approach_and_meta_lora_on_held_out_classes(wordnet_bert, tmp_path, capsys):
    from metaloop.tasks.splits import split_classes

    data = write_sentences(tmp_path / "sentences.csv")
    out = tmp_path / "out"
    assert main(_table_argv(wordnet_bert, data, out, "--meta", "fomaml,reptile",
                            "--meta-iterations", "2", "--meta-batch", "1")) == 0
    text = capsys.readouterr().out
    train, _, test = split_classes(KEYWORDS, (0.7, 0.1, 0.2), seed=0)
    assert f"held-out classes, split 'test': 2 ({', '.join(test)})" in text
    assert f"meta-training classes: 9 ({', '.join(train)})" in text
    assert "table sentences.csv 2-way 1-shot" in text
    res = json.loads((out / "results.json").read_text())
    rows = res["approaches"]
    assert sorted(rows) == sorted(
        ["prompt-zero-shot", "prompt-optimized", "probe-logistic", "probe-ridge", "probe-sgd",
         "finetune-zero", "finetune-random", "lp-ft", "lora", "soft-prompt",
         "meta-lora-fomaml", "meta-lora-fomaml inner", "lora inner-fomaml",
         "meta-lora-reptile", "meta-lora-reptile inner", "lora inner-reptile"])
    for name, r in rows.items():
        assert name in text and 0 <= r["accuracy"]["mean"] <= 1
        assert len(r["per_task"]["accuracy"]) == 2
    assert rows["probe-ridge"]["trainable"] == 2 * 32 + 2
    assert rows["prompt-optimized"]["info"]["wording"] == "name"
    table = res["table"]
    assert table["heldout_classes"] == test and table["train_classes"] == train
    assert not set(test) & set(train) and table["data"] == str(data)
    assert table["texts"] == 2 * 8 and table["dropped_classes"] == []
    assert res["meta"]["fomaml"]["config"]["table"]["classes"] == train
    assert res["meta"]["reptile"]["config"]["shots"] == 5
    assert (out / "accuracy.png").read_bytes()[:4] == b"\x89PNG"


@pytest.mark.parametrize("suffix", [".tsv", ".jsonl"])
def test_table_without_meta_holds_out_every_class(wordnet_bert, tmp_path, capsys, suffix):
    data = write_sentences(tmp_path / f"s{suffix}")
    out = tmp_path / "out"
    assert main(_table_argv(wordnet_bert, data, out, "--ways", "3", "--approaches",
                            "prompt-optimized,probe-ridge")) == 0
    assert "held-out classes, every class (no meta-training): 12" in capsys.readouterr().out
    res = json.loads((out / "results.json").read_text())
    assert res["table"]["heldout_classes"] == sorted(KEYWORDS)
    assert res["table"]["train_classes"] == [] and res["meta"] == {}
    assert sorted(res["approaches"]) == ["probe-ridge", "prompt-optimized"]
    assert res["approaches"]["probe-ridge"]["trainable"] == 3 * 32 + 3


def test_table_drop_small_says_how_many(wordnet_bert, tmp_path, capsys):
    data = write_sentences(tmp_path / "s.csv", per_class=3)
    with data.open("a") as f:
        f.write("the act of a person,big\nthe plant of a genus,big\n")  # a class of 2 texts
    out = tmp_path / "out"
    assert main(_table_argv(wordnet_bert, data, out, "--drop-small", "--approaches",
                            "probe-ridge")) == 0
    assert "dropped 1 class(es) with too few texts: big" in capsys.readouterr().out
    assert json.loads((out / "results.json").read_text())["table"]["dropped_classes"] == ["big"]


def test_table_says_how_many_rows_repeat_and_how_many_texts_are_cut(wordnet_bert, tmp_path,
                                                                      capsys):
    """Repeated rows were read once and texts longer than --max-length cut without a word:
    a table of long documents was classified on their first tokens alone, unannounced."""
    data = write_sentences(tmp_path / "s.csv", per_class=3)     # 36 texts of 8 tokens
    first = data.read_text().splitlines()[1]
    with data.open("a") as f:
        f.write(f"{first}\n{first}\na person,person\nthe plant,plant\n")   # + 2 of 4 tokens
    out = tmp_path / "out"
    assert main(_table_argv(wordnet_bert, data, out, "--max-length", "7", "--approaches",
                            "probe-ridge")) == 0
    text = capsys.readouterr().out
    assert ("2 row(s) repeat an earlier row's text (up to case and spacing) and label: each "
            "text is read once") in text
    assert ("36 of 38 texts are longer than --max-length 7 tokens (with the tokenizer's "
            "special ones) and are cut to their first 7; --max-length up to 64 reads more of "
            "them") in text
    assert json.loads((out / "results.json").read_text())["table"]["texts"] == 38
    assert main(_table_argv(wordnet_bert, data, tmp_path / "fits", "--max-length", "8",
                            "--approaches", "probe-ridge")) == 0
    assert "are cut" not in capsys.readouterr().out


@pytest.mark.parametrize("change,extra,message", [
    ("missing", [], "does not exist"),
    ("xlsx", [], "unknown format '.xlsx'; use one of"),
    (None, ["--text-column", "sentence"],
     "has no text column 'sentence'; its columns are ['text', 'label']"),
    ("empty-labels", [], "2 row(s) have empty labels (column 'label') at lines 2, 5"),
    (None, ["--ways", "13"], "has 12 class(es) with at least 3 texts, fewer than ways = 13"),
    (None, ["--queries", "8"], "12 class(es) have fewer than shots + queries = 1 + 8 = 9 texts"),
    (None, ["--meta", "fomaml", "--ways", "3"],
     "(split 'test') has 2 class(es) with at least 3 texts, fewer than ways = 3"),
    (None, ["--meta", "reptile", "--queries", "4"],
     "(split 'train'): 9 class(es) have fewer than shots + queries = 5 + 4 = 9 texts"),
    (None, ["--split-fractions", "0.5,0.5", "--meta", "fomaml"],
     "--split-fractions must be three numbers"),
    ("no-data", [], "--family table needs --data PATH"),
    ("wordnet", [], "--data applies to --family table, folder or tensors, not wordnet"),
    (None, ["--root", "/data"], "--root applies to the built-in families; give the table"),
    (None, ["--lora-targets", "attn", "--approaches", "lora"],
     "['attn'] match no Linear or Conv layer of TextEncoder"),
    (None, ["--meta", "fomaml", "--meta-shots", "0", "--meta-iterations", "1"],
     "--meta-shots must be positive, got 0"),
    ("meta-dir-file", ["--meta", "fomaml", "--meta-iterations", "1", "--meta-batch", "1"],
     "s.csv is a file, not a folder"),
    ("dup-header", [], "s.csv: the text column 'text' is named more than once: the header "
     "(line 1) names it in columns 1, 2"),
    ("json-list", [], "s.jsonl: 1 row(s) hold a JSON list as their text (field 'text') at "
     "line 2; a text must be a string"),
    (None, ["--approaches", ""], "--approaches '' names no approach"),
    (None, ["--approaches", " , "], "--approaches ' , ' names no approach"),
    (None, ["--approaches", "probe-ridge,,"],
     "--approaches 'probe-ridge,,' has an empty item (a comma too many)"),
    # 1 did not truncate at all, 2 gave every text the ids of [CLS] [SEP]: chance accuracy
    (None, ["--max-length", "1"], "--max-length 1 leaves no token of the text: the tokenizer "
     "of model"),
    (None, ["--max-length", "2"], "adds 2 special token(s) to every text; give --max-length 3"),
])
def test_bad_table_exits_2_and_writes_nothing(wordnet_bert, tmp_path, capsys, change, extra,
                                              message):
    data = write_sentences(tmp_path / "s.csv", skip=(0, 3) if change == "empty-labels" else ())
    if change == "missing":
        data = tmp_path / "none.csv"
    elif change == "xlsx":
        data = data.rename(tmp_path / "s.xlsx")
    elif change == "dup-header":      # a second 'text' column, read silently before
        lines = data.read_text().splitlines()
        data.write_text("text,text,label\n" + "".join(
            f"zzz,{line}\n" for line in lines[1:]))
    elif change == "json-list":       # read as the Python text "['...']" before
        rows = [json.loads(line) for line in write_sentences(
            tmp_path / "s.jsonl").read_text().splitlines()]
        rows[1]["text"] = [rows[1]["text"]]
        data.unlink()
        data = tmp_path / "s.jsonl"
        data.write_text("".join(json.dumps(r) + "\n" for r in rows))
    out = tmp_path / "out"
    argv = _table_argv(wordnet_bert, data, out, *extra)
    if change == "no-data":
        argv.remove("--data")
        argv.remove(str(data))
    elif change == "wordnet":
        argv[argv.index("table")] = "wordnet"
    elif change == "meta-dir-file":
        argv += ["--meta-dir", str(data / "meta")]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert message in err and err.startswith("metaloop adapt: error:")
    assert not out.exists()


def test_meta_dir_is_reused_on_the_same_table_under_another_path(wordnet_bert, tmp_path, capsys,
                                                                 monkeypatch):
    """A --meta-dir run is reused whatever path names its table (relative, absolute, from
    another working folder, a copy), and a run that stored a relative path (metaloop before
    it stored absolute ones) too: the table is its sha256 and classes (QA: refused on
    'table.data'). A changed table is still refused, by its sha256."""
    work = tmp_path / "work"
    work.mkdir()
    write_sentences(work / "s.csv")
    meta = ["--meta", "fomaml", "--meta-iterations", "2", "--meta-batch", "1",
            "--approaches", "probe-ridge"]
    monkeypatch.chdir(work)
    assert main(_table_argv(wordnet_bert, Path("s.csv"), tmp_path / "o1", *meta)) == 0
    run = tmp_path / "o1" / "meta" / "fomaml"
    latest = (run / "LATEST").read_text()
    monkeypatch.chdir(tmp_path)
    copy = tmp_path / "copy.csv"
    copy.write_bytes((work / "s.csv").read_bytes())
    again = [*meta, "--meta-dir", str(run.parent)]
    for data in (work / "s.csv", Path("work/s.csv"), copy):
        assert main(_table_argv(wordnet_bert, data, tmp_path / "o2", *again)) == 0, data
        assert (run / "LATEST").read_text() == latest            # reused, not retrained
        res = json.loads((tmp_path / "o2" / "results.json").read_text())
        assert res["meta"]["fomaml"]["config"]["table"]["data"] == str(work / "s.csv")
        assert res["table"]["data"] == str(data)
        shutil.rmtree(tmp_path / "o2")
    state_file = run / latest.strip() / "state.json"            # as an older run stored it
    state = json.loads(state_file.read_text())
    state["config"]["table"]["data"] = "s.csv"
    state.pop("state_sha256", None)
    state_file.write_text(json.dumps(state))
    assert main(_table_argv(wordnet_bert, work / "s.csv", tmp_path / "o2", *again)) == 0
    shutil.rmtree(tmp_path / "o2")
    copy.write_text(copy.read_text().replace("person", "people"))
    capsys.readouterr()
    assert main(_table_argv(wordnet_bert, copy, tmp_path / "o2", *again)) == 2
    err = capsys.readouterr().err
    assert f"refusing to resume {run}: the config differs in " in err
    assert "table.sha256" in err and not (tmp_path / "o2").exists()


@pytest.mark.parametrize("extra,message", [
    (["--max-length", "100", "--approaches", "probe-ridge"],
     "--max-length 100 exceeds the 64 token positions of model"),
    (["--max-length", "57", "--approaches", "probe-ridge,soft-prompt"],
     "--max-length 57 + --prompt-tokens 8 = 65 exceeds the 64 token positions of model"),
])
def test_inputs_longer_than_the_model_exit_2_and_write_nothing(wordnet_bert, tmp_path, capsys,
                                                               extra, message):
    """The tiny BERT has 64 positions; the table's texts have 120+ tokens, which the model
    cannot read at full length (a RuntimeError deep in transformers otherwise)."""
    data = tmp_path / "long.csv"
    data.write_text("text,label\n" + "".join(f"{' '.join(['the', c] * (60 + i))},{c}\n"
                                              for c in ("person", "plant") for i in range(3)))
    out = tmp_path / "out"
    assert main(_table_argv(wordnet_bert, data, out, *extra)) == 2
    err = capsys.readouterr().err
    assert message in err and err.startswith("metaloop adapt: error:")
    assert not out.exists()
    # exactly the model's positions: 56 text tokens + 8 prompt tokens = 64 runs
    assert main(_table_argv(wordnet_bert, data, out, "--max-length", "56", "--approaches",
                            "soft-prompt")) == 0
    assert json.loads((out / "results.json").read_text())["approaches"]["soft-prompt"]


def test_lora_targets_may_have_spaces_after_the_commas(wordnet_bert, tmp_path):
    data = write_sentences(tmp_path / "s.csv")
    out = tmp_path / "out"
    assert main(_table_argv(wordnet_bert, data, out, "--approaches", "lora", "--lora-targets",
                            "query, value")) == 0
    row = json.loads((out / "results.json").read_text())["approaches"]["lora"]
    # rank 8 on query and value of 2 layers, 32 wide: 2 * 2 * (8 * 32 + 32 * 8); head 2 * 32 + 2
    assert row["trainable"] == 2 * 2 * (8 * 32 + 32 * 8) + 2 * 32 + 2


# ----------------------------------------------------- the "table" config family (train, eval)

def _table_config(path: Path, data: Path, encoder: str, model: str = "text",
                  method: str = "protonet") -> Path:
    path.write_text(f'[family]\nname = "table"\nroot = "{data}"\nencoder = "{encoder}"\n'
                    f'ways = 2\nshots = 1\nqueries = 2\n[model]\nname = "{model}"\n'
                    f'[method]\nname = "{method}"\n[train]\niterations = 2\nmeta_batch = 2\n'
                    f'checkpoint_every = 2\n[eval]\ntasks = 4\nsteps = [0]\n')
    return path


def test_table_config_trains_and_evaluates_on_held_out_classes(wordnet_bert, tmp_path, capsys):
    from metaloop.tasks.splits import split_classes

    cfg = _table_config(tmp_path / "t.toml", write_sentences(tmp_path / "s.csv"), wordnet_bert)
    assert main(["train", "--config", str(cfg), "--out", str(tmp_path / "run"),
                 "--no-progress"]) == 0
    assert "(train): 72 texts in 9 classes" in capsys.readouterr().err
    assert main(["eval", "--checkpoint", str(tmp_path / "run"), "--out", str(tmp_path / "ev"),
                 "--no-progress"]) == 0
    res = json.loads((tmp_path / "ev" / "results.json").read_text())
    fam = res["config"]["family"]
    train, val, test = split_classes(KEYWORDS, (0.7, 0.1, 0.2), seed=0)
    assert (fam["train_classes"], fam["val_classes"], fam["test_classes"]) == (train, val, test)
    acc = res["methods"]["protonet"]["accuracy"]["mean"][0]
    assert 0 <= acc <= 1 and res["methods"]["protonet"]["tasks"] == 4


@pytest.mark.parametrize("change,message", [
    ("model", "config model.name = 'conv4' and family.name = 'table': model 'text'"),
    ("missing", "text table"),
    ("labels", "1 row(s) have empty labels (column 'label') at line 3"),
])
def test_bad_table_config_exits_2_and_writes_nothing(wordnet_bert, tmp_path, capsys, change,
                                                      message):
    data = tmp_path / "s.csv"
    if change == "labels":
        data.write_text("text,label\nthe act,act\nthe plant,\n")
    elif change == "model":
        write_sentences(data)
    cfg = _table_config(tmp_path / "t.toml", data, wordnet_bert,
                        model="conv4" if change == "model" else "text")
    out = tmp_path / "run"
    assert main(["train", "--config", str(cfg), "--out", str(out), "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert message in err and (change != "missing" or "s.csv does not exist" in err)
    assert not out.exists()


def test_ctrl_c_while_the_chart_is_written_leaves_no_partial_output(wordnet_bert, tmp_path,
                                                                    capsys, monkeypatch):
    """results.json was written first and the chart straight to accuracy.png: an interrupt
    while matplotlib wrote it left results.json beside half a PNG (and the folder, since it
    held results). Now only the scored tasks are kept (partial.json), and --resume reports
    them."""
    from matplotlib.figure import Figure

    def interrupted(self, fname, **kw):
        Path(fname).write_bytes(b"\x89PNG half")
        raise KeyboardInterrupt

    monkeypatch.setattr(Figure, "savefig", interrupted)
    out = tmp_path / "out"
    argv = _table_argv(wordnet_bert, write_sentences(tmp_path / "s.csv"), out, "--approaches",
                       "probe-ridge")
    assert main(argv) == 130
    err = capsys.readouterr().err
    assert "metaloop adapt: interrupted" in err and "--resume continues" in err
    assert sorted(p.name for p in out.iterdir()) == ["partial.json"]
    monkeypatch.undo()
    assert main([*argv, "--resume"]) == 0
    assert sorted(p.name for p in out.iterdir()) == ["accuracy.png", "results.json"]


def test_maml_shares_first_order_maml_s_inner_loop_baseline_and_is_paired_with_it(
        wordnet_bert, tmp_path, capsys):
    """fomaml and maml adapt by the same inner loop, so one 'lora inner-fomaml' row serves
    both; maml's inner row was then compared with nothing (its pair was silently dropped)."""
    out = tmp_path / "out"
    argv = _table_argv(wordnet_bert, write_sentences(tmp_path / "s.csv"), out, "--approaches",
                       "lora", "--meta", "fomaml,maml", "--meta-iterations", "1",
                       "--meta-batch", "1", "--split-fractions", "0.5,0.2,0.3")
    assert main(argv) == 0
    res = json.loads((out / "results.json").read_text())
    assert "lora inner-fomaml" in res["approaches"] and "lora inner-maml" not in res["approaches"]
    assert set(res["paired"]) == {"meta-lora-fomaml - lora", "meta-lora-maml - lora",
                                  "meta-lora-fomaml inner - lora inner-fomaml",
                                  "meta-lora-maml inner - lora inner-fomaml"}
    assert "meta-lora-maml inner - lora inner-fomaml: " in capsys.readouterr().out

"""``quoting`` of a CSV / TSV text table: ``"csv"`` (the default) reads quotes as CSV does,
``"none"`` reads every character as written, one row per line (a GLUE / SST-style TSV file,
which is not quoted). An error a quote causes under ``"csv"`` names ``quoting="none"``; a
run trained with ``family.quoting`` keeps it in its config, so that ``train --resume``,
``eval`` and ``predict`` read tables the same way."""

from __future__ import annotations

import csv
import io
from pathlib import Path

import pytest

from metaloop import config
from metaloop.cli.main import main
from metaloop.recipes.adapt import AdaptSettings, measured_setting, table_families
from metaloop.tasks.text_table import TextTable, read_text_table, read_texts

GREAT = '"Great" final, the coach said'          # the tester's lines (GLUE-style, unquoted)
RAIN = '"Rain is coming, he warned'
HINT = 'quoting="none"'
ROWS = [("The striker said \"wow\", then scored", "sports"), (GREAT, "sports"),
        ("A penalty decided the game", "sports"), ("Heavy rain expected", "weather"),
        (RAIN, "weather"), ("A heat wave hit the city", "weather"),
        ("Snow fell overnight", "weather"), ('12" pizza needs the oven hot', "cooking"),
        ("Knead the dough gently", "cooking")]


def _glue(path: Path, rows=ROWS, header=("sentence", "label")) -> Path:
    path.write_text("\n".join("\t".join(r) for r in [header, *rows]) + "\n", encoding="utf-8")
    return path


def test_an_unquoted_tsv_reads_every_character_as_written(tmp_path):
    path = _glue(tmp_path / "glue.tsv")
    texts, labels = read_text_table(path, "sentence", "label", quoting="none")
    assert texts == [t for t, _ in ROWS] and labels == [lab for _, lab in ROWS]
    assert read_texts(path, "sentence", quoting="none") == texts
    fam = TextTable(path, "sentence", "label", ways=2, shots=1, queries=1, quoting="none")
    assert fam.quoting == "none" and GREAT in fam.texts and RAIN in fam.texts


def test_the_tester_lines_as_csv_reads_them(tmp_path):
    """With the default ``quoting="csv"`` the quote that opens ``RAIN`` and closes lines
    later is refused by its lines, naming ``quoting="none"``; ``GREAT`` alone is valid CSV
    (a quoted phrase, then more text) and reads as CSV reads it, its quotes dropped."""
    path = _glue(tmp_path / "glue.tsv")
    with pytest.raises(ValueError, match="runs to line") as e:
        read_text_table(path, "sentence", "label")
    assert "line 6" in str(e.value) and HINT in str(e.value) and "family.quoting" in str(e.value)
    with pytest.raises(ValueError, match="quoting"):
        read_texts(path, "sentence")
    great = _glue(tmp_path / "great.tsv", [r for r in ROWS if r[0] != RAIN])
    texts = read_text_table(great, "sentence", "label")[0]
    assert "Great final, the coach said" in texts and GREAT not in texts
    assert GREAT in read_text_table(great, "sentence", "label", quoting="none")[0]


@pytest.mark.parametrize("body, last", [
    ('text,label\ngood,pos\n"never closed, neg\n', ('"never closed', "neg")),
    ('text,label\ngood,pos\n"spans\ntwo" lines, neg\nbad,neg\n', ("bad", "neg"))])
def test_every_quote_error_names_quoting_none(tmp_path, body, last):
    """A quote left open to the end of the file, and one that closes lines later with more
    text after it: both errors name the option, which reads the rows as written."""
    path = tmp_path / "t.csv"
    path.write_text(body, encoding="utf-8")
    with pytest.raises(ValueError, match="quote") as e:
        read_text_table(path)
    assert HINT in str(e.value)
    if "spans" in body:        # line 3 holds no label as written: named by its line
        with pytest.raises(ValueError, match="empty labels .* at line 3"):
            read_text_table(path, quoting="none")
    else:
        texts, labels = read_text_table(path, quoting="none")
        assert (texts[-1], labels[-1]) == last


def test_rows_with_the_wrong_number_of_fields_are_named_by_line(tmp_path):
    path = _glue(tmp_path / "long.tsv", [*ROWS[:3], ("a\ttab inside", "sports"), *ROWS[3:]])
    with pytest.raises(ValueError, match=r"more fields than the header's 2 at line\(s\) 5") as e:
        read_text_table(path, "sentence", "label", quoting="none")
    assert "cannot hold" in str(e.value) and "quote a text" not in str(e.value)
    short = tmp_path / "short.tsv"
    short.write_text(f"sentence\tlabel\n{GREAT}\tsports\n{RAIN}\nplain\tsports\n")
    with pytest.raises(ValueError, match="empty labels .* at line 3"):
        read_text_table(short, "sentence", "label", quoting="none")


def test_quoting_none_splits_a_csv_at_every_comma(tmp_path):
    path = tmp_path / "t.csv"
    path.write_text('text,label\n"Great" final,sports\nsay "hi,sports\n', encoding="utf-8")
    assert read_text_table(path, quoting="none") == (['"Great" final', 'say "hi'],
                                                     ["sports", "sports"])


def test_a_wrong_quoting_or_one_for_jsonl_or_txt_is_refused(tmp_path):
    path = _glue(tmp_path / "t.tsv")
    with pytest.raises(ValueError, match=r"quoting must be one of \['csv', 'none'\]"):
        read_text_table(path, "sentence", "label", quoting="minimal")
    jsonl = tmp_path / "t.jsonl"
    jsonl.write_text('{"text": "a", "label": "x"}\n{"text": "b", "label": "y"}\n')
    assert read_text_table(jsonl) == (["a", "b"], ["x", "y"])
    with pytest.raises(ValueError, match="not JSONL"):
        read_text_table(jsonl, quoting="none")
    txt = tmp_path / "q.txt"
    txt.write_text(f"{GREAT}\n")
    assert read_texts(txt) == [GREAT]                     # a .txt line is read as written
    with pytest.raises(ValueError, match="CSV and TSV files"):
        read_texts(txt, quoting="none")


def test_the_config_key():
    assert config.validate({})["family"]["quoting"] == "csv"
    cfg = config.validate({"family": {"name": "table", "root": "t.tsv", "quoting": "none"},
                           "model": {"name": "text"}})
    assert cfg["family"]["quoting"] == "none"
    config.check_combinations(cfg)
    bad = config.validate({"family": {"name": "table", "root": "t.tsv", "quoting": "QUOTE_NONE"},
                           "model": {"name": "text"}})
    with pytest.raises(ValueError, match=r"family.quoting .* not one of \['csv', 'none'\]"):
        config.check_combinations(bad)


def test_adapt_reads_and_records_the_quoting(tmp_path):
    path = _glue(tmp_path / "glue.tsv")
    heldout, _ = table_families(path, ways=2, shots=1, queries=1, text_column="sentence",
                                quoting="none")
    assert heldout.quoting == "none" and GREAT in heldout.texts
    with pytest.raises(ValueError, match="quoting"):
        table_families(path, ways=2, shots=1, queries=1, text_column="sentence")
    s = AdaptSettings(family="table", data=str(path), text_column="sentence")
    assert "quoting" not in measured_setting(s, "finetune-zero")  # as a record before it
    s.quoting = "none"
    assert measured_setting(s, "finetune-zero")["quoting"] == "none"


WORDS = ("[PAD] [UNK] [CLS] [SEP] [MASK] a the of in to and is rain wow great final game "
         "snow heat city pizza oven dough person plant animal act").split()
LABELS = ("sports", "weather", "cooking", "music", "travel", "garden", "school", "health")


def test_a_run_keeps_its_quoting_for_resume_eval_and_predict(save_tiny_bert, tmp_path,
                                                              capsys):
    pytest.importorskip("transformers", reason="pip install -e '.[text]'")
    from metaloop.recipes.predict import classify_texts
    from metaloop.runs import load_run

    rows = [(f'"{lab} {w}" is {j}' if j == 0 else f"the {lab} of {w} {j}", lab)
            for lab in LABELS for j, w in enumerate(("rain", "wow", "great", "final"))]
    rows[1] = (RAIN, rows[1][1])
    data = _glue(tmp_path / "train.tsv", rows, ("text", "label"))
    encoder = save_tiny_bert(WORDS)
    body = (f'[family]\nname = "table"\nroot = "{data}"\nencoder = "{encoder}"\n'
            f'max_length = 16\nsplit_fractions = [0.5, 0.25, 0.25]\nways = 2\nshots = 1\n'
            f'queries = 2\n[model]\nname = "text"\n[method]\nname = "protonet"\n'
            f'[train]\niterations = 2\nmeta_batch = 2\ncheckpoint_every = 2\n'
            f'[eval]\ntasks = 2\nsteps = [0]\n')
    (tmp_path / "csv.toml").write_text(body)
    capsys.readouterr()
    assert main(["train", "--config", str(tmp_path / "csv.toml"), "--out",
                 str(tmp_path / "refused"), "--no-progress"]) == 2
    assert HINT in capsys.readouterr().err
    (tmp_path / "none.toml").write_text(body.replace("max_length", 'quoting = "none"\nmax_length'))
    run = tmp_path / "run"
    assert main(["train", "--config", str(tmp_path / "none.toml"), "--out", str(run),
                 "--no-progress"]) == 0
    assert load_run(run).config["family"]["quoting"] == "none"
    assert main(["train", "--resume", str(run), "--no-progress"]) == 0
    assert main(["eval", "--checkpoint", str(run), "--out", str(tmp_path / "ev"),
                 "--no-progress"]) == 0
    support = _glue(tmp_path / "support.tsv", [(GREAT, "sports"), (RAIN, "weather"),
                                               ("snow in the city", "weather")],
                    ("text", "label"))
    query = _glue(tmp_path / "query.tsv", [(RAIN, "?"), (GREAT, "?")], ("text", "label"))
    pred = classify_texts(load_run(run), support, query)   # the run's quoting: "none"
    assert pred.texts == [RAIN, GREAT] and pred.classes == ["sports", "weather"]
    with pytest.raises(ValueError, match="quoting"):
        classify_texts(load_run(run), support, query, quoting="csv")
    capsys.readouterr()
    assert main(["predict", "--checkpoint", str(run), "--support", str(support), "--query",
                 str(query), "--no-progress"]) == 0
    lines = list(csv.reader(io.StringIO(capsys.readouterr().out, newline=""),
                            dialect="excel-tab"))
    assert [line[0] for line in lines] == [RAIN, GREAT]
    assert main(["predict", "--checkpoint", str(run), "--support", str(support), "--query",
                 str(query), "--quoting", "csv", "--no-progress"]) == 2
    assert HINT in capsys.readouterr().err


def test_adapt_command_reads_with_quoting_and_its_resume_identity_holds_it(wordnet_bert,
                                                                           tmp_path, capsys):
    pytest.importorskip("transformers", reason="pip install -e '.[text]'")
    import json

    from metaloop.recipes import adapt

    data = _glue(tmp_path / "glue.tsv", header=("text", "label"))
    argv = ["--threads", "1", "adapt", "--model", wordnet_bert, "--family", "table", "--data",
            str(data), "--ways", "2", "--shots", "1", "--queries", "1", "--tasks", "2",
            "--approaches", "probe-ridge", "--no-progress"]
    capsys.readouterr()
    assert main([*argv, "--out", str(tmp_path / "csv")]) == 2
    assert HINT in capsys.readouterr().err and not (tmp_path / "csv").exists()
    assert main([*argv, "--quoting", "none", "--out", str(tmp_path / "none")]) == 0
    assert json.loads((tmp_path / "none" / "results.json").read_text())["table"]["quoting"] \
        == "none"
    s = adapt.AdaptSettings(model=wordnet_bert, family="table", data=str(data), ways=2,
                            shots=1, queries=1, tasks=2, approaches="probe-ridge",
                            quoting="none")
    assert adapt.identity(adapt.prepare(s))["quoting"] == "none"   # a resume compares it
    plain = _glue(tmp_path / "plain.tsv", [(t.replace('"', ""), lab) for t, lab in ROWS],
                  ("text", "label"))
    s.quoting, s.data = "csv", str(plain)
    assert "quoting" not in adapt.identity(adapt.prepare(s))   # as a run kept before it
    assert main([*argv[:2], "adapt", "--family", "wordnet", "--quoting", "none",
                 "--out", str(tmp_path / "w")]) == 2
    assert "--quoting none applies to --family table" in capsys.readouterr().err

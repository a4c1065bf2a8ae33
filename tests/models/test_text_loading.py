"""What the adaptation command line relies on from ``metaloop.models.text``: a model folder
whose files cannot be read, and a ``max_length`` with no room for the text, are named errors.
(``tests/models/test_text_model.py`` covers the encoder itself.)"""

from __future__ import annotations

import shutil

import pytest

pytest.importorskip("transformers", reason="text models need: pip install -e '.[text]'")

from metaloop.models.text import load_hf, load_text_encoder  # noqa: E402

WORDS = "[PAD] [UNK] [CLS] [SEP] [MASK] a the of kind dog cat small".split()


@pytest.fixture(scope="module")
def tiny_dir(save_tiny_bert):
    return save_tiny_bert(WORDS)


@pytest.mark.parametrize("max_length", [1, 2])
def test_a_max_length_without_room_for_the_text_is_refused(tiny_dir, max_length):
    """1 did not truncate at all (the tokenizer ignored it, with a log line only); 2 gave
    every text the ids of [CLS] [SEP], so every text had the same features."""
    enc = load_text_encoder(tiny_dir, max_length=max_length)
    assert enc.special_tokens() == 2
    with pytest.raises(ValueError, match=f"max_length {max_length} leaves no token of the text: "
                                         f"the tokenizer adds 2 special token"):
        enc.tokenize(["a small dog", "the cat"])
    enc.max_length = 3
    ids = enc.tokenize(["a small dog", "the cat"])
    assert ids.shape == (2, 3) and not (ids[:, 1] == ids[0, 1]).all()    # one real token each


@pytest.mark.parametrize("damage", ["truncated-weights", "no-weights", "bad-json"])
def test_a_model_folder_that_cannot_be_read_is_named(tiny_dir, tmp_path, damage):
    model = shutil.copytree(tiny_dir, tmp_path / "model")
    weights = model / "model.safetensors"
    if damage == "truncated-weights":     # a SafetensorError traceback before
        weights.write_bytes(weights.read_bytes()[:1000])
    elif damage == "no-weights":          # "not a local folder" before
        weights.unlink()
    else:
        (model / "config.json").write_text("not json")
    with pytest.raises(ValueError, match=f"cannot load model folder '{model}': ") as e:
        load_hf(model)
    assert "\n" not in str(e.value) and "not a local folder" not in str(e.value)


def test_a_folder_without_its_tokenizer_is_named_by_the_loader(tiny_dir, tmp_path):
    """Every command that loads a text encoder (train and predict on a table, adapt,
    load_text_encoder) now refuses it; only adapt did, so the others read every word as
    [UNK]."""
    model = shutil.copytree(tiny_dir, tmp_path / "model")
    for f in ("vocab.txt", "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json"):
        (model / f).unlink(missing_ok=True)
    with pytest.raises(ValueError, match=rf"model {model}: its tokenizer has no vocabulary"):
        load_hf(model)
    with pytest.raises(ValueError, match="tokenizer.save_pretrained"):
        load_text_encoder(model)

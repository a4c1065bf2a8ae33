"""What the adaptation command line relies on from ``metaloop.models.text``: a model folder
whose files cannot be read, and a ``max_length`` with no room for the text, are named errors.
(``tests/models/test_text_model.py`` covers the encoder itself.)"""

from __future__ import annotations

import shutil

import pytest

pytest.importorskip("transformers", reason="text models need: pip install 'metaloop[text]'")

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

"""TextEncoder refuses token ids that no token embedding has: out of the vocabulary, negative,
fractional or NaN, naming the id, its position and the vocabulary size."""

from __future__ import annotations

import re

import pytest
import torch

pytest.importorskip("transformers", reason="text models need: pip install -e '.[text]'")
pytest.importorskip("peft", reason="text models need: pip install -e '.[text]'")

import metaloop as ml  # noqa: E402
from metaloop.adapt.lora import add_lora  # noqa: E402
from metaloop.adapt.soft_prompt import add_soft_prompt  # noqa: E402
from metaloop.models.text import load_text_encoder  # noqa: E402

WORDS = ("[PAD] [UNK] [CLS] [SEP] [MASK] a an the of kind dog cat animal small pet that can "
         "bark purr tax law").split()
VOCAB = len(WORDS)                                   # 21 token embeddings: ids 0..20


@pytest.fixture(scope="module")
def enc(save_tiny_bert):
    return load_text_encoder(save_tiny_bert(WORDS), out_dim=3, max_length=16)


@pytest.fixture(scope="module")
def ids(enc):
    return enc.tokenize(["a small dog", "the cat that can purr", "a tax law"])   # [3, L]


def with_id(ids: torch.Tensor, value: float) -> torch.Tensor:
    bad = ids.clone()
    bad[1, 2] = value
    return bad


def test_vocab_size_is_the_number_of_token_embeddings(enc):
    assert enc.vocab_size() == VOCAB == enc.encoder.get_input_embeddings().num_embeddings


@pytest.mark.parametrize("value, why", [
    (VOCAB, "is not in the vocabulary"), (500, "is not in the vocabulary"),
    (-3, "is negative"), (7.5, "is not a whole number"), (float("nan"), "is not a whole number"),
    (float("inf"), "is not a whole number")])
def test_a_bad_id_is_named_with_its_position_and_the_vocabulary_size(enc, ids, value, why):
    shown = re.escape(str(int(value) if float(value).is_integer() else value))
    pattern = (rf"token id {shown} at position \[1, 2\] {why}: .*{VOCAB} tokens, "
               rf"ids 0\.\.{VOCAB - 1}")
    with pytest.raises(ValueError, match=pattern):
        enc(with_id(ids, value))
    with pytest.raises(ValueError, match=pattern):                 # features alone too
        enc.features(with_id(ids, value))


def test_the_first_bad_id_is_named_and_the_others_counted(enc, ids):
    bad = with_id(ids, 7.5)
    bad[2, 0], bad[2, 1] = 99, -1
    with pytest.raises(ValueError, match=r"7\.5 at position \[1, 2\].*\(2 more bad ids\)"):
        enc(bad)


def test_every_id_of_the_vocabulary_is_accepted_as_float_or_int(enc, ids):
    every = torch.arange(VOCAB, dtype=torch.float32).reshape(3, 7)          # [3, 7]: 0..20
    out = enc(every)
    assert out.shape == (3, 3) and bool(torch.isfinite(out).all())
    torch.testing.assert_close(enc(every.long()), out, rtol=0, atol=0)
    torch.testing.assert_close(enc(ids.long()), enc(ids), rtol=0, atol=0)


def test_adaptation_gets_the_value_error_not_an_index_error(enc, ids):
    y = torch.tensor([0, 1, 2])
    with pytest.raises(ValueError, match=rf"token id 500 at position \[1, 2\].*{VOCAB} tokens"):
        ml.adapt.linear_probe(enc, with_id(ids, 500), y)
    with pytest.raises(ValueError, match=r"token id 7\.5 at position \[1, 2\] is not a whole"):
        ml.adapt.linear_probe(enc, with_id(ids, 7.5), y)


@pytest.mark.parametrize("wrap", [lambda e: add_lora(e, r=2, target_modules=["query"]),
                                  lambda e: add_soft_prompt(e, 2)], ids=["lora", "soft_prompt"])
def test_peft_wrapped_encoders_check_against_the_base_vocabulary(enc, ids, wrap):
    wrapped = wrap(enc)
    assert wrapped.vocab_size() == VOCAB
    assert wrapped(ids).shape == (3, 3)
    with pytest.raises(ValueError, match=rf"token id {VOCAB} at position \[1, 2\].*{VOCAB} "
                                         rf"tokens"):
        wrapped(with_id(ids, VOCAB))


def test_ids_that_tokenize_never_gives_are_refused_not_pooled_to_zero(enc, ids, save_tiny_bert):
    """A TextTable without ``tokenizer=`` gives its texts' row numbers ``[N, 1]``: as token ids
    they are a width no tokenized text has ([CLS] and [SEP] are added to every text), and a
    row of padding alone pooled to the zero vector; both are refused, naming the cause."""
    rows = torch.tensor([[10.0], [8.0], [0.0]])                          # [3, 1]
    with pytest.raises(ValueError, match=r"L >= 2 \(the tokenizer adds 2 special.*"
                                         r"TextTable without tokenizer="):
        enc.features(rows)
    with pytest.raises(ValueError, match=r"L >= 2"):
        ml.adapt.linear_probe(enc, rows, torch.tensor([0, 1, 2]))
    padded = ids.clone()
    padded[2] = enc.pad_id
    with pytest.raises(ValueError, match=r"row 2 holds padding alone .*TextTable without"):
        enc.features(padded)
    empty = enc.tokenize(["", "a dog"])                                  # [CLS] [SEP]: fine
    assert torch.isfinite(enc.features(empty)).all()


def test_a_tokenizer_adding_no_special_token_may_pad_an_empty_text_alone():
    """With no [CLS]/[SEP] (GPT-style tokenizers with a pad token), ``tokenize("")`` is a row of
    padding alone: accepted, as before, only a row narrower than nothing is refused."""
    transformers = pytest.importorskip("transformers")
    tokenizers = pytest.importorskip("tokenizers")
    from metaloop.models.text import TextEncoder

    words = ["<pad>", "<unk>", "a", "dog", "cat", "the"]
    tk = tokenizers.Tokenizer(tokenizers.models.WordLevel({w: i for i, w in enumerate(words)},
                                                          unk_token="<unk>"))
    tk.pre_tokenizer = tokenizers.pre_tokenizers.Whitespace()
    tok = transformers.PreTrainedTokenizerFast(tokenizer_object=tk, pad_token="<pad>",
                                               unk_token="<unk>")
    cfg = transformers.BertConfig(vocab_size=len(words), hidden_size=32, num_hidden_layers=1,
                                  num_attention_heads=2, intermediate_size=37,
                                  max_position_embeddings=64)
    torch.manual_seed(0)
    enc = TextEncoder(transformers.BertModel(cfg), tok)
    assert enc.special_tokens() == 0
    ids = enc.tokenize(["a dog", "", "the cat"])
    assert bool((ids[1] == enc.pad_id).all())
    assert enc.features(ids).shape[0] == 3

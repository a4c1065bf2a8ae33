"""Adaptation on the user's own Hugging Face model, not only BERT: tiny random DistilBERT,
ALBERT and ELECTRA (factorised embeddings), RoBERTa (positions offset by the padding index),
GPT-2 (Conv1D layers, a tokenizer without a pad token), and a tokenizer that pads on the left,
each saved to a folder and loaded as a user's model is."""

from __future__ import annotations

import json
import socket
import warnings

import pytest
import torch

pytest.importorskip("peft", reason="text models need: pip install -e '.[text]'")

from metaloop.adapt.lora import add_lora, lora_finetune, merge_lora  # noqa: E402
from metaloop.adapt.soft_prompt import add_soft_prompt, is_prompt, soft_prompt_finetune  # noqa: E402
from metaloop.models.text import load_hf, load_text_encoder  # noqa: E402
from metaloop.recipes import adapt as recipe  # noqa: E402

WORDS = "[PAD] [UNK] [CLS] [SEP] [MASK] a the of kind dog cat small big red tree".split()
SMALL = dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=37)
TEXTS = ["a dog", "the small red cat", "big tree of kind", "a cat", "the tree", "red dog"]
Y = torch.tensor([0, 1, 2, 0, 1, 2])


def _bpe(folder, cls, specials):
    """A byte-level BPE tokenizer over single letters (no merges)."""
    letters = [c for c in "abcdefghijklmnopqrstuvwxyz"]
    vocab = {t: i for i, t in enumerate(specials + letters + ["Ġ" + c for c in letters])}
    (folder / "vocab.json").write_text(json.dumps(vocab))
    (folder / "merges.txt").write_text("#version: 0.2\n")
    return cls(str(folder / "vocab.json"), str(folder / "merges.txt"))


def _build(kind, folder):
    import transformers as T

    folder.mkdir()
    torch.manual_seed(0)
    if kind in ("roberta", "gpt2", "gpt2-pad"):
        if kind == "roberta":
            tok = _bpe(folder, T.RobertaTokenizer, ["<s>", "<pad>", "</s>", "<unk>", "<mask>"])
            model = T.RobertaModel(T.RobertaConfig(vocab_size=len(tok), pad_token_id=1,
                                                   max_position_embeddings=34, **SMALL))
        else:
            tok = _bpe(folder, T.GPT2Tokenizer, ["<|endoftext|>"])
            if kind == "gpt2-pad":
                tok.pad_token = tok.eos_token
            model = T.GPT2Model(T.GPT2Config(vocab_size=len(tok), n_embd=32, n_layer=2,
                                             n_head=2, n_positions=64, bos_token_id=0,
                                             eos_token_id=0))
    else:
        (folder / "vocab.txt").write_text("\n".join(WORDS) + "\n")
        tok = T.BertTokenizer(str(folder / "vocab.txt"),
                              padding_side="left" if kind == "bert-left" else "right")
        v = len(WORDS)
        model = {
            "bert-left": lambda: T.BertModel(T.BertConfig(vocab_size=v, **SMALL)),
            "distilbert": lambda: T.DistilBertModel(T.DistilBertConfig(
                vocab_size=v, dim=32, n_layers=2, n_heads=2, hidden_dim=37)),
            "albert": lambda: T.AlbertModel(T.AlbertConfig(vocab_size=v, embedding_size=16,
                                                           **SMALL)),
            "electra": lambda: T.ElectraModel(T.ElectraConfig(vocab_size=v, embedding_size=16,
                                                              **SMALL)),
            "t5": lambda: T.T5Model(T.T5Config(vocab_size=v, d_model=32, d_kv=16, d_ff=37,
                                               num_layers=2, num_heads=2, pad_token_id=0,
                                               decoder_start_token_id=0)),
        }[kind]()
    model.save_pretrained(folder)
    tok.save_pretrained(folder)
    return folder


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    """kind -> a saved model folder, built once per module on first use."""
    root, built = tmp_path_factory.mktemp("hf_models"), {}

    def get(kind):
        if kind not in built:
            built[kind] = _build(kind, root / kind)
        return built[kind]
    return get


@pytest.mark.parametrize("kind", ["distilbert", "albert", "electra"])
def test_soft_prompts_live_in_the_token_embedding_space(models, kind):
    """peft sized the prompt by hidden_size: ALBERT and ELECTRA (128-wide embeddings under
    256-wide layers when small) failed with a size mismatch, and DistilBERT, whose config says
    dim, with 'Please specify `token_dim` in `peft_config`'."""
    enc = load_text_encoder(models(kind), out_dim=3, max_length=16)
    x = enc.tokenize(TEXTS)
    sp = add_soft_prompt(enc, 4)
    width = enc.encoder.get_input_embeddings().embedding_dim
    prompt = [p for n, p in sp.named_parameters() if is_prompt(n)]
    assert [list(p.shape) for p in prompt] == [[4, width]]
    a = soft_prompt_finetune(sp, x, Y, steps=3)
    assert a.trainable == 4 * width + 3 * 32 + 3                  # prompt + head
    before = dict(sp.named_parameters())
    changed = sorted(n for n, p in a.params.items()
                     if n in before and p.shape == before[n].shape
                     and not torch.equal(p, before[n]))
    assert changed and all(is_prompt(n) or n.startswith("head.") for n in changed)
    assert a(x).shape == (6, 3)


def test_lora_on_gpt2_conv1d_layers_merges_exactly_without_warnings(models):
    """peft warned 'fan_in_fan_out is set to False but the target module is `Conv1D`' on every
    GPT-2 layer (an error under the tests' warnings-as-errors)."""
    enc = load_text_encoder(models("gpt2-pad"), out_dim=3, max_length=16)
    x = enc.tokenize(TEXTS)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        lora = add_lora(enc, r=2, target_modules=["c_attn"])
    a = lora_finetune(lora, x, Y, steps=3, lr=1e-2)
    assert any(not torch.equal(a.params[n], lora.get_parameter(n))
               for n in a.params if ".lora_B." in n)             # the adapters moved
    plain = merge_lora(lora, a.params)
    with torch.no_grad():
        torch.testing.assert_close(plain(x), a(x), atol=1e-6, rtol=0)


@pytest.mark.parametrize("kind, targets", [("distilbert", ["q_lin", "v_lin"]),
                                           ("gpt2-pad", ["c_attn"]),
                                           ("albert", ["query", "value"]),
                                           ("electra", ["query", "value"]),
                                           ("roberta", ["query", "value"])])
def test_the_default_lora_targets_are_the_architectures_query_and_value(models, kind, targets):
    """The command line's default was ['query', 'value'] for every text model: DistilBERT and
    GPT-2 stopped every ``metaloop adapt`` that ran lora or --meta with 'LoRA target modules
    ['query', 'value'] match no Linear or Conv layer'."""
    s = recipe.AdaptSettings(model=str(models(kind)), family="table")
    enc, kind_ = recipe.load_model(s.model, s.family, s.max_length)
    assert recipe._lora_targets(s, kind_, enc) == targets
    add_lora(enc, r=2, target_modules=targets)          # they exist


def test_an_encoder_without_known_attention_names_is_refused_naming_its_layers():
    from torch import nn

    from metaloop.models.text import TextEncoder

    class Config:
        hidden_size, model_type = 4, "mine"

    class Mine(nn.Module):
        config = Config()

        def __init__(self):
            super().__init__()
            self.mix = nn.Linear(4, 4)

    s = recipe.AdaptSettings(model="mine", family="table")
    with pytest.raises(ValueError, match=r"model mine \(mine\) has no attention query / value "
                                         r"layers.*--lora-targets from \['mix'\]"):
        recipe._lora_targets(s, "text", TextEncoder(Mine(), None, 3))


def test_roberta_positions_start_after_the_padding_index(models, tmp_path):
    """RoBERTa's 34 position embeddings read 32 tokens (positions start at pad id + 1): a
    --max-length of 33 or 34 passed the check and failed in the model with 'index 34 is out of
    bounds for dimension 1 with size 34'."""
    enc = load_text_encoder(models("roberta"), out_dim=3, max_length=34)
    assert enc.max_positions() == 32
    long = ["the small red dog " * 10]
    with pytest.raises(ValueError, match="max_length 34 exceeds the 32 token positions"):
        enc.tokenize(long)
    enc.max_length = 32
    assert enc.tokenize(long).shape == (1, 32)
    enc(enc.tokenize(long))                                          # runs
    with pytest.raises(ValueError, match="input of 32 tokens after 3 soft-prompt tokens "
                                         "exceeds the 32 token positions"):
        add_soft_prompt(enc, 3)(enc.tokenize(long))                  # an index error before
    for length, message in [(33, "--max-length 33 exceeds the 32 token positions"),
                            (30, r"--max-length 30 \+ --prompt-tokens 3 = 33 exceeds the 32")]:
        s = recipe.AdaptSettings(model=str(models("roberta")), family="table",
                                 max_length=length, prompt_tokens=3)
        with pytest.raises(ValueError, match=message):
            recipe._check_length(s, enc, soft_prompt=True)


def test_a_text_has_the_same_features_whatever_the_padding_side(models):
    """A tokenizer saved with padding_side='left' shifted a short text's positions by the
    others' lengths: its features in a batch differed from its own by 0.28."""
    enc = load_text_encoder(models("bert-left"), max_length=16)
    x = enc.tokenize(TEXTS)
    assert (x[:, 0] == enc.tokenizer.cls_token_id).all()              # padded on the right
    with torch.no_grad():
        alone = torch.cat([enc(enc.tokenize([t]), head=False) for t in TEXTS])
        torch.testing.assert_close(enc(x, head=False), alone, atol=1e-6, rtol=0)


def test_mean_pooling_leaves_the_padding_out_for_other_pad_ids(models):
    """RoBERTa pads with id 1 and GPT-2 here with its end-of-text token 0: features equal a
    hand mean over the real tokens' hidden states."""
    for kind in ("roberta", "gpt2-pad"):
        enc = load_text_encoder(models(kind), max_length=16)
        x = enc.tokenize(TEXTS)
        ids = x.long()
        real = ids != enc.tokenizer.pad_token_id
        assert not real.all()                                         # there is padding
        with torch.no_grad():
            h = enc.encoder(input_ids=ids, attention_mask=real.long())[0]
            hand = torch.stack([h[i, real[i]].mean(0) for i in range(len(ids))])
            torch.testing.assert_close(enc(x, head=False),
                                       torch.nn.functional.normalize(hand, dim=-1))


def test_a_tokenizer_without_a_pad_token_is_named_with_what_to_do(models):
    enc = load_text_encoder(models("gpt2"), max_length=16)
    with pytest.raises(ValueError, match="tokenizer of .*gpt2 has no pad token.*"
                                         "tokenizer.pad_token = tokenizer.eos_token"):
        enc.tokenize(TEXTS)


def _no_network(monkeypatch):
    """Online hub settings (huggingface_hub imported before HF_HUB_OFFLINE was set), and
    every host lookup recorded and refused: the list of those attempted."""
    from huggingface_hub import constants

    calls = []

    def lookup(*args, **kw):
        calls.append(args[:2])
        raise socket.gaierror("no network in tests")

    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(socket, "getaddrinfo", lookup)
    return calls


def test_a_cached_hub_name_and_its_text_soft_prompt_make_no_request(models, tmp_path,
                                                                    monkeypatch):
    """With the hub client online, loading a cached name asked the hub for the model's files
    (adapter_config.json...), and add_soft_prompt(init='text') reloaded its tokenizer from the
    hub: ~50 refused requests, each retried for up to a minute in all."""
    import shutil

    from huggingface_hub import constants

    snapshot = tmp_path / "hub" / "models--someone--tiny" / "snapshots" / "abc"
    shutil.copytree(models("distilbert"), snapshot)
    (snapshot.parents[1] / "refs").mkdir()
    (snapshot.parents[1] / "refs" / "main").write_text("abc")
    calls = _no_network(monkeypatch)
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "hub"))
    enc = load_text_encoder("someone/tiny", out_dim=3, max_length=16)
    sp = add_soft_prompt(enc, 4, init="text", init_text="a small dog")
    assert calls == [] and constants.HF_HUB_OFFLINE is False         # and put back
    assert soft_prompt_finetune(sp, enc.tokenize(TEXTS), Y, steps=1).trainable == 4 * 32 + 99


def test_an_uncached_hub_name_makes_no_request_whatever_hf_hub_offline(monkeypatch):
    """With huggingface_hub imported before HF_HUB_OFFLINE was set (or HF_HUB_OFFLINE=0), an
    uncached name made a request to huggingface.co (the hub client's registry) before it was
    refused, although loading is local_files_only."""
    from huggingface_hub import constants

    calls = _no_network(monkeypatch)
    with pytest.raises(ValueError, match="not in the local Hugging Face cache"):
        load_hf("someone/no-such-model-here")
    assert calls == [] and constants.HF_HUB_OFFLINE is False         # and put back


def test_an_encoder_decoder_model_is_refused_by_name_and_its_encoder_runs(models):
    """A T5 folder loaded as T5Model, which failed on the first texts with 'You must specify
    exactly one of input_ids or inputs_embeds' (its decoder had no input)."""
    from metaloop.models.text import TextEncoder

    with pytest.raises(ValueError, match="T5Model is an encoder-decoder model.*"
                                         r"TextEncoder\(model.get_encoder\(\), tokenizer\)"):
        load_text_encoder(models("t5"))
    model, tok = load_hf(models("t5"))
    enc = TextEncoder(model.get_encoder(), tok, 3, max_length=16)
    assert enc(enc.tokenize(TEXTS)).shape == (6, 3)


@pytest.mark.parametrize("kind", ["distilbert", "albert"])
def test_the_adapt_recipe_runs_every_approach_on_other_architectures(models, kind, tmp_path):
    """``metaloop adapt --model FOLDER --family table``: DistilBERT stopped at lora (default
    targets) and ALBERT at soft-prompt (a traceback); every row is there now."""
    table = tmp_path / "t.csv"
    words = WORDS[5:]
    rows = [f"{words[c]} {words[(c + i) % len(words)]} {words[(c * i + 3) % len(words)]} {i},c{c}"
            for c in range(3) for i in range(3)]
    table.write_text("text,label\n" + "\n".join(rows) + "\n")
    s = recipe.AdaptSettings(model=str(models(kind)), family="table", data=str(table),
                             ways=3, shots=1, queries=2, tasks=1, steps=1, max_length=12)
    res = recipe.run(recipe.prepare(s), tmp_path / "out")
    assert list(res["approaches"]) == list(recipe.APPROACHES)
    assert all(0 <= r["accuracy"]["mean"] <= 1 for r in res["approaches"].values())

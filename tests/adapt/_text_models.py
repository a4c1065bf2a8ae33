"""A tiny randomly initialised BERT behind metaloop's TextEncoder, for the peft tests (needs the
text extra; the test modules skip themselves without it)."""

import torch


def tiny_text(out_dim=3):
    """A 2-layer, 32-wide BERT encoder with an ``out_dim``-way head, seeded."""
    import transformers

    from metaloop.models.text import TextEncoder
    cfg = transformers.BertConfig(vocab_size=60, hidden_size=32, num_hidden_layers=2,
                                  num_attention_heads=2, intermediate_size=37,
                                  max_position_embeddings=64)
    torch.manual_seed(0)
    return TextEncoder(transformers.BertModel(cfg).eval(), None, out_dim)

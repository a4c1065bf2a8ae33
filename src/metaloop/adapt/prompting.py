"""Approach 0, prompting a sentence encoder, with a prompt optimizer.

Zero-shot classification: each class gets a label prompt, a template filled with a wording
of its label (``"a kind of {}"`` with ``"dog"``); a text goes to the class whose prompt
embedding is most cosine-similar to its own. This is a linear head whose rows are the
normalised prompt embeddings, so the result is an ordinary ``Adapted`` predictor.

The prompt optimizer chooses the template and the label wording (and optionally how much of
the support examples' mean embedding to add to each prompt, ``mixes``) by leave-one-out
accuracy on the support set, ties broken by the leave-one-out log-likelihood. It is given
the support set only: query data never reach it. With ``mixes=(0,)`` (the default) a
candidate classifier does not depend on the support set, so its leave-one-out accuracy is
its support accuracy; with ``mix > 0`` example i is scored against prototypes that leave
it out.
"""

from __future__ import annotations

import itertools
import string
from collections.abc import Mapping, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from metaloop.adapt._fit import Adapted, check_support
from metaloop.adapt.heads import new_head_names
from metaloop.func.params import detach, eval_mode, params_of

TEMPLATES = (
    "{}",
    "a kind of {}.",
    "this is a definition of a type of {}.",
    "a word for a particular {}.",
    "an example of {}.",
    "something that is a {}.",
)
SCALE = 20.0   # logits = SCALE * cosine similarity (a temperature of 0.05)


def _check_model(model: nn.Module) -> None:
    if not (hasattr(model, "embed") and getattr(model, "normalize", False)):
        raise ValueError(f"prompting needs a TextEncoder with normalize=True (cosine "
                         f"similarities), got {type(model).__name__}")


def _check_scale(fn: str, scale: object) -> float:
    """The logit scale as a float: a finite number > 0 (0 would give uniform predictions,
    a negative one would rank the classes backwards)."""
    if isinstance(scale, bool) or not isinstance(scale, (int, float)) \
            or not 0 < scale < float("inf"):
        raise ValueError(f"{fn}: scale must be a finite number > 0, got {scale!r}")
    return float(scale)


def _is_template(template: object) -> bool:
    """True for a string with exactly one replacement field, ``{}`` (literal braces doubled):
    ``template.format(wording)`` then works for every wording."""
    if not isinstance(template, str):
        return False
    try:
        fields = [(name, spec, conv) for _, name, spec, conv in string.Formatter().parse(template)
                  if name is not None]
    except ValueError:                   # an unmatched brace
        return False
    return fields == [("", "", None)]


def _embed(model: nn.Module, texts: list[str], cache: dict | None) -> torch.Tensor:
    """Normalised embeddings ``[N, D]``, reusing and filling ``cache`` (text -> [D]), computed
    in eval mode (no dropout) whatever the model's own mode, which is then restored."""
    with eval_mode(model):
        if cache is None:
            return model.embed(texts)  # type: ignore[operator]  # TextClassifier.embed
        todo = sorted({t for t in texts if t not in cache})
        if todo:
            cache.update(zip(todo, model.embed(todo)))  # type: ignore[operator]  # likewise
    return torch.stack([cache[t] for t in texts])


def _with_head(model: nn.Module, vectors: torch.Tensor, scale: float) -> dict:
    w, b = new_head_names(model)
    params = detach(params_of(model))
    return {**params, w: scale * vectors, b: vectors.new_zeros(vectors.shape[0])}


def zero_shot(model: nn.Module, labels: Sequence[str], template: str = "{}",
              scale: float = SCALE, cache: dict | None = None) -> Adapted:
    """Classify by cosine similarity to the prompts ``template.format(label)``.

    Args:
        model: a ``TextEncoder`` with ``normalize=True``.
        labels: one wording per class, in label order.
        template: a string with one ``{}`` and no other replacement field.
        scale: multiplies the cosine similarities to give the logits (> 0).
        cache: optional dict text -> embedding, shared between calls.

    Returns:
        ``Adapted`` with head ``scale * prompt embeddings`` ``[C, D]``; ``trainable`` is 0.

    Raises:
        ValueError: a model without normalised embeddings, a template without exactly one
            ``{}`` (or with another replacement field or an unmatched brace), no labels (or
            one string in place of a list), a label that is not a string (naming its class
            and value), or a scale that is not finite and > 0.
    """
    _check_model(model)
    if not _is_template(template):
        raise ValueError(f"template must contain '{{}}' once and no other braces (write a "
                         f"literal brace twice), got {template!r}")
    if isinstance(labels, str):
        raise ValueError(f"zero_shot: labels must be a sequence of wordings, one per class, "
                         f"got the single string {labels!r} (write [{labels!r}])")
    if len(labels) == 0:
        raise ValueError("zero_shot needs at least one label")
    for c, label in enumerate(labels):
        if not isinstance(label, str):
            raise ValueError(f"zero_shot: labels must be strings, one wording per class, but "
                             f"class {c}'s is {type(label).__name__} {label!r}")
        _check_not_blank("zero_shot", f"class {c}'s label", label, "prompt")
    scale = _check_scale("zero_shot", scale)
    e = _embed(model, [template.format(label) for label in labels], cache)      # [C, D]
    return Adapted(model, _with_head(model, F.normalize(e, dim=-1), scale), 0, (),
                   {"template": template, "frozen_body": True})


def _loo_scores(feats: torch.Tensor, y: torch.Tensor, prompts: torch.Tensor, mix: float,
                scale: float) -> tuple[float, float]:
    """Leave-one-out accuracy and mean log-likelihood of the class vectors
    ``normalize(prompt_c + mix * mean of class c's other support features)``.

    feats ``[S, D]`` normalised, y ``[S]``, prompts ``[C, D]`` normalised.
    """
    c = prompts.shape[0]
    onehot = F.one_hot(y, c).to(feats.dtype)                                # [S, C]
    sums, counts = onehot.T @ feats, onehot.sum(0)                          # [C, D], [C]
    others = sums[None] - onehot[:, :, None] * feats[:, None]              # [S, C, D]
    n = (counts[None] - onehot).clamp_min(1.0)[:, :, None]                 # [S, C, 1]
    vecs = F.normalize(prompts[None] + mix * others / n, dim=-1)            # [S, C, D]
    logits = scale * torch.einsum("scd,sd->sc", vecs, feats)               # [S, C]
    acc = float((logits.argmax(-1) == y).float().mean())
    return acc, float(-F.cross_entropy(logits, y))


def _words(wordings: Sequence[Mapping[str, str] | str]) -> tuple[list[dict], list[str]]:
    """Each class's wordings as a dict (a string is ``{"label": ...}``), and the first's keys."""
    words = [{"label": w} if isinstance(w, str) else dict(w) for w in wordings]
    return words, (list(words[0]) if words else [])


def _check_wordings(wordings: Sequence[object]) -> None:
    """Each class's wordings must be a string or a mapping of strings to strings, none empty
    or blank: anything else would be formatted into a prompt (``None`` becoming the word
    "None", ``""`` a prompt that names no label).

    Raises:
        ValueError: naming the class, the key and the value.
    """
    for c, w in enumerate(wordings):
        if isinstance(w, str):
            _check_not_blank("optimize_prompt", f"class {c}'s wording", w)
            continue
        if not isinstance(w, Mapping):
            raise ValueError(f"optimize_prompt: class {c}'s wordings must be a string or a "
                             f"dict of strings, got {type(w).__name__} {w!r}")
        for k, v in w.items():
            if not isinstance(k, str):
                raise ValueError(f"optimize_prompt: wording keys must be strings, but class "
                                 f"{c} has the key {type(k).__name__} {k!r}")
            if not isinstance(v, str):
                raise ValueError(f"optimize_prompt: wordings must be strings, but class {c}'s "
                                 f"{k!r} is {type(v).__name__} {v!r}")
            _check_not_blank("optimize_prompt", f"class {c}'s {k!r} wording", v)


def _check_not_blank(who: str, what: str, text: str, prompts: str = "prompts") -> None:
    """A ValueError led by ``who`` where ``text`` (``what``: a class's label or wording) is
    empty or white space: the ``prompts`` made of it would name no label."""
    if not text.strip():
        raise ValueError(f"{who}: {what} is empty ({text!r}): its {prompts} would name no "
                         f"label")


def _prompts(words: list[dict], keys: list[str], templates: Sequence[str]) -> list[str]:
    """The label prompts ``optimize_prompt`` embeds: template-major, then wording key, then
    class."""
    return [t.format(w[k]) for t in templates for k in keys for w in words]


def fill_cache(model: nn.Module, wordings: Sequence[Mapping[str, str] | str],
               cache: dict, templates: Sequence[str] = TEMPLATES) -> None:
    """Fill ``cache`` exactly as ``optimize_prompt(model, ..., wordings, templates,
    cache=cache)`` would: its label prompts not yet cached, embedded in one batch, without
    scoring any candidate. The cache's contents depend only on the prompts (not on the
    support set), so a caller that skips tasks it has already scored (a resumed evaluation)
    gets the same embeddings for later tasks as a run that never skipped them.

    Expects arguments ``optimize_prompt`` accepted (it is not checked again)."""
    words, keys = _words(wordings)
    _embed(model, _prompts(words, keys, templates), cache)


def optimize_prompt(model: nn.Module, support_x: torch.Tensor, support_y: torch.Tensor,
                    wordings: Sequence[Mapping[str, str] | str],
                    templates: Sequence[str] = TEMPLATES, mixes: Sequence[float] = (0.0,),
                    scale: float = SCALE, cache: dict | None = None) -> Adapted:
    """Choose a prompt by leave-one-out accuracy on the support set, and classify with it.

    Args:
        model: a ``TextEncoder`` with ``normalize=True``; it is not trained.
        support_x: ``[S, L]`` token ids.
        support_y: int64 ``[S]`` labels ``0..C-1``.
        wordings: for each class c (in label order), a dict of candidate wordings
            (``{"name": ..., "synonyms": ..., "gloss": ...}``, see ``WordNet.wordings``) or
            a single string. Every class must offer the same keys (in any order).
        templates: candidate templates, each with one ``{}``.
        mixes: candidate weights of the support prototypes added to the prompt embeddings.
        scale: multiplies the cosine similarities to give the logits (> 0; default 20).
        cache: optional dict text -> embedding, shared between tasks.

    Returns:
        ``Adapted`` (``trainable`` 0) whose ``info`` names the chosen template, wording key,
        mix and leave-one-out accuracy, and the number of candidates tried.

    Raises:
        ValueError: an empty support set, one string in place of the list of wordings, a
            wording list whose length is not C, a wording that is not a string (or a class's
            wordings neither a string nor a dict; naming the class, the key and the value),
            classes with different wording keys (the
            message names the keys a class lacks or adds), a template without exactly one
            ``{}`` (or with another field or an unmatched brace), no ``mixes`` or a negative
            one, or a scale that is not finite and > 0.
    """
    _check_model(model)
    n_classes = check_support("optimize_prompt", support_x, support_y, model)
    if isinstance(wordings, str):
        raise ValueError(f"optimize_prompt: wordings must be a sequence of wordings, one per "
                         f"class, got the single string {wordings!r} (write [{wordings!r}])")
    if len(wordings) != n_classes:
        raise ValueError(f"optimize_prompt: {len(wordings)} label wordings for "
                         f"{n_classes} classes")
    _check_wordings(wordings)
    words, keys = _words(wordings)
    if not keys:
        raise ValueError(f"optimize_prompt: every class needs at least one wording, got "
                         f"{words[0]!r} for class 0")
    for c, w in enumerate(words):
        if set(w) != set(keys):
            lacks, adds = sorted(set(keys) - set(w)), sorted(set(w) - set(keys))
            raise ValueError(f"optimize_prompt: every class needs the same wording keys: "
                             f"class 0 has {sorted(keys)}, but class {c} has {sorted(w)}"
                             + (f" (it lacks {lacks})" if lacks else "")
                             + (f" (it adds {adds})" if adds else ""))
    if isinstance(templates, str):
        raise ValueError(f"optimize_prompt: templates must be a sequence of templates, got "
                         f"the single string {templates!r} (write [{templates!r}])")
    bad = [t for t in templates if not _is_template(t)]
    if bad or not templates:
        raise ValueError(f"optimize_prompt: templates must contain '{{}}' once and no other "
                         f"braces (write a literal brace twice), got {bad or templates}")
    mixes = tuple(mixes)
    if not mixes or any(isinstance(m, bool) or not isinstance(m, (int, float))
                        or not 0 <= m < float("inf") for m in mixes):
        raise ValueError(f"optimize_prompt: mixes must be one or more finite numbers >= 0, "
                         f"got {mixes!r}")
    scale = _check_scale("optimize_prompt", scale)
    texts = _prompts(words, keys, templates)
    emb = F.normalize(_embed(model, texts, cache), dim=-1)                  # [T*K*C, D]
    emb = emb.view(len(templates), len(keys), n_classes, -1)               # [T, K, C, D]
    with torch.no_grad(), eval_mode(model):
        feats = model(support_x, head=False)                               # [S, D]
    best, choice = None, None
    for i, j, mix in itertools.product(range(len(templates)), range(len(keys)), mixes):
        score = _loo_scores(feats, support_y, emb[i, j], float(mix), scale)
        if best is None or score > best:                  # ties: the first candidate wins
            best, choice = score, (i, j, float(mix))
    assert best is not None and choice is not None      # templates, keys, mixes: not empty
    i, j, mix = choice
    onehot = F.one_hot(support_y, n_classes).to(feats.dtype)               # [S, C]
    protos = onehot.T @ feats / onehot.sum(0)[:, None]                     # [C, D]
    vecs = F.normalize(emb[i, j] + mix * protos, dim=-1)                   # [C, D]
    info = {"template": templates[i], "wording": keys[j], "mix": mix,
            "loo_accuracy": best[0], "candidates": len(templates) * len(keys) * len(mixes),
            "frozen_body": True}
    return Adapted(model, _with_head(model, vecs, scale), 0, (), info)

"""optimize_prompt and zero_shot against the selection written out with loops: every
candidate (template, wording, mix) scored by leave-one-out accuracy, then log-likelihood,
the first of equal candidates kept, and the chosen classifier's logits
``scale * cos(x, normalize(prompt_c + mix * mean of class c's support features))``."""

from __future__ import annotations

import itertools
import string

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from metaloop.adapt.prompting import optimize_prompt, zero_shot

LETTERS = torch.randn(26, 8, generator=torch.Generator().manual_seed(0))       # [26, D]


def _bag(text: str) -> torch.Tensor:
    """A text's letters, summed as random vectors: spaces, braces and stops count for
    nothing, so "{}" and "{}." give the same prompts (a tie between two templates)."""
    idx = [string.ascii_lowercase.index(ch) for ch in text.lower() if ch.isalpha()]
    return LETTERS[idx].sum(0)                                                  # [D]


class Letters(nn.Module):
    """A stand-in sentence encoder over bags of letters; inputs are text ids [N, 1]."""

    normalize = True

    def __init__(self, texts):
        super().__init__()
        self.texts = texts
        self.head = nn.Linear(8, 2)

    def forward(self, x, head=True):
        f = F.normalize(torch.stack([_bag(self.texts[int(i)]) for i in x[:, 0]]), dim=-1)
        return self.head(f) if head else f

    def embed(self, texts):
        return F.normalize(torch.stack([_bag(t) for t in texts]), dim=-1)


TEXTS = ["purring kitten", "meowing tabby", "small cat", "barking puppy", "woofing hound",
         "big dog", "furry kitten", "loud puppy"]
WORDINGS = [{"name": "cat", "sound": "meow"}, {"name": "dog", "sound": "woof"}]
TEMPLATES = ("{}", "{}.", "a {} sound", "the {}")


def _reference(feats, y, wordings, templates, mixes, scale):
    """(template, key, mix, LOO accuracy) of the best candidate, and its class vectors."""
    C = len(wordings)
    best = None
    for t, k, mix in itertools.product(templates, list(wordings[0]), mixes):
        prompts = [F.normalize(_bag(t.format(w[k])), dim=0) for w in wordings]
        hits, ll = 0, 0.0
        for s in range(len(y)):                          # leave example s out
            vecs = []
            for c in range(C):
                others = [feats[i] for i in range(len(y)) if int(y[i]) == c and i != s]
                mean = sum(others) / len(others) if others else torch.zeros_like(feats[0])
                vecs.append(F.normalize(prompts[c] + mix * mean, dim=0))
            logits = scale * torch.stack([v @ feats[s] for v in vecs])
            hits += int(int(logits.argmax()) == int(y[s]))
            ll += float(torch.log_softmax(logits, 0)[y[s]])
        score = (hits / len(y), ll / len(y))
        if best is None or score > best[0]:              # the first of equal scores stays
            best = (score, t, k, mix, prompts)
    (acc, _), t, k, mix, prompts = best
    means = [feats[y == c].mean(0) for c in range(C)]
    vecs = torch.stack([F.normalize(prompts[c] + mix * means[c], dim=0) for c in range(C)])
    return t, k, mix, acc, vecs


@pytest.mark.parametrize("support,templates,mixes", [
    ((0, 6, 3, 4), TEMPLATES, (0.0, 0.5, 2.0)),         # chooses "{}" with mix 2
    ((0, 2, 6, 3, 5, 7), TEMPLATES, (0.0, 1.0)),
    ((2, 5), ("{}", "{}."), (0.0,)),                   # two equal templates: the first wins
])
@pytest.mark.parametrize("scale", [20.0, 3.0])
def test_the_prompt_optimizer_picks_and_builds_the_reference_classifier(support, templates,
                                                                          mixes, scale):
    model = Letters(TEXTS)
    sx = torch.tensor(support, dtype=torch.float32)[:, None]
    sy = torch.tensor([0 if "cat" in TEXTS[i] or "kitten" in TEXTS[i] or "tabby" in TEXTS[i]
                       else 1 for i in support])
    a = optimize_prompt(model, sx, sy, WORDINGS, templates, mixes, scale=scale)
    feats = model(sx, head=False)
    t, k, mix, acc, vecs = _reference(feats, sy, WORDINGS, templates, mixes, scale)
    assert (a.info["template"], a.info["wording"], a.info["mix"]) == (t, k, mix)
    assert a.info["loo_accuracy"] == pytest.approx(acc, abs=1e-6)
    torch.testing.assert_close(a.params["head.weight"], scale * vecs)
    xq = torch.arange(len(TEXTS), dtype=torch.float32)[:, None]
    torch.testing.assert_close(a(xq), scale * model(xq, head=False) @ vecs.T)


def test_the_reference_cases_include_a_tie_and_a_mix():
    """Guards for the test above: "{}" and "{}." give the same prompts (so the first must
    win), and one case chooses a mix > 0 (so the final head must add the support means)."""
    model = Letters(TEXTS)
    assert torch.equal(model.embed(["cat"]), model.embed(["cat."]))
    sx = torch.tensor([0, 6, 3, 4], dtype=torch.float32)[:, None]
    feats = model(sx, head=False)
    _, _, mix, _, _ = _reference(feats, torch.tensor([0, 0, 1, 1]), WORDINGS, TEMPLATES,
                                 (0.0, 0.5, 2.0), 20.0)
    assert mix > 0


def test_zero_shot_logits_are_the_scaled_cosines_to_the_prompts():
    model = Letters(TEXTS)
    a = zero_shot(model, ["cat", "dog"], template="the {}", scale=7.0)
    prompts = torch.stack([F.normalize(_bag(f"the {w}"), dim=0) for w in ("cat", "dog")])
    xq = torch.arange(len(TEXTS), dtype=torch.float32)[:, None]
    torch.testing.assert_close(a(xq), 7.0 * model(xq, head=False) @ prompts.T)

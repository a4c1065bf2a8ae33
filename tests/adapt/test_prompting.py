"""Approach 0: zero-shot label prompts and the prompt optimizer (support set only)."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from metaloop.adapt.prompting import fill_cache, optimize_prompt, zero_shot
from metaloop.tasks.batch import TaskBatch

VOCAB = ["cat", "dog", "purr", "bark", "meow", "woof", "pet", "small", "thing", "can"]


class BagOfWords(nn.Module):
    """A stand-in sentence encoder: normalised word counts. Inputs are text ids [N, 1]."""

    normalize = True

    def __init__(self, texts):
        super().__init__()
        self.texts = texts
        self.proj = nn.Parameter(torch.eye(len(VOCAB)))
        self.head = nn.Linear(len(VOCAB), 2)

    def _counts(self, texts):
        return torch.tensor([[t.split().count(w) for w in VOCAB] for t in texts],
                            dtype=torch.float32)

    def forward(self, x, head=True):
        f = F.normalize(self._counts([self.texts[int(i)] for i in x[:, 0]]) @ self.proj, dim=-1)
        return self.head(f) if head else f

    def embed(self, texts):
        with torch.no_grad():
            return F.normalize(self._counts(texts) @ self.proj, dim=-1)


TEXTS = ["a small pet that can purr", "a pet that can bark",        # support
         "it can purr", "it can bark", "small thing purr", "woof bark"]  # query
WORDINGS = [{"name": "cat", "sound": "purr", "swapped": "bark"},
            {"name": "dog", "sound": "bark", "swapped": "purr"}]


def _ids(*i):
    return torch.tensor(i, dtype=torch.float32)[:, None]


def test_optimizer_picks_the_wording_that_classifies_the_support_set():
    model = BagOfWords(TEXTS)
    a = optimize_prompt(model, _ids(0, 1), torch.tensor([0, 1]), WORDINGS,
                        templates=("{}", "a {} thing"))
    assert a.info["wording"] == "sound" and a.info["loo_accuracy"] == 1.0
    assert a.info["candidates"] == 6 and a.trainable == 0
    assert torch.equal(a(_ids(2, 3, 4, 5)).argmax(-1), torch.tensor([0, 1, 0, 1]))
    assert a.params["head.weight"].shape == (2, len(VOCAB))


def test_leave_one_out_never_scores_an_example_against_itself():
    texts = ["meow", "woof", "meow meow", "woof woof"]
    model = BagOfWords(texts)
    useless = [{"name": "cat"}, {"name": "dog"}]       # no overlap with any text: ties
    one = optimize_prompt(model, _ids(0, 1), torch.tensor([0, 1]), useless, ("{}",),
                          mixes=(0.0, 1.0))
    assert one.info["loo_accuracy"] == 0.5             # 1-shot: the prototype leaves it out
    two = optimize_prompt(model, _ids(0, 1, 2, 3), torch.tensor([0, 1, 0, 1]), useless,
                          ("{}",), mixes=(0.0, 1.0))
    assert two.info["loo_accuracy"] == 1.0 and two.info["mix"] == 1.0


def test_the_prompt_optimizer_never_reads_query_labels():
    """Poison the query labels: what is adapted is identical, only the score changes."""
    from metaloop.recipes.adapt import evaluate_strategies

    model = BagOfWords(TEXTS)
    seen = []

    def strategy(sx, sy, classes):
        a = optimize_prompt(model, sx, sy, [WORDINGS[int(c)] for c in classes],
                            templates=("{}", "a {} thing"))
        seen.append((a.info, a.params["head.weight"].clone()))
        return a

    class Family:
        def __init__(self, poison):
            self.poison = poison

        def sample(self, n, generator=None):
            qy = torch.tensor([[0, 1, 0, 1]])
            qy = (qy + 1) % 2 if self.poison else qy         # every query label wrong
            return TaskBatch(_ids(0, 1)[None], torch.tensor([[0, 1]]), _ids(2, 3, 4, 5)[None],
                             qy, torch.tensor([[0, 1]]))

    rows = {"prompt-optimized": (0, strategy)}
    clean = evaluate_strategies(rows, Family(False), tasks=1, seed=0)
    poisoned = evaluate_strategies(rows, Family(True), tasks=1, seed=0)
    assert seen[0][0] == seen[1][0] and torch.equal(seen[0][1], seen[1][1])
    assert clean["prompt-optimized"]["accuracy"]["mean"] == 1.0
    assert poisoned["prompt-optimized"]["accuracy"]["mean"] == 0.0


def test_zero_shot_uses_the_template():
    model = BagOfWords(TEXTS)
    a = zero_shot(model, ["purr", "bark"], template="{} thing", cache={})
    assert a.info["template"] == "{} thing" and a.trainable == 0
    assert torch.equal(a(_ids(2, 3)).argmax(-1), torch.tensor([0, 1]))


def test_prompting_errors_name_the_problem():
    model = BagOfWords(TEXTS)
    sx, sy = _ids(0, 1), torch.tensor([0, 1])
    with pytest.raises(ValueError, match="1 label wordings for 2 classes"):
        optimize_prompt(model, sx, sy, WORDINGS[:1])
    with pytest.raises(ValueError, match="templates must contain"):
        optimize_prompt(model, sx, sy, WORDINGS, templates=("no slot",))
    with pytest.raises(ValueError, match="same wording keys"):
        optimize_prompt(model, sx, sy, [WORDINGS[0], {"name": "dog"}])
    with pytest.raises(ValueError, match="the support set is empty"):
        optimize_prompt(model, sx[:0], sy[:0], [])
    with pytest.raises(ValueError, match="prompting needs a TextEncoder with normalize=True"):
        zero_shot(nn.Linear(2, 2), ["a", "b"])


def test_fill_cache_embeds_what_the_optimizer_would_in_the_same_batches():
    """A resume refills the prompt cache of the tasks it skips with ``fill_cache``: the same
    texts, embedded in the same batches (a batch's padding can change an embedding), and no
    forward pass over the support set."""
    batches = []

    class Logged(BagOfWords):
        def embed(self, texts):
            batches.append(list(texts))
            return super().embed(texts)

        def forward(self, x, head=True):
            batches.append("forward")
            return super().forward(x, head)

    model, templates = Logged(TEXTS), ("{}", "a {} thing")
    first, second = WORDINGS, [{"name": "pet", "sound": "woof", "swapped": "meow"},
                               WORDINGS[0]]
    full: dict = {}
    for w in (first, second):
        optimize_prompt(model, _ids(0, 1), torch.tensor([0, 1]), w, templates=templates,
                        cache=full)
    assert "forward" in batches
    whole = [b for b in batches if b != "forward"]
    batches.clear()
    refilled: dict = {}
    fill_cache(model, first, refilled, templates=templates)
    fill_cache(model, second, refilled, templates=templates)
    assert batches == whole and len(whole) == 2 and len(whole[1]) < len(whole[0])
    assert list(refilled) == list(full)
    assert all(torch.equal(refilled[t], full[t]) for t in full)
    fill_cache(model, first, refilled, templates=templates)      # all cached: no batch
    assert len(batches) == 2

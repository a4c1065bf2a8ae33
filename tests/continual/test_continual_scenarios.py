"""Scenarios on the real data: two-task, Split Fashion-MNIST (both settings), Omniglot
alphabets; and the two-task acceptance run (slow)."""

from __future__ import annotations

import pytest
import torch

from metaloop.continual.finetune import finetune_experience
from metaloop.continual.heads import init_params
from metaloop.continual.metrics import summarize
from metaloop.continual.scenarios import (
    fashion_mnist_experiences,
    omniglot_alphabets,
    split_fashion_mnist,
    two_task,
)
from metaloop.continual.sequence import run_sequence
from metaloop.data.fashion_mnist import load_fashion_mnist
from metaloop.evaluate import mean_ci
from metaloop.models import MLP


def test_two_task(fashion_mnist_root):
    a, b = two_task(fashion_mnist_root, train_per_class=20, val_per_class=5, test_per_class=10)
    assert (a.head, b.head, a.num_outputs, a.classes) == ("A", "B", 5, (0, 1, 2, 3, 4))
    assert a.train[0].shape == (100, 784) and a.val[0].shape == (25, 784)
    assert b.test[0].shape == (50, 784) and a.train[0].dtype == torch.float32
    assert 0.0 <= float(a.train[0].min()) and float(a.train[0].max()) <= 1.0
    assert sorted(b.train[1].unique().tolist()) == [0, 1, 2, 3, 4]     # 5..9 as head outputs
    assert b.name == "classes 5-9"


def test_split_settings_and_disjoint_splits(fashion_mnist_root):
    cls = split_fashion_mnist(fashion_mnist_root, "class", train_per_class=10, val_per_class=3,
                              test_per_class=4, flatten=False)
    task = split_fashion_mnist(fashion_mnist_root, "task", train_per_class=10, val_per_class=3,
                               test_per_class=4)
    assert len(cls) == len(task) == 5
    assert {e.head for e in cls} == {"all"} and all(e.num_outputs == 10 for e in cls)
    assert [e.classes for e in cls] == [(0, 1), (2, 3), (4, 5), (6, 7), (8, 9)]
    assert sorted(cls[3].train[1].unique().tolist()) == [6, 7]
    assert cls[0].train[0].shape == (20, 1, 28, 28)
    assert [e.head for e in task] == [f"task{i}" for i in range(5)]
    assert sorted(task[3].train[1].unique().tolist()) == [0, 1]
    # validation images are held out of the training split: no image is in both
    images, _ = load_fashion_mnist(fashion_mnist_root, "train")
    tr, va = cls[0].train[0].flatten(1), cls[0].val[0].flatten(1)
    assert not any(bool((tr == v).all(1).any()) for v in va)
    assert images.shape[0] == 60000


def test_fashion_mnist_bad_input(fashion_mnist_root):
    with pytest.raises(ValueError, match="unknown setting"):
        split_fashion_mnist(fashion_mnist_root, "domain")
    with pytest.raises(ValueError, match="disjoint sets of labels"):
        fashion_mnist_experiences([(0, 1), (1, 2)], root=fashion_mnist_root)
    with pytest.raises(ValueError, match="leaves no training images"):
        fashion_mnist_experiences([(0,)], root=fashion_mnist_root, val_per_class=6000)
    with pytest.raises(ValueError, match="train_per_class must be a positive int"):
        two_task(fashion_mnist_root, train_per_class=0)


def test_omniglot_alphabets(omniglot_root):
    exps = omniglot_alphabets(omniglot_root, alphabets=2, train_per_class=12, val_per_class=3)
    assert [e.name for e in exps] == ["Alphabet_of_the_Magi", "Anglo-Saxon_Futhorc"]
    magi = exps[0]
    assert magi.num_outputs == 20 and magi.head == "Alphabet_of_the_Magi"
    assert magi.train[0].shape == (240, 784) and magi.val[0].shape == (60, 784)
    assert magi.test[0].shape == (100, 784)
    assert torch.equal(magi.test[1].bincount(), torch.full((20,), 5))
    with pytest.raises(ValueError, match="unknown Omniglot alphabets"):
        omniglot_alphabets(omniglot_root, alphabets=["Klingon"])
    with pytest.raises(ValueError, match="leaves no test drawings"):
        omniglot_alphabets(omniglot_root, alphabets=1, train_per_class=17, val_per_class=3)
    with pytest.raises(ValueError, match="alphabets must be 1..30"):
        omniglot_alphabets(omniglot_root, alphabets=31)


@pytest.mark.slow
def test_two_task_replay_keeps_90_percent_of_the_old_accuracy(fashion_mnist_root):
    """The acceptance run at reduced size: 3 seeds, 2,000 training images per class."""
    torch.set_num_threads(1)
    exps = two_task(fashion_mnist_root, train_per_class=2000, test_per_class=500)
    retained = {"naive": [], "replay": []}
    for seed in range(3):
        torch.manual_seed(seed)
        g = torch.Generator().manual_seed(seed)
        model = MLP(784, (256, 256), 1)
        first = finetune_experience(model, init_params(model, exps, g), exps[0],
                                    replay_ratio=0.0, steps=400, eval_every=400, generator=g)
        for name in retained:
            r = run_sequence(model, first.params, exps, name, pretrained=True, steps=400,
                             eval_every=400, generator=torch.Generator().manual_seed(seed))
            retained[name].append(summarize(r.matrix)["retained"])
    replay, naive = mean_ci(retained["replay"]), mean_ci(retained["naive"])
    assert replay[0] - replay[1] >= 0.9, (replay, naive)
    assert naive[0] < 0.8 and naive[0] < replay[0] - 0.2, (replay, naive)  # loses far more

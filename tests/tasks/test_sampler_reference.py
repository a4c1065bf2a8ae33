"""The episode sampler against plain-Python checks over many draws, on hand-built data whose
examples carry their own index, so every drawn example can be traced to its class."""

import math
from collections import Counter

import torch

from metaloop.tasks import Episodes
from metaloop.tasks.omniglot import task_indices

SIZES = (6, 9, 5, 12, 7, 8)              # unequal classes: the table has padding


def _family(ways=3, shots=2, queries=3, dtype=torch.float32):
    y = torch.cat([torch.full((n,), k) for k, n in enumerate(SIZES)])             # [N]
    y = y[torch.randperm(len(y), generator=torch.Generator().manual_seed(0))]     # mixed order
    x = torch.arange(len(y)).to(dtype)[:, None]                                   # [N, 1] = id
    return Episodes(x, y, ways, shots, queries, class_names=list("abcdef")), y


def test_every_task_is_a_valid_episode_of_distinct_classes_and_examples():
    ways, shots, queries, n = 3, 2, 3, 400
    fam, y = _family(ways, shots, queries)
    b = fam.sample(n, torch.Generator().manual_seed(1))
    assert b.support_y.shape == (n, ways * shots) and b.query_y.shape == (n, ways * queries)
    class_uses, example_uses = Counter(), Counter()
    for t in range(n):
        sx, sy, qx, qy = b.task(t)
        classes = b.classes[t].tolist()
        assert len(set(classes)) == ways                       # no class twice in a task
        assert sy.tolist() == [w for w in range(ways) for _ in range(shots)]
        assert qy.tolist() == [w for w in range(ways) for _ in range(queries)]
        ids = [int(v) for v in torch.cat([sx, qx]).flatten()]
        assert len(set(ids)) == len(ids)                       # support and query disjoint
        for i, label in zip(ids, sy.tolist() + qy.tolist()):
            assert int(y[i]) == classes[label]                 # each example is its label's
        class_uses.update(classes)
        example_uses.update(ids)
    # classes uniform: each in ways / K of the tasks (binomial, 5 sd)
    p = ways / len(SIZES)
    for k in range(len(SIZES)):
        assert abs(class_uses[k] - n * p) < 5 * math.sqrt(n * p * (1 - p)), (k, class_uses)
    # labels permuted per task: a task's classes in increasing order 1 time in ways!
    _check_order_is_random(b.classes)
    # every example of a class reachable (none lost to padding or an off-by-one row)
    assert set(example_uses) == set(range(len(y)))


def test_uint8_examples_are_scaled_by_255_and_flat_samples_keep_their_class():
    y = torch.arange(40) % 4
    x = torch.arange(40, dtype=torch.uint8)[:, None].mul(5)                       # [N, 1]
    fam = Episodes(x, y, ways=2, shots=1, queries=2)
    b = fam.sample(20, torch.Generator().manual_seed(0))
    ids = (b.support_x * 255 / 5).round()
    assert torch.equal(b.support_x, ids * 5 / 255)             # exactly the stored value / 255
    fam, y = _family()
    xf, yf = fam.sample_flat(300, torch.Generator().manual_seed(2))
    assert [int(y[int(i)]) for i in xf.flatten()] == yf.tolist()
    assert set(yf.tolist()) == set(range(len(SIZES)))


def _check_order_is_random(classes):
    """Which class gets label 0, 1, ... is random: ``classes [n, ways]`` lists a task's
    classes in increasing order in 1 of ways! tasks (binomial, 5 sd)."""
    n, ways = classes.shape
    p = 1 / math.factorial(ways)
    ordered = sum(row == sorted(row) for row in classes.tolist())
    assert abs(ordered - n * p) < 5 * math.sqrt(n * p * (1 - p)), (ordered, n * p)


def _alphabets(sizes, pad_with=0):
    """``task_indices``' group table: the classes of each alphabet in turn, rows padded with a
    class of another alphabet (as Omniglot pads them), and the class -> alphabet map."""
    ids, start = [], 0
    for s in sizes:
        ids.append(list(range(start, start + s)))
        start += s
    m = max(sizes)
    groups = torch.tensor([row + [pad_with] * (m - len(row)) for row in ids])   # [A, M]
    alphabet = {c: a for a, row in enumerate(ids) for c in row}
    return groups, torch.tensor(sizes), alphabet, start


def test_within_alphabet_rate_against_the_exact_mixture():
    sizes, ways, n = (5, 3, 4, 2), 3, 3000
    groups, gsizes, alphabet, c = _alphabets(sizes, pad_with=12)
    table = torch.arange(c * 20).view(c, 20)
    # a random task lands in one alphabet by chance with this probability
    chance = sum(math.comb(s, ways) for s in sizes) / math.comb(c, ways)
    for rate in (1.0, 0.8, 0.25):
        classes, idx = task_indices(table, groups, gsizes, n, ways, 2, rate, "any",
                                    torch.Generator().manual_seed(3))
        one = [len({alphabet[int(k)] for k in row}) == 1 for row in classes]
        assert all(len(set(row.tolist())) == ways for row in classes)
        assert torch.equal(idx // 20, classes.unsqueeze(-1).expand_as(idx))
        want = rate + (1 - rate) * chance
        sd = math.sqrt(want * (1 - want) / n)
        assert abs(sum(one) / n - want) < 5 * sd + 1e-9, (rate, sum(one) / n, want)
        _check_order_is_random(classes)
    # within-alphabet tasks: the alphabet uniform over those with at least `ways` classes
    # (0: 5 classes, 1: exactly 3, 2: 4); the one with 2 never
    classes, _ = task_indices(table, groups, gsizes, n, ways, 2, 1.0, "any",
                              torch.Generator().manual_seed(4))
    used = Counter(alphabet[int(row[0])] for row in classes)
    assert set(used) == {0, 1, 2}
    for a in (0, 1, 2):
        assert abs(used[a] - n / 3) < 5 * math.sqrt(n * 2 / 9), used


def test_shared_drawers_are_one_draw_per_task_and_vary_between_tasks():
    c, ways, per_class, n = 10, 4, 3, 600
    groups, gsizes, _, _ = _alphabets((10,))
    table = torch.arange(c * 20).view(c, 20)                    # column j: drawer j
    classes, idx = task_indices(table, groups, gsizes, n, ways, per_class, 0.0, "shared",
                                torch.Generator().manual_seed(5))
    drawers = idx % 20                                          # [n, ways, S+Q]
    assert torch.equal(idx // 20, classes.unsqueeze(-1).expand_as(idx))
    for t in range(n):
        row = drawers[t, 0].tolist()
        assert len(set(row)) == per_class                       # distinct drawers in a task
        assert all(drawers[t, w].tolist() == row for w in range(ways))   # shared by classes
    first = Counter(drawers[:, 0, 0].tolist())                 # support drawer: uniform
    assert set(first) == set(range(20))
    assert max(first.values()) < n / 20 + 5 * math.sqrt(n / 20)

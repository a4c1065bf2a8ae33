"""``check_family``: a family of one's own is refused by name, with what is wrong."""

import random

import pytest
import torch

import metaloop as ml
from metaloop.tasks.protocol import check_family


class Blobs:
    """A classification family of one's own: ways Gaussian blobs of dim-d vectors a task."""

    kind = "classification"
    num_classes, class_names = 10, [f"c{i}" for i in range(10)]

    def __init__(self, ways=3, shots=2, queries=3, dim=4, **bad):
        self.ways, self.shots, self.queries, self.dim, self.bad = ways, shots, queries, dim, bad

    @property
    def input_shape(self):
        return (self.dim,)

    def with_shots(self, shots, queries=None):
        return Blobs(self.ways, shots, self.queries if queries is None else queries, self.dim,
                     **self.bad)

    def sample(self, n, generator=None):
        w, s, d = self.bad.get("draw_ways", self.ways), self.shots, self.dim
        q = self.bad.get("draw_queries", self.queries)
        g = None if self.bad.get("global_rng") else generator
        centres = torch.randn(n, w, d, generator=g) * 3                     # [n, w, d]
        sy = torch.arange(w).repeat_interleave(s).expand(n, -1).contiguous()  # [n, w*s]
        qy = torch.arange(w).repeat_interleave(q).expand(n, -1).contiguous()  # [n, w*q]
        sx = centres.gather(1, sy[..., None].expand(-1, -1, d)) + torch.randn(n, w * s, d,
                                                                               generator=g)
        qx = centres.gather(1, qy[..., None].expand(-1, -1, d)) + torch.randn(n, w * q, d,
                                                                               generator=g)
        classes = torch.stack([torch.randperm(self.num_classes, generator=g)[:w]
                               for _ in range(n)]) + self.bad.get("id_shift", 0)  # [n, w]
        if self.bad.get("python_rng"):
            sx = sx + random.random()
        if "shift" in self.bad:
            sy, qy = sy + self.bad["shift"], qy + self.bad["shift"]
        if self.bad.get("nan"):
            qx = qx.clone()
            qx[1, 0, 0] = float("nan")
        if self.bad.get("one_task"):
            return ml.TaskBatch(sx[:1], sy[:1], qx[:1], qy[:1])
        if self.bad.get("tuple"):
            return sx, sy, qx, qy
        if self.bad.get("regression"):
            return ml.TaskBatch(sx, sx[..., :1], qx, qx[..., :1])
        return ml.TaskBatch(sx, sy, qx, qy, None if self.bad.get("no_classes") else classes)


class Waves:
    """A regression family of one's own: y = a sin(x), x in [-5, 5]."""

    kind = "regression"
    ways = num_classes = class_names = None
    input_shape = (1,)

    def __init__(self, shots=5, queries=5, draw_shots=None):
        self.shots, self.queries, self.draw_shots = shots, queries, draw_shots or shots

    def with_shots(self, shots, queries=None):
        return Waves(shots, self.queries if queries is None else queries)

    def sample(self, n, generator=None):
        a = torch.rand(n, 1, 1, generator=generator) * 4 + 0.1                # [n, 1, 1]
        s = self.draw_shots
        x = torch.rand(n, s + self.queries, 1, generator=generator) * 10 - 5  # [n, S+Q, 1]
        y = a * torch.sin(x)                                                    # [n, S+Q, 1]
        return ml.TaskBatch(x[:, :s], y[:, :s], x[:, s:], y[:, s:])


def test_valid_families_of_ones_own_and_built_in_pass():
    for fam in (Blobs(), Waves(), ml.tasks.Sinusoid(shots=3, queries=4),
                ml.tasks.Episodes(torch.randn(60, 5), torch.arange(6).repeat(10), ways=3,
                                  shots=2, queries=3)):
        assert isinstance(fam, ml.tasks.TaskFamily)
        assert check_family(fam) is None


def _with(fam, **attrs):
    for k, v in attrs.items():
        setattr(fam, k, v)
    return fam


@pytest.mark.parametrize("fam,match", [
    (Blobs(tuple=True), r"Blobs.sample must return a metaloop.TaskBatch, got tuple"),
    (Blobs(one_task=True), r"Blobs.sample\(2\) returned 1 tasks"),
    (_with(Blobs(), kind="regression"), r"Blobs.kind is 'regression' but its sample gives "
                                        r"int64 labels"),
    (Blobs(regression=True), r"Blobs.kind is 'classification' but its sample gives float"),
    (_with(Blobs(), kind="classify"), r"Blobs.kind must be 'classification' or 'regression'"),
    (_with(Waves(), input_shape=(1, 2, 2)), r"Waves.input_shape is \(1, 2, 2\) but its "
                                            r"sample's inputs are support_x \[2, 5, 1\]"),
    (Blobs(shift=1, no_classes=True),
     r"Blobs.ways is 3 but its sample has label 3: labels must be task-local, in \[0, 3\)"),
    (Blobs(draw_ways=4, no_classes=True), r"Blobs.ways is 3 but its sample has label 3"),
    (Blobs(draw_ways=2),
     r"gives 4 support examples per task \(support_x \[2, 4, 4\]\) but ways \* shots = "
     r"3 \* 2 = 6"),
    (Blobs(queries=5, draw_queries=3),
     r"gives 9 query examples per task .* but ways \* queries = 3 \* 5 = 15"),
    (Waves(draw_shots=5, shots=4),
     r"Waves.sample gives 5 support examples per task .* but shots = 4"),
    (_with(Blobs(draw_ways=3), ways=None),
     r"Blobs.ways must be a positive int for classification"),
    (Blobs(id_shift=10), r"Blobs.num_classes is 10 but its sample's classes hold the "
                         r"id 1\d: global class ids are in \[0, num_classes\)"),
    (_with(Blobs(), class_names=["a", "b"]), r"Blobs.class_names has 2 names for "
                                             r"num_classes = 10 classes"),
    (_with(Blobs(), shots=None), r"Blobs.shots must be a positive int, got None"),
    (Blobs(nan=True), r"Blobs.sample gives non-finite values \(nan or inf\) in query_x "
                      r"\[2, 9, 4\]"),
    (Blobs(global_rng=True), r"Blobs.sample gives other tasks for the same seed"),
    (Blobs(python_rng=True), r"must draw only from the generator it is given"),
])
def test_a_family_that_breaks_the_protocol_is_named(fam, match):
    with pytest.raises(ValueError, match=match):
        check_family(fam)


def test_missing_members_are_named():
    class Half:
        kind, shots, queries = "regression", 1, 1

        def sample(self, n, generator=None):
            raise AssertionError("nothing is drawn from a family that lacks members")

    with pytest.raises(ValueError, match="Half is not a TaskFamily: it has no ways, "
                                         "num_classes, class_names, input_shape, with_shots"):
        check_family(Half())


def test_the_check_leaves_the_global_generators_alone():
    torch.manual_seed(3)
    before = torch.get_rng_state()
    check_family(Blobs())
    assert torch.equal(torch.get_rng_state(), before)

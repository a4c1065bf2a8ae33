"""``metaloop predict``'s scoring of many queries (``recipes.predict``): no query is left alone
in a small last chunk, and the images go to the device the run is on."""

import torch
from PIL import Image

import metaloop.recipes.predict as predict_mod
from metaloop.models import Conv4
from metaloop.runs import Run


class _Recorder:
    """A learner that records what it is given: ``adapt`` the support set, ``predict`` each
    batch of queries; query k scores class k mod n highest, so the order can be checked."""

    def __init__(self, model=None, n=2):
        self.model, self.n, self.seen = model, n, {"adapt": [], "predict": []}

    def adapt(self, sx, sy, steps=None):
        self.seen["adapt"].append((sx.device, sy.device, tuple(sx.shape)))
        return {}

    def predict(self, params, x):
        self.seen["predict"].append((x.device, len(x)))
        k = x.flatten(1)[:, 0].round().long().cpu()              # the query's index
        return torch.nn.functional.one_hot(k % self.n, self.n).float() * 5


def test_many_queries_are_split_into_equal_chunks(monkeypatch):
    """With one query more than a chunk holds, the last query was scored alone, normalised
    by its own BatchNorm statistics, which the docs warn against; now 5 queries with chunks
    of at most 4 are scored as 3 + 2, in their order."""
    monkeypatch.setattr(predict_mod, "QUERY_CHUNK", 4)
    learner = _Recorder(n=3)
    qx = torch.arange(5.0).view(5, 1, 1, 1).expand(5, 1, 4, 4)          # query k is all k
    sx, sy = torch.zeros(3, 1, 4, 4), torch.arange(3)
    probs = predict_mod.predict_folders(learner, sx, sy, qx)
    assert [n for _, n in learner.seen["predict"]] == [3, 2]
    assert probs.argmax(-1).tolist() == [0, 1, 2, 0, 1]
    learner.seen["predict"].clear()
    predict_mod.predict_folders(learner, sx, sy, qx[:4])
    assert [n for _, n in learner.seen["predict"]] == [4]                # one chunk if it fits
    learner.seen["predict"].clear()
    monkeypatch.setattr(predict_mod, "QUERY_CHUNK", 2)
    predict_mod.predict_folders(learner, sx, sy, qx, query_shift=1)
    assert [n for _, n in learner.seen["predict"]] == [18, 9 * 2, 9 * 1]  # 9 shifts each


def test_images_go_to_the_runs_device(tmp_path, monkeypatch):
    """``classify_folders`` moves the support and query images to the device of the run's
    model (``load_run(..., device=...)``), as ``score_lake_runs`` does; it fed CPU tensors
    to a model on another device (here torch's "meta" device stands for a GPU)."""
    for k, name in enumerate(("s/a/0.png", "s/b/0.png", "q/0.png", "q/1.png", "q/2.png")):
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        Image.new("L", (28, 28), 255 - k).save(tmp_path / name)   # each class an image of its own
    seen = []

    def spy(learner, sx, sy, qx, *args):
        seen.append((sx.device, sy.device, qx.device, len(sx), len(qx)))
        return torch.full((len(qx), 2), 0.5)

    monkeypatch.setattr(predict_mod, "predict_folders", spy)
    model = Conv4(in_channels=1, hidden=4, out_dim=2).to("meta")
    cfg = {"family": {"name": "omniglot", "image_size": 28, "ways": 2},
           "model": {"name": "conv4"}, "method": {"name": "protonet"}}
    run = Run(path=tmp_path / "run", config=cfg, learner=_Recorder(model), iteration=0)
    counted = []
    pred = predict_mod.classify_folders(run, tmp_path / "s", tmp_path / "q",
                                        progress=counted.append)
    meta = torch.device("meta")
    assert seen == [(meta, meta, meta, 2, 3)]
    assert counted == [1] * 5                        # progress: every image read, once
    assert pred.files == ["0.png", "1.png", "2.png"] and pred.classes == ["a", "b"]

"""Episodes: tasks from tensors, files and Datasets; the same sampler as the image families."""

import numpy as np
import pytest
import torch
from PIL import Image

import metaloop as ml
from metaloop.tasks import Episodes, TaskFamily


def _data(sizes=(7, 9, 12, 8, 10, 6), d=5):
    y = torch.cat([torch.full((n,), k) for k, n in enumerate(sizes)])            # [N]
    x = torch.randn(len(y), d, generator=torch.Generator().manual_seed(0)) + y[:, None]
    return x, y


def test_tasks_from_unequal_classes_are_valid_and_seeded():
    x, y = _data()
    fam = Episodes(x, y, ways=4, shots=2, queries=3, class_names=list("abcdef"))
    assert isinstance(fam, TaskFamily) and fam.input_shape == (5,) and fam.image_shape is None
    b = fam.sample(50, torch.Generator().manual_seed(1))
    assert b.support_x.shape == (50, 8, 5) and b.query_x.shape == (50, 12, 5)
    assert b.support_y[0].tolist() == [0, 0, 1, 1, 2, 2, 3, 3]
    for t in range(50):
        cls = b.classes[t]
        assert len(set(cls.tolist())) == 4
        xs = torch.cat([b.support_x[t].view(4, 2, 5), b.query_x[t].view(4, 3, 5)], 1)
        for w in range(4):                          # every example is of its class, distinct
            rows = [int((x == e).all(1).nonzero()) for e in xs[w]]
            assert len(set(rows)) == 5 and all(int(y[r]) == int(cls[w]) for r in rows)
    b2 = fam.sample(50, torch.Generator().manual_seed(1))
    assert torch.equal(b.support_x, b2.support_x) and torch.equal(b.classes, b2.classes)


def test_same_sampler_as_omniglot(omniglot_root):
    om = ml.tasks.Omniglot(omniglot_root, split="evaluation", ways=5, shots=1, queries=3)
    imgs = om.images                                                 # [C, 20, H, W] uint8
    ep = Episodes(imgs.reshape(-1, 1, 28, 28), torch.arange(om.num_classes).repeat_interleave(20),
                  ways=5, shots=1, queries=3, class_names=om.class_names)
    a, b = (f.sample(16, torch.Generator().manual_seed(7)) for f in (om, ep))
    for f in ("support_x", "support_y", "query_x", "query_y", "classes"):
        assert torch.equal(getattr(a, f), getattr(b, f)), f


def test_uint8_images_scale_and_three_dim_input_gets_a_channel():
    x = torch.randint(0, 256, (20, 6, 6), dtype=torch.uint8)
    fam = Episodes(x, torch.arange(20) % 4, ways=2, shots=1, queries=1)
    assert fam.input_shape == (1, 6, 6) and fam.image_shape == (1, 6, 6)
    b = fam.sample(3)
    assert b.support_x.dtype == torch.float32 and float(b.support_x.max()) <= 1.0
    xf, yf = fam.sample_flat(10, torch.Generator().manual_seed(0))
    assert xf.shape == (10, 1, 6, 6) and yf.max() < 4


def test_small_classes_are_named_or_dropped_and_ways_checked():
    x, y = _data(sizes=(7, 3, 12, 2))
    with pytest.raises(ValueError, match=r"2 class\(es\) have fewer than shots \+ queries = "
                                         r"1 \+ 3 = 4 examples: 'b' \(3\), 'd' \(2\)"):
        Episodes(x, y, ways=2, shots=1, queries=3, class_names=list("abcd"))
    fam = Episodes(x, y, ways=2, shots=1, queries=3, class_names=list("abcd"), drop_small=True)
    assert fam.class_names == ["a", "c"] and fam.dropped == ["b", "d"]
    assert "dropped 2 class(es)" in fam.describe()
    with pytest.raises(ValueError, match="ways=3 exceeds the 2 classes available after "
                                         "dropping 2"):
        Episodes(x, y, ways=3, shots=1, queries=3, drop_small=True)
    assert fam.with_shots(1, 1).class_names == ["a", "b", "c", "d"]   # all fit 2 again
    assert fam.subset(["c", "a"]).class_names == ["c", "a"]
    with pytest.raises(ValueError, match="unknown"):
        fam.subset(["zz"])


@pytest.mark.parametrize("x, y, match", [
    (torch.zeros(4, 2, 3, 3, 3), torch.zeros(4, dtype=torch.int64), "shape"),
    (torch.zeros(4, 3, dtype=torch.int32), torch.zeros(4, dtype=torch.int64),
     r"uint8 images \(0\.\.255\) or floating point, got torch.int32"),
    (torch.zeros(4, 3), torch.zeros(5, dtype=torch.int64), "N = 4"),
    (torch.zeros(4, 3), torch.zeros(4), "int labels"),
    (torch.zeros(4, 3), torch.tensor([0, 1, -1, 0]), "labels must be in"),
])
def test_bad_tensors_are_named(x, y, match):
    with pytest.raises(ValueError, match=match):
        Episodes(x, y, ways=1, shots=1, queries=1)


def test_from_tensor_files_with_a_split(tmp_path):
    x, y = _data(sizes=(6,) * 10)
    names = np.array([f"k{i}" for i in range(10)])
    np.savez(tmp_path / "d.npz", x=x.numpy(), y=y.numpy(), class_names=names)
    torch.save({"x": x, "y": y}, tmp_path / "d.pt")
    a = Episodes.from_tensors(tmp_path / "d.npz", ways=2, shots=1, queries=2, split="test")
    tr, va, te = ml.tasks.split_classes(list(names))
    assert a.class_names == te and a.input_shape == (5,)
    b = Episodes.from_tensors(tmp_path / "d.pt", ways=3, shots=2, queries=2)
    assert b.num_classes == 10 and b.class_names[0] == "0"
    np.savez(tmp_path / "bad.npz", x=x.numpy())
    with pytest.raises(ValueError, match=r"lacks \['y'\]"):
        Episodes.from_tensors(tmp_path / "bad.npz")
    (tmp_path / "x.csv").write_text("1")
    with pytest.raises(ValueError, match="must be .npz or .pt"):
        Episodes.from_tensors(tmp_path / "x.csv")
    with pytest.raises(ValueError, match="does not exist"):
        Episodes.from_tensors(tmp_path / "missing.npz")


def test_tensor_labels_with_gaps_name_the_classes_by_value(tmp_path):
    x, y = _data(sizes=(6,) * 8)
    np.savez(tmp_path / "gaps.npz", x=x.numpy(), y=(10 * y).numpy())
    fam = Episodes.from_tensors(tmp_path / "gaps.npz", ways=2, shots=1, queries=2)
    assert fam.class_names == [str(10 * k) for k in range(8)]
    assert fam.num_classes == 8 and fam.num_examples == 48
    split = Episodes.from_tensors(tmp_path / "gaps.npz", ways=2, shots=1, queries=2,
                                  split="test", fractions=(0.5, 0.0, 0.5))
    assert split.class_names == ml.tasks.split_classes(fam.class_names, (0.5, 0.0, 0.5))[2]
    np.savez(tmp_path / "plain.npz", x=x.numpy(), y=y.numpy())   # 0..K-1: unchanged names
    assert Episodes.from_tensors(tmp_path / "plain.npz", ways=2, shots=1,
                                 queries=2).class_names == \
        [str(k) for k in range(8)]


def test_dataset_labels_with_gaps_name_the_classes_by_value():
    # as from_tensors: 0, 10, 20, ... are 8 classes named by value, not 71 with 63 empty
    x, y = _data(sizes=(6,) * 8)
    pairs = list(zip(x, (10 * y).tolist()))
    fam = Episodes.from_dataset(pairs, ways=2, shots=1, queries=2)
    assert fam.class_names == [str(10 * k) for k in range(8)]
    assert fam.num_classes == 8 and fam.num_examples == 48
    batch = fam.sample(3, generator=torch.Generator().manual_seed(0))
    assert batch.support_y.max() < 2 and batch.query_y.max() < 2


def test_from_dataset_tensors_and_pil_images():
    class Pairs(torch.utils.data.Dataset):
        def __init__(self, items):
            self.items = items

        def __len__(self):
            return len(self.items)

        def __getitem__(self, i):
            return self.items[i]

    x, y = _data(sizes=(4, 4, 4))
    fam = Episodes.from_dataset(Pairs(list(zip(x, y.tolist()))), ways=3, shots=1, queries=2)
    assert fam.input_shape == (5,) and fam.num_examples == 12
    ims = [(Image.fromarray(np.full((10, 14), 40 * k, np.uint8)), k) for k in range(3)
           for _ in range(3)]
    fam = Episodes.from_dataset(Pairs(ims), ways=2, shots=1, queries=1, image_size=8)
    b = fam.sample(2)
    assert fam.input_shape == (1, 8, 8) and b.support_x.dtype == torch.float32
    with pytest.raises(ValueError, match="item 0 has shape"):
        Episodes.from_dataset(Pairs([(torch.zeros(3), 0), (torch.zeros(4), 1)]))
    with pytest.raises(ValueError, match="empty"):
        Episodes.from_dataset(Pairs([]))
    with pytest.raises(ValueError, match=r"must be \(x, label\)"):
        Episodes.from_dataset(Pairs([torch.zeros(3)]))


def test_every_family_satisfies_the_protocol(omniglot_root, fashion_mnist_root, tmp_path):
    table = tmp_path / "t.csv"
    table.write_text("text,label\n" + "".join(f"sentence {i},c{i % 3}\n" for i in range(30)))
    fams = [ml.tasks.Sinusoid(), ml.tasks.Omniglot(omniglot_root, split="evaluation"),
            ml.tasks.Shifted(ml.tasks.Omniglot(omniglot_root, split="evaluation"), 1),
            ml.tasks.FashionMNIST(fashion_mnist_root, classes=range(5)),
            ml.tasks.WordNet(split="test", ways=5, shots=2, queries=3),
            ml.tasks.TextTable(table, ways=2, shots=1, queries=1),
            Episodes(*_data(), ways=2, shots=1, queries=1)]
    for fam in fams:
        assert isinstance(fam, TaskFamily), type(fam).__name__
        assert fam.with_shots(2, 3).shots == 2
        b = fam.sample(2, torch.Generator().manual_seed(0))
        assert tuple(b.support_x.shape[2:]) == tuple(fam.input_shape)
    sh = fams[2].with_shots(2)
    assert isinstance(sh, ml.tasks.Shifted) and sh.max_shift == 1 and sh.class_names[0]


def test_from_a_hugging_face_dataset():
    datasets = pytest.importorskip("datasets")
    ims = [Image.fromarray(np.full((12, 12), 30 * k, np.uint8)) for k in range(4) for _ in range(3)]
    ds = datasets.Dataset.from_dict(
        {"img": ims, "lab": [k for k in range(4) for _ in range(3)]},
        features=datasets.Features({"img": datasets.Image(),
                                    "lab": datasets.ClassLabel(names=list("wxyz"))}))
    fam = Episodes.from_dataset(ds, ways=2, shots=1, queries=2, image_column="img",
                                label_column="lab", image_size=12)
    assert fam.class_names == list("wxyz") and fam.input_shape == (1, 12, 12)
    x, y = fam.sample_flat(6, torch.Generator().manual_seed(0))
    torch.testing.assert_close(x[:, 0, 0, 0], (30 * y).float().div(255))


def test_a_split_with_fewer_classes_than_ways_names_the_split(tmp_path):
    x = np.zeros((72, 8), np.float32)
    np.savez(tmp_path / "t.npz", x=x, y=np.repeat(np.arange(12), 6))
    with pytest.raises(ValueError, match=r"ways=5 exceeds the 2 classes of split 'test' \(2 of "
                                         r"the 12 classes, by split fractions \[0\.7, 0\.1, "
                                         r"0\.2\] \(train, val, test\)\): lower ways"):
        Episodes.from_tensors(tmp_path / "t.npz", ways=5, shots=1, queries=2, split="test")
    assert Episodes.from_tensors(tmp_path / "t.npz", ways=2, shots=1, queries=2,
                                 split="test").num_classes == 2


def test_from_dataset_scales_uint8_pixels_and_keeps_other_integers_as_numbers():
    import torch

    from metaloop.tasks import Episodes

    pix = [(torch.full((1, 4, 4), 255, dtype=torch.uint8), i % 2) for i in range(8)]
    counts = [(torch.full((1, 4, 4), 255, dtype=torch.int16), i % 2) for i in range(8)]
    a = Episodes.from_dataset(pix, ways=2, shots=1, queries=1)
    b = Episodes.from_dataset(counts, ways=2, shots=1, queries=1)
    g = torch.Generator().manual_seed(0)
    assert a.sample(1, g).support_x.max().item() == 1.0
    assert b.sample(1, torch.Generator().manual_seed(0)).support_x.max().item() == 255.0


def test_the_task_stream_depends_only_on_the_classes_in_use(tmp_path):
    # a class left out (or added to a folder since a run stored its split) changes no task:
    # the sampler's table was as wide as the largest class of the whole data
    x, y = _data(sizes=(6, 7, 6))
    alone = Episodes(x, y, ways=2, shots=1, queries=2, class_names=["a", "b", "c"])
    x2, y2 = torch.cat([x, torch.randn(15, 5)]), torch.cat([y, torch.full((15,), 3)])
    within = Episodes(x2, y2, ways=2, shots=1, queries=2, class_names=["a", "b", "c", "big"],
                      classes=["a", "b", "c"])
    for fam in (within, Episodes(x2, y2, 2, 1, 2, ["a", "b", "c", "big"]).subset(["a", "b", "c"])):
        a, b = (f.sample(20, torch.Generator().manual_seed(3)) for f in (alone, fam))
        for f in ("support_x", "query_x", "classes"):
            assert torch.equal(getattr(a, f), getattr(b, f)), f

    root = tmp_path / "folder"
    for k, n in enumerate((6, 7, 6)):
        (root / f"c{k}").mkdir(parents=True)
        for i in range(n):
            Image.fromarray(np.full((8, 8), 30 * k + i, np.uint8)).save(root / f"c{k}/{i}.png")
    kw = {"ways": 2, "shots": 1, "queries": 2, "image_size": 8, "classes": ["c0", "c1", "c2"],
          "cache_dir": tmp_path / "cache"}
    before = Episodes.from_folder(root, **kw).sample(20, torch.Generator().manual_seed(3))
    (root / "new").mkdir()
    for i in range(15):
        Image.fromarray(np.full((8, 8), 200 + i, np.uint8)).save(root / f"new/{i}.png")
    after = Episodes.from_folder(root, **kw).sample(20, torch.Generator().manual_seed(3))
    assert torch.equal(before.support_x, after.support_x)
    assert torch.equal(before.query_x, after.query_x)


def test_same_sampler_as_fashion_mnist_on_a_subset_of_uneven_classes(monkeypatch):
    # FashionMNIST(classes=...) and Episodes(classes=...) on the same images: the same tasks,
    # also when a class left out is the largest
    import metaloop.tasks.fashion_mnist as fm

    sizes = (9, 6, 7, 30, 8)
    y = torch.cat([torch.full((n,), k) for k, n in enumerate(sizes)])
    y = y[torch.randperm(len(y), generator=torch.Generator().manual_seed(0))]   # interleaved
    x = torch.arange(len(y), dtype=torch.uint8)[:, None, None].expand(-1, 28, 28).clone()
    monkeypatch.setattr(fm, "load_fashion_mnist", lambda root, split: (x, y))
    fam = fm.FashionMNIST(None, classes=(2, 0, 4), ways=2, shots=2, queries=3)
    ep = Episodes(x, y, ways=2, shots=2, queries=3, classes=["2", "0", "4"])
    a, b = (f.sample(30, torch.Generator().manual_seed(5)) for f in (fam, ep))
    for f in ("support_x", "support_y", "query_x", "query_y", "classes"):
        assert torch.equal(getattr(a, f), getattr(b, f)), f


def test_a_tensor_file_path_that_exists_but_is_no_file_is_named_as_such(tmp_path):
    """A FIFO or a device given as the tensor file was said not to exist."""
    import os

    from metaloop.tasks.episodes import read_tensor_file
    fifo = tmp_path / "p.npz"
    os.mkfifo(fifo)
    with pytest.raises(ValueError, match=r"p.npz exists but is not a regular file"):
        read_tensor_file(fifo)
    with pytest.raises(ValueError, match=r"tensor file .*gone.npz does not exist"):
        read_tensor_file(tmp_path / "gone.npz")
    with pytest.raises(ValueError, match=r"is a folder"):
        read_tensor_file(tmp_path)


@pytest.mark.parametrize("on_meta, named", [("x", "x is"), ("y", "y is"), ("xy", "x and y are")])
def test_tensors_on_the_meta_device_are_refused_when_built(on_meta, named):
    """Tensors on the meta device (shapes, no values) failed with torch's "Tensor.item()
    cannot be called on meta tensors"."""
    x, y = _data()
    x, y = (x.to("meta") if "x" in on_meta else x), (y.to("meta") if "y" in on_meta else y)
    with pytest.raises(ValueError, match=rf"^Episodes {named} on the meta device: shapes "
                                         rf"without values"):
        Episodes(x, y, ways=2, shots=2, queries=3)

"""A numeric feature table saved as CSV given as ``family.name = "tensors"``: the error says
how to write the ``.npz`` the loader reads (the snippet it gives works as written) and that
CSV / TSV / JSONL files are read as text tables (``family.name = "table"``)."""

import re

import numpy as np
import pytest

from metaloop.tasks import Episodes
from metaloop.tasks.episodes import read_tensor_file


def _snippet(message: str) -> str:
    return re.search(r"no header line: (d = np\.loadtxt.*?\)\)); skiprows", message).group(1)


def test_a_numeric_csv_is_refused_with_a_working_recipe(tmp_path, monkeypatch):
    rng = np.random.default_rng(0)
    rows = np.concatenate([rng.normal(size=(40, 3)), np.repeat(np.arange(4), 10)[:, None]], 1)
    np.savetxt(tmp_path / "feats.csv", rows, delimiter=",")
    with pytest.raises(ValueError) as e:
        Episodes.from_tensors(tmp_path / "feats.csv", ways=2, shots=1, queries=2)
    text = str(e.value)
    assert text.startswith(f"tensor file {tmp_path / 'feats.csv'} must be .npz or .pt, got "
                           f"'.csv'; to make one from a numeric table, in Python: "
                           f"np.savez('feats.npz', x=features, y=labels), with x = ")
    assert "float32 [N, D]" in text and "integer class labels [N]" in text
    assert 'read as tables of texts, not numbers (family.name = "table"' in text
    monkeypatch.chdir(tmp_path)
    exec(_snippet(text), {"np": np})            # the advice, as written
    fam = Episodes.from_tensors(tmp_path / "feats.npz", ways=2, shots=1, queries=2)
    assert fam.num_classes == 4 and fam.input_shape == (3,)


def test_a_tsv_of_queries_gets_the_recipe_without_labels(tmp_path, monkeypatch):
    np.savetxt(tmp_path / "new.tsv", np.ones((5, 3)), delimiter="\t")
    with pytest.raises(ValueError) as e:
        read_tensor_file(tmp_path / "new.tsv", labels=False)
    text = str(e.value)
    assert "np.savez('new.npz', x=features), with x = " in text and "y=" not in text
    monkeypatch.chdir(tmp_path)
    exec(_snippet(text), {"np": np})
    x, y, _ = read_tensor_file(tmp_path / "new.npz", labels=False)
    assert x.shape == (5, 3) and y is None


def test_another_suffix_gets_the_recipe_alone(tmp_path):
    (tmp_path / "feats.h5").write_bytes(b"1")
    with pytest.raises(ValueError, match=r"got '\.h5'; to make one from a numeric table") as e:
        read_tensor_file(tmp_path / "feats.h5")
    assert "table" not in str(e.value).split("numeric table", 1)[1]

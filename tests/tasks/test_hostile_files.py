"""Data files from strangers: deeply nested JSON lines, ``.npz`` arrays larger than memory,
and ``.pt`` pickles that name code are refused by name, before anything is decoded or run."""

import json
import os
import pickle
import warnings

import numpy as np
import pytest
import torch

import metaloop as ml
from metaloop.data import folder
from metaloop.tasks.text_table import read_text_table


def test_deeply_nested_jsonl_line_is_named_with_its_line(tmp_path):
    p = tmp_path / "t.jsonl"
    p.write_text(json.dumps({"text": "a", "label": "x"}) + "\n"
                 + "[" * 200_000 + "]" * 200_000 + "\n")
    with pytest.raises(ValueError, match=r"text table .*t\.jsonl: line 2 nests JSON deeper "
                                         r"than it can be read"):
        read_text_table(p)


def _npz(tmp_path, n=2000):
    p = tmp_path / "d.npz"
    np.savez_compressed(p, x=np.zeros((n, 4), np.float32), y=np.arange(n) % 4)
    return p


def test_npz_array_larger_than_memory_is_refused_unread(tmp_path, monkeypatch):
    p = _npz(tmp_path)                                  # x: 32000 bytes, a few KB on disk
    monkeypatch.setattr(folder, "_available_memory", lambda: 20_000)
    loads = []
    monkeypatch.setattr(np, "load", lambda *a, **k: loads.append(a))
    with pytest.raises(ValueError, match=r"tensor file .*d\.npz: its array 'x' of shape "
                                         r"\(2000, 4\) \(float32\) takes 32 kB, more than "
                                         r"the 20 kB of memory available"):
        ml.tasks.Episodes.from_tensors(p, ways=2, shots=1, queries=1)
    assert loads == []                                  # refused before np.load


def test_npz_arrays_together_larger_than_memory_are_refused(tmp_path, monkeypatch):
    p = _npz(tmp_path)                                  # x 32000 + y 16000 bytes
    monkeypatch.setattr(folder, "_available_memory", lambda: 40_000)
    with pytest.raises(ValueError, match=r"d\.npz: its arrays up to 'y' .* take 48 kB"):
        ml.tasks.Episodes.from_tensors(p, ways=2, shots=1, queries=1)


def test_npz_that_fits_still_loads(tmp_path):
    p = tmp_path / "ok.npz"
    rng = np.random.default_rng(0)
    np.savez(p, x=rng.normal(size=(40, 4)).astype(np.float32), y=np.arange(40) % 4)
    assert ml.tasks.Episodes.from_tensors(p, ways=2, shots=1, queries=1).num_classes == 4


class _Payload:
    def __reduce__(self):
        return (print, ("PAYLOAD-RAN",))


def test_pt_with_a_code_payload_is_refused_without_running_it(tmp_path, capsys):
    p = tmp_path / "evil.pt"
    torch.save({"x": torch.zeros(8, 4), "y": torch.arange(8) % 2, "z": _Payload()}, p)
    with pytest.raises(ValueError) as info:
        ml.tasks.Episodes.from_tensors(p, ways=2, shots=1, queries=1)
    msg = str(info.value)
    assert str(p) in msg and "is refused: loading it would run code" in msg
    assert "Unsupported global: GLOBAL print" in msg       # torch's own reason, kept
    assert "weights_only" not in msg and "arbitrary code" not in msg
    assert "add_safe_globals" not in msg
    assert "PAYLOAD-RAN" not in capsys.readouterr().out


def test_plain_pickle_pt_is_refused_by_name_without_a_warning(tmp_path, capsys):
    p = tmp_path / "raw.pt"
    with open(p, "wb") as f:
        pickle.dump({"x": _Payload()}, f, protocol=4)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        with pytest.raises(ValueError, match=r"tensor file .*raw\.pt is not a torch save of "
                                             r"tensors"):
            ml.tasks.Episodes.from_tensors(p, ways=2, shots=1, queries=1)
    assert "PAYLOAD-RAN" not in capsys.readouterr().out
    assert os.path.exists(p)


def test_an_npz_header_of_format_3_is_size_checked_too(tmp_path, monkeypatch):
    """A version-3.0 header (UTF-8 field names) skipped the size check and failed with
    numpy's MemoryError ("Unable to allocate 72.8 TiB")."""
    import io
    import zipfile

    import numpy as np

    from metaloop.data import folder
    from metaloop.tasks.episodes import Episodes

    buf = io.BytesIO()
    np.lib.format.write_array_header_2_0(buf, {"descr": "<f8", "fortran_order": False,
                                               "shape": (10 ** 7, 10 ** 6)})
    header = bytearray(buf.getvalue())
    header[6:8] = b"\x03\x00"                                    # the magic's version: 3.0
    with zipfile.ZipFile(tmp_path / "v3.npz", "w") as z:
        z.writestr("x.npy", bytes(header))
        z.writestr("y.npy", _npy(np.zeros(4, np.int64)))
    monkeypatch.setattr(folder, "_available_memory", lambda: 10 ** 9)
    with pytest.raises(ValueError, match=r"v3\.npz: its array 'x' of shape "
                                         r"\(10000000, 1000000\) \(float64\) takes"):
        Episodes.from_tensors(tmp_path / "v3.npz", ways=2, shots=1, queries=1)


def _npy(a) -> bytes:
    import io

    import numpy as np

    buf = io.BytesIO()
    np.save(buf, a)
    return buf.getvalue()


@pytest.mark.parametrize("kind", ["numpy", "dataset"])
def test_a_pt_of_numpy_arrays_or_a_dataset_is_told_how_to_save_tensors(tmp_path, kind):
    """Refused as "loading it would run code": true of any pickle, but the file was a user's
    numpy arrays or TensorDataset, and the fix is to save tensors."""
    import numpy as np
    import torch

    from metaloop.tasks.episodes import Episodes

    obj = ({"x": np.zeros((4, 2), np.float32), "y": np.arange(4)} if kind == "numpy" else
           torch.utils.data.TensorDataset(torch.zeros(4, 2), torch.arange(4)))
    torch.save(obj, tmp_path / "mine.pt")
    with pytest.raises(ValueError, match=r"mine\.pt holds numpy arrays or torch objects other "
                                         r"than tensors .*torch\.from_numpy\(x\).*np\.savez"):
        Episodes.from_tensors(tmp_path / "mine.pt", ways=2, shots=1, queries=1)

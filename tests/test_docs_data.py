"""The Python examples of docs/data.md run as written (each in a fresh folder)."""

import re
from pathlib import Path

import pytest

DOC = Path(__file__).resolve().parents[1] / "docs" / "data.md"
BLOCKS = re.findall(r"```python\n(.*?)```", DOC.read_text(), re.DOTALL)


def test_the_guide_has_examples():
    assert len(BLOCKS) >= 3


@pytest.mark.parametrize("i", range(len(BLOCKS)))
def test_example_runs(i, tmp_path, monkeypatch, capsys):
    import torch

    monkeypatch.chdir(tmp_path)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        exec(compile(BLOCKS[i], f"docs/data.md example {i + 1}", "exec"), {"__name__": "doc"})
    finally:
        torch.set_num_threads(threads)
    assert capsys.readouterr().out.strip()          # every example prints what it shows

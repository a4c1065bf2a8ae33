"""The Python examples of docs/data.md run as written (each in a fresh folder), and a print
whose comment shows its output (``print(x.shape)  # (360, 32)``) prints those values."""

import re
from pathlib import Path

import pytest

DOC = Path(__file__).resolve().parents[1] / "docs" / "data.md"
BLOCKS = re.findall(r"```python\n(.*?)```", DOC.read_text(), re.DOTALL)
VALUES = re.compile(r"-?\d+(?:\.\d+)?|'[^']*'")
"""The numbers and quoted names of a line: what a shown output and a printed line share,
whichever way each writes a shape (``(360, 32)``, ``[4, 15]``, ``torch.Size([4, 15])``)."""


def shown_outputs(block: str) -> list[list[str]]:
    """The values each print shows in its trailing comment, where that comment reads as
    output (``print(x.shape)  # (360, 32)``, ``print(names)  # ['a', 'b']``)."""
    return [VALUES.findall(m) for m in re.findall(r"^print\(.*\)\s+#\s*([\[(].*)$", block,
                                                   re.MULTILINE)]


def test_the_guide_has_examples():
    assert len(BLOCKS) >= 3
    assert sum(len(shown_outputs(b)) for b in BLOCKS) >= 3


def test_a_shown_output_is_read_as_its_values():
    assert shown_outputs("print(x.shape, y.shape)   # (360, 32) (360,)\nprint(a)  # no") == [
        ["360", "32", "360"]]
    assert VALUES.findall("torch.Size([360, 32]) torch.Size([360])") == ["360", "32", "360"]


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
    out = capsys.readouterr().out
    assert out.strip()                              # every example prints what it shows
    printed = [VALUES.findall(line) for line in out.splitlines()]
    for shown in shown_outputs(BLOCKS[i]):
        assert shown in printed, f"example {i + 1} shows {shown}, printed:\n{out}"

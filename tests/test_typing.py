"""metaloop's type information: the package ships ``py.typed`` (PEP 561), type-checks under
mypy with the project's configuration (``[tool.mypy]`` in pyproject.toml), and code that
calls its public API is checked against the API's signatures (``ml.train(...)`` and
``ml.evaluate(...)`` included, which call functions through a module).
"""

from __future__ import annotations

import re
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

pytest.importorskip("mypy")

REPO = Path(__file__).resolve().parents[1]
PACKAGE = REPO / "src" / "metaloop"
ERROR = re.compile(r"^(?P<path>[^:\n]+):(?P<line>\d+): error: (?P<text>.*?)"
                   r"(?:  \[(?P<code>[a-z-]+)\])?$", re.MULTILINE)


def _mypy(*args: str, cwd: Path) -> tuple[int, str, list[dict]]:
    """``python -m mypy *args`` run in ``cwd``: its exit status, output and errors."""
    done = subprocess.run([sys.executable, "-m", "mypy", "--no-color-output",
                           "--no-error-summary", *args], cwd=cwd, capture_output=True,
                          text=True, timeout=600)
    out = done.stdout + done.stderr
    return done.returncode, out, [m.groupdict() for m in ERROR.finditer(out)]


def test_the_package_ships_its_type_information():
    assert (PACKAGE / "py.typed").is_file()


@pytest.mark.slow          # a cold mypy run over the package: about 40 s on 2 CPU cores
def test_the_package_type_checks_with_the_project_configuration(tmp_path):
    """No mypy error, note or warning anywhere in the package."""
    code, out, errors = _mypy("--cache-dir", str(tmp_path / "cache"), cwd=REPO)
    assert (code, errors, out.strip()) == (0, [], ""), out[-6000:]


USER_CODE = '''
    import torch

    import metaloop as ml

    family = ml.tasks.Omniglot("data", split="train", ways=5, shots=1, queries=15)
    model = ml.models.Conv4(in_channels=1, hidden=64, out_dim=5)
    learner = ml.meta.MAML(model, inner_lr=0.4, inner_steps=1, first_order=False, loss="ce")
    batch = family.sample(4, generator=torch.Generator().manual_seed(0))
    loss, metrics = learner.meta_loss(batch)
    result: dict = ml.train(learner, family, iterations=10, meta_batch=4)
    scores: dict = ml.evaluate(learner, family, tasks=100)
    print(loss.item(), metrics, result["iteration"], scores)
'''
WRONG_CODE = '''
    import metaloop as ml

    family = ml.tasks.Omniglot("data", ways="5")
    model = ml.models.Conv4(in_channels=1, hidden=64, out_dim=5)
    learner = ml.meta.MAML(model, inner_lr=0.4)
    ml.train(learner, family, iterations="10", meta_batch=4)
    ml.evaluate(learner, family, tasks=1.5)
    n: int = ml.train(learner, family, iterations=10, meta_batch=4)
'''


def test_user_code_is_checked_against_the_public_api(tmp_path):
    """A user's script type-checks where it calls the API as documented, and mypy names each
    wrong argument (a str or float where an int is needed) and a wrong use of a result; had
    the installed package no ``py.typed``, mypy would refuse to read it at all."""
    (tmp_path / "right.py").write_text(textwrap.dedent(USER_CODE))
    (tmp_path / "wrong.py").write_text(textwrap.dedent(WRONG_CODE))
    _, out, errors = _mypy("--cache-dir", str(tmp_path / "cache"), "--python-version",
                           "3.10", "right.py", "wrong.py", cwd=tmp_path)
    assert [e for e in errors if e["path"] != "wrong.py"] == [], out[-3000:]
    found = sorted((int(e["line"]), e["code"]) for e in errors)
    assert found == [(4, "arg-type"), (7, "arg-type"), (8, "arg-type"), (9, "assignment")], out
    text = "\n".join(e["text"] for e in errors)
    assert 'Argument "ways" to "Omniglot" has incompatible type "str"; expected "int"' in text
    assert 'Argument "iterations"' in text and 'Argument "tasks"' in text, text

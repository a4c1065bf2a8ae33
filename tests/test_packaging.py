"""The distributions, built as pip builds them (an sdist, then a wheel from the unpacked sdist).

The sdist is the whole project: the package and what its tests, the docs build and the
benchmarks read (``MANIFEST.in``). The wheel is the package alone: every file under
``src/metaloop`` (the modules and the configs the commands read through
``importlib.resources``), and the ``metaloop`` command.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import tarfile
import zipfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
# the project's own files; the other top-level entries of a checkout are outputs or caches
PROJECT = ["pyproject.toml", "README.md", "MANIFEST.in", "CHANGELOG.md", "mkdocs.yml", "src",
           "tests", "docs", "configs", "benchmarks", ".ci"]
# what the sdist must hold besides the package
SDIST_FOLDERS = ["tests", "docs", "configs", "benchmarks", ".ci"]
SDIST_FILES = ["pyproject.toml", "README.md", "CHANGELOG.md", "mkdocs.yml"]
IGNORE = shutil.ignore_patterns("__pycache__", "*.py[cod]", "*.egg-info", ".metaloop-cache",
                                "build", "dist")


def _files(root: Path, under: str) -> set[str]:
    base = root / under
    return {p.relative_to(root).as_posix() for p in base.rglob("*") if p.is_file()}


def _build(kind: str, project: Path, out: Path) -> Path:
    """``setuptools.build_meta.build_<kind>`` run in ``project``, as pip's build runs it."""
    code = (f"from setuptools import build_meta as b; "
            f"print('BUILT', b.build_{kind}({str(out)!r}))")
    done = subprocess.run([sys.executable, "-c", code], cwd=project, capture_output=True,
                          text=True, timeout=300)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-4000:]
    name = [ln for ln in done.stdout.splitlines() if ln.startswith("BUILT ")][-1].split()[-1]
    return out / name


@pytest.fixture(scope="module")
def dists(tmp_path_factory):
    """The project copied without caches, its sdist, and the wheel built from the sdist."""
    pytest.importorskip("setuptools", minversion="68")      # the build backend it names
    tmp = tmp_path_factory.mktemp("packaging")
    project = tmp / "project"
    project.mkdir()
    for name in PROJECT:
        src = REPO / name
        if src.is_dir():
            shutil.copytree(src, project / name, ignore=IGNORE)
        elif src.is_file():
            shutil.copy2(src, project / name)
    out = tmp / "dist"
    sdist = _build("sdist", project, out)
    with tarfile.open(sdist) as tar:   # the "data" filter where Python has it (3.10.12+)
        safe = {"filter": "data"} if hasattr(tarfile, "data_filter") else {}
        tar.extractall(tmp / "unpacked", **safe)
    (top,) = (tmp / "unpacked").iterdir()
    wheel = _build("wheel", top, out)
    return project, top, wheel


def test_the_sdist_holds_what_the_tests_docs_and_benchmarks_read(dists):
    project, unpacked, _ = dists
    want = set(SDIST_FILES) | _files(project, "src/metaloop")
    for folder in SDIST_FOLDERS:
        want |= _files(project, folder)
    assert "tests/conftest.py" in want and "configs/folder_example.toml" in want
    have = {p.relative_to(unpacked).as_posix() for p in unpacked.rglob("*") if p.is_file()}
    assert sorted(want - have) == []
    assert not [f for f in have if f.endswith((".pyc", ".pyo")) or ".metaloop-cache" in f]


def test_the_wheel_is_the_package_with_its_configs_and_the_command(dists):
    project, _, wheel = dists
    with zipfile.ZipFile(wheel) as zf:
        names = zf.namelist()
        info = next(n for n in names if n.endswith(".dist-info/entry_points.txt"))
        entry_points = zf.read(info).decode()
    package = {n for n in names if ".dist-info/" not in n}
    want = {f.removeprefix("src/") for f in _files(project, "src/metaloop")}
    assert {"metaloop/configs/compare_sinusoid.toml",
            "metaloop/configs/compare_omniglot.toml"} <= want
    assert sorted(want - package) == [] and sorted(package - want) == []
    assert "metaloop = metaloop.cli.main:main" in entry_points

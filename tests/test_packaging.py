"""The distributions, built as pip builds them (an sdist, then a wheel from the unpacked sdist).

The sdist is the whole project: the package and what its tests, the docs build and the
benchmarks read (``MANIFEST.in``). The wheel is the package alone: every file under
``src/metaloop`` (the modules and the configs the commands read through
``importlib.resources``: ``metaloop compare --print-config``'s and ``metaloop train
--example-config``'s), the repository's ``configs/`` as ``metaloop/shipped_configs/`` (what
``--config configs/NAME.toml`` falls back to where no such file is), and the ``metaloop``
command. Installed, the package runs without the
checkout: the example config it prints is accepted for a folder of images, and the Omniglot
search path names no folder of a checkout.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tarfile
import zipfile
from pathlib import Path

import pytest

from metaloop import config as _config

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests"))
from conftest import write_image_folder  # noqa: E402

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
    assert {"tests/conftest.py", "configs/omniglot_maml_5w1s_cpu.toml",
            "src/metaloop/configs/folder_example.toml"} <= want
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
    shipped = {f"metaloop/shipped_configs/{p.name}" for p in (project / "configs").glob("*.toml")}
    assert len(shipped) > 100 and "metaloop/shipped_configs/omniglot_maml_5w1s_cpu.toml" in shipped
    want |= shipped
    assert {"metaloop/configs/compare_sinusoid.toml", "metaloop/configs/compare_omniglot.toml",
            "metaloop/configs/folder_example.toml", "metaloop/py.typed"} <= want
    assert sorted(want - package) == [] and sorted(package - want) == []
    assert "metaloop = metaloop.cli.main:main" in entry_points


def test_the_wheel_has_the_package_version(dists):
    _, _, wheel = dists
    import metaloop
    assert wheel.name.startswith(f"metaloop-{metaloop.__version__}-")
    with zipfile.ZipFile(wheel) as zf:
        meta = zf.read(next(n for n in zf.namelist() if n.endswith(".dist-info/METADATA")))
    assert f"\nVersion: {metaloop.__version__}\n" in meta.decode()


def test_the_shipped_configs_are_a_link_to_the_repositorys_configs():
    """``src/metaloop/shipped_configs`` is a link to ``configs/`` (copied into the wheel as
    package data), so an editable install stays a plain path entry that mypy can follow."""
    link = REPO / "src" / "metaloop" / "shipped_configs"
    assert link.is_symlink() and link.resolve() == (REPO / "configs").resolve()


@pytest.fixture(scope="module")
def installed(dists, tmp_path_factory):
    """``run(*args)``: ``python *args`` in an empty folder, importing metaloop from the wheel
    unpacked into a ``site-packages`` folder of its own (first on the path), as pip
    installs it."""
    _, _, wheel = dists
    tmp = tmp_path_factory.mktemp("installed")
    site = tmp / "venv" / "lib" / "site-packages"
    with zipfile.ZipFile(wheel) as zf:
        zf.extractall(site)
    work = tmp / "work"
    work.mkdir()
    env = {**os.environ, "PYTHONPATH": str(site), "PYTHONDONTWRITEBYTECODE": "1",
           "OMP_NUM_THREADS": "1"}

    def run(*args: str, **more_env: str) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, *args], cwd=work, env={**env, **more_env},
                              capture_output=True, text=True, timeout=300)
    where = run("-c", "import metaloop; print(metaloop.__file__)")
    assert where.stdout.strip() == str(site / "metaloop" / "__init__.py"), where
    return run, work


def test_the_installed_example_config_runs_on_a_folder(installed):
    """``metaloop train --example-config`` prints the shipped file, which ``--print-config``
    accepts once its family.root names a folder of images."""
    run, work = installed
    printed = run("-m", "metaloop", "train", "--example-config")
    assert printed.returncode == 0 and printed.stderr == "", printed.stderr
    shipped = (REPO / "src" / "metaloop" / "configs" / "folder_example.toml").read_text()
    assert printed.stdout == shipped
    images = write_image_folder(work / "images", classes=10, per_class=3, mixed=False)
    mine = work / "my_folder.toml"
    mine.write_text(printed.stdout.replace('root = "data/my_images"', f'root = "{images}"'))
    resolved = run("-m", "metaloop", "train", "--print-config", "--config", str(mine))
    assert resolved.returncode == 0 and resolved.stderr == "", resolved.stderr
    cfg = _config.tomllib.loads(resolved.stdout)
    assert (cfg["family"]["name"], cfg["family"]["root"]) == ("folder", str(images))
    assert cfg["method"]["name"] == "r2d2" and cfg["eval"]["split"] == "test"


def test_the_installed_omniglot_search_path_names_no_checkout_folder(installed):
    """From a checkout, the shared data beside it is searched last; an installed copy has no
    such folder (its path would be computed from site-packages)."""
    run, work = installed
    nowhere = {"METALOOP_DATA": str(work / "data"), "HOME": str(work / "home")}
    code = ("from metaloop.data import omniglot as og; print(og.SHARED_DIR); "
            "print(*og.search_dirs(), sep='|')")
    found = run("-c", code, **nowhere)
    assert found.returncode == 0, found.stderr
    cache = work / "home" / ".cache" / "metaloop" / "omniglot"
    assert found.stdout.splitlines() == ["None", f"{work / 'data' / 'omniglot'}|{cache}"]
    missing = run("-c", "from metaloop.data.omniglot import load_omniglot_images as load; "
                        "load(split='evaluation')", **nowhere)
    (last,) = missing.stderr.splitlines()[-1:]
    assert last.startswith("FileNotFoundError: Omniglot 'evaluation' images not found"), last
    assert str(Path("shared", "data", "omniglot")) not in last and str(work / "data") in last


def test_the_installed_package_reads_the_configs_the_docs_name(installed):
    """``--config configs/NAME.toml`` (as the docs write it), ``NAME.toml`` or ``NAME`` with no
    such file in the working folder: the shipped copy, said on stderr; its ``extends`` reads
    the shipped neighbour. A name in neither place says where the named configs are."""
    run, work = installed
    site = Path(run("-c", "import metaloop; print(metaloop.__file__)").stdout.strip()).parent
    for given in ("configs/omniglot_maml_5w1s_cpu.toml", "omniglot_challenge_pilot28_6k_rot40_cpu"):
        r = run("-m", "metaloop", "train", "--print-config", "--config", given)
        assert r.returncode == 0, r.stderr
        (line,) = r.stderr.splitlines()
        name = Path(given).name.removesuffix(".toml") + ".toml"
        assert str(site / "shipped_configs" / name) in line, line
        want = _config.load(REPO / "configs" / name)
        assert _config.validate(_config.tomllib.loads(r.stdout)) == want
    r = run("-m", "metaloop", "train", "--print-config", "--config", "configs/omniglot_maml.toml")
    assert r.returncode == 2 and "shipped with metaloop" in r.stderr, r.stderr
    assert "did you mean" in r.stderr and str(site / "shipped_configs") in r.stderr

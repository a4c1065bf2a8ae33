"""The official runs of the Omniglot one-shot classification challenge (Lake et al. 2015).

The challenge's test set is distributed as ``all_runs.zip`` (``python/one-shot-classification``
in Lake's Omniglot repository): 20 folders ``run01`` ... ``run20``, each one 20-way
within-alphabet one-shot trial set with

* ``training/class01.png`` ... ``class20.png``: one drawing of each character;
* ``test/item01.png`` ... ``item20.png``: another drawing of each;
* ``class_labels.txt``: one line per test image, ``run01/test/item01.png
  run01/training/class07.png``, naming the training image of the same character.

:func:`read_lake_runs` reads that layout from an unpacked folder (all runs, or one run
folder) or from the zip itself (:func:`unpack_runs`); the images are decoded by the caller
(``metaloop eval --lake-runs``, :func:`metaloop.recipes.predict.score_lake_runs`).
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from pathlib import Path

from metaloop.data.images import is_image_name

__all__ = ["LABELS_FILE", "OFFICIAL_RUNS_SHA256", "OFFICIAL_ZIP_SHA256", "LakeRun",
           "read_lake_runs", "runs_digest", "unpack_runs"]

LABELS_FILE = "class_labels.txt"
# ``all_runs.zip`` as Lake's repository has it, and ``runs_digest`` of its 20 runs unpacked
OFFICIAL_ZIP_SHA256 = "437c1eeab0af8484112e1b4cc0f3d541ec727f7c47b9b202da738af9dfd6c325"
OFFICIAL_RUNS_SHA256 = "394ba5a35a940e8e90c3817ac853c8057cbd48ad14fba9730fa67d368b62db08"
# ``all_runs.zip`` holds under 1,000 entries of a few kB each: a zip of more members, or
# whose members declare more bytes together, is refused before anything is unpacked (a zip
# that inflates 1000-fold, a zip bomb, cannot fill the disk)
MAX_RUNS_MEMBERS = 10_000
MAX_RUNS_BYTES = 256 << 20


@dataclass(frozen=True)
class LakeRun:
    """One run: ``support[k]`` is the training drawing of class k, ``query[i]`` a test drawing
    of class ``labels[i]`` (files sorted by name, as Lake's scoring code sorts them)."""

    name: str
    support: tuple[Path, ...]
    query: tuple[Path, ...]
    labels: tuple[int, ...]


def unpack_runs(zip_path: str | os.PathLike) -> Path:
    """Lake's ``all_runs.zip`` (or any zip of run folders) unpacked once into the data cache,
    ``download_dir() / "lake_runs" / <its sha256's first 16 digits>``; returns that folder.

    The zip is unpacked into a temporary folder beside the target and renamed into place, so
    an interrupted unpack leaves nothing that a later call would take for the runs.

    Raises:
        ValueError: not a zip file, a corrupt member (nothing is left behind), a member
            that would land outside the folder, or more members than ``MAX_RUNS_MEMBERS``
            or members that declare more than ``MAX_RUNS_BYTES`` together (nothing is
            unpacked; ``zipfile`` writes no more of a member than it declares).
    """
    import io
    import shutil
    import tempfile
    import zipfile
    import zlib

    from metaloop.data.omniglot import download_dir

    zip_path = Path(zip_path)
    data = zip_path.read_bytes()
    target = download_dir() / "lake_runs" / hashlib.sha256(data).hexdigest()[:16]
    if target.is_dir():
        return target
    try:
        archive = zipfile.ZipFile(io.BytesIO(data))                  # the bytes hashed above
    except zipfile.BadZipFile as e:
        raise ValueError(f"{zip_path} is not a zip file: {e}") from e
    with archive:
        members = archive.infolist()
        if len(members) > MAX_RUNS_MEMBERS:
            raise ValueError(f"{zip_path} holds {len(members)} members, more than a zip of "
                             f"one-shot runs can ({MAX_RUNS_MEMBERS}; Lake's all_runs.zip "
                             f"holds under 1,000): not unpacked")
        total = sum(m.file_size for m in members)
        if total > MAX_RUNS_BYTES:
            big = max(members, key=lambda m: m.file_size)
            raise ValueError(f"{zip_path}: its members declare {total} bytes together "
                             f"(the largest, {big.filename!r}, {big.file_size}), more than a "
                             f"zip of one-shot runs can unpack to ({MAX_RUNS_BYTES} bytes; "
                             f"Lake's all_runs.zip's members are a few kB each): a damaged "
                             f"or hostile zip (a zip bomb?), not unpacked")
        for name in archive.namelist():
            if name.startswith(("/", "\\")) or ".." in Path(name).parts:
                raise ValueError(f"{zip_path}: member {name!r} would unpack outside its folder")
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(dir=target.parent, prefix=".unpacking-"))
        try:
            archive.extractall(tmp)
            os.replace(tmp, target)
        except (OSError, EOFError, zipfile.BadZipFile, zlib.error) as e:
            shutil.rmtree(tmp, ignore_errors=True)
            if not isinstance(e, OSError):
                raise ValueError(f"{zip_path} is corrupt: {e}") from e
            if not target.is_dir():  # else another process put the same runs there first
                raise
    return target


def read_lake_runs(root: str | os.PathLike) -> list[LakeRun]:
    """The runs under ``root``: a folder of run folders (``all_runs``) or one run folder, or
    a zip of them (Lake's ``all_runs.zip``, unpacked once by :func:`unpack_runs`; the zip
    may also hold them inside one folder, as ``zip -r all_runs.zip all_runs`` does).

    A run folder is one that holds ``class_labels.txt``. Each line's two paths are read by
    their last two parts (``test/item01.png``, ``training/class07.png``) inside the run
    folder, so the runs may sit anywhere.

    Returns:
        the runs, sorted by folder name.

    Raises:
        ValueError: naming the path: no run folder, a malformed line (not two paths), a test
            image listed twice or also as a training image (it would score itself), a listed
            image that does not exist, or an image in a run's ``training/`` or ``test/`` that
            ``class_labels.txt`` does not list (it would be left out of the run's classes or
            trials without a word).
    """
    root = Path(root)
    if root.is_file() and root.suffix.lower() == ".zip":
        given, root = root, unpack_runs(root)
        inner = [d for d in root.iterdir() if d.is_dir() and not d.name.startswith((".", "__"))]
        if not _has_runs(root) and len(inner) == 1:   # a zip of the folder: all_runs/run01/...
            root = inner[0]
        if not _has_runs(root):
            raise ValueError(f"{given} holds no one-shot run: a run is a folder with "
                             f"{LABELS_FILE}, training/ and test/, as in Lake's all_runs.zip")
    if not root.is_dir():
        raise ValueError(f"one-shot runs folder {root} does not exist" if not root.exists()
                         else f"one-shot runs {root} is not a folder")
    folders = [root] if (root / LABELS_FILE).is_file() else sorted(
        d for d in root.iterdir() if d.is_dir() and (d / LABELS_FILE).is_file())
    if not folders:
        raise ValueError(f"{root} holds no one-shot run: a run is a folder with {LABELS_FILE}, "
                         f"training/ and test/, as in Lake's all_runs.zip")
    return [_read_run(folder) for folder in folders]


def _has_runs(folder: Path) -> bool:
    """Whether ``folder`` is a run folder or holds one."""
    return (folder / LABELS_FILE).is_file() or any(
        (d / LABELS_FILE).is_file() for d in folder.iterdir() if d.is_dir())


def _read_run(folder: Path) -> LakeRun:
    labels_file = folder / LABELS_FILE
    answer: dict[Path, Path] = {}                       # test image -> its training image
    raw = labels_file.read_bytes()
    try:
        text = raw.decode("utf-8").removeprefix("\ufeff")             # a BOM: no path
    except UnicodeDecodeError as e:
        at = raw[:e.start].count(b"\n") + 1
        raise ValueError(f"{labels_file} is not UTF-8 text: byte 0x{raw[e.start]:02x} at "
                         f"offset {e.start} (line {at})") from e
    for n, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        parts = line.split()
        if len(parts) != 2:
            raise ValueError(f"{labels_file}:{n}: expected a test image and its training "
                             f"image, got {line.strip()!r}")
        test, train = (folder.joinpath(*Path(p).parts[-2:]) for p in parts)
        if test in answer:
            raise ValueError(f"{labels_file}:{n}: {test.name} is listed twice")
        for f in (test, train):
            if not f.is_file():
                raise ValueError(f"{labels_file}:{n}: {f} does not exist")
        answer[test] = train
    if not answer:
        raise ValueError(f"{labels_file} lists no test image")
    both = sorted(f.relative_to(folder).as_posix() for f in set(answer) & set(answer.values()))
    if both:           # a trial whose answer is in the support set scores itself
        raise ValueError(f"{labels_file} lists {', '.join(both[:5])} as both a test image and "
                         f"a training image; a run's test drawings are not its training ones")
    listed = set(answer) | set(answer.values())
    for sub in sorted({f.parent for f in listed}):      # training/, test/
        extra = sorted(f.name for f in sub.iterdir()
                       if is_image_name(f) and not f.name.startswith(".") and f not in listed)
        if extra:          # a run's every drawing is a class or a trial: none is left unscored
            raise ValueError(f"{sub} holds {len(extra)} image(s) that {labels_file} does not "
                             f"list: {', '.join(extra[:5])}; a run lists every drawing, so "
                             f"list them there or remove them")
    support = tuple(sorted(set(answer.values())))
    query = tuple(sorted(answer))
    return LakeRun(folder.name, support, query, tuple(support.index(answer[q]) for q in query))


def runs_digest(runs: list[LakeRun]) -> str:
    """The sha256 of the runs' contents, to name in a record what was scored.

    It hashes, run by run in order, the run's name and each of its files (``class_labels.txt``
    and every training and test image) by its path inside the run folder and its bytes, so
    it is the same wherever the runs were unpacked. Lake's ``all_runs.zip`` unpacked gives
    ``OFFICIAL_RUNS_SHA256``.
    """
    h = hashlib.sha256()
    for run in runs:
        folder = run.support[0].parent.parent
        h.update(f"run {run.name}\n".encode())
        for f in (folder / LABELS_FILE, *run.support, *run.query):
            h.update(f"{f.relative_to(folder).as_posix()} {f.stat().st_size}\n".encode())
            h.update(f.read_bytes())
    return h.hexdigest()

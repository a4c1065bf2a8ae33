"""Omniglot images (Lake, Salakhutdinov & Tenenbaum 2015), decoded once and cached in-process
and, resized, on disk.

Three sources hold the same 1623 characters x 20 drawings of 105x105 binary images, and each
gives bit-identical results:

- the packed ``omniglot_{background,evaluation}.npz`` files (format in
  ``../shared/data/omniglot/README.md``), verified against a ``SHA256SUMS`` file beside them
  when there is one;
- a folder of the official PNGs, ``images_{background,evaluation}/<Alphabet>/characterNN/
  IIII_DD.png``;
- the official zips ``images_{background,evaluation}.zip``, read in place with ``zipfile``. A
  zip is checked against a ``SHA256SUMS`` beside it when that lists it, otherwise against the
  published sha256 of the official zip (``ZIP_SHA256``).

``download=True`` fetches the official zips (and the Vinyals split files) into the download
folder when no source is found. The zips are verified against both their sha256 (from
TensorFlow Datasets' ``url_checksums/omniglot.txt``) and their md5 (torchvision's
``Omniglot.zips_md5``) before they are used. ``data_files``, ``check_data_file`` and
``download_data`` find, verify and fetch every file at once (``metaloop data omniglot``).

Splits: ``background`` (964 classes) and ``evaluation`` (659 classes) are Lake et al.'s
original 30/20-alphabet split without rotations. ``background_train`` (775 classes, 25
alphabets) and ``background_val`` (189 classes, the 5 alphabets of
``BACKGROUND_VAL_ALPHABETS``) divide the background set by alphabet, so that a model trained
for the original one-shot challenge can be validated without touching the evaluation set.
``train``/``val``/``test``/``trainval`` (4112/688/1692/4800 classes) are the Vinyals et al.
(2016) split: each class is a (character, rotation) pair read from
``splits/vinyals/<split>.txt``, in that file's line order, and the rotation turns the image
counter-clockwise as PIL's ``Image.rotate(deg)`` does.

Resizing a set (105x105 to 28x28 takes about a second) is done once per machine: the result is
kept in ``resized_cache_dir()`` (``$METALOOP_DATA/omniglot/resized`` or
``~/.cache/metaloop/omniglot/resized``), one ``.npz`` per set, size and kernel, named by a key
over the source's content, the set, the size, the kernel, the cache format and the torch
build. A file is written atomically, with the mode the umask gives; one that is damaged,
truncated or another key's is decoded again and replaced; a folder that cannot be written
leaves the images in memory only. Writing a file removes the files it replaces: those of the
same set, size and kernel resized from the same source (the path each file records) under
another key, after a torch upgrade or a change to the source, and the temporary files that
a writer killed mid-write left (see ``_remove_stale_temporaries``). The files of another torch
build stay (two environments may share the folder): ``cache_files`` lists the folder and
``prune_cache`` removes the files this environment does not use (``metaloop data omniglot
--cache`` / ``--prune-cache``). ``METALOOP_OMNIGLOT_CACHE=0`` turns the cache off.
"""

from __future__ import annotations

import functools
import hashlib
import io
import json
import os
import re
import secrets
import shlex
import socket
import stat
import zipfile
import zlib
from collections.abc import Callable, Sequence
from pathlib import Path, PurePosixPath
from typing import NamedTuple

import numpy as np
import torch
import torch.nn.functional as F

from metaloop._libc import libc_function
from metaloop.data.download import fetch, file_digest, read_sha256sums

SETS = ("background", "evaluation")
VINYALS_SPLITS = ("train", "val", "test", "trainval")
SPLITS = SETS + VINYALS_SPLITS
# Background alphabets held out for validation (model selection) in the original one-shot
# challenge: 5 of the 30, each with >= 20 characters so that 20-way within-alphabet tasks
# exist, chosen to span scripts (Indic, Semitic, Hangul, Tifinagh, Balinese); 189 characters.
BACKGROUND_VAL_ALPHABETS = ("Balinese", "Early_Aramaic", "Gujarati", "Korean", "Tifinagh")
HOLDOUT_SPLITS = ("background_train", "background_val")
DRAWINGS = 20
SIDE = 105
_PACKED_BYTES = (SIDE * SIDE + 7) // 8  # 1379
# One drawing's PNG: the official 105x105 mode-"1" files are under 10 kB (about 500 bytes);
# even one saved uncompressed in 16-bit RGBA is about 90 kB. A zip member or file over
# MAX_DRAWING_BYTES, or a set's members over MAX_SET_BYTES together (the official sets hold
# about 10 MB), is refused before it is read: a zip that inflates 1000-fold (a zip bomb)
# cannot fill memory.
MAX_DRAWING_BYTES = 1 << 20
MAX_SET_BYTES = 1 << 30
RESAMPLE = ("bilinear", "bicubic")  # antialiased 105 -> image_size kernels
_RESIZE_CHUNK = 2048  # images per interpolate call: bounds the float32 working set to ~90 MB
# The disk cache of resized sets (see ``resized_cache_dir``). Raise CACHE_VERSION whenever the
# file layout or what ``_resize_packed`` computes changes: older files then no longer match
# (and are removed when their set is written again). 2: each file records its source's path.
CACHE_ENV = "METALOOP_OMNIGLOT_CACHE"
CACHE_VERSION = 2
# a cache file's name: <set>-<size>px-<kernel>-<the key's first 16 hex digits>.npz
_CACHE_NAME = re.compile(r"^([a-z]+-\d+px-[a-z]+)-([0-9a-f]{16})\.npz$")
# a temporary file being written: .<cache name>.<writer's host (_writer_host)>-<pid>-<8 hex>.tmp;
# one of an older writer has no host and pid (.<cache name>.<8 hex>.tmp)
_TEMP_NAME = re.compile(r"^\.([a-z]+-\d+px-[a-z]+-[0-9a-f]{16}\.npz)\.(.+)\.tmp$")
_SETTING = re.compile(r"^([a-z]+)-(\d+)px-([a-z]+)$")      # <set>-<size>px-<kernel>
_TEMP_WRITER = re.compile(r"^([0-9a-f]{12})-(\d{1,10})-[0-9a-f]{8}$")
_CACHE_OFF = ("0", "off", "false", "no")
_CACHE_ON = ("", "1", "on", "true", "yes")

ZIP_URLS = {s: f"https://raw.githubusercontent.com/brendenlake/omniglot/master/python/images_{s}.zip"
            for s in SETS}
# tensorflow/datasets, tensorflow_datasets/url_checksums/omniglot.txt (sizes 9464212 / 6462886 B)
ZIP_SHA256 = {
    "background": "ad41ab679c8b5d90b271ef46be6987cc81211774a695c29dcc5367b2b26ee640",
    "evaluation": "1f61a8f3366785b057fc117d9228e78a16e3d976c8953b2a10fcc74cf0609cee",
}
# pytorch/vision, torchvision/datasets/omniglot.py, Omniglot.zips_md5
ZIP_MD5 = {
    "background": "68d2efa1b9178cc56df9314c21c6e718",
    "evaluation": "6b91aef0f799c5bb55b94e3f2daec811",
}
SPLIT_URLS = {s: "https://raw.githubusercontent.com/jakesnell/prototypical-networks/master/"
                 f"data/omniglot/splits/vinyals/{s}.txt" for s in VINYALS_SPLITS}
# ../shared/data/omniglot/SHA256SUMS (the files are unchanged copies of the URLs above)
SPLIT_SHA256 = {
    "train": "984522c194c30fb678ce53304a160a42faf5403ad4f9a67010f32dd3a35738e0",
    "val": "11f99e54faee3e26f53d3231c1cceac5bf7b8730e9be31cb6dab256551dc0c1a",
    "test": "845264cc5c156180828ccf17915668b17ee21424d0170df6e7d81676aa5d1204",
    "trainval": "5276ae50c755596d0bff7f2284e85625695549a85ee6e36b6491ad1e5d1cc26a",
}


def _checkout_data_dir(module_file: str | os.PathLike = __file__) -> Path | None:
    """``<repo>/../shared/data/omniglot`` when this module runs from a checkout of the
    repository (``<repo>/src/metaloop/data/omniglot.py`` beside ``<repo>/pyproject.toml``:
    an editable install, or ``src`` on the path); None for an installed copy (a wheel puts the
    module under ``site-packages``, where that path would name an unrelated folder).

    Args:
        module_file: the location of this module (default: where it is).
    """
    here = Path(module_file).resolve()
    repo = here.parents[3]
    if here.parents[2].name != "src" or not (repo / "pyproject.toml").is_file():
        return None
    return repo.parent / "shared" / "data" / "omniglot"


# the shared data beside a checkout, searched last; None for an installed copy
SHARED_DIR = _checkout_data_dir()

_PNG_NAME = re.compile(r"^(\d+)_(\d+)\.png$")
_CHAR_DIR = re.compile(r"^character(\d+)$")
_SPLIT_LINE = re.compile(r"^([^/]+/character\d+)/rot(\d{3})$")


class _Source(NamedTuple):
    kind: str  # "npz", "folder" or "zip"
    path: Path


# ----------------------------------------------------------------------------- where to look


DATA_ENV = "METALOOP_DATA"
"""The environment variable naming the folder that holds the data sets (``omniglot/``,
``fashion-mnist/``...), searched first and written to by downloads and the cache."""


def data_env_dir() -> Path | None:
    """The folder ``$METALOOP_DATA`` names, or None where it is unset. A folder that does not
    exist yet is returned as it is: searching it finds nothing, and a download or the cache
    of resized sets makes it.

    Raises:
        ValueError: ``$METALOOP_DATA`` is set but empty, or names a file (or a path below
            a file): no folder can be there, and reading or writing anywhere else instead
            would hide the mistake.
    """
    raw = os.environ.get(DATA_ENV)
    if raw is None:
        return None
    if not raw.strip():
        raise ValueError(f"${DATA_ENV} is set but empty; set it to the folder that holds "
                         f"(or is to hold) the data sets, or unset it")
    path = Path(raw).expanduser()
    for p in (path, *path.parents):        # the nearest part of it that exists
        if p.exists():
            if not p.is_dir():
                where = "a file" if p == path else f"below the file {p}"
                raise ValueError(f"${DATA_ENV} is {raw!r}, {where}, not a folder; set it "
                                 f"to the folder that holds (or is to hold) the data sets, "
                                 f"or unset it")
            break
    return path


def search_dirs(root: str | os.PathLike | None = None) -> list[Path]:
    """The folders searched for Omniglot files, in order.

    Args:
        root: an explicit folder. When given, it is the only place searched, so a wrong path
            fails loudly instead of silently using another copy.

    Returns:
        ``[root]``, or ``[$METALOOP_DATA/omniglot (if set), ~/.cache/metaloop/omniglot,
        <repo>/../shared/data/omniglot (only when metaloop runs from a checkout of the
        repository, see ``_checkout_data_dir``)]``.

    Raises:
        ValueError: ``$METALOOP_DATA`` is set but names no folder (``data_env_dir``).
    """
    if root is not None:
        return [Path(root).expanduser()]
    dirs = []
    if (data := data_env_dir()) is not None:
        dirs.append(data / "omniglot")
    dirs.append(Path.home() / ".cache" / "metaloop" / "omniglot")
    if SHARED_DIR is not None:
        dirs.append(SHARED_DIR)
    return dirs


def download_dir(root: str | os.PathLike | None = None) -> Path:
    """Where ``download=True`` puts files: ``root``, else ``$METALOOP_DATA/omniglot``, else
    ``~/.cache/metaloop/omniglot``. ValueError: ``$METALOOP_DATA`` is set but names no
    folder (``data_env_dir``)."""
    if root is not None:
        return Path(root).expanduser()
    if (data := data_env_dir()) is not None:
        return data / "omniglot"
    return Path.home() / ".cache" / "metaloop" / "omniglot"


def _candidates(folder: Path, set_name: str) -> list[_Source]:
    return [_Source("npz", folder / f"omniglot_{set_name}.npz"),
            _Source("folder", folder / f"images_{set_name}"),
            _Source("zip", folder / f"images_{set_name}.zip")]


def _find_set(set_name: str, root) -> tuple[_Source | None, list[str]]:
    """The first existing source of one set in ``search_dirs(root)`` (None: none), and every
    path looked at before it."""
    looked: list[str] = []
    for folder in search_dirs(root):
        for src in _candidates(folder, set_name):
            exists = src.path.is_dir() if src.kind == "folder" else src.path.is_file()
            if exists:
                return _Source(src.kind, src.path.resolve()), looked
            looked.append(str(src.path) + ("/" if src.kind == "folder" else ""))
    return None, looked


def fetch_command(root: str | os.PathLike | None = None) -> str:
    """The shell command that fetches every missing file into ``download_dir(root)``:
    ``metaloop data omniglot --download``, with ``--root DIR`` when ``root`` is given."""
    return "metaloop data omniglot --download" + (
        "" if root is None else f" --root {shlex.quote(str(Path(root).expanduser()))}")


def _locate_set(set_name: str, root, download: bool, progress: bool = True) -> _Source:
    """The first existing source of one set, downloading the official zip if allowed (with
    a progress bar on stderr if ``progress``).

    Raises:
        FileNotFoundError: listing every path looked at, the expected zip checksum, and the
            command and the Python argument that fetch it.
    """
    found, looked = _find_set(set_name, root)
    if found is not None:
        return found
    dest = download_dir(root) / f"images_{set_name}.zip"
    put = (f"Put the official images_{set_name}.zip or the packed omniglot_{set_name}.npz into "
           f"{dest.parent}{_elsewhere(root)}")
    if download:
        try:
            fetch(ZIP_URLS[set_name], dest, sha256=ZIP_SHA256[set_name],
                  md5=ZIP_MD5[set_name], progress=progress)
        except OSError as e:    # no network, HTTP error, unwritable folder
            raise _download_failed(f"Omniglot '{set_name}' images", looked, ZIP_URLS[set_name],
                                   dest, ZIP_SHA256[set_name], e, put) from e
        return _Source("zip", dest.resolve())
    raise FileNotFoundError(
        f"Omniglot '{set_name}' images not found (looked for " + ", ".join(looked)
        + f"). {put}, or fetch {ZIP_URLS[set_name]} (sha256 {ZIP_SHA256[set_name]}) there: in "
        f"Python with download=True (metaloop.tasks.Omniglot(..., download=True)), in a shell "
        f"with: {fetch_command(root)}")


def _elsewhere(root) -> str:
    """How to name data kept elsewhere, for a "not found" message: ``$METALOOP_DATA`` when
    the search used it (no ``root``), else another ``root``."""
    if root is None:
        return f" (or point ${DATA_ENV} at a folder holding omniglot/)"
    return " (or give as root the folder that holds the Omniglot files)"


def _download_failed(what: str, looked: list[str], url: str, dest: Path, sha256: str,
                     error: OSError, put: str) -> FileNotFoundError:
    """The error for a failed download: every place looked, what to fetch from where into
    where, and why it failed."""
    reason = getattr(error, "reason", None) or error
    return FileNotFoundError(
        f"{what} not found (looked for " + ", ".join(looked) + f") and could not be "
        f"downloaded from {url} to {dest}: {reason}. {put}; fetch it on a machine with "
        f"network access (sha256 {sha256}).")


def _check_sums_file(path: Path, rel: str, fallback_sha256: str | None = None,
                     got: str | None = None) -> str | None:
    """Verify ``path`` against ``SHA256SUMS`` in its data folder if that lists ``rel``, else
    against ``fallback_sha256`` if given.

    Args:
        got: the file's sha256 when the caller has it already (else it is computed).

    Returns:
        what the file matched: the ``SHA256SUMS`` file's path, or ``"published"``; None when
        there was nothing to check it against.

    Raises:
        ValueError: naming the file, the expected and the actual sha256.
    """
    top = path.parents[len(PurePosixPath(rel).parts) - 1]
    sums_file = top / "SHA256SUMS"
    sums = read_sha256sums(sums_file) if sums_file.is_file() else {}
    want, source = (sums[rel], str(sums_file)) if rel in sums else (fallback_sha256, "published")
    if want is None:
        return None
    got = got or file_digest(path, "sha256")
    if got != want:
        raise ValueError(f"{path} is corrupt: sha256 {got}, expected {want} ({source} "
                         f"checksum). Delete it and fetch it again.")
    return source


# ----------------------------------------------------------------------------- decoding


def _packed_from_npz(path: Path, data: bytes) -> tuple[np.ndarray, list[str]]:
    """Read ``images_packed`` uint8 [C, 20, 1379] and ``class_names`` [C] from a packed file.

    Args:
        path: the file, for messages.
        data: its bytes (checked against ``SHA256SUMS`` by ``_read_source``).
    """
    try:
        with np.load(io.BytesIO(data), allow_pickle=False) as d:
            packed, names = d["images_packed"], [str(n) for n in d["class_names"]]
    except (OSError, EOFError, KeyError, TypeError, ValueError, zipfile.BadZipFile,
            zlib.error) as e:
        raise ValueError(f"{path} is not a packed Omniglot file (keys images_packed, "
                         f"class_names): {e}") from e
    if packed.dtype != np.uint8 or packed.shape[1:] != (DRAWINGS, _PACKED_BYTES) \
            or len(names) != packed.shape[0]:
        raise ValueError(f"{path}: expected images_packed uint8 [C, {DRAWINGS}, {_PACKED_BYTES}]"
                         f" and class_names [C], got {packed.dtype} {list(packed.shape)} and "
                         f"{len(names)} names")
    return packed, names


def _png_ink(data: bytes, what: str) -> np.ndarray:
    """Ink mask bool [105, 105] of one PNG (the official files are mode "1", white = 1).

    Raises:
        ValueError: naming ``what``, for a file that is not a 105x105 image or is corrupt.
    """
    from PIL import Image

    try:
        with Image.open(io.BytesIO(data)) as im:
            size, ink = im.size, np.asarray(im.convert("L")) < 128
    except (OSError, SyntaxError, ValueError, EOFError, Image.DecompressionBombError) as e:
        raise ValueError(f"{what}: cannot read the image: {e}") from e   # truncated, not a PNG
    if size != (SIDE, SIDE):
        raise ValueError(f"{what}: expected a {SIDE}x{SIDE} image, got {size}")
    return ink


def _png_members(paths: list[str], where: str) -> dict[tuple[str, int, str], dict[int, str]]:
    """Group PNG paths ``.../<Alphabet>/characterNN/IIII_DD.png`` by character; hidden files
    and folders (macOS ``._IIII_DD.png`` companions) are skipped, as the folder loader does.

    Returns:
        {(alphabet, NN, "characterNN"): {DD: path}}.
    """
    chars: dict[tuple[str, int, str], dict[int, str]] = {}
    for p in paths:
        parts = PurePosixPath(p).parts
        if len(parts) < 3 or not parts[-1].endswith(".png") \
                or any(part.startswith(".") for part in parts[-3:]):
            continue
        alphabet, char_dir, name = parts[-3:]
        cm, fm = _CHAR_DIR.match(char_dir), _PNG_NAME.match(name)
        if cm is None or fm is None:
            raise ValueError(f"{where}: unexpected file {p}; expected "
                             f"<Alphabet>/characterNN/IIII_DD.png")
        chars.setdefault((alphabet, int(cm[1]), char_dir), {})[int(fm[2])] = p
    if not chars:
        raise ValueError(f"{where}: no <Alphabet>/characterNN/IIII_DD.png images found")
    for (alphabet, _, char_dir), drawings in chars.items():
        if sorted(drawings) != list(range(1, DRAWINGS + 1)):
            raise ValueError(f"{where}: {alphabet}/{char_dir} has drawings "
                             f"{sorted(drawings)}, expected 1..{DRAWINGS}")
    return chars


def _packed_from_pngs(paths: list[str], read, where: str) -> tuple[np.ndarray, list[str]]:
    """Decode and pack PNGs, classes in (alphabet, character number) order like the npz files.

    Args:
        paths: the PNG paths (zip member names or file paths).
        read: callable path -> bytes.
        where: the folder or zip, for error messages.
    """
    chars = _png_members(paths, where)
    keys = sorted(chars)
    ink = np.empty((len(keys), DRAWINGS, SIDE, SIDE), dtype=bool)        # [C, 20, 105, 105]
    for c, key in enumerate(keys):
        for d in range(DRAWINGS):
            p = chars[key][d + 1]
            ink[c, d] = _png_ink(read(p), f"{where}: {p}")
    packed = np.packbits(ink.reshape(len(keys), DRAWINGS, -1), axis=-1)  # [C, 20, 1379]
    return packed, [f"{a}/{cd}" for a, _, cd in keys]


def _png_files(path: Path) -> list[str]:
    """The ``<Alphabet>/characterNN/IIII_DD.png`` candidates of an image folder, sorted."""
    return sorted(p.relative_to(path).as_posix() for p in path.glob("*/*/*.png"))


def _too_large(what: str, size: int) -> str:
    """The refusal of one drawing's PNG ``what`` of ``size`` bytes (or more)."""
    return (f"{what} is {size} bytes or more, more than an Omniglot drawing can be "
            f"({MAX_DRAWING_BYTES} bytes; the official 105x105 PNGs are under 10 kB)")


def _read_drawing(path: Path) -> bytes:
    """The bytes of one PNG file of an image folder, read only up to
    ``MAX_DRAWING_BYTES`` + 1.

    Raises:
        ValueError: naming the file, for one that is not a regular file or is larger than
            ``MAX_DRAWING_BYTES``.
    """
    # O_NONBLOCK: opening a named pipe does not wait for a writer (the check below names it)
    fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_BINARY", 0))
    with os.fdopen(fd, "rb") as f:
        if not stat.S_ISREG(os.fstat(f.fileno()).st_mode):
            raise ValueError(f"{path} is not a regular file (an Omniglot drawing is a PNG)")
        data = f.read(MAX_DRAWING_BYTES + 1)
    if len(data) > MAX_DRAWING_BYTES:
        raise ValueError(_too_large(str(path), len(data)))
    return data


def _packed_from_folder(path: Path, files: list[str]) -> tuple[np.ndarray, list[str]]:
    return _packed_from_pngs(files, lambda p: _read_drawing(path / p), str(path))


def _zip_reader(zf: zipfile.ZipFile, path: Path, names: list[str]) -> Callable[[str], bytes]:
    """A reader of the zip's members ``names`` that reads none of them unless every one
    declares at most ``MAX_DRAWING_BYTES`` and all together at most ``MAX_SET_BYTES``, and
    that reads each only up to ``MAX_DRAWING_BYTES`` + 1 bytes, whatever its header says
    (one that holds more is refused as it is read).

    Raises:
        ValueError: naming the zip and the member (or the members' total), for sizes over
            those caps.
    """
    total = 0
    for name in names:
        size = zf.getinfo(name).file_size
        if size > MAX_DRAWING_BYTES:
            raise ValueError(f"{path}: member {name} declares {size} bytes, more than an "
                             f"Omniglot drawing can be ({MAX_DRAWING_BYTES} bytes; the "
                             f"official 105x105 PNGs are under 10 kB): a damaged or "
                             f"hostile zip (a zip bomb?)")
        total += size
    if total > MAX_SET_BYTES:
        raise ValueError(f"{path}: its {len(names)} PNG members declare {total} bytes "
                         f"together, more than an Omniglot set can be ({MAX_SET_BYTES} "
                         f"bytes; the official sets are about 10 MB): a damaged or hostile "
                         f"zip (a zip bomb?)")

    def read(name: str) -> bytes:
        with zf.open(name) as f:
            data = f.read(MAX_DRAWING_BYTES + 1)
        if len(data) > MAX_DRAWING_BYTES:
            raise ValueError(_too_large(f"{path}: member {name}", len(data)))
        return data
    return read


def _packed_from_zip(path: Path, set_name: str, data: bytes) -> tuple[np.ndarray, list[str]]:
    """Read members ``images_<set>/<Alphabet>/characterNN/IIII_DD.png`` (the official layout)
    or ``<Alphabet>/characterNN/IIII_DD.png`` from the zip's bytes ``data`` (checked by
    ``_read_source``); others are ignored.

    Raises:
        ValueError: naming the zip, for one that is not a valid zip, or whose PNG members
            declare or hold more bytes than Omniglot drawings can (``MAX_DRAWING_BYTES``
            each, ``MAX_SET_BYTES`` together; ``_zip_reader``), or whose members are not
            the layout's 105x105 images.
    """
    try:
        with zipfile.ZipFile(io.BytesIO(data)) as zf:
            names = [n for n in zf.namelist()
                     if PurePosixPath(n).parts[:-3] in ((), (f"images_{set_name}",))]
            pngs = [p for drawings in _png_members(names, str(path)).values()
                    for p in drawings.values()]                 # those decoded, only
            return _packed_from_pngs(names, _zip_reader(zf, path, pngs), str(path))
    except (zipfile.BadZipFile, zlib.error, EOFError) as e:       # also a corrupt member
        raise ValueError(f"{path} is not a valid zip file: {e}") from e


def _resize_packed(packed: np.ndarray, size: int, resample: str = "bilinear") -> torch.Tensor:
    """Unpack bits and resize with antialiasing.

    Args:
        packed: uint8 ``[C, 20, 1379]`` packed 105x105 images, bit 1 = ink.
        size: output side.
        resample: the antialiased kernel, one of ``RESAMPLE`` (bicubic overshoots at stroke
            edges and is clipped to [0, 1]).

    Returns:
        uint8 ``[C, 20, size, size]``, ink = 255, background = 0.
    """
    c = packed.shape[0]
    flat = packed.reshape(c * DRAWINGS, _PACKED_BYTES)
    out = torch.empty(c * DRAWINGS, size, size, dtype=torch.uint8)
    for i in range(0, flat.shape[0], _RESIZE_CHUNK):
        bits = torch.from_numpy(np.unpackbits(flat[i:i + _RESIZE_CHUNK], axis=-1,
                                              count=SIDE * SIDE)).view(-1, SIDE, SIDE)
        if size == SIDE:                   # the original pixels: 0/1 -> 0/255, no float pass
            out[i:i + _RESIZE_CHUNK] = bits.mul_(255)
            continue
        x = bits.unsqueeze(1).float()                                    # [b, 1, 105, 105]
        x = F.interpolate(x, size=(size, size), mode=resample, align_corners=False,
                          antialias=True).clamp_(0, 1)                   # [b, 1, size, size]
        out[i:i + _RESIZE_CHUNK] = x.squeeze(1).mul_(255).round_().to(torch.uint8)
    return out.view(c, DRAWINGS, size, size)


def _read_source(set_name: str, src: _Source
                 ) -> tuple[str, Callable[[], tuple[np.ndarray, list[str]]]]:
    """Identify one set's source and check it, without decoding it.

    A packed file or a zip is read once and checked against its sha256 (``SHA256SUMS``, or
    for a zip the published one); the digest and the decoding use those same bytes. A folder
    of PNGs is identified by its files' names, sizes and modification times.

    Returns:
        the source's digest, and a function decoding it to (uint8 ``[C, 20, 1379]`` packed
        images, C class names).

    Raises:
        ValueError: an unreadable file or a checksum mismatch, naming the file.
    """
    if src.kind == "folder":
        files = _png_files(src.path)
        h = hashlib.sha256()
        for f in files:
            st = (src.path / f).stat()
            h.update(f"{f}\0{st.st_size}\0{st.st_mtime_ns}\n".encode("utf-8", "surrogateescape"))
        return f"files:{h.hexdigest()}", lambda: _packed_from_folder(src.path, files)
    try:
        data = src.path.read_bytes()
    except OSError as e:
        raise ValueError(f"cannot read {src.path}: {e}") from e
    digest = hashlib.sha256(data).hexdigest()
    if src.kind == "npz":
        _check_sums_file(src.path, src.path.name, got=digest)
        return f"sha256:{digest}", lambda: _packed_from_npz(src.path, data)
    _check_sums_file(src.path, src.path.name, fallback_sha256=ZIP_SHA256[set_name], got=digest)
    return f"sha256:{digest}", lambda: _packed_from_zip(src.path, set_name, data)


@functools.lru_cache(maxsize=8)
def _load_set(set_name: str, src: _Source, size: int, resample: str = "bilinear"
              ) -> tuple[torch.Tensor, tuple[str, ...]]:
    digest, decode = _read_source(set_name, src)
    cache_dir = resized_cache_dir() if size != SIDE else None   # 105: unpacking is as fast
    if cache_dir is not None:
        key = _cache_key(set_name, src.kind, digest, size, resample)
        path = cache_dir / f"{set_name}-{size}px-{resample}-{key[:16]}.npz"
        cached = _read_cached(path, key, size)
        if cached is not None:
            return cached
    packed, names = decode()
    images = _resize_packed(packed, size, resample)                      # [C, 20, size, size]
    if cache_dir is not None and _write_cached(path, key, images, names, str(src.path)):
        _prune_cached(path, key, str(src.path))
    return images, tuple(names)


# ----------------------------------------------------------------------------- disk cache


def resized_cache_dir() -> Path | None:
    """Where resized sets are kept between processes, or None when that cache is off.

    Returns:
        ``download_dir() / "resized"``: ``$METALOOP_DATA/omniglot/resized`` or
        ``~/.cache/metaloop/omniglot/resized``; None when ``$METALOOP_OMNIGLOT_CACHE`` is
        ``0``, ``off``, ``false`` or ``no``.

    Raises:
        ValueError: ``$METALOOP_OMNIGLOT_CACHE`` holds anything else (but ``1``, ``on``,
            ``true``, ``yes`` or nothing).
    """
    value = os.environ.get(CACHE_ENV, "").strip().lower()
    if value in _CACHE_OFF:
        return None
    if value not in _CACHE_ON:
        raise ValueError(f"${CACHE_ENV} is {os.environ[CACHE_ENV]!r}; expected 0/off/false/no "
                         f"to turn the cache of resized Omniglot images off, or 1/on/true/yes")
    return cache_folder()


def cache_folder() -> Path:
    """The folder of the cache of resized sets, whether the cache is on or off (the files
    written while it was on stay until removed): ``download_dir() / "resized"``."""
    return download_dir() / "resized"


def cache_environment() -> str:
    """The environment of this process as the cache of resized sets names it: the torch build
    that resizes, its version and the CPU kernels it picked (``"torch 2.13.0+cpu, cpu
    AVX512"``). A cache key holds it and a cache file records it; a file is read only in the
    environment that wrote it."""
    return f"torch {torch.__version__}, cpu {torch.backends.cpu.get_cpu_capability()}"


def _cache_key(set_name: str, kind: str, digest: str, size: int, resample: str) -> str:
    """sha256 of everything a resized set depends on: the source's content, the set, the
    size, the kernel, the cache format and the torch build that resizes (its version and the
    CPU kernels it picked, whose float rounding may differ)."""
    fields = {"format": CACHE_VERSION, "set": set_name, "source": kind, "digest": digest,
              "size": size, "resample": resample, "environment": cache_environment()}
    return hashlib.sha256(json.dumps(fields, sort_keys=True).encode()).hexdigest()


def _read_cached(path: Path, key: str, size: int) -> tuple[torch.Tensor, tuple[str, ...]] | None:
    """A cache file's images uint8 ``[C, 20, size, size]`` and class names, or None when it
    does not exist, is damaged or truncated (the zip's CRC-32 covers every byte read), or
    holds another key or other shapes: the set is then decoded again and the file rewritten."""
    try:
        with open(path, "rb") as f, np.load(f, allow_pickle=False) as d:
            stored, images, names = d["key"], d["images"], d["class_names"]
    except FileNotFoundError:
        return None
    # what a damaged file raises; MemoryError: a damaged array header asking for a huge array
    # (the CRC-32 is checked only once the data has been read)
    except (OSError, EOFError, KeyError, TypeError, ValueError, AttributeError, MemoryError,
            zipfile.BadZipFile, zlib.error):
        return None
    if (stored.shape != () or str(stored) != key or images.dtype != np.uint8
            or images.shape[1:] != (DRAWINGS, size, size) or names.dtype.kind != "U"
            or names.shape != images.shape[:1]):
        return None
    return torch.from_numpy(images), tuple(str(n) for n in names)


def _write_cached(path: Path, key: str, images: torch.Tensor, names: list[str],
                  source: str) -> bool:
    """Write a cache file atomically (a temporary file beside it, renamed onto it): a reader
    sees a whole file or none. A folder that cannot be written, or a full disk, is no error:
    the images then live in this process only.

    The temporary file's name says who writes it (``.<name>.<host>-<pid>-<random>.tmp``, see
    ``_writer_host``); the temporaries that writers killed mid-write left in the folder are
    removed first (``_remove_stale_temporaries``), freeing their space for this one.

    The file's mode follows the umask, as any file the user writes (``0644`` under the usual
    ``022``; ``0600`` under ``077``): resized public images, which a group sharing
    ``$METALOOP_DATA`` can share too.

    Args:
        path: the cache file.
        key: ``_cache_key`` of its images.
        images: uint8 ``[C, 20, size, size]``.
        names: the C class names.
        source: the path of the set's source, recorded for ``_prune_cached``.

    Returns:
        Whether the file was written.
    """
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        _remove_stale_temporaries(path.parent)
        fd, tmp = _new_file(path.parent, f".{path.name}.{_writer_host()}-{os.getpid()}-", ".tmp")
    except OSError:
        return False
    try:
        with os.fdopen(fd, "wb") as f:
            np.savez(f, key=np.array(key), source=np.array(source),
                     environment=np.array(cache_environment()), images=images.numpy(),
                     class_names=np.array(names))
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException as e:
        Path(tmp).unlink(missing_ok=True)
        if not isinstance(e, OSError):
            raise
        return False
    return True


def _new_file(folder: Path, prefix: str, suffix: str) -> tuple[int, str]:
    """A new file of a random name in ``folder``, open for writing: ``(fd, path)``. Unlike
    ``tempfile.mkstemp`` (always 0600), its mode follows the umask, which the kernel applies
    as it creates the file (reading the umask would mean setting it, for every thread)."""
    for _ in range(100):
        name = os.path.join(folder, f"{prefix}{secrets.token_hex(4)}{suffix}")
        try:
            return os.open(name, os.O_WRONLY | os.O_CREAT | os.O_EXCL
                           | getattr(os, "O_BINARY", 0), 0o666), name
        except FileExistsError:
            continue
    raise FileExistsError(f"no free temporary name in {folder}")


def _cached_identity(path: Path) -> tuple[str, str | None, str | None] | None:
    """(key, source path, environment) of a whole cache file of ours; the source is None for
    a file of format 1, which did not record it, the environment (``cache_environment``)
    None for a file that did not record it. None for anything else (not an ``.npz``,
    damaged, without the members a cache file has): such a file is never removed."""
    try:
        with open(path, "rb") as f, np.load(f, allow_pickle=False) as d:
            if not {"key", "images", "class_names"} <= set(d.files):
                return None
            key = d["key"]
            source = d["source"] if "source" in d.files else None
            env = d["environment"] if "environment" in d.files else None
    except (OSError, EOFError, KeyError, TypeError, ValueError, AttributeError, MemoryError,
            zipfile.BadZipFile, zlib.error):
        return None
    if key.shape != () or key.dtype.kind != "U" or not re.fullmatch(r"[0-9a-f]{64}", str(key)):
        return None
    for member in (source, env):
        if member is not None and (member.shape != () or member.dtype.kind != "U"):
            return None
    return (str(key), None if source is None else str(source),
            None if env is None else str(env))


def _prune_cached(path: Path, key: str, source: str) -> list[Path]:
    """Remove the cache files that the one just written replaces: those of the same set,
    size and kernel, resized from the same source (the path each file records) by the same
    torch build (the environment each file records: another environment sharing the folder
    keeps its files) under another key (a changed source, an older cache format), and those
    of the same set, size and kernel that recorded no source or no environment (older
    formats).

    Only whole cache files of ours are removed: a name of the form ``_CACHE_NAME`` (a
    temporary file being written is hidden, ``.<name>.XXXX.tmp``, so it never matches), a
    plain file (not a link) holding a key whose first 16 digits are those of its name. A file
    that cannot be read or removed (a reader holding it open on Windows) is left alone: the
    cache is no error.

    Args:
        path: the cache file just written.
        key: its key.
        source: the path of its source.

    Returns:
        The files removed.
    """
    setting = _CACHE_NAME.match(path.name)[1]  # type: ignore[index]  # a cache file's name
    removed: list[Path] = []
    try:
        entries = list(os.scandir(path.parent))
    except OSError:
        return removed
    for entry in entries:
        m = _CACHE_NAME.match(entry.name)
        if m is None or m[1] != setting or entry.name == path.name:
            continue
        try:
            if not entry.is_file(follow_symlinks=False):
                continue
        except OSError:
            continue
        found = _cached_identity(Path(entry.path))
        if found is None or found[0] == key or found[0][:16] != m[2]:
            continue
        if found[1] is not None and found[1] != source:
            continue                                    # another source's: still in use
        if found[2] is not None and found[2] != cache_environment():
            continue        # another torch build's (another environment sharing the folder)
        try:
            os.unlink(entry.path)
        except OSError:
            continue
        removed.append(Path(entry.path))
    return removed


def _writer_host() -> str:
    """Whose pids a temporary file's name holds: 12 hex digits of the sha256 of this host's
    name and, where Linux tells them, its boot (``/proc/sys/kernel/random/boot_id``, random
    at every boot) and its pid namespace (``/proc/self/ns/pid``). Two processes with the same
    value see the same pids. Two machines of one hostname (cloned, or containers given the
    same name), or two containers of one machine, get different values; so does this host
    after a reboot (its temporaries from before cannot be told from another host's)."""
    ids = [socket.gethostname()]
    for read in (lambda: Path("/proc/sys/kernel/random/boot_id").read_text().strip(),
                 lambda: os.readlink("/proc/self/ns/pid")):
        try:
            ids.append(read())
        except OSError:                                 # no /proc (macOS, Windows)
            ids.append("")
    return hashlib.sha256("\0".join(ids).encode("utf-8", "surrogateescape")).hexdigest()[:12]


def _pid_alive(pid: int) -> bool:
    """Whether process ``pid`` of this host may still run: False only when it provably does
    not (``kill(pid, 0)`` finds no such process). On Windows, where ``os.kill`` would end
    the process, and for a pid no process can have, every pid may run."""
    if os.name != "posix" or pid <= 0:
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (OSError, OverflowError):    # PermissionError: another user's process, running
        return True
    return True


def _temporary_writer(writer: str, host: str) -> tuple[str, bool]:
    """Who writes a temporary cache file, from the part of its name between the cache
    file's name and ``.tmp``, and whether that writer is provably gone: a process of this
    host (``host``: ``_writer_host()``) that no longer runs. Any other writer may still be
    writing it: one of another host, container or boot, or one whose name says nothing of it
    (an older writer's ``.<name>.<8 hex>.tmp``)."""
    m = _TEMP_WRITER.match(writer)
    if m is None:
        return "an unknown writer", False
    if m[1] != host:
        return "a process of another host, container or boot", False
    pid = int(m[2])
    if _pid_alive(pid):
        return f"pid {pid} of this host, running", False
    return f"pid {pid} of this host, gone", True


def _remove_stale_temporaries(folder: Path) -> list[Path]:
    """Remove the temporary files in a cache folder whose writer is provably gone (killed
    mid-write, it could not remove its file; see ``_temporary_writer``). Temporaries that
    may still be being written, links and anything that cannot be removed stay: the cache
    is no error.

    Returns:
        The files removed.
    """
    try:
        entries = list(os.scandir(folder))
    except OSError:
        return []
    host, removed = _writer_host(), []
    for entry in entries:
        m = _TEMP_NAME.match(entry.name)
        if m is None or not _temporary_writer(m[2], host)[1]:
            continue
        try:
            if not entry.is_file(follow_symlinks=False):
                continue
            os.unlink(entry.path)
        except OSError:
            continue
        removed.append(Path(entry.path))
    return removed


class CacheFile(NamedTuple):
    """One file in the folder of resized sets, as ``cache_files`` finds it.

    Attributes:
        path: the file.
        set_name: the set, ``"background"`` or ``"evaluation"`` (from the file's name).
        size: the images' side H = W (from the name).
        resample: the resizing kernel (from the name).
        kind: ``"cache"``, a whole cache file; ``"temporary"``, a cache file being written,
            or one whose writer may still run; ``"stale"``, a temporary file whose writer is
            provably gone (a process of this host that no longer runs); ``"other"``, a file
            named as a cache file that is no whole cache file of ours (damaged, truncated, a
            link, or holding another key than its name's), which nothing removes.
        environment: the torch build that resized it, as ``cache_environment()`` words it
            (``"torch 2.13.0+cpu, cpu AVX512"``); None when the file recorded none (an older
            cache format) or is no whole cache file.
        bytes: its size in bytes (a link's own).
        in_use: whether this environment reads it: a whole cache file that this torch build
            resized (it is read when its source has not changed since).
        writer: for a temporary file, who writes it (``"pid 4242 of this host, gone"``);
            else None.
    """
    path: Path
    set_name: str
    size: int
    resample: str
    kind: str
    environment: str | None
    bytes: int
    in_use: bool
    writer: str | None

    @property
    def removable(self) -> bool:
        """Whether ``prune_cache`` removes it: a whole cache file this environment does not
        use, or a stale temporary file."""
        return self.kind == "stale" or (self.kind == "cache" and not self.in_use)


def cache_files(folder: str | os.PathLike | None = None) -> list[CacheFile]:
    """The files of the cache of resized sets: whole cache files, temporary files and
    files named as cache files, sorted by name; other files in the folder are not listed.
    Only the files' names, sizes and recorded keys, sources and environments are read.

    Args:
        folder: the cache folder; None: ``cache_folder()``, the one ``resized_cache_dir()``
            names, also while ``$METALOOP_OMNIGLOT_CACHE`` turns the cache off.

    Returns:
        One ``CacheFile`` per file; none when the folder does not exist.

    Raises:
        ValueError: the folder cannot be listed (naming it and why: not a folder, no
            permission).
    """
    folder = cache_folder() if folder is None else Path(folder).expanduser()
    try:
        entries = sorted(os.scandir(folder), key=lambda e: e.name)
    except FileNotFoundError:
        return []
    except OSError as e:
        raise ValueError(f"cannot list the Omniglot cache folder {folder}: "
                         f"{e.strerror or e}") from e
    here, host, out = cache_environment(), _writer_host(), []
    for entry in entries:
        cache, temp = _CACHE_NAME.match(entry.name), _TEMP_NAME.match(entry.name)
        if temp is not None:
            cache = _CACHE_NAME.match(temp[1])
        if cache is None:
            continue
        set_name, size, resample = _SETTING.match(cache[1]).groups()  # type: ignore[union-attr]
        try:
            nbytes = entry.stat(follow_symlinks=False).st_size
            plain = entry.is_file(follow_symlinks=False)
        except OSError:                                  # removed meanwhile
            continue
        kind, env, writer = "other", None, None
        if temp is not None:
            writer, stale = _temporary_writer(temp[2], host)
            kind = "stale" if stale else "temporary"
        elif plain:
            found = _cached_identity(Path(entry.path))
            if found is not None and found[0][:16] == cache[2]:
                kind, env = "cache", found[2]
        out.append(CacheFile(Path(entry.path), set_name, int(size), resample, kind, env,
                             nbytes, kind == "cache" and env == here, writer))
    return out


def prune_cache(folder: str | os.PathLike | None = None) -> list[CacheFile]:
    """Remove the files of the cache of resized sets that this environment does not use:
    whole cache files of another torch build (another virtual environment, another kind of
    CPU, the build before an upgrade) or of an older cache format that recorded none, and
    stale temporary files (their writer provably gone). This environment's files, temporary
    files that may still be being written and files that are no whole cache file of ours
    stay (see ``cache_files``). Another environment sharing the folder resizes its sets again
    and writes them back at its next start.

    Args:
        folder: as for ``cache_files``.

    Returns:
        The files removed (a file removed meanwhile by another process is not counted).

    Raises:
        ValueError: the folder cannot be listed, or files that could not be removed (each
            named with why, and what was removed besides them).
    """
    removed, failed = [], []
    for f in cache_files(folder):
        if not f.removable:
            continue
        try:
            os.unlink(f.path)
        except FileNotFoundError:
            continue
        except OSError as e:
            failed.append(f"{f.path} ({e.strerror or e})")
            continue
        removed.append(f)
    if failed:
        raise ValueError("cannot remove " + ", ".join(failed) + f"; removed {len(removed)} "
                         f"other file{'' if len(removed) == 1 else 's'} "
                         f"({sum(r.bytes for r in removed)} bytes)")
    return removed


# ----------------------------------------------------------------------------- Vinyals splits


def rotate_ccw(images: torch.Tensor, degrees: int) -> torch.Tensor:
    """Rotate counter-clockwise by a multiple of 90 degrees, as PIL's ``Image.rotate(degrees)``.

    Args:
        images: ``[..., H, W]``.
        degrees: 0, 90, 180 or 270.

    Returns:
        ``[..., W, H]`` rotated images.
    """
    if degrees % 90 != 0:
        raise ValueError(f"rotation must be a multiple of 90 degrees, got {degrees}")
    return torch.rot90(images, (degrees // 90) % 4, dims=(-2, -1))


def _find_split_file(split: str, root) -> tuple[Path | None, list[str]]:
    """The first ``splits/vinyals/<split>.txt`` in ``search_dirs(root)`` (None: none), and
    every path looked at before it."""
    looked: list[str] = []
    for folder in search_dirs(root):
        path = folder / f"splits/vinyals/{split}.txt"
        if path.is_file():
            return path, looked
        looked.append(str(path))
    return None, looked


def _locate_split_file(split: str, root, download: bool) -> Path:
    rel = f"splits/vinyals/{split}.txt"
    found, looked = _find_split_file(split, root)
    if found is not None:
        _check_sums_file(found, rel)
        return found.resolve()
    dest = download_dir(root) / rel
    if download:
        try:
            return fetch(SPLIT_URLS[split], dest, sha256=SPLIT_SHA256[split]).resolve()
        except OSError as e:
            raise _download_failed(f"Omniglot Vinyals split file '{rel}'", looked,
                                   SPLIT_URLS[split], dest, SPLIT_SHA256[split], e,
                                   f"Put it into {dest.parent}{_elsewhere(root)}") from e
    raise FileNotFoundError(
        f"Omniglot Vinyals split file '{rel}' not found (looked for " + ", ".join(looked)
        + f"). Put it into {dest.parent}{_elsewhere(root)}, or fetch {SPLIT_URLS[split]} "
        f"(sha256 {SPLIT_SHA256[split]}) there: in Python with download=True "
        f"(metaloop.tasks.Omniglot(..., download=True)), in a shell with: {fetch_command(root)}")


def _parse_split_file(path: Path, index: dict[str, int]) -> tuple[list[str], list[int], list[int]]:
    """Lines ``<Alphabet>/characterNN/rotXXX`` -> (class names, character ids, degrees)."""
    names, chars, degrees = [], [], []
    for i, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        if not line.strip():
            continue
        m = _SPLIT_LINE.match(line.strip())
        if m is None or int(m[2]) not in (0, 90, 180, 270):
            raise ValueError(f"{path}:{i}: expected '<Alphabet>/characterNN/rot000|090|180|270',"
                             f" got {line!r}")
        if m[1] not in index:
            raise ValueError(f"{path}:{i}: character {m[1]!r} is in neither Omniglot set")
        names.append(line.strip())
        chars.append(index[m[1]])
        degrees.append(int(m[2]))
    if len(set(names)) != len(names):
        dup = sorted({n for n in names if names.count(n) > 1})
        raise ValueError(f"{path}: duplicated classes {dup[:5]}")
    if not names:
        raise ValueError(f"{path}: no classes listed")
    return names, chars, degrees


@functools.lru_cache(maxsize=4)
def _load_vinyals(split_file: Path, srcs: tuple[_Source, ...], size: int,
                  resample: str = "bilinear") -> tuple[torch.Tensor, tuple[str, ...]]:
    parts = [_load_set(s, src, size, resample) for s, src in zip(SETS, srcs, strict=True)]
    every = np.concatenate([p[0].numpy() for p in parts])                # [1623, 20, H, W]
    index = {n: i for i, n in enumerate(n for p in parts for n in p[1])}
    names, chars, degrees = _parse_split_file(split_file, index)
    chars_a, deg_a = np.asarray(chars), np.asarray(degrees)
    out = np.empty((len(names), *every.shape[1:]), dtype=np.uint8)      # [C, 20, H, W]
    for deg in (0, 90, 180, 270):
        rows = np.flatnonzero(deg_a == deg)
        # rotating after the resize equals resizing the rotated 105x105 image, the
        # antialiased kernels being symmetric on a square grid, up to float rounding: about
        # 1 pixel in 10^6 differs, by 1 of 255. np.rot90 turns as rotate_ccw (torch.rot90)
        # does, and copies uint8 images 2-3x faster.
        out[rows] = np.rot90(every[chars_a[rows]], deg // 90, axes=(-2, -1))
    return torch.from_numpy(out), tuple(names)


# ----------------------------------------------------------------------------- public


def load_omniglot_images(root: str | os.PathLike | None = None, split: str = "background",
                         image_size: int = 28, download: bool = False,
                         resample: str = "bilinear") -> tuple[torch.Tensor, list[str]]:
    """All images of one Omniglot split, resized, as one tensor.

    The split is decoded once per process and cached (keyed on the files found, the split and
    the size), so building several task families is cheap. The returned tensor is shared
    between callers: treat it as read-only. Resized sets are also kept on disk, in
    ``resized_cache_dir()``, so that the next process reads them instead of resizing again.

    Args:
        root: a folder holding ``omniglot_<set>.npz``, ``images_<set>/`` or
            ``images_<set>.zip`` (and ``splits/vinyals/`` for the Vinyals splits). None
            searches ``$METALOOP_DATA/omniglot``, ``~/.cache/metaloop/omniglot`` and, from
            a checkout of the repository, ``<repo>/../shared/data/omniglot``, in that order
            (see ``search_dirs``).
        split: ``"background"`` or ``"evaluation"`` (Lake et al., no rotations),
            ``"background_train"`` / ``"background_val"`` (the background set without / with
            only the alphabets of ``BACKGROUND_VAL_ALPHABETS``; a fresh copy), or
            ``"train"``, ``"val"``, ``"test"``, ``"trainval"`` (Vinyals et al., character x
            rotation classes in split-file order, mixing both sets).
        image_size: output side H = W; 105 keeps the original pixels.
        download: fetch the official zips (and split files) into ``download_dir(root)``
            when no local copy is found; they are verified by sha256 and md5 first.
        resample: the antialiased resizing kernel (``RESAMPLE``): ``"bilinear"``, every
            loader's default, or ``"bicubic"`` (Keys' a = -0.5 kernel, the default of PIL's
            and MATLAB's resizing: crisper strokes).

    Returns:
        images: uint8 ``[C, 20, H, W]``, ink = 255, background = 0, antialiased.
        class_names: C names, ``"<Alphabet>/characterNN"`` or ``".../rotXXX"``.

    Raises:
        ValueError: unknown split, bad image_size, or a corrupt or malformed file (naming it
            and, for checksums, the expected and actual sha256); a
            ``$METALOOP_OMNIGLOT_CACHE`` that is not on or off.
        FileNotFoundError: nothing found (or, with ``download=True``, the download failed);
            the message lists every place looked, the url, the folder to put the file into
            and the expected checksum of the official download.
    """
    if split not in SPLITS + HOLDOUT_SPLITS:
        raise ValueError(f"unknown Omniglot split {split!r}; expected one of "
                         f"{SPLITS + HOLDOUT_SPLITS}")
    if not isinstance(image_size, int) or isinstance(image_size, bool) or image_size <= 0:
        raise ValueError(f"image_size must be a positive int, got {image_size!r}")
    if resample not in RESAMPLE:
        raise ValueError(f"unknown resample kernel {resample!r}; expected one of {RESAMPLE}")
    resized_cache_dir()                                    # a bad $METALOOP_OMNIGLOT_CACHE
    decoded = _decodes()
    names: Sequence[str]
    if split in HOLDOUT_SPLITS:
        images, names = _load_set("background", _locate_set("background", root, download),
                                  image_size, resample)
        held = [alphabet_of(n) in BACKGROUND_VAL_ALPHABETS for n in names]
        keep = [i for i, h in enumerate(held) if h == (split == "background_val")]
        images, names = images[keep], [names[i] for i in keep]           # [C', 20, H, W] copy
    elif split in SETS:
        images, names = _load_set(split, _locate_set(split, root, download), image_size,
                                  resample)
    else:
        split_file = _locate_split_file(split, root, download)
        srcs = tuple(_locate_set(s, root, download) for s in SETS)
        images, names = _load_vinyals(split_file, srcs, image_size, resample)
    if _decodes() > decoded:
        release_free_memory()
    return images, list(names)


def alphabet_of(class_name: str) -> str:
    """The alphabet of a class name: ``"Latin"`` for ``"Latin/character01"`` or
    ``"Latin/character01/rot090"``."""
    return class_name.split("/", 1)[0]


def _decodes() -> int:
    """How many times a set or a Vinyals split has been decoded or read from the disk cache
    (in-process cache misses) so far."""
    return _load_set.cache_info().misses + _load_vinyals.cache_info().misses


def release_free_memory() -> bool:
    """Hand the heap pages freed by decoding back to the OS (glibc ``malloc_trim``).

    Decoding goes through ~200 MB of temporaries (unpacked bits, float images) in chunks that
    glibc keeps mapped after they are freed: loading the Vinyals train split at 28x28 left the
    process ~190 MB larger than before, for ~95 MB of cached images; trimmed, ~95 MB. Returns
    False where there is no glibc (nothing else changes).
    """
    trim = libc_function("malloc_trim")
    if trim is None:
        return False
    trim(0)
    return True


def clear_cache() -> None:
    """Forget every decoded split (frees the memory; the next load decodes again, reading the
    resized sets from ``resized_cache_dir()``; delete that folder to resize them again)."""
    _load_set.cache_clear()
    _load_vinyals.cache_clear()


# ----------------------------------------------------------------------------- the files


class DataFile(NamedTuple):
    """One of the files the Omniglot loaders read: a set's images or a Vinyals split file.

    Attributes:
        name: ``"background"``, ``"evaluation"`` or ``"splits/vinyals/<split>.txt"``.
        path: the copy the loaders read (the first found in ``search_dirs(root)``), or None
            when there is none.
        kind: ``"npz"``, ``"folder"``, ``"zip"`` or ``"txt"``; None when missing.
        url: the official file that ``download=True`` fetches.
        sha256: that file's published sha256.
        dest: where ``download=True`` puts it (in ``download_dir(root)``).
        looked: every path looked at before ``path`` (all of them when missing).
    """
    name: str
    path: Path | None
    kind: str | None
    url: str
    sha256: str
    dest: Path
    looked: tuple[str, ...]


def data_files(root: str | os.PathLike | None = None) -> list[DataFile]:
    """Where the loaders find each file that every Omniglot split needs: both sets and the
    four Vinyals split files, in that order. Nothing is read but the folders' listings.

    Args:
        root: as for ``load_omniglot_images``: the only folder searched when given.
    """
    out = []
    for s in SETS:
        src, looked = _find_set(s, root)
        out.append(DataFile(s, None if src is None else src.path,
                            None if src is None else src.kind, ZIP_URLS[s], ZIP_SHA256[s],
                            download_dir(root) / f"images_{s}.zip", tuple(looked)))
    for split in VINYALS_SPLITS:
        rel = f"splits/vinyals/{split}.txt"
        path, looked = _find_split_file(split, root)
        out.append(DataFile(rel, path, None if path is None else "txt", SPLIT_URLS[split],
                            SPLIT_SHA256[split], download_dir(root) / rel, tuple(looked)))
    return out


def check_data_file(file: DataFile) -> str | None:
    """Verify a found file as the loaders do before they read it: a packed ``.npz`` or a
    split file against the ``SHA256SUMS`` of its data folder when that lists it, an official
    zip against that or else its published sha256. A folder of PNGs has no checksum (its
    images are checked as they are decoded).

    Returns:
        what it matched: a ``SHA256SUMS`` file's path, or ``"published"``; None when there
        is nothing to check it against.

    Raises:
        ValueError: a missing file, or a checksum mismatch (naming the file, the expected
            and the actual sha256).
    """
    if file.path is None:
        raise ValueError(f"Omniglot {file.name}: missing, nothing to check")
    if file.kind == "folder":
        return None
    if file.kind == "txt":
        return _check_sums_file(file.path, file.name)
    name = file.path.name
    return _check_sums_file(file.path, name,
                            fallback_sha256=ZIP_SHA256[file.name] if file.kind == "zip" else None)


def download_data(root: str | os.PathLike | None = None, progress: bool = True
                  ) -> list[DataFile]:
    """Fetch each missing file into ``download_dir(root)``, as ``download=True`` does: the
    official zips, verified by sha256 and md5, and the Vinyals split files, by sha256. Each
    is written to a temporary file, verified and only then renamed into place, so a failed
    or refused download leaves nothing; files fetched before it stay (each is whole).

    Args:
        root: as for ``load_omniglot_images``.
        progress: show a progress bar per download on stderr.

    Returns:
        The files fetched (``path`` is where each now is); none when nothing was missing.

    Raises:
        FileNotFoundError: a download that failed (no network, an HTTP error, a folder that
            cannot be written), naming the url, the folder and the sha256.
        ValueError: a download whose checksum does not match (it was deleted).
    """
    fetched = []
    for f in data_files(root):
        if f.path is not None:
            continue
        if f.name in SETS:
            fetched.append(f._replace(path=_locate_set(f.name, root, True, progress).path,
                                      kind="zip"))
        else:
            split = PurePosixPath(f.name).stem
            fetched.append(f._replace(path=_locate_split_file(split, root, True), kind="txt"))
    return fetched

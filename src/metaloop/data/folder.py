"""Image folders (torchvision's ``root/<class>/<image>`` layout), decoded once into a cache.

A folder is scanned, every image is decoded with ``metaloop.data.images.load_image`` (any
format and mode Pillow reads, padded to a square, resized with antialiasing, optionally
inverted) and quantised to uint8, and the result is written, image by image as it is
decoded, into a ``.npy`` array that later opens memory-mapped: the images are read from
disk as tasks touch them, never all held in RAM, while building or after. A JSON manifest
beside it lists every image file with its size, modification time and change time
(``_file_stat``: a file rewritten with its size and mtime kept, as ``cp -p`` or ``rsync -a``
leave it, still differs), the settings, and a hash of both.

Opening the folder again rescans it (names and ``stat`` only) and compares the hash:
- the same: the cache is used as it is (a second open of 50,000 images takes under a
  second, ``benchmarks/bench_folder.py``);
- different files or settings: the cache is rebuilt, re-decoding only the files that changed
  (``FolderData.cache_status`` says ``"rebuilt"`` and why). A stale cache is never used.

Each setting (image size, channels, inversion, ...) has a cache of its own, kept beside the
others (a manifest ``<key>.json`` and its ``<key>-*.npy`` arrays): changing a setting back
opens the earlier one again. Nothing removes them but deleting the cache folder.

Every decoded image is hashed (``_pixel_digest``: its pixels as read, before padding and
resizing). An image that repeats another of its class exactly is left out once (listed in
``duplicates``): a copy could land in a task's support set and its query set both. The same
image in two classes is an error naming both files. An image with transparency that decodes
to one value (white strokes on a transparent background, composited on white) is refused as
unreadable before copies are looked for (``blank_problem``), and a top-level layout of
splits of the same classes (``root/{train,val,test}/<class>/``) is warned of
(``SplitFoldersWarning``). Before decoding, the decoded set's size
is compared with the free space of the cache's disk (``_check_disk``), and the images
decoded at once with the memory available (``_check_memory``).

Class names are the class folders' names in Unicode NFC: a folder written by macOS (NFD,
``"cafe\\u0301"``) and the name typed in a split file or a config (``"caf\\xe9"``) are the
same class; two folders whose names differ only in that form are an error.

The cache lives in ``<root>/.metaloop-cache/`` when the folder (and that sub-folder, if it
exists) is writable, otherwise under ``$METALOOP_CACHE/folders/`` or
``~/.cache/metaloop/folders/``. Writes are atomic: the arrays get new names (the images
written to a temporary file, renamed once whole) and the manifest, which names them, is
replaced last. Builds of one cache take turns (``_build_lock``: a lock file, ``flock``), and
each removes the arrays of its cache that the manifest it wrote does not name
(``_remove_unnamed``); opening a cache as it is takes no lock.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import struct
import time
import unicodedata
import warnings
from collections import deque
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO, TypeGuard

import numpy as np
import torch

try:
    import fcntl
except ImportError:                                   # Windows: no flock; tidying by age
    fcntl = None  # type: ignore[assignment]

from metaloop._callable import check_progress
from metaloop.data.images import (
    BLANK_ADVICE,
    BLANK_WORDS,
    CACHE_DIRNAME,
    DIGEST_BYTES,
    IMAGE_EXTENSIONS,
    _level,
    _pixel_digest,
    _read_file,
    _to_input,
    _uniform,
    blank_problem,
    check_image_settings,
)
from metaloop.data.omniglot import _new_file

CACHE_VERSION = 12  # raised whenever decoding or the cache's layout changes: old caches rebuild
STAT_FIELDS = 4     # per file: size, mtime_ns, ctime_ns, 0 (``_file_stat``)


@dataclass
class FolderScan:
    """What a folder holds.

    Attributes:
        root: the folder, resolved.
        classes: class names (``"group/class"`` when ``class_depth = 2``) in Unicode NFC,
            in the order of a walk that sorts each folder's entries by name: groups sorted,
            then the classes of each group (not the joined strings' order: ``"a/x"``
            before ``"a-b/y"``).
        files: per class, the image files (paths relative to ``root``, posix, spelled as
            the file system holds them), in the same sorted walk order.
        stats: ``{relative path: (size, mtime_ns, ctime_ns, 0)}`` of every image file
            (``_file_stat``; of the link itself for a symbolic link to nothing, which
            decoding then names).
        ignored: files that are not images (by extension), wherever they are, and any other
            entry beside the class folders.
        hidden: hidden files and folders (names starting with ``.``) skipped.
        loose: images outside any class folder (beside the class or group folders), left
            out; paths relative to ``root``.
        ignored_files: the first ``IGNORED_SHOWN`` of the ``ignored`` files, relative to
            ``root`` (e.g. phone photos in a format read by no suffix here, ``.heic``).
        empty: class folders left out because they hold no image file (all their files
            ignored, or none), relative to ``root``.
        nested: with ``class_depth = 1``, where most images sit in sub-folders of the class
            folders (a ``<group>/<class>`` tree read one level short, each group merged into
            one class): what was seen and the advice, ``family.class_depth = 2``; else "".
            Where the top-level folders look like splits of the same classes (``splits``),
            that message instead. It changes nothing read (``_nested_hint``).
        splits: where the top-level folders look like splits of the same classes
            (torchvision's ``train/ val/ test/``, each holding class folders of the same
            names: ``_split_hint``), what was seen and the advice, one split's folder as
            the root with ``class_depth = 1``, at either ``class_depth``; else "".
    """

    root: Path
    classes: list[str]
    files: list[list[str]]
    stats: dict[str, tuple[int, ...]]
    ignored: int = 0
    hidden: int = 0
    loose: list[str] = field(default_factory=list)
    ignored_files: list[str] = field(default_factory=list)
    empty: list[str] = field(default_factory=list)
    nested: str = ""
    splits: str = ""


@dataclass
class FolderData:
    """A decoded image folder.

    Attributes:
        images: uint8 ``[N, C, H, W]``, memory-mapped from the cache (copy-on-write).
        labels: int64 ``[N]``, positions into ``class_names``.
        class_names: K names (a class whose images were all skipped as corrupt has none).
        files: N paths relative to the root, in image order.
        ignored, hidden, loose, ignored_files, empty, nested, splits: as in ``FolderScan``.
        skipped: ``(path, reason)`` of each unreadable image left out (``skip_corrupt=True``),
            a symbolic link to nothing included.
        duplicates: ``(path, path of the image it repeats)`` of each image left out as an
            exact copy of an earlier one of its class (the first in walk order is kept).
        cache_dir: where the cache is.
        cache_status: ``"hit"``, ``"built"`` or ``"rebuilt (...)"``.
    """

    images: torch.Tensor
    labels: torch.Tensor
    class_names: list[str]
    files: list[str]
    ignored: int
    hidden: int
    skipped: list[tuple[str, str]] = field(default_factory=list)
    cache_dir: Path | None = None
    cache_status: str = ""
    loose: list[str] = field(default_factory=list)
    ignored_files: list[str] = field(default_factory=list)
    empty: list[str] = field(default_factory=list)
    duplicates: list[tuple[str, str]] = field(default_factory=list)
    nested: str = ""
    splits: str = ""


class NestedClassFoldersWarning(UserWarning):
    """An image folder read with ``class_depth = 1`` whose images sit mostly in sub-folders
    of the class folders (``FolderScan.nested``): likely a ``<group>/<class>`` tree whose
    groups were each read as one class."""


class SplitFoldersWarning(UserWarning):
    """An image folder whose top-level folders look like splits of the same classes
    (``root/{train,val,test}/<class>/``, ``FolderScan.splits``), read at either
    ``class_depth``: at 1 each split is one class, at 2 ``train/c1`` and ``test/c1`` are two
    classes (one class on both sides of the class split). Not a
    ``NestedClassFoldersWarning``: its advice is another root, not ``class_depth = 2``."""


class UnreadableImagesError(ValueError):
    """Images of a folder that cannot be decoded (``load_folder`` without ``skip_corrupt``).

    Attributes:
        problem: the first file's error and how many more there are, without advice.
        files: ``(path relative to the root, reason)`` of each.
    """

    def __init__(self, problem: str, files: list[tuple[str, str]]):
        super().__init__(f"{problem}; to leave unreadable files out instead, pass "
                         f"skip_corrupt=True (load_folder, Episodes.from_folder)")
        self.problem, self.files = problem, files


class CacheWriteError(ValueError):
    """The decoded cache of a folder cannot be written (``load_folder``).

    Attributes:
        problem: the folder, the cache folder and the error, without advice.
    """

    def __init__(self, problem: str):
        super().__init__(f"{problem}; pass a writable cache_dir (load_folder, "
                         f"Episodes.from_folder)")
        self.problem = problem

    def without_cache_dir(self) -> ValueError:
        """The error for a caller that takes no ``cache_dir`` (a config, a command's
        ``--data``): what to do about the folder instead."""
        return ValueError(f"{self.problem}; make it writable (or free space on its disk): the "
                          f"cache goes beside the images, or under $METALOOP_CACHE/folders "
                          f"(~/.cache/metaloop/folders) when the image folder is read-only")


def _hidden(name: str) -> bool:
    return name.startswith(".")


def _entries(folder: Path) -> list[os.DirEntry]:
    """The entries of ``folder``, sorted by name.

    Raises:
        ValueError: the folder cannot be listed (no permission to read it, say), naming it.
    """
    try:
        with os.scandir(folder) as it:
            return sorted(it, key=lambda e: e.name)
    except OSError as e:
        raise ValueError(f"cannot list image folder {folder}: {e.strerror or e}; make it "
                         f"readable, or move it out of the folder") from e


def _walk(folder: Path, rel: str, stats: dict, counts: dict,
          above: frozenset[str] = frozenset()) -> list[str]:
    """Image files under ``folder`` (recursively), relative to the root; counts the rest.

    Args:
        above: the real paths of the folders this one is inside (the root's included).

    Raises:
        ValueError: a symbolic link back to a folder above it (naming both), which would
            list the same images without end; a symbolic link to nothing without an image's
            suffix; a folder that cannot be listed.
    """
    here = os.path.realpath(folder)
    if here in above:
        raise ValueError(f"image folder entry {folder} links back to {here}, a folder above "
                         f"it; remove the link or point it elsewhere")
    above = above | {here}
    out = []
    for e in _entries(folder):
        if _hidden(e.name):
            counts["hidden"] += 1
            continue
        r = f"{rel}/{e.name}"
        if e.is_dir(follow_symlinks=True):
            out += _walk(Path(e.path), r, stats, counts, above)
        elif e.name.lower().endswith(IMAGE_EXTENSIONS):
            try:
                st = e.stat(follow_symlinks=True)
            except OSError:
                if not e.is_symlink():
                    raise
                st = e.stat(follow_symlinks=False)   # a link to nothing: _decode names it
            stats[r] = _file_stat(st)
            out.append(r)
        else:
            _refuse_dangling(e)                  # a sub-folder's link, not a file to ignore
            _ignore(counts, r.lstrip("/"))
    return out


IGNORED_SHOWN = 3
"""How many of a folder's ignored files ``FolderScan.ignored_files`` names."""
PROGRESS_SECONDS = 0.1
"""How often at most ``load_folder`` tells its ``progress`` the images decoded so far
(tqdm's refresh interval): the count advances while a folder decodes, one call per batch
of images rather than per image."""


def _file_stat(st: os.stat_result) -> tuple[int, int, int, int]:
    """What a file's cache entry is compared by: size, ``st_mtime_ns`` and ``st_ctime_ns``
    (the fourth field is 0: inode numbers are not compared, since network and FUSE mounts
    renumber them at each mount). A copy that keeps the size and mtime
    (``cp -p``, ``rsync -a``, ``tar x``, ``touch -r``) still changes the ctime (any write or
    rename-over sets it); so do ``chmod``, ``chown`` and a new hard link, which re-read
    that file once. A field a platform lacks or leaves 0 is 0 here, the same at every scan:
    it then decides nothing."""
    return (int(st.st_size), int(st.st_mtime_ns), int(getattr(st, "st_ctime_ns", 0) or 0), 0)


def _ignore(counts: dict, rel: str) -> None:
    counts["ignored"] += 1
    if len(counts["ignored_files"]) < IGNORED_SHOWN:
        counts["ignored_files"].append(rel)


def _refuse_dangling(e: os.DirEntry) -> None:
    """ValueError naming ``e`` if it is a symbolic link to nothing: without an image's
    suffix it may stand for a folder of images (a class folder on a drive that is not
    mounted), which would otherwise be left out as a non-image file without a word."""
    if e.is_symlink() and not os.path.exists(e.path):
        raise ValueError(f"image folder entry {e.path} is a link to {os.readlink(e.path)}, "
                         f"which does not exist (a folder of images that moved, or a drive "
                         f"that is not mounted?); remove the link or restore its target")


def scan_folder(root: str | os.PathLike, class_depth: int = 1) -> FolderScan:
    """List the classes and image files of ``root``.

    Args:
        root: ``root/<class>/<image>`` (``class_depth = 1``) or
            ``root/<group>/<class>/<image>`` (``class_depth = 2``, e.g. Omniglot's official
            ``<Alphabet>/characterNN/``). Images may sit in sub-folders of a class folder.
        class_depth: 1 or 2.

    Returns:
        FolderScan; classes without any image file are left out; class names in Unicode
        NFC.

    Raises:
        ValueError: the root is missing or not a folder, a bad ``class_depth``, a symbolic
            link back to a folder above it, a symbolic link to nothing without an image's
            suffix (a class folder's), a folder that cannot be listed (naming it),
            two class folders whose names are equal in NFC (naming both), or
            no class folder holds an image (the message shows the expected layout).
    """
    if class_depth not in (1, 2):
        raise ValueError(f"class_depth must be 1 (root/<class>/<image>) or 2 "
                         f"(root/<group>/<class>/<image>), got {class_depth!r}")
    root = Path(root).expanduser()
    if not root.exists():
        raise ValueError(f"image folder {root} does not exist")
    if not root.is_dir():
        raise ValueError(f"image folder {root} is not a folder")
    root = root.resolve()
    counts: dict[str, Any] = {"ignored": 0, "hidden": 0, "ignored_files": []}
    loose: list[str] = []                        # images where a class folder belongs
    stats: dict[str, tuple[int, ...]] = {}
    class_dirs: list[tuple[str, Path]] = []
    level = [("", root)]
    for _ in range(class_depth):
        nxt = []
        for rel, d in level:
            for e in _entries(d):
                if _hidden(e.name):
                    counts["hidden"] += e.name != CACHE_DIRNAME     # our own cache is not
                elif e.is_dir(follow_symlinks=True):
                    nxt.append((f"{rel}/{e.name}".lstrip("/"), Path(e.path)))
                elif e.name.lower().endswith(IMAGE_EXTENSIONS):
                    loose.append(f"{rel}/{e.name}".lstrip("/"))   # beside the class folders
                else:
                    _refuse_dangling(e)          # a class (or group) folder's link
                    _ignore(counts, f"{rel}/{e.name}".lstrip("/"))   # beside the folders
        level = nxt
    class_dirs = level
    classes, files, empty = [], [], []
    spelled: dict[str, str] = {}          # class name (NFC) -> its folder's own spelling
    for name, d in class_dirs:
        above = frozenset(os.path.realpath(p) for p in (root, d.parent))   # root (, group)
        found = _walk(d, name, stats, counts, above)
        if found:
            nfc = unicodedata.normalize("NFC", name)
            if nfc in spelled:
                raise ValueError(f"image folder {root}: class folders {spelled[nfc]!r} and "
                                 f"{name!r} have names that differ only in their Unicode "
                                 f"form ({ascii(spelled[nfc])} and {ascii(name)}; macOS "
                                 f"writes accented letters decomposed, NFD), so they would be "
                                 f"two classes that look the same; move the images of one "
                                 f"into the other and remove it")
            spelled[nfc] = name
            classes.append(nfc)
            files.append(found)
        else:
            empty.append(name)
    if not classes:
        layout = "root/<class>/<image>" if class_depth == 1 else "root/<group>/<class>/<image>"
        where = ""
        if loose:
            where = (f"; {len(loose)} of them are images outside any class folder (e.g. "
                     f"{loose[0]}): put each class's images in a folder named after the class"
                     + (", inside a group folder" if class_depth == 2 else ""))
        if counts["ignored_files"] and not loose:
            where = (f", e.g. {counts['ignored_files'][0]}; images are read by their suffix: "
                     f"{', '.join(IMAGE_EXTENSIONS)}")
        raise ValueError(f"image folder {root} holds no images in the layout {layout} "
                         f"(class_depth={class_depth}; {counts['ignored'] + len(loose)} other "
                         f"and {counts['hidden']} hidden entries ignored{where})")
    splits, sure = _split_hint(root, classes, files, class_depth)
    nested = _nested_hint(classes, files) if class_depth == 1 else ""
    if nested and splits:                        # the split's advice, not class_depth = 2
        nested = splits if sure else f"{nested}; but {splits}"
    return FolderScan(root, classes, files, stats, counts["ignored"], counts["hidden"], loose,
                      counts["ignored_files"], empty, nested, splits)


NESTED_SHARE = 0.75
"""The share of a ``class_depth = 1`` folder's images in sub-folders of its class folders
at which ``_nested_hint`` suggests ``class_depth = 2``."""


def _nested_hint(classes: list[str], files: list[list[str]]) -> str:
    """What to say of a ``class_depth = 1`` folder whose class folders hold their images
    mostly (``NESTED_SHARE``, or all) in sub-folders, and more such sub-folders than class
    folders: e.g. ``root/<alphabet>/<character>/`` read as one class per alphabet; "" for
    any other folder (a class's images in one sub-folder each are no sign of it)."""
    total = nested = 0
    subs: set[tuple[int, str]] = set()
    example = ""
    for k, fs in enumerate(files):
        for f in fs:
            total += 1
            inner = f.split("/")[1:]                     # below the class folder
            if len(inner) > 1:
                nested += 1
                subs.add((k, inner[0]))
                example = example or f
    if not total or nested < NESTED_SHARE * total or len(subs) <= len(classes):
        return ""
    return (f"{nested} of its {total} images sit in {len(subs)} sub-folders of its "
            f"{len(classes)} class folders (e.g. {example}), not in the class folders "
            f"themselves: with class_depth=1 each class folder is one class, its sub-folders' "
            f"images merged; if the sub-folders are the classes (root/<group>/<class>/"
            f"<image>), {NESTED_ADVICE}")


SPLIT_WORDS = frozenset({"train", "training", "trainval", "trn", "val", "valid", "validation",
                         "dev", "test", "testing", "tst", "eval", "evaluation", "holdout",
                         "heldout"})
"""The words (in a top-level folder's name, split at anything but a letter: ``train``,
``val2017``, ``meta_test``) that mark a folder as one split of a data set."""
_TRAIN_WORDS = frozenset({"train", "training", "trainval", "trn"})


def _split_words(name: str) -> set[str]:
    return set(re.split(r"[^a-z]+", name.lower())) & SPLIT_WORDS


def _numbered(names: list[str]) -> bool:
    """Whether ``names`` are one word and a number each, the same word (``character01``,
    ``class_07``, ``3``): Omniglot's ``<alphabet>/characterNN`` numbers its characters
    alike in every alphabet, so such names shared by groups are no sign of splits."""
    stems = set()
    for n in names:
        m = re.fullmatch(r"(\D*?)[ _-]?\d+", n)
        if m is None:
            return False
        stems.add(m.group(1).lower())
    return len(stems) == 1


SPLITS_SHOWN = 3
"""How many shared class names ``_split_hint`` shows."""


def _split_hint(root: Path, classes: list[str], files: list[list[str]],
                class_depth: int) -> tuple[str, bool]:
    """What to say of a folder whose top-level folders may be splits of the same classes,
    torchvision's ``root/{train,val,test}/<class>/<image>``: the folders just below them
    (the classes with ``class_depth = 2``, the class folders' sub-folders with 1) mostly
    (more than half of the names) share their names between two or more of them, and those
    names are not one word numbered (``_numbered``: Omniglot's ``characterNN`` under every
    alphabet) unless two or more of the top-level folders are named as splits
    (``SPLIT_WORDS``). Returns the message and whether it is sure: two or more top-level
    folders named as splits (else the message says "if"); ("", False) for any other
    folder."""
    below: dict[str, set[str]] = {}
    count: dict[str, int] = {}
    for name, fs in zip(classes, files):
        if class_depth == 2:
            top, _, leaf = name.partition("/")
            below.setdefault(top, set()).add(leaf)
            count[top] = count.get(top, 0) + len(fs)
            continue
        for f in fs:
            inner = f.split("/")[1:]                     # below the class folder
            if len(inner) > 1:
                below.setdefault(name, set()).add(unicodedata.normalize("NFC", inner[0]))
                count[name] = count.get(name, 0) + 1
    tops_of: dict[str, list[str]] = {}
    for top in sorted(below):
        for leaf in below[top]:
            tops_of.setdefault(leaf, []).append(top)
    shared = sorted(leaf for leaf, tops in tops_of.items() if len(tops) > 1)
    if len(shared) < 2 or 2 * len(shared) <= len(tops_of):
        return "", False
    tops = sorted({t for leaf in shared for t in tops_of[leaf]})
    sure = sum(1 for t in tops if _split_words(t)) >= 2
    if not sure and _numbered(shared):
        return "", False
    train = next((t for t in tops if _split_words(t) & _TRAIN_WORDS),
                 max(tops, key=lambda t: (count.get(t, 0), t)))
    leaf = shared[0]
    pair = " and ".join(repr(f"{t}/{leaf}") for t in tops_of[leaf][:2])
    names = ", ".join(map(repr, tops[:6])) + (" ..." if len(tops) > 6 else "")
    eg = ", ".join(map(repr, shared[:SPLITS_SHOWN])) + (", ..." if len(shared) > SPLITS_SHOWN
                                                         else "")
    shares = (f"{len(shared)} of the {len(tops_of)} folder names below "
              f"{'them' if sure else f'its top-level folders {names}'} are under more than "
              f"one of them ({eg})")
    seen = (f"its top-level folders {names} look like splits of the same classes (as "
            f"torchvision's train/ val/ test/ layout), not groups of classes: {shares}; "
            if sure else f"{shares}: if those top-level folders are splits of the same "
            f"classes (as torchvision's train/ val/ test/ layout), not groups of classes, ")
    if class_depth == 2:
        what = (f"with class_depth=2 classes of the same name under different top-level "
                f"folders are counted as different classes ({pair} are two), so one class "
                f"can land on both sides of the class split and a task can pair a class "
                f"with itself (evaluation accuracy then reads high)")
    else:
        what = (f"with class_depth=1 each of them is read as one class, and class_depth=2 "
                f"would count classes of the same name under different top-level folders "
                f"as different classes ({pair} would be two), so one class could land on "
                f"both sides of the class split and a task could pair a class with itself")
    return (f"{seen}{what}. Read one split's folder as the image folder, with "
            f"class_depth=1: family.root = {str(root / train)!r} (root= in Python, the "
            f"--data folder of a command); the classes held out for testing are then "
            f"classes of that folder (family.split_fractions). The other split folders hold "
            f"more images of the same classes: merge each class's images into one folder "
            f"to use them all, or classify them with metaloop predict", sure)


NESTED_ADVICE = "set family.class_depth = 2 (class_depth=2 in Python)"
"""How ``FolderScan.nested`` ends: the advice of a config and of the Python API, which a
command with a flag of its own swaps for that flag (``nested_warnings_once``)."""


@contextmanager
def nested_warnings_once(advice: str) -> Iterator[None]:
    """Within it, each ``NestedClassFoldersWarning`` is shown as it comes, its advice
    ``advice`` (a command's flag, e.g. ``"add --class-depth 2"``) in place of
    ``NESTED_ADVICE``, and once: the same hint again (the same folder read again, from
    another line) is not shown. Other warnings are shown as they would be."""
    shown: set[str] = set()
    before = warnings.showwarning

    def show(message, category, filename, lineno, file=None, line=None):
        if isinstance(category, type) and issubclass(category, NestedClassFoldersWarning):
            text = str(message).replace(NESTED_ADVICE, advice)
            if text in shown:
                return
            shown.add(text)
            message = NestedClassFoldersWarning(text)
        before(message, category, filename, lineno, file, line)

    with warnings.catch_warnings():              # puts showwarning back on leaving
        warnings.showwarning = show
        yield


def _settings(image_size: int, channels: int, invert: str, skip_corrupt: bool,
              class_depth: int) -> dict:
    return {"image_size": image_size, "channels": channels, "invert": invert,
            "skip_corrupt": skip_corrupt, "class_depth": class_depth}


def _fs_bytes(text: str) -> bytes:
    """``text`` as UTF-8, where file names that are not valid UTF-8 (which Python reads with
    their bad bytes as lone surrogates, ``"bad\\udcff.png"``) become their own bytes again,
    as ``os.fsencode`` gives them, instead of raising UnicodeEncodeError."""
    return text.encode("utf-8", "surrogateescape")


def _listing_hash(scan: FolderScan, settings: dict) -> str:
    h = hashlib.sha256(json.dumps({"version": CACHE_VERSION, **settings}, sort_keys=True)
                       .encode())
    for name, fs in zip(scan.classes, scan.files):
        for f in fs:
            h.update(_fs_bytes(f"{name}\0{f}\0{chr(0).join(map(str, scan.stats[f]))}\n"))
    return h.hexdigest()


def default_cache_dir(root: Path) -> Path:
    """``<root>/.metaloop-cache`` if ``root`` is writable (and so is that folder, where it
    exists already), else ``$METALOOP_CACHE/folders`` or ``~/.cache/metaloop/folders``."""
    own = root / CACHE_DIRNAME
    if os.access(root, os.W_OK) and (not own.exists() or os.access(own, os.W_OK)):
        return own
    base = os.environ.get("METALOOP_CACHE")
    return (Path(base).expanduser() if base else Path.home() / ".cache" / "metaloop") / "folders"


def _atomic_write(path: Path, write: Callable, mode: str = "wb") -> None:
    """``write(file)`` into a temporary file beside ``path``, fsync it, then rename it onto
    ``path``: a reader sees the old file or the new one, never part of one. Its mode
    follows the umask (``_new_file``; ``tempfile.mkstemp``'s 0600 would keep the other users
    of a shared image folder from reading the cache, so each would rebuild it)."""
    fd, tmp = _new_file(path.parent, path.name, ".tmp")
    try:
        with os.fdopen(fd, mode) as f:
            _hold(f)
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _atomic_json(path: Path, obj: dict) -> None:
    _atomic_write(path, lambda f: json.dump(obj, f), "w")


def _atomic_npy(path: Path, array: np.ndarray) -> None:
    _atomic_write(path, lambda f: np.save(f, array))


def _decode(root: Path, rel: str, settings: dict) -> tuple[np.ndarray, bytes, str] | str:
    """uint8 ``[C, S, S]`` as ``load_image`` gives it, the image's ``_pixel_digest`` and,
    where every pixel is the same, its value in words (``_level``; else ""), or the error
    message of an unreadable file (a symbolic link to nothing says so, as ``metaloop
    predict`` does; any other error in ``load_image``'s words) or of one that decodes
    blank through its transparency (``blank_problem``), which is refused as unreadable."""
    path = root / rel
    if path.is_symlink() and not path.exists():
        return (f"{path} is a link to {os.readlink(path)}, which does not exist; remove the "
                f"link or restore its target")
    s, c, invert = settings["image_size"], settings["channels"], settings["invert"]
    try:
        pix, grid = _read_file(path, s, c)               # load_image's steps: [h, w, c]
    except ValueError as e:
        return str(e)
    level = ""
    if _uniform(pix):                   # one pass over the pixels for the common image
        blank = blank_problem(path, pix)
        if blank is not None:
            return blank
        level = _level(pix)
    digest = _pixel_digest(pix, grid)             # first: the input may be a view of pix
    x = _to_input(pix, s, invert, grid)                                       # [C, S, S]
    return x.mul_(255).round_().to(torch.uint8).numpy(), digest, level


def load_folder(root: str | os.PathLike, *, image_size: int = 28, channels: int = 1,
                invert: str = "never", class_depth: int = 1, skip_corrupt: bool = False,
                cache_dir: str | os.PathLike | None = None, workers: int | None = None,
                progress: Callable[[int], None] | None = None) -> FolderData:
    """Decode an image folder once, then open it from its memory-mapped cache.

    Args:
        root: the folder; see ``scan_folder`` for the layout.
        image_size: output side H = W (images are padded to a square, then resized with
            antialiasing).
        channels: 1 (greyscale) or 3 (RGB).
        invert: ``"never"``, ``"always"`` or ``"auto"`` (per image, when its mean is above
            0.5: dark ink on light paper becomes ink = 1).
        class_depth: 1 or 2.
        skip_corrupt: leave out unreadable images and symbolic links to nothing (listed in
            ``skipped``) instead of raising.
        cache_dir: where to keep the cache (default ``default_cache_dir(root)``).
        workers: decoding threads (default: ``os.cpu_count()``).
        progress: called with the number of images decoded so far while decoding: 0 as
            it starts, at most every ``PROGRESS_SECONDS`` after, and the number decoded
            when it is done (not called where the cache holds every image).

    Returns:
        FolderData; an exact copy of an earlier image of its class is left out (listed in
        ``duplicates``).

    Raises:
        ValueError: as ``scan_folder``; bad settings; an unreadable image or a link to
            nothing (``UnreadableImagesError``, naming the file) unless ``skip_corrupt``;
            every image unreadable; the same image in two classes (naming both files and
            classes); decoded images that would not fit on the cache's disk
            (``_check_disk``), or a decoding window that would not fit in the memory
            available (``_check_memory``; the estimate, the space or memory and the
            settings named); a cache folder that cannot be written (``CacheWriteError``,
            naming it); a ``progress`` that is not callable. Nothing is put in place unless
            decoding succeeds (the temporary file is removed).

    Warns:
        NestedClassFoldersWarning: ``class_depth = 1`` and the images sit mostly in
            sub-folders of the class folders (``FolderScan.nested``).
        SplitFoldersWarning: the top-level folders look like splits of the same classes
            (``FolderScan.splits``), at either ``class_depth``; in place of the former.
    """
    check_image_settings(image_size, invert, channels)
    progress = check_progress("load_folder", progress)
    scan = scan_folder(root, class_depth)
    if scan.splits and (class_depth == 2 or scan.nested == scan.splits):
        warnings.warn(f"image folder {scan.root}: {scan.splits}", SplitFoldersWarning,
                      stacklevel=2)
    elif scan.nested:
        warnings.warn(f"image folder {scan.root}: {scan.nested}", NestedClassFoldersWarning,
                      stacklevel=2)
    settings = _settings(image_size, channels, invert, bool(skip_corrupt), class_depth)
    digest = _listing_hash(scan, settings)
    cdir = Path(cache_dir).expanduser() if cache_dir is not None else default_cache_dir(scan.root)
    key = hashlib.sha256(_fs_bytes(f"{scan.root}\0{json.dumps(settings, sort_keys=True)}")
                         ).hexdigest()[:16]
    manifest_path = cdir / f"{key}.json"
    previous, old, foreign = _manifest(manifest_path, key)
    data = _hit(cdir, old, digest, scan)
    if data is not None:
        return data
    try:
        with _build_lock(cdir, key) as locked:
            if locked:          # a build that held the lock before this one may have made it
                previous, old, foreign = _manifest(manifest_path, key)
                data = _hit(cdir, old, digest, scan)
                if data is not None:
                    return data
            data, manifest = _build(scan, settings, digest, cdir, key, old, workers, progress)
            _atomic_json(manifest_path, manifest)
            _remove_unnamed(cdir, key, manifest, previous, locked)
    except OSError as e:       # decoding raises ValueError; this is the cache's own writing
        raise CacheWriteError(f"cannot write the decoded image cache of {scan.root} to "
                              f"{cdir}: {e}") from e
    data.cache_dir = cdir
    if previous is None:
        data.cache_status = "built"
    else:
        why = ("its manifest names files outside the cache" if foreign else
               "made by another metaloop version" if old is None else
               "settings" if old.get("settings") != settings else "files changed")
        data.cache_status = f"rebuilt ({why})"
    return data


def _manifest(path: Path, key: str) -> tuple[dict | None, dict | None, bool]:
    """The manifest at ``path`` (any version: its arrays go once it is replaced), the same
    where it is of this version and names only the cache's own files (else None: the cache
    is rebuilt), and whether it names files outside the cache."""
    previous = _read_json(path)
    old = previous if previous is not None and previous.get("version") == CACHE_VERSION \
        else None
    foreign = old is not None and not all(_own_file(old.get(k), key)
                                          for k in ("images", "labels", "stats"))
    if foreign:                 # a manifest naming files outside the cache: rebuilt, none read
        old = None
    return previous, old, foreign


def _hit(cdir: Path, old: dict | None, digest: str, scan: FolderScan) -> FolderData | None:
    """The cache ``old`` names, where it is of the folder as scanned (``digest``) and its
    arrays open (``_open``); else None."""
    if old is None or old.get("hash") != digest:
        return None
    data = _open(cdir, old, scan)
    if data is not None:
        data.cache_status = "hit"
    return data


def _own_file(name, key: str) -> TypeGuard[str]:
    """Whether a manifest's file ``name`` is one of the cache's own for ``key``: a plain
    file name (no folder, no ``..``) starting ``<key>-``. A manifest naming anything else
    (``/tmp/x.npy``, ``../x.npy``) is neither read nor deleted from."""
    return (isinstance(name, str) and name.startswith(f"{key}-") and "/" not in name
            and "\\" not in name and ".." not in name and Path(name).name == name)


def _read_json(path: Path) -> dict | None:
    """A cache manifest of any version, or None if there is none or it is not readable."""
    try:
        m = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return m if isinstance(m, dict) else None


def _open(cdir: Path, m: dict, scan: FolderScan) -> FolderData | None:
    """The cached arrays, or None if they are missing or do not match the manifest."""
    try:
        images = np.load(cdir / m["images"], mmap_mode="c")                  # [N, C, S, S]
        labels = np.load(cdir / m["labels"])                                 # [N]
    except (OSError, ValueError, KeyError):
        return None
    if list(images.shape) != m["shape"] or labels.shape != (m["shape"][0],):
        return None
    return FolderData(torch.from_numpy(images), torch.from_numpy(labels.astype(np.int64)),
                      m["classes"], m["files"].split("\0"), scan.ignored, scan.hidden,
                      [tuple(s) for s in m["skipped"]], cdir, loose=list(scan.loose),
                      ignored_files=list(scan.ignored_files), empty=list(scan.empty),
                      duplicates=[(a, b) for a, b in m["duplicates"]], nested=scan.nested,
                      splits=scan.splits)


def _available_memory() -> int | None:
    """Bytes of memory a new allocation can take: ``MemAvailable`` of ``/proc/meminfo``
    (Linux: free memory and the page cache that can be reclaimed), else the free pages
    ``os.sysconf`` counts (``SC_AVPHYS_PAGES`` x ``SC_PAGE_SIZE``); None where neither is
    known."""
    try:
        with open("/proc/meminfo", encoding="ascii") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024                      # kB
    except (OSError, ValueError, IndexError):
        pass                                     # not Linux: sysconf, where it has them
    try:
        pages, size = os.sysconf("SC_AVPHYS_PAGES"), os.sysconf("SC_PAGE_SIZE")
    except (AttributeError, ValueError, OSError):
        return None
    return pages * size if pages > 0 and size > 0 else None


def _bytes(n: int) -> str:
    """``n`` bytes in words: ``"1.2 GB"``, ``"340 MB"``, ``"12 kB"``."""
    for unit, scale in (("GB", 1e9), ("MB", 1e6), ("kB", 1e3)):
        if n >= scale:
            return f"{n / scale:.1f} {unit}" if n < 10 * scale else f"{n / scale:.0f} {unit}"
    return f"{n} bytes"


CHUNK_BYTES = 64 * 2 ** 20
"""About how many bytes of decoded images a build holds at once (``_build``): it writes
each image to the cache file as it comes, in walk order, a window of images ahead."""
CHUNK_IMAGES = 256
"""The most images a build decodes ahead of what it has written."""


def _window(settings: dict, workers: int) -> int:
    """How many images ``_build`` decodes ahead of writing: ``CHUNK_BYTES`` of them
    (at most ``CHUNK_IMAGES``), and at least two per decoding thread."""
    row = settings["channels"] * settings["image_size"] ** 2
    return max(2 * workers, min(CHUNK_IMAGES, CHUNK_BYTES // row))


def _check_memory(root: Path, n: int, settings: dict, workers: int) -> None:
    """Refuse, before anything is decoded, a setting whose decoding window (``_window``:
    the uint8 ``[C, S, S]`` images decoded ahead of writing, and each thread's float32
    copies while it resizes) exceeds the memory available (``_available_memory``; no check
    where it is unknown). The decoded set itself goes to disk as it comes
    (``_check_disk``), so a folder larger than the memory is no reason to refuse.

    Raises:
        ValueError: naming the estimate, the memory available and the settings.
    """
    c, s = settings["channels"], settings["image_size"]
    k = min(n, _window(settings, workers))
    need = k * c * s * s + workers * 8 * c * s * s             # uint8 window + float32 x 2
    have = _available_memory()
    if have is not None and need > have:
        raise ValueError(f"image folder {root}: decoding its images at image_size={s} with "
                         f"channels={c} takes about {_bytes(need)} of memory at once ({k} "
                         f"decoded images of {c} x {s} x {s} bytes, and {workers} decoding "
                         f"thread(s) at {8 * c * s * s} bytes each), more than the "
                         f"{_bytes(have)} of memory available; lower image_size "
                         f"(family.image_size in a config), or free memory")


def _free_disk(folder: Path) -> int | None:
    """Bytes free on the disk of ``folder`` (or of its nearest existing parent, where it
    does not exist yet); None where that is not known."""
    p = folder
    while not p.exists() and p.parent != p:
        p = p.parent
    try:
        return shutil.disk_usage(p).free
    except OSError:
        return None


def _check_disk(root: Path, cdir: Path, n: int, settings: dict) -> None:
    """Refuse, before anything is decoded, a folder whose decoded images (uint8
    ``[n, C, S, S]``, the cache file) exceed the free space of the cache's disk
    (``_free_disk``; no check where it is unknown).

    Raises:
        ValueError: naming the estimate, the space free, the cache folder and the settings.
    """
    c, s = settings["channels"], settings["image_size"]
    need = n * c * s * s
    have = _free_disk(cdir)
    if have is not None and need > have:
        raise ValueError(f"image folder {root}: its {n} images decoded at image_size={s} "
                         f"with channels={c} take about {_bytes(need)} ({n} x {c} x {s} x "
                         f"{s} bytes), more than the {_bytes(have)} free on the disk of its "
                         f"cache {cdir}; lower image_size (family.image_size in a config), "
                         f"use fewer images, or free space on that disk")


def _npy_header(shape: tuple[int, ...], length: int = 0) -> bytes:
    """A ``.npy`` (format 1.0) header of a C-ordered uint8 array of ``shape``, padded with
    spaces to ``length`` bytes (at least its own, rounded up to 64): ``_build`` writes one
    for the rows it may write, then overwrites it in place, as long, for those it wrote."""
    d = f"{{'descr': '|u1', 'fortran_order': False, 'shape': {tuple(shape)!r}, }}"
    length = max(length, -(-(len(d) + 11) // 64) * 64)
    body = d.ljust(length - 11) + "\n"
    return b"\x93NUMPY\x01\x00" + struct.pack("<H", len(body)) + body.encode("latin1")


def _reusable(cdir: Path, old: dict, scan: FolderScan, row: int
              ) -> tuple[dict[str, int], BinaryIO | None, int, np.ndarray | None]:
    """What of an old cache (of the same settings) can be copied rather than decoded: its
    row of each file whose ``_file_stat`` is unchanged, the images file, open, and where
    its rows start, and its digests (uint8 ``[N, 16]``). Nothing where it is missing (a
    build beside this one may have removed it), damaged or of another layout. Its rows are
    read from the file, not memory-mapped: a rebuild does not page the old set in.

    The file stays open for the caller to read the rows from and close: the rows are read
    from the file whose header was checked here, even where another build removes or
    replaces it meanwhile (an open file outlives its name)."""
    f = None
    try:
        files = old["files"].split("\0")
        st = np.load(cdir / old["stats"])                         # [N, STAT_FIELDS + 2]
        f = open(cdir / old["images"], "rb")
        version = np.lib.format.read_magic(f)
        read = (np.lib.format.read_array_header_1_0 if version == (1, 0)
                else np.lib.format.read_array_header_2_0)
        shape, fortran, dtype = read(f)
        offset = f.tell()
        size = os.fstat(f.fileno()).st_size
        n = len(files)
        if (fortran or dtype != np.uint8 or len(shape) != 4 or shape[0] != n
                or int(np.prod(shape[1:])) != row or size != offset + n * row
                or st.dtype != np.int64 or st.shape != (n, STAT_FIELDS + DIGEST_BYTES // 8)):
            f.close()
            return {}, None, 0, None
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        if f is not None:
            f.close()
        return {}, None, 0, None
    reuse = {f: i for i, (f, stat) in enumerate(zip(files, st[:, :STAT_FIELDS].tolist()))
             if tuple(scan.stats.get(f, ())) == tuple(stat)}
    return reuse, f, offset, np.ascontiguousarray(st[:, STAT_FIELDS:]).view(np.uint8)


STALE_TMP_SECONDS = 60.0
"""How long a temporary file of a cache build must have gone unchanged before another
build of that cache removes it as the remains of a build that was killed (``_tidy``),
where the file system has no ``flock``."""
LOCKED_TMP_SECONDS = 2.0
"""Where it has: how old an unlocked temporary file must be (its writer locks it as soon
as it has made it)."""


def _hold(f) -> None:
    """Lock the temporary images file ``f`` while this build writes it (``flock``; where
    there is none, or the file system has no locks, nothing): ``_tidy`` leaves it alone."""
    if fcntl is not None:
        try:
            fcntl.flock(f.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            pass


def _tidy(cdir: Path, key: str) -> None:
    """Remove the temporary files ``<key>-*.tmp`` a killed build of this cache left (a
    build writes its images file for as long as it decodes, so a ``kill -9`` or a power
    cut leaves one as large as the set): those not locked by a build still running
    (``_hold``), or, where there are no locks, unchanged for ``STALE_TMP_SECONDS``.
    Errors are ignored."""
    for p in cdir.glob(f"{key}-*.tmp"):
        try:
            with open(p, "rb") as f:
                age = time.time() - os.fstat(f.fileno()).st_mtime
                if age < LOCKED_TMP_SECONDS:
                    continue                  # perhaps just made, not yet locked
                locked = False
                if fcntl is not None:
                    try:
                        fcntl.flock(f.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
                        locked = True
                    except BlockingIOError:
                        continue                          # a build still writing it
                    except OSError:
                        pass                              # no locks here: by age alone
                if locked or age >= STALE_TMP_SECONDS:
                    p.unlink()
        except OSError:
            continue


def _make_dir(cdir: Path) -> bool:
    """Make the cache folder (and its parents); whether this call made it."""
    try:
        cdir.mkdir(parents=True)
    except FileExistsError:
        return False
    return True


STALE_ARRAY_SECONDS = 60.0
"""Where there are no locks (``_build_lock``): how long an array of a cache that its manifest
does not name must have gone unchanged before a rebuild of that cache removes it
(``_remove_unnamed``)."""


@contextmanager
def _build_lock(cdir: Path, key: str) -> Iterator[bool]:
    """Make the cache folder and hold the lock of the cache ``key`` in it (``<key>.lock``,
    ``flock``, exclusive, waiting for it) while a build writes its arrays, replaces the
    manifest and removes the arrays the manifest does not name; yields whether it holds it
    (False where there is no ``flock`` or the file system has no locks).

    Why a lock: a build puts its arrays in place (renamed, whole) and only then names them
    in the manifest; builds of one cache in several processes at once (loaders started
    together while the folder changes) each replaced the manifest and left the arrays of
    the others named by none, a copy of the set each, and removing those by name alone
    could remove arrays another build had put in place and not yet named. Holding the lock
    from before the manifest is read again to after the clean-up, builds take turns: no
    array outside the manifest belongs to a build still running, so the clean-up removes
    them all, and a build that waited opens the cache the one before it made where it is
    of the same files. A grace period by age alone (no lock) would keep each such copy
    for that long and still guess wrong about a build paused longer; it is the fallback
    where there are no locks. Readers of a whole cache take no lock (an open array
    outlives its name). The lock file is removed as the lock is released (a build waiting
    on it finds the name gone or on another file, and locks again); where this call made
    the cache folder and the build fails, the folder is removed again, only where empty."""
    made, fd, failed = False, None, False
    path = cdir / f"{key}.lock"
    try:
        for _ in range(100):                # a build beside this one may remove the folder
            made = _make_dir(cdir) or made
            if fcntl is None:
                break
            try:
                fd = os.open(path, os.O_RDWR | os.O_CREAT | getattr(os, "O_BINARY", 0), 0o666)
            except FileNotFoundError:
                continue
            try:
                fcntl.flock(fd, fcntl.LOCK_EX)
            except OSError:                              # no locks here: by age alone
                os.close(fd)
                fd = None
                path.unlink(missing_ok=True)
                break
            try:
                if os.path.samestat(os.fstat(fd), os.stat(path)):
                    break                                # the lock file the name is
            except FileNotFoundError:
                pass
            os.close(fd)                    # removed (or replaced) by the build before
            fd = None
        yield fd is not None
    except BaseException:
        failed = True
        raise
    finally:
        if fd is not None:
            path.unlink(missing_ok=True)                # still held: nobody else's file
            os.close(fd)
        if failed and made:
            try:
                cdir.rmdir()                        # only where empty: another's stays
            except OSError:
                pass


def _remove_unnamed(cdir: Path, key: str, manifest: dict, previous: dict | None,
                    locked: bool) -> None:
    """Remove the arrays of the cache ``key`` that its manifest, just replaced, does not
    name: those of the manifest it replaced, and any others (left by builds of that cache
    that ran at once, before ``_build_lock``, or killed between their arrays and their
    manifest). Holding the lock, all of them; where there are no locks, the replaced
    manifest's at once and the others once unchanged for ``STALE_ARRAY_SECONDS`` (a build
    beside this one may have just put them in place and not yet named them). Errors are
    ignored (an array another process has open, on Windows, stays)."""
    keep = {manifest[k] for k in ("images", "labels", "stats")}
    named = [previous.get(k) for k in ("images", "labels", "stats")] if previous else []
    # a plain file name of ours (a damaged manifest names nothing else to delete)
    gone = {n for n in named if _own_file(n, key) and n not in keep}
    for p in [cdir / n for n in sorted(gone)] + sorted(cdir.glob(f"{key}-*.npy")):
        if p.name in keep:
            continue
        try:
            if (locked or p.name in gone
                    or time.time() - p.stat().st_mtime >= STALE_ARRAY_SECONDS):
                p.unlink(missing_ok=True)
        except OSError:
            continue


def _build(scan: FolderScan, settings: dict, digest: str, cdir: Path, key: str,
           old: dict | None, workers: int | None, progress) -> tuple[FolderData, dict]:
    """Decode what the old cache does not already hold, leave out exact copies within a
    class, write the new arrays.

    The images are written to a temporary file as they come, in walk order (an old row
    copied, a new one decoded a window ahead, ``_window``), so the build holds a window of
    images, never the set; the file is renamed onto its name once whole.

    Raises:
        ValueError: as ``load_folder``, before any file is put in place (the temporary
            file removed, and the cache folder where this call made it and it is empty).
    """
    rels = [f for fs in scan.files for f in fs]
    lab = [k for k, fs in enumerate(scan.files) for _ in fs]
    c, s = settings["channels"], settings["image_size"]
    row = c * s * s
    n_workers = max(1, workers or os.cpu_count() or 1)
    _check_memory(scan.root, len(rels), settings, n_workers)
    _check_disk(scan.root, cdir, len(rels), settings)
    reuse: dict[str, int] = {}
    src, old_offset, old_hashes = None, 0, None
    if old is not None and old.get("settings") == settings:
        reuse, src, old_offset, old_hashes = _reusable(cdir, old, scan, row)
    with src if src is not None else nullcontext():
        return _build_from(scan, settings, digest, cdir, key, rels, lab, reuse, src,
                           old_offset, old_hashes, n_workers, progress)


def _build_from(scan: FolderScan, settings: dict, digest: str, cdir: Path, key: str,
                rels: list[str], lab: list[int], reuse: dict[str, int], src: BinaryIO | None,
                old_offset: int, old_hashes: np.ndarray | None, n_workers: int, progress
                ) -> tuple[FolderData, dict]:
    """``_build`` once it knows what to reuse (``_reusable``; ``src`` the old images file,
    open)."""
    c, s = settings["channels"], settings["image_size"]
    todo = [f for f in rels if f not in reuse]
    names = {"images": f"{key}-{digest[:16]}.images.npy",
             "labels": f"{key}-{digest[:16]}.labels.npy",
             "stats": f"{key}-{digest[:16]}.stats.npy"}
    made = False
    for attempt in range(3):    # a builder beside this one may remove the folder it made
        made = _make_dir(cdir) or made
        try:
            fd, tmp = _new_file(cdir, names["images"], ".tmp")     # mode: as _atomic_write
            break
        except FileNotFoundError:
            if attempt == 2:
                raise
    try:
        with os.fdopen(fd, "wb") as out:
            _hold(out)
            header = _npy_header((len(rels), c, s, s))
            out.write(header)
            keep, duplicates, clashes, bad, hashes = _write_rows(
                out, scan, settings, rels, lab, reuse, src, old_offset, old_hashes,
                todo, n_workers, progress)
            if bad and not settings["skip_corrupt"]:
                raise UnreadableImagesError(_unreadable_problem(bad), bad)
            if len(bad) == len(rels):
                raise ValueError(f"image folder {scan.root}: none of its {len(rels)} images "
                                 f"could be read, e.g. {_unreadable_problem(bad[:1])}")
            if clashes:
                raise _clash_error(scan, rels, lab, clashes)
            out.seek(0)
            out.write(_npy_header((len(keep), c, s, s), len(header)))
            out.seek(0, os.SEEK_END)
            out.flush()
            os.fsync(out.fileno())
        os.replace(tmp, cdir / names["images"])
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        if made:
            try:
                cdir.rmdir()                        # only where empty: another's stays
            except OSError:
                pass
        raise
    _tidy(cdir, key)
    labels = np.asarray([lab[i] for i in keep], dtype=np.int64)              # [N']
    _atomic_npy(cdir / names["labels"], labels)
    files = [rels[i] for i in keep]
    stat = np.asarray([scan.stats[f] for f in files], dtype=np.int64).reshape(-1, STAT_FIELDS)
    _atomic_npy(cdir / names["stats"], np.concatenate(          # [N', STAT_FIELDS + 2]
        [stat, hashes[keep].view(np.int64)], axis=1))
    manifest = {"version": CACHE_VERSION, "root": str(scan.root), "settings": settings,
                # one string: a 50,000-file manifest then parses in milliseconds; joined by
                # NUL, the one character no file name holds (a newline may be in one)
                "hash": digest, "classes": scan.classes, "files": "\0".join(files),
                "skipped": bad, "duplicates": duplicates,
                "shape": [len(keep), c, s, s], **names}
    data = _open(cdir, manifest, scan)
    if data is None:
        raise OSError(f"the cache just written to {cdir} cannot be read back")
    return data, manifest


def _write_rows(out, scan: FolderScan, settings: dict, rels: list[str], lab: list[int],
                reuse: dict[str, int], src: BinaryIO | None, old_offset: int,
                old_hashes: np.ndarray | None, todo: list[str], workers: int, progress
                ) -> tuple[list[int], list[tuple[str, str]],
                           list[tuple[int, int, str | None]], list[tuple[str, str]],
                           np.ndarray]:
    """Write to ``out`` the row of each image kept, in walk order: copied from the old
    cache's file (``src``, open: ``_reusable``), or decoded (``workers`` threads,
    ``_window`` images ahead). An exact copy of an earlier image of its class (the first in
    walk order kept) is left out.

    Returns:
        (rows kept, copies left out ``(file, the file it repeats)``, clashes ``(earlier
        row, row, its one value in words where the image is a single value, else None)`` of the same
        image in two classes, unreadable ``(file, reason)``, the digests uint8 ``[N, 16]``).
        An image that decodes blank through its transparency (``blank_problem``) is
        unreadable, before any copy is looked for. Once a clash or (without
        ``skip_corrupt``) an unreadable image is found, nothing more is written: the build
        fails.
    """
    row = settings["channels"] * settings["image_size"] ** 2
    hashes = np.zeros((len(rels), DIGEST_BYTES), dtype=np.uint8)              # [N, 16]
    first: dict[bytes, int] = {}
    keep: list[int] = []
    duplicates: list[tuple[str, str]] = []
    clashes: list[tuple[int, int]] = []
    bad: list[tuple[str, str]] = []
    blank_pairs: dict[tuple[int, int], str] = {}
    window = _window(settings, workers)
    ahead: deque = deque()
    queue = iter(todo)
    decoded = 0
    if progress is not None and todo:
        progress(0)                     # as decoding starts: a bar opens before, not after
    told = time.monotonic()
    with ThreadPoolExecutor(workers) as pool:

        def top_up() -> None:
            while len(ahead) < window:
                f = next(queue, None)
                if f is None:
                    return
                ahead.append(pool.submit(_decode, scan.root, f, settings))

        try:
            top_up()
            for i, f in enumerate(rels):
                if f in reuse:
                    j = reuse[f]
                    src.seek(old_offset + j * row)                # type: ignore[union-attr]
                    x = src.read(row)                             # type: ignore[union-attr]
                    if len(x) != row:
                        raise OSError(f"the old cache {src.name} ends early")  # type: ignore[union-attr]
                    hashes[i] = old_hashes[j]                     # type: ignore[index]
                    level = f"{x[0]} (as read)" if x.count(x[:1]) == len(x) else ""
                else:
                    r = ahead.popleft().result()
                    top_up()
                    decoded += 1
                    if progress is not None and time.monotonic() - told >= PROGRESS_SECONDS:
                        progress(decoded)
                        told = time.monotonic()
                    if isinstance(r, str):
                        bad.append((f, r))
                        continue
                    x, level = r[0].tobytes(), r[2]
                    hashes[i] = np.frombuffer(r[1], dtype=np.uint8)
                j = first.setdefault(hashes[i].tobytes(), i)
                if j != i:
                    if lab[j] == lab[i]:
                        duplicates.append((f, rels[j]))
                    else:
                        clashes.append((j, i))
                        if level:                            # a plain picture of one value
                            blank_pairs[(j, i)] = level
                    continue
                keep.append(i)
                if not clashes and not (bad and not settings["skip_corrupt"]):
                    out.write(x)
        finally:
            for fut in ahead:
                fut.cancel()
    if progress is not None and todo:
        progress(len(todo))
    return keep, duplicates, [(j, i, blank_pairs.get((j, i))) for j, i in clashes], bad, hashes


UNREADABLE_SHOWN = 10
"""How many unreadable images ``UnreadableImagesError`` names, each with its reason."""


def _unreadable_problem(bad: list[tuple[str, str]]) -> str:
    """The first ``UNREADABLE_SHOWN`` unreadable images' errors, one a line, then
    ``"(and N more)"``; images that decode blank (``blank_problem``) apart: one named with
    its reason, several counted with a few named, and what to do about them once."""
    blank = [(f, r) for f, r in bad if BLANK_WORDS in r]
    bad = [(f, r) for f, r in bad if BLANK_WORDS not in r]
    shown = "\n".join(reason for _, reason in bad[:UNREADABLE_SHOWN])
    more = f"\n(and {len(bad) - UNREADABLE_SHOWN} more)" if len(bad) > UNREADABLE_SHOWN else ""
    head = f"{len(bad)} images cannot be read:\n" if len(bad) > 1 else ""
    text = f"{head}{shown}{more}"
    if not blank:
        return text
    if len(blank) == 1:
        said = blank[0][1]
    else:
        eg = ", ".join(f for f, _ in blank[:IGNORED_SHOWN])
        said = (f"{len(blank)} images decode to a blank image, every pixel one value, and are "
                f"refused as unreadable (e.g. {eg}): "
                f"each is drawn in white or one light colour on a transparent background, "
                f"and transparency is read composited on white, which leaves nothing of "
                f"the drawing")
    return (f"{text}\n" if text else "") + f"{said}; {BLANK_ADVICE}"


def _clash_error(scan: FolderScan, rels: list[str], lab: list[int],
                 clashes: list[tuple[int, int, str | None]]) -> ValueError:
    """The error for the same image in two classes: the first pair, and how many more; a
    pair of pictures of one value each (blank) is said to be such, and its fix."""
    j, i, level = clashes[0]
    more = f" (and {len(clashes) - 1} more such pair(s))" if len(clashes) > 1 else ""
    pair = (f"image folder {scan.root}: {rels[j]} (class {scan.classes[lab[j]]!r}) and "
            f"{rels[i]} (class {scan.classes[lab[i]]!r})")
    if level is not None:
        return ValueError(f"{pair} both decode to a blank image (every pixel {level}: "
                          f"a plain picture){more}, so they are the same image; a blank "
                          f"image shows nothing of its class: remove them, or if they hold a "
                          f"drawing on a background of that value, "
                          f"{BLANK_ADVICE.replace('such images', 'them')}")
    return ValueError(f"{pair} are the same image{more}; an image belongs to one class: "
                      f"remove it from the class it does not belong to")

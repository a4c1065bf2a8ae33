"""Checksummed downloads and file verification.

A download is written to a temporary file beside its destination, verified, and only then
renamed into place (atomically, with ``os.replace``). A file that fails its checksum is
deleted and the error names the url, the expected and the actual checksum, so a download can
never fail silently or leave a half-written file where a good one is expected.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
import urllib.request
from pathlib import Path, PurePosixPath

_CHUNK = 1 << 20


def file_digest(path: str | os.PathLike, algorithm: str = "sha256") -> str:
    """Hex digest of a file, read in 1 MiB chunks.

    Args:
        path: the file.
        algorithm: any ``hashlib`` algorithm name, e.g. ``"sha256"`` or ``"md5"``.

    Returns:
        The lowercase hex digest.
    """
    h = hashlib.new(algorithm)
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(_CHUNK), b""):
            h.update(chunk)
    return h.hexdigest()


def _expected(sha256: str | None, md5: str | None) -> dict[str, str]:
    want = {}
    for algo, value in (("sha256", sha256), ("md5", md5)):
        if value is not None:
            want[algo] = value.strip().lower()
    return want


def _mismatches(path: Path, want: dict[str, str]) -> list[str]:
    """One 'algo: expected X, got Y' line per checksum that does not match."""
    bad = []
    for algo, value in want.items():
        got = file_digest(path, algo)
        if got != value:
            bad.append(f"{algo}: expected {value}, got {got}")
    return bad


def verify_file(path: str | os.PathLike, sha256: str | None = None,
                md5: str | None = None, what: str | None = None) -> None:
    """Check a file against the given checksums (all that are not None).

    Args:
        path: the file.
        sha256: expected hex sha256, or None to skip.
        md5: expected hex md5, or None to skip.
        what: how to name the file in the error (default: its path).

    Raises:
        FileNotFoundError: when the file does not exist.
        ValueError: naming the file, the expected and the actual checksums, on a mismatch.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path} does not exist")
    bad = _mismatches(path, _expected(sha256, md5))
    if bad:
        raise ValueError(f"checksum mismatch for {what or path}: " + "; ".join(bad))


def read_sha256sums(path: str | os.PathLike) -> dict[str, str]:
    """Parse a ``sha256sum``-style file into {relative path: hex digest}.

    Args:
        path: the ``SHA256SUMS`` file; lines are ``<hex>  <path>`` (``*<path>`` for binary mode;
            a leading ``./`` is dropped).

    Raises:
        ValueError: naming the file and line number of a malformed line.
    """
    sums = {}
    for i, line in enumerate(Path(path).read_text(encoding="utf-8").splitlines(), start=1):
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        parts = line.strip().split(maxsplit=1)
        if len(parts) != 2 or len(parts[0]) != 64:
            raise ValueError(f"{path}:{i}: expected '<sha256 hex>  <path>', got {line!r}")
        # "./name" (from ``sha256sum ./*``) is "name": a file must not escape its check
        sums[PurePosixPath(parts[1].lstrip("*").strip()).as_posix()] = parts[0].lower()
    return sums


def fetch(url: str, dest: str | os.PathLike, sha256: str | None = None,
          md5: str | None = None, timeout: float = 60.0, progress: bool = False) -> Path:
    """Download ``url`` to ``dest``, verifying it before it appears there.

    If ``dest`` already exists and at least one checksum is given and matches, nothing is
    downloaded. Otherwise the data goes to a temporary file in ``dest``'s folder, is checked
    against every checksum given, and is renamed to ``dest`` atomically.

    Args:
        url: any url ``urllib.request.urlopen`` accepts (http, https, file).
        dest: the final path; its parent folders are created.
        sha256: expected hex sha256, or None.
        md5: expected hex md5, or None (use only where no sha256 is published).
        timeout: socket timeout in seconds.
        progress: show a tqdm progress bar on stderr.

    Returns:
        ``dest`` as a Path.

    Raises:
        ValueError: naming the url, the expected and the actual checksums, on a mismatch (the
            temporary file is deleted, ``dest`` is untouched).
        urllib.error.URLError: when the download fails (the temporary file is deleted).

    On any failure the temporary file and the folders made for ``dest`` are removed.
    """
    dest = Path(dest)
    want = _expected(sha256, md5)
    if want and dest.is_file() and not _mismatches(dest, want):
        return dest
    made = [d for d in (dest.parent, *dest.parent.parents) if not d.exists()]  # deepest first
    dest.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(dir=dest.parent, prefix=f".{dest.name}.", suffix=".part")
    tmp = Path(tmp_name)
    try:
        with os.fdopen(fd, "wb") as out:
            _stream(url, out, timeout, progress)
        bad = _mismatches(tmp, want)
        if bad:
            raise ValueError(f"checksum mismatch for {url}: " + "; ".join(bad)
                             + " (the download was deleted)")
        os.replace(tmp, dest)
    except BaseException:
        tmp.unlink(missing_ok=True)
        for d in made:          # the folders made for dest: a failed download leaves nothing
            try:
                d.rmdir()
            except OSError:     # not empty: something else was put there meanwhile
                break
        raise
    return dest


def _stream(url: str, out, timeout: float, progress: bool) -> None:
    """Copy the body of ``url`` into the open binary file ``out``."""
    from tqdm import tqdm

    from metaloop._progress import tqdm_defaults

    with urllib.request.urlopen(url, timeout=timeout) as resp:
        total = resp.headers.get("Content-Length")
        with tqdm(total=int(total) if total else None, unit="B", unit_scale=True,
                  desc=Path(url).name, disable=not progress, **tqdm_defaults()) as bar:
            for chunk in iter(lambda: resp.read(_CHUNK), b""):
                out.write(chunk)
                bar.update(len(chunk))

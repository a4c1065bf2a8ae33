"""``metaloop data``: find, verify or fetch the files a built-in data set is read from."""

from __future__ import annotations

import argparse
import os
from typing import cast

from metaloop.cli._args import path
from metaloop.data import omniglot

DESCRIPTION = """\
Find, verify or fetch the files a built-in data set is read from, without Python. For
Omniglot: both sets of drawings (background and evaluation) and the four Vinyals split files
(train, val, test, trainval), searched where every Omniglot command and
metaloop.tasks.Omniglot search them."""

OMNIGLOT_DESCRIPTION = """\
Report where each file that every Omniglot split needs is found: the background and
evaluation sets (a packed omniglot_<set>.npz, a folder of the official PNGs images_<set>/,
or the official zip images_<set>.zip, the first found) and splits/vinyals/<split>.txt for
train, val, test and trainval. They are searched in --root DIR alone when it is given, else
in $METALOOP_DATA/omniglot, ~/.cache/metaloop/omniglot and, from a checkout of the
repository, ../shared/data/omniglot beside it. Exit status 0 when every file is found, 2
(naming what is missing and how to get it) when one is not.

--check also verifies each file found as the loaders do before they read it: a packed file
or a split file against the SHA256SUMS beside it when that lists it, an official zip against
that or else its published sha256 (a folder of PNGs has no checksum); a mismatch is exit
status 2.

--download fetches each missing file into --root DIR, else $METALOOP_DATA/omniglot, else
~/.cache/metaloop/omniglot: the official images_background.zip and images_evaluation.zip
(from github.com/brendenlake/omniglot, verified against their published sha256 and md5) and
the Vinyals split files (from github.com/jakesnell/prototypical-networks, verified by
sha256). Each is written to a temporary file and renamed into place only once verified: a
failed or refused download leaves nothing behind. Files found already are not fetched
again.

--cache lists the cache of resized sets ($METALOOP_DATA/omniglot/resized, else
~/.cache/metaloop/omniglot/resized, whatever --root): each file's set, size, kernel, bytes,
the torch build (environment) that resized it and whether this environment uses it, and the
temporary files being written. Files of other environments stay there on purpose (two
virtual environments or kinds of CPU may share the folder). --prune-cache removes them, the
files of older cache formats and the temporary files that a killed writer left (one of this
host whose process no longer runs), printing each file removed and the bytes freed; this
environment's files and temporaries that may still be being written stay. Either one alone:
with --download, --check, --root or --no-progress it is a usage error (exit status 2)."""

EPILOG = """examples:
  metaloop data omniglot                 # what is found where, and what is missing
  metaloop data omniglot --check         # and whether each file matches its checksum
  metaloop data omniglot --download      # fetch the missing files, then report
  metaloop data omniglot --cache         # the resized sets kept, and which are this build's
  metaloop data omniglot --prune-cache   # remove those of other torch builds"""

_KINDS = {"npz": "packed npz", "folder": "folder of PNGs", "zip": "official zip",
          "txt": "split file"}


def register(subparsers) -> argparse.ArgumentParser:
    """Add the ``data`` subcommand and its data sets."""
    p = subparsers.add_parser("data", help="find, verify or fetch Omniglot's files",
                              description=DESCRIPTION, epilog=EPILOG,
                              formatter_class=argparse.RawDescriptionHelpFormatter)
    sets = p.add_subparsers(dest="dataset", metavar="DATASET", required=True)
    o = sets.add_parser("omniglot", help="Omniglot's sets and Vinyals split files",
                        description=OMNIGLOT_DESCRIPTION, epilog=EPILOG,
                        formatter_class=argparse.RawDescriptionHelpFormatter)
    o.add_argument("--root", type=path, default=None, metavar="DIR",
                   help="the only folder searched, and the one --download fills (default: "
                        "the search above)")
    o.add_argument("--download", action="store_true",
                   help="fetch the official files that are missing (verified by checksum)")
    o.add_argument("--check", action="store_true",
                   help="verify each file found against its checksum, as the loaders do")
    o.add_argument("--no-progress", action="store_true",
                   help="with --download: no download progress bar on stderr (without "
                        "--download nothing is downloaded: a usage error)")
    # the cache of resized sets (alone: see _run_cache)
    o.add_argument("--cache", action="store_true",
                   help="list the cache of resized sets: each file's environment, size, set, "
                        "bytes, and whether this environment uses it")
    o.add_argument("--prune-cache", action="store_true",
                   help="remove the cache files of other torch builds (environments) and "
                        "the temporary files of killed writers; print what was removed and "
                        "the bytes freed")
    o.set_defaults(func=run_omniglot)
    return p


def _line(f: omniglot.DataFile, checked: str | None = None) -> str:
    """One file of the report: its name, then where it is and what it is, or missing."""
    if f.path is None:
        return f"  {f.name:<28} missing"
    text = f"  {f.name:<28} {f.path} ({_KINDS[cast(str, f.kind)]})"      # found: has a kind
    return text if checked is None else f"{text}, {checked}"


def _checked(f: omniglot.DataFile) -> str:
    """What ``--check`` found for one file (ValueError: a mismatch, naming the file)."""
    against = omniglot.check_data_file(f)
    if against == "published":
        return "sha256 matches the published one"
    if against is not None:
        return f"sha256 matches {against}"
    if f.kind == "folder":
        return "no checksum (its images are checked as they are decoded)"
    return "not checked: no SHA256SUMS beside it lists it"


def run_omniglot(args) -> int:
    """Report (after fetching what is missing, with ``--download``) where each Omniglot file
    is; raise FileNotFoundError naming what is missing, ValueError naming a file that fails
    ``--check``; ValueError for ``--no-progress`` without ``--download``."""
    if args.cache or args.prune_cache:              # the cache of resized sets
        return _run_cache(args)
    if args.no_progress and not args.download:
        raise ValueError("--no-progress turns off the download progress bar, but --download "
                         "is not given, so nothing is downloaded and it would change "
                         "nothing: drop --no-progress, or add --download")
    if args.root is not None and os.path.exists(os.path.expanduser(args.root)) \
            and not os.path.isdir(os.path.expanduser(args.root)):
        raise ValueError(f"--root {args.root} is a file; expected the folder holding "
                         f"Omniglot's files")
    fetched = []
    if args.download:
        fetched = omniglot.download_data(args.root, progress=not args.no_progress)
    files = omniglot.data_files(args.root)
    where = ", ".join(str(d) for d in omniglot.search_dirs(args.root))
    print(f"Omniglot, searched in {where}:")
    bad = []
    for f in files:
        checked = None
        if args.check and f.path is not None:
            try:
                checked = _checked(f)
            except ValueError as e:       # a mismatch, or a SHA256SUMS that cannot be read
                checked = "FAILS the check (below)"
                bad.append(str(e))
        print(_line(f, checked))
    if fetched:
        print(f"fetched {', '.join(f.name for f in fetched)} into "
              f"{omniglot.download_dir(args.root)}")
    missing = [f for f in files if f.path is None]
    if missing:
        dest = omniglot.download_dir(args.root)
        raise FileNotFoundError(
            f"Omniglot {', '.join(f.name for f in missing)} not found in {where}. Put them "
            f"into {dest} (" + "; ".join(f"{f.name} from {f.url}, sha256 {f.sha256}"
                                         for f in missing)
            + f"), or fetch them there, verified by checksum, with: "
            f"{omniglot.fetch_command(args.root)}")
    if bad:                               # (one unreadable SHA256SUMS fails several files)
        raise ValueError("; ".join(dict.fromkeys(bad)))
    print("every file is found" + (" and matches its checksum where one is listed"
                                   if args.check else ""))
    return 0


# ---------------------------------------------------------------- --cache, --prune-cache

_ALONE = ("download", "check", "root", "no_progress")


def _amount(files: list[omniglot.CacheFile]) -> str:
    """``"2 files, 25445656 bytes (25.4 MB)"``."""
    n = sum(f.bytes for f in files)
    return f"{len(files)} file{'' if len(files) == 1 else 's'}, {n} bytes ({n / 1e6:.1f} MB)"


def _state(f: omniglot.CacheFile) -> str:
    """What a cache file is: the environment that resized it, or what kind of file it is."""
    if f.kind == "cache":
        return f.environment or "not recorded (an older cache format)"
    if f.kind in ("temporary", "stale"):
        return f"{'stale ' if f.kind == 'stale' else ''}temporary file: {f.writer}"
    return "not a whole cache file (left alone)"


def _run_cache(args) -> int:
    """``--cache``: list the cache of resized sets; ``--prune-cache``: remove the files this
    environment does not use, printing each and the bytes freed. ValueError: combined with
    another option, or a folder that cannot be listed or a file that cannot be removed."""
    given = "--cache" if args.cache else "--prune-cache"
    if args.cache and args.prune_cache:
        raise ValueError("--cache and --prune-cache: give one (--cache lists the files, "
                         "--prune-cache removes those this environment does not use)")
    others = [f"--{name.replace('_', '-')}" for name in _ALONE
              if getattr(args, name) not in (None, False)]
    if others:
        where = (f"; the cache is in {omniglot.cache_folder()} whatever --root "
                 f"($METALOOP_DATA picks it)") if args.root else ""
        raise ValueError(f"{given} cannot be combined with {', '.join(others)}: it acts on the "
                         f"cache of resized sets alone{where}")
    folder = omniglot.cache_folder()
    off = "; the cache is off ($" + omniglot.CACHE_ENV + ")" \
        if omniglot.resized_cache_dir() is None else ""
    print(f"Omniglot's cache of resized sets, {folder} (this environment: "
          f"{omniglot.cache_environment()}{off}):")
    if args.prune_cache:
        return _prune(folder)
    files = omniglot.cache_files(folder)
    if not files:
        print("  no cache files")
        return 0
    rows = [("set", "size", "kernel", "bytes", "used here", "environment or state", "file")] + [
        (f.set_name, f"{f.size}px", f.resample, str(f.bytes), "yes" if f.in_use else "no",
         _state(f), f.path.name) for f in files]
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]) - 1)]
    for r in rows:
        print("  " + "  ".join([c.ljust(w) for c, w in zip(r[:-1], widths, strict=True)]
                               + [r[-1]]))
    used = [f for f in files if f.in_use]
    prunable = [f for f in files if f.removable]
    print(f"{_amount(files)}; this environment uses {_amount(used)}; "
          + (f"metaloop data omniglot --prune-cache would remove {_amount(prunable)} (other "
             f"environments' and stale temporary files)" if prunable else "nothing to prune"))
    return 0


def _prune(folder) -> int:
    """``--prune-cache``: remove, then print each file removed and the bytes freed."""
    removed = omniglot.prune_cache(folder)
    for f in removed:
        print(f"  removed {f.path.name} ({_state(f)}; {f.bytes} bytes)")
    if not removed:
        print("nothing to remove: this environment's files, temporary files that may still "
              "be being written and files that are no whole cache file stay")
        return 0
    n = sum(f.bytes for f in removed)
    print(f"removed {len(removed)} file{'' if len(removed) == 1 else 's'}, freed {n} bytes "
          f"({n / 1e6:.1f} MB)")
    return 0

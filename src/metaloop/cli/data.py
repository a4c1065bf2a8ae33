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
again."""

EPILOG = """examples:
  metaloop data omniglot                 # what is found where, and what is missing
  metaloop data omniglot --check         # and whether each file matches its checksum
  metaloop data omniglot --download      # fetch the missing files, then report"""

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
                   help="no download progress bar on stderr")
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
    ``--check``."""
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

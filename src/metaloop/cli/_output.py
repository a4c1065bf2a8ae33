"""The output directory of a command: created and checked before any work."""

from __future__ import annotations

import os
from pathlib import Path


def prepare_out(path) -> Path:
    """Create the output directory, or fail before any work if it is not writable."""
    out = Path(path)
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise ValueError(f"cannot create output directory {out}: {e.strerror}") from e
    if not os.access(out, os.W_OK):
        raise ValueError(f"output directory {out} is not writable")
    return out

"""The files metaloop writes and reads are UTF-8 whatever the locale: ``atomic_write_text``
wrote in the locale's encoding, which under the C locale cannot hold a character outside
ASCII (UnicodeEncodeError), and the readers read them the same way."""

from __future__ import annotations

import os
import subprocess
import sys

SCRIPT = """
import json, locale, sys
from pathlib import Path
from metaloop.train.checkpoint import atomic_write_text
assert locale.getpreferredencoding(False).lower() in ("ascii", "ansi_x3.4-1968"), \\
    locale.getpreferredencoding(False)
out = Path(sys.argv[1])
name = "\\u0395\\u03bb\\u03bb\\u03b7\\u03bd\\u03b9\\u03ba\\u03ac"
atomic_write_text(out / "classes.json", json.dumps([name], ensure_ascii=False))
assert json.loads((out / "classes.json").read_bytes().decode("utf-8")) == [name]
print("ok")
"""


def test_text_is_written_as_utf8_under_an_ascii_locale(tmp_path):
    env = {**os.environ, "LC_ALL": "C", "LANG": "C", "PYTHONCOERCECLOCALE": "0",
           "PYTHONUTF8": "0", "PYTHONIOENCODING": "utf-8"}
    r = subprocess.run([sys.executable, "-c", SCRIPT, str(tmp_path)], env=env,
                       capture_output=True, text=True, encoding="utf-8", timeout=120)
    assert r.returncode == 0, r.stderr[-2000:]
    assert r.stdout.strip() == "ok"

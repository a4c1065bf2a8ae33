"""Regenerate the results tables in docs/*.md from the JSON records in docs/results/.

    python docs/gen_tables.py           # rewrite every <!-- table:NAME --> block
    python docs/gen_tables.py --check   # exit 1, naming each stale table; writes nothing
    python docs/gen_tables.py --paired A.json B.json   # A's mean minus B's, task by task,
                                                      # with the paired 95% CI

The same as ``python -m metaloop.evaluate.records``, with the folders found next to this
file, so it works from any working directory.
"""

import sys
from pathlib import Path

from metaloop.evaluate.records import main

if __name__ == "__main__":
    here = Path(__file__).resolve().parent
    sys.exit(main(["--docs", str(here), *sys.argv[1:]]))

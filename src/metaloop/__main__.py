"""``python -m metaloop``: the command line, as the ``metaloop`` script (torchrun starts its
ranks this way)."""

import os
import sys

from metaloop.cli.main import main

code = main()
if os.environ.get("WORLD_SIZE", "").strip() not in ("", "0", "1"):
    # A torchrun rank whose command has returned: its files are written and its process
    # group left. It leaves now, with its status: the interpreter's teardown of gloo's threads
    # can abort the process ("terminate called without an active exception"), and a signal
    # in that window would kill it; either made torchrun report a finished run as failed.
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)
sys.exit(code)

"""``python -m metaloop``: the command line, as the ``metaloop`` script (torchrun starts its
ranks this way)."""

import os
import sys

from metaloop.cli.main import main

code = main()
if os.environ.get("WORLD_SIZE", "").strip() not in ("", "0", "1"):
    # A torchrun rank whose command has returned: its files are written and its process
    # group left. It leaves now, with its status: the interpreter's teardown of gloo's threads
    # can abort the process ("terminate called without an active exception"), which made
    # torchrun report a finished run as failed. (A signal in the teardown is ignored: main
    # ignores SIGINT and SIGTERM once it has the status, metaloop.cli._signals.)
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)
sys.exit(code)

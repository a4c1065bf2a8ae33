"""metaloop: make models good at being fine-tuned, and fine-tune them well.

``ml.train(...)`` and ``ml.evaluate(...)`` call ``metaloop.train.train`` and
``metaloop.evaluate.evaluate``; the subpackages themselves stay importable.

Ctrl-C or SIGTERM while this package is imported as the start of the ``metaloop`` command
(its console script, or ``python -m metaloop``: torch's import takes a second or two) prints
one line and exits with status 130 at once, from the signal's handler
(``metaloop.cli._signals``: no KeyboardInterrupt is raised inside torch's, numpy's or
matplotlib's import code, which does not survive one and can swallow it); imported as a
library, the ``KeyboardInterrupt`` propagates and the handlers are left alone.
"""

import os as _os
import sys as _sys
import typing as _typing

if _typing.TYPE_CHECKING:
    from types import FrameType


def _started_as_the_command_line() -> bool:
    """Whether this import is the ``metaloop`` command starting: ``sys.argv[0]`` is its
    console script (``metaloop``, on Windows with ``.exe`` or ``-script.py`` after it; the
    script imports the package before it renames ``argv[0]``), or it is "-m", as while
    ``python -m`` locates its module (CPython's runpy imports the package then), and the
    module run is ``metaloop`` or one of its modules."""
    argv0 = (getattr(_sys, "argv", None) or [""])[0]      # an embedded interpreter: none
    if argv0 != "-m":
        name = _os.path.basename(argv0).lower()
        return name.removesuffix(".exe").removesuffix("-script.py") == "metaloop"
    frame: FrameType | None = _sys._getframe()
    while frame is not None:            # runpy._run_module_as_main(mod_name, alter_argv)
        if frame.f_code.co_name == "_run_module_as_main" \
                and frame.f_globals.get("__name__") == "runpy":
            return str(frame.f_locals.get("mod_name")).partition(".")[0] == "metaloop"
        frame = frame.f_back
    return False


try:
    if _started_as_the_command_line():    # SIGINT, SIGTERM while torch is imported: exit
        from metaloop.cli._signals import as_the_command

        as_the_command()
    if _typing.TYPE_CHECKING:
        # ml.train(...) and ml.evaluate(...) call these functions (metaloop._callable), which
        # a module's type cannot express: type checkers check the calls against them
        from metaloop import (
            _callable,
            adapt,
            build,
            config,
            continual,
            data,
            func,
            generative,
            meta,
            models,
            recipes,
            runs,
            tasks,
        )
        from metaloop.evaluate.heldout import evaluate as _evaluate
        from metaloop.train.loop import train as _train

        evaluate = _callable.as_callable_module(_evaluate)
        train = _callable.as_callable_module(_train)
    else:
        from metaloop import (
            adapt,
            build,
            config,
            continual,
            data,
            evaluate,
            func,
            generative,
            meta,
            models,
            recipes,
            runs,
            tasks,
            train,
        )
    from metaloop.evaluate import mean_ci
    from metaloop.runlock import RunInUseError
    from metaloop.runs import Run, load_run
    from metaloop.tasks import TaskBatch
    from metaloop.train import NonFiniteLossError
except KeyboardInterrupt:
    if not _started_as_the_command_line():
        raise
    if _os.environ.get("LOCAL_RANK", "0").strip() in ("", "0"):
        # (under torchrun, once per node: the other ranks of a node stopped alike, often
        # by torchrun itself as a rank before them exited with its own error)
        print("metaloop: interrupted while starting; nothing was written", file=_sys.stderr)
    # at once, as __main__.py leaves a torchrun rank: the interpreter's teardown after an
    # interrupted torch import can end the process by SIGINT instead of with this status
    _sys.stdout.flush()
    _sys.stderr.flush()
    _os._exit(130)

__all__ = [
    "NonFiniteLossError",
    "Run",
    "RunInUseError",
    "TaskBatch",
    "adapt",
    "build",
    "config",
    "continual",
    "data",
    "evaluate",
    "func",
    "generative",
    "load_run",
    "mean_ci",
    "meta",
    "models",
    "recipes",
    "runs",
    "tasks",
    "train",
]
__version__ = "0.2.0.dev0"

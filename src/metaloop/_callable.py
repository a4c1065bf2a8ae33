"""Make a subpackage callable, so ``ml.train(...)`` calls ``metaloop.train.train`` while
``import metaloop.train.checkpoint`` keeps working (a plain re-export would shadow it)."""

from __future__ import annotations

import inspect
import sys
import types
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from collections.abc import Callable
    from typing import Any, Generic, ParamSpec, TypeVar

    P = ParamSpec("P")
    R = TypeVar("R")

    class CallableModule(Generic[P, R]):
        """What type checkers see of a module that ``make_callable`` made callable: its calls
        are ``func``'s (checked against its signature); its attributes (functions,
        submodules) are not known precisely (``from metaloop.train import ...`` is)."""

        def __call__(self, *args: P.args, **kwargs: P.kwargs) -> R: ...
        def __getattr__(self, name: str) -> Any: ...

    def as_callable_module(func: Callable[P, R]) -> CallableModule[P, R]: ...


def make_callable(module_name: str, func) -> None:
    """Calls of the module ``module_name`` go to ``func``; ``inspect.signature`` of the module
    (IDEs, ``help``) gives ``func``'s, not ``(*args, **kwargs)``."""
    class CallableModule(types.ModuleType):
        def __call__(self, *args, **kwargs):
            return func(*args, **kwargs)

    CallableModule.__call__.__doc__ = func.__doc__
    module = sys.modules[module_name]
    module.__class__ = CallableModule
    module.__signature__ = inspect.signature(func)  # type: ignore[attr-defined]  # read by inspect


def check_progress(where: str, progress):
    """``progress`` as the function calls it: a callable ``progress(n)``, or None (given as
    None or False: no progress).

    Raises:
        ValueError: naming ``where`` and the value: True (these functions draw no bar of
            their own: give a tqdm bar's ``update``) or anything else that is not callable.
    """
    if progress is None or progress is False:
        return None
    if not callable(progress):
        raise ValueError(f"{where}: progress must be None or False (none), or a callable "
                         f"progress(n) called with the work just done (e.g. a tqdm bar's "
                         f"update), got {progress!r}")
    return progress

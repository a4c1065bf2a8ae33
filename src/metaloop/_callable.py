"""Make a subpackage callable, so ``ml.train(...)`` calls ``metaloop.train.train`` while
``import metaloop.train.checkpoint`` keeps working (a plain re-export would shadow it)."""

from __future__ import annotations

import sys
import types


def make_callable(module_name: str, func) -> None:
    class CallableModule(types.ModuleType):
        def __call__(self, *args, **kwargs):
            return func(*args, **kwargs)

    CallableModule.__call__.__doc__ = func.__doc__
    sys.modules[module_name].__class__ = CallableModule

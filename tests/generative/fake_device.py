"""A stand-in for a GPU on a machine without one: tensors "on the device" hold their numbers
on the CPU but say they are on ``meta``, and a dispatch mode enforces what CUDA enforces.

Inside ``OnTheDevice()``:

- ``x.to(DEVICE)``, ``module.to(DEVICE)`` and factories given ``device=DEVICE`` make device
  tensors (``OnDevice``); ``.to("cpu")`` / ``.cpu()`` brings one back;
- an op that mixes a device tensor with a host tensor of one or more dimensions fails, as
  on CUDA ("Expected all tensors to be on the same device"); 0-dim host tensors, the
  indices of indexing and cross-device copies are allowed, as on CUDA;
- a random draw on the device with a host (CPU) generator fails, as on CUDA ("Expected a
  'cuda' device type for generator");
- ``float()``, ``bool()``, ``.item()`` and ``.tolist()`` read a device tensor (a sync on
  CUDA), but ``.numpy()`` fails, as it does for a CUDA tensor.

The arithmetic is the CPU's, so a run on this device gives the CPU's numbers; only what is
moved where differs. A run that works here moves its data as a CUDA run needs.
"""

from __future__ import annotations

import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_flatten, tree_map

DEVICE = torch.device("meta")

# ops whose tensors may be on both sides, as on CUDA
_MIXING = {"aten._to_copy.default", "aten.copy_.default", "aten.index.Tensor",
           "aten.index_put_.default", "aten.index_put.default",
           "aten._index_put_impl_.default"}


class OnDevice(torch.Tensor):
    """A tensor on the stand-in device: a CPU tensor ``inner`` that says it is on ``meta``."""

    @staticmethod
    def __new__(cls, inner: torch.Tensor):
        t = torch.Tensor._make_wrapper_subclass(
            cls, inner.shape, strides=inner.stride(), storage_offset=inner.storage_offset(),
            dtype=inner.dtype, device=DEVICE, requires_grad=False)
        t.inner = inner
        return t

    __torch_function__ = torch._C._disabled_torch_function_impl

    @classmethod
    def __torch_dispatch__(cls, func, types, args=(), kwargs=None):
        raise RuntimeError(f"{func} on a device tensor outside OnTheDevice()")

    def tolist(self):                   # a CUDA tensor's tolist copies it to the host
        return self.inner.tolist()

    def __repr__(self) -> str:
        return f"OnDevice({self.inner!r})"


def _unwrap(x):
    return x.inner if isinstance(x, OnDevice) else x


class OnTheDevice(TorchDispatchMode):
    """Run tensors moved to ``DEVICE`` as on a GPU (module doc); ``ops`` counts the ops that
    ran on the device."""

    def __init__(self) -> None:
        super().__init__()
        self.ops = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        name = str(func)
        tensors = [t for t in tree_flatten((args, kwargs))[0] if isinstance(t, torch.Tensor)]
        on = any(isinstance(t, OnDevice) for t in tensors)
        device = kwargs.get("device")
        to_device = device is not None and torch.device(device).type == DEVICE.type
        if on and name not in _MIXING:
            host = [tuple(t.shape) for t in tensors
                    if not isinstance(t, OnDevice) and t.dim() > 0]
            if host:
                raise RuntimeError(f"{name}: expected all tensors to be on the same device, "
                                   f"got the device's and host tensors of shapes {host}")
        generator = kwargs.get("generator")
        if (generator is not None and (on or to_device)
                and generator.device.type != DEVICE.type):
            raise RuntimeError(f"{name}: a draw on the device with a generator on "
                               f"{generator.device}")
        a, k = tree_map(_unwrap, args), tree_map(_unwrap, kwargs)
        if to_device:
            k = {**k, "device": torch.device("cpu")}
        out = func(*a, **k)
        if name == "aten._to_copy.default":          # a move: to the device, or to the host
            stays = device is None and isinstance(args[0], OnDevice)
            return OnDevice(out) if to_device or stays else out
        if func._schema.name.endswith("_"):                         # in place
            return args[0]
        if func._schema.overload_name == "out":
            return kwargs["out"]
        if not (on or to_device) or name == "aten._local_scalar_dense.default":
            return out
        self.ops += 1
        return tree_map(lambda x: OnDevice(x) if isinstance(x, torch.Tensor) else x, out)


# What differs between any two runs, on whatever device: clock readings, and a checkpoint's
# hash of its state (times and all)
TIMES = ("cpu_s", "wall_s", "train_cpu_s", "train_wall_s", "eval_cpu_s", "eval_wall_s",
         "started", "state_sha256")


def untimed(value):
    """``value`` (results read from JSON) without its ``TIMES`` keys, at any depth."""
    if isinstance(value, dict):
        return {k: untimed(v) for k, v in value.items() if k not in TIMES}
    if isinstance(value, list):
        return [untimed(v) for v in value]
    return value

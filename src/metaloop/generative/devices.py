"""The devices the generative runs take.

``experiment.run`` and ``sweep``, ``inversion.compare`` and ``transfer_study``, and the
protocol's ``train_protocol``, ``run`` and ``evaluate_run`` take a ``device`` (None: the
CPU), checked by ``resolve_device``; ``metaloop vae --device`` passes it down, and names a
GPU run's records by ``device_name``. Random draws stay on their generators' devices
(``nets.draw_device``), so a seeded run draws the same noise on every device; only
``fit.fit_generative`` tosses the binarisation's coins on a CUDA device with a CUDA
generator of its own (``fit.coin_generator``).
"""

from __future__ import annotations

import torch

DEVICES = ("cpu", "cuda")

def resolve_device(device: str | torch.device) -> torch.device:
    """``device`` as a ``torch.device`` this process can use.

    Args:
        device: ``"cpu"``, ``"cuda"`` (the current CUDA device), ``"cuda:N"`` or a
            ``torch.device`` of either type.

    Returns:
        The device; ``"cuda"`` becomes ``cuda:<current index>``.

    Raises:
        ValueError: a device that is not the CPU or CUDA, or CUDA where torch sees no CUDA
            device (a build without CUDA, or no GPU visible).
    """
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError) as e:       # torch: "Expected one of cpu, cuda, ..."
        raise ValueError(f"device {device!r} is not a torch device ({e}); choose one of "
                         f"{', '.join(DEVICES)}") from None
    if dev.type not in DEVICES:
        raise ValueError(f"the generative runs take device {' or '.join(DEVICES)}, got "
                         f"{str(dev)!r}")
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise ValueError(f"device {str(dev)!r} requested but torch sees no CUDA device "
                             f"(torch {torch.__version__}, built "
                             f"{'with' if torch.backends.cuda.is_built() else 'without'} "
                             f"CUDA); use device cpu")
        index = torch.cuda.current_device() if dev.index is None else dev.index
        if index >= torch.cuda.device_count():
            raise ValueError(f"device {str(dev)!r} requested but torch sees "
                             f"{torch.cuda.device_count()} CUDA device(s)")
        dev = torch.device("cuda", index)
    return dev


def device_or_cpu(device: str | torch.device | None) -> torch.device:
    """``resolve_device(device)``, or the CPU for None."""
    return torch.device("cpu") if device is None else resolve_device(device)


def device_name(device: str | torch.device) -> str | None:
    """What a record says measured it, for a run on ``device``: for CUDA the GPU's name and
    whether TF32 was allowed in matmuls and convolutions (``metaloop.evaluate.records
    .gpu_device``, e.g. ``"NVIDIA H100 80GB HBM3 (TF32 off)"``); None for the CPU, whose
    records name its model and threads themselves (``experiment.cpu_device``).

    Raises:
        ValueError: as ``resolve_device``.
    """
    from metaloop.evaluate.records import gpu_device

    dev = resolve_device(device)
    return gpu_device(dev) if dev.type == "cuda" else None

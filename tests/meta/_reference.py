"""The Conv4 network spelled out with torch.nn.functional on plain tensors, independently of
metaloop's functional core: the reference the meta-learner tests compare against."""

import torch
import torch.nn.functional as F


def conv4_features_ref(p, x, prefix=""):
    """Conv4 (max-pool) features ``[N, D]``, BatchNorm as plain batch mean/variance arithmetic.

    ``p`` maps ``f"{prefix}body.{i}.conv.weight"`` etc. to tensors; ``x`` is ``[N, C, H, W]``.
    """
    for i in range(4):
        b = f"{prefix}body.{i}."
        x = F.conv2d(x, p[b + "conv.weight"], p[b + "conv.bias"], padding=1)
        mean = x.mean((0, 2, 3), keepdim=True)
        var = ((x - mean) ** 2).mean((0, 2, 3), keepdim=True)
        x = (x - mean) / torch.sqrt(var + 1e-5)
        x = x * p[b + "bn.weight"][None, :, None, None] + p[b + "bn.bias"][None, :, None, None]
        x = F.max_pool2d(F.relu(x), 2)
    return x.flatten(1)

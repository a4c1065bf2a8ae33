"""Checks and models shared by the adaptation tests (ridge_head, newton_head; heads, lora)."""

import torch
from torch.utils._python_dispatch import TorchDispatchMode


class LargestOutput(TorchDispatchMode):
    """Records the largest numel of any tensor an aten op returns, backward ops included."""

    def __init__(self):
        super().__init__()
        self.largest = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        for o in out if isinstance(out, (tuple, list)) else (out,):
            if isinstance(o, torch.Tensor):
                self.largest = max(self.largest, o.numel())
        return out


class TiedHead(torch.nn.Module):
    """A token model whose output layer shares the input embedding's weight ``[V, D]``:
    ``named_parameters()`` calls the head's weight ``embed.weight``."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.embed = torch.nn.Embedding(5, 8)
        self.body = torch.nn.Linear(8, 8)
        self.head = torch.nn.Linear(8, 5)
        self.head.weight = self.embed.weight

    def forward(self, x, head=True):
        f = torch.tanh(self.body(self.embed(x).mean(1)))
        return self.head(f) if head else f

"""Weight layout of the traced backbone's linear layers.

``nn.Linear`` keeps its weight ``W`` as ``[out, in]`` rows, so ``linear(x, W, b)`` asks MKL for
``x @ W.T``, a GEMM with a transposed operand that MKL repacks on every call. With the dozen rows
of one short query that repacking, not the arithmetic, is most of the layer: the weights stream
from memory at about half the speed the machine can read them. Storing the same ``W``
column-major (``W.T`` contiguous) lets the same ``aten::linear`` run ``x @ W.T`` as a plain GEMM
that streams the weights once. At many rows both layouts run at the same speed.

The values, the operators of the graph and their order are unchanged: vectors agree with
sentence-transformers' to float32 rounding. TorchScript freezing and saving keep the strides.
``bench/linear_forms.py`` measures both layouts.
"""

from __future__ import annotations

import torch


def column_major(weight: torch.Tensor) -> torch.Tensor:
    """The same matrix, stored so that its transpose is contiguous."""
    return weight.t().contiguous().t()


def store_linear_weights_column_major(model: torch.nn.Module) -> int:
    """Re-lays the weight of every float ``nn.Linear`` of `model` in place; returns how many.
    Quantised linear layers (int8 export) are other classes and keep their own packing."""
    count = 0
    for module in model.modules():
        if type(module) is torch.nn.Linear:
            module.weight = torch.nn.Parameter(
                column_major(module.weight.detach()), requires_grad=False
            )
            count += 1
    return count

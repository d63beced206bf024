"""The exported graph's linear layers call ``fastembed::linear`` instead of ``aten::linear``.

``fastembed::linear`` is the engine's own libtorch operator (``rust/core/csrc``), registered when
``fastembed_ext._native`` is imported. Its contract is ``aten::linear``'s, on the same
``nn.Linear`` weight (``[out, in]``, row-major). For a few rows (the tokens of one short query
or a small batch: up to 64 with AVX-512, 24 with AVX2) it runs a skinny GEMM that streams the
weights once, front to back, with the arithmetic overlapping the reads; MKL's GEMM streams them
at about 60% of that speed for so few rows, and one short query is bound by reading every weight
once. More rows go to ``aten::linear`` (MKL) itself. ``bench/linear_forms.py`` measures both.

Values agree with ``aten::linear`` to float32 rounding (the sums run in another order).
"""

from __future__ import annotations

import torch

from . import _native  # noqa: F401  (registers torch.ops.fastembed)


class FastembedLinear(torch.nn.Module):
    """``nn.Linear``'s forward through ``fastembed::linear``; same parameters."""

    def __init__(self, linear: torch.nn.Linear) -> None:
        super().__init__()
        self.weight = torch.nn.Parameter(linear.weight.detach().contiguous(), requires_grad=False)
        self.bias = (
            None
            if linear.bias is None
            else torch.nn.Parameter(linear.bias.detach().contiguous(), requires_grad=False)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.ops.fastembed.linear(x, self.weight, self.bias)


def route_linear_layers(model: torch.nn.Module) -> int:
    """Replaces every float ``nn.Linear`` of `model` in place; returns how many. Quantised linear
    layers (int8 export) are other classes and keep their own kernels."""
    targets = [
        (parent, name)
        for parent in model.modules()
        for name, child in parent.named_children()
        if type(child) is torch.nn.Linear
    ]
    for parent, name in targets:
        setattr(parent, name, FastembedLinear(getattr(parent, name)))
    return len(targets)

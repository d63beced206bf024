"""The exported graph's linear layers call ``fastembed::packed_linear`` instead of ``aten::linear``.

``fastembed::packed_linear`` is the engine's own libtorch operator (``rust/core/csrc``),
registered when ``fastembed_ext._native`` is imported. Its contract is ``aten::linear``'s, on
``nn.Linear``'s weight packed once, at export, by ``fastembed::pack_linear_weight``: panels of 64
output columns, each stored k-major, so that the weights stream front to back and a tile of rows
times a panel's columns needs no horizontal sums. With AVX-512 it runs for every row count (at one
short query, 17 rows, in about half of MKL's time, bound by reading the weights; at full batches
within about 5% of MKL). With AVX2 it runs up to 64 rows and hands more to MKL on the unpacked
weight. ``bench/linear_forms.py`` measures both. The exact GELU after a feed-forward layer runs
inside the same operator, each thread on the columns it just computed.

Values agree with ``aten::linear`` to float32 rounding (the sums run in another order).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from . import _native  # noqa: F401  (registers torch.ops.fastembed)
from .architectures import ARCHITECTURES


class FastembedLinear(torch.nn.Module):
    """``nn.Linear``'s forward through ``fastembed::packed_linear``: the same bias, the weight
    packed (``weight`` gives it back as ``[out, in]``). With ``activation="gelu"`` the exact GELU
    that followed the layer runs inside the operator."""

    def __init__(
        self, weight: torch.Tensor, bias: torch.Tensor | None, activation: str | None = None
    ) -> None:
        super().__init__()
        self.activation = activation
        self.out_features = int(weight.shape[0])
        self.packed_weight = torch.nn.Parameter(
            torch.ops.fastembed.pack_linear_weight(weight.detach()), requires_grad=False
        )
        self.bias = (
            None
            if bias is None
            else torch.nn.Parameter(bias.detach().contiguous(), requires_grad=False)
        )

    @classmethod
    def of(cls, linear: torch.nn.Linear, activation: str | None = None) -> FastembedLinear:
        return cls(linear.weight, linear.bias, activation)

    @property
    def weight(self) -> torch.Tensor:
        """The ``[out, in]`` weight, unpacked (a copy)."""
        return torch.ops.fastembed.unpack_linear_weight(self.packed_weight, self.out_features)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.ops.fastembed.packed_linear(
            x, self.packed_weight, self.out_features, self.bias, self.activation
        )


# (linear layer, activation applied to its output) attribute pairs of the supported
# architectures' feed-forward blocks, and their query, key and value projections (which all read
# the same hidden states): architectures.py's table.
_LINEAR_THEN_ACTIVATION = tuple(
    dict.fromkeys(a.linear_then_activation for a in ARCHITECTURES.values() if a.linear_then_activation)
)
_QUERY_KEY_VALUE = tuple(dict.fromkeys(a.query_key_value for a in ARCHITECTURES.values() if a.query_key_value))


def _is_exact_gelu(module: object) -> bool:
    if isinstance(module, torch.nn.GELU):
        return module.approximate == "none"
    # transformers' GELUActivation (hidden_act "gelu") calls torch.nn.functional.gelu
    return type(module).__name__ == "GELUActivation" and getattr(module, "act", None) is F.gelu




class FusedProjection(torch.nn.Module):
    """Several linear layers that read the same input, as one ``fastembed::packed_linear`` over their
    stacked weights: one pass over the input and one parallel region instead of three."""

    def __init__(self, linears: list[torch.nn.Linear]) -> None:
        super().__init__()
        self.widths = [linear.out_features for linear in linears]
        self.starts = [sum(self.widths[:index]) for index in range(len(linears))]
        biases = [linear.bias for linear in linears]
        self.projection = FastembedLinear(
            torch.cat([linear.weight for linear in linears]),
            None if biases[0] is None else torch.cat(biases),
        )
        self._last: tuple[torch.Tensor, torch.Tensor] | None = None

    def part(self, x: torch.Tensor, index: int) -> torch.Tensor:
        # The first of the parts to see this input computes all of them; the trace records one
        # operator and a slice per part.
        last = self._last
        if last is None or last[0] is not x:
            last = self._last = (x, self.projection(x))
        return last[1].narrow(-1, self.starts[index], self.widths[index])


class _ProjectionPart(torch.nn.Module):
    def __init__(self, fused: FusedProjection, index: int) -> None:
        super().__init__()
        self.index = index
        object.__setattr__(self, "fused", fused)  # owned by the attention module, not by each part

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fused.part(x, self.index)


def _fuse_query_key_value(model: torch.nn.Module) -> None:
    for attention in list(model.modules()):
        for names in _QUERY_KEY_VALUE:
            linears = [getattr(attention, name, None) for name in names]
            if all(type(l) is torch.nn.Linear for l in linears) and (
                len({(l.in_features, l.bias is None) for l in linears}) == 1
            ):
                fused = FusedProjection(linears)
                attention.fused_query_key_value = fused
                for index, name in enumerate(names):
                    setattr(attention, name, _ProjectionPart(fused, index))


def route_linear_layers(model: torch.nn.Module) -> int:
    """Replaces every float ``nn.Linear`` of `model` in place; returns how many. A feed-forward
    layer followed by exact GELU takes the GELU into the operator (the activation module becomes
    ``nn.Identity``). Quantised linear layers (int8 export) are other classes and keep their own
    kernels. Query, key and value projections become one ``FusedProjection``."""
    replaced = sum(1 for module in model.modules() if type(module) is torch.nn.Linear)
    _fuse_query_key_value(model)
    for parent in model.modules():
        for linear_name, activation_name in _LINEAR_THEN_ACTIVATION:
            linear = getattr(parent, linear_name, None)
            activation = getattr(parent, activation_name, None)
            if type(linear) is torch.nn.Linear and _is_exact_gelu(activation):
                setattr(parent, linear_name, FastembedLinear.of(linear, "gelu"))
                setattr(parent, activation_name, torch.nn.Identity())
    targets = [
        (parent, name)
        for parent in model.modules()
        for name, child in parent.named_children()
        if type(child) is torch.nn.Linear
    ]
    for parent, name in targets:
        setattr(parent, name, FastembedLinear.of(getattr(parent, name)))
    return replaced

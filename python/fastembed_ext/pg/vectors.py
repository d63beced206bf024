"""pgvector's text form of a vector, the one place it is written (the backend, the 0.1.0 server
module and the queue workers all send vectors as text)."""

from __future__ import annotations

TYPE_CHECKING = False  # (typing costs every new backend milliseconds)
if TYPE_CHECKING:
    from typing import Any


def vector_literal(v: Any) -> str:
    """`v` (a float32 row) as pgvector text; repr() of each float32 widened to double reads back
    exactly."""
    return "[" + ",".join(map(repr, v.tolist())) + "]"

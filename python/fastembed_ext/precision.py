"""Lower-precision vectors, with sentence-transformers' `quantize_embeddings` semantics.

* ``int8`` / ``uint8``: each dimension's range ``[min, max]`` cut into 256 buckets. The ranges come
  from `ranges` (shape ``(2, dim)``), else from `calibration_embeddings`, else from the vectors
  being quantized themselves (then the result depends on what else is in the call, and one vector
  alone cannot be quantized): pass ranges from a representative sample for stable codes.
* ``binary`` / ``ubinary``: one bit per dimension (``x > 0``), packed 8 per byte; ``binary`` is the
  packed byte less 128, as int8.
"""

from __future__ import annotations

from typing import Literal

import numpy as np
import numpy.typing as npt

PRECISIONS = ("float32", "int8", "uint8", "binary", "ubinary")
Precision = Literal["float32", "int8", "uint8", "binary", "ubinary"]


def quantize_embeddings(
    embeddings: npt.ArrayLike,
    precision: Precision,
    ranges: npt.ArrayLike | None = None,
    calibration_embeddings: npt.ArrayLike | None = None,
) -> np.ndarray:
    """`embeddings` (float, ``(n, dim)`` or ``(dim,)``) at `precision`."""
    check_precision(precision)
    vectors = np.asarray(embeddings)
    if vectors.dtype.kind not in "f":
        raise TypeError(f"embeddings to quantize must be floats, not {vectors.dtype}")
    if precision == "float32":
        return vectors.astype(np.float32, copy=False)
    if precision in ("binary", "ubinary"):
        packed = np.packbits(vectors > 0, axis=-1)
        return packed if precision == "ubinary" else (packed.astype(np.int16) - 128).astype(np.int8)
    bounds = _ranges(vectors, precision, ranges, calibration_embeddings).astype(np.float32, copy=False)
    low = bounds[0]
    step = (bounds[1] - low) / 255
    step = np.where(step == 0, 1, step)
    buckets = np.clip(np.floor((vectors - low) / step), 0, 255)
    return buckets.astype(np.uint8) if precision == "uint8" else (buckets - 128).astype(np.int8)


def check_precision(precision: str) -> None:
    if precision not in PRECISIONS:
        raise ValueError(f"precision {precision!r} is not supported; use one of {', '.join(PRECISIONS)}")


def _ranges(
    vectors: np.ndarray, precision: str, ranges: npt.ArrayLike | None, calibration: npt.ArrayLike | None
) -> np.ndarray:
    if ranges is not None:
        bounds = np.asarray(ranges)
        if bounds.shape != (2, vectors.shape[-1]):
            raise ValueError(f"ranges must have shape (2, {vectors.shape[-1]}), not {bounds.shape}")
        return bounds
    sample = vectors if calibration is None else np.asarray(calibration)
    if calibration is None and (sample.ndim == 1 or sample.shape[0] == 1):
        raise ValueError(
            f"cannot compute {precision} ranges from a single vector; pass ranges= or "
            "calibration_embeddings= from a representative set of vectors"
        )
    return np.vstack((sample.min(axis=0), sample.max(axis=0)))

"""The public `Encoder`: resolves a model to a bundle, then hands the work to the Rust core."""

from __future__ import annotations

import operator
import os
import warnings
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Literal, overload

import numpy as np
import numpy.typing as npt

from . import _native
from .errors import ModelLoadError, TruncationWarning
from .export import MANIFEST_FILE, resolve_bundle

# With a progress bar the texts go to the engine in chunks, so the bar moves while each chunk stays
# large enough for the engine to group texts of similar length: 8 batches when the caller caps
# the batch size, else this many texts.
_BATCHES_PER_PROGRESS_STEP = 8
_TEXTS_PER_PROGRESS_STEP = 256


class Encoder:
    """Embeds text with a sentence-transformers model, giving the vectors sentence-transformers gives.

    `model` is a bundle made by `fastembed_ext.export`, a sentence-transformers or Hugging Face
    folder (exported once into a cache and reused), or a hub id where a network exists.
    `threads` sets libtorch's intra-op threads for this process. `batch_tokens` caps the padded
    tokens (rows x longest row) of one forward pass; the default suits every supported model.
    `fingerprint` pins the model to a bundle's content (see `Encoder.fingerprint`): `model` must
    then be a bundle, and one whose files give another fingerprint raises `BundleChangedError`.
    """

    def __init__(
        self,
        model: str | os.PathLike[str],
        threads: int | None = None,
        batch_tokens: int | None = None,
        *,
        fingerprint: str | None = None,
    ) -> None:
        if batch_tokens is not None:
            try:
                batch_tokens = operator.index(batch_tokens)  # int, numpy integers
            except TypeError:
                raise TypeError(
                    f"batch_tokens must be an int, not {type(batch_tokens).__name__}"
                ) from None
            if batch_tokens < 1:
                raise ValueError(f"batch_tokens must be a positive integer, got {batch_tokens}")
        if fingerprint is None:
            bundle = resolve_bundle(model)
        else:
            bundle = Path(os.fspath(model)).expanduser()
            if not (bundle / MANIFEST_FILE).is_file():
                raise ModelLoadError(
                    f"{bundle}: not a fastembed_ext bundle (no {MANIFEST_FILE}); a fingerprint "
                    "pins a bundle's content, so checkpoints cannot be loaded pinned"
                )
        self._native = _native.Encoder(os.fspath(bundle), threads, fingerprint)
        self._batch_tokens = batch_tokens

    @overload
    def encode(
        self,
        texts: str,
        *,
        batch_size: int | None = None,
        normalize: bool | None = None,
        show_progress_bar: bool = False,
    ) -> npt.NDArray[np.float32]: ...
    @overload
    def encode(
        self,
        texts: Iterable[str],
        *,
        batch_size: int | None = None,
        normalize: bool | None = None,
        show_progress_bar: bool = False,
    ) -> npt.NDArray[np.float32]: ...

    def encode(
        self,
        texts: str | Iterable[str],
        *,
        batch_size: int | None = None,
        normalize: bool | None = None,
        show_progress_bar: bool = False,
    ) -> npt.NDArray[np.float32]:
        """Float32 vectors, C-contiguous: `(len(texts), dim)` for a list, `(dim,)` for one str.

        `batch_size=None` lets the engine size each batch by its token budget; a number caps the
        texts per forward pass. `normalize=None` follows the model (L2-normalised when it has a
        Normalize module).
        """
        if isinstance(texts, str):
            vectors, truncated = self._native.encode([texts], batch_size, normalize, self._batch_tokens)
            self._warn_truncated(truncated, 1)
            return vectors[0]
        if not show_progress_bar:
            vectors, truncated = self._native.encode(texts, batch_size, normalize, self._batch_tokens)
            self._warn_truncated(truncated, len(vectors))
            return vectors
        return self._encode_with_progress(list(texts), batch_size, normalize)

    def _warn_truncated(self, truncated: int, total: int) -> None:
        if truncated:
            warnings.warn(
                f"{truncated} of {total} text(s) were longer than this model's max_seq_length "
                f"({self.max_seq_length} tokens) and were embedded from their beginning only",
                TruncationWarning,
                stacklevel=3,
            )

    def _encode_with_progress(
        self, texts: Sequence[str], batch_size: int | None, normalize: bool | None
    ) -> npt.NDArray[np.float32]:
        from tqdm.auto import tqdm

        out = np.empty((len(texts), self.dim), dtype=np.float32)
        step = batch_size * _BATCHES_PER_PROGRESS_STEP if batch_size else _TEXTS_PER_PROGRESS_STEP
        truncated = 0
        with tqdm(total=len(texts), desc="Encoding", unit="text") as bar:
            for start in range(0, len(texts), step):
                chunk = texts[start : start + step]
                out[start : start + len(chunk)], cut = self._native.encode(
                    chunk, batch_size, normalize, self._batch_tokens
                )
                truncated += cut
                bar.update(len(chunk))
        self._warn_truncated(truncated, len(texts))
        return out

    def windows(self, text: str, window: int | None = None, overlap: int = 0) -> list[tuple[int, int]]:
        """Character spans ``(start, end)`` of token windows that together cover `text`, cut by this
        model's own tokenizer: `window` tokens each (default and most: `window_tokens`, all that
        one vector sees), each overlapping the one before by `overlap` tokens. ``text[start:end]``
        of each span is a chunk this model embeds whole."""
        if not isinstance(text, str):
            raise TypeError(f"text is {type(text).__name__}, expected str")
        return self._native.windows(text, window, overlap)

    @property
    def window_tokens(self) -> int:
        """The most tokens of a text one vector sees: max_seq_length less the special tokens."""
        return self._native.window_tokens

    def tokenize(self, texts: Iterable[str]) -> list[list[int]]:
        """Token ids each text is embedded with (special tokens added, truncated)."""
        return self._native.tokenize(texts)

    @property
    def dim(self) -> int:
        return self._native.dim

    @property
    def max_seq_length(self) -> int:
        return self._native.max_seq_length

    @property
    def similarity(self) -> Literal["cosine", "dot"]:
        return self._native.similarity

    @property
    def normalize(self) -> bool:
        """Whether the model L2-normalises its vectors by default."""
        return self._native.normalize

    @property
    def fingerprint(self) -> str:
        """BLAKE3 hash over the bundle's manifest, tokenizer and model files: `blake3:<hex>`. Loading
        with `Encoder(bundle, fingerprint=...)` refuses a bundle whose files give another one."""
        return self._native.fingerprint

    @property
    def path(self) -> Path:
        """The bundle directory the vectors come from."""
        return Path(self._native.path)

    def __repr__(self) -> str:
        return repr(self._native)

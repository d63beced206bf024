"""The public `Encoder`: resolves a model to a bundle, then hands the work to the Rust core."""

from __future__ import annotations

import operator
import os
import warnings
from collections.abc import Callable, Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any, Literal

import numpy as np
import numpy.typing as npt

from . import _native
from .errors import ModelLoadError, TruncationWarning
from ._files import MANIFEST_FILE
from .resolve import resolve_bundle
from .precision import Precision, check_precision, quantize_embeddings

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

    def encode(
        self,
        texts: str | Iterable[str],
        prompt_name: str | None = None,
        prompt: str | None = None,
        batch_size: int | None = None,
        show_progress_bar: bool | None = False,
        *,
        normalize: bool | None = None,
        normalize_embeddings: bool = False,
        truncate_dim: int | None = None,
        precision: Precision = "float32",
        convert_to_numpy: bool = True,
        convert_to_tensor: bool = False,
        device: str | None = None,
        output_value: str | None = "sentence_embedding",
    ) -> Any:
        """Float32 vectors, C-contiguous: `(len(texts), dim)` for a list, `(dim,)` for one str.

        The arguments are sentence-transformers' (`SentenceTransformer.encode`), with its meaning:

        * `prompt_name` (one of `prompts`) or `prompt` (a text) is put before every text, tokens
          counted in `max_seq_length`; with neither, the model's `default_prompt_name` applies.
        * `batch_size=None` lets the engine size each batch by its token budget; a number caps the
          texts per forward pass. (A number given where `prompt_name` stands is taken as
          `batch_size`, as sentence-transformers 2 placed it.)
        * `truncate_dim` keeps the first dimensions (Matryoshka), after the model's Normalize
          step; `normalize_embeddings=True` then L2-normalises what is left.
        * `precision` quantizes as `fastembed_ext.quantize_embeddings` does (int8/uint8 ranges from
          the call's own vectors).
        * `convert_to_tensor=True` gives a torch tensor that shares the array's memory;
          `convert_to_numpy=False` a list of such row tensors. `device` can only be the CPU.

        `normalize` (this engine's own) switches the model's Normalize step: None follows the model.
        """
        if isinstance(prompt_name, int) and not isinstance(prompt_name, bool) and batch_size is None:
            prompt_name, batch_size = None, prompt_name
        for name, value in (("prompt_name", prompt_name), ("prompt", prompt)):
            if value is not None and not isinstance(value, str):
                raise TypeError(f"{name} must be a str, not {type(value).__name__}")
        if prompt is not None and prompt_name is not None:
            warnings.warn("both prompt and prompt_name were given; prompt is used", UserWarning, stacklevel=2)
        _check_device(device)
        if output_value != "sentence_embedding":
            raise ValueError(
                f"output_value {output_value!r} is not supported; fastembed_ext returns sentence embeddings only"
            )
        check_precision(precision)  # before the work, not after it

        def run(chunk: Iterable[str]) -> tuple[npt.NDArray[np.float32], int]:
            return self._native.encode(chunk, batch_size, normalize, self._batch_tokens, truncate_dim,
                                       normalize_embeddings, prompt, prompt_name)

        if isinstance(texts, str):
            vectors, truncated = run([texts])
            self._warn_truncated(truncated, 1)
            return _convert(vectors, precision, convert_to_numpy, convert_to_tensor)[0]
        if show_progress_bar:
            vectors = self._encode_with_progress(list(texts), run, batch_size)
        else:
            vectors, truncated = run(texts)
            self._warn_truncated(truncated, len(vectors))
        return _convert(vectors, precision, convert_to_numpy, convert_to_tensor)

    def encode_query(self, texts: str | Iterable[str], prompt_name: str | None = None,
                     prompt: str | None = None, **kwargs: Any) -> Any:
        """`encode` with the model's "query" prompt, when it has one and no other is given
        (sentence-transformers 5's `encode_query`)."""
        if prompt_name is None and prompt is None and "query" in self.prompts:
            prompt_name = "query"
        return self.encode(texts, prompt_name, prompt, **kwargs)

    def encode_document(self, texts: str | Iterable[str], prompt_name: str | None = None,
                        prompt: str | None = None, **kwargs: Any) -> Any:
        """`encode` with the model's "document", "passage" or "corpus" prompt (the first it has),
        when no other is given (sentence-transformers 5's `encode_document`)."""
        if prompt_name is None and prompt is None:
            prompt_name = next((n for n in ("document", "passage", "corpus") if n in self.prompts), None)
        return self.encode(texts, prompt_name, prompt, **kwargs)

    def embed(self, texts: Iterable[str], batch_size: int = 256, **kwargs: Any) -> Iterator[npt.NDArray[np.float32]]:
        """One vector per text, in order, computed `batch_size` texts at a time as the iterable is
        read (fastembed's `embed`): a generator of any length is never held whole. `kwargs` are
        `encode`'s (prompt_name, prompt, truncate_dim, normalize_embeddings, ...)."""
        if isinstance(texts, str):
            raise TypeError("embed takes an iterable of str; for one text use encode(text)")
        if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
            raise ValueError(f"batch_size must be a positive integer, got {batch_size!r}")
        chunk: list[str] = []
        for text in texts:
            chunk.append(text)
            if len(chunk) == batch_size:
                yield from self.encode(chunk, **kwargs)
                chunk = []
        if chunk:
            yield from self.encode(chunk, **kwargs)

    def _warn_truncated(self, truncated: int, total: int) -> None:
        if truncated:
            warnings.warn(
                f"{truncated} of {total} text(s) were longer than this model's max_seq_length "
                f"({self.max_seq_length} tokens) and were embedded from their beginning only",
                TruncationWarning,
                stacklevel=3,
            )

    def _encode_with_progress(
        self,
        texts: Sequence[str],
        run: Callable[[Sequence[str]], tuple[npt.NDArray[np.float32], int]],
        batch_size: int | None,
    ) -> npt.NDArray[np.float32]:
        from tqdm.auto import tqdm

        step = batch_size * _BATCHES_PER_PROGRESS_STEP if batch_size else _TEXTS_PER_PROGRESS_STEP
        parts: list[npt.NDArray[np.float32]] = []
        truncated = 0
        with tqdm(total=len(texts), desc="Encoding", unit="text") as bar:
            for start in range(0, len(texts), step):
                chunk = texts[start : start + step]
                vectors, cut = run(chunk)
                parts.append(vectors)
                truncated += cut
                bar.update(len(chunk))
        self._warn_truncated(truncated, len(texts))
        if len(parts) == 1:
            return parts[0]
        return np.concatenate(parts) if parts else run([])[0]

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
    def prompts(self) -> dict[str, str]:
        """Prompt name -> the text put before every text encoded with that name."""
        return self._native.prompts

    @property
    def default_prompt_name(self) -> str | None:
        """The prompt applied when `encode` is given none (sentence-transformers' meaning)."""
        return self._native.default_prompt_name

    @property
    def truncate_dim(self) -> int | None:
        """The bundle's Matryoshka truncation (`dim` is then this width), or None."""
        return self._native.truncate_dim

    @property
    def pooling(self) -> list[str]:
        """The pooling modes, in the order their vectors are concatenated."""
        return self._native.pooling

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


def _check_device(device: Any) -> None:
    if device is None or str(device) == "cpu":
        return
    raise ValueError(
        f"device {str(device)!r} is not supported: fastembed_ext runs on the CPU (device='cpu' or None)"
    )


def _convert(vectors: np.ndarray, precision: Precision, to_numpy: bool, to_tensor: bool) -> Any:
    """sentence-transformers' output forms: quantized if asked, then a tensor sharing the
    array's memory, a list of row tensors, or the array itself."""
    if precision != "float32":
        vectors = quantize_embeddings(vectors, precision)
    if to_tensor:
        import torch

        return torch.from_numpy(vectors)
    if not to_numpy:
        import torch

        return list(torch.from_numpy(vectors))
    return vectors

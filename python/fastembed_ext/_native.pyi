"""Type stubs of the Rust extension module (rust/bindings)."""

from collections.abc import Callable, Iterable
from os import PathLike
from typing import Literal

import numpy as np
import numpy.typing as npt

__version__: str

class Encoder:
    def __init__(
        self,
        bundle: str | PathLike[str],
        threads: int | None = None,
        fingerprint: str | None = None,
    ) -> None: ...
    def encode(
        self,
        texts: Iterable[str],
        batch_size: int | None = None,
        normalize: bool | None = None,
        batch_tokens: int | None = None,
        truncate_dim: int | None = None,
        normalize_embeddings: bool = False,
        prompt: str | None = None,
        prompt_name: str | None = None,
    ) -> tuple[npt.NDArray[np.float32], int]:
        """The vectors, and how many texts were longer than max_seq_length and truncated."""
    def windows(self, text: str, window: int | None = None, overlap: int = 0) -> list[tuple[int, int]]: ...
    @property
    def window_tokens(self) -> int: ...
    def tokenize(self, texts: Iterable[str]) -> list[list[int]]: ...
    @property
    def dim(self) -> int: ...
    @property
    def max_seq_length(self) -> int: ...
    @property
    def similarity(self) -> Literal["cosine", "dot"]: ...
    @property
    def normalize(self) -> bool: ...
    @property
    def prompts(self) -> dict[str, str]: ...
    @property
    def default_prompt_name(self) -> str | None: ...
    @property
    def truncate_dim(self) -> int | None: ...
    @property
    def full_dim(self) -> int: ...
    @property
    def pooling(self) -> list[str]: ...
    @property
    def architecture(self) -> str: ...
    @property
    def dtype(self) -> str: ...
    @property
    def fingerprint(self) -> str: ...
    @property
    def path(self) -> str: ...

def set_num_threads(threads: int) -> None: ...
def num_threads() -> int: ...
def linear_kernel() -> Literal["avx512", "avx2", "aten"]: ...
def fingerprint(bundle: str | PathLike[str]) -> str: ...
def serve(
    models: list[tuple[str, str | PathLike[str]]],
    *,
    models_dir: str | PathLike[str] | None = None,
    socket: str | PathLike[str] | None = None,
    host: str | None = None,
    port: int | None = None,
    workers: int | None = None,
    threads: int | None = None,
    max_batch_tokens: int | None = None,
    max_concurrent_requests: int | None = None,
    max_queued_texts: int | None = None,
    max_inputs: int | None = None,
    ready: Callable[[list[str]], None] | None = None,
) -> None: ...

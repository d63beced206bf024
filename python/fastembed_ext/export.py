"""Checkpoint -> bundle: the only place that needs torch and transformers at run time.

A *bundle* is a directory with ``model.pt`` (TorchScript backbone: ``forward(input_ids,
attention_mask) -> last_hidden_state``), ``tokenizer.json`` (no truncation or padding in it) and
the manifest ``fastembed_ext.json``. `export` makes one from a sentence-transformers folder (the
2021 layout and the one sentence-transformers 6 writes) or a plain Hugging Face folder, reading the
same settings sentence-transformers reads, so the vectors the engine computes from the bundle equal
the ones sentence-transformers computes from the folder.

Reading the checkpoint is `checkpoint.py`'s; turning what a user passes to ``Encoder(model)`` into
a bundle directory (and the export cache) is `resolve.py`'s.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
import warnings
from pathlib import Path
from typing import Any

from ._files import MANIFEST_FILE, MODEL_FILE, TOKENIZER_FILE
from .checkpoint import Plan, dense_head, load_model, load_tokenizer, read_plan, similarity_of
from .errors import FastembedExtError, ModelLoadError, UnsupportedModelError
from .quantize import QUANTIZATIONS, quantize_int8
from .resolve import _download, _looks_like_path, cache_dir, cache_key, resolve_bundle

__all__ = ["MANIFEST_FILE", "cache_dir", "cache_key", "export", "resolve_bundle"]

# The manifest layout (the Rust loader reads 1 to this one and refuses newer ones by name).
FORMAT_VERSION = 2


# Bumped whenever the exported graph changes for the same checkpoint, so cached exports made by
# an older exporter are made anew instead of reused.
EXPORT_REVISION = 7


INPUT_NAMES = ["input_ids", "attention_mask"]


# The traced graph must reproduce eager to within this (relative to the output's magnitude).
_TRACE_TOLERANCE = 1e-5


def export(
    src: str | os.PathLike[str],
    dst: str | os.PathLike[str],
    *,
    quantize: str | None = None,
    truncate_dim: int | None = None,
) -> Path:
    """Export a sentence-transformers or Hugging Face folder (or a hub id) into the bundle `dst`.

    `truncate_dim` makes the bundle's vectors the first `truncate_dim` dimensions of the model's
    (Matryoshka models), as ``SentenceTransformer(..., truncate_dim=...)`` does; SQL columns then
    take that width. The bundle is written next to `dst` and renamed into place at the end, so an
    interrupted export leaves no half bundle; an existing bundle at `dst` is replaced. Returns `dst`.
    """
    if quantize is not None and quantize not in QUANTIZATIONS:
        raise ValueError(f"quantize={quantize!r} is not supported; use None or one of {QUANTIZATIONS}")
    if truncate_dim is not None and (
        isinstance(truncate_dim, bool) or not isinstance(truncate_dim, int) or truncate_dim < 1
    ):
        raise ValueError(f"truncate_dim must be a positive integer, got {truncate_dim!r}")
    dst_path = Path(os.fspath(dst)).expanduser().absolute()
    src_text = os.fspath(src)
    src_path = Path(src_text).expanduser()
    if not src_path.exists() and not _looks_like_path(src_text):
        return _export(_download(src_text), dst_path, src_text, quantize, truncate_dim)
    return _export(src_path.resolve(), dst_path, None, quantize, truncate_dim)


def _export(
    src_path: Path,
    dst_path: Path,
    hub_id: str | None,
    quantize: str | None = None,
    truncate_dim: int | None = None,
) -> Path:
    if (src_path / MANIFEST_FILE).is_file():
        raise ModelLoadError(f"{src_path}: already a fastembed_ext bundle; nothing to export")
    plan = read_plan(src_path)
    if hub_id is not None:
        plan.source = hub_id
    similarity = similarity_of(plan)
    if dst_path.exists() and not _replaceable(dst_path):
        raise FastembedExtError(
            f"{dst_path}: exists and is not a fastembed_ext bundle; refusing to overwrite it"
        )

    dst_path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{dst_path.name}.tmp-", dir=dst_path.parent))
    try:
        manifest = _write_bundle(plan, similarity, tmp, quantize, truncate_dim)
        (tmp / MANIFEST_FILE).write_text(json.dumps(manifest, indent=2) + "\n", encoding="utf-8")
        os.chmod(tmp, 0o755)
        _swap_into_place(tmp, dst_path)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return dst_path


def _replaceable(path: Path) -> bool:
    return path.is_dir() and ((path / MANIFEST_FILE).is_file() or not any(path.iterdir()))


def _swap_into_place(tmp: Path, dst: Path) -> None:
    if not dst.exists():
        os.rename(tmp, dst)
        return
    old = move_aside(dst)
    os.rename(tmp, dst)
    shutil.rmtree(old, ignore_errors=True)


def move_aside(bundle: Path) -> Path:
    """Renames `bundle` into a new hidden folder beside it and returns that folder, for the caller
    to delete: readers see the whole bundle or none of it, never a half-deleted one."""
    old = Path(tempfile.mkdtemp(prefix=f".{bundle.name}.old-", dir=bundle.parent))
    try:
        os.rename(bundle, old / "bundle")
    except OSError:
        old.rmdir()
        raise
    return old


def _write_bundle(
    plan: Plan, similarity: str, out: Path, quantize: str | None, truncate_dim: int | None
) -> dict[str, Any]:
    import torch
    import transformers

    from .linear import route_linear_layers

    tokenizer, max_seq_length = load_tokenizer(plan)
    if tokenizer.pad_token is None or tokenizer.pad_token_id is None:
        raise UnsupportedModelError(f"{plan.transformer_dir}: the tokenizer has no pad token")
    backend = tokenizer.backend_tokenizer
    saved = type(backend).from_str(backend.to_str())
    saved.no_truncation()
    saved.no_padding()
    saved.save(str(out / TOKENIZER_FILE))

    pooled_width = plan.hidden_size * len(plan.pooling)
    head, full_dim = dense_head(plan.dense_dirs, pooled_width)
    verbosity = transformers.logging.get_verbosity()
    transformers.logging.set_verbosity_error()  # load reports and loss-type notes are noise here
    try:
        model = load_model(plan)
        if quantize == "int8":
            model = quantize_int8(model)
        route_linear_layers(model)
        dim = _trace_and_save(model, head, pooled_width, tokenizer, max_seq_length, out / MODEL_FILE)
    finally:
        transformers.logging.set_verbosity(verbosity)
    if dim != plan.hidden_size:
        raise ModelLoadError(
            f"{plan.transformer_dir / 'config.json'}: hidden size {plan.hidden_size} but the "
            f"traced model returns vectors of width {dim}"
        )
    if truncate_dim is not None and truncate_dim > full_dim:
        raise ValueError(f"truncate_dim {truncate_dim} is more than the model's {full_dim} dimensions")
    return {
        "format_version": FORMAT_VERSION,
        "export_revision": EXPORT_REVISION,
        "architecture": plan.architecture,
        "dim": truncate_dim or full_dim,
        "max_seq_length": max_seq_length,
        "pooling": "+".join(plan.pooling),
        "include_prompt": plan.include_prompt,
        "head": head is not None,
        "normalize": plan.normalize,
        "truncate_dim": truncate_dim,
        "prompts": plan.prompts,
        "default_prompt_name": plan.default_prompt_name,
        "similarity": similarity,
        "pad_token": str(tokenizer.pad_token),
        "pad_token_id": int(tokenizer.pad_token_id),
        "input_names": list(INPUT_NAMES),
        "torch_version": torch.__version__,
        "transformers_version": transformers.__version__,
        "source": plan.source,
        "dtype": quantize or "float32",
    }


def _trace_and_save(
    model: Any, head: Any, pooled_width: int, tokenizer: Any, max_seq_length: int, path: Path
) -> int:
    """Trace the backbone (and the Dense head, as the module's `head` method) on a padded batch,
    check it against eager on other ones, save it. Returns the width of the token embeddings."""
    import torch

    class Backbone(torch.nn.Module):
        def __init__(self, inner: torch.nn.Module, dense: torch.nn.Module | None) -> None:
            super().__init__()
            self.inner = inner
            self.dense = dense

        def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
            out = self.inner(input_ids=input_ids, attention_mask=attention_mask, return_dict=True)
            return out.last_hidden_state

        def head(self, pooled: torch.Tensor) -> torch.Tensor:
            return self.dense(pooled)

    wrapper = Backbone(model, head).eval()
    longest = min(max_seq_length, 48)
    trace_batch = _padded_batch(tokenizer, [3, 11, 7], max_seq_length)
    checks = [
        _padded_batch(tokenizer, [longest, 2, longest // 2, 5], max_seq_length),
        _padded_batch(tokenizer, [longest // 3 + 1], max_seq_length),
    ]
    pooled = [torch.randn(n, pooled_width, generator=torch.Generator().manual_seed(n)) for n in (3, 5)]
    methods: dict[str, Any] = {"forward": trace_batch}
    if head is not None:
        methods["head"] = (pooled[0],)
    with torch.inference_mode(False), torch.no_grad(), warnings.catch_warnings():
        # transformers' data-dependent Python branches warn while tracing; the parity check below
        # is what decides whether the trace is faithful.
        warnings.simplefilter("ignore", torch.jit.TracerWarning)
        warnings.simplefilter("ignore", FutureWarning)
        traced = torch.jit.trace_module(wrapper, methods, check_trace=False)
        expected = [wrapper(*batch) for batch in checks]
        expected_head = [wrapper.head(x) for x in pooled] if head is not None else []

        def check(module: Any, what: str) -> None:
            _check_parity(module, checks, expected, what)
            for x, want in zip(pooled[: len(expected_head)], expected_head, strict=True):
                diff = (module.head(x) - want).abs().max().item()
                if not diff <= _TRACE_TOLERANCE * max(1.0, want.abs().max().item()):
                    raise ModelLoadError(f"the {what} TorchScript Dense head differs from eager by {diff:.3g}")

        check(traced, "traced")
        try:
            frozen = torch.jit.freeze(traced.eval(), preserved_attrs=["head"] if head is not None else [])
            check(frozen, "frozen")
            traced = frozen
        except (RuntimeError, ModelLoadError):
            pass  # the unfrozen trace already passed the same check
        traced.save(str(path))
        return int(expected[0].shape[-1])


def _padded_batch(tokenizer: Any, lengths: list[int], max_seq_length: int) -> tuple[Any, Any]:
    """Right-padded int64 (input_ids, attention_mask) with rows of exactly these token counts
    (special tokens included), cut from real text."""
    import torch

    words = (
        "The quick brown fox jumps over the lazy dog while 42 students read Ärger, naïve "
        "café menus and 東京 signs; embeddings must not depend on padding at all."
    ).split()
    text = " ".join(words * 40)
    ids = tokenizer(text, truncation=True, max_length=max_seq_length)["input_ids"]
    rows = []
    for n in lengths:
        n = max(2, min(n, len(ids)))
        rows.append(ids[: n - 1] + ids[-1:])  # keep the closing special token
    width = max(len(r) for r in rows)
    pad = int(tokenizer.pad_token_id)
    input_ids = torch.full((len(rows), width), pad, dtype=torch.int64)
    mask = torch.zeros((len(rows), width), dtype=torch.int64)
    for i, row in enumerate(rows):
        input_ids[i, : len(row)] = torch.tensor(row, dtype=torch.int64)
        mask[i, : len(row)] = 1
    return input_ids, mask


def _check_parity(module: Any, batches: list[Any], expected: list[Any], what: str) -> None:
    for (input_ids, mask), want in zip(batches, expected, strict=True):
        got = module(input_ids, mask)
        if got.shape != want.shape:
            raise ModelLoadError(
                f"the {what} TorchScript graph returns shape {tuple(got.shape)}, eager "
                f"{tuple(want.shape)}, on a batch of shape {tuple(input_ids.shape)}"
            )
        # Padding positions are never pooled; compare the real tokens only.
        keep = mask.bool()
        diff = (got[keep] - want[keep]).abs().max().item() if keep.any() else 0.0
        scale = max(1.0, want[keep].abs().max().item())
        if not diff <= _TRACE_TOLERANCE * scale:
            raise ModelLoadError(
                f"the {what} TorchScript graph differs from eager by {diff:.3g} on a batch of "
                f"shape {tuple(input_ids.shape)}; this model cannot be traced faithfully"
            )

"""Checkpoint -> bundle: the only place that needs torch and transformers at run time.

A *bundle* is a directory with ``model.pt`` (TorchScript backbone: ``forward(input_ids,
attention_mask) -> last_hidden_state``), ``tokenizer.json`` (no truncation or padding in it) and
the manifest ``fastembed_ext.json``. `export` makes one from a sentence-transformers folder (the
2021 layout and the one sentence-transformers 6 writes) or a plain Hugging Face folder, reading the
same settings sentence-transformers reads, so the vectors the engine computes from the bundle equal
the ones sentence-transformers computes from the folder.

`resolve_bundle` turns whatever a user passes to ``Encoder(model)`` into a bundle directory:
bundles are used as they are (without importing torch or transformers), checkpoint folders are
exported once into a cache and reused, hub ids are downloaded first where a network exists.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import shutil
import tempfile
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ._files import MANIFEST_FILE, MODEL_FILE, TOKENIZER_FILE
from .errors import FastembedExtError, ModelLoadError, UnsupportedModelError
from .quantize import QUANTIZATIONS, quantize_int8

# The manifest layout (the Rust loader reads 1 to this one and refuses newer ones by name).
FORMAT_VERSION = 2
# Bumped whenever the exported graph changes for the same checkpoint, so cached exports made by
# an older exporter are made anew instead of reused.
EXPORT_REVISION = 7
INPUT_NAMES = ["input_ids", "attention_mask"]
SUPPORTED_ARCHITECTURES = ("bert", "distilbert", "roberta", "xlm-roberta", "mpnet")
# sentence-transformers' pooling modes, all of which the engine implements (rust/core/src/pool.rs).
POOLING_MODES = ("cls", "mean", "max", "mean_sqrt_len_tokens", "weightedmean", "lasttoken")
# Activations a Dense module may name (torch.nn classes; nothing else is imported from a config).
_DENSE_ACTIVATIONS = ("Identity", "Tanh", "ReLU", "GELU", "Sigmoid", "SiLU", "LeakyReLU", "ELU", "Softplus")

# sentence-transformers reads the Transformer module's settings from the first of these it finds.
_ST_TRANSFORMER_CONFIGS = (
    "sentence_bert_config.json",
    "sentence_roberta_config.json",
    "sentence_distilbert_config.json",
    "sentence_camembert_config.json",
    "sentence_albert_config.json",
    "sentence_xlm-roberta_config.json",
    "sentence_xlnet_config.json",
)
# Legacy boolean pooling keys (2021 layout) and the mode each one stands for.
_LEGACY_POOLING_KEYS = {
    "pooling_mode_cls_token": "cls",
    "pooling_mode_max_tokens": "max",
    "pooling_mode_mean_tokens": "mean",
    "pooling_mode_mean_sqrt_len_tokens": "mean_sqrt_len_tokens",
    "pooling_mode_weightedmean_tokens": "weightedmean",
    "pooling_mode_lasttoken": "lasttoken",
}
# The traced graph must reproduce eager to within this (relative to the output's magnitude).
_TRACE_TOLERANCE = 1e-5

_HUB_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*(/[A-Za-z0-9][A-Za-z0-9._-]*)?$")


# --------------------------------------------------------------------------- resolving


def resolve_bundle(model: str | os.PathLike[str]) -> Path:
    """The bundle directory for `model`: a bundle, a checkpoint folder (exported once into the
    cache, see `cache_dir`), or a hub id (downloaded where a network exists, then exported)."""
    text = os.fspath(model)
    if not isinstance(text, str):
        raise TypeError(f"model must be a str or os.PathLike[str], not {type(model).__name__}")
    path = Path(text).expanduser()
    if path.is_dir():
        if (path / MANIFEST_FILE).is_file():
            return path.resolve()
        return _cached_export(path.resolve())
    if path.exists():
        raise ModelLoadError(
            f"{path}: not a directory (expected a fastembed_ext bundle or a "
            "sentence-transformers / Hugging Face model folder)"
        )
    if _looks_like_path(text):
        raise ModelLoadError(f"{path}: no such file or directory")
    return _cached_export(_download(text), source=text)


def _looks_like_path(text: str) -> bool:
    if text.startswith(("/", ".", "~")) or (os.altsep and os.altsep in text):
        return True
    if not _HUB_ID.match(text):
        return True
    if os.sep in text:
        # "org/name" is a hub id unless its first part exists here (then it is a missing path).
        return Path(text.split(os.sep, 1)[0]).exists()
    return False


def _download(repo_id: str) -> Path:
    advice = "Pass a local model folder or a bundle made by `fastembed-ext export` instead."
    if _env_true("HF_HUB_OFFLINE") or _env_true("TRANSFORMERS_OFFLINE"):
        raise ModelLoadError(
            f"{repo_id!r} is not a local path and could not be downloaded "
            f"(no network: HF_HUB_OFFLINE is set). {advice}"
        )
    try:
        from huggingface_hub import snapshot_download
    except ImportError as exc:
        raise ModelLoadError(
            f"{repo_id!r} is not a local path and could not be downloaded "
            f"(huggingface_hub is not installed). {advice}"
        ) from exc
    try:
        return Path(snapshot_download(repo_id)).resolve()
    except Exception as exc:  # noqa: BLE001 - any failure of the hub means the same to the user
        raise ModelLoadError(
            f"{repo_id!r} is not a local path and could not be downloaded "
            f"(no network or no such model: {type(exc).__name__}: {exc}). {advice}"
        ) from exc


def _env_true(name: str) -> bool:
    return os.environ.get(name, "").strip().lower() in {"1", "true", "yes", "on"}


def cache_dir() -> Path:
    """Where exported checkpoints are kept: ``$FASTEMBED_EXT_CACHE``, else
    ``$XDG_CACHE_HOME/fastembed_ext``, else ``~/.cache/fastembed_ext``."""
    env = os.environ.get("FASTEMBED_EXT_CACHE")
    if env:
        return Path(env).expanduser()
    xdg = os.environ.get("XDG_CACHE_HOME")
    base = Path(xdg).expanduser() if xdg else Path.home() / ".cache"
    return base / "fastembed_ext"


def cache_key(src: Path) -> str:
    """Name of the cached bundle of `src`: its folder name plus a hash of the export revision, its
    absolute path and the relative path, size and mtime of every file in it, so an edited
    checkpoint (or a newer exporter) exports anew."""
    digest = hashlib.sha256(f"{EXPORT_REVISION}\0{src}".encode())
    for root, dirs, files in os.walk(src, followlinks=True):
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        for name in sorted(files):
            file = Path(root, name)
            try:
                st = file.stat()
            except OSError:
                continue
            digest.update(f"\0{file.relative_to(src)}\0{st.st_size}\0{st.st_mtime_ns}".encode())
    safe = re.sub(r"[^A-Za-z0-9._-]", "_", src.name) or "model"
    return f"{safe}-{digest.hexdigest()[:16]}"


def _cached_export(src: Path, source: str | None = None) -> Path:
    bundles = cache_dir() / "exports"
    dst = bundles / cache_key(src)
    if (dst / MANIFEST_FILE).is_file():
        return dst
    try:
        bundles.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ModelLoadError(f"{bundles}: cannot create the export cache: {exc}") from exc
    with _file_lock(bundles / f"{dst.name}.lock"):
        if not (dst / MANIFEST_FILE).is_file():  # another process may have finished meanwhile
            _remove_leftovers(dst)
            if source is None:
                export(src, dst)
            else:  # a hub download: the manifest names the hub id, not the snapshot folder
                _export(src, dst.absolute(), source)
            _remove_superseded(dst)
    return dst


def _remove_leftovers(dst: Path) -> None:
    """Remove what an export into `dst` killed midway left behind. Only the holder of `dst`'s lock
    writes these, so whatever is there now belongs to a process that is gone."""
    for pattern in (f".{dst.name}.tmp-*", f".{dst.name}.old-*"):
        for leftover in dst.parent.glob(pattern):
            shutil.rmtree(leftover, ignore_errors=True)


def _remove_superseded(dst: Path) -> None:
    """Remove the cache's other exports of the source just exported into `dst`: made by an older
    exporter or from the checkpoint's files before an edit, no key will ever name them again, and
    at up to gigabytes each they would otherwise pile up with every upgrade.

    Each one is renamed away before it is deleted, so no reader sees half a bundle; a process that
    has already loaded one keeps working (the model and tokenizer are read into memory)."""
    source = _read_json_object(dst / MANIFEST_FILE).get("source")
    if not source:  # every manifest names its source; without one, nothing can be matched to it
        return
    for entry in dst.parent.iterdir():
        if entry == dst or entry.name.startswith(".") or not entry.is_dir():
            continue
        try:
            if _read_json_object(entry / MANIFEST_FILE).get("source") != source:
                continue
            trash = _move_aside(entry)
        except (ModelLoadError, OSError):
            continue  # not a finished bundle (maybe an export in progress), or already removed
        shutil.rmtree(trash, ignore_errors=True)
        with contextlib.suppress(OSError):
            (dst.parent / f"{entry.name}.lock").unlink()


@contextlib.contextmanager
def _file_lock(path: Path) -> Iterator[None]:
    import fcntl

    with open(path, "a+b") as handle:
        fcntl.flock(handle.fileno(), fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle.fileno(), fcntl.LOCK_UN)


# --------------------------------------------------------------------------- reading a checkpoint


@dataclass
class _Plan:
    """What a checkpoint folder says, read the way sentence-transformers reads it."""

    source: str
    transformer_dir: Path
    architecture: str
    hidden_size: int
    max_position_embeddings: int | None
    pad_token_id_config: int | None
    max_seq_length: int | None  # None: take the tokenizer's model_max_length (capped)
    do_lower_case: bool
    processor_kwargs: dict[str, Any]
    normalize: bool
    similarity_fn_name: str | None
    similarity_file: Path | None
    pooling: list[str]
    include_prompt: bool
    dense_dirs: list[Path]
    prompts: dict[str, str]
    default_prompt_name: str | None


def _read_json(path: Path) -> Any:
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError as exc:
        raise ModelLoadError(f"{path}: no such file") from exc
    except OSError as exc:
        raise ModelLoadError(f"{path}: cannot read: {exc}") from exc
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise ModelLoadError(f"{path}: not valid JSON: {exc}") from exc


def _read_json_object(path: Path) -> dict[str, Any]:
    value = _read_json(path)
    if not isinstance(value, dict):
        raise ModelLoadError(f"{path}: expected a JSON object")
    return value


def _module_kind(type_ref: str) -> str:
    """'Transformer', 'Pooling', 'Normalize' or the class name of anything else."""
    return type_ref.rsplit(".", 1)[-1]


def _plan(src: Path) -> _Plan:
    if not src.exists():
        raise ModelLoadError(f"{src}: no such file or directory")
    if not src.is_dir():
        raise ModelLoadError(f"{src}: not a directory")
    modules_file = src / "modules.json"
    transformer_dir = src
    st_config: dict[str, Any] = {}
    normalize = False
    pooling, include_prompt, dense_dirs = ["mean"], True, []
    if modules_file.is_file():
        modules = _read_json(modules_file)
        if not isinstance(modules, list) or not modules:
            raise ModelLoadError(f"{modules_file}: expected a non-empty list of modules")
        modules = sorted(modules, key=lambda m: m.get("idx", 0))
        kinds = [_module_kind(str(m.get("type", ""))) for m in modules]
        for module, kind in zip(modules, kinds, strict=True):
            if kind not in ("Transformer", "Pooling", "Dense", "Normalize"):
                raise UnsupportedModelError(
                    f"{modules_file}: module {module.get('type')!r} (at {module.get('path')!r}) is "
                    "not supported; only Transformer, Pooling, Dense and Normalize are"
                )
        heads = kinds[2:-1] if kinds[-1:] == ["Normalize"] else kinds[2:]
        if kinds[:2] != ["Transformer", "Pooling"] or any(kind != "Dense" for kind in heads):
            raise UnsupportedModelError(
                f"{modules_file}: module sequence {kinds} is not supported; expected "
                "Transformer, Pooling, any Dense modules and optionally Normalize, in that order"
            )
        normalize = kinds[-1] == "Normalize"
        transformer_dir = src / modules[0].get("path", "")
        st_config = _transformer_settings(transformer_dir)
        pooling, include_prompt = _pooling(src / modules[1].get("path", ""))
        dense_dirs = [src / m.get("path", "") for m in modules[2 : 2 + len(heads)]]
    config_file = transformer_dir / "config.json"
    config = _read_json(config_file)
    architecture = config.get("model_type")
    if architecture not in SUPPORTED_ARCHITECTURES:
        raise UnsupportedModelError(
            f"{config_file}: architecture (model_type) {architecture!r} is not supported; "
            f"supported: {', '.join(SUPPORTED_ARCHITECTURES)}"
        )
    hidden = config.get("dim") if architecture == "distilbert" else config.get("hidden_size")
    if not isinstance(hidden, int):
        raise ModelLoadError(f"{config_file}: no hidden size for model_type {architecture!r}")

    similarity_fn_name, similarity_file, prompts, default_prompt_name = _st_model_settings(src)
    processor_kwargs = dict(st_config.get("processor_kwargs") or st_config.get("tokenizer_args") or {})
    processor_kwargs.pop("trust_remote_code", None)
    max_seq_length = st_config.get("max_seq_length")
    if max_seq_length is not None and not (isinstance(max_seq_length, int) and max_seq_length > 1):
        raise ModelLoadError(
            f"{transformer_dir / _ST_TRANSFORMER_CONFIGS[0]}: max_seq_length {max_seq_length!r} "
            "is not an integer above 1"
        )
    return _Plan(
        source=str(src),
        transformer_dir=transformer_dir,
        architecture=architecture,
        hidden_size=hidden,
        max_position_embeddings=config.get("max_position_embeddings"),
        pad_token_id_config=config.get("pad_token_id"),
        max_seq_length=max_seq_length,
        do_lower_case=bool(st_config.get("do_lower_case", False)),
        processor_kwargs=processor_kwargs,
        normalize=normalize,
        similarity_fn_name=similarity_fn_name,
        similarity_file=similarity_file,
        pooling=pooling,
        include_prompt=include_prompt,
        dense_dirs=dense_dirs,
        prompts=prompts,
        default_prompt_name=default_prompt_name,
    )


def _transformer_settings(transformer_dir: Path) -> dict[str, Any]:
    for name in _ST_TRANSFORMER_CONFIGS:
        file = transformer_dir / name
        if file.is_file():
            break
    else:
        return {}
    settings = _read_json_object(file)
    task = settings.get("transformer_task", "feature-extraction")
    if task != "feature-extraction":
        raise UnsupportedModelError(
            f"{file}: transformer_task {task!r} is not supported; only 'feature-extraction' is"
        )
    modality = settings.get("modality_config")
    if modality is not None and modality != {
        "text": {"method": "forward", "method_output_name": "last_hidden_state"}
    }:
        raise UnsupportedModelError(
            f"{file}: modality_config {modality!r} is not supported; only text through "
            "forward -> last_hidden_state is"
        )
    output = settings.get("module_output_name", "token_embeddings")
    if output != "token_embeddings":
        raise UnsupportedModelError(
            f"{file}: module_output_name {output!r} is not supported; only 'token_embeddings' is"
        )
    for key in ("processing_kwargs", "query_expansion"):
        if settings.get(key):
            raise UnsupportedModelError(f"{file}: {key} {settings[key]!r} is not supported")
    return settings


def _pooling(pooling_dir: Path) -> tuple[list[str], bool]:
    """The pooling modes (their vectors concatenated in this order) and whether the prompt's
    tokens are pooled, read as sentence-transformers reads 1_Pooling/config.json."""
    file = pooling_dir / "config.json"
    pooling = _read_json_object(file)
    mode = pooling.get("pooling_mode")
    if mode is None:
        modes = [m for key, m in _LEGACY_POOLING_KEYS.items() if pooling.get(key)] or ["mean"]
    else:
        modes = [mode] if isinstance(mode, str) else list(mode)
    unknown = [m for m in modes if m not in POOLING_MODES]
    if unknown or not modes:
        raise UnsupportedModelError(
            f"{file}: pooling {'+'.join(map(str, modes))!r} is not supported; the modes are "
            f"{', '.join(POOLING_MODES)}"
        )
    include_prompt = pooling.get("include_prompt", True)
    if not isinstance(include_prompt, bool):
        raise ModelLoadError(f"{file}: include_prompt {include_prompt!r} is not true or false")
    return modes, include_prompt


def _st_model_settings(src: Path) -> tuple[str | None, Path | None, dict[str, str], str | None]:
    """similarity_fn_name (and the file it came from), prompts and default_prompt_name."""
    file = src / "config_sentence_transformers.json"
    if not file.is_file():
        return None, None, {}, None
    settings = _read_json_object(file)
    model_type = settings.get("model_type", "SentenceTransformer")
    if model_type != "SentenceTransformer":
        raise UnsupportedModelError(
            f"{file}: model_type {model_type!r} is not supported; only SentenceTransformer is"
        )
    prompts = settings.get("prompts") or {}
    if not isinstance(prompts, dict) or not all(
        isinstance(k, str) and isinstance(v, str) for k, v in prompts.items()
    ):
        raise ModelLoadError(f"{file}: prompts must map names to texts")
    default_prompt_name = settings.get("default_prompt_name")
    if default_prompt_name is not None and default_prompt_name not in prompts:
        raise ModelLoadError(
            f"{file}: default_prompt_name {default_prompt_name!r} is not one of its prompts "
            f"({', '.join(prompts) or 'it has none'})"
        )
    return settings.get("similarity_fn_name"), file, dict(prompts), default_prompt_name


def _similarity(plan: _Plan) -> str:
    name = plan.similarity_fn_name
    if name is None:
        return "cosine" if plan.normalize else "dot"
    if name in ("cosine", "dot"):
        return name
    raise UnsupportedModelError(
        f"{plan.similarity_file}: similarity_fn_name {name!r} is not supported; "
        "only 'cosine' and 'dot' are"
    )


# --------------------------------------------------------------------------- exporting


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
    plan = _plan(src_path)
    if hub_id is not None:
        plan.source = hub_id
    similarity = _similarity(plan)
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
    old = _move_aside(dst)
    os.rename(tmp, dst)
    shutil.rmtree(old, ignore_errors=True)


def _move_aside(bundle: Path) -> Path:
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
    plan: _Plan, similarity: str, out: Path, quantize: str | None, truncate_dim: int | None
) -> dict[str, Any]:
    import torch
    import transformers

    from .linear import route_linear_layers

    tokenizer, max_seq_length = _load_tokenizer(plan)
    if tokenizer.pad_token is None or tokenizer.pad_token_id is None:
        raise UnsupportedModelError(f"{plan.transformer_dir}: the tokenizer has no pad token")
    backend = tokenizer.backend_tokenizer
    saved = type(backend).from_str(backend.to_str())
    saved.no_truncation()
    saved.no_padding()
    saved.save(str(out / TOKENIZER_FILE))

    pooled_width = plan.hidden_size * len(plan.pooling)
    head = _dense_head(plan.dense_dirs, pooled_width)
    verbosity = transformers.logging.get_verbosity()
    transformers.logging.set_verbosity_error()  # load reports and loss-type notes are noise here
    try:
        model = _load_model(plan)
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
    full_dim = head.out_features if head is not None else pooled_width
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


def _dense_head(dense_dirs: list[Path], width: int) -> Any:
    """sentence-transformers' Dense modules as one ``nn.Sequential`` of (Linear, activation)
    pairs, or None when there are none. Only torch.nn activations are taken from a config."""
    if not dense_dirs:
        return None
    import torch

    layers: list[Any] = []
    for folder in dense_dirs:
        file = folder / "config.json"
        config = _read_json_object(file)
        in_features, out_features = config.get("in_features"), config.get("out_features")
        if not (isinstance(in_features, int) and isinstance(out_features, int) and out_features > 0):
            raise ModelLoadError(f"{file}: in_features / out_features are not positive integers")
        if in_features != width:
            raise ModelLoadError(f"{file}: in_features {in_features}, but its input has {width} dimensions")
        name = config.get("activation_function", "torch.nn.modules.activation.Tanh")
        short = str(name).rsplit(".", 1)[-1]
        if not str(name).startswith("torch.nn.") or short not in _DENSE_ACTIVATIONS:
            raise UnsupportedModelError(
                f"{file}: activation_function {name!r} is not supported; torch.nn's "
                f"{', '.join(_DENSE_ACTIVATIONS)} are"
            )
        linear = torch.nn.Linear(in_features, out_features, bias=bool(config.get("bias", True)))
        state = _dense_weights(folder)
        try:
            linear.load_state_dict({k.removeprefix("linear."): v for k, v in state.items()})
        except RuntimeError as exc:
            raise ModelLoadError(f"{folder}: the Dense weights do not fit its config: {exc}") from exc
        layers += [linear, getattr(torch.nn, short)()]
        width = out_features
    head = torch.nn.Sequential(*layers).eval().float()
    head.out_features = width
    return head


def _dense_weights(folder: Path) -> dict[str, Any]:
    import torch

    if (folder / "model.safetensors").is_file():
        from safetensors.torch import load_file

        return load_file(str(folder / "model.safetensors"))
    if (folder / "pytorch_model.bin").is_file():
        return torch.load(folder / "pytorch_model.bin", map_location="cpu", weights_only=True)
    raise ModelLoadError(f"{folder}: no model.safetensors or pytorch_model.bin for the Dense module")


def _load_tokenizer(plan: _Plan) -> tuple[Any, int]:
    """The fast tokenizer sentence-transformers would use, and its truncation length."""
    from tokenizers.normalizers import Lowercase
    from tokenizers.normalizers import Sequence as NormalizerSequence
    from transformers import AutoTokenizer

    kwargs = dict(plan.processor_kwargs)
    if plan.max_seq_length is not None and "model_max_length" not in kwargs:
        kwargs["model_max_length"] = plan.max_seq_length
    explicit = "model_max_length" in kwargs
    try:
        tokenizer = AutoTokenizer.from_pretrained(str(plan.transformer_dir), use_fast=True, **kwargs)
    except Exception as exc:  # noqa: BLE001 - transformers raises many kinds here
        raise ModelLoadError(
            f"{plan.transformer_dir}: cannot load the tokenizer (tokenizer.json, vocab.txt, or "
            f"vocab.json + merges.txt): {type(exc).__name__}: {exc}"
        ) from exc
    if not getattr(tokenizer, "is_fast", False):
        raise UnsupportedModelError(f"{plan.transformer_dir}: no fast (Rust) tokenizer available")

    max_len = int(tokenizer.model_max_length)
    if not explicit and plan.max_position_embeddings not in (None, -1):
        max_len = min(max_len, int(plan.max_position_embeddings))
    # Positions the backbone really has (RoBERTa's start after the padding index). Sentence-
    # transformers would fail on longer inputs; the bundle truncates there instead.
    usable = plan.max_position_embeddings
    if usable is not None and plan.architecture in ("roberta", "xlm-roberta", "mpnet"):
        usable -= (plan.pad_token_id_config or 0) + 1
    if usable is not None and usable > 1:
        max_len = min(max_len, usable)

    if plan.do_lower_case:
        normalizer = tokenizer.backend_tokenizer.normalizer
        if not _has_lowercase(normalizer):
            parts = [Lowercase()]
            if isinstance(normalizer, NormalizerSequence):
                parts += list(normalizer)
            elif normalizer is not None:
                parts.append(normalizer)
            tokenizer.backend_tokenizer.normalizer = NormalizerSequence(parts)
    return tokenizer, max_len


def _has_lowercase(normalizer: Any) -> bool:
    from tokenizers.normalizers import Lowercase
    from tokenizers.normalizers import Sequence as NormalizerSequence

    if isinstance(normalizer, Lowercase):
        return True
    if isinstance(normalizer, NormalizerSequence):
        return any(isinstance(n, Lowercase) for n in normalizer)
    return False


def _load_model(plan: _Plan) -> Any:
    import torch
    from transformers import AutoModel

    last: Exception | None = None
    for attn in ("sdpa", "eager"):
        try:
            model = AutoModel.from_pretrained(
                str(plan.transformer_dir), attn_implementation=attn, dtype=torch.float32
            )
            break
        except (ValueError, ImportError) as exc:  # attention implementation not available
            last = exc
        except OSError as exc:
            raise ModelLoadError(
                f"{plan.transformer_dir}: cannot load the model weights: {exc}"
            ) from exc
    else:
        raise ModelLoadError(f"{plan.transformer_dir}: cannot load the model: {last}") from last
    return model.eval().float()


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

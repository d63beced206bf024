"""Reading a checkpoint folder the way sentence-transformers reads it: which modules, which
settings, which tokenizer, which weights (sentence-transformers folders of the 2021 layout and of
the one sentence-transformers 6 writes, or plain Hugging Face folders)."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .architectures import ARCHITECTURES, SUPPORTED_ARCHITECTURES
from .errors import ModelLoadError, UnsupportedModelError

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


# --------------------------------------------------------------------------- reading a checkpoint


@dataclass
class Plan:
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


def read_json_object(path: Path) -> dict[str, Any]:
    value = _read_json(path)
    if not isinstance(value, dict):
        raise ModelLoadError(f"{path}: expected a JSON object")
    return value


def _module_kind(type_ref: str) -> str:
    """'Transformer', 'Pooling', 'Normalize' or the class name of anything else."""
    return type_ref.rsplit(".", 1)[-1]


def read_plan(src: Path) -> Plan:
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
    hidden = config.get(ARCHITECTURES[architecture].hidden_size_key)
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
    return Plan(
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
    settings = read_json_object(file)
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
    pooling = read_json_object(file)
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
    settings = read_json_object(file)
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


def similarity_of(plan: Plan) -> str:
    name = plan.similarity_fn_name
    if name is None:
        return "cosine" if plan.normalize else "dot"
    if name in ("cosine", "dot"):
        return name
    raise UnsupportedModelError(
        f"{plan.similarity_file}: similarity_fn_name {name!r} is not supported; "
        "only 'cosine' and 'dot' are"
    )


def dense_head(dense_dirs: list[Path], width: int) -> tuple[Any, int]:
    """sentence-transformers' Dense modules as one ``nn.Sequential`` of (Linear, activation)
    pairs (None when there are none), and the width of what comes out of them, given pooled
    vectors of `width`. Only torch.nn activations are taken from a config."""
    if not dense_dirs:
        return None, width
    import torch

    layers: list[Any] = []
    for folder in dense_dirs:
        file = folder / "config.json"
        config = read_json_object(file)
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
    return torch.nn.Sequential(*layers).eval().float(), width


def _dense_weights(folder: Path) -> dict[str, Any]:
    import torch

    if (folder / "model.safetensors").is_file():
        from safetensors.torch import load_file

        return load_file(str(folder / "model.safetensors"))
    if (folder / "pytorch_model.bin").is_file():
        return torch.load(folder / "pytorch_model.bin", map_location="cpu", weights_only=True)
    raise ModelLoadError(f"{folder}: no model.safetensors or pytorch_model.bin for the Dense module")


def load_tokenizer(plan: Plan) -> tuple[Any, int]:
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
    if usable is not None and ARCHITECTURES[plan.architecture].positions_after_padding:
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


def load_model(plan: Plan) -> Any:
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

"""The models people run beyond the seed three: MPNet, every pooling mode, Dense heads, prompts,
Matryoshka truncation, and sentence-transformers' `encode` arguments, each against
sentence-transformers on the same folder (random weights, deterministic seeds)."""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import numpy as np
import pytest
from model_factory import PARITY_TEXTS, with_head
from test_parity import MAX_REL_DIFF, MIN_COSINE, min_cosine, relative_difference

import fastembed_ext
from fastembed_ext import UnsupportedModelError

TEXTS = PARITY_TEXTS[:16] + ["short", "a text of a few more words than that one"]
DENSE = "torch.nn.modules.activation.Tanh"


def _st(folder: Path, **kwargs):
    from sentence_transformers import SentenceTransformer

    return SentenceTransformer(str(folder), device="cpu", **kwargs)


def _assert_parity(ours: np.ndarray, theirs: np.ndarray) -> None:
    assert ours.shape == theirs.shape and ours.dtype == np.float32
    assert relative_difference(ours, theirs) < MAX_REL_DIFF
    assert min_cosine(ours, theirs) > MIN_COSINE


@pytest.mark.parametrize("mode", ["cls", "max", "mean_sqrt_len_tokens", "weightedmean", "lasttoken", "cls+mean"])
def test_pooling_modes_equal_sentence_transformers(mode: str, distilbert_256k: Path, tmp_path: Path) -> None:
    modes = mode.split("+")
    folder = with_head(distilbert_256k, tmp_path / "m", pooling={"word_embedding_dimension": 32, "pooling_mode": modes})
    enc = fastembed_ext.Encoder(folder)
    assert enc.pooling == modes and enc.dim == 32 * len(modes)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", fastembed_ext.TruncationWarning)
        _assert_parity(enc.encode(TEXTS), _st(folder).encode(TEXTS))


@pytest.mark.parametrize(("model", "architecture", "max_seq_length", "packed"),
                         [("mpnet", "mpnet", 384, 8), ("xlm_roberta", "xlm-roberta", 128, 8),
                          ("modernbert", "modernbert", 128, 12)])
def test_new_architectures_go_through_the_packed_linear_operator_with_fused_qkv(
    model: str, architecture: str, max_seq_length: int, packed: int, request: pytest.FixtureRequest, tmp_path: Path
) -> None:
    import torch

    bundle = fastembed_ext.export(request.getfixturevalue(model), tmp_path / "b")
    graph = str(torch.jit.load(str(bundle / "model.pt")).inlined_graph)
    # per layer: fused q/k/v (ModernBERT's own Wqkv), attention output, feed-forward in and out
    assert graph.count("fastembed::packed_linear") == packed and "aten::linear" not in graph
    manifest = json.loads((bundle / "fastembed_ext.json").read_text())
    assert manifest["architecture"] == architecture and manifest["max_seq_length"] == max_seq_length


def test_dense_head_and_normalize_equal_sentence_transformers(roberta: Path, tmp_path: Path) -> None:
    folder = with_head(roberta, tmp_path / "d", dense=[(32, 24, DENSE), (24, 16, "torch.nn.modules.linear.Identity")])
    enc = fastembed_ext.Encoder(folder)
    assert enc.dim == 16 and enc.normalize
    _assert_parity(enc.encode(TEXTS), _st(folder).encode(TEXTS))


def test_dense_activation_outside_torch_nn_is_refused(roberta: Path, tmp_path: Path) -> None:
    folder = with_head(roberta, tmp_path / "d", dense=[(32, 16, "os.system")])
    with pytest.raises(UnsupportedModelError, match=r"activation_function 'os.system' is not supported"):
        fastembed_ext.Encoder(folder)


def test_prompts_apply_as_sentence_transformers_applies_them(distilbert_256k: Path, tmp_path: Path) -> None:
    prompts = {"query": "query: ", "document": "passage: ", "classification": "Classify the topic: "}
    folder = with_head(distilbert_256k, tmp_path / "p", prompts=prompts, default_prompt_name="classification")
    enc, st = fastembed_ext.Encoder(folder), _st(folder)
    assert enc.prompts == prompts and enc.default_prompt_name == "classification"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", fastembed_ext.TruncationWarning)
        _assert_parity(enc.encode(TEXTS), st.encode(TEXTS))  # the default prompt
        _assert_parity(enc.encode(TEXTS, prompt_name="query"), st.encode(TEXTS, prompt_name="query"))
        _assert_parity(enc.encode(TEXTS, prompt="Represent: "), st.encode(TEXTS, prompt="Represent: "))
        _assert_parity(enc.encode(TEXTS, prompt=""), st.encode(TEXTS, prompt=""))
        _assert_parity(enc.encode_query(TEXTS), st.encode_query(TEXTS))
        _assert_parity(enc.encode_document(TEXTS), st.encode_document(TEXTS))
    # the prompt's tokens count toward max_seq_length: a text that fits alone is cut with one
    long = next(text for n in range(1, 300)
                if len(enc.tokenize([text := " ".join(["a"] * n)])[0]) == enc.max_seq_length - 1)
    assert len(enc.tokenize([long])[0]) < enc.max_seq_length  # fits alone
    with warnings.catch_warnings():
        warnings.simplefilter("error", fastembed_ext.TruncationWarning)
        enc.encode(long, prompt="")
    with pytest.warns(fastembed_ext.TruncationWarning, match="1 of 1"):
        enc.encode(long, prompt_name="query")
    with pytest.raises(ValueError, match=r"prompt name \"search\" is not one of this model's prompts \(classification, document, query\)"):
        enc.encode("x", prompt_name="search")


def test_prompt_tokens_left_out_of_pooling_when_the_model_says_so(distilbert_256k: Path, tmp_path: Path) -> None:
    folder = with_head(distilbert_256k, tmp_path / "i", prompts={"query": "Represent this query: "},
                       pooling={"word_embedding_dimension": 32, "pooling_mode": "mean", "include_prompt": False})
    enc, st = fastembed_ext.Encoder(folder), _st(folder)
    texts = TEXTS[3:15]
    ours = enc.encode(texts, prompt_name="query")
    _assert_parity(ours, st.encode(texts, prompt_name="query"))
    # the same tokens with the prompt pooled too give other vectors
    assert not np.allclose(ours, enc.encode(["Represent this query: " + t for t in texts], prompt=""), atol=1e-3)


def test_truncate_dim_at_encode_and_at_export(roberta: Path, tmp_path: Path) -> None:
    enc, st = fastembed_ext.Encoder(roberta), _st(roberta)
    for normalize in (False, True):
        _assert_parity(enc.encode(TEXTS, truncate_dim=8, normalize_embeddings=normalize),
                       st.encode(TEXTS, truncate_dim=8, normalize_embeddings=normalize))
    bundle = fastembed_ext.export(roberta, tmp_path / "t", truncate_dim=8)
    cut = fastembed_ext.Encoder(bundle)
    assert cut.dim == 8 and cut.truncate_dim == 8
    _assert_parity(cut.encode(TEXTS), _st(roberta, truncate_dim=8).encode(TEXTS))
    with pytest.raises(ValueError, match=r"truncate_dim 33 is outside 1..=32"):
        enc.encode(TEXTS, truncate_dim=33)


@pytest.mark.parametrize("precision", ["int8", "uint8", "binary", "ubinary"])
def test_precision_equals_quantize_embeddings(precision: str, roberta_encoder) -> None:
    from sentence_transformers.quantization import quantize_embeddings

    floats = roberta_encoder.encode(TEXTS)
    ours = roberta_encoder.encode(TEXTS, precision=precision)
    theirs = quantize_embeddings(floats, precision=precision)
    assert ours.dtype == theirs.dtype and np.array_equal(ours, theirs)
    ranges = np.vstack([floats.min(0) - 0.1, floats.max(0) + 0.1]) if precision.endswith("int8") else None
    assert np.array_equal(fastembed_ext.quantize_embeddings(floats, precision, ranges=ranges),
                          quantize_embeddings(floats, precision=precision, ranges=ranges))
    if precision.endswith("int8"):
        with pytest.raises(ValueError, match="cannot compute .*int8 ranges from a single vector"):
            roberta_encoder.encode("one", precision=precision)


def test_sentence_transformers_arguments(roberta_encoder) -> None:
    import torch

    want = roberta_encoder.encode(TEXTS)
    tensor = roberta_encoder.encode(TEXTS, convert_to_tensor=True)
    assert isinstance(tensor, torch.Tensor) and np.array_equal(tensor.numpy(), want)
    rows = roberta_encoder.encode(TEXTS, convert_to_numpy=False)
    assert isinstance(rows, list) and len(rows) == len(TEXTS) and np.array_equal(rows[3].numpy(), want[3])
    assert np.allclose(roberta_encoder.encode(TEXTS, None, None, 4), want, atol=1e-6)  # batch_size 4th, as in ST 6
    assert np.allclose(roberta_encoder.encode(TEXTS, 4), want, atol=1e-6)  # batch_size second, as in ST 2
    assert np.allclose(roberta_encoder.encode(TEXTS, device="cpu", normalize_embeddings=True), want, atol=1e-6)
    with pytest.raises(ValueError, match="device 'cuda' is not supported: fastembed_ext runs on the CPU"):
        roberta_encoder.encode(TEXTS, device="cuda")
    with pytest.raises(ValueError, match="precision 'int4' is not supported"):
        roberta_encoder.encode(TEXTS, precision="int4")
    with pytest.raises(TypeError, match=r"texts\[1\] is NoneType, expected str"):
        roberta_encoder.encode(["a", None])
    with pytest.raises(TypeError, match=r"texts\[2\] is float, expected str"):
        roberta_encoder.encode(["a", "b", float("nan")])


def test_embed_yields_lazily_in_order(roberta_encoder) -> None:
    read = []

    def texts():
        for i, text in enumerate(TEXTS * 3):
            read.append(i)
            yield text

    stream = roberta_encoder.embed(texts(), batch_size=5)
    first = next(stream)
    assert len(read) == 5  # one batch read, not the whole generator
    rest = list(stream)
    assert np.allclose(np.stack([first, *rest]), roberta_encoder.encode(TEXTS * 3), atol=1e-6)


def test_a_newer_bundle_is_refused_naming_both_versions(roberta_bundle: Path, tmp_path: Path) -> None:
    import shutil

    newer = tmp_path / "newer"
    shutil.copytree(roberta_bundle, newer)
    manifest = json.loads((newer / "fastembed_ext.json").read_text())
    manifest["format_version"] = 3
    (newer / "fastembed_ext.json").write_text(json.dumps(manifest))
    with pytest.raises(UnsupportedModelError, match=r"bundle format_version 3 \(this fastembed_ext reads format_version 1 to 2"):
        fastembed_ext.Encoder(newer)


def test_windows_leave_room_for_the_default_prompt(distilbert_256k: Path, tmp_path: Path) -> None:
    """A chunk cut at window_tokens embeds whole with the model's default prompt before it."""
    folder = with_head(distilbert_256k, tmp_path / "w", prompts={"passage": "a passage of some text: "},
                       default_prompt_name="passage")
    enc = fastembed_ext.Encoder(folder)
    prompt_tokens = len(enc.tokenize(["a passage of some text: "])[0])  # with [CLS] and [SEP]
    assert enc.window_tokens == enc.max_seq_length - prompt_tokens
    text = " ".join(["a"] * 1000)
    chunks = [text[start:end] for start, end in enc.windows(text)]
    assert len(chunks) > 1
    with warnings.catch_warnings():
        warnings.simplefilter("error", fastembed_ext.TruncationWarning)
        enc.encode(chunks)

"""fastembed_ext against sentence-transformers on the same folders: token ids and vectors.

Parity figures (printed; ``pytest -s`` shows them, and they are recorded as test properties):

* relative difference = max over rows i of ||a_i - b_i||_inf / ||b_i||_inf, where a is fastembed_ext's
  vector and b sentence-transformers'; the bar is < 1e-4;
* minimum cosine similarity between a_i and b_i over rows; the bar is > 0.99999.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from model_factory import FIRST_REAL_ID, MODELS, PARITY_TEXTS

import fastembed_ext

MAX_REL_DIFF = 1e-4
MIN_COSINE = 0.99999


def relative_difference(a: np.ndarray, b: np.ndarray) -> float:
    """max over rows of ||a - b||_inf / ||b||_inf."""
    a64, b64 = a.astype(np.float64), b.astype(np.float64)
    return float(np.max(np.abs(a64 - b64).max(axis=1) / np.abs(b64).max(axis=1)))


def min_cosine(a: np.ndarray, b: np.ndarray) -> float:
    a64, b64 = a.astype(np.float64), b.astype(np.float64)
    cos = (a64 * b64).sum(axis=1) / (np.linalg.norm(a64, axis=1) * np.linalg.norm(b64, axis=1))
    return float(cos.min())


@pytest.fixture(scope="module", params=list(MODELS))
def case(request: pytest.FixtureRequest):
    """(name, checkpoint folder, fastembed_ext.Encoder(folder), SentenceTransformer(folder))."""
    from sentence_transformers import SentenceTransformer

    name = request.param
    folder: Path = request.getfixturevalue(name)
    enc = fastembed_ext.Encoder(folder)
    st = SentenceTransformer(str(folder), device="cpu")
    return name, folder, enc, st


def _st_token_ids(st, texts: list[str]) -> list[list[int]]:
    """Token ids sentence-transformers feeds its model (padding removed)."""
    features = st.preprocess(texts) if hasattr(st, "preprocess") else st.tokenize(texts)
    ids, mask = features["input_ids"].tolist(), features["attention_mask"].tolist()
    return [[t for t, m in zip(row, row_mask, strict=True) if m] for row, row_mask in zip(ids, mask, strict=True)]


def test_vectors_equal_sentence_transformers(case, record_property) -> None:
    name, _, enc, st = case
    ours = enc.encode(PARITY_TEXTS)
    theirs = st.encode(PARITY_TEXTS, convert_to_numpy=True)
    assert ours.shape == theirs.shape == (len(PARITY_TEXTS), MODELS[name][0])
    assert ours.dtype == np.float32
    rel, cos = relative_difference(ours, theirs), min_cosine(ours, theirs)
    abs_diff = float(np.abs(ours - theirs).max())
    record_property(f"{name}_max_rel_diff", rel)
    record_property(f"{name}_min_cosine", cos)
    print(f"\n[parity] {name}: {len(PARITY_TEXTS)} texts, max rel diff {rel:.3e}, "
          f"max abs diff {abs_diff:.3e}, min cosine {cos:.9f}")
    assert rel < MAX_REL_DIFF, f"{name}: max relative difference {rel:.3e}"
    assert cos > MIN_COSINE, f"{name}: min cosine {cos:.9f}"


def test_settings_match_sentence_transformers(case) -> None:
    name, _, enc, st = case
    dim, max_seq_length, similarity = MODELS[name]
    assert enc.dim == dim == st.get_sentence_embedding_dimension()
    assert enc.max_seq_length == max_seq_length == st.max_seq_length
    assert enc.similarity == similarity


def test_token_ids_equal_sentence_transformers(case) -> None:
    """The bundle's tokenizer.json, truncated at max_seq_length, gives sentence-transformers' ids
    (this pins normalisation, special tokens and truncation); so does the engine itself."""
    from tokenizers import Tokenizer

    name, _, enc, st = case
    tok = Tokenizer.from_file(str(enc.path / "tokenizer.json"))
    tok.enable_truncation(enc.max_seq_length)
    ours = [e.ids for e in tok.encode_batch(PARITY_TEXTS)]
    theirs = _st_token_ids(st, PARITY_TEXTS)
    for i, (a, b) in enumerate(zip(ours, theirs, strict=True)):
        assert a == b, f"{name}: token ids differ for texts[{i}] = {PARITY_TEXTS[i][:40]!r}"
    assert enc.tokenize(PARITY_TEXTS) == theirs
    longest = max(len(ids) for ids in ours)
    assert longest == enc.max_seq_length, f"{name}: long texts must be truncated at max_seq_length"


def test_distilbert_token_ids_past_65535(distilbert_256k: Path) -> None:
    """The 256k-vocabulary model's real tokens sit past 65,535: ids must not wrap at 16 bits."""
    enc = fastembed_ext.Encoder(distilbert_256k)
    ids = enc.tokenize(PARITY_TEXTS)
    real = [t for row in ids for t in row if t >= 5]  # 0..4 are [PAD] [UNK] [CLS] [SEP] [MASK]
    assert real and min(real) >= FIRST_REAL_ID > 65_535
    assert max(real) > 66_000
    # Vectors of texts made of such tokens differ from each other (ids reached the embedding table).
    v = enc.encode(["The quick brown fox", "lazy dog", "Order #12345"])
    assert np.abs(v[0] - v[1]).max() > 1e-3 and np.abs(v[1] - v[2]).max() > 1e-3

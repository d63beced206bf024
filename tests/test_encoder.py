"""The public Encoder: batch invariance, threads, shapes, normalisation, errors, the export cache."""

from __future__ import annotations

import importlib
import json
import os
import shutil
import subprocess
import sys
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest
from model_factory import LONG_TEXT, PARITY_TEXTS, copy_with_pooling

import fastembed_ext
from fastembed_ext import ModelLoadError, UnsupportedModelError

# The submodule (the package attribute `fastembed_ext.export` is the function of that name).
export_module = importlib.import_module("fastembed_ext.export")

SHORT = ["a", "Hello world", "Crème brûlée", "中文", "word " * 30, "", "MiXeD 123 !?"]
LONGER = [LONG_TEXT, "lazy dog " * 90, "The quick brown fox jumps over the lazy dog. " * 12]


@pytest.fixture(params=["distilbert_encoder", "roberta_encoder", "minilm_encoder"])
def encoder(request: pytest.FixtureRequest):
    return request.getfixturevalue(request.param)


# --------------------------------------------------------------------------- batch invariance


def test_vector_does_not_depend_on_batch(encoder) -> None:
    alone = np.stack([encoder.encode(t) for t in SHORT])
    mixed = LONGER[:1] + SHORT[:3] + LONGER[1:] + SHORT[3:]
    positions = [mixed.index(t) for t in SHORT]
    for batch_size in (None, 1, 3, 64):
        got = encoder.encode(mixed, batch_size=batch_size)[positions]
        np.testing.assert_allclose(got, alone, rtol=0, atol=1e-5, err_msg=f"batch_size={batch_size}")
    reversed_ = encoder.encode(SHORT[::-1], batch_size=4)[::-1]
    np.testing.assert_allclose(reversed_, alone, rtol=0, atol=1e-5)


def test_token_budget_changes_batches_not_vectors(encoder) -> None:
    texts = LONGER + SHORT
    default = encoder.encode(texts)
    for budget in (1, 40, 100_000):  # one text per pass, a few short ones together, all at once
        got = fastembed_ext.Encoder(encoder.path, batch_tokens=budget).encode(texts)
        np.testing.assert_allclose(got, default, rtol=0, atol=1e-5, err_msg=f"batch_tokens={budget}")


@pytest.mark.parametrize("budget", [0, -3])
def test_token_budget_must_be_a_positive_integer(distilbert_bundle: Path, budget: int) -> None:
    with pytest.raises(ValueError, match=rf"batch_tokens must be a positive integer, got {budget}"):
        fastembed_ext.Encoder(distilbert_bundle, batch_tokens=budget)
    native = fastembed_ext.Encoder(distilbert_bundle)._native
    with pytest.raises(ValueError, match=rf"batch_tokens must be a positive integer, got {budget}"):
        native.encode(["a"], None, None, budget)


def test_token_budget_type(distilbert_bundle: Path) -> None:
    with pytest.raises(TypeError, match="batch_tokens must be an int, not float"):
        fastembed_ext.Encoder(distilbert_bundle, batch_tokens=2.5)
    enc = fastembed_ext.Encoder(distilbert_bundle, batch_tokens=np.int64(64))
    assert enc.encode(["a", "b"]).shape == (2, 32)


def test_threads_share_one_encoder(distilbert_encoder) -> None:
    enc = distilbert_encoder
    lists = [PARITY_TEXTS[i::4] + SHORT for i in range(4)]
    serial = [enc.encode(texts, batch_size=3) for texts in lists]
    barrier = threading.Barrier(4)

    def work(texts: list[str]) -> np.ndarray:
        barrier.wait()
        return np.concatenate([enc.encode(texts, batch_size=3) for _ in range(3)])

    with ThreadPoolExecutor(4) as pool:
        results = list(pool.map(work, lists))
    for want, got in zip(serial, results, strict=True):
        np.testing.assert_allclose(got, np.concatenate([want] * 3), rtol=0, atol=1e-6)


# --------------------------------------------------------------------------- shapes and options


def test_truncation_is_never_silent(minilm_encoder) -> None:
    """A text past max_seq_length is embedded from its beginning, as sentence-transformers does,
    and each call that cut texts warns once with their count; a call that cut none is silent."""
    import warnings

    import fastembed_ext

    long = "word " * (minilm_encoder.max_seq_length + 50)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        minilm_encoder.encode(["short", "also short"])
        minilm_encoder.encode(["word " * (minilm_encoder.max_seq_length - 2)])  # exactly fits
    for call, count in ((lambda: minilm_encoder.encode([long, "short", long]), "2 of 3"),
                        (lambda: minilm_encoder.encode(long), "1 of 1"),
                        (lambda: minilm_encoder.encode([long] * 3, show_progress_bar=True), "3 of 3")):
        with pytest.warns(fastembed_ext.TruncationWarning) as record:
            call()
        assert len(record) == 1
        assert str(record[0].message) == (
            f"{count} text(s) were longer than this model's max_seq_length ({minilm_encoder.max_seq_length} "
            "tokens) and were embedded from their beginning only")
    # the vector is the one of its first max_seq_length tokens
    ids = minilm_encoder.tokenize([long])[0]
    assert len(ids) == minilm_encoder.max_seq_length
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", fastembed_ext.TruncationWarning)
        assert np.allclose(minilm_encoder.encode(long), minilm_encoder.encode("word " * 300), atol=1e-6)


def test_shapes_and_dtype(encoder) -> None:
    many = encoder.encode(SHORT)
    assert many.shape == (len(SHORT), encoder.dim)
    assert many.dtype == np.float32 and many.flags.c_contiguous
    one = encoder.encode("Hello world")
    assert one.shape == (encoder.dim,) and one.dtype == np.float32 and one.flags.c_contiguous
    np.testing.assert_allclose(one, many[1], rtol=0, atol=1e-5)
    empty = encoder.encode([])
    assert empty.shape == (0, encoder.dim) and empty.dtype == np.float32
    assert encoder.encode(iter(SHORT[:2])).shape == (2, encoder.dim)
    assert np.isfinite(many).all()


def test_normalize_override(distilbert_encoder, roberta_encoder) -> None:
    texts = SHORT[:4]
    raw = distilbert_encoder.encode(texts)  # model without Normalize
    assert not np.allclose(np.linalg.norm(raw, axis=1), 1.0, atol=1e-3)
    unit = distilbert_encoder.encode(texts, normalize=True)
    np.testing.assert_allclose(np.linalg.norm(unit, axis=1), 1.0, atol=1e-5)
    np.testing.assert_allclose(unit, raw / np.linalg.norm(raw, axis=1, keepdims=True), atol=1e-6)

    default = roberta_encoder.encode(texts)  # model with Normalize
    np.testing.assert_allclose(np.linalg.norm(default, axis=1), 1.0, atol=1e-5)
    plain = roberta_encoder.encode(texts, normalize=False)
    assert not np.allclose(np.linalg.norm(plain, axis=1), 1.0, atol=1e-3)
    np.testing.assert_allclose(plain / np.linalg.norm(plain, axis=1, keepdims=True), default, atol=1e-6)


def test_non_str_item_names_its_index(distilbert_encoder) -> None:
    with pytest.raises(TypeError, match=r"texts\[3\] is int, expected str"):
        distilbert_encoder.encode(["a", "b", "c", 4])
    with pytest.raises(TypeError, match=r"texts\[0\] is bytes"):
        distilbert_encoder.encode([b"bytes"])


def test_no_torch_needed_to_encode(distilbert_bundle: Path) -> None:
    """Encoding a bundle imports neither torch nor transformers (only numpy + the native module)."""
    code = (
        "import sys, fastembed_ext\n"
        f"enc = fastembed_ext.Encoder({str(distilbert_bundle)!r})\n"
        "assert enc.encode(['hello']).shape == (1, 32)\n"
        "print(sorted(m for m in ('torch', 'transformers', 'sentence_transformers') if m in sys.modules))\n"
        "print(sorted({line.split('/')[-1].strip() for line in open('/proc/self/maps')\n"
        "              if 'libtorch' in line or 'libcu' in line or 'libnv' in line}))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    modules, libraries = out.stdout.splitlines()
    assert modules == "[]"
    # The CPU half of libtorch only: its CUDA half would cost ~260 MiB resident for nothing.
    assert "libtorch_cpu.so" in libraries
    for heavy in ("libtorch_cuda", "libcublas", "libnvrtc", "libnvJitLink", "libcudnn"):
        assert heavy not in libraries, libraries


# --------------------------------------------------------------------------- errors


def test_missing_directory(tmp_path: Path) -> None:
    with pytest.raises(ModelLoadError, match="no such file or directory") as info:
        fastembed_ext.Encoder(tmp_path / "nope")
    assert str(tmp_path / "nope") in str(info.value)


def _copy_bundle(bundle: Path, dst: Path) -> Path:
    shutil.copytree(bundle, dst)
    return dst


def test_bundle_without_model_pt(distilbert_bundle: Path, tmp_path: Path) -> None:
    broken = _copy_bundle(distilbert_bundle, tmp_path / "b")
    (broken / "model.pt").unlink()
    with pytest.raises(ModelLoadError, match="model.pt") as info:
        fastembed_ext.Encoder(broken)
    assert str(broken) in str(info.value)


def test_corrupt_tokenizer_json(distilbert_bundle: Path, tmp_path: Path) -> None:
    broken = _copy_bundle(distilbert_bundle, tmp_path / "b")
    (broken / "tokenizer.json").write_text('{"version": "1.0", "model": {"type": "Nonsense"', encoding="utf-8")
    with pytest.raises(ModelLoadError, match="tokenizer.json") as info:
        fastembed_ext.Encoder(broken)
    assert "not a valid tokenizer.json" in str(info.value)


def test_manifest_dim_disagrees_with_model(distilbert_bundle: Path, tmp_path: Path) -> None:
    broken = _copy_bundle(distilbert_bundle, tmp_path / "b")
    manifest = json.loads((broken / "fastembed_ext.json").read_text())
    manifest["dim"] = 768
    (broken / "fastembed_ext.json").write_text(json.dumps(manifest))
    with pytest.raises(ModelLoadError, match="fastembed_ext.json") as info:
        fastembed_ext.Encoder(broken)
    message = str(info.value)
    assert "768" in message and "32" in message


def test_fingerprint_pins_the_bundle_content(distilbert_bundle: Path, tmp_path: Path) -> None:
    bundle = _copy_bundle(distilbert_bundle, tmp_path / "b")
    plain = fastembed_ext.Encoder(bundle)
    fingerprint = plain.fingerprint
    assert fingerprint.startswith("blake3:") and len(fingerprint) == 7 + 64
    pinned = fastembed_ext.Encoder(bundle, fingerprint=fingerprint)
    assert pinned.fingerprint == fingerprint
    assert np.array_equal(pinned.encode(["pinned"]), plain.encode(["pinned"]))

    manifest = json.loads((bundle / "fastembed_ext.json").read_text())
    manifest["source"] = "edited after it was pinned"
    (bundle / "fastembed_ext.json").write_text(json.dumps(manifest))
    with pytest.raises(fastembed_ext.BundleChangedError, match="differs from the pinned") as info:
        fastembed_ext.Encoder(bundle, fingerprint=fingerprint)
    assert isinstance(info.value, ModelLoadError) and fingerprint in str(info.value)
    assert fastembed_ext.Encoder(bundle).fingerprint != fingerprint


def test_fingerprint_needs_a_bundle(distilbert_256k: Path) -> None:
    with pytest.raises(ModelLoadError, match="not a fastembed_ext bundle"):
        fastembed_ext.Encoder(distilbert_256k, fingerprint="blake3:" + "0" * 64)


def test_unsupported_architecture(gpt2_hf: Path) -> None:
    with pytest.raises(UnsupportedModelError, match=r"'gpt2' is not supported") as info:
        fastembed_ext.Encoder(gpt2_hf)
    assert str(gpt2_hf / "config.json") in str(info.value)
    assert isinstance(info.value, ValueError)  # UnsupportedModelError is also a ValueError


def test_unsupported_pooling(distilbert_256k: Path, tmp_path: Path) -> None:
    other = copy_with_pooling(
        distilbert_256k, tmp_path / "attention", {"word_embedding_dimension": 32, "pooling_mode": "attention"}
    )
    with pytest.raises(UnsupportedModelError, match=r"pooling 'attention' is not supported; the modes are cls, mean") as info:
        fastembed_ext.Encoder(other)
    assert str(other / "1_Pooling" / "config.json") in str(info.value)


def test_hub_id_without_network() -> None:
    assert os.environ["HF_HUB_OFFLINE"] == "1"
    with pytest.raises(ModelLoadError, match="could not be downloaded") as info:
        fastembed_ext.Encoder("sentence-transformers/all-roberta-large-v1")
    message = str(info.value)
    assert "'sentence-transformers/all-roberta-large-v1' is not a local path" in message
    assert "no network" in message


def test_hub_download_failure(monkeypatch: pytest.MonkeyPatch) -> None:
    """With the hub allowed but unreachable, the download error becomes a ModelLoadError."""
    import huggingface_hub

    def unreachable(repo_id: str, **kwargs: object) -> str:
        raise ConnectionError(f"cannot reach the hub for {repo_id}")

    monkeypatch.delenv("HF_HUB_OFFLINE")
    monkeypatch.delenv("TRANSFORMERS_OFFLINE")
    monkeypatch.setattr(huggingface_hub, "snapshot_download", unreachable)
    with pytest.raises(ModelLoadError, match="'some-model' is not a local path and could not be downloaded"):
        fastembed_ext.Encoder("some-model")


# --------------------------------------------------------------------------- the export cache


def test_checkpoint_cache_is_reused(
    distilbert_256k: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("FASTEMBED_EXT_CACHE", str(tmp_path / "cache"))
    src = shutil.copytree(distilbert_256k, tmp_path / "model")
    first = fastembed_ext.Encoder(src)
    bundle = first.path
    assert bundle.parent == tmp_path / "cache" / "exports"
    stamp = (bundle / "model.pt").stat().st_mtime_ns
    second = fastembed_ext.Encoder(src)
    assert second.path == bundle
    assert (bundle / "model.pt").stat().st_mtime_ns == stamp, "the second Encoder re-exported"
    np.testing.assert_array_equal(first.encode(SHORT), second.encode(SHORT))

    # Editing the checkpoint (a new size or mtime of any file) exports it anew.
    config = src / "sentence_bert_config.json"
    config.write_text(json.dumps({"max_seq_length": 16, "do_lower_case": False}))
    third = fastembed_ext.Encoder(src)
    assert third.path != bundle and third.max_seq_length == 16
    # ... and removes the export it supersedes (and its lock), while an Encoder that loaded the
    # old one keeps working; other sources' exports stay.
    other = fastembed_ext.Encoder(shutil.copytree(distilbert_256k, tmp_path / "other"))
    cache = tmp_path / "cache" / "exports"
    assert sorted(p.name for p in cache.iterdir()) == sorted(
        [third.path.name, f"{third.path.name}.lock", other.path.name, f"{other.path.name}.lock"]
    )
    np.testing.assert_array_equal(first.encode(SHORT), other.encode(SHORT))


def test_export_killed_midway_is_cleaned_up_by_the_next(
    distilbert_256k: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("FASTEMBED_EXT_CACHE", str(tmp_path / "cache"))
    src = shutil.copytree(distilbert_256k, tmp_path / "model")
    cache = tmp_path / "cache" / "exports"
    key = export_module.cache_key(src)
    half = cache / f".{key}.tmp-killed"
    half.mkdir(parents=True)
    (half / "model.pt").write_bytes(b"half a model")
    enc = fastembed_ext.Encoder(src)
    assert sorted(p.name for p in cache.iterdir()) == [key, f"{key}.lock"]
    assert enc.path == cache / key


def test_concurrent_first_use_exports_once(
    distilbert_256k: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("FASTEMBED_EXT_CACHE", str(tmp_path / "cache"))
    src = shutil.copytree(distilbert_256k, tmp_path / "model")
    calls: list[Path] = []
    real_export = export_module.export

    def counting_export(s, d, **kwargs):
        calls.append(Path(d))
        return real_export(s, d, **kwargs)

    monkeypatch.setattr(export_module, "export", counting_export)
    with ThreadPoolExecutor(3) as pool:
        paths = list(pool.map(lambda _: export_module.resolve_bundle(src), range(3)))
    assert len(set(paths)) == 1 and len(calls) == 1
    assert (paths[0] / "fastembed_ext.json").is_file()


def test_hub_id_is_downloaded_then_exported(
    distilbert_256k: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Where a network exists, a hub id is fetched with snapshot_download (faked here with a local
    folder), exported into the cache, and the manifest names the hub id."""
    import huggingface_hub

    snapshot = shutil.copytree(distilbert_256k, tmp_path / "snapshot")
    asked: list[str] = []

    def fake_download(repo_id: str, **kwargs: object) -> str:
        asked.append(repo_id)
        return str(snapshot)

    monkeypatch.delenv("HF_HUB_OFFLINE")
    monkeypatch.delenv("TRANSFORMERS_OFFLINE")
    monkeypatch.setenv("FASTEMBED_EXT_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr(huggingface_hub, "snapshot_download", fake_download)
    enc = fastembed_ext.Encoder("org/tiny-distilbert")
    assert asked == ["org/tiny-distilbert"]
    assert json.loads((enc.path / "fastembed_ext.json").read_text())["source"] == "org/tiny-distilbert"
    np.testing.assert_array_equal(enc.encode(SHORT), fastembed_ext.Encoder(distilbert_256k).encode(SHORT))

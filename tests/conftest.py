"""Shared fixtures: small random-weight models (see model_factory.py), the real all-MiniLM-L6-v2,
their bundles and encoders, each built once per session.

Nothing here may reach a model hub: HF_HUB_OFFLINE is set before anything imports huggingface_hub,
and checkpoints exported by ``Encoder(folder)`` go to a cache under the session's temp directory.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["TRANSFORMERS_OFFLINE"] = "1"
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import pytest  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))

import model_factory  # noqa: E402


@pytest.fixture(scope="session", autouse=True)
def _export_cache(tmp_path_factory: pytest.TempPathFactory):
    """Checkpoints exported by Encoder(folder) land in a cache of this session only."""
    cache = tmp_path_factory.mktemp("fastembed_ext_cache")
    old = os.environ.get("FASTEMBED_EXT_CACHE")
    os.environ["FASTEMBED_EXT_CACHE"] = str(cache)
    yield cache
    if old is None:
        os.environ.pop("FASTEMBED_EXT_CACHE", None)
    else:
        os.environ["FASTEMBED_EXT_CACHE"] = old


@pytest.fixture(scope="session")
def model_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("models")


# --------------------------------------------------------------------------- checkpoint folders


@pytest.fixture(scope="session")
def distilbert_256k(model_root: Path) -> Path:
    return model_factory.build_distilbert_256k(model_root / "distilbert-256k")


@pytest.fixture(scope="session")
def roberta(model_root: Path) -> Path:
    return model_factory.build_roberta(model_root / "roberta")


@pytest.fixture(scope="session")
def minilm() -> Path:
    return model_factory.minilm_path()


@pytest.fixture(scope="session")
def roberta_st6(model_root: Path, roberta: Path) -> Path:
    """The RoBERTa folder re-saved by sentence-transformers 6 itself."""
    return model_factory.save_st6_layout(roberta, model_root / "roberta-st6")


@pytest.fixture(scope="session")
def bert_hf(model_root: Path) -> Path:
    return model_factory.build_plain_hf_bert(model_root / "bert-hf")


@pytest.fixture(scope="session")
def mpnet(model_root: Path) -> Path:
    return model_factory.build_mpnet(model_root / "mpnet")


@pytest.fixture(scope="session")
def xlm_roberta(model_root: Path) -> Path:
    return model_factory.build_xlm_roberta(model_root / "xlm-roberta")


@pytest.fixture(scope="session")
def modernbert(model_root: Path) -> Path:
    return model_factory.build_modernbert(model_root / "modernbert")


@pytest.fixture(scope="session")
def gpt2_hf(model_root: Path) -> Path:
    return model_factory.build_gpt2(model_root / "gpt2")


# --------------------------------------------------------------------------- bundles and encoders


@pytest.fixture(scope="session")
def bundle_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("bundles")


@pytest.fixture(scope="session")
def distilbert_bundle(bundle_root: Path, distilbert_256k: Path) -> Path:
    import fastembed_ext

    return fastembed_ext.export(distilbert_256k, bundle_root / "distilbert-256k")


@pytest.fixture(scope="session")
def roberta_bundle(bundle_root: Path, roberta: Path) -> Path:
    import fastembed_ext

    return fastembed_ext.export(roberta, bundle_root / "roberta")


@pytest.fixture(scope="session")
def minilm_bundle(bundle_root: Path, minilm: Path) -> Path:
    import fastembed_ext

    return fastembed_ext.export(minilm, bundle_root / "minilm")


@pytest.fixture(scope="session")
def distilbert_encoder(distilbert_bundle: Path):
    import fastembed_ext

    return fastembed_ext.Encoder(distilbert_bundle)


@pytest.fixture(scope="session")
def roberta_encoder(roberta_bundle: Path):
    import fastembed_ext

    return fastembed_ext.Encoder(roberta_bundle)


@pytest.fixture(scope="session")
def minilm_encoder(minilm_bundle: Path):
    import fastembed_ext

    return fastembed_ext.Encoder(minilm_bundle)

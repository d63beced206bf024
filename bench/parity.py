"""Parity with sentence-transformers per architecture, pooling mode and head, on the test suite's
deterministic random-weight models (tests/model_factory.py) and the real all-MiniLM-L6-v2: the
largest relative difference (max over rows of ||a - b||_inf / ||b||_inf) and the smallest cosine
between fastembed_ext's vector and sentence-transformers' for the same text, over the parity texts
(empty strings, many scripts, emoji, texts far past max_seq_length).

    .venv/bin/python bench/parity.py
"""

from __future__ import annotations

import os
import sys
import tempfile
import warnings
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

import model_factory as mf  # noqa: E402
from test_parity import MAX_REL_DIFF, MIN_COSINE, min_cosine, relative_difference  # noqa: E402


def main() -> None:
    import fastembed_ext
    from sentence_transformers import SentenceTransformer

    warnings.simplefilter("ignore")
    root = Path(tempfile.mkdtemp(prefix="parity-"))
    os.environ["FASTEMBED_EXT_CACHE"] = str(root / "cache")
    texts = mf.PARITY_TEXTS
    builders = {
        "bert (all-MiniLM-L6-v2, real)": lambda p: mf.minilm_path(),
        "distilbert (256k vocabulary)": mf.build_distilbert_256k,
        "roberta": mf.build_roberta,
        "xlm-roberta": mf.build_xlm_roberta,
        "mpnet": mf.build_mpnet,
        "modernbert": mf.build_modernbert,
    }
    cases: list[tuple[str, Path, dict]] = []
    for name, build in builders.items():
        cases.append((name, build(root / name.split()[0]), {}))
    distilbert = root / "distilbert"
    for mode in ("cls", "max", "mean_sqrt_len_tokens", "weightedmean", "lasttoken", "cls+mean"):
        folder = mf.with_head(distilbert, root / f"pool-{mode}", pooling={"word_embedding_dimension": 32, "pooling_mode": mode.split("+")})
        cases.append((f"distilbert, pooling {mode}", folder, {}))
    cases.append(("roberta + Dense(tanh) + Dense + Normalize",
                  mf.with_head(root / "roberta", root / "dense", dense=[(32, 24, "torch.nn.modules.activation.Tanh"),
                                                                      (24, 16, "torch.nn.modules.linear.Identity")]), {}))
    prompted = mf.with_head(distilbert, root / "prompted", prompts={"query": "query: "}, default_prompt_name="query",
                            pooling={"word_embedding_dimension": 32, "pooling_mode": "mean", "include_prompt": False})
    cases.append(("distilbert, default prompt, include_prompt false", prompted, {}))
    cases.append(("roberta, truncate_dim 8, normalize_embeddings", root / "roberta",
                  {"truncate_dim": 8, "normalize_embeddings": True}))
    print(f"| model | max relative difference [< {MAX_REL_DIFF:g}] | min cosine [> {MIN_COSINE}] |")
    print("|---|---:|---:|")
    for name, folder, kwargs in cases:
        ours = fastembed_ext.Encoder(folder).encode(texts, **kwargs)
        theirs = SentenceTransformer(str(folder), device="cpu").encode(texts, **kwargs)
        print(f"| {name} | {relative_difference(ours, theirs):.2e} | {min_cosine(ours, theirs):.9f} |", flush=True)


if __name__ == "__main__":
    main()

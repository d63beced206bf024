"""``make demo``: start the local database, ingest a small sample corpus and answer a few
semantic queries with the bundled all-MiniLM-L6-v2.

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


def main() -> int:
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

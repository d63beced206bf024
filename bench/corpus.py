"""A deterministic, realistic English corpus built from the Python standard library's documentation.

No download: the text is the docstrings of a fixed list of stdlib modules and their public members
(``inspect.getdoc``), split into paragraphs. Lengths run from a few tokens (one-line docstrings,
titles) to far past 512 tokens (whole module docs and concatenations of consecutive paragraphs), in
an order shuffled with a fixed seed. The same interpreter version gives the same texts.

    >>> from bench import corpus            # or: import corpus, with bench/ on sys.path
    >>> docs = corpus.texts(256)            # list[str], deterministic
    >>> queries, docs, relevant = corpus.retrieval_set(300)
"""

from __future__ import annotations

import importlib
import inspect
import random
import re
import warnings
from functools import lru_cache

# Modules whose docs are prose-heavy and present on every CPython 3.11+ build.
MODULES = (
    "abc argparse array ast asyncio base64 bisect builtins bz2 calendar cmath codecs collections "
    "colorsys concurrent.futures configparser contextlib copy csv dataclasses datetime decimal "
    "difflib dis email enum filecmp fileinput fnmatch fractions ftplib functools gc getopt gettext "
    "glob gzip hashlib heapq hmac html html.parser http.client http.server imaplib importlib inspect "
    "io ipaddress itertools json keyword linecache locale logging lzma mailbox math mimetypes "
    "multiprocessing numbers operator optparse os os.path pathlib pdb pickle pkgutil platform "
    "plistlib poplib pprint profile pstats queue quopri random re reprlib sched secrets selectors "
    "shelve shlex shutil signal smtplib socket socketserver sqlite3 ssl stat statistics string "
    "struct subprocess sys sysconfig tarfile tempfile textwrap threading time timeit token tokenize "
    "trace traceback types typing unicodedata unittest unittest.mock urllib.parse urllib.request "
    "uuid warnings weakref wave xml.dom.minidom xml.etree.ElementTree xml.sax zipfile zlib"
).split()

_WS = re.compile(r"[ \t]+")


def _docs_of(modname: str) -> list[str]:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            mod = importlib.import_module(modname)
        except Exception:  # noqa: BLE001 - an optional module missing on this build
            return []
        return _member_docs(mod)


def _member_docs(mod: object) -> list[str]:
    out = []
    doc = inspect.getdoc(mod)
    if doc:
        out.append(doc)
    for name in sorted(vars(mod)):
        if name.startswith("_"):
            continue
        obj = getattr(mod, name, None)
        if not (inspect.isclass(obj) or inspect.isfunction(obj) or inspect.isbuiltin(obj)):
            continue
        d = inspect.getdoc(obj)
        if d:
            out.append(d)
        if inspect.isclass(obj):
            for mname in sorted(vars(obj)):
                if mname.startswith("_"):
                    continue
                md = inspect.getdoc(getattr(obj, mname, None))
                if md and md != d:
                    out.append(md)
    return out


def _paragraphs(doc: str) -> list[str]:
    paras = []
    for block in re.split(r"\n\s*\n", doc):
        text = _WS.sub(" ", " ".join(line.strip() for line in block.splitlines())).strip()
        if len(text) >= 8 and sum(c.isalpha() for c in text) > len(text) // 2:
            paras.append(text)
    return paras


@lru_cache(maxsize=1)
def _pool() -> tuple[tuple[str, ...], tuple[str, ...]]:
    """(paragraphs, long documents) in a fixed order, deduplicated."""
    seen: set[str] = set()
    paras: list[str] = []
    docs: list[str] = []
    for modname in MODULES:
        for doc in _docs_of(modname):
            ps = _paragraphs(doc)
            fresh = [p for p in ps if p not in seen]
            seen.update(fresh)
            paras.extend(fresh)
            whole = " ".join(ps)
            if len(whole) > 1500 and whole not in seen:  # a whole long docstring as one document
                seen.add(whole)
                docs.append(whole)
    return tuple(paras), tuple(docs)


@lru_cache(maxsize=8)
def _all_texts(seed: int) -> tuple[str, ...]:
    paras, docs = _pool()
    rng = random.Random(seed)
    # Stored rows are mostly paragraphs: keep every paragraph of 8+ words, a sample of the
    # one-liners, every whole long docstring, and add concatenations and query-like snippets.
    out = [p for p in paras if len(p.split()) >= 8 or rng.random() < 0.15] + list(docs)
    # Concatenations of consecutive paragraphs: documents of ~300 to ~4000 characters.
    for _ in range(len(paras) // 5):
        start = rng.randrange(len(paras))
        k = rng.choice((3, 5, 8, 12, 20))
        out.append(" ".join(paras[start : start + k]))
    # Short query-like texts: the first few words of a paragraph.
    for _ in range(len(paras) // 20):
        words = paras[rng.randrange(len(paras))].split()
        out.append(" ".join(words[: rng.randint(2, 8)]))
    rng.shuffle(out)
    return tuple(out)


def texts(n: int, seed: int = 0) -> list[str]:
    """`n` texts of mixed length in a shuffled, deterministic order (repeats only if n is huge)."""
    pool = _all_texts(seed)
    return [pool[i % len(pool)] for i in range(n)]


_SENT = re.compile(r"(?<=[a-z0-9\)\]\"'`])[.!?](?=\s+[A-Z])")


def retrieval_set(n_docs: int = 300, seed: int = 0) -> tuple[list[str], list[str], list[int]]:
    """A small labelled retrieval set: (queries, docs, relevant doc index per query).

    Each doc is a paragraph of at least two sentences with its first sentence removed; its query
    is that first sentence (a summary line, as docstrings start). Queries and docs share no text,
    so the query has to find its continuation by meaning. Near-duplicate docs are skipped.
    """
    paras, _ = _pool()
    rng = random.Random(seed + 1)
    order = list(range(len(paras)))
    rng.shuffle(order)
    queries: list[str] = []
    docs: list[str] = []
    seen_q: set[str] = set()
    for i in order:
        p = paras[i]
        m = _SENT.search(p)
        if not m:
            continue
        q, rest = p[: m.end()].strip(), p[m.end() :].strip()
        if not (4 <= len(q.split()) <= 30 and len(rest.split()) >= 8) or q.lower() in seen_q:
            continue
        seen_q.add(q.lower())
        queries.append(q)
        docs.append(rest)
        if len(docs) == n_docs:
            break
    return queries, docs, list(range(len(docs)))


if __name__ == "__main__":
    pool = _all_texts(0)
    lens = sorted(len(t.split()) for t in pool)
    print(f"{len(pool)} texts; words p10/p50/p90/max: "
          f"{lens[len(lens) // 10]}/{lens[len(lens) // 2]}/{lens[9 * len(lens) // 10]}/{lens[-1]}")
    for t in texts(5):
        print("-", t[:150])
    q, d, _ = retrieval_set(3)
    for a, b in zip(q, d):
        print("Q:", a, "\nD:", b[:120])

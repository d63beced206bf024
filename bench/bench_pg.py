"""PostgreSQL figures, measured in one run against a throwaway cluster:

* a new connection's first embed() (library import, model load, one forward pass) and the
  backend's resident memory after it, for this extension version (pinned load from the server's own
  library) and, side by side in the same cluster, for the 0.1.0 SQL objects on the same engine
  (unpinned load through 0.1.0's loader), connections alternating between the two;
* rows/s of INSERT ... SELECT of 2,000 texts through a generated column and through the
  attach trigger, each as a ratio to the Python API's docs/s on the same texts;
* p50 latency of a top-10 `ORDER BY embedding <=> embed('query') LIMIT 10` over 10,000 rows with
  an HNSW index, its EXPLAIN, and recall@10 against exact search;
* async attachments (--async-rows texts): INSERT time into an async-attached table against the same
  table with nothing attached, as one statement, as 1,000 single-row statements and as the same
  statements from 8 connections at once (alternating rounds, best of each); one worker's drain
  rate against `Encoder.encode` of the same texts; the time until the queue is empty; two worker
  processes draining together, and whether every vector is right.

    .venv/bin/python bench/bench_pg.py [--rows 10000] [--insert-rows 2000] [--queries 100]
                                       [--connections 8] [--skip-insert] [--async-rows 10000]
                                       [--only-async]
"""

from __future__ import annotations

import argparse
import os
import random
import shutil
import statistics
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
import psycopg

import fastembed_ext
from fastembed_ext.pg import cluster
from fastembed_ext.pg.ingest import ingest
from fastembed_ext.pg.install import install, minilm_source

CORPUS = Path(fastembed_ext.__file__).parent / "pg" / "data" / "sample_corpus.jsonl"
RELEASE_0_1_0 = Path(__file__).resolve().parents[1] / "tests" / "pg" / "data" / "fastembed_ext--0.1.0.sql"


def texts(n: int, seed: int) -> list[str]:
    """Real-length texts (two to five sentences, 30-120 tokens) built from the sample corpus."""
    import json

    sents = [json.loads(l)["body"] for l in CORPUS.read_text().splitlines() if l.strip()]
    rng = random.Random(seed)
    return [" ".join(rng.sample(sents, rng.randint(2, 5))) + f" (note {i})" for i in range(n)]


def rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return -1


def source_table(conn, name: str, docs: list[str]) -> None:
    """Table `name` (id, body) holding `docs`, for INSERT ... SELECT figures."""
    conn.execute(f"CREATE TABLE {name} (id int PRIMARY KEY, body text)")
    with conn.cursor().copy(f"COPY {name} (id, body) FROM STDIN") as cp:
        for i, d in enumerate(docs):
            cp.write_row((i, d))


def first_calls(c: cluster.Cluster, library: Path, minilm: str, n: int) -> None:
    """A new connection's first embed() and its backend's RSS, this version against 0.1.0's SQL objects."""
    current = fastembed_ext.__version__
    share = Path(f"/usr/share/postgresql/{cluster.PG_MAJOR}/extension")
    old_script = share / RELEASE_0_1_0.name
    sides = {current: c.dsn("bench")}
    if RELEASE_0_1_0.exists() and os.access(share, os.W_OK):
        shutil.copyfile(RELEASE_0_1_0, old_script)
        with psycopg.connect(c.dsn("postgres"), autocommit=True) as conn:
            conn.execute("CREATE DATABASE bench010")
        sides["0.1.0"] = c.dsn("bench010")
        with psycopg.connect(sides["0.1.0"], autocommit=True) as conn:
            conn.execute("CREATE EXTENSION fastembed_ext VERSION '0.1.0' CASCADE")
            conn.execute("INSERT INTO fastembed_ext.config VALUES ('python_path', %s)", (str(library),))
            conn.execute("SELECT fastembed_ext.register_model('minilm', %s)", (minilm,))
    try:
        times: dict[str, list[float]] = {side: [] for side in sides}
        rss: dict[str, list[int]] = {side: [] for side in sides}
        for _ in range(n):
            for side, dsn in sides.items():
                with psycopg.connect(dsn, autocommit=True) as conn:
                    pid = conn.execute("SELECT pg_backend_pid()").fetchone()[0]
                    t = time.perf_counter()
                    conn.execute("SELECT embed('the first call of a new connection', 'minilm')")
                    times[side].append(time.perf_counter() - t)
                    rss[side].append(rss_kib(pid))
        for side in sides:
            print(f"extension {side}: new connection's first embed() p50 {statistics.median(times[side]) * 1000:.0f} ms "
                  f"(min {min(times[side]) * 1000:.0f}, max {max(times[side]) * 1000:.0f}); backend RSS after it "
                  f"{statistics.median(rss[side]) / 1024:.0f} MiB ({n} connections)")
        if len(sides) == 2:
            print(f"  ratio {current} / 0.1.0: first call {statistics.median(times[current]) / statistics.median(times['0.1.0']):.2f}, "
                  f"RSS {statistics.median(rss[current]) / statistics.median(rss['0.1.0']):.2f}")
    finally:
        old_script.unlink(missing_ok=True)


def async_figures(dsn: str, enc, docs: list[str], rounds: int = 21, drain_rounds: int = 2,
                  inserts_only: bool = False) -> None:
    singles = docs[:1000]
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute("DROP TABLE IF EXISTS asrc, plain, queued")
        source_table(conn, "asrc", docs)
        for t in ("plain", "queued"):
            conn.execute(f"CREATE TABLE {t} (id int PRIMARY KEY, body text, embedding vector(384))")
        conn.execute("SELECT fastembed_ext.attach_embedding('queued', 'body', 'embedding', 'minilm', mode => 'async')")
        att = conn.execute("SELECT id FROM fastembed_ext.attachments WHERE tbl = 'queued'::regclass").fetchone()[0]

    def reset() -> None:
        with psycopg.connect(dsn, autocommit=True) as c:
            c.execute("TRUNCATE plain, queued")
            c.execute(f"TRUNCATE fastembed_ext.queue_{att}")
            c.execute("VACUUM ANALYZE plain, queued")
            c.execute(f"VACUUM ANALYZE fastembed_ext.queue_{att}")

    # PostgreSQL keeps a statement's new rows (the trigger's transition table) in work_mem and
    # spills them to a temporary file above it: 10,000 real-length rows are just over the default
    # 4MB, so the one-statement INSERT is measured with the default and with room for them.
    for durable, work_mem in ((False, None), (False, "64MB"), (True, None)):
        insert_figures(dsn, docs, singles, reset, rounds, durable, work_mem)
    if inserts_only:
        return
    drain_figures(dsn, enc, docs, reset, drain_rounds)


WRITERS = 8


def insert_figures(dsn: str, docs: list[str], singles: list[str], reset, rounds: int, durable: bool,
                   work_mem: str | None = None) -> None:
    """INSERT into the async-attached table against the plain one. `durable`: with fsync,
    full_page_writes and synchronous_commit on, as a production server runs (the bench's cluster
    runs without them), so that each single-row statement pays for its commit's WAL flush.
    `work_mem`: the session's, for both tables (None: the server's default)."""
    n = len(docs)
    with psycopg.connect(dsn, autocommit=True) as conn:
        for name in ("fsync", "full_page_writes"):
            conn.execute(f"ALTER SYSTEM SET {name} = {'on' if durable else 'off'}")
        conn.execute("SELECT pg_reload_conf()")
        time.sleep(0.5)
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(f"SET synchronous_commit = {'on' if durable else 'off'}")
        label = "durable (fsync, synchronous_commit on)" if durable else "fsync and synchronous_commit off"
        if work_mem is not None:
            conn.execute(f"SET work_mem = '{work_mem}'")
            label += f", work_mem {work_mem}"
        # the writers' own connections, with the same settings
        writers = [psycopg.connect(dsn, autocommit=True) for _ in range(WRITERS)]
        for w in writers:
            for setting in ("synchronous_commit", "work_mem"):
                w.execute("SELECT set_config(%s, %s, false)", (setting, conn.execute(f"SHOW {setting}").fetchone()[0]))
        # a running worker listens: each NOTIFY signals its backend
        listener = psycopg.connect(dsn, autocommit=True)
        listener.execute("LISTEN fastembed_ext_queue")

        def write(t: str, k: int) -> None:
            for i in range(k, len(singles), WRITERS):
                writers[k].execute(f"INSERT INTO {t} (id, body) VALUES (%s, %s)", (i, singles[i]))

        times: dict[tuple[str, str], list[float]] = {}
        for r in range(rounds):
            # alternating which table goes first, so neither gains from following the other
            for t in ("plain", "queued") if r % 2 == 0 else ("queued", "plain"):
                reset()
                start = time.perf_counter()
                conn.execute(f"INSERT INTO {t} (id, body) SELECT id, body FROM asrc")
                one = time.perf_counter() - start
                reset()
                start = time.perf_counter()
                for i, d in enumerate(singles):
                    conn.execute(f"INSERT INTO {t} (id, body) VALUES (%s, %s)", (i, d))
                many = time.perf_counter() - start
                reset()
                threads = [threading.Thread(target=write, args=(t, k)) for k in range(WRITERS)]
                start = time.perf_counter()
                for thread in threads:
                    thread.start()
                for thread in threads:
                    thread.join()
                concurrent = time.perf_counter() - start
                times.setdefault((t, "one"), []).append(one)
                times.setdefault((t, "many"), []).append(many)
                times.setdefault((t, "writers"), []).append(concurrent)
                for _ in listener.notifies(timeout=0):
                    pass
        for w in [*writers, listener]:
            w.close()
        print(f"async attach, {label} ({rounds} alternating rounds; best, and median in brackets; a connection "
              "LISTENs as a running worker's does):")
        for kind, what in (("one", f"INSERT of {n} rows in one statement"), ("many", f"{len(singles)} single-row INSERTs"),
                           ("writers", f"the same {len(singles)} single-row INSERTs from {WRITERS} connections at once")):
            q, p = times["queued", kind], times["plain", kind]
            print(f"  {what}: {min(q) * 1000:.0f} ms vs {min(p) * 1000:.0f} ms unattached, ratio {min(q) / min(p):.2f} "
                  f"(medians {statistics.median(q) * 1000:.0f} vs {statistics.median(p) * 1000:.0f} ms, "
                  f"{statistics.median(q) / statistics.median(p):.2f})")


def drain_figures(dsn: str, enc, docs: list[str], reset, drain_rounds: int) -> None:
    import subprocess
    import sys

    from fastembed_ext.pg.worker import WorkerOptions, run_worker

    n = len(docs)
    # one worker against Encoder.encode on the same texts, alternating, best of each
    encode_rate = drain_rate = 0.0
    for _ in range(drain_rounds):
        start = time.perf_counter()
        want = enc.encode(docs)
        encode_rate = max(encode_rate, n / (time.perf_counter() - start))
        with psycopg.connect(dsn, autocommit=True) as conn:
            reset()
            conn.execute("INSERT INTO queued (id, body) SELECT id, body FROM asrc")
        report = run_worker(WorkerOptions(dsn=dsn, once=True), log=lambda line: None)
        assert report.embedded == n, report
        drain_rate = max(drain_rate, report.embedded / report.seconds)
        print(f"  round: one worker drained {n} rows in {report.seconds:.1f} s (the queue was empty then)")
    print(f"one worker's drain rate {drain_rate:.1f} rows/s vs Encoder.encode {encode_rate:.1f} texts/s, "
          f"ratio {drain_rate / encode_rate:.2f} (best of {drain_rounds} alternating rounds each)")

    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute("UPDATE queued SET embedding = NULL")
        conn.execute("SELECT fastembed_ext.attach_embedding('queued', 'body', 'embedding', 'minilm', mode => 'async')")
    start = time.perf_counter()
    # the two processes share the machine's cores: each gets its half (two processes with a thread
    # per core each would oversubscribe them, and libtorch's threads then spin against each other)
    threads = str(max(1, len(os.sched_getaffinity(0)) // 2))
    workers = [subprocess.Popen([sys.executable, "-m", "fastembed_ext.cli", "worker", "--dsn", dsn, "--once",
                                 "--threads", threads],
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL) for _ in range(2)]
    codes = [w.wait() for w in workers]
    both = time.perf_counter() - start
    with psycopg.connect(dsn, autocommit=True) as conn:
        got = np.array([np.asarray(v, np.float32) for (v,) in conn.execute("SELECT embedding::real[] FROM queued ORDER BY id")])
        backlog = conn.execute("SELECT backlog FROM fastembed_ext.queue_status WHERE tbl = 'queued'::regclass").fetchone()[0]
    print(f"two worker processes ({threads} libtorch thread(s) each) drained {n} rows in {both:.1f} s ({n / both:.1f} "
          f"rows/s, process start and model load included; exit codes {codes}); backlog after: {backlog}; max |vector - encode| {np.abs(got - want).max():.2e}")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rows", type=int, default=10_000)
    ap.add_argument("--insert-rows", type=int, default=2_000)
    ap.add_argument("--queries", type=int, default=100)
    ap.add_argument("--ef-search", type=int, default=40)
    ap.add_argument("--skip-insert", action="store_true", help="only the search figures")
    ap.add_argument("--connections", type=int, default=8, help="new connections per side for the first-call figures")
    ap.add_argument("--async-rows", type=int, default=10_000, help="texts for the async attachment figures (0: none)")
    ap.add_argument("--only-async", action="store_true", help="only the async attachment figures")
    ap.add_argument("--async-inserts-only", action="store_true", help="of those, only the INSERT figures")
    args = ap.parse_args()

    root = Path(tempfile.mkdtemp(prefix="fastembed_ext_bench_"))
    os.chmod(root, 0o755)
    c = cluster.Cluster(root / "data", cluster.free_port())
    try:
        c.init({"shared_buffers": "'512MB'", "maintenance_work_mem": "'512MB'"})
        c.start()
        with psycopg.connect(c.dsn("postgres"), autocommit=True) as conn:
            conn.execute("CREATE DATABASE bench")
        dsn = c.dsn("bench")
        install(dsn, models=[("minilm", str(minilm_source()))], library_root=root / "lib", log=lambda *_: None)
        with psycopg.connect(dsn) as conn:
            minilm = conn.execute("SELECT path FROM fastembed_ext.models WHERE name = 'minilm'").fetchone()[0]
        enc = fastembed_ext.Encoder(minilm)
        if args.async_rows:
            async_figures(dsn, enc, texts(args.async_rows, 3), inserts_only=args.async_inserts_only)
        if args.only_async:
            return
        first_calls(c, root / "lib" / fastembed_ext.__version__, minilm, args.connections)
        docs = texts(args.insert_rows, 0)
        print(f"threads: {fastembed_ext.num_threads()}  cpu count: {os.cpu_count()}")

        # -- Python API
        enc.encode(docs[:64])
        if args.skip_insert:
            docs = docs[:64]
        t = time.perf_counter()
        enc.encode(docs)
        py_rate = len(docs) / (time.perf_counter() - t)
        print(f"Python API encode:                    {py_rate:8.1f} docs/s")

        with psycopg.connect(dsn, autocommit=True) as conn:
            conn.execute("SELECT embed('warm up', 'minilm')")
            source_table(conn, "src", docs)
            conn.execute(
                "CREATE TABLE gen (id int PRIMARY KEY, body text, "
                "embedding vector(384) GENERATED ALWAYS AS (embed(body, 'minilm')) STORED)"
            )
            t = time.perf_counter()
            conn.execute("INSERT INTO gen (id, body) SELECT id, body FROM src")
            gen_rate = len(docs) / (time.perf_counter() - t)
            print(f"INSERT ... SELECT, generated column:  {gen_rate:8.1f} rows/s  ratio {gen_rate / py_rate:.2f}")

            conn.execute("CREATE TABLE att (id int PRIMARY KEY, body text, embedding vector(384))")
            conn.execute("SELECT fastembed_ext.attach_embedding('att', 'body', 'embedding', 'minilm')")
            t = time.perf_counter()
            conn.execute("INSERT INTO att (id, body) SELECT id, body FROM src")
            att_rate = len(docs) / (time.perf_counter() - t)
            print(f"INSERT ... SELECT, attach trigger:    {att_rate:8.1f} rows/s  ratio {att_rate / py_rate:.2f}")
            got = np.array([np.asarray(v, np.float32) for (v,) in conn.execute("SELECT embedding::real[] FROM att ORDER BY id")])
            print(f"  max |SQL - Python| over {len(got)} vectors: {np.abs(got - enc.encode(docs)).max():.2e}")

        # -- HNSW search over many rows
        corpus_file = root / "corpus.txt"
        big = texts(args.rows, 1)
        corpus_file.write_text("\n".join(big) + "\n")
        t = time.perf_counter()
        ingest(dsn, corpus_file, "docs", "body", model="minilm", progress=False, log=lambda *_: None)
        print(f"ingest (Python encode + binary COPY) of {args.rows} rows: {args.rows / (time.perf_counter() - t):.1f} rows/s")
        with psycopg.connect(dsn, autocommit=True) as conn:
            t = time.perf_counter()
            conn.execute("SELECT fastembed_ext.create_embedding_index('docs', 'embedding', 'minilm')")
            print(f"HNSW build (m=16, ef_construction=64): {time.perf_counter() - t:.1f} s")
            conn.execute("ANALYZE docs")
            conn.execute(f"SET hnsw.ef_search = {args.ef_search}")
            ids = np.array([r[0] for r in conn.execute("SELECT id FROM docs ORDER BY id")])
            mat = np.array([np.asarray(r[0], np.float32) for r in conn.execute("SELECT embedding::real[] FROM docs ORDER BY id")])
            rng = random.Random(2)
            queries = [" ".join(rng.sample(big[rng.randrange(len(big))].split(), 8)) for _ in range(args.queries)]
            q = "SELECT id FROM docs ORDER BY embedding <=> embed(%s, 'minilm') LIMIT 10"
            print("EXPLAIN:\n" + "\n".join("  " + r[0][:140] for r in conn.execute("EXPLAIN " + q, (queries[0],))))
            # Exact answers first: encoding in this process between timed queries would leave
            # libtorch's OpenMP threads spinning on the cores the server needs.
            exact = [ids[np.argsort(-(mat @ qv))[:10]] for qv in enc.encode(queries)]
            lat, recalls = [], []
            for text, want in zip(queries, exact):
                t = time.perf_counter()
                got_ids = [r[0] for r in conn.execute(q, (text,))]
                lat.append(time.perf_counter() - t)
                recalls.append(len(set(got_ids) & set(want.tolist())) / 10)
            print(f"top-10 query over {args.rows} rows: p50 {statistics.median(lat) * 1000:.2f} ms, "
                  f"p95 {np.percentile(lat, 95) * 1000:.2f} ms (query embedding included), "
                  f"recall@10 {np.mean(recalls):.3f} (hnsw.ef_search = {args.ef_search})")
    finally:
        c.destroy()
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()

"""What the async trigger's NOTIFY costs concurrent writers, on a throwaway cluster.

A committing NOTIFY takes a lock that serialises every notifying commit in the cluster (and signals
each listening backend), so the async trigger sends at most one per session per quarter second.
This measures single-row INSERTs from --writers connections at once (one LISTENing connection open,
as a running worker's is) into tables that are, side by side in alternating rounds:

* nothing attached;
* async-attached, as shipped (a NOTIFY per session per quarter second at most);
* async-attached with a NOTIFY at every write (0.3.1's trigger, rebuilt here);
* async-attached with no NOTIFY at all (the floor: what the queue itself costs);

with durability off and on, and prints each one's time as a ratio to nothing attached.

    .venv/bin/python bench/bench_notify.py [--writers 8] [--rows 1000] [--rounds 9]
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

import psycopg

sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_pg import texts  # noqa: E402
from models import minilm_path  # noqa: E402

from fastembed_ext.pg import cluster  # noqa: E402
from fastembed_ext.pg.install import install  # noqa: E402

TABLES = {
    "plain": "nothing attached",
    "shipped": "async, NOTIFY at most once per session per quarter second",
    "every": "async, NOTIFY at every write (0.3.1)",
    "never": "async, no NOTIFY",
}
_LIMITED = re.compile(
    r"    IF pg_catalog\.current_setting\('fastembed_ext\.notify_slot', true\) IS DISTINCT FROM slot THEN\n"
    r"(        PERFORM pg_catalog\.pg_notify\([^)]*\);)\n.*?\n    END IF;\n",
    re.S,
)


def rewrite_trigger(conn, table: str, every: bool) -> None:
    """The shipped trigger function of `table`, its NOTIFY sent at every write or never."""
    fn = conn.execute("SELECT pg_get_functiondef(tgfoid) FROM pg_trigger WHERE tgrelid = %s::regclass LIMIT 1",
                      (table,)).fetchone()[0]
    match = _LIMITED.search(fn)
    assert match, "the trigger's NOTIFY is not where this bench expects it"
    conn.execute(fn.replace(match.group(0), match.group(1) + "\n" if every else ""))


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--writers", type=int, default=8)
    ap.add_argument("--rows", type=int, default=1000, help="single-row INSERTs per round, shared among the writers")
    ap.add_argument("--rounds", type=int, default=9)
    args = ap.parse_args()
    print(f"machine: {os.cpu_count()} CPUs; load average {os.getloadavg()[0]:.2f}")
    docs = texts(args.rows, 3)
    root = Path(tempfile.mkdtemp(prefix="fastembed_ext_bench_notify_"))
    os.chmod(root, 0o755)
    c = cluster.Cluster(root / "data", cluster.free_port())
    try:
        c.init({"shared_buffers": "'512MB'", "max_connections": "60"})
        c.start()
        with psycopg.connect(c.dsn("postgres"), autocommit=True) as conn:
            conn.execute("CREATE DATABASE bench")
        dsn = c.dsn("bench")
        install(dsn, models=[("minilm", str(minilm_path()))], library_root=root / "lib", log=lambda *_: None)
        with psycopg.connect(dsn, autocommit=True) as conn:
            for t in TABLES:
                conn.execute(f"CREATE TABLE {t} (id int PRIMARY KEY, body text, embedding vector(384))")
                if t != "plain":
                    conn.execute("SELECT fastembed_ext.attach_embedding(%s, 'body', 'embedding', 'minilm', "
                                 "mode => 'async')", (t,))
            rewrite_trigger(conn, "every", every=True)
            rewrite_trigger(conn, "never", every=False)
        for durable in (False, True):
            measure(dsn, docs, args, durable)
    finally:
        c.destroy()
        shutil.rmtree(root, ignore_errors=True)


def measure(dsn: str, docs: list[str], args, durable: bool) -> None:
    with psycopg.connect(dsn, autocommit=True) as conn:
        for name in ("fsync", "full_page_writes"):
            conn.execute(f"ALTER SYSTEM SET {name} = {'on' if durable else 'off'}")
        conn.execute("SELECT pg_reload_conf()")
    time.sleep(0.5)
    writers = [psycopg.connect(dsn, autocommit=True) for _ in range(args.writers)]
    for w in writers:
        w.execute(f"SET synchronous_commit = {'on' if durable else 'off'}")
    listener = psycopg.connect(dsn, autocommit=True)
    listener.execute("LISTEN fastembed_ext_queue")
    notified: dict[str, list[int]] = {t: [] for t in TABLES}
    times: dict[str, list[float]] = {t: [] for t in TABLES}

    def write(table: str, k: int) -> None:
        for i in range(k, len(docs), len(writers)):
            writers[k].execute(f"INSERT INTO {table} (id, body) VALUES (%s, %s)", (i, docs[i]))

    with psycopg.connect(dsn, autocommit=True) as conn:
        for _ in range(args.rounds):
            for t in TABLES:
                conn.execute(f"TRUNCATE {t}")
                if t != "plain":
                    att = conn.execute("SELECT id FROM fastembed_ext.attachments WHERE tbl = %s::regclass", (t,)).fetchone()[0]
                    conn.execute(f"TRUNCATE fastembed_ext.queue_{att}")
                threads = [threading.Thread(target=write, args=(t, k)) for k in range(len(writers))]
                start = time.perf_counter()
                for thread in threads:
                    thread.start()
                for thread in threads:
                    thread.join()
                times[t].append(time.perf_counter() - start)
                notified[t].append(sum(1 for _ in listener.notifies(timeout=0.3)))
    for w in [*writers, listener]:
        w.close()
    label = "durable (fsync, synchronous_commit on)" if durable else "fsync and synchronous_commit off"
    who = "one connection" if len(writers) == 1 else f"{len(writers)} connections at once"
    print(f"\n{args.rows} single-row INSERTs from {who}, {label} "
          f"(median of {args.rounds} alternating rounds):")
    base = statistics.median(times["plain"])
    for t, what in TABLES.items():
        median = statistics.median(times[t])
        print(f"  {what}: {median * 1000:.0f} ms, {args.rows / median:.0f} rows/s, {median / base:.2f}x the time; "
              f"NOTIFYs received per round {statistics.median(notified[t]):.0f}")


if __name__ == "__main__":
    main()

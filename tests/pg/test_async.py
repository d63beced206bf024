"""attach_embedding(..., mode => 'async'): writes only queue keys; `fastembed-ext worker` embeds them.

Everything runs as ordinary roles: fe_owner owns and attaches the tables, fe_writer may only
INSERT (and UPDATE the text where a test says so), and the workers log in as fe_worker, a member of
fastembed_ext_worker with no privilege on any table.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time

import numpy as np
import psycopg
import pytest
from conftest import connect

import fastembed_ext
from fastembed_ext.pg.errors import PgError
from fastembed_ext.pg.worker import Worker, WorkerOptions, run_worker

WORDS = "the quick brown fox jumps over a lazy dog while seven wizards quietly judge boxing matches".split()


def _text(i: int) -> str:
    rng = np.random.default_rng(i)
    return f"row {i}: " + " ".join(rng.choice(WORDS, size=int(rng.integers(3, 30))))


@pytest.fixture(scope="module")
def worker_dsn(roles, _session_conn) -> str:
    c = _session_conn
    if not c.execute("SELECT FROM pg_roles WHERE rolname = 'fe_worker'").fetchone():
        c.execute("CREATE ROLE fe_worker LOGIN")
        c.execute("GRANT fastembed_ext_worker TO fe_worker")
    return roles["fe_owner"].replace("user=fe_owner", "user=fe_worker")


@pytest.fixture
def docs(roles, _session_conn):
    """fe_owner's table `docs`, attached async to MiniLM; fe_writer may INSERT and UPDATE it."""
    with connect(roles["fe_owner"]) as c:
        c.execute("DROP TABLE IF EXISTS docs")
        c.execute("CREATE TABLE docs (id bigserial PRIMARY KEY, body text, embedding vector(384))")
        c.execute("GRANT SELECT, INSERT, UPDATE (body) ON docs TO fe_writer")
        c.execute("GRANT USAGE ON SEQUENCE docs_id_seq TO fe_writer")
        c.execute("SELECT fastembed_ext.attach_embedding('docs', 'body', 'embedding', 'minilm', mode => 'async')")
        att = c.execute("SELECT id FROM fastembed_ext.attachments WHERE tbl = 'docs'::regclass").fetchone()[0]
    yield att
    with connect(roles["fe_owner"]) as c:
        c.execute("DROP TABLE IF EXISTS docs")


def _options(dsn: str, **kw) -> WorkerOptions:
    kw.setdefault("once", True)
    return WorkerOptions(dsn=dsn, **kw)


def _assert_vectors_match_texts(dsn: str, encoder) -> int:
    with connect(dsn) as c:
        rows = c.execute("SELECT body, embedding::real[] FROM docs WHERE body IS NOT NULL ORDER BY id").fetchall()
    assert rows and all(v is not None for _, v in rows), "a row has no vector"
    got = np.asarray([v for _, v in rows], np.float32)
    want = encoder.encode([b for b, _ in rows])
    assert np.abs(got - want).max() < 1e-5
    return len(rows)


def _status(conn) -> tuple:
    return conn.execute("SELECT backlog, retrying, failed FROM fastembed_ext.queue_status "
                        "WHERE tbl = 'docs'::regclass").fetchone()


def test_writes_run_no_model_and_a_worker_embeds_them(roles, worker_dsn, docs, encoder):
    with connect(roles["fe_writer"]) as w:
        w.execute("INSERT INTO docs (body) SELECT 'bulk ' || i FROM generate_series(1, 150) i")
        with w.cursor().copy("COPY docs (body) FROM STDIN") as copy:
            for i in range(20):
                copy.write_row((f"copied {i}",))
        w.execute("INSERT INTO docs (body) VALUES (NULL)")
        w.execute("UPDATE docs SET body = 'changed text' WHERE id = 3")
        # the writer's statements embedded nothing: every vector waits in the queue
        assert w.execute("SELECT count(*) FROM docs WHERE embedding IS NOT NULL").fetchone() == (0,)
        # 150 + 20 inserted (NULL text is not queued) and one UPDATE of a text
        assert _status(w) == (171, 0, 0)
    report = run_worker(_options(worker_dsn), log=lambda line: None)
    # row 3 is in two jobs; one claim takes both and embeds it once
    assert report.embedded == 170 and report.failed == 0
    assert _assert_vectors_match_texts(roles["fe_owner"], encoder) == 170
    with connect(roles["fe_owner"]) as c:
        assert _status(c) == (0, 0, 0)
        assert c.execute("SELECT embedding FROM docs WHERE body IS NULL").fetchone() == (None,)
        # UPDATE of the vector or of nothing queues nothing
        c.execute("UPDATE docs SET embedding = NULL WHERE id = 5")
        c.execute("UPDATE docs SET body = body WHERE id = 6")
        assert _status(c) == (0, 0, 0)
        # text set to NULL: its vector goes
        c.execute("UPDATE docs SET body = NULL WHERE id = 7")
    run_worker(_options(worker_dsn), log=lambda line: None)
    with connect(roles["fe_owner"]) as c:
        assert c.execute("SELECT embedding FROM docs WHERE id = 7").fetchone() == (None,)
        assert c.execute("SELECT done_last_minute >= 171 FROM fastembed_ext.queue_status "
                         "WHERE tbl = 'docs'::regclass").fetchone() == (True,)


def test_a_session_notifies_at_most_once_a_quarter_second_and_workers_still_find_its_rows(
        roles, worker_dsn, docs, encoder):
    """A committing NOTIFY serialises every notifying commit in the cluster, so a writing session
    sends one per quarter second at most; a worker that was just busy polls, and finds the rows of
    the writes that sent none (its own poll interval, a minute here, is never waited out)."""
    def received(listener) -> int:
        return sum(1 for n in listener.notifies(timeout=0.3) if n.payload == str(docs))

    with connect(roles["fe_writer"]) as listener, connect(roles["fe_writer"]) as w:
        listener.execute("LISTEN fastembed_ext_queue")
        started = time.monotonic()
        for i in range(50):
            w.execute("INSERT INTO docs (body) VALUES (%s)", (_text(i),))
        elapsed = time.monotonic() - started
        sent = received(listener)
        assert 1 <= sent <= elapsed / 0.25 + 2 and sent < 50, (sent, elapsed)

        worker = Worker(_options(worker_dsn, once=False, poll_seconds=60), log=lambda line: None)
        thread = threading.Thread(target=worker.run, daemon=True)
        thread.start()
        try:
            deadline = time.monotonic() + 60
            while _status(w)[0] and time.monotonic() < deadline:
                time.sleep(0.05)
            assert _status(w) == (0, 0, 0)
            # a write in the quarter second of this session's last NOTIFY sends none (the slot is
            # pinned just before it; retried in the rare case that the quarter second turns
            # between the two statements); the worker, idle by then, finds its row by polling
            for attempt in range(5):
                w.execute("INSERT INTO docs (body) VALUES (%s)", (f"written {attempt}",))
                while _status(w)[0] and time.monotonic() < deadline:
                    time.sleep(0.01)
                received(listener)
                w.execute("SELECT set_config('fastembed_ext.notify_slot', "
                          "(date_part('epoch', clock_timestamp()) * 4)::int8::text, false)")
                w.execute("INSERT INTO docs (body) VALUES (%s)", (f"not notified {attempt}",))
                if received(listener) == 0:
                    break
            else:
                pytest.fail("every write sent a NOTIFY")
            while _status(w)[0] and time.monotonic() < deadline:
                time.sleep(0.05)
            assert _status(w) == (0, 0, 0)
        finally:
            worker.stop.set()
            worker.wake.set()
            thread.join(timeout=60)
    assert not thread.is_alive()
    assert _assert_vectors_match_texts(roles["fe_owner"], encoder) == 50 + 2 * (attempt + 1)


def test_attach_backfill_is_queued_and_reattach_queues_only_what_is_missing(roles, worker_dsn, encoder):
    with connect(roles["fe_owner"]) as c:
        c.execute("DROP TABLE IF EXISTS backfill")
        c.execute("CREATE TABLE backfill (id int PRIMARY KEY, body text, embedding vector(384))")
        c.execute("INSERT INTO backfill SELECT i, 'existing row ' || i FROM generate_series(1, 300) i")
        notices: list[str] = []
        c.add_notice_handler(lambda d: notices.append(d.message_primary))
        assert c.execute("SELECT fastembed_ext.attach_embedding('backfill', 'body', 'embedding', 'minilm', "
                         "mode => 'async')").fetchone() == (300,)
        assert notices == ["fastembed_ext: queued 300 rows of public.backfill for the embedding workers"]
        # attaching again while nothing was embedded yet queues nothing twice
        assert c.execute("SELECT fastembed_ext.attach_embedding('backfill', 'body', 'embedding', 'minilm', "
                         "mode => 'async')").fetchone() == (0,)
        assert c.execute("SELECT backlog FROM fastembed_ext.queue_status WHERE tbl = 'backfill'::regclass"
                         ).fetchone() == (300,)
    run_worker(_options(worker_dsn), log=lambda line: None)
    with connect(roles["fe_owner"]) as c:
        c.execute("UPDATE backfill SET embedding = NULL WHERE id <= 10")
        assert c.execute("SELECT fastembed_ext.attach_embedding('backfill', 'body', 'embedding', 'minilm', "
                         "mode => 'async')").fetchone() == (10,)
        # back to sync: what is still queued is embedded by the attach itself
        c.execute("UPDATE backfill SET body = 'rewritten' WHERE id = 20")
        c.execute("SELECT fastembed_ext.attach_embedding('backfill', 'body', 'embedding', 'minilm')")
        assert c.execute("SELECT to_regclass(format('fastembed_ext.queue_%s', id)) FROM fastembed_ext.attachments "
                         "WHERE tbl = 'backfill'::regclass").fetchone() == (None,)
        rows = c.execute("SELECT body, embedding::real[] FROM backfill ORDER BY id").fetchall()
        assert np.abs(np.asarray([v for _, v in rows], np.float32) - encoder.encode([b for b, _ in rows])).max() < 1e-5
        c.execute("DROP TABLE backfill")


def test_update_while_a_worker_holds_the_old_text(roles, worker_dsn, docs, encoder):
    """The worker read the old text; the writer's newer text commits before the worker writes: the
    old vector is not written, and the newer text's job embeds the final text."""
    with connect(roles["fe_writer"]) as w:
        w.execute("INSERT INTO docs (body) VALUES ('the first text')")
    claimed, release = threading.Event(), threading.Event()

    class PausedWorker(Worker):
        def _embed(self, *args):
            claimed.set()
            assert release.wait(30)
            return super()._embed(*args)

    worker = PausedWorker(_options(worker_dsn), log=lambda line: None)
    with connect(worker_dsn) as wc:
        wc.autocommit = False
        (att,) = worker.attachments(wc)
        t = threading.Thread(target=worker.batch, args=(wc, att))
        t.start()
        assert claimed.wait(30)
        with connect(roles["fe_writer"]) as w:  # commits while the worker's claim is open
            w.execute("UPDATE docs SET body = 'the final text' WHERE body = 'the first text'")
        release.set()
        t.join(30)
    assert worker.report.embedded == 0  # the vector of the first text was not written
    with connect(roles["fe_owner"]) as c:
        assert c.execute("SELECT embedding FROM docs").fetchone() == (None,)
        assert _status(c)[0] == 1
    run_worker(_options(worker_dsn), log=lambda line: None)
    _assert_vectors_match_texts(roles["fe_owner"], encoder)


def test_a_poison_row_lands_in_the_failed_table_and_the_rest_drain(roles, worker_dsn, docs, encoder):
    with connect(roles["fe_owner"]) as c:
        c.execute("ALTER TABLE docs ADD CONSTRAINT no_poison CHECK (body <> 'poison' OR embedding IS NULL)")
    with connect(roles["fe_writer"]) as w:
        w.execute("INSERT INTO docs (body) SELECT 'good row ' || i FROM generate_series(1, 40) i")
        w.execute("INSERT INTO docs (body) VALUES ('poison')")
        w.execute("INSERT INTO docs (body) SELECT 'more good rows ' || i FROM generate_series(1, 40) i")
    lines: list[str] = []
    report = run_worker(_options(worker_dsn, max_attempts=3, retry_seconds=0), log=lines.append)
    assert (report.embedded, report.failed, report.retried) == (80, 1, 2)
    with connect(roles["fe_owner"]) as c:
        assert _status(c) == (0, 0, 1)
        key, error, attempts = c.execute(
            "SELECT key, error, attempts FROM fastembed_ext.failures WHERE tbl = 'docs'::regclass").fetchone()
        assert c.execute("SELECT body FROM docs WHERE id = %s", (int(key),)).fetchone() == ("poison",)
        assert 'violates check constraint "no_poison"' in error and attempts == 3
        assert c.execute("SELECT count(*) FROM docs WHERE embedding IS NULL").fetchone() == (1,)
        # the failures are the owner's to read; others see none of them
        with connect(roles["fe_stranger"]) as s:
            assert s.execute("SELECT count(*) FROM fastembed_ext.failures").fetchone() == (0,)
        c.execute("ALTER TABLE docs DROP CONSTRAINT no_poison")
        assert c.execute("SELECT fastembed_ext.retry_failed('docs', 'embedding')").fetchone() == (1,)
    assert any("attempt 1 failed" in line and "no_poison" in line for line in lines)
    run_worker(_options(worker_dsn), log=lambda line: None)
    assert _assert_vectors_match_texts(roles["fe_owner"], encoder) == 81
    with connect(roles["fe_owner"]) as c:
        assert _status(c) == (0, 0, 0)


def _worker_process(dsn: str, *args: str) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "fastembed_ext.cli", "worker", "--dsn", dsn, *args],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def test_four_workers_and_eight_writers_embed_every_row_exactly_once(roles, worker_dsn, docs, encoder, _session_conn):
    # (one libtorch thread each: four processes share this machine's cores)
    workers = [_worker_process(worker_dsn, "--batch-tokens", "512", "--poll-seconds", "0.2", "--threads", "1")
               for _ in range(4)]
    try:
        def write(n: int) -> None:
            with connect(roles["fe_writer"]) as w:
                for i in range(25):
                    if i % 5 == 0:
                        w.execute("INSERT INTO docs (body) SELECT unnest(%s::text[])",
                                  ([_text(n * 1000 + i * 10 + j) for j in range(10)],))
                    else:
                        w.execute("INSERT INTO docs (body) VALUES (%s)", (_text(n * 1000 + i),))
        writers = [threading.Thread(target=write, args=(n,)) for n in range(8)]
        for t in writers:
            t.start()
        for t in writers:
            t.join()
        deadline = time.monotonic() + 120
        with connect(roles["fe_owner"]) as c:
            while _status(c)[0] and time.monotonic() < deadline:
                time.sleep(0.2)
            assert _status(c) == (0, 0, 0)
    finally:
        for p in workers:
            p.send_signal(signal.SIGTERM)
        outputs = [p.communicate(timeout=60)[0] for p in workers]
    assert all(p.returncode == 0 for p in workers), outputs
    rows = _assert_vectors_match_texts(roles["fe_owner"], encoder)
    assert rows == 8 * (20 + 5 * 10)
    # each row's vector was written once, by one worker (the count is the extension's own)
    assert _session_conn.execute("SELECT sum(rows) FROM fastembed_ext.completions WHERE attachment = %s",
                                 (docs,)).fetchone() == (rows,)
    assert sum("stopping after the batches in flight" in out for out in outputs) == 4


def test_kill_9_of_a_worker_mid_batch_loses_nothing(roles, worker_dsn, docs, encoder, _session_conn):
    with connect(roles["fe_owner"]) as c:
        # writing a vector takes a while: the worker is killed while its batch's transaction is open
        c.execute("CREATE FUNCTION slow_write() RETURNS trigger LANGUAGE plpgsql AS "
                  "$$ BEGIN PERFORM pg_sleep(0.2); RETURN NEW; END $$")
        c.execute("CREATE TRIGGER slow BEFORE UPDATE OF embedding ON docs FOR EACH ROW EXECUTE FUNCTION slow_write()")
    with connect(roles["fe_writer"]) as w:
        w.execute("INSERT INTO docs (body) SELECT 'row to survive ' || i FROM generate_series(1, 30) i")
    p = _worker_process(worker_dsn, "--batch-tokens", "256")
    deadline = time.monotonic() + 60
    while not _session_conn.execute(
            "SELECT count(*) FROM pg_stat_activity WHERE usename = 'fe_worker' AND query LIKE '%%_done_%%' "
            "AND state = 'active'").fetchone()[0]:
        assert time.monotonic() < deadline and p.poll() is None
        time.sleep(0.05)
    os.kill(p.pid, signal.SIGKILL)
    p.wait()
    with connect(roles["fe_owner"]) as c:
        c.execute("DROP TRIGGER slow ON docs")
        # the killed batch's transaction rolled back when its backend saw the client gone
        deadline = time.monotonic() + 30
        while c.execute("SELECT count(*) FROM pg_stat_activity WHERE usename = 'fe_worker'").fetchone()[0]:
            assert time.monotonic() < deadline
            time.sleep(0.1)
        assert c.execute("SELECT count(*) FROM docs WHERE embedding IS NOT NULL").fetchone() == (0,)
        assert _status(c)[0] == 30
    report = run_worker(_options(worker_dsn), log=lambda line: None)
    assert report.embedded == 30
    assert _assert_vectors_match_texts(roles["fe_owner"], encoder) == 30


def test_who_may_do_what(roles, worker_dsn, docs):
    # a role outside fastembed_ext_worker is told how to become a worker
    with pytest.raises(PgError, match="GRANT fastembed_ext_worker TO fe_stranger"):
        run_worker(_options(roles["fe_stranger"]), log=lambda line: None)
    with connect(roles["fe_stranger"]) as s:
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            s.execute(f"SELECT * FROM fastembed_ext._claim_{docs}(10)")
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            s.execute(f"SELECT * FROM fastembed_ext.queue_{docs}")
        # the generic functions run with the caller's own rights
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            s.execute(f"SELECT * FROM fastembed_ext._attachment_claim({docs}, 10)")
        with pytest.raises(psycopg.errors.InsufficientPrivilege) as ei:
            s.execute("SELECT fastembed_ext.retry_failed('docs', 'embedding')")
        assert ei.value.diag.message_hint == "Only the owner of the table (or a member of its owning role) does."
        # counts are everyone's to read, like pg_stat_user_tables
        assert s.execute("SELECT backlog FROM fastembed_ext.queue_status WHERE tbl = 'docs'::regclass"
                         ).fetchone() == (0,)
    # the worker role reads no table directly
    with connect(worker_dsn) as wc:
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            wc.execute("SELECT * FROM docs")
    for bad, message in ((dict(concurrency=0), "--concurrency must be between 1 and 64, not 0"),
                         (dict(batch_tokens=10), "--batch-tokens must be between 64 and 1048576, not 10"),
                         (dict(max_attempts=0), "--max-attempts must be between 1 and 1000, not 0"),
                         (dict(threads=0), r"--threads must be between 1 and \d+ \(this machine's cores\), not 0"),
                         (dict(threads=1, model_server="unix:/nonexistent.sock"),
                          "with --model-server the server computes")):
        with pytest.raises(PgError, match=message):
            run_worker(_options(worker_dsn, **bad), log=lambda line: None)


def test_detach_and_drop_remove_the_queue(roles, docs):
    with connect(roles["fe_owner"]) as c:
        c.execute("INSERT INTO docs (body) VALUES ('pending')")
        names = [f"fastembed_ext.queue_{docs}", f"fastembed_ext.failed_{docs}"]
        assert c.execute("SELECT to_regclass(%s) IS NOT NULL, to_regclass(%s) IS NOT NULL", names).fetchone() == (True, True)
        assert c.execute("SELECT fastembed_ext.detach_embedding('docs', 'embedding')").fetchone() == (True,)
        assert c.execute("SELECT to_regclass(%s), to_regclass(%s)", names).fetchone() == (None, None)
        c.execute("SELECT fastembed_ext.attach_embedding('docs', 'body', 'embedding', 'minilm', mode => 'async')")
        att = c.execute("SELECT id FROM fastembed_ext.attachments WHERE tbl = 'docs'::regclass").fetchone()[0]
        c.execute("DROP TABLE docs")
        assert c.execute(
            "SELECT count(*) FROM pg_class WHERE relnamespace = 'fastembed_ext'::regnamespace "
            "AND relname IN (%s, %s)", (f"queue_{att}", f"failed_{att}")).fetchone() == (0,)
        assert c.execute(
            "SELECT count(*) FROM pg_proc WHERE pronamespace = 'fastembed_ext'::regnamespace "
            "AND proname IN (%s, %s, %s)", (f"_claim_{att}", f"_done_{att}", f"_embed_rows_{att}")).fetchone() == (0,)


def test_a_chunked_document_is_covered_by_its_chunks(roles, worker_dsn, encoder):
    """chunking => token windows: every token of a long text is in a chunk, each chunk's vector is
    encode() of its window's text, search finds a document by its last part, and the chunks follow
    UPDATE and DELETE of their row."""
    intro = " ".join(f"Paragraph {i} tells how bread is kneaded, proved and baked in a hot oven." for i in range(60))
    ending = " Finally, the volcano erupted and rivers of molten lava ran down to the sea."
    docs = {1: intro + ending, 2: "Cooking pasta in salted water.", 3: "A short note on baking bread."}
    with connect(roles["fe_owner"]) as c:
        c.execute("DROP TABLE IF EXISTS long_docs")
        c.execute("CREATE TABLE long_docs (id int PRIMARY KEY, body text, embedding vector(384))")
        for k, body in docs.items():
            c.execute("INSERT INTO long_docs VALUES (%s, %s)", (k, body))
        with pytest.raises(psycopg.errors.InvalidParameterValue) as ei:
            c.execute("SELECT fastembed_ext.attach_embedding('long_docs', 'body', 'embedding', 'minilm', "
                      "chunking => fastembed_ext.token_windows(100, 20))")
        assert ei.value.diag.message_primary == "fastembed_ext: chunking needs mode => 'async'"
        with pytest.raises(psycopg.errors.InvalidParameterValue) as ei:
            c.execute("SELECT fastembed_ext.attach_embedding('long_docs', 'body', 'embedding', 'minilm', "
                      "mode => 'async', chunking => fastembed_ext.token_windows(400, 20))")
        assert "A window is 1 to 254 tokens" in ei.value.diag.message_detail
        c.execute("SELECT fastembed_ext.attach_embedding('long_docs', 'body', 'embedding', 'minilm', "
                  "mode => 'async', chunking => fastembed_ext.token_windows(100, 20))")
        chunk_table = c.execute("SELECT chunk_table::text FROM fastembed_ext.attachments "
                                "WHERE tbl = 'long_docs'::regclass").fetchone()[0]
        assert chunk_table == "long_docs_embedding_chunks"
    run_worker(_options(worker_dsn), log=lambda line: None)

    def check(c, docs) -> None:
        for k, body in docs.items():
            rows = c.execute(f"SELECT chunk, lower(span), upper(span), embedding::real[] FROM {chunk_table} "
                             "WHERE key = %s ORDER BY chunk", (k,)).fetchall()
            spans = encoder.windows(body, 100, 20)
            assert [r[0] for r in rows] == list(range(len(spans))) and [(r[1], r[2]) for r in rows] == spans
            covered = np.zeros(len(body), bool)
            for a, b in spans:
                covered[a:b] = True
            assert all(covered[i] for i, ch in enumerate(body) if not ch.isspace()), "a character is in no chunk"
            want = encoder.encode([body[a:b] for a, b in spans])
            assert np.abs(np.asarray([r[3] for r in rows], np.float32) - want).max() < 1e-5
        assert c.execute(f"SELECT count(DISTINCT key) FROM {chunk_table}").fetchone() == (len(docs),)

    with connect(roles["fe_owner"]) as c:
        check(c, docs)
        assert len(encoder.windows(docs[1], 100, 20)) > 5
        # the row's own vector is the text's, as without chunking (its beginning)
        with pytest.warns(fastembed_ext.TruncationWarning):
            whole = encoder.encode(docs[1])
        got = np.asarray(c.execute("SELECT embedding::real[] FROM long_docs WHERE id = 1").fetchone()[0], np.float32)
        assert np.abs(got - whole).max() < 1e-5
        # search finds the long document by its last sentence, through its best chunk
        hits = c.execute("SELECT key, score FROM fastembed_ext.search('long_docs', 'embedding', "
                         "'a volcano erupting with lava', 3)").fetchall()
        assert hits[0][0] == "1"
        best = max(float(v @ encoder.encode("a volcano erupting with lava"))
                   for v in encoder.encode([docs[1][a:b] for a, b in encoder.windows(docs[1], 100, 20)]))
        assert abs(hits[0][1] - best) < 1e-5
        # an UPDATE replaces the chunks (once a worker ran); a DELETE removes them at once
        docs[2] = intro[:2000]
        c.execute("UPDATE long_docs SET body = %s WHERE id = 2", (docs[2],))
        c.execute("DELETE FROM long_docs WHERE id = 3")
        del docs[3]
        assert c.execute(f"SELECT count(*) FROM {chunk_table} WHERE key = 3").fetchone() == (0,)
    run_worker(_options(worker_dsn), log=lambda line: None)
    with connect(roles["fe_owner"]) as c:
        check(c, docs)
        c.execute("SELECT fastembed_ext.detach_embedding('long_docs', 'embedding')")
        assert c.execute("SELECT to_regclass(%s)", (chunk_table,)).fetchone() == (None,)
        c.execute("DROP TABLE long_docs")


def test_status_command_prints_the_queue(roles, docs):
    with connect(roles["fe_writer"]) as w:
        w.execute("INSERT INTO docs (body) SELECT 'waiting ' || i FROM generate_series(1, 7) i")
    run = subprocess.run([sys.executable, "-m", "fastembed_ext.cli", "status", "--dsn", roles["fe_reader"]],
                         capture_output=True, text=True)
    assert run.returncode == 0, run.stderr
    header, *rows = run.stdout.splitlines()
    assert header.split() == ["table", "column", "model", "mode", "backlog", "oldest", "retrying", "failed",
                              "done/min"]
    (row,) = [r.split() for r in rows if r.startswith("docs ")]
    assert row[:5] == ["docs", "embedding", "minilm", "async", "7"] and row[-3:] == ["0", "0", "0"]


def test_renamed_columns_keep_queueing(roles, worker_dsn, docs, encoder):
    """The async trigger's statements name the key and text columns; renaming them rebuilds it."""
    with connect(roles["fe_owner"]) as c:
        c.execute("ALTER TABLE docs RENAME COLUMN body TO content")
        c.execute("ALTER TABLE docs RENAME COLUMN id TO doc_id")
        c.execute("INSERT INTO docs (content) VALUES ('after the renames')")
        c.execute("UPDATE docs SET content = 'changed after the renames'")
        assert _status(c) == (2, 0, 0)
    run_worker(_options(worker_dsn), log=lambda line: None)
    with connect(roles["fe_owner"]) as c:
        body, vector = c.execute("SELECT content, embedding::real[] FROM docs").fetchone()
        assert np.abs(np.asarray(vector, np.float32) - encoder.encode(body)).max() < 1e-5


def test_queue_holds_keys_of_the_key_columns_type_and_follows_a_type_change(roles, worker_dsn, encoder):
    """A queue's keys are of its key column's type (the INSERT trigger aggregates them as they
    are); ALTER COLUMN ... TYPE of the key converts the pending keys, and they still drain."""
    with connect(roles["fe_owner"]) as c:
        c.execute("DROP TABLE IF EXISTS coded")
        c.execute("CREATE TABLE coded (code varchar(12) PRIMARY KEY, body text, embedding vector(384))")
        c.execute("INSERT INTO coded VALUES ('before', 'queued by the backfill')")
        c.execute("SELECT fastembed_ext.attach_embedding('coded', 'body', 'embedding', 'minilm', mode => 'async')")
        att = c.execute("SELECT id FROM fastembed_ext.attachments WHERE tbl = 'coded'::regclass").fetchone()[0]
        keys_type = (f"SELECT format_type(atttypid, atttypmod) FROM pg_attribute "
                     f"WHERE attrelid = 'fastembed_ext.queue_{att}'::regclass AND attname = 'keys'")
        assert c.execute(keys_type).fetchone() == ("character varying(12)[]",)
        c.execute("INSERT INTO coded SELECT 'k' || i, 'coded row ' || i FROM generate_series(1, 100) i")
        c.execute("UPDATE coded SET body = 'coded row 7, changed' WHERE code = 'k7'")
        c.execute("ALTER TABLE coded ALTER COLUMN code TYPE text")
        assert c.execute(keys_type).fetchone() == ("text[]",)
        c.execute("INSERT INTO coded VALUES ('after', 'queued after the type change')")
        backlog = c.execute("SELECT backlog FROM fastembed_ext.queue_status WHERE tbl = 'coded'::regclass").fetchone()
        assert backlog == (103,)  # 1 + 100 + the update's 1 (a job per statement) + 1
    report = run_worker(_options(worker_dsn), log=lambda line: None)
    assert report.embedded == 102 and report.failed == 0
    with connect(roles["fe_owner"]) as c:
        rows = c.execute("SELECT body, embedding::real[] FROM coded ORDER BY code").fetchall()
        assert len(rows) == 102 and all(v is not None for _, v in rows)
        want = encoder.encode([b for b, _ in rows])
        assert np.abs(np.asarray([v for _, v in rows], np.float32) - want).max() < 1e-5
        c.execute("DROP TABLE coded")

"""`fastembed-ext serve`, a real server process: vectors equal the in-process engine's whatever
shares their batch, the HTTP interfaces (text-embeddings-inference's, OpenAI's, pgvector text,
raw float32), clear 4xx answers, bounded queues, metrics, and a graceful stop."""

from __future__ import annotations

import base64
import json
import threading
import urllib.request
from pathlib import Path

import numpy as np
import pytest
from model_factory import PARITY_TEXTS
from server_process import ServerProcess

import fastembed_ext
from fastembed_ext._http import Connection
from fastembed_ext.errors import ServerError

MIXED = [f"text number {i} " + "with more words " * (i % 13) for i in range(60)] + PARITY_TEXTS
# A vector may differ in its last bits when other texts share its forward pass (other matrix
# shapes, other summation order): the engine's guarantee, which the server keeps.
ATOL = 1e-5


def same(got, want) -> None:
    np.testing.assert_allclose(got, want, rtol=0, atol=ATOL)


@pytest.fixture(scope="module")
def server(tmp_path_factory, minilm_bundle: Path, distilbert_bundle: Path):
    s = ServerProcess([("minilm", minilm_bundle), ("dot", distilbert_bundle)],
                      tmp_path_factory.mktemp("server") / "s.sock", "--workers", "2", "--threads", "1").start()
    yield s
    assert s.stop() == 0


def _post(url: str, path: str, body, accept: str = "application/json") -> tuple[int, bytes, dict]:
    request = urllib.request.Request(url + path, data=body if isinstance(body, bytes) else json.dumps(body).encode(),
                                     headers={"Content-Type": "application/json", "Accept": accept})
    try:
        with urllib.request.urlopen(request) as response:
            return response.status, response.read(), {k.lower(): v for k, v in response.headers.items()}
    except urllib.error.HTTPError as err:
        with err:
            return err.code, err.read(), {k.lower(): v for k, v in err.headers.items()}


def test_startup_lines_name_listeners_and_models(server, minilm_encoder, distilbert_encoder):
    text = "".join(server.lines)
    assert f"listening on unix:{server.socket_path}" in text and f"listening on {server.http}" in text
    assert f"model minilm (bert, 384 dims, cosine) {minilm_encoder.fingerprint}" in text
    assert f"model dot (distilbert, 32 dims, dot) {distilbert_encoder.fingerprint}" in text
    assert "engine: 2 workers, 1 libtorch thread each" in text


def test_client_equals_the_engine(server, minilm_encoder, distilbert_encoder):
    for url in (server.url, server.http):
        client = fastembed_ext.Client(url)
        assert (client.name, client.dim, client.similarity, client.fingerprint) == (
            "minilm", 384, "cosine", minilm_encoder.fingerprint)
        same(client.encode(MIXED), minilm_encoder.encode(MIXED))
        same(client.encode(MIXED[3]), minilm_encoder.encode(MIXED[3]))
    dot = fastembed_ext.Client(server.url, "dot")
    same(dot.encode(MIXED, batch_size=7), distilbert_encoder.encode(MIXED))
    same(dot.encode(MIXED[:4], normalize=True), distilbert_encoder.encode(MIXED[:4], normalize=True))
    with pytest.raises(ServerError, match="has no model 'nope'"):
        fastembed_ext.Client(server.url, "nope")
    with pytest.raises(TypeError, match=r"texts\[1\] is int"):
        dot.encode(["a", 1])


def test_vectors_do_not_depend_on_concurrent_requests(server, minilm_encoder):
    """Requests of mixed lengths from 8 threads at once share the model's batches; each vector
    equals the one computed alone."""
    want = minilm_encoder.encode(MIXED)
    errors: list[BaseException] = []
    got: dict[int, np.ndarray] = {}

    def worker(w: int) -> None:
        try:
            client = fastembed_ext.Client(server.url)
            for j in range(6):
                start = (w * 7 + j * 5) % len(MIXED)
                rows = list(range(start, min(len(MIXED), start + 1 + (w + j) % 9)))
                for i, v in zip(rows, client.encode([MIXED[i] for i in rows])):
                    same(v, want[i])
                    got[i] = v
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    threads = [threading.Thread(target=worker, args=(w,)) for w in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors, errors
    metrics = urllib.request.urlopen(server.http + "/metrics").read().decode()
    batches = [line for line in metrics.splitlines() if line.startswith("fastembed_batch_texts_bucket")]
    assert batches and "fastembed_model_info{model=\"minilm\"" in metrics


def batches_computed(server) -> int:
    metrics = urllib.request.urlopen(server.http + "/metrics").read().decode()
    return int(next(line for line in metrics.splitlines() if line.startswith("fastembed_batch_texts_count")).split()[1])


def test_a_large_request_is_shared_among_workers(server, minilm_encoder):
    """A request of many texts is cut into pieces (longest texts first) that both workers compute;
    its vectors come back whole and in order."""
    texts = [MIXED[(i * 37) % len(MIXED)] + f" {i}" for i in range(600)]
    before = batches_computed(server)
    got = fastembed_ext.Client(server.url).encode(texts, batch_size=len(texts))
    assert batches_computed(server) - before >= 2 * 2  # at least two pieces per worker
    same(got, minilm_encoder.encode(texts))


def test_text_embeddings_inference_and_pgvector_forms(server, minilm_encoder):
    want = minilm_encoder.encode(["hello world", "x"])
    status, body, headers = _post(server.http, "/embed", {"inputs": ["hello world", "x"]})
    assert status == 200
    same(np.asarray(json.loads(body), np.float32), want)
    assert headers["x-fastembed-fingerprint"] == minilm_encoder.fingerprint
    status, body, _ = _post(server.http, "/embed", {"inputs": "hello world"})
    same(np.asarray(json.loads(body), np.float32), want[:1])
    status, body, _ = _post(server.http, "/embed", {"inputs": ["hello world", "x"]}, accept="text/x-pgvector")
    lines = body.decode().splitlines()
    assert len(lines) == 2
    same(np.asarray([json.loads(line) for line in lines], np.float32), want)
    status, body, _ = _post(server.http, "/embed", {"inputs": ["hello world"], "normalize": False},
                            accept="application/octet-stream")
    same(np.frombuffer(body, "<f4"), minilm_encoder.encode("hello world", normalize=False))


def test_openai_embeddings(server, minilm_encoder):
    want = minilm_encoder.encode(["first", "second"])
    status, body, _ = _post(server.http, "/v1/embeddings", {"input": ["first", "second"], "model": "minilm"})
    answer = json.loads(body)
    assert status == 200 and answer["object"] == "list" and answer["model"] == "minilm"
    assert [d["index"] for d in answer["data"]] == [0, 1] and answer["data"][0]["object"] == "embedding"
    same(np.asarray([d["embedding"] for d in answer["data"]], np.float32), want)
    assert answer["usage"]["prompt_tokens"] == sum(len(t) for t in minilm_encoder.tokenize(["first", "second"]))
    _, body, _ = _post(server.http, "/v1/embeddings", {"input": "first", "model": "minilm", "encoding_format": "base64"})
    raw = base64.b64decode(json.loads(body)["data"][0]["embedding"])
    same(np.frombuffer(raw, "<f4"), want[0])


def test_openai_client_reads_it(server, minilm_encoder, distilbert_encoder):
    import openai

    client = openai.OpenAI(base_url=server.http + "/v1", api_key="not needed")
    got = client.embeddings.create(input=["first", "second"], model="minilm")
    assert len(got.data) == 2 and got.model == "minilm"
    same(np.asarray([d.embedding for d in got.data], np.float32), minilm_encoder.encode(["first", "second"]))
    # dimensions: Matryoshka truncation, of unit length as the model's vectors are
    short = client.embeddings.create(input=["first", "second"], model="minilm", dimensions=64)
    want = minilm_encoder.encode(["first", "second"], truncate_dim=64, normalize_embeddings=True)
    same(np.asarray([d.embedding for d in short.data], np.float32), want)
    dot = client.embeddings.create(input=["first"], model="dot", dimensions=8)
    # a dot-product model's vectors are cut, not normalised
    same(np.asarray(dot.data[0].embedding, np.float32), distilbert_encoder.encode("first", truncate_dim=8))


@pytest.mark.parametrize(
    "path, body, status, fragment",
    [
        ("/embed", b"", 400, "empty request body"),
        ("/embed", b"{not json", 400, "not valid JSON"),
        ("/embed", [1, 2], 400, "must be a JSON object"),
        ("/embed", {}, 422, 'missing "inputs"'),
        ("/embed", {"inputs": []}, 422, "inputs is empty"),
        ("/embed", {"inputs": ["a", 3]}, 422, "inputs[1] is a number, expected a string"),
        ("/embed", {"inputs": "a", "model": "nope"}, 404, 'unknown model "nope"'),
        ("/embed", {"inputs": "a", "fingerprint": "blake3:" + "0" * 64}, 404, "no model with fingerprint"),
        ("/embed", {"inputs": ["a"] * 2049}, 413, "2049 texts in one request; at most 2048"),
        ("/embed", {"inputs": "a", "normalize": "yes"}, 422, "normalize is a string"),
        ("/embed", {"inputs": "a", "prompt_name": "query"}, 422,
         "prompt name \"query\" is not one of this model's prompts (it has none)"),
        ("/v1/embeddings", {"input": [[1, 2, 3]], "model": "minilm"}, 422, "input[0] is a list"),
        ("/v1/embeddings", {"input": "a", "model": "minilm", "encoding_format": "int8"}, 422, "encoding_format"),
        ("/v1/embeddings", {"input": "a", "model": "minilm", "dimensions": 385}, 422,
         'dimensions 385 is not supported: model "minilm" makes vectors of at most 384 dimensions'),
        ("/v1/embeddings", {"input": "a", "model": "minilm", "dimensions": "64"}, 422,
         "dimensions is a string, expected a positive integer"),
    ],
)
def test_bad_requests_get_clear_answers(server, path, body, status, fragment):
    got, answer, headers = _post(server.http, path, body)
    assert got == status
    error = json.loads(answer)["error"]
    message = error["message"] if isinstance(error, dict) else error
    assert fragment in message
    assert headers["content-type"] == "application/json"


def test_oversize_body_is_refused(server):
    status, _, _ = _post(server.http, "/embed", {"inputs": "x" * (65 << 20)})
    assert status == 413


def test_health_models_and_metrics(server, minilm_encoder):
    health = json.loads(urllib.request.urlopen(server.http + "/health").read())
    assert health == {"status": "ok", "models": ["minilm", "dot"]}
    models = json.loads(urllib.request.urlopen(server.http + "/models").read())["models"]
    assert models[0]["fingerprint"] == minilm_encoder.fingerprint and models[1]["similarity"] == "dot"
    metrics = urllib.request.urlopen(server.http + "/metrics").read().decode()
    for name in ("fastembed_requests_total", "fastembed_texts_total", "fastembed_queue_texts",
                 "fastembed_request_duration_seconds_bucket", "fastembed_batch_texts_count"):
        assert name in metrics
    assert 'fastembed_requests_total{endpoint="/embed",status="422"}' in metrics


def test_a_full_server_says_so(tmp_path, minilm_bundle):
    """Past its bounds the server answers 429 (requests) or 503 (queued texts) at once, never
    queueing without end."""
    s = ServerProcess([("minilm", minilm_bundle)], tmp_path / "busy.sock",
                      "--max-concurrent-requests", "2", "--max-queued-texts", "64").start()
    try:
        statuses: list[int] = []

        def hammer() -> None:
            for _ in range(3):
                statuses.append(_post(s.http, "/embed", {"inputs": ["a long text " * 40] * 40})[0])

        threads = [threading.Thread(target=hammer) for _ in range(8)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert 200 in statuses and (429 in statuses or 503 in statuses), statuses
        assert set(statuses) <= {200, 429, 503}
        status, body, _ = _post(s.http, "/embed", {"inputs": ["x"] * 65})  # more than may ever wait
        assert status == 503 and json.loads(body) == {
            "error": "64 texts are waiting already; try again shortly", "error_type": "overloaded"}
    finally:
        assert s.stop() == 0


def test_sigterm_answers_what_was_accepted(tmp_path, minilm_bundle, minilm_encoder):
    s = ServerProcess([("minilm", minilm_bundle)], tmp_path / "stop.sock").start()
    texts = [f"long request text {i} " * 30 for i in range(400)]
    result: dict = {}

    def request() -> None:
        result["answer"] = _post(s.http, "/embed", {"inputs": texts}, accept="application/octet-stream")

    t = threading.Thread(target=request)
    t.start()
    import time

    time.sleep(0.5)  # the request is being computed
    assert s.stop() == 0
    t.join()
    status, body, _ = result["answer"]
    assert status == 200
    same(np.frombuffer(body, "<f4").reshape(400, 384), minilm_encoder.encode(texts))
    assert not (tmp_path / "stop.sock").exists()


def test_connection_survives_a_restart(tmp_path, minilm_bundle):
    sock = tmp_path / "restart.sock"
    s = ServerProcess([("minilm", minilm_bundle)], sock).start()
    conn = Connection(f"unix:{sock}", 10)
    first = conn.request("POST", "/embed", {"inputs": ["a"]}, accept="text/x-pgvector")[0]
    assert s.stop() == 0
    with pytest.raises(ServerError, match="cannot reach the embedding server") as ei:
        conn.request("POST", "/embed", {"inputs": ["a"]})
    assert ei.value.status is None
    s = ServerProcess([("minilm", minilm_bundle)], sock, port=s.port).start()
    try:
        assert conn.request("POST", "/embed", {"inputs": ["a"]}, accept="text/x-pgvector")[0] == first
    finally:
        s.stop()


def test_serve_refuses_a_busy_socket_and_bad_arguments(tmp_path, server, minilm_bundle):
    from test_cli import assert_one_line_error, run

    assert_one_line_error(run("serve", "--model", f"x={minilm_bundle}", "--socket", str(server.socket_path)),
                          1, f"{server.socket_path} is in use by a running server")
    assert_one_line_error(run("serve", "--model", f"x={tmp_path / 'absent'}"), 1, "no such file or directory")
    assert_one_line_error(run("serve", "--model", f"a/b={minilm_bundle}", "--socket", str(tmp_path / "s")), 1,
                          "invalid model name")
    assert_one_line_error(run("serve"), 2, "no models")
    assert_one_line_error(run("serve", "--model", "noequals"), 2, "expected NAME=PATH")
    sock = str(tmp_path / "w")
    assert_one_line_error(run("serve", "--model", f"x={minilm_bundle}", "--socket", sock, "--workers", "0"), 1,
                          "workers must be a positive integer, got 0")
    assert_one_line_error(run("serve", "--model", f"x={minilm_bundle}", "--socket", sock, "--workers", "300"), 1,
                          "workers must be between 1 and 256")
    assert_one_line_error(run("serve", "--model", f"x={minilm_bundle}", "--socket", sock, "--threads", "5000"), 1,
                          "threads must be between 1 and 1024")


def test_prompts_are_applied_as_in_process(tmp_path, distilbert_256k):
    """`prompt_name` (text-embeddings-inference's field) picks one of the model's prompts; without
    it the model's default prompt applies, as `Encoder.encode` does; a prompt the model leaves out
    of pooling is left out by the server too."""
    from model_factory import with_head

    folder = with_head(distilbert_256k, tmp_path / "p", prompts={"query": "query: ", "doc": "passage: "},
                       default_prompt_name="doc",
                       pooling={"word_embedding_dimension": 32, "pooling_mode": "mean", "include_prompt": False})
    bundle = fastembed_ext.export(folder, tmp_path / "bundle")
    enc = fastembed_ext.Encoder(bundle)
    s = ServerProcess([("p", bundle)], tmp_path / "s.sock").start()
    try:
        client = fastembed_ext.Client(s.url)
        same(client.encode(MIXED, "query"), enc.encode(MIXED, prompt_name="query"))
        same(client.encode(MIXED), enc.encode(MIXED))
        assert not np.allclose(enc.encode(MIXED[:3], prompt_name="query"), enc.encode(MIXED[:3]), atol=1e-3)
    finally:
        assert s.stop() == 0

"""The ``fastembed-ext`` command line, run as a separate process like a user runs it."""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import fastembed_ext
from fastembed_ext.cli import split_lines

TEXTS = ["Hello world", "", "Crème brûlée 中文 👩‍👩‍👧", "The quick brown fox jumps over the lazy dog."]


def run(*args: str, stdin: str | None = None, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "fastembed_ext.cli", *args],
        input=stdin.encode() if stdin is not None else None,
        capture_output=True,
        env={**os.environ, **(env or {})},
        timeout=300,
        check=False,
    )


def jsonl_vectors(stdout: bytes) -> tuple[list[str], np.ndarray]:
    rows = [json.loads(line) for line in stdout.decode().splitlines()]
    assert [r["index"] for r in rows] == list(range(len(rows)))
    return [r["text"] for r in rows], np.array([r["embedding"] for r in rows], dtype=np.float32)


def assert_one_line_error(result: subprocess.CompletedProcess, code: int, *fragments: str) -> None:
    stderr = result.stderr.decode()
    assert result.returncode == code, stderr
    assert "Traceback" not in stderr
    lines = [line for line in stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("fastembed-ext: error: "), stderr
    for fragment in fragments:
        assert fragment in lines[0]


@pytest.fixture(scope="module")
def cli_bundle(distilbert_256k: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    dst = tmp_path_factory.mktemp("cli") / "bundle"
    result = run("export", str(distilbert_256k), str(dst))
    assert result.returncode == 0, result.stderr.decode()
    assert result.stdout.decode().strip() == str(dst)
    return dst


@pytest.fixture(scope="module")
def expected(cli_bundle: Path) -> np.ndarray:
    return fastembed_ext.Encoder(cli_bundle).encode(TEXTS)


def test_export_makes_a_bundle(cli_bundle: Path, distilbert_bundle: Path) -> None:
    assert sorted(p.name for p in cli_bundle.iterdir()) == ["fastembed_ext.json", "model.pt", "tokenizer.json"]
    a = fastembed_ext.Encoder(cli_bundle).encode(TEXTS)
    b = fastembed_ext.Encoder(distilbert_bundle).encode(TEXTS)
    np.testing.assert_array_equal(a, b)


def test_encode_arguments_to_jsonl(cli_bundle: Path, expected: np.ndarray) -> None:
    result = run("encode", "--model", str(cli_bundle), *TEXTS)
    assert result.returncode == 0, result.stderr.decode()
    texts, vectors = jsonl_vectors(result.stdout)
    assert texts == TEXTS
    np.testing.assert_array_equal(vectors, expected)  # JSON round-trips float32 exactly


def test_encode_file_and_stdin_to_npy(cli_bundle: Path, expected: np.ndarray, tmp_path: Path) -> None:
    text_file = tmp_path / "texts.txt"
    text_file.write_text("\n".join(TEXTS) + "\n", encoding="utf-8")
    out = tmp_path / "vectors.npy"
    result = run("encode", "-m", str(cli_bundle), "--file", str(text_file), "--output", str(out), "--batch-size", "2")
    assert result.returncode == 0, result.stderr.decode()
    vectors = np.load(out)
    assert vectors.dtype == np.float32 and vectors.shape == (len(TEXTS), 32)
    np.testing.assert_allclose(vectors, expected, rtol=0, atol=1e-6)

    # stdin (--file -), normalised, as .npy on stdout
    result = run("encode", "-m", str(cli_bundle), "--file", "-", "--format", "npy", "--normalize",
                 stdin="\n".join(TEXTS) + "\n")
    assert result.returncode == 0, result.stderr.decode()
    vectors = np.load(io.BytesIO(result.stdout))
    np.testing.assert_allclose(vectors, expected / np.linalg.norm(expected, axis=1, keepdims=True), atol=1e-6)


def test_encode_stdin_default_model_and_progress(cli_bundle: Path, tmp_path: Path) -> None:
    """Texts piped in without --file; the model from $FASTEMBED_EXT_MODEL; --progress on stderr."""
    texts = [f"sentence number {i}" for i in range(70)]
    out = tmp_path / "v.jsonl"
    result = run("encode", "--progress", "--output", str(out), stdin="\n".join(texts),
                 env={"FASTEMBED_EXT_MODEL": str(cli_bundle)})
    assert result.returncode == 0, result.stderr.decode()
    got_texts, vectors = jsonl_vectors(out.read_bytes())
    assert got_texts == texts
    np.testing.assert_allclose(vectors, fastembed_ext.Encoder(cli_bundle).encode(texts), rtol=0, atol=1e-6)
    assert "70/70" in result.stderr.decode()


def test_console_script(cli_bundle: Path, expected: np.ndarray) -> None:
    script = Path(sys.executable).parent / "fastembed-ext"
    assert script.is_file(), "the fastembed-ext console script is not installed"
    result = subprocess.run([str(script), "encode", "-m", str(cli_bundle), TEXTS[0]], capture_output=True, check=False)
    assert result.returncode == 0, result.stderr.decode()
    np.testing.assert_array_equal(jsonl_vectors(result.stdout)[1], expected[:1])


def test_errors_are_one_line(tmp_path: Path, gpt2_hf: Path) -> None:
    assert_one_line_error(run("encode", "--model", str(tmp_path / "absent"), "x"), 1, "no such file or directory")
    assert_one_line_error(run("export", str(gpt2_hf), str(tmp_path / "b")), 1, "'gpt2' is not supported")
    assert_one_line_error(run("encode", "--model", "org/model", "x"), 1, "could not be downloaded")
    assert_one_line_error(run("encode", "--batch-size", "0", "x"), 2, "--batch-size")
    assert_one_line_error(run("encode", "--file", str(tmp_path / "none.txt")), 2, "no such file")
    usage = run("encode", "--format", "xml", "x")
    assert usage.returncode == 2 and "Traceback" not in usage.stderr.decode()
    assert "invalid choice" in usage.stderr.decode()


def test_split_lines() -> None:
    assert split_lines("") == []
    assert split_lines("a\nb\n") == ["a", "b"]
    assert split_lines("a\r\n\nb") == ["a", "", "b"]
    assert split_lines("x\u2028y\fz\n") == ["x\u2028y\fz"]


def test_prompt_name_and_truncate_dim(distilbert_256k: Path, tmp_path: Path) -> None:
    from model_factory import with_head

    folder = with_head(distilbert_256k, tmp_path / "p", prompts={"query": "query: "})
    bundle = tmp_path / "bundle"
    result = run("export", str(folder), str(bundle), "--truncate-dim", "16")
    assert result.returncode == 0, result.stderr.decode()
    enc = fastembed_ext.Encoder(bundle)
    assert enc.dim == 16
    result = run("encode", "--model", str(bundle), "--prompt-name", "query", "--truncate-dim", "8", *TEXTS)
    assert result.returncode == 0, result.stderr.decode()
    _, vectors = jsonl_vectors(result.stdout)
    np.testing.assert_array_equal(vectors, enc.encode(TEXTS, prompt_name="query", truncate_dim=8))
    assert_one_line_error(run("encode", "--model", str(bundle), "--prompt-name", "search", "x"), 1,
                          'prompt name "search" is not one of this model\'s prompts (query)')

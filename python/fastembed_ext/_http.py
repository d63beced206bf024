"""Talking to an embedding server (`fastembed-ext serve`) with nothing but sockets and json: a
PostgreSQL backend uses this on every new connection, so it imports no more than it needs (the
standard library's http.client alone takes longer to import than a query takes to embed).

A URL is ``unix:/path/to/server.sock`` or ``http://host:port``. A `Connection` speaks HTTP/1.1,
keeps its connection open between requests, and reconnects once when the server closed it (a
restart). Answers are read by Content-Length (chunked transfer is read too).
"""

from __future__ import annotations

import json
import socket
from typing import Any

from .errors import ServerError


def check_url(url: str) -> str:
    """The URL if it names a unix socket or an http server, else a ValueError saying what does."""
    if url.startswith("unix:/") or (url.startswith("http://") and len(url) > 7):
        return url
    raise ValueError(f"{url!r} is not a server URL: use unix:/path/to/server.sock or http://host:port")


class _Stale(Exception):
    """A kept-alive connection the server had closed: try once more on a new one."""


class Connection:
    """One keep-alive connection to a server; not shared between threads."""

    def __init__(self, url: str, timeout: float = 30.0) -> None:
        self.url = check_url(url)
        self.timeout = timeout
        if self.url.startswith("unix:"):
            self._host = "localhost"
        else:
            self._host = self.url[7:].split("/", 1)[0]
        self._sock: socket.socket | None = None
        self._reader: Any = None

    def _open(self) -> None:
        if self.url.startswith("unix:"):
            sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            sock.settimeout(self.timeout)
            try:
                sock.connect(self.url[5:])
            except OSError:
                sock.close()
                raise
        else:
            host, _, port = self._host.partition(":")
            sock = socket.create_connection((host, int(port) if port else 80), timeout=self.timeout)
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self._sock, self._reader = sock, sock.makefile("rb")

    def close(self) -> None:
        if self._sock is not None:
            self._reader.close()
            self._sock.close()
            self._sock = self._reader = None

    def __del__(self) -> None:
        self.close()

    def request(self, method: str, path: str, body: Any = None, accept: str = "application/json"
                ) -> tuple[bytes, dict[str, str]]:
        """The answer's body and headers (lower-case names); a ServerError for an unreachable
        server, a timeout, or an error status (with the server's message)."""
        payload = b"" if body is None else json.dumps(body, ensure_ascii=False).encode()
        head = (f"{method} {path} HTTP/1.1\r\nHost: {self._host}\r\nAccept: {accept}\r\n"
                f"Content-Type: application/json\r\nContent-Length: {len(payload)}\r\n\r\n").encode()
        for attempt in (1, 2):
            reused = self._sock is not None
            try:
                if not reused:
                    self._open()
                self._sock.sendall(head + payload)
                status, headers, data = self._read_response(reused)
                break
            except _Stale:
                self.close()
                if attempt == 2:
                    raise ServerError(f"the embedding server at {self.url} closed the connection") from None
            except TimeoutError:
                self.close()
                raise ServerError(f"the embedding server at {self.url} did not answer within "
                                  f"{self.timeout:g} s") from None
            except OSError as exc:
                self.close()
                if reused and attempt == 1:
                    continue  # the server restarted since: a new connection may well work
                raise ServerError(f"cannot reach the embedding server at {self.url}: {exc}") from None
        if headers.get("connection", "").lower() == "close":
            self.close()
        if status >= 400:
            try:
                error = json.loads(data)
                message, kind = error.get("error"), error.get("error_type")
                if isinstance(message, dict):  # OpenAI's shape
                    message, kind = message.get("message"), message.get("type")
            except (ValueError, AttributeError):
                message, kind = data.decode(errors="replace").strip(), None
            raise ServerError(f"the embedding server answered {status}: {message}", status=status, kind=kind)
        return data, headers

    def _read_response(self, reused: bool) -> tuple[int, dict[str, str], bytes]:
        line = self._reader.readline(65537)
        if not line:
            if reused:
                raise _Stale()
            raise ConnectionError("the server closed the connection without answering")
        parts = line.split(None, 2)
        if len(parts) < 2 or not parts[0].startswith(b"HTTP/1."):
            raise ConnectionError(f"not an HTTP answer: {line[:80]!r}")
        status = int(parts[1])
        headers: dict[str, str] = {}
        while True:
            line = self._reader.readline(65537)
            if line in (b"\r\n", b"\n", b""):
                break
            name, _, value = line.decode("latin-1").partition(":")
            headers[name.strip().lower()] = value.strip()
        if headers.get("transfer-encoding", "").lower() == "chunked":
            chunks = []
            while True:
                size = int(self._reader.readline(65537).split(b";")[0], 16)
                if size == 0:
                    self._reader.readline(65537)
                    break
                chunks.append(self._read_exactly(size))
                self._reader.readline(65537)
            return status, headers, b"".join(chunks)
        return status, headers, self._read_exactly(int(headers.get("content-length", "0")))

    def _read_exactly(self, n: int) -> bytes:
        data = self._reader.read(n)
        if len(data) != n:
            raise ConnectionError(f"the answer ended after {len(data)} of {n} bytes")
        return data

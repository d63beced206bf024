"""Talking to an embedding server (`fastembed-ext serve`) with nothing but sockets: a PostgreSQL
backend uses this on every new connection, so it imports no more than it needs. The standard
library's http.client takes longer to import than a query takes to embed, and even `socket` and
`json` (which bring enum, selectors and re with them) cost a new backend more than its first
embed() otherwise does; so this module uses their C cores, `_socket` and `_json`, directly.

A URL is ``unix:/path/to/server.sock`` or ``http://host:port``. A `Connection` speaks HTTP/1.1,
keeps its connection open between requests, and reconnects once when the server closed it (a
restart). Answers are read by Content-Length (chunked transfer is read too).
"""

from __future__ import annotations

import _socket

try:
    from _json import encode_basestring as _json_string
except ImportError:  # not CPython
    from json.encoder import py_encode_basestring as _json_string

from .errors import ServerError

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

_LINE_MAX = 65536


def check_url(url: str) -> str:
    """The URL if it names a unix socket or an http server, else a ValueError saying what does."""
    _parse(url)
    return url


def _parse(url: str) -> tuple[str, int] | None:
    """None for a unix socket URL, (host, port) for an http one; a ValueError for anything else."""
    if url.startswith("unix:/"):
        return None
    if url.startswith("http://") and len(url) > 7:
        return _host_port(url[7:].split("/", 1)[0], url)
    raise ValueError(f"{url!r} is not a server URL: use unix:/path/to/server.sock or http://host:port")


def _host_port(authority: str, url: str) -> tuple[str, int]:
    """`host`, `host:port`, `[v6 address]` or `[v6 address]:port` as (host, port)."""
    if authority.startswith("["):
        host, bracket, rest = authority[1:].partition("]")
        if not bracket or (rest and not rest.startswith(":")):
            raise ValueError(f"{url!r} is not a server URL: an IPv6 address is written [address]:port")
        port = rest[1:]
    else:
        host, _, port = authority.rpartition(":") if ":" in authority else (authority, "", "")
    if not host or (port and not (port.isascii() and port.isdigit() and 0 < int(port) < 65536)):
        raise ValueError(f"{url!r} is not a server URL: use http://host:port with a port from 1 to 65535")
    return host, int(port) if port else 80


def dumps(value: Any) -> str:
    """`json.dumps(value, ensure_ascii=False)` for what requests hold (dicts with string keys,
    lists, strings, integers, booleans, None), without importing json; anything else goes to json."""
    if isinstance(value, str):
        return _json_string(value)
    if value is None:
        return "null"
    if value is True:
        return "true"
    if value is False:
        return "false"
    if type(value) is int:
        return int.__repr__(value)
    if type(value) is dict and all(type(k) is str for k in value):
        return "{" + ",".join(_json_string(k) + ":" + dumps(v) for k, v in value.items()) + "}"
    if type(value) in (list, tuple):
        return "[" + ",".join(map(dumps, value)) + "]"
    import json

    return json.dumps(value, ensure_ascii=False)


class _Stale(Exception):
    """A kept-alive connection the server had closed: try once more on a new one."""


class Connection:
    """One keep-alive connection to a server; not shared between threads."""

    def __init__(self, url: str, timeout: float = 30.0) -> None:
        self._tcp = _parse(url)  # (host, port) of an http URL; None for a unix socket
        self.url = url
        self.timeout = timeout
        self._host = "localhost" if self._tcp is None else url[7:].split("/", 1)[0]
        self._sock: Any = None
        self._buffer = bytearray()  # received and not yet read

    def _open(self) -> None:
        if self._tcp is None:
            sock = _socket.socket(_socket.AF_UNIX, _socket.SOCK_STREAM)
            try:
                sock.settimeout(self.timeout)
                sock.connect(self.url[5:])
            except OSError:
                sock.close()
                raise
        else:
            sock = self._open_tcp()
        self._sock = sock
        self._buffer.clear()

    def _open_tcp(self) -> Any:
        host, port = self._tcp
        error: OSError | None = None
        for family, kind, proto, _, address in _socket.getaddrinfo(host, port, 0, _socket.SOCK_STREAM):
            sock = _socket.socket(family, kind, proto)
            try:
                sock.settimeout(self.timeout)
                sock.connect(address)
            except OSError as exc:
                sock.close()
                error = exc
                continue
            sock.setsockopt(_socket.IPPROTO_TCP, _socket.TCP_NODELAY, 1)
            return sock
        raise error or OSError(f"no address for {host}")

    def close(self) -> None:
        if self._sock is not None:
            self._sock.close()
            self._sock = None
        self._buffer.clear()

    def __del__(self) -> None:
        self.close()

    def request(self, method: str, path: str, body: Any = None, accept: str = "application/json"
                ) -> tuple[bytes, dict[str, str]]:
        """The answer's body and headers (lower-case names); a ServerError for an unreachable
        server, a timeout, or an error status (with the server's message)."""
        payload = b"" if body is None else dumps(body).encode()
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
            import json  # only for errors

            try:
                error = json.loads(data)
                message, kind = error.get("error"), error.get("error_type")
                if isinstance(message, dict):  # OpenAI's shape
                    message, kind = message.get("message"), message.get("type")
            except (ValueError, AttributeError):
                message, kind = data.decode(errors="replace").strip(), None
            raise ServerError(f"the embedding server answered {status}: {message}", status=status, kind=kind)
        return data, headers

    def _receive(self) -> bool:
        """More bytes into the buffer; False at the end of the stream."""
        chunk = self._sock.recv(65536)
        self._buffer += chunk
        return bool(chunk)

    def _readline(self) -> bytes:
        """The next line with its newline (without one at the end of the stream)."""
        start = 0
        while True:
            end = self._buffer.find(b"\n", start)
            if end >= 0:
                line = bytes(self._buffer[: end + 1])
                del self._buffer[: end + 1]
                return line
            if len(self._buffer) > _LINE_MAX:
                raise ConnectionError(f"a line of the answer is longer than {_LINE_MAX} bytes")
            start = len(self._buffer)
            if not self._receive():
                line = bytes(self._buffer)
                self._buffer.clear()
                return line

    def _read_exactly(self, n: int) -> bytes:
        while len(self._buffer) < n:
            if not self._receive():
                raise ConnectionError(f"the answer ended after {len(self._buffer)} of {n} bytes")
        data = bytes(self._buffer[:n])
        del self._buffer[:n]
        return data

    def _read_response(self, reused: bool) -> tuple[int, dict[str, str], bytes]:
        line = self._readline()
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
            line = self._readline()
            if line in (b"\r\n", b"\n", b""):
                break
            name, _, value = line.decode("latin-1").partition(":")
            headers[name.strip().lower()] = value.strip()
        if headers.get("transfer-encoding", "").lower() == "chunked":
            chunks = []
            while True:
                size = int(self._readline().split(b";")[0], 16)
                if size == 0:
                    self._readline()
                    break
                chunks.append(self._read_exactly(size))
                self._readline()
            return status, headers, b"".join(chunks)
        return status, headers, self._read_exactly(int(headers.get("content-length", "0")))

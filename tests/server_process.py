"""Starting `fastembed-ext serve` as a separate process for the tests, as a user starts it."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class ServerProcess:
    """`fastembed-ext serve` with the given arguments; `url` is its socket, `http` its TCP URL."""

    def __init__(self, models: list[tuple[str, Path]], socket_path: Path, *extra: str, port: int | None = None) -> None:
        self.socket_path = socket_path
        self.port = port if port is not None else free_port()
        args = [sys.executable, "-m", "fastembed_ext.cli", "serve", "--socket", str(socket_path),
                "--port", str(self.port), *extra]
        for name, path in models:
            args += ["--model", f"{name}={path}"]
        self.args = args
        self.lines: list[str] = []
        self.process: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"unix:{self.socket_path}"

    @property
    def http(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, timeout: float = 120) -> ServerProcess:
        self.process = subprocess.Popen(self.args, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                                        env={**os.environ, "PYTHONUNBUFFERED": "1"})
        deadline = time.monotonic() + timeout
        assert self.process.stdout is not None
        while time.monotonic() < deadline:
            line = self.process.stdout.readline()
            if not line:
                raise RuntimeError(f"fastembed-ext serve exited ({self.process.wait()}):\n" + "".join(self.lines))
            self.lines.append(line)
            if line.strip() == "ready":
                return self
        raise RuntimeError("fastembed-ext serve did not become ready:\n" + "".join(self.lines))

    def stop(self, timeout: float = 60) -> int:
        """SIGTERM, then the exit status."""
        if self.process is None or self.process.poll() is not None:
            if self.process is not None and self.process.stdout is not None:
                self.process.stdout.close()
            return self.process.returncode if self.process else 0
        self.process.send_signal(signal.SIGTERM)
        try:
            return self.process.wait(timeout)
        finally:
            if self.process.poll() is None:
                self.process.kill()
            if self.process.stdout is not None:
                self.process.stdout.close()

    def kill(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait()
        if self.process is not None and self.process.stdout is not None:
            self.process.stdout.close()

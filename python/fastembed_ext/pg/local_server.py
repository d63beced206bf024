"""The embedding server beside the local database (`fastembed-ext db start`): a `fastembed-ext
serve` process in the background, with its socket, log and pid file next to the cluster's data
directory, serving the database's registered models."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from .._http import Connection
from ..errors import ServerError
from .errors import PgError


@dataclass
class LocalServer:
    root: Path  # holds server.sock, server.log, server.pid

    @property
    def socket(self) -> Path:
        return self.root / "server.sock"

    @property
    def url(self) -> str:
        return f"unix:{self.socket}"

    @property
    def log(self) -> Path:
        return self.root / "server.log"

    @property
    def pid_file(self) -> Path:
        return self.root / "server.pid"

    def pid(self) -> int | None:
        try:
            pid = int(self.pid_file.read_text())
            os.kill(pid, 0)
            return pid
        except (OSError, ValueError):
            return None

    def healthy(self) -> bool:
        try:
            Connection(self.url, timeout=2).request("GET", "/health")
            return True
        except ServerError:
            return False

    def start(self, models: list[tuple[str, str]], timeout: float = 120) -> None:
        """Starts the server (or restarts it, to serve exactly `models`) and waits until it answers."""
        self.stop()
        self.root.mkdir(parents=True, exist_ok=True)
        args = [sys.executable, "-m", "fastembed_ext.cli", "serve", "--socket", str(self.socket)]
        for name, path in models:
            args += ["--model", f"{name}={path}"]
        with open(self.log, "ab") as log:
            process = subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                       start_new_session=True)  # outlives this command
        self.pid_file.write_text(str(process.pid))
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if process.poll() is not None:
                raise PgError(f"the embedding server stopped at start (exit {process.returncode}); see {self.log}")
            if self.socket.exists() and self.healthy():
                return
            time.sleep(0.2)
        raise PgError(f"the embedding server did not answer within {timeout:g} s; see {self.log}")

    def stop(self, timeout: float = 60) -> bool:
        """SIGTERM (it answers what it accepted first); whether one was running."""
        pid = self.pid()
        if pid is None:
            return False
        os.kill(pid, signal.SIGTERM)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                os.kill(pid, 0)
            except OSError:
                break
            time.sleep(0.1)
        else:
            os.kill(pid, signal.SIGKILL)
        self.pid_file.unlink(missing_ok=True)
        return True

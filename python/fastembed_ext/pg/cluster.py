"""A PostgreSQL 15 cluster on this machine: initdb, start, stop, status.

Used by ``fastembed-ext db``, the test fixtures and the regression runner. When the caller is root
the server runs as the ``postgres`` user, because PostgreSQL refuses to run as root; every path the
server touches is then handed to that user.
"""

from __future__ import annotations

import os
import pwd
import shutil
import socket
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

from .errors import PgError

PG_MAJOR = 15
PG_BIN = Path(os.environ.get("FASTEMBED_EXT_PG_BIN", f"/usr/lib/postgresql/{PG_MAJOR}/bin"))
SERVER_USER = "postgres"


class ClusterError(PgError):
    """A cluster could not be created, started or stopped."""


def _as_root() -> bool:
    return os.geteuid() == 0


def server_user() -> str:
    """The operating-system user the server runs as."""
    return SERVER_USER if _as_root() else pwd.getpwuid(os.geteuid()).pw_name


def pg_bin(name: str) -> str:
    path = PG_BIN / name
    if not path.exists():
        raise ClusterError(
            f"{path} not found; install PostgreSQL {PG_MAJOR} with `bash scripts/setup_postgres.sh` "
            f"(apt-get install postgresql-{PG_MAJOR} postgresql-plpython3-{PG_MAJOR})"
        )
    return str(path)


def run_as_server(cmd: list[str], **kwargs) -> subprocess.CompletedProcess:
    """Run ``cmd`` as the server user (``postgres`` when we are root)."""
    if _as_root():
        pw = pwd.getpwnam(SERVER_USER)
        kwargs.setdefault("cwd", "/")
        kwargs.update(user=pw.pw_uid, group=pw.pw_gid, extra_groups=[])
        env = dict(kwargs.pop("env", None) or os.environ)
        env.update(HOME=pw.pw_dir, USER=SERVER_USER, LOGNAME=SERVER_USER)
        kwargs["env"] = env
    kwargs.setdefault("check", True)
    kwargs.setdefault("capture_output", True)
    kwargs.setdefault("text", True)
    try:
        return subprocess.run(cmd, **kwargs)
    except subprocess.CalledProcessError as exc:
        raise ClusterError(f"{' '.join(cmd)} failed:\n{exc.stdout}{exc.stderr}") from None


def give_to_server(path: Path) -> None:
    """Make ``path`` (a directory we just created) owned by the server user."""
    if _as_root():
        pw = pwd.getpwnam(SERVER_USER)
        os.chown(path, pw.pw_uid, pw.pw_gid)


def server_can_read(path: Path) -> bool:
    """Whether the server user can reach ``path`` (every parent searchable, the path readable)."""
    if not _as_root():
        return os.access(path, os.R_OK)
    pw = pwd.getpwnam(SERVER_USER)
    groups = {g for g in os.getgrouplist(SERVER_USER, pw.pw_gid)}
    path = Path(path).resolve()
    for p in [*reversed(path.parents), path]:
        st = p.stat()
        need = 0o1 if p != path or p.is_dir() else 0o4
        if st.st_uid == pw.pw_uid:
            ok = st.st_mode & (need << 6)
        elif st.st_gid in groups:
            ok = st.st_mode & (need << 3)
        else:
            ok = st.st_mode & need
        if not ok:
            return False
    return True


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class Cluster:
    """A cluster whose data directory is ``datadir``; the unix socket lives in ``datadir``."""

    datadir: Path
    port: int = 5432

    @property
    def socket_dir(self) -> Path:
        return self.datadir

    @property
    def logfile(self) -> Path:
        return self.datadir / "server.log"

    @property
    def user(self) -> str:
        return server_user()

    def dsn(self, dbname: str = "postgres") -> str:
        return f"host={self.socket_dir} port={self.port} dbname={dbname} user={self.user}"

    def url(self, dbname: str = "postgres") -> str:
        from urllib.parse import quote

        return f"postgresql://{self.user}@/{dbname}?host={quote(str(self.socket_dir), safe='')}&port={self.port}"

    def exists(self) -> bool:
        return (self.datadir / "PG_VERSION").exists()

    def init(self, settings: dict[str, str] | None = None) -> None:
        self.datadir.mkdir(parents=True, exist_ok=True)
        give_to_server(self.datadir)
        os.chmod(self.datadir, 0o700)
        run_as_server(
            [pg_bin("initdb"), "-D", str(self.datadir), "-U", self.user, "--auth=trust",
             "--encoding=UTF8", "--locale=C.UTF-8", "--no-sync"]
        )
        conf = {
            "listen_addresses": "''",
            "port": str(self.port),
            "unix_socket_directories": f"'{self.socket_dir}'",
            "fsync": "off",
            "synchronous_commit": "off",
            "full_page_writes": "off",
            "logging_collector": "off",
        }
        conf.update(settings or {})
        auto = self.datadir / "postgresql.auto.conf"
        lines = [f"{k} = {v}\n" for k, v in conf.items()]
        run_as_server(["sh", "-c", f"cat >> '{auto}'"], input="".join(lines))

    def is_running(self) -> bool:
        if not self.exists():
            return False
        r = run_as_server([pg_bin("pg_ctl"), "-D", str(self.datadir), "status"], check=False)
        return r.returncode == 0

    def start(self, timeout: float = 60) -> None:
        if self.is_running():
            return
        # the port lives in postgresql.auto.conf; keep it in step with self.port
        run_as_server(
            [pg_bin("pg_ctl"), "-D", str(self.datadir), "-l", str(self.logfile), "-w",
             "-t", str(int(timeout)), "-o", f"-p {self.port}", "start"]
        )

    def stop(self, mode: str = "fast") -> None:
        if self.is_running():
            run_as_server([pg_bin("pg_ctl"), "-D", str(self.datadir), "-m", mode, "-w", "stop"])

    def destroy(self) -> None:
        try:
            self.stop("immediate")
        finally:
            shutil.rmtree(self.datadir, ignore_errors=True)

    def wait_ready(self, timeout: float = 30) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            r = subprocess.run([pg_bin("pg_isready"), "-h", str(self.socket_dir), "-p", str(self.port)],
                               capture_output=True)
            if r.returncode == 0:
                return
            time.sleep(0.1)
        raise ClusterError(f"server in {self.datadir} not ready after {timeout}s; see {self.logfile}")

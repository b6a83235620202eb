"""A PostgreSQL server of the test's own, to crash: initdb into a temporary directory,
started on a free port, killed with SIGKILL, started again (crash recovery).

Its binaries are the machine's (`pg_config --bindir`, else the newest under
/usr/lib/postgresql). PostgreSQL refuses to run as root, so as root it runs as the
`postgres` user.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from pathlib import Path

import psycopg

#: what its server is started with
SETTINGS = {
    "listen_addresses": "127.0.0.1",
    "autovacuum": "off",  # nothing of its own writes or flushes WAL meanwhile
    "fsync": "on",
}


def bindir() -> Path:
    """Where the machine's PostgreSQL server binaries are."""
    pg_config = shutil.which("pg_config")
    if pg_config:
        found = Path(subprocess.check_output([pg_config, "--bindir"], text=True).strip())
        if (found / "initdb").exists():
            return found
    versions = sorted(
        Path("/usr/lib/postgresql").glob("*/bin/initdb"), key=lambda p: int(p.parent.parent.name)
    )
    if not versions:
        raise RuntimeError("no PostgreSQL server binaries (initdb) on this machine")
    return versions[-1].parent


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


class PrivatePostgres:
    """One throwaway PostgreSQL cluster: `start`, `pids`, `kill`, `close` (a kill too)."""

    def __init__(self) -> None:
        self.bin = bindir()
        self.as_postgres = ["runuser", "-u", "postgres", "--"] if os.geteuid() == 0 else []
        self.root = Path(tempfile.mkdtemp(prefix="baton-pg-"))
        if self.as_postgres:
            shutil.chown(self.root, "postgres")
        self.data = self.root / "data"
        self.port = free_port()
        self._run("initdb", "-D", str(self.data), "-U", "postgres", "-A", "trust", "--no-sync")

    @property
    def admin_url(self) -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/postgres"

    def url(self, database: str) -> str:
        """The SQLAlchemy URL of `database` on this server."""
        return f"postgresql+psycopg://postgres@127.0.0.1:{self.port}/{database}"

    def create_database(self, name: str) -> None:
        with psycopg.connect(self.admin_url, autocommit=True) as conn:
            conn.execute(f"CREATE DATABASE {name}")

    def start(self) -> None:
        """Start the server (after a kill: crash recovery first) and wait for it."""
        options = " ".join(f"-c {key}={value}" for key, value in SETTINGS.items())
        self._run(
            "pg_ctl",
            "-D",
            str(self.data),
            "-l",
            str(self.root / "server.log"),
            "-w",
            "-o",
            f"-p {self.port} -k {self.root} {options}",
            "start",
        )

    def pids(self) -> dict[str, int]:
        """The server's processes by role (``postmaster``, ``walwriter``, ...)."""
        postmaster = int((self.data / "postmaster.pid").read_text().split()[0])
        ps = ["ps", "-o", "pid=,args=", "--ppid", str(postmaster)]
        out = subprocess.run(ps, capture_output=True, text=True).stdout  # 1 if none
        roles = {"postmaster": postmaster}
        for line in out.splitlines():
            pid, args = line.strip().split(" ", 1)
            roles[args.removeprefix("postgres: ").strip()] = int(pid)
        return roles

    def kill(self) -> None:
        """SIGKILL the postmaster, then every process it started: a crash, with nothing
        written or flushed on the way out. Returns once they are gone."""
        pids = list(self.pids().values())
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):  # gone already
                os.kill(pid, signal.SIGKILL)
        # The next start reads the dead postmaster's lock file and refuses while its
        # PID exists, so wait for init to reap it; a zombie left past that is dead all
        # the same, and its lock file goes.
        deadline = time.monotonic() + 10
        while any(_exists(pid) for pid in pids) and time.monotonic() < deadline:
            time.sleep(0.02)
        if any(_running(pid) for pid in pids):
            raise RuntimeError(f"PostgreSQL processes {pids} outlived SIGKILL")
        if _exists(pids[0]):
            (self.data / "postmaster.pid").unlink()

    def close(self) -> None:
        try:
            if (self.data / "postmaster.pid").exists():
                self.kill()
        finally:
            shutil.rmtree(self.root, ignore_errors=True)

    def _run(self, program: str, *args: str) -> None:
        cmd = [*self.as_postgres, str(self.bin / program), *args]
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
        if done.returncode != 0:
            log = self.root / "server.log"
            tail = log.read_text()[-2000:] if log.exists() else ""
            raise RuntimeError(f"{program} failed: {done.stderr.strip()}\n{tail}")


def _exists(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def _running(pid: int) -> bool:
    """Whether `pid` exists and is not a zombie."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().split(") ", 1)[1][0] != "Z"
    except (FileNotFoundError, IndexError):
        return False

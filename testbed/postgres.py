"""A throwaway PostgreSQL cluster for the test session: initdb, start on loopback, drop at the end.

Run as root (CI, containers), the cluster belongs to the `postgres` user because PostgreSQL
refuses to run as root; run as anyone else, it belongs to that user.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from pathlib import Path

from testbed.registry import free_port

DATABASE = "ligoenv_test"


def postgres_bindir() -> Path:
    """Where initdb and pg_ctl live: $LIGOENV_PG_BIN, else the newest /usr/lib/postgresql/*/bin."""
    if os.environ.get("LIGOENV_PG_BIN"):
        return Path(os.environ["LIGOENV_PG_BIN"])
    candidates = sorted(Path("/usr/lib/postgresql").glob("*/bin/pg_ctl"),
                        key=lambda p: int(p.parent.parent.name) if p.parent.parent.name.isdigit() else 0)
    if candidates:
        return candidates[-1].parent
    found = shutil.which("pg_ctl")
    if found:
        return Path(found).parent
    raise RuntimeError("PostgreSQL is not installed (no pg_ctl): run scripts/setup.sh "
                       "or set LIGOENV_PG_BIN")


class PostgresCluster:
    """A cluster in a fresh temporary directory, trusting loopback connections, on a free port."""

    def __init__(self) -> None:
        self.bindir = postgres_bindir()
        self.port = free_port()
        # Not under pytest's tmp_path: its parents are private to root and the server
        # process runs as `postgres`.
        self.root = Path(tempfile.mkdtemp(prefix="ligoenv-pg-"))
        self.data = self.root / "data"
        self.sockets = self.root / "sockets"
        self.log = self.root / "postgres.log"
        self.as_root = os.geteuid() == 0
        self.started = False

    def url(self, database: str = DATABASE) -> str:
        return f"postgresql+psycopg://postgres@127.0.0.1:{self.port}/{database}"

    def start(self) -> PostgresCluster:
        self.sockets.mkdir()
        if self.as_root:
            shutil.chown(self.root, "postgres", "postgres")
            shutil.chown(self.sockets, "postgres", "postgres")
        # fsync=off: a throwaway cluster on a test machine; the queue's own commits still
        # go through the same code paths.
        self._run("initdb", "-D", str(self.data), "-U", "postgres", "-E", "UTF8",
                  "--auth-local=trust", "--auth-host=trust", "--no-sync")
        options = (f"-p {self.port} -k {self.sockets} -c listen_addresses=127.0.0.1 "
                   "-c fsync=off -c full_page_writes=off -c max_connections=50")
        self._run("pg_ctl", "-D", str(self.data), "-o", options, "-l", str(self.log),
                  "-w", "-t", "30", "start")
        self.started = True
        self.create_database(DATABASE)
        return self

    def create_database(self, name: str) -> str:
        """Create an empty database and return its SQLAlchemy URL."""
        self._run("createdb", "-h", "127.0.0.1", "-p", str(self.port), "-U", "postgres", name)
        return self.url(name)

    def stop(self) -> None:
        try:
            if self.started:
                self._run("pg_ctl", "-D", str(self.data), "-m", "immediate", "-w", "stop")
                self.started = False
        finally:
            shutil.rmtree(self.root, ignore_errors=True)

    def _run(self, tool: str, *args: str) -> None:
        command = [str(self.bindir / tool), *args]
        if self.as_root:
            command = ["runuser", "-u", "postgres", "--", *command]
        done = subprocess.run(command, capture_output=True, text=True, timeout=60,
                              cwd=self.root, check=False)
        if done.returncode != 0:
            raise RuntimeError(f"PostgreSQL test cluster: {tool} failed ({done.returncode}): "
                               f"{(done.stderr or done.stdout).strip()[-2000:]}{self._log_tail()}")

    def _log_tail(self) -> str:
        if not self.log.exists():
            return ""
        return "\nserver log:\n" + self.log.read_text(errors="replace")[-2000:]

"""A throwaway PostgreSQL server for the delivery log's tests and bench: Debian's ``postgresql``
package (deploy/local/postgres.sh installs it), initdb into a temporary directory, started on
a free loopback port with its socket in that directory, stopped and removed at the end.

initdb refuses to run as root: as root the server runs as the ``postgres`` user the package
created (``runuser``). Settings trade durability for speed (fsync off): a test server only.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import tempfile
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import psycopg

from tests.support.services import free_port

BIN_GLOB = "/usr/lib/postgresql/*/bin"
SUPERUSER = "clickhook"
RUN_AS = "postgres"
START_TIMEOUT_S = 60


def server_bin_dir() -> Path:
    """The newest installed server's binaries (initdb, pg_ctl)."""
    found = sorted(
        Path("/").glob(BIN_GLOB.lstrip("/")),
        key=lambda path: int(re.sub(r"\D", "", path.parent.name) or 0),
    )
    found = [path for path in found if (path / "initdb").exists()]
    if not found:
        raise RuntimeError(
            "no PostgreSQL server: run deploy/local/postgres.sh (Debian's postgresql package)"
        )
    return found[-1]


def server_version() -> str:
    done = subprocess.run(
        [str(server_bin_dir() / "postgres"), "--version"],
        capture_output=True,
        text=True,
        check=True,
    )
    return done.stdout.strip()


@dataclass
class PostgresServer:
    directory: Path
    port: int

    @property
    def url(self) -> str:
        return f"postgresql://{SUPERUSER}@127.0.0.1:{self.port}/postgres"

    def url_of_schema(self, schema: str) -> str:
        """The URL of one schema: tests and bench runs each get theirs, in one server."""
        return f"{self.url}?options=-csearch_path%3D{schema}"

    def new_schema(self) -> str:
        schema = f"t_{uuid.uuid4().hex[:12]}"
        with psycopg.connect(self.url, autocommit=True) as connection:
            connection.execute(f"CREATE SCHEMA {schema}")
        return self.url_of_schema(schema)

    @classmethod
    def create(cls) -> PostgresServer:
        # Not under pytest's tmp_path: its parents are root's alone, and the server runs as
        # the postgres user.
        directory = Path(tempfile.mkdtemp(prefix="clickhook-pg-"))
        directory.chmod(0o755)
        server = cls(directory, free_port())
        server._initdb()
        return server

    def _as_server_user(self, *command: str) -> list[str]:
        if os.geteuid() == 0:
            return ["runuser", "-u", RUN_AS, "--", *command]
        return list(command)

    def _run(self, *command: str) -> None:
        done = subprocess.run(
            self._as_server_user(*command), capture_output=True, text=True, check=False
        )
        if done.returncode != 0:
            raise RuntimeError(f"{command[0]} failed: {done.stdout[-2000:]}{done.stderr[-2000:]}")

    @property
    def data_dir(self) -> Path:
        return self.directory / "data"

    def _initdb(self) -> None:
        if os.geteuid() == 0:
            shutil.chown(self.directory, RUN_AS)
        self._run(
            str(server_bin_dir() / "initdb"),
            "-D",
            str(self.data_dir),
            "-U",
            SUPERUSER,
            "--auth=trust",
            "--encoding=UTF8",
            "--no-sync",
        )

    def start(self) -> None:
        options = (
            f"-p {self.port} -k {self.directory} -c listen_addresses=127.0.0.1"
            " -c fsync=off -c synchronous_commit=off -c full_page_writes=off"
            " -c shared_buffers=64MB -c max_connections=200"
        )
        self._run(
            str(server_bin_dir() / "pg_ctl"),
            "-D",
            str(self.data_dir),
            "-l",
            str(self.directory / "server.log"),
            "-o",
            options,
            "-t",
            str(START_TIMEOUT_S),
            "-w",
            "start",
        )

    def stop(self) -> None:
        self._run(str(server_bin_dir() / "pg_ctl"), "-D", str(self.data_dir), "-m", "fast", "stop")

    def remove(self) -> None:
        shutil.rmtree(self.directory, ignore_errors=True)


@contextmanager
def running_postgres() -> Iterator[PostgresServer]:
    server = PostgresServer.create()
    server.start()
    try:
        yield server
    finally:
        try:
            server.stop()
        finally:
            server.remove()

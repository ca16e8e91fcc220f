"""An embedded PostgreSQL server on 127.0.0.1, from the ``pgserver`` wheel's binaries.

Used by ``make run`` (data under ``.data/postgres``) and by the tests (a temporary
directory). PostgreSQL refuses to run as root, so as root the server runs as the
unprivileged ``pgserver`` system user, created on first use.
"""

from __future__ import annotations

import os
import subprocess
import time
from pathlib import Path

import pgserver

BIN = Path(pgserver.__file__).resolve().parent / "pginstall" / "bin"


class LocalPostgres:
    def __init__(self, data_dir: Path, port: int, database: str = "complaints") -> None:
        self.data_dir = Path(data_dir).resolve()
        self.port = port
        self.database = database
        self._process: subprocess.Popen[bytes] | None = None
        self._user: str | None = None
        if os.geteuid() == 0:
            from pgserver.utils import ensure_prefix_permissions, ensure_user_exists

            self._user = "pgserver"
            ensure_user_exists(self._user)
            self.data_dir.mkdir(parents=True, exist_ok=True)
            ensure_prefix_permissions(self.data_dir)
            ensure_prefix_permissions(BIN)
            import pwd

            entry = pwd.getpwnam(self._user)
            os.chown(self.data_dir, entry.pw_uid, entry.pw_gid)

    @property
    def url(self) -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/{self.database}"

    def _run(self, *args: str) -> None:
        subprocess.run([str(BIN / args[0]), *args[1:]], check=True, user=self._user,
                       stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)

    def start(self, timeout: float = 30.0) -> None:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        if not (self.data_dir / "PG_VERSION").exists():
            self._run("initdb", "-D", str(self.data_dir), "--auth=trust", "--encoding=UTF8",
                      "--locale=C", "-U", "postgres")
        log = open(self.data_dir / "server.log", "ab")
        self._process = subprocess.Popen(
            [str(BIN / "postgres"), "-D", str(self.data_dir), "-h", "127.0.0.1",
             "-p", str(self.port), "-k", str(self.data_dir), "-c", "fsync=on"],
            user=self._user, stdout=log, stderr=log, start_new_session=True)
        deadline = time.monotonic() + timeout
        while True:
            if self._process.poll() is not None:
                raise RuntimeError(f"PostgreSQL did not start; see {self.data_dir / 'server.log'}")
            if self._ready():
                break
            if time.monotonic() > deadline:
                raise RuntimeError("PostgreSQL did not become ready in time")
            time.sleep(0.1)
        self._ensure_database()

    def _psql(self, sql: str, database: str = "postgres") -> str:
        result = subprocess.run(
            [str(BIN / "psql"), "-h", "127.0.0.1", "-p", str(self.port), "-U", "postgres",
             "-d", database, "-tAc", sql],
            capture_output=True, text=True)
        if result.returncode != 0:
            raise RuntimeError(result.stderr.strip())
        return result.stdout.strip()

    def _ready(self) -> bool:
        result = subprocess.run([str(BIN / "pg_isready"), "-h", "127.0.0.1", "-p", str(self.port)],
                                capture_output=True)
        return result.returncode == 0

    def _ensure_database(self) -> None:
        exists = self._psql(f"SELECT 1 FROM pg_database WHERE datname = '{self.database}'")
        if exists != "1":
            self._psql(f'CREATE DATABASE "{self.database}"')

    def stop(self, timeout: float = 30.0) -> None:
        if self._process is None or self._process.poll() is not None:
            return
        self._process.send_signal(2)  # SIGINT: fast shutdown
        try:
            self._process.wait(timeout)
        except subprocess.TimeoutExpired:
            self._process.kill()
            self._process.wait()

    def __enter__(self) -> LocalPostgres:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

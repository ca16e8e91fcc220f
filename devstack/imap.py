"""A real IMAP server on 127.0.0.1 for the info@ mailbox: pymap (pip-installed), its in-memory backend.

Used by ``make run`` and by the tests. It speaks IMAP4rev1 with UIDPLUS and MOVE, like the servers
the mailbox reads in production; the local SMTP server delivers mail addressed to the mailbox into it
with APPEND (devstack/smtp.py). The in-memory backend keeps every mail's bytes exactly as they came
(pymap's maildir backend re-writes them through Python's email package, which refolds headers and
cannot store a mail with broken MIME at all), so the mailbox lives as long as the server runs: what
the worker processed is in the dossier.
"""

from __future__ import annotations

import secrets
import socket
import subprocess
import sys
import time
from pathlib import Path

from infra.config import MailboxSettings

PYMAP = Path(sys.executable).parent / "pymap"
ADDRESS = "info@level-up.nl"


class LocalImap:
    def __init__(self, log: Path, port: int, user: str = ADDRESS, password: str | None = None) -> None:
        self.log = Path(log)
        self.port = port
        self.user = user
        self.password = password or secrets.token_urlsafe(18)
        self._process: subprocess.Popen[bytes] | None = None

    def mailbox(self, folder: str = "INBOX", **overrides: object) -> MailboxSettings:
        """Settings that read this server's ``folder`` (plain IMAP: it listens on loopback only)."""
        values: dict[str, object] = dict(scheme="imap", user=self.user, host="127.0.0.1", port=self.port,
                                         folder=folder, password=self.password)
        return MailboxSettings(**{**values, **overrides})  # type: ignore[arg-type]

    def url(self, folder: str = "INBOX") -> str:
        """``MAILBOX_URL`` for this server (the user's @ written as %40)."""
        return f"imap://{self.user.replace('@', '%40')}@127.0.0.1:{self.port}/{folder}"

    def start(self, timeout: float = 30.0) -> LocalImap:
        if not PYMAP.exists():
            raise RuntimeError(f"{PYMAP} is missing: install the dev dependencies (make install)")
        self.log.parent.mkdir(parents=True, exist_ok=True)
        log = open(self.log, "ab")
        self._process = subprocess.Popen(
            [str(PYMAP), "--host", "127.0.0.1", "--port", str(self.port), "--no-tls", "dict",
             "--demo-user", self.user, "--demo-password", self.password],
            stdout=log, stderr=log, stdin=subprocess.DEVNULL, start_new_session=True)
        deadline = time.monotonic() + timeout
        while True:
            if self._process.poll() is not None:
                raise RuntimeError(f"the IMAP server did not start; see {self.log}")
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=1) as conn:
                    if conn.recv(64).startswith(b"* OK"):
                        return self
            except OSError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError("the IMAP server did not become ready in time")
            time.sleep(0.1)

    def stop(self, timeout: float = 10.0) -> None:
        if self._process is None or self._process.poll() is not None:
            return
        self._process.terminate()
        try:
            self._process.wait(timeout)
        except subprocess.TimeoutExpired:
            self._process.kill()
            self._process.wait()

    def __enter__(self) -> LocalImap:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

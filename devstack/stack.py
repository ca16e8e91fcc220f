"""The dev stack's machinery: start each part, wait until it is ready, watch it, stop it.

``python -m devstack`` (see ``devstack/__main__.py``) is the entry point; :class:`Config`
reads the ``DEVSTACK_*`` overrides.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import getpass
import json
import os
import secrets
import signal
import socket
import subprocess
import sys
import warnings
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Awaitable, Callable, Mapping

from aiohttp import web

from complaints.staff import RegisterError, StaffRegister, StaffRole
from devstack.imap import LocalImap
from devstack.smtp import MailCatcher
from infra.cli import first_line
from infra.codec import KeyConfigError, new_key_entry
from infra.codec_server import build_app as build_codec_app
from infra.config import DEV_DATA_DIR, DEV_POSTGRES_PORT, REPO_ROOT, ConfigError, Settings, load_settings
from infra.signing import KeyFileError, default_key_file, new_key, read_key, write_key

with warnings.catch_warnings():  # pgserver's platformdirs warns when XDG_RUNTIME_DIR is unset
    warnings.filterwarnings("ignore", message="XDG_RUNTIME_DIR")
    from devstack.postgres import LocalPostgres

TEMPORAL_CLI = Path(sys.executable).parent / "temporal"
NAMESPACE = "default"
NAMESPACE_RETENTION = "720h"  # 30 days


def ensure_dev_key(data_dir: Path) -> Path:
    """The development encryption key, created (readable by its owner only) on first start."""
    path = data_dir / "encryption-keys"
    if not path.exists():
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as out:
            out.write("# Development key for make run. Rotation: put a new key first; keep old ones after it.\n")
            out.write(new_key_entry("dev-1") + "\n")
    return path
READY_TIMEOUT = 60.0


def ensure_dev_staff(data_dir: Path, key_file: Path) -> Path:
    """The development staff register, holding the key ``admin.py`` signs with: created on first start,
    for the OS user as director (infra/signing.py), unless that key exists already (then its holder is
    registered as the key file says)."""
    if key_file.exists():
        key = read_key(key_file)
    else:
        key = new_key(getpass.getuser(), StaffRole.DIRECTOR)
        write_key(key, key_file)
    register = data_dir / "staff.toml"
    if not register.exists():
        register.write_text("# The staff register of make run (COMPLAINTS_STAFF_FILE): one [[staff]] table per "
                            "person; admin.py keygen prints them.\n", encoding="utf-8")
    known = StaffRegister.parse(register.read_text(encoding="utf-8"))
    if known.member(key.key_id) is None:
        with register.open("a", encoding="utf-8") as out:
            out.write("\n" + key.register_entry())
    return register


def ensure_mailbox_password(data_dir: Path) -> Path:
    """The local mailbox's password, created (readable by its owner only) on first start."""
    path = data_dir / "mailbox-password"
    if not path.exists():
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as out:
            out.write(secrets.token_urlsafe(18) + "\n")
    return path


class StackError(Exception):
    """Something the operator must know about; the message is one line."""


class Interrupted(Exception):
    """Ctrl-C or SIGTERM arrived while the stack was starting."""


@dataclass(frozen=True)
class Config:
    data_dir: Path
    temporal_port: int = 7233
    ui_port: int = 8233
    postgres_port: int = DEV_POSTGRES_PORT
    smtp_port: int = 1025
    codec_port: int = 8081
    imap_port: int = 1143

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> Config:
        def port(name: str, default: int) -> int:
            raw = env.get(name, "").strip() or str(default)
            if not raw.isdigit() or not 0 < int(raw) < 65536:
                raise StackError(f"{name}: {raw!r} is not a port number")
            return int(raw)

        raw_dir = env.get("DEVSTACK_DATA_DIR", "").strip()
        return cls(data_dir=(REPO_ROOT / raw_dir).resolve() if raw_dir else DEV_DATA_DIR,
                   temporal_port=port("DEVSTACK_TEMPORAL_PORT", 7233),
                   ui_port=port("DEVSTACK_UI_PORT", 8233),
                   postgres_port=port("DEVSTACK_POSTGRES_PORT", DEV_POSTGRES_PORT),
                   smtp_port=port("DEVSTACK_SMTP_PORT", 1025),
                   codec_port=port("DEVSTACK_CODEC_PORT", 8081),
                   imap_port=port("DEVSTACK_IMAP_PORT", 1143))

    def check_ports(self) -> None:
        for what, port, var in [("Temporal", self.temporal_port, "DEVSTACK_TEMPORAL_PORT"),
                                ("Temporal Web UI", self.ui_port, "DEVSTACK_UI_PORT"),
                                ("PostgreSQL", self.postgres_port, "DEVSTACK_POSTGRES_PORT"),
                                ("SMTP", self.smtp_port, "DEVSTACK_SMTP_PORT"),
                                ("IMAP", self.imap_port, "DEVSTACK_IMAP_PORT"),
                                ("codec server", self.codec_port, "DEVSTACK_CODEC_PORT")]:
            with socket.socket() as s:  # SO_REUSEADDR, as the servers use: only a listener conflicts
                s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                try:
                    s.bind(("127.0.0.1", port))
                except OSError:
                    raise StackError(f"port {port} ({what}) is already in use: stop what uses it "
                                     f"or set {var}") from None


_LIBC = ctypes.CDLL(None) if sys.platform == "linux" else None


def _die_with_parent() -> None:
    """In the child: get SIGTERM if devstack itself is killed, so nothing is left behind."""
    if _LIBC is not None:
        _LIBC.prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


def _show(path: Path) -> str:
    """``path`` as the operator would type it from the current directory."""
    with contextlib.suppress(ValueError):
        return str(path.relative_to(Path.cwd()))
    return str(path)


class Stack:
    """PostgreSQL, SMTP, the codec server, Temporal and the worker, started in that order and
    stopped in reverse."""

    def __init__(self, config: Config) -> None:
        self.config = config
        self.address = f"127.0.0.1:{config.temporal_port}"
        self.stop_requested = asyncio.Event()
        self.postgres: LocalPostgres | None = None
        self.mail: MailCatcher | None = None
        self.imap: LocalImap | None = None
        self.temporal: asyncio.subprocess.Process | None = None
        self.worker: asyncio.subprocess.Process | None = None
        self.codec: web.AppRunner | None = None
        self.task_queue = ""

    async def run(self) -> int:
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, self.stop_requested.set)
        try:
            await self._start()
            self._banner()
            return await self._watch()
        except Interrupted:
            return 0
        except StackError as err:
            print(f"devstack: {err}", file=sys.stderr, flush=True)
            return 1
        finally:
            await self._shutdown()

    async def _sleep(self, seconds: float) -> None:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self.stop_requested.wait(), seconds)
        if self.stop_requested.is_set():
            raise Interrupted

    async def _start(self) -> None:
        cfg = self.config
        if not TEMPORAL_CLI.exists():
            raise StackError(f"{TEMPORAL_CLI} is missing: install the dev dependencies (make install)")
        cfg.check_ports()
        cfg.data_dir.mkdir(parents=True, exist_ok=True)
        (cfg.data_dir / "mail").mkdir(exist_ok=True)

        self.postgres = LocalPostgres(cfg.data_dir / "postgres", cfg.postgres_port)
        try:
            await asyncio.to_thread(self.postgres.start)
        except (RuntimeError, OSError, subprocess.SubprocessError) as err:
            if self.stop_requested.is_set():  # Ctrl-C reaches initdb and psql too
                raise Interrupted from None
            raise StackError(f"PostgreSQL: {first_line(err)}") from None
        await self._sleep(0)
        password_file = ensure_mailbox_password(cfg.data_dir)
        self.imap = LocalImap(cfg.data_dir / "imap.log", cfg.imap_port, password=password_file.read_text().strip())
        try:
            await asyncio.to_thread(self.imap.start)
        except (RuntimeError, OSError) as err:
            raise StackError(f"IMAP server on port {cfg.imap_port}: {first_line(err)}") from None
        try:
            self.mail = MailCatcher(cfg.smtp_port, directory=cfg.data_dir / "mail", keep_in_memory=False,
                                    mailbox=self.imap.mailbox()).start()
        except Exception as err:  # noqa: BLE001 - aiosmtpd raises several kinds
            raise StackError(f"SMTP server on port {cfg.smtp_port}: {err}") from None

        env = {k: v for k, v in os.environ.items() if k not in ("SMTP_USERNAME", "SMTP_PASSWORD")}
        if not env.get("COMPLAINTS_ENCRYPTION_KEYS"):
            env["COMPLAINTS_ENCRYPTION_KEYS_FILE"] = str(ensure_dev_key(cfg.data_dir))
        env.update(TEMPORAL_ADDRESS=self.address, TEMPORAL_NAMESPACE=NAMESPACE,
                   DATABASE_URL=self.postgres.url, SMTP_HOST="127.0.0.1",
                   SMTP_PORT=str(cfg.smtp_port), SMTP_TLS="none", PYTHONUNBUFFERED="1",
                   MAILBOX_URL=self.imap.url(), MAILBOX_PASSWORD_FILE=str(password_file),
                   MAILBOX_POLL_SECONDS=env.get("MAILBOX_POLL_SECONDS") or "5")
        env.pop("MAILBOX_PASSWORD", None)
        if not env.get("COMPLAINTS_STAFF_FILE"):
            try:
                key_file = Path(env["COMPLAINTS_STAFF_KEY"]).expanduser() if env.get("COMPLAINTS_STAFF_KEY") else \
                    default_key_file()
                env["COMPLAINTS_STAFF_FILE"] = str(ensure_dev_staff(cfg.data_dir, key_file))
            except (OSError, KeyFileError, RegisterError) as err:
                raise StackError(f"the staff register: {first_line(err)}") from None
        try:
            settings = load_settings(env)
        except ConfigError as err:
            raise StackError(f"worker configuration: {err}") from None
        self.task_queue = settings.task_queue
        await self._start_codec_server(settings)

        log = cfg.data_dir / "temporal.log"
        with open(log, "ab") as out:
            self.temporal = await asyncio.create_subprocess_exec(
                str(TEMPORAL_CLI), "server", "start-dev",
                "--db-filename", str(cfg.data_dir / "temporal.db"), "--ip", "127.0.0.1",
                "--port", str(cfg.temporal_port), "--ui-port", str(cfg.ui_port),
                "--ui-codec-endpoint", f"http://localhost:{cfg.codec_port}",
                "--log-level", "warn", "--ui-disable-news-fetch",
                "--dynamic-config-value", "frontend.WorkflowTimeSkippingEnabled=true",
                stdin=asyncio.subprocess.DEVNULL, stdout=out, stderr=out,
                start_new_session=True, preexec_fn=_die_with_parent)
        await self._wait_until_ready("the Temporal server", self.temporal, self._temporal_ready,
                                     f"; see {_show(log)}")
        # Closed runs (which held personal data) are deleted 30 days after they close.
        if await self._cli("operator", "namespace", "update", "--retention", NAMESPACE_RETENTION) is None:
            raise StackError(f"could not set the namespace retention to {NAMESPACE_RETENTION}")

        self.worker = await asyncio.create_subprocess_exec(
            sys.executable, str(REPO_ROOT / "worker.py"), cwd=REPO_ROOT, env=env,
            stdin=asyncio.subprocess.DEVNULL, start_new_session=True, preexec_fn=_die_with_parent)
        await self._wait_until_ready("the worker", self.worker, self._worker_ready)

    async def _start_codec_server(self, settings: Settings) -> None:
        """In this process: the worker's keys, for the Web UI's origin only, on 127.0.0.1 (no token)."""
        cfg = self.config
        settings = replace(settings, codec_port=cfg.codec_port, codec_token=None,
                           codec_ui_origin=f"http://localhost:{cfg.ui_port}")
        try:
            self.codec = web.AppRunner(build_codec_app(settings), access_log=None)
        except KeyConfigError as err:
            raise StackError(f"codec server: {err}") from None
        await self.codec.setup()
        try:
            await web.TCPSite(self.codec, "127.0.0.1", cfg.codec_port).start()
        except OSError as err:
            raise StackError(f"codec server on port {cfg.codec_port}: {err.strerror or err}") from None

    async def _cli(self, *args: str) -> bytes | None:
        """A ``temporal`` CLI command against this stack; its stdout, or None if it failed."""
        proc = await asyncio.create_subprocess_exec(
            str(TEMPORAL_CLI), *args, "--address", self.address, "--namespace", NAMESPACE,
            "--disable-config-file", "--disable-config-env", "--command-timeout", "5s",
            stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.DEVNULL)
        out, _ = await proc.communicate()
        return out if proc.returncode == 0 else None

    async def _wait_until_ready(self, what: str, process: asyncio.subprocess.Process,
                                ready: Callable[[], Awaitable[bool]], hint: str = "") -> None:
        deadline = asyncio.get_running_loop().time() + READY_TIMEOUT
        while not await ready():
            if process.returncode is not None:
                raise StackError(f"{what} exited while starting (code {process.returncode}){hint}")
            if asyncio.get_running_loop().time() > deadline:
                raise StackError(f"{what} was not ready within {READY_TIMEOUT:.0f} s{hint}")
            await self._sleep(0.2)

    async def _temporal_ready(self) -> bool:
        return await self._cli("operator", "namespace", "describe", "-o", "json") is not None

    async def _worker_ready(self) -> bool:
        """The worker process polls its task queue."""
        assert self.worker is not None
        out = await self._cli("task-queue", "describe", "--task-queue", self.task_queue,
                              "--legacy-mode", "-o", "json")
        with contextlib.suppress(ValueError, AttributeError, TypeError):
            pollers = json.loads(out or b"{}").get("pollers") or []
            return any(str(p.get("identity", "")).startswith(f"{self.worker.pid}@") for p in pollers)
        return False

    def _banner(self) -> None:
        assert self.postgres is not None
        cfg, py, admin = self.config, _show(Path(sys.executable)), _show(REPO_ROOT / "admin.py")
        example = _show(REPO_ROOT / "examples" / "complaint.json")
        eml = _show(REPO_ROOT / "examples" / "complaint.eml")
        prefix = "" if cfg.temporal_port == 7233 else f"TEMPORAL_ADDRESS={self.address} "
        print("\n".join([
            "Level Up complaints is running.",
            f"  Web UI:       http://localhost:{cfg.ui_port}",
            f"  Codec server: http://localhost:{cfg.codec_port} (decrypts payloads for the Web UI)",
            f"  Mail:         {_show(cfg.data_dir / 'mail')}/ (one .eml per message)",
            f"  Mailbox:      info@level-up.nl on imap://127.0.0.1:{cfg.imap_port} (user info@level-up.nl, "
            f"password in {_show(cfg.data_dir / 'mailbox-password')}); SMTP localhost:{cfg.smtp_port} delivers "
            "to it",
            f"  Temporal:     {self.address}   PostgreSQL: {self.postgres.url}",
            f"  Submit the example:   {prefix}{py} -m starter submit {example}",
            f"  Or mail it:           {py} -c \"import smtplib; smtplib.SMTP('localhost', {cfg.smtp_port}).sendmail("
            f"'jan.devries@example.nl', ['info@level-up.nl'], open('{eml}', 'rb').read())\"",
            f"  See it:               {prefix}{py} {admin} list   /  {admin} show <id>",
            f"  Walk it through:      {prefix}{py} {admin} decide <id> --outcome upheld "
            '--motivation "..."',
            "Press Ctrl-C to stop.",
        ]), flush=True)

    async def _watch(self) -> int:
        assert self.worker is not None and self.temporal is not None
        parts = {asyncio.ensure_future(self.stop_requested.wait()): "",
                 asyncio.ensure_future(self.worker.wait()): "the worker",
                 asyncio.ensure_future(self.temporal.wait()): "the Temporal server"}
        done, pending = await asyncio.wait(parts, return_when=asyncio.FIRST_COMPLETED)
        for task in pending:
            task.cancel()
        died = [(parts[t], t.result()) for t in done if parts[t]]
        if not died:
            return 0
        name, code = died[0]
        print(f"devstack: {name} exited unexpectedly (code {code}); stopping the stack",
              file=sys.stderr, flush=True)
        return 1

    async def _shutdown(self) -> None:
        if self.postgres is not None:
            print("Stopping...", flush=True)
        await _terminate(self.worker, timeout=30)
        await _terminate(self.temporal, timeout=20)
        if self.codec is not None:
            await self.codec.cleanup()
        if self.mail is not None:
            self.mail.stop()
        if self.imap is not None:
            await asyncio.to_thread(self.imap.stop)
        if self.postgres is not None:
            await asyncio.to_thread(self.postgres.stop)
            print("Stopped.", flush=True)


async def _terminate(process: asyncio.subprocess.Process | None, timeout: float) -> None:
    """SIGTERM (a clean stop for both the worker and Temporal, even while starting); then kill."""
    if process is None or process.returncode is not None:
        return
    with contextlib.suppress(ProcessLookupError):
        process.terminate()
    try:
        await asyncio.wait_for(process.wait(), timeout)
    except TimeoutError:
        with contextlib.suppress(ProcessLookupError):
            process.kill()
        await process.wait()

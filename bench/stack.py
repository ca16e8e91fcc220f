"""The servers a benchmark runs against, all fresh and on loopback.

- :class:`DevServer`: the Temporal CLI dev server (in-memory SQLite unless a file is given).
- :class:`Mailbox`: a real SMTP server (aiosmtpd) that notes, per message, when it was
  accepted and the complaint it belongs to, without keeping the message.
- :class:`Process`: a worker process as users run it, with its CPU time and peak RSS.
"""

from __future__ import annotations

import asyncio
import math
import os
import socket
import subprocess
import sys
import tempfile
import threading
import time
import typing
from dataclasses import dataclass, field
from pathlib import Path

import psutil
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import SMTP, Envelope, Session
from temporalio.api.enums.v1 import TaskQueueType
from temporalio.api.taskqueue.v1 import TaskQueue
from temporalio.api.workflowservice.v1 import DescribeTaskQueueRequest
from temporalio.client import Client

REPO = Path(__file__).resolve().parent.parent
TEMPORAL_CLI = Path(sys.executable).parent / "temporal"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class DevServer:
    """``temporal server start-dev``, headless, on free ports; in memory unless ``db_file``."""

    def __init__(self, db_file: Path | None = None, extra_args: tuple[str, ...] = ()) -> None:
        if not TEMPORAL_CLI.exists():
            raise RuntimeError(f"{TEMPORAL_CLI} is missing: run `make install` first")
        self.port = free_port()
        self.db_file = db_file
        self.extra_args = extra_args
        self.address = f"127.0.0.1:{self.port}"
        self._process: subprocess.Popen[bytes] | None = None

    def start(self, timeout: float = 30.0) -> DevServer:
        args = [str(TEMPORAL_CLI), "server", "start-dev", "--headless", "--ip", "127.0.0.1",
                "--port", str(self.port), "--http-port", str(free_port()),
                "--metrics-port", str(free_port()), "--log-level", "error", *self.extra_args]
        if self.db_file is not None:
            args += ["--db-filename", str(self.db_file)]
        self._process = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                         start_new_session=True)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self._process.poll() is not None:
                raise RuntimeError("the Temporal dev server exited at start")
            with socket.socket() as sock:
                if sock.connect_ex(("127.0.0.1", self.port)) == 0:
                    return self
            time.sleep(0.1)
        self.stop()
        raise RuntimeError("the Temporal dev server did not start in time")

    @property
    def pid(self) -> int:
        assert self._process is not None
        return self._process.pid

    def stop(self) -> None:
        terminate(self._process, 20)


@dataclass
class Arrival:
    at: float  # time.time() when the server accepted the message
    complaint_id: str
    kind: str
    size: int


class _Handler:
    def __init__(self, box: Mailbox) -> None:
        self._box = box

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:  # noqa: N802
        raw = envelope.original_content or b""
        headers = raw.split(b"\r\n\r\n", 1)[0].decode("ascii", "replace")
        fields = {}
        for line in headers.split("\r\n"):
            name, sep, value = line.partition(":")
            if sep and name.lower().startswith("x-"):
                fields[name.lower()] = value.strip()
        self._box.note(Arrival(time.time(), fields.get("x-complaint-id", ""),
                               fields.get("x-letter-kind") or fields.get("x-alert-kind", ""), len(raw)))
        return "250 Message accepted for delivery"


class Mailbox:
    """An SMTP server on loopback that records when each letter arrived."""

    def __init__(self) -> None:
        self.port = free_port()
        self.arrivals: list[Arrival] = []
        self._lock = threading.Lock()
        self._controller = Controller(_Handler(self), hostname="127.0.0.1", port=self.port)

    def note(self, arrival: Arrival) -> None:
        with self._lock:
            self.arrivals.append(arrival)

    def since(self, index: int) -> list[Arrival]:
        with self._lock:
            return self.arrivals[index:]

    def __len__(self) -> int:
        with self._lock:
            return len(self.arrivals)

    def start(self) -> Mailbox:
        self._controller.start()
        return self

    def stop(self) -> None:
        self._controller.stop()


@dataclass
class Process:
    """A long-running child process (a worker) whose CPU time and peak RSS we read."""

    argv: list[str]
    env: dict[str, str]
    _popen: subprocess.Popen[bytes] | None = field(default=None, init=False)
    _log: typing.IO[bytes] = field(init=False)

    def start(self) -> Process:
        self._log = tempfile.TemporaryFile()
        self._popen = subprocess.Popen(self.argv, cwd=REPO, env=self.env, stdout=subprocess.DEVNULL,
                                       stderr=self._log, start_new_session=True)
        return self

    @property
    def pid(self) -> int:
        assert self._popen is not None
        return self._popen.pid

    def alive(self) -> bool:
        return self._popen is not None and self._popen.poll() is None

    def errors(self) -> str:
        """The end of what the process wrote to stderr."""
        self._log.seek(0)
        return self._log.read().decode(errors="replace")[-2000:]

    def cpu_seconds(self) -> float:
        times = psutil.Process(self.pid).cpu_times()
        return times.user + times.system

    def rss_bytes(self) -> int:
        return psutil.Process(self.pid).memory_info().rss

    def peak_rss_bytes(self) -> int:
        """VmHWM: the highest resident set size the process has had."""
        for line in Path(f"/proc/{self.pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
        return self.rss_bytes()

    def stop(self) -> None:
        terminate(self._popen, 30)


def terminate(process: subprocess.Popen[bytes] | None, timeout: float) -> None:
    """SIGTERM, then SIGKILL if the process is still there after ``timeout`` seconds."""
    if process is None or process.poll() is not None:
        return
    process.terminate()
    try:
        process.wait(timeout)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


def percentile(values: list[float], p: float) -> float:
    """Nearest-rank percentile (p in 0..100)."""
    if not values:
        return float("nan")
    ordered = sorted(values)
    rank = max(1, min(len(ordered), math.ceil(p / 100 * len(ordered))))
    return ordered[rank - 1]


def child_env(**overrides: str) -> dict[str, str]:
    # Nothing from the developer's shell that would change one side only (tracing, debug logs,
    # a metrics port two workers would fight over, tuning, another key file).
    env = {k: v for k, v in os.environ.items() if not k.startswith((
        "TEMPORAL_", "SMTP_", "DATABASE_", "LOG_", "METRICS_", "OTEL_", "WORKER_", "COMPLAINTS_"))}
    env.update(overrides)
    return env


async def wait_for_poller(client: Client, queue: str, worker: Process, timeout: float = 60) -> None:
    """Wait until ``worker`` polls ``queue`` for workflow tasks (it has finished starting)."""
    deadline = time.monotonic() + timeout
    request = DescribeTaskQueueRequest(namespace="default", task_queue=TaskQueue(name=queue),
                                       task_queue_type=TaskQueueType.TASK_QUEUE_TYPE_WORKFLOW)
    while time.monotonic() < deadline:
        if not worker.alive():
            raise RuntimeError(f"the worker exited:\n{worker.errors()}")
        if (await client.workflow_service.describe_task_queue(request)).pollers:
            return
        await asyncio.sleep(0.1)
    raise RuntimeError(f"no worker polls {queue}")

"""Session-scoped real servers for the whole suite.

- Temporal: the CLI dev server with per-workflow time skipping (the SDK's
  ``start_time_skipping_v2``). The Java time-skipping test server cannot hold
  the custom search attributes the workflow keeps current, so every workflow
  test runs here; each test fast-forwards its own workflow's clock.
- PostgreSQL: the embedded server from the ``pgserver`` wheel.
- SMTP: aiosmtpd, a real SMTP server that keeps what it receives.
- IMAP: pymap, a real IMAP server (UIDPLUS, MOVE) holding the info@ mailbox; each mailbox test
  reads folders of its own.

Each test gets its own task queue; workflows and mail are told apart by
complaint id, so tests share the servers without seeing each other.
"""

from __future__ import annotations

import socket
import sys
import tempfile
import uuid
from dataclasses import replace
from pathlib import Path
from typing import AsyncIterator, Iterator

import asyncpg
import pytest
import pytest_asyncio
from temporalio.client import Client
from temporalio.testing import TimeSkippingConfig, WorkflowEnvironment

from devstack.imap import LocalImap
from devstack.postgres import LocalPostgres
from devstack.smtp import MailCatcher
from infra.codec import new_key_entry, parse_keys
from infra.config import Settings
from infra.signing import SigningInterceptor
from infra.temporal_client import data_converter
from tests import staff
from tests.staff import Keyring
from worker import build_worker, create_pool, register_search_attributes

BIN = Path(sys.executable).parent
TEMPORAL_CLI = BIN / "temporal"
TIME_SKIPPING_FLAG = ["--dynamic-config-value", "frontend.WorkflowTimeSkippingEnabled=true"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _require(path: Path) -> str:
    if not path.exists():
        raise RuntimeError(f"{path} is missing: install the dev dependencies (make test does)")
    return str(path)


@pytest.fixture(scope="session")
def postgres() -> Iterator[LocalPostgres]:
    with tempfile.TemporaryDirectory(prefix="complaints-pg-") as tmp:
        server = LocalPostgres(Path(tmp) / "pgdata", free_port())
        server.start()
        try:
            yield server
        finally:
            server.stop()


@pytest.fixture(scope="session")
def imap() -> Iterator[LocalImap]:
    with tempfile.TemporaryDirectory(prefix="complaints-imap-") as tmp:
        with LocalImap(Path(tmp) / "imap.log", free_port()) as server:
            yield server


@pytest.fixture(scope="session")
def mail() -> Iterator[MailCatcher]:
    with MailCatcher(free_port()) as catcher:
        yield catcher


#: The session's encryption keys: "test-2" encrypts, "test-1" (an older key) still decrypts.
ENCRYPTION_KEYS = ",".join([new_key_entry("test-2"), new_key_entry("test-1")])


@pytest_asyncio.fixture(scope="session")
async def env(base_settings: Settings) -> AsyncIterator[WorkflowEnvironment]:
    environment = await WorkflowEnvironment.start_time_skipping_v2(
        ts_config=TimeSkippingConfig(enabled=False),
        dev_server_existing_path=_require(TEMPORAL_CLI),
        dev_server_extra_args=TIME_SKIPPING_FLAG,
        data_converter=data_converter(base_settings),
        interceptors=[SigningInterceptor(Keyring())],
    )
    await register_search_attributes(environment.client, environment.client.namespace)
    try:
        yield environment
    finally:
        await environment.shutdown()


@pytest.fixture(scope="session")
def base_settings(postgres: LocalPostgres, mail: MailCatcher) -> Settings:
    return Settings(database_url=postgres.url, smtp_host=mail.host, smtp_port=mail.port,
                    encryption_keys=parse_keys(ENCRYPTION_KEYS), staff_file=staff.REGISTER)


@pytest_asyncio.fixture(scope="session")
async def pool(base_settings: Settings) -> AsyncIterator[asyncpg.Pool]:
    p = await create_pool(base_settings)
    try:
        yield p
    finally:
        await p.close()


@pytest.fixture
def settings(base_settings: Settings) -> Settings:
    """The session's servers with a task queue of this test's own."""
    return replace(base_settings, task_queue=f"complaints-{uuid.uuid4()}")


@pytest.fixture
def client(env: WorkflowEnvironment) -> Client:
    return env.client


@pytest_asyncio.fixture
async def worker(env: WorkflowEnvironment, settings: Settings, pool: asyncpg.Pool) -> AsyncIterator[None]:
    """The real worker (real activities against PostgreSQL and SMTP) on this test's queue."""
    async with build_worker(env.client, settings, pool):
        yield

"""The info@ mailbox for tests: the corpus of real-world mails, folders of a test's own on the session's
IMAP server, and the worker with the mailbox workflow reading them."""

from __future__ import annotations

import asyncio
import uuid
from contextlib import asynccontextmanager
from dataclasses import replace
from datetime import datetime, timedelta, timezone
from email.utils import format_datetime
from pathlib import Path
from typing import AsyncIterator

import asyncpg
from temporalio.client import Client, WorkflowHandle

from complaints.models import MailboxWorkflowInput
from devstack.imap import LocalImap
from infra.config import Settings
from infra.imap import Mailbox
from tests.lifecycle import eventually
from worker import build_worker, ensure_mailbox_reader
from workflows.mailbox import MailboxWorkflow, workflow_id

CORPUS = Path(__file__).resolve().parent / "mail_corpus"


def corpus(name: str, **values: str) -> bytes:
    """A corpus mail with its placeholders filled in (a fresh Message-ID unless UNIQUE is given)."""
    raw = (CORPUS / name).read_bytes()
    values.setdefault("UNIQUE", uuid.uuid4().hex)
    values.setdefault("DATE", format_datetime(datetime.now(timezone.utc) - timedelta(hours=1)))
    for key, value in values.items():
        raw = raw.replace(b"{{" + key.encode() + b"}}", value.encode())
    assert b"{{" not in raw.split(b"\r\n\r\n", 1)[0], f"{name}: a placeholder in the headers is not filled"
    return raw


class Rig:
    """Three folders of this test's own (new, processed, quarantine) and the settings that read them."""

    def __init__(self, imap: LocalImap, settings: Settings, poll_seconds: int = 1, **mailbox: object) -> None:
        tag = uuid.uuid4().hex[:10]
        self.imap = imap
        self.mailbox = imap.mailbox(f"in-{tag}", processed_folder=f"verwerkt-{tag}",
                                    quarantine_folder=f"onverwerkt-{tag}", poll_seconds=poll_seconds, **mailbox)
        self.settings = replace(settings, mailbox=self.mailbox)

    def deliver(self, raw: bytes, folder: str | None = None, received_at: datetime | None = None) -> None:
        with Mailbox(self.mailbox) as box:
            box.ensure_folder(folder or self.mailbox.folder)
            box.append(folder or self.mailbox.folder, raw, received_at)

    def count(self, folder: str) -> int:
        with Mailbox(self.mailbox) as box:
            box.ensure_folder(folder)
            box.select(folder)
            return len(box.uids(10_000))

    def raw_mails(self, folder: str) -> list[bytes]:
        """The bytes of every mail in ``folder``, as the server holds them."""
        with Mailbox(self.mailbox) as box:
            box.select(folder)
            return [raw for uid in box.uids(10_000) if (raw := box.fetch(uid)) is not None]

    def counts(self) -> tuple[int, int, int]:
        """Mails in the new, processed and quarantine folders."""
        m = self.mailbox
        return self.count(m.folder), self.count(m.processed_folder), self.count(m.quarantine_folder)

    async def wait_counts(self, new: int, processed: int, quarantined: int, timeout: float = 60) -> None:
        async def check() -> bool:
            return await asyncio.to_thread(self.counts) == (new, processed, quarantined)
        await eventually(check, timeout=timeout, what=f"{new}/{processed}/{quarantined} mails in the folders")

    @asynccontextmanager
    async def reading(self, client: Client, pool: asyncpg.Pool,
                      settings: Settings | None = None) -> AsyncIterator[WorkflowHandle]:
        """A worker for these settings, with the mailbox workflow of the folder started."""
        settings = settings or self.settings
        async with build_worker(client, settings, pool):
            await ensure_mailbox_reader(client, settings)
            handle = client.get_workflow_handle_for(MailboxWorkflow.run, workflow_id(settings.mailbox.folder))
            try:
                yield handle
            finally:
                await handle.terminate("the test is over")

    async def mail_row(self, pool: asyncpg.Pool, message_id: str) -> asyncpg.Record | None:
        return await pool.fetchrow("SELECT * FROM mails WHERE mail_key = $1", message_id)


async def mailbox_counts(handle: WorkflowHandle) -> MailboxWorkflowInput:
    return await handle.query(MailboxWorkflow.counts)

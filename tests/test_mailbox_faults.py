"""The info@ mailbox under faults, with real processes and servers: nothing lost, nothing twice.

Each test counts what matters to people: complaints started, acknowledgements the SMTP server
received, mails in the folders and rows in the dossier.
"""

from __future__ import annotations

import asyncio
import os
import signal
from dataclasses import replace


from complaints.ids import complaint_id_for_reference
from complaints.models import LetterKind
from intake.mail import read_mail
from tests.cli import cli_env
from tests.imap_proxy import ImapProxy
from tests.lifecycle import letters, wait_letter, workflow_exists
from tests.mailbox_rig import Rig, corpus
from tests.processes import start_worker, stop
from worker import ensure_mailbox_reader
from workflows.mailbox import workflow_id


PEOPLE = ("webform-labelled.eml", "gmail-alternative.eml", "applemail-qp.eml", "iso-8859-1-encoded-words.eml",
          "outlook-html-winmail.eml")


def _ids(mails: list[bytes]) -> list[str]:
    return [complaint_id_for_reference(read_mail(raw).key) for raw in mails]


async def _acknowledged_once(client, mail, ids: list[str]) -> None:
    for complaint_id in ids:
        await wait_letter(mail, client.get_workflow_handle(complaint_id), LetterKind.ACKNOWLEDGEMENT)
    await asyncio.sleep(2)  # nothing more arrives
    for complaint_id in ids:
        assert len(letters(mail, client.get_workflow_handle(complaint_id), LetterKind.ACKNOWLEDGEMENT)) == 1


async def test_worker_killed_between_starting_the_complaint_and_moving_the_mail(env, settings, pool, mail, imap):
    """The worker dies the moment it asks the server to move the processed mail: the complaint was started
    but the mail is still in the folder. Another worker picks it up: one complaint, one acknowledgement."""
    rig = Rig(imap, settings)
    raw = corpus("webform-labelled.eml")
    rig.deliver(raw)
    proxy = await ImapProxy(imap.port).start()
    environ = cli_env(settings, env.client.service_client.config.target_host, SMTP_HOST=mail.host,
                      SMTP_PORT=str(mail.port), MAILBOX_URL=rig.imap.url(rig.mailbox.folder).replace(
                          f":{imap.port}/", f":{proxy.port}/"),
                      MAILBOX_PASSWORD=imap.password, MAILBOX_PROCESSED_FOLDER=rig.mailbox.processed_folder,
                      MAILBOX_QUARANTINE_FOLDER=rig.mailbox.quarantine_folder, MAILBOX_POLL_SECONDS="1")
    first = await start_worker(environ)
    killed = asyncio.Event()

    def kill_on_move(line: bytes) -> bool:
        if b" MOVE " in line.upper() and not killed.is_set():
            os.kill(first.pid, signal.SIGKILL)
            killed.set()
            return True
        return False

    proxy.on_command = kill_on_move
    [complaint_id] = _ids([raw])
    second = None
    try:
        await asyncio.wait_for(killed.wait(), 60)
        await first.wait()
        assert await workflow_exists(env.client, complaint_id)  # started before the kill ...
        assert rig.counts() == (1, 0, 0)  # ... and the mail not yet moved
        second = await start_worker({**environ, "MAILBOX_URL": rig.imap.url(rig.mailbox.folder)})
        await rig.wait_counts(0, 1, 0, timeout=120)  # after the dead worker's heartbeat timeout (30 s)
        await _acknowledged_once(env.client, mail, [complaint_id])
        assert await pool.fetchval("SELECT count(*) FROM mails WHERE complaint_id = $1", complaint_id) == 1
    finally:
        if second is not None:
            await stop(second)
        await env.client.get_workflow_handle(workflow_id(rig.mailbox.folder)).terminate("the test is over")
        await proxy.stop()


async def test_imap_connection_cut_mid_fetch_and_the_server_away_for_a_while(client, settings, pool, mail, imap):
    """The connection breaks half-way through a mail's bytes and the server refuses connections for 5 s
    (a restart, as the client sees it): every mail becomes one complaint, acknowledged once."""
    proxy = await ImapProxy(imap.port).start()
    rig = Rig(imap, settings)
    mails = [corpus(name) for name in PEOPLE[:3]]
    for raw in mails:
        rig.deliver(raw)
    proxy.cut_next_fetch_for = 5.0
    through_proxy = replace(rig.settings, mailbox=replace(rig.mailbox, port=proxy.port))
    try:
        async with rig.reading(client, pool, through_proxy):
            await rig.wait_counts(0, 3, 0, timeout=120)
            await _acknowledged_once(client, mail, _ids(mails))
        assert proxy.cuts == 1
    finally:
        await proxy.stop()


async def test_the_same_mail_in_two_folders_is_one_complaint(client, settings, pool, mail, imap):
    """Delivered to two folders, each read by its own mailbox workflow: one complaint, one acknowledgement."""
    rig, other = Rig(imap, settings), Rig(imap, settings)
    raw = corpus("gmail-alternative.eml")
    rig.deliver(raw)
    other.deliver(raw, folder=other.mailbox.folder)
    second = replace(rig.settings, mailbox=replace(rig.mailbox, folder=other.mailbox.folder))
    async with rig.reading(client, pool):
        await ensure_mailbox_reader(client, second)
        try:
            await rig.wait_counts(0, 2, 0)
            assert other.count(other.mailbox.folder) == 0
            await _acknowledged_once(client, mail, _ids([raw]))
        finally:
            await client.get_workflow_handle(workflow_id(other.mailbox.folder)).terminate("the test is over")
    assert await pool.fetchval("SELECT count(*) FROM mails WHERE mail_key = $1", read_mail(raw).message_id) == 1


async def test_two_workers_on_one_mailbox_still_one_complaint_per_mail(env, settings, pool, mail, imap):
    """Two worker processes, both started with the same MAILBOX_URL: one reader, one complaint per mail."""
    rig = Rig(imap, settings)
    mails = [corpus(name) for name in PEOPLE] + [corpus("no-message-id.eml")]
    for raw in mails:
        rig.deliver(raw)
    environ = cli_env(settings, env.client.service_client.config.target_host, SMTP_HOST=mail.host,
                      SMTP_PORT=str(mail.port), MAILBOX_URL=rig.imap.url(rig.mailbox.folder),
                      MAILBOX_PASSWORD=imap.password, MAILBOX_PROCESSED_FOLDER=rig.mailbox.processed_folder,
                      MAILBOX_QUARANTINE_FOLDER=rig.mailbox.quarantine_folder, MAILBOX_POLL_SECONDS="1")
    workers = await asyncio.gather(start_worker(environ), start_worker(environ))
    try:
        await rig.wait_counts(0, len(mails), 0, timeout=120)
        await _acknowledged_once(env.client, mail, _ids(mails))
        runs = [w async for w in env.client.list_workflows(f"WorkflowId = '{workflow_id(rig.mailbox.folder)}'")]
        assert len(runs) == 1  # one reader, however many workers
    finally:
        for worker in workers:
            await stop(worker)
        await env.client.get_workflow_handle(workflow_id(rig.mailbox.folder)).terminate("the test is over")

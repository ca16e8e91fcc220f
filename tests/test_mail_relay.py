"""A real mail relay's failures (aiosmtpd with faults injected): only a refused recipient makes a letter
undeliverable; a slow relay gets at most one more copy and never starves the dossier; a failing server
is said where operators look; alerts do not wait behind a letter that keeps failing."""

from __future__ import annotations

import asyncio
import logging
import uuid
from dataclasses import replace
from datetime import datetime, timedelta, timezone
from typing import Any

import asyncpg
import pytest
import pytest_asyncio
from temporalio.api.enums.v1 import EventType
from temporalio.client import WorkflowExecutionStatus
from temporalio.common import RetryPolicy
from temporalio.exceptions import ApplicationError
from temporalio.testing import ActivityEnvironment

import activities.outbox
import workflows.complaint
import workflows.policies
from activities.dossier import DossierActivities
from activities.letters import LetterTemplates
from activities.mail import MailActivities
from complaints import search_attributes as sa
from complaints.ids import sender_hash
from complaints.models import (
    AlertKind,
    ComplaintSubmission,
    CorrectContactInput,
    LetterBouncedInput,
    LetterKind,
    MessageKind,
    MessageReceivedInput,
    OpenDossierInput,
    Phase,
    ResendInput,
    ResolveInformallyInput,
    WithdrawInput,
)
from devstack.smtp import MailCatcher
from tests.conftest import free_port
from tests.factories import complaint_json
from tests.lifecycle import (
    decide,
    dossier_events,
    eventually,
    letters,
    run_after,
    start_formal,
    start_informal,
    started,
    wait_alert,
    wait_dossier,
    wait_letter,
    wait_view,
)
from tests.test_activities import RECEIVED, letter
from worker import build_worker
from workflows.complaint import ComplaintWorkflow


@pytest.fixture
def relay():
    with MailCatcher(free_port()) as catcher:
        yield catcher


def _mailer(pool: asyncpg.Pool, settings, relay: MailCatcher) -> MailActivities:
    return MailActivities(pool, replace(settings, smtp_host=relay.host, smtp_port=relay.port), LetterTemplates())


@pytest.fixture
def submission() -> ComplaintSubmission:
    return ComplaintSubmission.model_validate(complaint_json(received_at=RECEIVED.isoformat(),
                                                             submitted_on="2026-04-24"))


@pytest_asyncio.fixture
async def complaint_id(pool, submission) -> str:
    """A complaint's dossier row, for its letters."""
    one = f"complaint-{uuid.uuid4().hex[:16]}"
    await ActivityEnvironment().run(DossierActivities(pool).open_dossier,
                                    OpenDossierInput(complaint_id=one, submission=submission))
    return one


async def _row(pool, complaint_id: str) -> asyncpg.Record:
    return await pool.fetchrow("SELECT status, sent_at, unknown_outcomes, claimed_until FROM letters"
                               " WHERE complaint_id = $1", complaint_id)


def _set_policy(monkeypatch: pytest.MonkeyPatch, name: str, value: object) -> None:
    """Change a retry policy or pause for this test, where the complaint workflow reads it (its module is
    passed through the sandbox: it holds the policies it imported, worker.WORKFLOW_MODULES_PASSED_THROUGH)."""
    monkeypatch.setattr(workflows.policies, name, value)
    monkeypatch.setattr(workflows.complaint, name, value)


@pytest.mark.parametrize(("fault", "reply"), [
    ("refuse_mail_from", "530 5.7.0 Authentication required"),   # a rotated SMTP password
    ("refuse_mail_from", "550 5.7.1 Relaying denied"),
    ("refuse_data", "554 5.7.1 Message refused"),
])

async def test_only_a_refused_recipient_makes_a_letter_undeliverable(pool, settings, relay, complaint_id,
                                                                     fault: str, reply: str) -> None:
    setattr(relay, fault, reply)
    with pytest.raises(ApplicationError) as caught:
        await ActivityEnvironment().run(_mailer(pool, settings, relay).send_letter, letter(complaint_id))
    assert caught.value.type == "MailServerFailing" and not caught.value.non_retryable  # retried, not given up
    row = await _row(pool, complaint_id)
    assert row["status"] == "sending" and row["sent_at"] is None and row["claimed_until"] is None
    setattr(relay, fault, None)  # the server is fixed: the retry delivers it, once
    await ActivityEnvironment().run(_mailer(pool, settings, relay).send_letter, letter(complaint_id))
    assert len(relay.find(x_complaint_id=complaint_id)) == 1 and (await _row(pool, complaint_id))["status"] == "sent"


async def test_a_slow_relay_gets_at_most_one_more_copy_then_the_letter_waits_for_staff(
        pool, settings, relay, complaint_id, monkeypatch) -> None:
    """The relay takes the message but answers after the client gave up: unknown whether it took it. One
    more copy is sent; when that answer is lost too, the letter is uncertain and sent no third time."""
    monkeypatch.setattr(activities.outbox, "SMTP_TIMEOUT", 0.5)
    relay.delay_data_reply = 2.0
    mailer = _mailer(pool, settings, relay)
    for _ in range(2):
        with pytest.raises(ApplicationError) as caught:
            await ActivityEnvironment().run(mailer.send_letter, letter(complaint_id))
        assert caught.value.type == "MailOutcomeUnknown" and not caught.value.non_retryable
    with pytest.raises(ApplicationError) as caught:
        await ActivityEnvironment().run(mailer.send_letter, letter(complaint_id))
    assert caught.value.type == "MessageUncertain" and caught.value.non_retryable
    await asyncio.sleep(2.5)  # the relay's late answers
    copies = relay.find(x_complaint_id=complaint_id)
    assert len(copies) == 2 and len({m["Message-ID"] for m in copies}) == 1
    row = await _row(pool, complaint_id)
    assert (row["status"], row["unknown_outcomes"]) == ("uncertain", 2)


async def test_slow_sends_never_hold_the_dossiers_connections(pool, settings, relay, submission,
                                                              monkeypatch) -> None:
    """Six letters in a slow relay's hands, a pool of three connections: the dossier still answers."""
    monkeypatch.setattr(activities.outbox, "SMTP_TIMEOUT", 10.0)
    relay.delay_data_reply = 3.0
    small = await asyncpg.create_pool(settings.database_url, min_size=1, max_size=3)
    try:
        ids = [f"complaint-{uuid.uuid4().hex[:16]}" for _ in range(6)]
        for one in ids:
            await ActivityEnvironment().run(DossierActivities(pool).open_dossier,
                                            OpenDossierInput(complaint_id=one, submission=submission))
        mailer = _mailer(small, settings, relay)
        sends = [asyncio.ensure_future(ActivityEnvironment().run(mailer.send_letter, letter(cid))) for cid in ids]
        await eventually(lambda: len([m for m in relay.messages if m["X-Complaint-Id"] in ids]) == 6,
                         what="six letters in the relay's hands")
        assert await asyncio.wait_for(small.fetchval("SELECT count(*) FROM letters WHERE complaint_id = ANY($1)",
                                                     ids), 2.5) == 6
        assert not any(send.done() for send in sends), "the dossier answered only after the sends finished"
        await asyncio.gather(*sends)
    finally:
        await small.close()


async def test_a_failing_mail_server_is_said_where_operators_look_and_the_letter_goes_once_it_works(
        env, client, settings, pool, relay, monkeypatch, caplog) -> None:
    _set_policy(monkeypatch, "MAIL_RETRY", RetryPolicy(
        initial_interval=timedelta(milliseconds=200), maximum_interval=timedelta(milliseconds=200),
        maximum_attempts=2))
    relay.refuse_mail_from = "535 5.7.8 Authentication credentials invalid"
    failing = replace(settings, smtp_host=relay.host, smtp_port=relay.port)
    caplog.set_level(logging.ERROR)
    async with build_worker(client, failing, pool):
        handle = await start_formal(client, failing)
        view = await wait_view(handle, lambda v: v.mail_failing_since is not None, "the mail server noted failing")
        assert view.letters == [] and view.acknowledged_at is None  # not undeliverable: it waits
        attrs = await eventually(lambda: _open_alerts(handle), what="mail-server-failing in ComplaintOpenAlerts")
        assert "mail-server-failing" in attrs
        assert any("mail server keeps failing" in r.getMessage() and r.levelno == logging.ERROR
                   for r in caplog.records)
        relay.refuse_mail_from = None
        await env.fast_forward(handle, timedelta(minutes=11))
        await wait_letter(relay, handle, LetterKind.ACKNOWLEDGEMENT)
        view = await wait_view(handle, lambda v: v.mail_failing_since is None and v.acknowledged_at is not None)
        await eventually(lambda: _no_open_alerts(handle), what="the failing mail server cleared")
        await asyncio.sleep(1)
        assert len(letters(relay, handle, LetterKind.ACKNOWLEDGEMENT)) == 1


async def test_alerts_do_not_wait_behind_a_letter_that_keeps_failing(env, client, settings, pool, relay,
                                                                    monkeypatch) -> None:
    """The complainant's mail server keeps saying "try again later": the acknowledgement waits, but an
    alert to the director (a mail about the complaint arrived) goes out at once, in its own queue."""
    _set_policy(monkeypatch, "MAIL_RETRY", RetryPolicy(
        initial_interval=timedelta(milliseconds=200), maximum_interval=timedelta(milliseconds=200),
        maximum_attempts=3))
    address = f"traag-{uuid.uuid4().hex[:8]}@example.nl"
    relay.deferred_recipients.add(address)
    local = replace(settings, smtp_host=relay.host, smtp_port=relay.port)
    async with build_worker(client, local, pool):
        handle = await start_formal(client, local, complainant={
            "name": "Jan de Vries", "organisation": "Gemeente Delft", "email": address,
            "phone": "+31 6 12345678", "role": "customer"})
        await wait_view(handle, lambda v: v.mail_failing_since is not None, "the letter failing")
        await handle.execute_update(ComplaintWorkflow.receive_message, MessageReceivedInput(
            ref="0123456789abcdef", at=datetime.now(timezone.utc), kind=MessageKind.REPLY,
            sender=sender_hash("iemand@example.nl")))
        await wait_alert(relay, handle, AlertKind.MESSAGE_RECEIVED)
        assert letters(relay, handle, LetterKind.ACKNOWLEDGEMENT) == []
        relay.deferred_recipients.discard(address)
        await env.fast_forward(handle, timedelta(minutes=11))
        await wait_letter(relay, handle, LetterKind.ACKNOWLEDGEMENT)
        assert (await wait_view(handle, lambda v: v.acknowledged_at is not None)).mail_failing_since is None


async def test_the_dossier_keeps_up_while_a_decision_letter_waits_for_the_mail_server(
        env, client, settings, pool, relay, monkeypatch) -> None:
    """The decision letter keeps failing (the complainant's server says "try again later") while a mail about
    the complaint arrives and its alert goes out: the dossier records that mail and alert meanwhile, not
    only once the letter has gone (the letter took the decision to the dossier, nothing after it)."""
    _set_policy(monkeypatch, "MAIL_RETRY", RetryPolicy(
        initial_interval=timedelta(milliseconds=200), maximum_interval=timedelta(milliseconds=200),
        maximum_attempts=3))
    address = f"traag-{uuid.uuid4().hex[:8]}@example.nl"
    local = replace(settings, smtp_host=relay.host, smtp_port=relay.port)
    async with build_worker(client, local, pool):
        handle = await start_formal(client, local, complainant={
            "name": "Jan de Vries", "organisation": "Gemeente Delft", "email": address,
            "phone": "+31 6 12345678", "role": "customer"})
        await wait_letter(relay, handle, LetterKind.ACKNOWLEDGEMENT)
        await wait_view(handle, lambda v: v.acknowledged_at is not None)
        relay.deferred_recipients.add(address)
        try:
            await decide(handle)
            await wait_view(handle, lambda v: v.mail_failing_since is not None, "the decision letter failing")
            await wait_dossier(pool, handle, phase="decided")
            await handle.execute_update(ComplaintWorkflow.receive_message, MessageReceivedInput(
                ref="0123456789abcdef", at=datetime.now(timezone.utc), kind=MessageKind.REPLY,
                sender=sender_hash("iemand@example.nl")))
            await wait_alert(relay, handle, AlertKind.MESSAGE_RECEIVED)
            await eventually(lambda: _dossier_has(pool, handle, "alert message-received"),
                             what="the mail and its alert in the dossier while the letter waits")
            assert letters(relay, handle, LetterKind.DECISION) == []
        finally:
            relay.deferred_recipients.discard(address)
        await env.fast_forward(handle, timedelta(minutes=11))
        await wait_letter(relay, handle, LetterKind.DECISION)


async def _dossier_has(pool, handle, action: str) -> bool:
    return action in [e["action"] for e in await dossier_events(pool, handle)]


async def _open_alerts(handle) -> list[str] | None:
    return (await handle.describe()).typed_search_attributes.get(sa.OPEN_ALERTS)


async def _no_open_alerts(handle) -> bool:
    return not await _open_alerts(handle)


async def test_a_letter_that_keeps_failing_does_not_keep_the_complaint_from_closing(
        env, client, settings, pool, relay, monkeypatch) -> None:
    """The mail server fails while a complaint is withdrawn: the complaint closes and continues into its
    retention run at once, with the letter kept in the dossier; once the server works, that run sends it."""
    local = replace(settings, smtp_host=relay.host, smtp_port=relay.port)
    async with build_worker(client, local, pool):
        handle, _ = await _withdrawn_while_the_mail_server_fails(client, local, relay, monkeypatch)
        staged = await pool.fetchrow("SELECT status, body, message_id FROM letters WHERE complaint_id = $1"
                                     " AND kind = 'withdrawal'", handle.id)
        assert staged["status"] == "sending" and "Ingetrokken." in staged["body"]
        view = await handle.query(ComplaintWorkflow.status)
        assert view.phase is Phase.CLOSED and view.letters == [] and view.mail_failing_since is not None

        relay.refuse_mail_from = None
        await env.fast_forward(handle, timedelta(minutes=11))
        [letter] = await wait_letter(relay, handle, LetterKind.WITHDRAWAL)
        assert letter["Message-ID"] == staged["message_id"] and "Ingetrokken." in letter.get_content()
        assert letter["To"].addresses[0].addr_spec == "jan.devries@example.nl"
        view = await wait_view(handle, lambda v: [(r.kind, r.status) for r in v.letters] == [
            (LetterKind.WITHDRAWAL, "sent")], "the letter sent by the retention run")
        assert view.mail_failing_since is None


async def test_a_letter_that_keeps_failing_does_not_keep_the_dossier_from_being_erased_on_time(
        env, client, settings, pool, relay, monkeypatch) -> None:
    _set_policy(monkeypatch, "MAIL_SERVER_PAUSE", timedelta(days=100))
    local = replace(settings, smtp_host=relay.host, smtp_port=relay.port)
    async with build_worker(client, local, pool):
        handle, view = await _withdrawn_while_the_mail_server_fails(client, local, relay, monkeypatch)
        purge_on = view.deadlines.purge_on

        async def erased() -> bool:
            if (await handle.describe()).status == WorkflowExecutionStatus.COMPLETED:
                return True
            await env.fast_forward(handle, timedelta(days=40))
            return False
        await eventually(erased, timeout=120, interval=0.5, what="the erasure")
        result = await handle.result()
        assert result.purged_at is not None and result.purged_at < purge_on + timedelta(days=41)
        row = await pool.fetchrow("SELECT phase, complainant_name FROM complaints WHERE complaint_id = $1",
                                  handle.id)
        assert (row["phase"], row["complainant_name"]) == ("purged", None)
        assert await pool.fetchval("SELECT body FROM letters WHERE complaint_id = $1", handle.id) is None
        view = await handle.query(ComplaintWorkflow.status)
        assert [(r.kind, r.status) for r in view.letters] == [(LetterKind.WITHDRAWAL, "failed")]
        assert "letter withdrawal not sent" in [h.action for h in view.history]
        assert letters(relay, handle, LetterKind.WITHDRAWAL) == []



async def _withdrawn_while_the_mail_server_fails(client, settings, relay, monkeypatch) -> tuple[Any, Any]:
    """An informal complaint withdrawn while the relay refuses every sender (two quick attempts a
    message): returns its handle and the view the withdrawal answered, once its retention run runs."""
    _set_policy(monkeypatch, "MAIL_RETRY", RetryPolicy(
        initial_interval=timedelta(milliseconds=200), maximum_interval=timedelta(milliseconds=200),
        maximum_attempts=2))
    handle = await start_informal(client, settings)
    await started(handle)
    first_run = (await handle.describe()).run_id
    relay.refuse_mail_from = "421 4.3.2 Service not available"
    view = await handle.execute_update(ComplaintWorkflow.withdraw, WithdrawInput(by="Marieke Jansen",
                                                                                 reason="Ingetrokken."))
    await eventually(lambda: run_after(client, handle.id, first_run), what="the retention run")
    return handle, view


async def test_a_letter_in_flight_when_the_run_continues_as_new_goes_out_once(
        env, client, settings, pool, relay) -> None:
    """Staff correct the address of a closed complaint and resend its letter while the relay is slow: the
    run told the address continues as new with the send still in flight. No workflow task fails on the
    way, and the copy goes out once."""
    local = replace(settings, smtp_host=relay.host, smtp_port=relay.port)
    async with build_worker(client, local, pool):
        handle = await start_informal(client, local)
        await started(handle)
        first_run = (await handle.describe()).run_id
        await handle.execute_update(ComplaintWorkflow.resolve_informally, ResolveInformallyInput(
            by="Marieke Jansen", note="Opgelost."))
        [sent] = await wait_letter(relay, handle, LetterKind.INFORMAL_RESOLUTION)
        retention_run = await eventually(lambda: run_after(client, handle.id, first_run), what="the retention run")
        await handle.execute_update(ComplaintWorkflow.letter_bounced, LetterBouncedInput(
            ref="0123456789abcdef", at=datetime.now(timezone.utc), message_id=str(sent["Message-ID"]),
            reason="5.1.1"))
        relay.delay_data_reply = 5.0
        # Hold the dossier row, so that the new address is written only once the copy is on its way.
        async with pool.acquire() as conn, conn.transaction():
            await conn.execute("SELECT 1 FROM complaints WHERE complaint_id = $1 FOR NO KEY UPDATE", handle.id)
            await handle.execute_update(ComplaintWorkflow.correct_contact, CorrectContactInput(
                by="Marieke Jansen", email="jan.de.vries@example.nl"))
            await handle.execute_update(ComplaintWorkflow.resend, ResendInput(
                by="Marieke Jansen", kind=LetterKind.INFORMAL_RESOLUTION))
            await eventually(lambda: len(letters(relay, handle, LetterKind.INFORMAL_RESOLUTION)) == 2,
                             what="the copy handed to the (slow) relay")
        latest = await eventually(lambda: run_after(client, handle.id, retention_run), what="the next run")
        # It did not wait for the slow relay: the send was still in flight, and was let go.
        told = (await client.get_workflow_handle(handle.id, run_id=retention_run).fetch_history()).events
        assert EventType.EVENT_TYPE_ACTIVITY_TASK_CANCEL_REQUESTED in [e.event_type for e in told]
        view = await wait_view(handle, lambda v: [(r.sequence, r.status) for r in v.letters] == [
            (1, "failed"), (2, "sent")], "the copy recorded by the next run", timeout=30)
        assert view.phase is Phase.CLOSED
        await asyncio.sleep(6)  # the slow relay's answer, and any retry after it
        assert len(letters(relay, handle, LetterKind.INFORMAL_RESOLUTION)) == 2
        for run in (first_run, retention_run, latest):
            events = (await client.get_workflow_handle(handle.id, run_id=run).fetch_history()).events
            assert not [e for e in events if e.event_type == EventType.EVENT_TYPE_WORKFLOW_TASK_FAILED], run

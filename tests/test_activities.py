"""The activities against the real servers: PostgreSQL from the wheel, SMTP via aiosmtpd."""

from __future__ import annotations

import asyncio
import uuid
from dataclasses import replace
from datetime import date, datetime, timedelta, timezone

import asyncpg
import pytest
from temporalio.exceptions import ApplicationError
from temporalio.testing import ActivityEnvironment

from activities.dossier import DossierActivities
from activities.letters import LetterTemplates
from activities.mail import MailActivities
from complaints.models import (
    AlertKind,
    ComplaintSubmission,
    ComplaintView,
    Decision,
    DossierFacts,
    HistoryEntry,
    LetterKind,
    OpenDossierInput,
    Outcome,
    Phase,
    PurgeDossierInput,
    PurgeResult,
    Recipient,
    SendAlertInput,
    SendLetterInput,
)
from devstack.smtp import MailCatcher
from dossier.schema import apply_migrations
from infra.config import Settings, default_catalogue
from tests.conftest import free_port
from tests.factories import complaint_json

RECEIVED = datetime(2026, 4, 24, 10, tzinfo=timezone.utc)


@pytest.fixture
def complaint_id() -> str:
    return f"complaint-{uuid.uuid4().hex[:16]}"


@pytest.fixture
def submission() -> ComplaintSubmission:
    return ComplaintSubmission.model_validate(complaint_json(received_at=RECEIVED.isoformat(),
                                                             submitted_on="2026-04-24"))


@pytest.fixture
async def dossier(pool: asyncpg.Pool, complaint_id: str, submission: ComplaintSubmission) -> DossierActivities:
    activities = DossierActivities(pool, default_catalogue())
    await ActivityEnvironment().run(activities.open_dossier, OpenDossierInput(
        complaint_id=complaint_id, submission=submission, product_code="training-agile"))
    return activities


def letter(complaint_id: str, kind: LetterKind = LetterKind.ACKNOWLEDGEMENT, **fields) -> SendLetterInput:
    return SendLetterInput(
        complaint_id=complaint_id, kind=kind, sequence=1,
        recipient=Recipient(name="Jan de Vries", email="jan.devries@example.nl"),
        product="Training Agile", submitted_on=date(2026, 4, 24), received_at=RECEIVED,
        acknowledge_by=datetime(2026, 4, 30, 21, 59, 59, tzinfo=timezone.utc),
        resolve_by=RECEIVED + timedelta(days=28), **fields)


def mailer(pool: asyncpg.Pool, settings: Settings) -> MailActivities:
    return MailActivities(pool, settings, LetterTemplates())


async def test_migrations_are_idempotent(pool: asyncpg.Pool) -> None:
    async with pool.acquire() as conn:
        assert await apply_migrations(conn) == 0
        assert await conn.fetchval("SELECT count(*) FROM schema_migrations") >= 1


async def test_a_letter_is_sent_once_with_its_headers_and_kept_in_the_dossier(
        pool, settings, mail, dossier, complaint_id) -> None:
    sent = await ActivityEnvironment().run(mailer(pool, settings).send_letter, letter(complaint_id))
    [msg] = mail.find(x_complaint_id=complaint_id)
    assert msg["X-Letter-Kind"] == "acknowledgement"
    assert msg["Message-ID"] == sent.message_id == f"<{complaint_id}.acknowledgement.1@level-up.nl>"
    assert complaint_id in msg["Subject"]
    assert msg["To"].addresses[0].addr_spec == "jan.devries@example.nl"
    body = msg.get_content()
    assert "Geachte Jan de Vries" in body
    assert "22 mei 2026" in body  # the resolution term, the Dutch long way
    stored = await pool.fetchrow("SELECT status, body FROM letters WHERE complaint_id = $1", complaint_id)
    assert stored["status"] == "sent"
    assert stored["body"].split() == body.split()


async def test_a_retried_letter_activity_sends_one_message(pool, settings, mail, dossier, complaint_id) -> None:
    activities = mailer(pool, settings)
    first = await ActivityEnvironment().run(activities.send_letter, letter(complaint_id))
    again = await ActivityEnvironment().run(activities.send_letter, letter(complaint_id))
    racing = await asyncio.gather(*(ActivityEnvironment().run(activities.send_letter, letter(complaint_id))
                                    for _ in range(3)))
    assert len(mail.find(x_complaint_id=complaint_id)) == 1
    assert {first.message_id, again.message_id, *(r.message_id for r in racing)} == {first.message_id}
    assert again.sent_at == first.sent_at


async def test_concurrent_first_attempts_send_one_message(pool, settings, mail, dossier, complaint_id) -> None:
    activities = mailer(pool, settings)
    await asyncio.gather(*(ActivityEnvironment().run(activities.send_letter,
                                                     letter(complaint_id, LetterKind.DECISION,
                                                            outcome=Outcome.UPHELD, motivation="Terecht."))
                           for _ in range(4)))
    [msg] = mail.find(x_complaint_id=complaint_id)
    assert "uw klacht is gegrond" in msg.get_content()


async def test_a_refused_recipient_is_a_permanent_failure_recorded_in_the_dossier(
        pool, settings, mail, dossier, complaint_id) -> None:
    mail.refused_recipients.add("kapot@example.nl")
    bad = letter(complaint_id).model_copy(update={"recipient": Recipient(name="X", email="kapot@example.nl")})
    with pytest.raises(ApplicationError) as caught:
        await ActivityEnvironment().run(mailer(pool, settings).send_letter, bad)
    assert caught.value.non_retryable and caught.value.type == "LetterUndeliverable"
    row = await pool.fetchrow("SELECT status, error FROM letters WHERE complaint_id = $1", complaint_id)
    assert row["status"] == "failed" and "550" in row["error"]
    assert mail.find(x_complaint_id=complaint_id) == []


async def test_smtp_down_is_a_retryable_error_and_nothing_is_marked_sent(
        pool, settings, dossier, complaint_id) -> None:
    down = replace(settings, smtp_port=free_port())
    with pytest.raises(Exception) as caught:
        await ActivityEnvironment().run(mailer(pool, down).send_letter, letter(complaint_id))
    assert not (isinstance(caught.value, ApplicationError) and caught.value.non_retryable)
    # The server comes back: the retry delivers it, once.
    with MailCatcher(down.smtp_port) as back:
        await ActivityEnvironment().run(mailer(pool, down).send_letter, letter(complaint_id))
        await ActivityEnvironment().run(mailer(pool, down).send_letter, letter(complaint_id))
        assert len(back.find(x_complaint_id=complaint_id)) == 1


async def test_alerts_go_to_the_director_once_without_personal_data(
        pool, settings, mail, dossier, complaint_id) -> None:
    alert = SendAlertInput(complaint_id=complaint_id, kind=AlertKind.ACKNOWLEDGEMENT_OVERDUE, sequence=1,
                           product="training-agile", phase=Phase.FORMAL,
                           deadline=datetime(2026, 4, 30, 21, 59, 59, tzinfo=timezone.utc))
    activities = mailer(pool, settings)
    await ActivityEnvironment().run(activities.send_alert, alert)
    await ActivityEnvironment().run(activities.send_alert, alert)
    [msg] = mail.find(x_complaint_id=complaint_id)
    assert msg["X-Alert-Kind"] == "acknowledgement-overdue"
    assert msg["To"].addresses[0].addr_spec == settings.director_email
    text = msg.as_string()
    for personal in ("Jan de Vries", "jan.devries", "Gemeente Delft", "12345678", "trainer"):
        assert personal not in text
    assert "30 april 2026" in msg.get_content()


async def test_non_ascii_names_are_encoded_in_headers(pool, settings, mail, dossier, complaint_id) -> None:
    odd = letter(complaint_id).model_copy(update={"recipient": Recipient(
        name='Zoë "de" Vries 🙂 <script>', email="zoe@example.nl")})
    await ActivityEnvironment().run(mailer(pool, settings).send_letter, odd)
    [msg] = mail.find(x_complaint_id=complaint_id)
    assert msg["To"].addresses[0].display_name == 'Zoë "de" Vries 🙂 <script>'
    raw_to = [line for line in msg.as_string().splitlines() if line.startswith("To:")][0]
    assert "=?utf-8?" in raw_to.lower()


async def test_the_dossier_keeps_the_newest_state_and_purging_erases_personal_data(
        pool, dossier, complaint_id, submission) -> None:
    view = ComplaintView(complaint_id=complaint_id, phase=Phase.CLOSED, outcome=Outcome.WITHDRAWN,
                         route=submission.route, channel=submission.channel, product="training-agile",
                         product_text=submission.product, product_is_code=True,
                         received_at=RECEIVED, closed_at=RECEIVED + timedelta(days=3))
    env = ActivityEnvironment()
    await env.run(dossier.update_dossier, DossierFacts(version=5, view=view))
    stale = view.model_copy(update={"phase": Phase.FORMAL, "outcome": None})
    await env.run(dossier.update_dossier, DossierFacts(version=3, view=stale))
    row = await pool.fetchrow("SELECT phase, outcome FROM complaints WHERE complaint_id = $1", complaint_id)
    assert (row["phase"], row["outcome"]) == ("closed", "withdrawn")

    first = await env.run(dossier.purge_dossier, PurgeDossierInput(complaint_id=complaint_id))
    again = await env.run(dossier.purge_dossier, PurgeDossierInput(complaint_id=complaint_id))
    assert first.purged_at == again.purged_at
    row = await pool.fetchrow("SELECT * FROM complaints WHERE complaint_id = $1", complaint_id)
    for personal in ("complainant_name", "complainant_organisation", "complainant_email",
                     "complainant_phone", "description", "motivation", "reference", "product_text"):
        assert row[personal] is None, personal
    assert (row["product"], row["outcome"], row["phase"]) == ("training-agile", "withdrawn", "purged")
    assert row["received_at"] == RECEIVED


async def test_purging_keeps_one_erasure_record_and_one_purged_event_without_personal_data(
        pool, settings, mail, dossier, complaint_id, submission) -> None:
    await ActivityEnvironment().run(mailer(pool, settings).send_letter, letter(complaint_id))
    view = ComplaintView(
        complaint_id=complaint_id, phase=Phase.CLOSED, outcome=Outcome.UPHELD, route=submission.route,
        channel=submission.channel, product=submission.product, received_at=RECEIVED,
        decision=Decision(outcome=Outcome.UPHELD, motivation="Jan de Vries heeft gelijk.", at=RECEIVED,
                          within_term=True),
        history=[HistoryEntry(at=RECEIVED, action="submitted", by="intake", note="via email, route formal"),
                 HistoryEntry(at=RECEIVED, action="alert acknowledgement-overdue", by="system"),
                 HistoryEntry(at=RECEIVED, action="decide", by="anna", note="upheld: Jan de Vries heeft gelijk.")])
    env = ActivityEnvironment()
    await env.run(dossier.update_dossier, DossierFacts(version=1, view=view))

    first = await env.run(dossier.purge_dossier, PurgeDossierInput(complaint_id=complaint_id))
    assert first.erased_at == first.purged_at
    assert first.fields == ["complainant_name", "complainant_organisation", "complainant_email",
                            "complainant_phone", "reference", "description", "motivation", "decision_motivation",
                            "product_text"]
    assert (first.letters_erased, first.notes_erased, first.reason) == (1, 2, "retention year ended")

    # A retried purge returns the same record and writes nothing new.
    again = await env.run(dossier.purge_dossier, PurgeDossierInput(complaint_id=complaint_id))
    assert again == first
    [record] = await pool.fetch("SELECT * FROM erasures WHERE complaint_id = $1", complaint_id)
    assert record["erased_at"] == first.erased_at and record["fields"] == first.fields
    kept = repr(dict(record)) + first.model_dump_json()
    for personal in ("Jan de Vries", "jan.devries", "Gemeente Delft", "12345678", "trainer", "gelijk", "@mail"):
        assert personal not in kept, personal

    events = await pool.fetch("SELECT sequence, action, actor, note, at FROM complaint_events"
                              " WHERE complaint_id = $1 ORDER BY sequence", complaint_id)
    assert [(e["sequence"], e["action"], e["actor"]) for e in events] == [
        (1, "submitted", "intake"), (2, "alert acknowledgement-overdue", "system"), (3, "decide", "anna"),
        (4, "purged", "system")]
    assert [e["note"] for e in events] == [None] * 4
    assert events[-1]["at"] == first.erased_at
    stored = await pool.fetchrow("SELECT recipient, body, error, status FROM letters WHERE complaint_id = $1",
                                 complaint_id)
    assert (stored["recipient"], stored["body"], stored["error"], stored["status"]) == (None, None, None, "sent")
    row = await pool.fetchrow("SELECT phase, purged_at FROM complaints WHERE complaint_id = $1", complaint_id)
    assert (row["phase"], row["purged_at"]) == ("purged", first.erased_at)


async def test_old_purge_results_without_the_erasure_record_still_read() -> None:
    """Workflows that purged before the record existed replay their result: purged_at alone."""
    old = PurgeResult.model_validate({"purged_at": "2027-05-01T10:00:00+00:00"})
    assert old.erased_at == old.purged_at and old.fields == [] and old.reason is None

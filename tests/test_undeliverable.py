"""A letter the mail server refuses for good: alert, then staff correct the address and resend."""

from __future__ import annotations

import uuid
from datetime import datetime, timezone

from temporalio.api.enums.v1 import EventType
from temporalio.client import Client

from complaints import search_attributes as sa
from complaints.models import (
    AlertKind,
    LetterBouncedInput,
    LetterKind,
    Phase,
    ResolveInformallyInput,
    WithdrawInput,
)
from infra.codec import EncryptionCodec
from tests.cli import cli_env, run_cli
from tests.lifecycle import (
    eventually,
    letters,
    run_after,
    start_formal,
    start_informal,
    started,
    status,
    wait_alert,
    wait_letter,
    wait_view,
)
from tests.test_confidentiality import decrypted_history
from workflows.complaint import ComplaintWorkflow

STAFF = "Marieke Jansen"


async def test_staff_correct_the_address_and_resend_the_refused_letter(env, client, settings, worker, mail, pool):
    bad = f"bestaat-niet-{uuid.uuid4().hex[:8]}@example.nl"
    mail.refused_recipients.add(bad)
    try:
        handle = await start_formal(client, settings, complainant={
            "name": "Jan de Vries", "organisation": "Gemeente Delft", "email": bad,
            "phone": "+31 6 12345678", "role": "customer"})
        await wait_alert(mail, handle, AlertKind.LETTER_UNDELIVERABLE)
        await wait_view(handle, lambda v: bool(v.letters) and v.letters[0].status == "failed")
    finally:
        mail.refused_recipients.discard(bad)
    cli = cli_env(settings, env.client.service_client.config.target_host, staff="Marieke Jansen")

    nothing = await run_cli("admin.py", "resend", handle.id, "--kind", "decision", env=cli)
    assert nothing.code == 3 and "no undelivered decision letter" in nothing.err

    good = f"jan.devries-{uuid.uuid4().hex[:8]}@example.nl"
    corrected = await run_cli("admin.py", "correct-contact", handle.id, "--email", good, env=cli)
    assert corrected.code == 0, corrected.err
    resent = await run_cli("admin.py", "resend", handle.id, "--kind", "acknowledgement", env=cli)
    assert resent.code == 0, resent.err

    [letter] = await wait_letter(mail, handle, LetterKind.ACKNOWLEDGEMENT)
    assert letter["To"].addresses[0].addr_spec == good
    view = await wait_view(handle, lambda v: v.acknowledged_at is not None)
    assert [(l.sequence, l.status) for l in view.letters] == [(1, "failed"), (2, "sent")]
    assert [h.action for h in view.history][-2:] == ["correct-contact", "resend"]
    assert view.history[-1].by == "Marieke Jansen"
    assert await eventually(lambda: _dossier_email(pool, handle.id, good))
    # The undeliverable alert's cause is gone; operators no longer see it as open.
    assert await eventually(lambda: _open_alerts_without_undeliverable(handle))
    again = await run_cli("admin.py", "resend", handle.id, "--kind", "acknowledgement", env=cli)
    assert again.code == 3  # delivered now: nothing to resend
    assert len(mail.find(x_complaint_id=handle.id, x_letter_kind="acknowledgement")) == 1
    assert (await status(handle)).phase.value == "formal"


async def _dossier_email(pool, complaint_id: str, email: str) -> bool:
    return await pool.fetchval("SELECT complainant_email FROM complaints WHERE complaint_id = $1",
                               complaint_id) == email


async def _open_alerts_without_undeliverable(handle) -> bool:
    open_alerts = (await handle.describe()).typed_search_attributes.get(sa.OPEN_ALERTS) or []
    return "letter-undeliverable" not in open_alerts


async def test_a_closing_letter_that_bounces_is_corrected_and_sent_during_the_retention_year(
        env, client, settings, worker, mail, pool):
    """The decision-closing letter goes out, the complaint closes and continues into its retention run;
    then the bounce arrives. Staff can still correct the address and resend it, the open alert stays
    until it has gone out, and the run that was told the new address is left behind (its successor
    holds no personal data)."""
    handle = await start_informal(client, settings)
    await started(handle)
    first_run = (await handle.describe()).run_id
    await handle.execute_update(ComplaintWorkflow.resolve_informally, ResolveInformallyInput(
        by=STAFF, note="Nieuwe trainingsdatum afgesproken."))
    [sent] = await wait_letter(mail, handle, LetterKind.INFORMAL_RESOLUTION)
    retention_run = await eventually(lambda: run_after(client, handle.id, first_run), what="the retention run")

    await handle.execute_update(ComplaintWorkflow.letter_bounced, LetterBouncedInput(
        ref="0123456789abcdef", at=datetime.now(timezone.utc), message_id=str(sent["Message-ID"]),
        reason="5.1.1"))
    await wait_alert(mail, handle, AlertKind.LETTER_UNDELIVERABLE)
    assert "letter-undeliverable" in await eventually(lambda: _open_alerts(handle), what="the open alert")

    cli = cli_env(settings, env.client.service_client.config.target_host, staff=STAFF)
    good = f"jan.devries-{uuid.uuid4().hex[:8]}@example.nl"
    corrected = await run_cli("admin.py", "correct-contact", handle.id, "--email", good, env=cli)
    assert corrected.code == 0, corrected.err
    resent = await run_cli("admin.py", "resend", handle.id, "--kind", "informal-resolution", env=cli)
    assert resent.code == 0, resent.err

    [_, again] = await wait_letter(mail, handle, LetterKind.INFORMAL_RESOLUTION, count=2)
    assert again["To"].addresses[0].addr_spec == good
    assert again.get_content() == sent.get_content()  # the same letter, as the dossier keeps it
    assert again["Message-ID"] != sent["Message-ID"]
    assert await eventually(lambda: _open_alerts_without_undeliverable(handle))
    view = await wait_view(handle, lambda v: [(r.sequence, r.status) for r in v.letters] == [
        (1, "failed"), (2, "sent")], "the letter sent again")
    assert view.phase is Phase.CLOSED and [h.action for h in view.history][-2:] == ["correct-contact", "resend"]
    assert await eventually(lambda: _dossier_email(pool, handle.id, good))

    # The run that was told the address continued as new; the run now waiting holds none of it.
    latest = await eventually(lambda: run_after(client, handle.id, retention_run), what="a run without it")
    raw = await Client.connect(client.service_client.config.target_host, namespace=client.namespace)
    codec = EncryptionCodec(settings.encryption_keys)
    assert good in await decrypted_history(raw, codec, handle.id, retention_run)
    assert good not in await decrypted_history(raw, codec, handle.id, latest)

    # It continued as new cleanly, even with a letter in flight (no workflow task failed on the way).
    for run in (first_run, retention_run, latest):
        events = (await client.get_workflow_handle(handle.id, run_id=run).fetch_history()).events
        assert not [e for e in events if e.event_type == EventType.EVENT_TYPE_WORKFLOW_TASK_FAILED], run

    nothing = await run_cli("admin.py", "resend", handle.id, "--kind", "informal-resolution", env=cli)
    assert nothing.code == 3 and "its closing letter was delivered" in nothing.err
    assert len(letters(mail, handle, LetterKind.INFORMAL_RESOLUTION)) == 2


async def test_a_closing_letter_refused_at_once_still_lets_the_complaint_close_and_is_resent(
        env, client, settings, worker, mail, pool):
    bad = f"bestaat-niet-{uuid.uuid4().hex[:8]}@example.nl"
    handle = await start_formal(client, settings, complainant={
        "name": "Jan de Vries", "organisation": "Gemeente Delft", "email": bad,
        "phone": "+31 6 12345678", "role": "customer"})
    await wait_view(handle, lambda v: v.acknowledged_at is not None)
    mail.refused_recipients.add(bad)
    try:
        await handle.execute_update(ComplaintWorkflow.withdraw, WithdrawInput(by=STAFF, reason="Ingetrokken."))
        await wait_alert(mail, handle, AlertKind.LETTER_UNDELIVERABLE)
    finally:
        mail.refused_recipients.discard(bad)
    view = await wait_view(handle, lambda v: v.phase is Phase.CLOSED and bool(_withdrawals(v)))
    assert _withdrawals(view) == [(1, "failed")]
    assert "letter-undeliverable" in await eventually(lambda: _open_alerts(handle), what="the open alert")

    cli = cli_env(settings, env.client.service_client.config.target_host, staff=STAFF)
    good = f"jan.devries-{uuid.uuid4().hex[:8]}@example.nl"
    assert (await run_cli("admin.py", "correct-contact", handle.id, "--email", good, env=cli)).code == 0
    assert (await run_cli("admin.py", "resend", handle.id, "--kind", "withdrawal", env=cli)).code == 0
    [letter] = await wait_letter(mail, handle, LetterKind.WITHDRAWAL)
    assert letter["To"].addresses[0].addr_spec == good and "Ingetrokken." in letter.get_content()
    view = await wait_view(handle, lambda v: _withdrawals(v) == [(1, "failed"), (2, "sent")])
    assert await eventually(lambda: _open_alerts_without_undeliverable(handle))


def _withdrawals(view) -> list[tuple[int, str]]:
    return [(r.sequence, r.status) for r in view.letters if r.kind is LetterKind.WITHDRAWAL]



async def _open_alerts(handle) -> list[str] | None:
    return (await handle.describe()).typed_search_attributes.get(sa.OPEN_ALERTS)

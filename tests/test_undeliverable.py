"""A letter the mail server refuses for good: alert, then staff correct the address and resend."""

from __future__ import annotations

import uuid

from complaints import search_attributes as sa
from complaints.models import AlertKind, LetterKind
from tests.cli import cli_env, run_cli
from tests.lifecycle import eventually, start_formal, status, wait_alert, wait_letter, wait_view


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
    cli = cli_env(settings, env.client.service_client.config.target_host, COMPLAINTS_STAFF="Marieke Jansen")

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

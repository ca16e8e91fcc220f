"""The info@ mailbox as the front door, against a real IMAP server (pymap), Temporal, PostgreSQL and SMTP:
every kind of mail of the corpus gives the outcome the procedure asks for."""

from __future__ import annotations

import hashlib
from datetime import datetime, timedelta, timezone


from complaints import search_attributes as sa
from complaints.ids import complaint_id_for_reference
from complaints.models import AlertKind, LetterKind, Phase
from intake.mail import read_mail
from tests.lifecycle import eventually, status, wait_alert, wait_letter, wait_view, workflow_exists
from tests.mailbox_rig import Rig, corpus, mailbox_counts


def _message_id(raw: bytes) -> str:
    found = read_mail(raw).message_id
    assert found
    return found


async def test_a_website_form_mail_becomes_a_complete_formal_complaint_answered_in_its_thread(
        client, settings, pool, mail, imap):
    rig = Rig(imap, settings)
    raw = corpus("webform-labelled.eml")
    received = datetime.now(timezone.utc).replace(microsecond=0) - timedelta(minutes=30)
    rig.deliver(raw, received_at=received)
    async with rig.reading(client, pool) as reader:
        complaint_id = complaint_id_for_reference(_message_id(raw))
        handle = client.get_workflow_handle(complaint_id)
        [letter] = await wait_letter(mail, handle, LetterKind.ACKNOWLEDGEMENT)
        await rig.wait_counts(0, 1, 0)
        counts = await mailbox_counts(reader)
        assert (counts.processed, counts.quarantined) == (1, 0)
        view = await status(handle)

    assert view.phase is Phase.FORMAL and view.channel.value == "email"
    assert view.missing == [] and (view.product, view.product_text) == ("agile-scrum-master",
                                                                       "Training Agile Scrum Master")
    assert view.received_at == received  # the mailbox's receipt, not the processing
    # The acknowledgement: a reply in the complainant's own conversation, marked automatic.
    assert letter["In-Reply-To"] == _message_id(raw)
    assert letter["References"] == _message_id(raw)
    assert letter["Auto-Submitted"] == "auto-generated"
    assert str(letter["Subject"]) == f"Ontvangstbevestiging van uw klacht (klacht {complaint_id})"
    assert str(letter["To"]).endswith("<m.deboer@zorggroep-rivierenland.nl>")
    body = letter.get_content()
    assert "nog niet compleet" not in body and "Training Agile Scrum Master" in body
    row = await pool.fetchrow("SELECT complainant_name, complainant_organisation, complainant_phone, product,"
                              " description, motivation, reference FROM complaints WHERE complaint_id = $1",
                              complaint_id)
    assert row["complainant_name"] == "Marieke de Boer"
    assert row["complainant_organisation"] == "Zorggroep Rivierenland"
    assert row["complainant_phone"] == "0344 62 18 90"
    assert row["description"].startswith("Op 19 november") or len(row["description"]) > 40
    assert row["reference"] == _message_id(raw)
    stored = await pool.fetchrow("SELECT complaint_id, sequence, kind, raw, processed_at FROM mails WHERE mail_key = $1",
                                 _message_id(raw))
    assert stored["complaint_id"] == complaint_id and stored["sequence"] == 1 and stored["kind"] == "complaint"
    assert [bytes(stored["raw"])] == rig.raw_mails(rig.mailbox.processed_folder)  # as the mailbox holds it
    assert stored["processed_at"] is not None


async def test_a_free_text_mail_is_registered_at_once_and_its_acknowledgement_asks_for_what_is_missing(
        env, client, settings, pool, mail, imap):
    rig = Rig(imap, settings)
    raw = corpus("freetext-missing-fields.eml")
    rig.deliver(raw)
    async with rig.reading(client, pool):
        handle = client.get_workflow_handle(complaint_id_for_reference(_message_id(raw)))
        [letter] = await wait_letter(mail, handle, LetterKind.ACKNOWLEDGEMENT)
        view = await wait_view(handle, lambda v: v.deadlines.complete_by is not None, "the completion deadline")
        assert view.missing == ["organisation", "phone", "product", "motivation"]
        body = letter.get_content()
        assert "nog niet compleet" in body
        for line in ("Organisatie: ", "Telefoon: ", "Product: ", "Motivering: "):
            assert line in body
        # Operators find it; the description is the new text only (no quoted mail, no signature).
        attrs = (await handle.describe()).typed_search_attributes
        assert attrs.get(sa.INCOMPLETE) is True and attrs.get(sa.PRODUCT) is None
        description = await pool.fetchval("SELECT description FROM complaints WHERE complaint_id = $1", handle.id)
        assert ">" not in description and "schreef" not in description and description.strip()
        # Still missing after the term: the director hears of it, once.
        await env.fast_forward(handle, view.deadlines.complete_by - datetime.now(timezone.utc) + timedelta(hours=1))
        [alert] = await wait_alert(mail, handle, AlertKind.COMPLAINT_INCOMPLETE)
        assert "5 werkdagen" in alert.get_content()
        assert "complaint-incomplete" in (await status(handle)).model_dump_json()


async def test_html_only_outlook_mail_with_winmail_dat_keeps_the_files_inside_it(client, settings, pool, mail, imap):
    rig = Rig(imap, settings)
    raw = corpus("outlook-html-winmail.eml")
    rig.deliver(raw)
    async with rig.reading(client, pool):
        complaint_id = complaint_id_for_reference(_message_id(raw))
        await wait_letter(mail, client.get_workflow_handle(complaint_id), LetterKind.ACKNOWLEDGEMENT)
    rows = await pool.fetch("SELECT number, filename, content_type, size, sha256, data FROM attachments"
                            " WHERE complaint_id = $1 ORDER BY number", complaint_id)
    assert [(r["filename"], r["content_type"]) for r in rows] == [("factuur-2026-117.pdf", "application/pdf")]
    assert bytes(rows[0]["data"]).startswith(b"%PDF-") and rows[0]["sha256"] == hashlib.sha256(
        bytes(rows[0]["data"])).hexdigest()
    description = await pool.fetchval("SELECT description FROM complaints WHERE complaint_id = $1", complaint_id)
    assert "<" not in description and "MsoNormal" not in description and "collega’s" in description


async def test_machine_mail_and_bounces_never_start_a_complaint_and_bad_mail_is_set_aside(
        client, settings, pool, mail, imap):
    """Out-of-office and vacation replies about nothing of ours, a bounce of something else, our own mail:
    left alone. A broken mail and one over the size limit: quarantined with an alert; the next mail
    is processed all the same."""
    rig = Rig(imap, settings, max_bytes=20_000)
    foreign = {"LETTER_MESSAGE_ID": "<nothing-of-ours@example.org>", "COMPLAINT_ID": "complaint-ffffffffffffffff",
               "COMPLAINANT": "someone@example.org"}
    for name in ("exchange-out-of-office.eml", "gmail-vacation.eml", "postfix-dsn.eml"):
        rig.deliver(corpus(name, **foreign))
    own = b"From: Level Up <info@level-up.nl>\r\nTo: info@level-up.nl\r\nSubject: test\r\n" \
          b"Message-ID: <own-1@level-up.nl>\r\n\r\nOur own mail.\r\n"
    rig.deliver(own)
    rig.deliver(corpus("broken-mime.eml"))
    big = corpus("gmail-alternative.eml")
    big = big.replace(b"\r\n\r\n", b"\r\nX-Padding: " + b"x" * 30_000 + b"\r\n\r\n", 1)
    rig.deliver(big)
    last = corpus("applemail-qp.eml")
    rig.deliver(last)
    async with rig.reading(client, pool) as reader:
        await rig.wait_counts(0, 5, 2)
        handle = client.get_workflow_handle(complaint_id_for_reference(_message_id(last)))
        await wait_letter(mail, handle, LetterKind.ACKNOWLEDGEMENT)
        alerts = await eventually(lambda: _mailbox_alerts(mail, rig), what="two mail-quarantined alerts")
        counts = await mailbox_counts(reader)
    assert (counts.processed, counts.quarantined) == (5, 2)
    reasons = sorted(a.get_content().split("Reden: ")[1].splitlines()[0] for a in alerts)
    assert reasons[0].startswith("larger than MAILBOX_MAX_BYTES (") and reasons[0].endswith(" > 20000 bytes)")
    assert reasons[1] == "no sender address (From)"
    for alert in alerts:  # where, never what
        assert "Training" not in alert.get_content() and alert["Auto-Submitted"] == "auto-generated"
    ignored = await pool.fetch("SELECT kind, complaint_id, raw, reason FROM mails WHERE folder = $1 AND kind = 'ignored'",
                               rig.mailbox.folder)
    assert len(ignored) == 4 and all(r["complaint_id"] is None and r["raw"] is None for r in ignored)
    assert not await workflow_exists(client, complaint_id_for_reference(_message_id(big)))
    for name in ("exchange-out-of-office.eml", "gmail-vacation.eml"):  # a reply to nothing of ours
        assert await pool.fetchval("SELECT count(*) FROM mails WHERE folder = $1 AND kind = 'ignored'"
                                   " AND reason LIKE 'machine mail%'", rig.mailbox.folder) == 2, name


def _mailbox_alerts(mail, rig: Rig) -> list | None:
    found = [m for m in mail.find(x_alert_kind="mail-quarantined") if f"Map: {rig.mailbox.folder}" in m.get_content()]
    return found if len(found) == 2 else None


def test_intake_starts_the_workflow_by_the_name_it_is_registered_under() -> None:
    from intake.start import COMPLAINT_WORKFLOW
    from workflows.complaint import ComplaintWorkflow

    assert COMPLAINT_WORKFLOW == ComplaintWorkflow.__temporal_workflow_definition.name  # type: ignore[attr-defined]


async def test_a_reused_message_id_on_another_mail_is_another_complaint(client, settings, pool, mail, imap):
    """A sender (or a broken mailer) reuses a Message-ID: the second, different mail is not swallowed as
    a copy of the first but becomes a complaint of its own, known by the hash of its bytes."""
    rig = Rig(imap, settings)
    first = corpus("webform-labelled.eml")
    message_id = _message_id(first)
    second = corpus("gmail-alternative.eml")
    second = second.replace(f"Message-ID: {_message_id(second)}".encode(), f"Message-ID: {message_id}".encode())
    assert _message_id(second) == message_id
    rig.deliver(first)
    rig.deliver(second)
    async with rig.reading(client, pool):
        await rig.wait_counts(0, 2, 0)
        one = client.get_workflow_handle(complaint_id_for_reference(message_id))
        other = client.get_workflow_handle(complaint_id_for_reference("sha256:" + read_mail(second).sha256))
        for handle in (one, other):
            await wait_letter(mail, handle, LetterKind.ACKNOWLEDGEMENT)
        assert (await status(other)).product is None and (await status(one)).product

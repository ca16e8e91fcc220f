"""Mail about a complaint: the complainant's replies, automatic replies and bounces of our letters reach the
complaint through the info@ mailbox (real IMAP, Temporal, PostgreSQL, SMTP); staff read them with admin.py."""

from __future__ import annotations

from datetime import timedelta

from temporalio.client import WorkflowExecutionStatus


from complaints import search_attributes as sa
from complaints.ids import complaint_id_for_reference
from complaints.models import (
    AlertKind,
    ComplaintSubmission,
    CorrectContactInput,
    DecideInput,
    DisagreeInput,
    LetterKind,
    MessageKind,
    Outcome,
    Phase,
    ResendInput,
    WithdrawInput,
)
from intake.mail import read_mail
from starter import submit_complaint
from tests.cli import cli_env, run_cli
from tests.factories import complaint_json
from tests.lifecycle import alerts, eventually, forget_history, history_length, run_after, settled_history_length, \
    wait_alert, wait_letter, wait_view
from tests.mailbox_rig import Rig, corpus
from workflows.complaint import ComplaintWorkflow

STAFF = "Marieke Jansen"
COMPLAINANT = "anouk.vermeulen@kpnmail.nl"  # the sender of freetext-missing-fields.eml


def _reply(name: str, letter, complaint_id: str, **values: str) -> bytes:
    return corpus(name, LETTER_MESSAGE_ID=str(letter["Message-ID"]), COMPLAINT_ID=complaint_id,
                  COMPLAINANT=values.pop("COMPLAINANT", COMPLAINANT), **values)


async def test_round_trip_reply_with_missing_fields_out_of_office_decision_and_disagreement(
        env, client, settings, pool, mail, imap):
    rig = Rig(imap, settings)
    first = corpus("freetext-missing-fields.eml")
    first_id = read_mail(first).message_id
    rig.deliver(first)
    async with rig.reading(client, pool):
        complaint_id = complaint_id_for_reference(first_id)
        handle = client.get_workflow_handle(complaint_id)
        [acknowledgement] = await wait_letter(mail, handle, LetterKind.ACKNOWLEDGEMENT)
        assert acknowledgement["In-Reply-To"] == first_id

        # The complainant answers the acknowledgement with the missing contents as labelled lines.
        rig.deliver(_reply("reply-with-missing-fields.eml", acknowledgement, complaint_id))
        view = await wait_view(handle, lambda v: not v.missing, "the reply's contents filled in")
        assert (view.product, view.product_text) == ("training-agile", "Training Agile")  # matched to the catalogue
        [entry] = [h for h in view.history if h.action == "complete"]
        assert entry.by == "complainant (e-mail)" and entry.note == "filled in: organisation, phone, product, motivation"
        assert [(m.kind, m.from_complainant) for m in view.messages] == [(MessageKind.REPLY, True)]
        [alert] = await wait_alert(mail, handle, AlertKind.MESSAGE_RECEIVED)
        assert "mogelijk niet eens" not in alert.get_content()
        assert (await handle.describe()).typed_search_attributes.get(sa.INCOMPLETE) is False
        row = await eventually(lambda: pool.fetchrow(
            "SELECT complainant_phone, complainant_organisation, motivation, product, product_text FROM complaints"
            " WHERE complaint_id = $1 AND complainant_phone IS NOT NULL", complaint_id), what="the dossier filled in")
        assert (row["complainant_phone"], row["complainant_organisation"], row["product"], row["product_text"]) == \
            ("06 12345678", "Gemeente Delft", "training-agile", "Training Agile")

        # An out-of-office reply to the acknowledgement: a line in the history, nothing else.
        settled = await settled_history_length(handle)
        letters_before = len(mail.find(x_complaint_id=complaint_id))
        rig.deliver(_reply("exchange-out-of-office.eml", acknowledgement, complaint_id))
        view = await wait_view(handle, lambda v: len(v.messages) == 2, "the automatic reply recorded")
        assert view.messages[-1].kind is MessageKind.AUTO_REPLY
        assert view.history[-1].action == "message-received" and view.history[-1].note == \
            "an automatic reply from the complainant's address"
        await settled_history_length(handle)
        assert len(mail.find(x_complaint_id=complaint_id)) == letters_before  # no alert, no letter
        assert await history_length(handle) > settled

        # The decision goes out in the same conversation; the complainant does not agree.
        await handle.execute_update(ComplaintWorkflow.decide, DecideInput(
            by=STAFF, outcome=Outcome.REJECTED, motivation="De training is gegeven zoals afgesproken."))
        [decision] = await wait_letter(mail, handle, LetterKind.DECISION)
        assert decision["In-Reply-To"] == first_id
        assert decision["References"].split() == [first_id, str(acknowledgement["Message-ID"])]
        assert decision["Auto-Submitted"] is None  # a person decided: not an automatic letter
        rig.deliver(_reply("reply-disagree.eml", decision, complaint_id))
        [_, disagreeing] = await wait_alert(mail, handle, AlertKind.MESSAGE_RECEIVED, count=2)
        assert "mogelijk niet eens" in disagreeing.get_content() and "disagree" in disagreeing.get_content()
        view = await handle.execute_update(ComplaintWorkflow.disagree,
                                           DisagreeInput(by=STAFF, note="Klant is het niet eens (e-mail)."))
        assert view.phase is Phase.MEDIATION
        await rig.wait_counts(0, 4, 0)

        # Staff read the correspondence from the dossier.
        environ = cli_env(settings, env.client.service_client.config.target_host)
        listed = await run_cli("admin.py", "messages", complaint_id, env=environ)
        assert listed.code == 0, listed.err
        lines = [line for line in listed.out.splitlines() if line[:3].strip().isdigit()]
        assert [line.split()[4] for line in lines] == ["complaint", "reply", "auto-reply", "reply"]
        assert all(COMPLAINANT in line for line in lines)
        shown = await run_cli("admin.py", "message", complaint_id, "4", env=environ)
        assert shown.code == 0 and "Ik ben het niet eens met uw besluit" in shown.out
        assert (await run_cli("admin.py", "message", complaint_id, "9", env=environ)).code == 4


async def test_bounces_mark_the_letter_undeliverable_and_staff_resend_it_to_the_corrected_address(
        client, settings, pool, mail, imap):
    """A Postfix DSN and a qmail bounce of our acknowledgement: the letter failed, letter-undeliverable
    raised and open; correct-contact and resend deliver it after all."""
    rig = Rig(imap, settings)
    postfix_case, qmail_case = corpus("gmail-alternative.eml"), corpus("applemail-qp.eml")
    rig.deliver(postfix_case)
    rig.deliver(qmail_case)
    async with rig.reading(client, pool):
        handles = [client.get_workflow_handle(complaint_id_for_reference(read_mail(raw).message_id))
                   for raw in (postfix_case, qmail_case)]
        sent = [(await wait_letter(mail, h, LetterKind.ACKNOWLEDGEMENT))[0] for h in handles]
        for handle, letter, bounce in zip(handles, sent, ("postfix-dsn.eml", "qmail-bounce.eml")):
            rig.deliver(_reply(bounce, letter, handle.id, COMPLAINANT=letter["To"].addresses[0].addr_spec))
        for handle in handles:
            view = await wait_view(handle, lambda v: v.letters and v.letters[0].status == "failed", "the bounce")
            [record] = view.letters
            assert record.error == "bounced by the recipient's mail server (DSN status 5.1.1)"
            assert view.messages[0].kind is MessageKind.BOUNCE
            await wait_alert(mail, handle, AlertKind.LETTER_UNDELIVERABLE)
            assert (await handle.describe()).typed_search_attributes.get(sa.OPEN_ALERTS) == ["letter-undeliverable"]
        assert alerts(mail, handles[0], AlertKind.MESSAGE_RECEIVED) == []  # a bounce is not a message to read

        handle = handles[0]
        await handle.execute_update(ComplaintWorkflow.correct_contact,
                                    CorrectContactInput(by=STAFF, email="sanne.visser@example.nl"))
        await handle.execute_update(ComplaintWorkflow.resend, ResendInput(by=STAFF, kind=LetterKind.ACKNOWLEDGEMENT))
        [_, again] = await wait_letter(mail, handle, LetterKind.ACKNOWLEDGEMENT, count=2)
        assert again["To"].addresses[0].addr_spec == "sanne.visser@example.nl"
        await eventually(lambda: _no_open_alerts(handle), what="letter-undeliverable closed")
        await rig.wait_counts(0, 4, 0)


async def _no_open_alerts(handle) -> bool:
    return (await handle.describe()).typed_search_attributes.get(sa.OPEN_ALERTS) is None




async def test_a_reply_to_a_closed_complaint_is_kept_on_it_and_after_the_purge_it_is_new_mail(
        env, client, settings, pool, mail, imap):
    rig = Rig(imap, settings)
    first = corpus("outlook-html-winmail.eml")  # with an attachment, to see it erased
    rig.deliver(first)
    async with rig.reading(client, pool):
        handle = client.get_workflow_handle(complaint_id_for_reference(read_mail(first).message_id))
        [acknowledgement] = await wait_letter(mail, handle, LetterKind.ACKNOWLEDGEMENT)
        first_run = (await handle.describe()).run_id  # before closing: the retention run may follow at once
        await handle.execute_update(ComplaintWorkflow.withdraw, WithdrawInput(by=STAFF, reason="Ingetrokken."))
        await wait_letter(mail, handle, LetterKind.WITHDRAWAL)
        await eventually(lambda: run_after(client, handle.id, first_run), what="the retention run")
        sender = "M.Bakker@vanderlinden-techniek.nl"
        rig.deliver(_reply("reply-disagree.eml", acknowledgement, handle.id, COMPLAINANT=sender))
        [alert] = await wait_alert(mail, handle, AlertKind.MESSAGE_RECEIVED)
        view = await wait_view(handle, lambda v: len(v.messages) == 1, "the reply kept on the closed complaint")
        assert view.phase is Phase.CLOSED and view.messages[0].kind is MessageKind.REPLY
        assert await pool.fetchval("SELECT count(*) FROM mails WHERE complaint_id = $1", handle.id) == 2

        # A year later the personal data is erased: the mails' bytes, senders, subjects, attachments.
        await env.fast_forward(handle, timedelta(days=370))
        await eventually(lambda: _completed(handle), what="the purge")
        mails = await pool.fetch("SELECT raw, from_address, subject, message_id FROM mails WHERE complaint_id = $1",
                                 handle.id)
        assert len(mails) == 2 and all(tuple(m.values()) == (None, None, None, None) for m in mails)
        files = await pool.fetch("SELECT filename, data FROM attachments WHERE complaint_id = $1", handle.id)
        assert files and all(f["filename"] is None and f["data"] is None for f in files)
        erasure = await pool.fetchrow("SELECT mails_erased, attachments_erased FROM erasures WHERE complaint_id = $1",
                                      handle.id)
        assert (erasure["mails_erased"], erasure["attachments_erased"]) == (2, len(files))

        # After the purge, a reply about it is new mail: a complaint of its own.
        late = _reply("reply-with-missing-fields.eml", acknowledgement, handle.id, COMPLAINANT=sender)
        rig.deliver(late)
        again = client.get_workflow_handle(complaint_id_for_reference(read_mail(late).message_id))
        await wait_letter(mail, again, LetterKind.ACKNOWLEDGEMENT)
        assert again.id != handle.id


async def _completed(handle) -> bool:
    return (await handle.describe()).status == WorkflowExecutionStatus.COMPLETED


async def test_a_reply_to_an_erased_complaints_letter_never_reaches_a_later_complaint_with_its_id(
        env, client, settings, pool, mail, imap):
    """The id is used again after the erased complaint's history is gone (an intake service resubmits its
    reference): a late reply to the old acknowledgement is new mail, a reply to the new one reaches it."""
    rig = Rig(imap, settings)
    first = corpus("outlook-html-winmail.eml")
    rig.deliver(first)
    async with rig.reading(client, pool):
        reference = read_mail(first).message_id
        handle = client.get_workflow_handle(complaint_id_for_reference(reference))
        [old_acknowledgement] = await wait_letter(mail, handle, LetterKind.ACKNOWLEDGEMENT)
        first_run = (await handle.describe()).run_id  # before closing: the retention run may follow at once
        await handle.execute_update(ComplaintWorkflow.withdraw, WithdrawInput(by=STAFF, reason="Ingetrokken."))
        await wait_letter(mail, handle, LetterKind.WITHDRAWAL)
        await eventually(lambda: run_after(client, handle.id, first_run), what="the retention run")
        await env.fast_forward(handle, timedelta(days=370))
        await eventually(lambda: _completed(handle), what="the purge")
        await forget_history(client, handle.id)

        submission = ComplaintSubmission.model_validate(complaint_json(reference=reference))
        again = await submit_complaint(client, submission, task_queue=rig.settings.task_queue)
        assert (again.complaint_id, again.created) == (handle.id, True)
        [_, new_acknowledgement] = await wait_letter(mail, handle, LetterKind.ACKNOWLEDGEMENT, count=2)

        sender = "M.Bakker@vanderlinden-techniek.nl"
        late = _reply("reply-disagree.eml", old_acknowledgement, handle.id, COMPLAINANT=sender)
        rig.deliver(late)
        elsewhere = client.get_workflow_handle(complaint_id_for_reference(read_mail(late).message_id))
        await wait_letter(mail, elsewhere, LetterKind.ACKNOWLEDGEMENT)
        assert elsewhere.id != handle.id
        assert (await handle.query(ComplaintWorkflow.status)).messages == []

        rig.deliver(_reply("reply-disagree.eml", new_acknowledgement, handle.id, COMPLAINANT="jan.devries@example.nl"))
        view = await wait_view(handle, lambda v: len(v.messages) == 1, "the reply to the new acknowledgement")
        assert view.messages[0].kind is MessageKind.REPLY and view.messages[0].from_complainant

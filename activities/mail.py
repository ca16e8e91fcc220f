"""Letters and alerts over SMTP, each sent once (activities/outbox.py says how, and the limits).

Every message has a Message-ID derived from complaint id, kind and sequence, recorded with its row
in the dossier when it is first attempted; a retry uses the recorded one.
"""

from __future__ import annotations

import hashlib
import json
from datetime import datetime

import asyncpg
from temporalio import activity
from temporalio.exceptions import ApplicationError

from activities.dossier import write_state
from activities.letters import LetterTemplates, Rendered, render_alert, render_mailbox_alert
from activities.names import (
    LETTER_ERASED,
    SEND_ALERT,
    SEND_LETTER,
    SEND_MAILBOX_ALERT,
    SEND_STORED_LETTER,
    STAGE_LETTERS,
    UNCERTAIN,
)
from activities.outbox import MailRefused, OnSent, Outbox, Row, SmtpSender, lease, message_id
from complaints.models import (
    AlertSent,
    LetterKind,
    LetterSent,
    MailboxAlertInput,
    SendAlertInput,
    SendLetterInput,
    StageLettersInput,
    StoredLetterInput,
)
from infra import metrics
from infra.config import Settings

__all__ = ["MailActivities", "SmtpSender", "letter_headers", "message_id"]

#: A letter's row in the dossier.
_LETTER = "complaint_id = $1 AND kind = $2 AND sequence = $3"


def letter_headers(letter: SendLetterInput) -> dict[str, str]:
    """A letter's own headers: the complaint and kind, the thread it belongs to, and RFC 3834's mark on
    letters the system sends by itself (so auto-responders do not answer them)."""
    headers = {"X-Complaint-Id": letter.complaint_id, "X-Letter-Kind": letter.kind.value}
    if letter.in_reply_to:
        headers["In-Reply-To"] = letter.in_reply_to
    if letter.references:
        headers["References"] = " ".join(letter.references)
    if letter.automatic:
        headers["Auto-Submitted"] = "auto-generated"
    return headers


class MailActivities:
    def __init__(self, pool: asyncpg.Pool, settings: Settings, templates: LetterTemplates) -> None:
        self._pool = pool
        self._settings = settings
        self._sender = SmtpSender(settings)
        self._outbox = Outbox(pool, self._sender)
        self._templates = templates

    @activity.defn(name=SEND_LETTER)
    async def send_letter(self, letter: SendLetterInput) -> LetterSent:
        """Write the letter's row (claimed, on the first attempt; with the workflow's ``state``, if it carries
        one), send it, and record it sent; a letter with a ``dossier_version`` records that version in the
        dossier in that same transaction."""
        key = (letter.complaint_id, letter.kind.value, letter.sequence)
        rendered = self._templates.render(letter)
        async with self._pool.acquire() as conn, conn.transaction():
            stored = await self._stage(conn, letter, rendered, claim=True)
            if letter.state is not None:  # the state that wrote the letter, in the same transaction
                await write_state(conn, letter.state)
            claimed = stored is not None
            if stored is None:  # written by an earlier attempt: as it was written
                stored = await conn.fetchrow(f"SELECT message_id, recipient FROM letters WHERE {_LETTER}", *key)
        recorded: list[int] = []
        sent = await self._deliver(key, stored["message_id"], stored["recipient"] or letter.recipient.email,
                                   letter.recipient.name, rendered, letter_headers(letter), claimed=claimed,
                                   also=_record_version(letter, recorded))
        return sent.model_copy(update={"dossier_version": recorded[0]}) if recorded else sent

    @activity.defn(name=STAGE_LETTERS)
    async def stage_letters(self, input: StageLettersInput) -> None:
        """Write letters to the dossier as they would be sent, without sending them (the retention run of
        a complaint that closed while the mail server was failing sends them: :meth:`send_stored_letter`)."""
        async with self._pool.acquire() as conn, conn.transaction():
            for letter in input.letters:
                await self._stage(conn, letter, self._templates.render(letter))
        activity.logger.info("letters kept in the dossier to be sent later", extra={"letters": len(input.letters)})

    @activity.defn(name=SEND_STORED_LETTER)
    async def send_stored_letter(self, letter: StoredLetterInput) -> LetterSent:
        """Send a letter from its row in the dossier; with ``copy_of``, first copy that row to a new one
        addressed to ``to`` or to the dossier's current address (a letter sent again after a bounce)."""
        key = (letter.complaint_id, letter.kind.value, letter.sequence)
        if letter.copy_of is not None:
            await self._pool.execute(
                """
                INSERT INTO letters (complaint_id, kind, sequence, message_id, status, recipient, subject, body,
                    envelope)
                SELECT l.complaint_id, l.kind, $3, $4, 'sending', coalesce($6, c.complainant_email), l.subject,
                    l.body, l.envelope
                FROM letters l JOIN complaints c USING (complaint_id)
                WHERE l.complaint_id = $1 AND l.kind = $2 AND l.sequence = $5 AND l.body IS NOT NULL
                ON CONFLICT DO NOTHING
                """,
                *key, message_id(*key, self._sender.domain, letter.instance), letter.copy_of, letter.to)
        stored = await self._pool.fetchrow(
            f"SELECT message_id, recipient, subject, body, envelope FROM letters WHERE {_LETTER}", *key)
        if stored is None or stored["body"] is None or stored["recipient"] is None:
            raise ApplicationError(f"{letter.kind.value} letter: not in the dossier (erased)",
                                   type=LETTER_ERASED, non_retryable=True)
        envelope = json.loads(stored["envelope"]) if isinstance(stored["envelope"], str) else stored["envelope"]
        envelope = envelope or {}
        headers = {**envelope.get("headers", {}), "X-Complaint-Id": letter.complaint_id,
                   "X-Letter-Kind": letter.kind.value}
        sent = await self._deliver(key, stored["message_id"], stored["recipient"], envelope.get("to_name"),
                                   Rendered(subject=stored["subject"], body=stored["body"]), headers)
        return sent.model_copy(update={"to": ""})  # the retention run holds no address

    async def _stage(self, conn: asyncpg.Connection, letter: SendLetterInput, rendered: Rendered,
                     claim: bool = False) -> asyncpg.Record | None:
        """The letter's row, written once on its first attempt: what it says, to whom, and its Message-ID
        (a retry, or the retention run, sends exactly this). With ``claim`` the new row is written
        holding this attempt's lease (activities/outbox.py). Returns the row's message id and recipient
        if this call wrote it, None if it was there already."""
        key = (letter.complaint_id, letter.kind.value, letter.sequence)
        envelope = {"to_name": letter.recipient.name, "headers": letter_headers(letter)}
        until, by = lease() if claim else (None, None)
        return await conn.fetchrow(
            """
            INSERT INTO letters (complaint_id, kind, sequence, message_id, status, recipient, subject, body, envelope,
                claimed_until, claimed_by)
            VALUES ($1, $2, $3, $4, 'sending', $5, $6, $7, $8::jsonb, $9, $10) ON CONFLICT DO NOTHING
            RETURNING message_id, recipient
            """,
            *key, message_id(*key, self._sender.domain, letter.instance), letter.recipient.email,
            rendered.subject, rendered.body, json.dumps(envelope), until, by)

    async def _deliver(self, key: tuple[str, str, int], msg_id: str, to: str, to_name: str | None,
                       rendered: Rendered, headers: dict[str, str], claimed: bool = False,
                       also: OnSent | None = None) -> LetterSent:
        """Send the letter whose row ``key`` is, once (activities/outbox.py), and note how it went; ``also``
        is recorded in the transaction that marks it sent."""
        row = Row("letters", _LETTER, key)
        fields = {"kind": key[1], "sequence": key[2], "message_id": msg_id}

        async def mark_sent(conn: asyncpg.Connection, sent_at: datetime) -> None:
            await conn.execute(f"UPDATE letters SET status = 'sent' WHERE {_LETTER} AND status <> 'sent'", *key)
            if also is not None:
                await also(conn, sent_at)

        try:
            sent_at, now = await self._outbox.send(row, lambda: self._sender.compose(
                to=to, to_name=to_name, rendered=rendered, msg_id=msg_id, headers=headers),
                claimed=claimed, on_sent=mark_sent)
        except MailRefused as err:
            await self._pool.execute(f"UPDATE letters SET status = 'failed', error = $4 WHERE {_LETTER}",
                                     *key, err.message)
            activity.logger.warning("letter refused by the mail server", extra={**fields, "smtp_code": err.code})
            raise
        except ApplicationError as err:
            if err.type == UNCERTAIN:
                await self._pool.execute(f"UPDATE letters SET status = 'uncertain', error = $4 WHERE {_LETTER}",
                                         *key, err.message)
                activity.logger.warning("letter waits for staff: its outcome is uncertain", extra=fields)
            raise
        if now:
            metrics.count(activity.metric_meter(), metrics.LETTERS_SENT, kind=key[1])
            activity.logger.info("letter sent", extra=fields)
        else:
            activity.logger.info("letter already sent; not sending again", extra=fields)
        return LetterSent(message_id=msg_id, sent_at=sent_at, to=to)

    @activity.defn(name=SEND_ALERT)
    async def send_alert(self, alert: SendAlertInput) -> AlertSent:
        key = (alert.complaint_id, alert.kind.value, alert.sequence)
        row = Row("alerts", "complaint_id = $1 AND kind = $2 AND sequence = $3", key)
        async with self._pool.acquire() as conn:
            msg_id = await conn.fetchval(
                """
                INSERT INTO alerts (complaint_id, kind, sequence, deadline, message_id)
                VALUES ($1, $2, $3, $4, $5)
                ON CONFLICT (complaint_id, kind, sequence) DO UPDATE SET message_id = coalesce(alerts.message_id, $5)
                RETURNING message_id
                """,
                *key, alert.deadline, message_id(alert.complaint_id, "alert-" + alert.kind.value, alert.sequence,
                                                 self._sender.domain, alert.instance))
        sent_at, _ = await self._outbox.send(row, lambda: self._sender.compose(
            to=self._settings.director_email, to_name=None, rendered=render_alert(alert), msg_id=msg_id,
            headers={"X-Complaint-Id": alert.complaint_id, "X-Alert-Kind": alert.kind.value,
                     "Auto-Submitted": "auto-generated"}))
        activity.logger.info("alert sent to the director",
                             extra={"kind": alert.kind.value, "sequence": alert.sequence, "message_id": msg_id})
        return AlertSent(message_id=msg_id, sent_at=sent_at)

    @activity.defn(name=SEND_MAILBOX_ALERT)
    async def send_mailbox_alert(self, alert: MailboxAlertInput) -> AlertSent:
        """An alert about the mailbox itself (a mail set aside), sent once per mail."""
        key = f"{alert.kind.value}:{alert.folder}:{alert.uidvalidity}:{alert.uid}"
        folder = hashlib.sha256(alert.folder.encode()).hexdigest()[:12]
        msg_id = f"<mailbox.{alert.kind.value}.{folder}.{alert.uidvalidity}-{alert.uid}@{self._sender.domain}>"
        await self._pool.execute(
            "INSERT INTO mailbox_alerts (alert_key, kind, folder, uidvalidity, uid, reason, message_id)"
            " VALUES ($1, $2, $3, $4, $5, $6, $7) ON CONFLICT (alert_key) DO NOTHING",
            key, alert.kind.value, alert.folder, alert.uidvalidity, alert.uid, alert.reason, msg_id)
        sent_at, _ = await self._outbox.send(Row("mailbox_alerts", "alert_key = $1", (key,)), lambda: (
            self._sender.compose(to=self._settings.director_email, to_name=None,
                                 rendered=render_mailbox_alert(alert), msg_id=msg_id,
                                 headers={"X-Alert-Kind": alert.kind.value, "Auto-Submitted": "auto-generated"})))
        activity.logger.info("mailbox alert sent to the director", extra={"kind": alert.kind.value})
        return AlertSent(message_id=msg_id, sent_at=sent_at)


def _record_version(letter: SendLetterInput, recorded: list[int]) -> OnSent | None:
    """For a letter with a ``dossier_version``: record that version in the dossier (for an acknowledgement,
    with ``acknowledged_at``) if the dossier holds the version just before, or already holds this one (an
    earlier attempt recorded it); ``recorded`` gets the version then. The workflow trusts it only if
    nothing else changed while the letter went (``ComplaintWorkflow._send_letter``)."""
    version = letter.dossier_version
    if version is None:
        return None
    acknowledgement = letter.kind is LetterKind.ACKNOWLEDGEMENT

    async def record(conn: asyncpg.Connection, sent_at: datetime) -> None:
        done = await conn.fetchval(
            """
            UPDATE complaints SET state_version = $3, updated_at = now(),
                acknowledged_at = CASE WHEN $5 THEN coalesce(acknowledged_at, $2) ELSE acknowledged_at END
            WHERE complaint_id = $1 AND purged_at IS NULL AND ($4::text IS NULL OR instance IS NULL OR instance = $4)
                AND (state_version = $3 - 1 OR (state_version = $3 AND (NOT $5 OR acknowledged_at IS NOT NULL)))
            RETURNING state_version
            """,
            letter.complaint_id, sent_at, version, letter.instance, acknowledgement)
        if done is not None:
            recorded.append(done)

    return record

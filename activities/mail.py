"""Letters and alerts over SMTP, each sent once (activities/outbox.py says how, and the limits).

Every message has a Message-ID derived from complaint id, kind and sequence, recorded with its row
in the dossier when it is first attempted; a retry uses the recorded one.
"""

from __future__ import annotations

import hashlib

import asyncpg
from temporalio import activity
from temporalio.exceptions import ApplicationError

from activities.letters import LetterTemplates, render_alert, render_mailbox_alert
from activities.names import SEND_ALERT, SEND_LETTER, SEND_MAILBOX_ALERT
from activities.outbox import UNCERTAIN, MailRefused, Outbox, Row, SmtpSender, message_id
from complaints.models import AlertSent, LetterSent, MailboxAlertInput, SendAlertInput, SendLetterInput
from infra import metrics
from infra.config import Settings

__all__ = ["MailActivities", "SmtpSender", "letter_headers", "message_id"]


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
        key = (letter.complaint_id, letter.kind.value, letter.sequence)
        row = Row("letters", "complaint_id = $1 AND kind = $2 AND sequence = $3", key)
        rendered = self._templates.render(letter)
        async with self._pool.acquire() as conn:
            await conn.execute(
                """
                INSERT INTO letters (complaint_id, kind, sequence, message_id, status, recipient, subject, body)
                VALUES ($1, $2, $3, $4, 'sending', $5, $6, $7) ON CONFLICT DO NOTHING
                """,
                *key, message_id(*key, self._sender.domain, letter.instance), letter.recipient.email,
                rendered.subject, rendered.body)
            stored = await conn.fetchrow(f"SELECT message_id, recipient FROM letters WHERE {row.where}", *key)
        msg_id, to = stored["message_id"], stored["recipient"] or letter.recipient.email
        fields = {"kind": letter.kind.value, "sequence": letter.sequence, "message_id": msg_id}
        try:
            sent_at, now = await self._outbox.send(row, lambda: self._sender.compose(
                to=to, to_name=letter.recipient.name, rendered=rendered, msg_id=msg_id,
                headers=letter_headers(letter)))
        except MailRefused as err:
            await self._pool.execute(f"UPDATE letters SET status = 'failed', error = $4 WHERE {row.where}",
                                     *key, err.message)
            activity.logger.warning("letter refused by the mail server", extra={**fields, "smtp_code": err.code})
            raise
        except ApplicationError as err:
            if err.type == UNCERTAIN:
                await self._pool.execute(f"UPDATE letters SET status = 'uncertain', error = $4 WHERE {row.where}",
                                         *key, err.message)
                activity.logger.warning("letter waits for staff: its outcome is uncertain", extra=fields)
            raise
        await self._pool.execute(f"UPDATE letters SET status = 'sent' WHERE {row.where} AND status <> 'sent'", *key)
        if now:
            metrics.count(activity.metric_meter(), metrics.LETTERS_SENT, kind=letter.kind.value)
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

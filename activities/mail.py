"""Letters and alerts over SMTP, each sent exactly once.

Every message has a Message-ID derived from complaint id, kind and sequence. Before
sending, the activity claims the message's row in PostgreSQL (``SELECT ... FOR
UPDATE``); a row already marked sent is never sent again, so a retried activity
returns the first send's receipt. The row lock also keeps two concurrent attempts
from both sending. The one window left is a crash after the SMTP server accepted
the message and before the row is marked sent: the retry then sends the same
message again with the same Message-ID, which mail clients treat as one message.
"""

from __future__ import annotations

import email.policy
import hashlib
import re
from dataclasses import dataclass
from datetime import datetime, timezone
from email.headerregistry import Address
from email.message import EmailMessage
from email.utils import format_datetime, getaddresses, parseaddr

import aiosmtplib
import asyncpg
from temporalio import activity
from temporalio.exceptions import ApplicationError

from activities.letters import LetterTemplates, Rendered, render_alert, render_mailbox_alert
from activities.names import SEND_ALERT, SEND_LETTER, SEND_MAILBOX_ALERT
from complaints.models import AlertSent, LetterSent, MailboxAlertInput, SendAlertInput, SendLetterInput
from infra import metrics
from infra.config import Settings

UNDELIVERABLE = "LetterUndeliverable"


class MailRefused(ApplicationError):
    """The mail server refused a message for good (5xx): not retried. ``code`` is the SMTP code;
    the server's reply text is dropped, since it can echo the recipient's address."""

    def __init__(self, message: str, code: int) -> None:
        super().__init__(message, type=UNDELIVERABLE, non_retryable=True)
        self.code = code


#: How messages go on the wire: SMTP line endings, and a header set raw (the Subject) left unfolded.
WIRE = email.policy.SMTP.clone(refold_source="none")


def message_id(complaint_id: str, kind: str, sequence: int, domain: str) -> str:
    return f"<{complaint_id}.{kind}.{sequence}@{domain}>"


#: A display name the email package cannot carry as typed: a control character, or RFC 2047
#: encoded-word syntax, which Python's header folder decodes and then writes out raw, so a name
#: "=?utf-8?q?Jan=0D=0ABcc:_x@example.com?=" (no control character in it) would add a header.
_UNSAFE_DISPLAY_NAME = re.compile(r"[\x00-\x1f\x7f-\x9f\u2028\u2029]|=\?")


def _display_name(name: str | None) -> str:
    """The recipient's name for the To header, or none at all if it cannot be carried safely."""
    return "" if not name or _UNSAFE_DISPLAY_NAME.search(name) else name


@dataclass(frozen=True)
class SmtpSender:
    settings: Settings

    @property
    def domain(self) -> str:
        address = parseaddr(self.settings.mail_from)[1]
        return address.rpartition("@")[2] or "level-up.nl"

    @property
    def address(self) -> str:
        """Our own sending address (mail from it in the mailbox is ours, never a complaint)."""
        return parseaddr(self.settings.mail_from)[1].lower()

    def compose(self, *, to: str, to_name: str | None, rendered: Rendered, msg_id: str,
                headers: dict[str, str]) -> EmailMessage:
        msg = EmailMessage()
        msg["From"] = self.settings.mail_from
        # Address() quotes and RFC 2047-encodes the display name (intake rejects control characters).
        msg["To"] = Address(display_name=_display_name(to_name), addr_spec=to)
        if rendered.subject.isascii():
            # Kept as written: Python 3.11 folds a subject that just overflows the line whole onto the
            # next line ("Subject:" CRLF SP ...), which many readers show with a leading space.
            msg.set_raw("Subject", rendered.subject)
        else:
            msg["Subject"] = rendered.subject
        msg["Message-ID"] = msg_id
        msg["Date"] = format_datetime(datetime.now(timezone.utc))
        for name, value in headers.items():
            msg[name] = value
        msg.set_content(rendered.body)
        return msg

    async def send(self, msg: EmailMessage) -> None:
        """Send; a permanent refusal (5xx) raises a non-retryable ApplicationError."""
        s = self.settings
        recipients = [address for _, address in getaddresses(msg.get_all("To", []))]
        try:
            await aiosmtplib.send(
                msg.as_bytes(policy=WIRE), sender=parseaddr(str(msg["From"]))[1], recipients=recipients,
                hostname=s.smtp_host, port=s.smtp_port,
                username=s.smtp_username, password=s.smtp_password,
                use_tls=s.smtp_tls == "tls", start_tls=s.smtp_tls == "starttls",
                timeout=20,  # inside the activity's 30 s
            )
        except aiosmtplib.SMTPRecipientsRefused as err:
            codes = [r.code for r in err.recipients]
            if codes and all(500 <= c < 600 for c in codes):
                raise MailRefused(f"recipient refused by the mail server ({codes[0]})", codes[0]) from None
            raise
        except aiosmtplib.SMTPResponseException as err:
            if 500 <= err.code < 600 and not isinstance(err, aiosmtplib.SMTPServerDisconnected):
                raise MailRefused(f"mail server refused the message ({err.code})", err.code) from None
            raise


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


def _remember_sent() -> datetime:
    """Record in the activity's heartbeat that the mail server took the message.

    If recording the send in PostgreSQL then fails (the database went away), the next
    attempt finds this in its heartbeat details and records the send instead of sending
    the message a second time.
    """
    sent_at = datetime.now(timezone.utc)
    activity.heartbeat(sent_at.isoformat())
    return sent_at


def _sent_by_earlier_attempt() -> datetime | None:
    details = activity.info().heartbeat_details
    return datetime.fromisoformat(details[0]) if details else None


class MailActivities:
    def __init__(self, pool: asyncpg.Pool, settings: Settings, templates: LetterTemplates) -> None:
        self._pool = pool
        self._settings = settings
        self._sender = SmtpSender(settings)
        self._templates = templates

    @activity.defn(name=SEND_LETTER)
    async def send_letter(self, letter: SendLetterInput) -> LetterSent:
        msg_id = message_id(letter.complaint_id, letter.kind.value, letter.sequence, self._sender.domain)
        rendered = self._templates.render(letter)
        to = letter.recipient.email
        async with self._pool.acquire() as conn, conn.transaction():
            await conn.execute(
                """
                INSERT INTO letters (complaint_id, kind, sequence, message_id, status, recipient,
                                     subject, body)
                VALUES ($1, $2, $3, $4, 'sending', $5, $6, $7) ON CONFLICT DO NOTHING
                """,
                letter.complaint_id, letter.kind.value, letter.sequence, msg_id, to,
                rendered.subject, rendered.body,
            )
            row = await conn.fetchrow(
                "SELECT status, sent_at, recipient FROM letters"
                " WHERE complaint_id = $1 AND kind = $2 AND sequence = $3 FOR UPDATE",
                letter.complaint_id, letter.kind.value, letter.sequence,
            )
            if row["status"] == "sent":
                activity.logger.info("letter already sent; not sending again",
                                     extra={"kind": letter.kind.value, "sequence": letter.sequence,
                                            "message_id": msg_id})
                return LetterSent(message_id=msg_id, sent_at=row["sent_at"], to=row["recipient"] or to)
            msg = self._sender.compose(
                to=to, to_name=letter.recipient.name, rendered=rendered, msg_id=msg_id,
                headers=letter_headers(letter),
            )
            refused: MailRefused | None = None
            sent_at = _sent_by_earlier_attempt()
            if sent_at is None:
                try:
                    await self._sender.send(msg)
                    sent_at = _remember_sent()
                except MailRefused as err:
                    refused, sent_at = err, datetime.now(timezone.utc)
            await conn.execute(
                "UPDATE letters SET status = $4, sent_at = $5, error = $6"
                " WHERE complaint_id = $1 AND kind = $2 AND sequence = $3",
                letter.complaint_id, letter.kind.value, letter.sequence,
                "failed" if refused else "sent", None if refused else sent_at,
                refused.message if refused else None,
            )
        fields = {"kind": letter.kind.value, "sequence": letter.sequence, "message_id": msg_id}
        if refused is not None:
            # Permanent: recorded as failed above; the workflow alerts the director.
            activity.logger.warning("letter refused by the mail server", extra={**fields, "smtp_code": refused.code})
            raise refused
        metrics.count(activity.metric_meter(), metrics.LETTERS_SENT, kind=letter.kind.value)
        activity.logger.info("letter sent", extra=fields)
        return LetterSent(message_id=msg_id, sent_at=sent_at, to=to)

    @activity.defn(name=SEND_ALERT)
    async def send_alert(self, alert: SendAlertInput) -> AlertSent:
        msg_id = message_id(alert.complaint_id, "alert-" + alert.kind.value, alert.sequence,
                            self._sender.domain)
        async with self._pool.acquire() as conn, conn.transaction():
            await conn.execute(
                """
                INSERT INTO alerts (complaint_id, kind, sequence, deadline, message_id)
                VALUES ($1, $2, $3, $4, $5)
                ON CONFLICT (complaint_id, kind, sequence) DO UPDATE SET message_id = $5
                """,
                alert.complaint_id, alert.kind.value, alert.sequence, alert.deadline, msg_id,
            )
            sent_at = await conn.fetchval(
                "SELECT sent_at FROM alerts WHERE complaint_id = $1 AND kind = $2 AND sequence = $3"
                " FOR UPDATE",
                alert.complaint_id, alert.kind.value, alert.sequence,
            )
            if sent_at is not None:
                return AlertSent(message_id=msg_id, sent_at=sent_at)
            sent_at = _sent_by_earlier_attempt()
            if sent_at is None:
                msg = self._sender.compose(
                    to=self._settings.director_email, to_name=None, rendered=render_alert(alert), msg_id=msg_id,
                    headers={"X-Complaint-Id": alert.complaint_id, "X-Alert-Kind": alert.kind.value,
                             "Auto-Submitted": "auto-generated"},
                )
                await self._sender.send(msg)
                sent_at = _remember_sent()
            await conn.execute(
                "UPDATE alerts SET sent_at = $4 WHERE complaint_id = $1 AND kind = $2 AND sequence = $3",
                alert.complaint_id, alert.kind.value, alert.sequence, sent_at,
            )
        activity.logger.info("alert sent to the director",
                             extra={"kind": alert.kind.value, "sequence": alert.sequence, "message_id": msg_id})
        return AlertSent(message_id=msg_id, sent_at=sent_at)

    @activity.defn(name=SEND_MAILBOX_ALERT)
    async def send_mailbox_alert(self, alert: MailboxAlertInput) -> AlertSent:
        """An alert about the mailbox itself (a mail set aside), sent once per mail."""
        key = f"{alert.kind.value}:{alert.folder}:{alert.uidvalidity}:{alert.uid}"
        folder = hashlib.sha256(alert.folder.encode()).hexdigest()[:12]
        msg_id = f"<mailbox.{alert.kind.value}.{folder}.{alert.uidvalidity}-{alert.uid}@{self._sender.domain}>"
        async with self._pool.acquire() as conn, conn.transaction():
            await conn.execute(
                "INSERT INTO mailbox_alerts (alert_key, kind, folder, uidvalidity, uid, reason, message_id)"
                " VALUES ($1, $2, $3, $4, $5, $6, $7) ON CONFLICT (alert_key) DO NOTHING",
                key, alert.kind.value, alert.folder, alert.uidvalidity, alert.uid, alert.reason, msg_id)
            sent_at = await conn.fetchval("SELECT sent_at FROM mailbox_alerts WHERE alert_key = $1 FOR UPDATE", key)
            if sent_at is not None:
                return AlertSent(message_id=msg_id, sent_at=sent_at)
            sent_at = _sent_by_earlier_attempt()
            if sent_at is None:
                msg = self._sender.compose(
                    to=self._settings.director_email, to_name=None, rendered=render_mailbox_alert(alert),
                    msg_id=msg_id, headers={"X-Alert-Kind": alert.kind.value, "Auto-Submitted": "auto-generated"})
                await self._sender.send(msg)
                sent_at = _remember_sent()
            await conn.execute("UPDATE mailbox_alerts SET sent_at = $2 WHERE alert_key = $1", key, sent_at)
        activity.logger.info("mailbox alert sent to the director", extra={"kind": alert.kind.value})
        return AlertSent(message_id=msg_id, sent_at=sent_at)

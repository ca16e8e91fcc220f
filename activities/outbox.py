"""Sending mail over SMTP so that each message goes out once, and never more than twice.

Every message (letter, alert, report) has a row in the dossier. An attempt claims the row in one short
transaction (a lease of ``LEASE``), talks SMTP without holding any database connection, and records
what happened in another short transaction, so slow mail servers never starve the dossier of
connections. A row already sent is never sent again; a send the mail server confirmed is remembered
in the activity's heartbeat before it is recorded, so a retry after a failed recording does not send.

What SMTP cannot tell: a timeout or a dropped connection after the message was handed over
(``DATA``) leaves it unknown whether the server took it. Such an attempt is counted; after one, one
more copy is sent (with the same Message-ID, which mail clients show once); after a second, the
message waits for staff (``MessageUncertain``) instead of going out a third time. An attempt that
vanished while it held the lease (a killed worker) counts the same way.

Only a permanent refusal of the recipient (5xx to ``RCPT TO``) makes a message undeliverable
(``MailRefused``, not retried). Every other failure (a refused login, sender or message, a 5xx
greeting, a server out of reach) is the mail server failing: retried (``MailServerFailing``), logged
at ERROR from the third attempt on, and counted in the metric ``complaint_mail_server_failures``.
"""

from __future__ import annotations

import asyncio
import email.policy
import re
import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from email.headerregistry import Address
from email.message import EmailMessage
from email.utils import format_datetime, getaddresses, parseaddr
from typing import Awaitable, Callable

import aiosmtplib
import asyncpg
from temporalio import activity
from temporalio.exceptions import ApplicationError

from activities.letters import Rendered
from activities.names import UNCERTAIN, UNDELIVERABLE
from complaints.ids import instance_token
from infra import metrics
from infra.config import Settings

SERVER_FAILING = "MailServerFailing"
OUTCOME_UNKNOWN = "MailOutcomeUnknown"

#: An attempt's hold on a message's row: longer than its SMTP conversation (``SMTP_TIMEOUT`` per step).
LEASE = timedelta(seconds=45)
SMTP_TIMEOUT = 20.0
#: Attempts whose outcome SMTP could not tell, after which a message waits for staff.
MAX_UNKNOWN = 2
#: From this attempt on, a failing mail server is logged at ERROR.
LOUD_FROM_ATTEMPT = 3

#: How messages go on the wire: SMTP line endings, and a header set raw (the Subject) left unfolded.
WIRE = email.policy.SMTP.clone(refold_source="none")


class MailRefused(ApplicationError):
    """The recipient was refused for good (5xx to RCPT TO): not retried. ``code`` is the SMTP code; the
    server's reply text is dropped, since it can echo the recipient's address."""

    def __init__(self, message: str, code: int) -> None:
        super().__init__(message, type=UNDELIVERABLE, non_retryable=True)
        self.code = code


class MailServerFailing(ApplicationError):
    """The mail server failed or refused something other than the recipient: retried."""

    def __init__(self, stage: str, code: int | None, reason: str) -> None:
        super().__init__(f"the mail server failed at {stage}: {reason}", type=SERVER_FAILING)
        self.stage, self.code = stage, code


class OutcomeUnknown(Exception):
    """The message was handed over (DATA) but the server's answer never came."""


def message_id(complaint_id: str, kind: str, sequence: int, domain: str, instance: str | None = None) -> str:
    """``<complaint-….<kind>.<n>[.<instance token>]@domain>``: which complaint, which message, and which
    complaint of that id (:func:`complaints.ids.instance_token`; none for a complaint started before)."""
    token = f".{instance_token(instance)}" if instance else ""
    return f"<{complaint_id}.{kind}.{sequence}{token}@{domain}>"


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
        msg.set_raw("Message-ID", msg_id)  # one line, as written (a folded one reads with a leading space)
        msg["Date"] = format_datetime(datetime.now(timezone.utc))
        for name, value in headers.items():
            msg[name] = value
        msg.set_content(rendered.body)
        return msg

    async def send(self, msg: EmailMessage) -> None:
        """One SMTP conversation, step by step, so that each failure is known for what it is.

        ``MailRefused``: every recipient refused for good. ``OutcomeUnknown``: the message was handed
        over and no answer came. ``MailServerFailing``: anything else (nothing was delivered).
        """
        s = self.settings
        recipients = [address for _, address in getaddresses(msg.get_all("To", []))]
        client = aiosmtplib.SMTP(hostname=s.smtp_host, port=s.smtp_port, timeout=SMTP_TIMEOUT,
                                 use_tls=s.smtp_tls == "tls", start_tls=s.smtp_tls == "starttls")
        stage = "connect"
        try:
            await client.connect()
            if s.smtp_username:
                stage = "login"
                await client.login(s.smtp_username, s.smtp_password or "")
            stage = "MAIL FROM"
            await client.mail(parseaddr(str(msg["From"]))[1])
            stage = "RCPT TO"
            refused: list[aiosmtplib.SMTPRecipientRefused] = []
            for recipient in recipients:
                try:
                    await client.rcpt(recipient)
                except aiosmtplib.SMTPRecipientRefused as err:
                    refused.append(err)
            if refused and len(refused) == len(recipients):
                codes = [err.code for err in refused]
                if all(500 <= code < 600 for code in codes):
                    raise MailRefused(f"recipient refused by the mail server ({codes[0]})", codes[0])
                raise MailServerFailing(stage, codes[0], f"recipient deferred ({codes[0]})")
            stage = "DATA"
            await client.data(msg.as_bytes(policy=WIRE))
        except (MailRefused, MailServerFailing):
            raise
        except (aiosmtplib.SMTPTimeoutError, aiosmtplib.SMTPServerDisconnected, TimeoutError, ConnectionError) as err:
            if stage == "DATA":
                raise OutcomeUnknown(type(err).__name__) from None
            raise MailServerFailing(stage, None, type(err).__name__) from None
        except aiosmtplib.SMTPResponseException as err:
            raise MailServerFailing(stage, err.code, f"answered {err.code}") from None
        except (aiosmtplib.SMTPException, OSError) as err:
            raise MailServerFailing(stage, None, type(err).__name__) from None
        finally:
            try:
                if client.is_connected:
                    await client.quit()
            except Exception:  # noqa: BLE001 - the message's fate is decided; the goodbye does not matter
                client.close()


#: What is recorded with a send, in the same transaction (a connection, the moment it was sent).
OnSent = Callable[[asyncpg.Connection, datetime], Awaitable[None]]


@dataclass(frozen=True)
class Row:
    """A message's row: the table, and the condition (with its arguments) that finds it."""

    table: str
    where: str
    args: tuple[object, ...]


class Outbox:
    """The claim, send, record cycle around one message (see the module's documentation)."""

    def __init__(self, pool: asyncpg.Pool, sender: SmtpSender) -> None:
        self._pool = pool
        self._sender = sender

    async def send(self, row: Row, compose: Callable[[], EmailMessage], *, claimed: bool = False,
                   on_sent: OnSent | None = None) -> tuple[datetime, bool]:
        """Send the row's message unless it already went out; when it was sent, and whether just now.

        ``claimed``: the caller created the row holding the lease (:func:`lease`), so this attempt
        sends without claiming it again. ``on_sent`` runs in the transaction that records the send
        (also when an earlier attempt sent it), for what must be recorded with it. ``sent_at`` is set
        here; the caller records the other columns (message id) itself.
        """
        remembered = _sent_by_earlier_attempt()
        if remembered is not None:
            await self._finish(row, remembered, on_sent)
            return remembered, False
        sent_at = None if claimed else await self._claim(row)
        if sent_at is not None:
            if on_sent is not None:
                async with self._pool.acquire() as conn, conn.transaction():
                    await on_sent(conn, sent_at)
            return sent_at, False
        try:
            await self._sender.send(compose())
        except OutcomeUnknown as err:
            await self._release(row, unknown=True)
            raise ApplicationError(f"the mail server's answer to the message was lost ({err}): whether it took "
                                   "it is unknown", type=OUTCOME_UNKNOWN) from None
        except MailServerFailing as err:
            await self._release(row, unknown=False)
            _server_failing(err)
            raise
        except MailRefused:
            await self._release(row, unknown=False)
            raise
        sent_at = _remember_sent()
        await self._finish(row, sent_at, on_sent)
        return sent_at, True

    async def _claim(self, row: Row) -> datetime | None:
        """Take the row's lease; its sent_at if it already went out (also after waiting for another attempt
        that holds the lease). Refuses for good once ``MAX_UNKNOWN`` attempts ended without an answer."""
        me = uuid.uuid4().hex
        while True:
            async with self._pool.acquire() as conn, conn.transaction():
                found = await conn.fetchrow(
                    f"SELECT sent_at, unknown_outcomes, claimed_until FROM {row.table} WHERE {row.where} FOR UPDATE",
                    *row.args)
                if found is None:
                    raise ApplicationError(f"no {row.table} row for this message", non_retryable=True)
                if found["sent_at"] is not None:
                    return found["sent_at"]
                now = datetime.now(timezone.utc)
                held_until = found["claimed_until"]
                if held_until is None or held_until <= now:
                    # An expired lease: an attempt vanished while it held the message, and may have sent it.
                    unknown = found["unknown_outcomes"] + (held_until is not None)
                    n = len(row.args)
                    if unknown >= MAX_UNKNOWN:
                        await conn.execute(f"UPDATE {row.table} SET unknown_outcomes = ${n + 1}, claimed_until = NULL,"
                                           f" claimed_by = NULL WHERE {row.where}", *row.args, unknown)
                        raise ApplicationError(
                            f"{unknown} attempts ended without the mail server's answer: not sent again without "
                            "staff", type=UNCERTAIN, non_retryable=True)
                    await conn.execute(f"UPDATE {row.table} SET unknown_outcomes = ${n + 1}, claimed_until = ${n + 2},"
                                       f" claimed_by = ${n + 3} WHERE {row.where}", *row.args, unknown, now + LEASE, me)
                    return None
            # Another attempt is sending it right now: wait for it (no connection held meanwhile).
            activity.heartbeat()
            await asyncio.sleep(min(1.0, max(0.05, (held_until - now).total_seconds())))

    async def _release(self, row: Row, *, unknown: bool) -> None:
        async with self._pool.acquire() as conn:
            await conn.execute(f"UPDATE {row.table} SET claimed_until = NULL, claimed_by = NULL,"
                               f" unknown_outcomes = unknown_outcomes + {1 if unknown else 0} WHERE {row.where}",
                               *row.args)

    async def _finish(self, row: Row, sent_at: datetime, on_sent: OnSent | None) -> None:
        sql = (f"UPDATE {row.table} SET sent_at = coalesce(sent_at, ${len(row.args) + 1}),"
               f" claimed_until = NULL, claimed_by = NULL WHERE {row.where}")
        async with self._pool.acquire() as conn:
            if on_sent is None:
                await conn.execute(sql, *row.args, sent_at)
                return
            async with conn.transaction():
                await conn.execute(sql, *row.args, sent_at)
                await on_sent(conn, sent_at)


def lease() -> tuple[datetime, str]:
    """A new lease on a message's row (until when, by whom), for a caller that creates the row claimed."""
    return datetime.now(timezone.utc) + LEASE, uuid.uuid4().hex


def _server_failing(err: MailServerFailing) -> None:
    """The mail server is failing: said where operators look, not through that same mail server."""
    attempt = activity.info().attempt
    fields = {"smtp_code": err.code, "stage": err.stage}
    metrics.count(activity.metric_meter(), metrics.MAIL_SERVER_FAILURES, stage=err.stage)
    if attempt >= LOUD_FROM_ATTEMPT:
        activity.logger.error("the mail server keeps failing; check SMTP_HOST, SMTP_USERNAME/SMTP_PASSWORD "
                              "and the relay's logs", extra=fields)
    else:
        activity.logger.warning("the mail server failed; retrying", extra=fields)


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

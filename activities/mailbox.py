"""The info@ mailbox's activities: list the new mail, process one mail, set one aside.

Processing one mail is idempotent, so a crash at any point and a retry give the same result:

1. fetch it by UID (gone: an earlier attempt finished it; larger than ``MAILBOX_MAX_BYTES``: refused);
2. read it (intake/mail.py; nothing to be made of it: refused, and the workflow quarantines it);
3. keep it in the dossier (``mails``, ``attachments``; the mail's key makes a second copy one);
4. let Temporal act: start the complaint (its id comes from the mail's Message-ID), or hand the
   mail to the complaint it is about (an update whose id comes from the mail: handed over once);
5. only then move it to the processed folder.

A refusal of the mail itself is a non-retryable ``MailUnprocessable``; an unreachable mail server,
dossier or Temporal is retried (the mail stays where it is).
"""

from __future__ import annotations

import asyncio
import hashlib
import re
from dataclasses import dataclass
from datetime import datetime, timezone
from email.utils import parseaddr
from typing import Any

import asyncpg
from pydantic import TypeAdapter, ValidationError
from temporalio import activity
from temporalio.client import Client, WorkflowExecutionStatus, WorkflowUpdateFailedError
from temporalio.exceptions import ApplicationError
from temporalio.service import RPCError, RPCStatusCode

from activities.names import LIST_NEW_MAIL, PROCESS_MAIL, QUARANTINE_MAIL
from complaints.calendar import local_date
from complaints.ids import PATTERN as COMPLAINT_ID
from complaints.ids import complaint_id_for_reference, instance_token, sender_hash
from complaints.models import (
    MAX_LINE,
    MAX_TEXT,
    Channel,
    ComplaintSubmission,
    ComplaintView,
    Contents,
    LetterBouncedInput,
    LetterKind,
    ListMailInput,
    MailList,
    MailOutcome,
    MailProcessed,
    MessageKind,
    MessageReceivedInput,
    Phone,
    ProcessMailInput,
    QuarantineMailInput,
    Route,
    SingleLine,
    Text,
)
from complaints.terms import INTAKE_LOOKBACK
from infra.config import MailboxSettings, Settings
from infra.imap import Mailbox, MailboxUnavailable, MailInfo
from intake.mail import ReadMail, Unreadable, read_mail
from intake.mail_text import labelled_fields, single_line
from intake.start import submit_complaint

UNPROCESSABLE = "MailUnprocessable"
#: Mails handled per look in the mailbox (the rest waits for the next look).
BATCH = 50

_SINGLE_LINE: TypeAdapter[str] = TypeAdapter(SingleLine)
_PHONE: TypeAdapter[str] = TypeAdapter(Phone)
_TEXT: TypeAdapter[str] = TypeAdapter(Text)
_RUNNING = (None, WorkflowExecutionStatus.RUNNING)


def unprocessable(reason: str) -> ApplicationError:
    """The mail itself cannot be processed (it goes to the quarantine folder); not retried."""
    return ApplicationError(reason, type=UNPROCESSABLE, non_retryable=True)


@dataclass(frozen=True)
class Target:
    """The complaint a mail is about, and what the mail is to it."""

    complaint_id: str
    kind: MessageKind
    #: For a bounce: the Message-ID of our letter that bounced.
    letter: str | None = None


class MailboxActivities:
    def __init__(self, pool: asyncpg.Pool, settings: Settings, client: Client) -> None:
        self._pool = pool
        self._settings = settings
        self._client = client
        self._own_address = parseaddr(settings.mail_from)[1].lower()
        domain = self._own_address.rpartition("@")[2] or "level-up.nl"
        #: Our letters' Message-IDs: <complaint-<16 hex>.<kind>.<n>[.<instance>]@<domain> (outbox.message_id).
        self._our_letter = re.compile(rf"<({COMPLAINT_ID.pattern})\.([a-z-]+)\.\d+(?:\.([0-9a-f]{{12}}))?"
                                      rf"@{re.escape(domain)}>", re.IGNORECASE)

    @property
    def _mailbox(self) -> MailboxSettings:
        if self._settings.mailbox is None:
            raise ApplicationError("no mailbox is configured (MAILBOX_URL)", non_retryable=True)
        return self._settings.mailbox

    # ------------------------------------------------------------------ list

    @activity.defn(name=LIST_NEW_MAIL)
    async def list_new_mail(self, input: ListMailInput) -> MailList:
        """The mail waiting in the folder (creating the processed and quarantine folders if needed)."""
        mailbox = self._mailbox

        def look() -> MailList:
            with Mailbox(mailbox) as box:
                box.ensure_folder(mailbox.processed_folder)
                box.ensure_folder(mailbox.quarantine_folder)
                uidvalidity = box.select(input.folder)
                return MailList(uidvalidity=uidvalidity, uids=box.uids(BATCH), poll_seconds=mailbox.poll_seconds)

        return await _retryable(asyncio.to_thread(look))

    # ------------------------------------------------------------------ process one

    @activity.defn(name=PROCESS_MAIL)
    async def process_mail(self, input: ProcessMailInput) -> MailProcessed:
        mailbox = self._mailbox
        activity.heartbeat("fetch")
        fetched = await _retryable(asyncio.to_thread(self._fetch, input, mailbox))
        if fetched is None:
            return MailProcessed(outcome=MailOutcome.GONE)
        info, raw = fetched
        if raw is None:
            raise unprocessable(f"larger than MAILBOX_MAX_BYTES ({info.size} > {mailbox.max_bytes} bytes)")
        try:
            mail = read_mail(raw)
        except Unreadable as err:
            raise unprocessable(str(err)) from None
        except Exception as err:  # noqa: BLE001 - whatever trips over this mail must not stop the next one
            raise unprocessable(f"the mail cannot be read ({type(err).__name__})") from None
        try:
            activity.heartbeat("act")
            result, kind = await self._act(mail, info, input)
            activity.heartbeat("move")
            await _retryable(asyncio.to_thread(self._move, input, mailbox, mailbox.processed_folder))
            await self._pool.execute(
                "UPDATE mails SET processed_at = now() WHERE ref = $1 AND folder = $2 AND uid = $3"
                " AND processed_at IS NULL", mail.ref, input.folder, input.uid)
        except (asyncpg.PostgresError, asyncpg.InterfaceError, OSError) as err:
            raise _unavailable("the dossier", err) from None
        activity.logger.info("mail processed", extra={"outcome_of_mail": result.outcome.value, "kind": kind,
                                                      "uid": input.uid, "new_complaint": result.created})
        return result

    def _fetch(self, input: ProcessMailInput, mailbox: MailboxSettings) -> tuple[MailInfo, bytes | None] | None:
        with Mailbox(mailbox) as box:
            if box.select(input.folder) != input.uidvalidity:
                return None  # the folder was recreated: the next look lists it afresh
            info = box.info(input.uid)
            if info is None:
                return None
            if info.size > mailbox.max_bytes:
                return info, None
            raw = box.fetch(input.uid)
            return None if raw is None else (info, raw)

    def _move(self, input: ProcessMailInput, mailbox: MailboxSettings, folder: str) -> None:
        with Mailbox(mailbox) as box:
            if box.select(input.folder) == input.uidvalidity:
                box.move(input.uid, folder)

    async def _act(self, mail: ReadMail, info: MailInfo, input: ProcessMailInput) -> tuple[MailProcessed, str]:
        """Decide what the mail is, keep it, and let Temporal act on it."""
        sender = (mail.from_address or "").lower()
        if sender == self._own_address:
            await self._store(mail, info, input, None, "ignored", "our own mail")
            return MailProcessed(outcome=MailOutcome.IGNORED), "own"
        target = await self._target(mail)
        if target is not None:
            if await self._hand_over(mail, info, input, target):
                return MailProcessed(outcome=MailOutcome.MESSAGE, complaint_id=target.complaint_id), target.kind.value
        if mail.bounce is not None or mail.automatic is not None:
            reason = "a bounce about nothing of ours" if mail.bounce else f"machine mail ({mail.automatic})"
            await self._store(mail, info, input, None, "ignored", reason)
            return MailProcessed(outcome=MailOutcome.IGNORED), "machine"
        submission = self._submission(mail, info)
        started = await _retryable(submit_complaint(self._client, submission, task_queue=self._settings.task_queue,
                                                    catalogue=self._settings.product_catalogue))
        key = _key(mail)
        if started.conflict:
            # Another complaint already has this Message-ID (a sender that reuses it): this mail is known
            # by the hash of its bytes instead, as a mail without a Message-ID is.
            key = "sha256:" + mail.sha256
            started = await _retryable(submit_complaint(
                self._client, submission.model_copy(update={"reference": key}), task_queue=self._settings.task_queue,
                catalogue=self._settings.product_catalogue))
        await self._store(mail, info, input, started.complaint_id, "complaint", None, key=key)
        return MailProcessed(outcome=MailOutcome.COMPLAINT, complaint_id=started.complaint_id,
                             created=started.created), "complaint"

    async def _target(self, mail: ReadMail) -> Target | None:
        """The running complaint this mail is about: a bounce of our letter, a reply (In-Reply-To or
        References naming our letter or the complainant's own first mail), or its number in the subject."""
        if mail.bounce is not None:
            for message_id in mail.bounce.message_ids:
                ours = self._our_letter.fullmatch(message_id)
                if ours and ours.group(2) in LetterKind._value2member_map_ and \
                        await self._running(ours.group(1).lower(), ours.group(3)):
                    letter = message_id if mail.bounce.permanent else None
                    return Target(ours.group(1).lower(), MessageKind.BOUNCE, letter)
            return None
        kind = MessageKind.AUTO_REPLY if mail.automatic else MessageKind.REPLY
        candidates: list[tuple[str, str | None]] = []
        for reference in mail.references:
            ours = self._our_letter.fullmatch(reference)
            candidates.append((ours.group(1).lower(), ours.group(3)) if ours
                              else (complaint_id_for_reference(reference), None))
        candidates += [(m.lower(), None) for m in COMPLAINT_ID.findall(mail.subject)]
        # Our letter's Message-ID says which complaint of its id it was; the subject's number and the
        # complainant's first mail do not: for an id whose letter this mail answers, only that letter counts.
        answered = {complaint_id for complaint_id, instance in candidates if instance}
        candidates = [(c, i) for c, i in candidates if i or c not in answered]
        for complaint_id, instance in dict.fromkeys(candidates):
            if await self._running(complaint_id, instance):
                return Target(complaint_id, kind)
        return None

    async def _running(self, complaint_id: str, instance: str | None = None) -> bool:
        """Whether the complaint's workflow runs (closed complaints wait out their year running; after the
        purge it has completed, and mail about it is new mail); with ``instance`` (from our letter's
        Message-ID), whether it is that complaint and not a later one that was given the same id."""
        try:
            description = await self._client.get_workflow_handle(complaint_id).describe()
        except RPCError as err:
            if err.status == RPCStatusCode.NOT_FOUND:
                return False
            raise _unavailable("Temporal", err) from None
        first_run = description.raw_description.workflow_execution_info.first_run_id
        if instance is not None and first_run and instance_token(first_run) != instance.lower():
            return False
        return description.status in _RUNNING

    async def _hand_over(self, mail: ReadMail, info: MailInfo, input: ProcessMailInput, target: Target) -> bool:
        """Keep the mail on its complaint and tell the workflow; False if the complaint has just ended."""
        await self._store(mail, info, input, target.complaint_id, target.kind.value, None)
        handle = self._client.get_workflow_handle(target.complaint_id)
        update_id = f"mail-{mail.ref}"
        try:
            if target.letter is not None:
                try:
                    await handle.execute_update(
                        "letter_bounced", LetterBouncedInput(ref=mail.ref, at=info.received_at,
                                                             message_id=target.letter,
                                                             reason=self._bounce_reason(mail)),
                        id=update_id, result_type=ComplaintView)
                    return True
                except WorkflowUpdateFailedError:
                    update_id += "-message"  # not a letter it knows: kept as correspondence instead
            contents = self._contents(mail) if target.kind is MessageKind.REPLY else None
            await handle.execute_update(
                "receive_message", MessageReceivedInput(ref=mail.ref, at=info.received_at, kind=target.kind,
                                                        sender=sender_hash(mail.from_address or ""),
                                                        contents=contents),
                id=update_id, result_type=ComplaintView)
        except WorkflowUpdateFailedError as err:
            raise unprocessable(f"the complaint refused the mail ({_cause(err)})") from None
        except RPCError as err:
            if err.status == RPCStatusCode.NOT_FOUND:
                await self._pool.execute("UPDATE mails SET complaint_id = NULL, sequence = NULL WHERE mail_key = $1",
                                         _key(mail))
                return False
            raise _unavailable("Temporal", err) from None
        return True

    @staticmethod
    def _bounce_reason(mail: ReadMail) -> str:
        assert mail.bounce is not None
        return f"DSN status {mail.bounce.status}" if mail.bounce.status else "permanent failure"

    # ------------------------------------------------------------------ the complaint a mail is

    def _contents(self, mail: ReadMail) -> Contents | None:
        fields, _ = labelled_fields(mail.new_text)
        contents = Contents(
            organisation=_valid(_SINGLE_LINE, single_line(fields.get("organisation", ""))),
            phone=_valid(_PHONE, single_line(fields.get("phone", ""))),
            product=_valid(_SINGLE_LINE, single_line(fields.get("product", ""))),
            motivation=_valid(_TEXT, fields.get("motivation", "")))
        contents.product_code = self._settings.product_catalogue.match(contents.product)
        return contents if contents.given() else None

    def _submission(self, mail: ReadMail, info: MailInfo) -> ComplaintSubmission:
        """A new formal complaint from the mail: what its labelled lines say, else its text as the description."""
        fields, outside = labelled_fields(mail.new_text)
        description = fields.get("description") or outside or mail.new_text or mail.text
        if mail.forwarded_text:
            description = f"{description}\n\nDoorgestuurd bericht:\n{mail.forwarded_text}".strip()
        description = description.strip() or mail.subject or "(geen tekst; zie de bijlagen)"
        if len(description) > MAX_TEXT:
            note = "\n[...] (ingekort; de hele e-mail staat in het dossier)"
            description = description[:MAX_TEXT - len(note)] + note
        contents = self._contents(mail) or Contents()
        name = (_valid(_SINGLE_LINE, single_line(fields.get("name", "")))
                or _valid(_SINGLE_LINE, (mail.from_name or "")[:MAX_LINE]) or mail.from_address)
        received = info.received_at
        written = mail.date if mail.date is not None and mail.date.year >= 2000 else received
        if local_date(written) < local_date(INTAKE_LOOKBACK.before(received)):
            written = received  # a sender's clock years off: the receipt is the better date
        reference = mail.key if len(mail.key) <= MAX_LINE else \
            "message-id-sha256:" + hashlib.sha256(mail.key.encode()).hexdigest()
        data: dict[str, Any] = {
            "reference": reference, "channel": Channel.EMAIL, "route": Route.FORMAL,
            "complainant": {"name": name, "email": mail.from_address, "organisation": contents.organisation,
                            "phone": contents.phone},
            "product": contents.product, "motivation": contents.motivation,
            "submitted_on": min(local_date(written), local_date(received)), "received_at": received,
            "description": _valid(_TEXT, description) or "(de tekst van de e-mail kon niet worden overgenomen)",
        }
        try:
            return ComplaintSubmission.model_validate(data, context={"now": datetime.now(timezone.utc)})
        except ValidationError as err:
            fields_wrong = ", ".join(".".join(str(p) for p in e["loc"]) for e in err.errors(include_input=False))
            raise unprocessable(f"no complaint can be made of it ({fields_wrong})") from None

    # ------------------------------------------------------------------ the dossier

    async def _store(self, mail: ReadMail, info: MailInfo, input: ProcessMailInput, complaint_id: str | None,
                     kind: str, reason: str | None, key: str | None = None) -> None:
        """Keep the mail (and its attachments) in the dossier, once: a mail kept before is left as it is.

        Mail about a complaint is kept whole (it is erased with the complaint's personal data); other
        mail only as a line that says what it was and why it was left alone.
        """
        keep = complaint_id is not None
        key = key or _key(mail)
        try:
            async with self._pool.acquire() as conn, conn.transaction():
                if keep:
                    await conn.execute("SELECT pg_advisory_xact_lock(hashtext($1))", complaint_id)
                sequence = await conn.fetchval(
                    "SELECT coalesce(max(sequence), 0) + 1 FROM mails WHERE complaint_id = $1", complaint_id) \
                    if keep else None
                inserted = await conn.fetchval(
                    """
                    INSERT INTO mails (mail_key, ref, complaint_id, sequence, kind, received_at, size, sha256, folder,
                                       uidvalidity, uid, reason, message_id, from_address, from_name, subject, raw)
                    VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17)
                    ON CONFLICT (mail_key) DO NOTHING RETURNING mail_key
                    """,
                    key, mail.ref, complaint_id, sequence, kind, info.received_at, info.size, mail.sha256,
                    input.folder, input.uidvalidity, input.uid, reason,
                    *((mail.message_id, mail.from_address, mail.from_name, mail.subject, mail.raw) if keep
                      else (None, None, None, None, None)))
                if inserted is None or not keep:
                    return
                number = await conn.fetchval(
                    "SELECT coalesce(max(number), 0) FROM attachments WHERE complaint_id = $1", complaint_id)
                await conn.executemany(
                    "INSERT INTO attachments (complaint_id, number, mail_key, content_type, size, sha256, filename, "
                    "data) VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
                    [(complaint_id, number + i, key, a.content_type, a.size, a.sha256, a.filename, a.data)
                     for i, a in enumerate(mail.attachments, 1)])
        except (asyncpg.PostgresError, OSError) as err:
            raise _unavailable("the dossier", err) from None

    # ------------------------------------------------------------------ quarantine

    @activity.defn(name=QUARANTINE_MAIL)
    async def quarantine_mail(self, input: QuarantineMailInput) -> None:
        """Set a mail that cannot be processed aside (the quarantine folder), and note why in the dossier."""
        mailbox = self._mailbox
        await _retryable(asyncio.to_thread(self._move, ProcessMailInput(
            folder=input.folder, uidvalidity=input.uidvalidity, uid=input.uid), mailbox, mailbox.quarantine_folder))
        await self._pool.execute(
            """
            INSERT INTO mails (mail_key, ref, kind, size, folder, uidvalidity, uid, reason, processed_at)
            VALUES ($1, $2, 'quarantined', 0, $3, $4, $5, $6, now()) ON CONFLICT (mail_key) DO NOTHING
            """,
            key := f"quarantined:{input.folder}:{input.uidvalidity}:{input.uid}",
            hashlib.sha256(key.encode()).hexdigest()[:16], input.folder, input.uidvalidity, input.uid, input.reason)
        activity.logger.warning("mail quarantined", extra={"uid": input.uid, "folder": mailbox.quarantine_folder})


def _key(mail: ReadMail) -> str:
    return mail.key if len(mail.key) <= 1000 else "message-id-sha256:" + hashlib.sha256(mail.key.encode()).hexdigest()


def _valid(adapter: TypeAdapter[str], value: str | None) -> str | None:
    """``value`` if the model's rules accept it (a labelled phone number that is no phone number is missing)."""
    if not value:
        return None
    try:
        return adapter.validate_python(value)
    except ValidationError:
        return None


def _cause(err: WorkflowUpdateFailedError) -> str:
    cause = err.cause
    return str(getattr(cause, "type", None) or type(cause).__name__)


def _unavailable(what: str, err: BaseException) -> ApplicationError:
    return ApplicationError(f"{what} is unavailable ({type(err).__name__})", type="MailboxUnavailable")


async def _retryable(awaitable: Any) -> Any:
    """Await; a mail server that cannot be reached becomes a retryable failure, named without secrets."""
    try:
        return await awaitable
    except MailboxUnavailable as err:
        raise ApplicationError(str(err), type="MailboxUnavailable") from None
    except RPCError as err:
        raise _unavailable("Temporal", err) from None


"""Reading one mail from the info@ mailbox: who sent it, what it says, what it carries, and what kind
of mail it is (a person's mail, an automatic reply, a bounce).

:func:`read_mail` turns the raw bytes into a :class:`ReadMail`, or raises :class:`Unreadable` for a
mail nothing can be made of (no sender address, broken structure without any text). It never
trusts a header to parse: every header is read guardedly, and a charset Python does not know is
decoded as well as it can be. The raw bytes are kept as they came.
"""

from __future__ import annotations

import email
import email.policy
import hashlib
import re
from dataclasses import dataclass, field
from datetime import datetime, timezone
from email.header import decode_header, make_header
from email.message import EmailMessage, Message
from email.utils import getaddresses, parsedate_to_datetime

from intake.mail_text import html_to_text, new_text, without_marks

MAX_ATTACHMENTS = 100

_MESSAGE_ID = re.compile(r"<[^<>\s]+>")
_QUOTED_MESSAGE_ID = re.compile(r"(?im)^[ \t>]*Message-ID:[ \t]*(<[^<>\s]+>)")
_DSN_STATUS = re.compile(r"\b([245])\.\d{1,3}\.\d{1,3}\b")
_BROKEN_STRUCTURE = ("StartBoundaryNotFoundDefect", "NoBoundaryInMultipartDefect", "CloseBoundaryNotFoundDefect",
                     "MultipartInvariantViolationDefect", "MissingHeaderBodySeparatorDefect")
_MACHINE_SENDERS = ("mailer-daemon", "postmaster")


class Unreadable(Exception):
    """Nothing can be made of this mail; the message says why, without any of its content."""


@dataclass(frozen=True)
class Attachment:
    filename: str
    content_type: str
    data: bytes

    @property
    def size(self) -> int:
        return len(self.data)

    @property
    def sha256(self) -> str:
        return hashlib.sha256(self.data).hexdigest()


@dataclass(frozen=True)
class Bounce:
    """A delivery failure report: which messages it is about and how it failed."""

    #: Message-IDs of the mail(s) that could not be delivered, as the bounce quotes them.
    message_ids: tuple[str, ...]
    #: The DSN status, e.g. ``5.1.1`` (None when the bounce gives none).
    status: str | None
    #: A permanent failure (5.x.x, ``Action: failed``); a delay notice is not.
    permanent: bool


@dataclass(frozen=True)
class ReadMail:
    raw: bytes
    message_id: str | None
    from_name: str | None
    from_address: str | None
    date: datetime | None
    subject: str
    #: The whole readable text, quotes included (for people: ``admin.py message``).
    text: str
    #: What the writer wrote now: without quoted earlier mail and signature.
    new_text: str
    #: The readable text of mails attached whole (a forwarded complaint).
    forwarded_text: str
    attachments: tuple[Attachment, ...]
    #: In-Reply-To, then References: the Message-IDs this mail answers.
    references: tuple[str, ...]
    #: Why this is machine mail (``Auto-Submitted: auto-replied``, ...); None when a person wrote it.
    automatic: str | None
    bounce: Bounce | None
    defects: tuple[str, ...] = field(default=())

    @property
    def sha256(self) -> str:
        return hashlib.sha256(self.raw).hexdigest()

    @property
    def key(self) -> str:
        """What makes two copies of a mail one: its Message-ID, else a hash of its bytes."""
        return self.message_id if self.message_id else "sha256:" + self.sha256

    @property
    def ref(self) -> str:
        """The key as a short hash: the mail's name in workflow state and history (nothing personal)."""
        return hashlib.sha256(self.key.encode("utf-8")).hexdigest()[:16]


def read_mail(raw: bytes) -> ReadMail:
    """Read ``raw`` (the bytes as the mailbox holds them); :class:`Unreadable` if nothing can be made of it."""
    try:
        msg = email.message_from_bytes(raw, policy=email.policy.default)
    except Exception as err:  # noqa: BLE001 - the parser is lenient; this is a last resort
        raise Unreadable(f"the message cannot be parsed ({type(err).__name__})") from None
    assert isinstance(msg, EmailMessage)
    headers = _Headers(msg, raw)
    from_name, from_address = headers.sender()
    if from_address is None:
        raise Unreadable("no sender address (From)")
    parts = _Parts(msg)
    defects = tuple(sorted({type(d).__name__ for part in msg.walk() for d in part.defects}))
    if not parts.text.strip() and not parts.attachments and any(d in _BROKEN_STRUCTURE for d in defects):
        raise Unreadable("broken MIME structure and no readable text")
    references = tuple(dict.fromkeys(
        _MESSAGE_ID.findall(headers.get("In-Reply-To") or "") + _MESSAGE_ID.findall(headers.get("References") or "")))
    message_id = _first(_MESSAGE_ID.findall(headers.get("Message-ID") or ""))
    return ReadMail(
        raw=raw, message_id=message_id, from_name=from_name, from_address=from_address,
        date=headers.date(), subject=_one_line(headers.get("Subject") or ""),
        text=without_marks(parts.text), new_text=new_text(parts.text), forwarded_text=parts.forwarded_text,
        attachments=tuple(parts.attachments[:MAX_ATTACHMENTS]), references=references,
        automatic=headers.automatic(from_address), bounce=_bounce(msg, raw, headers, from_address),
        defects=defects)


def _first(items: list[str]) -> str | None:
    return items[0] if items else None


def _one_line(value: str) -> str:
    return re.sub(r"\s+", " ", value).strip()


# ------------------------------------------------------------------ headers, guarded


class _Headers:
    def __init__(self, msg: EmailMessage, raw: bytes) -> None:
        self._msg = msg
        self._raw = raw
        self._compat: Message | None = None

    def get(self, name: str) -> str | None:
        """The header's value, decoded; a header the parser chokes on is decoded by hand."""
        try:
            value = self._msg.get(name)
            return None if value is None else str(value)
        except Exception:  # noqa: BLE001 - a malformed header must not stop the mail
            return self._by_hand(name)

    def _by_hand(self, name: str) -> str | None:
        if self._compat is None:
            self._compat = email.message_from_bytes(self._raw, policy=email.policy.compat32)
        value = self._compat.get(name)
        if value is None:
            return None
        try:
            return str(make_header(decode_header(str(value))))
        except Exception:  # noqa: BLE001
            return str(value)

    def sender(self) -> tuple[str | None, str | None]:
        """From's display name (encoded words decoded) and address; never Reply-To."""
        value = self.get("From")
        if not value:
            return None, None
        try:
            name, address = getaddresses([value])[0]
        except Exception:  # noqa: BLE001
            return None, None
        address = address.strip()
        if "@" not in address or not re.fullmatch(r"[^\s@<>]+@[^\s@<>]+\.[^\s@<>]+", address):
            return None, None
        return (_one_line(name) or None), address

    def date(self) -> datetime | None:
        value = self.get("Date")
        if not value:
            return None
        try:
            moment = parsedate_to_datetime(value)
        except (TypeError, ValueError, IndexError, OverflowError):
            return None
        return moment if moment.tzinfo else moment.replace(tzinfo=timezone.utc)

    def automatic(self, from_address: str) -> str | None:
        """Why this mail was sent by a machine (RFC 3834 and the headers mail systems really use)."""
        auto = (self.get("Auto-Submitted") or "").split(";")[0].strip().lower()
        if auto and auto != "no":
            return f"Auto-Submitted: {auto}"
        for name in ("X-Autoreply", "X-Autorespond", "X-Autoresponder", "X-Autogenerated"):
            if self.get(name) is not None:
                return name
        precedence = (self.get("Precedence") or self.get("X-Precedence") or "").strip().lower()
        if precedence in ("bulk", "junk", "list", "auto_reply"):
            return f"Precedence: {precedence}"
        if self.get("List-Id") is not None:
            return "List-Id"
        if self.get("X-Auto-Response-Suppress") is not None and self.get("X-MS-Exchange-Inbox-Rules-Loop") is not None:
            return "X-Auto-Response-Suppress with X-MS-Exchange-Inbox-Rules-Loop"
        if (self.get("X-Loop") or "").strip().lower() in ("yes", "true"):
            return "X-Loop"
        if self.empty_return_path():
            return "empty Return-Path"
        if from_address.split("@")[0].lower() in _MACHINE_SENDERS:
            return "sent by " + from_address.split("@")[0].upper()
        return None

    def empty_return_path(self) -> bool:
        return (self.get("Return-Path") or "").strip() in ("<>", "< >")


# ------------------------------------------------------------------ body and attachments


def _decoded(part: Message) -> str:
    """A text part's words, whatever its charset says (unknown charsets: UTF-8, else Windows-1252)."""
    payload = part.get_payload(decode=True)
    if not isinstance(payload, bytes):
        payload = str(part.get_payload()).encode("utf-8", "replace")
    charset = (part.get_content_charset() or "utf-8").lower()
    if charset in ("iso-8859-1", "latin-1", "latin1", "us-ascii", "ascii"):
        charset = "cp1252"  # what mail declared as Latin-1 or ASCII really is, more often than not
    for candidate in (charset, "utf-8"):
        try:
            return payload.decode(candidate)
        except (LookupError, UnicodeDecodeError):
            continue
    return payload.decode("cp1252", errors="replace")


def _filename(part: Message, number: int) -> str:
    try:
        name = part.get_filename()
    except Exception:  # noqa: BLE001
        name = None
    name = re.sub(r"[\x00-\x1f\x7f/\\]+", "_", name or "").strip(" .")[:200]
    if name:
        return name
    subtype = part.get_content_subtype() or "bin"
    return f"bijlage-{number}.{'eml' if part.get_content_type() == 'message/rfc822' else subtype}"


class _Parts:
    """The body text (plain preferred, else HTML made into text) and every other part as an attachment."""

    def __init__(self, msg: EmailMessage) -> None:
        self.attachments: list[Attachment] = []
        self.forwarded: list[str] = []
        try:
            body = msg.get_body(preferencelist=("plain", "html"))
        except Exception:  # noqa: BLE001
            body = None
        self._body = body
        texts = [self._text_of(body)] if body is not None else []
        self._extra: list[str] = []
        self._collect(msg)
        self.text = "\n\n".join(t for t in texts + self._extra if t.strip())
        self.forwarded_text = "\n\n".join(self.forwarded)

    @staticmethod
    def _text_of(part: Message) -> str:
        text = _decoded(part)
        return html_to_text(text) if part.get_content_type() == "text/html" else text.replace("\r\n", "\n")

    def _collect(self, part: Message) -> None:
        if part is self._body:
            return
        content_type = part.get_content_type()
        disposition = (part.get_content_disposition() or "").lower()
        if content_type == "message/rfc822" or (content_type == "text/rfc822-headers" and disposition != "inline"):
            self._attach_message(part)
            return
        if part.is_multipart():
            for sub in part.get_payload():
                if content_type == "multipart/alternative" and not sub.is_multipart():
                    continue  # the same words as the body, in another form
                self._collect(sub)
            return
        if content_type in ("application/ms-tnef", "application/vnd.ms-tnef") or \
                _filename(part, 0).lower() == "winmail.dat":
            self._unpack_tnef(part)
            return
        if content_type == "text/plain" and disposition != "attachment" and not part.get_filename():
            self._extra.append(_decoded(part))  # more text inline (Apple Mail splits around attachments)
            return
        data = part.get_payload(decode=True)
        if isinstance(data, bytes):
            self._add(_filename(part, len(self.attachments) + 1), content_type, data)

    def _add(self, filename: str, content_type: str, data: bytes) -> None:
        self.attachments.append(Attachment(filename=filename, content_type=content_type, data=data))

    def _attach_message(self, part: Message) -> None:
        """An attached mail is kept whole (and its words count for a forwarded complaint)."""
        inner = part.get_payload()
        if isinstance(inner, list) and inner:
            inner = inner[0]
        if isinstance(inner, Message):
            data = inner.as_bytes(policy=email.policy.default.clone(linesep="\r\n")) \
                if isinstance(inner, EmailMessage) else inner.as_bytes()
            try:
                forwarded = _Parts(inner if isinstance(inner, EmailMessage) else
                                   email.message_from_bytes(data, policy=email.policy.default))
                self.forwarded.append(new_text(forwarded.text) or forwarded.text)
            except Exception:  # noqa: BLE001
                pass
        else:
            data = part.get_payload(decode=True) or str(part.get_payload()).encode("utf-8", "replace")
        name = _filename(part, len(self.attachments) + 1)
        if not name.lower().endswith(".eml"):
            name = name.rsplit(".", 1)[0] + ".eml" if "." in name else name + ".eml"
        self._add(name, "message/rfc822", data)

    def _unpack_tnef(self, part: Message) -> None:
        """``winmail.dat``: Outlook's wrapper; its files are what the sender attached."""
        data = part.get_payload(decode=True) or b""
        try:
            import tnefparse

            tnef = tnefparse.TNEF(data, do_checksum=False)
            files = [(a.long_filename() or a.name or "", a.data) for a in tnef.attachments]
            body = tnef.htmlbody or tnef.body
        except Exception:  # noqa: BLE001 - not TNEF after all, or damaged: keep it as it came
            self._add(_filename(part, len(self.attachments) + 1), part.get_content_type(), data)
            return
        for name, content in files:
            if isinstance(name, bytes):
                name = name.decode("cp1252", errors="replace")
            name = re.sub(r"[\x00-\x1f\x7f/\\]+", "_", str(name)).strip(" .") or \
                f"bijlage-{len(self.attachments) + 1}.bin"
            self._add(name, _guess_type(name), bytes(content or b""))
        if body and self._body is None:
            text = body.decode("cp1252", errors="replace") if isinstance(body, bytes) else str(body)
            self._extra.append(html_to_text(text) if "<" in text else text)


def _guess_type(filename: str) -> str:
    import mimetypes

    return mimetypes.guess_type(filename)[0] or "application/octet-stream"


# ------------------------------------------------------------------ bounces


def _bounce(msg: EmailMessage, raw: bytes, headers: _Headers, from_address: str) -> Bounce | None:
    """A delivery status notification (RFC 3464), or one of the common non-standard bounces from
    MAILER-DAEMON that quote the message (qmail, Exim, old Exchange)."""
    quoted = _quoted_message_ids(raw)
    if msg.get_content_type() == "multipart/report" and \
            (msg.get_param("report-type") or "").lower() == "delivery-status":
        actions, statuses = _delivery_status(msg)
        status = _first(statuses) or _first(_DSN_STATUS.findall(_body_text(raw)))
        permanent = "failed" in actions or any(s.startswith("5") for s in statuses) if (actions or statuses) else True
        return Bounce(message_ids=quoted, status=status, permanent=permanent)
    sender = from_address.split("@")[0].lower()
    failures = _permanent_failures(raw)
    if failures or (sender in _MACHINE_SENDERS and headers.empty_return_path() and quoted):
        codes = re.findall(r"\b(5\.\d{1,3}\.\d{1,3})\b", _body_text(raw))
        return Bounce(message_ids=quoted, status=_first(codes), permanent=True)
    return None


def _delivery_status(msg: EmailMessage) -> tuple[list[str], list[str]]:
    actions: list[str] = []
    statuses: list[str] = []
    for part in msg.walk():
        if part.get_content_type() != "message/delivery-status":
            continue
        blocks = part.get_payload()
        for block in blocks if isinstance(blocks, list) else []:
            action = str(block.get("Action", "")).strip().lower()
            status = str(block.get("Status", "")).strip().split(" ")[0]
            if action:
                actions.append(action)
            if re.fullmatch(r"[245]\.\d{1,3}\.\d{1,3}", status):
                statuses.append(status)
    return actions, statuses


def _body_text(raw: bytes) -> str:
    head, _, body = raw.replace(b"\r\n", b"\n").partition(b"\n\n")
    return body.decode("latin-1")


def _quoted_message_ids(raw: bytes) -> tuple[str, ...]:
    """Message-IDs the body quotes in a ``Message-ID:`` line (the bounced mail's own headers)."""
    return tuple(dict.fromkeys(_QUOTED_MESSAGE_ID.findall(_body_text(raw))))


def _permanent_failures(raw: bytes) -> frozenset[bytes]:
    """flufl.bounce's detectors (qmail, Exim, Postfix, Sendmail, Exchange and more) on a compat32 copy."""
    try:
        from flufl.bounce import scan_message

        return scan_message(email.message_from_bytes(raw, policy=email.policy.compat32))
    except Exception:  # noqa: BLE001 - a detector that trips over a strange mail finds nothing
        return frozenset()

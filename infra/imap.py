"""The IMAP connection to the info@ mailbox: standard IMAP4rev1 (RFC 3501) with UIDPLUS and MOVE
where the server has them, so any server will do (Dovecot, Microsoft 365, Gmail, pymap).

Mail is addressed by UID within a folder's UIDVALIDITY; nothing is ever deleted: a mail leaves the
folder of new mail only by MOVE (or COPY and, with UIDPLUS, the expunge of that one UID) into the
processed or quarantine folder. The blocking ``imaplib`` runs in a thread; every method raises
:class:`MailboxUnavailable` when the server cannot be reached or refuses, with a message that
names the host, never the password or a mail's content.
"""

from __future__ import annotations

import imaplib
import re
import socket
import ssl
from dataclasses import dataclass
from datetime import datetime
from types import TracebackType

from infra.config import MailboxSettings

TIMEOUT = 30.0  # seconds, for connecting and for each command

_UID = re.compile(rb"\bUID (\d+)")
_SIZE = re.compile(rb"\bRFC822\.SIZE (\d+)")
_INTERNALDATE = re.compile(rb'\bINTERNALDATE "([^"]+)"')


class MailboxUnavailable(Exception):
    """The mailbox server cannot be reached or refused a command (retry later)."""


@dataclass(frozen=True)
class MailInfo:
    uid: int
    size: int
    #: When the server received the mail (INTERNALDATE).
    received_at: datetime


def encode_folder(name: str) -> str:
    """A folder name as IMAP writes it: modified UTF-7 (RFC 3501 5.1.3), quoted."""
    out, pending = [], ""

    def flush() -> None:
        nonlocal pending
        if pending:
            import base64

            encoded = base64.b64encode(pending.encode("utf-16-be")).decode("ascii").rstrip("=").replace("/", ",")
            out.append(f"&{encoded}-")
            pending = ""

    for char in name:
        if 0x20 <= ord(char) <= 0x7E:
            flush()
            out.append("&-" if char == "&" else char)
        else:
            pending += char
    flush()
    text = "".join(out)
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


class Mailbox:
    """One logged-in connection (a context manager); use it from one thread."""

    def __init__(self, settings: MailboxSettings, timeout: float = TIMEOUT) -> None:
        self._settings = settings
        self._timeout = timeout
        self._imap: imaplib.IMAP4 | None = None
        self._capabilities: set[str] = set()
        self._selected: str | None = None

    # -------------------------------------------------------------- connecting

    def __enter__(self) -> Mailbox:
        self._imap = self._connect()
        return self

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None,
                 trace: TracebackType | None) -> None:
        imap, self._imap = self._imap, None
        if imap is not None:
            try:
                imap.logout()
            except Exception:  # noqa: BLE001 - the connection is being dropped anyway
                pass

    def _tls(self) -> ssl.SSLContext:
        context = ssl.create_default_context()
        if self._settings.tls_ca is not None:
            context.load_verify_locations(cafile=str(self._settings.tls_ca))
        return context

    def _connect(self) -> imaplib.IMAP4:
        s = self._settings
        try:
            if s.scheme == "imaps":
                imap: imaplib.IMAP4 = imaplib.IMAP4_SSL(s.host, s.port, ssl_context=self._tls(), timeout=self._timeout)
            else:
                imap = imaplib.IMAP4(s.host, s.port, timeout=self._timeout)
                if "STARTTLS" in imap.capabilities:
                    imap.starttls(ssl_context=self._tls())
                elif not s.loopback:
                    imap.shutdown()
                    raise MailboxUnavailable(f"{s.host}:{s.port} offers no STARTTLS: the password would travel "
                                             "in the clear (use imaps://, or a server that offers STARTTLS)")
            imap.login(s.user, s.password)
            typ, data = imap.capability()
            words = data[0].decode("ascii", "replace").upper().split() if typ == "OK" and data and data[0] else []
            self._capabilities = set(words) | set(imap.capabilities)
            return imap
        except MailboxUnavailable:
            raise
        except imaplib.IMAP4.error as err:
            raise MailboxUnavailable(f"{s.host}:{s.port} refused the login of {s.user}: {_reply(err)}") from None
        except ssl.SSLError as err:
            raise MailboxUnavailable(f"{s.host}:{s.port}: TLS failed ({err.reason or type(err).__name__})") from None
        except (OSError, socket.timeout) as err:
            raise MailboxUnavailable(f"cannot reach the mailbox at {s.host}:{s.port} "
                                     f"({err.strerror or type(err).__name__})") from None

    @property
    def imap(self) -> imaplib.IMAP4:
        if self._imap is None:
            raise RuntimeError("not connected: use the Mailbox as a context manager")
        return self._imap

    def _ok(self, what: str, typ: str, data: list[object]) -> list[object]:
        if typ != "OK":
            raise MailboxUnavailable(f"{self._settings.host}: {what} refused: {_first(data)}")
        return data

    def _command(self, what: str, *args: object, uid: bool = False) -> list[object]:
        try:
            if uid:
                typ, data = self.imap.uid(*args)  # type: ignore[arg-type]
            else:
                typ, data = getattr(self.imap, what)(*args)
        except imaplib.IMAP4.abort as err:
            raise MailboxUnavailable(f"{self._settings.host}: the connection broke during {what} ({_reply(err)})") \
                from None
        except imaplib.IMAP4.error as err:
            raise MailboxUnavailable(f"{self._settings.host}: {what} failed: {_reply(err)}") from None
        except (OSError, socket.timeout) as err:
            raise MailboxUnavailable(f"{self._settings.host}: the connection broke during {what} "
                                     f"({err.strerror or type(err).__name__})") from None
        return self._ok(what, typ, data)

    # -------------------------------------------------------------- folders

    def ensure_folder(self, name: str) -> None:
        """Create ``name`` unless it exists (LIST first: servers differ in how they refuse a second CREATE)."""
        listed = self._command("list", '""', encode_folder(name))
        if any(item for item in listed if item):
            return
        try:
            typ, _ = self.imap.create(encode_folder(name))
        except imaplib.IMAP4.abort as err:
            raise MailboxUnavailable(f"{self._settings.host}: the connection broke ({_reply(err)})") from None
        except (imaplib.IMAP4.error, OSError):
            typ = "NO"
        if typ != "OK" and not any(item for item in self._command("list", '""', encode_folder(name)) if item):
            raise MailboxUnavailable(f"{self._settings.host}: the folder {name!r} cannot be created")

    def select(self, folder: str) -> int:
        """Open ``folder`` for reading and moving; returns its UIDVALIDITY."""
        self._command("select", encode_folder(folder))
        self._selected = folder
        _, data = self.imap.response("UIDVALIDITY")
        try:
            return int(data[0]) if data and data[0] else 0
        except (TypeError, ValueError):
            return 0

    # -------------------------------------------------------------- mail

    def uids(self, limit: int) -> list[int]:
        """UIDs of the mail in the selected folder not marked deleted, oldest first (at most ``limit``)."""
        data = self._command("search", "SEARCH", None, "UNDELETED", uid=True)
        found = sorted(int(u) for u in (data[0] or b"").split()) if data else []
        return found[:limit]

    def info(self, uid: int) -> MailInfo | None:
        """Size and receipt of mail ``uid``; None when it is no longer in the folder."""
        data = self._command("fetch", "FETCH", str(uid), "(UID RFC822.SIZE INTERNALDATE)", uid=True)
        for item in data:
            line = item[0] if isinstance(item, tuple) else item
            if not isinstance(line, bytes):
                continue
            found_uid, size, date = _UID.search(line), _SIZE.search(line), _INTERNALDATE.search(line)
            if found_uid and int(found_uid.group(1)) == uid and size and date:
                return MailInfo(uid=uid, size=int(size.group(1)), received_at=_internaldate(date.group(1)))
        return None

    def fetch(self, uid: int) -> bytes | None:
        """The mail's bytes exactly as the server holds them (``BODY.PEEK[]``: the \\Seen flag is left alone)."""
        data = self._command("fetch", "FETCH", str(uid), "(UID BODY.PEEK[])", uid=True)
        for item in data:
            if isinstance(item, tuple) and len(item) == 2 and isinstance(item[1], bytes):
                found = _UID.search(item[0])
                if found is None or int(found.group(1)) == uid:
                    return item[1]
        return None

    def move(self, uid: int, folder: str) -> None:
        """Move mail ``uid`` out of the selected folder into ``folder``; a UID already gone is no error."""
        target = encode_folder(folder)
        if "MOVE" in self._capabilities:
            self._command("move", "MOVE", str(uid), target, uid=True)
            return
        self._command("copy", "COPY", str(uid), target, uid=True)
        self._command("store", "STORE", str(uid), "+FLAGS.SILENT", r"(\Deleted)", uid=True)
        if "UIDPLUS" in self._capabilities:
            self._command("expunge", "EXPUNGE", str(uid), uid=True)
        # Without UIDPLUS the copy stays marked \Deleted for the mailbox's owner to expunge; uids() skips it.

    def append(self, folder: str, raw: bytes, received_at: datetime | None = None) -> None:
        """Deliver ``raw`` into ``folder`` (the local stack's SMTP server delivering to info@)."""
        when = imaplib.Time2Internaldate(received_at.timestamp()) if received_at else None
        self._command("append", encode_folder(folder), None, when, raw)


def _internaldate(value: bytes) -> datetime:
    return datetime.strptime(value.decode("ascii").strip(), "%d-%b-%Y %H:%M:%S %z")


def _reply(err: BaseException) -> str:
    text = str(err.args[0] if err.args else err)
    if isinstance(err.args[0] if err.args else None, bytes):
        text = err.args[0].decode("utf-8", "replace")
    return (text.strip() or type(err).__name__).splitlines()[0][:200]


def _first(data: list[object]) -> str:
    item = data[0] if data else b""
    return item.decode("utf-8", "replace")[:200] if isinstance(item, bytes) else str(item)[:200]

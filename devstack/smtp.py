"""A real local SMTP server (aiosmtpd) that keeps every message it receives.

``make run`` saves each message as an ``.eml`` file under ``.data/mail/``; tests
read the received messages from :attr:`MailCatcher.messages`. With a mailbox given, mail
addressed to it is also delivered there (IMAP APPEND, a ``Return-Path`` on top as a real
delivery writes it), so a mail to info@level-up.nl reaches the mailbox the worker reads.
"""

from __future__ import annotations

import asyncio
import email
import email.policy
import re
import threading
from email.message import EmailMessage
from pathlib import Path

from aiosmtpd.controller import Controller
from aiosmtpd.smtp import SMTP, Envelope, Session

from infra.config import MailboxSettings
from infra.imap import Mailbox, MailboxUnavailable


class _Handler:
    def __init__(self, catcher: MailCatcher) -> None:
        self._catcher = catcher

    async def handle_MAIL(self, server: SMTP, session: Session, envelope: Envelope,  # noqa: N802
                          address: str, mail_options: list[str]) -> str:
        if self._catcher.refuse_mail_from:
            return self._catcher.refuse_mail_from
        envelope.mail_from = address
        envelope.mail_options.extend(mail_options)
        return "250 OK"

    async def handle_RCPT(self, server: SMTP, session: Session, envelope: Envelope,  # noqa: N802
                          address: str, rcpt_options: list[str]) -> str:
        if address.lower() in self._catcher.refused_recipients:
            return "550 5.1.1 mailbox unavailable"
        if address.lower() in self._catcher.deferred_recipients:
            return "451 4.7.1 try again later"
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:  # noqa: N802
        raw = envelope.content if isinstance(envelope.content, bytes) else str(envelope.content).encode()
        if self._catcher.refuse_data:
            return self._catcher.refuse_data
        self._catcher.store(raw)
        if self._catcher.delay_data_reply:
            # Fault injection: a slow relay, taking the message but answering late.
            await asyncio.sleep(self._catcher.delay_data_reply)
        if self._catcher.mailbox is not None and \
                any(r.lower() == self._catcher.mailbox.user.lower() for r in envelope.rcpt_tos):
            delivered = f"Return-Path: <{envelope.mail_from or ''}>\r\n".encode() + raw
            try:
                await asyncio.to_thread(self._catcher.deliver, delivered)
            except MailboxUnavailable:
                return "451 4.3.0 the mailbox is not available; try again later"
        if self._catcher.drop_after_accepting > 0:
            # Fault injection: the message is taken, but the connection drops before the reply.
            self._catcher.drop_after_accepting -= 1
            assert server.transport is not None
            server.transport.abort()
        return "250 Message accepted for delivery"


class MailCatcher:
    def __init__(self, port: int, directory: Path | None = None, host: str = "127.0.0.1",
                 keep_in_memory: bool = True, mailbox: MailboxSettings | None = None) -> None:
        self.host, self.port = host, port
        self.directory = directory
        self.keep_in_memory = keep_in_memory
        self.messages: list[EmailMessage] = []
        self.refused_recipients: set[str] = set()
        #: For fault tests: recipients answered "try again later" (4xx) for as long as they are in here.
        self.deferred_recipients: set[str] = set()
        #: Mail to this mailbox's user (info@level-up.nl) is delivered into it as well.
        self.mailbox = mailbox
        #: For fault tests: this many messages are stored and then the connection is dropped
        #: before the final reply, so the client cannot know the message was accepted.
        self.drop_after_accepting = 0
        #: For fault tests: the reply to MAIL FROM (e.g. "530 5.7.0 Authentication required"), to DATA
        #: (e.g. "554 5.7.1 Message refused"), and seconds to wait before answering a message taken.
        self.refuse_mail_from: str | None = None
        self.refuse_data: str | None = None
        self.delay_data_reply = 0.0
        self._count = 0
        self._lock = threading.Lock()
        self._controller = Controller(_Handler(self), hostname=host, port=port)

    def store(self, raw: bytes) -> None:
        msg = email.message_from_bytes(raw, policy=email.policy.default)
        with self._lock:
            self._count += 1
            count = self._count
            if self.keep_in_memory:
                self.messages.append(msg)  # type: ignore[arg-type]
        if self.directory is not None:
            self.directory.mkdir(parents=True, exist_ok=True)
            stem = re.sub(r"[^A-Za-z0-9._-]+", "_", str(msg.get("Message-ID", f"message-{count}")).strip("<>"))
            (self.directory / f"{stem}.eml").write_bytes(raw)

    def deliver(self, raw: bytes) -> None:
        """Put ``raw`` into the mailbox's folder of new mail."""
        assert self.mailbox is not None
        with Mailbox(self.mailbox) as box:
            box.append(self.mailbox.folder, raw)

    def find(self, **headers: str) -> list[EmailMessage]:
        """Messages whose headers equal the given values (``x_letter_kind="decision"``)."""
        wanted = {k.replace("_", "-").lower(): v for k, v in headers.items()}
        with self._lock:
            return [m for m in self.messages
                    if all(str(m.get(k, "")) == v for k, v in wanted.items())]

    def start(self) -> MailCatcher:
        self._controller.start()
        return self

    def stop(self) -> None:
        self._controller.stop()

    def __enter__(self) -> MailCatcher:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

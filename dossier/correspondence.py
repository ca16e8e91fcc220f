"""A complaint's correspondence in the dossier: the mails about it and their attachments
(``admin.py messages``, ``message``, ``attachment``), and the files staff attach to a complaint
they register (``admin.py register --attach``)."""

from __future__ import annotations

import hashlib
import mimetypes
from pathlib import Path

import asyncpg

from dossier.connect import Row, connection


async def read_messages(database_url: str, complaint_id: str) -> list[Row]:
    """Every mail kept on the complaint, first to last, each with its attachments (no bytes)."""
    async with connection(database_url) as conn, conn.transaction(isolation="repeatable_read", readonly=True):
        mails = [dict(r) for r in await conn.fetch(
            "SELECT sequence, received_at, kind, from_address, from_name, subject, raw IS NULL AS erased, mail_key"
            " FROM mails WHERE complaint_id = $1 ORDER BY sequence", complaint_id)]
        attachments = await _attachments(conn, complaint_id)
    for mail in mails:
        key = mail.pop("mail_key")
        mail["attachments"] = [{k: v for k, v in a.items() if k != "mail_key"} for a in attachments
                               if a["mail_key"] == key]
    return mails


async def _attachments(conn: asyncpg.Connection, complaint_id: str, mail_key: str | None = None) -> list[Row]:
    """The complaint's attachments (of one mail, when ``mail_key`` is given), without their bytes."""
    return [dict(r) for r in await conn.fetch(
        "SELECT number, mail_key, filename, content_type, size, sha256 FROM attachments WHERE complaint_id = $1"
        " AND ($2::text IS NULL OR mail_key = $2) ORDER BY number", complaint_id, mail_key)]


async def read_message(database_url: str, complaint_id: str, sequence: int) -> Row | None:
    """Mail ``sequence`` of the complaint with its bytes (None: no such mail)."""
    async with connection(database_url) as conn:
        row = await conn.fetchrow(
            "SELECT sequence, received_at, kind, from_address, from_name, subject, raw, mail_key FROM mails"
            " WHERE complaint_id = $1 AND sequence = $2", complaint_id, sequence)
        if row is None:
            return None
        attachments = await _attachments(conn, complaint_id, row["mail_key"])
    found = {k: v for k, v in dict(row).items() if k != "mail_key"}
    found["attachments"] = [{k: v for k, v in a.items() if k != "mail_key"} for a in attachments]
    return found


async def read_attachment(database_url: str, complaint_id: str, number: int) -> Row | None:
    """Attachment ``number`` of the complaint with its bytes (None: no such attachment)."""
    async with connection(database_url) as conn:
        row = await conn.fetchrow(
            "SELECT number, filename, content_type, size, sha256, data FROM attachments"
            " WHERE complaint_id = $1 AND number = $2", complaint_id, number)
    return None if row is None else dict(row)


async def attach_files(database_url: str, complaint_id: str, files: list[Path]) -> list[int]:
    """Keep ``files`` on the complaint (a file kept there before is not kept twice); their numbers."""
    contents = [(path.name, path.read_bytes()) for path in files]
    numbers: list[int] = []
    async with connection(database_url) as conn, conn.transaction():
        await conn.execute("SELECT pg_advisory_xact_lock(hashtext($1))", complaint_id)
        for name, data in contents:
            digest = hashlib.sha256(data).hexdigest()
            number = await conn.fetchval(
                "SELECT number FROM attachments WHERE complaint_id = $1 AND mail_key IS NULL AND sha256 = $2",
                complaint_id, digest)
            if number is None:
                number = await conn.fetchval(
                    "INSERT INTO attachments (complaint_id, number, content_type, size, sha256, filename, data)"
                    " SELECT $1, coalesce(max(number), 0) + 1, $2, $3, $4, $5, $6 FROM attachments"
                    " WHERE complaint_id = $1 RETURNING number",
                    complaint_id, mimetypes.guess_type(name)[0] or "application/octet-stream", len(data), digest,
                    name, data)
            numbers.append(number)
    return numbers

"""One complaint's audit trail, read from the dossier in PostgreSQL (``admin.py audit`` and ``show``).

Read only, and without Temporal: the dossier keeps every event, letter, alert and
measure, and after the retention year the erasure record. Letter bodies and
recipients are never read. Every value is plain JSON (datetimes aside), so the CLI
prints it as it is.
"""

from __future__ import annotations

from contextlib import asynccontextmanager
from typing import Any, AsyncIterator
from urllib.parse import urlsplit

import asyncpg

from infra.cli import first_line

CONNECT_TIMEOUT = 5.0  # seconds

Row = dict[str, Any]


class DossierUnavailable(Exception):
    """The dossier database cannot be reached or read (the message is one line, without secrets)."""


async def read_audit(database_url: str, complaint_id: str) -> Row | None:
    """The complaint's audit trail, or None if the dossier has no such complaint.

    ``{"complaint_id", "events", "letters", "alerts", "measures", "erasure"}``; each
    event has ``note_erased`` (its note was erased with the personal data).
    """
    # One consistent snapshot of the complaint's rows.
    async with _connection(database_url) as conn, conn.transaction(isolation="repeatable_read", readonly=True):
        if not await conn.fetchval("SELECT true FROM complaints WHERE complaint_id = $1", complaint_id):
            return None
        erasure = await _erasure(conn, complaint_id)
        events = await _rows(conn, 'SELECT sequence, at, action, actor AS "by", note FROM complaint_events'
                             " WHERE complaint_id = $1 ORDER BY sequence", complaint_id)
        letters = await _rows(conn, "SELECT kind, sequence, sent_at, status, message_id FROM letters"
                              " WHERE complaint_id = $1 ORDER BY created_at, kind, sequence", complaint_id)
        alerts = await _rows(conn, "SELECT kind, sequence, raised_at, sent_at FROM alerts"
                             " WHERE complaint_id = $1 ORDER BY raised_at NULLS LAST, kind, sequence",
                             complaint_id)
        measures = await _rows(conn, 'SELECT sequence, recorded_at AS at, actor AS "by", measure AS text'
                               " FROM measures WHERE complaint_id = $1 ORDER BY sequence", complaint_id)
    for event in events:
        event["note_erased"] = erasure is not None and event["note"] is None and event["action"] != "purged"
    return {"complaint_id": complaint_id, "events": events, "letters": letters, "alerts": alerts,
            "measures": measures, "erasure": erasure}


async def read_erasure(database_url: str, complaint_id: str) -> Row | None:
    """The complaint's erasure record, or None if it has none (not purged, or purged before records were kept)."""
    async with _connection(database_url) as conn:
        return await _erasure(conn, complaint_id)


async def _erasure(conn: asyncpg.Connection, complaint_id: str) -> Row | None:
    if not await conn.fetchval("SELECT to_regclass('erasures') IS NOT NULL"):  # migration 2 not applied yet
        return None
    row = await conn.fetchrow("SELECT erased_at, fields, letters_erased, notes_erased, reason FROM erasures"
                              " WHERE complaint_id = $1", complaint_id)
    return None if row is None else {**dict(row), "fields": list(row["fields"])}


async def _rows(conn: asyncpg.Connection, sql: str, *args: Any) -> list[Row]:
    return [dict(row) for row in await conn.fetch(sql, *args)]


@asynccontextmanager
async def _connection(database_url: str) -> AsyncIterator[asyncpg.Connection]:
    """A connection to the dossier; every failure to reach or read it becomes :class:`DossierUnavailable`."""
    try:
        conn = await asyncpg.connect(database_url, timeout=CONNECT_TIMEOUT)
    except Exception as err:  # noqa: BLE001 - refused, DNS, auth, timeout, bad URL: one line
        raise DossierUnavailable(
            f"cannot reach the dossier at {where(database_url)}: {first_line(err)}") from None
    try:
        yield conn
    except (asyncpg.PostgresError, asyncpg.InterfaceError, OSError) as err:
        raise DossierUnavailable(f"the dossier at {where(database_url)} failed: {first_line(err)}") from None
    finally:
        try:
            await conn.close(timeout=CONNECT_TIMEOUT)
        except Exception:  # noqa: BLE001 - what was read is read
            conn.terminate()


def where(database_url: str) -> str:
    """host:port/database of a DATABASE_URL, without the user or password."""
    try:
        url = urlsplit(database_url)
        return f"{url.hostname or 'localhost'}:{url.port or 5432}{url.path or ''}"
    except ValueError:
        return "DATABASE_URL"

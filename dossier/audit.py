"""One complaint's audit trail, read from the dossier in PostgreSQL (``admin.py audit`` and ``show``).

Read only, and without Temporal: the dossier keeps every event, letter, alert and
measure, and after the retention year the erasure record. Letter bodies and
recipients are never read. Every value is plain JSON (datetimes aside), so the CLI
prints it as it is.
"""

from __future__ import annotations

from typing import Any

import asyncpg

from dossier.connect import DossierUnavailable, Row, connection

__all__ = ["DossierUnavailable", "read_audit", "read_erasure"]


async def read_audit(database_url: str, complaint_id: str) -> Row | None:
    """The complaint's audit trail, or None if the dossier has no such complaint.

    ``{"complaint_id", "events", "letters", "alerts", "measures", "erasure"}``; each
    event has ``note_erased`` (its note was erased with the personal data).
    """
    # One consistent snapshot of the complaint's rows.
    async with connection(database_url) as conn, conn.transaction(isolation="repeatable_read", readonly=True):
        if not await conn.fetchval("SELECT true FROM complaints WHERE complaint_id = $1", complaint_id):
            return None
        erasure = await _erasure(conn, complaint_id)
        events = await _rows(conn, 'SELECT sequence, at, action, actor AS "by", note, key_id, signed_at'
                             " FROM complaint_events"
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
    async with connection(database_url) as conn:
        return await _erasure(conn, complaint_id)


async def read_product_texts(database_url: str, complaint_ids: list[str]) -> dict[str, str]:
    """The complainant's words for the product, by complaint (none once erased; ``show``, ``list``)."""
    if not complaint_ids:
        return {}
    async with connection(database_url) as conn:
        rows = await conn.fetch("SELECT complaint_id, product_text FROM complaints"
                                " WHERE complaint_id = ANY($1::text[]) AND product_text IS NOT NULL", complaint_ids)
    return {row["complaint_id"]: row["product_text"] for row in rows}


async def _erasure(conn: asyncpg.Connection, complaint_id: str) -> Row | None:
    if not await conn.fetchval("SELECT to_regclass('erasures') IS NOT NULL"):  # migration 2 not applied yet
        return None
    row = await conn.fetchrow("SELECT * FROM erasures WHERE complaint_id = $1", complaint_id)
    if row is None:
        return None
    record = {key: value for key, value in dict(row).items() if key != "complaint_id"}
    return {**record, "fields": list(row["fields"])}


async def _rows(conn: asyncpg.Connection, sql: str, *args: Any) -> list[Row]:
    return [dict(row) for row in await conn.fetch(sql, *args)]

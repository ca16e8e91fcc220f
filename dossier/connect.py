"""A connection to the dossier for the staff's programs (admin.py): one line for every failure, no secrets."""

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


@asynccontextmanager
async def connection(database_url: str) -> AsyncIterator[asyncpg.Connection]:
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

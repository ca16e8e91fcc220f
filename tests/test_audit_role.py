"""Staff read the dossier as a role that may only read: the audit trail cannot be rewritten from a staff
machine. The worker grants the reading role (``complaints_audit``, which the deployment creates) every
table at start, tables of later migrations included; ``admin.py`` reads with ``AUDIT_DATABASE_URL``."""

from __future__ import annotations

from urllib.parse import urlsplit

import asyncpg
import pytest

from complaints.models import LetterKind
from dossier.schema import READING_ROLE, apply_migrations
from tests.cli import REPO, cli_env, run_cli
from tests.lifecycle import start_formal, wait_dossier, wait_letter


def as_reading_role(database_url: str) -> str:
    parts = urlsplit(database_url)
    return parts._replace(netloc=f"{READING_ROLE}@{parts.netloc.rsplit('@', 1)[1]}").geturl()


async def test_the_reading_role_reads_the_trail_and_writes_nothing(env, client, settings, worker, mail, pool) -> None:
    await pool.execute(f"DO $$ BEGIN IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = '{READING_ROLE}') "
                       f"THEN CREATE ROLE {READING_ROLE} LOGIN; END IF; END $$")
    async with pool.acquire() as conn:
        await apply_migrations(conn)  # what every worker does at start
    handle = await start_formal(client, settings)
    await wait_letter(mail, handle, LetterKind.ACKNOWLEDGEMENT)
    await wait_dossier(pool, handle, phase="formal")

    reader = await asyncpg.connect(as_reading_role(settings.database_url))
    try:
        assert await reader.fetchval("SELECT count(*) FROM complaint_events WHERE complaint_id = $1", handle.id) >= 1
        for statement in ("UPDATE complaint_events SET actor = 'iemand anders' WHERE complaint_id = $1",
                          "DELETE FROM complaint_events WHERE complaint_id = $1",
                          "UPDATE complaints SET phase = 'closed' WHERE complaint_id = $1"):
            with pytest.raises(asyncpg.InsufficientPrivilegeError):
                await reader.execute(statement, handle.id)
    finally:
        await reader.close()

    environ = cli_env(settings, env.client.service_client.config.target_host,
                      AUDIT_DATABASE_URL=as_reading_role(settings.database_url))
    audit = await run_cli(str(REPO / "admin.py"), "audit", handle.id, "--json", env=environ)
    assert audit.code == 0, audit
    assert [e["action"] for e in audit.json()["events"]][:1] == ["submitted"]
    # Without the grant the same role reads nothing: the worker's start is what lets it read.
    await pool.execute(f"REVOKE SELECT ON ALL TABLES IN SCHEMA public FROM {READING_ROLE}")
    refused = await run_cli(str(REPO / "admin.py"), "audit", handle.id, env=environ)
    assert refused.code == 1 and "permission denied" in refused.err, refused
    async with pool.acquire() as conn:
        await apply_migrations(conn)
    assert (await run_cli(str(REPO / "admin.py"), "audit", handle.id, env=environ)).code == 0

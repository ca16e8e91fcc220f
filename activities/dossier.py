"""The dossier: every complaint's record in PostgreSQL, kept one year after closing.

All writes are idempotent (``ON CONFLICT``, a state version), so an activity that
is retried after PostgreSQL comes back never writes anything twice.
"""

from __future__ import annotations

from datetime import datetime, timezone

import asyncpg
from temporalio import activity

from activities.names import OPEN_DOSSIER, PURGE_DOSSIER, UPDATE_DOSSIER
from complaints.calendar import WorkingDayCalendar
from complaints.products import EMPTY, Catalogue
from dossier.schema import match_products
from complaints.models import (
    DossierFacts,
    OpenDossierInput,
    OpenedDossier,
    Phase,
    PlannedDeadline,
    PurgeDossierInput,
    PurgeResult,
)


class DossierActivities:
    def __init__(self, pool: asyncpg.Pool, catalogue: Catalogue = EMPTY,
                 calendar: WorkingDayCalendar | None = None) -> None:
        self._pool = pool
        #: For the product of a dossier from before the catalogue, matched when it is erased.
        self._catalogue = catalogue
        #: The working-day calendar that plans the first phase's deadlines as a dossier opens.
        self._calendar = calendar or WorkingDayCalendar()

    @activity.defn(name=OPEN_DOSSIER)
    async def open_dossier(self, input: OpenDossierInput) -> OpenedDossier:
        """Open the complaint's row; with a ``plan``, plan the first deadlines on the calendar and write the
        first state with the row, in one transaction (one round trip of the workflow instead of three)."""
        s, c = input.submission, input.submission.complainant
        coded = input.product_code  # None: a complaint from before the catalogue (its product is its words)
        planned = [PlannedDeadline(at=self._calendar.deadline_after(p.start, p.working_days),
                                   calendar=self._calendar.name) for p in input.plan]
        first = input.first_state
        if first is not None:
            deadlines = first.view.deadlines.model_copy(
                update={p.deadline: at.at for p, at in zip(input.plan, planned)})
            first = first.model_copy(update={"view": first.view.model_copy(update={
                "deadlines": deadlines, "calendar": planned[-1].calendar if planned else first.view.calendar})})
        async with self._pool.acquire() as conn, conn.transaction():
            if input.instance is not None:
                await _set_aside_earlier(conn, input.complaint_id, input.instance)
            status = await conn.execute(
                """
                INSERT INTO complaints (complaint_id, channel, route, role, product, submitted_on,
                    received_at, phase, complainant_name, complainant_organisation, complainant_email,
                    complainant_phone, reference, description, motivation, instance, product_text,
                    product_matched)
                VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17, $18)
                ON CONFLICT (complaint_id) DO NOTHING
                """,
                input.complaint_id, s.channel.value, s.route.value, c.role.value,
                s.product if coded is None else coded,
                s.submitted_on, s.received_at, s.route.value, c.name, c.organisation, str(c.email),
                c.phone, s.reference, s.description, s.motivation, input.instance,
                None if coded is None else s.product, coded is not None or s.product is None,
            )
            if first is not None:
                await write_state(conn, first)
        if _count(status):
            activity.logger.info("dossier opened", extra={"route": s.route.value})
        return OpenedDossier(planned=planned)

    @activity.defn(name=UPDATE_DOSSIER)
    async def update_dossier(self, facts: DossierFacts) -> None:
        """Write the workflow's state; an older version never overwrites a newer one."""
        async with self._pool.acquire() as conn, conn.transaction():
            written = await write_state(conn, facts)
        if written:  # not when a newer state was already written
            activity.logger.info("dossier written", extra={"version": facts.version, "phase": facts.view.phase.value})

    @activity.defn(name=PURGE_DOSSIER)
    async def purge_dossier(self, input: PurgeDossierInput) -> PurgeResult:
        """Erase the personal data; keep the anonymous facts the yearly analysis needs (:func:`erase`)."""
        return await erase(self._pool, input.complaint_id, ERASURE_REASON, self._catalogue, input.instance)


async def write_state(conn: asyncpg.Connection, facts: DossierFacts) -> bool:
    """Write the workflow's state (inside the caller's transaction); False if a newer one was written."""
    v, d = facts.view, facts.view.deadlines
    status = await conn.execute(
        """
        UPDATE complaints SET
            formal_received_at = $2, phase = $3, outcome = $4, calendar = $5,
            acknowledge_by = $6, acknowledged_at = $7, resolve_by = $8, extensions = $9,
            decided_at = $10, decided_within_term = $11,
            decision_motivation = CASE WHEN $21 THEN $12 ELSE decision_motivation END,
            mediated = $13 OR mediated, mediator = CASE WHEN $21 THEN $14 ELSE mediator END,
            verdict_at = $15, verdict_summary = CASE WHEN $21 THEN $16 ELSE verdict_summary END,
            consequences_by = $17, closed_at = $18, purge_on = $19,
            complainant_email = coalesce($22, complainant_email),
            product = CASE WHEN $28 OR NOT product_matched THEN coalesce($23, product) ELSE product END,
            product_text = CASE WHEN $28 AND $21 THEN coalesce($29, product_text) ELSE product_text END,
            product_matched = product_matched OR $28,
            complainant_organisation = coalesce($24, complainant_organisation),
            complainant_phone = coalesce($25, complainant_phone),
            motivation = coalesce($26, motivation),
            state_version = $20, updated_at = now(), instance = coalesce(instance, $27)
        WHERE complaint_id = $1 AND state_version < $20 AND purged_at IS NULL
            AND ($27::text IS NULL OR instance IS NULL OR instance = $27)
        """,
        v.complaint_id, v.formal_received_at, v.phase.value,
        v.outcome.value if v.outcome else None, v.calendar,
        d.acknowledge_by, v.acknowledged_at, d.resolve_by, v.extensions,
        v.decision.at if v.decision else None,
        v.decision.within_term if v.decision else None,
        v.decision.motivation if v.decision else None,
        v.phase is Phase.MEDIATION or v.mediator is not None, v.mediator,
        v.verdict.at if v.verdict else None, v.verdict.summary if v.verdict else None,
        d.consequences_by, v.closed_at, d.purge_on, facts.version, facts.includes_personal_data,
        facts.contact_email, v.product,
        *((c.organisation, c.phone, c.motivation) if (c := facts.contents) and facts.includes_personal_data
          else (None, None, None)),
        facts.instance, v.product_is_code, v.product_text,
    )
    if not _count(status) and not await _ours(conn, v.complaint_id, facts.instance):
        activity.logger.warning("dossier rows of this id belong to another complaint; not written")
        return False
    await conn.executemany(
        """
        INSERT INTO complaint_events (complaint_id, sequence, at, action, actor, note, key_id, signed_at)
        VALUES ($1, $2, $3, $4, $5, $6, $7, $8) ON CONFLICT DO NOTHING
        """,
        [(v.complaint_id, i, h.at, h.action, h.by, h.note, h.key_id, h.signed_at)
         for i, h in enumerate(v.history, 1)],
    )
    await conn.executemany(
        """
        INSERT INTO alerts (complaint_id, kind, sequence, raised_at, deadline)
        VALUES ($1, $2, $3, $4, $5)
        ON CONFLICT (complaint_id, kind, sequence)
        DO UPDATE SET raised_at = EXCLUDED.raised_at, deadline = EXCLUDED.deadline
        """,
        [(v.complaint_id, a.kind.value, a.sequence, a.at, a.deadline) for a in v.alerts],
    )
    await conn.executemany(
        """
        INSERT INTO measures (complaint_id, sequence, recorded_at, actor, product, measure, product_matched)
        VALUES ($1, $2, $3, $4, $5, $6, $7) ON CONFLICT DO NOTHING
        """,
        [(v.complaint_id, i, m.at, m.by, v.product or UNKNOWN_PRODUCT, m.text, v.product_is_code)
         for i, m in enumerate(v.measures, 1)],
    )
    return bool(_count(status))


async def erase(pool: asyncpg.Pool, cid: str, reason: str, catalogue: Catalogue,
                instance: str | None = None) -> PurgeResult:
    """Erase one complaint's personal data from the dossier, once.

    One transaction erases the personal columns, the letters' recipients, bodies and SMTP errors
    (which can quote the address), the history notes, the mails about it and their attachments
    (the product keeps its catalogue code; a dossier from before the catalogue gets it now)
    (bytes, sender, subject, file names), writes the erasure record (what was erased, when and why;
    no personal data) and the ``purged`` event (without a note: no event keeps one). A second
    erasure finds the record and returns it, writing nothing. With ``instance``, only that complaint's
    rows are erased (see :func:`_set_aside_earlier`).
    """
    now = datetime.now(timezone.utc)
    async with pool.acquire() as conn, conn.transaction():
        held = await conn.fetchrow(
            "SELECT " + ", ".join(f"{c} IS NOT NULL AS {c}" for c in PERSONAL_COLUMNS)
            + " FROM complaints WHERE complaint_id = $1 AND ($2::text IS NULL OR instance IS NULL OR instance = $2)"
            " FOR UPDATE", cid, instance)
        if held is None:  # no dossier: nothing to erase, nothing to record
            return PurgeResult(purged_at=now, erased_at=now, reason=reason)
        done = await conn.fetchrow("SELECT * FROM erasures WHERE complaint_id = $1", cid)
        if done is not None:
            return _erasure(done)
        await match_products(conn, catalogue, cid)  # a product from before the catalogue: its code stays
        erased_at = await conn.fetchval(
            "UPDATE complaints SET " + ", ".join(f"{c} = NULL" for c in PERSONAL_COLUMNS) + ","
            " phase = 'purged', purged_at = coalesce(purged_at, $2), updated_at = now()"
            " WHERE complaint_id = $1 RETURNING purged_at", cid, now)
        letters = _count(await conn.execute(
            "UPDATE letters SET recipient = NULL, body = NULL, error = NULL, envelope = NULL WHERE complaint_id = $1"
            " AND (recipient IS NOT NULL OR body IS NOT NULL OR error IS NOT NULL OR envelope IS NOT NULL)", cid))
        notes = _count(await conn.execute(
            "UPDATE complaint_events SET note = NULL WHERE complaint_id = $1 AND note IS NOT NULL", cid))
        mails = _count(await conn.execute(
            "UPDATE mails SET raw = NULL, message_id = NULL, from_address = NULL, from_name = NULL,"
            " subject = NULL WHERE complaint_id = $1 AND (raw IS NOT NULL OR message_id IS NOT NULL"
            " OR from_address IS NOT NULL OR from_name IS NOT NULL OR subject IS NOT NULL)", cid))
        attachments = _count(await conn.execute(
            "UPDATE attachments SET filename = NULL, data = NULL WHERE complaint_id = $1"
            " AND (filename IS NOT NULL OR data IS NOT NULL)", cid))
        await conn.execute(
            """
            INSERT INTO complaint_events (complaint_id, sequence, at, action, actor, note)
            SELECT $1, coalesce((SELECT max(sequence) FROM complaint_events WHERE complaint_id = $1), 0) + 1,
                $2, 'purged', 'system', NULL
            WHERE NOT EXISTS (SELECT 1 FROM complaint_events WHERE complaint_id = $1 AND action = 'purged')
            """,
            cid, erased_at)
        record = await conn.fetchrow(
            "INSERT INTO erasures (complaint_id, erased_at, fields, letters_erased, notes_erased, reason,"
            " mails_erased, attachments_erased) VALUES ($1, $2, $3, $4, $5, $6, $7, $8) RETURNING *",
            cid, erased_at, [c for c in PERSONAL_COLUMNS if held[c]], letters, notes, reason, mails, attachments)
    activity.logger.info("personal data erased from the dossier",
                         extra={"fields_erased": len(record["fields"]), "letters_erased": letters,
                                "notes_erased": notes, "mails_erased": mails, "attachments_erased": attachments})
    return _erasure(record)


async def _set_aside_earlier(conn: asyncpg.Connection, cid: str, instance: str) -> None:
    """Give an earlier complaint's rows under this id a name of their own, ``<id>~<n>``.

    Temporal refuses a second workflow with a running one's id, so an id is used again only when the
    earlier complaint's history is gone (the namespace's retention deleted it, the dossier moved to
    another cluster). Its dossier row, letters, alerts, events, measures, erasure record, mails and
    attachments then move together to ``<id>~<n>`` (n: the how-manieth complaint of this id), so the new
    complaint opens a dossier of its own and gets its own letters. Not yet erased rows are erased by
    the daily sweep when their year ends (their workflow is not found).
    """
    held = await conn.fetchrow("SELECT instance FROM complaints WHERE complaint_id = $1 FOR UPDATE", cid)
    if held is None or held["instance"] == instance:
        return
    earlier = await conn.fetchval("SELECT count(*) FROM complaints WHERE complaint_id LIKE $1", cid + "~%")
    aside = f"{cid}~{earlier + 1}"
    await conn.execute("UPDATE complaints SET complaint_id = $2 WHERE complaint_id = $1", cid, aside)  # cascades
    await conn.execute("UPDATE mails SET complaint_id = $2 WHERE complaint_id = $1", cid, aside)
    await conn.execute("UPDATE attachments SET complaint_id = $2 WHERE complaint_id = $1", cid, aside)
    activity.logger.warning("an earlier complaint's dossier under this id set aside", extra={"set_aside_as": aside})


async def _ours(conn: asyncpg.Connection, cid: str, instance: str | None) -> bool:
    """Whether the rows under this id are this complaint's (or from before complaints had instances)."""
    held = await conn.fetchval("SELECT instance FROM complaints WHERE complaint_id = $1", cid)
    return instance is None or held is None or held == instance


#: The dossier's columns that hold personal data, erased when the retention year ends.
PERSONAL_COLUMNS = ("complainant_name", "complainant_organisation", "complainant_email", "complainant_phone",
                    "reference", "description", "motivation", "decision_motivation", "mediator",
                    "verdict_summary", "product_text")
ERASURE_REASON = "retention year ended"
#: The product of a complaint that came by mail without naming one (until it is filled in).
UNKNOWN_PRODUCT = "unknown"


def _count(status: str) -> int:
    """The row count of a command status such as ``UPDATE 3``."""
    return int(status.rsplit(" ", 1)[-1])


def _erasure(row: asyncpg.Record) -> PurgeResult:
    return PurgeResult(purged_at=row["erased_at"], erased_at=row["erased_at"], fields=list(row["fields"]),
                       letters_erased=row["letters_erased"], notes_erased=row["notes_erased"],
                       mails_erased=row["mails_erased"], attachments_erased=row["attachments_erased"],
                       reason=row["reason"])

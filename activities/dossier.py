"""The dossier: every complaint's record in PostgreSQL, kept one year after closing.

All writes are idempotent (``ON CONFLICT``, a state version), so an activity that
is retried after PostgreSQL comes back never writes anything twice.
"""

from __future__ import annotations

from datetime import datetime, timezone

import asyncpg
from temporalio import activity

from activities.names import OPEN_DOSSIER, PLAN_DEADLINE, PURGE_DOSSIER, UPDATE_DOSSIER
from complaints.calendar import WorkingDayCalendar
from complaints.models import (
    DossierFacts,
    OpenDossierInput,
    Phase,
    PlanDeadlinesInput,
    PlannedDeadline,
    PurgeDossierInput,
    PurgeResult,
)


class CalendarActivities:
    def __init__(self, calendar: WorkingDayCalendar) -> None:
        self._calendar = calendar

    @activity.defn(name=PLAN_DEADLINE)
    async def plan_deadline(self, input: PlanDeadlinesInput) -> PlannedDeadline:
        """End of the N-th Dutch working day after the day of receipt, and which calendar said so."""
        return PlannedDeadline(
            at=self._calendar.deadline_after(input.received_at, input.working_days),
            calendar=self._calendar.name,
        )


class DossierActivities:
    def __init__(self, pool: asyncpg.Pool) -> None:
        self._pool = pool

    @activity.defn(name=OPEN_DOSSIER)
    async def open_dossier(self, input: OpenDossierInput) -> None:
        s, c = input.submission, input.submission.complainant
        await self._pool.execute(
            """
            INSERT INTO complaints (complaint_id, channel, route, role, product, submitted_on,
                received_at, phase, complainant_name, complainant_organisation, complainant_email,
                complainant_phone, reference, description, motivation)
            VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15)
            ON CONFLICT (complaint_id) DO NOTHING
            """,
            input.complaint_id, s.channel.value, s.route.value, c.role.value, s.product,
            s.submitted_on, s.received_at, s.route.value, c.name, c.organisation, str(c.email),
            c.phone, s.reference, s.description, s.motivation,
        )

    @activity.defn(name=UPDATE_DOSSIER)
    async def update_dossier(self, facts: DossierFacts) -> None:
        """Write the workflow's state; an older version never overwrites a newer one."""
        v, d = facts.view, facts.view.deadlines
        async with self._pool.acquire() as conn, conn.transaction():
            await conn.execute(
                """
                UPDATE complaints SET
                    formal_received_at = $2, phase = $3, outcome = $4, calendar = $5,
                    acknowledge_by = $6, acknowledged_at = $7, resolve_by = $8, extensions = $9,
                    decided_at = $10, decided_within_term = $11, decision_motivation = $12,
                    mediated = $13, mediator = $14, verdict_at = $15, verdict_summary = $16,
                    consequences_by = $17, closed_at = $18, purge_on = $19,
                    state_version = $20, updated_at = now()
                WHERE complaint_id = $1 AND state_version < $20 AND purged_at IS NULL
                """,
                v.complaint_id, v.formal_received_at, v.phase.value,
                v.outcome.value if v.outcome else None, v.calendar,
                d.acknowledge_by, v.acknowledged_at, d.resolve_by, v.extensions,
                v.decision.at if v.decision else None,
                v.decision.within_term if v.decision else None,
                v.decision.motivation if v.decision else None,
                v.phase is Phase.MEDIATION or v.mediator is not None, v.mediator,
                v.verdict.at if v.verdict else None, v.verdict.summary if v.verdict else None,
                d.consequences_by, v.closed_at, d.purge_on, facts.version,
            )
            await conn.executemany(
                """
                INSERT INTO complaint_events (complaint_id, sequence, at, action, actor, note)
                VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT DO NOTHING
                """,
                [(v.complaint_id, i, h.at, h.action, h.by, h.note) for i, h in enumerate(v.history, 1)],
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
                INSERT INTO measures (complaint_id, sequence, recorded_at, actor, product, measure)
                VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT DO NOTHING
                """,
                [(v.complaint_id, i, m.at, m.by, v.product, m.text) for i, m in enumerate(v.measures, 1)],
            )

    @activity.defn(name=PURGE_DOSSIER)
    async def purge_dossier(self, input: PurgeDossierInput) -> PurgeResult:
        """Erase the personal data; keep the anonymous facts the yearly analysis needs."""
        now = datetime.now(timezone.utc)
        async with self._pool.acquire() as conn, conn.transaction():
            purged_at = await conn.fetchval(
                """
                UPDATE complaints SET
                    complainant_name = NULL, complainant_organisation = NULL,
                    complainant_email = NULL, complainant_phone = NULL, reference = NULL,
                    description = NULL, motivation = NULL, decision_motivation = NULL,
                    mediator = NULL, verdict_summary = NULL,
                    phase = 'purged', purged_at = coalesce(purged_at, $2), updated_at = now()
                WHERE complaint_id = $1
                RETURNING purged_at
                """,
                input.complaint_id, now,
            )
            await conn.execute(
                "UPDATE letters SET recipient = NULL, body = NULL WHERE complaint_id = $1",
                input.complaint_id,
            )
            await conn.execute(
                "UPDATE complaint_events SET note = NULL WHERE complaint_id = $1", input.complaint_id
            )
        return PurgeResult(purged_at=purged_at or now)

"""The daily retention sweep: erase every dossier whose retention year has ended, whatever became of its
workflow, and tell the director which ones had to be erased this way.

A complaint's own workflow erases its dossier when its year ends. The sweep is the safety net for a
workflow that cannot: terminated or cancelled in the Web UI, lost with a restored backup, deleted by the
namespace's retention. It erases a dossier once its year has ended (``purge_on``; for a complaint that
never closed, a year after its dossier was last written) and its workflow does not run; a running
workflow is left to erase its own.
"""

from __future__ import annotations

import json

import asyncpg
from temporalio import activity
from temporalio.client import Client, WorkflowExecutionStatus
from temporalio.service import RPCError, RPCStatusCode

from activities.dossier import ERASURE_REASON, erase
from activities.letters import Rendered
from activities.names import MAIL_SWEEP_REPORT, SWEEP_EXPIRED_DOSSIERS
from activities.outbox import Outbox, Row, SmtpSender, message_id
from complaints.models import AlertSent, MailSweepInput, SweepResult, SweepRunInput, SweptDossier
from complaints.terms import RETENTION
from infra.config import Settings

#: Dossiers looked at per run (the rest the next day).
BATCH = 1000

EXPIRED_SQL = f"""
SELECT complaint_id FROM complaints
WHERE purged_at IS NULL
  AND coalesce(purge_on, updated_at + make_interval(years => {RETENTION.count})) <= $1
ORDER BY complaint_id
LIMIT {BATCH}
"""


class RetentionActivities:
    def __init__(self, pool: asyncpg.Pool, settings: Settings, client: Client) -> None:
        self._pool = pool
        self._settings = settings
        self._client = client
        self._sender = SmtpSender(settings)
        self._outbox = Outbox(pool, self._sender)

    @activity.defn(name=SWEEP_EXPIRED_DOSSIERS)
    async def sweep_expired_dossiers(self, input: SweepRunInput) -> SweepResult:
        """Erase the expired dossiers whose workflow does not run; record the run (a retry finds it)."""
        done = await self._pool.fetchrow("SELECT * FROM sweep_runs WHERE workflow_run_id = $1", input.workflow_run_id)
        if done is not None:
            return _result(done)
        erased: list[SweptDossier] = []
        left = 0
        for row in await self._pool.fetch(EXPIRED_SQL, input.as_of):
            complaint_id = row["complaint_id"]
            workflow = await self._workflow(complaint_id)
            if workflow is None:
                left += 1
                continue
            await erase(self._pool, complaint_id, f"{ERASURE_REASON}; erased by the daily sweep: its workflow "
                                                  f"is {workflow}", self._settings.product_catalogue)
            erased.append(SweptDossier(complaint_id=complaint_id, workflow=workflow))
            activity.heartbeat(len(erased))
        done = await self._pool.fetchrow(
            "INSERT INTO sweep_runs (as_of, workflow_run_id, erased, left_to_workflows) VALUES ($1, $2, $3::jsonb, $4)"
            " ON CONFLICT (workflow_run_id) DO UPDATE SET as_of = sweep_runs.as_of RETURNING *",
            input.as_of, input.workflow_run_id, json.dumps([e.model_dump() for e in erased]), left)
        if erased:
            activity.logger.warning("the daily sweep erased dossiers their workflows should have",
                                    extra={"fields_erased": len(erased)})
        return _result(done)

    async def _workflow(self, complaint_id: str) -> str | None:
        """What became of the complaint's workflow; None while it runs (it erases its own dossier)."""
        try:
            description = await self._client.get_workflow_handle(complaint_id).describe()
        except RPCError as err:
            if err.status == RPCStatusCode.NOT_FOUND:
                return "not found"
            raise
        if description.status in (None, WorkflowExecutionStatus.RUNNING):
            return None
        return description.status.name.lower().replace("_", " ")

    @activity.defn(name=MAIL_SWEEP_REPORT)
    async def mail_sweep_report(self, input: MailSweepInput) -> AlertSent:
        """Tell the director which dossiers the sweep had to erase (ids and why; no personal data), once."""
        row = await self._pool.fetchrow("SELECT * FROM sweep_runs WHERE id = $1", input.sweep_id)
        msg_id = row["message_id"] or message_id("retention-sweep", "erased", row["id"], self._sender.domain)
        await self._pool.execute("UPDATE sweep_runs SET message_id = $2 WHERE id = $1", row["id"], msg_id)
        swept = _result(row)
        lines = [f"De dagelijkse controle van de bewaartermijn heeft de persoonsgegevens verwijderd van "
                 f"{len(swept.erased)} klacht(en) waarvan het bewaarjaar voorbij was. Hun workflow kon dat niet "
                 "meer zelf doen; ga na hoe dat kwam.", ""]
        lines += [f"- {e.complaint_id} (workflow: {e.workflow})" for e in swept.erased]
        lines += ["", "Bekijk een klacht met: python admin.py audit <klacht>"]
        rendered = Rendered(subject=f"Signalering bewaartermijn: {len(swept.erased)} dossier(s) gewist",
                            body="\n".join(lines) + "\n")
        sent_at, _ = await self._outbox.send(Row("sweep_runs", "id = $1", (row["id"],)), lambda: self._sender.compose(
            to=self._settings.director_email, to_name=None, rendered=rendered, msg_id=msg_id,
            headers={"X-Alert-Kind": "retention-sweep", "Auto-Submitted": "auto-generated"}))
        return AlertSent(message_id=msg_id, sent_at=sent_at)


def _result(row: asyncpg.Record) -> SweepResult:
    erased = row["erased"] if isinstance(row["erased"], list) else json.loads(row["erased"])
    return SweepResult(sweep_id=row["id"], as_of=row["as_of"], erased=[SweptDossier(**e) for e in erased],
                       left_to_workflows=row["left_to_workflows"])

"""The complaints worker: runs the complaint workflows and their activities.

At start it applies the dossier's schema (idempotent migrations), registers
the operators' search attributes on the namespace if they are missing, and creates
(or updates) the schedule of the yearly analysis (complaints/schedule.py).

    python worker.py
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import sys

import asyncpg
from temporalio.api.operatorservice.v1 import AddSearchAttributesRequest, ListSearchAttributesRequest
from temporalio.client import Client
from temporalio.worker import Worker
from temporalio.worker.workflow_sandbox import SandboxedWorkflowRunner, SandboxRestrictions

from activities.analysis import AnalysisActivities
from activities.dossier import CalendarActivities, DossierActivities
from activities.letters import LetterTemplates
from activities.mail import MailActivities
from activities.schema import apply_migrations
from complaints import search_attributes
from complaints.calendar import WorkingDayCalendar
from complaints.config import ConfigError, Settings, load_settings
from complaints.schedule import ensure_annual_schedule
from complaints.temporal_client import connect, data_converter
from workflows.analysis import AnnualAnalysisWorkflow
from workflows.complaint import ComplaintWorkflow

log = logging.getLogger("complaints.worker")

# Deterministic libraries the workflow's models use; pydantic imports email_validator
# lazily, so without this every workflow run would re-import it inside the sandbox.
PASSTHROUGH_MODULES = ("email_validator", "idna", "phonenumbers")

#: Worker tuning, shared with the benchmark's bare-SDK baseline (bench/baseline.py); the
#: measurements that chose these values are in BENCHMARKS.md.
WORKER_OPTIONS: dict[str, object] = {}


async def register_search_attributes(client: Client, namespace: str) -> list[str]:
    """Add the complaint search attributes the namespace lacks; returns the names added."""
    existing = await client.operator_service.list_search_attributes(
        ListSearchAttributesRequest(namespace=namespace))
    missing = {k.name: k.indexed_value_type for k in search_attributes.ALL
               if k.name not in existing.custom_attributes}
    if missing:
        await client.operator_service.add_search_attributes(
            AddSearchAttributesRequest(namespace=namespace, search_attributes=missing))
    return sorted(missing)


async def create_pool(settings: Settings) -> asyncpg.Pool:
    pool = await asyncpg.create_pool(settings.database_url, min_size=1, max_size=10)
    async with pool.acquire() as conn:
        await apply_migrations(conn)
    return pool


def workflow_runner() -> SandboxedWorkflowRunner:
    """The workflow sandbox, shared by the worker and the replay tests."""
    return SandboxedWorkflowRunner(
        restrictions=SandboxRestrictions.default.with_passthrough_modules(*PASSTHROUGH_MODULES))


def build_worker(client: Client, settings: Settings, pool: asyncpg.Pool, **options: object) -> Worker:
    calendar = CalendarActivities(WorkingDayCalendar(frozenset(settings.closure_days)))
    dossier = DossierActivities(pool)
    mail = MailActivities(pool, settings, LetterTemplates())
    analysis = AnalysisActivities(pool, settings)
    return Worker(
        client,
        task_queue=settings.task_queue,
        workflows=[ComplaintWorkflow, AnnualAnalysisWorkflow],
        workflow_runner=workflow_runner(),
        activities=[
            calendar.plan_deadline,
            dossier.open_dossier,
            dossier.update_dossier,
            dossier.purge_dossier,
            mail.send_letter,
            mail.send_alert,
            analysis.compute_annual_report,
            analysis.store_annual_report,
            analysis.mail_annual_report,
        ],
        **{**WORKER_OPTIONS, **options},  # type: ignore[arg-type]
    )


async def run(settings: Settings) -> None:
    client = await connect(settings)
    added = await register_search_attributes(client, settings.temporal_namespace)
    if added:
        log.info("registered search attributes: %s", ", ".join(added))
    await ensure_annual_schedule(client, settings.task_queue)
    log.info("schedule of the yearly analysis in place (15 January, 06:00 Europe/Amsterdam)")
    pool = await create_pool(settings)
    try:
        worker = build_worker(client, settings, pool)
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        async with worker:
            log.info("worker running on task queue %r (namespace %r)",
                     settings.task_queue, settings.temporal_namespace)
            await stop.wait()
            log.info("stopping: finishing tasks in progress")
    finally:
        await pool.close()


def main() -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        settings = load_settings()
        data_converter(settings)  # fail fast, with one line, when no encryption key is configured
    except ConfigError as err:
        print(f"worker: {err}", file=sys.stderr)
        return 2
    try:
        asyncio.run(run(settings))
    except (OSError, RuntimeError, asyncpg.PostgresError) as err:
        print(f"worker: cannot run: {err}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        pass
    return 0


if __name__ == "__main__":
    with contextlib.suppress(KeyboardInterrupt):
        sys.exit(main())

"""The complaints worker: runs the complaint workflows and their activities.

At start it applies the dossier's schema (idempotent migrations), registers
the operators' search attributes on the namespace if they are missing, and creates
(or updates) the schedule of the yearly analysis (workflows/schedule.py).

    python worker.py
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import importlib.util
import logging
import py_compile
import signal
import sys
from datetime import timedelta

import asyncpg
from temporalio.api.operatorservice.v1 import AddSearchAttributesRequest, ListSearchAttributesRequest
from temporalio.client import Client
from temporalio.common import WorkflowIDConflictPolicy, WorkflowIDReusePolicy
from temporalio.worker import PollerBehaviorSimpleMaximum, Worker
from temporalio.worker.workflow_sandbox import SandboxedWorkflowRunner, SandboxRestrictions

import workflows
import workflows.analysis
import workflows.complaint
import workflows.mailbox
import workflows.retention
from activities.analysis import AnalysisActivities
from activities.calendar import CalendarActivities
from activities.dossier import DossierActivities
from activities.letters import LetterTemplates
from activities.mail import MailActivities
from activities.mailbox import MailboxActivities
from activities.retention import RetentionActivities
from complaints import search_attributes
from complaints.calendar import WorkingDayCalendar
from complaints.models import MailboxWorkflowInput
from dossier.schema import apply_migrations, match_products
from infra import staff_register
from infra.config import ConfigError, Settings, load_settings
from infra.observability import build_runtime, configure_logging
from infra.temporal_client import connect, data_converter
from workflows.analysis import AnnualAnalysisWorkflow
from workflows.complaint import ComplaintWorkflow
from workflows.mailbox import MailboxWorkflow
from workflows.mailbox import workflow_id as mailbox_workflow_id
from workflows.retention import RetentionSweepWorkflow
from workflows.schedule import ensure_annual_schedule, ensure_sweep_schedule

log = logging.getLogger("complaints.worker")

#: How long activities in progress may run on after SIGTERM (below compose's stop_grace_period).
SHUTDOWN_GRACE = timedelta(seconds=50)

# Deterministic libraries the workflow's models use; pydantic imports email_validator
# lazily, so without this every workflow run would re-import it inside the sandbox.
# cryptography checks the staff's signatures in the update validators (complaints/staff.py); it
# imports its OpenSSL backend lazily, and its Rust extension cannot be loaded twice in one process.
PASSTHROUGH_MODULES = ("email_validator", "idna", "phonenumbers", "cryptography")
#: The complaint workflow's own modules, passed through too: the sandbox otherwise executes the module
#: afresh for every complaint it starts, about 10 ms of CPU each, a fifth of a whole intake (BENCHMARKS.md).
#: Their code holds no mutable module state, and each complaint is still its own object; what is given
#: up is the sandbox's run-time check of this code for non-deterministic calls, so the replay test runs
#: every recorded lifecycle in the strict sandbox (``workflow_runner(strict=True)``) at every `make test`.
WORKFLOW_MODULES_PASSED_THROUGH = ("workflows.complaint", "workflows.policies")



def worker_options(settings: Settings) -> dict[str, object]:
    """The Worker's tuning (WORKER_* variables), shared with the benchmark's bare-SDK baseline
    (bench/baseline.py); BENCHMARKS.md has the measurements that chose the defaults."""
    return {
        "max_cached_workflows": settings.worker_max_cached_workflows,
        "max_concurrent_workflow_tasks": settings.worker_max_concurrent_workflow_tasks,
        "max_concurrent_activities": settings.worker_max_concurrent_activities,
        "workflow_task_poller_behavior": PollerBehaviorSimpleMaximum(settings.worker_workflow_pollers),
        "activity_task_poller_behavior": PollerBehaviorSimpleMaximum(settings.worker_activity_pollers),
    }


def tune_garbage_collector(settings: Settings) -> None:
    """Take what start-up made out of the garbage collector's view and collect less often.

    A worker keeps its cached complaints (``WORKER_MAX_CACHED_WORKFLOWS``) in memory: hundreds of thousands
    of objects that live long, which every full collection walks again. With Python's defaults that was
    about 2 ms of CPU per complaint taken in and pauses of up to half a second; frozen and with a first
    threshold of 2000, 0.6 ms and pauses under 52 ms (BENCHMARKS.md). Shared with the benchmark's bare-SDK
    baseline (bench/baseline.py), like ``worker_options``.
    """
    gc.collect()
    gc.freeze()
    gc.set_threshold(settings.worker_gc_threshold, 10, 100)


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
    pool = await asyncpg.create_pool(settings.database_url, min_size=1, max_size=settings.database_pool_size)
    async with pool.acquire() as conn:
        await apply_migrations(conn)
        matched = await match_products(conn, settings.product_catalogue)
    if matched:
        log.info("products from before the catalogue matched to its codes: %d complaint(s)", matched)
    return pool


async def ensure_mailbox_reader(client: Client, settings: Settings) -> None:
    """Start the mailbox's workflow unless it runs (any number of workers: one reader per folder)."""
    assert settings.mailbox is not None
    folder = settings.mailbox.folder
    await client.start_workflow(
        MailboxWorkflow.run, MailboxWorkflowInput(folder=folder), id=mailbox_workflow_id(folder),
        task_queue=settings.task_queue, id_conflict_policy=WorkflowIDConflictPolicy.USE_EXISTING,
        id_reuse_policy=WorkflowIDReusePolicy.ALLOW_DUPLICATE,
        static_summary=f"the info@ mailbox: folder {folder}, new mail every {settings.mailbox.poll_seconds} s")


def compile_workflow_modules() -> None:
    """Write the workflow modules' bytecode next to their source.

    The sandbox imports a workflow's module afresh for every workflow it runs (every new
    complaint, and every cache miss). Without bytecode on disk (PYTHONDONTWRITEBYTECODE, or a
    tree never compiled) each of those imports compiles the source again: a fifth of the
    worker's CPU in a burst of complaints (BENCHMARKS.md). Best effort: a read-only tree is
    left as it is (the Docker image compiles at build time).
    """
    for module in (workflows, workflows.complaint, workflows.analysis, workflows.mailbox, workflows.retention):
        if module.__file__ and module.__file__.endswith(".py"):
            with contextlib.suppress(OSError, py_compile.PyCompileError):
                py_compile.compile(module.__file__, cfile=importlib.util.cache_from_source(module.__file__),
                                   doraise=True)


def workflow_runner(strict: bool = False) -> SandboxedWorkflowRunner:
    """The workflow sandbox, shared by the worker and the replay tests; ``strict`` executes the complaint
    workflow's modules inside it too (``WORKFLOW_MODULES_PASSED_THROUGH``), with every restriction."""
    passed = PASSTHROUGH_MODULES + (() if strict else WORKFLOW_MODULES_PASSED_THROUGH)
    return SandboxedWorkflowRunner(restrictions=SandboxRestrictions.default.with_passthrough_modules(*passed))


def build_worker(client: Client, settings: Settings, pool: asyncpg.Pool, **options: object) -> Worker:
    """The worker with every workflow and activity; ``options`` override any Worker argument.

    Its complaints check every staff action against the staff register ``settings.staff_file`` (one
    register per process: infra/staff_register.py)."""
    staff_register.use(settings.staff_file)
    working_days = WorkingDayCalendar(frozenset(settings.closure_days))
    calendar = CalendarActivities(working_days)
    dossier = DossierActivities(pool, settings.product_catalogue, working_days)
    mail = MailActivities(pool, settings, LetterTemplates(settings.product_catalogue))
    analysis = AnalysisActivities(pool, settings)
    mailbox = MailboxActivities(pool, settings, client)
    retention = RetentionActivities(pool, settings, client)
    arguments: dict[str, object] = {
        "workflows": [ComplaintWorkflow, AnnualAnalysisWorkflow, MailboxWorkflow, RetentionSweepWorkflow],
        "workflow_runner": workflow_runner(),
        "activities": [
            calendar.plan_deadline,
            dossier.open_dossier,
            dossier.update_dossier,
            dossier.purge_dossier,
            mail.send_letter,
            mail.stage_letters,
            mail.send_stored_letter,
            mail.send_alert,
            mail.send_mailbox_alert,
            mailbox.list_new_mail,
            mailbox.process_mail,
            mailbox.quarantine_mail,
            analysis.compute_annual_report,
            analysis.store_annual_report,
            analysis.mail_annual_report,
            retention.sweep_expired_dossiers,
            retention.mail_sweep_report,
        ],
        **worker_options(settings),
    }
    return Worker(client, task_queue=settings.task_queue, **{**arguments, **options})  # type: ignore[arg-type]


async def run(settings: Settings) -> None:
    # The worker's own runtime: its Prometheus endpoint (METRICS_PORT) and the SDK core's log lines.
    client = await connect(settings, runtime=build_runtime(settings))
    if settings.metrics_port is not None:
        log.info("metrics on http://%s:%d/metrics", settings.metrics_host, settings.metrics_port)
    added = await register_search_attributes(client, settings.temporal_namespace)
    if added:
        log.info("registered search attributes: %s", ", ".join(added))
    await ensure_annual_schedule(client, settings.task_queue)
    log.info("schedule of the yearly analysis in place (15 January, 06:00 Europe/Amsterdam)")
    await ensure_sweep_schedule(client, settings.task_queue)
    log.info("schedule of the daily retention sweep in place (03:30 Europe/Amsterdam)")
    if settings.mailbox is not None:
        await ensure_mailbox_reader(client, settings)
        log.info("reading the mailbox %s (workflow %s)", settings.mailbox.where,
                 mailbox_workflow_id(settings.mailbox.folder))
    compile_workflow_modules()
    pool = await create_pool(settings)
    try:
        # On SIGTERM (a deploy, `docker compose stop`) activities in progress get this long to
        # finish; the compose file gives the container 60 s before it is killed.
        worker = build_worker(client, settings, pool, graceful_shutdown_timeout=SHUTDOWN_GRACE)
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        tune_garbage_collector(settings)
        async with worker:
            log.info("worker running on task queue %r (namespace %r)",
                     settings.task_queue, settings.temporal_namespace)
            await stop.wait()
            log.info("stopping: finishing tasks in progress")
    finally:
        await pool.close()


def main() -> int:
    try:
        settings = load_settings()
        data_converter(settings)  # fail fast, with one line, when no encryption key is configured
    except ConfigError as err:
        print(f"worker: {err}", file=sys.stderr)
        return 2
    configure_logging(settings)
    try:
        asyncio.run(run(settings))
    except ConfigError as err:  # the metrics port is taken, a TLS file went away
        print(f"worker: {err}", file=sys.stderr)
        return 2
    except (OSError, RuntimeError, asyncpg.PostgresError) as err:
        print(f"worker: cannot run: {err}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        pass
    return 0


if __name__ == "__main__":
    with contextlib.suppress(KeyboardInterrupt):
        sys.exit(main())

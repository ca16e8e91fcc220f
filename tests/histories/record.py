"""Record real histories of every lifecycle path, for the replay test.

    .venv/bin/python -m tests.histories.record [PATH ...]

(every path, or only the named ones, e.g. ``escalated_mediated_with_consequences``).

Starts its own dev server (with per-workflow time skipping), PostgreSQL and SMTP
server, runs each path with the real worker, and writes every run's history
(a closed complaint continues as new: two runs) to ``tests/histories/*.json``.
Payloads are encrypted with the committed test-only key in ``encryption-keys``.
Re-record after a deliberate, patched change only; the committed files are what
running complaints look like.
"""

from __future__ import annotations

import asyncio
import sys
import tempfile
import uuid
from datetime import timedelta
from pathlib import Path

from temporalio.client import Client, WorkflowHandle
from temporalio.testing import TimeSkippingConfig, WorkflowEnvironment

from complaints.models import (
    ConsequencesPickedUpInput,
    EscalateInput,
    LetterKind,
    MeasureInput,
    Phase,
    ResolveInformallyInput,
    WithdrawInput,
)
from devstack.postgres import LocalPostgres
from devstack.smtp import MailCatcher
from infra.codec import parse_keys
from infra.config import Settings
from infra.temporal_client import data_converter
from tests.conftest import TEMPORAL_CLI, TIME_SKIPPING_FLAG, free_port
from tests.lifecycle import (
    decide,
    engage,
    give_verdict,
    start_formal,
    start_informal,
    started,
    to_mediation,
    wait_letter,
    wait_view,
)
from worker import build_worker, create_pool, register_search_attributes
from workflows.complaint import ComplaintWorkflow

HERE = Path(__file__).resolve().parent
KEYS = parse_keys((HERE / "encryption-keys").read_text())
STAFF = "Marieke Jansen"


async def informal_resolved(env, client, settings, mail) -> WorkflowHandle:
    handle = await start_informal(client, settings)
    await started(handle)
    await handle.execute_update(ComplaintWorkflow.resolve_informally,
                                ResolveInformallyInput(by=STAFF, note="Opgelost in een goed gesprek."))
    return handle


async def formal_default_extension_then_decided(env, client, settings, mail) -> WorkflowHandle:
    handle = await start_formal(client, settings)
    await wait_letter(mail, handle, LetterKind.ACKNOWLEDGEMENT)
    await env.fast_forward(handle, timedelta(days=28))  # due soon, then the default extension
    await wait_letter(mail, handle, LetterKind.EXTENSION)
    await decide(handle)
    await wait_letter(mail, handle, LetterKind.DECISION)
    await env.fast_forward(handle, timedelta(days=15))  # the objection window closes
    return handle


async def escalated_mediated_with_consequences(env, client, settings, mail) -> WorkflowHandle:
    handle = await start_informal(client, settings)
    await started(handle)
    await handle.execute_update(ComplaintWorkflow.escalate, EscalateInput(by=STAFF, reason="Geen oplossing."))
    await wait_letter(mail, handle, LetterKind.ACKNOWLEDGEMENT)
    await to_mediation(handle, mail)
    await engage(handle)
    await give_verdict(handle, ["Herkansing aanbieden.", "Cursusgeld deels terugbetalen."])
    await wait_letter(mail, handle, LetterKind.VERDICT)
    await env.fast_forward(handle, timedelta(days=15))  # consequences overdue
    await handle.execute_update(ComplaintWorkflow.consequences_picked_up,
                                ConsequencesPickedUpInput(by=STAFF, note="Herkansing gepland."))
    await wait_view(handle, lambda v: v.phase is Phase.CLOSED)
    await handle.execute_update(ComplaintWorkflow.record_measure,
                                MeasureInput(by=STAFF, text="Vaste vervanger per training."))
    return handle


async def formal_withdrawn(env, client, settings, mail) -> WorkflowHandle:
    handle = await start_formal(client, settings)
    await wait_letter(mail, handle, LetterKind.ACKNOWLEDGEMENT)
    await handle.execute_update(ComplaintWorkflow.withdraw, WithdrawInput(by=STAFF, reason="Ingetrokken."))
    return handle


PATHS = [informal_resolved, formal_default_extension_then_decided, escalated_mediated_with_consequences,
         formal_withdrawn]


async def save_runs(client: Client, handle: WorkflowHandle, name: str) -> list[Path]:
    runs = [w async for w in client.list_workflows(f"WorkflowId = '{handle.id}'")]
    saved = []
    for number, run in enumerate(sorted(runs, key=lambda r: r.start_time), 1):
        history = await client.get_workflow_handle(handle.id, run_id=run.run_id).fetch_history()
        path = HERE / f"{name}-run{number}.json"
        path.write_text(history.to_json())
        saved.append(path)
    return saved


async def main(names: list[str]) -> None:
    known = {path.__name__: path for path in PATHS}
    unknown = [name for name in names if name not in known]
    if unknown:
        raise SystemExit(f"unknown path(s): {', '.join(unknown)}; known: {', '.join(known)}")
    chosen = [known[name] for name in names] or PATHS
    with tempfile.TemporaryDirectory() as tmp, MailCatcher(free_port()) as mail:
        pg = LocalPostgres(Path(tmp) / "pg", free_port())
        pg.start()
        settings = Settings(database_url=pg.url, smtp_host=mail.host, smtp_port=mail.port,
                            encryption_keys=KEYS, task_queue=f"record-{uuid.uuid4()}")
        env = await WorkflowEnvironment.start_time_skipping_v2(
            ts_config=TimeSkippingConfig(enabled=False), dev_server_existing_path=str(TEMPORAL_CLI),
            dev_server_extra_args=TIME_SKIPPING_FLAG, data_converter=data_converter(settings))
        try:
            await register_search_attributes(env.client, env.client.namespace)
            pool = await create_pool(settings)
            async with build_worker(env.client, settings, pool):
                for path in chosen:
                    handle = await path(env, env.client, settings, mail)
                    await env.fast_forward(handle, timedelta(days=370))  # through the retention year
                    await asyncio.wait_for(handle.result(), 30)
                    for saved in await save_runs(env.client, handle, path.__name__):
                        print("recorded", saved.relative_to(HERE.parent.parent))
            await pool.close()
        finally:
            await env.shutdown()
            pg.stop()


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1:]))

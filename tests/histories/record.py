"""Record real histories of every lifecycle path, for the replay test.

    .venv/bin/python -m tests.histories.record [PATH ...]

(every path, or only the named ones, e.g. ``escalated_mediated_with_consequences``).

Starts its own dev server (with per-workflow time skipping), PostgreSQL and SMTP
server, runs each path with the real worker, and writes every run's history
(a closed complaint continues as new: two runs) to ``tests/histories/*.json``.
Payloads are encrypted with the committed test-only key in ``encryption-keys``.
Re-record after a deliberate, patched change only, keeping the earlier generation beside
it under a ``-v<n>`` name; the committed files are what running complaints look like.
"""

from __future__ import annotations

import asyncio
import sys
import tempfile
import uuid
from datetime import datetime, timedelta, timezone
from pathlib import Path

from temporalio.client import Client, WorkflowHandle
from temporalio.testing import TimeSkippingConfig, WorkflowEnvironment

from complaints.models import (
    ConsequencesPickedUpInput,
    CorrectContactInput,
    EscalateInput,
    LetterBouncedInput,
    LetterKind,
    MeasureInput,
    Phase,
    ResendInput,
    ResolveInformallyInput,
    WithdrawInput,
)
from devstack.postgres import LocalPostgres
from devstack.smtp import MailCatcher
from infra.codec import parse_keys
from infra.config import Settings
from infra.signing import SigningInterceptor
from infra.temporal_client import data_converter
from tests import staff as test_staff
from tests.conftest import TEMPORAL_CLI, TIME_SKIPPING_FLAG, free_port
from tests.lifecycle import (
    decide,
    engage,
    eventually,
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


async def closing_letter_bounced_and_resent(env, client, settings, mail) -> WorkflowHandle:
    """The closing letter bounces once the complaint waits out its year; staff correct the address and
    resend it; the run told the address continues as new (three runs)."""
    handle = await start_informal(client, settings)
    await started(handle)
    first_run = (await handle.describe()).run_id
    await handle.execute_update(ComplaintWorkflow.resolve_informally,
                                ResolveInformallyInput(by=STAFF, note="Opgelost in een goed gesprek."))
    [sent] = await wait_letter(mail, handle, LetterKind.INFORMAL_RESOLUTION)
    retention_run = await eventually(lambda: _run_after(client, handle.id, first_run), what="the retention run")
    await handle.execute_update(ComplaintWorkflow.letter_bounced, LetterBouncedInput(
        ref="0123456789abcdef", at=datetime.now(timezone.utc), message_id=str(sent["Message-ID"]), reason="5.1.1"))
    await handle.execute_update(ComplaintWorkflow.correct_contact,
                                CorrectContactInput(by=STAFF, email="jan.de.vries@example.nl"))
    await handle.execute_update(ComplaintWorkflow.resend,
                                ResendInput(by=STAFF, kind=LetterKind.INFORMAL_RESOLUTION))
    await wait_letter(mail, handle, LetterKind.INFORMAL_RESOLUTION, count=2)
    await eventually(lambda: _run_after(client, handle.id, retention_run), what="a run without the address")
    return handle


async def closed_while_mail_server_failing(env, client, settings, mail) -> WorkflowHandle:
    """The mail server fails when the complaint is withdrawn: the letter waits in the dossier and the
    retention run sends it once the server works again."""
    handle = await start_formal(client, settings)
    await wait_letter(mail, handle, LetterKind.ACKNOWLEDGEMENT)
    first_run = (await handle.describe()).run_id
    mail.refuse_mail_from = "421 4.3.2 Service not available"
    try:
        await handle.execute_update(ComplaintWorkflow.withdraw, WithdrawInput(by=STAFF, reason="Ingetrokken."))
        await eventually(lambda: _run_after(client, handle.id, first_run), timeout=600, interval=1,
                         what="the retention run (after the letter's attempts)")
    finally:
        mail.refuse_mail_from = None
    await env.fast_forward(handle, timedelta(minutes=11))
    await wait_letter(mail, handle, LetterKind.WITHDRAWAL)
    await wait_view(handle, lambda v: any(r.kind is LetterKind.WITHDRAWAL for r in v.letters))
    return handle


async def _run_after(client: Client, complaint_id: str, run_id: str) -> str | None:
    current = (await client.get_workflow_handle(complaint_id).describe()).run_id
    return current if current != run_id else None


PATHS = [informal_resolved, formal_default_extension_then_decided, escalated_mediated_with_consequences,
         formal_withdrawn, closing_letter_bounced_and_resent, closed_while_mail_server_failing]


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
                            encryption_keys=KEYS, task_queue=f"record-{uuid.uuid4()}",
                            staff_file=test_staff.REGISTER)  # staff actions signed, as the suite's
        env = await WorkflowEnvironment.start_time_skipping_v2(
            ts_config=TimeSkippingConfig(enabled=False), dev_server_existing_path=str(TEMPORAL_CLI),
            dev_server_extra_args=TIME_SKIPPING_FLAG, data_converter=data_converter(settings),
            interceptors=[SigningInterceptor(test_staff.Keyring())])
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

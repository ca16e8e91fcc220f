"""A patch has an exit: ``MEDIATION_STALLED_PATCH`` from ``workflow.patched`` to ``deprecate_patch`` to
nothing, each step proven safe (or shown unsafe too early) on real histories.

- Step 0, today: complaints that were in mediation before the patch replay (the committed ``-v1``
  history, recorded before the mediation deadline existed) because the timer is behind ``patched``.
- Step 1, deprecate: histories recorded with the patch (its marker) replay under ``deprecate_patch``;
  the pre-patch history does not, which is why step 1 waits until no pre-patch complaint runs.
- Step 2, remove: a history written by step 1 (a deprecated marker) replays without any call;
  a history recorded with the patch (a marker that is not deprecated) does not, which is why step 2 waits
  until no complaint that ran step 0's code runs. The step-1 history is made here, on the dev server.
  (Complaints of generation 1, COMPLAINT_GENERATION, take the patch without a marker: nothing to retire.)
"""

from __future__ import annotations

import uuid
from datetime import datetime, timezone
from pathlib import Path

import asyncpg
import pytest
from pydantic import ValidationError
from temporalio import workflow
from temporalio.client import Client, WorkflowHistory
from temporalio.worker import Replayer, UnsandboxedWorkflowRunner, WorkflowReplayResult

from complaints.models import (
    COMPLAINT_GENERATION,
    ComplaintResult,
    ComplaintWorkflowInput,
    EscalateInput,
    LetterKind,
    Phase,
)
from devstack.smtp import MailCatcher
from infra.codec import parse_keys
from infra.config import Settings
from infra.temporal_client import data_converter
from tests.lifecycle import (
    new_submission,
    patch_markers,
    settled_history_length,
    start_informal,
    started,
    to_mediation,
    wait_letter,
    wait_view,
)
from worker import build_worker, workflow_runner
from workflows.analysis import AnnualAnalysisWorkflow
from workflows.complaint import LEAN_ACTIONS_PATCH, MEDIATION_STALLED_PATCH, ComplaintWorkflow

HISTORIES = Path(__file__).resolve().parent / "histories"
KEYS = parse_keys((HISTORIES / "encryption-keys").read_text())
#: Recorded before the mediation deadline existed (no patch marker).
BEFORE_THE_PATCH = HISTORIES / "escalated_mediated_with_consequences-v1-run1.json"
#: Recorded with the patch (step 0: a ``patched`` marker), by a complaint from before generations (today's
#: complaints take the patch without a marker: COMPLAINT_GENERATION).
WITH_THE_PATCH = HISTORIES / "escalated_mediated_with_consequences-v5-run1.json"


@workflow.defn(name="ComplaintWorkflow")
class _Step1Deprecated(ComplaintWorkflow):
    """Step 1: ``deprecate_patch``, and the deadline planned without the ``if``."""

    @workflow.run
    async def run(self, input: ComplaintWorkflowInput) -> ComplaintResult:
        return await super().run(input)

    async def _mediation_phase(self) -> None:
        workflow.deprecate_patch(MEDIATION_STALLED_PATCH)
        if self._view.deadlines.mediator_by is None:
            await self._plan_mediator()
        await self._follow_deadlines(Phase.MEDIATION, self._mediation_deadlines)


@workflow.defn(name="ComplaintWorkflow")
class _Step2Removed(ComplaintWorkflow):
    """Step 2: the patch gone; the code as if the deadline had always been there."""

    @workflow.run
    async def run(self, input: ComplaintWorkflowInput) -> ComplaintResult:
        return await super().run(input)

    async def _mediation_phase(self) -> None:
        if self._view.deadlines.mediator_by is None:
            await self._plan_mediator()
        await self._follow_deadlines(Phase.MEDIATION, self._mediation_deadlines)


async def _replay(history: WorkflowHistory, workflow_class: type,
                  keys: tuple[tuple[str, bytes], ...] = KEYS) -> WorkflowReplayResult:
    runner = workflow_runner() if workflow_class is ComplaintWorkflow else UnsandboxedWorkflowRunner()
    replayer = Replayer(workflows=[workflow_class], workflow_runner=runner,
                        data_converter=data_converter(Settings(encryption_keys=keys)))
    return await replayer.replay_workflow(history, raise_on_replay_failure=False)


def _committed(path: Path) -> WorkflowHistory:
    return WorkflowHistory.from_json(path.stem, path.read_text())


def _nondeterministic(result: WorkflowReplayResult) -> bool:
    return result.replay_failure is not None and "nondetermin" in str(result.replay_failure).lower()


async def test_step_0_the_patch_lets_complaints_from_before_it_replay() -> None:
    before = _committed(BEFORE_THE_PATCH)
    assert (await _replay(before, ComplaintWorkflow)).replay_failure is None
    assert _nondeterministic(await _replay(before, _Step2Removed))  # without the guard they would break
    assert (await _replay(_committed(WITH_THE_PATCH), ComplaintWorkflow)).replay_failure is None


async def test_step_1_deprecating_is_safe_once_no_complaint_from_before_the_patch_runs() -> None:
    assert (await _replay(_committed(WITH_THE_PATCH), _Step1Deprecated)).replay_failure is None
    assert _nondeterministic(await _replay(_committed(BEFORE_THE_PATCH), _Step1Deprecated))


async def test_step_2_removing_is_safe_once_only_deprecated_markers_remain(
        client: Client, settings: Settings, pool: asyncpg.Pool, mail: MailCatcher) -> None:
    # A complaint that reaches mediation under step 1's code, on the dev server.
    async with build_worker(client, settings, pool, workflows=[_Step1Deprecated, AnnualAnalysisWorkflow],
                            workflow_runner=UnsandboxedWorkflowRunner()):
        handle = await start_informal(client, settings)
        await started(handle)
        await handle.execute_update(ComplaintWorkflow.escalate, EscalateInput(by="Marieke Jansen", reason="Geen."))
        await to_mediation(handle, mail)
        await wait_view(handle, lambda v: v.deadlines.mediator_by is not None
                        and v.next_deadline == v.deadlines.mediator_by, "the mediator deadline")
        written_by_step_1 = await handle.fetch_history()
    keys = settings.encryption_keys
    assert (await _replay(written_by_step_1, _Step2Removed, keys)).replay_failure is None
    assert (await _replay(written_by_step_1, _Step1Deprecated, keys)).replay_failure is None
    assert _nondeterministic(await _replay(_committed(WITH_THE_PATCH), _Step2Removed))


def test_code_older_than_a_complaints_generation_does_not_run_it() -> None:
    """The input of a complaint from a newer generation is refused (a worker decoding it fails the workflow
    task, which is tried again) instead of the complaint running without the patches its generation implies."""
    submission = new_submission().model_copy(update={"received_at": datetime.now(timezone.utc)})
    assert ComplaintWorkflowInput(submission=submission, generation=COMPLAINT_GENERATION).generation \
        == COMPLAINT_GENERATION
    with pytest.raises(ValidationError) as refused:
        ComplaintWorkflowInput(submission=submission, generation=COMPLAINT_GENERATION + 1)
    assert f"generation {COMPLAINT_GENERATION + 1} is newer than this code's" in str(refused.value)


async def test_a_complaint_without_a_generation_asks_its_patches_as_before(
        client: Client, settings: Settings, worker: None, mail: MailCatcher) -> None:
    """A complaint started by an intake from before generations (its input has none) runs today's code
    through ``workflow.patched``: it records the lean patch's marker, and takes the lean intake."""
    submission = new_submission(route="formal", channel="email").model_copy(
        update={"received_at": datetime.now(timezone.utc)})
    handle = await client.start_workflow(ComplaintWorkflow.run, ComplaintWorkflowInput(submission=submission),
                                         id=f"complaint-{uuid.uuid4().hex[:16]}", task_queue=settings.task_queue)
    await wait_letter(mail, handle, LetterKind.ACKNOWLEDGEMENT)
    await settled_history_length(handle)
    events = (await handle.fetch_history()).events
    assert patch_markers(events) == [LEAN_ACTIONS_PATCH]
    assert [e.activity_task_scheduled_event_attributes.activity_type.name for e in events
            if e.HasField("activity_task_scheduled_event_attributes")] == ["open_dossier", "send_letter"]

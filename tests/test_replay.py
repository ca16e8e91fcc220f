"""Running complaints must survive every change to the workflow code.

Replays the committed histories of every lifecycle path (recorded with
``python -m tests.histories.record``) against today's workflow; a change that would
break complaints already running fails here with a non-determinism error.
"""

from __future__ import annotations

from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

import pytest
from temporalio.client import WorkflowHistory
from temporalio import workflow
from temporalio.worker import Replayer, UnsandboxedWorkflowRunner

from complaints.codec import parse_keys
from complaints.config import Settings
from complaints.models import ComplaintResult, ComplaintWorkflowInput
from complaints.temporal_client import data_converter
from worker import workflow_runner
from workflows.complaint import ComplaintWorkflow

HISTORIES = Path(__file__).resolve().parent / "histories"
KEYS = parse_keys((HISTORIES / "encryption-keys").read_text())
FILES = sorted(HISTORIES.glob("*.json"))


def test_every_lifecycle_path_has_recorded_histories() -> None:
    names = {f.name.rsplit("-run", 1)[0] for f in FILES}
    assert names >= {"informal_resolved", "formal_default_extension_then_decided",
                      "escalated_mediated_with_consequences", "formal_withdrawn"}
    # Each closed complaint continued as new into its retention run.
    assert all((HISTORIES / f"{name}-run2.json").exists() for name in names)


@pytest.mark.parametrize("path", FILES, ids=[f.stem for f in FILES])
async def test_recorded_history_replays(path: Path) -> None:
    history = WorkflowHistory.from_json(path.stem, path.read_text())
    replayer = Replayer(workflows=[ComplaintWorkflow], workflow_runner=workflow_runner(),
                        data_converter=data_converter(Settings(encryption_keys=KEYS)))
    result = await replayer.replay_workflow(history, raise_on_replay_failure=False)
    assert result.replay_failure is None, f"{path.name}: {result.replay_failure}"


@workflow.defn(name="ComplaintWorkflow")
class _WithoutThePatch(ComplaintWorkflow):
    """Today's workflow as it would be had the mediation deadline been added without ``patched``."""

    @workflow.run
    async def run(self, input: ComplaintWorkflowInput) -> ComplaintResult:
        return await super().run(input)

    async def _mediation_phase(self) -> None:
        with _always_patched():
            await super()._mediation_phase()


@contextmanager
def _always_patched() -> Iterator[None]:
    original = workflow.patched
    workflow.patched = lambda patch_id: True  # type: ignore[assignment]
    try:
        yield
    finally:
        workflow.patched = original  # type: ignore[assignment]


async def test_the_mediation_deadline_was_added_behind_a_patch() -> None:
    """Complaints that were in mediation before the mediator deadline existed replay because the
    new timer is guarded by ``workflow.patched``; without the guard they would break."""
    path = HISTORIES / "escalated_mediated_with_consequences-run1.json"
    history = WorkflowHistory.from_json(path.stem, path.read_text())
    converter = data_converter(Settings(encryption_keys=KEYS))
    guarded = await Replayer(workflows=[ComplaintWorkflow], workflow_runner=workflow_runner(),
                             data_converter=converter).replay_workflow(history, raise_on_replay_failure=False)
    assert guarded.replay_failure is None
    unguarded = await Replayer(workflows=[_WithoutThePatch], workflow_runner=UnsandboxedWorkflowRunner(),
                               data_converter=converter).replay_workflow(history, raise_on_replay_failure=False)
    assert unguarded.replay_failure is not None
    assert "nondetermin" in str(unguarded.replay_failure).lower()

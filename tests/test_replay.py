"""Running complaints must survive every change to the workflow code.

Replays the committed histories of every lifecycle path (recorded with
``python -m tests.histories.record``) against today's workflow; a change that would
break complaints already running fails here with a non-determinism error. Older
generations are kept beside the newest (``-v1``: before the mediation deadline's patch; ``-v2``:
before the mail patches: alerts in a queue of their own, a failing mail server, a closed complaint's
letters; ``-v3``: before the lean intake; ``-v4``: before the lean staff actions; ``-v5``: before the
complaint's generation in its input, with patch markers; the two paths recorded later have ``-v1`` before
the lean intake, ``-v2`` before the lean staff actions, ``-v3`` before the generation);
tests/test_patches.py shows what each patch guards and how it retires.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from temporalio.client import WorkflowHistory
from temporalio.worker import Replayer

from infra.codec import parse_keys
from infra.config import Settings
from infra.temporal_client import data_converter
from tests.lifecycle import patch_markers
from worker import workflow_runner
from workflows.complaint import ComplaintWorkflow

HISTORIES = Path(__file__).resolve().parent / "histories"
KEYS = parse_keys((HISTORIES / "encryption-keys").read_text())
FILES = sorted(HISTORIES.glob("*.json"))


def test_every_lifecycle_path_has_recorded_histories() -> None:
    names = {f.name.rsplit("-run", 1)[0] for f in FILES}
    paths = {"informal_resolved", "formal_default_extension_then_decided", "escalated_mediated_with_consequences",
             "formal_withdrawn"}
    later = {"closing_letter_bounced_and_resent", "closed_while_mail_server_failing"}
    # Each generation kept: today's (generation 1, no patch markers), the lean staff actions' with their
    # marker (-v5; -v3 for the later paths), the lean intake's (-v4; -v2), before it (-v3; -v1), and older.
    assert names >= paths | {f"{path}-{v}" for path in paths for v in ("v2", "v3", "v4", "v5")} \
        | {"escalated_mediated_with_consequences-v1"}
    assert names >= later | {f"{path}-{v}" for path in later for v in ("v1", "v2", "v3")}
    # Each closed complaint continued as new into its retention run.
    assert all((HISTORIES / f"{name}-run2.json").exists() for name in names)


def test_todays_histories_record_no_patch_marker() -> None:
    """A complaint of generation 1 takes every patch without asking (COMPLAINT_GENERATION)."""
    today = [f for f in FILES if "-v" not in f.name]
    assert len(today) == 13
    for f in today:
        assert patch_markers(WorkflowHistory.from_json(f.stem, f.read_text()).events) == [], f.name


@pytest.mark.parametrize("path", FILES, ids=[f.stem for f in FILES])
async def test_recorded_history_replays(path: Path) -> None:
    history = WorkflowHistory.from_json(path.stem, path.read_text())
    replayer = Replayer(workflows=[ComplaintWorkflow], workflow_runner=workflow_runner(strict=True),
                        data_converter=data_converter(Settings(encryption_keys=KEYS)))
    result = await replayer.replay_workflow(history, raise_on_replay_failure=False)
    assert result.replay_failure is None, f"{path.name}: {result.replay_failure}"

"""Shared helpers for the lifecycle tests of ComplaintWorkflow.

The tests drive one complaint at a time against the real servers of
``conftest.py``: start it through the intake API, act as staff through the
workflow's updates, fast-forward the complaint's own virtual clock, and check
what the outside world sees: the view, the search attributes, the mail that
arrived at the SMTP server and the dossier rows in PostgreSQL.

Activities run in real time while timers run on the virtual clock, so anything a
timer or an update sets in motion (a letter, an alert, a dossier write) is
checked with a bounded poll (:func:`eventually`), never with a fixed sleep.
"""

from __future__ import annotations

import asyncio
import inspect
import json
import time as _time
from collections.abc import Iterable
from datetime import date, datetime, time, timedelta
from typing import Any, Callable
from zoneinfo import ZoneInfo

import asyncpg
import holidays
import pytest
from temporalio.api.common.v1 import WorkflowExecution
from temporalio.api.enums.v1 import EventType
from temporalio.api.history.v1 import HistoryEvent
from temporalio.api.workflowservice.v1 import DeleteWorkflowExecutionRequest
from temporalio.client import Client, WorkflowExecutionStatus, WorkflowHandle, WorkflowUpdateFailedError
from temporalio.exceptions import ApplicationError
from temporalio.service import RPCError, RPCStatusCode
from temporalio.testing import WorkflowEnvironment

from complaints import search_attributes as sa
from complaints.models import (
    AlertKind,
    ComplaintSubmission,
    ComplaintView,
    DecideInput,
    DisagreeInput,
    EngageMediatorInput,
    LetterKind,
    Outcome,
    Phase,
    VerdictInput,
)
from devstack.smtp import MailCatcher
from infra.config import Settings
from starter import submit_complaint
from tests.factories import complaint_json
from workflows.complaint import ComplaintWorkflow

AMSTERDAM = ZoneInfo("Europe/Amsterdam")
#: How long a poll waits for something set in motion to show (real seconds).
WAIT = 15.0


# ------------------------------------------------------------------ polling


async def eventually(check: Callable[[], Any], timeout: float = WAIT, interval: float = 0.05,
                     what: str = "condition") -> Any:
    """Call ``check`` (sync or async) until it returns something truthy; return that.

    An ``AssertionError`` raised by ``check`` counts as "not yet"; the last one is
    re-raised when the time is up, so a failing test shows what was wrong.
    """
    deadline = _time.monotonic() + timeout
    last: BaseException | None = None
    while True:
        try:
            result = check()
            if inspect.isawaitable(result):
                result = await result
            if result:
                return result
            last = None
        except AssertionError as err:
            last = err
        if _time.monotonic() >= deadline:
            if last is not None:
                raise last
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        await asyncio.sleep(interval)


# -------------------------------------------------------------- complaints


def new_submission(**overrides: Any) -> ComplaintSubmission:
    """A complaint as an intake service submits it, with a reference of its own (tests/factories.py)."""
    return ComplaintSubmission.model_validate(complaint_json(**overrides))


async def start_complaint(client: Client, settings: Settings, **overrides: Any) -> WorkflowHandle:
    """Submit a complaint through the intake API; returns the handle of its workflow."""
    submission = new_submission(**overrides)
    result = await submit_complaint(client, submission, task_queue=settings.task_queue,
                                    catalogue=settings.product_catalogue)
    assert result.created
    return client.get_workflow_handle_for(ComplaintWorkflow.run, result.complaint_id)


async def start_informal(client: Client, settings: Settings, **overrides: Any) -> WorkflowHandle:
    return await start_complaint(client, settings, route="informal", channel="conversation", **overrides)


async def start_formal(client: Client, settings: Settings, **overrides: Any) -> WorkflowHandle:
    return await start_complaint(client, settings, route="formal", channel="email", **overrides)


async def workflow_exists(client: Client, complaint_id: str) -> bool:
    """Whether Temporal knows a workflow with this id (so: whether a complaint was started)."""
    try:
        await client.get_workflow_handle(complaint_id).describe()
        return True
    except RPCError as err:
        if err.status == RPCStatusCode.NOT_FOUND:
            return False
        raise


async def forget_history(client: Client, complaint_id: str) -> str:
    """Delete every run of the complaint's workflow, as the namespace's retention does once it has
    completed; returns the first run id it had."""
    description = await client.get_workflow_handle(complaint_id).describe()
    first_run = description.raw_description.workflow_execution_info.first_run_id

    async def gone() -> bool:
        try:
            run = (await client.get_workflow_handle(complaint_id).describe()).run_id
        except RPCError as err:
            if err.status == RPCStatusCode.NOT_FOUND:
                return True
            raise
        await client.workflow_service.delete_workflow_execution(DeleteWorkflowExecutionRequest(
            namespace=client.namespace, workflow_execution=WorkflowExecution(workflow_id=complaint_id, run_id=run)))
        return False
    await eventually(gone, timeout=60, interval=0.5, what="the history deleted")
    return first_run


async def run_after(client: Client, complaint_id: str, run_id: str) -> str | None:
    """The complaint's latest run when it is not ``run_id`` (the run that followed it, e.g. its retention
    run); None while ``run_id`` is still the latest. For ``eventually``."""
    current = (await client.get_workflow_handle(complaint_id).describe()).run_id
    return current if current != run_id else None


async def status(handle: WorkflowHandle) -> ComplaintView:
    return await handle.query(ComplaintWorkflow.status)


async def wait_view(handle: WorkflowHandle, predicate: Callable[[ComplaintView], bool],
                    what: str = "the view", timeout: float = WAIT) -> ComplaintView:
    """Poll the status query until ``predicate(view)`` holds; returns that view."""
    async def check() -> ComplaintView | None:
        view = await status(handle)
        return view if predicate(view) else None
    return await eventually(check, timeout=timeout, what=what)


async def started(handle: WorkflowHandle) -> ComplaintView:
    """Wait until the workflow has planned its first deadline (and so published it)."""
    return await wait_view(handle, lambda v: v.next_deadline is not None, "the first deadline")


# --------------------------------------------------------------- the clock


async def virtual_now(env: WorkflowEnvironment, handle: WorkflowHandle) -> datetime:
    return await env.get_current_time(handle)


async def advance(env: WorkflowEnvironment, handle: WorkflowHandle, by: timedelta) -> None:
    await env.fast_forward(handle, by)


async def advance_to(env: WorkflowEnvironment, handle: WorkflowHandle, moment: datetime,
                     margin: timedelta = timedelta(minutes=1)) -> None:
    """Fast-forward the complaint's clock to ``margin`` after ``moment``."""
    now = await virtual_now(env, handle)
    assert moment + margin > now, f"{moment} is already past (now {now})"
    await env.fast_forward(handle, moment + margin - now)


async def advance_to_just_before(env: WorkflowEnvironment, handle: WorkflowHandle, moment: datetime,
                                 margin: timedelta = timedelta(hours=1)) -> None:
    """Fast-forward to ``margin`` before ``moment`` (the deadline has not fired yet)."""
    now = await virtual_now(env, handle)
    assert moment - margin > now, f"{moment - margin} is already past (now {now})"
    await env.fast_forward(handle, moment - margin - now)


def end_of_nth_working_day(received_at: datetime, n: int, closure_days: frozenset[date] = frozenset()
                           ) -> datetime:
    """23:59:59 Amsterdam on the ``n``-th Dutch working day after the (local) day of receipt.

    Written out independently of ``complaints.calendar`` so the tests check the
    workflow's deadlines against the procedure, not against the same code.
    """
    day = received_at.astimezone(AMSTERDAM).date()
    nl = holidays.country_holidays("NL", years=range(day.year, day.year + 2))
    while n:
        day += timedelta(days=1)
        if day.weekday() < 5 and day not in nl and day not in closure_days:
            n -= 1
    return datetime.combine(day, time(23, 59, 59), tzinfo=AMSTERDAM)


def amsterdam_end_of(day: date) -> datetime:
    return datetime.combine(day, time(23, 59, 59), tzinfo=AMSTERDAM)


def local_day(moment: datetime) -> date:
    return moment.astimezone(AMSTERDAM).date()


def one_year_after(moment: datetime) -> datetime:
    try:
        return moment.replace(year=moment.year + 1)
    except ValueError:  # 29 February
        return moment.replace(year=moment.year + 1, day=28)


def close_to(a: datetime | None, b: datetime | None, within: timedelta = timedelta(seconds=2)) -> bool:
    return a is not None and b is not None and abs(a - b) <= within


# ---------------------------------------------------------------- history


async def history_length(handle: WorkflowHandle) -> int:
    return len([event async for event in handle.fetch_history_events()])


_UNFINISHED = (EventType.EVENT_TYPE_WORKFLOW_EXECUTION_STARTED, EventType.EVENT_TYPE_WORKFLOW_TASK_SCHEDULED,
               EventType.EVENT_TYPE_WORKFLOW_TASK_STARTED)


async def _last_event_unfinished(handle: WorkflowHandle) -> bool:
    """The run has a workflow task to do (e.g. a run just continued as new has only started)."""
    events = [event async for event in handle.fetch_history_events()]
    return bool(events) and events[-1].event_type in _UNFINISHED


async def settled_history_length(handle: WorkflowHandle, timeout: float = WAIT) -> int:
    """Wait until the workflow has nothing in flight; return its history length then.

    Letters, alerts and dossier writes run in the background after every change;
    a refused action may only be judged against a history that is not growing
    for other reasons.
    """
    deadline = _time.monotonic() + timeout
    previous: tuple[str, int] | None = None
    while True:
        description = await handle.describe()
        raw = description.raw_description
        busy = bool(raw.pending_activities) or raw.HasField("pending_workflow_task") \
            or description.status == WorkflowExecutionStatus.CONTINUED_AS_NEW
        length = await history_length(handle)
        # A closed complaint continues as new: judge only a run that stayed the same run.
        current = (description.run_id, length)
        if (await handle.describe()).run_id != description.run_id or await _last_event_unfinished(handle):
            busy = True
        if not busy and current == previous:
            return length
        previous = None if busy else current
        if _time.monotonic() >= deadline:
            raise AssertionError("the workflow did not settle (activities or tasks still pending)")
        await asyncio.sleep(0.1)


async def assert_refused(handle: WorkflowHandle, update: Any, arg: Any, error_type: str | None) -> str:
    """The update is refused (as ``error_type``, if given) before it touches history; returns the message."""
    before = await settled_history_length(handle)
    view_before = await status(handle)
    with pytest.raises(WorkflowUpdateFailedError) as info:
        await handle.execute_update(update, arg)
    cause = info.value.cause
    assert isinstance(cause, ApplicationError), f"refused with {cause!r}"
    if error_type is not None:
        assert cause.type == error_type, f"refused as {cause.type}: {cause.message}"
    assert await history_length(handle) == before, "a refused action must not touch history"
    assert await status(handle) == view_before, "a refused action must not change the complaint"
    return cause.message


# --------------------------------------------------------- search attributes


async def search_attributes(handle: WorkflowHandle) -> dict[str, Any]:
    tsa = (await handle.describe()).typed_search_attributes
    return {
        "phase": tsa.get(sa.PHASE),
        "route": tsa.get(sa.ROUTE),
        "product": tsa.get(sa.PRODUCT),
        "outcome": tsa.get(sa.OUTCOME),
        "next_deadline": tsa.get(sa.NEXT_DEADLINE),
    }


async def assert_search_attributes(handle: WorkflowHandle, *, phase: Phase, route: str, product: str,
                                   outcome: Outcome | None, next_deadline: datetime | None) -> None:
    """The search attributes match (polled: they are upserted by the workflow task that follows)."""
    expected = {"phase": phase.value, "route": route, "product": product,
                "outcome": outcome.value if outcome else None}

    async def check() -> bool:
        found = await search_attributes(handle)
        assert {k: found[k] for k in expected} == expected, found
        if next_deadline is None:
            assert found["next_deadline"] is None, found
        else:
            assert close_to(found["next_deadline"], next_deadline, timedelta(milliseconds=1)), \
                (found["next_deadline"], next_deadline)
        return True
    await eventually(check, what="search attributes")


# -------------------------------------------------------------------- mail


def patch_markers(events: Iterable[HistoryEvent]) -> list[str]:
    """The patches a run recorded a marker of (each ``workflow.patched`` it asked), in order."""
    return [json.loads(e.marker_recorded_event_attributes.details["patch-data"].payloads[0].data)["id"]
            for e in events if e.marker_recorded_event_attributes.marker_name == "core_patch"]


def letters(mail: MailCatcher, handle: WorkflowHandle, kind: LetterKind) -> list[Any]:
    return mail.find(x_complaint_id=handle.id, x_letter_kind=kind.value)


def alerts(mail: MailCatcher, handle: WorkflowHandle, kind: AlertKind) -> list[Any]:
    return mail.find(x_complaint_id=handle.id, x_alert_kind=kind.value)


async def wait_letter(mail: MailCatcher, handle: WorkflowHandle, kind: LetterKind, count: int = 1) -> list[Any]:
    """Wait until ``count`` letters of ``kind`` arrived; then check there are exactly that many."""
    found = await eventually(lambda: len(letters(mail, handle, kind)) >= count,
                             what=f"{count} {kind.value} letter(s)") and letters(mail, handle, kind)
    assert len(found) == count, f"{len(found)} {kind.value} letters, expected {count}"
    return found


async def wait_alert(mail: MailCatcher, handle: WorkflowHandle, kind: AlertKind, count: int = 1) -> list[Any]:
    found = await eventually(lambda: len(alerts(mail, handle, kind)) >= count,
                             what=f"{count} {kind.value} alert(s)") and alerts(mail, handle, kind)
    assert len(found) == count, f"{len(found)} {kind.value} alerts, expected {count}"
    return found


async def assert_mail_matches_view(mail: MailCatcher, handle: WorkflowHandle, settings: Settings,
                                   complainant_email: str = "jan.devries@example.nl") -> ComplaintView:
    """Once all is sent: exactly one message per letter and per alert the view records.

    Letters go to the complainant with X-Letter-Kind, alerts to the director with
    X-Alert-Kind; nothing else was sent about this complaint.
    """
    await settled_history_length(handle)
    view = await status(handle)
    sent = [m for m in mail.find(x_complaint_id=handle.id)]
    letter_mail = sorted(str(m["X-Letter-Kind"]) for m in sent if m["X-Letter-Kind"])
    alert_mail = sorted(str(m["X-Alert-Kind"]) for m in sent if m["X-Alert-Kind"])
    assert len(letter_mail) + len(alert_mail) == len(sent)
    assert letter_mail == sorted(letter.kind.value for letter in view.letters)
    assert alert_mail == sorted(alert.kind.value for alert in view.alerts)
    assert all(letter.status == "sent" for letter in view.letters)
    message_ids = [str(m["Message-ID"]) for m in sent]
    assert len(set(message_ids)) == len(message_ids), "a message was sent twice"
    for m in sent:
        to = str(m["To"])
        if m["X-Letter-Kind"]:
            assert complainant_email in to, to
        else:
            assert to == settings.director_email, to
    return view


# ---------------------------------------------------------------- dossier


async def dossier(pool: asyncpg.Pool, handle: WorkflowHandle) -> asyncpg.Record:
    row = await pool.fetchrow("SELECT * FROM complaints WHERE complaint_id = $1", handle.id)
    assert row is not None, f"no dossier for {handle.id}"
    return row


async def wait_dossier(pool: asyncpg.Pool, handle: WorkflowHandle, **expected: Any) -> asyncpg.Record:
    """Poll the dossier row until the given columns hold the given values."""
    async def check() -> asyncpg.Record:
        row = await dossier(pool, handle)
        found = {k: row[k] for k in expected}
        assert found == expected, found
        return row
    return await eventually(check, what="the dossier")


async def dossier_events(pool: asyncpg.Pool, handle: WorkflowHandle) -> list[asyncpg.Record]:
    return await pool.fetch("SELECT * FROM complaint_events WHERE complaint_id = $1 ORDER BY sequence",
                            handle.id)


# ------------------------------------------------------- common staff steps


async def decide(handle: WorkflowHandle, outcome: Outcome = Outcome.REJECTED, by: str = "Marieke Jansen",
                 motivation: str = "De training is volledig gegeven; zie de presentielijst.") -> ComplaintView:
    return await handle.execute_update(ComplaintWorkflow.decide,
                                       DecideInput(by=by, outcome=outcome, motivation=motivation))


async def to_mediation(handle: WorkflowHandle, mail: MailCatcher) -> ComplaintView:
    """A formal complaint decided, then the complainant does not agree: mediation."""
    await started(handle)
    await decide(handle)
    await wait_letter(mail, handle, LetterKind.DECISION)
    view = await handle.execute_update(ComplaintWorkflow.disagree,
                                       DisagreeInput(by="Marieke Jansen", note="Klant gaat niet akkoord."))
    assert view.phase is Phase.MEDIATION
    return view


async def engage(handle: WorkflowHandle, mediator: str = "Mr. A. Bemiddelaar") -> ComplaintView:
    return await handle.execute_update(ComplaintWorkflow.engage_mediator,
                                       EngageMediatorInput(by="Marieke Jansen", mediator=mediator))


async def give_verdict(handle: WorkflowHandle, consequences: list[str] | None = None) -> ComplaintView:
    return await handle.execute_update(ComplaintWorkflow.verdict, VerdictInput(
        by="Mr. A. Bemiddelaar", summary="De klacht is deels terecht.", consequences=consequences or []))


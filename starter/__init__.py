"""Intake: validate complaints and start one durable workflow per complaint.

For intake services (a mail gateway, a letter scanner) in Python::

    from starter import connect, load_settings, parse_complaints, submit_complaints

    settings = load_settings()
    client = await connect(settings)
    complaints = parse_complaints(raw_bytes)          # raises IntakeError, naming each problem
    results = await submit_complaints(client, complaints, task_queue=settings.task_queue)
    for r in results:
        print(r.complaint_id, r.created)

``submit_complaint(client, complaint, task_queue=...)`` starts a single one. The
complaint id is derived from the reference (or the contents), so submitting the
same complaint again returns the same id with ``created=False``.
"""

from __future__ import annotations

import asyncio
import json
import re
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any, Iterable

from pydantic import ValidationError
from temporalio.client import Client
from temporalio.common import (
    SearchAttributePair,
    TypedSearchAttributes,
    WorkflowIDConflictPolicy,
    WorkflowIDReusePolicy,
)
from temporalio.exceptions import WorkflowAlreadyStartedError

from complaints import search_attributes as sa
from complaints.ids import complaint_id_for
from complaints.models import ComplaintSubmission, ComplaintWorkflowInput, Phase, Route
from infra.config import load_settings
from infra.temporal_client import connect
from workflows.complaint import ComplaintWorkflow

__all__ = [
    "IntakeError",
    "SubmitResult",
    "connect",
    "load_settings",
    "parse_complaints",
    "validate_complaints",
    "submit_complaint",
    "submit_complaints",
]

MAX_NESTING_MESSAGE = "input: JSON is nested too deeply"


class IntakeError(ValueError):
    """One or more complaints are invalid; ``problems`` holds one line per problem."""

    def __init__(self, problems: list[str]) -> None:
        super().__init__("\n".join(problems))
        self.problems = problems


@dataclass(frozen=True)
class SubmitResult:
    complaint_id: str
    created: bool


def _load_json(data: bytes | str) -> list[Any]:
    """One JSON complaint, a JSON array of complaints, or JSON Lines."""
    if isinstance(data, bytes):
        try:
            text = data.decode("utf-8-sig")
        except UnicodeDecodeError as err:
            raise IntakeError([f"input: not valid UTF-8 (byte {err.start})"]) from None
    else:
        text = data
    if not text.strip():
        raise IntakeError(["input: no complaint found (empty input)"])
    try:
        document = json.loads(text)
        return document if isinstance(document, list) else [document]
    except RecursionError:
        raise IntakeError([MAX_NESTING_MESSAGE]) from None
    except json.JSONDecodeError as whole_error:
        # JSON Lines are separated by "\n" only: str.splitlines() would also split inside a string
        # at U+2028/U+2029 or U+0085, which JSON allows unescaped (JSON.stringify emits U+2028 raw).
        lines = [line for line in text.split("\n") if line.strip()]
        if len(lines) < 2:
            raise IntakeError([f"input: not valid JSON ({whole_error.msg} at line "
                               f"{whole_error.lineno}, column {whole_error.colno})"]) from None
        items: list[Any] = []
        problems = []
        for number, line in enumerate(lines, 1):
            try:
                items.append(json.loads(line))
            except RecursionError:
                problems.append(f"line {number}: JSON is nested too deeply")
            except json.JSONDecodeError as err:
                problems.append(f"line {number}: not valid JSON ({err.msg}, column {err.colno})")
            except ValueError as err:
                problems.append(f"line {number}: not valid JSON ({_json_value_error(err)})")
        if problems:
            raise IntakeError(problems) from None
        return items
    except ValueError as err:  # not a JSONDecodeError: e.g. an integer of more than 4300 digits
        raise IntakeError([f"input: not valid JSON ({_json_value_error(err)})"]) from None


def _json_value_error(err: ValueError) -> str:
    """json.loads raises a plain ValueError for a number it cannot convert (Python's int digit limit)."""
    if "digits" in str(err):
        return "a number has too many digits"
    return str(err).splitlines()[0] if str(err) else type(err).__name__


#: A field name shown as is; any other key (one an intake service made up) is shown quoted and cut.
_PLAIN_FIELD = re.compile(r"[^\s.:\"\\]{1,64}")


def _field(part: Any) -> str:
    """One part of a field path, on one line: an unknown key may hold a line break or be a megabyte long."""
    text = str(part)
    if isinstance(part, int) or (_PLAIN_FIELD.fullmatch(text) and text.isprintable()):
        return text
    return json.dumps(text if len(text) <= 64 else text[:64] + "...")  # ASCII, escaped, quoted


def _describe(error: dict[str, Any]) -> str:
    loc = ".".join(_field(part) for part in error.get("loc", ()))
    message = str(error.get("msg", "invalid"))
    message = message.removeprefix("Value error, ")
    if error.get("type") == "extra_forbidden":
        message = "unknown field"
    elif error.get("type") == "missing":
        message = "required field is missing"
    return f"{loc}: {message}" if loc else message


def validate_complaints(items: Iterable[Any], now: datetime | None = None) -> list[ComplaintSubmission]:
    """Validate every item; raise :class:`IntakeError` listing all problems, or return them all."""
    now = now or datetime.now(timezone.utc)
    problems: list[str] = []
    complaints: list[ComplaintSubmission] = []
    seen: dict[str, int] = {}
    for number, item in enumerate(items, 1):
        if not isinstance(item, dict):
            problems.append(f"item {number}: must be a JSON object (a complaint), not {type(item).__name__}")
            continue
        try:
            complaint = ComplaintSubmission.model_validate(item, context={"now": now})
        except ValidationError as err:
            problems.extend(f"item {number}: {_describe(e)}" for e in err.errors(include_input=False))
            continue
        except RecursionError:
            problems.append(f"item {number}: JSON is nested too deeply")
            continue
        cid = complaint_id_for(complaint)
        if cid in seen:
            what = "reference: the same reference as" if complaint.reference else "the same complaint as"
            problems.append(f"item {number}: {what} item {seen[cid]}")
            continue
        seen[cid] = number
        complaints.append(complaint)
    if problems:
        raise IntakeError(problems)
    return complaints


def parse_complaints(data: bytes | str, now: datetime | None = None) -> list[ComplaintSubmission]:
    """Parse and validate a JSON complaint, a JSON array, or JSON Lines."""
    items = _load_json(data)
    if not items:
        raise IntakeError(["input: no complaint found (empty array)"])
    return validate_complaints(items, now)


async def submit_complaint(client: Client, complaint: ComplaintSubmission, *, task_queue: str,
                           now: datetime | None = None) -> SubmitResult:
    """Start the complaint's workflow; ``created`` is False when it already existed."""
    complaint_id = complaint_id_for(complaint)
    if complaint.received_at is None:
        complaint = complaint.model_copy(update={"received_at": now or datetime.now(timezone.utc)})
    phase = Phase.FORMAL if complaint.route is Route.FORMAL else Phase.INFORMAL
    try:
        await client.start_workflow(
            ComplaintWorkflow.run,
            ComplaintWorkflowInput(submission=complaint),
            id=complaint_id,
            task_queue=task_queue,
            id_reuse_policy=WorkflowIDReusePolicy.REJECT_DUPLICATE,
            id_conflict_policy=WorkflowIDConflictPolicy.FAIL,
            search_attributes=TypedSearchAttributes([
                SearchAttributePair(sa.PHASE, phase.value),
                SearchAttributePair(sa.ROUTE, complaint.route.value),
                SearchAttributePair(sa.PRODUCT, complaint.product),
            ]),
            static_summary=f"Complaint {complaint_id}: {complaint.product} ({complaint.route.value})",
        )
    except WorkflowAlreadyStartedError:
        return SubmitResult(complaint_id, created=False)
    return SubmitResult(complaint_id, created=True)


async def submit_complaints(client: Client, complaints: list[ComplaintSubmission], *, task_queue: str,
                            concurrency: int = 32) -> list[SubmitResult]:
    """Start all complaints (in parallel, bounded); results in the input's order."""
    gate = asyncio.Semaphore(concurrency)
    now = datetime.now(timezone.utc)

    async def one(complaint: ComplaintSubmission) -> SubmitResult:
        async with gate:
            return await submit_complaint(client, complaint, task_queue=task_queue, now=now)

    return list(await asyncio.gather(*(one(c) for c in complaints)))

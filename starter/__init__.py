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
from datetime import datetime, timezone
from typing import Any

from temporalio.client import Client

from complaints.models import ComplaintSubmission
from complaints.products import Catalogue
from infra.config import load_settings
from infra.temporal_client import connect
from intake.start import SubmitResult, submit_complaint
from intake.validate import IntakeError, validate_complaints

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


def parse_complaints(data: bytes | str, now: datetime | None = None) -> list[ComplaintSubmission]:
    """Parse and validate a JSON complaint, a JSON array, or JSON Lines."""
    items = _load_json(data)
    if not items:
        raise IntakeError(["input: no complaint found (empty array)"])
    return validate_complaints(items, now)


async def submit_complaints(client: Client, complaints: list[ComplaintSubmission], *, task_queue: str,
                            concurrency: int = 32, catalogue: Catalogue | None = None) -> list[SubmitResult]:
    """Start all complaints (in parallel, bounded); results in the input's order. ``catalogue``: the
    product catalogue to match products with (default: ``PRODUCT_CATALOGUE_FILE``'s, else Level Up's)."""
    gate = asyncio.Semaphore(concurrency)
    now = datetime.now(timezone.utc)

    async def one(complaint: ComplaintSubmission) -> SubmitResult:
        async with gate:
            return await submit_complaint(client, complaint, task_queue=task_queue, catalogue=catalogue, now=now)

    return list(await asyncio.gather(*(one(c) for c in complaints)))

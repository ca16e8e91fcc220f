"""Validating complaints as intake services submit them: every problem named, one line each
(``item N: field: message``), and nothing of a batch started while any item is wrong."""

from __future__ import annotations

import json
import re
from datetime import datetime, timezone
from typing import Any, Iterable

from pydantic import ValidationError

from complaints.ids import complaint_id_for
from complaints.models import ComplaintSubmission, IntakeSubmission


class IntakeError(ValueError):
    """One or more complaints are invalid; ``problems`` holds one line per problem."""

    def __init__(self, problems: list[str]) -> None:
        super().__init__("\n".join(problems))
        self.problems = problems


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
            complaint = IntakeSubmission.model_validate(item, context={"now": now})
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

"""Complaints for tests: valid by default, any field overridable."""

from __future__ import annotations

import uuid
from datetime import datetime, timezone
from typing import Any


def complaint_json(**overrides: Any) -> dict[str, Any]:
    """A valid formal complaint as an intake service would send it (JSON-ready)."""
    now = datetime.now(timezone.utc)
    data: dict[str, Any] = {
        "reference": f"<{uuid.uuid4()}@mail.example.nl>",
        "channel": "email",
        "route": "formal",
        "complainant": {
            "name": "Jan de Vries",
            "organisation": "Gemeente Delft",
            "email": "jan.devries@example.nl",
            "phone": "+31 6 12345678",
            "role": "customer",
        },
        "product": "Training Agile",
        "submitted_on": now.date().isoformat(),
        "description": "De trainer kwam twee dagen niet opdagen.",
        "motivation": "Wij hebben voor een volledige training betaald.",
    }
    for key, value in overrides.items():
        if value is _DELETE:
            data.pop(key, None)
        else:
            data[key] = value
    return data


_DELETE = object()
DELETE = _DELETE

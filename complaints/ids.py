"""Complaint ids: deterministic, short, and free of personal data.

The id is derived from the channel's own reference when there is one (a mail
Message-ID, a letter's scan number), so submitting the same reference twice
finds the same complaint. Without a reference it is derived from the complaint's
contents, so an intake service that retries the very same submission does not
create a second complaint either. Only a hash prefix is used: the id never
reveals the reference or the contents.
"""

from __future__ import annotations

import hashlib
import json

from complaints.models import ComplaintSubmission

PREFIX = "complaint-"


def complaint_id_for(submission: ComplaintSubmission) -> str:
    if submission.reference is not None:
        key = "reference:" + submission.reference
    else:
        content = submission.model_dump(mode="json", exclude={"reference"})
        key = "content:" + json.dumps(content, sort_keys=True, ensure_ascii=False)
    digest = hashlib.sha256(key.encode("utf-8")).hexdigest()
    return PREFIX + digest[:16]

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
import re

from complaints.models import ComplaintSubmission

PREFIX = "complaint-"


#: A complaint id as it appears in a letter's subject or Message-ID.
PATTERN = re.compile(r"complaint-[0-9a-f]{16}")
#: A mail's Message-ID (RFC 5322 msg-id, angle brackets included).
MESSAGE_ID = re.compile(r"<[^<>\s@]+@[^<>\s@]+>")


def complaint_id_for(submission: ComplaintSubmission) -> str:
    if submission.reference is not None:
        return complaint_id_for_reference(submission.reference)
    content = submission.model_dump(mode="json", exclude={"reference"})
    return _id("content:" + json.dumps(content, sort_keys=True, ensure_ascii=False))


def complaint_id_for_reference(reference: str) -> str:
    """The id of the complaint whose channel reference (e.g. its mail's Message-ID) this is."""
    return _id("reference:" + reference)


def _id(key: str) -> str:
    return PREFIX + hashlib.sha256(key.encode("utf-8")).hexdigest()[:16]


def sender_hash(address: str) -> str:
    """An e-mail address as mail about a complaint names its sender to the workflow: hashed, so the
    workflow can tell the complainant's own address without the history holding anyone's address."""
    return hashlib.sha256(address.strip().lower().encode("utf-8")).hexdigest()


def fingerprint(submission: ComplaintSubmission) -> str:
    """What the complaint says (everything but its reference and the moment of receipt), hashed: two
    submissions with one reference are the same complaint only if their fingerprints are equal."""
    content = submission.model_dump(mode="json", exclude={"reference", "received_at"})
    return hashlib.sha256(json.dumps(content, sort_keys=True, ensure_ascii=False).encode("utf-8")).hexdigest()


def instance_token(first_run_id: str) -> str:
    """Which complaint of an id, as our letters' Message-IDs say it: a short hash of its workflow's first
    run id. An id is used again only when an earlier complaint's history is gone (Temporal's retention,
    another cluster); its letters and the new complaint's then never share a Message-ID."""
    return hashlib.sha256(first_run_id.encode("utf-8")).hexdigest()[:12]

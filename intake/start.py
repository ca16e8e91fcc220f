"""Start one complaint's workflow: the one place that does it (starter, the mailbox, admin register).

The workflow id is derived from the complaint (complaints/ids.py), so starting the same
complaint again finds the running one: ``created`` is False, nothing is started twice. A
different complaint that carries a reference already used (a scanner restarting its numbering, a
reused Message-ID) is told apart by its fingerprint, kept in the workflow's memo: ``conflict``.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timezone

from temporalio.client import Client
from temporalio.common import (
    SearchAttributePair,
    TypedSearchAttributes,
    WorkflowIDConflictPolicy,
    WorkflowIDReusePolicy,
)
from temporalio.exceptions import WorkflowAlreadyStartedError

from complaints import search_attributes as sa
from complaints.ids import complaint_id_for, fingerprint
from complaints.products import Catalogue
from infra.config import configured_catalogue
from complaints.models import (
    COMPLAINT_GENERATION,
    ComplaintResult,
    ComplaintSubmission,
    ComplaintWorkflowInput,
    Phase,
    Route,
)

#: The complaint workflow's type (workflows/complaint.py; tests/test_mailbox_processing.py checks).
COMPLAINT_WORKFLOW = "ComplaintWorkflow"


#: The memo key holding a complaint's fingerprint (complaints/ids.py), set when its workflow starts.
FINGERPRINT = "fingerprint"


@dataclass(frozen=True)
class SubmitResult:
    complaint_id: str
    created: bool
    #: Another complaint already has this reference: nothing was started (``complaint_id`` is the other's).
    conflict: bool = False


async def submit_complaint(client: Client, complaint: ComplaintSubmission, *, task_queue: str,
                           catalogue: Catalogue | None = None, now: datetime | None = None) -> SubmitResult:
    """Start the complaint's workflow; ``created`` is False when it already existed.

    The complainant's words for the product are matched to the ``catalogue`` here (default: the one
    ``PRODUCT_CATALOGUE_FILE`` names, else Level Up's as shipped): the workflow, its search attribute
    and its summary get the code, never the words.
    """
    complaint_id = complaint_id_for(complaint)
    product = (catalogue or configured_catalogue()).match(complaint.product)
    if complaint.received_at is None:
        complaint = complaint.model_copy(update={"received_at": now or datetime.now(timezone.utc)})
    phase = Phase.FORMAL if complaint.route is Route.FORMAL else Phase.INFORMAL
    attributes = [SearchAttributePair(sa.PHASE, phase.value), SearchAttributePair(sa.ROUTE, complaint.route.value)]
    if product is not None:
        attributes.append(SearchAttributePair(sa.PRODUCT, product))
    if complaint.missing():  # as the workflow keeps it (only complaints that ever lacked minimum contents have it)
        attributes.append(SearchAttributePair(sa.INCOMPLETE, True))
    mine = fingerprint(complaint)
    try:
        await client.start_workflow(
            COMPLAINT_WORKFLOW,
            ComplaintWorkflowInput(submission=complaint, product_code=product, generation=COMPLAINT_GENERATION),
            id=complaint_id,
            task_queue=task_queue,
            result_type=ComplaintResult,
            id_reuse_policy=WorkflowIDReusePolicy.REJECT_DUPLICATE,
            id_conflict_policy=WorkflowIDConflictPolicy.FAIL,
            search_attributes=TypedSearchAttributes(attributes),
            static_summary=f"Complaint {complaint_id}: {product or 'product not yet known'} "
                           f"({complaint.route.value})",
            memo={FINGERPRINT: mine},
        )
    except WorkflowAlreadyStartedError:
        theirs = await _fingerprint_of(client, complaint_id)
        return SubmitResult(complaint_id, created=False, conflict=theirs is not None and theirs != mine)
    return SubmitResult(complaint_id, created=True)


async def _fingerprint_of(client: Client, complaint_id: str) -> str | None:
    """The running (or kept) complaint's fingerprint; None for one started before fingerprints were kept."""
    memo = await (await client.get_workflow_handle(complaint_id).describe()).memo()
    value = memo.get(FINGERPRINT)
    return value if isinstance(value, str) else None

from datetime import timedelta

from complaints.models import ComplaintSubmission, Phase
from starter import submit_complaint
from tests.factories import complaint_json
from workflows.complaint import ComplaintWorkflow


async def test_formal_complaint_is_acknowledged(env, client, settings, worker, mail):
    sub = ComplaintSubmission.model_validate(complaint_json())
    result = await submit_complaint(client, sub, task_queue=settings.task_queue)
    handle = client.get_workflow_handle(result.complaint_id)
    await env.fast_forward(handle, timedelta(minutes=1))
    view = await handle.query(ComplaintWorkflow.status)
    assert view.phase is Phase.FORMAL
    assert view.acknowledged_at is not None
    assert len(mail.find(x_complaint_id=result.complaint_id, x_letter_kind="acknowledgement")) == 1

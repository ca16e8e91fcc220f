"""The product's metrics, emitted through the Temporal SDK's meter.

Workflow code counts through ``workflow.metric_meter()``, which records nothing while
a workflow replays (and adds nothing to its history); activities count through
``activity.metric_meter()``. With ``METRICS_PORT`` set, the worker's runtime serves
them on its Prometheus endpoint next to the SDK's own ``temporal_*`` metrics
(infra/observability.py); without it the meter is a no-op.

Labels carry kinds and results only, never a complaint id or anything personal.
"""

from __future__ import annotations

from temporalio.common import MetricMeter

#: Complaints received, by the route they came in on (``route``: formal | informal).
OPENED = "complaints_opened"
#: Letters the mail server took, by ``kind`` (acknowledgement, decision, ...).
LETTERS_SENT = "complaint_letters_sent"
#: Alerts raised to the General Director, by ``kind`` (acknowledgement-overdue, ...).
ALERTS = "complaint_alerts"
#: The procedure's deadlines, by ``deadline`` (acknowledgement | resolution | consequences)
#: and ``result`` (met | missed); each complaint counts at most once per deadline.
DEADLINES = "complaint_deadlines"
#: Failed attempts to hand a message to the mail server, by ``stage`` (connect, login, MAIL FROM,
#: RCPT TO, DATA); a refused recipient is not a failure of the server and is not counted.
MAIL_SERVER_FAILURES = "complaint_mail_server_failures"
#: Complaints whose letters wait because the mail server keeps failing (the workflow counts each spell).
MAIL_SERVER_FAILING = "complaint_mail_server_failing"

_DESCRIPTIONS = {
    OPENED: "Complaints received, by route",
    LETTERS_SENT: "Letters to complainants the mail server took, by kind",
    ALERTS: "Alerts raised to the General Director, by kind",
    DEADLINES: "Procedure deadlines met or missed, by deadline",
    MAIL_SERVER_FAILURES: "Failed attempts to hand a message to the mail server, by stage",
    MAIL_SERVER_FAILING: "Complaints whose letters wait for a failing mail server",
}

ACKNOWLEDGEMENT = "acknowledgement"
RESOLUTION = "resolution"
CONSEQUENCES = "consequences"
MET = "met"
MISSED = "missed"


def count(meter: MetricMeter, name: str, **attributes: str) -> None:
    """Add one to the counter ``name`` with the given labels."""
    meter.create_counter(name, _DESCRIPTIONS[name]).add(1, attributes)


def deadline(meter: MetricMeter, which: str, result: str) -> None:
    count(meter, DEADLINES, deadline=which, result=result)

"""The formal procedure: acknowledgement, the resolution term, extensions, the decision.

Also the acknowledgement during a mail outage: the letter is retried until the
mail server takes it, sent exactly once, and the director is alerted when the
acknowledgement deadline passes without it.
"""

from __future__ import annotations

import dataclasses
import uuid
from datetime import date, datetime, timedelta, timezone

import pytest
from temporalio.api.enums.v1 import EventType
from temporalio.client import WorkflowUpdateFailedError
from temporalio.exceptions import ApplicationError

from complaints.calendar import dutch_long_date
from complaints.models import (
    AlertKind,
    ConsequencesPickedUpInput,
    DecideInput,
    DisagreeInput,
    EngageMediatorInput,
    EscalateInput,
    ExtendInput,
    LetterKind,
    MeasureInput,
    Outcome,
    Phase,
    ResolveInformallyInput,
    VerdictInput,
    WithdrawInput,
)
from complaints import search_attributes as sa
from devstack.smtp import MailCatcher
from tests.conftest import free_port
from tests.factories import DELETE
from tests.lifecycle import (
    advance,
    advance_to,
    advance_to_just_before,
    alerts,
    amsterdam_end_of,
    assert_mail_matches_view,
    assert_refused,
    assert_search_attributes,
    close_to,
    decide,
    dossier_events,
    end_of_nth_working_day,
    eventually,
    history_length,
    letters,
    local_day,
    one_year_after,
    settled_history_length,
    start_formal,
    started,
    status,
    virtual_now,
    wait_alert,
    wait_dossier,
    wait_letter,
    wait_view,
)
from worker import build_worker
from workflows.complaint import ComplaintWorkflow

PRODUCT = "training-agile"  # the catalogue's code for the complainant's "Training Agile"
STAFF = "Marieke Jansen"


async def test_formal_complaint_is_acknowledged_at_once(env, client, settings, worker, mail, pool):
    handle = await start_formal(client, settings)
    [letter] = await wait_letter(mail, handle, LetterKind.ACKNOWLEDGEMENT)
    view = await wait_view(handle, lambda v: v.acknowledged_at is not None and v.next_deadline is not None)

    assert view.phase is Phase.FORMAL
    assert view.formal_received_at == view.received_at
    acknowledge_by = end_of_nth_working_day(view.received_at, 3)
    assert view.deadlines.acknowledge_by == acknowledge_by
    assert view.deadlines.resolve_by == view.received_at + timedelta(days=28)
    assert view.calendar is not None and "NL public holidays" in view.calendar
    assert view.acknowledged_at <= acknowledge_by
    assert [(record.kind, record.status) for record in view.letters] == [(LetterKind.ACKNOWLEDGEMENT, "sent")]
    body = letter.get_content()
    assert "Geachte Jan de Vries" in body
    assert f"uiterlijk {dutch_long_date(view.deadlines.resolve_by)} af te handelen" in body
    assert str(letter["X-Complaint-Id"]) == handle.id

    # Acknowledged, so the next deadline is "resolution due soon".
    due_soon = view.deadlines.resolve_by - timedelta(days=7)
    assert view.next_deadline == due_soon
    await assert_search_attributes(handle, phase=Phase.FORMAL, route="formal", product=PRODUCT,
                                   outcome=None, next_deadline=due_soon)
    await wait_dossier(pool, handle, phase="formal", route="formal", acknowledge_by=acknowledge_by,
                       resolve_by=view.deadlines.resolve_by, acknowledged_at=view.acknowledged_at,
                       calendar=view.calendar)
    row = await pool.fetchrow("SELECT status, recipient, body FROM letters WHERE complaint_id = $1"
                              " AND kind = 'acknowledgement'", handle.id)
    assert row["status"] == "sent" and row["recipient"] == "jan.devries@example.nl" and row["body"]

    # Sent in time: passing the acknowledgement deadline raises no alert.
    await advance_to(env, handle, acknowledge_by, margin=timedelta(hours=2))
    view = await assert_mail_matches_view(mail, handle, settings)
    assert view.alerts == []
    assert len(letters(mail, handle, LetterKind.ACKNOWLEDGEMENT)) == 1


async def test_intake_is_one_dossier_write_and_one_letter(env, client, settings, worker, mail, pool):
    """The lean intake (issue 15): the dossier opens with the first state, its deadline planned by the
    activity; the acknowledgement records itself in the dossier as it is marked sent. Nothing else runs:
    no local activity, no separate dossier write, and the search attributes the intake set at start are
    not upserted again."""
    handle = await start_formal(client, settings, motivation=DELETE)  # incomplete: that attribute set at start too
    await wait_letter(mail, handle, LetterKind.ACKNOWLEDGEMENT)
    view = await wait_view(handle, lambda v: v.acknowledged_at is not None and v.next_deadline is not None)
    await settled_history_length(handle)
    events = (await handle.fetch_history()).events

    activities = [e.activity_task_scheduled_event_attributes.activity_type.name for e in events
                  if e.event_type == EventType.EVENT_TYPE_ACTIVITY_TASK_SCHEDULED]
    assert activities == ["open_dossier", "send_letter"]
    markers = [e.marker_recorded_event_attributes.marker_name for e in events
               if e.event_type == EventType.EVENT_TYPE_MARKER_RECORDED]
    # No local activity, and no patch marker: the complaint's generation (set by the intake) implies them all.
    assert markers == []
    upserts = [set(e.upsert_workflow_search_attributes_event_attributes.search_attributes.indexed_fields)
               for e in events if e.event_type == EventType.EVENT_TYPE_UPSERT_WORKFLOW_SEARCH_ATTRIBUTES]
    # Only the next deadline, once acknowledged (no TemporalChangeVersion: no patch was asked).
    assert upserts == [{sa.NEXT_DEADLINE.name}]
    assert sum(e.event_type == EventType.EVENT_TYPE_WORKFLOW_TASK_COMPLETED for e in events) == 3
    # One timer: the next deadline once the letter is out (none is started and cancelled while it goes).
    assert [e.event_type for e in events if e.event_type in (EventType.EVENT_TYPE_TIMER_STARTED,
            EventType.EVENT_TYPE_TIMER_CANCELED)] == [EventType.EVENT_TYPE_TIMER_STARTED]

    # Planned as the local activity would have, and all of it in the dossier.
    assert view.deadlines.acknowledge_by == end_of_nth_working_day(view.received_at, 3)
    assert view.deadlines.complete_by == end_of_nth_working_day(view.received_at, 5)
    assert view.calendar is not None and "NL public holidays" in view.calendar
    row = await wait_dossier(pool, handle, phase="formal", acknowledge_by=view.deadlines.acknowledge_by,
                             resolve_by=view.deadlines.resolve_by, calendar=view.calendar,
                             acknowledged_at=view.acknowledged_at)
    assert row["state_version"] >= 2
    assert [e["action"] for e in await dossier_events(pool, handle)] == ["submitted"]
    await assert_search_attributes(handle, phase=Phase.FORMAL, route="formal", product=PRODUCT, outcome=None,
                                   next_deadline=view.deadlines.complete_by)  # acknowledged; still incomplete
    assert (await handle.describe()).typed_search_attributes.get(sa.INCOMPLETE) is True

    # The dossier keeps up with what follows (the writer takes over from the intake's versions).
    decided = await decide(handle)
    await wait_dossier(pool, handle, phase="decided", decided_at=decided.decision.at)


async def test_a_decision_is_one_letter_that_carries_the_state(env, client, settings, worker, mail, pool):
    """Lean staff actions (issue 15): the decision letter takes the decided state to the dossier with its row
    and records itself as the next version, so no dossier write follows it; the deadline's timer changes
    only when the deadline does (not for a measure, not for a letter sent); the Web UI is brought up to date
    once for the decision (its phase, outcome and next deadline together)."""
    handle = await start_formal(client, settings)
    await wait_letter(mail, handle, LetterKind.ACKNOWLEDGEMENT)
    await wait_view(handle, lambda v: v.acknowledged_at is not None and v.next_deadline is not None)
    before = await settled_history_length(handle)

    await handle.execute_update(ComplaintWorkflow.record_measure, MeasureInput(
        by=STAFF, text="Trainers sturen de presentielijst voortaan mee."))
    await eventually(lambda: _measures(pool, handle.id), what="the measure in the dossier")
    decided = await decide(handle)
    await wait_letter(mail, handle, LetterKind.DECISION)
    view = await wait_view(handle, lambda v: [(l.kind, l.status) for l in v.letters][-1:] == [
        (LetterKind.DECISION, "sent")])
    await settled_history_length(handle)
    events = (await handle.fetch_history()).events[before:]

    activities = [e.activity_task_scheduled_event_attributes.activity_type.name for e in events
                  if e.event_type == EventType.EVENT_TYPE_ACTIVITY_TASK_SCHEDULED]
    assert activities == ["update_dossier", "send_letter"]  # the measure's write; the letter with the decision
    timers = [e.event_type for e in events if e.event_type in (EventType.EVENT_TYPE_TIMER_STARTED,
                                                               EventType.EVENT_TYPE_TIMER_CANCELED)]
    assert timers == [EventType.EVENT_TYPE_TIMER_CANCELED, EventType.EVENT_TYPE_TIMER_STARTED]  # the decision's
    upserts = [set(e.upsert_workflow_search_attributes_event_attributes.search_attributes.indexed_fields)
               for e in events if e.event_type == EventType.EVENT_TYPE_UPSERT_WORKFLOW_SEARCH_ATTRIBUTES]
    assert upserts == [{sa.PHASE.name, sa.OUTCOME.name, sa.NEXT_DEADLINE.name}]
    await assert_search_attributes(handle, phase=Phase.DECIDED, route="formal", product=PRODUCT,
                                   outcome=Outcome.REJECTED, next_deadline=view.deadlines.objection_by)

    row = await wait_dossier(pool, handle, phase="decided", decided_at=decided.decision.at,
                             decision_motivation=decided.decision.motivation)
    assert await pool.fetchval("SELECT status FROM letters WHERE complaint_id = $1 AND kind = 'decision'",
                               handle.id) == "sent"
    assert [e["action"] for e in await dossier_events(pool, handle)][-2:] == ["measure", "decide"]
    assert row["phase"] == "decided"


async def test_a_refused_decision_letter_leaves_the_decision_in_the_dossier(env, client, settings, worker, mail,
                                                                            pool):
    """The decision's state goes to the dossier with its letter's row, before the mail server is asked:
    a letter refused for good leaves the decision recorded, and the refusal too."""
    address = f"jan.devries-{uuid.uuid4().hex[:8]}@example.nl"
    handle = await start_formal(client, settings, complainant={
        "name": "Jan de Vries", "organisation": "Gemeente Delft", "email": address,
        "phone": "+31 6 12345678", "role": "customer"})
    await wait_letter(mail, handle, LetterKind.ACKNOWLEDGEMENT)
    await wait_view(handle, lambda v: v.acknowledged_at is not None)
    before = await settled_history_length(handle)
    mail.refused_recipients.add(address)
    try:
        decided = await decide(handle)
        await wait_alert(mail, handle, AlertKind.LETTER_UNDELIVERABLE)
    finally:
        mail.refused_recipients.discard(address)
    view = await wait_view(handle, lambda v: [(l.kind, l.status) for l in v.letters][-1:] == [
        (LetterKind.DECISION, "failed")])
    assert view.phase is Phase.DECIDED
    await settled_history_length(handle)
    events = (await handle.fetch_history()).events[before:]
    # The letter went first, with the decision; the writer wrote only what its refusal changed.
    first, *then = [e.activity_task_scheduled_event_attributes.activity_type.name for e in events
                    if e.event_type == EventType.EVENT_TYPE_ACTIVITY_TASK_SCHEDULED]
    assert first == "send_letter" and sorted(then) == ["send_alert", "update_dossier"]
    await wait_dossier(pool, handle, phase="decided", decided_at=decided.decision.at)
    assert await pool.fetchval("SELECT status FROM letters WHERE complaint_id = $1 AND kind = 'decision'",
                               handle.id) == "failed"
    actions = [e["action"] for e in await eventually(
        lambda: _events_through(pool, handle, "alert letter-undeliverable"), what="the refusal in the dossier")]
    assert actions[-3:] == ["decide", "letter decision undeliverable", "alert letter-undeliverable"]


async def _measures(pool, complaint_id: str) -> bool:
    return bool(await pool.fetchval("SELECT count(*) FROM measures WHERE complaint_id = $1", complaint_id))


async def _events_through(pool, handle, last: str) -> list:
    rows = await dossier_events(pool, handle)
    assert rows and rows[-1]["action"] == last, [r["action"] for r in rows]
    return rows


async def test_resolution_term_without_decision_is_extended_by_default(env, client, settings, worker,
                                                                       mail, pool):
    handle = await start_formal(client, settings)
    await wait_letter(mail, handle, LetterKind.ACKNOWLEDGEMENT)
    view = await wait_view(handle, lambda v: v.acknowledged_at is not None)
    term = view.deadlines.resolve_by
    assert term == view.received_at + timedelta(days=28)

    # Three weeks in: no alert yet; then 7 days before the term: resolution-due-soon.
    await advance_to_just_before(env, handle, term - timedelta(days=7))
    await settled_history_length(handle)
    assert (await status(handle)).alerts == []
    await advance_to(env, handle, term - timedelta(days=7))
    [message] = await wait_alert(mail, handle, AlertKind.RESOLUTION_DUE_SOON)
    assert str(message["To"]) == settings.director_email
    view = await wait_view(handle, lambda v: len(v.alerts) == 1)
    assert view.alerts[0].kind is AlertKind.RESOLUTION_DUE_SOON and view.alerts[0].deadline == term
    assert view.extensions == 0 and view.deadlines.resolve_by == term
    await assert_search_attributes(handle, phase=Phase.FORMAL, route="formal", product=PRODUCT,
                                   outcome=None, next_deadline=term - timedelta(hours=24))

    # 24 hours before the term, still no decision: the workflow announces the default new term.
    await advance_to_just_before(env, handle, term - timedelta(hours=24))
    await settled_history_length(handle)
    assert (await status(handle)).extensions == 0
    await advance_to(env, handle, term - timedelta(hours=24))
    [extension] = await wait_letter(mail, handle, LetterKind.EXTENSION)
    await wait_alert(mail, handle, AlertKind.RESOLUTION_OVERDUE)
    view = await wait_view(handle, lambda v: len(v.alerts) == 2 and v.extensions == 1)
    new_term = term + timedelta(days=28)
    assert view.deadlines.resolve_by == new_term
    overdue = view.alerts[1]
    assert overdue.kind is AlertKind.RESOLUTION_OVERDUE and overdue.deadline == term
    extend_entry = [h for h in view.history if h.action == "extend"]
    assert len(extend_entry) == 1 and extend_entry[0].by == "system"
    assert dutch_long_date(new_term) in extension.get_content()
    assert view.phase is Phase.FORMAL
    await wait_dossier(pool, handle, resolve_by=new_term, extensions=1)

    # The new term runs its own course: due soon 7 days before it, overdue once it has passed.
    await advance_to(env, handle, new_term - timedelta(days=7))
    await wait_alert(mail, handle, AlertKind.RESOLUTION_DUE_SOON, count=2)
    view = await wait_view(handle, lambda v: len(v.alerts) == 3)
    assert view.alerts[2].deadline == new_term
    assert view.next_deadline == new_term
    await assert_search_attributes(handle, phase=Phase.FORMAL, route="formal", product=PRODUCT,
                                   outcome=None, next_deadline=new_term)

    await advance_to(env, handle, new_term)
    await wait_alert(mail, handle, AlertKind.RESOLUTION_OVERDUE, count=2)
    view = await wait_view(handle, lambda v: len(v.alerts) == 4)
    assert view.alerts[3].kind is AlertKind.RESOLUTION_OVERDUE and view.alerts[3].deadline == new_term
    assert view.extensions == 1, "the workflow extends by default only once"
    assert len(letters(mail, handle, LetterKind.EXTENSION)) == 1
    assert view.next_deadline is None

    # Nothing more happens by itself; a late decision is recorded as outside the term.
    await advance(env, handle, timedelta(days=20))
    view = await assert_mail_matches_view(mail, handle, settings)
    assert len(view.alerts) == 4
    view = await decide(handle, Outcome.UPHELD)
    assert view.decision.within_term is False
    await wait_letter(mail, handle, LetterKind.DECISION)
    await wait_dossier(pool, handle, phase="decided", decided_within_term=False, outcome="upheld")


async def test_staff_extension_moves_the_term(env, client, settings, worker, mail, pool):
    handle = await start_formal(client, settings)
    await wait_letter(mail, handle, LetterKind.ACKNOWLEDGEMENT)
    view = await wait_view(handle, lambda v: v.acknowledged_at is not None)
    term = view.deadlines.resolve_by
    await advance(env, handle, timedelta(days=10))

    # Not after the current term: refused as an invalid argument, before it touches history.
    for until in (local_day(term), local_day(term) - timedelta(days=1)):
        message = await assert_refused(handle, ComplaintWorkflow.extend,
                                       ExtendInput(by=STAFF, until=until, reason="Meer tijd nodig."),
                                       "InvalidArgument")
        assert "until" in message
    # Nor further ahead than a year from today (the complaint's own clock, 10 days on).
    today = local_day(await virtual_now(env, handle))
    message = await assert_refused(handle, ComplaintWorkflow.extend,
                                   ExtendInput(by=STAFF, until=date(9999, 12, 31), reason="Heel veel tijd."),
                                   "InvalidArgument")
    latest = today.replace(year=today.year + 1) if (today.month, today.day) != (2, 29) else \
        today.replace(year=today.year + 1, day=28)
    assert message == f"until: 9999-12-31 is more than 1 year ahead (at most {latest.isoformat()})"

    until = local_day(term) + timedelta(days=21)
    view = await handle.execute_update(ComplaintWorkflow.extend, ExtendInput(
        by=STAFF, until=until, reason="Wij wachten op de verklaring van de trainer."))
    new_term = amsterdam_end_of(until)
    assert view.deadlines.resolve_by == new_term
    assert view.extensions == 1
    assert view.history[-1].action == "extend" and view.history[-1].by == STAFF
    [extension] = await wait_letter(mail, handle, LetterKind.EXTENSION)
    assert dutch_long_date(new_term) in extension.get_content()
    assert "Wij wachten op de verklaring van de trainer." in extension.get_content()
    await assert_search_attributes(handle, phase=Phase.FORMAL, route="formal", product=PRODUCT,
                                   outcome=None, next_deadline=new_term - timedelta(days=7))
    await wait_dossier(pool, handle, resolve_by=new_term, extensions=1)

    # The old term passes quietly: no due-soon, no default extension, no overdue.
    await advance_to(env, handle, term, margin=timedelta(days=1))
    view = await assert_mail_matches_view(mail, handle, settings)
    assert view.alerts == [] and view.extensions == 1
    assert len(letters(mail, handle, LetterKind.EXTENSION)) == 1

    # The new term: due soon 7 days before, overdue when it passes.
    await advance_to(env, handle, new_term - timedelta(days=7))
    await wait_alert(mail, handle, AlertKind.RESOLUTION_DUE_SOON)
    await advance_to(env, handle, new_term)
    await wait_alert(mail, handle, AlertKind.RESOLUTION_OVERDUE)
    view = await wait_view(handle, lambda v: len(v.alerts) == 2)
    assert [(a.kind, a.deadline) for a in view.alerts] == [
        (AlertKind.RESOLUTION_DUE_SOON, new_term), (AlertKind.RESOLUTION_OVERDUE, new_term)]
    assert len(letters(mail, handle, LetterKind.EXTENSION)) == 1, "no default extension after a staff one"

    # Staff may extend again after the term has passed, as long as there is no decision.
    later = local_day(new_term) + timedelta(days=14)
    view = await handle.execute_update(ComplaintWorkflow.extend,
                                       ExtendInput(by="Pieter Bakker", until=later, reason="Nog meer tijd."))
    assert view.deadlines.resolve_by == amsterdam_end_of(later) and view.extensions == 2
    await wait_letter(mail, handle, LetterKind.EXTENSION, count=2)

    await decide(handle, Outcome.PARTIALLY_UPHELD)
    await assert_refused(handle, ComplaintWorkflow.extend,
                         ExtendInput(by=STAFF, until=later + timedelta(days=30), reason="Te laat."),
                         "ActionNotAllowed")
    await assert_mail_matches_view(mail, handle, settings)


@pytest.mark.parametrize("outcome", [Outcome.UPHELD, Outcome.PARTIALLY_UPHELD, Outcome.REJECTED])
async def test_decision_closes_after_14_days_without_disagreement(env, client, settings, worker, mail,
                                                                 pool, outcome):
    handle = await start_formal(client, settings)
    await wait_letter(mail, handle, LetterKind.ACKNOWLEDGEMENT)
    await advance(env, handle, timedelta(days=5))
    decided_at = await env.get_current_time(handle)

    view = await decide(handle, outcome, by="Directeur Willem",
                        motivation="Uit het onderzoek blijkt dat de trainer afwezig was.")

    assert view.phase is Phase.DECIDED and view.outcome is outcome
    assert view.decision.outcome is outcome and view.decision.within_term is True
    assert close_to(view.decision.at, decided_at, timedelta(minutes=1))
    objection_by = view.decision.at + timedelta(days=14)
    assert view.deadlines.objection_by == objection_by
    assert view.history[-1].action == "decide" and view.history[-1].by == "Directeur Willem"
    [letter] = await wait_letter(mail, handle, LetterKind.DECISION)
    assert "Uit het onderzoek blijkt dat de trainer afwezig was." in letter.get_content()
    await assert_search_attributes(handle, phase=Phase.DECIDED, route="formal", product=PRODUCT,
                                   outcome=outcome, next_deadline=objection_by)
    await wait_dossier(pool, handle, phase="decided", outcome=outcome.value, decided_at=view.decision.at,
                       decided_within_term=True,
                       decision_motivation="Uit het onderzoek blijkt dat de trainer afwezig was.")
    await assert_refused(handle, ComplaintWorkflow.decide,
                         DecideInput(by=STAFF, outcome=Outcome.REJECTED, motivation="Nogmaals."),
                         "ActionNotAllowed")

    await advance_to_just_before(env, handle, objection_by)
    assert (await status(handle)).phase is Phase.DECIDED
    await advance_to(env, handle, objection_by)
    view = await wait_view(handle, lambda v: v.phase is Phase.CLOSED)
    assert view.outcome is outcome
    assert close_to(view.closed_at, objection_by, timedelta(minutes=1))
    assert view.deadlines.purge_on == one_year_after(view.closed_at)
    assert view.history[-1].action == "closed" and view.history[-1].by == "system"
    await assert_search_attributes(handle, phase=Phase.CLOSED, route="formal", product=PRODUCT,
                                   outcome=outcome, next_deadline=view.deadlines.purge_on)
    await wait_dossier(pool, handle, phase="closed", outcome=outcome.value, closed_at=view.closed_at,
                       purge_on=view.deadlines.purge_on)
    await assert_refused(handle, ComplaintWorkflow.disagree, DisagreeInput(by=STAFF, note="Te laat."),
                         "ActionNotAllowed")

    # The resolution term's alerts belong to the formal phase: none after the decision.
    await advance(env, handle, timedelta(days=30))
    view = await assert_mail_matches_view(mail, handle, settings)
    assert view.alerts == []
    events = await dossier_events(pool, handle)
    assert ("decide", "Directeur Willem") in [(e["action"], e["actor"]) for e in events]


async def test_actions_that_do_not_fit_the_formal_phase_are_refused(env, client, settings, worker, mail):
    handle = await start_formal(client, settings)
    await wait_letter(mail, handle, LetterKind.ACKNOWLEDGEMENT)
    await started(handle)

    refused = [
        (ComplaintWorkflow.resolve_informally, ResolveInformallyInput(by=STAFF, note="Opgelost.")),
        (ComplaintWorkflow.escalate, EscalateInput(by=STAFF, reason="Formeel.")),
        (ComplaintWorkflow.engage_mediator, EngageMediatorInput(by=STAFF, mediator="Mr. A. Bemiddelaar")),
        (ComplaintWorkflow.verdict, VerdictInput(by=STAFF, summary="Oordeel.")),
        (ComplaintWorkflow.consequences_picked_up, ConsequencesPickedUpInput(by=STAFF, note="Opgepakt.")),
    ]
    for update, arg in refused:
        message = await assert_refused(handle, update, arg, "ActionNotAllowed")
        assert "formal" in message
    view = await status(handle)
    assert view.phase is Phase.FORMAL
    await assert_mail_matches_view(mail, handle, settings)


async def test_a_decision_the_model_forbids_is_refused_before_history(env, client, settings, worker, mail):
    """``mediated`` is no decision staff may take; a client that skips the model is still refused."""
    handle = await start_formal(client, settings)
    await wait_letter(mail, handle, LetterKind.ACKNOWLEDGEMENT)
    await started(handle)
    before = await settled_history_length(handle)
    with pytest.raises(WorkflowUpdateFailedError) as info:
        await handle.execute_update("decide", {"by": STAFF, "outcome": "mediated", "motivation": "Bemiddeld."})
    assert isinstance(info.value.cause, ApplicationError)
    assert await history_length(handle) == before
    view = await status(handle)
    assert view.phase is Phase.FORMAL and view.decision is None


async def test_disagree_during_formal_goes_to_mediation(env, client, settings, worker, mail, pool):
    handle = await start_formal(client, settings)
    await wait_letter(mail, handle, LetterKind.ACKNOWLEDGEMENT)
    await started(handle)

    view = await handle.execute_update(ComplaintWorkflow.disagree,
                                       DisagreeInput(by=STAFF, note="Geen overeenstemming in het gesprek."))

    assert view.phase is Phase.MEDIATION and view.decision is None and view.outcome is None
    assert view.history[-1].action == "disagree" and view.history[-1].by == STAFF
    planned = await wait_view(handle, lambda v: v.deadlines.mediator_by is not None, "the mediator deadline")
    await assert_search_attributes(handle, phase=Phase.MEDIATION, route="formal", product=PRODUCT,
                                   outcome=None, next_deadline=planned.deadlines.mediator_by)
    await wait_dossier(pool, handle, phase="mediation", mediated=True)
    # The formal terms no longer run: no due-soon or default extension in mediation, only the
    # mediation's own deadline (no mediator engaged within 10 working days).
    await advance(env, handle, timedelta(days=30))
    view = await assert_mail_matches_view(mail, handle, settings)
    assert [a.kind for a in view.alerts] == [AlertKind.MEDIATION_STALLED] and view.extensions == 0


# ------------------------------------------------------------ mail outage


async def _failed_attempts(handle) -> int:
    pending = (await handle.describe()).raw_description.pending_activities
    return max((p.attempt - 1 for p in pending if p.activity_type.name == "send_letter"), default=0)


async def test_acknowledgement_delayed_by_a_short_outage_is_sent_once(env, client, settings, pool, mail):
    """SMTP down at receipt, back well before the deadline: one letter, no alert."""
    port = free_port()
    down = dataclasses.replace(settings, smtp_port=port)
    async with build_worker(env.client, down, pool):
        handle = await start_formal(client, settings)
        # Planned as the dossier opened; published as the next deadline once the letter is out.
        view = await wait_view(handle, lambda v: v.deadlines.acknowledge_by is not None)
        acknowledge_by = view.deadlines.acknowledge_by
        # Two failed attempts at least (the retry back-off is skipped on the virtual clock).
        await advance(env, handle, timedelta(seconds=10))
        await eventually(lambda: _failed_attempts(handle), what="a failed attempt")
        view = await status(handle)
        assert view.acknowledged_at is None and view.letters == []
        catcher = MailCatcher(port).start()
        try:
            await advance(env, handle, timedelta(minutes=5))
            [letter] = await wait_letter(catcher, handle, LetterKind.ACKNOWLEDGEMENT)
            view = await wait_view(handle, lambda v: v.acknowledged_at is not None)
            await advance_to(env, handle, acknowledge_by, margin=timedelta(hours=1))
            view = await assert_mail_matches_view(catcher, handle, settings)
            assert view.alerts == []
            assert len(letters(catcher, handle, LetterKind.ACKNOWLEDGEMENT)) == 1
            rows = await pool.fetch("SELECT status FROM letters WHERE complaint_id = $1", handle.id)
            assert [r["status"] for r in rows] == ["sent"]
        finally:
            catcher.stop()
    assert mail.find(x_complaint_id=handle.id) == []


async def test_acknowledgement_overdue_during_an_outage_alerts_and_is_still_sent_once(
        env, client, settings, pool, mail):
    """The acknowledgement deadline passes while SMTP is down: alert, and the letter still goes once.

    The complaint arrived ten days ago (a letter that reached the complaints desk
    late), so its acknowledgement deadline has passed before the letter could go
    out. The virtual clock cannot reach a deadline days ahead while a letter is
    being retried: each retry back-off is itself a timer the clock stops at.
    """
    port = free_port()
    down = dataclasses.replace(settings, smtp_port=port)
    received_at = datetime.now(timezone.utc) - timedelta(days=10)
    async with build_worker(env.client, down, pool):
        handle = await start_formal(client, settings, received_at=received_at.isoformat(),
                                    submitted_on=local_day(received_at).isoformat())
        acknowledge_by = end_of_nth_working_day(received_at, 3)
        view = await wait_view(handle, lambda v: bool(v.alerts))
        assert view.deadlines.acknowledge_by == acknowledge_by < await env.get_current_time(handle)
        [alert] = view.alerts
        assert alert.kind is AlertKind.ACKNOWLEDGEMENT_OVERDUE and alert.deadline == acknowledge_by
        assert view.acknowledged_at is None and view.letters == []
        assert view.deadlines.resolve_by == view.received_at + timedelta(days=28)
        await advance(env, handle, timedelta(seconds=10))
        await eventually(lambda: _failed_attempts(handle), what="a failed attempt")

        catcher = MailCatcher(port).start()
        try:
            await advance(env, handle, timedelta(minutes=5))
            [letter] = await wait_letter(catcher, handle, LetterKind.ACKNOWLEDGEMENT)
            [message] = await wait_alert(catcher, handle, AlertKind.ACKNOWLEDGEMENT_OVERDUE)
            assert str(message["To"]) == settings.director_email
            assert "jan.devries" not in message.get_content()
            view = await wait_view(handle, lambda v: v.acknowledged_at is not None)
            assert [record.status for record in view.letters] == ["sent"]
            await wait_dossier(pool, handle, acknowledged_at=view.acknowledged_at)

            # Raised once; the acknowledgement is never sent again.
            await advance(env, handle, timedelta(days=3))
            view = await assert_mail_matches_view(catcher, handle, settings)
            assert [a.kind for a in view.alerts] == [AlertKind.ACKNOWLEDGEMENT_OVERDUE]
            assert len(letters(catcher, handle, LetterKind.ACKNOWLEDGEMENT)) == 1
            assert len(alerts(catcher, handle, AlertKind.ACKNOWLEDGEMENT_OVERDUE)) == 1
            assert view.phase is Phase.FORMAL
        finally:
            catcher.stop()
    assert mail.find(x_complaint_id=handle.id) == []


async def test_an_acknowledgement_the_mail_server_refuses_alerts_the_director(env, client, settings, worker,
                                                                              mail, pool):
    """A permanent refusal is not retried: the letter is recorded as failed and the director alerted."""
    address = f"onbereikbaar-{uuid.uuid4().hex[:8]}@example.nl"
    mail.refused_recipients.add(address)
    try:
        handle = await start_formal(client, settings, complainant={
            "name": "Jan de Vries", "organisation": "Gemeente Delft", "email": address,
            "phone": "+31 6 12345678", "role": "customer"})
        [message] = await wait_alert(mail, handle, AlertKind.LETTER_UNDELIVERABLE)
        assert str(message["To"]) == settings.director_email
        view = await wait_view(handle, lambda v: bool(v.letters) and v.next_deadline is not None)
        [record] = view.letters
        assert record.kind is LetterKind.ACKNOWLEDGEMENT and record.status == "failed" and record.error
        assert view.acknowledged_at is None
        assert letters(mail, handle, LetterKind.ACKNOWLEDGEMENT) == []
        row = await pool.fetchrow("SELECT status, error FROM letters WHERE complaint_id = $1", handle.id)
        assert row["status"] == "failed" and row["error"]

        # Not acknowledged by the deadline: acknowledgement-overdue as well, and no second attempt.
        await advance_to(env, handle, view.deadlines.acknowledge_by)
        await wait_alert(mail, handle, AlertKind.ACKNOWLEDGEMENT_OVERDUE)
        await settled_history_length(handle)
        view = await status(handle)
        assert [a.kind for a in view.alerts] == [AlertKind.LETTER_UNDELIVERABLE,
                                                 AlertKind.ACKNOWLEDGEMENT_OVERDUE]
        assert len(view.letters) == 1 and view.phase is Phase.FORMAL
        assert len(mail.find(x_complaint_id=handle.id)) == 2
        # Operators find it by its open alerts. Closing ends the procedure's cause; a refused acknowledgement
        # no longer matters, but the withdrawal letter (refused as well) stays open until it has gone out.
        open_alerts = (await handle.describe()).typed_search_attributes.get(sa.OPEN_ALERTS)
        assert open_alerts == ["acknowledgement-overdue", "letter-undeliverable"]
        await handle.execute_update(ComplaintWorkflow.withdraw, WithdrawInput(by=STAFF, reason="Ingetrokken."))
        await wait_view(handle, lambda v: v.phase is Phase.CLOSED and len(v.letters) == 2)
        await eventually(lambda: _open_alerts_are(handle, ["letter-undeliverable"]))
    finally:
        mail.refused_recipients.discard(address)


async def _open_alerts_are(handle, expected: list[str]) -> bool:
    return (await handle.describe()).typed_search_attributes.get(sa.OPEN_ALERTS) == expected

"""The informal phase: resolve, escalate, the informal-stalled alert, and what is refused there."""

from __future__ import annotations

from datetime import date, timedelta

from temporalio.api.enums.v1 import EventType

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
    Route,
    VerdictInput,
    WithdrawInput,
)
from tests.lifecycle import (
    advance,
    advance_to,
    advance_to_just_before,
    alerts,
    assert_mail_matches_view,
    assert_refused,
    assert_search_attributes,
    close_to,
    dossier_events,
    end_of_nth_working_day,
    eventually,
    letters,
    one_year_after,
    settled_history_length,
    start_informal,
    started,
    status,
    wait_alert,
    wait_dossier,
    wait_letter,
    wait_view,
)
from workflows.complaint import ComplaintWorkflow

PRODUCT = "training-agile"  # the catalogue's code for the complainant's "Training Agile"


async def test_informal_complaint_waits_in_the_informal_phase(env, client, settings, worker, mail, pool):
    handle = await start_informal(client, settings)
    view = await started(handle)

    assert view.phase is Phase.INFORMAL and view.route is Route.INFORMAL
    assert view.outcome is None and view.formal_received_at is None
    stalled_at = end_of_nth_working_day(view.received_at, 10)
    assert view.deadlines.informal_stalled_at == stalled_at
    assert view.deadlines.acknowledge_by is None and view.deadlines.resolve_by is None
    assert view.next_deadline == stalled_at
    assert view.letters == [] and view.alerts == []
    assert [(h.action, h.by) for h in view.history] == [("submitted", "intake")]
    await assert_search_attributes(handle, phase=Phase.INFORMAL, route="informal", product=PRODUCT,
                                   outcome=None, next_deadline=stalled_at)
    await wait_dossier(pool, handle, phase="informal", route="informal", product=PRODUCT,
                       complainant_name="Jan de Vries", outcome=None)
    # No letter is sent in the informal phase.
    await settled_history_length(handle)
    assert mail.find(x_complaint_id=handle.id) == []
    # Its deadline was planned as the dossier opened (workflows/complaint.py ``_receipt_plans`` says what the
    # first phase plans): one dossier write, no local activity.
    events = (await handle.fetch_history()).events
    assert [e.activity_task_scheduled_event_attributes.activity_type.name for e in events
            if e.event_type == EventType.EVENT_TYPE_ACTIVITY_TASK_SCHEDULED] == ["open_dossier"]
    assert not any(e.event_type == EventType.EVENT_TYPE_MARKER_RECORDED
                   and e.marker_recorded_event_attributes.marker_name == "core_local_activity" for e in events)


async def test_resolve_informally_sends_the_letter_and_closes(env, client, settings, worker, mail, pool):
    handle = await start_informal(client, settings)
    await started(handle)
    await advance(env, handle, timedelta(days=3))

    view = await handle.execute_update(ComplaintWorkflow.resolve_informally, ResolveInformallyInput(
        by="Karin de Manager", note="Nieuwe trainingsdatum afgesproken; klant is tevreden."))

    assert view.phase is Phase.CLOSED
    assert view.outcome is Outcome.RESOLVED_INFORMALLY
    now = await env.get_current_time(handle)
    assert close_to(view.closed_at, now, timedelta(minutes=1))
    assert view.deadlines.purge_on == one_year_after(view.closed_at)
    assert view.history[-1].action == "resolve-informally" and view.history[-1].by == "Karin de Manager"
    assert view.history[-1].note == "Nieuwe trainingsdatum afgesproken; klant is tevreden."
    [letter] = await wait_letter(mail, handle, LetterKind.INFORMAL_RESOLUTION)
    assert "jan.devries@example.nl" in str(letter["To"])
    assert "Nieuwe trainingsdatum afgesproken" in letter.get_content()
    await assert_search_attributes(handle, phase=Phase.CLOSED, route="informal", product=PRODUCT,
                                   outcome=Outcome.RESOLVED_INFORMALLY, next_deadline=view.deadlines.purge_on)
    await wait_dossier(pool, handle, phase="closed", outcome="resolved-informally",
                       closed_at=view.closed_at, purge_on=view.deadlines.purge_on)
    events = await dossier_events(pool, handle)
    assert [(e["action"], e["actor"]) for e in events] == [
        ("submitted", "intake"), ("resolve-informally", "Karin de Manager")]

    # Resolved before the 10 working days: the stalled alert never comes.
    await advance(env, handle, timedelta(days=30))
    view = await assert_mail_matches_view(mail, handle, settings)
    assert view.alerts == []
    assert alerts(mail, handle, AlertKind.INFORMAL_STALLED) == []
    assert len(letters(mail, handle, LetterKind.INFORMAL_RESOLUTION)) == 1


async def test_informal_stalled_alerts_the_director_once(env, client, settings, worker, mail, pool):
    handle = await start_informal(client, settings)
    view = await started(handle)
    stalled_at = view.deadlines.informal_stalled_at
    assert stalled_at == end_of_nth_working_day(view.received_at, 10)

    await advance_to_just_before(env, handle, stalled_at)
    await settled_history_length(handle)
    assert (await status(handle)).alerts == []
    assert alerts(mail, handle, AlertKind.INFORMAL_STALLED) == []

    await advance_to(env, handle, stalled_at)
    [message] = await wait_alert(mail, handle, AlertKind.INFORMAL_STALLED)
    assert str(message["To"]) == settings.director_email
    assert "Jan de Vries" not in message.get_content(), "an alert carries no personal data"
    view = await wait_view(handle, lambda v: len(v.alerts) == 1)
    [alert] = view.alerts
    assert alert.kind is AlertKind.INFORMAL_STALLED and alert.deadline == stalled_at
    assert alert.at >= stalled_at
    assert view.phase is Phase.INFORMAL
    assert view.next_deadline is None
    await assert_search_attributes(handle, phase=Phase.INFORMAL, route="informal", product=PRODUCT,
                                   outcome=None, next_deadline=None)
    await eventually_alert_in_dossier(pool, handle, "informal-stalled")

    # Once: weeks more without action raise nothing more.
    await advance(env, handle, timedelta(days=40))
    view = await assert_mail_matches_view(mail, handle, settings)
    assert [a.kind for a in view.alerts] == [AlertKind.INFORMAL_STALLED]
    assert len(alerts(mail, handle, AlertKind.INFORMAL_STALLED)) == 1

    # Staff can still act on a stalled complaint.
    view = await handle.execute_update(ComplaintWorkflow.escalate,
                                       EscalateInput(by="Karin de Manager", reason="Geen oplossing gevonden."))
    assert view.phase is Phase.FORMAL


async def eventually_alert_in_dossier(pool, handle, kind: str) -> None:
    async def check() -> bool:
        return bool(await pool.fetchval(
            "SELECT count(*) FROM alerts WHERE complaint_id = $1 AND kind = $2 AND sent_at IS NOT NULL",
            handle.id, kind))
    await eventually(check, what=f"{kind} alert in the dossier")


async def test_escalation_starts_the_formal_procedure_at_the_escalation(env, client, settings, worker,
                                                                       mail, pool):
    handle = await start_informal(client, settings)
    view = await started(handle)
    received_at = view.received_at
    await advance(env, handle, timedelta(days=4, hours=5))
    escalated_at = await env.get_current_time(handle)

    view = await handle.execute_update(ComplaintWorkflow.escalate, EscalateInput(
        by="Karin de Manager", reason="De klant wil een formele behandeling."))

    assert view.phase is Phase.FORMAL
    assert view.route is Route.INFORMAL, "the view keeps the route it was submitted with"
    assert close_to(view.formal_received_at, escalated_at, timedelta(minutes=1))
    assert view.received_at == received_at
    assert view.deadlines.resolve_by == view.formal_received_at + timedelta(days=28)
    assert view.history[-1].action == "escalate" and view.history[-1].by == "Karin de Manager"

    # The acknowledgement goes out at once, its deadline counted from the escalation.
    [letter] = await wait_letter(mail, handle, LetterKind.ACKNOWLEDGEMENT)
    view = await wait_view(handle, lambda v: v.acknowledged_at is not None)
    acknowledge_by = end_of_nth_working_day(view.formal_received_at, 3)
    assert view.deadlines.acknowledge_by == acknowledge_by
    assert acknowledge_by > end_of_nth_working_day(received_at, 3)
    body = letter.get_content()
    assert f"op {dutch_long_date(view.formal_received_at)} ontvangen" in body
    assert f"uiterlijk {dutch_long_date(view.deadlines.resolve_by)} af te handelen" in body
    due_soon = view.deadlines.resolve_by - timedelta(days=7)
    assert view.next_deadline == due_soon
    await assert_search_attributes(handle, phase=Phase.FORMAL, route="formal", product=PRODUCT,
                                   outcome=None, next_deadline=due_soon)
    await wait_dossier(pool, handle, phase="formal", route="informal",
                       formal_received_at=view.formal_received_at, acknowledge_by=acknowledge_by,
                       resolve_by=view.deadlines.resolve_by)

    # The informal deadline no longer applies: no informal-stalled alert after escalation.
    await advance_to(env, handle, view.deadlines.informal_stalled_at, margin=timedelta(days=1))
    view = await assert_mail_matches_view(mail, handle, settings)
    assert AlertKind.INFORMAL_STALLED not in [a.kind for a in view.alerts]
    assert AlertKind.ACKNOWLEDGEMENT_OVERDUE not in [a.kind for a in view.alerts]
    assert len(letters(mail, handle, LetterKind.ACKNOWLEDGEMENT)) == 1


async def test_withdraw_in_the_informal_phase(env, client, settings, worker, mail, pool):
    handle = await start_informal(client, settings)
    await started(handle)

    view = await handle.execute_update(ComplaintWorkflow.withdraw,
                                       WithdrawInput(by="Sanne Baliemedewerker", reason="Klant trekt de klacht in."))

    assert view.phase is Phase.CLOSED and view.outcome is Outcome.WITHDRAWN
    assert view.history[-1].action == "withdraw" and view.history[-1].by == "Sanne Baliemedewerker"
    await wait_letter(mail, handle, LetterKind.WITHDRAWAL)
    await assert_search_attributes(handle, phase=Phase.CLOSED, route="informal", product=PRODUCT,
                                   outcome=Outcome.WITHDRAWN, next_deadline=view.deadlines.purge_on)
    await wait_dossier(pool, handle, phase="closed", outcome="withdrawn")
    await assert_mail_matches_view(mail, handle, settings)


async def test_actions_that_do_not_fit_the_informal_phase_are_refused(env, client, settings, worker, mail):
    handle = await start_informal(client, settings)
    await started(handle)
    by = "Karin de Manager"

    refused = [
        (ComplaintWorkflow.decide, DecideInput(by=by, outcome=Outcome.UPHELD, motivation="Terecht.")),
        (ComplaintWorkflow.extend, ExtendInput(by=by, until=date.today() + timedelta(days=60),
                                               reason="Meer tijd nodig.")),
        (ComplaintWorkflow.disagree, DisagreeInput(by=by, note="Niet akkoord.")),
        (ComplaintWorkflow.engage_mediator, EngageMediatorInput(by=by, mediator="Mr. A. Bemiddelaar")),
        (ComplaintWorkflow.verdict, VerdictInput(by=by, summary="Oordeel.")),
        (ComplaintWorkflow.consequences_picked_up, ConsequencesPickedUpInput(by=by, note="Opgepakt.")),
    ]
    for update, arg in refused:
        message = await assert_refused(handle, update, arg, "ActionNotAllowed")
        assert "informal" in message

    # Still informal and untouched; a measure may be recorded, then the informal actions work.
    view = await status(handle)
    assert view.phase is Phase.INFORMAL and len(view.history) == 1
    view = await handle.execute_update(ComplaintWorkflow.record_measure,
                                       MeasureInput(by=by, text="Trainersrooster dubbel gecontroleerd."))
    assert view.measures[-1].by == by
    view = await handle.execute_update(ComplaintWorkflow.resolve_informally,
                                       ResolveInformallyInput(by=by, note="Opgelost."))
    assert view.phase is Phase.CLOSED

    # Once closed, neither informal action fits any more.
    await assert_refused(handle, ComplaintWorkflow.resolve_informally,
                         ResolveInformallyInput(by=by, note="Nogmaals."), "ActionNotAllowed")
    await assert_refused(handle, ComplaintWorkflow.escalate,
                         EscalateInput(by=by, reason="Toch formeel."), "ActionNotAllowed")
    await assert_refused(handle, ComplaintWorkflow.withdraw,
                         WithdrawInput(by=by, reason="Intrekken."), "ActionNotAllowed")
    await assert_mail_matches_view(mail, handle, settings)

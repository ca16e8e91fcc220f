"""Disagreement, mediation with its binding verdict, the consequences, and withdrawal in every open phase."""

from __future__ import annotations

from datetime import date, timedelta

import pytest

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
from tests.lifecycle import (
    advance,
    advance_to,
    advance_to_just_before,
    alerts,
    assert_mail_matches_view,
    assert_refused,
    assert_search_attributes,
    close_to,
    decide,
    dossier_events,
    end_of_nth_working_day,
    engage,
    give_verdict,
    letters,
    one_year_after,
    settled_history_length,
    start_formal,
    started,
    status,
    to_mediation,
    wait_alert,
    wait_dossier,
    wait_letter,
    wait_view,
)
from complaints import search_attributes as sa
from workflows.complaint import ComplaintWorkflow

PRODUCT = "training-agile"  # the catalogue's code for the complainant's "Training Agile"
STAFF = "Marieke Jansen"
MEDIATOR = "Mr. A. Bemiddelaar"
CONSEQUENCES = ["Training kosteloos opnieuw aanbieden.", "Trainersplanning met reservetrainer."]


async def test_disagreement_within_14_days_of_the_decision_starts_mediation(env, client, settings, worker,
                                                                          mail, pool):
    handle = await start_formal(client, settings)
    await started(handle)
    view = await decide(handle, Outcome.REJECTED)
    objection_by = view.deadlines.objection_by
    await advance_to_just_before(env, handle, objection_by)
    assert (await status(handle)).phase is Phase.DECIDED

    view = await handle.execute_update(ComplaintWorkflow.disagree, DisagreeInput(
        by="Sanne Baliemedewerker", note="Klant belde: niet akkoord met het besluit."))

    assert view.phase is Phase.MEDIATION
    assert view.outcome is Outcome.REJECTED, "the decision stands until the verdict"
    assert view.history[-1].action == "disagree" and view.history[-1].by == "Sanne Baliemedewerker"
    planned = await wait_view(handle, lambda v: v.deadlines.mediator_by is not None, "the mediator deadline")
    await assert_search_attributes(handle, phase=Phase.MEDIATION, route="formal", product=PRODUCT,
                                   outcome=Outcome.REJECTED, next_deadline=planned.deadlines.mediator_by)
    await wait_dossier(pool, handle, phase="mediation", mediated=True, mediator=None)

    # The objection window no longer closes the complaint.
    await advance_to(env, handle, objection_by, margin=timedelta(days=10))
    view = await status(handle)
    assert view.phase is Phase.MEDIATION and view.closed_at is None
    await assert_mail_matches_view(mail, handle, settings)


async def test_no_mediator_engaged_within_10_working_days_alerts_the_director_once(env, client, settings,
                                                                                  worker, mail):
    handle = await start_formal(client, settings)
    await to_mediation(handle, mail)
    view = await wait_view(handle, lambda v: v.deadlines.mediator_by is not None, "the mediator deadline")
    disagreed = view.history[-1].at
    assert view.deadlines.mediator_by == end_of_nth_working_day(disagreed, 10)

    await advance_to_just_before(env, handle, view.deadlines.mediator_by)
    assert alerts(mail, handle, AlertKind.MEDIATION_STALLED) == []
    await advance_to(env, handle, view.deadlines.mediator_by)
    [alert] = await wait_alert(mail, handle, AlertKind.MEDIATION_STALLED)
    assert str(alert["To"]) == settings.director_email
    open_alerts = (await handle.describe()).typed_search_attributes.get(sa.OPEN_ALERTS)
    assert open_alerts == ["mediation-stalled"]

    await engage(handle)
    await advance(env, handle, timedelta(days=30))
    assert len(alerts(mail, handle, AlertKind.MEDIATION_STALLED)) == 1
    view = await wait_view(handle, lambda v: v.mediator is not None)
    assert [a.kind for a in view.alerts] == [AlertKind.MEDIATION_STALLED]


async def test_mediation_with_consequences(env, client, settings, worker, mail, pool):
    handle = await start_formal(client, settings)
    await to_mediation(handle, mail)

    # The verdict needs an engaged mediator first.
    message = await assert_refused(handle, ComplaintWorkflow.verdict,
                                   VerdictInput(by=MEDIATOR, summary="Oordeel."), "ActionNotAllowed")
    assert "mediator" in message
    await assert_refused(handle, ComplaintWorkflow.consequences_picked_up,
                         ConsequencesPickedUpInput(by=STAFF, note="Opgepakt."), "ActionNotAllowed")

    view = await engage(handle, MEDIATOR)
    assert view.mediator == MEDIATOR and view.phase is Phase.MEDIATION
    assert view.history[-1].action == "engage-mediator" and view.history[-1].by == STAFF
    [letter] = await wait_letter(mail, handle, LetterKind.MEDIATOR_ENGAGED)
    assert MEDIATOR in letter.get_content()
    await wait_dossier(pool, handle, mediator=MEDIATOR, mediated=True)
    await assert_refused(handle, ComplaintWorkflow.engage_mediator,
                         EngageMediatorInput(by=STAFF, mediator="Iemand Anders"), "ActionNotAllowed")

    await advance(env, handle, timedelta(days=20))
    view = await give_verdict(handle, CONSEQUENCES)

    assert view.phase is Phase.CONSEQUENCES and view.outcome is Outcome.MEDIATED
    assert view.verdict.consequences == CONSEQUENCES
    consequences_by = view.verdict.at + timedelta(days=14)
    assert view.deadlines.consequences_by == consequences_by
    assert view.history[-1].action == "verdict" and view.history[-1].by == MEDIATOR
    [letter] = await wait_letter(mail, handle, LetterKind.VERDICT)
    body = letter.get_content()
    assert all(c in body for c in CONSEQUENCES)
    assert dutch_long_date(consequences_by) in body
    await assert_search_attributes(handle, phase=Phase.CONSEQUENCES, route="formal", product=PRODUCT,
                                   outcome=Outcome.MEDIATED, next_deadline=consequences_by)
    await wait_dossier(pool, handle, phase="consequences", outcome="mediated", verdict_at=view.verdict.at,
                       verdict_summary="De klacht is deels terecht.", consequences_by=consequences_by)
    await assert_refused(handle, ComplaintWorkflow.verdict,
                         VerdictInput(by=MEDIATOR, summary="Nog een oordeel."), "ActionNotAllowed")

    # Not picked up within 2 weeks: the director is alerted, once.
    await advance_to_just_before(env, handle, consequences_by)
    await settled_history_length(handle)
    assert (await status(handle)).alerts == []
    await advance_to(env, handle, consequences_by)
    [message] = await wait_alert(mail, handle, AlertKind.CONSEQUENCES_OVERDUE)
    assert str(message["To"]) == settings.director_email
    view = await wait_view(handle, lambda v: len(v.alerts) == 1)
    assert view.alerts[0].kind is AlertKind.CONSEQUENCES_OVERDUE
    assert view.alerts[0].deadline == consequences_by
    assert view.phase is Phase.CONSEQUENCES
    await assert_search_attributes(handle, phase=Phase.CONSEQUENCES, route="formal", product=PRODUCT,
                                   outcome=Outcome.MEDIATED, next_deadline=None)
    await advance(env, handle, timedelta(days=30))
    await settled_history_length(handle)
    assert len(alerts(mail, handle, AlertKind.CONSEQUENCES_OVERDUE)) == 1

    view = await handle.execute_update(ComplaintWorkflow.consequences_picked_up, ConsequencesPickedUpInput(
        by="Operations Lead Joost", note="Nieuwe training ingepland."))
    assert view.phase is Phase.CLOSED and view.outcome is Outcome.MEDIATED
    assert view.history[-1].action == "consequences-picked-up" and view.history[-1].by == "Operations Lead Joost"
    assert view.deadlines.purge_on == one_year_after(view.closed_at)
    await assert_search_attributes(handle, phase=Phase.CLOSED, route="formal", product=PRODUCT,
                                   outcome=Outcome.MEDIATED, next_deadline=view.deadlines.purge_on)
    await wait_dossier(pool, handle, phase="closed", outcome="mediated", closed_at=view.closed_at)
    view = await assert_mail_matches_view(mail, handle, settings)
    assert sorted(letter.kind.value for letter in view.letters) == sorted(
        ["acknowledgement", "decision", "mediator-engaged", "verdict"])
    events = await dossier_events(pool, handle)
    actors = {(e["action"], e["actor"]) for e in events}
    assert {("decide", "Marieke Jansen"), ("engage-mediator", STAFF), ("verdict", MEDIATOR),
            ("consequences-picked-up", "Operations Lead Joost")} <= actors


async def test_consequences_picked_up_in_time_raise_no_alert(env, client, settings, worker, mail):
    handle = await start_formal(client, settings)
    await to_mediation(handle, mail)
    await engage(handle)
    view = await give_verdict(handle, CONSEQUENCES[:1])
    await advance_to_just_before(env, handle, view.deadlines.consequences_by, margin=timedelta(days=2))

    view = await handle.execute_update(ComplaintWorkflow.consequences_picked_up,
                                       ConsequencesPickedUpInput(by=STAFF, note="Opgepakt."))

    assert view.phase is Phase.CLOSED and view.outcome is Outcome.MEDIATED
    await advance(env, handle, timedelta(days=10))
    view = await assert_mail_matches_view(mail, handle, settings)
    assert view.alerts == []


async def test_verdict_without_consequences_closes(env, client, settings, worker, mail, pool):
    handle = await start_formal(client, settings)
    await to_mediation(handle, mail)
    await engage(handle)

    view = await give_verdict(handle, [])

    assert view.phase is Phase.CLOSED and view.outcome is Outcome.MEDIATED
    assert view.deadlines.consequences_by is None
    assert view.deadlines.purge_on == one_year_after(view.closed_at)
    assert close_to(view.closed_at, view.verdict.at)
    [letter] = await wait_letter(mail, handle, LetterKind.VERDICT)
    assert "Consequenties" not in letter.get_content()
    await assert_search_attributes(handle, phase=Phase.CLOSED, route="formal", product=PRODUCT,
                                   outcome=Outcome.MEDIATED, next_deadline=view.deadlines.purge_on)
    await wait_dossier(pool, handle, phase="closed", outcome="mediated", consequences_by=None)
    await assert_refused(handle, ComplaintWorkflow.consequences_picked_up,
                         ConsequencesPickedUpInput(by=STAFF, note="Opgepakt."), "ActionNotAllowed")
    await advance(env, handle, timedelta(days=20))
    view = await assert_mail_matches_view(mail, handle, settings)
    assert view.alerts == []


async def test_actions_that_do_not_fit_mediation_or_consequences_are_refused(env, client, settings, worker,
                                                                             mail):
    handle = await start_formal(client, settings)
    await to_mediation(handle, mail)
    later = date.today() + timedelta(days=90)
    not_in_mediation = [
        (ComplaintWorkflow.resolve_informally, ResolveInformallyInput(by=STAFF, note="Opgelost.")),
        (ComplaintWorkflow.escalate, EscalateInput(by=STAFF, reason="Formeel.")),
        (ComplaintWorkflow.extend, ExtendInput(by=STAFF, until=later, reason="Meer tijd.")),
        (ComplaintWorkflow.decide, DecideInput(by=STAFF, outcome=Outcome.UPHELD, motivation="Terecht.")),
        (ComplaintWorkflow.disagree, DisagreeInput(by=STAFF, note="Weer niet akkoord.")),
        (ComplaintWorkflow.consequences_picked_up, ConsequencesPickedUpInput(by=STAFF, note="Opgepakt.")),
    ]
    for update, arg in not_in_mediation:
        message = await assert_refused(handle, update, arg, "ActionNotAllowed")
        assert "mediation" in message

    await engage(handle)
    await give_verdict(handle, CONSEQUENCES)
    not_in_consequences = not_in_mediation[:-1] + [
        (ComplaintWorkflow.engage_mediator, EngageMediatorInput(by=STAFF, mediator="Iemand Anders")),
        (ComplaintWorkflow.verdict, VerdictInput(by=MEDIATOR, summary="Ander oordeel.")),
    ]
    for update, arg in not_in_consequences:
        message = await assert_refused(handle, update, arg, "ActionNotAllowed")
        assert "consequences" in message
    # Measures may be recorded in any phase.
    view = await handle.execute_update(ComplaintWorkflow.record_measure,
                                       MeasureInput(by="Kwaliteitsmanager Eva", text="Reservetrainer-pool."))
    assert [(m.by, m.text) for m in view.measures] == [("Kwaliteitsmanager Eva", "Reservetrainer-pool.")]
    await assert_mail_matches_view(mail, handle, settings)


async def _into_formal(env, handle, mail) -> None:
    await wait_letter(mail, handle, LetterKind.ACKNOWLEDGEMENT)


async def _into_decided(env, handle, mail) -> None:
    await _into_formal(env, handle, mail)
    await decide(handle, Outcome.UPHELD)


async def _into_mediation(env, handle, mail) -> None:
    await to_mediation(handle, mail)
    await engage(handle)


async def _into_consequences(env, handle, mail) -> None:
    await _into_mediation(env, handle, mail)
    await give_verdict(handle, CONSEQUENCES)


@pytest.mark.parametrize("phase, reach", [
    (Phase.FORMAL, _into_formal),
    (Phase.DECIDED, _into_decided),
    (Phase.MEDIATION, _into_mediation),
    (Phase.CONSEQUENCES, _into_consequences),
])
async def test_withdraw_in_any_open_phase(env, client, settings, worker, mail, pool, phase, reach):
    handle = await start_formal(client, settings)
    await started(handle)
    await reach(env, handle, mail)
    assert (await status(handle)).phase is phase
    await advance(env, handle, timedelta(days=2))

    view = await handle.execute_update(ComplaintWorkflow.withdraw, WithdrawInput(
        by="Sanne Baliemedewerker", reason="De klant trekt de klacht in."))

    assert view.phase is Phase.CLOSED and view.outcome is Outcome.WITHDRAWN
    assert view.history[-1].action == "withdraw" and view.history[-1].by == "Sanne Baliemedewerker"
    assert view.deadlines.purge_on == one_year_after(view.closed_at)
    [letter] = await wait_letter(mail, handle, LetterKind.WITHDRAWAL)
    assert "De klant trekt de klacht in." in letter.get_content()
    await assert_search_attributes(handle, phase=Phase.CLOSED, route="formal", product=PRODUCT,
                                   outcome=Outcome.WITHDRAWN, next_deadline=view.deadlines.purge_on)
    await wait_dossier(pool, handle, phase="closed", outcome="withdrawn", closed_at=view.closed_at)
    await assert_refused(handle, ComplaintWorkflow.withdraw,
                         WithdrawInput(by=STAFF, reason="Nogmaals."), "ActionNotAllowed")
    # Closed: none of the phase's deadlines fire any more.
    await advance(env, handle, timedelta(days=60))
    view = await assert_mail_matches_view(mail, handle, settings)
    assert view.alerts == [] and view.phase is Phase.CLOSED
    assert len(letters(mail, handle, LetterKind.WITHDRAWAL)) == 1

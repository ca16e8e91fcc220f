"""What a complaint's view says, without any server: the anonymous view kept for the retention
year, and the alerts whose cause still stands (``ComplaintOpenAlerts``)."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pytest

from complaints.models import (
    AlertKind,
    AlertRecord,
    Channel,
    ComplaintView,
    Decision,
    HistoryEntry,
    LetterKind,
    LetterRecord,
    Measure,
    Outcome,
    Phase,
    Route,
    Verdict,
)
from complaints.views import anonymous, open_alerts, undelivered_kinds

T0 = datetime(2026, 3, 2, 9, 30, tzinfo=timezone.utc)


def _view(phase: Phase = Phase.FORMAL, **fields: object) -> ComplaintView:
    fields.setdefault("product", "Training Agile")
    return ComplaintView(complaint_id="complaint-0123456789abcdef", phase=phase, route=Route.FORMAL,
                         channel=Channel.EMAIL, received_at=T0, **fields)


def _alert(kind: AlertKind, sequence: int = 1) -> AlertRecord:
    return AlertRecord(kind=kind, at=T0, sequence=sequence)


def _letter(kind: LetterKind, status: str, sequence: int = 1) -> LetterRecord:
    return LetterRecord(kind=kind, sequence=sequence, to="jan.devries@example.nl", status=status,
                        error="550 5.1.1 <jan.devries@example.nl> unknown" if status == "failed" else None)


# ------------------------------------------------------------------ anonymous


def test_anonymous_drops_every_quote_of_the_complainant_and_keeps_the_facts() -> None:
    view = _view(
        Phase.CLOSED, outcome=Outcome.MEDIATED, mediator="Mr. A. Bemiddelaar", closed_at=T0 + timedelta(days=40),
        decision=Decision(outcome=Outcome.REJECTED, motivation="Jan de Vries kwam niet opdagen.", at=T0,
                          within_term=True),
        verdict=Verdict(summary="Jan krijgt een herkansing.", consequences=["Herkansing voor Jan."],
                        at=T0 + timedelta(days=30)),
        letters=[_letter(LetterKind.ACKNOWLEDGEMENT, "failed"), _letter(LetterKind.ACKNOWLEDGEMENT, "sent", 2)],
        history=[HistoryEntry(at=T0, action="decide", by="Marieke de Boer", note="rejected: Jan de Vries ...")],
        measures=[Measure(at=T0, by="Marieke de Boer", text="Vaste vervanger per training.")],
        alerts=[_alert(AlertKind.LETTER_UNDELIVERABLE)],
    )
    kept = anonymous(view)
    dumped = kept.model_dump_json()
    for personal in ("Jan", "jan.devries", "Bemiddelaar", "550"):
        assert personal not in dumped
    assert kept.decision is not None and kept.decision.outcome is Outcome.REJECTED and kept.decision.within_term
    assert kept.verdict is not None and kept.verdict.at == T0 + timedelta(days=30) and kept.verdict.consequences == []
    assert [(x.kind, x.sequence, x.status) for x in kept.letters] == [
        (LetterKind.ACKNOWLEDGEMENT, 1, "failed"), (LetterKind.ACKNOWLEDGEMENT, 2, "sent")]
    assert [(h.action, h.by) for h in kept.history] == [("decide", "Marieke de Boer")]
    assert kept.measures == view.measures  # staff-written, kept for the yearly analysis
    assert (kept.outcome, kept.closed_at, kept.alerts) == (view.outcome, view.closed_at, view.alerts)


def test_anonymous_keeps_the_products_code_and_drops_the_complainants_words() -> None:
    coded = _view(Phase.CLOSED, product="training-agile", product_text="de Agile-training van Jan in Delft",
                  product_is_code=True)
    kept = anonymous(coded)
    assert (kept.product, kept.product_text) == ("training-agile", None)
    # A complaint from before the catalogue has the complainant's words as its product: they go too.
    before = _view(Phase.CLOSED, product="de Agile-training van Jan in Delft")
    assert anonymous(before).product is None


def test_anonymous_leaves_the_view_it_was_given_alone() -> None:
    view = _view(mediator="Mr. A. Bemiddelaar",
                 history=[HistoryEntry(at=T0, action="submitted", by="intake", note="via email")])
    anonymous(view)
    assert view.mediator == "Mr. A. Bemiddelaar" and view.history[0].note == "via email"


# ------------------------------------------------------------------ open alerts


@pytest.mark.parametrize(("kind", "phase", "still_open"), [
    (AlertKind.INFORMAL_STALLED, Phase.INFORMAL, True),
    (AlertKind.INFORMAL_STALLED, Phase.FORMAL, False),  # escalated: the informal phase is over
    (AlertKind.RESOLUTION_DUE_SOON, Phase.FORMAL, True),
    (AlertKind.RESOLUTION_OVERDUE, Phase.FORMAL, True),
    (AlertKind.RESOLUTION_OVERDUE, Phase.DECIDED, False),  # decided: the term no longer matters
    (AlertKind.CONSEQUENCES_OVERDUE, Phase.CONSEQUENCES, True),
    (AlertKind.CONSEQUENCES_OVERDUE, Phase.CLOSED, False),
    (AlertKind.MEDIATION_STALLED, Phase.MEDIATION, True),
])
def test_an_alert_stays_open_while_its_cause_stands(kind: AlertKind, phase: Phase, still_open: bool) -> None:
    assert open_alerts(_view(phase, alerts=[_alert(kind)])) == ([kind.value] if still_open else [])


def test_mediation_stalled_closes_once_a_mediator_is_engaged() -> None:
    view = _view(Phase.MEDIATION, alerts=[_alert(AlertKind.MEDIATION_STALLED)], mediator="Mr. A. Bemiddelaar")
    assert open_alerts(view) == []


def test_acknowledgement_overdue_closes_once_the_letter_went_out() -> None:
    late = _view(alerts=[_alert(AlertKind.ACKNOWLEDGEMENT_OVERDUE)])
    assert open_alerts(late) == ["acknowledgement-overdue"]
    late.acknowledged_at = T0 + timedelta(days=5)
    assert open_alerts(late) == []


def test_an_undeliverable_letter_stays_open_until_a_letter_of_its_kind_goes_out() -> None:
    view = _view(alerts=[_alert(AlertKind.LETTER_UNDELIVERABLE)],
                 letters=[_letter(LetterKind.ACKNOWLEDGEMENT, "failed")])
    assert open_alerts(view) == ["letter-undeliverable"]
    assert undelivered_kinds(view) == {LetterKind.ACKNOWLEDGEMENT}
    view.letters.append(_letter(LetterKind.EXTENSION, "sent"))  # another kind does not make up for it
    assert open_alerts(view) == ["letter-undeliverable"]
    view.letters.append(_letter(LetterKind.ACKNOWLEDGEMENT, "sent", 2))
    assert open_alerts(view) == [] and undelivered_kinds(view) == set()


def test_open_alerts_are_sorted_and_named_once() -> None:
    view = _view(alerts=[_alert(AlertKind.RESOLUTION_OVERDUE), _alert(AlertKind.RESOLUTION_DUE_SOON),
                         _alert(AlertKind.RESOLUTION_OVERDUE, 2), _alert(AlertKind.ACKNOWLEDGEMENT_OVERDUE)])
    assert open_alerts(view) == ["acknowledgement-overdue", "resolution-due-soon", "resolution-overdue"]


def test_a_closed_complaint_keeps_only_its_undelivered_letter_open() -> None:
    """Kept in the dossier, a closing letter that was refused can still be sent: that alert stays open;
    the procedure's alerts do not. Once erased, nothing is open."""
    view = _view(Phase.CLOSED, letters=[_letter(LetterKind.DECISION, "failed")],
                 alerts=[_alert(AlertKind.LETTER_UNDELIVERABLE), _alert(AlertKind.ACKNOWLEDGEMENT_OVERDUE)])
    assert open_alerts(view) == ["letter-undeliverable"]
    assert open_alerts(view, closed_letters=False) == []  # how complaints before this said it
    view.letters.append(_letter(LetterKind.DECISION, "sent", 2))
    assert open_alerts(view) == []
    # A letter that did not close it (an acknowledgement refused long ago) no longer counts once closed.
    acknowledgement = _view(Phase.CLOSED, letters=[_letter(LetterKind.ACKNOWLEDGEMENT, "failed")],
                            alerts=[_alert(AlertKind.LETTER_UNDELIVERABLE)])
    assert open_alerts(acknowledgement) == []
    purged = _view(Phase.PURGED, letters=[_letter(LetterKind.DECISION, "failed")],
                   alerts=[_alert(AlertKind.LETTER_UNDELIVERABLE)])
    assert open_alerts(purged) == []

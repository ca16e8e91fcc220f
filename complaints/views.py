"""What a complaint's view says, as pure functions of it: no Temporal, no I/O.

The workflow keeps its state as a :class:`~complaints.models.ComplaintView`; these read it:
the anonymous view a closed complaint keeps for its retention year, and the alerts whose
cause still stands (the ``ComplaintOpenAlerts`` search attribute).
"""

from __future__ import annotations

from complaints.models import CLOSING_LETTERS, OPEN_PHASES, AlertKind, ComplaintView, LetterKind, Phase, Verdict


def anonymous(view: ComplaintView) -> ComplaintView:
    """The view without anything that may identify the complainant or quote them.

    Kept: ids, phases, outcome, dates, deadlines, letter and alert kinds, measures (staff
    write them without personal data), the product's catalogue code and who on the staff acted.
    Dropped: the complainant's words for the product, every note,
    letter recipients and refusal reasons, the decision's motivation, the verdict's text and
    the mediator.
    """
    v = view.model_copy(deep=True)
    v.product_text = None  # the complainant's words; the catalogue code stays
    if not v.product_is_code:  # a complaint from before the catalogue: its product is the complainant's words
        v.product = None
    for entry in v.history:
        entry.note = None
    for letter in v.letters:
        letter.to = ""
        letter.error = None
    if v.decision:
        v.decision.motivation = ""
    if v.verdict:
        v.verdict = Verdict(summary="", consequences=[], at=v.verdict.at)
    v.mediator = None
    return v


def open_alerts(view: ComplaintView, closed_letters: bool = True) -> list[str]:
    """The alerts whose cause still stands, sorted, for operators to find (``ComplaintOpenAlerts``).

    A closing letter (``CLOSING_LETTERS``) that could not be delivered stays an open alert while the
    complaint is kept in the dossier (staff can still correct the address and send it again);
    ``closed_letters=False`` is how complaints before that was possible said it (only while open).
    """
    closed = closed_letters and view.phase is Phase.CLOSED  # only its closing letter still counts
    undelivered = undelivered_kinds(view) & CLOSING_LETTERS if closed else undelivered_kinds(view)
    uncertain = uncertain_kinds(view) & CLOSING_LETTERS if closed else uncertain_kinds(view)
    letters_phases = (*OPEN_PHASES, Phase.CLOSED) if closed_letters else OPEN_PHASES
    still = {
        AlertKind.INFORMAL_STALLED: view.phase is Phase.INFORMAL,
        AlertKind.ACKNOWLEDGEMENT_OVERDUE: view.acknowledged_at is None and view.phase in OPEN_PHASES,
        AlertKind.RESOLUTION_DUE_SOON: view.phase is Phase.FORMAL,
        AlertKind.RESOLUTION_OVERDUE: view.phase is Phase.FORMAL,
        AlertKind.CONSEQUENCES_OVERDUE: view.phase is Phase.CONSEQUENCES,
        AlertKind.MEDIATION_STALLED: view.phase is Phase.MEDIATION and view.mediator is None,
        AlertKind.LETTER_UNDELIVERABLE: view.phase in letters_phases and bool(undelivered),
        AlertKind.COMPLAINT_INCOMPLETE: view.phase in OPEN_PHASES and bool(view.missing),
        AlertKind.LETTER_UNCERTAIN: view.phase in letters_phases and bool(uncertain),
    }
    found = {a.kind.value for a in view.alerts if still.get(a.kind, False)}
    if view.mail_failing_since is not None:
        found.add(AlertKind.MAIL_SERVER_FAILING.value)
    return sorted(found)


def undelivered_kinds(view: ComplaintView) -> set[LetterKind]:
    """The letter kinds whose last attempt failed (no later letter of that kind went out)."""
    return _last_status_is(view, "failed")


def uncertain_kinds(view: ComplaintView) -> set[LetterKind]:
    """The letter kinds whose last letter waits for staff: its delivery is uncertain."""
    return _last_status_is(view, "uncertain")


def _last_status_is(view: ComplaintView, wanted: str) -> set[LetterKind]:
    last: dict[LetterKind, str] = {}
    for letter in view.letters:
        last[letter.kind] = letter.status
    return {kind for kind, status in last.items() if status == wanted}

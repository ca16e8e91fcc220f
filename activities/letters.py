"""Letters to complainants (Dutch, from templates) and alerts to the General Director.

Every term a letter or an alert states comes from complaints/terms.py: templates write
``$consequences_within``, never "2 weken" (tests/test_terms.py holds them to it).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from string import Template

from complaints import terms
from complaints.calendar import dutch_long_date
from complaints.models import LetterKind, Outcome, SendAlertInput, SendLetterInput

TEMPLATE_DIR = Path(__file__).resolve().parent / "templates"

OUTCOME_NL = {
    Outcome.UPHELD: "gegrond",
    Outcome.PARTIALLY_UPHELD: "deels gegrond",
    Outcome.REJECTED: "ongegrond",
}

ALERT_TEXT = {
    "informal-stalled": f"De informele fase loopt al {terms.INFORMAL_STALLED_AFTER.nl()} zonder oplossing of "
                        "escalatie.",
    "acknowledgement-overdue": f"De ontvangstbevestiging is niet binnen {terms.ACKNOWLEDGE_WITHIN.nl()} verstuurd.",
    "resolution-due-soon": f"De afhandeltermijn verloopt over {terms.DUE_SOON_BEFORE.nl()} en er is nog geen "
                           "besluit.",
    "resolution-overdue": "De afhandeltermijn is (bijna) verstreken zonder besluit.",
    "consequences-overdue": "De consequenties van het bindend oordeel zijn niet binnen "
                            f"{terms.CONSEQUENCES_WITHIN.nl()} opgepakt.",
    "mediation-stalled": f"Er is {terms.MEDIATOR_WITHIN.nl()} na het uitblijven van overeenstemming nog geen "
                         "onafhankelijke mediator ingeschakeld.",
    "letter-undeliverable": "Een brief aan de indiener kon niet worden bezorgd.",
}


@dataclass(frozen=True)
class Rendered:
    subject: str
    body: str


class LetterTemplates:
    """Reads each template once; renders a letter from a :class:`SendLetterInput`."""

    def __init__(self, directory: Path = TEMPLATE_DIR) -> None:
        self._templates: dict[LetterKind, tuple[str, Template]] = {}
        for kind in LetterKind:
            text = (directory / f"{kind.value}.txt").read_text(encoding="utf-8")
            first, _, rest = text.partition("\n")
            subject = first.removeprefix("Onderwerp:").strip()
            self._templates[kind] = (subject, Template(rest.lstrip("\n")))

    def render(self, letter: SendLetterInput) -> Rendered:
        subject, template = self._templates[letter.kind]
        consequences = ""
        if letter.consequences:
            lines = "\n".join(f"- {c}" for c in letter.consequences)
            by = (dutch_long_date(letter.consequences_by) if letter.consequences_by
                  else f"binnen {terms.CONSEQUENCES_WITHIN.nl()}")
            consequences = f"Consequenties, die Level Up uiterlijk {by} oppakt:\n{lines}\n"
        body = template.substitute(
            terms.template_values(),
            complaint_id=letter.complaint_id,
            name=letter.recipient.name,
            product=letter.product,
            submitted_on=dutch_long_date(letter.submitted_on),
            received_on=dutch_long_date(letter.received_at),
            acknowledge_by=dutch_long_date(letter.acknowledge_by) if letter.acknowledge_by else "",
            resolve_by=dutch_long_date(letter.resolve_by) if letter.resolve_by else "",
            outcome=OUTCOME_NL.get(letter.outcome, "") if letter.outcome else "",
            motivation=letter.motivation or "",
            note=letter.note or "",
            mediator=letter.mediator or "",
            consequences_section=consequences,
        )
        return Rendered(subject=f"{subject} (klacht {letter.complaint_id})", body=body)


def render_alert(alert: SendAlertInput) -> Rendered:
    """An alert carries no personal data: complaint id, product, phase and deadline only."""
    lines = [
        ALERT_TEXT.get(alert.kind.value, alert.kind.value),
        "",
        f"Klacht: {alert.complaint_id}",
        f"Product of dienst: {alert.product}",
        f"Fase: {alert.phase.value}",
    ]
    if alert.deadline:
        lines.append(f"Termijn: {dutch_long_date(alert.deadline)} ({alert.deadline.isoformat()})")
    lines += ["", "Bekijk de klacht met: python admin.py show " + alert.complaint_id]
    return Rendered(subject=f"Signalering {alert.kind.value} (klacht {alert.complaint_id})",
                    body="\n".join(lines) + "\n")

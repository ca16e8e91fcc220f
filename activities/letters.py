"""Letters to complainants (Dutch, from templates) and alerts to the General Director.

Every term a letter or an alert states comes from complaints/terms.py: templates write
``$consequences_within``, never "2 weken" (tests/test_terms.py holds them to it).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from string import Template

from complaints import terms
from complaints.contents import ASKED_AS, label
from complaints.calendar import dutch_long_date
from complaints.models import AlertKind, LetterKind, MailboxAlertInput, Outcome, Phase, SendAlertInput, SendLetterInput
from complaints.products import EMPTY, Catalogue

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
    "message-received": "Er is een bericht over de klacht binnengekomen in de mailbox. Lees het met: "
                        "python admin.py messages <klacht>.",
    "complaint-incomplete": f"De klacht mist {terms.COMPLETE_WITHIN.nl()} na ontvangst nog gegevens die de "
                            "procedure vraagt. Vul ze aan met: python admin.py complete <klacht>.",
    "mail-quarantined": "Een e-mail in de mailbox kon niet worden verwerkt en is apart gezet.",
    "letter-uncertain": "Het is onzeker of een brief aan de indiener is aangekomen: de mailserver gaf twee keer "
                        "geen antwoord. Controleer het en verstuur hem zo nodig opnieuw met: python admin.py resend.",
}

#: Added to ``message-received`` when the complaint is decided: the complainant may not agree.
MAY_DISAGREE = ("De klacht is besloten: de indiener is het mogelijk niet eens met het besluit. Is dat zo, "
                "leg het dan vast met: python admin.py disagree <klacht>.")


@dataclass(frozen=True)
class Rendered:
    subject: str
    body: str


class LetterTemplates:
    """Reads each template once; renders a letter from a :class:`SendLetterInput`.

    A letter names the product as the catalogue does when it knows the product, else in the
    complainant's own words.
    """

    def __init__(self, catalogue: Catalogue = EMPTY, directory: Path = TEMPLATE_DIR) -> None:
        self._catalogue = catalogue
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
            about_product=f' over "{product}"' if (product := self._product(letter)) else "",
            missing_section=missing_section(letter.missing),
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


    def _product(self, letter: SendLetterInput) -> str | None:
        return self._catalogue.name(letter.product_code) or letter.product


def missing_section(missing: list[str]) -> str:
    """What the acknowledgement asks for when minimum contents are missing (empty when none are)."""
    if not missing:
        return ""
    wanted = "\n".join(f"- {ASKED_AS[field][0]}" for field in missing)
    example = "\n".join(f"{label(field)}: {ASKED_AS[field][1]}" for field in missing)
    return ("Uw klacht is ontvangen, maar nog niet compleet. Om uw klacht te kunnen behandelen, hebben wij "
            f"nog nodig:\n{wanted}\n\nU kunt deze gegevens sturen door op deze e-mail te antwoorden, met "
            f"voor elk gegeven een regel die begint met de naam ervan, bijvoorbeeld:\n\n{example}\n\n")


def render_alert(alert: SendAlertInput) -> Rendered:
    """An alert carries no personal data: complaint id, product, phase and deadline only."""
    text = ALERT_TEXT.get(alert.kind.value, alert.kind.value)
    if alert.kind is AlertKind.MESSAGE_RECEIVED and alert.phase is Phase.DECIDED:
        text += " " + MAY_DISAGREE
    lines = [
        text,
        "",
        f"Klacht: {alert.complaint_id}",
        f"Product of dienst: {alert.product or '-'}",
        f"Fase: {alert.phase.value}",
    ]
    if alert.deadline:
        lines.append(f"Termijn: {dutch_long_date(alert.deadline)} ({alert.deadline.isoformat()})")
    lines += ["", "Bekijk de klacht met: python admin.py show " + alert.complaint_id]
    return Rendered(subject=f"Signalering {alert.kind.value} (klacht {alert.complaint_id})",
                    body="\n".join(lines) + "\n")


def render_mailbox_alert(alert: MailboxAlertInput) -> Rendered:
    """An alert about the mailbox itself: where the mail is and why, none of its content."""
    lines = [ALERT_TEXT.get(alert.kind.value, alert.kind.value), "",
             f"Map: {alert.folder}", f"UID: {alert.uid} (UIDVALIDITY {alert.uidvalidity})", f"Reden: {alert.reason}",
             "", "De e-mail staat ongewijzigd in die map; bekijk hem met een e-mailprogramma."]
    return Rendered(subject=f"Signalering {alert.kind.value} (map {alert.folder}, UID {alert.uid})",
                    body="\n".join(lines) + "\n")

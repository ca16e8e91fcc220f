"""The procedure's minimum contents as mail carries them: the labelled lines a website form or a
careful writer sends (Dutch and English), and how a letter asks for what is missing."""

from __future__ import annotations

#: Each field and the labels that introduce it in a mail; the first is the one letters ask for.
LABELS: dict[str, tuple[str, ...]] = {
    "name": ("Naam", "Name"),
    "organisation": ("Organisatie", "Organisation", "Organization", "Bedrijf"),
    "email": ("E-mail", "Email", "E-mailadres"),
    "phone": ("Telefoon", "Telefoonnummer", "Phone"),
    "product": ("Product", "Dienst", "Training"),
    "description": ("Omschrijving", "Description"),
    "motivation": ("Motivering", "Motivation"),
}

#: How the acknowledgement names each missing field (Dutch), and an example value for it.
ASKED_AS: dict[str, tuple[str, str]] = {
    "organisation": ("de organisatie waarvoor u werkt of die u vertegenwoordigt", "Gemeente Delft"),
    "phone": ("een telefoonnummer waarop wij u kunnen bereiken", "06 12345678"),
    "product": ("het product of de dienst waarover uw klacht gaat", "Training Agile"),
    "motivation": ("de motivering van uw klacht: waarom u klaagt en wat u van ons verwacht",
                   "Ik heb voor een volledige training betaald."),
}


def label(field: str) -> str:
    """The label a letter asks the complainant to write a field's line with (``Telefoon``)."""
    return LABELS[field][0]

"""Each term of the procedure has one home (complaints/terms.py), and everything that states a term
says what that home says: the letters, the director's alerts, the yearly report's labels and the
timers' summaries in the Web UI. Change a term there, and all of them change with it."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from datetime import date, datetime, timedelta, timezone
from pathlib import Path

import pytest

from activities.letters import ALERT_TEXT, TEMPLATE_DIR, LetterTemplates
from complaints import terms
from complaints.models import LetterKind, Outcome, Recipient, SendLetterInput
from complaints.report_format import LABELS

ROOT = Path(__file__).resolve().parent.parent

_NUMBER = (r"\d+|een|één|twee|drie|vier|vijf|zes|zeven|acht|negen|tien|elf|twaalf|veertien|twintig|dertig"
           r"|one|two|three|four|five|six|seven|eight|nine|ten|eleven|twelve|fourteen|twenty|thirty")
_UNIT = (r"werkdag(?:en)?|dag(?:en)?|weken|week|uur|jaar|maand(?:en)?"
         r"|working days?|days?|weeks?|hours?|years?|months?")
#: A length of time written out: "2 weken", "vier weken", "14 days", "10 working days".
DURATION = re.compile(rf"\b(?:{_NUMBER})\s+(?:{_UNIT})\b", re.IGNORECASE)

STATED_NL = {t.nl() for t in terms.BY_NAME.values()}
STATED_EN = {t.en() for t in terms.BY_NAME.values()}


def _letter(kind: LetterKind, **fields: object) -> SendLetterInput:
    received = datetime(2026, 4, 24, 10, 0, tzinfo=timezone.utc)
    values: dict[str, object] = dict(
        complaint_id="complaint-0123456789abcdef", kind=kind, sequence=1,
        recipient=Recipient(name="Jan de Vries", email="jan@example.nl"), product="Training Agile",
        submitted_on=date(2026, 4, 24), received_at=received, acknowledge_by=received + timedelta(days=5),
        resolve_by=received + timedelta(days=28), outcome=Outcome.UPHELD, motivation="Omdat.",
        note="Toelichting.", mediator="Mr. A. Bemiddelaar", consequences=["Herkansing aanbieden."])
    return SendLetterInput(**(values | fields))


def test_no_template_writes_a_term_itself() -> None:
    """A template that says "binnen 2 weken" would go on saying it after the term changed."""
    found = {path.name: DURATION.findall(path.read_text(encoding="utf-8"))
             for path in sorted(TEMPLATE_DIR.glob("*.txt"))}
    assert len(found) == len(LetterKind)
    assert {name: hits for name, hits in found.items() if hits} == {}, \
        "write the term as $name (complaints/terms.py BY_NAME), not as text"


def test_the_duration_check_would_see_a_term_written_out() -> None:
    assert DURATION.findall("binnen 2 weken opgepakt; binnen vier weken; within 3 working days") == [
        "2 weken", "vier weken", "3 working days"]
    assert DURATION.findall("uiterlijk 30 april 2026; klacht 2026-04-24") == []


def test_templates_use_only_known_terms_and_fields() -> None:
    placeholders = {m for path in TEMPLATE_DIR.glob("*.txt")
                    for m in re.findall(r"\$\{?([a-z_]+)", path.read_text(encoding="utf-8"))}
    assert {"consequences_within", "objection_window", "retention", "resolve_within"} <= placeholders
    letter_fields = {"complaint_id", "name", "about_product", "missing_section", "submitted_on", "received_on",
                     "acknowledge_by",
                     "resolve_by", "outcome", "motivation", "note", "mediator", "consequences_section"}
    assert placeholders - letter_fields <= set(terms.BY_NAME)


@pytest.mark.parametrize("kind", list(LetterKind))
def test_every_term_a_letter_states_is_a_term_of_the_procedure(kind: LetterKind) -> None:
    templates = LetterTemplates()
    for letter in (_letter(kind), _letter(kind, consequences_by=None)):
        body = templates.render(letter).body
        assert set(DURATION.findall(body)) <= STATED_NL, body


def test_letters_state_the_terms_as_the_procedure_sets_them() -> None:
    templates = LetterTemplates()
    acknowledgement = templates.render(_letter(LetterKind.ACKNOWLEDGEMENT)).body
    assert f"binnen {terms.CONSEQUENCES_WITHIN.nl()} opgepakt" in acknowledgement
    assert f"Uw klacht wordt {terms.RETENTION.nl()} bewaard" in acknowledgement
    decision = templates.render(_letter(LetterKind.DECISION)).body
    assert f"binnen {terms.OBJECTION_WINDOW.nl()} weten" in decision
    extension = templates.render(_letter(LetterKind.EXTENSION)).body
    assert f"klachten binnen {terms.RESOLVE_WITHIN.nl()} af te handelen" in extension
    verdict = templates.render(_letter(LetterKind.VERDICT, consequences_by=None)).body
    assert f"binnen {terms.CONSEQUENCES_WITHIN.nl()} oppakt:" in verdict


def test_alerts_and_report_labels_state_only_the_procedures_terms() -> None:
    for text in ALERT_TEXT.values():
        assert set(DURATION.findall(text)) <= STATED_NL, text
    for label in LABELS.values():
        assert set(DURATION.findall(label["nl"])) <= STATED_NL, label
        assert set(DURATION.findall(label["en"])) <= STATED_EN, label
    assert terms.ACKNOWLEDGE_WITHIN.nl() in ALERT_TEXT["acknowledgement-overdue"]
    assert terms.ACKNOWLEDGE_WITHIN.en() in LABELS["acknowledged_on_time"]["en"]


def test_terms_speak_dutch_and_english() -> None:
    assert (terms.ACKNOWLEDGE_WITHIN.nl(), terms.ACKNOWLEDGE_WITHIN.en()) == ("3 werkdagen", "3 working days")
    assert (terms.RETENTION.nl(), terms.RETENTION.en()) == ("1 jaar", "1 year")
    assert terms.Term(1, terms.Unit.WEEKS).nl() == "1 week"
    assert terms.AUTO_EXTEND_BEFORE.en() == "24 hours" and terms.AUTO_EXTEND_BEFORE.delta == timedelta(hours=24)
    assert terms.RESOLVE_WITHIN.delta == timedelta(days=28) and terms.MEASURE_WINDOW.days == 180
    leap = datetime(2028, 2, 29, 12, 0, tzinfo=timezone.utc)
    assert terms.RETENTION.after(leap) == datetime(2029, 2, 28, 12, 0, tzinfo=timezone.utc)
    with pytest.raises(ValueError, match="not a fixed length"):
        terms.ACKNOWLEDGE_WITHIN.delta  # working days need the calendar


_CHANGED_TERM_CHECK = r'''
import json
from datetime import date, datetime, timedelta, timezone
from activities.letters import ALERT_TEXT, LetterTemplates
from complaints.models import (Channel, ComplaintView, LetterKind, Outcome, Phase, Recipient, Route,
                               SendLetterInput)
from complaints.report_format import render_text
from workflows.complaint import ComplaintWorkflow

at = datetime(2026, 4, 24, 10, 0, tzinfo=timezone.utc)
letter = SendLetterInput(complaint_id="complaint-0123456789abcdef", kind=LetterKind.ACKNOWLEDGEMENT, sequence=1,
                         recipient=Recipient(name="Jan", email="jan@example.nl"), product="Training Agile",
                         submitted_on=date(2026, 4, 24), received_at=at, resolve_by=at + timedelta(days=28))
workflow = object.__new__(ComplaintWorkflow)  # only to read what a timer's summary says
workflow._view = ComplaintView(complaint_id="complaint-0123456789abcdef", phase=Phase.CONSEQUENCES,
                               route=Route.FORMAL, channel=Channel.EMAIL, product="Training Agile", received_at=at)
workflow._view.deadlines.consequences_by = at
ratio = {"count": 1, "of": 1}
report = {"year": 2026, "total": 1, "by_route": {}, "by_channel": {}, "by_product": {}, "by_outcome": {},
          "escalated_to_formal": 0, "acknowledged_on_time": ratio, "decided_within_term": ratio, "extended": 0,
          "mediated": 0, "consequences_on_time": ratio, "median_days_to_close": None, "measures": []}
print(json.dumps({"letter": LetterTemplates().render(letter).body, "alert": ALERT_TEXT["consequences-overdue"],
                  "report": render_text(report), "timer": workflow._consequences_deadlines()[0].summary}))
'''


def test_changing_a_term_in_its_home_changes_every_text_that_states_it(tmp_path: Path) -> None:
    """Edit CONSEQUENCES_WITHIN in a copy of the code, as a maintainer would: the letter, the alert,
    the report label and the timer's summary in the Web UI all say the new term."""
    for package in ("complaints", "activities", "workflows", "infra"):
        shutil.copytree(ROOT / package, tmp_path / package, ignore=shutil.ignore_patterns("__pycache__"))
    home = tmp_path / "complaints" / "terms.py"
    source = home.read_text(encoding="utf-8")
    assert source.count("CONSEQUENCES_WITHIN = Term(2, Unit.WEEKS)") == 1
    home.write_text(source.replace("CONSEQUENCES_WITHIN = Term(2, Unit.WEEKS)",
                                   "CONSEQUENCES_WITHIN = Term(3, Unit.WEEKS)"), encoding="utf-8")
    result = subprocess.run([sys.executable, "-c", _CHANGED_TERM_CHECK], cwd=tmp_path, capture_output=True,
                            text=True, timeout=60, env={"PYTHONPATH": str(tmp_path), "PYTHONDONTWRITEBYTECODE": "1"})
    assert result.returncode == 0, result.stderr
    import json

    said = json.loads(result.stdout)
    assert "binnen 3 weken opgepakt" in said["letter"] and "2 weken" not in said["letter"]
    assert "niet binnen 3 weken opgepakt" in said["alert"]
    assert "consequences picked up within 3 weeks" in said["report"]
    assert said["timer"] == "consequences to be picked up (3 weeks)"

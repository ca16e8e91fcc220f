"""Every intake rule gives a clear error naming the item and the field."""

from __future__ import annotations

import json
from datetime import datetime, timedelta, timezone

import pytest

from complaints.ids import complaint_id_for
from starter import IntakeError, parse_complaints
from tests.factories import DELETE, complaint_json


def problems_for(payload: object) -> list[str]:
    raw = payload if isinstance(payload, (str, bytes)) else json.dumps(payload)
    with pytest.raises(IntakeError) as caught:
        parse_complaints(raw)
    return caught.value.problems


def complainant(**overrides: object) -> dict:
    person = complaint_json()["complainant"]
    person.update(overrides)
    return person


def test_a_valid_complaint_passes_with_defaults() -> None:
    [c] = parse_complaints(json.dumps(complaint_json(route=DELETE, reference=DELETE)))
    assert c.route.value == "informal"
    assert c.complainant.role.value == "customer"
    assert c.received_at is None  # the starter sets it to the moment of intake


@pytest.mark.parametrize("field", ["channel", "complainant", "product", "submitted_on", "description", "motivation"])
def test_required_fields(field: str) -> None:
    assert problems_for(complaint_json(**{field: DELETE})) == [f"item 1: {field}: required field is missing"]


@pytest.mark.parametrize("field", ["name", "organisation", "email", "phone"])
def test_required_complainant_fields(field: str) -> None:
    person = complainant()
    del person[field]
    assert problems_for(complaint_json(complainant=person)) == [
        f"item 1: complainant.{field}: required field is missing"]


def test_unknown_keys_are_rejected() -> None:
    assert problems_for(complaint_json(priority="high")) == ["item 1: priority: unknown field"]
    assert problems_for(complaint_json(complainant=complainant(age=40))) == [
        "item 1: complainant.age: unknown field"]


@pytest.mark.parametrize("value", ["", "   ", "\n\t "])
def test_empty_and_whitespace_text_is_rejected(value: str) -> None:
    [problem] = problems_for(complaint_json(description=value))
    assert problem.startswith("item 1: description: ") and "empty" in problem


@pytest.mark.parametrize("value", ["Jan\r\nBcc: everyone@example.com", "Jan\nde Vries", "Jan\x00", "Jan\u2028"])
def test_control_characters_never_reach_a_mail_header(value: str) -> None:
    [problem] = problems_for(complaint_json(complainant=complainant(name=value)))
    assert problem.startswith("item 1: complainant.name: ") and "control characters" in problem


def test_multi_line_text_keeps_its_line_breaks_but_not_other_control_characters() -> None:
    [c] = parse_complaints(json.dumps(complaint_json(description="Eerste regel.\nTweede regel.")))
    assert c.description == "Eerste regel.\nTweede regel."
    [problem] = problems_for(complaint_json(description="bell\x07"))
    assert problem.startswith("item 1: description: ")


def test_absurd_sizes_are_rejected() -> None:
    [problem] = problems_for(complaint_json(motivation="x" * 1_000_000))
    assert problem.startswith("item 1: motivation: ") and "20000" in problem
    [problem] = problems_for(complaint_json(product="x" * 201))
    assert problem.startswith("item 1: product: ") and "200" in problem


@pytest.mark.parametrize("email", ["jan", "jan@", "@example.nl", "jan@@example.nl", "jan de vries@example.nl"])
def test_invalid_email(email: str) -> None:
    [problem] = problems_for(complaint_json(complainant=complainant(email=email)))
    assert problem.startswith("item 1: complainant.email: ")


@pytest.mark.parametrize("phone", ["12", "not a phone", "+31 6 1234", "+999 123456789"])
def test_invalid_phone(phone: str) -> None:
    [problem] = problems_for(complaint_json(complainant=complainant(phone=phone)))
    assert problem.startswith("item 1: complainant.phone: ")


@pytest.mark.parametrize("phone", ["+31 6 12345678", "06-12345678", "070 123 4567", "+32 470 12 34 56"])
def test_valid_phone_numbers(phone: str) -> None:
    assert parse_complaints(json.dumps(complaint_json(complainant=complainant(phone=phone))))


@pytest.mark.parametrize(("field", "value"), [("channel", "fax"), ("route", "urgent")])
def test_enumerations(field: str, value: str) -> None:
    [problem] = problems_for(complaint_json(**{field: value}))
    assert problem.startswith(f"item 1: {field}: ")


def test_role_must_be_customer_or_employee() -> None:
    [problem] = problems_for(complaint_json(complainant=complainant(role="director")))
    assert problem.startswith("item 1: complainant.role: ")


def test_a_formal_complaint_is_written() -> None:
    [problem] = problems_for(complaint_json(route="formal", channel="conversation"))
    assert problem.startswith("item 1: route: ") and "written" in problem
    assert parse_complaints(json.dumps(complaint_json(route="informal", channel="conversation")))


def test_dates() -> None:
    now = datetime.now(timezone.utc)
    tomorrow = (now + timedelta(days=2)).date().isoformat()
    assert problems_for(complaint_json(submitted_on=tomorrow)) == [
        "item 1: submitted_on: must not be in the future"]
    assert problems_for(complaint_json(submitted_on="24-04-2026"))[0].startswith("item 1: submitted_on: ")
    future = (now + timedelta(hours=2)).isoformat()
    assert problems_for(complaint_json(received_at=future)) == ["item 1: received_at: must not be in the future"]
    before = complaint_json(submitted_on="2026-04-24", received_at="2026-04-23T10:00:00+02:00")
    assert problems_for(before) == ["item 1: received_at: must not be before submitted_on"]
    naive = problems_for(complaint_json(received_at="2026-04-24T10:00:00"))
    assert naive[0].startswith("item 1: received_at: ")


def test_wrong_types() -> None:
    [problem] = problems_for(complaint_json(product=42))
    assert problem.startswith("item 1: product: ")
    assert problems_for(["not a complaint"]) == ["item 1: must be a JSON object (a complaint), not str"]


def test_every_problem_of_every_item_is_reported() -> None:
    batch = [complaint_json(), complaint_json(product=""), complaint_json(channel="fax", motivation=DELETE)]
    problems = problems_for(batch)
    assert [p.split(":")[0] for p in problems] == ["item 2", "item 3", "item 3"]


def test_the_same_reference_twice_in_one_batch() -> None:
    first = complaint_json(reference="scan-0042")
    assert problems_for([first, complaint_json(reference="scan-0042")]) == [
        "item 2: reference: the same reference as item 1"]


def test_json_lines_and_arrays() -> None:
    lines = "\n".join(json.dumps(complaint_json()) for _ in range(3))
    assert len(parse_complaints(lines)) == 3
    assert len(parse_complaints(json.dumps([complaint_json(), complaint_json()]))) == 2


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        (b"", "input: no complaint found (empty input)"),
        (b"[]", "input: no complaint found (empty array)"),
        (b"\xff\xfe{", "input: not valid UTF-8"),
        (b"{\"channel\": ", "input: not valid JSON"),
        (b"[" * 100_000 + b"]" * 100_000, "nested too deeply"),
    ],
)
def test_unreadable_input(raw: bytes, expected: str) -> None:
    [problem] = problems_for(raw)
    assert expected in problem


def test_ids_are_deterministic_and_free_of_personal_data() -> None:
    [a] = parse_complaints(json.dumps(complaint_json(reference="<abc@mail.example.nl>")))
    [b] = parse_complaints(json.dumps(complaint_json(reference="<abc@mail.example.nl>", product="Anders")))
    assert complaint_id_for(a) == complaint_id_for(b)
    cid = complaint_id_for(a)
    assert cid.startswith("complaint-")
    for secret in ("abc", "mail.example", "Jan", "jan.devries"):
        assert secret.lower() not in cid.lower()
    [c] = parse_complaints(json.dumps(complaint_json(reference=DELETE)))
    [d] = parse_complaints(json.dumps(complaint_json(reference=DELETE)))
    assert complaint_id_for(c) == complaint_id_for(d)


@pytest.mark.parametrize("now", [
    datetime(2026, 7, 1, 22, 30, tzinfo=timezone.utc),   # 00:30 CEST on 2 July in Amsterdam
    datetime(2026, 1, 14, 23, 30, tzinfo=timezone.utc),  # 00:30 CET on 15 January in Amsterdam
])
def test_a_complaint_dated_today_in_amsterdam_is_accepted_just_after_midnight(now: datetime) -> None:
    from zoneinfo import ZoneInfo

    today = now.astimezone(ZoneInfo("Europe/Amsterdam")).date()
    [c] = parse_complaints(json.dumps(complaint_json(submitted_on=today.isoformat(), received_at=now.isoformat())),
                           now=now)
    assert c.submitted_on == today and c.received_at == now
    tomorrow = (today + timedelta(days=1)).isoformat()
    with pytest.raises(IntakeError) as caught:
        parse_complaints(json.dumps(complaint_json(submitted_on=tomorrow)), now=now)
    assert caught.value.problems == ["item 1: submitted_on: must not be in the future"]


def test_a_complaint_received_more_than_a_year_ago_is_refused_naming_the_earliest_day() -> None:
    now = datetime(2026, 12, 2, 10, 0, tzinfo=timezone.utc)
    long_ago = complaint_json(submitted_on="2024-03-01", received_at="2024-03-02T10:00:00+01:00")
    with pytest.raises(IntakeError) as caught:
        parse_complaints(json.dumps(long_ago), now=now)
    assert caught.value.problems == ["item 1: received_at: more than 1 year ago (the earliest is 2025-12-02); "
                                     "register an older complaint by hand"]
    written_long_before = complaint_json(submitted_on="2025-11-01")  # received now
    with pytest.raises(IntakeError) as caught:
        parse_complaints(json.dumps(written_long_before), now=now)
    assert caught.value.problems == ["item 1: submitted_on: more than 1 year before the complaint was received"]
    [within] = parse_complaints(json.dumps(complaint_json(submitted_on="2025-12-02",
                                                          received_at="2025-12-02T11:00:00+00:00")), now=now)
    assert within.submitted_on.isoformat() == "2025-12-02"

"""Bad input, tried broadly: property-based tests of intake (hypothesis).

Any JSON that is not a valid complaint gives an :class:`IntakeError` whose problems each
read ``item N: <field path>: message`` (or ``input: ...`` / ``line N: ...`` for input that is
not JSON at all), never another exception; valid complaints always validate and get exactly
one id each. The strategies build valid complaints and then break exactly one thing, so each
test knows which field the error must name.

At the end, a few generated batches go through the real ``python -m starter submit`` against
the session's dev server: invalid ones start nothing, a valid one starts exactly one workflow
per complaint.

Hypothesis runs without its example database (nothing is written into the repository) and
with a bounded number of examples, so the whole file stays fast.
"""

from __future__ import annotations

import asyncio
import atexit
import json
import re
import shutil
import tempfile
import uuid
from dataclasses import dataclass
from datetime import datetime, time, timedelta, timezone
from typing import Any, Callable

import pytest
from hypothesis import HealthCheck, given, seed, settings
from hypothesis import Phase as HypothesisPhase
from hypothesis import strategies as st
from hypothesis.configuration import set_hypothesis_home_dir

from complaints.calendar import AMSTERDAM, local_date
from complaints.ids import complaint_id_for
from complaints.models import ComplaintSubmission
from starter import IntakeError, parse_complaints
from tests.lifecycle import workflow_exists as exists
from tests.cli import cli_env, run_cli

# Hypothesis keeps caches (and, by default, examples) under .hypothesis/ in the working directory:
# keep them out of the repository.
_HYPOTHESIS_HOME = tempfile.mkdtemp(prefix="hypothesis-")
set_hypothesis_home_dir(_HYPOTHESIS_HOME)
atexit.register(shutil.rmtree, _HYPOTHESIS_HOME, ignore_errors=True)

#: The moment intake validates against (``now`` is passed explicitly: no flakiness at midnight).
NOW = datetime.now(timezone.utc).replace(microsecond=0) - timedelta(minutes=1)

FAST = settings(
    database=None,  # no .hypothesis/examples in the repository
    deadline=None,
    max_examples=60,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.large_base_example],
)
FEW = settings(FAST, max_examples=15)  # for the examples that carry megabytes

# ----------------------------------------------------------------------------- the rules' vocabulary

REQUIRED = ["channel", "complainant", "product", "submitted_on", "description", "motivation",
            "complainant.name", "complainant.organisation", "complainant.email", "complainant.phone"]
SINGLE_LINE = ["reference", "complainant.name", "complainant.organisation", "product"]
TEXT = ["description", "motivation"]
ENUMS = {"channel": ["email", "letter", "conversation"], "route": ["informal", "formal"],
         "complainant.role": ["customer", "employee"]}
DATES = ["submitted_on", "received_at"]
#: Every field that holds a JSON string.
STRING_FIELDS = SINGLE_LINE + TEXT + list(ENUMS) + DATES + ["complainant.email", "complainant.phone"]
#: Fields for which JSON null is allowed (it means "not given").
NULLABLE = {"reference", "received_at"}
TOP_KEYS = {"reference", "channel", "route", "complainant", "product", "submitted_on", "received_at",
            "description", "motivation"}
COMPLAINANT_KEYS = {"name", "organisation", "email", "phone", "role"}

#: Control characters a single-line field rejects: C0, DEL, C1 and the Unicode line/paragraph separators.
LINE_CONTROLS = [chr(c) for c in [*range(0x00, 0x20), *range(0x7F, 0xA0)]] + ["\u2028", "\u2029"]
#: Control characters multi-line text rejects: the same minus tab, LF and CR (and the separators).
TEXT_CONTROLS = [c for c in LINE_CONTROLS if c not in "\t\n\r\u2028\u2029"]
#: What str.strip() takes away: a field of only these is empty.
WHITESPACE = [" ", "\t", "\n", "\r", "\x0b", "\x0c", "\xa0", "\u1680", "\u2003", "\u3000"]

VALID_PHONES = ["+31 6 12345678", "06-12345678", "070 123 4567", "+32 470 12 34 56", "020 555 0123",
                "+31 20 555 0123", "0031 6 1234 5678", "(020) 555-0123", "+31612345678", "010-1234567",
                "+44 20 7946 0958", "+49 30 901820", "+33 1 42 68 53 00"]
INVALID_PHONES = ["12", "0", "+31 6 1234", "+31 6 1234567890123", "+999 123456789", "+0 12345678",
                  "not a phone", "phone: none", "---", "+", "()", "06-1234567x", "+31 20 555 012"]
INVALID_EMAILS = ["jan", "jan@", "@example.nl", "jan@@example.nl", "jan de vries@example.nl", "jan@example",
                  "jan@.example.nl", "jan@example..nl", ".jan@example.nl", "jan.@example.nl", "jan..de@example.nl",
                  "jan@exa mple.nl", "jan@-example.nl", "jan@example.nl.", "jan@[300.1.1.1]",
                  "jan@example.nl, piet@example.nl", "jan@" + "a" * 64 + ".nl", "jan@example.invalid",
                  "jan@localhost", "jan@xn--.nl", "jan\\@example.nl", "jan(comment)@example.nl"]
# Accepted on purpose, for the record: "Jan <jan@example.nl>" and "<jan@example.nl>" (pydantic keeps the
# address only: jan@example.nl), and a local part longer than RFC 5321's 64 octets.
MEGABYTE = 1 << 20

# ----------------------------------------------------------------------------- valid complaints

_visible = st.characters(codec="utf-8", exclude_categories=("Cc", "Cs"), exclude_characters="\u2028\u2029")
_visible_or_break = st.one_of(_visible, st.sampled_from("\n\t\r\u2028"))


def _not_blank(value: str) -> bool:
    return bool(value.strip())


single_line = st.one_of(
    st.text(_visible, min_size=1, max_size=40).filter(_not_blank),
    st.text(_visible, min_size=200, max_size=200).filter(_not_blank),  # the limit exactly
)
texts = st.one_of(
    st.text(_visible_or_break, min_size=1, max_size=300).filter(_not_blank),
    st.sampled_from(["x" * 20_000, "é" * 19_999 + "\n", "<script>alert(1)</script>\n'\"\n" + "w" * 5_000]),
)
emails = st.builds(
    "{}@{}".format,
    st.from_regex(r"[a-z0-9](?:[a-z0-9_+-]{0,15}[a-z0-9])?(?:\.[a-z0-9]{1,8}){0,2}", fullmatch=True),
    st.sampled_from(["example.nl", "level-up.nl", "mail.example.com", "gemeente-delft.nl", "ex-ample.org"]),
)
offsets = st.integers(-12 * 4, 14 * 4).map(lambda quarters: timezone(timedelta(minutes=15 * quarters)))


@st.composite
def valid_complaints(draw: st.DrawFn) -> dict[str, Any]:
    """A complaint (as JSON-ready dict) that intake must accept, with every optional field varied."""
    channel = draw(st.sampled_from(ENUMS["channel"]))
    item: dict[str, Any] = {
        "channel": channel,
        "complainant": {"name": draw(single_line), "organisation": draw(single_line),
                        "email": draw(emails), "phone": draw(st.sampled_from(VALID_PHONES))},
        "product": draw(single_line),
        "description": draw(texts),
        "motivation": draw(texts),
    }
    route = draw(st.sampled_from([None, "informal"] + (["formal"] if channel != "conversation" else [])))
    if route is not None:
        item["route"] = route
    role = draw(st.sampled_from([None, "customer", "employee"]))
    if role is not None:
        item["complainant"]["role"] = role
    reference = draw(st.one_of(st.just("absent"), st.none(), single_line))
    if reference != "absent":
        item["reference"] = reference
    # Amsterdam dates, within the year intake looks back (INTAKE_LOOKBACK).
    today = local_date(NOW)
    submitted = draw(st.dates(min_value=today - timedelta(days=364), max_value=today))
    item["submitted_on"] = submitted.isoformat()
    if draw(st.booleans()):  # received_at: at or after submitted_on began in Amsterdam, not after NOW, any offset
        zone = draw(offsets)
        # In UTC: adding seconds to an Amsterdam time adds them to its wall clock, across DST an hour off.
        start = datetime.combine(submitted, time(0), tzinfo=AMSTERDAM).astimezone(timezone.utc)
        if start <= NOW:
            later = draw(st.integers(0, int((NOW - start).total_seconds())))
            item["received_at"] = (start + timedelta(seconds=later)).astimezone(zone).isoformat()
    return item


def id_of(item: dict[str, Any]) -> str:
    return complaint_id_for(ComplaintSubmission.model_validate(item))


# ----------------------------------------------------------------------------- breaking one thing


@dataclass(frozen=True)
class Expect:
    """What the problems of the broken item must say: each starts with ``prefix``; ``exact`` if known."""

    prefix: str
    exact: str | None = None
    suffix: str | None = None
    #: ``prefix`` is a whole field path (not the start of one, as for an unknown key shown quoted).
    whole: bool = True

    def check(self, problems: list[str]) -> None:
        assert problems, "an invalid item must have a problem"
        if self.exact is not None:
            assert problems == [self.exact], problems
        for problem in problems:
            assert problem.startswith(self.prefix), (self.prefix, problems)
            rest = problem[len(self.prefix):]
            if self.whole:
                assert rest[:1] in (":", "."), f"{problem!r} does not name the field {self.prefix!r}"
            if self.suffix is not None:
                assert problem.endswith(self.suffix), problem


def _parent(item: dict[str, Any], path: str) -> tuple[dict[str, Any], str]:
    *parents, key = path.split(".")
    for part in parents:
        item = item[part]
    return item, key


def get(item: dict[str, Any], path: str) -> Any:
    parent, key = _parent(item, path)
    return parent[key]


def put(item: dict[str, Any], path: str, value: Any) -> None:
    parent, key = _parent(item, path)
    parent[key] = value


def drop(item: dict[str, Any], path: str) -> None:
    parent, key = _parent(item, path)
    parent.pop(key, None)


def _insert(draw: st.DrawFn, value: str, char: str) -> str:
    at = draw(st.integers(0, len(value)))
    return value[:at] + char + value[at:]


Breaker = Callable[[st.DrawFn, dict[str, Any]], Expect]


def missing(draw: st.DrawFn, item: dict[str, Any]) -> Expect:
    path = draw(st.sampled_from(REQUIRED))
    drop(item, path)
    return Expect(f"item 1: {path}", exact=f"item 1: {path}: required field is missing")


def extra_field(draw: st.DrawFn, item: dict[str, Any]) -> Expect:
    nested = draw(st.booleans())
    known = COMPLAINANT_KEYS if nested else TOP_KEYS
    key = draw(st.one_of(st.from_regex(r"[a-z_]{1,20}", fullmatch=True),
                         st.text(min_size=1, max_size=30),
                         st.sampled_from(["x\ny", "Bcc: evil@example.com\r\n", "a.b", "é", "k" * 1000])
                         ).filter(lambda k: k not in known))
    value = draw(st.one_of(st.none(), st.booleans(), st.integers(), st.text(max_size=20), st.just({"a": [1]})))
    (item["complainant"] if nested else item)[key] = value
    where = "complainant." if nested else ""
    if re.fullmatch(r"[A-Za-z0-9_-]{1,64}", key):
        return Expect(f"item 1: {where}{key}", exact=f"item 1: {where}{key}: unknown field")
    # Any other key may be shown escaped (on one line: see assert_well_formed), but still as the field.
    return Expect(f"item 1: {where}", suffix=": unknown field", whole=False)


def wrong_type(draw: st.DrawFn, item: dict[str, Any]) -> Expect:
    path = draw(st.sampled_from(STRING_FIELDS + ["complainant"]))
    others = [st.booleans(), st.lists(st.integers(), max_size=3), st.dictionaries(st.text(max_size=5), st.integers(),
                                                                                max_size=2)]
    if path not in NULLABLE:
        others.append(st.none())
    if path == "complainant":
        others += [st.text(max_size=10), st.integers()]
    else:  # numbers too: a date is never read as a Unix time
        others += [st.integers(), st.floats(allow_nan=False)]
    put(item, path, draw(st.one_of(others)))
    return Expect(f"item 1: {path}")


def blank(draw: st.DrawFn, item: dict[str, Any]) -> Expect:
    path = draw(st.sampled_from(STRING_FIELDS))
    put(item, path, draw(st.text(st.sampled_from(WHITESPACE), max_size=6)))
    return Expect(f"item 1: {path}")


def control_character(draw: st.DrawFn, item: dict[str, Any]) -> Expect:
    path = draw(st.sampled_from(SINGLE_LINE + TEXT + ["complainant.email", "complainant.phone"]))
    if path in TEXT:
        value, char = draw(texts), draw(st.sampled_from(TEXT_CONTROLS))
    else:
        value = draw(single_line) if path in SINGLE_LINE else get(item, path)  # a valid e-mail address or phone
        char = draw(st.sampled_from(LINE_CONTROLS))
    put(item, path, _insert(draw, value, char))
    return Expect(f"item 1: {path}")


def too_long(draw: st.DrawFn, item: dict[str, Any]) -> Expect:
    path = draw(st.sampled_from(STRING_FIELDS))
    char = draw(st.sampled_from(["x", "é", "😀", " ", "\n"]))
    size = draw(st.sampled_from([MEGABYTE, 20_001 if path in TEXT else 201]))
    put(item, path, ("a" if char.isspace() else "") + char * size)
    return Expect(f"item 1: {path}")


def bad_email(draw: st.DrawFn, item: dict[str, Any]) -> Expect:
    put(item, "complainant.email", draw(st.one_of(
        st.sampled_from(INVALID_EMAILS),
        st.text(st.characters(codec="ascii", exclude_characters="@"), min_size=1, max_size=30),  # no @ at all
        emails.map(lambda e: e.replace("@", "@@")),
        emails.map(lambda e: e.replace("@", " @ ")),
    )))
    return Expect("item 1: complainant.email")


def bad_phone(draw: st.DrawFn, item: dict[str, Any]) -> Expect:
    put(item, "complainant.phone", draw(st.one_of(
        st.sampled_from(INVALID_PHONES),
        st.from_regex(r"[0-9]{1,4}", fullmatch=True),  # far too short for any number
        st.from_regex(r"\+31 6 [0-9]{1,5}", fullmatch=True),  # a Dutch mobile number cut short
        st.text(st.characters(codec="ascii", categories=("L", "P", "Zs")), min_size=1, max_size=20)
        .filter(_not_blank),  # no digits at all
    )))
    return Expect("item 1: complainant.phone")


def future_submitted_on(draw: st.DrawFn, item: dict[str, Any]) -> Expect:
    item["submitted_on"] = (NOW.date() + timedelta(days=draw(st.integers(1, 5000)))).isoformat()
    return Expect("item 1: submitted_on", exact="item 1: submitted_on: must not be in the future")


def future_received_at(draw: st.DrawFn, item: dict[str, Any]) -> Expect:
    moment = NOW + timedelta(seconds=draw(st.integers(1, 10 * 365 * 86400)))
    item["received_at"] = moment.astimezone(draw(offsets)).isoformat()
    return Expect("item 1: received_at", exact="item 1: received_at: must not be in the future")


def received_before_submitted(draw: st.DrawFn, item: dict[str, Any]) -> Expect:
    today = local_date(NOW)  # within the year intake looks back, the receipt an Amsterdam day or more earlier
    submitted = draw(st.dates(min_value=today - timedelta(days=300), max_value=today - timedelta(days=2)))
    day_before = datetime.combine(submitted - timedelta(days=draw(st.integers(1, 60))), time(0), tzinfo=AMSTERDAM)
    received = day_before + timedelta(seconds=draw(st.integers(0, 23 * 3600 - 1)))  # wall clock: within that day
    item["submitted_on"] = submitted.isoformat()
    item["received_at"] = received.astimezone(draw(offsets)).isoformat()
    return Expect("item 1: received_at", exact="item 1: received_at: must not be before submitted_on")


def formal_by_conversation(draw: st.DrawFn, item: dict[str, Any]) -> Expect:
    item["route"], item["channel"] = "formal", "conversation"
    return Expect("item 1: route", exact="item 1: route: a formal complaint is written: channel must be email "
                                        "or letter, not conversation")


def naive_or_malformed_dates(draw: st.DrawFn, item: dict[str, Any]) -> Expect:
    path = draw(st.sampled_from(DATES))
    if path == "received_at":
        value = draw(st.one_of(
            st.datetimes(min_value=datetime(2020, 1, 1), max_value=NOW.replace(tzinfo=None))
            .map(datetime.isoformat),  # no offset
            st.sampled_from(["2026-04-24 25:00+02:00", "24-04-2026T10:00:00+02:00", "morgen", "2026-02-30T10:00Z"])))
    else:
        value = draw(st.sampled_from(["24-04-2026", "2026/04/24", "2026-13-01", "2026-02-30", "gisteren",
                                      "2026-4-24", "20260424T"]))
    put(item, path, value)
    return Expect(f"item 1: {path}")


def not_an_option(draw: st.DrawFn, item: dict[str, Any]) -> Expect:
    path = draw(st.sampled_from(sorted(ENUMS)))
    value = draw(st.one_of(st.sampled_from(["fax", "urgent", "director", "EMAIL", "Formal", " email"]),
                           st.text(max_size=10)).filter(lambda v: v not in ENUMS[path]))
    put(item, path, value)
    return Expect(f"item 1: {path}")


BREAKERS: list[Breaker] = [missing, extra_field, wrong_type, blank, control_character, too_long, bad_email,
                           bad_phone, future_submitted_on, future_received_at, received_before_submitted,
                           formal_by_conversation, naive_or_malformed_dates, not_an_option]


@st.composite
def invalid_complaints(draw: st.DrawFn, breakers: list[Breaker] = BREAKERS) -> tuple[dict[str, Any], Expect]:
    """A valid complaint with exactly one thing broken, and what the problem must say about it."""
    item = draw(valid_complaints())
    breaker = draw(st.sampled_from(breakers))
    return item, breaker(draw, item)


def renumber(expect: Expect, number: int) -> Expect:
    """The same expectation for the item at position ``number`` of a batch."""
    def at(text: str | None) -> str | None:
        return None if text is None else f"item {number}: " + text.removeprefix("item 1: ")
    return Expect(at(expect.prefix) or "", at(expect.exact), expect.suffix, expect.whole)


# ----------------------------------------------------------------------------- encodings of a batch

@st.composite
def encoded(draw: st.DrawFn, items: list[Any]) -> bytes:
    """The items as an intake service might send them: one object, an array, or JSON Lines."""
    ascii_only = draw(st.booleans())
    forms = ["array", "lines"] + (["object"] if len(items) == 1 else [])
    form = draw(st.sampled_from(forms))
    if form == "object":
        text = json.dumps(items[0], ensure_ascii=ascii_only, indent=draw(st.sampled_from([None, 2])))
    elif form == "array":
        text = json.dumps(items, ensure_ascii=ascii_only, indent=draw(st.sampled_from([None, 2])))
    else:
        end = draw(st.sampled_from(["\n", "\r\n"]))
        text = end.join(json.dumps(i, ensure_ascii=ascii_only) for i in items) + draw(st.sampled_from(["", end]))
    return (draw(st.sampled_from([b"", b"\xef\xbb\xbf"])) if form != "lines" else b"") + text.encode()


# ----------------------------------------------------------------------------- what every answer looks like

PROBLEM = re.compile(r"(?:input|line (?P<line>[1-9][0-9]*)|item (?P<item>[1-9][0-9]*)): \S.*")


def problems_of(raw: bytes | str) -> list[str]:
    """Parse; the input must be refused with an IntakeError (anything else fails the test)."""
    with pytest.raises(IntakeError) as caught:
        parse_complaints(raw, now=NOW)
    return caught.value.problems


def assert_well_formed(problems: list[str], items: int | None = None) -> None:
    """One short line per problem, ``input:``/``line N:``/``item N:`` first, N within the batch."""
    assert problems, "IntakeError without problems"
    for problem in problems:
        assert isinstance(problem, str)
        assert len(problem.splitlines()) == 1 and "\n" not in problem and "\r" not in problem, repr(problem)
        assert len(problem) <= 1000, f"{len(problem)} characters: {problem[:200]!r}..."
        match = PROBLEM.fullmatch(problem)
        assert match, f"{problem!r} is not 'item N: field: message', 'line N: ...' or 'input: ...'"
        if items is not None and match["item"]:
            assert 1 <= int(match["item"]) <= items, problem


def by_item(problems: list[str]) -> dict[int, list[str]]:
    found: dict[int, list[str]] = {}
    for problem in problems:
        match = PROBLEM.fullmatch(problem)
        assert match and match["item"], f"{problem!r} is not about an item"
        found.setdefault(int(match["item"]), []).append(problem)
    return found


# ============================================================================= valid complaints


@FAST
@given(st.lists(valid_complaints(), min_size=1, max_size=5, unique_by=id_of), st.data())
def test_valid_complaints_always_validate_with_one_id_each(items: list[dict[str, Any]], data: st.DataObject) -> None:
    raw = data.draw(encoded(items))
    complaints = parse_complaints(raw, now=NOW)
    assert len(complaints) == len(items)
    ids = [complaint_id_for(c) for c in complaints]
    assert ids == [id_of(i) for i in items], "one id per complaint, in the input's order"
    assert len(set(ids)) == len(ids)
    assert all(re.fullmatch(r"complaint-[0-9a-f]{16}", i) for i in ids), ids
    assert [complaint_id_for(c) for c in parse_complaints(raw, now=NOW)] == ids, "ids are deterministic"
    for complaint, item in zip(complaints, items):
        assert complaint.product == item["product"].strip()
        assert complaint.description == item["description"].strip()


@FAST
@given(valid_complaints())
def test_a_valid_complaint_keeps_its_id_whatever_the_encoding(item: dict[str, Any]) -> None:
    ids = {complaint_id_for(c) for raw in (json.dumps(item).encode(), json.dumps(item, ensure_ascii=False).encode(),
                                           json.dumps([item], indent=1), b"\xef\xbb\xbf" + json.dumps(item).encode())
           for c in parse_complaints(raw, now=NOW)}
    assert ids == {id_of(item)}


# ============================================================================= one thing broken


@FAST
@given(invalid_complaints(), st.data())
def test_an_invalid_complaint_gets_a_clear_error_naming_the_field(case: tuple[dict, Expect],
                                                                  data: st.DataObject) -> None:
    item, expect = case
    problems = problems_of(data.draw(encoded([item])))
    assert_well_formed(problems, items=1)
    expect.check(problems)


@FEW
@given(invalid_complaints([too_long]))
def test_megabyte_fields_are_refused_by_name(case: tuple[dict, Expect]) -> None:
    item, expect = case
    problems = problems_of(json.dumps(item))
    assert_well_formed(problems, items=1)
    expect.check(problems)


@FAST
@given(invalid_complaints([control_character]))
def test_control_characters_in_single_line_fields_are_refused(case: tuple[dict, Expect]) -> None:
    item, expect = case
    problems = problems_of(json.dumps(item, ensure_ascii=False))
    assert_well_formed(problems, items=1)
    expect.check(problems)


# ============================================================================= batches


@FAST
@given(st.lists(st.tuples(st.booleans(), valid_complaints(), invalid_complaints()), min_size=1, max_size=6)
       .filter(lambda rows: not all(valid for valid, _, _ in rows)), st.data())
def test_a_batch_mixing_valid_and_invalid_items_names_only_the_invalid_ones(rows: list, data: st.DataObject) -> None:
    items: list[dict[str, Any]] = []
    expected: dict[int, Expect] = {}
    for number, (valid, good, (bad, expect)) in enumerate(rows, 1):
        if valid:
            good["reference"] = f"ref-{number}"  # distinct, so no valid item is a duplicate of another
            items.append(good)
        else:
            items.append(bad)
            expected[number] = renumber(expect, number)
    problems = problems_of(data.draw(encoded(items)))
    assert_well_formed(problems, items=len(items))
    found = by_item(problems)
    assert set(found) == set(expected), f"problems for items {sorted(found)}, invalid are {sorted(expected)}"
    for number, expect in expected.items():
        expect.check(found[number])


@FAST
@given(st.lists(valid_complaints(), min_size=1, max_size=4, unique_by=id_of), st.data())
def test_the_same_complaint_twice_in_one_batch(items: list[dict[str, Any]], data: st.DataObject) -> None:
    original = data.draw(st.integers(0, len(items) - 1))
    copy = json.loads(json.dumps(items[original]))
    has_reference = copy.get("reference") is not None
    if has_reference and data.draw(st.booleans()):  # the same reference is the same complaint, whatever it says
        copy["product"] = data.draw(single_line)
        if len(copy["reference"]) <= 197:
            copy["reference"] = data.draw(st.sampled_from(["", " ", "  "])) + copy["reference"] + " "
    at = data.draw(st.integers(original + 1, len(items)))
    items.insert(at, copy)
    first, second = original + 1, at + 1
    problems = problems_of(data.draw(encoded(items)))
    assert_well_formed(problems, items=len(items))
    what = "reference: the same reference as" if has_reference else "the same complaint as"
    assert problems == [f"item {second}: {what} item {first}"]


# ============================================================================= not even a complaint

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=10), children, max_size=4),
    max_leaves=12,
)


@FAST
@given(st.one_of(
    json_values,
    st.lists(json_values, max_size=4),
    st.dictionaries(st.sampled_from(sorted(TOP_KEYS)), json_values, max_size=9),  # the right keys, any values
    valid_complaints().flatmap(lambda item: st.fixed_dictionaries(
        {k: st.just(v) for k, v in item.items() if k != "complainant"},
        optional={"complainant": st.dictionaries(st.sampled_from(sorted(COMPLAINANT_KEYS)), json_values)})),
))
def test_any_json_is_refused_with_clear_problems_never_an_exception(value: Any) -> None:
    raw = json.dumps(value)
    try:
        complaints = parse_complaints(raw, now=NOW)
    except IntakeError as err:
        assert_well_formed(err.problems, items=len(value) if isinstance(value, list) else 1)
    else:  # only a complete, valid complaint gets through
        assert complaints and all(isinstance(c, ComplaintSubmission) for c in complaints)


@FAST
@given(st.one_of(
    st.binary(max_size=200),
    st.text(max_size=200).map(str.encode),
    st.lists(st.text(max_size=40), min_size=2, max_size=5).map(lambda lines: "\n".join(lines).encode()),
    st.integers(4_301, 6_000).map(lambda digits: b'{"channel": ' + b"7" * digits + b"}"),  # Python's int limit
    st.integers(4_301, 6_000).map(lambda digits: b"{}\n[" + b"1" * digits + b"]"),
    st.sampled_from([b"NaN", b"[Infinity]", b"-Infinity", b'{"a": 1e999}', b"null", b"true", b'"text"', b"[]",
                     b"[[]]", b"{}", b"\n\n", b"\xef\xbb\xbf", b"\xef\xbb\xbf[]", b"{\"channel\": }", b"[1,]"]),
))
def test_any_bytes_give_problems_never_an_exception(raw: bytes) -> None:
    try:
        parse_complaints(raw, now=NOW)
    except IntakeError as err:
        assert_well_formed(err.problems)


INVALID_UTF8 = [b"\xff", b"\xfe", b"\x80", b"\xc3", b"\xe2\x82", b"\xf0\x9f\x98", b"\xc0\x80", b"\xed\xa0\x80",
                b"\xf4\x90\x80\x80", b"\xf8\x88\x80\x80\x80"]


@FAST
@given(st.lists(valid_complaints(), min_size=1, max_size=3, unique_by=id_of), st.data())
def test_invalid_utf8_anywhere_is_refused_with_its_position(items: list[dict[str, Any]], data: st.DataObject) -> None:
    text = json.dumps(items, ensure_ascii=data.draw(st.booleans()))
    cut = data.draw(st.integers(0, len(text)))  # a character boundary
    head = text[:cut].encode()
    raw = head + data.draw(st.sampled_from(INVALID_UTF8)) + text[cut:].encode()
    assert problems_of(raw) == [f"input: not valid UTF-8 (byte {len(head)})"]


@FEW
@given(valid_complaints(), st.sampled_from([900, 5_000, 100_000]), st.sampled_from(["[]", "{}"]),
       st.sampled_from(["document", "field", "extra", "line"]))
def test_deeply_nested_json_is_refused(item: dict[str, Any], depth: int, brackets: str, where: str) -> None:
    opening, closing = brackets
    inner = ('{"a": ' * depth + "1" + "}" * depth) if opening == "{" else (opening * depth + closing * depth)
    marker = f"nested-{uuid.uuid4()}"
    if where == "document":
        raw = inner
    elif where == "field":
        raw = json.dumps({**item, "product": marker}).replace(f'"{marker}"', inner)
    elif where == "extra":
        raw = json.dumps({**item, "bijlage": marker}).replace(f'"{marker}"', inner)
    else:
        raw = json.dumps(item) + "\n" + inner
    problems = problems_of(raw)
    assert_well_formed(problems, items=2 if where == "line" else 1)
    if where in ("field", "extra"):  # too deep to read at all, or refused by the field's name
        field = "product" if where == "field" else "bijlage"
        assert all("nested too deeply" in p or p.startswith(f"item 1: {field}: ") for p in problems), problems


# ============================================================================= dates are written, not counted


@pytest.mark.parametrize(("field", "value"), [("submitted_on", 0), ("submitted_on", "0"),
                                              ("received_at", 1_700_000_000)])
def test_dates_are_iso_strings_not_unix_times(field: str, value: Any) -> None:
    item = {"channel": "email", "complainant": {"name": "Jan", "organisation": "Gemeente Delft",
                                                "email": "jan@example.nl", "phone": "06-12345678"},
            "product": "Training", "submitted_on": "2020-01-01", "description": "x", "motivation": "y", field: value}
    assert problems_of(json.dumps(item))[0].startswith(f"item 1: {field}: ")


# ============================================================================= the real CLI


def examples(strategy: st.SearchStrategy[Any], count: int, seed_value: int) -> list[Any]:
    """``count`` examples drawn (reproducibly) from ``strategy``: hypothesis without a test around it."""
    found: list[Any] = []

    @seed(seed_value)
    @settings(FAST, max_examples=count, phases=[HypothesisPhase.generate])
    @given(strategy)
    def collect(value: Any) -> None:
        found.append(value)

    collect()
    return found


@st.composite
def invalid_batches(draw: st.DrawFn) -> tuple[bytes, list[dict[str, Any]]]:
    """A batch with valid items and at least one invalid one; returns it encoded, with its valid items."""
    valid = draw(st.lists(valid_complaints(), min_size=1, max_size=3))
    for item in valid:  # ids no other test (or earlier run) can have started
        item["reference"] = f"<{uuid.uuid4()}@intake-properties.test>"
    bad = [b for b, _ in draw(st.lists(invalid_complaints(), min_size=1, max_size=2))]
    items = draw(st.permutations(valid + bad))
    return draw(encoded(items)), valid




@pytest.fixture
def cli(env, settings) -> dict[str, str]:
    return cli_env(settings, env.client.service_client.config.target_host)


async def test_cli_refuses_generated_invalid_batches_and_starts_nothing(client, cli) -> None:
    batches = examples(invalid_batches(), count=12, seed_value=20260424)[-3:]
    batches.append((b'[{"channel": ' + b"9" * 5000 + b"}]", []))  # crashed the CLI before (int digit limit)
    results = await asyncio.gather(*(run_cli("-m", "starter", "submit", "-", env=cli, stdin=raw)
                                     for raw, _ in batches))
    for (raw, valid), result in zip(batches, results):
        assert result.code == 2, result
        assert result.out == ""
        assert "Traceback" not in result.err, result.err
        *problems, summary = result.err.strip().split("\n")
        assert_well_formed(problems)
        assert summary == f"starter: nothing was started ({len(problems)} problem(s))"
        for item in valid:
            assert not await exists(client, id_of(item)), "a valid item of an invalid batch was started"


async def test_cli_starts_exactly_one_workflow_per_valid_complaint(client, cli, settings) -> None:
    [items] = examples(st.lists(valid_complaints(), min_size=4, max_size=4), count=5, seed_value=7)[-1:]
    for item in items:
        item["reference"] = f"<{uuid.uuid4()}@intake-properties.test>"
    result = await run_cli("-m", "starter", "submit", "-", "--json", env=cli,
                           stdin="\n".join(json.dumps(i, ensure_ascii=False) for i in items).encode())
    assert result.code == 0, result
    printed = [json.loads(line) for line in result.out.splitlines()]
    assert printed == [{"complaint_id": id_of(i), "created": True} for i in items]
    for line in printed:
        description = await client.get_workflow_handle(line["complaint_id"]).describe()
        assert description.task_queue == settings.task_queue

    async def on_queue() -> list[str]:
        return [w.id async for w in client.list_workflows(f"TaskQueue = '{settings.task_queue}'")]
    for _ in range(100):  # visibility lags behind the starts
        started = await on_queue()
        if len(started) >= len(items):
            break
        await asyncio.sleep(0.1)
    assert sorted(started) == sorted(line["complaint_id"] for line in printed), "exactly N workflows"

"""Letters render safely: hostile names and texts survive exactly, and never add a header.

Every letter kind is rendered from its template with names and texts holding markup, quotes,
emoji, right-to-left script, a 5,000-character word and non-ASCII names; composed with
``SmtpSender.compose``; serialized exactly as aiosmtplib sends it (and as ``as_bytes``);
and parsed back with ``email.policy.default``. The raw headers are ASCII (RFC 2047 encoded
words for anything else), the header set is exactly the expected one, the To address and
display name and the Subject come back as they went in, and the plain-text body holds each
text verbatim. One letter also goes through the real SMTP server (the mail activity).

Python 3.11's email package has three quirks, told apart here from real damage, precisely:

- a subject folded whole onto the next line (``Subject:`` CRLF SP ...) parses with a leading
  space (CPython gh-124452, fixed in 3.12.8/3.13.1); the unfolded raw field must be exact;
- the ``policy.default`` parser puts a space between two adjacent RFC 2047 encoded words in an
  address (gh-128110), which RFC 2047 section 6.2 says must be ignored;
- the generator in turn sometimes leaves a space of the name *between* two encoded words (where
  an RFC 2047 reader drops it) instead of inside one.

So for any name intake accepts, every character but whitespace must come back both ways
(``policy.default``, and an RFC 2047 decoder of the raw header); names as people write them (the
fixed list: words, single spaces) must come back exactly from the RFC 2047 decoder, and from
``policy.default`` too when they fit in one encoded word.

A name with a control character or RFC 2047 encoded-word syntax (``=?``) is left out of the To
header by compose: Python 3.11's folder decoded such a word and wrote a CR/LF in it out raw, so a
name intake accepts could add headers (or a body) to a letter.
"""

from __future__ import annotations

import atexit
import email
import email.policy
import html
import json
import re
import shutil
import tempfile
import uuid
from dataclasses import replace
from datetime import date, datetime, timedelta, timezone
from email.header import decode_header, make_header
from email.message import EmailMessage
from email.utils import getaddresses
from pathlib import Path

import pytest
from aiosmtplib.email import flatten_message
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.configuration import set_hypothesis_home_dir
from temporalio.testing import ActivityEnvironment

from activities.dossier import DossierActivities
from activities.letters import LetterTemplates, Rendered
from activities.mail import MailActivities, SmtpSender, message_id
from complaints.models import (
    ComplaintSubmission,
    LetterKind,
    OpenDossierInput,
    Outcome,
    Recipient,
    SendLetterInput,
)
from devstack.smtp import MailCatcher
from infra.config import Settings
from starter import IntakeError, parse_complaints
from tests.conftest import free_port
from tests.factories import complaint_json

# Hypothesis keeps caches (and, by default, examples) under .hypothesis/ in the working directory:
# keep them out of the repository.
_HYPOTHESIS_HOME = tempfile.mkdtemp(prefix="hypothesis-")
set_hypothesis_home_dir(_HYPOTHESIS_HOME)
atexit.register(shutil.rmtree, _HYPOTHESIS_HOME, ignore_errors=True)

FAST = settings(database=None, deadline=None, max_examples=80,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])

RECEIVED = datetime(2026, 4, 24, 10, tzinfo=timezone.utc)
ADDRESS = "jan.devries@example.nl"
EXPECTED_HEADERS = sorted(["From", "To", "Subject", "Message-ID", "Date", "X-Complaint-Id", "X-Letter-Kind",
                           "MIME-Version", "Content-Type", "Content-Transfer-Encoding"])

NAMES = [
    "Zoë Ödegård-Ñúñez",  # fits one encoded word
    "محمد بن عبد الله الحسيني",  # Arabic, right to left
    "יוסי כהן",  # Hebrew
    "Jan \"de\" O'Brien <script>alert(1)</script>",  # ASCII with quotes and specials: quoted, not encoded
    "Renée 😀 van der Berg-Çelik \u200fשלום\u200e مرحبا 'x' \"y\" <b>",  # several encoded words
    "Jürgen Müller-Lüdenscheidt van der Ærø Ødegård",
    "é" * 200,  # the longest name intake takes
    "Anna-Sophie Schröder-Ünal van den Heuvel-Østergaard",
    "Ольга Владимировна Соколова-Петрова",
    "Nguyễn Thị Minh Khai 阮氏明開",
    "Jan de Vries",
]
WORD = "Klachtenprocedure" * 294 + "ab"  # a 5,000-character word
assert len(WORD) == 5_000
TEXT = ("<script>alert(1)</script> & <b>vet</b> 'enkel' \"dubbel\" 😀👍🏽 مرحبا بالعالم שלום עולם\n"
        "$name ${note} $$ 100% {motivation}\n.\nFrom the start of a line\n" + WORD + "\nEinde.")
PRODUCT = "Training <i>Agile</i> 'Pro' \"XL\" 😀 العربية"
MEDIATOR = "Mr. Ünal \"de Bemiddelaar\" <script>x</script>"
CONSEQUENCES = [TEXT.replace("Einde.", "Gevolg 1."), "Nieuwe trainer inplannen 😀 (שלום)"]

#: Which of the letter's texts each kind's template quotes.
QUOTED: dict[LetterKind, list[str]] = {
    LetterKind.ACKNOWLEDGEMENT: [],
    LetterKind.EXTENSION: [TEXT],
    LetterKind.DECISION: [TEXT],
    LetterKind.MEDIATOR_ENGAGED: [MEDIATOR],
    LetterKind.VERDICT: [TEXT, *(f"- {c}" for c in CONSEQUENCES)],
    LetterKind.INFORMAL_RESOLUTION: [TEXT],
    LetterKind.WITHDRAWAL: [TEXT],
}


def letter(kind: LetterKind, name: str, complaint_id: str = "complaint-0123456789abcdef") -> SendLetterInput:
    return SendLetterInput(
        complaint_id=complaint_id, kind=kind, sequence=1, recipient=Recipient(name=name, email=ADDRESS),
        product=PRODUCT, submitted_on=date(2026, 4, 24), received_at=RECEIVED,
        acknowledge_by=datetime(2026, 4, 29, 21, 59, 59, tzinfo=timezone.utc),
        resolve_by=RECEIVED + timedelta(days=28), outcome=Outcome.PARTIALLY_UPHELD, motivation=TEXT,
        note=TEXT, mediator=MEDIATOR, consequences=CONSEQUENCES,
        consequences_by=RECEIVED + timedelta(days=14))


def compose(rendered: Rendered, name: str | None, kind: str = "decision", to: str = ADDRESS) -> EmailMessage:
    return SmtpSender(Settings()).compose(
        to=to, to_name=name, rendered=rendered, msg_id="<complaint-0123456789abcdef.decision.1@level-up.nl>",
        headers={"X-Complaint-Id": "complaint-0123456789abcdef", "X-Letter-Kind": kind})


def serializations(msg: EmailMessage) -> dict[str, bytes]:
    """The bytes aiosmtplib puts on the wire (ASCII addresses: no SMTPUTF8), and as_bytes()."""
    return {"aiosmtplib": flatten_message(msg, utf8=False, cte_type="8bit"),
            "7bit": flatten_message(msg, utf8=False, cte_type="7bit"),
            "as_bytes": msg.as_bytes()}


def raw_head(raw: bytes) -> str:
    head = re.split(rb"\r?\n\r?\n", raw, maxsplit=1)[0]
    assert head.isascii(), f"raw non-ASCII in the headers: {head!r}"
    return head.decode("ascii")


def header_names(head: str) -> list[str]:
    """The names of the header fields in the raw head (continuation lines belong to the field above)."""
    lines = re.split(r"\r?\n", head)
    assert not lines[0][:1].isspace()
    return sorted(line.split(":", 1)[0] for line in lines if not line[:1].isspace())


def raw_field(head: str, name: str) -> str:
    match = re.search(rf"^{name}:([^\r\n]*(?:\r?\n[ \t][^\r\n]*)*)", head, re.M | re.I)
    assert match, f"no {name} header in {head!r}"
    return re.sub(r"\r?\n(?=[ \t])", "", match.group(1))  # unfolded


def rfc2047_address(head: str) -> tuple[str, str]:
    """The To header's (display name, address) read from the raw field with the email package's RFC 2047
    decoder (``decode_header``), which drops the whitespace between adjacent encoded words as RFC 2047 says."""
    [(name, address)] = getaddresses([raw_field(head, "To")])
    return str(make_header(decode_header(name))), address


def text_of(msg: EmailMessage) -> str:
    return msg.get_content().replace("\r\n", "\n")  # the wire's CRLF is not part of the text


def assert_safe(raw: bytes, name: str, rendered: Rendered, texts: list[str], exact: bool = True) -> EmailMessage:
    """The message is safe and whole; ``exact``: the display name comes back exactly (a name as people
    write them: words with single spaces), not only its words."""
    head = raw_head(raw)
    assert header_names(head) == EXPECTED_HEADERS, header_names(head)
    assert all(len(line) <= 998 for line in re.split(r"\r?\n", head)), "a header line longer than RFC 5322 allows"
    assert not re.search(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]", head), "a control character in the headers"
    to = raw_field(head, "To")
    if not name.isascii():
        assert "=?utf-8?" in to.lower(), to

    parsed = email.message_from_bytes(raw, policy=email.policy.default)
    assert not parsed.defects, parsed.defects
    assert sorted(parsed.keys()) == EXPECTED_HEADERS
    assert raw_field(head, "Subject").strip() == rendered.subject
    if re.search(r"^Subject:\r?\n", head, re.M):  # the whole subject folded onto the next line:
        assert parsed["Subject"] == " " + rendered.subject  # gh-124452 (3.11's parser keeps that fold's space)
    else:
        assert parsed["Subject"] == rendered.subject
    [recipient] = parsed["To"].addresses
    assert recipient.addr_spec == ADDRESS
    (by_rfc, address), by_python = rfc2047_address(head), recipient.display_name
    assert address == ADDRESS
    readings = (by_rfc, by_python)
    # Every character but whitespace, both ways (see the module doc).
    assert all("".join(r.split()) == "".join(name.split()) for r in readings), readings
    if exact:
        assert by_rfc == name, readings
        if to.lower().count("=?utf-8?") <= 1:  # one encoded word at most: policy.default reads it exactly too
            assert by_python == name, readings

    assert not parsed.is_multipart() and parsed.get_content_type() == "text/plain"
    assert parsed.get_content_charset() == "utf-8"
    for part in parsed.walk():  # letters are plain text; an HTML part would have to escape the texts
        if part.get_content_type() == "text/html":
            content = part.get_content()
            assert "<script>" not in content and html.escape(name) in content
    body = text_of(parsed)
    assert body == rendered.body, "the body differs from the rendered letter"
    for text in [name, PRODUCT, *texts]:
        assert text in body, f"{text[:60]!r} is not in the body verbatim"
    return parsed


# ----------------------------------------------------------------------------- every kind, every name


@pytest.mark.parametrize("kind", list(LetterKind))
def test_every_letter_kind_renders_hostile_names_and_texts_safely(kind: LetterKind) -> None:
    templates = LetterTemplates()
    for name in NAMES:
        rendered = templates.render(letter(kind, name))
        assert rendered.subject.endswith("(klacht complaint-0123456789abcdef)")
        assert "$" not in rendered.body.replace("$name ${note} $$", ""), "a placeholder was left or re-expanded"
        for how, raw in serializations(compose(rendered, name, kind.value)).items():
            try:
                parsed = assert_safe(raw, name, rendered, QUOTED[kind])
            except AssertionError as err:
                raise AssertionError(f"{kind.value} to {name[:30]!r} ({how}): {err}") from err
            assert parsed["X-Letter-Kind"] == kind.value
            assert parsed["X-Complaint-Id"] == "complaint-0123456789abcdef"
            assert parsed["Message-ID"] == "<complaint-0123456789abcdef.decision.1@level-up.nl>"


def test_templates_never_expand_what_the_texts_say() -> None:
    """A text that looks like a placeholder stays as typed: string.Template substitutes the template only."""
    for kind in LetterKind:
        body = LetterTemplates().render(letter(kind, "$name ${product} $$")).body
        assert "Geachte $name ${product} $$," in body
        assert all(text in body for text in QUOTED[kind])


# ----------------------------------------------------------------------------- header injection

#: Names intake accepts (SingleLine: no control characters, 1..200 characters, stripped). Left out:
#: runs of spaces (an address phrase shows them as one) and encoded-word syntax (see below).
_visible = st.characters(codec="utf-8", exclude_categories=("Cc", "Cs"), exclude_characters="\u2028\u2029")
intake_names = (st.text(_visible, min_size=1, max_size=200).map(str.strip)
                .filter(lambda n: n and "  " not in n and "=?" not in n))
#: Names the To header cannot carry as typed: compose leaves the display name out (the letter still goes).
UNSAFE_NAME = re.compile(r"[\x00-\x1f\x7f-\x9f\u2028\u2029]|=\?")


@FAST
@given(intake_names)
def test_any_name_intake_accepts_comes_back_exactly(name: str) -> None:
    rendered = LetterTemplates().render(letter(LetterKind.DECISION, name))
    assert_safe(flatten_message(compose(rendered, name), utf8=False), name, rendered, [TEXT], exact=False)


def assert_only_the_expected_headers(msg: EmailMessage, name: str, body: str) -> None:
    for how, raw in serializations(msg).items():
        head = re.split(rb"\r?\n\r?\n", raw, maxsplit=1)[0]
        assert head.isascii(), (how, name, head)
        assert header_names(head.decode("ascii")) == EXPECTED_HEADERS, (how, name, head)
        parsed = email.message_from_bytes(raw, policy=email.policy.default)
        assert sorted(parsed.keys()) == EXPECTED_HEADERS and not parsed.defects, (how, name, head)
        [recipient] = parsed["To"].addresses
        assert recipient.addr_spec == ADDRESS
        if UNSAFE_NAME.search(name):
            assert recipient.display_name == "" and raw_field(head.decode("ascii"), "To").strip() == ADDRESS
        assert text_of(parsed) == body


@FAST
@given(st.one_of(
    st.text(max_size=80),
    st.builds("{}{}{}".format, st.text(max_size=10),
              st.sampled_from(["\r\n", "\n", "\r", "\r\nBcc: evil@example.com", "\nX-Evil: 1", "\r\n\r\n<html>",
                               "\x00", "\x1b[31m", "\u2028", "\x85", "\u2029Bcc: x@y.nl", "=?utf-8?q?=0D=0ABcc:_x?=",
                               "=?utf-8?b?PGV2aWxAZXhhbXBsZS5jb20+LA==?=", "=??Q?=00:", "=?", "?="]),
              st.text(max_size=10)),
))
def test_compose_never_produces_extra_headers(name: str) -> None:
    """Intake rejects CR/LF in names; compose must not let any name add a header or an address either."""
    rendered = Rendered(subject="Besluit over uw klacht (klacht complaint-0123456789abcdef)", body="Tekst.\n")
    assert_only_the_expected_headers(compose(rendered, name), name, rendered.body)


@pytest.mark.parametrize("name", [
    "=?utf-8?q?Jan=0D=0ABcc:_evil@example.com?=",  # decodes to a line break and a Bcc header
    "Jan =?utf-8?b?DQpCY2M6IGV2aWxAZXhhbXBsZS5jb20=?= de Vries",  # the same, base64, inside a name
    "=?utf-8?q?=0D=0A=0D=0A<html><script>alert(1)</script>?=",  # ... or a blank line and a body
    "=?utf-8?b?PGV2aWxAZXhhbXBsZS5jb20+LA==?=",  # decodes to "<evil@example.com>,": a second address
])
def test_an_encoded_word_in_a_name_intake_accepts_cannot_add_a_header(name: str) -> None:
    """Intake takes these names (no control character in them); Python 3.11's email folder decoded the
    encoded word and wrote its CR/LF out raw. compose now leaves such a name out of the To header."""
    [complaint] = parse_complaints(json.dumps(complaint_json(
        complainant={"name": name, "organisation": "Gemeente Delft", "email": ADDRESS, "phone": "06-12345678"})))
    assert complaint.complainant.name == name
    rendered = LetterTemplates().render(letter(LetterKind.DECISION, name))
    assert_only_the_expected_headers(compose(rendered, name), name, rendered.body)
    for raw in serializations(compose(rendered, name)).values():
        assert b"evil@example.com" not in re.split(rb"\r?\n\r?\n", raw, maxsplit=1)[0]


@pytest.mark.parametrize("address", ["jösé@example.nl", "jan@bücher.example", "jan@xn--bcher-kva.example"])
def test_every_address_intake_accepts_can_be_composed_and_sent_without_smtputf8(address: str) -> None:
    try:
        [complaint] = parse_complaints(json.dumps(complaint_json(
            complainant={"name": "Jan", "organisation": "Gemeente Delft", "email": address, "phone": "06-12345678"})))
    except IntakeError as err:  # refusing such an address at intake is a fix too
        assert all(p.startswith("item 1: complainant.email: ") for p in err.problems), err.problems
        return
    to = str(complaint.complainant.email)
    assert to.isascii(), f"{to!r}: the envelope needs SMTPUTF8, which the mail server may not offer"
    rendered = LetterTemplates().render(letter(LetterKind.ACKNOWLEDGEMENT, "Jan"))
    head = raw_head(flatten_message(compose(rendered, "Jan", to=to), utf8=False))
    assert "=?" not in raw_field(head, "To"), "an encoded word inside an address"


# ----------------------------------------------------------------------------- through the real SMTP server


async def test_a_letter_through_the_smtp_server_arrives_intact(pool, settings: Settings, tmp_path: Path) -> None:
    name = NAMES[4]  # several encoded words, RTL, emoji, quotes
    complaint_id = f"complaint-{uuid.uuid4().hex[:16]}"
    submission = ComplaintSubmission.model_validate(complaint_json(
        received_at=RECEIVED.isoformat(), submitted_on="2026-04-24", product=PRODUCT, motivation=TEXT,
        complainant={"name": name, "organisation": "Gemeente Delft", "email": ADDRESS, "phone": "+31 6 12345678"}))
    await ActivityEnvironment().run(DossierActivities(pool).open_dossier,
                                    OpenDossierInput(complaint_id=complaint_id, submission=submission))

    with MailCatcher(free_port(), directory=tmp_path, keep_in_memory=False) as catcher:  # keeps the raw bytes
        mailer = MailActivities(pool, replace(settings, smtp_host=catcher.host, smtp_port=catcher.port),
                                LetterTemplates())
        sent = await ActivityEnvironment().run(mailer.send_letter, letter(LetterKind.DECISION, name, complaint_id))
    [eml] = list(tmp_path.glob("*.eml"))
    raw = eml.read_bytes()

    rendered = LetterTemplates().render(letter(LetterKind.DECISION, name, complaint_id))
    parsed = assert_safe(raw, name, rendered, QUOTED[LetterKind.DECISION])
    assert parsed["Message-ID"] == sent.message_id == message_id(complaint_id, "decision", 1, "level-up.nl")
    assert (parsed["X-Complaint-Id"], parsed["X-Letter-Kind"]) == (complaint_id, "decision")
    stored = await pool.fetchrow("SELECT status, subject, body FROM letters WHERE complaint_id = $1", complaint_id)
    assert (stored["status"], stored["subject"], stored["body"]) == ("sent", rendered.subject, text_of(parsed))

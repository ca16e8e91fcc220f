"""Reading mail without any server: every mail of the corpus (real clients' and servers' formats) is read
as a person would read it: the sender, the words without quotes and signatures, the labelled lines, the
attachments (inside winmail.dat too), and whether a machine sent it."""

from __future__ import annotations

import pytest

from infra.config import ConfigError, load_settings
from intake.mail import Unreadable, read_mail
from intake.mail_text import html_to_text, labelled_fields, new_text
from tests.mailbox_rig import corpus

LETTER = "<complaint-0123456789abcdef.acknowledgement.1@level-up.nl>"
VALUES = {"LETTER_MESSAGE_ID": LETTER, "COMPLAINT_ID": "complaint-0123456789abcdef",
          "COMPLAINANT": "jan.devries@example.nl"}


def read(name: str, **values: str):
    return read_mail(corpus(name, **{**VALUES, **values}))


@pytest.mark.parametrize(("name", "sender", "name_shown"), [
    ("webform-labelled.eml", "m.deboer@zorggroep-rivierenland.nl", "Marieke de Boer"),
    ("gmail-alternative.eml", "sanne.visser87@gmail.com", "Sanne Visser"),
    ("applemail-qp.eml", "petervandijk@icloud.com", "Peter van Dijk"),
    ("iso-8859-1-encoded-words.eml", "renee@bohm-vertalingen.nl", "Renée Böhm"),  # RFC 2047, ISO-8859-1
    ("outlook-html-winmail.eml", "M.Bakker@vanderlinden-techniek.nl", "Martijn Bakker"),
    ("forwarded-rfc822.eml", "p.smit@bouwgroep-noord.nl", "Petra Smit"),
])
def test_a_persons_mail_is_a_persons_mail(name: str, sender: str, name_shown: str) -> None:
    mail = read(name)
    assert (mail.from_address, mail.from_name) == (sender, name_shown)
    assert mail.automatic is None and mail.bounce is None
    assert mail.message_id and "{{" not in mail.message_id and mail.key == mail.message_id
    assert mail.new_text.strip() and "\x00" not in mail.text


def test_encoded_word_subject_and_latin_1_body_are_decoded() -> None:
    mail = read("iso-8859-1-encoded-words.eml")
    assert mail.subject == "Klacht over de cursus Excel voor gevorderden: slechte coördinatie"
    assert "ë" in mail.text or "é" in mail.text or "ö" in mail.text
    assert "�" not in mail.text


def test_html_only_outlook_mail_becomes_text_and_winmail_dat_gives_up_its_files() -> None:
    mail = read("outlook-html-winmail.eml")
    assert "<" not in mail.new_text and "MsoNormal" not in mail.new_text and "collega’s" in mail.new_text
    [attachment] = mail.attachments
    assert (attachment.filename, attachment.content_type) == ("factuur-2026-117.pdf", "application/pdf")
    assert attachment.data.startswith(b"%PDF-") and attachment.size == 848


def test_a_forwarded_complaint_keeps_the_attached_mail_whole_and_its_words() -> None:
    mail = read("forwarded-rfc822.eml")
    [attached] = mail.attachments
    assert attached.content_type == "message/rfc822" and attached.filename.endswith(".eml")
    inner = read_mail(attached.data)
    assert inner.from_address and inner.message_id and inner.message_id != mail.message_id
    assert "De trainer was duidelijk niet goed voorbereid" in mail.forwarded_text


def test_quoted_mail_and_signatures_are_not_the_new_text() -> None:
    mail = read("freetext-missing-fields.eml")
    assert mail.new_text.endswith("Ik wil\ndit nu graag als officiële klacht indienen.")
    assert "schreef" in mail.text and "Anouk Vermeulen" in mail.text  # what people read (admin.py message)
    gmail = read("gmail-alternative.eml")
    assert gmail.new_text.endswith("kosteloos een nieuwe datum willen kiezen.") and "Sanne Visser" in gmail.text


def test_a_website_form_gives_every_field_and_a_value_runs_until_the_next_label() -> None:
    fields, _ = labelled_fields(read("webform-labelled.eml").new_text)
    assert set(fields) == {"name", "organisation", "email", "phone", "product", "description", "motivation"}
    assert fields["product"] == "Training Agile Scrum Master" and fields["phone"] == "0344 62 18 90"
    assert "\n" in fields["description"] and "Motivering" not in fields["description"]
    assert "contactformulier" not in fields["motivation"]  # the form's footer is a signature


@pytest.mark.parametrize(("name", "why"), [
    ("exchange-out-of-office.eml", "Auto-Submitted: auto-replied"),
    ("gmail-vacation.eml", "Auto-Submitted: auto-replied"),
])
def test_out_of_office_and_vacation_replies_are_machine_mail(name: str, why: str) -> None:
    mail = read(name)
    assert mail.automatic == why and mail.bounce is None and LETTER in mail.references


def test_machine_mail_headers_each_make_a_mail_automatic() -> None:
    base = (b"From: Jan <jan@example.nl>\r\nTo: info@level-up.nl\r\nSubject: x\r\nMessage-ID: <m1@example.nl>\r\n"
            b"%s\r\nhallo\r\n")
    cases = {b"Auto-Submitted: auto-generated\r\n": "Auto-Submitted: auto-generated",
             b"Auto-Submitted: no\r\n": None, b"X-Autoreply: yes\r\n": "X-Autoreply",
             b"X-Autorespond: 1\r\n": "X-Autorespond", b"Precedence: bulk\r\n": "Precedence: bulk",
             b"Precedence: list\r\n": "Precedence: list", b"List-Id: <x.lists.example.nl>\r\n": "List-Id",
             b"X-Auto-Response-Suppress: All\r\nX-MS-Exchange-Inbox-Rules-Loop: jan@example.nl\r\n":
                 "X-Auto-Response-Suppress with X-MS-Exchange-Inbox-Rules-Loop",
             b"X-Auto-Response-Suppress: All\r\n": None,  # Outlook sets it on ordinary mail too
             b"Return-Path: <>\r\n": "empty Return-Path", b"": None}
    for extra, expected in cases.items():
        assert read_mail(base % extra).automatic == expected, extra


@pytest.mark.parametrize("name", ["postfix-dsn.eml", "qmail-bounce.eml"])
def test_bounces_name_the_letter_that_bounced(name: str) -> None:
    bounce = read(name).bounce
    assert bounce is not None and bounce.permanent and bounce.status == "5.1.1"
    assert bounce.message_ids[0] == LETTER


def test_a_mail_without_message_id_is_known_by_the_hash_of_its_bytes() -> None:
    raw = corpus("no-message-id.eml")
    mail = read_mail(raw)
    assert mail.message_id is None and mail.key == "sha256:" + mail.sha256
    assert read_mail(raw).ref == mail.ref and read_mail(raw + b"\r\n").ref != mail.ref


def test_broken_mime_without_a_sender_is_unreadable() -> None:
    with pytest.raises(Unreadable, match="no sender address"):
        read("broken-mime.eml")


def test_malformed_headers_and_unknown_charsets_do_not_stop_a_mail() -> None:
    raw = (b"From: =?x-unknown?q?Jan?= <jan@example.nl>\r\nTo: info@level-up.nl\r\n"
           b"Subject: =?utf-8?q?broken\r\nDate: not a date\r\nMessage-ID: <m2@example.nl>\r\n"
           b"Content-Type: text/plain; charset=x-no-such-charset\r\n\r\nKlacht \xe9\xe8 over de training.\r\n")
    mail = read_mail(raw)
    assert mail.from_address == "jan@example.nl" and mail.date is None
    assert mail.new_text.startswith("Klacht") and "training" in mail.new_text


def test_html_to_text_and_new_text() -> None:
    html = ('<html><head><style>p{color:red}</style></head><body><p class="MsoNormal">Goedemiddag,<o:p></o:p></p>'
            "<p>De training &eacute;&eacute;n was slecht.</p><ul><li>punt een</li></ul>"
            '<div class="gmail_quote">Op 1 dec schreef X:<blockquote>oud bericht</blockquote></div></body></html>')
    text = html_to_text(html)
    assert "color:red" not in text and "De training één was slecht." in text and "- punt een" in text
    assert new_text(text) == "Goedemiddag,\n\nDe training één was slecht.\n\n- punt een"
    assert new_text("Ja.\n\nOp di 1 dec 2026 om 14:03 schreef Level Up <\ninfo@level-up.nl>:\n> Geachte") == "Ja."
    assert new_text("Nee.\n\n-----Oorspronkelijk bericht-----\nVan: x") == "Nee."
    assert new_text("Nee.\n\nVan: Level Up <info@level-up.nl>\nVerzonden: dinsdag\nAan: jan") == "Nee."
    assert new_text("Tekst\n\nMet vriendelijke groet,\nJan") == "Tekst"


@pytest.mark.parametrize(("env", "variable"), [
    ({"MAILBOX_URL": "pop3://info@mail.example.nl/INBOX"}, "MAILBOX_URL"),
    ({"MAILBOX_URL": "imaps://mail.example.nl/INBOX"}, "MAILBOX_URL"),
    ({"MAILBOX_URL": "imaps://info:secret@mail.example.nl/INBOX"}, "MAILBOX_URL"),
    ({"MAILBOX_URL": "imaps://info@mail.example.nl:99999/INBOX"}, "MAILBOX_URL"),
    ({"MAILBOX_URL": "imaps://info@mail.example.nl/INBOX"}, "MAILBOX_PASSWORD"),
    ({"MAILBOX_URL": "imaps://info@mail.example.nl/INBOX", "MAILBOX_PASSWORD_FILE": "/no/such/file"},
     "MAILBOX_PASSWORD_FILE"),
    ({"MAILBOX_URL": "imaps://info@h/INBOX", "MAILBOX_PASSWORD": "x", "MAILBOX_POLL_SECONDS": "0"},
     "MAILBOX_POLL_SECONDS"),
    ({"MAILBOX_URL": "imaps://info@h/INBOX", "MAILBOX_PASSWORD": "x", "MAILBOX_MAX_BYTES": "25 MB"},
     "MAILBOX_MAX_BYTES"),
    ({"MAILBOX_URL": "imaps://info@h/INBOX", "MAILBOX_PASSWORD": "x", "MAILBOX_PROCESSED_FOLDER": "INBOX"},
     "MAILBOX_PROCESSED_FOLDER"),
])
def test_mailbox_settings_name_the_variable_that_is_wrong(env: dict[str, str], variable: str) -> None:
    with pytest.raises(ConfigError) as refused:
        load_settings(env)
    assert str(refused.value).startswith(variable + ":")
    assert "secret" not in str(refused.value)


def test_mailbox_settings_as_given_and_defaults() -> None:
    assert load_settings({}).mailbox is None
    mailbox = load_settings({"MAILBOX_URL": "imaps://info%40level-up.nl@outlook.office365.com/INBOX",
                             "MAILBOX_PASSWORD": "geheim"}).mailbox
    assert mailbox is not None and (mailbox.user, mailbox.host, mailbox.port, mailbox.folder) == \
        ("info@level-up.nl", "outlook.office365.com", 993, "INBOX")
    assert (mailbox.processed_folder, mailbox.quarantine_folder, mailbox.poll_seconds, mailbox.max_bytes) == \
        ("Verwerkt", "Onverwerkt", 30, 25_000_000)
    assert "geheim" not in repr(mailbox)

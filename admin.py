"""``python admin.py COMMAND ...``: the staff CLI for Level Up's complaints.

``list`` and ``show`` read from Temporal, ``audit`` reads the complaint's audit trail
from the dossier in PostgreSQL (no Temporal needed); every other command is one staff
action, sent as the workflow Update of the same name, signed with the staff member's key
(``COMPLAINTS_STAFF_KEY``, default: the file ``keygen`` writes) and recorded in the
complaint's history under the staff register's name of that key. ``keygen`` creates a
person's key and prints their entry for the staff register. ``analyse --year YYYY`` runs
the yearly analysis of that year now (the workflow the yearly schedule runs): the report is
stored and mailed to the director, and printed.

Exit codes: 0 done, 2 usage error (nothing sent), 3 refused by the procedure (the
reason is printed), 4 unknown complaint id, 5 not authorised (not signed by a registered
person whose role allows the action; the reason is printed), 1 Temporal or the dossier
unreachable or another infrastructure failure.
"""

from __future__ import annotations

import argparse
import asyncio
import getpass
import json
import re
import sys
import typing
import uuid
from dataclasses import dataclass
from datetime import date, datetime
from pathlib import Path
from typing import Any, Callable

from pydantic import ValidationError
from temporalio.client import (
    Client,
    WorkflowExecutionStatus,
    WorkflowFailureError,
    WorkflowUpdateFailedError,
    WorkflowUpdateRPCTimeoutOrCancelledError,
)
from temporalio.exceptions import ApplicationError
from temporalio.service import RPCError, RPCStatusCode

from complaints import search_attributes as sa
from complaints.calendar import AMSTERDAM, local_date
from complaints.ids import complaint_id_for
from complaints.models import (
    DECISION_OUTCOMES,
    AnnualAnalysisInput,
    ComplaintSubmission,
    ComplaintView,
    CompleteInput,
    LetterKind,
    Phase,
    RegisterInput,
    SetProductInput,
    StaffAction,
)
from complaints.products import Catalogue
from complaints.report_format import render_text
from complaints.staff import NOT_AUTHORISED, StaffRole
from dossier.audit import DossierUnavailable, read_audit, read_erasure, read_product_texts
from dossier.correspondence import attach_files, read_attachment, read_message, read_messages
from infra.cli import CliError, connect_or_fail, exit_process, fail, first_line
from infra.config import ConfigError, Settings, load_settings
from infra.signing import (
    DEFAULT_KEY_FILE,
    KeyFileError,
    SigningInterceptor,
    StaffKey,
    default_key_file,
    new_key,
    read_key,
    write_key,
)
from intake.mail import Unreadable, read_mail
from intake.start import submit_complaint
from intake.validate import IntakeError, validate_complaints
from workflows.analysis import AnnualAnalysisWorkflow
from workflows.complaint import ComplaintWorkflow

PROG = "admin.py"
ANSWER_TIMEOUT = 30.0  # seconds to wait for the complaint's worker before giving up (exit 1)
CLOSED_QUERY_TIMEOUT = 5.0  # ... for a completed complaint's, before showing what Temporal itself keeps
ERASURE_TIMEOUT = 10.0  # ... for the dossier's erasure record of a purged complaint
ANALYSIS_TIMEOUT = 120.0  # ... for the yearly analysis (compute, store, mail with its chart)
Option = tuple[str, str, dict[str, Any]]  # (flag, input model field, argparse keyword arguments)


class Refused(Exception):
    """The complaint procedure refused the action (exit 3)."""


class NotAuthorisedError(Exception):
    """The worker refused who sent the action (exit 5)."""


@dataclass(frozen=True)
class Action:
    update: Any  # the ComplaintWorkflow update method
    help: str
    options: tuple[Option, ...]
    done: Callable[[ComplaintView], str]  # the confirmation, before "; phase ..."

    @property
    def model(self) -> type[StaffAction]:
        """The update's input model, as the workflow declares it (one home for that pairing)."""
        return typing.get_type_hints(self.update)["action"]


def _date(value: str) -> date:
    try:
        return date.fromisoformat(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{value!r} is not a date (use YYYY-MM-DD)") from None


def _positive(value: str) -> int:
    if not value.isdigit() or int(value) < 1:
        raise argparse.ArgumentTypeError(f"{value!r} is not a number from 1 up")
    return int(value)


def _year(value: str) -> int:
    if not re.fullmatch(r"\d{4}", value):
        raise argparse.ArgumentTypeError(f"{value!r} is not a year (use YYYY)")
    if not 1970 <= int(value) <= datetime.now(AMSTERDAM).year:
        raise argparse.ArgumentTypeError(f"{value} is not a year to analyse (1970 to this year)")
    return int(value)


def _text(flag: str, what: str) -> Option:
    return (flag, flag.removeprefix("--"), {"required": True, "metavar": "TEXT", "help": what})


def _term(view: ComplaintView) -> str:
    return local_date(view.deadlines.resolve_by).isoformat() if view.deadlines.resolve_by else "-"


ACTIONS: dict[str, Action] = {
    "resolve-informally": Action(
        ComplaintWorkflow.resolve_informally,
        "close an informal complaint as resolved (sends the informal-resolution letter)",
        (_text("--note", "how it was resolved (quoted in the letter)"),), lambda v: "resolved informally"),
    "escalate": Action(
        ComplaintWorkflow.escalate, "move an informal complaint into the formal procedure",
        (_text("--reason", "why it is escalated"),), lambda v: f"escalated, resolve by {_term(v)}"),
    "extend": Action(
        ComplaintWorkflow.extend, "extend the resolution term (sends the extension letter)",
        (("--until", "until", {"required": True, "type": _date, "metavar": "YYYY-MM-DD",
                               "help": "the new last day of the term (after the current one)"}),
         _text("--reason", "why more time is needed (quoted in the letter)")),
        lambda v: f"extended until {_term(v)}"),
    "decide": Action(
        ComplaintWorkflow.decide, "decide a formal complaint (sends the decision letter)",
        (("--outcome", "outcome", {"required": True, "choices": [o.value for o in DECISION_OUTCOMES]}),
         _text("--motivation", "the motivation (quoted in the letter)")), lambda v: f"decided: {v.outcome}"),
    "disagree": Action(
        ComplaintWorkflow.disagree, "record that the complainant disagrees (mediation follows)",
        (_text("--note", "what the complainant disagrees with"),), lambda v: "disagreement recorded"),
    "engage-mediator": Action(
        ComplaintWorkflow.engage_mediator,
        "record the independent mediator engaged (sends the mediator-engaged letter)",
        (("--mediator", "mediator", {"required": True, "metavar": "NAME", "help": "the mediator's name"}),),
        lambda v: f"mediator engaged: {v.mediator}"),
    "verdict": Action(
        ComplaintWorkflow.verdict, "record the mediator's binding verdict (sends the verdict letter)",
        (_text("--summary", "the verdict"), ("--consequence", "consequences", {
            "action": "append", "default": [], "metavar": "TEXT", "help": "a consequence to pick up (repeatable)"})),
        lambda v: f"verdict recorded, {len(v.verdict.consequences) if v.verdict else 0} consequence(s)"),
    "consequences-picked-up": Action(
        ComplaintWorkflow.consequences_picked_up,
        "record that the verdict's consequences are picked up (closes the complaint)",
        (_text("--note", "what was done"),), lambda v: "consequences picked up"),
    "withdraw": Action(
        ComplaintWorkflow.withdraw, "record that the complainant withdrew (sends a letter)",
        (_text("--reason", "the complainant's reason (quoted in the letter)"),), lambda v: "withdrawn"),
    "measure": Action(
        ComplaintWorkflow.record_measure,
        "record a measure taken in response to the complaint. Measure texts are staff-written and must not "
        "contain personal data: they are kept after the complaint's personal data is erased",
        (_text("--text", "the measure: staff-written, no personal data (no names, addresses, e-mail, phone)"),),
        lambda v: "measure recorded"),
    "correct-contact": Action(
        ComplaintWorkflow.correct_contact,
        "correct the complainant's e-mail address (e.g. after a letter bounced); then use resend",
        (("--email", "email", {"required": True, "metavar": "ADDRESS", "help": "the correct e-mail address"}),),
        lambda v: "e-mail address corrected"),
    "complete": Action(
        ComplaintWorkflow.complete,
        "fill in minimum contents the complaint arrived without (a complaint by e-mail), or correct them",
        (("--organisation", "organisation", {"metavar": "TEXT", "help": "the complainant's organisation"}),
         ("--phone", "phone", {"metavar": "NUMBER", "help": "the complainant's phone number"}),
         ("--product", "product", {"metavar": "TEXT", "help": "the product or service complained about"}),
         ("--motivation", "motivation", {"metavar": "TEXT", "help": "the complainant's motivation"})),
        lambda v: "completed" if not v.missing else f"still missing: {', '.join(v.missing)}"),
    "set-product": Action(
        ComplaintWorkflow.set_product,
        "correct the catalogue's code the complainant's product was matched to (PRODUCT_CATALOGUE_FILE)",
        (("code", "code", {"metavar": "CODE", "help": "a code of the product catalogue, or other"}),),
        lambda v: f"product {v.product}"),
    "resend": Action(
        ComplaintWorkflow.resend,
        "send again a letter the mail server refused (to the current, corrected address)",
        (("--kind", "kind", {"required": True, "choices": [k.value for k in LetterKind],
                             "help": "the kind of the undelivered letter"}),),
        lambda v: "letter queued to be sent again"),
}


def _parser() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--json", action="store_true", help="print JSON instead of text")
    parser = argparse.ArgumentParser(prog=PROG, description="Staff actions on Level Up's complaints.")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    lister = commands.add_parser("list", parents=[common], help="list complaints",
                                 description="List complaints (with --json: one JSON object per line).")
    lister.add_argument("--phase", choices=[p.value for p in Phase])
    lister.add_argument("--incomplete", action="store_true",
                        help="only complaints still missing minimum contents (complaints by e-mail)")
    commands.add_parser("show", parents=[common], help="show one complaint").add_argument("id", metavar="ID")
    commands.add_parser("audit", parents=[common], help="the complaint's audit trail, from the dossier",
                        description="Every event, letter, alert and measure of one complaint and its erasure "
                                    "record, read from the dossier in PostgreSQL (DATABASE_URL)."
                        ).add_argument("id", metavar="ID")
    commands.add_parser("messages", parents=[common], help="the complaint's correspondence, from the dossier",
                        description="Every mail about one complaint that reached the info@ mailbox (its first "
                                    "mail, replies, automatic replies, bounces): number, date, sender, subject "
                                    "and attachments.").add_argument("id", metavar="ID")
    one = commands.add_parser("message", parents=[common], help="print one mail of the complaint",
                              description="Print mail N of the complaint (see messages): who sent it, when, its "
                                          "subject, attachments and text.")
    one.add_argument("id", metavar="ID")
    one.add_argument("number", metavar="N", type=_positive)
    attachment = commands.add_parser("attachment", parents=[common], help="write out one attachment",
                                     description="Write attachment N of the complaint (see messages) to a file: "
                                                 "by default its own name in the current folder.")
    attachment.add_argument("id", metavar="ID")
    attachment.add_argument("number", metavar="N", type=_positive)
    attachment.add_argument("--out", metavar="FILE", help="where to write it (- for standard output)")
    register = commands.add_parser(
        "register", parents=[common], help="register a complaint that came by post or in a conversation",
        description="Register a complaint that arrived on paper or was told to staff: the same checks and exit "
                    "codes as python -m starter; the scan (or notes) attached. Prints the complaint id.")
    register.add_argument("--channel", required=True, choices=["letter", "conversation"])
    register.add_argument("--route", choices=["formal", "informal"], default=None,
                          help="formal (default for a letter) or informal (default for a conversation)")
    for flag, what in [("--name", "the complainant's name"), ("--organisation", "their organisation"),
                       ("--email", "their e-mail address"), ("--phone", "their phone number"),
                       ("--product", "the product or service complained about")]:
        register.add_argument(flag, required=True, metavar="TEXT", help=what)
    register.add_argument("--submitted-on", required=True, type=_date, metavar="YYYY-MM-DD",
                          help="the date the complainant wrote or said it")
    register.add_argument("--description-file", required=True, type=Path, metavar="FILE",
                          help="the complaint's description (UTF-8 text)")
    register.add_argument("--motivation-file", required=True, type=Path, metavar="FILE",
                          help="the complainant's motivation (UTF-8 text)")
    register.add_argument("--attach", action="append", default=[], type=Path, metavar="FILE",
                          help="a file to keep with the complaint, e.g. the scan (repeatable)")
    commands.add_parser("analyse", parents=[common], help="run the yearly analysis of a year now",
                        description="Run the yearly analysis of one calendar year now: the report is stored in "
                                    "the dossier, mailed to the director and printed (with --json: the report "
                                    "as one JSON object).").add_argument("--year", type=_year, required=True,
                                                                         metavar="YYYY")
    keygen = commands.add_parser(
        "keygen", help="create your staff key and print your entry for the staff register",
        description="Create a staff member's Ed25519 key pair: the private key goes to a file only its owner "
                    "can read (never printed); the [[staff]] table printed is to be appended, as it is, to the "
                    "staff register (COMPLAINTS_STAFF_FILE) the worker reads.")
    keygen.add_argument("--name", required=True, metavar="NAME", help="your name, as the audit trail will show it")
    keygen.add_argument("--role", required=True, choices=[r.value for r in StaffRole],
                        help="officer (informal phase: resolve-informally, escalate, measure, correct-contact, "
                             "resend, register) or director (every action)")
    keygen.add_argument("--key-file", type=Path, metavar="PATH",
                        help="where to write the private key (default: $COMPLAINTS_STAFF_KEY, else "
                             f"~/.config/{DEFAULT_KEY_FILE})")
    for name, action in ACTIONS.items():
        sub = commands.add_parser(name, parents=[common], help=action.help, description=action.help + ".")
        sub.add_argument("id", metavar="ID")
        for flag, field, kwargs in action.options:
            if flag.startswith("-"):
                sub.add_argument(flag, dest=field, **kwargs)
            else:  # a positional argument is its own destination
                sub.add_argument(flag, **kwargs)
    return parser


def _build(action: Action, args: argparse.Namespace, key: StaffKey) -> StaffAction:
    """The update's input, validated here so that nothing invalid is sent (ValueError names the option);
    it is signed with ``key`` when it is sent (infra/signing.py)."""
    try:
        return action.model(by=key.name, **{field: getattr(args, field) for _, field, _ in action.options})
    except ValidationError as err:
        raise ValueError("; ".join(f"{_option(e['loc'])}: {e['msg'].removeprefix('Value error, ')}"
                                   for e in err.errors(include_input=False))) from None


def _key_file(settings: Settings) -> Path:
    return settings.staff_key or default_key_file()


def _requester(settings: Settings) -> str:
    """Who asks for a yearly analysis: the name in the staff key, else the OS user."""
    try:
        return read_key(_key_file(settings)).name
    except KeyFileError:
        try:
            return getpass.getuser()
        except Exception:  # noqa: BLE001 - no OS user name
            return "staff"


def _option(loc: tuple[Any, ...]) -> str:
    if not loc:
        return "options"
    field = str(loc[0])
    flag = {"by": "COMPLAINTS_STAFF_KEY (its name)", "consequences": "--consequence"}.get(
        field, "--" + field.replace("_", "-"))
    return flag + (f" #{loc[1] + 1}" if len(loc) > 1 and isinstance(loc[1], int) else "")


# ------------------------------------------------------------------ output


def _iso(value: datetime | None) -> str | None:
    return value.isoformat() if value else None


def _when(value: datetime | None) -> str:  # for people: local time
    return value.astimezone(AMSTERDAM).strftime("%Y-%m-%d %H:%M %Z") if value else "-"


def _json(value: Any) -> str:  # for programs: ISO-8601 with offset
    return json.dumps(value, ensure_ascii=False, default=lambda v: v.isoformat())  # datetimes, dates


def _render(v: ComplaintView) -> str:
    d = v.deadlines
    lines = [f"{v.complaint_id}  {v.product or '(product not yet known)'}"
             + (f' ("{v.product_text}")' if v.product_text else ""),
             f"  phase {v.phase}, outcome {v.outcome or '-'}; "
             f"{'formal' if v.formal_received_at else v.route} route, via {v.channel}",
             f"  received      {_when(v.received_at)}"
             + (f" (formal {_when(v.formal_received_at)})" if v.formal_received_at else ""),
             f"  acknowledged  {_when(v.acknowledged_at)} (due {_when(d.acknowledge_by)})",
             f"  resolve by    {_when(d.resolve_by)}" + (f" ({v.extensions} extension(s))" if v.extensions else ""),
             f"  consequences  {_when(d.consequences_by)}",
             f"  mediator      {v.mediator or '-'}",
             f"  closed        {_when(v.closed_at)}; personal data erased {_when(d.purge_on)}",
             f"  next          {_when(v.next_deadline)}" + (f": {v.next_deadline_for}" if v.next_deadline else "")]
    if v.missing:
        lines.append(f"  missing       {', '.join(v.missing)} (the acknowledgement asked for them; "
                     f"fill them in with: {PROG} complete {v.complaint_id})")
    for title, items in [
            ("letters", [f"{_when(x.sent_at)}  {x.kind} #{x.sequence} to {x.to or '-'} ({x.status})"
                         for x in v.letters]),
            ("alerts", [f"{_when(a.at)}  {a.kind}" for a in v.alerts]),
            ("measures", [f"{_when(m.at)}  {m.text} ({m.by or '-'})" for m in v.measures]),
            ("messages", [f"{_when(m.at)}  {m.kind} from "
                          f"{'the complainant' if m.from_complainant else 'another address'}" for m in v.messages]),
            ("history", [f"{_when(h.at)}  {h.action} by {h.by}" + (f": {h.note}" if h.note else "")
                         for h in v.history])]:
        lines += [f"{title}:"] + [f"  {item}" for item in items] if items else []
    return "\n".join(lines)


def _erased(erasure: dict[str, Any]) -> str:
    return (f"Personal data erased on {local_date(erasure['erased_at']).isoformat()} ({erasure['reason']}): "
            f"{', '.join(erasure['fields']) or 'nothing was left'}; {erasure['letters_erased']} letter(s), "
            f"{erasure['notes_erased']} history note(s), {erasure.get('mails_erased', 0)} mail(s) and "
            f"{erasure.get('attachments_erased', 0)} attachment(s) cleared")


def _render_audit(trail: dict[str, Any]) -> str:
    def note(e: dict[str, Any]) -> str:
        return ": (erased)" if e["note_erased"] else f": {e['note']}" if e["note"] else ""
    sections = [
        ("events", [f"{_when(e['at'])}  {e['action']} by {e['by']}"
                    + (f" (key {e['key_id']})" if e.get("key_id") else "") + note(e) for e in trail["events"]]),
        ("letters", [f"{_when(x['sent_at'])}  {x['kind']} #{x['sequence']} {x['status']} {x['message_id']}"
                     for x in trail["letters"]]),
        ("alerts", [f"{a['kind']} #{a['sequence']} raised {_when(a['raised_at'])}, sent {_when(a['sent_at'])}"
                    for a in trail["alerts"]]),
        ("measures", [f"{_when(m['at'])}  {m['text']} ({m['by']})" for m in trail["measures"]]),
        ("erasure", [_erased(trail["erasure"]) if trail["erasure"] else "none: the personal data is kept"])]
    lines = [f"{trail['complaint_id']}  audit trail from the dossier"]
    for title, items in sections:
        lines += [f"{title}:"] + [f"  {item}" for item in items or ["none"]]
    return "\n".join(lines)


# ------------------------------------------------------------------ commands


async def _product_texts(settings: Settings, complaint_ids: list[str]) -> dict[str, str]:
    """The complainants' words for the products, from the dossier (nothing when it cannot be read: a
    warning on stderr, and the list or view without them)."""
    try:
        async with asyncio.timeout(ERASURE_TIMEOUT):
            return await read_product_texts(settings.reading_database_url, complaint_ids)
    except (DossierUnavailable, TimeoutError) as err:
        print(f"{PROG}: warning: the complainants' words for the products are left out: "
              f"{str(err) or 'the dossier did not answer in time'}", file=sys.stderr)
        return {}


async def _list(client: Client, args: argparse.Namespace, settings: Settings) -> int:
    query = "WorkflowType = 'ComplaintWorkflow'"
    if args.phase:
        query += f" AND ComplaintPhase = '{args.phase}'"  # a Phase value (argparse choices)
    if args.incomplete:
        query += " AND ComplaintIncomplete = true"
    rows = []
    async for wf in client.list_workflows(query):
        attrs = wf.typed_search_attributes
        rows.append({"complaint_id": wf.id, "phase": attrs.get(sa.PHASE), "product": attrs.get(sa.PRODUCT),
                     "next_deadline": attrs.get(sa.NEXT_DEADLINE)})
    texts = await _product_texts(settings, [row["complaint_id"] for row in rows]) if args.json else {}
    if not args.json:
        print(f"{'COMPLAINT':<26}  {'PHASE':<12}  {'NEXT DEADLINE':<22}  PRODUCT")
    for row in rows:
        if args.json:
            text = texts.get(row["complaint_id"])
            print(_json({**row, "next_deadline": _iso(row["next_deadline"]),
                         **({"product_text": text} if text is not None else {})}))
        else:
            print(f"{row['complaint_id']:<26}  {row['phase'] or '-':<12}  {_when(row['next_deadline']):<22}  "
                  f"{(row['product'] or '-')[:60]}")
    return 0


async def _show(client: Client, args: argparse.Namespace, settings: Settings) -> int:
    handle = client.get_workflow_handle(args.id)
    desc = await handle.describe()  # NOT_FOUND for an unknown id
    running = desc.status in (None, WorkflowExecutionStatus.RUNNING)
    try:
        async with asyncio.timeout(ANSWER_TIMEOUT if running else CLOSED_QUERY_TIMEOUT):
            view = await handle.query(ComplaintWorkflow.status)
    except Exception:
        if running:
            raise
        # Completed and no worker answers: what Temporal itself keeps (search attributes, no personal data).
        attrs = desc.typed_search_attributes
        shown = {"complaint_id": args.id, "phase": attrs.get(sa.PHASE), "outcome": attrs.get(sa.OUTCOME),
                 "route": attrs.get(sa.ROUTE), "product": attrs.get(sa.PRODUCT),
                 "workflow_status": desc.status.name.lower() if desc.status else None,
                 "closed_at": _iso(desc.close_time)}
        text = "\n".join(f"{k:<16}{v or '-'}" for k, v in shown.items())
    else:
        shown, text = view.model_dump(exclude={"product_is_code"}), _render(view)
        if view.product_text is None:  # a closed complaint's run holds no personal data: the dossier's words
            words = (await _product_texts(settings, [args.id])).get(args.id) if view.phase is not Phase.PURGED \
                else None
            shown["product_text"] = words
        if shown["product_text"] is None:
            del shown["product_text"]  # erased, or never given
    if shown["phase"] == Phase.PURGED:
        erasure, line = await _erasure(settings, args.id)
        shown, text = shown | erasure, f"{text}\n{line}"
    print(_json(shown) if args.json else text)
    return 0


async def _erasure(settings: Settings, complaint_id: str) -> tuple[dict[str, Any], str]:
    """A purged complaint's erasure record, for ``show``: its JSON fields and its line of text."""
    try:
        async with asyncio.timeout(ERASURE_TIMEOUT):
            erasure = await read_erasure(settings.reading_database_url, complaint_id)
    except (DossierUnavailable, TimeoutError) as err:
        error = str(err) or "the dossier did not answer in time"
        return ({"erasure": None, "erasure_error": error},
                f"Personal data erased; the erasure record could not be read: {error}")
    return {"erasure": erasure}, _erased(erasure) if erasure else "Personal data erased; no erasure record found"


DOSSIER_COMMANDS = ("messages", "message", "attachment")


async def _dossier_command(settings: Settings, args: argparse.Namespace) -> int:
    """messages, message and attachment: the complaint's correspondence, read from the dossier."""
    try:
        async with asyncio.timeout(ANSWER_TIMEOUT):
            if args.command == "messages":
                return _print_messages(args, await read_messages(settings.reading_database_url, args.id))
            if args.command == "message":
                found = await read_message(settings.reading_database_url, args.id, args.number)
                if found is None:
                    return _fail(4, f"complaint {args.id!r} has no mail {args.number} (see: {PROG} messages ID)")
                return _print_message(args, found)
            found = await read_attachment(settings.reading_database_url, args.id, args.number)
            if found is None:
                return _fail(4, f"complaint {args.id!r} has no attachment {args.number} (see: {PROG} messages ID)")
            return _write_attachment(args, found)
    except DossierUnavailable as err:
        return _fail(1, str(err))
    except TimeoutError:
        return _fail(1, "the dossier did not answer in time")


def _print_messages(args: argparse.Namespace, mails: list[dict[str, Any]]) -> int:
    if args.json:
        for mail in mails:
            print(_json(mail))
        return 0
    if not mails:
        print(f"{args.id}: no mail about it in the dossier")
        return 0
    for mail in mails:
        sender = "(erased)" if mail["erased"] else mail["from_address"] or "-"
        subject = "" if mail["erased"] else mail["subject"] or ""
        print(f"{mail['sequence']:>3}  {_when(mail['received_at'])}  {mail['kind']:<10}  {sender}  {subject}")
        for a in mail["attachments"]:
            print(f"     attachment {a['number']}: {a['filename'] or '(erased)'} ({a['content_type']}, "
                  f"{_size(a['size'])})")
    return 0


def _print_message(args: argparse.Namespace, found: dict[str, Any]) -> int:
    raw = found.pop("raw")
    if raw is None:
        text = None
    else:
        try:
            text = read_mail(bytes(raw)).text
        except Unreadable as err:
            text = f"(the text cannot be shown: {err})"
    if args.json:
        print(_json({**found, "text": text}))
        return 0
    sender = f"{found['from_name']} <{found['from_address']}>" if found["from_name"] else found["from_address"]
    lines = [f"{args.id}  mail {found['sequence']} ({found['kind']}), received {_when(found['received_at'])}",
             f"From:     {sender or '(erased)'}", f"Subject:  {found['subject'] or ''}"]
    lines += [f"Attachment {a['number']}: {a['filename'] or '(erased)'} ({a['content_type']}, {_size(a['size'])})"
              for a in found["attachments"]]
    lines += ["", text if text is not None else "(erased with the complaint's personal data)"]
    print("\n".join(lines))
    return 0


def _write_attachment(args: argparse.Namespace, found: dict[str, Any]) -> int:
    if found["data"] is None:
        return _fail(4, f"attachment {args.number} was erased with the complaint's personal data")
    data = bytes(found["data"])
    if args.out == "-":
        sys.stdout.buffer.write(data)
        sys.stdout.flush()
        return 0
    target = Path(args.out) if args.out else Path(re.sub(r"[^\w.() -]+", "_", found["filename"] or "")
                                                  .strip(" .") or f"attachment-{args.number}")
    if args.out is None and target.exists():
        return _fail(2, f"{target} exists already: choose another name with --out FILE")
    try:
        target.write_bytes(data)
    except OSError as err:
        return _fail(2, f"--out: cannot write {target} ({err.strerror or type(err).__name__})")
    print(f"{target} ({_size(len(data))}, sha256 {found['sha256']})")
    return 0


def _size(size: int) -> str:
    return f"{size} bytes" if size < 1024 else f"{size / 1024:.0f} kB" if size < 1024 * 1024 else \
        f"{size / 1024 / 1024:.1f} MB"


def _registration(args: argparse.Namespace) -> ComplaintSubmission:
    """The complaint as staff register it, checked as the starter checks intake (IntakeError names each problem)."""
    texts: dict[str, str] = {}
    for field, path in [("description", args.description_file), ("motivation", args.motivation_file)]:
        try:
            texts[field] = path.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as err:
            why = err.strerror if isinstance(err, OSError) else "not UTF-8 text"
            raise IntakeError([f"--{field}-file: cannot read {path} ({why})"]) from None
    for path in args.attach:
        if not path.is_file():
            raise IntakeError([f"--attach: {path} is not a file"])
    route = args.route or ("formal" if args.channel == "letter" else "informal")
    item = {"channel": args.channel, "route": route, "submitted_on": args.submitted_on.isoformat(),
            "complainant": {"name": args.name, "organisation": args.organisation, "email": args.email,
                            "phone": args.phone}, "product": args.product, **texts}
    try:
        [complaint] = validate_complaints([item])
    except IntakeError as err:
        flags = {"complainant.": "--", "submitted_on": "--submitted-on", "description": "--description-file",
                 "motivation": "--motivation-file", "item 1: ": ""}
        problems = []
        for problem in err.problems:
            for old, new in flags.items():
                problem = problem.replace(old, new)
            problems.append(problem if problem.startswith("--") else "--" + problem)
        raise IntakeError(problems) from None
    return complaint


async def _register(client: Client, args: argparse.Namespace, settings: Settings,
                    complaint: ComplaintSubmission | StaffAction | None, key: StaffKey | None) -> int:
    """Start the complaint (as any intake would), then record who registered it: a signed ``register``
    action in its history (exit 5 when the worker refuses the signer; the complaint then stands without
    a staff member's name, as one an intake service started)."""
    assert isinstance(complaint, ComplaintSubmission) and key is not None
    complaint_id = complaint_id_for(complaint)
    try:
        if args.attach:
            async with asyncio.timeout(ANSWER_TIMEOUT):
                await attach_files(settings.database_url, complaint_id, args.attach)
        started = await submit_complaint(client, complaint, task_queue=settings.task_queue,
                                         catalogue=settings.product_catalogue)
    except DossierUnavailable as err:
        return _fail(1, f"{err}; nothing was registered")
    except TimeoutError:
        return _fail(1, "the dossier did not answer in time; nothing was registered")
    except Exception as err:  # noqa: BLE001 - Temporal unreachable: one line; registering again is safe
        return _fail(1, f"registering failed: {first_line(err)} (registering again is safe)")
    try:
        async with asyncio.timeout(ANSWER_TIMEOUT):
            await client.get_workflow_handle(started.complaint_id).execute_update(
                ComplaintWorkflow.register, RegisterInput(by=key.name, channel=complaint.channel))
    except WorkflowUpdateFailedError as err:
        cause = err.cause
        if isinstance(cause, ApplicationError) and cause.type == NOT_AUTHORISED:
            print(f"not authorised: {cause.message}; {started.complaint_id} was registered without your name",
                  file=sys.stderr)
            return 5
        if not (isinstance(cause, ApplicationError) and "registered already" in cause.message):
            return _fail(1, f"{started.complaint_id} was registered, but not who registered it: "
                            f"{cause.message if isinstance(cause, ApplicationError) else first_line(cause or err)}")
    except Exception as err:  # noqa: BLE001 - the worker is down: the complaint stands, the name waits
        return _fail(1, f"{started.complaint_id} was registered, but not yet who registered it "
                        f"({type(err).__name__}: {first_line(err)}): registering again adds it")
    print(_json({"complaint_id": started.complaint_id, "created": started.created}) if args.json
          else started.complaint_id)
    return 0


async def _audit(settings: Settings, args: argparse.Namespace) -> int:
    try:
        async with asyncio.timeout(ANSWER_TIMEOUT):
            trail = await read_audit(settings.reading_database_url, args.id)
    except DossierUnavailable as err:
        return _fail(1, str(err))
    except TimeoutError:
        return _fail(1, "the dossier did not answer in time")
    except Exception as err:  # noqa: BLE001 - never a traceback for users
        return _fail(1, f"{type(err).__name__}: {first_line(err)}")
    if trail is None:
        return _fail(4, f"no complaint with id {args.id!r} in the dossier")
    print(_json(trail) if args.json else _render_audit(trail))
    return 0


async def _analyse(client: Client, args: argparse.Namespace, settings: Settings) -> int:
    """Run the yearly analysis of ``--year`` now (stored and mailed like the schedule's) and print the report."""
    workflow_id = f"annual-complaint-analysis-{args.year}-manual-{uuid.uuid4().hex[:8]}"
    try:
        async with asyncio.timeout(ANALYSIS_TIMEOUT):
            result = await client.execute_workflow(
                AnnualAnalysisWorkflow.run, AnnualAnalysisInput(year=args.year, requested_by=_requester(settings)),
                id=workflow_id, task_queue=settings.task_queue)
    except TimeoutError:
        return _fail(1, f"no answer in time (is the complaints worker running?); {workflow_id} goes on "
                        "and stores and mails the report when it can")
    except WorkflowFailureError as err:
        return _fail(1, f"the analysis failed: {first_line(err.cause or err)}")
    except Exception as err:  # noqa: BLE001 - Temporal unreachable or failing: one line, never a traceback
        return _fail(1, f"{type(err).__name__}: {first_line(err)}")
    print(_json(result.report) if args.json else render_text(result.report, names=settings.product_catalogue.names))
    if result.mail_error:
        return _fail(1, f"report {result.report_id} is stored, but the mail to the director was refused: "
                        f"{result.mail_error}")
    return 0


async def _act(client: Client, args: argparse.Namespace, payload: StaffAction) -> int:
    action = ACTIONS[args.command]
    try:
        view: ComplaintView = await client.get_workflow_handle(args.id).execute_update(action.update, payload)
    except WorkflowUpdateFailedError as err:  # the update's validator (or handler) refused
        cause = err.cause
        if isinstance(cause, ApplicationError) and cause.type == NOT_AUTHORISED:
            raise NotAuthorisedError(cause.message) from None
        raise Refused(cause.message if isinstance(cause, ApplicationError) else str(cause)) from None
    except RPCError as err:
        if err.status == RPCStatusCode.NOT_FOUND and "already completed" in err.message:
            raise Refused(f"complaint {args.id} has completed: no more actions are possible") from None
        raise
    print(_json(view.model_dump()) if args.json
          else f"{view.complaint_id} {action.done(view)}; phase {view.phase}")
    return 0


async def _run(args: argparse.Namespace, settings: Settings, payload: StaffAction | ComplaintSubmission | None,
               key: StaffKey | None) -> int:
    if args.command == "audit":  # the dossier only: no Temporal needed
        return await _audit(settings, args)
    if args.command in DOSSIER_COMMANDS:
        return await _dossier_command(settings, args)
    try:
        client = await connect_or_fail(settings, [SigningInterceptor(key)] if key else [])
    except CliError as err:
        return _fail(err.code, err.message)
    if args.command == "analyse":
        return await _analyse(client, args, settings)
    if args.command == "register":
        return await _register(client, args, settings, payload, key)
    try:
        async with asyncio.timeout(ANSWER_TIMEOUT + 5):
            if args.command == "list":
                return await _list(client, args, settings)
            if args.command == "show":
                return await _show(client, args, settings)
            assert isinstance(payload, StaffAction)
            return await _act(client, args, payload)
    except Refused as err:
        print(f"refused: {err}", file=sys.stderr)
        return 3
    except NotAuthorisedError as err:
        print(f"not authorised: {err}", file=sys.stderr)
        return 5
    except RPCError as err:
        if err.status == RPCStatusCode.NOT_FOUND:
            return _fail(4, f"no complaint with id {args.id!r}")
        return _fail(1, f"Temporal at {settings.temporal_address} failed: {first_line(err)}")
    except (TimeoutError, WorkflowUpdateRPCTimeoutOrCancelledError):
        return _fail(1, "no answer in time (is the complaints worker running?)"
                     + ("; the action may still be applied: check with show" if payload else ""))
    except Exception as err:  # noqa: BLE001 - never a traceback for users
        return _fail(1, f"{type(err).__name__}: {first_line(err)}")


def _catalogued(payload: StaffAction, catalogue: Catalogue) -> StaffAction:
    """A product named by staff, checked against or matched to the catalogue (ValueError names the field)."""
    if isinstance(payload, SetProductInput) and not catalogue.knows(payload.code):
        raise ValueError(f"CODE: {payload.code!r} is not in the product catalogue "
                         f"(its codes: {', '.join(catalogue.codes)})")
    if isinstance(payload, CompleteInput) and payload.product is not None:
        return payload.model_copy(update={"product_code": catalogue.match(payload.product)})
    return payload


def _keygen(args: argparse.Namespace, settings: Settings) -> int:
    """Create the person's key (0600; never printed) and print their [[staff]] table for the register."""
    path = (args.key_file or _key_file(settings)).expanduser()
    if path.exists():
        return _fail(2, f"--key-file: {path} exists already (a key is never overwritten: choose another file)")
    if not args.name.strip():
        return _fail(2, "--name: must not be empty")
    key = new_key(args.name, StaffRole(args.role))
    try:
        write_key(key, path)
    except OSError as err:
        return _fail(2, f"--key-file: cannot write {path} ({err.strerror or type(err).__name__})")
    print(key.register_entry(), end="")
    print(f"{PROG}: key {key.key_id} written to {path} (only you can read it). Append the table above to "
          "the staff register (COMPLAINTS_STAFF_FILE) the worker reads; it applies with your next action.",
          file=sys.stderr)
    return 0


def _fail(code: int, message: str) -> int:
    return fail(PROG, code, message)


def main(argv: list[str] | None = None) -> int:
    try:
        args = _parser().parse_args(argv)
    except SystemExit as exit_:  # argparse: --help (0) or a usage error (2)
        return exit_.code if isinstance(exit_.code, int) else 2
    try:
        settings = load_settings()
    except ConfigError as err:
        return _fail(2, str(err))
    if args.command == "keygen":
        return _keygen(args, settings)
    payload: StaffAction | ComplaintSubmission | None = None
    key = None
    if args.command in ACTIONS or args.command == "register":
        try:
            key = read_key(_key_file(settings))
        except KeyFileError as err:
            return _fail(2, f"{args.command}: COMPLAINTS_STAFF_KEY: {err}")
    if args.command in ACTIONS:
        assert key is not None
        try:
            payload = _catalogued(_build(ACTIONS[args.command], args, key), settings.product_catalogue)
        except ValueError as err:
            return _fail(2, f"{args.command}: {err}")
    elif args.command == "register":
        try:
            payload = _registration(args)
        except IntakeError as err:
            for problem in err.problems:
                print(f"register: {problem}", file=sys.stderr)
            return _fail(2, "nothing was registered")
    try:
        return asyncio.run(_run(args, settings, payload, key))
    except KeyboardInterrupt:
        return _fail(130, "interrupted")


if __name__ == "__main__":
    exit_process(main())

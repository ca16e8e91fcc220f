"""``python admin.py COMMAND ...``: the staff CLI for Level Up's complaints.

``list`` and ``show`` read from Temporal, ``audit`` reads the complaint's audit trail
from the dossier in PostgreSQL (no Temporal needed); every other command is one staff
action, sent as the workflow Update of the same name and recorded in the complaint's
history with the acting staff member (``--as NAME``, default ``$COMPLAINTS_STAFF`` or
the OS user). ``analyse --year YYYY`` runs the yearly analysis of that year now (the
workflow the yearly schedule runs): the report is stored and mailed to the director, and printed.

Exit codes: 0 done, 2 usage error (nothing sent), 3 refused by the procedure (the
reason is printed), 4 unknown complaint id, 1 Temporal or the dossier unreachable or
another infrastructure failure.
"""

from __future__ import annotations

import argparse
import asyncio
import getpass
import json
import os
import re
import sys
import typing
import uuid
from dataclasses import dataclass
from datetime import date, datetime
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
from complaints.models import DECISION_OUTCOMES, AnnualAnalysisInput, ComplaintView, LetterKind, Phase, StaffAction
from complaints.report_format import render_text
from dossier.audit import DossierUnavailable, read_audit, read_erasure
from infra.cli import CliError, connect_or_fail, exit_process, fail, first_line
from infra.config import ConfigError, Settings, load_settings
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
    common.add_argument("--as", dest="staff", metavar="STAFF_NAME",
                        help="who acts (recorded in the history; default: $COMPLAINTS_STAFF or the OS user)")
    parser = argparse.ArgumentParser(prog=PROG, description="Staff actions on Level Up's complaints.")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    lister = commands.add_parser("list", parents=[common], help="list complaints",
                                 description="List complaints (with --json: one JSON object per line).")
    lister.add_argument("--phase", choices=[p.value for p in Phase])
    commands.add_parser("show", parents=[common], help="show one complaint").add_argument("id", metavar="ID")
    commands.add_parser("audit", parents=[common], help="the complaint's audit trail, from the dossier",
                        description="Every event, letter, alert and measure of one complaint and its erasure "
                                    "record, read from the dossier in PostgreSQL (DATABASE_URL)."
                        ).add_argument("id", metavar="ID")
    commands.add_parser("analyse", parents=[common], help="run the yearly analysis of a year now",
                        description="Run the yearly analysis of one calendar year now: the report is stored in "
                                    "the dossier, mailed to the director and printed (with --json: the report "
                                    "as one JSON object).").add_argument("--year", type=_year, required=True,
                                                                         metavar="YYYY")
    for name, action in ACTIONS.items():
        sub = commands.add_parser(name, parents=[common], help=action.help, description=action.help + ".")
        sub.add_argument("id", metavar="ID")
        for flag, field, kwargs in action.options:
            sub.add_argument(flag, dest=field, **kwargs)
    return parser


def _build(action: Action, args: argparse.Namespace) -> StaffAction:
    """The update's input, validated here so that nothing invalid is sent (ValueError names the option)."""
    staff = _staff(args)
    try:
        return action.model(by=staff, **{field: getattr(args, field) for _, field, _ in action.options})
    except ValidationError as err:
        raise ValueError("; ".join(f"{_option(e['loc'])}: {e['msg'].removeprefix('Value error, ')}"
                                   for e in err.errors(include_input=False))) from None


def _staff(args: argparse.Namespace) -> str:
    if args.staff is not None:
        return args.staff
    try:
        return os.environ.get("COMPLAINTS_STAFF", "").strip() or getpass.getuser()
    except Exception:  # noqa: BLE001 - no OS user name
        raise ValueError("--as: who acts is unknown: pass --as NAME or set COMPLAINTS_STAFF") from None


def _option(loc: tuple[Any, ...]) -> str:
    field = str(loc[0]) if loc else "input"
    flag = {"by": "--as", "consequences": "--consequence"}.get(field, "--" + field.replace("_", "-"))
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
    lines = [f"{v.complaint_id}  {v.product}",
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
    for title, items in [
            ("letters", [f"{_when(x.sent_at)}  {x.kind} #{x.sequence} to {x.to or '-'} ({x.status})"
                         for x in v.letters]),
            ("alerts", [f"{_when(a.at)}  {a.kind}" for a in v.alerts]),
            ("measures", [f"{_when(m.at)}  {m.text} ({m.by or '-'})" for m in v.measures]),
            ("history", [f"{_when(h.at)}  {h.action} by {h.by}" + (f": {h.note}" if h.note else "")
                         for h in v.history])]:
        lines += [f"{title}:"] + [f"  {item}" for item in items] if items else []
    return "\n".join(lines)


def _erased(erasure: dict[str, Any]) -> str:
    return (f"Personal data erased on {local_date(erasure['erased_at']).isoformat()} ({erasure['reason']}): "
            f"{', '.join(erasure['fields']) or 'nothing was left'}; {erasure['letters_erased']} letter(s) "
            f"and {erasure['notes_erased']} history note(s) cleared")


def _render_audit(trail: dict[str, Any]) -> str:
    def note(e: dict[str, Any]) -> str:
        return ": (erased)" if e["note_erased"] else f": {e['note']}" if e["note"] else ""
    sections = [
        ("events", [f"{_when(e['at'])}  {e['action']} by {e['by']}{note(e)}" for e in trail["events"]]),
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


async def _list(client: Client, args: argparse.Namespace) -> int:
    query = "WorkflowType = 'ComplaintWorkflow'"
    if args.phase:
        query += f" AND ComplaintPhase = '{args.phase}'"  # a Phase value (argparse choices)
    if not args.json:
        print(f"{'COMPLAINT':<26}  {'PHASE':<12}  {'NEXT DEADLINE':<22}  PRODUCT")
    async for wf in client.list_workflows(query):
        attrs = wf.typed_search_attributes
        row = {"complaint_id": wf.id, "phase": attrs.get(sa.PHASE), "product": attrs.get(sa.PRODUCT),
               "next_deadline": _iso(attrs.get(sa.NEXT_DEADLINE))}
        print(_json(row) if args.json else f"{wf.id:<26}  {row['phase'] or '-':<12}  "
              f"{_when(attrs.get(sa.NEXT_DEADLINE)):<22}  {(row['product'] or '-')[:60]}")
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
        shown, text = view.model_dump(), _render(view)
    if shown["phase"] == Phase.PURGED:
        erasure, line = await _erasure(settings, args.id)
        shown, text = shown | erasure, f"{text}\n{line}"
    print(_json(shown) if args.json else text)
    return 0


async def _erasure(settings: Settings, complaint_id: str) -> tuple[dict[str, Any], str]:
    """A purged complaint's erasure record, for ``show``: its JSON fields and its line of text."""
    try:
        async with asyncio.timeout(ERASURE_TIMEOUT):
            erasure = await read_erasure(settings.database_url, complaint_id)
    except (DossierUnavailable, TimeoutError) as err:
        error = str(err) or "the dossier did not answer in time"
        return ({"erasure": None, "erasure_error": error},
                f"Personal data erased; the erasure record could not be read: {error}")
    return {"erasure": erasure}, _erased(erasure) if erasure else "Personal data erased; no erasure record found"


async def _audit(settings: Settings, args: argparse.Namespace) -> int:
    try:
        async with asyncio.timeout(ANSWER_TIMEOUT):
            trail = await read_audit(settings.database_url, args.id)
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
                AnnualAnalysisWorkflow.run, AnnualAnalysisInput(year=args.year, requested_by=args.staff),
                id=workflow_id, task_queue=settings.task_queue)
    except TimeoutError:
        return _fail(1, f"no answer in time (is the complaints worker running?); {workflow_id} goes on "
                        "and stores and mails the report when it can")
    except WorkflowFailureError as err:
        return _fail(1, f"the analysis failed: {first_line(err.cause or err)}")
    except Exception as err:  # noqa: BLE001 - Temporal unreachable or failing: one line, never a traceback
        return _fail(1, f"{type(err).__name__}: {first_line(err)}")
    print(_json(result.report) if args.json else render_text(result.report))
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
        raise Refused(cause.message if isinstance(cause, ApplicationError) else str(cause)) from None
    except RPCError as err:
        if err.status == RPCStatusCode.NOT_FOUND and "already completed" in err.message:
            raise Refused(f"complaint {args.id} has completed: no more actions are possible") from None
        raise
    print(_json(view.model_dump()) if args.json
          else f"{view.complaint_id} {action.done(view)}; phase {view.phase}")
    return 0


async def _run(args: argparse.Namespace, payload: StaffAction | None) -> int:
    try:
        settings = load_settings()
    except ConfigError as err:
        return _fail(2, str(err))
    if args.command == "audit":  # the dossier only: no Temporal needed
        return await _audit(settings, args)
    try:
        client = await connect_or_fail(settings)
    except CliError as err:
        return _fail(err.code, err.message)
    if args.command == "analyse":
        return await _analyse(client, args, settings)
    try:
        async with asyncio.timeout(ANSWER_TIMEOUT + 5):
            if args.command == "list":
                return await _list(client, args)
            if args.command == "show":
                return await _show(client, args, settings)
            assert payload is not None
            return await _act(client, args, payload)
    except Refused as err:
        print(f"refused: {err}", file=sys.stderr)
        return 3
    except RPCError as err:
        if err.status == RPCStatusCode.NOT_FOUND:
            return _fail(4, f"no complaint with id {args.id!r}")
        return _fail(1, f"Temporal at {settings.temporal_address} failed: {first_line(err)}")
    except (TimeoutError, WorkflowUpdateRPCTimeoutOrCancelledError):
        return _fail(1, "no answer in time (is the complaints worker running?)"
                     + ("; the action may still be applied: check with show" if payload else ""))
    except Exception as err:  # noqa: BLE001 - never a traceback for users
        return _fail(1, f"{type(err).__name__}: {first_line(err)}")


def _fail(code: int, message: str) -> int:
    return fail(PROG, code, message)


def main(argv: list[str] | None = None) -> int:
    try:
        args = _parser().parse_args(argv)
    except SystemExit as exit_:  # argparse: --help (0) or a usage error (2)
        return exit_.code if isinstance(exit_.code, int) else 2
    payload = None
    if args.command in ACTIONS:
        try:
            payload = _build(ACTIONS[args.command], args)
        except ValueError as err:
            return _fail(2, f"{args.command}: {err}")
    elif args.command == "analyse":
        try:
            args.staff = _staff(args)
        except ValueError as err:
            return _fail(2, f"analyse: {err}")
    try:
        return asyncio.run(_run(args, payload))
    except KeyboardInterrupt:
        return _fail(130, "interrupted")


if __name__ == "__main__":
    exit_process(main())

"""admin.py, the staff CLI, run as a real subprocess against the session's dev server.

The worker runs in the test's event loop, so the CLI runs as an asyncio
subprocess (a blocking ``subprocess.run`` would freeze the worker).
"""

from __future__ import annotations

import asyncio
import json
from dataclasses import replace
from datetime import datetime, timedelta
from typing import Any, Awaitable, Callable

import pytest
from temporalio.client import WorkflowExecutionStatus

from complaints.calendar import local_date
from complaints.models import ComplaintSubmission, ComplaintView, ResolveInformallyInput
from starter import submit_complaint
from tests.conftest import free_port
from tests.cli import Result, admin_environ, run_admin
from tests.staff import KEYS, key_file
from tests.factories import complaint_json
from workflows.complaint import ComplaintWorkflow

Cli = Callable[..., Awaitable[Result]]


@pytest.fixture
def cli(env, settings) -> Cli:
    environ = admin_environ(env, settings)

    async def call(*args: str, by: str | None = None) -> Result:
        """admin.py as "tester" (their key), or as the staff member ``by``."""
        return await run_admin(environ if by is None else {**environ, "COMPLAINTS_STAFF_KEY": str(key_file(by))},
                               *args)
    return call


async def eventually(check: Callable[[], Awaitable[Any]], timeout: float = 15.0) -> Any:
    """Retry ``check`` until it returns something truthy."""
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        result = await check()
        if result or asyncio.get_running_loop().time() > deadline:
            assert result, "condition not met in time"
            return result
        await asyncio.sleep(0.2)


async def submit(client, settings, **overrides: Any) -> str:
    sub = ComplaintSubmission.model_validate(complaint_json(**overrides))
    return (await submit_complaint(client, sub, task_queue=settings.task_queue)).complaint_id


async def settled(client, complaint_id: str) -> ComplaintView:
    """Wait until the workflow has done its first work (acknowledged, or informal phase planned)."""
    handle = client.get_workflow_handle(complaint_id)

    async def ready() -> ComplaintView | None:
        view = await handle.query(ComplaintWorkflow.status)
        done = view.acknowledged_at if view.route.value == "formal" else view.next_deadline
        return view if done else None
    return await eventually(ready)


async def letter(mail, complaint_id: str, kind: str) -> None:
    async def arrived() -> bool:
        return len(mail.find(x_complaint_id=complaint_id, x_letter_kind=kind)) == 1
    await eventually(arrived)


def aware(value: str) -> datetime:
    moment = datetime.fromisoformat(value)
    assert moment.utcoffset() is not None, value
    return moment


# ------------------------------------------------------------------------ show


async def test_show_json_and_text(client, settings, worker, cli):
    cid = await submit(client, settings)
    await settled(client, cid)
    shown = (await cli("show", cid, "--json")).json()
    assert {"complaint_id", "phase", "outcome", "route", "channel", "product", "received_at", "deadlines",
            "acknowledged_at", "letters", "alerts", "measures", "history"} <= shown.keys()
    assert shown["complaint_id"] == cid
    assert (shown["phase"], shown["outcome"], shown["route"], shown["channel"]) == ("formal", None, "formal", "email")
    assert (shown["product"], shown["product_text"]) == ("training-agile", "Training Agile")
    aware(shown["received_at"])
    aware(shown["acknowledged_at"])
    deadlines = shown["deadlines"]
    assert {"acknowledge_by", "resolve_by", "consequences_by", "purge_on"} <= deadlines.keys()
    assert aware(deadlines["resolve_by"]) - aware(shown["received_at"]) == timedelta(days=28)
    assert aware(deadlines["acknowledge_by"]) > aware(shown["received_at"])
    assert deadlines["consequences_by"] is None and deadlines["purge_on"] is None
    [ack] = shown["letters"]
    assert (ack["kind"], ack["to"]) == ("acknowledgement", "jan.devries@example.nl")
    aware(ack["sent_at"])
    assert shown["alerts"] == [] and shown["measures"] == []
    assert [(h["action"], h["by"]) for h in shown["history"]] == [("submitted", "intake")]
    aware(shown["history"][0]["at"])

    text = await cli("show", cid)
    assert text.code == 0, text
    assert cid in text.out and "phase formal" in text.out and "acknowledgement" in text.out


# ------------------------------------------------------------------ formal walk


async def test_formal_complaint_through_mediation(client, settings, worker, mail, cli):
    cid = await submit(client, settings)
    await settled(client, cid)

    async def phase() -> str:
        return (await cli("show", cid, "--json")).json()["phase"]

    decided = await cli("decide", cid, "--outcome", "upheld", "--motivation", "De trainer was afwezig.",
                        by="anna")
    assert decided.code == 0, decided
    assert decided.out.strip() == f"{cid} decided: upheld; phase decided"
    assert await phase() == "decided"
    await letter(mail, cid, "decision")

    disagreed = await cli("disagree", cid, "--note", "Klant wil een volledige terugbetaling.")
    assert disagreed.code == 0, disagreed
    assert await phase() == "mediation"

    engaged = await cli("engage-mediator", cid, "--mediator", "Mr. P. Bemiddelaar")
    assert engaged.code == 0, engaged
    assert await phase() == "mediation"
    await letter(mail, cid, "mediator-engaged")

    verdict = await cli("verdict", cid, "--summary", "Gedeeltelijke terugbetaling.",
                        "--consequence", "50% terugbetalen", "--consequence", "Nieuwe trainer inplannen")
    assert verdict.code == 0, verdict
    shown = (await cli("show", cid, "--json")).json()
    assert shown["phase"] == "consequences"
    assert shown["verdict"]["consequences"] == ["50% terugbetalen", "Nieuwe trainer inplannen"]
    await letter(mail, cid, "verdict")

    picked_up = await cli("consequences-picked-up", cid, "--note", "Terugbetaald en ingepland.")
    assert picked_up.code == 0, picked_up
    shown = (await cli("show", cid, "--json")).json()
    assert (shown["phase"], shown["outcome"]) == ("closed", "mediated")
    assert aware(shown["deadlines"]["purge_on"]) > aware(shown["closed_at"])

    measured = (await cli("measure", cid, "--text", "Trainers krijgen een vervanger op afroep.", "--json")).json()
    assert measured["phase"] == "closed"
    assert [m["text"] for m in measured["measures"]] == ["Trainers krijgen een vervanger op afroep."]

    by = {h["action"]: h["by"] for h in measured["history"]}
    assert by["decide"] == "anna"  # signed with her key
    assert by["disagree"] == by["verdict"] == by["measure"] == "tester"  # COMPLAINTS_STAFF_KEY: tester's
    assert [h["action"] for h in measured["history"]] == [
        "submitted", "decide", "disagree", "engage-mediator", "verdict", "consequences-picked-up", "measure"]


# --------------------------------------------------------------- informal route


async def test_informal_complaint_refuses_decide_then_resolves(client, settings, worker, mail, cli):
    cid = await submit(client, settings, route="informal")
    await settled(client, cid)
    before = (await cli("show", cid, "--json")).json()

    refused = await cli("decide", cid, "--outcome", "rejected", "--motivation", "Geen grond.")
    assert refused.code == 3, refused
    assert refused.err.startswith("refused: ") and "phase informal" in refused.err
    assert "Traceback" not in refused.err
    after = (await cli("show", cid, "--json")).json()
    assert after == before

    resolved = await cli("resolve-informally", cid, "--note", "Excuses aangeboden en nieuwe datum gepland.")
    assert resolved.code == 0, resolved
    assert resolved.out.strip() == f"{cid} resolved informally; phase closed"
    shown = (await cli("show", cid, "--json")).json()
    assert (shown["phase"], shown["outcome"]) == ("closed", "resolved-informally")
    assert shown["history"][-1]["action"] == "resolve-informally"
    await letter(mail, cid, "informal-resolution")


# ---------------------------------------------------------------------- extend


async def test_extend_must_be_after_current_term(client, settings, worker, mail, cli):
    cid = await submit(client, settings)
    view = await settled(client, cid)
    assert view.deadlines.resolve_by is not None
    term = local_date(view.deadlines.resolve_by)
    before = (await cli("show", cid, "--json")).json()

    refused = await cli("extend", cid, "--until", term.isoformat(), "--reason", "Meer tijd nodig.")
    assert refused.code == 3, refused
    assert refused.err.startswith("refused: until:"), refused.err
    assert len(refused.err.strip().splitlines()) == 1
    assert (await cli("show", cid, "--json")).json() == before

    later = term + timedelta(days=14)
    extended = (await cli("extend", cid, "--until", later.isoformat(), "--reason", "Meer tijd nodig.",
                          "--json")).json()
    assert local_date(aware(extended["deadlines"]["resolve_by"])) == later
    assert extended["extensions"] == 1
    await letter(mail, cid, "extension")


# ---------------------------------------------------------------------- errors


async def test_unknown_id_and_usage_errors(cli):
    unknown = await cli("show", "complaint-0000000000000000", "--json")
    assert (unknown.code, unknown.out) == (4, "")
    assert "complaint-0000000000000000" in unknown.err

    unknown = await cli("withdraw", "complaint-0000000000000000", "--reason", "Ingetrokken.")
    assert unknown.code == 4, unknown

    bad_outcome = await cli("decide", "complaint-0000000000000000", "--outcome", "mediated", "--motivation", "x")
    assert bad_outcome.code == 2 and "--outcome" in bad_outcome.err

    empty = await cli("disagree", "complaint-0000000000000000", "--note", "   ")
    assert empty.code == 2 and "--note" in empty.err and "must not be empty" in empty.err
    assert "Traceback" not in empty.err + bad_outcome.err + unknown.err


async def test_unreachable_temporal_is_one_line(env, settings):
    environ = admin_environ(env, settings, TEMPORAL_ADDRESS=f"127.0.0.1:{free_port()}")
    result = await run_admin(environ, "show", "complaint-0000000000000000", "--json")
    assert result.code == 1
    assert result.out == ""
    assert len(result.err.strip().splitlines()) == 1 and "Traceback" not in result.err
    assert "cannot reach Temporal" in result.err


async def test_completed_complaint_refuses_actions(env, client, settings, worker, cli):
    cid = await submit(client, settings, route="informal")
    await settled(client, cid)
    handle = client.get_workflow_handle(cid)
    await handle.execute_update(ComplaintWorkflow.resolve_informally,
                                ResolveInformallyInput(by="tester", note="Opgelost."))
    await env.fast_forward(handle, timedelta(days=370))

    async def completed() -> bool:
        return (await handle.describe()).status is WorkflowExecutionStatus.COMPLETED
    await eventually(completed)

    refused = await cli("measure", cid, "--text", "Nieuwe werkwijze.")
    assert refused.code == 3, refused
    assert refused.err.startswith("refused: ") and "completed" in refused.err
    shown = (await cli("show", cid, "--json")).json()
    assert (shown["phase"], shown["outcome"]) == ("purged", "resolved-informally")
    assert all(h["note"] is None for h in shown["history"][:-1])  # personal data erased
    assert shown["history"][-1]["action"] == "purged"

    # The dossier's erasure record: what was erased and when, no personal data.
    erasure = shown["erasure"]
    assert {"complainant_name", "complainant_email", "description", "motivation"} <= set(erasure["fields"])
    assert (erasure["reason"], erasure["letters_erased"]) == ("retention year ended", 1)
    assert erasure["notes_erased"] >= 2  # the submission and the informal resolution
    erased_on = local_date(aware(erasure["erased_at"])).isoformat()
    assert "Jan de Vries" not in json.dumps(erasure)
    text = await cli("show", cid)
    assert text.code == 0, text
    assert f"Personal data erased on {erased_on} (retention year ended): complainant_name, " in text.out

    # The audit trail keeps who did what and when; every note is erased.
    trail = (await cli("audit", cid, "--json")).json()
    assert trail["erasure"] == erasure
    assert [(e["action"], e["by"]) for e in trail["events"]][-2:] == [
        ("resolve-informally", "tester"), ("purged", "system")]
    assert all(e["note"] is None and e["note_erased"] for e in trail["events"][:-1])
    assert [(x["kind"], x["status"]) for x in trail["letters"]] == [("informal-resolution", "sent")]
    text = await cli("audit", cid)
    assert text.code == 0, text
    assert f"resolve-informally by tester (key {KEYS['tester'].key_id}): (erased)" in text.out
    assert "Personal data erased on" in text.out

    # The dossier is down: show still shows what Temporal has, and says the record could not be read.
    down = admin_environ(env, settings, DATABASE_URL=f"postgresql://postgres@127.0.0.1:{free_port()}/complaints")
    shown = (await run_admin(down, "show", cid, "--json")).json()
    assert (shown["phase"], shown["erasure"]) == ("purged", None)
    assert "cannot reach the dossier" in shown["erasure_error"]
    text = await run_admin(down, "show", cid)
    assert text.code == 0, text
    assert "the erasure record could not be read: cannot reach the dossier" in text.out


async def test_show_completed_complaint_without_worker(client, settings, cli):
    """No worker answers the query: show prints what Temporal itself knows."""
    idle = replace(settings, task_queue=settings.task_queue + "-no-worker")
    cid = await submit(client, idle)
    await client.get_workflow_handle(cid).terminate(reason="test")
    shown = (await cli("show", cid, "--json")).json()
    assert (shown["complaint_id"], shown["phase"], shown["product"]) == (cid, "formal", "training-agile")
    assert shown["workflow_status"] == "terminated"


# ----------------------------------------------------------------------- audit


async def test_audit_lists_the_staff_actions_from_the_dossier(client, settings, worker, mail, cli):
    cid = await submit(client, settings)
    await settled(client, cid)
    decided = await cli("decide", cid, "--outcome", "rejected", "--motivation", "Geen grond.", by="anna")
    assert decided.code == 0, decided
    measured = await cli("measure", cid, "--text", "Trainers krijgen een vervanger op afroep.")
    assert measured.code == 0, measured

    async def written() -> dict[str, Any] | None:
        trail = (await cli("audit", cid, "--json")).json()
        return trail if [e["action"] for e in trail["events"]][-1:] == ["measure"] else None
    trail = await eventually(written)
    assert set(trail) == {"complaint_id", "events", "letters", "alerts", "measures", "erasure"}
    assert trail["complaint_id"] == cid and trail["erasure"] is None
    assert [(e["sequence"], e["action"], e["by"], e["key_id"]) for e in trail["events"]] == [
        (1, "submitted", "intake", None), (2, "decide", "anna", KEYS["anna"].key_id),
        (3, "measure", "tester", KEYS["tester"].key_id)]  # the verified signer's register name and key
    assert trail["events"][0]["signed_at"] is None and aware(trail["events"][1]["signed_at"])
    assert trail["events"][1]["note"] == "rejected: Geen grond." and not trail["events"][1]["note_erased"]
    aware(trail["events"][0]["at"])
    ack = trail["letters"][0]
    assert (ack["kind"], ack["sequence"], ack["status"]) == ("acknowledgement", 1, "sent")
    assert ack["message_id"] and aware(ack["sent_at"])
    assert all(set(x) == {"kind", "sequence", "sent_at", "status", "message_id"} for x in trail["letters"])
    assert [(m["by"], m["text"]) for m in trail["measures"]] == [
        ("tester", "Trainers krijgen een vervanger op afroep.")]

    text = await cli("audit", cid)
    assert text.code == 0, text
    assert f"decide by anna (key {KEYS['anna'].key_id}): rejected: Geen grond." in text.out
    assert f"measure by tester (key {KEYS['tester'].key_id})" in text.out
    assert "acknowledgement #1 sent" in text.out and "jan.devries" not in text.out


async def test_audit_needs_only_the_dossier(env, settings):
    """audit reads PostgreSQL only: Temporal down does not matter; unknown id is 4, the dossier down is 1."""
    no_temporal = admin_environ(env, settings, TEMPORAL_ADDRESS=f"127.0.0.1:{free_port()}")
    unknown = await run_admin(no_temporal, "audit", "complaint-0000000000000000", "--json")
    assert (unknown.code, unknown.out) == (4, ""), unknown
    assert "complaint-0000000000000000" in unknown.err and len(unknown.err.strip().splitlines()) == 1

    down = admin_environ(env, settings, DATABASE_URL=f"postgresql://postgres:geheim@127.0.0.1:{free_port()}/x")
    for args in (["audit", "complaint-0000000000000000"], ["audit", "complaint-0000000000000000", "--json"]):
        result = await run_admin(down, *args)
        assert (result.code, result.out) == (1, ""), result
        assert len(result.err.strip().splitlines()) == 1 and "Traceback" not in result.err
        assert "cannot reach the dossier" in result.err and "geheim" not in result.err


# ------------------------------------------------------------------------ list


async def test_list_by_phase(client, settings, worker, cli):
    formal = await submit(client, settings)
    informal = await submit(client, settings, route="informal")
    await settled(client, formal)

    async def listed() -> list[dict[str, Any]] | None:
        result = await cli("list", "--json", "--phase", "formal")
        assert result.code == 0, result
        rows = [json.loads(line) for line in result.out.splitlines()]
        return rows if any(r["complaint_id"] == formal for r in rows) else None
    rows = await eventually(listed, timeout=20)
    assert informal not in {r["complaint_id"] for r in rows}
    assert {r["phase"] for r in rows} == {"formal"}
    [mine] = [r for r in rows if r["complaint_id"] == formal]
    assert set(mine) == {"complaint_id", "phase", "product", "product_text", "next_deadline"}
    assert (mine["product"], mine["product_text"]) == ("training-agile", "Training Agile")
    assert mine["next_deadline"] is None or aware(mine["next_deadline"])

    table = await cli("list")
    assert table.code == 0, table
    assert table.out.splitlines()[0].split() == ["COMPLAINT", "PHASE", "NEXT", "DEADLINE", "PRODUCT"]

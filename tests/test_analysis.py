"""The yearly analysis against the real servers: the report's figures, the workflow, the mail, the CLI.

A year of complaints (2019, far from the complaints other tests write "now") is written
through the dossier activities the lifecycle uses, so the report reads exactly the tables
and columns the workflow fills: every route, outcome and deadline fact, one complaint
purged, complaints of 2018 and 2020 that must not count, and three measures (one that
worked, one that did not, one too recent to judge).
"""

from __future__ import annotations

import json
import uuid
from dataclasses import replace
from datetime import datetime, timedelta, timezone
from typing import Any
from zoneinfo import ZoneInfo

import asyncpg
import pytest_asyncio
from temporalio.testing import ActivityEnvironment

from activities.analysis import AnalysisActivities
from activities.dossier import DossierActivities
from complaints.calendar import local_date
from complaints.models import (
    AnnualAnalysisInput,
    AnnualAnalysisResult,
    ComplaintSubmission,
    ComplaintView,
    ComputeReportInput,
    Deadlines,
    Decision,
    DossierFacts,
    HistoryEntry,
    MailReportInput,
    Measure,
    OpenDossierInput,
    Outcome,
    Phase,
    PurgeDossierInput,
    StoreReportInput,
    Verdict,
)
from complaints.report_format import render_html, render_text
from tests.cli import REPO, cli_env, run_cli
from tests.factories import complaint_json
from workflows.analysis import AnnualAnalysisWorkflow
from worker import build_worker

AMS = ZoneInfo("Europe/Amsterdam")
YEAR = 2019
#: The schedule's run for 2019: 15 January 2020, 06:00 Amsterdam time.
AS_OF = datetime(2020, 1, 15, 6, 0, tzinfo=AMS)
TOO_EARLY = "fewer than 90 days since the measure: too early to judge"
SUFFIX = uuid.uuid4().hex[:8]
#: Catalogue codes of this module's own (the session's dossier holds other tests' complaints too).
AGILE, COACHING, SCRUM, LEAN = (f"{code}-{SUFFIX}" for code in
                                ("training-agile", "coaching", "workshop-scrum", "opleiding-lean"))
WORKED = "Trainers krijgen een vaste invaller."
DID_NOT_WORK = "Coaches bellen binnen een dag terug."
RECENT = "Workshops beginnen met een kennismaking."


def utc(month: int, day: int, hour: int = 10, minute: int = 0, year: int = YEAR) -> datetime:
    return datetime(year, month, day, hour, minute, tzinfo=timezone.utc)


async def seed(dossier: DossierActivities, *, product: str, channel: str, route: str, received: datetime,
               phase: Phase, outcome: Outcome | None = None, formal: datetime | None = None,
               ack_by: datetime | None = None, ack_at: datetime | None = None, resolve_by: datetime | None = None,
               extensions: int = 0, decided: datetime | None = None, within: bool | None = None,
               decided_as: Outcome | None = None, mediator: str | None = None, verdict: datetime | None = None,
               consequences_by: datetime | None = None, closed: datetime | None = None,
               measures: tuple[tuple[datetime, str], ...] = (), purge: bool = False) -> str:
    """One complaint as the lifecycle leaves it: opened, its state written, optionally purged.

    ``product`` is the catalogue's code; the complainant's words are made up from it."""
    complaint_id = f"complaint-{uuid.uuid4().hex[:16]}"
    submission = ComplaintSubmission.model_validate(complaint_json(
        channel=channel, route=route, product=f"de {product.replace('-', ' ')}",
        submitted_on=received.date().isoformat(), received_at=received.isoformat()))
    run = ActivityEnvironment().run
    await run(dossier.open_dossier, OpenDossierInput(complaint_id=complaint_id, submission=submission,
                                                     product_code=product))
    view = ComplaintView(
        complaint_id=complaint_id, phase=phase, outcome=outcome, route=route, channel=channel, product=product,
        product_text=submission.product, product_is_code=True,
        received_at=received, formal_received_at=formal,
        deadlines=Deadlines(acknowledge_by=ack_by, resolve_by=resolve_by, consequences_by=consequences_by,
                            purge_on=closed + timedelta(days=366) if closed else None),
        acknowledged_at=ack_at, extensions=extensions,
        decision=Decision(outcome=decided_as or outcome, motivation="Zie het besluit.", at=decided,
                          within_term=within) if decided else None,
        mediator=mediator,
        verdict=Verdict(summary="Bindend oordeel.", consequences=["Nieuwe training."], at=verdict)
        if verdict else None,
        closed_at=closed,
        measures=[Measure(at=at, by="kwaliteit", text=text) for at, text in measures],
        history=[HistoryEntry(at=received, action="submitted", by="intake")],
    )
    await run(dossier.update_dossier, DossierFacts(version=1, view=view))
    if purge:
        await run(dossier.purge_dossier, PurgeDossierInput(complaint_id=complaint_id))
    return complaint_id


def ack(formal: datetime, late: bool = False) -> dict[str, datetime]:
    """Acknowledgement deadline three days on; acknowledged five minutes after receipt, or late."""
    by = formal + timedelta(days=3)
    return {"ack_by": by, "ack_at": by + timedelta(days=1) if late else formal + timedelta(minutes=5)}


@pytest_asyncio.fixture(scope="module")
async def seeded(pool: asyncpg.Pool) -> None:
    d = DossierActivities(pool)
    # 2018: before the year, but in the 180 days before the Agile measure; its own measure is of 2018.
    await seed(d, product=AGILE, channel="email", route="informal", received=utc(12, 10, year=2018),
               phase=Phase.CLOSED, outcome=Outcome.RESOLVED_INFORMALLY, closed=utc(12, 12, year=2018),
               measures=((utc(12, 20, year=2018), "Een maatregel van 2018."),))
    # c1: 31 December 2018 23:30 UTC is 1 January 2019 00:30 in Amsterdam: counts for 2019. 5.5 days to close.
    await seed(d, product=AGILE, channel="email", route="informal", received=utc(12, 31, 23, 30, year=2018),
               phase=Phase.CLOSED, outcome=Outcome.RESOLVED_INFORMALLY, closed=utc(1, 6, 11, 30))
    # c2: resolved informally in 10.125 days, the Agile measure recorded on it, later purged.
    await seed(d, product=AGILE, channel="conversation", route="informal", received=utc(2, 10),
               phase=Phase.CLOSED, outcome=Outcome.RESOLVED_INFORMALLY, closed=utc(2, 20, 13),
               measures=((utc(3, 2), WORKED),), purge=True)
    # c3: escalated, acknowledged on time, decided within the term: upheld (36 days).
    await seed(d, product=LEAN, channel="email", route="informal", received=utc(3, 10), formal=utc(3, 15),
               **ack(utc(3, 15)), resolve_by=utc(4, 12), decided=utc(4, 1), within=True,
               phase=Phase.CLOSED, outcome=Outcome.UPHELD, closed=utc(4, 15))
    # c4: formal, acknowledged late, extended, decided outside the term: rejected (75 days).
    await seed(d, product=COACHING, channel="letter", route="formal", received=utc(4, 1), formal=utc(4, 1),
               **ack(utc(4, 1), late=True), resolve_by=utc(5, 27), extensions=1, decided=utc(6, 1),
               within=False, phase=Phase.CLOSED, outcome=Outcome.REJECTED, closed=utc(6, 15),
               measures=((utc(5, 15), DID_NOT_WORK),))
    # c5: formal, extended, decided within the extended term: upheld (45 days).
    await seed(d, product=COACHING, channel="email", route="formal", received=utc(6, 10), formal=utc(6, 10),
               **ack(utc(6, 10)), resolve_by=utc(8, 5), extensions=1, decided=utc(7, 11), within=True,
               phase=Phase.CLOSED, outcome=Outcome.UPHELD, closed=utc(7, 25))
    # c6: escalated, decided, mediated, consequences picked up on time (52 days).
    await seed(d, product=COACHING, channel="email", route="informal", received=utc(7, 20), formal=utc(7, 22),
               **ack(utc(7, 22)), resolve_by=utc(8, 19), decided=utc(8, 10), within=True,
               decided_as=Outcome.REJECTED, mediator="Mr. Bemiddelaar", verdict=utc(9, 1),
               consequences_by=utc(9, 15), phase=Phase.CLOSED, outcome=Outcome.MEDIATED, closed=utc(9, 10))
    # c7: formal, withdrawn (7 days).
    await seed(d, product=LEAN, channel="letter", route="formal", received=utc(8, 5), formal=utc(8, 5),
               **ack(utc(8, 5)), resolve_by=utc(9, 2), phase=Phase.CLOSED, outcome=Outcome.WITHDRAWN,
               closed=utc(8, 12))
    # c12: formal, decided, mediated, the consequences not yet picked up: open, consequences late.
    await seed(d, product=LEAN, channel="letter", route="formal", received=utc(9, 2), formal=utc(9, 2),
               **ack(utc(9, 2)), resolve_by=utc(9, 30), decided=utc(9, 20), within=True,
               decided_as=Outcome.UPHELD, mediator="Mr. Bemiddelaar", verdict=utc(10, 1),
               consequences_by=utc(10, 15), phase=Phase.CONSEQUENCES, outcome=Outcome.MEDIATED)
    # c9: resolved informally in 2 days.
    await seed(d, product=AGILE, channel="email", route="informal", received=utc(10, 1),
               phase=Phase.CLOSED, outcome=Outcome.RESOLVED_INFORMALLY, closed=utc(10, 3))
    # c10: still informal (open); the Scrum measure recorded on it on 1 December.
    await seed(d, product=SCRUM, channel="conversation", route="informal", received=utc(11, 20),
               phase=Phase.INFORMAL, measures=((utc(12, 1), RECENT),))
    # c8: formal, extended, not decided yet (open).
    await seed(d, product=LEAN, channel="email", route="formal", received=utc(12, 10), formal=utc(12, 10),
               **ack(utc(12, 10)), resolve_by=utc(2, 4, year=2020), extensions=1, phase=Phase.FORMAL)
    # c11: resolved informally in 3 days.
    await seed(d, product=SCRUM, channel="email", route="informal", received=utc(12, 20),
               phase=Phase.CLOSED, outcome=Outcome.RESOLVED_INFORMALLY, closed=utc(12, 23))
    # 2020: 31 December 2019 23:30 UTC is 1 January 2020 in Amsterdam: not 2019, but after the Scrum measure.
    await seed(d, product=SCRUM, channel="email", route="informal", received=utc(12, 31, 23, 30),
               phase=Phase.INFORMAL)
    await seed(d, product=COACHING, channel="email", route="formal", received=utc(2, 1, year=2020),
               formal=utc(2, 1, year=2020), **ack(utc(2, 1, year=2020)), resolve_by=utc(2, 29, year=2020),
               phase=Phase.FORMAL)


def expected(as_of_2020: bool = True) -> dict[str, Any]:
    """The 2019 report, computed by hand (see the seed above)."""
    return {
        "year": 2019,
        "total": 12,
        "by_route": {"informal": 7, "formal": 5},
        "by_channel": {"email": 7, "letter": 3, "conversation": 2},
        "by_product": {LEAN: 4, AGILE: 3, COACHING: 3, SCRUM: 2},
        "by_outcome": {"resolved-informally": 4, "upheld": 2, "rejected": 1, "mediated": 1, "withdrawn": 1,
                       "open": 3},
        "escalated_to_formal": 2,                                # c3, c6
        "acknowledged_on_time": {"count": 6, "of": 7},           # c4 late
        "decided_within_term": {"count": 4, "of": 5},            # c4 outside
        "extended": 3,                                           # c4, c5, c8
        "mediated": 2,                                           # c6, c12
        "consequences_on_time": {"count": 1, "of": 2},           # c6 on time, c12 not closed
        # 2, 3, 5.5, 7, [10.125], 36, 45, 52, 75 days
        "median_days_to_close": 10.1,
        "measures": [
            # before (3 Sep 2018 - 1 Mar 2019): 2018-12-10, c1, c2; after (3 Mar - 29 Aug): none
            {"product": AGILE, "measure": WORKED, "recorded_on": "2019-03-02", "complaints_before": 3,
             "complaints_after": 0, "effective": True},
            # before: c4; after (16 May - 11 Nov): c5, c6
            {"product": COACHING, "measure": DID_NOT_WORK, "recorded_on": "2019-05-15", "complaints_before": 1,
             "complaints_after": 2, "effective": False},
            # before: c10; after: c11 and 1 January 2020 (44 days passed by 15 January 2020)
            {"product": SCRUM, "measure": RECENT, "recorded_on": "2019-12-01", "complaints_before": 1,
             "complaints_after": 2, "effective": None, "note": TOO_EARLY} if as_of_2020 else
            # today: 180 days after; 2 complaints after vs 1 before: not effective
            {"product": SCRUM, "measure": RECENT, "recorded_on": "2019-12-01", "complaints_before": 1,
             "complaints_after": 2, "effective": False},
        ],
    }


async def test_the_report_counts_every_key_from_the_dossier(seeded, pool, settings) -> None:
    computed = await ActivityEnvironment().run(AnalysisActivities(pool, settings).compute_annual_report,
                                               ComputeReportInput(year=YEAR, as_of=AS_OF))
    assert computed.report == expected()
    assert json.loads(json.dumps(computed.report)) == expected()  # plain JSON
    assert computed.monthly == {"informal": [1, 1, 1, 0, 0, 0, 1, 0, 0, 1, 1, 1],
                                "formal": [0, 0, 0, 1, 0, 1, 0, 1, 1, 0, 0, 1]}


async def test_the_purged_complaint_counts_and_keeps_its_measure(seeded, pool) -> None:
    row = await pool.fetchrow("SELECT c.phase, c.complainant_name, m.measure FROM complaints c"
                              " JOIN measures m USING (complaint_id) WHERE m.measure = $1", WORKED)
    assert (row["phase"], row["complainant_name"], row["measure"]) == ("purged", None, WORKED)


async def test_a_year_without_complaints(pool, settings) -> None:
    computed = await ActivityEnvironment().run(AnalysisActivities(pool, settings).compute_annual_report,
                                               ComputeReportInput(year=1999, as_of=AS_OF))
    assert computed.report == {
        "year": 1999, "total": 0, "by_route": {}, "by_channel": {}, "by_product": {}, "by_outcome": {},
        "escalated_to_formal": 0, "acknowledged_on_time": {"count": 0, "of": 0},
        "decided_within_term": {"count": 0, "of": 0}, "extended": 0, "mediated": 0,
        "consequences_on_time": {"count": 0, "of": 0}, "median_days_to_close": None, "measures": []}
    assert "no measures recorded" in render_text(computed.report)


def test_the_readable_table_says_when_it_is_too_early() -> None:
    text = render_text(expected())
    assert text.startswith("Complaints 2019: the yearly analysis")
    assert "acknowledged within 3 working days" in text and "6 of 7 (86%)" in text
    assert "too early to judge" in text and AGILE in text and WORKED in text
    html = render_html(expected(), chart_cid="chart@x", lang="nl")
    assert 'src="cid:chart@x"' in html and "te vroeg om te beoordelen" in html
    # The readable forms print the catalogue's names; the JSON keeps the codes.
    names = {AGILE: "Training Agile", SCRUM: "Workshop Scrum"}
    named = render_text(expected(), names=names)
    assert "Training Agile" in named and "Workshop Scrum" in named and AGILE not in named and SCRUM not in named
    assert COACHING in named  # a code the catalogue does not name is printed as it is
    assert "Training Agile" in render_html(expected(), lang="nl", names=names)


async def run_analysis(client, settings, year: int | None = YEAR) -> AnnualAnalysisResult:
    return await client.execute_workflow(
        AnnualAnalysisWorkflow.run, AnnualAnalysisInput(year=year, requested_by="tester"),
        id=f"annual-complaint-analysis-test-{uuid.uuid4().hex[:8]}", task_queue=settings.task_queue)


def parts(msg) -> dict[str, Any]:
    return {part.get_content_type(): part for part in msg.walk()}


async def test_the_workflow_stores_every_run_and_mails_the_director_once(
        seeded, client, worker, pool, settings, mail) -> None:
    first = await run_analysis(client, settings)
    second = await run_analysis(client, settings)
    assert first.report == second.report == expected(as_of_2020=False)
    assert first.report_id != second.report_id and first.mail_error is None

    rows = await pool.fetch("SELECT * FROM annual_reports WHERE id = ANY($1::bigint[]) ORDER BY id",
                            [first.report_id, second.report_id])
    assert len(rows) == 2
    for row, result in zip(rows, (first, second)):
        assert (row["year"], row["run_at"], row["requested_by"]) == (2019, result.run_at, "tester")
        assert json.loads(row["report"]) == result.report
        assert row["sent_at"] == result.mailed_at and row["message_id"] == result.message_id

        [msg] = mail.find(x_report_run_id=str(result.report_id))
        assert msg["X-Report-Year"] == "2019"
        assert msg["To"].addresses[0].addr_spec == settings.director_email
        assert msg["Message-ID"] == result.message_id == f"<annual-report.2019.{result.report_id}@level-up.nl>"
        found = parts(msg)
        assert {"text/plain", "text/html", "image/png"} <= set(found)
        assert AGILE in found["text/plain"].get_content() and "ja" in found["text/plain"].get_content()
        png = found["image/png"]
        assert png.get_content().startswith(b"\x89PNG\r\n\x1a\n")
        assert f'src="cid:{png["Content-ID"].strip("<>")}"' in found["text/html"].get_content()

    # A retried mail activity finds the report sent: no second message.
    again = await ActivityEnvironment().run(AnalysisActivities(pool, settings).mail_annual_report,
                                            MailReportInput(report_id=first.report_id))
    assert again.message_id == first.message_id and again.sent_at == first.mailed_at
    assert len(mail.find(x_report_run_id=str(first.report_id))) == 1


async def test_a_retried_store_keeps_one_row(seeded, pool, settings) -> None:
    store = AnalysisActivities(pool, settings).store_annual_report
    stored = StoreReportInput(year=YEAR, run_at=AS_OF, report=expected(), monthly={}, workflow_id="wf",
                              workflow_run_id=str(uuid.uuid4()))
    one, two = [await ActivityEnvironment().run(store, stored) for _ in range(2)]
    assert one == two
    assert await pool.fetchval("SELECT count(*) FROM annual_reports WHERE workflow_run_id = $1",
                               stored.workflow_run_id) == 1


async def test_a_refused_director_address_leaves_the_report_stored_and_unsent(
        seeded, client, pool, settings, mail) -> None:
    refused = replace(settings, director_email=f"gone-{uuid.uuid4().hex[:8]}@level-up.nl")
    mail.refused_recipients.add(refused.director_email)
    try:
        async with build_worker(client, refused, pool):
            result = await run_analysis(client, refused)
    finally:
        mail.refused_recipients.discard(refused.director_email)
    assert result.report == expected(as_of_2020=False) and result.mailed_at is None
    assert "refused" in (result.mail_error or "")
    row = await pool.fetchrow("SELECT sent_at FROM annual_reports WHERE id = $1", result.report_id)
    assert row["sent_at"] is None  # stored, and recorded as not sent
    assert not [m for m in mail.find(x_report_run_id=str(result.report_id))]


async def test_on_the_schedule_the_workflow_analyses_the_previous_year(client, worker, settings) -> None:
    result = await run_analysis(client, settings, year=None)
    assert result.year == result.report["year"] == local_date(result.run_at).year - 1


async def test_admin_analyse_prints_the_report(seeded, env, worker, settings) -> None:
    environ = cli_env(settings, env.client.service_client.config.target_host, staff="tester")
    printed = await run_cli(str(REPO / "admin.py"), "analyse", "--year", "2019", "--json", env=environ, timeout=150)
    assert printed.json() == expected(as_of_2020=False), printed.err
    table = await run_cli(str(REPO / "admin.py"), "analyse", "--year", "2019", env=environ, timeout=150)
    assert table.code == 0, table.err
    assert "Complaints 2019: the yearly analysis" in table.out and COACHING in table.out

    for bad in ("abc", "19", "9999"):
        refused = await run_cli(str(REPO / "admin.py"), "analyse", "--year", bad, env=environ)
        assert refused.code == 2 and "--year" in refused.err and "Traceback" not in refused.err, refused


async def test_a_measure_counts_the_complaints_of_its_own_day_by_moment(pool, settings) -> None:
    """Received at 09:00, measure at 14:00, received at 16:00 on the same day: one before, one after."""
    d = DossierActivities(pool)
    product = f"training-dagmoment-{uuid.uuid4().hex[:6]}"
    await seed(d, product=product, channel="email", route="informal", received=utc(3, 4, 9, year=2021),
               phase=Phase.INFORMAL, measures=((utc(3, 4, 14, year=2021), "Maatregel van de dag."),))
    await seed(d, product=product, channel="email", route="informal", received=utc(3, 4, 16, year=2021),
               phase=Phase.INFORMAL)
    computed = await ActivityEnvironment().run(
        AnalysisActivities(pool, settings).compute_annual_report,
        ComputeReportInput(year=2021, as_of=utc(12, 31, 12, year=2021)))
    [measure] = [m for m in computed.report["measures"] if m["product"] == product]
    assert (measure["complaints_before"], measure["complaints_after"]) == (1, 1)

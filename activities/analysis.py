"""The yearly analysis: the report computed in PostgreSQL, kept in the dossier, mailed to the director.

The report is computed with aggregate SQL over the anonymous columns only (route,
channel, product, phase, outcome, dates and deadline facts, measures), so purged
complaints count like any other. Three queries run in one read-only snapshot:
the year's totals, the counts per route/channel/product/outcome/month (one pass,
``GROUPING SETS``) and the measures with their before/after windows (two index
range counts per measure on ``(product, received_at)``).

Every run is kept (``annual_reports``: nothing is replaced) and mailed once, as letters are
(activities/outbox.py: a row already marked sent is never sent again); the Message-ID is derived
from the report id.
"""

from __future__ import annotations

import asyncio
import io
import json
import threading
from datetime import datetime, timezone
from email.message import EmailMessage
from email.utils import format_datetime, make_msgid
from typing import Any

import asyncpg
from temporalio import activity
from temporalio.exceptions import ApplicationError

from activities.outbox import Outbox, Row, SmtpSender, message_id
from activities.names import COMPUTE_ANNUAL_REPORT, MAIL_ANNUAL_REPORT, STORE_ANNUAL_REPORT
from complaints.calendar import AMSTERDAM
from complaints.models import (
    ComputedReport,
    ComputeReportInput,
    MailReportInput,
    ReportMailed,
    StoredReport,
    StoreReportInput,
)
from complaints.report_format import render_html, render_text
from complaints.terms import JUDGE_MEASURE_AFTER, MEASURE_WINDOW
from infra.config import Settings

#: Days before a measure compared with (at most) as many days after it.
WINDOW_DAYS = MEASURE_WINDOW.days
#: A measure is judged only once this many days after it have passed.
JUDGE_AFTER_DAYS = JUDGE_MEASURE_AFTER.days
TOO_EARLY = f"fewer than {JUDGE_MEASURE_AFTER.en()} since the measure: too early to judge"
ROUTES = ("informal", "formal")

# ------------------------------------------------------------------ the report's SQL
# $1, $2: the year's bounds (local midnight, Europe/Amsterdam) on received_at.

TOTALS_SQL = """
SELECT count(*) AS total,
       count(*) FILTER (WHERE route = 'informal' AND formal_received_at IS NOT NULL) AS escalated,
       count(*) FILTER (WHERE formal_received_at IS NOT NULL) AS formal,
       count(*) FILTER (WHERE formal_received_at IS NOT NULL AND acknowledged_at <= acknowledge_by)
           AS acknowledged_on_time,
       count(*) FILTER (WHERE decided_at IS NOT NULL) AS decided,
       count(*) FILTER (WHERE decided_at IS NOT NULL AND decided_within_term) AS decided_within_term,
       count(*) FILTER (WHERE extensions > 0) AS extended,
       count(*) FILTER (WHERE mediated) AS mediated,
       count(*) FILTER (WHERE consequences_by IS NOT NULL) AS consequences,
       count(*) FILTER (WHERE consequences_by IS NOT NULL AND closed_at <= consequences_by)
           AS consequences_on_time,
       round(percentile_cont(0.5) WITHIN GROUP (ORDER BY extract(epoch FROM closed_at - received_at) / 86400)
             FILTER (WHERE phase IN ('closed', 'purged') AND closed_at IS NOT NULL)::numeric, 1)
           AS median_days_to_close
FROM complaints
WHERE received_at >= $1 AND received_at < $2
"""

GROUPS_SQL = """
SELECT grouping(route) = 0 AND grouping(month) = 1 AS by_route,
       grouping(channel) = 0 AS by_channel,
       grouping(product) = 0 AS by_product,
       grouping(outcome) = 0 AS by_outcome,
       grouping(month) = 0 AS by_month,
       route, channel, product, outcome, month, count(*) AS n
FROM (SELECT route, channel, coalesce(product, 'unknown') AS product,
             CASE WHEN phase IN ('closed', 'purged') THEN coalesce(outcome, 'unknown') ELSE 'open' END AS outcome,
             extract(month FROM received_at AT TIME ZONE 'Europe/Amsterdam')::int AS month
      FROM complaints
      WHERE received_at >= $1 AND received_at < $2) AS year
GROUP BY GROUPING SETS ((route), (channel), (product), (outcome), (month, route))
"""

# $3: the run's moment, $4: the window (days). Counted by moment: a complaint received before the
# measure's moment counts before it (at most the window before), one received at or after it counts
# after (the whole days passed until the run, at most the window), also on the measure's own day.
MEASURES_SQL = """
WITH m AS (
    SELECT complaint_id, sequence, product, measure, recorded_at,
           (recorded_at AT TIME ZONE 'Europe/Amsterdam')::date AS recorded_on
    FROM measures
    WHERE recorded_at >= $1 AND recorded_at < $2 AND recorded_at <= $3
), w AS (
    SELECT m.*, greatest(0, least($4::int, floor(extract(epoch FROM $3 - recorded_at) / 86400)::int)) AS days_after
    FROM m
)
SELECT w.product, w.measure, w.recorded_on, w.days_after,
       (SELECT count(*) FROM complaints c
        WHERE c.product = w.product
          AND c.received_at >= w.recorded_at - make_interval(days => $4::int)
          AND c.received_at < w.recorded_at) AS before,
       (SELECT count(*) FROM complaints c
        WHERE c.product = w.product
          AND c.received_at >= w.recorded_at
          AND c.received_at < w.recorded_at + make_interval(days => w.days_after)) AS after
FROM w
ORDER BY w.recorded_at, w.complaint_id, w.sequence
"""


def year_bounds(year: int) -> tuple[datetime, datetime]:
    """1 January 00:00 of ``year`` and of the next year, Europe/Amsterdam."""
    return datetime(year, 1, 1, tzinfo=AMSTERDAM), datetime(year + 1, 1, 1, tzinfo=AMSTERDAM)


def report_queries(year: int, as_of: datetime) -> list[tuple[str, tuple[Any, ...]]]:
    """The report's three queries with their arguments (also run by ``bench/analysis.py``)."""
    start, end = year_bounds(year)
    return [(TOTALS_SQL, (start, end)), (GROUPS_SQL, (start, end)),
            (MEASURES_SQL, (start, end, as_of, WINDOW_DAYS))]


async def compute_report(conn: asyncpg.Connection, year: int, as_of: datetime) -> ComputedReport:
    """The report of ``year`` as of ``as_of``, from one consistent snapshot of the dossier."""
    (totals_sql, totals_args), (groups_sql, groups_args), (measures_sql, measures_args) = \
        report_queries(year, as_of)
    async with conn.transaction(isolation="repeatable_read", readonly=True):
        t = await conn.fetchrow(totals_sql, *totals_args)
        groups = await conn.fetch(groups_sql, *groups_args)
        measures = await conn.fetch(measures_sql, *measures_args)

    def counts(flag: str, column: str) -> dict[str, int]:
        found = [(r[column], r["n"]) for r in groups if r[flag]]
        return dict(sorted(found, key=lambda kv: (-kv[1], kv[0])))

    monthly = {route: [0] * 12 for route in ROUTES}
    for r in groups:
        if r["by_month"]:
            monthly.setdefault(r["route"], [0] * 12)[r["month"] - 1] = r["n"]
    median = t["median_days_to_close"]
    report = {
        "year": year,
        "total": t["total"],
        "by_route": counts("by_route", "route"),
        "by_channel": counts("by_channel", "channel"),
        "by_product": counts("by_product", "product"),
        "by_outcome": counts("by_outcome", "outcome"),
        "escalated_to_formal": t["escalated"],
        "acknowledged_on_time": {"count": t["acknowledged_on_time"], "of": t["formal"]},
        "decided_within_term": {"count": t["decided_within_term"], "of": t["decided"]},
        "extended": t["extended"],
        "mediated": t["mediated"],
        "consequences_on_time": {"count": t["consequences_on_time"], "of": t["consequences"]},
        "median_days_to_close": float(median) if median is not None else None,
        "measures": [_measure(m) for m in measures],
    }
    return ComputedReport(report=report, monthly=monthly)


def _measure(row: asyncpg.Record) -> dict[str, Any]:
    before, after, days = row["before"], row["after"], row["days_after"]
    judged = days >= JUDGE_AFTER_DAYS
    found: dict[str, Any] = {
        "product": row["product"],
        "measure": row["measure"],
        "recorded_on": row["recorded_on"].isoformat(),
        "complaints_before": before,
        "complaints_after": after,
        # after / days < before / window, in integers
        "effective": after * WINDOW_DAYS < before * days if judged else None,
    }
    if not judged:
        found["note"] = TOO_EARLY
    return found


# ------------------------------------------------------------------ the chart

_CHART_LOCK = threading.Lock()  # matplotlib's text rendering keeps shared caches
_MONTHS = ("jan", "feb", "mrt", "apr", "mei", "jun", "jul", "aug", "sep", "okt", "nov", "dec")


def render_chart(report: dict[str, Any], monthly: dict[str, list[int]]) -> bytes:
    """A PNG: complaints per month by route (stacked bars) and deadline adherence (on time vs late)."""
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib.figure import Figure

    with _CHART_LOCK:
        fig = Figure(figsize=(11, 4.2), dpi=100, layout="constrained")
        months, deadlines = fig.subplots(1, 2, width_ratios=[3, 2])
        bottom = [0] * 12
        colours = {"informal": "#7fb3d5", "formal": "#1f618d"}
        for route in sorted(monthly, key=lambda r: (r not in ROUTES, ROUTES.index(r) if r in ROUTES else 0, r)):
            values = monthly[route]
            months.bar(range(12), values, bottom=bottom, label=route, color=colours.get(route))
            bottom = [b + v for b, v in zip(bottom, values)]
        months.set_xticks(range(12), _MONTHS)
        months.set_title(f"Klachten per maand {report['year']}, naar route")
        months.yaxis.get_major_locator().set_params(integer=True)
        months.legend(frameon=False)

        kinds = [("ontvangst tijdig bevestigd", report["acknowledged_on_time"]),
                 ("binnen termijn besloten", report["decided_within_term"]),
                 ("consequenties tijdig", report["consequences_on_time"])]
        labels = [k for k, _ in kinds]
        on_time = [v["count"] for _, v in kinds]
        late = [v["of"] - v["count"] for _, v in kinds]
        deadlines.barh(labels, on_time, color="#27ae60", label="op tijd")
        deadlines.barh(labels, late, left=on_time, color="#c0392b", label="te laat")
        for y, (_, v) in enumerate(kinds):
            deadlines.text(v["of"], y, f"  {v['count']}/{v['of']}", va="center")
        deadlines.invert_yaxis()
        deadlines.set_xlim(0, max([v["of"] for _, v in kinds] + [1]) * 1.25)
        deadlines.xaxis.get_major_locator().set_params(integer=True)
        deadlines.set_title("Termijnen")
        deadlines.legend(frameon=False, loc="lower right")
        buffer = io.BytesIO()
        fig.savefig(buffer, format="png")
    return buffer.getvalue()


# ------------------------------------------------------------------ the activities


class AnalysisActivities:
    def __init__(self, pool: asyncpg.Pool, settings: Settings) -> None:
        self._pool = pool
        self._settings = settings
        self._sender = SmtpSender(settings)
        self._outbox = Outbox(pool, self._sender)

    @activity.defn(name=COMPUTE_ANNUAL_REPORT)
    async def compute_annual_report(self, input: ComputeReportInput) -> ComputedReport:
        async with self._pool.acquire() as conn:
            return await compute_report(conn, input.year, input.as_of)

    @activity.defn(name=STORE_ANNUAL_REPORT)
    async def store_annual_report(self, input: StoreReportInput) -> StoredReport:
        """Keep the run's report; a retry finds the row its first attempt wrote."""
        async with self._pool.acquire() as conn, conn.transaction():
            await conn.execute(
                """
                INSERT INTO annual_reports (year, run_at, report, monthly, requested_by, workflow_id,
                                            workflow_run_id)
                VALUES ($1, $2, $3::jsonb, $4::jsonb, $5, $6, $7) ON CONFLICT (workflow_run_id) DO NOTHING
                """,
                input.year, input.run_at, json.dumps(input.report), json.dumps(input.monthly),
                input.requested_by, input.workflow_id, input.workflow_run_id,
            )
            row = await conn.fetchrow("SELECT id, run_at FROM annual_reports WHERE workflow_run_id = $1",
                                      input.workflow_run_id)
        return StoredReport(report_id=row["id"], run_at=row["run_at"])

    @activity.defn(name=MAIL_ANNUAL_REPORT)
    async def mail_annual_report(self, input: MailReportInput) -> ReportMailed:
        """Mail the stored report to the director, once: HTML with the chart, and plain text."""
        to = self._settings.director_email
        row = await self._pool.fetchrow(
            "SELECT id, year, run_at, report, monthly, requested_by, message_id, sent_at"
            " FROM annual_reports WHERE id = $1", input.report_id)
        if row is None:
            raise ApplicationError(f"no annual report with id {input.report_id}", non_retryable=True)
        msg_id = row["message_id"] or message_id("annual-report", str(row["year"]), row["id"], self._sender.domain)
        if row["sent_at"] is not None:
            activity.logger.info("annual report %s already mailed; not sending again", row["id"])
            return ReportMailed(message_id=msg_id, sent_at=row["sent_at"], to=to)
        await self._pool.execute("UPDATE annual_reports SET message_id = $2 WHERE id = $1", row["id"], msg_id)
        report, monthly = json.loads(row["report"]), json.loads(row["monthly"])
        chart = await asyncio.to_thread(render_chart, report, monthly)
        sent_at, _ = await self._outbox.send(Row("annual_reports", "id = $1", (row["id"],)), lambda: self.compose(
            report, chart, msg_id=msg_id, report_id=row["id"], run_at=row["run_at"], requested_by=row["requested_by"]))
        return ReportMailed(message_id=msg_id, sent_at=sent_at, to=to)

    def compose(self, report: dict[str, Any], chart: bytes, *, msg_id: str, report_id: int, run_at: datetime,
                requested_by: str | None) -> EmailMessage:
        year = report["year"]
        run = (f"Opgesteld op {run_at.astimezone(AMSTERDAM):%Y-%m-%d %H:%M} "
               + (f"op verzoek van {requested_by}" if requested_by else "volgens het jaarschema")
               + f" (rapport {report_id}).")
        msg = EmailMessage()
        msg["From"] = self._settings.mail_from
        msg["To"] = self._settings.director_email
        msg["Subject"] = f"Jaaranalyse klachten {year}"
        msg["Message-ID"] = msg_id
        msg["Date"] = format_datetime(datetime.now(timezone.utc))
        msg["X-Report-Year"] = str(year)
        msg["X-Report-Run-Id"] = str(report_id)
        names = self._settings.product_catalogue.names
        msg.set_content(render_text(report, lang="nl", names=names) + "\n\n" + run + "\n")
        cid = make_msgid(f"chart.{report_id}", self._sender.domain)
        msg.add_alternative(render_html(report, chart_cid=cid[1:-1], footer=run, lang="nl", names=names),
                            subtype="html")
        msg.get_payload()[1].add_related(chart, maintype="image", subtype="png", cid=cid,
                                         filename=f"klachten-{year}.png")
        return msg


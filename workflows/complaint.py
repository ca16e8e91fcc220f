"""One complaint, from receipt to the erasure of its personal data a year after closing.

The run method reads like Level Up's complaint procedure: the informal phase,
the formal procedure with its acknowledgement and resolution terms, the decision,
mediation with its binding verdict, the consequences, and the year in the dossier.
Staff act through updates; each is validated against the phase before it touches
history. Letters, alerts and the dossier are written by two background loops so
that a slow mail server never blocks staff or the procedure's timers.
"""

from __future__ import annotations

import asyncio
from datetime import datetime, timedelta
from typing import Awaitable, Callable

from temporalio import workflow
from temporalio.common import RetryPolicy
from temporalio.exceptions import ActivityError, ApplicationError

with workflow.unsafe.imports_passed_through():
    from activities.names import (
        OPEN_DOSSIER,
        PLAN_DEADLINE,
        PURGE_DOSSIER,
        SEND_ALERT,
        SEND_LETTER,
        UPDATE_DOSSIER,
    )
    from complaints import metrics
    from complaints import search_attributes as sa
    from complaints.calendar import end_of_day, local_date
    from complaints.models import (
        OPEN_PHASES,
        AlertKind,
        AlertRecord,
        AlertSent,
        ComplaintResult,
        ComplaintView,
        ComplaintWorkflowInput,
        ConsequencesPickedUpInput,
        CorrectContactInput,
        DecideInput,
        Decision,
        DisagreeInput,
        DossierFacts,
        EngageMediatorInput,
        EscalateInput,
        ExtendInput,
        HistoryEntry,
        LetterKind,
        LetterRecord,
        LetterSent,
        Measure,
        MeasureInput,
        OpenDossierInput,
        Outcome,
        Phase,
        PlanDeadlinesInput,
        PlannedDeadline,
        PurgeDossierInput,
        PurgeResult,
        Recipient,
        ResendInput,
        ResolveInformallyInput,
        RetainedComplaint,
        Route,
        SendAlertInput,
        SendLetterInput,
        Verdict,
        VerdictInput,
        WithdrawInput,
    )

# The procedure's terms.
ACKNOWLEDGE_WITHIN_WORKING_DAYS = 3
INFORMAL_STALLED_AFTER_WORKING_DAYS = 10
MEDIATOR_WITHIN_WORKING_DAYS = 10
MEDIATION_STALLED_PATCH = "mediation-stalled-alert"
RESOLVE_WITHIN = timedelta(days=28)
DUE_SOON_BEFORE = timedelta(days=7)
AUTO_EXTEND_BEFORE = timedelta(hours=24)
DEFAULT_EXTENSION = timedelta(days=28)
OBJECTION_WINDOW = timedelta(days=14)
CONSEQUENCES_WITHIN = timedelta(days=14)
RETENTION_YEARS = 1

# Letters and alerts retry until the mail server takes them (an outage must not lose
# a letter); the dossier likewise retries until PostgreSQL is back.
MAIL_RETRY = RetryPolicy(initial_interval=timedelta(seconds=2), backoff_coefficient=2.0,
                         maximum_interval=timedelta(minutes=5))
DOSSIER_RETRY = RetryPolicy(initial_interval=timedelta(seconds=1), backoff_coefficient=2.0,
                            maximum_interval=timedelta(minutes=1))
ACTIVITY_TIMEOUT = timedelta(seconds=30)  # a killed worker's activities are retried after this

# What a resent letter repeats of the refused one (the recipient and terms are current).
_LETTER_CONTENT = {"outcome", "motivation", "note", "mediator", "consequences"}

# Refusal types, so that callers can tell "not now" from "not like that".
NOT_ALLOWED = "ActionNotAllowed"
INVALID = "InvalidArgument"


class _Deadline:
    """A moment the procedure cares about in the current phase, and what happens then.

    A plain class, not a dataclass: the sandbox executes this module for every workflow it
    runs, and a dataclass generates (compiles) its methods each time (BENCHMARKS.md).
    """

    __slots__ = ("at", "summary", "fire")

    def __init__(self, at: datetime, summary: str, fire: Callable[[], Awaitable[None] | None]) -> None:
        self.at, self.summary, self.fire = at, summary, fire


def _add_years(moment: datetime, years: int) -> datetime:
    try:
        return moment.replace(year=moment.year + years)
    except ValueError:  # 29 February
        return moment.replace(year=moment.year + years, day=28)


@workflow.defn
class ComplaintWorkflow:
    @workflow.init
    def __init__(self, input: ComplaintWorkflowInput) -> None:
        self._version = 0
        self._mail: list[SendLetterInput | SendAlertInput] = []
        self._mail_busy = False
        self._dossier_synced = -1
        self._dossier_busy = False
        self._published: tuple[object, ...] = ()
        #: Letters the mail server refused permanently, by kind, until staff resend them.
        self._undelivered: dict[LetterKind, SendLetterInput] = {}
        self._submission = input.submission
        if input.retained is not None:  # the retention run of a closed complaint
            self._view = input.retained.view
            self._version = self._dossier_synced = input.retained.dossier_version
            return
        s = input.submission
        assert s is not None and s.received_at is not None
        self._view = ComplaintView(
            complaint_id=workflow.info().workflow_id,
            phase=Phase.INFORMAL,
            route=s.route,
            channel=s.channel,
            product=s.product,
            received_at=s.received_at,
        )
        self._record("submitted", "intake", f"via {s.channel.value}, route {s.route.value}")
        if s.route is Route.FORMAL:
            self._enter_formal(s.received_at)

    # ================================================================ the procedure

    @workflow.run
    async def run(self, input: ComplaintWorkflowInput) -> ComplaintResult:
        if input.retained is None:
            route = self._view.route.value
            workflow.logger.info("complaint received", extra={"route": route})
            self._count(metrics.OPENED, route=route)
            await self._dossier_activity(
                OPEN_DOSSIER,
                OpenDossierInput(complaint_id=self._view.complaint_id, submission=input.submission),
                "open the dossier",
            )
        background = [asyncio.create_task(self._post_room()), asyncio.create_task(self._archivist())]
        try:
            if input.retained is None:
                await self._handle_complaint()
                await self._continue_without_personal_data()
            return await self._keep_in_dossier()
        finally:
            for task in background:
                task.cancel()

    async def _handle_complaint(self) -> None:
        """From receipt to closing: each phase runs until a staff action or a deadline ends it."""
        while self._view.phase in OPEN_PHASES:
            self._publish()
            phase = self._view.phase
            workflow.logger.info("phase %s", phase.value, extra={"phase": phase.value})
            if phase is Phase.INFORMAL:
                await self._informal_phase()
            elif phase is Phase.FORMAL:
                await self._formal_phase()
            elif phase is Phase.DECIDED:
                await self._decided_phase()
            elif phase is Phase.MEDIATION:
                await self._mediation_phase()
            elif phase is Phase.CONSEQUENCES:
                await self._consequences_phase()

    async def _informal_phase(self) -> None:
        """A manager or external officer talks it through; staff resolve or escalate."""
        d = self._view.deadlines
        if d.informal_stalled_at is None:
            planned = await self._plan(self._view.received_at, INFORMAL_STALLED_AFTER_WORKING_DAYS,
                                       "plan the informal phase (10 working days)")
            d.informal_stalled_at = planned.at
            self._view.calendar = planned.calendar
            self._changed()
        await self._follow_deadlines(Phase.INFORMAL, self._informal_deadlines)

    def _informal_deadlines(self) -> list[_Deadline]:
        d = self._view.deadlines
        if d.informal_stalled_at is None or self._alerted(AlertKind.INFORMAL_STALLED):
            return []
        return [_Deadline(d.informal_stalled_at, "informal phase stalled (10 working days)",
                          lambda: self._alert(AlertKind.INFORMAL_STALLED, d.informal_stalled_at))]

    async def _formal_phase(self) -> None:
        """Acknowledge within 3 working days; resolve within 4 weeks or announce the new term."""
        d = self._view.deadlines
        assert self._view.formal_received_at is not None
        if d.acknowledge_by is None:
            planned = await self._plan(self._view.formal_received_at, ACKNOWLEDGE_WITHIN_WORKING_DAYS,
                                       "plan the acknowledgement deadline (3 working days)")
            d.acknowledge_by = planned.at
            self._view.calendar = planned.calendar
            self._letter(LetterKind.ACKNOWLEDGEMENT)
            self._changed()
        await self._follow_deadlines(Phase.FORMAL, self._formal_deadlines)

    def _formal_deadlines(self) -> list[_Deadline]:
        v, d = self._view, self._view.deadlines
        assert d.resolve_by is not None and d.acknowledge_by is not None
        found = []
        if v.acknowledged_at is None and not self._alerted(AlertKind.ACKNOWLEDGEMENT_OVERDUE):
            found.append(_Deadline(d.acknowledge_by, "acknowledgement deadline (3 working days)",
                                   lambda: self._alert(AlertKind.ACKNOWLEDGEMENT_OVERDUE, d.acknowledge_by)))
        if not self._alerted(AlertKind.RESOLUTION_DUE_SOON, d.resolve_by):
            found.append(_Deadline(d.resolve_by - DUE_SOON_BEFORE, "resolution term ends in 7 days",
                                   lambda: self._alert(AlertKind.RESOLUTION_DUE_SOON, d.resolve_by)))
        if v.extensions == 0:
            found.append(_Deadline(d.resolve_by - AUTO_EXTEND_BEFORE,
                                   "24 hours before the resolution term: announce the new term",
                                   self._extend_by_default))
        elif not self._alerted(AlertKind.RESOLUTION_OVERDUE, d.resolve_by):
            found.append(_Deadline(d.resolve_by, "extended resolution term",
                                   lambda: self._alert(AlertKind.RESOLUTION_OVERDUE, d.resolve_by)))
        return found

    def _extend_by_default(self) -> None:
        d = self._view.deadlines
        assert d.resolve_by is not None
        self._alert(AlertKind.RESOLUTION_OVERDUE, d.resolve_by)
        self._extend(d.resolve_by + DEFAULT_EXTENSION, "system",
                     "no decision 24 hours before the term: extended by the default term of 4 weeks")

    async def _decided_phase(self) -> None:
        """The decision is sent; within 14 days staff may record that there is no agreement."""
        d = self._view.deadlines
        await self._follow_deadlines(Phase.DECIDED, lambda: [
            _Deadline(d.objection_by, "14 days for the complainant to disagree", self._close_after_decision)
        ] if d.objection_by else [])

    def _close_after_decision(self) -> None:
        self._record("closed", "system", "no disagreement within 14 days of the decision")
        self._close(self._view.decision.outcome if self._view.decision else None)

    async def _mediation_phase(self) -> None:
        """An independent mediator is engaged; the verdict is binding."""
        d = self._view.deadlines
        # Added after complaints were already running: those in mediation before this change
        # replay without the new timer (tests/test_replay.py shows the guard is needed).
        if workflow.patched(MEDIATION_STALLED_PATCH) and d.mediator_by is None:
            planned = await self._plan(workflow.now(), MEDIATOR_WITHIN_WORKING_DAYS,
                                       "plan engaging the mediator (10 working days)")
            d.mediator_by = planned.at
            self._changed()
        await self._follow_deadlines(Phase.MEDIATION, lambda: [] if (
            d.mediator_by is None or self._view.mediator is not None
            or self._alerted(AlertKind.MEDIATION_STALLED)
        ) else [_Deadline(d.mediator_by, "independent mediator to be engaged (10 working days)",
                          lambda: self._alert(AlertKind.MEDIATION_STALLED, d.mediator_by))])

    async def _consequences_phase(self) -> None:
        """Level Up picks up the verdict's consequences within 2 weeks."""
        d = self._view.deadlines
        await self._follow_deadlines(Phase.CONSEQUENCES, lambda: [] if (
            d.consequences_by is None or self._alerted(AlertKind.CONSEQUENCES_OVERDUE)
        ) else [_Deadline(d.consequences_by, "consequences to be picked up (2 weeks)",
                          lambda: self._alert(AlertKind.CONSEQUENCES_OVERDUE, d.consequences_by))])

    async def _continue_without_personal_data(self) -> None:
        """Closed: the year in the dossier is waited out by a new run that holds no personal data.

        Letters, alerts and dossier writes are finished first, so nothing is lost on the way.
        """
        self._publish()
        outcome = self._view.outcome.value if self._view.outcome else None
        workflow.logger.info("closed; kept in the dossier for a year",
                             extra={"phase": Phase.CLOSED.value, "outcome": outcome})
        await workflow.wait_condition(lambda: workflow.all_handlers_finished() and self._idle())
        workflow.continue_as_new(ComplaintWorkflowInput(retained=RetainedComplaint(
            view=anonymous(self._view), dossier_version=self._version)))

    async def _keep_in_dossier(self) -> ComplaintResult:
        """Closed: kept one year in the dossier, then the personal data is erased."""
        d = self._view.deadlines
        assert d.purge_on is not None
        self._publish()
        await self._follow_deadlines(Phase.CLOSED, lambda: [
            _Deadline(d.purge_on, "retention ends (1 year): erase personal data", lambda: None)
        ] if workflow.now() < d.purge_on else [], until_due=True)
        await workflow.wait_condition(lambda: workflow.all_handlers_finished() and self._idle())
        purged = await self._dossier_activity(
            PURGE_DOSSIER, PurgeDossierInput(complaint_id=self._view.complaint_id),
            "erase personal data from the dossier", result_type=PurgeResult)
        self._view = anonymous(self._view)
        self._view.phase = Phase.PURGED
        self._view.next_deadline = self._view.next_deadline_for = None  # nothing is due any more
        self._record("purged", "system", "personal data erased after the retention year")
        self._publish()
        workflow.logger.info("personal data erased; the complaint is complete", extra={"phase": Phase.PURGED.value})
        return ComplaintResult(complaint_id=self._view.complaint_id, outcome=self._view.outcome,
                               closed_at=self._view.closed_at, purged_at=purged.purged_at)

    # ============================================================ staff actions

    @workflow.update
    def resolve_informally(self, action: ResolveInformallyInput) -> ComplaintView:
        self._record("resolve-informally", action.by, action.note)
        self._letter(LetterKind.INFORMAL_RESOLUTION, note=action.note)
        self._close(Outcome.RESOLVED_INFORMALLY)
        return self._snapshot()

    @resolve_informally.validator
    def _check_resolve_informally(self, action: ResolveInformallyInput) -> None:
        self._require_phase("resolve-informally", Phase.INFORMAL)

    @workflow.update
    def escalate(self, action: EscalateInput) -> ComplaintView:
        self._record("escalate", action.by, action.reason)
        self._enter_formal(workflow.now())
        self._changed()
        return self._snapshot()

    @escalate.validator
    def _check_escalate(self, action: EscalateInput) -> None:
        self._require_phase("escalate", Phase.INFORMAL)

    @workflow.update
    def extend(self, action: ExtendInput) -> ComplaintView:
        self._extend(end_of_day(action.until), action.by, action.reason)
        return self._snapshot()

    @extend.validator
    def _check_extend(self, action: ExtendInput) -> None:
        self._require_phase("extend", Phase.FORMAL)
        term = self._view.deadlines.resolve_by
        assert term is not None
        if action.until <= local_date(term):
            raise ApplicationError(
                f"until: {action.until.isoformat()} is not after the current term "
                f"({local_date(term).isoformat()})", type=INVALID)

    @workflow.update
    def decide(self, action: DecideInput) -> ComplaintView:
        now = workflow.now()
        d = self._view.deadlines
        within = d.resolve_by is None or now <= d.resolve_by
        self._view.decision = Decision(outcome=action.outcome, motivation=action.motivation,
                                       at=now, within_term=within)
        if within and not self._alerted(AlertKind.RESOLUTION_OVERDUE):
            self._deadline(metrics.RESOLUTION, metrics.MET)
        self._view.outcome = action.outcome
        self._record("decide", action.by, f"{action.outcome.value}: {action.motivation}")
        self._letter(LetterKind.DECISION, outcome=action.outcome, motivation=action.motivation)
        d.objection_by = now + OBJECTION_WINDOW
        self._view.phase = Phase.DECIDED
        self._changed()
        return self._snapshot()

    @decide.validator
    def _check_decide(self, action: DecideInput) -> None:
        self._require_phase("decide", Phase.FORMAL)

    @workflow.update
    def disagree(self, action: DisagreeInput) -> ComplaintView:
        self._record("disagree", action.by, action.note)
        self._view.phase = Phase.MEDIATION
        self._changed()
        return self._snapshot()

    @disagree.validator
    def _check_disagree(self, action: DisagreeInput) -> None:
        self._require_phase("disagree", Phase.FORMAL, Phase.DECIDED)

    @workflow.update
    def engage_mediator(self, action: EngageMediatorInput) -> ComplaintView:
        self._view.mediator = action.mediator
        self._record("engage-mediator", action.by, action.mediator)
        self._letter(LetterKind.MEDIATOR_ENGAGED, mediator=action.mediator)
        self._changed()
        return self._snapshot()

    @engage_mediator.validator
    def _check_engage_mediator(self, action: EngageMediatorInput) -> None:
        self._require_phase("engage-mediator", Phase.MEDIATION)
        if self._view.mediator is not None:
            raise ApplicationError(f"a mediator is already engaged ({self._view.mediator})", type=NOT_ALLOWED)

    @workflow.update
    def verdict(self, action: VerdictInput) -> ComplaintView:
        now = workflow.now()
        self._view.verdict = Verdict(summary=action.summary, consequences=action.consequences, at=now)
        self._view.outcome = Outcome.MEDIATED
        self._record("verdict", action.by, action.summary)
        if action.consequences:
            self._view.deadlines.consequences_by = now + CONSEQUENCES_WITHIN
            self._view.phase = Phase.CONSEQUENCES
        self._letter(LetterKind.VERDICT, note=action.summary, consequences=action.consequences)
        if not action.consequences:
            self._close(Outcome.MEDIATED)
        self._changed()
        return self._snapshot()

    @verdict.validator
    def _check_verdict(self, action: VerdictInput) -> None:
        self._require_phase("verdict", Phase.MEDIATION)
        if self._view.mediator is None:
            raise ApplicationError("engage the independent mediator first (engage-mediator)", type=NOT_ALLOWED)

    @workflow.update
    def consequences_picked_up(self, action: ConsequencesPickedUpInput) -> ComplaintView:
        by = self._view.deadlines.consequences_by
        if by is not None and workflow.now() <= by and not self._alerted(AlertKind.CONSEQUENCES_OVERDUE):
            self._deadline(metrics.CONSEQUENCES, metrics.MET)
        self._record("consequences-picked-up", action.by, action.note)
        self._close(Outcome.MEDIATED)
        return self._snapshot()

    @consequences_picked_up.validator
    def _check_consequences_picked_up(self, action: ConsequencesPickedUpInput) -> None:
        self._require_phase("consequences-picked-up", Phase.CONSEQUENCES)

    @workflow.update
    def withdraw(self, action: WithdrawInput) -> ComplaintView:
        self._record("withdraw", action.by, action.reason)
        self._letter(LetterKind.WITHDRAWAL, note=action.reason)
        self._close(Outcome.WITHDRAWN)
        return self._snapshot()

    @withdraw.validator
    def _check_withdraw(self, action: WithdrawInput) -> None:
        self._require_phase("withdraw", *OPEN_PHASES)

    @workflow.update
    def record_measure(self, action: MeasureInput) -> ComplaintView:
        self._view.measures.append(Measure(at=workflow.now(), by=action.by, text=action.text))
        self._record("measure", action.by, action.text)
        self._changed()
        return self._snapshot()

    @record_measure.validator
    def _check_record_measure(self, action: MeasureInput) -> None:
        self._require_phase("measure", *OPEN_PHASES, Phase.CLOSED)
        purge_on = self._view.deadlines.purge_on
        if purge_on is not None and workflow.now() >= purge_on:
            # The personal data is being erased: nothing may be written to the dossier after it.
            raise ApplicationError("measure is not possible: the retention year has ended", type=NOT_ALLOWED)

    @workflow.update
    def correct_contact(self, action: CorrectContactInput) -> ComplaintView:
        assert self._submission is not None
        complainant = self._submission.complainant.model_copy(update={"email": action.email})
        self._submission = self._submission.model_copy(update={"complainant": complainant})
        self._record("correct-contact", action.by, "e-mail address corrected")
        self._changed()
        return self._snapshot()

    @correct_contact.validator
    def _check_correct_contact(self, action: CorrectContactInput) -> None:
        self._require_phase("correct-contact", *OPEN_PHASES)

    @workflow.update
    def resend(self, action: ResendInput) -> ComplaintView:
        failed = self._undelivered.pop(action.kind)
        self._record("resend", action.by, f"{action.kind.value} letter sent again")
        self._letter(action.kind, **failed.model_dump(include=_LETTER_CONTENT))
        self._changed()
        return self._snapshot()

    @resend.validator
    def _check_resend(self, action: ResendInput) -> None:
        self._require_phase("resend", *OPEN_PHASES)
        if action.kind not in self._undelivered:
            raise ApplicationError(f"kind: no undelivered {action.kind.value} letter to send again",
                                   type=NOT_ALLOWED)

    @workflow.query
    def status(self) -> ComplaintView:
        return self._snapshot()

    # ====================================================== state transitions

    def _require_phase(self, action: str, *phases: Phase) -> None:
        if self._view.phase not in phases:
            allowed = ", ".join(p.value for p in phases)
            raise ApplicationError(
                f"{action} is not possible in phase {self._view.phase.value} (only in: {allowed})",
                type=NOT_ALLOWED)

    def _enter_formal(self, receipt: datetime) -> None:
        """Formal receipt: deadlines count from here (the escalation time for escalated complaints)."""
        self._view.phase = Phase.FORMAL
        self._view.formal_received_at = receipt
        self._view.deadlines.resolve_by = receipt + RESOLVE_WITHIN

    def _extend(self, until: datetime, by: str, reason: str) -> None:
        self._view.deadlines.resolve_by = until
        self._view.extensions += 1
        self._record("extend", by, f"new term {until.isoformat()}: {reason}")
        self._letter(LetterKind.EXTENSION, note=reason)
        self._changed()

    def _close(self, outcome: Outcome | None) -> None:
        now = workflow.now()
        self._view.outcome = outcome
        self._view.phase = Phase.CLOSED
        self._view.closed_at = now
        self._view.deadlines.purge_on = _add_years(now, RETENTION_YEARS)
        self._changed()

    def _record(self, action: str, by: str, note: str | None = None) -> None:
        self._view.history.append(HistoryEntry(at=workflow.now(), action=action, by=by, note=note))

    def _changed(self) -> None:
        self._version += 1

    def _alerted(self, kind: AlertKind, about: datetime | None = None) -> bool:
        """Whether ``kind`` was raised (about the deadline ``about``, when given)."""
        return any(a.kind is kind and (about is None or a.deadline == about) for a in self._view.alerts)


    # ============================================================== deadlines

    async def _follow_deadlines(self, phase: Phase, deadlines: Callable[[], list[_Deadline]],
                                until_due: bool = False) -> None:
        """Stay in ``phase`` until it changes, firing each deadline as it falls due.

        Staff actions interrupt the wait; the next deadline is then recomputed from
        the new state, so every deadline is one durable timer at its stored moment.
        With ``until_due`` the wait ends once the last deadline has fired.
        """
        while self._view.phase is phase:
            upcoming = sorted(deadlines(), key=lambda d: d.at)
            self._set_next(upcoming[0] if upcoming else None)
            if not upcoming:
                if until_due:
                    return
                version = self._version
                await workflow.wait_condition(lambda: self._version != version or self._view.phase is not phase)
                continue
            nxt = upcoming[0]
            if await self._wait_for_change(nxt.at, nxt.summary):
                continue
            fired = nxt.fire()
            if fired is not None:
                await fired
            self._changed()
            if until_due and len(upcoming) == 1:
                return

    async def _wait_for_change(self, at: datetime, summary: str) -> bool:
        """Wait until ``at``; True if the state changed first, False once ``at`` has come."""
        delay = at - workflow.now()
        if delay <= timedelta(0):
            return False
        version = self._version
        try:
            await workflow.wait_condition(lambda: self._version != version, timeout=delay,
                                          timeout_summary=summary)
            return True
        except asyncio.TimeoutError:
            return False

    def _set_next(self, deadline: _Deadline | None) -> None:
        v = self._view
        at = deadline.at if deadline else None
        for_ = deadline.summary if deadline else None
        v.next_deadline, v.next_deadline_for = at, for_
        if self._published != (v.phase, at, open_alerts(v)):
            self._publish()

    def _publish(self) -> None:
        """Keep the search attributes and the Web UI's current details in step with the state."""
        v = self._view
        alerts = open_alerts(v)
        self._published = (v.phase, v.next_deadline, alerts)
        workflow.upsert_search_attributes([
            sa.PHASE.value_set(v.phase.value),
            sa.ROUTE.value_set("formal" if v.formal_received_at else "informal"),
            sa.PRODUCT.value_set(v.product),
            sa.OUTCOME.value_set(v.outcome.value) if v.outcome else sa.OUTCOME.value_unset(),
            sa.NEXT_DEADLINE.value_set(v.next_deadline) if v.next_deadline else sa.NEXT_DEADLINE.value_unset(),
            sa.OPEN_ALERTS.value_set(alerts) if alerts else sa.OPEN_ALERTS.value_unset(),
        ])
        last = v.history[-1]
        details = [f"**Phase:** {v.phase.value}"]
        if v.outcome:
            details.append(f"**Outcome:** {v.outcome.value}")
        if v.next_deadline:
            details.append(f"**Next deadline:** {v.next_deadline.isoformat()} ({v.next_deadline_for})")
        details.append(f"**Last action:** {last.action} by {last.by} at {last.at.isoformat()}")
        workflow.set_current_details("\n\n".join(details))

    # ======================================================== letters and alerts

    def _letter(self, kind: LetterKind, **fields: object) -> None:
        s, d = self._submission, self._view.deadlines
        sequence = 1 + sum(1 for m in self._mail if isinstance(m, SendLetterInput) and m.kind is kind) + sum(
            1 for letter in self._view.letters if letter.kind is kind)
        self._mail.append(SendLetterInput(
            complaint_id=self._view.complaint_id, kind=kind, sequence=sequence,
            recipient=Recipient(name=s.complainant.name, email=str(s.complainant.email)),
            product=s.product, submitted_on=s.submitted_on,
            received_at=self._view.formal_received_at or self._view.received_at,
            acknowledge_by=d.acknowledge_by, resolve_by=d.resolve_by,
            consequences_by=d.consequences_by, **fields))  # type: ignore[arg-type]

    def _alert(self, kind: AlertKind, deadline: datetime | None = None) -> None:
        sequence = 1 + sum(1 for a in self._view.alerts if a.kind is kind)
        workflow.logger.info("alert raised", extra={"kind": kind.value, "sequence": sequence})
        self._count(metrics.ALERTS, kind=kind.value)
        missed = _MISSED_BY_ALERT.get(kind)
        if missed is not None and sequence == 1:  # a second resolution-overdue is the same miss
            self._deadline(missed, metrics.MISSED)
        self._view.alerts.append(AlertRecord(kind=kind, at=workflow.now(), sequence=sequence, deadline=deadline))
        self._record(f"alert {kind.value}", "system")
        self._mail.append(SendAlertInput(
            complaint_id=self._view.complaint_id, kind=kind, sequence=sequence,
            product=self._view.product, phase=self._view.phase, deadline=deadline))
        self._changed()

    async def _post_room(self) -> None:
        """Send letters and alerts in order, each exactly once, retrying until delivered."""
        while True:
            await workflow.wait_condition(lambda: bool(self._mail))
            self._mail_busy = True
            item = self._mail[0]
            if isinstance(item, SendLetterInput):
                await self._send_letter(item)
            else:
                await self._send_alert(item)
            self._mail.pop(0)
            self._mail_busy = False

    async def _send_letter(self, letter: SendLetterInput) -> None:
        record = LetterRecord(kind=letter.kind, sequence=letter.sequence,
                              to=letter.recipient.email, status="sent")
        try:
            sent = await workflow.execute_activity(
                SEND_LETTER, letter, result_type=LetterSent,
                start_to_close_timeout=ACTIVITY_TIMEOUT, retry_policy=MAIL_RETRY,
                summary=f"send {letter.kind.value} letter")
        except ActivityError as err:
            record.status, record.error = "failed", _reason(err)
            self._undelivered[letter.kind] = letter
            self._view.letters.append(record)
            self._record(f"letter {letter.kind.value} undeliverable", "system", record.error)
            self._alert(AlertKind.LETTER_UNDELIVERABLE)
            return
        record.sent_at, record.message_id = sent.sent_at, sent.message_id
        self._view.letters.append(record)
        if letter.kind is LetterKind.ACKNOWLEDGEMENT and self._view.acknowledged_at is None:
            self._view.acknowledged_at = sent.sent_at
            by = self._view.deadlines.acknowledge_by
            if by is not None and not self._alerted(AlertKind.ACKNOWLEDGEMENT_OVERDUE):
                # Late but before the overdue alert fired (the worker was down): still a miss.
                self._deadline(metrics.ACKNOWLEDGEMENT, metrics.MET if sent.sent_at <= by else metrics.MISSED)
        self._changed()

    async def _send_alert(self, alert: SendAlertInput) -> None:
        try:
            await workflow.execute_activity(
                SEND_ALERT, alert, result_type=AlertSent,
                start_to_close_timeout=ACTIVITY_TIMEOUT, retry_policy=MAIL_RETRY,
                summary=f"alert the director: {alert.kind.value}")
        except ActivityError as err:
            # The director's address is refused: the alert stays recorded in the complaint.
            self._record(f"alert {alert.kind.value} undeliverable", "system", _reason(err))

    # ================================================================ dossier

    async def _archivist(self) -> None:
        """Write the workflow's state to the PostgreSQL dossier after every change."""
        while True:
            await workflow.wait_condition(lambda: self._dossier_synced != self._version)
            self._dossier_busy = True
            version = self._version
            await self._dossier_activity(
                UPDATE_DOSSIER,
                DossierFacts(version=version, view=self._snapshot(),
                             includes_personal_data=self._submission is not None,
                             contact_email=str(self._submission.complainant.email) if self._submission else None),
                "update the dossier")
            self._dossier_synced = version
            self._dossier_busy = False

    def _idle(self) -> bool:
        return not self._mail and not self._mail_busy and self._dossier_synced == self._version \
            and not self._dossier_busy

    async def _dossier_activity(self, name: str, arg: object, summary: str,
                                result_type: type | None = None):  # noqa: ANN202
        return await workflow.execute_activity(
            name, arg, result_type=result_type, start_to_close_timeout=ACTIVITY_TIMEOUT,
            retry_policy=DOSSIER_RETRY, summary=summary)

    async def _plan(self, received_at: datetime, working_days: int, summary: str) -> PlannedDeadline:
        return await workflow.execute_local_activity(
            PLAN_DEADLINE, PlanDeadlinesInput(received_at=received_at, working_days=working_days),
            result_type=PlannedDeadline, start_to_close_timeout=timedelta(seconds=10),
            summary=summary)

    def _snapshot(self) -> ComplaintView:
        return self._view.model_copy(deep=True)

    # ================================================================ metrics

    def _count(self, name: str, **attributes: str) -> None:
        """Count in the product metrics (nothing is counted while replaying; nothing enters history)."""
        metrics.count(workflow.metric_meter(), name, **attributes)

    def _deadline(self, which: str, result: str) -> None:
        workflow.logger.info("deadline %s %s", which, result, extra={"deadline": which, "result": result})
        metrics.deadline(workflow.metric_meter(), which, result)


#: The alerts that mean a deadline of the procedure was missed (complaints/metrics.py).
_MISSED_BY_ALERT = {
    AlertKind.ACKNOWLEDGEMENT_OVERDUE: metrics.ACKNOWLEDGEMENT,
    AlertKind.RESOLUTION_OVERDUE: metrics.RESOLUTION,
    AlertKind.CONSEQUENCES_OVERDUE: metrics.CONSEQUENCES,
}


def _reason(err: ActivityError) -> str:
    cause = err.cause
    return str(cause.message if isinstance(cause, ApplicationError) else err)


def anonymous(view: ComplaintView) -> ComplaintView:
    """The view without anything that may identify the complainant or quote them.

    Kept: ids, phases, outcome, dates, deadlines, letter and alert kinds, measures (staff
    write them without personal data) and who on the staff acted. Dropped: every note,
    letter recipients, the decision's motivation, the verdict's text and the mediator.
    """
    v = view.model_copy(deep=True)
    for entry in v.history:
        entry.note = None
    for letter in v.letters:
        letter.to = ""
        letter.error = None
    if v.decision:
        v.decision.motivation = ""
    if v.verdict:
        v.verdict = Verdict(summary="", consequences=[], at=v.verdict.at)
    v.mediator = None
    return v


def open_alerts(view: ComplaintView) -> list[str]:
    """The alerts whose cause still stands, for operators to find (``ComplaintOpenAlerts``)."""
    still = {
        AlertKind.INFORMAL_STALLED: view.phase is Phase.INFORMAL,
        AlertKind.ACKNOWLEDGEMENT_OVERDUE: view.acknowledged_at is None and view.phase in OPEN_PHASES,
        AlertKind.RESOLUTION_DUE_SOON: view.phase is Phase.FORMAL,
        AlertKind.RESOLUTION_OVERDUE: view.phase is Phase.FORMAL,
        AlertKind.CONSEQUENCES_OVERDUE: view.phase is Phase.CONSEQUENCES,
        AlertKind.MEDIATION_STALLED: view.phase is Phase.MEDIATION and view.mediator is None,
        AlertKind.LETTER_UNDELIVERABLE: view.phase in OPEN_PHASES and _undelivered_kinds(view),
    }
    return sorted({a.kind.value for a in view.alerts if still.get(a.kind, False)})


def _undelivered_kinds(view: ComplaintView) -> bool:
    """Whether some letter kind's last attempt failed (no later letter of that kind went out)."""
    last: dict[LetterKind, str] = {}
    for letter in view.letters:
        last[letter.kind] = letter.status
    return "failed" in last.values()

"""One complaint, from receipt to the erasure of its personal data after its retention term.

The run method reads like Level Up's complaint procedure: the informal phase,
the formal procedure with its acknowledgement and resolution terms, the decision,
mediation with its binding verdict, the consequences, and the year in the dossier.
Staff act through updates; each is validated against the phase before it touches
history. Letters, alerts and the dossier are written by two background loops so
that a slow mail server never blocks staff or the procedure's timers. The procedure's terms
(``ACKNOWLEDGE_WITHIN`` and the others) live in complaints/terms.py.
"""

from __future__ import annotations

import asyncio
from datetime import datetime, timedelta
from typing import Awaitable, Callable

from temporalio import workflow
from temporalio.exceptions import ActivityError, ApplicationError, CancelledError

with workflow.unsafe.imports_passed_through():
    from activities.names import (
        LETTER_ERASED,
        OPEN_DOSSIER,
        PLAN_DEADLINE,
        PURGE_DOSSIER,
        SEND_ALERT,
        SEND_LETTER,
        SEND_STORED_LETTER,
        STAGE_LETTERS,
        UNCERTAIN,
        UNDELIVERABLE,
        UPDATE_DOSSIER,
    )
    from complaints import search_attributes as sa
    from complaints import terms
    from complaints.calendar import end_of_day, local_date
    from complaints.ids import MESSAGE_ID as _MESSAGE_ID
    from complaints.ids import sender_hash
    from complaints.products import OTHER as OTHER_PRODUCT
    from complaints.staff import NOT_AUTHORISED, NotAuthorised, authorise
    from complaints.models import (
        CLOSING_LETTERS,
        OPEN_PHASES,
        AlertKind,
        AlertRecord,
        AlertSent,
        Channel,
        ComplaintResult,
        ComplaintView,
        ComplaintWorkflowInput,
        CompleteInput,
        ConsequencesPickedUpInput,
        Contents,
        DeadlinePlan,
        CorrectContactInput,
        DecideInput,
        Decision,
        DisagreeInput,
        DossierFacts,
        EngageMediatorInput,
        EscalateInput,
        ExtendInput,
        HistoryEntry,
        LetterBouncedInput,
        LetterKind,
        LetterRecord,
        LetterSent,
        Measure,
        MeasureInput,
        MessageKind,
        MessageReceivedInput,
        MessageRecord,
        OpenDossierInput,
        OpenedDossier,
        Outcome,
        Phase,
        PlanDeadlinesInput,
        PlannedDeadline,
        PurgeDossierInput,
        PurgeResult,
        Recipient,
        ResendInput,
        RegisterInput,
        ResolveInformallyInput,
        SetProductInput,
        RetainedComplaint,
        StaffAction,
        Route,
        SendAlertInput,
        SendLetterInput,
        StageLettersInput,
        StoredLetterInput,
        Verdict,
        VerdictInput,
        WithdrawInput,
    )
    from complaints.views import anonymous, open_alerts, uncertain_kinds, undelivered_kinds
    from infra import metrics, staff_register
    from workflows.policies import (
        ACKNOWLEDGEMENT_IN_FLIGHT,
        ACTIVITY_TIMEOUT,
        CALENDAR_TIMEOUT,
        DOSSIER_RETRY,
        MAIL_RETRY,
        MAIL_SERVER_PAUSE,
        failure_reason,
    )

#: The ``mediation-stalled`` alert (no mediator engaged within its term) was added while complaints
#: were already running; complaints that were in mediation before it replay without its timer.
#: How this patch is retired, each step proven by ``tests/test_patches.py`` against real histories:
#:
#: 1. Deprecate, once no complaint that entered mediation before the patch can replay any more: every
#:    complaint started before the patch was deployed has left its first run (Web UI or CLI query
#:    ``WorkflowType = 'ComplaintWorkflow' AND ExecutionStatus = 'Running' AND ComplaintPhase != 'closed'
#:    AND StartTime < '<the patch's deploy time>'`` finds none). Then ``_mediation_phase`` calls
#:    ``workflow.deprecate_patch(MEDIATION_STALLED_PATCH)`` and plans the deadline without the ``if``;
#:    move the pre-patch histories out of the replay test (they can no longer replay, by design).
#: 2. Remove the ``deprecate_patch`` call, once every complaint that ran the ``patched`` code has left
#:    its first run (the same query with the deploy time of step 1): histories written in step 1 carry
#:    a deprecated marker, which code without the call replays; histories of step 0 do not.
#: Complaints of generation 1 and later take this patch without a marker (IMPLIED_FROM_GENERATION) and
#: need neither step: in step 1, call ``deprecate_patch`` only where ``self._generation`` is 0.
MEDIATION_STALLED_PATCH = "mediation-stalled-alert"
#: The ``complaint-incomplete`` alert of complaints that came by mail without all minimum contents.
#: Complaints before it never lacked any, so their histories never reach it; guarded all the same.
INCOMPLETE_PATCH = "complaint-incomplete-alert"
#: Alerts in a queue of their own (not behind a letter that keeps failing); complaints started before
#: it keep their one queue for letters and alerts.
SEPARATE_ALERTS_PATCH = "separate-alert-queue"
#: Letters and alerts whose every attempt failed at the mail server wait and are tried again (before
#: it, they were retried without end by the activity itself).
MAIL_SERVER_PATCH = "mail-server-failing"
#: A closed complaint's letters: a closing complaint hands the letters it could not send yet (the mail
#: server failing) to its retention run by their rows in the dossier, instead of waiting for them; a
#: letter refused or bounced after closing can be corrected and sent again during the retention year,
#: and stays an open alert until it has gone out. Complaints before it waited for every letter.
CLOSED_LETTERS_PATCH = "closed-letters"
#: The lean intake (issue 15, BENCHMARKS.md): the dossier opens with the first state, its first
#: deadlines planned by the open_dossier activity on the worker's calendar (no local activity, no
#: separate dossier write); the acknowledgement letter records itself in the dossier as it is marked
#: sent; search attributes are upserted only where they changed (the intake sets the first ones at
#: start). Complaints before it open, plan and write as they did. It implies the patches before it
#: that a new complaint always takes (SEPARATE_ALERTS_PATCH, CLOSED_LETTERS_PATCH, INCOMPLETE_PATCH).
LEAN_INTAKE_PATCH = "lean-intake"
#: Lean staff actions (issue 15, BENCHMARKS.md): every letter records its dossier version as it is marked
#: sent (the dossier already holds everything else the letter changes), so no dossier write follows a
#: letter; a deadline's timer keeps running while the state changes around it without moving that
#: deadline; the search attributes and current details are brought up to date once per workflow task.
#: Complaints before it keep their one write per letter, one timer per change and one upsert per
#: ``_publish``. It implies LEAN_INTAKE_PATCH and the patches that one implies.
LEAN_ACTIONS_PATCH = "lean-actions"
#: Complaints started since these patches carry their code generation in their input instead
#: (``ComplaintWorkflowInput.generation``, complaints/models.py ``COMPLAINT_GENERATION``): a complaint takes
#: each patch listed here from its generation on without asking ``workflow.patched``, so its history holds
#: no patch marker and no ``TemporalChangeVersion`` upsert. A patch added later is asked by every complaint
#: (``_patched`` finds it in no generation) until a new generation is listed for it here.
IMPLIED_FROM_GENERATION = {
    MEDIATION_STALLED_PATCH: 1,
    INCOMPLETE_PATCH: 1,
    SEPARATE_ALERTS_PATCH: 1,
    MAIL_SERVER_PATCH: 1,
    CLOSED_LETTERS_PATCH: 1,
    LEAN_INTAKE_PATCH: 1,
    LEAN_ACTIONS_PATCH: 1,
}

# Refusal types, so that callers can tell "not now" from "not like that".
NOT_ALLOWED = "ActionNotAllowed"
INVALID = "InvalidArgument"


class _Deadline:
    """A moment the procedure cares about in the current phase, and what happens then.

    A plain class, not a dataclass: the sandbox executes this module for every workflow it
    runs, and a dataclass generates (compiles) its methods each time (BENCHMARKS.md).
    """

    __slots__ = ("at", "summary", "fire")

    def __init__(self, at: datetime, summary: str, fire: Callable[[], None]) -> None:
        self.at, self.summary, self.fire = at, summary, fire


#: What the post room sends: letters (written from the complaint, or from the dossier) and alerts.
_Outgoing = SendLetterInput | StoredLetterInput | SendAlertInput


def _nothing() -> None:
    """A deadline that only ends a wait."""


def _stop_if_cancelled(err: ActivityError) -> None:
    """A send cancelled because its run ends (it continued as new with the message, or erased the dossier):
    not a failure of the mail server; the post room stops here."""
    if isinstance(err.cause, CancelledError):
        raise asyncio.CancelledError()


def _cause_type(err: ActivityError) -> str | None:
    cause = err.cause
    return cause.type if isinstance(cause, ApplicationError) else None


@workflow.defn
class ComplaintWorkflow:
    @workflow.init
    def __init__(self, input: ComplaintWorkflowInput) -> None:
        #: Each open phase and the method that runs it: every phase has the same shape (plan its
        #: deadlines once, then follow them until a staff action or a deadline ends the phase).
        self._phases: dict[Phase, Callable[[], Awaitable[None]]] = {
            Phase.INFORMAL: self._informal_phase,
            Phase.FORMAL: self._formal_phase,
            Phase.DECIDED: self._decided_phase,
            Phase.MEDIATION: self._mediation_phase,
            Phase.CONSEQUENCES: self._consequences_phase,
        }
        self._version = 0
        #: Letters (and, in complaints before SEPARATE_ALERTS_PATCH, alerts) waiting to go out.
        self._mail: list[_Outgoing] = []
        #: Alerts waiting to go out, in a queue of their own: never behind a letter that keeps failing.
        self._alerts_out: list[_Outgoing] = []
        # Decided here, before any update of the first activation is handled (an update can arrive with
        # the run's first task: a retention run's handlers use both).
        #: The code generation the complaint started under (COMPLAINT_GENERATION): it takes the patches its
        #: generation implies without a marker; 0 (started before generations) asks as it always did.
        self._generation = input.generation
        self._lean_actions = input.retained is None and self._patched(LEAN_ACTIONS_PATCH)
        self._lean = self._lean_actions or (input.retained is None and self._patched(LEAN_INTAKE_PATCH))
        # A history with the lean intake's marker was written by code that had every patch before it: they
        # are implied (each patch's marker costs its history two events, one a search-attribute upsert).
        self._separate_alerts = self._lean or self._patched(SEPARATE_ALERTS_PATCH)
        self._closed_letters = self._lean or self._patched(CLOSED_LETTERS_PATCH)
        #: The address staff corrected during the retention year (that run's one personal datum: it
        #: continues as new once the dossier holds it).
        self._contact_email: str | None = None
        #: The retention year has ended: nothing more is sent.
        self._erasing = False
        #: Deadlines the dossier's calendar planned as the dossier opened, by (start, working days).
        self._planned_at_opening: dict[tuple[datetime, int], PlannedDeadline] = {}
        self._dossier_synced = -1
        #: The version a letter in flight carries to the dossier (lean actions), and whether the letters' post
        #: room is busy with one (else a letter waiting is about to go, and takes the state along).
        self._carrying: int | None = None
        self._sending = False
        #: The timer of the deadline being waited for (lean actions): its moment and summary, and its task.
        self._timer: tuple[tuple[datetime, str], asyncio.Task[None]] | None = None
        #: The search attributes and current details are due to be brought up to date (lean actions).
        self._publish_due = False
        self._published: tuple[object, ...] = ()
        #: Letters the mail server refused permanently (or that bounced), by kind, until staff resend them.
        self._undelivered: dict[LetterKind, SendLetterInput] = {}
        #: Letters that went out, by Message-ID, so that a bounce can be sent again after correct-contact.
        self._sent: dict[str, SendLetterInput] = {}
        self._submission = input.submission
        #: Which complaint of this id (an id can be used again once an erased complaint's history is gone).
        self._instance = workflow.info().first_execution_run_id
        if input.retained is not None:  # the retention run of a closed complaint
            self._view = input.retained.view
            self._version = self._dossier_synced = input.retained.dossier_version
            self._ever_incomplete = bool(self._view.missing) or self._view.deadlines.complete_by is not None
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
            missing=s.missing(),
        )
        self._set_product(s.product, input.product_code)
        #: Whether the complaint ever lacked minimum contents (only then has it a ComplaintIncomplete attribute).
        self._ever_incomplete = bool(self._view.missing)
        self._record("submitted", "intake", f"via {s.channel.value}, route {s.route.value}")
        if s.route is Route.FORMAL:
            self._enter_formal(s.received_at)

    def _patched(self, patch: str) -> bool:
        """Whether this complaint takes ``patch``: without a marker from the generation that implies it
        (IMPLIED_FROM_GENERATION), else as its history says (``workflow.patched``)."""
        implied_from = IMPLIED_FROM_GENERATION.get(patch)
        return (implied_from is not None and self._generation >= implied_from) or workflow.patched(patch)

    # ================================================================ the procedure

    @workflow.run
    async def run(self, input: ComplaintWorkflowInput) -> ComplaintResult:
        if input.retained is not None and workflow.info().continued_run_id is None:
            # A retention run carries a whole view and history: only the complaint's own run starts it.
            raise ApplicationError("a retention run is started only by its complaint's run (continue-as-new)",
                                   type=NOT_AUTHORISED, non_retryable=True)
        if input.retained is not None:  # what the run before could not send yet
            self._mail.extend(input.retained.letters)
            (self._alerts_out if self._separate_alerts else self._mail).extend(input.retained.alerts)
        if input.retained is None:
            route = self._view.route.value
            workflow.logger.info("complaint received", extra={"route": route})
            self._count(metrics.OPENED, route=route)
            opening = OpenDossierInput(complaint_id=self._view.complaint_id, submission=input.submission,
                                       product_code=self._view.product if self._view.product_is_code else None,
                                       instance=self._instance)
            if self._lean:
                await self._open_dossier(opening)
            else:
                await self._dossier_activity(OPEN_DOSSIER, opening, "open the dossier")
        background = [asyncio.create_task(self._post_room(self._mail)), asyncio.create_task(self._archivist())]
        if self._separate_alerts:
            background.append(asyncio.create_task(self._post_room(self._alerts_out)))
        if self._lean_actions:
            background.append(asyncio.create_task(self._publisher()))
        try:
            if input.retained is None:
                await self._handle_complaint()
                await self._continue_without_personal_data()
            return await self._keep_in_dossier()
        finally:
            for task in background:
                task.cancel()

    async def _open_dossier(self, opening: OpenDossierInput) -> None:
        """Open the dossier with the complaint's first state: the first phase's working-day deadlines are
        planned by the activity on the worker's calendar, and the row is written as the state will be once
        the phase has taken them (each plan is one change, ``_changed``), so no second write follows."""
        plans = self._receipt_plans()
        # The contents and address are in the submission the row is opened with: not sent twice.
        first = DossierFacts(version=self._version + len(plans), view=self._snapshot(), instance=self._instance)
        opened = await self._dossier_activity(
            OPEN_DOSSIER, opening.model_copy(update={"plan": plans, "first_state": first}),
            "open the dossier and plan " + ", ".join(f"{p.deadline} ({p.working_days} working days)" for p in plans),
            result_type=OpenedDossier)
        self._planned_at_opening = {(p.start, p.working_days): at for p, at in zip(plans, opened.planned)}
        self._dossier_synced = first.version

    def _receipt_plans(self) -> list[DeadlinePlan]:
        """What the first phase plans on the calendar when it starts (``_informal_phase``, ``_formal_phase``)."""
        v = self._view
        if v.phase is Phase.INFORMAL:
            return [DeadlinePlan(deadline="informal_stalled_at", start=v.received_at,
                                 working_days=terms.INFORMAL_STALLED_AFTER.count)]
        assert v.formal_received_at is not None
        plans = [DeadlinePlan(deadline="acknowledge_by", start=v.formal_received_at,
                              working_days=terms.ACKNOWLEDGE_WITHIN.count)]
        if v.missing:
            plans.append(DeadlinePlan(deadline="complete_by", start=v.formal_received_at,
                                      working_days=terms.COMPLETE_WITHIN.count))
        return plans

    async def _handle_complaint(self) -> None:
        """From receipt to closing: each phase runs until a staff action or a deadline ends it."""
        while self._view.phase in OPEN_PHASES:
            self._publish()
            phase = self._view.phase
            workflow.logger.info("phase %s", phase.value, extra={"phase": phase.value})
            await self._phases[phase]()

    async def _informal_phase(self) -> None:
        """A manager or external officer talks it through; staff resolve or escalate (the director hears of it
        after ``INFORMAL_STALLED_AFTER``)."""
        d = self._view.deadlines
        if d.informal_stalled_at is None:
            planned = await self._plan(self._view.received_at, terms.INFORMAL_STALLED_AFTER,
                                       "plan the informal phase")
            d.informal_stalled_at = planned.at
            self._view.calendar = planned.calendar
            self._changed()
        await self._follow_deadlines(Phase.INFORMAL, self._informal_deadlines)

    def _informal_deadlines(self) -> list[_Deadline]:
        d = self._view.deadlines
        if d.informal_stalled_at is None or self._alerted(AlertKind.INFORMAL_STALLED):
            return []
        return [self._alert_when(d.informal_stalled_at, AlertKind.INFORMAL_STALLED,
                                 f"informal phase stalled ({terms.INFORMAL_STALLED_AFTER.en()})")]

    async def _formal_phase(self) -> None:
        """Acknowledge within ``ACKNOWLEDGE_WITHIN``; resolve within ``RESOLVE_WITHIN`` or announce the new term."""
        d = self._view.deadlines
        assert self._view.formal_received_at is not None
        if d.acknowledge_by is None:
            planned = await self._plan(self._view.formal_received_at, terms.ACKNOWLEDGE_WITHIN,
                                       "plan the acknowledgement deadline")
            d.acknowledge_by = planned.at
            self._view.calendar = planned.calendar
            self._letter(LetterKind.ACKNOWLEDGEMENT, missing=self._view.missing)
            self._changed()
        if self._view.missing and d.complete_by is None and (self._lean or self._patched(INCOMPLETE_PATCH)):
            planned = await self._plan(self._view.formal_received_at, terms.COMPLETE_WITHIN,
                                       "plan asking the director to complete the complaint")
            d.complete_by = planned.at
            self._changed()
        await self._follow_deadlines(Phase.FORMAL, self._formal_deadlines)

    def _formal_deadlines(self) -> list[_Deadline]:
        v, d = self._view, self._view.deadlines
        assert d.resolve_by is not None and d.acknowledge_by is not None
        found = []
        if v.acknowledged_at is None and not self._alerted(AlertKind.ACKNOWLEDGEMENT_OVERDUE):
            found.append(self._alert_when(d.acknowledge_by, AlertKind.ACKNOWLEDGEMENT_OVERDUE,
                                          f"acknowledgement deadline ({terms.ACKNOWLEDGE_WITHIN.en()})"))
        if not self._alerted(AlertKind.RESOLUTION_DUE_SOON, d.resolve_by):
            found.append(self._alert_when(terms.DUE_SOON_BEFORE.before(d.resolve_by), AlertKind.RESOLUTION_DUE_SOON,
                                          f"resolution term ends in {terms.DUE_SOON_BEFORE.en()}",
                                          about=d.resolve_by))
        if v.extensions == 0:
            found.append(_Deadline(terms.AUTO_EXTEND_BEFORE.before(d.resolve_by),
                                   f"{terms.AUTO_EXTEND_BEFORE.en()} before the resolution term: announce the new term",
                                   self._extend_by_default))
        elif not self._alerted(AlertKind.RESOLUTION_OVERDUE, d.resolve_by):
            found.append(self._alert_when(d.resolve_by, AlertKind.RESOLUTION_OVERDUE, "extended resolution term"))
        if v.missing and d.complete_by is not None and not self._alerted(AlertKind.COMPLAINT_INCOMPLETE):
            found.append(self._alert_when(d.complete_by, AlertKind.COMPLAINT_INCOMPLETE,
                                          f"minimum contents still missing ({terms.COMPLETE_WITHIN.en()})"))
        return found

    def _extend_by_default(self) -> None:
        d = self._view.deadlines
        assert d.resolve_by is not None
        self._alert(AlertKind.RESOLUTION_OVERDUE, d.resolve_by)
        self._extend(terms.DEFAULT_EXTENSION.after(d.resolve_by), "system",
                     f"no decision {terms.AUTO_EXTEND_BEFORE.en()} before the term: "
                     f"extended by the default term of {terms.DEFAULT_EXTENSION.en()}")

    async def _decided_phase(self) -> None:
        """The decision is sent; within ``OBJECTION_WINDOW`` staff may record that there is no agreement."""
        await self._follow_deadlines(Phase.DECIDED, self._decided_deadlines)

    def _decided_deadlines(self) -> list[_Deadline]:
        d = self._view.deadlines
        if d.objection_by is None:
            return []
        return [_Deadline(d.objection_by, f"{terms.OBJECTION_WINDOW.en()} for the complainant to disagree",
                          self._close_after_decision)]

    def _close_after_decision(self) -> None:
        self._record("closed", "system", f"no disagreement within {terms.OBJECTION_WINDOW.en()} of the decision")
        self._close(self._view.decision.outcome if self._view.decision else None)

    async def _mediation_phase(self) -> None:
        """An independent mediator is engaged within ``MEDIATOR_WITHIN``; the verdict is binding."""
        # Added after complaints were already running (MEDIATION_STALLED_PATCH says how it retires).
        if self._patched(MEDIATION_STALLED_PATCH) and self._view.deadlines.mediator_by is None:
            await self._plan_mediator()
        await self._follow_deadlines(Phase.MEDIATION, self._mediation_deadlines)

    async def _plan_mediator(self) -> None:
        planned = await self._plan(workflow.now(), terms.MEDIATOR_WITHIN, "plan engaging the mediator")
        self._view.deadlines.mediator_by = planned.at
        self._changed()

    def _mediation_deadlines(self) -> list[_Deadline]:
        d = self._view.deadlines
        if d.mediator_by is None or self._view.mediator is not None or self._alerted(AlertKind.MEDIATION_STALLED):
            return []
        return [self._alert_when(d.mediator_by, AlertKind.MEDIATION_STALLED,
                                 f"independent mediator to be engaged ({terms.MEDIATOR_WITHIN.en()})")]

    async def _consequences_phase(self) -> None:
        """Level Up picks up the verdict's consequences within ``CONSEQUENCES_WITHIN``."""
        await self._follow_deadlines(Phase.CONSEQUENCES, self._consequences_deadlines)

    def _consequences_deadlines(self) -> list[_Deadline]:
        d = self._view.deadlines
        if d.consequences_by is None or self._alerted(AlertKind.CONSEQUENCES_OVERDUE):
            return []
        return [self._alert_when(d.consequences_by, AlertKind.CONSEQUENCES_OVERDUE,
                                 f"consequences to be picked up ({terms.CONSEQUENCES_WITHIN.en()})")]

    async def _continue_without_personal_data(self) -> None:
        """Closed: the year in the dossier is waited out by a new run that holds no personal data.

        Letters, alerts and dossier writes are finished first, so nothing is lost on the way.
        """
        self._publish(now=True)  # the run may end in this workflow task
        outcome = self._view.outcome.value if self._view.outcome else None
        workflow.logger.info("closed; kept in the dossier for a year",
                             extra={"phase": Phase.CLOSED.value, "outcome": outcome})
        if self._closed_letters:
            self._continue_as_new(await self._hand_over_letters())
        await workflow.wait_condition(lambda: workflow.all_handlers_finished() and self._idle())
        workflow.continue_as_new(ComplaintWorkflowInput(retained=RetainedComplaint(
            view=anonymous(self._view), dossier_version=self._version), generation=self._generation))

    async def _hand_over_letters(self) -> list[StoredLetterInput]:
        """Wait until nothing is in flight, or until the mail server keeps failing: then the letters still
        to send are written to the dossier as they would be sent, and the next run sends them from there."""
        staged: set[tuple[LetterKind, int]] = set()
        while True:
            await workflow.wait_condition(lambda: workflow.all_handlers_finished() and self._settled())
            waiting = [m for m in self._mail if isinstance(m, SendLetterInput)]
            new = [m for m in waiting if (m.kind, m.sequence) not in staged]
            if not new:
                return [StoredLetterInput(complaint_id=m.complaint_id, instance=m.instance, kind=m.kind,
                                          sequence=m.sequence) for m in waiting]
            await self._dossier_activity(STAGE_LETTERS, StageLettersInput(letters=new),
                                         "keep the letters still to send in the dossier")
            staged.update((m.kind, m.sequence) for m in new)

    def _continue_as_new(self, letters: list[StoredLetterInput]) -> None:
        """On to a retention run without personal data, with the letters and alerts still to send."""
        if self._publish_due:  # the run ends in this workflow task: what changed last is published now
            self._publish(now=True)
        alerts = [m for m in self._alerts_out + self._mail if isinstance(m, SendAlertInput)]
        letters += [m.model_copy(update={"to": None}) for m in self._mail if isinstance(m, StoredLetterInput)]
        workflow.continue_as_new(ComplaintWorkflowInput(retained=RetainedComplaint(
            view=anonymous(self._view), dossier_version=self._version, letters=letters, alerts=alerts),
            generation=self._generation))

    def _settled(self) -> bool:
        """The dossier is written, and every message went out, or the mail server keeps failing."""
        return self._dossier_synced == self._version and (
            (not self._mail and not self._alerts_out) or self._view.mail_failing_since is not None)

    async def _keep_in_dossier(self) -> ComplaintResult:
        """Closed: kept in the dossier for ``RETENTION``, then the personal data is erased."""
        self._publish()
        if self._closed_letters:
            await self._wait_out_the_year()
            await workflow.wait_condition(lambda: workflow.all_handlers_finished() and self._settled())
            self._erasing = True
            self._give_up_unsent()
            await workflow.wait_condition(lambda: self._dossier_synced == self._version)
        else:
            await self._follow_deadlines(Phase.CLOSED, self._closed_deadlines, until_due=True)
            await workflow.wait_condition(lambda: workflow.all_handlers_finished() and self._idle())
        purged = await self._dossier_activity(
            PURGE_DOSSIER, PurgeDossierInput(complaint_id=self._view.complaint_id, instance=self._instance),
            "erase personal data from the dossier", result_type=PurgeResult)
        self._view = anonymous(self._view)
        self._view.phase = Phase.PURGED
        self._view.next_deadline = self._view.next_deadline_for = None  # nothing is due any more
        if self._closed_letters:
            self._view.mail_failing_since = None  # nothing is sent any more
        self._record("purged", "system", "personal data erased after the retention year")
        self._publish()
        workflow.logger.info("personal data erased; the complaint is complete", extra={"phase": Phase.PURGED.value})
        return ComplaintResult(complaint_id=self._view.complaint_id, outcome=self._view.outcome,
                               closed_at=self._view.closed_at, purged_at=purged.purged_at)

    async def _wait_out_the_year(self) -> None:
        """Until ``purge_on``; letters may still be bounced, corrected and sent again meanwhile. A run that
        was told a corrected address continues as new once the dossier holds it."""
        while True:
            upcoming = self._closed_deadlines()
            self._set_next(upcoming[0] if upcoming else None)
            if not upcoming:
                return
            version = self._version
            try:
                await workflow.wait_condition(lambda: self._version != version or self._contact_kept(),
                                              timeout=upcoming[0].at - workflow.now(),
                                              timeout_summary=upcoming[0].summary)
            except asyncio.TimeoutError:
                return
            if self._contact_kept():
                self._continue_as_new([])

    def _contact_kept(self) -> bool:
        """This run holds a corrected address, and the dossier now holds it too."""
        return self._contact_email is not None and workflow.all_handlers_finished() and \
            self._dossier_synced == self._version

    def _give_up_unsent(self) -> None:
        """The retention year has ended with letters still unsent (the mail server kept failing): noted."""
        for item in self._mail:
            if isinstance(item, (SendLetterInput, StoredLetterInput)):
                self._view.letters.append(LetterRecord(kind=item.kind, sequence=item.sequence, to="",
                                                       status="failed", error="not sent: the retention year ended"))
                self._record(f"letter {item.kind.value} not sent", "system")
                self._changed()

    def _closed_deadlines(self) -> list[_Deadline]:
        purge_on = self._view.deadlines.purge_on
        assert purge_on is not None
        if workflow.now() >= purge_on:
            return []
        return [_Deadline(purge_on, f"retention ends ({terms.RETENTION.en()}): erase personal data", _nothing)]

    # ============================================================ staff actions
    # Each action is an update with a validator (a refusal never reaches history) and ends with
    # ``return self._done()``. Adding one: README, "Adding a staff action".

    @workflow.update
    def resolve_informally(self, action: ResolveInformallyInput) -> ComplaintView:
        self._record("resolve-informally", action, action.note)
        self._letter(LetterKind.INFORMAL_RESOLUTION, note=action.note)
        self._close(Outcome.RESOLVED_INFORMALLY)
        return self._done()

    @resolve_informally.validator
    def _check_resolve_informally(self, action: ResolveInformallyInput) -> None:
        self._authorise("resolve-informally", action)
        self._require_phase("resolve-informally", Phase.INFORMAL)

    @workflow.update
    def escalate(self, action: EscalateInput) -> ComplaintView:
        self._record("escalate", action, action.reason)
        self._enter_formal(workflow.now())
        return self._done()

    @escalate.validator
    def _check_escalate(self, action: EscalateInput) -> None:
        self._authorise("escalate", action)
        self._require_phase("escalate", Phase.INFORMAL)

    @workflow.update
    def extend(self, action: ExtendInput) -> ComplaintView:
        self._extend(end_of_day(action.until), action, action.reason)
        return self._done()

    @extend.validator
    def _check_extend(self, action: ExtendInput) -> None:
        self._authorise("extend", action)
        self._require_phase("extend", Phase.FORMAL)
        term = self._view.deadlines.resolve_by
        assert term is not None
        if action.until <= local_date(term):
            raise ApplicationError(
                f"until: {action.until.isoformat()} is not after the current term "
                f"({local_date(term).isoformat()})", type=INVALID)
        latest = local_date(terms.EXTENSION_LIMIT.after(workflow.now()))
        if action.until > latest:
            raise ApplicationError(
                f"until: {action.until.isoformat()} is more than {terms.EXTENSION_LIMIT.en()} ahead "
                f"(at most {latest.isoformat()})", type=INVALID)

    @workflow.update
    def decide(self, action: DecideInput) -> ComplaintView:
        now = workflow.now()
        resolve_by = self._view.deadlines.resolve_by
        within = resolve_by is None or now <= resolve_by
        self._view.decision = Decision(outcome=action.outcome, motivation=action.motivation,
                                       at=now, within_term=within)
        if within and not self._alerted(AlertKind.RESOLUTION_OVERDUE):
            self._deadline(metrics.RESOLUTION, metrics.MET)
        self._view.outcome = action.outcome
        self._record("decide", action, f"{action.outcome.value}: {action.motivation}")
        self._letter(LetterKind.DECISION, outcome=action.outcome, motivation=action.motivation)
        self._enter_decided(now)
        return self._done()

    @decide.validator
    def _check_decide(self, action: DecideInput) -> None:
        self._authorise("decide", action)
        self._require_phase("decide", Phase.FORMAL)

    @workflow.update
    def disagree(self, action: DisagreeInput) -> ComplaintView:
        self._record("disagree", action, action.note)
        self._view.phase = Phase.MEDIATION
        return self._done()

    @disagree.validator
    def _check_disagree(self, action: DisagreeInput) -> None:
        self._authorise("disagree", action)
        self._require_phase("disagree", Phase.FORMAL, Phase.DECIDED)

    @workflow.update
    def engage_mediator(self, action: EngageMediatorInput) -> ComplaintView:
        self._view.mediator = action.mediator
        self._record("engage-mediator", action, action.mediator)
        self._letter(LetterKind.MEDIATOR_ENGAGED, mediator=action.mediator)
        return self._done()

    @engage_mediator.validator
    def _check_engage_mediator(self, action: EngageMediatorInput) -> None:
        self._authorise("engage-mediator", action)
        self._require_phase("engage-mediator", Phase.MEDIATION)
        if self._view.mediator is not None:
            raise ApplicationError(f"a mediator is already engaged ({self._view.mediator})", type=NOT_ALLOWED)

    @workflow.update
    def verdict(self, action: VerdictInput) -> ComplaintView:
        now = workflow.now()
        self._view.verdict = Verdict(summary=action.summary, consequences=action.consequences, at=now)
        self._view.outcome = Outcome.MEDIATED
        self._record("verdict", action, action.summary)
        if action.consequences:
            self._enter_consequences(now)
        else:
            self._close(Outcome.MEDIATED)
        self._letter(LetterKind.VERDICT, note=action.summary, consequences=action.consequences)
        return self._done()

    @verdict.validator
    def _check_verdict(self, action: VerdictInput) -> None:
        self._authorise("verdict", action)
        self._require_phase("verdict", Phase.MEDIATION)
        if self._view.mediator is None:
            raise ApplicationError("engage the independent mediator first (engage-mediator)", type=NOT_ALLOWED)

    @workflow.update
    def consequences_picked_up(self, action: ConsequencesPickedUpInput) -> ComplaintView:
        by = self._view.deadlines.consequences_by
        if by is not None and workflow.now() <= by and not self._alerted(AlertKind.CONSEQUENCES_OVERDUE):
            self._deadline(metrics.CONSEQUENCES, metrics.MET)
        self._record("consequences-picked-up", action, action.note)
        self._close(Outcome.MEDIATED)
        return self._done()

    @consequences_picked_up.validator
    def _check_consequences_picked_up(self, action: ConsequencesPickedUpInput) -> None:
        self._authorise("consequences-picked-up", action)
        self._require_phase("consequences-picked-up", Phase.CONSEQUENCES)

    @workflow.update
    def withdraw(self, action: WithdrawInput) -> ComplaintView:
        self._record("withdraw", action, action.reason)
        self._letter(LetterKind.WITHDRAWAL, note=action.reason)
        self._close(Outcome.WITHDRAWN)
        return self._done()

    @withdraw.validator
    def _check_withdraw(self, action: WithdrawInput) -> None:
        self._authorise("withdraw", action)
        self._require_phase("withdraw", *OPEN_PHASES)

    @workflow.update
    def record_measure(self, action: MeasureInput) -> ComplaintView:
        self._view.measures.append(Measure(at=workflow.now(), by=action.by, text=action.text))
        self._record("measure", action, action.text)
        return self._done()

    @record_measure.validator
    def _check_record_measure(self, action: MeasureInput) -> None:
        self._authorise("measure", action)
        self._require_phase("measure", *OPEN_PHASES, Phase.CLOSED)
        self._require_kept("measure")

    @workflow.update
    def correct_contact(self, action: CorrectContactInput) -> ComplaintView:
        if self._submission is not None:
            complainant = self._submission.complainant.model_copy(update={"email": action.email})
            self._submission = self._submission.model_copy(update={"complainant": complainant})
        else:  # the retention run: to the dossier, and then on to a run without it
            self._contact_email = str(action.email)
        self._record("correct-contact", action, "e-mail address corrected")
        return self._done()

    @correct_contact.validator
    def _check_correct_contact(self, action: CorrectContactInput) -> None:
        self._authorise("correct-contact", action)
        if self._closed_letters and self._view.phase is Phase.CLOSED:
            self._require_letter_waiting("correct-contact")
        else:
            self._require_phase("correct-contact", *OPEN_PHASES)

    @workflow.update
    def resend(self, action: ResendInput) -> ComplaintView:
        self._record("resend", action, f"{action.kind.value} letter sent again")
        failed = self._undelivered.pop(action.kind, None)
        if failed is not None:
            # The same letter (what it said) to the current address, with the current terms.
            self._letter(action.kind, note=failed.note, outcome=failed.outcome, motivation=failed.motivation,
                         mediator=failed.mediator, consequences=failed.consequences)
        else:  # the retention run: the letter as the dossier keeps it, to the current address
            last = max(r.sequence for r in self._view.letters if r.kind is action.kind)
            self._mail.append(StoredLetterInput(
                complaint_id=self._view.complaint_id, instance=self._instance, kind=action.kind,
                sequence=self._next_sequence(action.kind), copy_of=last, to=self._contact_email))
        return self._done()

    @resend.validator
    def _check_resend(self, action: ResendInput) -> None:
        self._authorise("resend", action)
        if self._closed_letters and self._view.phase is Phase.CLOSED:
            self._require_letter_waiting("resend")
            waiting = action.kind in self._closing_letters_waiting() and not any(
                isinstance(m, StoredLetterInput) and m.kind is action.kind for m in self._mail)
        else:
            self._require_phase("resend", *OPEN_PHASES)
            waiting = action.kind in self._undelivered
        if not waiting:
            raise ApplicationError(f"kind: no undelivered {action.kind.value} letter to send again",
                                   type=NOT_ALLOWED)

    def _require_kept(self, action: str) -> None:
        """Refused from ``purge_on`` on: the personal data is being erased, and nothing may be written to
        the dossier after it."""
        purge_on = self._view.deadlines.purge_on
        if self._erasing or (purge_on is not None and workflow.now() >= purge_on):
            raise ApplicationError(f"{action} is not possible: the retention year has ended", type=NOT_ALLOWED)

    def _require_letter_waiting(self, action: str) -> None:
        """A closed complaint takes ``correct-contact`` and ``resend`` only for its closing letter when that
        did not go out, and only while it is kept in the dossier."""
        self._require_kept(action)
        if not self._closing_letters_waiting():
            raise ApplicationError(f"{action} is not possible in phase closed: its closing letter was delivered",
                                   type=NOT_ALLOWED)

    def _closing_letters_waiting(self) -> set[LetterKind]:
        """The closing letters (``CLOSING_LETTERS``) that were refused, bounced or are uncertain."""
        waiting = set(self._undelivered) | undelivered_kinds(self._view) | uncertain_kinds(self._view)
        return waiting & CLOSING_LETTERS

    @workflow.update
    def complete(self, action: CompleteInput) -> ComplaintView:
        self._fill(action.contents(), action)
        return self._done()

    @complete.validator
    def _check_complete(self, action: CompleteInput) -> None:
        self._authorise("complete", action)
        self._require_phase("complete", *OPEN_PHASES)

    @workflow.update
    def set_product(self, action: SetProductInput) -> ComplaintView:
        if not self._view.product_is_code and self._view.product is not None and self._submission is not None:
            self._view.product_text = self._submission.product  # from before the catalogue: keep the words
        self._view.product, self._view.product_is_code = action.code, True
        self._record("set-product", action, f"product {action.code}")
        return self._done()

    @set_product.validator
    def _check_set_product(self, action: SetProductInput) -> None:
        self._authorise("set-product", action)
        self._require_phase("set-product", *OPEN_PHASES, Phase.CLOSED)
        self._require_kept("set-product")
        if self._view.product_is_code and self._view.product == action.code:
            raise ApplicationError(f"code: the product is already {action.code}", type=INVALID)

    @workflow.update
    def register(self, action: RegisterInput) -> ComplaintView:
        self._record("register", action, f"registered from a {action.channel.value}")
        return self._done()

    @register.validator
    def _check_register(self, action: RegisterInput) -> None:
        self._authorise("register", action)
        self._require_phase("register", *OPEN_PHASES)
        if self._view.channel is not action.channel or action.channel is Channel.EMAIL:
            raise ApplicationError(f"channel: this complaint came {self._view.channel.value}, not by "
                                   f"{action.channel.value}", type=INVALID)
        if any(entry.action == "register" for entry in self._view.history):
            raise ApplicationError("register: this complaint is registered already", type=NOT_ALLOWED)

    # ============================================================ mail about the complaint
    # Sent by the mailbox workflow (workflows/mailbox.py); a mail it hands over twice counts once.

    @workflow.update
    def receive_message(self, message: MessageReceivedInput) -> ComplaintView:
        if self._has_message(message.ref):
            return self._snapshot()
        from_complainant = self._from_complainant(message.sender)
        self._view.messages.append(MessageRecord(ref=message.ref, at=message.at, kind=message.kind,
                                                 from_complainant=from_complainant))
        what = {MessageKind.REPLY: "a message", MessageKind.AUTO_REPLY: "an automatic reply",
                MessageKind.BOUNCE: "a delivery report"}[message.kind]
        who = "the complainant's address" if from_complainant else "another address"
        self._record("message-received", "mailbox", f"{what} from {who}")
        if message.kind is MessageKind.REPLY:
            self._alert(AlertKind.MESSAGE_RECEIVED)
            if from_complainant and message.contents is not None and self._submission is not None:
                self._fill(message.contents, "complainant (e-mail)", only_missing=True)
        return self._done()

    @receive_message.validator
    def _check_receive_message(self, message: MessageReceivedInput) -> None:
        self._require_phase("receive-message", *OPEN_PHASES, Phase.CLOSED)

    @workflow.update
    def letter_bounced(self, bounce: LetterBouncedInput) -> ComplaintView:
        if self._has_message(bounce.ref):
            return self._snapshot()
        self._view.messages.append(MessageRecord(ref=bounce.ref, at=bounce.at, kind=MessageKind.BOUNCE,
                                                 from_complainant=False))
        record = next(r for r in self._view.letters if r.message_id == bounce.message_id)
        if record.status != "failed":
            record.status, record.error = "failed", f"bounced by the recipient's mail server ({bounce.reason})"
            if bounce.message_id in self._sent:
                self._undelivered[record.kind] = self._sent[bounce.message_id]
            self._record(f"letter {record.kind.value} undeliverable", "mailbox", record.error)
            self._alert(AlertKind.LETTER_UNDELIVERABLE)
        return self._done()

    @letter_bounced.validator
    def _check_letter_bounced(self, bounce: LetterBouncedInput) -> None:
        self._require_phase("letter-bounced", *OPEN_PHASES, Phase.CLOSED)
        if not any(r.message_id == bounce.message_id for r in self._view.letters):
            raise ApplicationError("message_id: no letter of this complaint has it", type=INVALID)

    @workflow.query
    def status(self) -> ComplaintView:
        return self._snapshot()

    # ====================================================== state transitions

    def _done(self) -> ComplaintView:
        """How every staff action ends: the state changed (timers, the dossier and the Web UI follow),
        and the caller gets the view as it is now."""
        self._changed()
        return self._snapshot()

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
        self._view.deadlines.resolve_by = terms.RESOLVE_WITHIN.after(receipt)

    def _enter_decided(self, decided_at: datetime) -> None:
        """The decision is sent: the complainant may disagree within the objection window."""
        self._view.phase = Phase.DECIDED
        self._view.deadlines.objection_by = terms.OBJECTION_WINDOW.after(decided_at)

    def _enter_consequences(self, verdict_at: datetime) -> None:
        """The verdict has consequences: Level Up picks them up within their term."""
        self._view.phase = Phase.CONSEQUENCES
        self._view.deadlines.consequences_by = terms.CONSEQUENCES_WITHIN.after(verdict_at)

    def _extend(self, until: datetime, by: str | StaffAction, reason: str) -> None:
        self._view.deadlines.resolve_by = until
        self._view.extensions += 1
        self._record("extend", by, f"new term {until.isoformat()}: {reason}")
        self._letter(LetterKind.EXTENSION, note=reason, automatic=by == "system")

    def _close(self, outcome: Outcome | None) -> None:
        """Closed: kept in the dossier for the retention term."""
        now = workflow.now()
        self._view.outcome = outcome
        self._view.phase = Phase.CLOSED
        self._view.closed_at = now
        self._view.deadlines.purge_on = terms.RETENTION.after(now)

    def _fill(self, contents: Contents, by: str | StaffAction, only_missing: bool = False) -> None:
        """Minimum contents filled in: the submission, the view (product, what is missing), the history."""
        s = self._submission
        assert s is not None
        given = [f for f in contents.given() if not only_missing or f in self._view.missing]
        if not given:
            return
        complainant = s.complainant.model_copy(update={f: getattr(contents, f) for f in given
                                                       if f in ("organisation", "phone")})
        self._submission = s.model_copy(update={"complainant": complainant, **{
            f: getattr(contents, f) for f in given if f in ("product", "motivation")}})
        if "product" in given:
            self._set_product(contents.product, contents.product_code)
        self._view.missing = self._submission.missing()
        self._record("complete", by, "filled in: " + ", ".join(given))

    def _set_product(self, text: str | None, code: str | None) -> None:
        """The product as the complainant put it, and the catalogue's code for it (matched by whoever read
        the text: intake, admin.py, the mailbox). Without a code (a caller from before the catalogue) a
        text is ``other`` for staff to correct; complaints started before the catalogue keep their text."""
        legacy = not self._view.product_is_code and self._view.product is not None
        if code is None and text is not None and legacy:
            self._view.product = text
            return
        self._view.product = code if code is not None else (OTHER_PRODUCT if text is not None else None)
        self._view.product_text = text
        self._view.product_is_code = True

    def _has_message(self, ref: str) -> bool:
        return any(m.ref == ref for m in self._view.messages)

    def _from_complainant(self, sender: str) -> bool:
        """Whether the hashed sender address is the complainant's (unknown once the personal data is gone)."""
        if self._submission is None:
            return False
        return sender == sender_hash(str(self._submission.complainant.email))

    def _record(self, action: str, by: str | StaffAction, note: str | None = None) -> None:
        """A line in the history: the system's, or a staff action's with its signer and signature."""
        if isinstance(by, StaffAction):
            signed = by.signature
            self._view.history.append(HistoryEntry(
                at=workflow.now(), action=action, by=by.by, note=note, key_id=signed.key_id if signed else None,
                signed_at=signed.signed_at if signed else None, nonce=signed.nonce if signed else None))
        else:
            self._view.history.append(HistoryEntry(at=workflow.now(), action=action, by=by, note=note))

    def _authorise(self, action_name: str, action: StaffAction) -> None:
        """Refuses (NotAuthorised) unless a registered person whose role allows it signed this action for
        this complaint, and the signature was not used before (complaints/staff.py)."""
        used = {entry.nonce for entry in self._view.history if entry.nonce}
        try:
            info = workflow.info()
            authorise(staff_register.current(), info.workflow_id, info.first_execution_run_id,
                      workflow.current_update_info().name, action_name, action, used)
        except NotAuthorised as err:
            raise ApplicationError(str(err), type=NOT_AUTHORISED, non_retryable=True) from None

    def _changed(self) -> None:
        """The state changed: a timer waiting on the old state is reconsidered and the dossier written."""
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
            if self._acknowledging() and all(d.at > workflow.now() + ACKNOWLEDGEMENT_IN_FLIGHT for d in upcoming):
                # Its outcome moves the deadlines, and it comes within the letter's attempts (MAIL_RETRY):
                # sent, refused, or the mail server noted failing. No timer and no upsert until then.
                self._stop_timer()
                await workflow.wait_condition(lambda: not self._acknowledging() or self._view.phase is not phase)
                continue
            self._set_next(upcoming[0] if upcoming else None)
            if not upcoming:
                self._stop_timer()
                if until_due:
                    return
                version = self._version
                await workflow.wait_condition(lambda: self._version != version or self._view.phase is not phase)
                continue
            nxt = upcoming[0]
            if await self._wait_for_change(nxt.at, nxt.summary):
                continue
            nxt.fire()
            self._changed()
            if until_due and len(upcoming) == 1:
                return
        self._stop_timer()  # the phase is over, and its deadlines with it

    def _acknowledging(self) -> bool:
        """A new complaint's acknowledgement is on its way (lean intake): not yet sent, refused, or waiting
        for a failing mail server."""
        return self._lean and self._view.acknowledged_at is None and self._view.mail_failing_since is None \
            and any(isinstance(m, SendLetterInput) and m.kind is LetterKind.ACKNOWLEDGEMENT for m in self._mail)

    async def _wait_for_change(self, at: datetime, summary: str) -> bool:
        """Wait until ``at``; True if the state changed first, False once ``at`` has come.

        Lean actions: the deadline's timer outlives a change that leaves it where it was (a letter sent,
        a measure recorded), so a change costs no cancelled and restarted timer."""
        delay = at - workflow.now()
        if delay <= timedelta(0):
            return False
        version = self._version
        if not self._lean_actions:
            try:
                await workflow.wait_condition(lambda: self._version != version, timeout=delay,
                                              timeout_summary=summary)
                return True
            except asyncio.TimeoutError:
                return False
        if self._timer is None or self._timer[0] != (at, summary):
            self._stop_timer()
            self._timer = ((at, summary), asyncio.create_task(workflow.sleep(delay, summary=summary)))
        timer = self._timer[1]
        await workflow.wait_condition(lambda: self._version != version or timer.done())
        if self._version != version:
            return True  # the next deadline is recomputed from the new state (this timer kept if it stays)
        self._timer = None
        return False

    def _stop_timer(self) -> None:
        """No deadline is waited for any more (or another one is): its timer is cancelled."""
        if self._timer is not None:
            if not self._timer[1].done():
                self._timer[1].cancel()
            self._timer = None

    def _set_next(self, deadline: _Deadline | None) -> None:
        v = self._view
        at = deadline.at if deadline else None
        for_ = deadline.summary if deadline else None
        v.next_deadline, v.next_deadline_for = at, for_
        if self._published != (v.phase, at, open_alerts(v, self._closed_letters), tuple(v.missing), v.product):
            self._publish()

    def _publish(self, now: bool = False) -> None:
        """Keep the search attributes and the Web UI's current details in step with the state: at once, or
        (lean actions, unless ``now``) by ``_publisher`` as the workflow task ends, once for all its changes."""
        if self._lean_actions and not now:
            self._publish_due = True
            return
        self._publish_due = False
        v = self._view
        alerts = open_alerts(v, self._closed_letters)
        self._published = (v.phase, v.next_deadline, alerts, tuple(v.missing), v.product)
        updates = [
            sa.PHASE.value_set(v.phase.value),
            sa.ROUTE.value_set("formal" if v.formal_received_at else "informal"),
            sa.PRODUCT.value_set(v.product) if v.product else sa.PRODUCT.value_unset(),
            sa.OUTCOME.value_set(v.outcome.value) if v.outcome else sa.OUTCOME.value_unset(),
            sa.NEXT_DEADLINE.value_set(v.next_deadline) if v.next_deadline else sa.NEXT_DEADLINE.value_unset(),
            sa.OPEN_ALERTS.value_set(alerts) if alerts else sa.OPEN_ALERTS.value_unset(),
            # Only on complaints that ever lacked minimum contents: older histories upserted without it.
            *([sa.INCOMPLETE.value_set(bool(v.missing))] if self._ever_incomplete else []),
        ]
        if self._lean:  # only what changed (the intake set the first ones when it started the complaint)
            current = workflow.info().typed_search_attributes
            updates = [u for u in updates if current.get(u.key) != u.value]
        if updates:
            workflow.upsert_search_attributes(updates)
        last = v.history[-1]
        details = [f"**Phase:** {v.phase.value}"]
        if v.missing:
            details.append(f"**Missing:** {', '.join(v.missing)}")
        if v.outcome:
            details.append(f"**Outcome:** {v.outcome.value}")
        if v.next_deadline:
            details.append(f"**Next deadline:** {v.next_deadline.isoformat()} ({v.next_deadline_for})")
        details.append(f"**Last action:** {last.action} by {last.by} at {last.at.isoformat()}")
        workflow.set_current_details("\n\n".join(details))

    async def _publisher(self) -> None:
        """Publish what changed, once per workflow task (its condition is checked after everything else the
        task woke has run): a staff action that ends a phase and starts the next is one upsert, not two."""
        while True:
            await workflow.wait_condition(lambda: self._publish_due)
            self._publish(now=True)

    # ======================================================== letters and alerts

    def _letter(self, kind: LetterKind, *, note: str | None = None, outcome: Outcome | None = None,
                motivation: str | None = None, mediator: str | None = None,
                consequences: list[str] | None = None, missing: list[str] | None = None,
                automatic: bool = False) -> None:
        """Queue a letter to the complainant; the post room sends it (the terms as they stand now).

        A complaint that came by mail gets its letters in the same conversation: In-Reply-To the
        complainant's mail, References that mail and our earlier letters.
        """
        s, d = self._submission, self._view.deadlines
        assert s is not None
        sequence = self._next_sequence(kind)
        thread = s.reference if s.channel is Channel.EMAIL and s.reference and _MESSAGE_ID.fullmatch(s.reference) \
            else None
        earlier = [letter.message_id for letter in self._view.letters if letter.message_id]
        self._mail.append(SendLetterInput(
            complaint_id=self._view.complaint_id, instance=self._instance, kind=kind, sequence=sequence,
            recipient=Recipient(name=s.complainant.name, email=str(s.complainant.email)),
            product=s.product, product_code=self._view.product if self._view.product_is_code else None,
            submitted_on=s.submitted_on,
            received_at=self._view.formal_received_at or self._view.received_at,
            acknowledge_by=d.acknowledge_by, resolve_by=d.resolve_by, consequences_by=d.consequences_by,
            note=note, outcome=outcome, motivation=motivation, mediator=mediator,
            consequences=consequences or [], missing=missing or [],
            in_reply_to=thread, references=([thread] if thread else []) + earlier,
            automatic=automatic or kind is LetterKind.ACKNOWLEDGEMENT))

    def _next_sequence(self, kind: LetterKind) -> int:
        """The number of the next letter of ``kind``: after those sent or tried, and those waiting."""
        return 1 + sum(1 for m in self._mail if isinstance(m, (SendLetterInput, StoredLetterInput))
                       and m.kind is kind) + sum(1 for letter in self._view.letters if letter.kind is kind)

    def _alert_when(self, at: datetime, kind: AlertKind, summary: str, about: datetime | None = None) -> _Deadline:
        """A deadline that alerts the director about ``about`` (default: the deadline itself)."""
        return _Deadline(at, summary, lambda: self._alert(kind, at if about is None else about))

    def _alert(self, kind: AlertKind, deadline: datetime | None = None) -> None:
        """Record an alert and queue its mail to the director (the caller marks the state changed)."""
        sequence = 1 + sum(1 for a in self._view.alerts if a.kind is kind)
        workflow.logger.info("alert raised", extra={"kind": kind.value, "sequence": sequence})
        self._count(metrics.ALERTS, kind=kind.value)
        missed = _MISSED_BY_ALERT.get(kind)
        if missed is not None and sequence == 1:  # a second resolution-overdue is the same miss
            self._deadline(missed, metrics.MISSED)
        self._view.alerts.append(AlertRecord(kind=kind, at=workflow.now(), sequence=sequence, deadline=deadline))
        self._record(f"alert {kind.value}", "system")
        (self._alerts_out if self._separate_alerts else self._mail).append(SendAlertInput(
            complaint_id=self._view.complaint_id, instance=self._instance, kind=kind, sequence=sequence,
            product=self._view.product, phase=self._view.phase, deadline=deadline))

    async def _post_room(self, queue: list[_Outgoing]) -> None:
        """Send the queue's letters (or alerts) in order, each once, retrying until delivered.

        An item leaves the queue only once it is sent (or refused for good), so an empty queue
        means nothing is in flight.
        """
        while True:
            await workflow.wait_condition(lambda: bool(queue) and not self._erasing)
            item = queue[0]
            letters = queue is self._mail
            if letters:
                self._sending = True
            if isinstance(item, (SendLetterInput, StoredLetterInput)):
                await self._send_letter(item)
            else:
                await self._send_alert(item)
            queue.pop(0)
            if letters:
                self._sending = False

    async def _send_letter(self, letter: SendLetterInput | StoredLetterInput) -> None:
        """Send a letter (written from the complaint, or, in the retention run, from its row in the dossier)."""
        stored = isinstance(letter, StoredLetterInput)
        record = LetterRecord(kind=letter.kind, sequence=letter.sequence,
                              to="" if isinstance(letter, StoredLetterInput) else letter.recipient.email,
                              status="sent")
        while True:
            # The letter records itself in the dossier as the next version if, by the time it is sent, the dossier
            # holds the state it went from. Lean actions: every letter, and one whose state the dossier has not
            # seen yet takes it along (_dossier_due); the lean intake: the acknowledgement, if already written.
            base, sending = self._version, letter
            carry = False
            if isinstance(letter, SendLetterInput) and (self._lean_actions or (
                    self._lean and letter.kind is LetterKind.ACKNOWLEDGEMENT
                    and self._view.acknowledged_at is None and self._dossier_synced == base)):
                carry = self._lean_actions and self._dossier_synced != base
                sending = letter.model_copy(update={"dossier_version": base + 1,
                                                    "state": self._dossier_facts() if carry else None})
                self._carrying = base if carry else None
            recorded_as: int | None = None
            try:
                sent = await workflow.execute_activity(
                    SEND_STORED_LETTER if stored else SEND_LETTER, sending, result_type=LetterSent,
                    start_to_close_timeout=ACTIVITY_TIMEOUT, retry_policy=MAIL_RETRY,
                    summary=f"send {letter.kind.value} letter" + (" from the dossier" if stored else ""))
            except ActivityError as err:
                # Whether its state was written is not known: the dossier's writer writes it (again).
                self._carrying = None
                _stop_if_cancelled(err)
                if await self._mail_server_failing(err):
                    continue  # the server failed every attempt: waited, and tried again
                uncertain = _cause_type(err) == UNCERTAIN
                record.status, record.error = ("uncertain" if uncertain else "failed"), failure_reason(err)
                if isinstance(letter, SendLetterInput):
                    self._undelivered[letter.kind] = letter
                self._view.letters.append(record)
                if uncertain:
                    self._record(f"letter {letter.kind.value} uncertain", "system", record.error)
                    self._alert(AlertKind.LETTER_UNCERTAIN)
                else:
                    self._record(f"letter {letter.kind.value} undeliverable", "system", record.error)
                    self._alert(AlertKind.LETTER_UNDELIVERABLE)
            else:
                if carry:  # written with the letter's row
                    self._carrying = None
                    self._dossier_synced = max(self._dossier_synced, base)
                self._mail_server_works()
                recorded_as = sent.dossier_version
                record.sent_at, record.message_id = sent.sent_at, sent.message_id
                self._view.letters.append(record)
                if isinstance(letter, SendLetterInput):
                    self._sent[sent.message_id] = letter
                if letter.kind is LetterKind.ACKNOWLEDGEMENT and self._view.acknowledged_at is None:
                    self._acknowledged(sent.sent_at)
            self._changed()
            if recorded_as is not None and recorded_as == base + 1 == self._version and self._dossier_synced == base:
                # Nothing else changed while it went, and the dossier holds the state it went from (written
                # before, or carried by this letter): the letter's activity wrote this very state.
                self._dossier_synced = recorded_as
            return

    async def _mail_server_failing(self, err: ActivityError) -> bool:
        """Every attempt of a message failed at the mail server (not a refused recipient, not an uncertain
        outcome): say so where operators look (ComplaintOpenAlerts, an ERROR line, a metric; not by mail,
        which is what fails), wait, and let the caller try again. False for a permanent answer."""
        if _cause_type(err) in (UNDELIVERABLE, UNCERTAIN, LETTER_ERASED) or \
                not self._patched(MAIL_SERVER_PATCH):
            return False
        if self._view.mail_failing_since is None:
            self._view.mail_failing_since = workflow.now()
            workflow.logger.error("the mail server keeps failing; letters and alerts wait")
            self._count(metrics.MAIL_SERVER_FAILING)
            self._changed()
            self._publish()
        await workflow.sleep(MAIL_SERVER_PAUSE,
                             summary="the mail server keeps failing: wait before trying again")
        return True

    def _mail_server_works(self) -> None:
        if self._view.mail_failing_since is not None:
            self._view.mail_failing_since = None
            self._changed()
            self._publish()

    def _acknowledged(self, sent_at: datetime) -> None:
        self._view.acknowledged_at = sent_at
        by = self._view.deadlines.acknowledge_by
        if by is not None and not self._alerted(AlertKind.ACKNOWLEDGEMENT_OVERDUE):
            # Late but before the overdue alert fired (the worker was down): still a miss.
            self._deadline(metrics.ACKNOWLEDGEMENT, metrics.MET if sent_at <= by else metrics.MISSED)

    async def _send_alert(self, alert: SendAlertInput) -> None:
        while True:
            try:
                await workflow.execute_activity(
                    SEND_ALERT, alert, result_type=AlertSent,
                    start_to_close_timeout=ACTIVITY_TIMEOUT, retry_policy=MAIL_RETRY,
                    summary=f"alert the director: {alert.kind.value}")
            except ActivityError as err:
                _stop_if_cancelled(err)
                if await self._mail_server_failing(err):
                    continue
                # The director's address is refused: the alert stays recorded in the complaint.
                self._record(f"alert {alert.kind.value} undeliverable", "system", failure_reason(err))
            else:
                self._mail_server_works()
            return

    # ================================================================ dossier

    async def _archivist(self) -> None:
        """Write the workflow's state to the PostgreSQL dossier after every change.

        ``_dossier_synced`` moves only once a write is done, so it differs from ``_version``
        while one is in flight.
        """
        while True:
            await workflow.wait_condition(self._dossier_due)
            version = self._version
            await self._dossier_activity(UPDATE_DOSSIER, self._dossier_facts(), "update the dossier")
            self._dossier_synced = max(self._dossier_synced, version)  # a letter may have carried a later one

    def _dossier_due(self) -> bool:
        """The dossier lacks the current state, and no letter carries it or is about to (lean actions: the
        letter a change wrote takes the state with it, one activity instead of two)."""
        if self._dossier_synced == self._version:
            return False
        if not self._lean_actions:
            return True
        letter_next = not self._sending and not self._erasing and bool(self._mail) \
            and isinstance(self._mail[0], SendLetterInput)
        return self._carrying != self._version and not letter_next

    def _dossier_facts(self) -> DossierFacts:
        """The state as the dossier keeps it, as of now."""
        return DossierFacts(version=self._version, view=self._snapshot(), contents=self._contents(),
                            includes_personal_data=self._submission is not None,
                            contact_email=str(self._submission.complainant.email) if self._submission
                            else self._contact_email,
                            instance=self._instance)

    def _contents(self) -> Contents | None:
        """The minimum contents as they stand, for the dossier (filled in after receipt, perhaps)."""
        s = self._submission
        if s is None:
            return None
        return Contents(organisation=s.complainant.organisation, phone=s.complainant.phone, product=s.product,
                        motivation=s.motivation)

    def _idle(self) -> bool:
        """No letter, alert or dossier write waiting or in flight."""
        return not self._mail and not self._alerts_out and self._dossier_synced == self._version

    async def _dossier_activity(self, name: str, arg: object, summary: str,
                                result_type: type | None = None):  # noqa: ANN202
        return await workflow.execute_activity(
            name, arg, result_type=result_type, start_to_close_timeout=ACTIVITY_TIMEOUT,
            retry_policy=DOSSIER_RETRY, summary=summary)

    async def _plan(self, start: datetime, term: terms.Term, what: str) -> PlannedDeadline:
        """The end of the ``term``-th working day after ``start`` (a local activity: the calendar), unless the
        dossier's calendar planned it as the dossier opened."""
        planned = self._planned_at_opening.pop((start, term.count), None)
        if planned is not None:
            return planned
        return await workflow.execute_local_activity(
            PLAN_DEADLINE, PlanDeadlinesInput(received_at=start, working_days=term.count),
            result_type=PlannedDeadline, start_to_close_timeout=CALENDAR_TIMEOUT,
            summary=f"{what} ({term.en()})")

    def _snapshot(self) -> ComplaintView:
        """The view as it is now, to hand over (an update's or query's result, an activity's input). Not a
        copy: the SDK serializes each where it is handed over, before the workflow can change anything
        (a deep copy cost every staff action two copies of its whole history)."""
        return self._view

    # ================================================================ metrics

    def _count(self, name: str, **attributes: str) -> None:
        """Count in the product metrics (nothing is counted while replaying; nothing enters history)."""
        metrics.count(workflow.metric_meter(), name, **attributes)

    def _deadline(self, which: str, result: str) -> None:
        workflow.logger.info("deadline %s %s", which, result, extra={"deadline": which, "result": result})
        metrics.deadline(workflow.metric_meter(), which, result)


#: The alerts that mean a deadline of the procedure was missed (infra/metrics.py).
_MISSED_BY_ALERT = {
    AlertKind.ACKNOWLEDGEMENT_OVERDUE: metrics.ACKNOWLEDGEMENT,
    AlertKind.RESOLUTION_OVERDUE: metrics.RESOLUTION,
    AlertKind.CONSEQUENCES_OVERDUE: metrics.CONSEQUENCES,
}

"""The complaint procedure's vocabulary as pydantic models.

Intake (what an intake service submits), the inputs of the workflow, its staff
actions (updates) and its activities, and the view staff and operators read.
Each workflow, update and activity has its own input model so that fields can
be added without breaking complaints that are already running.
"""

from __future__ import annotations

import re
from datetime import date, datetime
from enum import StrEnum
from typing import Annotated, Any

import idna
import phonenumbers
from pydantic import (
    AfterValidator,
    AwareDatetime,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    EmailStr,
    Field,
    ValidationInfo,
    field_validator,
    model_validator,
)

from complaints.calendar import end_of_day, local_date
from complaints.products import CODE as _PRODUCT_CODE
from complaints.terms import INTAKE_LOOKBACK

# --------------------------------------------------------------------------- enums


class Channel(StrEnum):
    EMAIL = "email"
    LETTER = "letter"
    CONVERSATION = "conversation"


class Route(StrEnum):
    INFORMAL = "informal"
    FORMAL = "formal"


class Role(StrEnum):
    CUSTOMER = "customer"
    EMPLOYEE = "employee"


class Phase(StrEnum):
    INFORMAL = "informal"
    FORMAL = "formal"
    DECIDED = "decided"
    MEDIATION = "mediation"
    CONSEQUENCES = "consequences"
    CLOSED = "closed"
    PURGED = "purged"


OPEN_PHASES = (Phase.INFORMAL, Phase.FORMAL, Phase.DECIDED, Phase.MEDIATION, Phase.CONSEQUENCES)


class Outcome(StrEnum):
    RESOLVED_INFORMALLY = "resolved-informally"
    UPHELD = "upheld"
    PARTIALLY_UPHELD = "partially-upheld"
    REJECTED = "rejected"
    MEDIATED = "mediated"
    WITHDRAWN = "withdrawn"


#: The outcomes staff may choose when deciding a formal complaint.
DECISION_OUTCOMES = (Outcome.UPHELD, Outcome.PARTIALLY_UPHELD, Outcome.REJECTED)


class LetterKind(StrEnum):
    ACKNOWLEDGEMENT = "acknowledgement"
    EXTENSION = "extension"
    DECISION = "decision"
    MEDIATOR_ENGAGED = "mediator-engaged"
    VERDICT = "verdict"
    INFORMAL_RESOLUTION = "informal-resolution"
    WITHDRAWAL = "withdrawal"


#: The letters a complaint closes with (its outcome, written and motivated): one that did not go out can
#: still be corrected and sent while the complaint is kept in the dossier.
CLOSING_LETTERS = frozenset({LetterKind.INFORMAL_RESOLUTION, LetterKind.WITHDRAWAL, LetterKind.DECISION,
                             LetterKind.VERDICT})


class AlertKind(StrEnum):
    INFORMAL_STALLED = "informal-stalled"
    ACKNOWLEDGEMENT_OVERDUE = "acknowledgement-overdue"
    RESOLUTION_DUE_SOON = "resolution-due-soon"
    RESOLUTION_OVERDUE = "resolution-overdue"
    CONSEQUENCES_OVERDUE = "consequences-overdue"
    LETTER_UNDELIVERABLE = "letter-undeliverable"
    MEDIATION_STALLED = "mediation-stalled"
    #: The complainant (or someone else) wrote about the complaint.
    MESSAGE_RECEIVED = "message-received"
    #: Minimum contents of the procedure still missing some working days after receipt.
    COMPLAINT_INCOMPLETE = "complaint-incomplete"
    #: A mail in the info@ mailbox could not be processed (no complaint of its own).
    MAIL_QUARANTINED = "mail-quarantined"
    #: Twice the mail server's answer to a letter was lost: it waits for staff (resend) instead of a third copy.
    LETTER_UNCERTAIN = "letter-uncertain"
    #: The mail server fails every attempt (not sent by mail: a search attribute value, a log line, a metric).
    MAIL_SERVER_FAILING = "mail-server-failing"


class MessageKind(StrEnum):
    """What a mail about a complaint is."""

    REPLY = "reply"
    AUTO_REPLY = "auto-reply"
    BOUNCE = "bounce"


#: The procedure's minimum contents that a complaint may lack when it arrives by mail; the
#: acknowledgement asks for them, and staff or the complainant's reply fill them in.
MISSING_CAN_BE = ("organisation", "phone", "product", "motivation")


# ------------------------------------------------------------------ field types

MAX_TEXT = 20_000
MAX_LINE = 200
# Any C0/C1 control character, DEL, and the Unicode line/paragraph separators.
_CONTROL_IN_LINE = re.compile(r"[\x00-\x1f\x7f-\x9f\u2028\u2029]")
# Multi-line text may hold line breaks and tabs, nothing else from the control ranges.
_CONTROL_IN_TEXT = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f]")


def _single_line(value: str) -> str:
    if _CONTROL_IN_LINE.search(value):
        raise ValueError("must be a single line without control characters (no CR, LF or tab)")
    value = value.strip()
    if not value:
        raise ValueError("must not be empty")
    return value


def _text(value: str) -> str:
    if _CONTROL_IN_TEXT.search(value):
        raise ValueError("must not contain control characters")
    value = value.strip()
    if not value:
        raise ValueError("must not be empty")
    return value


SingleLine = Annotated[str, Field(max_length=MAX_LINE), AfterValidator(_single_line)]
Text = Annotated[str, Field(max_length=MAX_TEXT), AfterValidator(_text)]


def _phone(value: str) -> str:
    try:
        number = phonenumbers.parse(value, "NL")
    except phonenumbers.NumberParseException:
        raise ValueError("is not a phone number") from None
    if not phonenumbers.is_valid_number(number):
        raise ValueError("is not a valid phone number")
    return value


Phone = Annotated[SingleLine, AfterValidator(_phone)]


def _deliverable_address(value: str) -> str:
    """An address every mail server can take: ASCII local part, the domain in its ASCII (IDNA) form."""
    local, _, domain = value.rpartition("@")
    if not local.isascii():
        raise ValueError("the part before @ must be ASCII (the mail server cannot deliver to it otherwise)")
    try:
        ascii_domain = idna.encode(domain).decode("ascii")
    except idna.IDNAError:
        raise ValueError("the domain cannot be written in ASCII") from None
    return f"{local}@{ascii_domain}"


def _no_control(value: Any) -> Any:
    if isinstance(value, str) and _CONTROL_IN_LINE.search(value):
        raise ValueError("must be a single line without control characters")
    return value


#: A code of the product catalogue (complaints/products.py): lower-case letters, digits and dashes.
ProductCode = Annotated[str, Field(pattern=f"^{_PRODUCT_CODE.pattern}$", max_length=MAX_LINE)]
Email = Annotated[EmailStr, BeforeValidator(_no_control), Field(max_length=254), AfterValidator(_deliverable_address)]

_ISO_DATE = re.compile(r"^\d{4}-\d{2}-\d{2}$")
_ISO_DATETIME = re.compile(r"^\d{4}-\d{2}-\d{2}[T ]\d{2}:\d{2}")
EARLIEST = date(2000, 1, 1)


def _iso_date(value: Any) -> Any:
    if isinstance(value, str) and not _ISO_DATE.match(value.strip()):
        raise ValueError("must be a date written YYYY-MM-DD")
    if not isinstance(value, (str, date)):
        raise ValueError("must be a date written YYYY-MM-DD")
    return value


def _iso_datetime(value: Any) -> Any:
    if value is None or isinstance(value, datetime):
        return value
    if not isinstance(value, str) or not _ISO_DATETIME.match(value.strip()):
        raise ValueError("must be an ISO-8601 date and time with offset, e.g. 2026-04-24T10:30:00+02:00")
    return value


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=False)


# ------------------------------------------------------------------------ intake


class Complainant(_Model):
    name: SingleLine
    organisation: SingleLine | None = None
    email: Email
    phone: Phone | None = None
    role: Role = Role.CUSTOMER


class ComplaintSubmission(_Model):
    """One complaint as the workflow holds it: the procedure's minimum contents.

    A complaint that came by mail may lack some of them (``MISSING_CAN_BE``): it is registered
    at once and its acknowledgement asks for what is missing. Intake services submit the whole
    minimum (:class:`IntakeSubmission`).

    Rules that depend on the current time ("not in the future") are checked only
    when validation runs with a ``{"now": datetime}`` context: at intake. Inside
    the workflow the same model is read back without that context, so replaying a
    complaint a year later never trips over the clock.
    """

    reference: Annotated[str, Field(min_length=1, max_length=MAX_LINE)] | None = None
    channel: Channel
    route: Route = Route.INFORMAL
    complainant: Complainant
    product: SingleLine | None = None
    submitted_on: Annotated[date, BeforeValidator(_iso_date)]
    received_at: Annotated[AwareDatetime | None, BeforeValidator(_iso_datetime)] = None
    description: Text
    motivation: Text | None = None

    def missing(self) -> list[str]:
        """The minimum contents still missing, in the order of ``MISSING_CAN_BE``."""
        have = {"organisation": self.complainant.organisation, "phone": self.complainant.phone,
                "product": self.product, "motivation": self.motivation}
        return [name for name in MISSING_CAN_BE if have[name] is None]

    @field_validator("reference")
    @classmethod
    def _reference_single_line(cls, value: str | None) -> str | None:
        return None if value is None else _single_line(value)

    @model_validator(mode="after")
    def _procedure_rules(self, info: ValidationInfo) -> ComplaintSubmission:
        if self.route is Route.FORMAL and self.channel is Channel.CONVERSATION:
            raise ValueError(
                "route: a formal complaint is written: channel must be email or letter, not conversation"
            )
        if self.submitted_on < EARLIEST:
            raise ValueError(f"submitted_on: must be {EARLIEST.isoformat()} or later")
        now = (info.context or {}).get("now") if info else None
        if isinstance(now, datetime):
            # Dates are Amsterdam dates: at 00:30 in Amsterdam a complaint dated today is today's.
            today = local_date(now)
            if self.submitted_on > today:
                raise ValueError("submitted_on: must not be in the future")
            if self.received_at is not None and self.received_at > now:
                raise ValueError("received_at: must not be in the future")
            # A receipt long ago would fire every deadline of the procedure at once.
            earliest = INTAKE_LOOKBACK.before(now)
            if self.received_at is not None and self.received_at < earliest:
                raise ValueError(f"received_at: more than {INTAKE_LOOKBACK.en()} ago (the earliest is "
                                 f"{local_date(earliest).isoformat()}); register an older complaint by hand")
            received_on = local_date(self.received_at) if self.received_at is not None else today
            if self.submitted_on < local_date(INTAKE_LOOKBACK.before(end_of_day(received_on))):
                raise ValueError(f"submitted_on: more than {INTAKE_LOOKBACK.en()} before the complaint was received")
        if self.received_at is not None and local_date(self.received_at) < self.submitted_on:
            raise ValueError("received_at: must not be before submitted_on")
        return self


class IntakeComplainant(Complainant):
    organisation: SingleLine
    phone: Phone


class IntakeSubmission(ComplaintSubmission):
    """A complaint as an intake service submits it (``python -m starter``): the whole minimum."""

    complainant: IntakeComplainant
    product: SingleLine
    motivation: Text


class Contents(_Model):
    """Minimum contents filled in after receipt (by staff, or by the complainant's reply)."""

    organisation: SingleLine | None = None
    phone: Phone | None = None
    product: SingleLine | None = None
    motivation: Text | None = None
    #: The catalogue's code for ``product``, matched by whoever read the text (admin.py, the mailbox).
    product_code: ProductCode | None = None

    def given(self) -> list[str]:
        return [name for name in MISSING_CAN_BE if getattr(self, name) is not None]


# ---------------------------------------------------------------- workflow input


class RetainedComplaint(_Model):
    """A closed complaint's retention run: anonymous facts only, waiting for ``purge_on``."""

    view: ComplaintView
    #: The dossier's state version, so the new run's writes are not taken as stale.
    dossier_version: int
    #: Letters still to send (the mail server was failing when the complaint closed), by their rows in the
    #: dossier; the retention run sends them.
    letters: list[StoredLetterInput] = Field(default_factory=list)
    #: Alerts to the director still to send (they hold no personal data).
    alerts: list[SendAlertInput] = Field(default_factory=list)


#: The complaint workflow's code generation that intake starts new complaints with
#: (``ComplaintWorkflowInput.generation``). A generation stands for every ``workflow.patched`` of
#: workflows/complaint.py that its code had, so a complaint of that generation takes them all without
#: recording a marker (each costs two history events, one a search-attribute upsert). 1: every patch up
#: to and including the lean staff actions. Raise it when a patch is added, once the workers run it.
COMPLAINT_GENERATION = 1


class ComplaintWorkflowInput(_Model):
    """Input of :class:`workflows.complaint.ComplaintWorkflow`.

    A new complaint carries its ``submission`` (``received_at`` set); once closed, the
    workflow continues as new with ``retained`` instead, so the year in the dossier is
    waited out by a run whose history holds no personal data.
    """

    submission: ComplaintSubmission | None = None
    retained: RetainedComplaint | None = None
    #: The catalogue's code for the submission's product, matched at intake (intake/start.py).
    product_code: ProductCode | None = None
    #: The code generation the complaint started under (``COMPLAINT_GENERATION``, set by intake/start.py;
    #: a retention run keeps its complaint's). 0: started before generations; its history's patch markers
    #: say which patches it took.
    generation: Annotated[int, Field(ge=0)] = 0

    @model_validator(mode="after")
    def _one_of(self) -> ComplaintWorkflowInput:
        if (self.submission is None) == (self.retained is None):
            raise ValueError("exactly one of submission and retained must be set")
        if self.generation > COMPLAINT_GENERATION:
            # A worker older than the intake that started it: the workflow task fails (and is tried again)
            # until a worker with this generation's code takes it.
            raise ValueError(f"generation {self.generation} is newer than this code's ({COMPLAINT_GENERATION})")
        if self.submission is not None and self.submission.received_at is None:
            raise ValueError("submission.received_at must be set before starting the workflow")
        return self


# ---------------------------------------------------------- staff actions (updates)


class Signature(_Model):
    """A staff member's signature over one action on one complaint (complaints/staff.py says what it covers)."""

    #: The id of the signer's key in the staff register (16 hex digits).
    key_id: Annotated[str, Field(pattern=r"^[0-9a-f]{16}$")]
    #: When it was signed, as the signer's clock says (recorded, never compared with the workflow's clock).
    signed_at: AwareDatetime
    #: 32 hex digits, new for each action: a signed action counts once on its complaint.
    nonce: Annotated[str, Field(pattern=r"^[0-9a-f]{32}$")]
    #: The Ed25519 signature, base64.
    value: Annotated[str, Field(pattern=r"^[A-Za-z0-9+/]{86}==$")]


class StaffAction(_Model):
    #: Who acts: the staff register's name of the person whose key signed the action.
    by: SingleLine
    signature: Signature | None = None


class ResolveInformallyInput(StaffAction):
    note: Text


class EscalateInput(StaffAction):
    reason: Text


class ExtendInput(StaffAction):
    until: date
    reason: Text


class DecideInput(StaffAction):
    outcome: Outcome
    motivation: Text

    @field_validator("outcome")
    @classmethod
    def _decision_outcome(cls, value: Outcome) -> Outcome:
        if value not in DECISION_OUTCOMES:
            raise ValueError("must be one of " + ", ".join(o.value for o in DECISION_OUTCOMES))
        return value


class DisagreeInput(StaffAction):
    note: Text


class EngageMediatorInput(StaffAction):
    mediator: SingleLine


class VerdictInput(StaffAction):
    summary: Text
    consequences: list[Text] = Field(default_factory=list, max_length=50)


class ConsequencesPickedUpInput(StaffAction):
    note: Text


class WithdrawInput(StaffAction):
    reason: Text


class MeasureInput(StaffAction):
    text: Text


class CorrectContactInput(StaffAction):
    """The complainant's corrected address (e.g. after a letter bounced)."""

    email: Email


class SetProductInput(StaffAction):
    """Correct the catalogue code the complainant's words were matched to (``admin.py set-product``)."""

    code: ProductCode


class ResendInput(StaffAction):
    """Send again a letter the mail server refused, to the (corrected) address."""

    kind: LetterKind


class RegisterInput(StaffAction):
    """Who registered a complaint that came by post or in a conversation (``admin.py register``)."""

    channel: Channel


class CompleteInput(StaffAction, Contents):
    """Fill in minimum contents the complaint arrived without (or correct them)."""

    @model_validator(mode="after")
    def _something(self) -> CompleteInput:
        if not self.given():
            raise ValueError("give at least one of organisation, phone, product, motivation")
        return self

    def contents(self) -> Contents:
        return Contents.model_validate(self.model_dump(include={*MISSING_CAN_BE, "product_code"}))


# ---------------------------------------------------------- mail about a complaint (updates)

#: A mail's reference in workflow state and history: a hash prefix of its key, nothing personal.
MailRef = Annotated[str, Field(pattern=r"^[0-9a-f]{16}$")]


class MessageReceivedInput(_Model):
    """A mail about the complaint arrived in the info@ mailbox (the mailbox workflow sends it)."""

    ref: MailRef
    #: When the mailbox received it (IMAP INTERNALDATE).
    at: AwareDatetime
    kind: MessageKind
    #: The sender's address, hashed (complaints/ids.py ``sender_hash``): the workflow tells the
    #: complainant's own address from another one without the history holding either.
    sender: Annotated[str, Field(pattern=r"^[0-9a-f]{64}$")]
    #: Minimum contents the reply gives as labelled lines (filled in only from the complainant's address).
    contents: Contents | None = None


class LetterBouncedInput(_Model):
    """A bounce in the info@ mailbox names one of the complaint's letters."""

    ref: MailRef
    at: AwareDatetime
    #: The bounced letter's Message-ID.
    message_id: str
    #: Why, without the address: the DSN status (``5.1.1``) or what the bounce says.
    reason: SingleLine


# ------------------------------------------------------------- workflow state / view


class Deadlines(_Model):
    acknowledge_by: AwareDatetime | None = None
    #: Missing minimum contents alert the director after this (complaints that came by mail).
    complete_by: AwareDatetime | None = None
    resolve_by: AwareDatetime | None = None
    consequences_by: AwareDatetime | None = None
    purge_on: AwareDatetime | None = None
    informal_stalled_at: AwareDatetime | None = None
    objection_by: AwareDatetime | None = None
    mediator_by: AwareDatetime | None = None


class LetterRecord(_Model):
    kind: LetterKind
    sequence: int
    to: str
    status: str  # "sent" | "failed"
    sent_at: AwareDatetime | None = None
    message_id: str | None = None
    error: str | None = None


class AlertRecord(_Model):
    kind: AlertKind
    at: AwareDatetime
    sequence: int
    #: The deadline the alert is about, if any.
    deadline: AwareDatetime | None = None


class Measure(_Model):
    at: AwareDatetime
    by: str
    text: str


class HistoryEntry(_Model):
    at: AwareDatetime
    action: str
    by: str
    note: str | None = None
    #: A staff action's signature: the signer's key, when they signed, and the nonce that counts once.
    key_id: str | None = None
    signed_at: AwareDatetime | None = None
    nonce: str | None = None


class MessageRecord(_Model):
    """A mail about the complaint: when, what, and whether the complainant sent it (no content)."""

    ref: str
    at: AwareDatetime
    kind: MessageKind
    from_complainant: bool


class Decision(_Model):
    outcome: Outcome
    motivation: str
    at: AwareDatetime
    within_term: bool


class Verdict(_Model):
    summary: str
    consequences: list[str]
    at: AwareDatetime


class ComplaintView(_Model):
    """What staff see of one complaint (``admin.py show``); also the workflow's state."""

    complaint_id: str
    phase: Phase
    outcome: Outcome | None = None
    route: Route
    channel: Channel
    #: The product's catalogue code (complaints/products.py); in complaints started before the
    #: catalogue (``product_is_code`` false) the complainant's words.
    product: str | None
    #: The complainant's words for the product (personal data: not in the anonymous view).
    product_text: str | None = None
    product_is_code: bool = False
    received_at: AwareDatetime
    formal_received_at: AwareDatetime | None = None
    #: Minimum contents still missing (``MISSING_CAN_BE``), e.g. ``["phone", "motivation"]``.
    missing: list[str] = Field(default_factory=list)
    deadlines: Deadlines = Field(default_factory=Deadlines)
    calendar: str | None = None
    acknowledged_at: AwareDatetime | None = None
    extensions: int = 0
    decision: Decision | None = None
    mediator: str | None = None
    verdict: Verdict | None = None
    closed_at: AwareDatetime | None = None
    letters: list[LetterRecord] = Field(default_factory=list)
    alerts: list[AlertRecord] = Field(default_factory=list)
    measures: list[Measure] = Field(default_factory=list)
    #: Mail about the complaint that arrived after it (replies, automatic replies, bounces).
    messages: list[MessageRecord] = Field(default_factory=list)
    #: Since when every attempt of a letter or alert failed at the mail server (None: it works).
    mail_failing_since: AwareDatetime | None = None
    history: list[HistoryEntry] = Field(default_factory=list)
    next_deadline: AwareDatetime | None = None
    next_deadline_for: str | None = None


class ComplaintResult(_Model):
    complaint_id: str
    outcome: Outcome | None
    closed_at: AwareDatetime | None
    purged_at: AwareDatetime


# ------------------------------------------------------------------ activity inputs


class PlanDeadlinesInput(_Model):
    received_at: AwareDatetime
    working_days: int


class PlannedDeadline(_Model):
    at: AwareDatetime
    calendar: str


class DossierFacts(_Model):
    """Everything the workflow knows, written to the dossier after each change."""

    version: int
    view: ComplaintView
    #: The complainant's current address (corrected by staff); None in a retention run.
    contact_email: str | None = None
    #: Minimum contents filled in after receipt (organisation, phone, motivation); None in a retention run.
    contents: Contents | None = None
    #: False for a retention run: its view is anonymous, so personal columns are left alone.
    includes_personal_data: bool = True
    #: As in :class:`OpenDossierInput`.
    instance: str | None = None


class DeadlinePlan(_Model):
    """A deadline of the first phase, for the dossier's calendar to plan as it opens the dossier."""

    #: The field of :class:`Deadlines` it sets.
    deadline: str
    start: AwareDatetime
    working_days: int


class OpenDossierInput(_Model):
    complaint_id: str
    submission: ComplaintSubmission
    #: The catalogue's code for the submission's product (None: before the catalogue, or no product).
    product_code: str | None = None
    #: Which complaint of this id: its workflow's first run id (the id may be used again once an erased
    #: complaint's history is gone; each keeps its own dossier rows and letters). None: before this existed.
    instance: str | None = None
    #: The first phase's working-day deadlines: planned on the worker's calendar (as the local activity
    #: ``plan_deadline`` would) and written with the row. Empty for complaints from before the lean intake.
    plan: list[DeadlinePlan] = Field(default_factory=list)
    #: The state the complaint has once ``plan`` is applied, written with the row in the same transaction
    #: (``plan``'s deadlines and calendar filled in by the activity). None: only the row (earlier complaints).
    first_state: DossierFacts | None = None


class OpenedDossier(_Model):
    """What :class:`OpenDossierInput`'s ``plan`` came to, in its order, and which calendar planned it."""

    planned: list[PlannedDeadline] = Field(default_factory=list)


class StoredLetterInput(_Model):
    """A letter sent from its row in the dossier, as it was written there when it was first attempted
    (a closed complaint's retention run holds no personal data to write it again).

    With ``copy_of``, the letter is a copy of row (kind, copy_of) sent again (``resend``) to ``to``, or,
    without it, to the dossier's current address.
    """

    complaint_id: str
    instance: str | None = None
    kind: LetterKind
    sequence: int
    copy_of: int | None = None
    #: The address staff corrected in this run (personal data: the run continues as new once the dossier
    #: holds it, and this field is then left out).
    to: str | None = None


class StageLettersInput(_Model):
    """Letters a closing complaint could not send yet (the mail server failing): written to the dossier
    as they would be sent, so that the retention run can send them by reference."""

    letters: list[SendLetterInput]


class Recipient(_Model):
    name: str
    email: str


class SendLetterInput(_Model):
    complaint_id: str
    #: As in :class:`OpenDossierInput`; part of the letter's Message-ID.
    instance: str | None = None
    kind: LetterKind
    sequence: int
    recipient: Recipient
    #: The complainant's words for the product, and its catalogue code (a letter prints the catalogue's
    #: name for a product it names, else the complainant's words).
    product: str | None
    product_code: str | None = None
    submitted_on: date
    received_at: AwareDatetime
    acknowledge_by: AwareDatetime | None = None
    resolve_by: AwareDatetime | None = None
    outcome: Outcome | None = None
    motivation: str | None = None
    note: str | None = None
    mediator: str | None = None
    consequences: list[str] = Field(default_factory=list)
    consequences_by: AwareDatetime | None = None
    #: Minimum contents the acknowledgement asks for.
    missing: list[str] = Field(default_factory=list)
    #: Threading (a complaint that came by mail): the complainant's mail and our earlier letters.
    in_reply_to: str | None = None
    references: list[str] = Field(default_factory=list)
    #: Sent by the system on its own (the acknowledgement, the automatic extension): RFC 3834.
    automatic: bool = False
    #: Record the letter in the dossier as this version (an acknowledgement: with its row's
    #: ``acknowledged_at``) in the same transaction that marks it sent, if the dossier holds the version
    #: just before it (the workflow's state was written); else the workflow's own dossier write records it.
    dossier_version: int | None = None
    #: The workflow's state, written to the dossier with the letter's row (the change that wrote the letter,
    #: a decision say, and the letter in one transaction), when no dossier write of the workflow's own has it.
    state: DossierFacts | None = None


class LetterSent(_Model):
    message_id: str
    sent_at: AwareDatetime
    #: The recipient ("" for a letter sent from the dossier: a retention run holds no address).
    to: str
    #: The dossier version as which the letter's activity recorded the letter, in the same
    #: transaction that marked the letter sent (see ``SendLetterInput.dossier_version``); else None.
    dossier_version: int | None = None


class SendAlertInput(_Model):
    complaint_id: str
    #: As in :class:`OpenDossierInput`; part of the alert's Message-ID.
    instance: str | None = None
    kind: AlertKind
    sequence: int
    product: str | None
    phase: Phase
    deadline: AwareDatetime | None = None
    detail: str | None = None


class AlertSent(_Model):
    message_id: str
    sent_at: AwareDatetime


class PurgeDossierInput(_Model):
    complaint_id: str
    #: As in :class:`OpenDossierInput`.
    instance: str | None = None


class PurgeResult(_Model):
    """The dossier's erasure record: what was erased and when, without any personal data.

    ``purged_at`` and ``erased_at`` are the same moment (``purged_at`` is the older name;
    a result recorded before the erasure record existed carries only ``purged_at``).
    """

    purged_at: AwareDatetime
    erased_at: AwareDatetime
    #: The dossier columns whose personal data was erased (e.g. ``complainant_name``).
    fields: list[str] = Field(default_factory=list)
    #: Letters whose recipient and body were cleared.
    letters_erased: int = 0
    #: History notes cleared.
    notes_erased: int = 0
    #: Mails about the complaint whose bytes, sender and subject were cleared.
    mails_erased: int = 0
    #: Attachments whose bytes and file names were cleared.
    attachments_erased: int = 0
    reason: str | None = None

    @model_validator(mode="before")
    @classmethod
    def _one_moment(cls, data: Any) -> Any:
        if isinstance(data, dict) and ("purged_at" in data) != ("erased_at" in data):
            data = dict(data)
            moment = data.get("purged_at", data.get("erased_at"))
            data.setdefault("purged_at", moment)
            data.setdefault("erased_at", moment)
        return data


# ------------------------------------------------------------------ the yearly analysis


class AnnualAnalysisInput(_Model):
    """Input of :class:`workflows.analysis.AnnualAnalysisWorkflow`.

    ``year`` None (the schedule): the calendar year before the run's start, in Europe/Amsterdam.
    ``requested_by`` None: the schedule; else the staff member who ran ``admin.py analyse``.
    """

    year: int | None = Field(default=None, ge=1970, le=9999)
    requested_by: str | None = None


class ComputeReportInput(_Model):
    year: int
    #: The run's moment (``workflow.now()``): open complaints and measure windows are judged as of it.
    as_of: AwareDatetime


class ComputedReport(_Model):
    #: The report, exactly the JSON of the contract (README, "The yearly analysis").
    report: dict[str, Any]
    #: Complaints per month (January first) by submitted route, for the chart.
    monthly: dict[str, list[int]]


class StoreReportInput(_Model):
    year: int
    run_at: AwareDatetime
    report: dict[str, Any]
    monthly: dict[str, list[int]]
    requested_by: str | None = None
    #: The run that computed it: a retried store finds the row it wrote and writes no second.
    workflow_id: str
    workflow_run_id: str


class StoredReport(_Model):
    report_id: int
    run_at: AwareDatetime


class MailReportInput(_Model):
    report_id: int


class ReportMailed(_Model):
    message_id: str
    sent_at: AwareDatetime
    to: str


class AnnualAnalysisResult(_Model):
    year: int
    report_id: int
    run_at: AwareDatetime
    report: dict[str, Any]
    message_id: str | None = None
    mailed_at: AwareDatetime | None = None
    #: Set when the mail server refused the director's address for good; the report is stored.
    mail_error: str | None = None


# ------------------------------------------------------------------ the info@ mailbox


class MailboxWorkflowInput(_Model):
    """Input of :class:`workflows.mailbox.MailboxWorkflow`: the folder it reads, and its counts so
    far (carried over when it continues as new)."""

    folder: str = Field(min_length=1, max_length=MAX_LINE)
    processed: int = 0
    quarantined: int = 0
    polls: int = 0
    last_poll: AwareDatetime | None = None


class ListMailInput(_Model):
    folder: str


class MailList(_Model):
    """The mails waiting in the folder (by UID, oldest first) and when to look again."""

    uidvalidity: int
    uids: list[int]
    poll_seconds: int


class MailOutcome(StrEnum):
    COMPLAINT = "complaint"  # a new complaint (or the one this mail already started)
    MESSAGE = "message"  # correspondence on a complaint (reply, automatic reply or bounce)
    IGNORED = "ignored"  # machine mail about nothing of ours, or our own mail
    GONE = "gone"  # no longer in the folder (an earlier attempt moved it)


class ProcessMailInput(_Model):
    folder: str
    uidvalidity: int
    uid: int


class MailProcessed(_Model):
    outcome: MailOutcome
    complaint_id: str | None = None
    #: A new complaint was started by this mail.
    created: bool = False


class QuarantineMailInput(_Model):
    folder: str
    uidvalidity: int
    uid: int
    #: Why, without any of the mail's content (e.g. "larger than MAILBOX_MAX_BYTES").
    reason: str


class MailboxAlertInput(_Model):
    """An alert to the director about the mailbox itself (no complaint, no content)."""

    kind: AlertKind
    folder: str
    uidvalidity: int
    uid: int
    reason: str


# ------------------------------------------------------------------ the daily retention sweep


class RetentionSweepInput(_Model):
    """Input of :class:`workflows.retention.RetentionSweepWorkflow` (the schedule gives none).

    ``wait``: how long to wait before sweeping (tests skip a year this way).
    """

    wait_seconds: int = Field(default=0, ge=0)


class SweepRunInput(_Model):
    #: The moment the sweep judges retention against (``workflow.now()``).
    as_of: AwareDatetime
    #: The run that sweeps: a retried sweep finds its own record.
    workflow_id: str
    workflow_run_id: str


class SweptDossier(_Model):
    complaint_id: str
    #: What became of its workflow ("terminated", "not found", ...): why the sweep had to erase it.
    workflow: str


class SweepResult(_Model):
    sweep_id: int
    as_of: AwareDatetime
    #: Dossiers the sweep erased because their workflow could not.
    erased: list[SweptDossier] = Field(default_factory=list)
    #: Dossiers past their year whose workflow still runs: it erases them itself.
    left_to_workflows: int = 0


class MailSweepInput(_Model):
    sweep_id: int


RetainedComplaint.model_rebuild()
StageLettersInput.model_rebuild()
ComplaintWorkflowInput.model_rebuild()

"""Logs, metrics and traces of a real lifecycle: what operators see, and no personal data in it.

- Logs: a complaint goes the whole way (a greylisted acknowledgement, a decision letter the
  mail server refuses with a reply that echoes the address, a corrected address and a
  resend, mediation with a refused action, the verdict, the consequences, the erasure a
  year later). Every record, from every logger at DEBUG, is written with the product's
  JSON and text formatters and scanned for the complainant's data; every record from the
  workflow and activity loggers carries the complaint id.
- Metrics: a worker with its own runtime serves Prometheus on a free port; after three
  complaints the product counters are scraped with the expected labels and counts.
- Traces: the OTLP/HTTP exporter posts to a small local receiver; the spans of a
  submission and a staff action arrive, with no personal data in them.
"""

from __future__ import annotations

import asyncio
import gzip
import json
import logging
import re
import sys
import uuid
from contextlib import asynccontextmanager, contextmanager
from dataclasses import replace
from datetime import timedelta
from typing import Any, AsyncIterator, Iterator

import aiohttp
import asyncpg
import pytest
from aiohttp import web
from temporalio.client import WorkflowUpdateFailedError
from temporalio.contrib.opentelemetry import TracingInterceptor
from temporalio.testing import WorkflowEnvironment

from complaints.ids import instance_token
from complaints.models import (
    AlertKind,
    ConsequencesPickedUpInput,
    CorrectContactInput,
    DecideInput,
    DisagreeInput,
    EngageMediatorInput,
    LetterKind,
    Outcome,
    Phase,
    ResendInput,
    VerdictInput,
)
from devstack import smtp
from devstack.smtp import MailCatcher
from infra import observability
from infra.config import Settings, load_settings
from infra.observability import JsonFormatter, TextFormatter
from infra.signing import SigningInterceptor
from infra.temporal_client import connect
from tests.cli import REPO, cli_env
from tests.conftest import ENCRYPTION_KEYS, free_port
from tests.lifecycle import (
    advance_to,
    engage,
    eventually,
    give_verdict,
    start_formal,
    start_informal,
    started,
    to_mediation,
    wait_alert,
    wait_letter,
    wait_view,
)
from tests.processes import stop
from tests.staff import Keyring
from worker import build_worker
from workflows.complaint import ComplaintWorkflow

STAFF = "Marieke Jansen"

# A complainant whose every field is distinctive, so that any leak is found.
EMAIL = "zoe.quirijnsdochter@example.nl"
CORRECTED_EMAIL = "zoe.kwakkelhaven-nieuw@example.nl"
COMPLAINANT = {"name": "Zoë Quirijnsdochter-Vandermeulen", "organisation": "Stichting Kwakkelhaven",
               "email": EMAIL, "phone": "+31 6 24681357", "role": "customer"}
DESCRIPTION = "Beschrijving-Xylofoon: cursusleider Bartholomeus verscheen niet."
MOTIVATION = "Motivatie-Zebrapad: wij betaalden voor drie volle dagen."
DECISION = "Besluit-Pinguinmotief: de training is niet gegeven zoals beloofd."
DISAGREEMENT = "Onenigheid-Vlierbessen: klant wil bemiddeling."
MEDIATOR = "Mr. Ozewiezewoze Bemiddelaar"
VERDICT = "Uitspraak-Kattenkwaad: deels terecht."
CONSEQUENCE = "Gevolg-Sneeuwpop: training kosteloos opnieuw."
PICKED_UP = "Opgepakt-Zeepbel: nieuwe data gepland."

PERSONAL = [COMPLAINANT["name"], COMPLAINANT["organisation"], EMAIL, "zoe.quirijnsdochter",
            CORRECTED_EMAIL, "zoe.kwakkelhaven-nieuw", COMPLAINANT["phone"], "24681357", "+31624681357",
            "Quirijnsdochter", "Kwakkelhaven", DESCRIPTION, "Xylofoon", "Bartholomeus", MOTIVATION, "Zebrapad",
            DECISION, "Pinguinmotief", DISAGREEMENT, "Vlierbessen", MEDIATOR, "Ozewiezewoze", VERDICT,
            "Kattenkwaad", CONSEQUENCE, "Sneeuwpop", PICKED_UP, "Zeepbel"]

# ------------------------------------------------------------------ helpers


class Capture(logging.Handler):
    """Every record, formatted as the product formats it (JSON and text)."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.records: list[logging.LogRecord] = []
        self.json_lines: list[str] = []
        self.text_lines: list[str] = []
        self._json, self._text = JsonFormatter(), TextFormatter()

    def emit(self, record: logging.LogRecord) -> None:
        # The stand-in SMTP server (aiosmtpd's "mail.log") is not the product: production
        # mail goes to the organisation's own server.
        if record.name.startswith("mail.log"):
            return
        self.records.append(record)
        self.json_lines.append(self._json.format(record))
        self.text_lines.append(self._text.format(record))


@contextmanager
def captured_logs() -> Iterator[Capture]:
    capture = Capture()
    root = logging.getLogger()
    level = root.level
    root.addHandler(capture)
    root.setLevel(logging.DEBUG)
    observability.keep_sdk_context_off_the_message()
    try:
        yield capture
    finally:
        root.removeHandler(capture)
        root.setLevel(level)


@contextmanager
def echoing_mail_server(greylisted_once: set[str], refused: set[str]) -> Iterator[None]:
    """The SMTP server answers like Postfix: its refusals quote the recipient's address."""
    original = smtp._Handler.handle_RCPT

    async def handle_rcpt(self: Any, server: Any, session: Any, envelope: Any, address: str,
                          rcpt_options: list[str]) -> str:
        if address.lower() in refused:
            return f"550 5.1.1 <{address}>: Recipient address rejected: User unknown in virtual mailbox table"
        if address.lower() in greylisted_once:
            greylisted_once.discard(address.lower())
            return f"450 4.2.0 <{address}>: Recipient address rejected: Greylisted, try again later"
        return await original(self, server, session, envelope, address, rcpt_options)

    smtp._Handler.handle_RCPT = handle_rcpt  # type: ignore[method-assign]
    try:
        yield
    finally:
        smtp._Handler.handle_RCPT = original  # type: ignore[method-assign]


def leaks(text: str) -> list[str]:
    lowered = text.lower()
    return [p for p in PERSONAL if p in text or p.lower() in lowered]


# ------------------------------------------------------------------ logs


async def test_a_whole_lifecycle_logs_the_complaint_id_and_no_personal_data(
        env: WorkflowEnvironment, client, settings: Settings, worker, mail: MailCatcher) -> None:
    greylisted, refused = {EMAIL}, set()
    with captured_logs() as logs, echoing_mail_server(greylisted, refused):
        handle = await start_formal(client, settings, complainant=COMPLAINANT, description=DESCRIPTION,
                                    motivation=MOTIVATION)
        # Greylisted once (450, retried), then delivered.
        await wait_letter(mail, handle, LetterKind.ACKNOWLEDGEMENT)
        assert not greylisted

        # The decision letter is refused for good (550 quoting the address): alert, correct, resend.
        refused.add(EMAIL)
        await handle.execute_update(ComplaintWorkflow.decide,
                                    DecideInput(by=STAFF, outcome=Outcome.PARTIALLY_UPHELD, motivation=DECISION))
        await wait_alert(mail, handle, AlertKind.LETTER_UNDELIVERABLE)
        await wait_view(handle, lambda v: any(letter.status == "failed" for letter in v.letters))
        await handle.execute_update(ComplaintWorkflow.correct_contact,
                                    CorrectContactInput(by=STAFF, email=CORRECTED_EMAIL))
        await handle.execute_update(ComplaintWorkflow.resend, ResendInput(by=STAFF, kind=LetterKind.DECISION))
        await wait_letter(mail, handle, LetterKind.DECISION)

        # Mediation, with an action refused by a validator whose message names the mediator.
        await handle.execute_update(ComplaintWorkflow.disagree, DisagreeInput(by=STAFF, note=DISAGREEMENT))
        await handle.execute_update(ComplaintWorkflow.engage_mediator,
                                    EngageMediatorInput(by=STAFF, mediator=MEDIATOR))
        with pytest.raises(WorkflowUpdateFailedError):
            await handle.execute_update(ComplaintWorkflow.engage_mediator,
                                        EngageMediatorInput(by=STAFF, mediator=MEDIATOR))
        await handle.execute_update(ComplaintWorkflow.verdict, VerdictInput(
            by=STAFF, summary=VERDICT, consequences=[CONSEQUENCE]))
        await wait_letter(mail, handle, LetterKind.VERDICT)
        view = await handle.execute_update(ComplaintWorkflow.consequences_picked_up,
                                           ConsequencesPickedUpInput(by=STAFF, note=PICKED_UP))
        assert view.phase is Phase.CLOSED

        # A year later the personal data is erased and the workflow completes.
        await advance_to(env, handle, view.deadlines.purge_on)
        await handle.result()
        await eventually(lambda: any(r.getMessage() == "personal data erased from the dossier"
                                     for r in logs.records), what="the erasure's log line")

    # Nothing personal, in either format, from any logger.
    found = {line: leaks(line) for line in logs.json_lines + logs.text_lines if leaks(line)}
    assert not found, "personal data in the logs:\n" + "\n".join(f"{v}: {k[:300]}" for k, v in found.items())

    lines = [json.loads(line) for line in logs.json_lines]
    assert all({"ts", "level", "logger", "message"} <= set(line) for line in lines)

    # Every line from the workflow and its activities names the complaint.
    ours = [line for line in lines if line["logger"] in ("temporalio.workflow", "temporalio.activity")]
    assert ours and all(line.get("complaint_id") == handle.id for line in ours), [
        line for line in ours if line.get("complaint_id") != handle.id][:3]
    assert all("{" not in line["message"] for line in ours), "the SDK's context dict is appended to a message"

    def logged(message: str, **fields: Any) -> list[dict[str, Any]]:
        return [line for line in ours if line["message"] == message
                and all(line.get(k) == v for k, v in fields.items())]

    instance = instance_token((await handle.describe()).raw_description.workflow_execution_info.first_run_id)
    for kind, sequence in [("acknowledgement", 1), ("decision", 2), ("mediator-engaged", 1), ("verdict", 1)]:
        [sent] = logged("letter sent", kind=kind, sequence=sequence)
        assert sent["message_id"] == f"<{handle.id}.{kind}.{sequence}.{instance}@level-up.nl>"
        assert sent["activity_type"] == "send_letter"
    [refusal] = logged("letter refused by the mail server", kind="decision", sequence=1)
    assert refusal["smtp_code"] == 550 and refusal["level"] == "WARNING"
    assert logged("alert raised", kind="letter-undeliverable")
    assert logged("alert sent to the director", kind="letter-undeliverable")
    for phase in ("formal", "decided", "mediation", "consequences"):
        assert logged(f"phase {phase}", phase=phase), phase
    assert logged("closed; kept in the dossier for a year", outcome="mediated")
    assert logged("dossier opened", route="formal") and logged("dossier written")
    assert logged("deadline acknowledgement met") and logged("deadline consequences met")
    [erased] = logged("personal data erased from the dossier")
    assert erased["fields_erased"] == 11 and erased["letters_erased"] == 5
    assert logged("personal data erased; the complaint is complete", phase="purged")
    # The greylisted attempt went through the SDK's failure log: code kept, reply withheld.
    [retry] = [line for line in ours if line["message"] == "Completing activity as failed"
               and "SMTP 450" in line.get("error", "")]
    assert retry["error"] == "activities.outbox.MailServerFailing (type MailServerFailing, SMTP 450)"
    assert "[message withheld]" in retry["traceback"] and retry["attempt"] == 1


def test_exception_text_is_withheld_in_both_formats() -> None:
    import aiosmtplib

    try:
        try:
            raise aiosmtplib.SMTPRecipientsRefused([aiosmtplib.SMTPRecipientRefused(
                550, f"<{EMAIL}>: Recipient address rejected", EMAIL)])
        except aiosmtplib.SMTPException as err:
            raise RuntimeError(f"could not mail {COMPLAINANT['name']}") from err
    except RuntimeError:
        record = logging.LogRecord("complaints.test", logging.ERROR, __file__, 1, "sending failed", (),
                                   sys.exc_info())
    line = json.loads(JsonFormatter().format(record))
    text = TextFormatter().format(record)
    assert line["error"] == "RuntimeError"
    assert "aiosmtplib.errors.SMTPRecipientsRefused (SMTP 550) [message withheld]" in line["traceback"]
    assert "The above exception was the direct cause" in line["traceback"]
    assert "test_observability.py" in text and not leaks(text) and not leaks(json.dumps(line))


def test_configure_logging_writes_json_lines_at_the_configured_level(capsys: pytest.CaptureFixture[str]) -> None:
    root = logging.getLogger()
    before = (list(root.handlers), root.level)
    try:
        settings = load_settings({"COMPLAINTS_ENCRYPTION_KEYS": ENCRYPTION_KEYS, "LOG_FORMAT": "json",
                                  "LOG_LEVEL": "warning"})
        observability.configure_logging(settings)
        observability.configure_logging(settings)  # a second call replaces its handler
        assert sum(isinstance(h, observability._Handler) for h in root.handlers) == 1
        logging.getLogger("complaints.test").info("not shown")
        logging.getLogger("complaints.test").warning("shown %s", "once", extra={"kind": "decision", "recipient": EMAIL})
        [line] = capsys.readouterr().err.splitlines()
        parsed = json.loads(line)
        assert parsed["message"] == "shown once" and parsed["level"] == "WARNING"
        assert parsed["kind"] == "decision" and EMAIL not in line  # only the documented fields
        assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", parsed["ts"])
    finally:
        for handler in [h for h in root.handlers if isinstance(h, observability._Handler)]:
            root.removeHandler(handler)
        root.handlers[:] = before[0]
        root.setLevel(before[1])


@pytest.mark.parametrize("variable, value, message", [
    ("LOG_FORMAT", "yaml", "LOG_FORMAT: 'yaml' must be text or json"),
    ("LOG_LEVEL", "loud", "LOG_LEVEL: 'LOUD' must be one of DEBUG, INFO, WARNING, ERROR, CRITICAL"),
    ("METRICS_PORT", "99999", "METRICS_PORT: 99999 is not a port number"),
    ("OTEL_EXPORTER_OTLP_ENDPOINT", "collector:4318", "OTEL_EXPORTER_OTLP_ENDPOINT: 'collector:4318' must start"),
])
def test_observability_settings_are_checked_at_start(variable: str, value: str, message: str) -> None:
    from infra.config import ConfigError

    with pytest.raises(ConfigError) as info:
        load_settings({"COMPLAINTS_ENCRYPTION_KEYS": ENCRYPTION_KEYS, variable: value})
    assert str(info.value).startswith(message)


def test_only_otlp_over_http_is_accepted() -> None:
    from infra.config import ConfigError

    env = {"COMPLAINTS_ENCRYPTION_KEYS": ENCRYPTION_KEYS, "OTEL_EXPORTER_OTLP_ENDPOINT": "http://collector:4317"}
    with pytest.raises(ConfigError, match="^OTEL_EXPORTER_OTLP_PROTOCOL: 'grpc' is not supported"):
        load_settings({**env, "OTEL_EXPORTER_OTLP_PROTOCOL": "grpc"})
    assert load_settings({**env, "OTEL_EXPORTER_OTLP_PROTOCOL": "http/protobuf"}).otlp_endpoint == "http://collector:4317"
    defaults = load_settings({"COMPLAINTS_ENCRYPTION_KEYS": ENCRYPTION_KEYS})
    assert (defaults.log_format, defaults.log_level, defaults.metrics_port, defaults.otlp_endpoint) == (
        "text", "INFO", None, None)


# ------------------------------------------------------------------ metrics


def parse_prometheus(text: str) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    samples = {}
    for line in text.splitlines():
        match = re.fullmatch(r"([a-zA-Z_:][\w:]*)(?:\{(.*)\})? (\S+)", line.strip())
        if match and not line.startswith("#"):
            labels = frozenset(re.findall(r'(\w+)="((?:[^"\\]|\\.)*)"', match.group(2) or ""))
            samples[(match.group(1), labels)] = float(match.group(3))
    return samples


def value(samples: dict[tuple[str, frozenset[tuple[str, str]]], float], name: str, **labels: str) -> float:
    """The sum over the samples of ``name`` whose labels include ``labels``."""
    wanted = set(labels.items())
    return sum(v for (n, ls), v in samples.items() if n == name and wanted <= ls)


async def scrape(port: int) -> str:
    async with aiohttp.ClientSession() as session, session.get(f"http://127.0.0.1:{port}/metrics") as response:
        assert response.status == 200
        return await response.text()


async def test_the_metrics_endpoint_serves_product_and_sdk_metrics(
        env: WorkflowEnvironment, client, settings: Settings, pool: asyncpg.Pool, mail: MailCatcher) -> None:
    port = free_port()
    worker_settings = replace(settings, temporal_address=env.client.service_client.config.target_host,
                              metrics_port=port, metrics_host="127.0.0.1")
    worker_client = await connect(worker_settings, runtime=observability.build_runtime(worker_settings))
    async with build_worker(worker_client, worker_settings, pool):
        # All met: acknowledged at once, decided in time, consequences picked up in time.
        punctual = await start_formal(client, settings)
        await to_mediation(punctual, mail)
        await engage(punctual)
        await give_verdict(punctual, ["Training kosteloos opnieuw aanbieden."])
        await wait_letter(mail, punctual, LetterKind.VERDICT)
        await punctual.execute_update(ComplaintWorkflow.consequences_picked_up,
                                      ConsequencesPickedUpInput(by=STAFF, note="Ingepland."))

        # Late: the term runs out twice (one miss), then the consequences are overdue.
        late = await start_formal(client, settings)
        view = await started(late)
        await wait_letter(mail, late, LetterKind.ACKNOWLEDGEMENT)
        await advance_to(env, late, view.deadlines.resolve_by - timedelta(hours=24))
        view = await wait_view(late, lambda v: v.extensions == 1, "the default extension")
        await advance_to(env, late, view.deadlines.resolve_by)
        await wait_alert(mail, late, AlertKind.RESOLUTION_OVERDUE, count=2)
        await late.execute_update(ComplaintWorkflow.decide, DecideInput(
            by=STAFF, outcome=Outcome.REJECTED, motivation="Te laat, maar afgewezen."))
        await late.execute_update(ComplaintWorkflow.disagree, DisagreeInput(by=STAFF, note="Niet akkoord."))
        await engage(late)
        view = await give_verdict(late, ["Excuusbrief sturen."])
        await advance_to(env, late, view.deadlines.consequences_by)
        await wait_alert(mail, late, AlertKind.CONSEQUENCES_OVERDUE)

        informal = await start_informal(client, settings)
        await started(informal)

        async def all_counted() -> dict[Any, float]:
            samples = parse_prometheus(await scrape(port))
            assert value(samples, "complaint_deadlines", deadline="consequences", result="missed") == 1
            assert value(samples, "complaints_opened", route="informal") == 1
            assert value(samples, "complaint_letters_sent", kind="verdict") == 2
            return samples
        samples = await eventually(all_counted, timeout=30, what="the product metrics")
    text = await scrape(port)

    q = {"task_queue": settings.task_queue, "namespace": "default"}
    assert value(samples, "complaints_opened", route="formal", workflow_type="ComplaintWorkflow", **q) == 2
    assert value(samples, "complaints_opened", route="informal", **q) == 1
    for kind, count in [("acknowledgement", 2), ("decision", 2), ("extension", 1), ("mediator-engaged", 2),
                        ("verdict", 2)]:
        assert value(samples, "complaint_letters_sent", kind=kind, activity_type="send_letter", **q) == count, kind
    for kind, count in [("resolution-overdue", 2), ("consequences-overdue", 1)]:
        assert value(samples, "complaint_alerts", kind=kind, **q) == count, kind
    assert value(samples, "complaint_alerts", kind="resolution-due-soon", **q) == 2  # once per term
    for deadline, result, count in [("acknowledgement", "met", 2), ("acknowledgement", "missed", 0),
                                    ("resolution", "met", 1), ("resolution", "missed", 1),
                                    ("consequences", "met", 1), ("consequences", "missed", 1)]:
        assert value(samples, "complaint_deadlines", deadline=deadline, result=result, **q) == count, \
            (deadline, result)
    # The SDK's own metrics are on the same endpoint.
    assert value(samples, "temporal_workflow_continue_as_new", workflow_type="ComplaintWorkflow", **q) == 1
    assert value(samples, "temporal_request", operation="RespondWorkflowTaskCompleted") >= 1
    assert value(samples, "temporal_activity_execution_latency_count", activity_type="send_letter") >= 1
    assert "# HELP complaint_deadlines Procedure deadlines met or missed, by deadline" in text
    assert not leaks(text) and "complaint-" not in text  # no complaint ids as labels either


async def test_the_worker_process_logs_json_and_serves_metrics(env: WorkflowEnvironment, settings: Settings) -> None:
    """``python worker.py`` as operators run it: LOG_FORMAT=json on stderr, METRICS_PORT served."""
    port = free_port()
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "worker.py", cwd=REPO, stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.PIPE,
        env=cli_env(settings, env.client.service_client.config.target_host, LOG_FORMAT="json",
                    METRICS_PORT=str(port), METRICS_HOST="127.0.0.1"))
    try:
        async def polling() -> bool:
            try:
                return "temporal_num_pollers" in await scrape(port)
            except aiohttp.ClientError:
                return False
        await eventually(polling, timeout=60, what="the worker's metrics endpoint")
    finally:
        await stop(proc)
    assert proc.stderr is not None
    lines = [json.loads(line) for line in (await proc.stderr.read()).decode().splitlines()]
    messages = [line["message"] for line in lines]
    assert f"metrics on http://127.0.0.1:{port}/metrics" in messages
    assert f"worker running on task queue '{settings.task_queue}' (namespace 'default')" in messages
    assert "stopping: finishing tasks in progress" in messages
    assert all(line["logger"] for line in lines)


# ------------------------------------------------------------------ traces


@asynccontextmanager
async def otlp_receiver() -> AsyncIterator[tuple[str, list[bytes]]]:
    """A stand-in OpenTelemetry collector: OTLP/HTTP protobuf on /v1/traces, bodies kept."""
    bodies: list[bytes] = []

    async def traces(request: web.Request) -> web.Response:
        body = await request.read()
        if request.headers.get("Content-Encoding") == "gzip":
            body = gzip.decompress(body)
        assert request.headers.get("Content-Type") == "application/x-protobuf"
        bodies.append(body)
        return web.Response(body=b"", content_type="application/x-protobuf")

    app = web.Application()
    app.router.add_post("/v1/traces", traces)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    try:
        yield f"http://127.0.0.1:{port}", bodies
    finally:
        await runner.cleanup()


def spans_in(bodies: list[bytes]) -> list[Any]:
    from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

    found = []
    for body in bodies:
        request = ExportTraceServiceRequest.FromString(body)
        for resource in request.resource_spans:
            service = {a.key: a.value.string_value for a in resource.resource.attributes}["service.name"]
            for scope in resource.scope_spans:
                found.extend((service, span) for span in scope.spans)
    return found


def test_tracing_is_off_unless_an_otlp_endpoint_is_set() -> None:
    base = {"COMPLAINTS_ENCRYPTION_KEYS": ENCRYPTION_KEYS}
    assert observability.tracing_interceptors(load_settings(base)) == []
    on = load_settings({**base, "OTEL_EXPORTER_OTLP_ENDPOINT": "http://collector:4318"})
    [interceptor] = observability.tracing_interceptors(on)
    assert isinstance(interceptor, TracingInterceptor)
    assert on.otel_service_name == "level-up-complaints"


async def test_a_submission_and_a_staff_action_are_traced_without_personal_data(
        env: WorkflowEnvironment, settings: Settings, pool: asyncpg.Pool, mail: MailCatcher) -> None:
    async with otlp_receiver() as (endpoint, bodies):
        traced = replace(settings, temporal_address=env.client.service_client.config.target_host,
                         otlp_endpoint=endpoint, otel_service_name=f"complaints-test-{uuid.uuid4().hex[:6]}")
        # intake and staff use the same connect(); staff sign their actions (tests/staff.py)
        traced_client = await connect(traced, interceptors=[SigningInterceptor(Keyring())])
        # The first attempt's failure (a 450 that quotes the address) is recorded on its span.
        with echoing_mail_server(greylisted_once={EMAIL}, refused=set()):
            async with build_worker(traced_client, traced, pool):
                handle = await start_formal(traced_client, traced, complainant=COMPLAINANT,
                                            description=DESCRIPTION, motivation=MOTIVATION)
                await wait_letter(mail, handle, LetterKind.ACKNOWLEDGEMENT)
        async with build_worker(traced_client, traced, pool):
            await handle.execute_update(ComplaintWorkflow.decide, DecideInput(
                by=STAFF, outcome=Outcome.UPHELD, motivation=DECISION))
            await wait_letter(mail, handle, LetterKind.DECISION)
            with pytest.raises(WorkflowUpdateFailedError):  # refused; its message names nobody here,
                await handle.execute_update(ComplaintWorkflow.decide, DecideInput(  # but it is an error span
                    by=STAFF, outcome=Outcome.UPHELD, motivation=DECISION))
            await handle.terminate("test over")
        provider = observability.tracer_provider(traced)
        assert await asyncio.to_thread(provider.force_flush, 10_000)

        def names() -> set[str]:
            return {span.name for service, span in spans_in(bodies) if service == traced.otel_service_name}
        await eventually(lambda: {"StartWorkflow:ComplaintWorkflow", "RunWorkflow:ComplaintWorkflow"} <= names(),
                         what="the workflow's spans")
        assert {"StartActivity:send_letter", "RunActivity:send_letter", "StartWorkflowUpdate:decide",
                "HandleUpdate:decide", "ValidateUpdate:decide"} <= names(), names()
        ids = {a.value.string_value for _, span in spans_in(bodies) for a in span.attributes
               if a.key == "temporalWorkflowID"}
        assert handle.id in ids
        failures = [{a.key: a.value.string_value for a in event.attributes}
                    for _, span in spans_in(bodies) if span.name == "RunActivity:send_letter"
                    for event in span.events if event.name == "exception"]
        assert failures == [{"exception.type": "activities.outbox.MailServerFailing", "exception.escaped": "False"}]
        raw = b"".join(bodies)
        assert not [p for p in PERSONAL if p.encode() in raw or p.lower().encode() in raw.lower()]
    provider.shutdown()

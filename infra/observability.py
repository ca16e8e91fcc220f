"""Logs, metrics and traces for operators, without personal data.

- :func:`configure_logging`: one line per record on stderr, readable text or JSON
  (``LOG_FORMAT``), with the complaint id on every line from workflows and activities.
  Exception messages are never written: SMTP replies, PostgreSQL errors and validation
  messages can quote a name or an address. A traceback keeps its frames and exception
  types and only the parts known to be safe (an SMTP code, a SQLSTATE, an OS error).
- :func:`build_runtime`: the worker's Temporal runtime, with the Prometheus endpoint on
  ``METRICS_PORT`` and the SDK core's own log lines routed through Python logging.
- :func:`tracing_interceptors`: OpenTelemetry tracing over OTLP/HTTP when
  ``OTEL_EXPORTER_OTLP_ENDPOINT`` is set; OpenTelemetry is imported only then.

Nothing happens at import: each process calls these from its ``main``.
"""

from __future__ import annotations

import json
import logging
import sys
import traceback
from datetime import datetime, timezone
from types import TracebackType
from typing import IO, TYPE_CHECKING, Any, Sequence

from temporalio import activity, workflow
from temporalio.exceptions import ApplicationError
from temporalio.runtime import (
    LogForwardingConfig,
    LoggingConfig,
    PrometheusConfig,
    Runtime,
    TelemetryConfig,
    TelemetryFilter,
)
from temporalio.service import RPCError

from infra.config import ConfigError, Settings

if TYPE_CHECKING:
    from temporalio.client import Interceptor

COMPLAINT_WORKFLOW = "ComplaintWorkflow"

#: Fields a log call may add with ``extra={...}``; anything else passed that way is not
#: written, so nothing reaches the log by accident.
FIELDS = ("phase", "route", "outcome", "kind", "sequence", "message_id", "version", "smtp_code",
          "deadline", "result", "fields_erased", "letters_erased", "notes_erased", "mails_erased",
          "attachments_erased", "outcome_of_mail", "folder", "uid", "new_complaint", "stage")

# ------------------------------------------------------------------ logging


def configure_logging(settings: Settings, stream: IO[str] | None = None) -> logging.Handler:
    """Send every log record to ``stream`` (stderr) in the configured format; returns the handler.

    Replaces a handler installed by an earlier call; other handlers are left alone.
    """
    handler = _Handler(stream if stream is not None else sys.stderr)
    handler.setFormatter(formatter(settings.log_format))
    root = logging.getLogger()
    for old in [h for h in root.handlers if isinstance(h, _Handler)]:
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(settings.log_level)
    # Libraries that narrate every step at INFO (flufl.bounce names each bounce detector it runs).
    for chatty in _CHATTY:
        logging.getLogger(chatty).setLevel(max(logging.WARNING, root.level))
    keep_sdk_context_off_the_message()
    return handler


_CHATTY = ("flufl.bounce",)


def formatter(log_format: str) -> logging.Formatter:
    return JsonFormatter() if log_format == "json" else TextFormatter()


def keep_sdk_context_off_the_message() -> None:
    """The SDK's workflow and activity loggers append their context dict to each message by
    default; the formatters here write it as fields (``complaint_id`` ...) instead."""
    workflow.logger.workflow_info_on_message = False
    activity.logger.activity_info_on_message = False


class _Handler(logging.StreamHandler):  # type: ignore[type-arg]
    """The handler :func:`configure_logging` installs (so a second call replaces it)."""


def context_fields(record: logging.LogRecord) -> dict[str, Any]:
    """Which complaint (workflow) and which activity a record comes from, if any."""
    wf: dict[str, Any] | None = getattr(record, "temporal_workflow", None)
    act: dict[str, Any] | None = getattr(record, "temporal_activity", None)
    if wf is None and act is None and activity.in_activity():  # a module logger inside an activity
        info = activity.info()
        act = {"workflow_id": info.workflow_id, "workflow_type": info.workflow_type,
               "workflow_run_id": info.workflow_run_id, "activity_type": info.activity_type,
               "attempt": info.attempt}
    fields: dict[str, Any] = {}
    if wf is not None:
        _workflow_id(fields, wf.get("workflow_type"), wf.get("workflow_id"))
        fields.update(workflow_type=wf.get("workflow_type"), run_id=wf.get("run_id"))
        if wf.get("update_name"):
            fields["update"] = wf["update_name"]
    elif act is not None:
        _workflow_id(fields, act.get("workflow_type"), act.get("workflow_id"))
        fields.update(workflow_type=act.get("workflow_type"), run_id=act.get("workflow_run_id"),
                      activity_type=act.get("activity_type"), attempt=act.get("attempt"))
    return {k: v for k, v in fields.items() if v is not None}


def _workflow_id(fields: dict[str, Any], workflow_type: str | None, workflow_id: str | None) -> None:
    # The complaint id is the workflow id: a hash prefix, no personal data (complaints/ids.py).
    fields["complaint_id" if workflow_type == COMPLAINT_WORKFLOW else "workflow_id"] = workflow_id


def extra_fields(record: logging.LogRecord) -> dict[str, Any]:
    found = {}
    for name in FIELDS:
        value = record.__dict__.get(name)
        if value is not None:
            found[name] = value if isinstance(value, (str, int, float, bool)) else str(value)
    return found


class JsonFormatter(logging.Formatter):
    """One JSON object per line: ts, level, logger, message, context and fields, exception."""

    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, Any] = {
            "ts": _timestamp(record),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        line.update(context_fields(record))
        line.update(extra_fields(record))
        if record.exc_info and record.exc_info[1] is not None:
            line["error"] = describe_exception(record.exc_info[1])
            line["traceback"] = safe_traceback(record.exc_info[1])
        elif record.exc_text:
            line["error"] = "(exception text withheld)"
        if record.stack_info:
            line["stack"] = record.stack_info
        return json.dumps(line, ensure_ascii=False, default=str)


class TextFormatter(logging.Formatter):
    """``2026-01-05T09:30:00.123Z INFO logger: message key=value ...`` and a safe traceback."""

    def format(self, record: logging.LogRecord) -> str:
        fields = {**context_fields(record), **extra_fields(record)}
        text = f"{_timestamp(record)} {record.levelname} {record.name}: {record.getMessage()}"
        if fields:
            text += " " + " ".join(f"{k}={v}" for k, v in fields.items())
        if record.exc_info and record.exc_info[1] is not None:
            text += "\n" + safe_traceback(record.exc_info[1])
        if record.stack_info:
            text += "\n" + record.stack_info
        return text


def _timestamp(record: logging.LogRecord) -> str:
    moment = datetime.fromtimestamp(record.created, timezone.utc)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{int(record.msecs):03d}Z"


def describe_exception(exc: BaseException) -> str:
    """The exception's type and the parts of it known to hold no personal data."""
    kind = type(exc)
    name = kind.__qualname__ if kind.__module__ == "builtins" else f"{kind.__module__}.{kind.__qualname__}"
    return f"{name}{_safe_detail(exc)}"


def _safe_detail(exc: BaseException) -> str:
    if isinstance(exc, ApplicationError):
        # The mail activities' failures carry the SMTP code they answer (never the reply's text).
        code = getattr(exc, "code", None)
        return (f" (type {exc.type}{', non-retryable' if exc.non_retryable else ''}"
                f"{f', SMTP {code}' if isinstance(code, int) else ''})")
    if isinstance(exc, RPCError):
        return f" ({exc.status.name})"
    if type(exc).__module__.startswith("aiosmtplib"):
        # SMTP replies can echo the recipient ("550 <jan@example.nl> unknown"): the code only.
        recipients = getattr(exc, "recipients", None)
        codes = [r.code for r in recipients] if isinstance(recipients, list) else [getattr(exc, "code", None)]
        codes = [c for c in codes if isinstance(c, int)]
        return f" (SMTP {', '.join(map(str, codes))})" if codes else ""
    sqlstate = getattr(exc, "sqlstate", None)
    if isinstance(sqlstate, str):  # asyncpg: the message can quote a value, the SQLSTATE cannot
        return f" (SQLSTATE {sqlstate})"
    if isinstance(exc, OSError) and exc.strerror:
        return f" ({exc.strerror})"
    return ""


def safe_traceback(exc: BaseException) -> str:
    """Like Python's traceback, chained exceptions included, but each exception is written as
    :func:`describe_exception` (its message withheld)."""
    newest_first: list[tuple[BaseException, str | None]] = []  # (exception, how it follows the older one)
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        older, link = None, None
        if current.__cause__ is not None:
            older, link = current.__cause__, _CAUSE
        elif current.__context__ is not None and not current.__suppress_context__:
            older, link = current.__context__, _CONTEXT
        newest_first.append((current, link))
        current = older
    parts = []
    for item, link in reversed(newest_first):
        if link:
            parts.append(f"\n\n{link}\n\n")
        parts.append(f"{_frames(item.__traceback__)}{describe_exception(item)} [message withheld]")
    return "".join(parts)


_CAUSE = "The above exception was the direct cause of the following exception:"
_CONTEXT = "During handling of the above exception, another exception occurred:"


def _frames(tb: TracebackType | None) -> str:
    if tb is None:
        return ""
    return "Traceback (most recent call last):\n" + "".join(traceback.format_tb(tb))


# ------------------------------------------------------------------ metrics


def build_runtime(settings: Settings) -> Runtime:
    """The worker's runtime: the Prometheus endpoint when ``METRICS_PORT`` is set, and the SDK
    core's warnings forwarded to the ``temporalio.core`` logger (so they are formatted too)."""
    metrics, bind = None, ""
    if settings.metrics_port is not None:
        host = settings.metrics_host
        bind = f"[{host}]:{settings.metrics_port}" if ":" in host else f"{host}:{settings.metrics_port}"
        metrics = PrometheusConfig(bind_address=bind)
    try:
        return Runtime(telemetry=TelemetryConfig(
            logging=LoggingConfig(
                filter=TelemetryFilter(core_level="WARN", other_level="ERROR"),
                forwarding=LogForwardingConfig(logger=logging.getLogger("temporalio.core")),
            ),
            metrics=metrics,
        ))
    except ValueError as err:  # the SDK's "Failed starting Prometheus exporter: Address already in use"
        raise ConfigError(f"METRICS_PORT: cannot serve metrics on {bind}: {err}") from None


# ------------------------------------------------------------------ tracing

_tracer_providers: dict[tuple[str, str], Any] = {}


def tracing_interceptors(settings: Settings) -> list[Interceptor]:
    """The client interceptors for tracing: none unless ``OTEL_EXPORTER_OTLP_ENDPOINT`` is set.

    The interceptor on the client also traces the workers built on it (workflows and
    activities), continuing the trace of whoever started or updated the complaint.
    """
    if settings.otlp_endpoint is None:
        return []
    from temporalio.contrib.opentelemetry import TracingInterceptor

    return [TracingInterceptor(tracer_provider(settings).get_tracer("complaints"))]


def tracer_provider(settings: Settings) -> Any:
    """One provider per endpoint and service name in a process, flushed at exit."""
    assert settings.otlp_endpoint is not None
    key = (settings.otlp_endpoint, settings.otel_service_name)
    if key not in _tracer_providers:
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
        from opentelemetry.sdk.resources import Resource
        from opentelemetry.sdk.trace import TracerProvider
        from opentelemetry.sdk.trace.export import BatchSpanProcessor

        provider = TracerProvider(resource=Resource.create({"service.name": settings.otel_service_name}))
        exporter = OTLPSpanExporter(endpoint=settings.otlp_endpoint.rstrip("/") + "/v1/traces")
        provider.add_span_processor(BatchSpanProcessor(_WithoutExceptionText(exporter)))
        _tracer_providers[key] = provider
    return _tracer_providers[key]


def flush_traces(timeout_millis: int = 5000) -> None:
    """Export the spans still buffered; for short-lived processes that leave with ``os._exit``
    (the starter and the admin CLI), which skips the exporter's own flush at exit."""
    for provider in _tracer_providers.values():
        provider.force_flush(timeout_millis)


class _WithoutExceptionText:
    """A span exporter that drops exception messages and stack traces from spans before export.

    The SDK's tracing interceptor records failures on spans (the status description and an
    ``exception`` event with message and stack trace); a failure's message can quote a
    complainant. The exception type is kept.
    """

    def __init__(self, exporter: Any) -> None:
        self._exporter = exporter

    def export(self, spans: Sequence[Any]) -> Any:
        return self._exporter.export([_scrubbed(span) for span in spans])

    def shutdown(self) -> None:
        self._exporter.shutdown()

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        return self._exporter.force_flush(timeout_millis)


_EXCEPTION_TEXT = ("exception.message", "exception.stacktrace")


def _scrubbed(span: Any) -> Any:
    from opentelemetry.sdk.trace import Event, ReadableSpan
    from opentelemetry.trace import Status

    events = [
        Event(e.name, {k: v for k, v in (e.attributes or {}).items() if k not in _EXCEPTION_TEXT},
              e.timestamp) if e.name == "exception" else e
        for e in span.events
    ]
    status = span.status
    if status.description:
        status = Status(status.status_code, status.description.split(":", 1)[0])
    return ReadableSpan(
        name=span.name, context=span.context, parent=span.parent, resource=span.resource,
        attributes=span.attributes, events=events, links=span.links, kind=span.kind,
        status=status, start_time=span.start_time, end_time=span.end_time,
        instrumentation_scope=span.instrumentation_scope,
    )

"""What every command-line program does the same way: one line per error, and a clean, quick exit.

``admin.py``, ``python -m starter``, the benchmarks and ``make run`` report a failure as
``PROG: message`` on one line (never a traceback, never more than the error's first line),
connect to Temporal through :func:`connect_or_fail`, and leave through :func:`exit_process`.
"""

from __future__ import annotations

import os
import sys
from typing import NoReturn, Sequence

from temporalio.client import Client, Interceptor

from infra.config import ConfigError, Settings
from infra.observability import flush_traces
from infra.temporal_client import connect


class CliError(Exception):
    """A failure to report as one line and an exit code."""

    def __init__(self, code: int, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


def first_line(err: BaseException) -> str:
    """The first line of an error's message, or its type's name when it has none."""
    return (str(err).strip() or type(err).__name__).splitlines()[0]


def fail(prog: str, code: int, message: str) -> int:
    """Print ``PROG: message`` on stderr; returns ``code`` (the process's exit code)."""
    print(f"{prog}: {message}", file=sys.stderr)
    return code


async def connect_or_fail(settings: Settings, interceptors: Sequence[Interceptor] = ()) -> Client:
    """A Temporal client; :class:`CliError` 2 for a configuration error, 1 when Temporal is unreachable."""
    try:
        return await connect(settings, interceptors=interceptors)
    except ConfigError as err:
        raise CliError(2, str(err)) from None
    except Exception as err:  # noqa: BLE001 - refused, DNS, TLS, timeout: one line for the user
        raise CliError(1, f"cannot reach Temporal at {settings.temporal_address}: {first_line(err)}") from None


def exit_process(code: int) -> NoReturn:
    """Flush the output and the buffered trace spans, then leave without interpreter teardown.

    The Temporal client's Rust threads can crash a short-lived process while Python finalizes
    (SIGABRT/SIGSEGV after the output; temporalio/sdk-python#300), so ``os._exit`` skips it;
    it also skips the span exporter's own flush, hence :func:`flush_traces` first. Output that
    cannot be written (a closed pipe) turns a success into exit code 1.
    """
    flush_traces()
    try:
        sys.stdout.flush()
        sys.stderr.flush()
    except OSError:
        code = code or 1
    os._exit(code)

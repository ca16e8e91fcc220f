"""``python -m starter submit FILE [--json]``: submit complaints from a file or stdin.

Exit codes: 0 all started (or already known), 2 invalid input (nothing started),
1 Temporal unreachable or another infrastructure failure.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys

from complaints.config import ConfigError, load_settings
from complaints.observability import flush_traces
from complaints.temporal_client import connect
from starter import IntakeError, parse_complaints, submit_complaints


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m starter", description="Submit complaints to Level Up's complaint procedure.")
    commands = parser.add_subparsers(dest="command", required=True)
    submit = commands.add_parser(
        "submit", help="submit one complaint, a JSON array of complaints, or JSON Lines",
        description="Validate every complaint, then start one workflow per complaint. "
                    "Prints one complaint id per line.")
    submit.add_argument("file", metavar="FILE", help="path to the JSON file, or - for standard input")
    submit.add_argument("--json", action="store_true",
                        help='print one JSON object per line: {"complaint_id": ..., "created": true|false}')
    return parser


def _read(path: str) -> bytes:
    if path == "-":
        return sys.stdin.buffer.read()
    with open(path, "rb") as handle:
        return handle.read()


async def _submit(data: bytes, as_json: bool) -> int:
    try:
        settings = load_settings()
    except ConfigError as err:
        print(f"starter: {err}", file=sys.stderr)
        return 2
    try:
        complaints = parse_complaints(data)
    except IntakeError as err:
        for problem in err.problems:
            print(problem, file=sys.stderr)
        print(f"starter: nothing was started ({len(err.problems)} problem(s))", file=sys.stderr)
        return 2
    try:
        client = await connect(settings)
    except ConfigError as err:
        print(f"starter: {err}", file=sys.stderr)
        return 2
    except Exception as err:  # noqa: BLE001 - any connection failure is one line for the user
        print(f"starter: cannot reach Temporal at {settings.temporal_address}: {_first_line(err)}",
              file=sys.stderr)
        return 1
    try:
        results = await submit_complaints(client, complaints, task_queue=settings.task_queue)
    except Exception as err:  # noqa: BLE001
        print(f"starter: submitting failed: {_first_line(err)} (submitting again is safe: "
              "complaints already started are not started twice)", file=sys.stderr)
        return 1
    for result in results:
        if as_json:
            print(json.dumps({"complaint_id": result.complaint_id, "created": result.created}))
        else:
            print(result.complaint_id)
    return 0


def _first_line(err: BaseException) -> str:
    text = str(err).strip() or type(err).__name__
    return text.splitlines()[0]


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        data = _read(args.file)
    except OSError as err:
        print(f"starter: cannot read {args.file}: {err.strerror}", file=sys.stderr)
        return 2
    return asyncio.run(_submit(data, args.json))


if __name__ == "__main__":
    code = main()
    flush_traces()  # os._exit below skips the span exporter's own flush
    # Skip interpreter teardown: the Temporal client's Rust threads can crash a short-lived
    # process while Python finalizes (SIGABRT/SIGSEGV after the output; temporalio/sdk-python#300).
    try:
        sys.stdout.flush()
        sys.stderr.flush()
    except OSError:
        code = code or 1
    os._exit(code)

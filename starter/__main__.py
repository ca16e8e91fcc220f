"""``python -m starter submit FILE [--json]``: submit complaints from a file or stdin.

Exit codes: 0 all started (or already known), 2 invalid input (nothing started),
3 some references already belong to other complaints (those not started, the others started),
1 Temporal unreachable or another infrastructure failure.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys

from infra.cli import CliError, connect_or_fail, exit_process, fail, first_line
from infra.config import ConfigError, load_settings
from starter import IntakeError, parse_complaints, submit_complaints

PROG = "starter"


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
        return fail(PROG, 2, str(err))
    try:
        complaints = parse_complaints(data)
    except IntakeError as err:
        for problem in err.problems:
            print(problem, file=sys.stderr)
        return fail(PROG, 2, f"nothing was started ({len(err.problems)} problem(s))")
    try:
        client = await connect_or_fail(settings)
    except CliError as err:
        return fail(PROG, err.code, err.message)
    try:
        results = await submit_complaints(client, complaints, task_queue=settings.task_queue,
                                          catalogue=settings.product_catalogue)
    except Exception as err:  # noqa: BLE001
        return fail(PROG, 1, f"submitting failed: {first_line(err)} (submitting again is safe: "
                             "complaints already started are not started twice)")
    conflicts = 0
    for number, result in enumerate(results, 1):
        if result.conflict:
            conflicts += 1
            print(f"item {number}: reference: already used by another complaint ({result.complaint_id})",
                  file=sys.stderr)
        if as_json:
            print(json.dumps({"complaint_id": result.complaint_id, "created": result.created}
                             | ({"conflict": True} if result.conflict else {})))
        elif not result.conflict:
            print(result.complaint_id)
    if conflicts:
        return fail(PROG, 3, f"{conflicts} complaint(s) not started: their reference belongs to another complaint; "
                             "the others were started")
    return 0


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        data = _read(args.file)
    except OSError as err:
        return fail(PROG, 2, f"cannot read {args.file}: {err.strerror}")
    return asyncio.run(_submit(data, args.json))


if __name__ == "__main__":
    exit_process(main())

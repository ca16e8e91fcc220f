"""``python -m bench.staff IDS_FILE``: timed ``decide`` round trips, from a staff client process of its own.

The benchmark (bench/intake.py) runs this on a loaded server: the complaints in ``IDS_FILE`` (one id per
line) are decided one after the other (``--sequential``), then the next ones all at once
(``--concurrent``). A process of its own, as a staff client is: the benchmark's process also runs the
SMTP server that receives every letter, and a round trip timed there waits for that server's thread
(the interpreter's lock) whenever a letter arrives. Configured like ``admin.py`` (TEMPORAL_ADDRESS,
COMPLAINTS_ENCRYPTION_KEYS, COMPLAINTS_STAFF_KEY). Prints one JSON object: each round trip in seconds.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
from pathlib import Path

from complaints.models import DecideInput, Outcome
from infra.cli import connect_or_fail, exit_process
from infra.config import load_settings
from infra.signing import SigningInterceptor, read_key
from workflows.complaint import ComplaintWorkflow

ACTION = DecideInput(by="bench", outcome=Outcome.UPHELD, motivation="Terecht; wij plannen opnieuw in.")


async def run(ids: list[str], sequential: int, concurrent: int) -> dict[str, object]:
    settings = load_settings()
    if settings.staff_key is None:
        raise SystemExit("bench.staff: COMPLAINTS_STAFF_KEY is not set")
    client = await connect_or_fail(settings, [SigningInterceptor(read_key(settings.staff_key))])

    async def decide(cid: str) -> float:
        began = time.perf_counter()
        await client.get_workflow_handle(cid).execute_update(ComplaintWorkflow.decide, ACTION)
        return time.perf_counter() - began

    one_by_one = [await decide(cid) for cid in ids[:sequential]]
    began = time.perf_counter()
    together = await asyncio.gather(*(decide(cid) for cid in ids[sequential:sequential + concurrent]))
    return {"sequential": one_by_one, "concurrent": list(together), "concurrent_seconds": time.perf_counter() - began}


def main() -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.staff", description=__doc__.splitlines()[0])
    parser.add_argument("ids", type=Path, help="complaint ids, one per line")
    parser.add_argument("--sequential", type=int, default=100)
    parser.add_argument("--concurrent", type=int, default=200)
    args = parser.parse_args()
    ids = args.ids.read_text().split()
    if len(ids) < args.sequential + args.concurrent:
        print(f"bench.staff: {len(ids)} ids for {args.sequential + args.concurrent} decisions", file=sys.stderr)
        return 2
    print(json.dumps(asyncio.run(run(ids, args.sequential, args.concurrent))))
    return 0


if __name__ == "__main__":
    exit_process(main())

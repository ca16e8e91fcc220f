"""Two bare-SDK baselines: the work of an intake with nothing of the product around it.

One workflow per complaint, plain dataclasses and the SDK's default converter (no
pydantic, no encryption, no sandbox passthrough list, no search attributes), as a
newcomer would write it with the SDK's samples at hand:

- ``bare`` (:class:`BareIntake`): the essential work of an intake and nothing more: one
  INSERT into PostgreSQL, then one SMTP send of a letter of the product's size. The
  product is measured against this one (issue 15).
- ``shape`` (:class:`SameShapeIntake`): the shape the product's intake had until issue 15
  (``SAME_SHAPE``: three activities that write to PostgreSQL, one that sends, one local
  activity that plans a date), kept as the earlier yardstick.

Its worker takes the product's worker options, so the sides differ only in what the
product adds.

    python -m bench.baseline worker   # env: TEMPORAL_ADDRESS, TEMPORAL_TASK_QUEUE, DATABASE_URL, SMTP_PORT
    python -m bench.baseline start bare|shape N PREFIX MESSAGE_BYTES
"""

from __future__ import annotations

import asyncio
import os
import signal
import sys
from dataclasses import dataclass
from datetime import datetime, timedelta
from email.message import EmailMessage

from temporalio import activity, workflow
from temporalio.client import Client
from temporalio.common import RetryPolicy
from temporalio.worker import Worker

with workflow.unsafe.imports_passed_through():
    import aiosmtplib
    import asyncpg

    from infra.cli import exit_process  # the product's exit handling: kept out of the sandbox

#: What the product's intake of a formal complaint ran before issue 15: open_dossier, plan_deadline
#: (local), send_letter, update_dossier twice (state, then the letter sent).
SAME_SHAPE = {"activities": 4, "local_activities": 1}
#: The essential work: one dossier write, one letter.
BARE = {"activities": 2, "local_activities": 0}

TIMEOUT = timedelta(seconds=30)
RETRY = RetryPolicy(initial_interval=timedelta(seconds=1), maximum_interval=timedelta(seconds=30))


@dataclass
class Complaint:
    id: str
    name: str
    email: str
    product: str
    message_bytes: int


@dataclass
class Letter:
    complaint_id: str
    email: str
    message_bytes: int  # the whole message as sent, headers included


@workflow.defn(name="BareIntake")
class BareIntake:
    """Write the complaint down, send the letter: the least an intake can do."""

    @workflow.run
    async def run(self, c: Complaint) -> None:
        await workflow.execute_activity("baseline_insert", c, start_to_close_timeout=TIMEOUT, retry_policy=RETRY)
        letter = Letter(c.id, c.email, c.message_bytes)
        await workflow.execute_activity("baseline_send", letter, start_to_close_timeout=TIMEOUT, retry_policy=RETRY)


@workflow.defn(name="SameShapeIntake")
class SameShapeIntake:
    """The product's intake shape before issue 15 (``SAME_SHAPE``), with the bare work inside."""

    @workflow.run
    async def run(self, c: Complaint) -> None:
        await workflow.execute_activity("baseline_insert", c, start_to_close_timeout=TIMEOUT, retry_policy=RETRY)
        await workflow.execute_local_activity("baseline_plan", workflow.now(), start_to_close_timeout=TIMEOUT)
        letter = Letter(c.id, c.email, c.message_bytes)
        await workflow.execute_activity("baseline_send", letter, start_to_close_timeout=TIMEOUT, retry_policy=RETRY)
        for _ in range(SAME_SHAPE["activities"] - 2):
            await workflow.execute_activity("baseline_touch", c.id, start_to_close_timeout=TIMEOUT,
                                            retry_policy=RETRY)


WORKFLOWS = {"bare": BareIntake, "shape": SameShapeIntake}


class BaselineActivities:
    def __init__(self, pool: asyncpg.Pool, smtp_host: str, smtp_port: int) -> None:
        self._pool, self._host, self._port = pool, smtp_host, smtp_port

    @activity.defn(name="baseline_insert")
    async def insert(self, c: Complaint) -> None:
        await self._pool.execute(
            "INSERT INTO baseline_complaints (id, name, email, product) VALUES ($1, $2, $3, $4)"
            " ON CONFLICT DO NOTHING", c.id, c.name, c.email, c.product)

    @activity.defn(name="baseline_plan")
    async def plan(self, received: datetime) -> datetime:
        return received + timedelta(days=3)

    @activity.defn(name="baseline_send")
    async def send(self, letter: Letter) -> None:
        msg = EmailMessage()
        msg["From"] = "info@level-up.nl"
        msg["To"] = letter.email
        msg["Subject"] = "Ontvangstbevestiging"
        msg["X-Complaint-Id"] = letter.complaint_id
        msg["X-Letter-Kind"] = "acknowledgement"
        # Fill to the product letter's size on the wire (CRLF line ends), in short lines (7bit).
        msg.set_content("")
        lines = max(0, round((letter.message_bytes - len(msg.as_bytes())) / 76))
        msg.set_content(("x" * 74 + "\n") * lines)  # 76 bytes a line on the wire
        await aiosmtplib.send(msg, hostname=self._host, port=self._port, timeout=20)

    @activity.defn(name="baseline_touch")
    async def touch(self, complaint_id: str) -> None:
        await self._pool.execute("UPDATE baseline_complaints SET touched = touched + 1 WHERE id = $1",
                                 complaint_id)


async def run_worker() -> None:
    from infra.config import load_settings
    from worker import tune_garbage_collector, worker_options

    settings = load_settings()  # the same WORKER_* tuning and pool size as the product's worker
    client = await Client.connect(os.environ["TEMPORAL_ADDRESS"])
    pool = await asyncpg.create_pool(os.environ["DATABASE_URL"], min_size=1, max_size=settings.database_pool_size)
    await pool.execute("CREATE TABLE IF NOT EXISTS baseline_complaints (id text PRIMARY KEY, name text,"
                       " email text, product text, touched int NOT NULL DEFAULT 0,"
                       " created_at timestamptz NOT NULL DEFAULT now())")
    acts = BaselineActivities(pool, "127.0.0.1", int(os.environ["SMTP_PORT"]))
    stop = asyncio.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        asyncio.get_running_loop().add_signal_handler(sig, stop.set)
    tune_garbage_collector(settings)
    async with Worker(client, task_queue=os.environ["TEMPORAL_TASK_QUEUE"], workflows=list(WORKFLOWS.values()),
                      activities=[acts.insert, acts.plan, acts.send, acts.touch], **worker_options(settings)):
        await stop.wait()
    await pool.close()


async def start(kind: str, count: int, prefix: str, message_bytes: int, concurrency: int = 32) -> None:
    """Start ``count`` intakes as the product's starter does: bounded concurrency, one process."""
    client = await Client.connect(os.environ["TEMPORAL_ADDRESS"])
    queue = os.environ["TEMPORAL_TASK_QUEUE"]
    gate = asyncio.Semaphore(concurrency)

    async def one(i: int) -> None:
        c = Complaint(f"{prefix}-{i}", f"Klant {i}", f"klant{i}@example.nl", "Training", message_bytes)
        async with gate:
            await client.start_workflow(WORKFLOWS[kind].run, c, id=c.id, task_queue=queue)

    await asyncio.gather(*(one(i) for i in range(count)))


def main(argv: list[str]) -> int:
    if argv[:1] == ["worker"]:
        asyncio.run(run_worker())
    elif argv[:1] == ["start"] and len(argv) == 5 and argv[1] in WORKFLOWS:
        asyncio.run(start(argv[1], int(argv[2]), argv[3], int(argv[4])))
    else:
        print(__doc__, file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    exit_process(main(sys.argv[1:]))

"""``python -m bench.state``: what open complaints cost while they wait on their timers.

A fresh dev server keeping its database in a SQLite file with a write-ahead log (so its size
can be read), a fresh
embedded PostgreSQL and the SMTP server; one ``python worker.py``. N formal complaints
(default 2,000) are submitted in batches through ``python -m starter submit`` and each is
acknowledged; then they all wait on their resolution timers, as complaints do for weeks.
Measured: the worker's RSS and the server's database size per open complaint, the
history of one complaint, a query on a complaint the worker still caches and on one it
has evicted (the cache miss replays the history), and the Replayer's time for the longest
committed lifecycle history (tests/histories).

Prints one JSON object and a table.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import json
import os
import statistics
import sys
import tempfile
import time
import warnings
from pathlib import Path

import asyncpg
import psutil
from temporalio.client import Client, WorkflowHistory
from temporalio.worker import Replayer

warnings.filterwarnings("ignore", category=UserWarning, module="platformdirs.*")

from bench.intake import SQLITE_PRAGMAS, complaint  # noqa: E402
from bench.stack import REPO, DevServer, Mailbox, Process, child_env, free_port, percentile, wait_for_poller  # noqa: E402
from devstack.postgres import LocalPostgres  # noqa: E402
from infra.cli import exit_process  # noqa: E402
from infra.codec import parse_keys  # noqa: E402
from infra.config import Settings  # noqa: E402
from infra.temporal_client import data_converter  # noqa: E402
from worker import workflow_runner  # noqa: E402
from workflows.complaint import ComplaintWorkflow  # noqa: E402

HISTORIES = REPO / "tests" / "histories"
BATCH = 500
CACHE = Settings().worker_max_cached_workflows  # the worker runs with the default cache


def db_bytes(path: Path) -> int:
    return sum(p.stat().st_size for p in path.parent.glob(path.name + "*"))


async def replay_longest(runs: int = 5) -> dict[str, object]:
    keys = parse_keys((HISTORIES / "encryption-keys").read_text())
    histories = [WorkflowHistory.from_json(p.stem, p.read_text()) for p in sorted(HISTORIES.glob("*.json"))]
    longest = max(histories, key=lambda h: len(h.events))
    replayer = Replayer(workflows=[ComplaintWorkflow], workflow_runner=workflow_runner(),
                        data_converter=data_converter(Settings(encryption_keys=keys)))
    times = []
    for _ in range(runs):
        began = time.perf_counter()
        result = await replayer.replay_workflow(longest, raise_on_replay_failure=False)
        times.append(time.perf_counter() - began)
        if result.replay_failure is not None:
            raise RuntimeError(f"{longest.workflow_id} does not replay: {result.replay_failure}")
    return {"history": longest.workflow_id, "events": len(longest.events),
            "replay_ms_median": 1000 * statistics.median(times)}


async def main_async(count: int) -> dict[str, object]:
    with tempfile.TemporaryDirectory(prefix="bench-state-") as tmp:
        work = Path(tmp)
        keys = "bench:" + base64.b64encode(os.urandom(32)).decode()
        server = DevServer(db_file=work / "temporal.db", extra_args=SQLITE_PRAGMAS)
        postgres = LocalPostgres(work / "pg", free_port())
        mailbox = Mailbox()
        worker: Process | None = None
        try:
            server.start()
            postgres.start()
            mailbox.start()
            env = child_env(TEMPORAL_ADDRESS=server.address, TEMPORAL_TASK_QUEUE="bench-state",
                            DATABASE_URL=postgres.url, SMTP_HOST="127.0.0.1", SMTP_PORT=str(mailbox.port),
                            COMPLAINTS_ENCRYPTION_KEYS=keys)
            client = await Client.connect(server.address,
                                          data_converter=data_converter(Settings(encryption_keys=parse_keys(keys))))
            worker = Process([sys.executable, "worker.py"], env).start()
            await wait_for_poller(client, "bench-state", worker)
            await asyncio.sleep(2)  # the worker settles (schema, schedule, pollers)
            rss_idle, db_before = worker.rss_bytes(), db_bytes(server.db_file)
            server_rss_before = _rss(server.pid)
            began = time.perf_counter()
            ids: list[str] = []
            for start in range(0, count, BATCH):
                path = work / f"batch-{start}.json"
                path.write_text(json.dumps([complaint("state", i) for i in range(start, min(count, start + BATCH))]))
                proc = await asyncio.create_subprocess_exec(
                    sys.executable, "-m", "starter", "submit", str(path), cwd=REPO, env=env,
                    stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
                out, err = await proc.communicate()
                if proc.returncode != 0:
                    raise RuntimeError(err.decode()[-1000:])
                ids += out.decode().split()
            conn = await asyncpg.connect(postgres.url)
            try:
                while await conn.fetchval("SELECT count(*) FROM complaints WHERE acknowledged_at IS NOT NULL"
                                          " AND state_version >= 2") < len(ids):
                    if not worker.alive() or time.perf_counter() - began > 600:
                        raise RuntimeError(f"not all acknowledged\n{worker.errors()}")
                    await asyncio.sleep(0.5)
            finally:
                await conn.close()
            intake_seconds = time.perf_counter() - began
            await asyncio.sleep(5)  # the server settles (WAL, visibility)
            rss_open, db_after = worker.rss_bytes(), db_bytes(server.db_file)
            server_rss_after = _rss(server.pid)
            history = await client.get_workflow_handle(ids[-1]).fetch_history()
            # The worker caches the most recently active workflows; the first ones are evicted.
            cached = [await _query_seconds(client, cid) for cid in ids[-20:]]
            evicted = [await _query_seconds(client, cid) for cid in ids[:20]]
        finally:
            if worker is not None:
                worker.stop()
            with contextlib.suppress(Exception):  # not started if the start failed
                mailbox.stop()
            postgres.stop()
            server.stop()
    replay = await replay_longest()
    n = len(ids)
    return {
        "open_complaints": n, "intake_seconds": intake_seconds,
        "worker_rss_idle_mb": rss_idle / 2**20, "worker_rss_open_mb": rss_open / 2**20,
        "worker_rss_per_open_kb": (rss_open - rss_idle) / n / 1024,
        "worker_cache": CACHE,
        "worker_rss_per_cached_kb": (rss_open - rss_idle) / min(n, CACHE) / 1024,
        "server_db_per_open_kb": (db_after - db_before) / n / 1024,
        "server_rss_per_open_kb": (server_rss_after - server_rss_before) / n / 1024,
        "history_events_when_waiting": len(history.events),
        "history_bytes_when_waiting": len(history.to_json().encode()),
        "query_cached_p50_ms": 1000 * percentile(cached, 50),
        "query_evicted_p50_ms": 1000 * percentile(evicted, 50),
        "replay": replay,
    }


def _rss(pid: int) -> int:
    return psutil.Process(pid).memory_info().rss


async def _query_seconds(client: Client, complaint_id: str) -> float:
    began = time.perf_counter()
    await client.get_workflow_handle(complaint_id).query(ComplaintWorkflow.status)
    return time.perf_counter() - began


def table(s: dict) -> str:
    r = s["replay"]
    return "\n".join([
        f"{s['open_complaints']} open complaints waiting on timers (intake took {s['intake_seconds']:.0f} s)",
        f"  worker RSS {s['worker_rss_open_mb']:.0f} MB ({s['worker_rss_idle_mb']:.0f} MB idle):"
        f" {s['worker_rss_per_open_kb']:.0f} KB per open complaint, {s['worker_rss_per_cached_kb']:.0f} KB per"
        f" cached one (cache {s['worker_cache']})",
        f"  server database {s['server_db_per_open_kb']:.1f} KB per open complaint; server RSS"
        f" {s['server_rss_per_open_kb']:.0f} KB per open complaint",
        f"  one waiting complaint's history: {s['history_events_when_waiting']} events,"
        f" {s['history_bytes_when_waiting'] / 1024:.0f} KB",
        f"  status query p50: cached {s['query_cached_p50_ms']:.0f} ms, evicted (replays) "
        f"{s['query_evicted_p50_ms']:.0f} ms",
        f"  Replayer, longest committed lifecycle ({r['history']}, {r['events']} events):"
        f" {r['replay_ms_median']:.0f} ms",
    ])


def main() -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.state", description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, default=2000, help="open complaints (default 2000)")
    parser.add_argument("--output", type=Path, help="also write the JSON summary here")
    args = parser.parse_args()
    summary = asyncio.run(main_async(args.count))
    text = json.dumps(summary, indent=2)
    print(text)
    if args.output:
        args.output.write_text(text + "\n")
    print(table(summary))
    return 0


if __name__ == "__main__":
    exit_process(main())

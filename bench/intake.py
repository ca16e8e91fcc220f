"""``python -m bench.intake``: a burst of complaints, the product beside two bare-SDK baselines.

On one fresh dev server (in-memory SQLite), one fresh embedded PostgreSQL and a real
SMTP server on loopback:

1. Burst intake: ``python -m starter submit`` with N formal complaints in one batch,
   worked by one ``python worker.py``; measured until every acknowledgement letter has
   been accepted by the SMTP server and every dossier row records it.
2. The baselines (bench/baseline.py) on the same server: the same N, started by one
   process with the starter's concurrency, worked by a minimal worker with the same
   worker options. ``bare`` does the essential work (one INSERT, one letter); ``shape``
   the product's intake shape before issue 15. Runs alternate after a warm-up of each:
   P B S P B S P B S.
3. What one intake costs each side, read from finished histories: workflow tasks,
   activity tasks, local activities, timers, search-attribute upserts, events, bytes.
4. Latency at the measured throughput: complaints submitted one by one at a steady
   rate below the burst's throughput, each timed from its submission to its letter.
5. Staff actions on the loaded server: ``decide`` round trips one after the other, then
   many at once, timed by a staff client process of its own (bench/staff.py); and one
   ``python admin.py decide`` process for what a user waits.

Prints one JSON object and a table; exits 1 if a target is missed.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import functools
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import warnings
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import asyncpg
import psutil
from temporalio.api.enums.v1 import EventType
from temporalio.client import Client

warnings.filterwarnings("ignore", category=UserWarning, module="platformdirs.*")

from bench.stack import (  # noqa: E402
    REPO, DevServer, Mailbox, Process, child_env, free_port, percentile, wait_for_poller)
from complaints.staff import StaffRole  # noqa: E402
from infra.signing import new_key, write_key  # noqa: E402
from devstack.postgres import LocalPostgres  # noqa: E402
from infra.cli import exit_process  # noqa: E402
from infra.codec import parse_keys  # noqa: E402
from infra.config import Settings  # noqa: E402
from infra.temporal_client import data_converter  # noqa: E402

#: Against the bare baseline (issue 15): burst throughput, worker CPU per complaint.
TARGET_THROUGHPUT_RATIO = 0.85
TARGET_CPU_RATIO = 1.2
#: Submit to acknowledgement at 80 % of the burst's throughput; a staff decision's round trip.
TARGET_P99_SECONDS = 1.0
TARGET_DECIDE_P99_SECONDS = 0.1
KINDS = ("product", "bare", "shape")
#: Open complaints on the server while staff actions are measured (topped up if the runs left fewer).
OPEN_FOR_STAFF = 1000
SQLITE_PRAGMAS = ("--sqlite-pragma", "journal_mode=wal", "--sqlite-pragma", "synchronous=normal")
WARM_UP = 100  # complaints per warm-up run: the server's first workflows, imports, caches


@functools.cache
def _example() -> str:
    return (REPO / "examples" / "complaint.json").read_text()


def complaint(run: str, i: int) -> dict[str, object]:
    """A formal complaint of the example's size, unique per run and number."""
    example = json.loads(_example())
    example["reference"] = f"<bench-{run}-{i}@intake.example.nl>"
    example["complainant"]["name"] = f"Klant {run} {i}"
    example["complainant"]["email"] = f"klant{i}.{run}@example.nl"
    example["submitted_on"] = datetime.now(timezone.utc).date().isoformat()
    return example


@dataclass
class Burst:
    kind: str  # product | bare | shape
    count: int
    seconds: float  # from launching the starter to the last acknowledgement letter
    per_second: float
    latency_p50: float
    latency_p95: float
    latency_p99: float
    cpu_per_complaint_ms: float
    peak_rss_mb: float
    submit_seconds: float  # the starter process, launch to exit
    server_cpu_per_complaint_ms: float  # the Temporal dev server
    machine_busy: float  # share of all the machine's cores busy during the burst (0..1)
    steal: float  # share of the cores' time the hypervisor gave to other machines (a shared VM; 0..1)
    letter_bytes: int  # median size of an acknowledgement as the SMTP server received it


class Bench:
    def __init__(self, count: int, workdir: Path, profile: Path | None = None,
                 server_file: bool = False) -> None:
        self.count = count
        self.profile = profile
        self.workdir = workdir
        self.keys = "bench:" + base64.b64encode(os.urandom(32)).decode()
        # The staff member whose signed decisions the benchmark sends, and the register holding them.
        self.staff_key = new_key("bench", StaffRole.DIRECTOR)
        self.register = workdir / "staff.toml"
        # In memory by default; --server-file keeps the history in a SQLite file with the pragmas a
        # single-machine install would use (write-ahead log, fsync at checkpoints).
        self.server = DevServer(db_file=workdir / "temporal.db", extra_args=SQLITE_PRAGMAS) if server_file \
            else DevServer()
        self.postgres = LocalPostgres(workdir / "pg", free_port())
        self.mailbox = Mailbox()
        self.client: Client | None = None
        self.product_client: Client | None = None
        self.letter_bytes = 2000
        self.worker_env: dict[str, str] = {}  # WORKER_* tuning for the workers (bench.tuning)
        self._workers: list[Process] = []

    async def __aenter__(self) -> Bench:
        try:
            self.server.start()
            self.postgres.start()
            self.mailbox.start()
            self.register.write_text(self.staff_key.register_entry(), encoding="utf-8")
            write_key(self.staff_key, self.workdir / "staff-key.toml")  # for bench.staff and `admin.py decide`
            self.client = await Client.connect(self.server.address)
            settings = Settings(temporal_address=self.server.address, encryption_keys=parse_keys(self.keys))
            # Intake only: the staff actions are signed and sent by bench/staff.py and admin.py.
            self.product_client = await Client.connect(self.server.address, data_converter=data_converter(settings))
        except BaseException:
            await self.__aexit__()
            raise
        return self

    async def __aexit__(self, *exc: object) -> None:
        for worker in self._workers:  # also when a run failed: no worker outlives the bench
            worker.stop()
        self.mailbox.stop()
        self.postgres.stop()
        self.server.stop()

    def env(self, queue: str) -> dict[str, str]:
        return child_env(TEMPORAL_ADDRESS=self.server.address, TEMPORAL_TASK_QUEUE=queue,
                         DATABASE_URL=self.postgres.url, SMTP_HOST="127.0.0.1",
                         SMTP_PORT=str(self.mailbox.port), COMPLAINTS_ENCRYPTION_KEYS=self.keys,
                         COMPLAINTS_STAFF_FILE=str(self.register),
                         COMPLAINTS_STAFF_KEY=str(self.workdir / "staff-key.toml"),
                         **self.worker_env)

    def start_worker(self, kind: str, queue: str) -> Process:
        argv = [sys.executable, "worker.py"] if kind == "product" \
            else [sys.executable, "-m", "bench.baseline", "worker"]
        worker = Process(argv, self.env(queue)).start()
        self._workers.append(worker)
        return worker

    async def acknowledged(self, kind: str, ids: set[str]) -> int:
        """How many of ``ids`` are done: the letter recorded in the dossier (the worker is idle after)."""
        conn = await asyncpg.connect(self.postgres.url)
        try:
            if kind == "product":
                return await conn.fetchval(
                    "SELECT count(*) FROM complaints WHERE complaint_id = ANY($1::text[])"
                    " AND acknowledged_at IS NOT NULL", list(ids))
            return await conn.fetchval("SELECT count(*) FROM baseline_complaints WHERE id = ANY($1::text[])"
                                       " AND touched >= $2", list(ids), 2 if kind == "shape" else 0)
        finally:
            await conn.close()

    async def start_times(self, queue: str) -> dict[str, float]:
        assert self.client is not None
        starts = {}
        async for wf in self.client.list_workflows(f"TaskQueue = '{queue}'"):
            starts[wf.id] = wf.start_time.timestamp()
        return starts

    async def burst(self, kind: str, run: str, keep_worker: bool = False,
                    count: int | None = None) -> tuple[Burst, Process | None]:
        count = count or self.count
        queue = f"bench-{kind}-{run}"
        worker = self.start_worker(kind, queue)
        assert self.client is not None
        await wait_for_poller(self.client, queue, worker)
        await asyncio.sleep(1.0)  # let the worker settle (schema, schedule, pollers)
        first_mail = len(self.mailbox)
        cpu_before = worker.cpu_seconds()
        server = psutil.Process(self.server.pid)
        server_before = sum(server.cpu_times()[:2])
        machine_before = psutil.cpu_times()
        if kind == "product":
            path = self.workdir / f"{run}.json"
            path.write_text(json.dumps([complaint(run, i) for i in range(count)]))
        profiler = self._profile(worker, f"{kind}-{run}")
        launched = time.time()
        if kind == "product":
            proc = await asyncio.create_subprocess_exec(
                sys.executable, "-m", "starter", "submit", str(path), "--json", cwd=REPO, env=self.env(queue),
                stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
        else:
            proc = await asyncio.create_subprocess_exec(
                sys.executable, "-m", "bench.baseline", "start", kind, str(count), f"{kind}-{run}",
                str(self.letter_bytes), cwd=REPO, env=self.env(queue),
                stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
        out, err = await proc.communicate()
        submitted = time.time()
        if proc.returncode != 0:
            raise RuntimeError(f"{kind} starter failed: {err.decode()[-1000:]}")
        ids = ({json.loads(line)["complaint_id"] for line in out.decode().splitlines()} if kind == "product"
               else {f"{kind}-{run}-{i}" for i in range(count)})
        letters: dict[str, float] = {}
        deadline = time.monotonic() + 300
        while True:
            for a in self.mailbox.since(first_mail):
                if a.complaint_id in ids and a.kind == "acknowledgement":
                    letters.setdefault(a.complaint_id, a.at)
            if len(letters) == len(ids) and await self.acknowledged(kind, ids) == len(ids):
                break
            if time.monotonic() > deadline or not worker.alive():
                raise RuntimeError(f"{kind} run {run}: {len(letters)}/{len(ids)} letters\n{worker.errors()}")
            await asyncio.sleep(0.05)
        cpu = worker.cpu_seconds() - cpu_before
        server_cpu = sum(server.cpu_times()[:2]) - server_before
        machine_after = psutil.cpu_times()
        machine_busy = _busy_share(machine_before, machine_after)
        steal = _steal_share(machine_before, machine_after)
        if profiler is not None:
            profiler.send_signal(signal.SIGINT)
            profiler.wait()
        sizes = [a.size for a in self.mailbox.since(first_mail)
                 if a.complaint_id in ids and a.kind == "acknowledgement"]
        if kind == "product":
            self.letter_bytes = int(statistics.median(sizes))
        starts = await self.start_times(queue)
        latencies = [letters[i] - starts[i] for i in ids]
        last = max(letters.values())
        result = Burst(kind=kind, count=len(ids), seconds=last - launched, per_second=len(ids) / (last - launched),
                       latency_p50=percentile(latencies, 50), latency_p95=percentile(latencies, 95),
                       latency_p99=percentile(latencies, 99), cpu_per_complaint_ms=1000 * cpu / len(ids),
                       peak_rss_mb=worker.peak_rss_bytes() / 2**20, submit_seconds=submitted - launched,
                       server_cpu_per_complaint_ms=1000 * server_cpu / len(ids), machine_busy=machine_busy, steal=steal,
                       letter_bytes=int(statistics.median(sizes)))
        if keep_worker:
            return result, worker
        worker.stop()
        return result, None

    async def intake_cost(self, queue: str, sample: int = 50) -> dict[str, float]:
        """What one intake costs the server, read from up to ``sample`` histories of ``queue`` (medians).

        Read after the burst: a product complaint then waits on its resolution timer, so its
        history so far is its intake. Bytes are the events' serialized size as the server keeps them.
        """
        assert self.client is not None
        rows: list[dict[str, int]] = []
        async for wf in self.client.list_workflows(f"TaskQueue = '{queue}'", limit=sample):
            events = (await self.client.get_workflow_handle(wf.id, run_id=wf.run_id).fetch_history()).events
            kinds = [e.event_type for e in events]
            rows.append({
                "workflow_tasks": kinds.count(EventType.EVENT_TYPE_WORKFLOW_TASK_COMPLETED),
                "activity_tasks": kinds.count(EventType.EVENT_TYPE_ACTIVITY_TASK_SCHEDULED),
                "local_activities": sum(e.event_type == EventType.EVENT_TYPE_MARKER_RECORDED
                                        and e.marker_recorded_event_attributes.marker_name == "core_local_activity"
                                        for e in events),
                "timers": kinds.count(EventType.EVENT_TYPE_TIMER_STARTED),
                "search_attribute_upserts": kinds.count(EventType.EVENT_TYPE_UPSERT_WORKFLOW_SEARCH_ATTRIBUTES),
                "events": len(events),
                "history_bytes": sum(e.ByteSize() for e in events),
            })
        if not rows:
            raise RuntimeError(f"no histories on {queue}")
        return {k: statistics.median(r[k] for r in rows) for k in rows[0]} | {"sampled": len(rows)}

    def _profile(self, worker: Process, name: str) -> subprocess.Popen[bytes] | None:
        """py-spy on the worker for the burst (``--profile DIR``): collapsed stacks, for flame graphs."""
        if self.profile is None:
            return None
        self.profile.mkdir(parents=True, exist_ok=True)
        spy = Path(sys.executable).parent / "py-spy"
        if not spy.exists():
            raise RuntimeError("--profile needs py-spy: .venv/bin/pip install py-spy")
        return subprocess.Popen([str(spy), "record", "--nonblocking", "--format", "raw", "--rate", "200",
                                 "-o", str(self.profile / f"{name}.txt"), "-p", str(worker.pid)],
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

    async def paced(self, queue: str, rate: float, seconds: float) -> dict[str, float]:
        """Submit at ``rate`` per second for ``seconds``; latency from each submission to its letter."""
        from starter import submit_complaint, validate_complaints

        assert self.product_client is not None
        total = max(1, int(rate * seconds))
        run = f"paced{int(time.time() * 1000)}"
        complaints = validate_complaints([complaint(run, i) for i in range(total)])
        first_mail = len(self.mailbox)
        submitted: dict[str, float] = {}
        begin = time.monotonic()

        async def one(i: int) -> None:
            await asyncio.sleep(max(0.0, begin + i / rate - time.monotonic()))
            at = time.time()
            result = await submit_complaint(self.product_client, complaints[i], task_queue=queue)
            submitted[result.complaint_id] = at

        await asyncio.gather(*(one(i) for i in range(total)))
        letters: dict[str, float] = {}
        deadline = time.monotonic() + 120
        while len(letters) < total and time.monotonic() < deadline:
            for a in self.mailbox.since(first_mail):
                if a.complaint_id in submitted and a.kind == "acknowledgement":
                    letters.setdefault(a.complaint_id, a.at)
            await asyncio.sleep(0.05)
        latencies = [letters[c] - submitted[c] for c in letters]
        return {"rate_per_second": round(rate, 1), "count": total, "received": len(letters),
                "latency_p50": percentile(latencies, 50), "latency_p95": percentile(latencies, 95),
                "latency_p99": percentile(latencies, 99)}

    async def top_up(self, queue: str, open_at_least: int) -> None:
        """Submit complaints on ``queue`` until at least ``open_at_least`` formal ones are open and acknowledged
        (the staff actions are measured on a loaded server)."""
        from starter import submit_complaints, validate_complaints

        assert self.client is not None and self.product_client is not None
        have = (await self.client.count_workflows(f"TaskQueue = '{queue}' AND ComplaintPhase = 'formal'")).count
        if have >= open_at_least:
            return
        run = f"topup{int(time.time() * 1000)}"
        extra = validate_complaints([complaint(run, i) for i in range(open_at_least - have)])
        ids = {r.complaint_id for r in await submit_complaints(self.product_client, extra, task_queue=queue)}
        deadline = time.monotonic() + 300
        while await self.acknowledged("product", ids) < len(ids):
            if time.monotonic() > deadline:
                raise RuntimeError("the top-up complaints were not acknowledged in time")
            await asyncio.sleep(0.2)

    async def staff_actions(self, queue: str, sequential: int, concurrent: int) -> dict[str, float]:
        """``decide`` on open complaints of the loaded server, from a staff client process of its own
        (bench/staff.py): one after another, then all at once; then one ``admin.py decide`` process."""
        assert self.client is not None
        open_ids = [wf.id async for wf in self.client.list_workflows(
            f"TaskQueue = '{queue}' AND ComplaintPhase = 'formal'")]
        if len(open_ids) < sequential + concurrent + 1:
            raise RuntimeError(f"only {len(open_ids)} open complaints for the staff actions")
        ids = self.workdir / "staff-ids.txt"
        ids.write_text("\n".join(open_ids[:sequential + concurrent]))
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "bench.staff", str(ids), "--sequential", str(sequential),
            "--concurrent", str(concurrent), cwd=REPO, env=self.env(queue),
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
        out, err = await proc.communicate()
        if proc.returncode != 0:
            raise RuntimeError(f"bench.staff failed: {err.decode()[-500:]}")
        timed = json.loads(out)
        one_by_one, together = timed["sequential"], timed["concurrent"]
        cid = open_ids[sequential + concurrent]
        began = time.perf_counter()
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "admin.py", "decide", cid, "--outcome", "upheld", "--motivation", "Terecht.",
            cwd=REPO, env=self.env(queue), stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.PIPE)
        _, err = await proc.communicate()
        cli = time.perf_counter() - began
        if proc.returncode != 0:
            raise RuntimeError(f"admin.py decide failed: {err.decode()[-500:]}")
        return {"open_complaints": len(open_ids),
                "sequential_p50": percentile(one_by_one, 50), "sequential_p99": percentile(one_by_one, 99),
                "concurrent": concurrent, "concurrent_per_second": concurrent / timed["concurrent_seconds"],
                "concurrent_p99": percentile(together, 99), "admin_cli_seconds": cli}


def _busy_share(before: Any, after: Any) -> float:
    """The share of all cores busy between two psutil.cpu_times() (guest time is already in user)."""
    def split(t: Any) -> tuple[float, float]:
        total = sum(t) - getattr(t, "guest", 0.0) - getattr(t, "guest_nice", 0.0)
        return total, t.idle + getattr(t, "iowait", 0.0)

    (total0, idle0), (total1, idle1) = split(before), split(after)
    return 1 - (idle1 - idle0) / (total1 - total0)


def _steal_share(before: Any, after: Any) -> float:
    """The share of the cores' time stolen by the hypervisor between two psutil.cpu_times() (0 if not told)."""
    total = (sum(after) - getattr(after, "guest", 0.0) - getattr(after, "guest_nice", 0.0)) \
        - (sum(before) - getattr(before, "guest", 0.0) - getattr(before, "guest_nice", 0.0))
    return (getattr(after, "steal", 0.0) - getattr(before, "steal", 0.0)) / total if total else 0.0


def _paired(product: list[Burst], other: list[Burst], field: str) -> float:
    """The median over the rounds of product/other, each round's runs side by side."""
    return statistics.median(getattr(a, field) / getattr(b, field) for a, b in zip(product, other))


def _median(runs: list[Burst], field: str) -> float:
    return statistics.median(getattr(r, field) for r in runs)


async def main_async(args: argparse.Namespace) -> dict[str, object]:
    with tempfile.TemporaryDirectory(prefix="bench-intake-") as tmp:
        async with Bench(args.count, Path(tmp), args.profile, args.server_file) as bench:
            print(f"warm-up: {', '.join(KINDS)}, {WARM_UP} complaints each", file=sys.stderr)
            for kind in KINDS:
                await bench.burst(kind, "warmup", count=WARM_UP)
            runs: dict[str, list[Burst]] = {kind: [] for kind in KINDS}
            product_worker: Process | None = None
            for r in range(args.rounds):
                for kind in KINDS:
                    last = kind == "product" and r == args.rounds - 1
                    result, worker = await bench.burst(kind, f"r{r}", keep_worker=last)
                    product_worker = worker or product_worker
                    runs[kind].append(result)
                    print(f"{kind} {r + 1}/{args.rounds}: {result.per_second:.1f}/s, "
                          f"{result.cpu_per_complaint_ms:.1f} ms CPU per complaint", file=sys.stderr)
            assert product_worker is not None
            queue = f"bench-product-r{args.rounds - 1}"
            cost = {kind: await bench.intake_cost(f"bench-{kind}-r{args.rounds - 1}") for kind in KINDS}
            product_rate = _median(runs["product"], "per_second")
            print("paced submissions and staff actions", file=sys.stderr)
            # A steady stream at the burst's throughput (the machine's saturation point), then at 80 %.
            paced = await bench.paced(queue, rate=round(product_rate, 1), seconds=args.paced_seconds)
            await asyncio.sleep(5)  # let the queue drain
            paced_80 = await bench.paced(queue, rate=round(0.8 * product_rate, 1), seconds=args.paced_seconds)
            await bench.top_up(queue, OPEN_FOR_STAFF + args.sequential + args.concurrent + 1)
            await asyncio.sleep(5)  # let the letters and dossier writes settle
            staff = await bench.staff_actions(queue, sequential=args.sequential, concurrent=args.concurrent)
            product_worker.stop()
    p, b, sh = runs["product"], runs["bare"], runs["shape"]
    # Each round's product against the bare run right after it, then the median over the rounds: the pairs
    # share the machine's state of the moment (a shared VM drifts by a fifth within one run).
    throughput_ratio = _paired(p, b, "per_second")
    cpu_ratio = _paired(p, b, "cpu_per_complaint_ms")
    fields = [f for f in Burst.__dataclass_fields__ if f not in ("kind", "count")]
    summary = {
        "complaints_per_run": args.count, "rounds": args.rounds,
        **{kind: {f: _median(runs[kind], f) for f in fields} for kind in KINDS},
        "runs": [r.__dict__ for kind in KINDS for r in runs[kind]],
        "throughput_ratio": throughput_ratio, "cpu_ratio": cpu_ratio,
        "throughput_ratio_of_medians": _median(p, "per_second") / _median(b, "per_second"),
        "cpu_ratio_of_medians": _median(p, "cpu_per_complaint_ms") / _median(b, "cpu_per_complaint_ms"),
        "throughput_ratio_same_shape": _paired(p, sh, "per_second"),
        "cpu_ratio_same_shape": _paired(p, sh, "cpu_per_complaint_ms"),
        "cost_per_intake": cost,
        "paced": paced, "paced_80_percent": paced_80, "staff_actions": staff,
        "targets": {
            f"throughput_ratio>={TARGET_THROUGHPUT_RATIO}": throughput_ratio >= TARGET_THROUGHPUT_RATIO,
            f"cpu_ratio<={TARGET_CPU_RATIO}": cpu_ratio <= TARGET_CPU_RATIO,
            f"paced_p99_at_80_percent<{TARGET_P99_SECONDS:g}s": (
                paced_80["latency_p99"] < TARGET_P99_SECONDS and paced_80["received"] == paced_80["count"]),
            f"decide_p99<{1000 * TARGET_DECIDE_P99_SECONDS:.0f}ms_with_1000_open": (
                staff["sequential_p99"] < TARGET_DECIDE_P99_SECONDS and staff["open_complaints"] >= OPEN_FOR_STAFF),
        },
    }
    return summary


def table(s: dict) -> str:
    p, b, sh = s["product"], s["bare"], s["shape"]

    def row(label: str, fmt: str, field: str, ratios: bool = False) -> tuple[str, ...]:
        cells = [fmt.format(x[field]) for x in (p, b, sh)]
        if not ratios:
            return (label, *cells, "", "")
        if field in paired:  # the median of each round's ratio (main_async)
            return (label, *cells, f"{paired[field][0]:.2f}", f"{paired[field][1]:.2f}")
        return (label, *cells, f"{p[field] / b[field]:.2f}", f"{p[field] / sh[field]:.2f}")

    paired = {"per_second": (s["throughput_ratio"], s["throughput_ratio_same_shape"]),
              "cpu_per_complaint_ms": (s["cpu_ratio"], s["cpu_ratio_same_shape"])}

    rows = [
        row("burst throughput (complaints/s)", "{:.1f}", "per_second", ratios=True),
        row("worker CPU per complaint (ms)", "{:.1f}", "cpu_per_complaint_ms", ratios=True),
        row("server CPU per complaint (ms)", "{:.1f}", "server_cpu_per_complaint_ms", ratios=True),
        (("burst latency p50/p99 (s)",) + tuple(f"{x['latency_p50']:.2f}/{x['latency_p99']:.2f}" for x in (p, b, sh))
         + ("", "")),
        row("machine busy (share of all cores)", "{:.0%}", "machine_busy"),
        row("stolen by the hypervisor (shared VM)", "{:.0%}", "steal"),
        row("worker peak RSS (MB)", "{:.0f}", "peak_rss_mb"),
        row("starter process (s)", "{:.2f}", "submit_seconds"),
        row("letter as received (bytes)", "{:.0f}", "letter_bytes"),
    ]
    cost = s["cost_per_intake"]
    for field in ("workflow_tasks", "activity_tasks", "local_activities", "timers", "search_attribute_upserts",
                  "events", "history_bytes"):
        rows.append((f"per intake: {field.replace('_', ' ')}", *(f"{cost[k][field]:g}" for k in KINDS), "", ""))
    head = f"median of {s['rounds']} runs, {s['complaints_per_run']} complaints"
    lines = [f"{head:36} {'product':>10} {'bare':>10} {'shape':>10} {'/bare':>6} {'/shape':>6}"]
    lines += [f"{a:36} {b_:>10} {c:>10} {d:>10} {e:>6} {f:>6}" for a, b_, c, d, e, f in rows]
    st = s["staff_actions"]
    for q in (s["paced"], s["paced_80_percent"]):
        lines.append(f"paced at {q['rate_per_second']}/s: submit-to-letter p50 {q['latency_p50']:.2f} s, "
                     f"p95 {q['latency_p95']:.2f} s, p99 {q['latency_p99']:.2f} s ({q['received']}/{q['count']})")
    lines.append(f"decide round trip ({st['open_complaints']} open): p50 {1000 * st['sequential_p50']:.0f} ms, "
                 f"p99 {1000 * st['sequential_p99']:.0f} ms; {st['concurrent']} at once: "
                 f"{st['concurrent_per_second']:.0f}/s (p99 {st['concurrent_p99']:.2f} s); "
                 f"admin.py decide process {st['admin_cli_seconds']:.2f} s")
    lines.append("targets: " + ", ".join(f"{k} {'PASS' if v else 'FAIL'}" for k, v in s["targets"].items()))
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.intake", description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, default=500, help="complaints per burst (default 500)")
    parser.add_argument("--rounds", type=int, default=5, help="product/bare/shape rounds after the warm-up")
    parser.add_argument("--paced-seconds", type=float, default=15.0)
    parser.add_argument("--sequential", type=int, default=100, help="decide round trips one by one")
    parser.add_argument("--concurrent", type=int, default=200, help="decides at once")
    parser.add_argument("--output", type=Path, help="also write the JSON summary here")
    parser.add_argument("--server-file", action="store_true",
                        help="dev server history in a SQLite file (WAL) instead of in memory")
    parser.add_argument("--profile", type=Path, metavar="DIR",
                        help="record each burst's worker with py-spy into DIR (collapsed stacks)")
    args = parser.parse_args()
    summary = asyncio.run(main_async(args))
    text = json.dumps(summary, indent=2, default=str)
    print(text)
    if args.output:
        args.output.write_text(text + "\n")
    print(table(summary))
    return 0 if all(summary["targets"].values()) else 1


if __name__ == "__main__":
    exit_process(main())

"""``python -m bench.tuning``: the product's burst under different worker tunings.

Not part of ``make bench`` (it takes a few minutes per setting); it is how the WORKER_*
defaults in infra/config.py were chosen (BENCHMARKS.md). Each setting gets its own
worker on the same fresh dev server, PostgreSQL and SMTP server, after one warm-up burst;
settings are run in turn, ``--rounds`` times, and the medians reported.

    python -m bench.tuning --count 500 --rounds 2
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
import tempfile
from pathlib import Path

from bench.intake import Bench, Burst
from infra.cli import exit_process

SETTINGS: dict[str, dict[str, str]] = {
    "defaults": {},
    "cache 250": {"WORKER_MAX_CACHED_WORKFLOWS": "250"},
    "10 activity slots": {"WORKER_MAX_CONCURRENT_ACTIVITIES": "10"},
    "20 workflow task slots": {"WORKER_MAX_CONCURRENT_WORKFLOW_TASKS": "20"},
    "2 pollers each": {"WORKER_WORKFLOW_POLLERS": "2", "WORKER_ACTIVITY_POLLERS": "2"},
    "10 pollers each, pool 20": {"WORKER_WORKFLOW_POLLERS": "10", "WORKER_ACTIVITY_POLLERS": "10",
                                 "DATABASE_POOL_SIZE": "20"},
}

FIELDS = ("per_second", "cpu_per_complaint_ms", "latency_p99", "peak_rss_mb")


async def main_async(count: int, rounds: int) -> dict[str, dict[str, float]]:
    results: dict[str, list[Burst]] = {name: [] for name in SETTINGS}
    with tempfile.TemporaryDirectory(prefix="bench-tuning-") as tmp:
        async with Bench(count, Path(tmp)) as bench:
            await bench.burst("product", "warmup", count=100)
            for r in range(rounds):
                for i, (name, env) in enumerate(SETTINGS.items()):
                    bench.worker_env = env
                    result, _ = await bench.burst("product", f"t{r}-{i}")
                    results[name].append(result)
                    print(f"{name}: {result.per_second:.1f}/s, {result.cpu_per_complaint_ms:.1f} ms CPU,"
                          f" p99 {result.latency_p99:.1f} s, {result.peak_rss_mb:.0f} MB", file=sys.stderr)
    return {name: {f: statistics.median(getattr(b, f) for b in runs) for f in FIELDS}
            for name, runs in results.items()}


def main() -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.tuning", description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, default=500)
    parser.add_argument("--rounds", type=int, default=2)
    args = parser.parse_args()
    summary = asyncio.run(main_async(args.count, args.rounds))
    print(json.dumps(summary, indent=2))
    print(f"{'setting':28} {'per s':>7} {'CPU ms':>7} {'p99 s':>6} {'RSS MB':>7}")
    for name, r in summary.items():
        print(f"{name:28} {r['per_second']:7.1f} {r['cpu_per_complaint_ms']:7.1f} {r['latency_p99']:6.1f}"
              f" {r['peak_rss_mb']:7.0f}")
    return 0


if __name__ == "__main__":
    exit_process(main())

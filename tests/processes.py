"""Real product processes for end-to-end and fault tests: started, killed, stopped."""

from __future__ import annotations

import asyncio
import signal
import sys
from typing import Awaitable, Callable, TypeVar

from tests.cli import REPO

T = TypeVar("T")


async def start_worker(env: dict[str, str]) -> asyncio.subprocess.Process:
    return await asyncio.create_subprocess_exec(
        sys.executable, "worker.py", cwd=REPO, env=env,
        stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL)


async def stop(proc: asyncio.subprocess.Process, sig: int = signal.SIGTERM, timeout: float = 20) -> None:
    if proc.returncode is None:
        proc.send_signal(sig)
        try:
            await asyncio.wait_for(proc.wait(), timeout)
        except asyncio.TimeoutError:
            proc.kill()
            await proc.wait()


async def wait_until(check: Callable[[], Awaitable[T]], timeout: float = 60.0, interval: float = 0.25,
                     what: str = "condition") -> T:
    """Await ``check()`` until it returns something truthy; fail after ``timeout`` seconds."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        value = await check()
        if value:
            return value
        if loop.time() > deadline:
            raise AssertionError(f"{what}: not reached within {timeout:.0f} s (last: {value!r})")
        await asyncio.sleep(interval)

"""Run the product's command-line programs as real processes (without blocking the event loop)."""

from __future__ import annotations

import asyncio
import base64
import json
import os
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from infra.config import Settings

REPO = Path(__file__).resolve().parent.parent


@dataclass
class Result:
    code: int
    out: str
    err: str

    def json(self) -> Any:
        """The one JSON object printed by a successful command."""
        assert self.code == 0, self
        return json.loads(self.out)


def cli_env(settings: Settings, temporal_address: str, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("TEMPORAL_", "SMTP_", "DATABASE_", "COMPLAINTS_"))}
    env.update(
        TEMPORAL_ADDRESS=temporal_address,
        TEMPORAL_NAMESPACE="default",
        TEMPORAL_TASK_QUEUE=settings.task_queue,
        DATABASE_URL=settings.database_url,
        COMPLAINTS_ENCRYPTION_KEYS=",".join(f"{kid}:{base64.b64encode(key).decode()}"
                                            for kid, key in settings.encryption_keys),
        PYTHONPATH=str(REPO),
    )
    env.update(extra)
    return env


async def run_cli(*args: str, env: dict[str, str], stdin: bytes | None = None, timeout: float = 60) -> Result:
    proc = await asyncio.create_subprocess_exec(
        sys.executable, *args, cwd=REPO, env=env,
        stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    out, err = await asyncio.wait_for(proc.communicate(stdin), timeout)
    assert proc.returncode is not None
    return Result(proc.returncode, out.decode(), err.decode())


async def run_admin(environ: dict[str, str], *args: str) -> Result:
    return await run_cli(str(REPO / "admin.py"), *args, env=environ, timeout=90)


def admin_environ(env: Any, settings: Settings, **extra: str) -> dict[str, str]:
    """admin.py's environment for the session's servers, acting as staff member "tester"."""
    return cli_env(settings, env.client.service_client.config.target_host, COMPLAINTS_STAFF="tester", **extra)

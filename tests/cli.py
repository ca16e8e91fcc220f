"""Run the product's command-line programs as real processes (without blocking the event loop)."""

from __future__ import annotations

import asyncio
import base64
import importlib.util
import json
import os
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from infra.config import Settings
from tests import staff as test_staff

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


def cli_env(settings: Settings, temporal_address: str, staff: str | None = None, **extra: str) -> dict[str, str]:
    """The environment of a program of the product (admin.py, the starter, a worker) for the session's
    servers, with the test staff register; ``staff``: admin.py signs with that person's key."""
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
    env["COMPLAINTS_STAFF_FILE"] = str(test_staff.REGISTER)
    if staff is not None:
        env["COMPLAINTS_STAFF_KEY"] = str(test_staff.key_file(staff))
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
    return cli_env(settings, env.client.service_client.config.target_host, staff="tester", **extra)


def deployment_script(relative: str) -> Any:
    """A script of the deployment (deploy/*.py, not a package) as a module, to call its functions."""
    path = REPO / relative
    spec = importlib.util.spec_from_file_location(path.stem, path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module

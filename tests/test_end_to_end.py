"""End to end: the real worker, starter and admin processes on the dev server.

A newcomer's walk: submit the example complaint, see the acknowledgement arrive,
decide it with the admin CLI, find it by phase, and (fast-forwarded a year) see
its personal data erased from the dossier.
"""

from __future__ import annotations

import asyncio
import json
from datetime import timedelta

import pytest
from temporalio.testing import TimeSkipper

from tests.cli import REPO, cli_env, run_cli
from tests.processes import start_worker, stop, wait_until


@pytest.fixture
async def stack_env(env, settings, mail):
    address = env.client.service_client.config.target_host
    return cli_env(settings, address, SMTP_HOST=mail.host, SMTP_PORT=str(mail.port),
                   staff="e2e-officer")


@pytest.fixture
async def worker_process(stack_env):
    proc = await start_worker(stack_env)
    try:
        yield proc
    finally:
        await stop(proc)


async def show(stack_env, complaint_id: str) -> dict:
    result = await run_cli("admin.py", "show", complaint_id, "--json", env=stack_env)
    assert result.code == 0, result.err
    return json.loads(result.out)


async def test_a_complaint_from_intake_to_decision_to_erasure(env, stack_env, worker_process, mail, pool):
    submitted = await run_cli("-m", "starter", "submit", str(REPO / "examples" / "complaint.json"),
                              "--json", env=stack_env)
    assert submitted.code == 0, submitted.err
    complaint_id = json.loads(submitted.out)["complaint_id"]

    [ack] = await wait_until(lambda: _async(mail.find(x_complaint_id=complaint_id,
                                                      x_letter_kind="acknowledgement")))
    assert "Ontvangstbevestiging" in ack["Subject"]
    view = await wait_until(lambda: _acknowledged(stack_env, complaint_id))
    assert view["phase"] == "formal" and view["deadlines"]["acknowledge_by"].endswith(("+01:00", "+02:00"))

    decided = await run_cli("admin.py", "decide", complaint_id, "--outcome", "partially-upheld",
                            "--motivation", "De trainer was afwezig; de prijs klopte wel.", env=stack_env)
    assert decided.code == 0, decided.err
    await wait_until(lambda: _async(mail.find(x_complaint_id=complaint_id, x_letter_kind="decision")))
    view = await show(stack_env, complaint_id)
    assert (view["phase"], view["outcome"]) == ("decided", "partially-upheld")
    assert view["history"][-1]["by"] == "e2e-officer"

    async def listed_as_decided():
        result = await run_cli("admin.py", "list", "--phase", "decided", "--json", env=stack_env)
        return [json.loads(line) for line in result.out.splitlines() if complaint_id in line]
    [row] = await wait_until(listed_as_decided)
    assert row["phase"] == "decided" and row["product"]

    refused = await run_cli("admin.py", "decide", complaint_id, "--outcome", "upheld",
                            "--motivation", "Nogmaals.", env=stack_env)
    assert refused.code == 3 and "decided" in refused.err

    handle = env.client.get_workflow_handle(complaint_id)
    skipper = TimeSkipper(env.client)
    await skipper.fast_forward(handle, timedelta(days=15))
    assert (await show(stack_env, complaint_id))["phase"] == "closed"
    await skipper.fast_forward(handle, timedelta(days=366))
    await asyncio.wait_for(handle.result(), 30)
    row = await pool.fetchrow("SELECT phase, complainant_name, description, outcome FROM complaints"
                              " WHERE complaint_id = $1", complaint_id)
    assert dict(row) == {"phase": "purged", "complainant_name": None, "description": None,
                         "outcome": "partially-upheld"}
    assert len(mail.find(x_complaint_id=complaint_id, x_letter_kind="acknowledgement")) == 1


async def _async(value):
    return value


async def _acknowledged(stack_env, complaint_id: str):
    view = await show(stack_env, complaint_id)
    return view if view["acknowledged_at"] else None

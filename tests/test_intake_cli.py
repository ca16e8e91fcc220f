"""``python -m starter submit``: exit codes, output formats, and nothing started on bad input."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from complaints.ids import complaint_id_for
from complaints.models import ComplaintSubmission
from tests.cli import cli_env, run_cli
from tests.conftest import free_port
from tests.lifecycle import workflow_exists as exists
from tests.factories import complaint_json


@pytest.fixture
def cli(env, settings):
    address = env.client.service_client.config.target_host
    return cli_env(settings, address)


def id_of(item: dict) -> str:
    return complaint_id_for(ComplaintSubmission.model_validate(item))




async def test_submit_prints_one_id_per_complaint_and_starts_each(client, cli, tmp_path: Path) -> None:
    items = [complaint_json(), complaint_json(route="informal", channel="conversation")]
    path = tmp_path / "batch.json"
    path.write_text(json.dumps(items))
    result = await run_cli("-m", "starter", "submit", str(path), env=cli)
    assert result.code == 0, result.err
    assert result.out.split() == [id_of(i) for i in items]
    for item in items:
        assert await exists(client, id_of(item))


async def test_resubmitting_returns_the_same_id_not_a_second_complaint(client, cli) -> None:
    item = complaint_json()
    line = json.dumps(item).encode()
    first = await run_cli("-m", "starter", "submit", "-", "--json", env=cli, stdin=line)
    second = await run_cli("-m", "starter", "submit", "-", "--json", env=cli, stdin=line)
    assert first.code == second.code == 0
    assert json.loads(first.out) == {"complaint_id": id_of(item), "created": True}
    assert json.loads(second.out) == {"complaint_id": id_of(item), "created": False}
    runs = [w async for w in client.list_workflows(f"WorkflowId = '{id_of(item)}'")]
    assert len(runs) <= 1  # visibility may lag; never two


async def test_json_lines_from_stdin(cli) -> None:
    items = [complaint_json() for _ in range(3)]
    stdin = "\n".join(json.dumps(i) for i in items).encode()
    result = await run_cli("-m", "starter", "submit", "-", "--json", env=cli, stdin=stdin)
    assert result.code == 0, result.err
    assert [json.loads(line)["complaint_id"] for line in result.out.splitlines()] == [id_of(i) for i in items]


async def test_one_bad_item_starts_nothing(client, cli) -> None:
    good = complaint_json()
    bad = complaint_json(complainant={**complaint_json()["complainant"], "email": "not-an-address"})
    result = await run_cli("-m", "starter", "submit", "-", env=cli, stdin=json.dumps([good, bad]).encode())
    assert result.code == 2
    assert result.out == ""
    assert "item 2: complainant.email: " in result.err
    assert "Traceback" not in result.err
    assert not await exists(client, id_of(good))


async def test_unreadable_input_is_a_usage_error(cli, tmp_path: Path) -> None:
    result = await run_cli("-m", "starter", "submit", "-", env=cli, stdin=b"\xff\xfe not json")
    assert result.code == 2 and "not valid UTF-8" in result.err
    missing = await run_cli("-m", "starter", "submit", str(tmp_path / "nope.json"), env=cli)
    assert missing.code == 2 and "cannot read" in missing.err and "Traceback" not in missing.err


async def test_temporal_unreachable_is_one_clear_line(settings) -> None:
    cli = cli_env(settings, f"127.0.0.1:{free_port()}")
    result = await run_cli("-m", "starter", "submit", "-", env=cli, stdin=json.dumps(complaint_json()).encode())
    assert result.code == 1
    assert "Traceback" not in result.err
    [line] = result.err.strip().splitlines()
    assert line.startswith("starter: cannot reach Temporal at 127.0.0.1:")


async def test_a_reference_used_by_another_complaint_is_refused_and_the_rest_started(client, cli, tmp_path) -> None:
    """Same reference, same contents: the same complaint (created false). Same reference, other contents
    (a scanner that restarted its numbering): refused with exit 3, the other items started as usual."""
    first = complaint_json()
    path = tmp_path / "first.json"
    path.write_text(json.dumps(first))
    assert (await run_cli("-m", "starter", "submit", str(path), env=cli)).code == 0
    other = complaint_json(reference=first["reference"], description="Een heel andere klacht over de catering.")
    fresh = complaint_json()
    path.write_text(json.dumps([other, fresh]))
    result = await run_cli("-m", "starter", "submit", str(path), "--json", env=cli)
    assert result.code == 3, result.err
    lines = [json.loads(line) for line in result.out.splitlines()]
    assert lines == [{"complaint_id": id_of(first), "created": False, "conflict": True},
                     {"complaint_id": id_of(fresh), "created": True}]
    assert f"item 1: reference: already used by another complaint ({id_of(first)})" in result.err
    assert await exists(client, id_of(fresh))
    text = await run_cli("-m", "starter", "submit", str(path), env=cli)
    assert text.code == 3 and text.out.split() == [id_of(fresh)]
    path.write_text(json.dumps(first))  # the very same complaint again: idempotent, as before
    again = await run_cli("-m", "starter", "submit", str(path), "--json", env=cli)
    assert again.code == 0 and json.loads(again.out) == {"complaint_id": id_of(first), "created": False}

"""Every staff command against every phase in which it does not fit: refused, and nothing changes.

One complaint per phase (informal, formal, decided, mediation before and after the mediator is
engaged, consequences, closed), walked there in-process with the lifecycle helpers and the real
worker; then ``admin.py`` runs as real processes, a few at a time. Each refusal must exit 3 with
the reason on stderr (one line, no traceback, nothing on stdout), and the complaint's
``show --json`` and its Temporal history must be the same before and after all refusals.
Unknown ids exit 4 for every command that takes one.

The table of where each command fits is written out here, independently of the workflow's
validators; a command added to ``admin.py`` without a row here fails the test.
"""

from __future__ import annotations

import asyncio
import uuid
from datetime import date, timedelta
from typing import Any

import admin
from complaints.models import LetterKind, Phase, ResolveInformallyInput
from tests.cli import REPO, Result, cli_env, run_cli
from tests.lifecycle import (
    decide,
    engage,
    give_verdict,
    history_length,
    settled_history_length,
    start_formal,
    start_informal,
    started,
    to_mediation,
    wait_letter,
    wait_view,
)
from workflows.complaint import ComplaintWorkflow

ADMIN = str(REPO / "admin.py")
CONCURRENCY = 6

OPEN = {"informal", "formal", "decided", "mediation", "consequences"}
#: The phases in which each staff command passes the phase check (README, "Staff: the admin CLI").
FITS_PHASE: dict[str, set[str]] = {
    "resolve-informally": {"informal"},
    "escalate": {"informal"},
    "extend": {"formal"},
    "decide": {"formal"},
    "disagree": {"formal", "decided"},
    "engage-mediator": {"mediation"},
    "verdict": {"mediation"},
    "consequences-picked-up": {"consequences"},
    "withdraw": OPEN,
    "measure": OPEN | {"closed"},
    "correct-contact": OPEN | {"closed"},  # closed: only for a letter that did not go out
    "resend": OPEN | {"closed"},
    "complete": OPEN,
    "set-product": OPEN | {"closed"},
}
#: Valid arguments for each command, so that only the complaint's state can refuse it.
ARGS: dict[str, list[str]] = {
    "resolve-informally": ["--note", "Excuses aangeboden."],
    "escalate": ["--reason", "Klant wil een formele behandeling."],
    "extend": ["--until", (date.today() + timedelta(days=200)).isoformat(), "--reason", "Meer tijd nodig."],
    "decide": ["--outcome", "rejected", "--motivation", "Geen grond."],
    "disagree": ["--note", "Klant gaat niet akkoord."],
    "engage-mediator": ["--mediator", "Mr. B. Tweede"],
    "verdict": ["--summary", "De klacht is terecht.", "--consequence", "Terugbetalen"],
    "consequences-picked-up": ["--note", "Terugbetaald."],
    "withdraw": ["--reason", "Klant trekt de klacht in."],
    "measure": ["--text", "Trainers krijgen een vervanger op afroep."],
    "correct-contact": ["--email", "jan.devries@example.nl"],
    "resend": ["--kind", LetterKind.DECISION.value],  # no letter was refused: there is nothing to resend
    "complete": ["--phone", "06 12345678"],
    "set-product": ["coaching"],
}
#: The complaints this test walks: label -> phase.
STATES = {"informal": "informal", "formal": "formal", "decided": "decided", "mediation": "mediation",
          "mediation-engaged": "mediation", "consequences": "consequences", "closed": "closed"}


def refusal(command: str, state: str) -> str | None:
    """Why ``command`` does not fit a complaint in ``state`` (a part of the message), or None if it fits."""
    phase = STATES[state]
    if phase not in FITS_PHASE[command]:
        return f"{command} is not possible in phase {phase} (only in: "
    if command == "engage-mediator" and state == "mediation-engaged":
        return "a mediator is already engaged"
    if command == "verdict" and state == "mediation":
        return "engage the independent mediator first"
    if command in ("correct-contact", "resend") and phase == "closed":
        return f"{command} is not possible in phase closed: its closing letter was delivered"
    if command == "resend":
        return "no undelivered decision letter to send again"
    return None


def test_the_table_covers_every_staff_command() -> None:
    assert set(FITS_PHASE) == set(ARGS) == set(admin.ACTIONS), "add the new command's row to this test"
    refused = sum(refusal(c, s) is not None for c in ARGS for s in STATES)
    assert refused >= 55  # the matrix is not trivially small


async def _reach(state: str, client, settings, mail) -> Any:
    """A complaint walked to ``state``, with everything it set in motion done."""
    if state in ("informal", "closed"):
        handle = await start_informal(client, settings)
        await started(handle)
        if state == "closed":
            first_run = (await handle.describe()).run_id
            await handle.execute_update(ComplaintWorkflow.resolve_informally,
                                        ResolveInformallyInput(by="Marieke Jansen", note="Opgelost in een gesprek."))
            await wait_letter(mail, handle, LetterKind.INFORMAL_RESOLUTION)

            async def retention_run() -> bool:  # closed complaints continue as new without personal data
                return (await client.get_workflow_handle(handle.id).describe()).run_id != first_run
            await wait_view(handle, lambda v: v.phase is Phase.CLOSED)
            for _ in range(300):
                if await retention_run():
                    break
                await asyncio.sleep(0.05)
            assert await retention_run(), "the closed complaint did not continue into its retention run"
    else:
        handle = await start_formal(client, settings)
        await wait_view(handle, lambda v: v.acknowledged_at is not None, "the acknowledgement")
        if state == "decided":
            await decide(handle)
            await wait_letter(mail, handle, LetterKind.DECISION)
        elif state in ("mediation", "mediation-engaged", "consequences"):
            await to_mediation(handle, mail)
            if state != "mediation":
                await engage(handle)
                await wait_letter(mail, handle, LetterKind.MEDIATOR_ENGAGED)
            if state == "consequences":
                await give_verdict(handle, ["Nieuwe trainer inplannen"])
                await wait_letter(mail, handle, LetterKind.VERDICT)
    view = await wait_view(handle, lambda v: v.phase.value == STATES[state], f"phase {STATES[state]}")
    assert (view.mediator is not None) == (state in ("mediation-engaged", "consequences"))
    await settled_history_length(handle)
    return handle


def _one_line(result: Result) -> str:
    lines = result.err.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in result.err, result
    return lines[0]


async def test_every_command_is_refused_in_every_phase_it_does_not_fit(client, settings, worker, mail, env) -> None:
    environ = cli_env(settings, env.client.service_client.config.target_host, staff="tester")
    gate = asyncio.Semaphore(CONCURRENCY)

    async def admin_cli(*args: str) -> Result:
        async with gate:
            return await run_cli(ADMIN, *args, env=environ, timeout=90)

    async def show(complaint_id: str) -> dict[str, Any]:
        return (await admin_cli("show", complaint_id, "--json")).json()

    handles = dict(zip(STATES, await asyncio.gather(*(_reach(s, client, settings, mail) for s in STATES))))
    before = dict(zip(STATES, await asyncio.gather(*(show(h.id) for h in handles.values()))))
    lengths = {s: await history_length(h) for s, h in handles.items()}
    for state, shown in before.items():
        assert shown["phase"] == STATES[state], (state, shown["phase"])

    cases = [(state, command, reason) for state in STATES for command in ARGS
             if (reason := refusal(command, state)) is not None]
    results = await asyncio.gather(*(admin_cli(command, handles[state].id, *ARGS[command])
                                     for state, command, _ in cases))

    wrong = []
    for (state, command, reason), result in zip(cases, results):
        if result.code != 3 or result.out != "" or "Traceback" in result.err:
            wrong.append(f"{command} in {state}: exit {result.code}, out {result.out!r}, err {result.err!r}")
            continue
        line = _one_line(result)
        if not (line.startswith("refused: ") and reason in line):
            wrong.append(f"{command} in {state}: {line!r} does not say {reason!r}")
    assert not wrong, "\n".join(wrong)

    after = dict(zip(STATES, await asyncio.gather(*(show(h.id) for h in handles.values()))))
    for state, handle in handles.items():
        assert after[state] == before[state], f"a refused action changed the {state} complaint"
        assert await history_length(handle) == lengths[state], f"a refused action touched the {state} history"
    assert len(cases) >= 55


async def test_unknown_ids_exit_4_for_every_command(env, settings) -> None:
    environ = cli_env(settings, env.client.service_client.config.target_host, staff="tester")
    gate = asyncio.Semaphore(CONCURRENCY)
    unknown = f"complaint-{uuid.uuid4().hex[:16]}"

    async def admin_cli(*args: str) -> Result:
        async with gate:
            return await run_cli(ADMIN, *args, env=environ, timeout=90)

    commands = [["show"], ["show", "--json"], ["audit"], ["audit", "--json"]] + [[c, *ARGS[c]] for c in ARGS]
    results = await asyncio.gather(*(admin_cli(command[0], unknown, *command[1:]) for command in commands))
    wrong = [f"{' '.join(command)}: exit {r.code}, out {r.out!r}, err {r.err!r}"
             for command, r in zip(commands, results)
             if r.code != 4 or r.out != "" or unknown not in r.err or len(r.err.strip().splitlines()) != 1
             or "Traceback" in r.err]
    assert not wrong, "\n".join(wrong)

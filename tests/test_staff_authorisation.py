"""Who did it: only a registered person whose role allows it changes a complaint, and the trail says who.

From outside, against the real worker: ``admin.py`` as an officer trying ``decide`` (exit 5, nothing in
the history), an unregistered key, a forged signature, a signed request sent twice or to another
complaint, a person removed from the register, an action without a signature, and a bare client
without the encryption codec. The lifecycle with an officer and a director each doing their part, and
``audit`` naming them with their key ids. The role table is written out here, independently of
complaints/staff.py.
"""

from __future__ import annotations

import asyncio
import stat
import uuid
from dataclasses import replace
from pathlib import Path
from typing import Any, Sequence

import pytest
from temporalio.client import Client, WorkflowFailureError, WorkflowUpdateFailedError
from temporalio.api.common.v1 import Payload
from temporalio.converter import PayloadCodec
from temporalio.exceptions import ApplicationError

import admin
from complaints.models import (
    ComplaintWorkflowInput,
    DecideInput,
    LetterKind,
    MeasureInput,
    Outcome,
    Phase,
    RetainedComplaint,
    StaffAction,
)
from complaints.staff import NOT_AUTHORISED, RegisterError, StaffRegister, StaffRole
from infra import staff_register
from infra.codec import EncryptionCodec
from infra.signing import StaffKey, new_key, read_key, write_key
from tests import staff
from tests.cli import REPO, Result, cli_env, run_cli
from tests.lifecycle import (
    assert_refused,
    history_length,
    settled_history_length,
    start_formal,
    start_informal,
    started,
    status,
    wait_letter,
    wait_view,
)
from tests.test_admin_refusals import ARGS
from worker import build_worker
from workflows.complaint import ComplaintWorkflow

ADMIN = str(REPO / "admin.py")
#: What an officer of the informal phase may do (the procedure; README, "Staff and their roles").
OFFICER_MAY = {"resolve-informally", "escalate", "measure", "correct-contact", "resend", "register"}


def as_staff(env, settings, name: str) -> dict[str, str]:
    return cli_env(settings, env.client.service_client.config.target_host, staff=name)


def refused_line(result: Result) -> str:
    lines = result.err.strip().splitlines()
    assert result.out == "" and len(lines) == 1 and "Traceback" not in result.err, result
    return lines[0]


async def first_run(handle: Any) -> str:
    """Which complaint of its id ``handle`` names: its first run (what a signature names with the id)."""
    return (await handle.describe()).raw_description.workflow_execution_info.first_run_id


def bare(client: Client) -> Client:
    """A client of the same server that signs nothing (but still encrypts)."""
    config = client.config()
    config["interceptors"] = []
    return Client(**config)


# ---------------------------------------------------------------- the register and the roles


def test_the_register_names_the_table_and_the_field_of_a_mistake() -> None:
    key = new_key("Eva", StaffRole.OFFICER).register_entry()
    assert [m.name for m in StaffRegister.parse(key + "\n" + new_key("Bo", StaffRole.DIRECTOR).register_entry())
            .members] == ["Eva", "Bo"]
    for text, message in [
            (key.replace('"officer"', '"boss"'), "staff #1: role: 'boss' must be officer or director"),
            (key.replace("ed25519:", "rsa:"), "staff #1: public_key: must start with ed25519:"),
            (key.replace('name = "Eva"\n', ""), "staff #1: name: missing"),
            (key + 'email = "eva@level-up.nl"\n', "staff #1: email: not a field of a staff member"),
            (key + "\n" + key, "staff #2: public_key: registered twice"),
            ("[[staf]]\nname = 'x'\n", "only [[staff]] tables belong in the staff register")]:
        with pytest.raises(RegisterError) as info:
            StaffRegister.parse(text)
        assert str(info.value).startswith(message), info.value


async def test_keygen_writes_a_private_key_only_its_owner_reads_and_prints_the_register_entry(
        env, settings, tmp_path: Path) -> None:
    path = tmp_path / "keys" / "eva.toml"
    environ = cli_env(settings, env.client.service_client.config.target_host)
    made = await run_cli(ADMIN, "keygen", "--name", "Eva  de Vries", "--role", "officer", "--key-file", str(path),
                         env=environ)
    assert made.code == 0, made
    key = read_key(path)
    assert (key.name, key.role) == ("Eva de Vries", StaffRole.OFFICER)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    [member] = StaffRegister.parse(made.out).members  # the printed table, appended as it is
    assert (member.name, member.role, member.key_id) == ("Eva de Vries", StaffRole.OFFICER, key.key_id)
    private = path.read_text().split("private_key = ")[1].strip().strip('"').split(":")[1]
    assert private not in made.out + made.err and key.key_id in made.err
    again = await run_cli(ADMIN, "keygen", "--name", "Eva", "--role", "director", "--key-file", str(path),
                          env=environ)
    assert again.code == 2 and "exists already" in refused_line(again)
    assert read_key(path).role is StaffRole.OFFICER  # never overwritten
    # By default: the user's config directory, where admin.py looks for it.
    home = await run_cli(ADMIN, "keygen", "--name", "Bo", "--role", "director",
                         env={**environ, "XDG_CONFIG_HOME": str(tmp_path / "config")})
    assert home.code == 0, home
    assert read_key(tmp_path / "config" / "level-up-complaints" / "staff-key.toml").name == "Bo"


async def test_a_bad_register_stops_the_worker_at_start_naming_the_variable(env, settings, tmp_path: Path) -> None:
    register = tmp_path / "staff.toml"
    register.write_text('[[staff]]\nname = "Eva"\nrole = "boss"\npublic_key = "ed25519:AAAA"\n')
    environ = cli_env(settings, env.client.service_client.config.target_host,
                      COMPLAINTS_STAFF_FILE=str(register))
    started_worker = await run_cli(str(REPO / "worker.py"), env=environ, timeout=60)
    assert started_worker.code == 2
    assert refused_line(started_worker) == \
        f"worker: COMPLAINTS_STAFF_FILE: {register}: staff #1: role: 'boss' must be officer or director"


# ---------------------------------------------------------------- refusals from outside


async def test_an_officer_may_not_decide_and_nothing_reaches_the_history(env, client, settings, worker, mail) -> None:
    handle = await start_formal(client, settings)
    await wait_letter(mail, handle, LetterKind.ACKNOWLEDGEMENT)
    length = await settled_history_length(handle)  # settled first: then the view it shows
    before = await status(handle)
    officer = as_staff(env, settings, staff.OFFICER)

    decided = await run_cli(ADMIN, "decide", handle.id, "--outcome", "upheld", "--motivation", "Terecht.",
                            env=officer)
    assert decided.code == 5
    assert refused_line(decided) == "not authorised: officer may not decide"
    assert await history_length(handle) == length and await status(handle) == before

    # Everything the officer may not do is refused as such; what they may do is not refused for their role.
    results = await asyncio.gather(*(run_cli(ADMIN, command, handle.id, *ARGS[command], env=officer, timeout=90)
                                     for command in admin.ACTIONS))
    for command, result in zip(admin.ACTIONS, results):
        if command in OFFICER_MAY:
            assert result.code != 5, (command, result)
        else:
            assert (result.code, refused_line(result)) == (5, f"not authorised: officer may not {command}"), command
    done = {command for command, result in zip(admin.ACTIONS, results) if result.code == 0}
    assert done == {"measure", "correct-contact"}  # resolve-informally, escalate, resend: not in this phase
    view = await status(handle)
    assert sorted((h.action, h.by, h.key_id) for h in view.history[len(before.history):]) == [
        (action, staff.OFFICER, staff.KEYS[staff.OFFICER].key_id) for action in ("correct-contact", "measure")]


async def test_an_unregistered_key_a_forged_signature_and_no_signature_are_refused(
        env, client, settings, worker, mail, tmp_path: Path) -> None:
    handle = await start_formal(client, settings)
    await wait_letter(mail, handle, LetterKind.ACKNOWLEDGEMENT)
    decision = DecideInput(by="Marieke Jansen", outcome=Outcome.UPHELD, motivation="Terecht.")

    # A key of one's own making, not in the register: admin.py exits 5 and says which key.
    stranger = new_key("Marieke Jansen", StaffRole.DIRECTOR)
    path = tmp_path / "stranger.toml"
    write_key(stranger, path)
    environ = {**as_staff(env, settings, "Marieke Jansen"), "COMPLAINTS_STAFF_KEY": str(path)}
    refused = await run_cli(ADMIN, "decide", handle.id, "--outcome", "upheld", "--motivation", "Terecht.",
                            env=environ)
    assert (refused.code, refused_line(refused)) == (
        5, f"not authorised: key {stranger.key_id} is not in the staff register")

    unsigned = bare(client).get_workflow_handle(handle.id)
    message = await assert_refused(unsigned, ComplaintWorkflow.decide, decision, NOT_AUTHORISED)
    assert message.startswith("the action is not signed")

    # Signed by a registered director, then changed (the outcome), or claimed for another's key.
    instance = await first_run(handle)
    signed = staff.KEYS["Marieke Jansen"].sign(handle.id, instance, "decide", decision)
    changed = signed.model_copy(update={"outcome": Outcome.REJECTED})
    assert "does not match" in await assert_refused(unsigned, ComplaintWorkflow.decide, changed, NOT_AUTHORISED)
    assert signed.signature is not None
    claimed = signed.model_copy(update={"signature": signed.signature.model_copy(
        update={"key_id": staff.KEYS["Directeur Willem"].key_id})})
    assert "does not match" in await assert_refused(unsigned, ComplaintWorkflow.decide, claimed, NOT_AUTHORISED)
    # A signature for another action of the same complaint.
    as_withdraw = staff.KEYS["Marieke Jansen"].sign(handle.id, instance, "withdraw", decision)
    assert "does not match" in await assert_refused(unsigned, ComplaintWorkflow.decide, as_withdraw, NOT_AUTHORISED)
    # A registered key with another name than the register's.
    renamed = staff.KEYS["Marieke Jansen"].sign(handle.id, instance, "decide", decision)
    renamed = renamed.model_copy(update={"by": "Directeur Willem"})
    assert "does not match" in await assert_refused(unsigned, ComplaintWorkflow.decide, renamed, NOT_AUTHORISED)
    # Signed for this id but another complaint of it (another first run: an id used again later).
    elsewhere = staff.KEYS["Marieke Jansen"].sign(handle.id, "01a2-another-first-run", "decide", decision)
    assert "does not match" in await assert_refused(unsigned, ComplaintWorkflow.decide, elsewhere, NOT_AUTHORISED)
    assert (await status(handle)).phase is Phase.FORMAL


async def test_a_signed_action_counts_once_and_only_on_its_own_complaint(env, client, settings, worker, mail) -> None:
    first, other = await start_informal(client, settings), await start_informal(client, settings)
    await started(first), await started(other)
    unsigned = bare(client)
    measure = MeasureInput(by="Kwaliteitsmanager Eva", text="Coaches bellen binnen een dag terug.")
    captured = staff.KEYS["Kwaliteitsmanager Eva"].sign(first.id, await first_run(first), "record_measure", measure)

    view = await unsigned.get_workflow_handle(first.id).execute_update(ComplaintWorkflow.record_measure, captured)
    assert [m.text for m in view.measures] == [measure.text]
    # The same request again (a captured request replayed): refused, nothing recorded twice.
    message = await assert_refused(unsigned.get_workflow_handle(first.id), ComplaintWorkflow.record_measure,
                                   captured, NOT_AUTHORISED)
    assert message == "this signed action was sent before (each signature counts once)"
    # ... and sent to another complaint: the signature names the first one.
    message = await assert_refused(unsigned.get_workflow_handle(other.id), ComplaintWorkflow.record_measure,
                                   captured, NOT_AUTHORISED)
    assert "does not match" in message
    assert len((await status(first)).measures) == 1 and (await status(other)).measures == []


async def test_a_person_removed_from_the_register_is_refused_at_once(
        env, client, settings, pool, mail, tmp_path: Path) -> None:
    register = tmp_path / "staff.toml"
    temp = new_key("Tijdelijke Medewerker", StaffRole.DIRECTOR)
    others = [staff.KEYS["Marieke Jansen"].register_entry()]
    register.write_text("\n".join(others + [temp.register_entry()]))
    own = replace(settings, staff_file=register)
    try:
        async with build_worker(client, own, pool):
            handle = await start_informal(client, own)
            await started(handle)
            act = bare(client).get_workflow_handle(handle.id)

            instance = await first_run(handle)

            def signed(key: StaffKey, text: str) -> StaffAction:
                return key.sign(handle.id, instance, "record_measure", MeasureInput(by=key.name, text=text))
            await act.execute_update(ComplaintWorkflow.record_measure, signed(temp, "Eerste maatregel."))
            register.write_text("\n".join(others))  # removed; the worker runs on
            message = await assert_refused(act, ComplaintWorkflow.record_measure,
                                           signed(temp, "Tweede maatregel."), NOT_AUTHORISED)
            assert message == f"key {temp.key_id} is not in the staff register"
            register.write_text("not [valid")  # a register that cannot be read refuses everyone
            message = await assert_refused(act, ComplaintWorkflow.record_measure,
                                           signed(staff.KEYS["Marieke Jansen"], "Derde."), NOT_AUTHORISED)
            assert message.startswith(f"the staff register cannot be used: COMPLAINTS_STAFF_FILE: {register}")
            register.write_text("\n".join(others))
            view = await act.execute_update(ComplaintWorkflow.record_measure,
                                            signed(staff.KEYS["Marieke Jansen"], "Derde maatregel."))
            assert [m.by for m in view.measures] == ["Tijdelijke Medewerker", "Marieke Jansen"]
    finally:
        staff_register.use(settings.staff_file)  # the session's register again for the tests that follow


async def test_every_staff_update_refuses_an_action_nobody_signed(client, settings, worker) -> None:
    """A staff action added without the authorisation check in its validator fails here."""
    handle = await start_informal(client, settings)
    await started(handle)
    unsigned = bare(client).get_workflow_handle(handle.id)
    checked = []
    for command, action in admin.ACTIONS.items():
        payload = action.model(by="Marieke Jansen", **_valid(command))
        with pytest.raises(WorkflowUpdateFailedError) as info:
            await unsigned.execute_update(action.update, payload)
        cause = info.value.cause
        assert isinstance(cause, ApplicationError) and cause.type == NOT_AUTHORISED, (command, cause)
        checked.append(command)
    assert len(checked) == len(admin.ACTIONS) >= 14


def _valid(command: str) -> dict[str, Any]:
    """Valid arguments of each staff action's model (so that only the missing signature refuses it)."""
    return {
        "resolve-informally": {"note": "Opgelost."}, "escalate": {"reason": "Geen oplossing."},
        "extend": {"until": "2099-01-01", "reason": "Meer tijd."},
        "decide": {"outcome": "upheld", "motivation": "Terecht."}, "disagree": {"note": "Niet eens."},
        "engage-mediator": {"mediator": "Mr. A. Bemiddelaar"}, "verdict": {"summary": "Bindend."},
        "consequences-picked-up": {"note": "Gedaan."}, "withdraw": {"reason": "Ingetrokken."},
        "measure": {"text": "Een maatregel."}, "correct-contact": {"email": "jan@example.nl"},
        "complete": {"phone": "06 12345678"}, "set-product": {"code": "coaching"},
        "resend": {"kind": "acknowledgement"},
    }[command]


async def test_a_client_without_the_encryption_key_can_change_nothing(env, client, settings, worker, mail,
                                                                      caplog) -> None:
    handle = await start_formal(client, settings)
    await wait_letter(mail, handle, LetterKind.ACKNOWLEDGEMENT)
    length = await settled_history_length(handle)  # settled first: then the view it shows
    before = await status(handle)
    plain = await Client.connect(env.client.service_client.config.target_host, namespace=client.namespace)
    decision = staff.KEYS["Marieke Jansen"].sign(handle.id, await first_run(handle), "decide", DecideInput(
        by="Marieke Jansen", outcome=Outcome.UPHELD, motivation="Terecht."))
    with pytest.raises(WorkflowUpdateFailedError):  # even signed by a director: not encrypted, not accepted
        await plain.get_workflow_handle(handle.id).execute_update("decide", decision.model_dump(mode="json"))
    assert await history_length(handle) == length and await status(handle) == before
    assert "refused a payload that is not encrypted" in caplog.text
    # A workflow started without the key fails at once, saying why; it never runs as a complaint.
    workflow_id = f"complaint-{uuid.uuid4().hex[:16]}"
    await plain.start_workflow("ComplaintWorkflow", {"submission": None}, id=workflow_id,
                               task_queue=settings.task_queue)
    with pytest.raises(WorkflowFailureError) as info:
        await asyncio.wait_for(client.get_workflow_handle(workflow_id).result(), 30)
    cause = info.value.cause
    assert isinstance(cause, ApplicationError) and cause.type == NOT_AUTHORISED, cause
    assert cause.message == "the request is not encrypted with the complaints' encryption key"


# ---------------------------------------------------------------- the lifecycle, each doing their part


async def test_an_officer_and_the_director_each_do_their_part_and_audit_names_them(
        env, client, settings, worker, mail) -> None:
    handle = await start_informal(client, settings)
    await started(handle)
    officer, director = as_staff(env, settings, staff.OFFICER), as_staff(env, settings, "Directeur Willem")
    for environ, args in [
            (officer, ["measure", handle.id, "--text", "Intakegesprek binnen een week."]),
            (officer, ["escalate", handle.id, "--reason", "Geen oplossing in het gesprek."]),
            (director, ["decide", handle.id, "--outcome", "upheld", "--motivation", "Terecht."])]:
        done = await run_cli(ADMIN, *args, env=environ)
        assert done.code == 0, (args, done)
    await wait_letter(mail, handle, LetterKind.DECISION)
    resolved = await run_cli(ADMIN, "resolve-informally", handle.id, "--note", "x", env=officer)
    assert resolved.code == 3  # the officer's role allows it; the phase does not
    keys = {name: staff.KEYS[name].key_id for name in (staff.OFFICER, "Directeur Willem")}

    async def trail() -> dict[str, Any]:
        return (await run_cli(ADMIN, "audit", handle.id, "--json", env=director)).json()
    found = await wait_view(handle, lambda v: v.phase is Phase.DECIDED, "the decision")
    assert found.history[-1].by == "Directeur Willem"
    for _ in range(100):
        events = (await trail())["events"]
        if [e["action"] for e in events][-1:] == ["decide"]:
            break
        await asyncio.sleep(0.1)
    assert [(e["action"], e["by"], e["key_id"]) for e in events if e["key_id"]] == [
        ("measure", staff.OFFICER, keys[staff.OFFICER]), ("escalate", staff.OFFICER, keys[staff.OFFICER]),
        ("decide", "Directeur Willem", keys["Directeur Willem"])]
    text = (await run_cli(ADMIN, "audit", handle.id, env=director)).out
    assert f"escalate by {staff.OFFICER} (key {keys[staff.OFFICER]})" in text
    assert f"decide by Directeur Willem (key {keys['Directeur Willem']})" in text


async def test_an_officer_registers_a_letter_and_a_stranger_is_told_it_stands_without_their_name(
        env, client, settings, worker, tmp_path: Path) -> None:
    from tests.test_admin_mail import _files, _register

    files = _files(tmp_path)
    officer = as_staff(env, settings, staff.OFFICER)
    own = uuid.uuid4().hex[:8]  # a complaint of this test's own (the id comes from the contents)
    registered = await run_cli(ADMIN, *_register(files, **{"--organisation": f"Gemeente {own}"}), env=officer)
    assert registered.code == 0, registered
    view = await started(client.get_workflow_handle(registered.out.strip()))
    assert [(h.action, h.by, h.key_id) for h in view.history if h.action == "register"] == [
        ("register", staff.OFFICER, staff.KEYS[staff.OFFICER].key_id)]

    stranger = tmp_path / "stranger.toml"
    write_key(new_key("Iemand", StaffRole.OFFICER), stranger)
    other = await run_cli(ADMIN, *_register(files, **{"--organisation": f"Stichting {own}"}),
                          env={**officer, "COMPLAINTS_STAFF_KEY": str(stranger)})
    assert other.code == 5, other
    assert "not authorised: key " in other.err and "was registered without your name" in other.err


async def test_a_retention_run_started_from_outside_fails_at_once(client, settings, worker) -> None:
    """Only a complaint's own run continues into its retention run: one started by a client (which could
    carry any view and history, key ids included) fails before it does anything."""
    handle = await start_informal(client, settings)
    view = await started(handle)
    forged = await client.start_workflow(
        ComplaintWorkflow.run, ComplaintWorkflowInput(retained=RetainedComplaint(view=view, dossier_version=1)),
        id=f"complaint-{uuid.uuid4().hex[:16]}", task_queue=settings.task_queue)
    with pytest.raises(WorkflowFailureError) as info:
        await asyncio.wait_for(forged.result(), 30)
    cause = info.value.cause
    assert isinstance(cause, ApplicationError) and cause.type == NOT_AUTHORISED, cause


async def test_a_forged_ciphertext_under_a_known_key_is_refused_and_blocks_nothing(env, client, settings, worker,
                                                                                   mail) -> None:
    """A payload that names a known key but does not decrypt is refused like an unencrypted one, never a
    workflow task that fails over and over."""
    handle = await start_formal(client, settings)
    await wait_letter(mail, handle, LetterKind.ACKNOWLEDGEMENT)
    length = await settled_history_length(handle)  # settled first: then the view it shows
    before = await status(handle)
    plain = await Client.connect(env.client.service_client.config.target_host, namespace=client.namespace,
                                 data_converter=replace(client.data_converter, payload_codec=_Forger(settings)))
    with pytest.raises(WorkflowUpdateFailedError) as info:
        await plain.get_workflow_handle(handle.id).execute_update(
            "decide", DecideInput(by="Marieke Jansen", outcome=Outcome.UPHELD, motivation="Terecht."))
    assert isinstance(info.value.cause, ApplicationError) and info.value.cause.type == NOT_AUTHORISED
    assert await history_length(handle) == length and await status(handle) == before


class _Forger(PayloadCodec):
    """Encrypts as the product does, then flips a byte: the key id is right, the ciphertext is not."""

    def __init__(self, settings: Any) -> None:
        self._codec = EncryptionCodec(settings.encryption_keys)

    async def encode(self, payloads: Sequence[Payload]) -> list[Payload]:
        sealed = await self._codec.encode(payloads)
        for payload in sealed:
            payload.data = payload.data[:-1] + bytes([payload.data[-1] ^ 1])
        return sealed

    async def decode(self, payloads: Sequence[Payload]) -> list[Payload]:
        return await self._codec.decode(payloads)

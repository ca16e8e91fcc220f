"""Confidential by construction: what Temporal stores is ciphertext, and the run that waits
out the retention year holds no personal data, not even decrypted."""

from __future__ import annotations

from datetime import timedelta
from typing import Iterator

from google.protobuf.message import Message
from temporalio.api.common.v1 import Payload
from temporalio.client import Client, WorkflowHandle

from complaints.models import (
    DecideInput,
    DisagreeInput,
    EngageMediatorInput,
    LetterKind,
    MeasureInput,
    Outcome,
    Phase,
    VerdictInput,
)
from infra.codec import EncryptionCodec
from tests.lifecycle import advance, start_complaint, wait_letter, wait_view
from workflows.complaint import ComplaintWorkflow

COMPLAINANT = {"name": "Henriëtte Zwanenburg", "organisation": "Stichting Zeldzaam Voorbeeld",
               "email": "h.zwanenburg@zeldzaam.example.nl", "phone": "+31 6 28765432", "role": "employee"}
DESCRIPTION = "De cursusleider Xylofoonstraat sprak mij denigrerend toe."
MOTIVATION = "Ik verwacht excuses van de directie wegens Quaggamotief."
NOTES = ["Telefonisch besproken met mevrouw Zwanenburg.", "Mevrouw blijft bij Quaggamotief.",
         "Excuses en herkansing Xylofoonstraat."]
PERSONAL = [COMPLAINANT["name"], COMPLAINANT["organisation"], COMPLAINANT["email"], "98765432",
            DESCRIPTION, MOTIVATION, "Xylofoonstraat", "Quaggamotief", "Zwanenburg", *NOTES]


def payloads(message: Message) -> Iterator[Payload]:
    """Every Payload anywhere inside a protobuf message (inputs, results, failures, metadata)."""
    if isinstance(message, Payload):
        yield message
        return
    for field, value in message.ListFields():
        if field.type != field.TYPE_MESSAGE:
            continue
        if isinstance(value, Message):
            yield from payloads(value)
            continue
        items = value.values() if hasattr(value, "values") and callable(value.values) else value
        for item in items:  # repeated fields and maps
            if isinstance(item, Message):
                yield from payloads(item)


async def history_bytes(client: Client, workflow_id: str, run_id: str) -> bytes:
    history = await client.get_workflow_handle(workflow_id, run_id=run_id).fetch_history()
    return b"".join(event.SerializeToString() for event in history.events)


async def decrypted_history(client: Client, codec: EncryptionCodec, workflow_id: str, run_id: str) -> str:
    history = await client.get_workflow_handle(workflow_id, run_id=run_id).fetch_history()
    found = [p for event in history.events for p in payloads(event)]
    return b"\n".join(p.data for p in await codec.decode(found)).decode("utf-8", "replace")


def leaked(text: str | bytes) -> list[str]:
    if isinstance(text, bytes):
        text = text.decode("utf-8", "replace")
    return [secret for secret in PERSONAL if secret in text]


async def run_ids(handle: WorkflowHandle, client: Client) -> list[str]:
    return [w.run_id async for w in client.list_workflows(f"WorkflowId = '{handle.id}'")]


async def test_history_is_ciphertext_and_the_retention_run_holds_no_personal_data(
        env, client, settings, worker, mail) -> None:
    handle = await start_complaint(client, settings, complainant=COMPLAINANT, description=DESCRIPTION,
                                   motivation=MOTIVATION)
    first_run = (await handle.describe()).run_id
    await wait_letter(mail, handle, LetterKind.ACKNOWLEDGEMENT)
    await handle.execute_update(ComplaintWorkflow.decide, DecideInput(
        by="Marieke Jansen", outcome=Outcome.REJECTED, motivation=NOTES[0]))
    await handle.execute_update(ComplaintWorkflow.disagree, DisagreeInput(by="Marieke Jansen", note=NOTES[1]))
    await handle.execute_update(ComplaintWorkflow.engage_mediator,
                                EngageMediatorInput(by="Marieke Jansen", mediator="Mr. P. Onpartijdig"))
    await handle.execute_update(ComplaintWorkflow.verdict, VerdictInput(by="Marieke Jansen", summary=NOTES[2]))
    await wait_letter(mail, handle, LetterKind.VERDICT)
    await wait_view(handle, lambda v: v.phase is Phase.CLOSED)
    await handle.execute_update(ComplaintWorkflow.record_measure, MeasureInput(
        by="Kwaliteitsmanager Eva", text="Cursusleiders volgen een training bejegening."))
    await advance(env, handle, timedelta(days=1))
    retention_run = (await handle.describe()).run_id
    assert retention_run != first_run, "a closed complaint continues as new into its retention run"

    # 1. Read raw, without the codec: nothing personal anywhere in either run's history.
    raw_client = await Client.connect(client.service_client.config.target_host, namespace=client.namespace)
    for run in (first_run, retention_run):
        assert leaked(await history_bytes(raw_client, handle.id, run)) == []

    # 2. Decrypted, the complaint's own run does hold them (the check above could fail) ...
    codec = EncryptionCodec(settings.encryption_keys)
    first = await decrypted_history(raw_client, codec, handle.id, first_run)
    assert COMPLAINANT["name"] in first and DESCRIPTION in first and NOTES[1] in first

    # 3. ... but the run waiting for purge_on holds none of it, even decrypted.
    retained = await decrypted_history(raw_client, codec, handle.id, retention_run)
    assert "Cursusleiders volgen een training bejegening." in retained  # measures stay (no personal data)
    assert leaked(retained) == []
    view = await handle.query(ComplaintWorkflow.status)
    assert view.phase is Phase.CLOSED and view.outcome is Outcome.MEDIATED
    assert leaked(view.model_dump_json()) == []

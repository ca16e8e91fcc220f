"""Closed complaints: measures, the retention year, and the erasure of personal data."""

from __future__ import annotations

import asyncio

import pytest
from temporalio.client import WorkflowUpdateFailedError
from temporalio.exceptions import ApplicationError

from complaints.models import (
    ComplaintResult,
    ComplaintSubmission,
    ConsequencesPickedUpInput,
    DecideInput,
    DisagreeInput,
    EscalateInput,
    LetterKind,
    MeasureInput,
    Outcome,
    Phase,
    ResolveInformallyInput,
    WithdrawInput,
)
from tests.lifecycle import (
    advance_to,
    advance_to_just_before,
    assert_mail_matches_view,
    assert_refused,
    assert_search_attributes,
    dossier,
    dossier_events,
    eventually,
    forget_history,
    history_length,
    engage,
    give_verdict,
    one_year_after,
    patch_markers,
    settled_history_length,
    start_formal,
    start_informal,
    started,
    status,
    to_mediation,
    wait_dossier,
    wait_letter,
)
from starter import submit_complaint
from tests.factories import complaint_json
from workflows.complaint import ComplaintWorkflow

PRODUCT = "training-agile"  # the catalogue's code for the complainant's "Training Agile"
STAFF = "Marieke Jansen"
PERSONAL_COLUMNS = ("complainant_name", "complainant_organisation", "complainant_email", "complainant_phone",
                    "reference", "description", "motivation", "decision_motivation", "mediator",
                    "verdict_summary", "product_text")
ANONYMOUS_COLUMNS = ("product", "channel", "route", "role", "submitted_on", "received_at", "formal_received_at",
                     "outcome", "calendar", "acknowledge_by", "acknowledged_at", "resolve_by", "extensions",
                     "decided_at", "decided_within_term", "mediated", "verdict_at", "consequences_by",
                     "closed_at", "purge_on")


async def test_a_closed_complaint_keeps_its_dossier_a_year_then_loses_its_personal_data(
        env, client, settings, worker, mail, pool):
    # The whole formal road, so that every kind of personal data is in the dossier.
    handle = await start_formal(client, settings)
    await to_mediation(handle, mail)
    await engage(handle)
    await give_verdict(handle, ["Training kosteloos opnieuw aanbieden."])
    view = await handle.execute_update(ComplaintWorkflow.consequences_picked_up,
                                       ConsequencesPickedUpInput(by=STAFF, note="Nieuwe training ingepland."))
    assert view.phase is Phase.CLOSED
    purge_on = view.deadlines.purge_on
    assert purge_on == one_year_after(view.closed_at)

    # Closed: measures may still be recorded; the procedure's actions are refused.
    view = await handle.execute_update(ComplaintWorkflow.record_measure, MeasureInput(
        by="Kwaliteitsmanager Eva", text="Reservetrainer voor elke training ingepland."))
    assert [(m.by, m.text) for m in view.measures] == [
        ("Kwaliteitsmanager Eva", "Reservetrainer voor elke training ingepland.")]
    assert view.history[-1].action == "measure" and view.history[-1].by == "Kwaliteitsmanager Eva"
    for update, arg in [
        (ComplaintWorkflow.withdraw, WithdrawInput(by=STAFF, reason="Intrekken.")),
        (ComplaintWorkflow.decide, DecideInput(by=STAFF, outcome=Outcome.UPHELD, motivation="Terecht.")),
        (ComplaintWorkflow.disagree, DisagreeInput(by=STAFF, note="Niet akkoord.")),
        (ComplaintWorkflow.escalate, EscalateInput(by=STAFF, reason="Formeel.")),
        (ComplaintWorkflow.resolve_informally, ResolveInformallyInput(by=STAFF, note="Opgelost.")),
    ]:
        message = await assert_refused(handle, update, arg, "ActionNotAllowed")
        assert "closed" in message
    await assert_search_attributes(handle, phase=Phase.CLOSED, route="formal", product=PRODUCT,
                                   outcome=Outcome.MEDIATED, next_deadline=purge_on)
    await assert_mail_matches_view(mail, handle, settings)

    # Just before the year is over everything is still there.
    await advance_to_just_before(env, handle, purge_on)
    await settled_history_length(handle)
    before = await wait_dossier(pool, handle, phase="closed", complainant_name="Jan de Vries",
                                description="De trainer kwam twee dagen niet opdagen.",
                                mediator="Mr. A. Bemiddelaar", purged_at=None)
    assert all(before[c] is not None for c in PERSONAL_COLUMNS)
    view = await handle.execute_update(ComplaintWorkflow.record_measure, MeasureInput(
        by="Kwaliteitsmanager Eva", text="Evaluatie van de trainersplanning."))
    assert len(view.measures) == 2

    # On purge_on the personal data is erased and the workflow completes.
    await advance_to(env, handle, purge_on)
    result = await handle.result()
    assert isinstance(result, ComplaintResult)
    assert result.complaint_id == handle.id and result.outcome is Outcome.MEDIATED
    assert result.closed_at == view.closed_at
    # The complaint's generation (set by the intake) went on into its retention run: neither run asked
    # a patch, so neither recorded a patch marker (the mediation and retention run each would).
    first_run = (await handle.describe()).raw_description.workflow_execution_info.first_run_id
    runs = [client.get_workflow_handle(handle.id, run_id=first_run), client.get_workflow_handle(handle.id)]
    assert runs[0].run_id != (await runs[1].describe()).run_id
    for run in runs:
        assert patch_markers((await run.fetch_history()).events) == []

    after = await dossier(pool, handle)
    assert after["phase"] == "purged" and after["purged_at"] is not None
    assert {c: after[c] for c in PERSONAL_COLUMNS} == dict.fromkeys(PERSONAL_COLUMNS)
    assert {c: after[c] for c in ANONYMOUS_COLUMNS} == {c: before[c] for c in ANONYMOUS_COLUMNS}
    assert after["product"] == PRODUCT and after["outcome"] == "mediated" and after["route"] == "formal"
    assert after["mediated"] is True and after["received_at"] is not None

    letter_rows = await pool.fetch("SELECT kind, status, recipient, body, sent_at FROM letters"
                                   " WHERE complaint_id = $1", handle.id)
    assert sorted(r["kind"] for r in letter_rows) == sorted(
        ["acknowledgement", "decision", "mediator-engaged", "verdict"])
    assert all(r["body"] is None and r["recipient"] is None for r in letter_rows)
    assert all(r["status"] == "sent" and r["sent_at"] is not None for r in letter_rows)

    events = await dossier_events(pool, handle)
    assert events and all(e["note"] is None for e in events)
    assert ("measure", "Kwaliteitsmanager Eva") in [(e["action"], e["actor"]) for e in events]

    measures = await pool.fetch("SELECT actor, product, measure FROM measures WHERE complaint_id = $1"
                                " ORDER BY sequence", handle.id)
    assert [(m["product"], m["measure"]) for m in measures] == [
        (PRODUCT, "Reservetrainer voor elke training ingepland."),
        (PRODUCT, "Evaluatie van de trainersplanning.")]

    # The completed workflow's view holds no personal data either.
    view = await status(handle)
    assert view.phase is Phase.PURGED and view.outcome is Outcome.MEDIATED
    assert view.history[-1].action == "purged" and view.history[-1].by == "system"
    assert [entry.note for entry in view.history[:-1]] == [None] * (len(view.history) - 1)
    assert view.history[-1].note == "personal data erased after the retention year"
    assert all(letter.to == "" for letter in view.letters)
    assert view.decision.motivation == "" and view.verdict.summary == "" and view.verdict.consequences == []
    assert view.mediator is None
    assert [m.text for m in view.measures] == [
        "Reservetrainer voor elke training ingepland.", "Evaluatie van de trainersplanning."]
    await assert_search_attributes(handle, phase=Phase.PURGED, route="formal", product=PRODUCT,
                                   outcome=Outcome.MEDIATED, next_deadline=None)


async def test_an_informally_resolved_complaint_is_purged_a_year_after_closing(
        env, client, settings, worker, mail, pool):
    handle = await start_informal(client, settings)
    await started(handle)
    view = await handle.execute_update(ComplaintWorkflow.resolve_informally, ResolveInformallyInput(
        by="Karin de Manager", note="Jan de Vries is tevreden met de nieuwe datum."))
    await wait_letter(mail, handle, LetterKind.INFORMAL_RESOLUTION)
    purge_on = view.deadlines.purge_on
    await wait_dossier(pool, handle, phase="closed", complainant_email="jan.devries@example.nl")

    await advance_to(env, handle, purge_on)
    result = await handle.result()
    assert result.outcome is Outcome.RESOLVED_INFORMALLY

    row = await dossier(pool, handle)
    assert row["phase"] == "purged" and row["outcome"] == "resolved-informally"
    assert {c: row[c] for c in PERSONAL_COLUMNS} == dict.fromkeys(PERSONAL_COLUMNS)
    assert row["received_at"] == view.received_at and row["closed_at"] == view.closed_at
    assert row["purge_on"] == purge_on and row["purged_at"] is not None
    bodies = await pool.fetch("SELECT body, recipient FROM letters WHERE complaint_id = $1", handle.id)
    assert len(bodies) == 1 and bodies[0]["body"] is None and bodies[0]["recipient"] is None
    notes = await pool.fetch("SELECT note FROM complaint_events WHERE complaint_id = $1", handle.id)
    assert notes and all(n["note"] is None for n in notes)
    await assert_search_attributes(handle, phase=Phase.PURGED, route="informal", product=PRODUCT,
                                   outcome=Outcome.RESOLVED_INFORMALLY, next_deadline=None)


async def test_no_measure_is_taken_while_the_personal_data_is_being_erased(
        env, client, settings, worker, mail, pool):
    """From purge_on on, a measure is refused, so nothing written after the erasure can keep a note."""
    handle = await start_informal(client, settings)
    await started(handle)
    view = await handle.execute_update(ComplaintWorkflow.resolve_informally, ResolveInformallyInput(
        by="Karin de Manager", note="Opgelost met Jan de Vries."))
    await wait_letter(mail, handle, LetterKind.INFORMAL_RESOLUTION)
    await settled_history_length(handle)

    # Hold the letters rows so that the erasure stops halfway, inside its transaction.
    conn = await pool.acquire()
    transaction = conn.transaction()
    await transaction.start()
    try:
        await conn.execute("SELECT 1 FROM letters WHERE complaint_id = $1 FOR UPDATE", handle.id)
        forward = asyncio.create_task(advance_to(env, handle, view.deadlines.purge_on))

        async def erasing() -> bool:
            pending = (await handle.describe()).raw_description.pending_activities
            return any(p.activity_type.name == "purge_dossier" for p in pending)
        await eventually(erasing, what="the erasure to start")

        before = await history_length(handle)
        with pytest.raises(WorkflowUpdateFailedError) as info:
            await handle.execute_update(ComplaintWorkflow.record_measure, MeasureInput(
                by="Kwaliteitsmanager Eva", text="Gesprek met Jan de Vries over de planning."))
        assert isinstance(info.value.cause, ApplicationError)
        assert info.value.cause.type == "ActionNotAllowed"
        assert await history_length(handle) == before
        assert (await status(handle)).measures == []
    finally:
        await transaction.rollback()
        await pool.release(conn)
    await forward
    await handle.result()

    row = await dossier(pool, handle)
    assert row["phase"] == "purged" and row["complainant_name"] is None
    events = await dossier_events(pool, handle)
    assert [e["note"] for e in events] == [None] * len(events)
    assert await pool.fetchval("SELECT count(*) FROM measures WHERE complaint_id = $1", handle.id) == 0


async def test_an_id_used_again_after_the_erased_complaint_is_forgotten_gets_its_own_dossier_and_letters(
        env, client, settings, worker, mail, pool):
    """Temporal's retention deletes a completed complaint's history; the same reference arrives again (an
    intake service resubmits it): the new complaint gets a dossier row, letters and an acknowledgement of
    its own, and the erased complaint's rows stay as they were, set aside under <id>~1."""
    submission = ComplaintSubmission.model_validate(complaint_json())
    first = await submit_complaint(client, submission, task_queue=settings.task_queue)
    handle = client.get_workflow_handle_for(ComplaintWorkflow.run, first.complaint_id)
    await started(handle)
    [old_acknowledgement] = await wait_letter(mail, handle, LetterKind.ACKNOWLEDGEMENT)
    view = await handle.execute_update(ComplaintWorkflow.withdraw, WithdrawInput(by=STAFF, reason="Ingetrokken."))
    await wait_letter(mail, handle, LetterKind.WITHDRAWAL)
    await advance_to(env, handle, view.deadlines.purge_on)
    await handle.result()
    old_run = await forget_history(client, handle.id)

    again = await submit_complaint(client, submission, task_queue=settings.task_queue)
    assert (again.complaint_id, again.created, again.conflict) == (first.complaint_id, True, False)
    await started(handle)
    [_, new_acknowledgement] = await wait_letter(mail, handle, LetterKind.ACKNOWLEDGEMENT, count=2)
    assert new_acknowledgement["Message-ID"] != old_acknowledgement["Message-ID"]
    assert new_acknowledgement["To"] == "Jan de Vries <jan.devries@example.nl>"

    row = await wait_dossier(pool, handle, complainant_name="Jan de Vries", purged_at=None)
    assert row["purged_at"] is None and row["phase"] == "formal" and row["description"] is not None
    new_run = (await handle.describe()).raw_description.workflow_execution_info.first_run_id
    assert row["instance"] == new_run != old_run
    letters = await pool.fetch("SELECT kind, status, message_id FROM letters WHERE complaint_id = $1", handle.id)
    assert [(r["kind"], r["status"], r["message_id"]) for r in letters] == [
        ("acknowledgement", "sent", new_acknowledgement["Message-ID"])]
    assert await pool.fetchval("SELECT count(*) FROM erasures WHERE complaint_id = $1", handle.id) == 0

    # The erased complaint keeps its anonymous facts, its letters' rows and its erasure record, apart.
    earlier = await pool.fetchrow("SELECT * FROM complaints WHERE complaint_id = $1", f"{handle.id}~1")
    assert earlier["instance"] == old_run and earlier["phase"] == "purged" and earlier["outcome"] == "withdrawn"
    assert earlier["complainant_name"] is None and earlier["purged_at"] is not None
    kinds = await pool.fetch("SELECT kind, message_id FROM letters WHERE complaint_id = $1 ORDER BY kind",
                             f"{handle.id}~1")
    assert [(r["kind"], r["message_id"]) for r in kinds][0] == (
        "acknowledgement", old_acknowledgement["Message-ID"])
    assert await pool.fetchval("SELECT count(*) FROM erasures WHERE complaint_id = $1", f"{handle.id}~1") == 1

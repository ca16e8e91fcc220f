"""admin.py for what came by post, in a conversation or by mail: register with the scan attached, write an
attachment out, complete missing contents, list the incomplete complaints (real subprocesses and servers)."""

from __future__ import annotations

import hashlib
from pathlib import Path


from complaints.models import ComplaintSubmission
from intake.start import submit_complaint
from tests.cli import admin_environ, run_admin
from tests.factories import DELETE, complaint_json
from tests.lifecycle import eventually, status, wait_view
from tests.staff import KEYS


def _files(tmp_path: Path) -> dict[str, Path]:
    description = tmp_path / "omschrijving.txt"
    description.write_text("De trainer kwam niet opdagen.\nEr was geen vervanger.\n", encoding="utf-8")
    motivation = tmp_path / "motivering.txt"
    motivation.write_text("Wij hebben betaald voor drie dagen.\n", encoding="utf-8")
    scan = tmp_path / "brief-scan.pdf"
    scan.write_bytes(b"%PDF-1.4\n% a scanned letter\n" + bytes(range(256)) * 40)
    return {"description": description, "motivation": motivation, "scan": scan}


def _register(files: dict[str, Path], **overrides: str) -> list[str]:
    values = {"--channel": "letter", "--name": "Jan de Vries", "--organisation": "Gemeente Delft",
              "--email": "jan.devries@example.nl", "--phone": "06 12345678", "--product": "Training Agile",
              "--submitted-on": "2026-11-30", "--description-file": str(files["description"]),
              "--motivation-file": str(files["motivation"]), **overrides}
    return ["register", *[part for flag, value in values.items() for part in (flag, value)],
            "--attach", str(files["scan"])]


async def test_register_a_letter_with_its_scan_and_write_the_scan_out_again(env, client, settings, worker, pool,
                                                                              tmp_path):
    environ = admin_environ(env, settings)
    files = _files(tmp_path)
    registered = await run_admin(environ, *_register(files))
    assert registered.code == 0, registered.err
    complaint_id = registered.out.strip()
    handle = client.get_workflow_handle(complaint_id)
    view = await wait_view(handle, lambda v: v.acknowledged_at is not None, "the acknowledgement")
    assert (view.channel.value, view.route.value, view.phase.value, view.missing) == ("letter", "formal", "formal", [])
    registered_by = [(h.action, h.by, h.key_id) for h in view.history if h.action == "register"]
    assert registered_by == [("register", "tester", KEYS["tester"].key_id)]  # who registered it, verified
    again = await run_admin(environ, *_register(files), "--json")
    assert again.json() == {"complaint_id": complaint_id, "created": False}  # registering twice is safe
    view = await wait_view(handle, lambda v: True, "the view")
    assert [h.action for h in view.history].count("register") == 1
    rows = await pool.fetch("SELECT number, filename, sha256 FROM attachments WHERE complaint_id = $1", complaint_id)
    assert [(r["number"], r["filename"]) for r in rows] == [(1, "brief-scan.pdf")]  # kept once

    out = tmp_path / "terug.pdf"
    written = await run_admin(environ, "attachment", complaint_id, "1", "--out", str(out))
    assert written.code == 0, written.err
    assert out.read_bytes() == files["scan"].read_bytes()
    assert hashlib.sha256(out.read_bytes()).hexdigest() in written.out
    missing = await run_admin(environ, "attachment", complaint_id, "2")
    assert missing.code == 4 and "no attachment 2" in missing.err


async def test_register_refuses_bad_input_naming_the_option_and_registers_nothing(env, settings, worker, pool,
                                                                                   tmp_path):
    environ = admin_environ(env, settings)
    files = _files(tmp_path)
    before = await pool.fetchval("SELECT count(*) FROM attachments")
    refused = await run_admin(environ, *_register(files, **{"--phone": "bel me maar", "--email": "geen-adres"}))
    assert refused.code == 2 and refused.out == ""
    assert "register: --phone: is not a phone number" in refused.err
    assert "register: --email:" in refused.err and "nothing was registered" in refused.err
    assert "Traceback" not in refused.err
    conversation = await run_admin(environ, *_register(files, **{"--channel": "conversation", "--route": "formal"}))
    assert conversation.code == 2 and "a formal complaint is written" in conversation.err
    unreadable = await run_admin(environ, *_register(files, **{"--description-file": str(tmp_path / "nope.txt")}))
    assert unreadable.code == 2 and "--description-file: cannot read" in unreadable.err
    assert await pool.fetchval("SELECT count(*) FROM attachments") == before


async def test_complete_fills_in_what_a_mailed_complaint_lacked_and_list_incomplete_finds_it(
        env, client, settings, worker):
    environ = admin_environ(env, settings)
    data = complaint_json(product=DELETE, motivation=DELETE)
    data["complainant"] = {"name": "Anouk Vermeulen", "email": "anouk@example.nl"}
    lacking = await submit_complaint(client, ComplaintSubmission.model_validate(data), task_queue=settings.task_queue)
    complete = await submit_complaint(client, ComplaintSubmission.model_validate(complaint_json()),
                                      task_queue=settings.task_queue)
    handle = client.get_workflow_handle(lacking.complaint_id)
    view = await wait_view(handle, lambda v: v.acknowledged_at is not None, "the acknowledgement")
    assert view.missing == ["organisation", "phone", "product", "motivation"]

    async def listed() -> str | None:
        found = await run_admin(environ, "list", "--incomplete")
        return found.out if lacking.complaint_id in found.out else None
    out = await eventually(listed, what="the incomplete complaint listed")
    assert complete.complaint_id not in out

    nothing = await run_admin(environ, "complete", lacking.complaint_id)
    assert nothing.code == 2 and "give at least one of organisation, phone, product, motivation" in nothing.err
    wrong = await run_admin(environ, "complete", lacking.complaint_id, "--phone", "geen")
    assert wrong.code == 2 and "--phone: is not a phone number" in wrong.err
    done = await run_admin(environ, "complete", lacking.complaint_id, "--phone", "06 12345678", "--product",
                           "Training Agile")
    assert done.code == 0 and "still missing: organisation, motivation" in done.out
    done = await run_admin(environ, "complete", lacking.complaint_id, "--organisation", "Thuis", "--motivation",
                           "Geld terug.")
    assert done.code == 0 and "completed" in done.out
    view = await status(handle)
    assert view.missing == [] and (view.product, view.product_text) == ("training-agile", "Training Agile")
    assert [h.by for h in view.history if h.action == "complete"] == ["tester", "tester"]

"""The product catalogue: the complainant's words matched to a code; a bad catalogue refused at start."""

from __future__ import annotations

import json
import uuid
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest

from complaints import search_attributes as sa
from complaints.ids import sender_hash
from complaints.models import (
    AlertKind,
    LetterKind,
    MeasureInput,
    MessageKind,
    MessageReceivedInput,
    Phase,
    WithdrawInput,
)
from complaints.products import OTHER, CatalogueError, parse_catalogue
from dossier.schema import match_products
from infra.config import DEFAULT_CATALOGUE_FILE, ConfigError, load_settings
from tests.cli import cli_env, run_cli
from tests.lifecycle import (
    advance_to,
    assert_search_attributes,
    dossier,
    start_formal,
    status,
    wait_alert,
    wait_dossier,
    wait_letter,
    wait_view,
)
from workflows.complaint import ComplaintWorkflow

CATALOGUE = '''
[[product]]
code = "training-agile"
name = "Training Agile"
aliases = ["Agile training", "Agile"]

[[product]]
code = "coaching"
name = "Coaching"
'''


@pytest.mark.parametrize(("words", "code"), [
    ("Training Agile", "training-agile"),
    ("  training\tAGILE ", "training-agile"),   # case and white space folded
    ("Agile  Training", "training-agile"),       # an alias
    ("coaching", "coaching"),
    ("Training Agile in Delft", OTHER),          # only a whole name or alias matches
    ("Trainingagile", OTHER),
    (None, None),                                # no product yet
])
def test_the_complainants_words_match_a_name_or_an_alias(words: str | None, code: str | None) -> None:
    assert parse_catalogue(CATALOGUE).match(words) == code


def test_names_codes_and_other() -> None:
    catalogue = parse_catalogue(CATALOGUE)
    assert catalogue.codes == ["training-agile", "coaching", OTHER]
    assert catalogue.name("training-agile") == "Training Agile" and catalogue.name(OTHER) is None
    assert catalogue.knows(OTHER) and catalogue.knows("coaching") and not catalogue.knows("lean")


@pytest.mark.parametrize(("text", "message"), [
    ('[[product]]\ncode = "Training Agile"\nname = "x"', "product 1: code: 'Training Agile' must be lower-case"),
    ('[[product]]\ncode = "a-"\nname = "x"', "product 1: code: 'a-' must be lower-case"),
    ('[[product]]\nname = "x"', "product 1: code: None must be lower-case"),
    ('[[product]]\ncode = "other"\nname = "x"', "product 1: code: 'other' is reserved"),
    ('[[product]]\ncode = "a"\nname = "x"\n[[product]]\ncode = "a"\nname = "y"', "product 2: code: 'a' is already used"),
    ('[[product]]\ncode = "a"', "product 1 (a): name: must be one line of text"),
    ('[[product]]\ncode = "a"\nname = "x"\naliases = "y"', "product 1 (a): aliases: must be a list of texts"),
    ('[[product]]\ncode = "a"\nname = "x"\nprice = 3', "product 1: price: unknown key"),
    ('[[product]]\ncode = "a"\nname = "Lean"\n[[product]]\ncode = "b"\nname = "x"\naliases = [" lean "]',
     "product 2 (b): ' lean ' is already a name or alias of 'a'"),
    ('[products]\ncode = "a"', "products: unknown; the catalogue holds [[product]] tables only"),
    ("", "product: no [[product]] table"),
    ('[[product]\ncode = "a"', "not valid TOML"),
])
def test_a_bad_catalogue_is_refused_naming_the_table_and_field(text: str, message: str) -> None:
    with pytest.raises(CatalogueError) as caught:
        parse_catalogue(text)
    assert message in str(caught.value)


def test_the_setting_names_the_file_or_takes_level_ups_catalogue(tmp_path: Path) -> None:
    assert load_settings({}).product_catalogue.knows("training-agile")  # examples/products.toml
    assert DEFAULT_CATALOGUE_FILE.name == "products.toml"
    mine = tmp_path / "products.toml"
    mine.write_text(CATALOGUE, encoding="utf-8")
    assert load_settings({"PRODUCT_CATALOGUE_FILE": str(mine)}).product_catalogue.codes == [
        "training-agile", "coaching", OTHER]
    mine.write_text('[[product]]\ncode = "Bad"\nname = "x"\n', encoding="utf-8")
    with pytest.raises(ConfigError) as caught:
        load_settings({"PRODUCT_CATALOGUE_FILE": str(mine)})
    assert str(caught.value).startswith(f"PRODUCT_CATALOGUE_FILE: {mine}: product 1: code: 'Bad'")
    with pytest.raises(ConfigError) as caught:
        load_settings({"PRODUCT_CATALOGUE_FILE": str(tmp_path / "missing.toml")})
    assert "PRODUCT_CATALOGUE_FILE" in str(caught.value) and "does not exist" in str(caught.value)


async def test_a_bad_catalogue_stops_every_program_with_one_line(env, settings, tmp_path: Path) -> None:
    bad = tmp_path / "products.toml"
    bad.write_text('[[product]]\ncode = "training agile"\nname = "Training Agile"\n', encoding="utf-8")
    cli = cli_env(settings, env.client.service_client.config.target_host, PRODUCT_CATALOGUE_FILE=str(bad))
    for args in (("-m", "starter", "submit", "-"), ("admin.py", "list")):
        result = await run_cli(*args, env=cli, stdin=b"[]")
        assert result.code == 2, result
        assert f"PRODUCT_CATALOGUE_FILE: {bad}: product 1: code: 'training agile'" in result.err
        assert "Traceback" not in result.err and result.out == ""


async def test_the_product_is_a_code_everywhere_but_the_complainants_own_words_are_personal(
        env, client, settings, worker, mail, pool):
    handle = await start_formal(client, settings, product="  training   AGILE ")
    words = "training   AGILE"  # as intake keeps them (a single line, trimmed)
    [acknowledgement] = await wait_letter(mail, handle, LetterKind.ACKNOWLEDGEMENT)
    assert 'over "Training Agile"' in acknowledgement.get_content()  # the catalogue's name in letters
    view = await status(handle)
    assert (view.product, view.product_text) == ("training-agile", words)
    await assert_search_attributes(handle, phase=Phase.FORMAL, route="formal", product="training-agile",
                                   outcome=None, next_deadline=view.deadlines.resolve_by - timedelta(days=7))
    row = await wait_dossier(pool, handle, product="training-agile", product_text=words)
    assert row["product_matched"]

    cli = cli_env(settings, env.client.service_client.config.target_host, staff="Marieke Jansen")
    shown = (await run_cli("admin.py", "show", handle.id, "--json", env=cli)).json()
    assert (shown["product"], shown["product_text"]) == ("training-agile", words)
    listed = await run_cli("admin.py", "list", "--json", env=cli)
    [mine] = [json.loads(line) for line in listed.out.splitlines() if json.loads(line)["complaint_id"] == handle.id]
    assert (mine["product"], mine["product_text"]) == ("training-agile", words)

    # Staff correct the match; an unknown code is refused naming it, and nothing changes.
    unknown = await run_cli("admin.py", "set-product", handle.id, "lean", env=cli)
    assert unknown.code == 2 and "CODE: 'lean' is not in the product catalogue" in unknown.err
    assert "coaching" in unknown.err and "other" in unknown.err
    corrected = await run_cli("admin.py", "set-product", handle.id, "coaching", env=cli)
    assert corrected.code == 0, corrected.err
    await assert_search_attributes(handle, phase=Phase.FORMAL, route="formal", product="coaching",
                                   outcome=None, next_deadline=view.deadlines.resolve_by - timedelta(days=7))
    await wait_dossier(pool, handle, product="coaching", product_text=words)
    same = await run_cli("admin.py", "set-product", handle.id, "coaching", env=cli)
    assert same.code == 3 and "already coaching" in same.err

    # An alert names the code, never the words; a measure is recorded under the code.
    await handle.execute_update(ComplaintWorkflow.record_measure, MeasureInput(
        by="Kwaliteitsmanager Eva", text="Coaches bellen binnen een dag terug."))
    await handle.execute_update(ComplaintWorkflow.withdraw, WithdrawInput(by="Marieke Jansen", reason="Ingetrokken."))
    await wait_letter(mail, handle, LetterKind.WITHDRAWAL)
    view = await wait_view(handle, lambda v: v.phase is Phase.CLOSED and v.product_text is None,
                           "the retention run")
    assert view.product == "coaching"
    shown = (await run_cli("admin.py", "show", handle.id, "--json", env=cli)).json()
    assert shown["product_text"] == words  # kept in the dossier until the year ends

    await advance_to(env, handle, view.deadlines.purge_on)
    await handle.result()
    row = await dossier(pool, handle)
    assert (row["product"], row["product_text"]) == ("coaching", None)
    assert "product_text" in (await pool.fetchval("SELECT fields FROM erasures WHERE complaint_id = $1", handle.id))
    assert await pool.fetchval("SELECT product FROM measures WHERE complaint_id = $1", handle.id) == "coaching"
    shown = (await run_cli("admin.py", "show", handle.id, "--json", env=cli)).json()
    assert shown["product"] == "coaching" and "product_text" not in shown
    for message in mail.find(x_complaint_id=handle.id):
        if message["X-Alert-Kind"]:
            assert "AGILE" not in message.get_content() and "training" not in message.get_content().lower()


async def test_a_product_nobody_catalogued_is_other_and_an_alert_names_only_that(
        env, client, settings, worker, mail, pool):
    words = "Leiderschapstraject voor ons team in Delft"
    handle = await start_formal(client, settings, product=words)
    [letter] = await wait_letter(mail, handle, LetterKind.ACKNOWLEDGEMENT)
    assert f'over "{words}"' in letter.get_content()  # the complainant's own words, to the complainant
    await handle.execute_update(ComplaintWorkflow.receive_message, MessageReceivedInput(
        ref="0123456789abcdef", at=datetime.now(timezone.utc), kind=MessageKind.REPLY,
        sender=sender_hash("jan.devries@example.nl")))
    [alert] = await wait_alert(mail, handle, AlertKind.MESSAGE_RECEIVED)
    assert "Product of dienst: other" in alert.get_content() and "Delft" not in alert.get_content()
    assert (await handle.describe()).typed_search_attributes.get(sa.PRODUCT) == OTHER
    await wait_dossier(pool, handle, product=OTHER, product_text=words)


async def test_dossiers_from_before_the_catalogue_get_codes_and_erased_ones_lose_the_words(pool, settings) -> None:
    """Rows written before the catalogue hold the complainant's words as their product: the worker matches
    them at start (the words kept apart while the dossier is kept, gone from erased ones)."""
    kept, erased = (f"complaint-{uuid.uuid4().hex[:16]}" for _ in range(2))
    for cid, purged in ((kept, None), (erased, datetime.now(timezone.utc))):
        await pool.execute(
            "INSERT INTO complaints (complaint_id, channel, route, role, product, submitted_on, received_at, phase,"
            " purged_at, product_matched) VALUES ($1, 'email', 'formal', 'customer', $2, current_date, now(),"
            " 'closed', $3, false)", cid, " workshop   SCRUM", purged)
        await pool.execute("INSERT INTO measures (complaint_id, sequence, recorded_at, actor, product, measure,"
                           " product_matched) VALUES ($1, 1, now(), 'Eva', $2, 'Kortere workshops.', false)",
                           cid, " workshop   SCRUM")
    async with pool.acquire() as conn:
        assert await match_products(conn, settings.product_catalogue) >= 2
        assert await match_products(conn, settings.product_catalogue) == 0  # once
    rows = {r["complaint_id"]: r for r in await pool.fetch(
        "SELECT complaint_id, product, product_text, product_matched FROM complaints WHERE complaint_id = ANY($1)",
        [kept, erased])}
    assert (rows[kept]["product"], rows[kept]["product_text"]) == ("workshop-scrum", " workshop   SCRUM")
    assert (rows[erased]["product"], rows[erased]["product_text"]) == ("workshop-scrum", None)
    assert {r["product"] for r in await pool.fetch("SELECT product FROM measures WHERE complaint_id = ANY($1)",
                                                    [kept, erased])} == {"workshop-scrum"}

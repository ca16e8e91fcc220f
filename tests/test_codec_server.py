"""The codec server over real HTTP: the remote codec protocol, CORS, the bearer token, key rotation."""

from __future__ import annotations

import base64
import json
import os
from contextlib import asynccontextmanager
from dataclasses import replace
from typing import AsyncIterator

import pytest
from aiohttp.test_utils import TestClient, TestServer
from google.protobuf import json_format
from temporalio.api.common.v1 import Payload, Payloads

from complaints.codec import ENCODING, KEY_ID_FIELD, EncryptionCodec, new_key_entry, parse_keys
from complaints.codec_server import build_app
from complaints.config import Settings
from tests.cli import REPO, run_cli

UI = "http://localhost:8233"
TOKEN = "s3cret-token-for-tests"
OLD, NEW = parse_keys(new_key_entry("key-1"))[0], parse_keys(new_key_entry("key-2"))[0]
SETTINGS = Settings(encryption_keys=(NEW, OLD), codec_ui_origin=UI, codec_token=TOKEN)
AUTH = {"Authorization": f"Bearer {TOKEN}", "Origin": UI, "X-Namespace": "default"}


@asynccontextmanager
async def codec_client(settings: Settings = SETTINGS) -> AsyncIterator[TestClient]:
    async with TestClient(TestServer(build_app(settings), host="127.0.0.1")) as client:
        yield client


def body(*payloads: Payload) -> str:
    return json_format.MessageToJson(Payloads(payloads=payloads))


def parse(text: str) -> list[Payload]:
    return list(json_format.Parse(text, Payloads()).payloads)


PLAIN = [
    Payload(metadata={"encoding": b"json/plain"}, data=b'{"product": "Leiderschapstraject Teamleiders 2026"}'),
    Payload(metadata={"encoding": b"binary/null"}, data=b""),
]


async def test_encode_then_decode_over_http_returns_the_original_payloads() -> None:
    async with codec_client() as client:
        encoded = await client.post("/encode", data=body(*PLAIN), headers=AUTH)
        assert encoded.status == 200, await encoded.text()
        assert encoded.headers["Access-Control-Allow-Origin"] == UI
        sealed = parse(await encoded.text())
        assert [p.metadata["encoding"] for p in sealed] == [ENCODING, ENCODING]
        assert [p.metadata[KEY_ID_FIELD] for p in sealed] == [b"key-2", b"key-2"]
        assert b"Leiderschapstraject" not in sealed[0].data

        decoded = await client.post("/decode", data=body(*sealed), headers=AUTH)
        assert decoded.status == 200, await decoded.text()
        assert parse(await decoded.text()) == PLAIN
        # The wire format is protobuf JSON: base64 metadata values and data.
        wire = json.loads(body(*sealed))
        assert set(wire) == {"payloads"} and wire["payloads"][0]["metadata"]["encoding"] == \
            base64.b64encode(ENCODING).decode()


async def test_only_the_last_path_segment_counts() -> None:
    async with codec_client() as client:
        resp = await client.post("/default/encode", data=body(*PLAIN), headers=AUTH)
        assert resp.status == 200
        assert (await client.post("/elsewhere", data=body(*PLAIN), headers=AUTH)).status == 404


async def test_a_missing_or_wrong_token_is_refused() -> None:
    async with codec_client() as client:
        sealed = [EncryptionCodec(SETTINGS.encryption_keys).encrypt(p) for p in PLAIN]
        no_token = {"Origin": UI}
        for path in ("/encode", "/decode"):
            resp = await client.post(path, data=body(*sealed), headers=no_token)
            assert resp.status == 401
            assert "Leiderschapstraject" not in await resp.text()
            for wrong in (f"Bearer {TOKEN}x", TOKEN, "Bearer ", f"Basic {TOKEN}", "Bearer ëé"):
                resp = await client.post(path, data=body(*sealed), headers={**no_token, "Authorization": wrong})
                assert resp.status == 401, wrong


async def test_other_origins_are_refused_without_cors_headers() -> None:
    async with codec_client() as client:
        for origin in ("http://evil.example", "http://localhost:8234", "https://localhost:8233"):
            resp = await client.post("/decode", data=body(*PLAIN), headers={**AUTH, "Origin": origin})
            assert resp.status == 403
            assert "Access-Control-Allow-Origin" not in resp.headers
            pre = await client.options("/decode", headers={
                "Origin": origin, "Access-Control-Request-Method": "POST"})
            assert pre.status == 403
            assert "Access-Control-Allow-Origin" not in pre.headers


async def test_a_preflight_from_the_ui_origin_is_allowed() -> None:
    async with codec_client() as client:
        resp = await client.options("/decode", headers={
            "Origin": UI, "Access-Control-Request-Method": "POST",
            "Access-Control-Request-Headers": "content-type,x-namespace,authorization"})
        assert resp.status in (200, 204)
        assert resp.headers["Access-Control-Allow-Origin"] == UI
        assert "POST" in resp.headers["Access-Control-Allow-Methods"]
        allowed = {h.strip().lower() for h in resp.headers["Access-Control-Allow-Headers"].split(",")}
        assert {"content-type", "x-namespace", "authorization"} <= allowed


async def test_without_a_token_configured_the_ui_origin_needs_none() -> None:
    async with codec_client(replace(SETTINGS, codec_token=None)) as client:
        resp = await client.post("/encode", data=body(*PLAIN), headers={"Origin": UI})
        assert resp.status == 200
        resp = await client.post("/encode", data=body(*PLAIN), headers={"Origin": "http://evil.example"})
        assert resp.status == 403


async def test_a_payload_under_an_older_configured_key_decodes() -> None:
    written_before_rotation = EncryptionCodec([OLD]).encrypt(PLAIN[0])
    assert written_before_rotation.metadata[KEY_ID_FIELD] == b"key-1"
    async with codec_client() as client:
        resp = await client.post("/decode", data=body(written_before_rotation), headers=AUTH)
        assert resp.status == 200
        assert parse(await resp.text()) == [PLAIN[0]]


async def test_a_payload_under_an_unknown_key_is_a_400_naming_only_the_key_id() -> None:
    stranger = EncryptionCodec(parse_keys(new_key_entry("retired-0"))).encrypt(PLAIN[0])
    async with codec_client() as client:
        resp = await client.post("/decode", data=body(PLAIN[1], stranger), headers=AUTH)
        assert resp.status == 400
        text = await resp.text()
        assert "retired-0" in text
        assert base64.b64encode(stranger.data).decode()[:16] not in text


@pytest.mark.parametrize("raw", ["", "not json", "[]", '{"payloads": 3}', '{"payloads": [{"data": "%%%"}]}',
                                 '{"other": []}'])
async def test_a_malformed_body_is_a_short_400(raw: str) -> None:
    async with codec_client() as client:
        resp = await client.post("/decode", data=raw, headers=AUTH)
        assert resp.status == 400
        assert "malformed body" in (await resp.json())["error"]


async def test_a_tampered_payload_is_a_400() -> None:
    sealed = EncryptionCodec(SETTINGS.encryption_keys).encrypt(PLAIN[0])
    sealed.data = sealed.data[:-1] + bytes([sealed.data[-1] ^ 1])
    async with codec_client() as client:
        resp = await client.post("/decode", data=body(sealed), headers=AUTH)
        assert resp.status == 400


async def test_the_command_exits_2_with_one_line_without_a_key() -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("COMPLAINTS_", "CODEC_"))}
    env.update(COMPLAINTS_ENCRYPTION_KEYS_FILE=str(REPO / "no-such-keys-file"), PYTHONPATH=str(REPO))
    result = await run_cli("-m", "complaints.codec_server", env=env, timeout=30)
    assert result.code == 2, result
    assert len(result.err.strip().splitlines()) == 1 and "no encryption key" in result.err


async def test_the_command_refuses_a_public_address_without_a_token() -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("COMPLAINTS_", "CODEC_"))}
    env.update(COMPLAINTS_ENCRYPTION_KEYS=new_key_entry("k"), CODEC_SERVER_HOST="0.0.0.0",
               PYTHONPATH=str(REPO))
    result = await run_cli("-m", "complaints.codec_server", env=env, timeout=30)
    assert result.code == 2, result
    assert "CODEC_SERVER_TOKEN" in result.err

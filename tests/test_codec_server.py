"""The codec server over real HTTP: the remote codec protocol, CORS, the bearer token, the login
session for the Web UI, key rotation."""

from __future__ import annotations

import base64
import json
import os
import time
from contextlib import asynccontextmanager
from dataclasses import replace
from typing import AsyncIterator

import pytest
from aiohttp import ClientResponse
from aiohttp.test_utils import TestClient, TestServer
from google.protobuf import json_format
from temporalio.api.common.v1 import Payload, Payloads

from infra.codec import ENCODING, KEY_ID_FIELD, EncryptionCodec, new_key_entry, parse_keys
from infra.codec_server import (
    MAX_BODY,
    SESSION_COOKIE,
    SESSION_TTL,
    SESSIONS,
    FailedLogins,
    Sessions,
    build_app,
)
from infra.config import ConfigError, Settings
from tests.cli import REPO, run_cli

UI = "http://localhost:8233"
TOKEN = "s3cret-token-for-tests-0123456789abcdef"  # 32 bytes at least (MIN_TOKEN_BYTES)
OLD, NEW = parse_keys(new_key_entry("key-1"))[0], parse_keys(new_key_entry("key-2"))[0]
SETTINGS = Settings(encryption_keys=(NEW, OLD), codec_ui_origin=UI, codec_token=TOKEN)
AUTH = {"Authorization": f"Bearer {TOKEN}", "Origin": UI, "X-Namespace": "default"}


@asynccontextmanager
async def codec_client(settings: Settings = SETTINGS,
                       failed_logins: FailedLogins | None = None) -> AsyncIterator[TestClient]:
    async with TestClient(TestServer(build_app(settings, failed_logins), host="127.0.0.1")) as client:
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
        # The UI with includeCredentials sends the session cookie: allowed for this origin only.
        assert resp.headers["Access-Control-Allow-Credentials"] == "true"
        assert resp.headers["Vary"] == "Origin"


async def test_without_a_token_configured_the_ui_origin_needs_none() -> None:
    async with codec_client(replace(SETTINGS, codec_token=None)) as client:
        resp = await client.post("/encode", data=body(*PLAIN), headers={"Origin": UI})
        assert resp.status == 200
        resp = await client.post("/encode", data=body(*PLAIN), headers={"Origin": "http://evil.example"})
        assert resp.status == 403
        # No login pages without a token: as before, GET is not served and /login is no operation.
        assert (await client.get("/login")).status == 405
        assert (await client.post("/login", data={"token": "x"})).status == 404


# --- the login session (the Web UI cannot send a bearer token, only cookies) -----------------

def own_origin(client: TestClient) -> str:
    return f"http://{client.host}:{client.port}"


async def log_in(client: TestClient, token: str = TOKEN, **headers: str) -> ClientResponse:
    """POST the login form as a browser does from the login page. The client's cookie jar is
    emptied again, so every request below sends exactly the cookie it names."""
    resp = await client.post("/login", data={"token": token},
                             headers={"Origin": own_origin(client), "Sec-Fetch-Site": "same-origin", **headers})
    await resp.read()
    client.session.cookie_jar.clear()
    return resp


def session_of(resp: ClientResponse) -> str:
    return resp.cookies[SESSION_COOKIE].value


def with_cookie(value: str, origin: str | None = UI) -> dict[str, str]:
    return {"Cookie": f"{SESSION_COOKIE}={value}", "X-Namespace": "default",
            **({"Origin": origin} if origin else {})}


async def test_the_login_page_is_a_self_contained_form() -> None:
    async with codec_client() as client:
        resp = await client.get("/login")
        assert resp.status == 200 and resp.content_type == "text/html"
        page = await resp.text()
        assert '<form method="post" action="login">' in page and 'name="token"' in page
        assert "<script" not in page and "src=" not in page and "<link" not in page
        assert "form-action 'self'" in resp.headers["Content-Security-Policy"]
        assert resp.headers["Cache-Control"] == "no-store" and resp.headers["X-Frame-Options"] == "DENY"
        assert "Set-Cookie" not in resp.headers


async def test_login_sets_a_strict_httponly_cookie_that_is_not_the_token() -> None:
    async with codec_client() as client:
        resp = await log_in(client)
        assert resp.status == 200
        assert UI in await resp.text()
        [header] = resp.headers.getall("Set-Cookie")
        assert TOKEN not in header
        morsel = resp.cookies[SESSION_COOKIE]
        assert morsel.value and morsel.value != TOKEN and len(morsel.value) >= 40
        assert morsel["httponly"] is True and morsel["samesite"] == "Strict" and morsel["path"] == "/"
        assert morsel["max-age"] == str(SESSION_TTL) == str(12 * 3600)
        assert not morsel["secure"]  # plain http to localhost: no Secure attribute
        # A second login is a second, different session.
        assert session_of(await log_in(client)) != morsel.value


async def test_the_session_cookie_decodes_for_the_ui_origin_with_credentials() -> None:
    sealed = [EncryptionCodec(SETTINGS.encryption_keys).encrypt(p) for p in PLAIN]
    async with codec_client() as client:
        cookie = with_cookie(session_of(await log_in(client)))
        resp = await client.post("/decode", data=body(*sealed), headers=cookie)
        assert resp.status == 200, await resp.text()
        assert parse(await resp.text()) == PLAIN
        assert resp.headers["Access-Control-Allow-Origin"] == UI
        assert resp.headers["Access-Control-Allow-Credentials"] == "true"
        assert (await client.post("/default/encode", data=body(*PLAIN), headers=cookie)).status == 200
        # The login page now says so.
        page = await client.get("/login", headers={"Cookie": cookie["Cookie"]})
        assert "is logged in" in await page.text()


async def test_a_wrong_token_is_a_401_page_without_a_cookie() -> None:
    async with codec_client(failed_logins=FailedLogins(per_client=100)) as client:
        for wrong in (f"{TOKEN}x", TOKEN[:-1], "", f"Bearer {TOKEN}", "ëé"):
            resp = await log_in(client, wrong)
            assert resp.status == 401, wrong
            assert "Set-Cookie" not in resp.headers, wrong
            assert TOKEN not in await resp.text()
        for data in ({"other": TOKEN}, TOKEN):  # no token field; not a form at all
            resp = await client.post("/login", data=data, headers={"Origin": own_origin(client)})
            assert resp.status == 401 and "Set-Cookie" not in resp.headers


async def test_a_forged_or_expired_cookie_is_refused() -> None:
    async with codec_client() as client:
        for forged in (TOKEN, "", "x" * 43, Sessions().start()):  # the last: a session of another server
            resp = await client.post("/decode", data=body(*PLAIN), headers=with_cookie(forged))
            assert resp.status == 401, forged
            assert resp.headers["Access-Control-Allow-Credentials"] == "true"  # the UI may read the 401
        session = session_of(await log_in(client))
        assert (await client.post("/decode", data=body(*PLAIN), headers=with_cookie(session))).status == 200
        client.server.app[SESSIONS].clock = lambda: time.monotonic() + SESSION_TTL + 1  # 12 h later
        assert (await client.post("/decode", data=body(*PLAIN), headers=with_cookie(session))).status == 401


async def test_logout_clears_the_cookie_and_ends_the_session() -> None:
    async with codec_client() as client:
        for method in ("POST", "GET"):
            session = session_of(await log_in(client))
            resp = await client.request(method, "/logout", headers={"Cookie": f"{SESSION_COOKIE}={session}"})
            assert resp.status == 200
            morsel = resp.cookies[SESSION_COOKIE]
            assert morsel.value == "" and morsel["max-age"] == "0" and morsel["path"] == "/"
            client.session.cookie_jar.clear()
            # A copy of the cookie kept elsewhere is worthless too: the session is gone on the server.
            resp = await client.post("/decode", data=body(*PLAIN), headers=with_cookie(session))
            assert resp.status == 401, method


async def test_the_bearer_token_still_works_without_a_session() -> None:
    async with codec_client() as client:
        cli = {"Authorization": f"Bearer {TOKEN}"}  # the temporal CLI and admin: no Origin, no cookie
        resp = await client.post("/encode", data=body(*PLAIN), headers=cli)
        assert resp.status == 200 and "Access-Control-Allow-Origin" not in resp.headers
        resp = await client.post("/decode", data=await resp.text(), headers={**cli, "Origin": UI})
        assert resp.status == 200 and parse(await resp.text()) == PLAIN


async def test_the_cookie_never_works_from_another_origin_or_without_one() -> None:
    async with codec_client() as client:
        session = session_of(await log_in(client))
        # Browsers share cookies between the ports of a host: another page on localhost sends it too.
        for origin in ("http://evil.example", "http://localhost:8025", "http://localhost:8234",
                       own_origin(client), "null"):
            resp = await client.post("/decode", data=body(*PLAIN), headers=with_cookie(session, origin))
            assert resp.status == 403, origin
            assert "Access-Control-Allow-Origin" not in resp.headers
            assert "Access-Control-Allow-Credentials" not in resp.headers
        # The cookie is for the UI's fetches; a client without Origin needs the bearer token.
        resp = await client.post("/decode", data=body(*PLAIN), headers=with_cookie(session, None))
        assert resp.status == 401


async def test_the_login_form_cannot_be_submitted_from_another_page() -> None:
    async with codec_client() as client:
        for origin in ("http://evil.example", UI, "http://localhost:8025", "null"):
            resp = await client.post("/login", data={"token": TOKEN}, headers={"Origin": origin})
            assert resp.status == 403, origin
            assert "Set-Cookie" not in resp.headers
        for site in ("cross-site", "same-site"):
            resp = await client.post("/login", data={"token": TOKEN},
                                     headers={"Origin": own_origin(client), "Sec-Fetch-Site": site})
            assert resp.status == 403, site
            assert "Set-Cookie" not in resp.headers
        # Not a browser (no Origin, no Sec-Fetch-Site): nobody to trick, the token decides.
        resp = await client.post("/login", data={"token": TOKEN})
        assert resp.status == 200 and SESSION_COOKIE in resp.cookies


async def test_behind_https_the_cookie_is_secure() -> None:
    async with codec_client() as client:
        proxied = {"X-Forwarded-Proto": "https", "X-Forwarded-Host": "codec.example.org",
                   "Origin": "https://codec.example.org"}
        resp = await log_in(client, **proxied)
        assert resp.status == 200
        assert resp.cookies[SESSION_COOKIE]["secure"] is True
    async with codec_client(replace(SETTINGS, codec_ui_origin="https://temporal.example.org")) as client:
        assert (await log_in(client)).cookies[SESSION_COOKIE]["secure"] is True


def test_sessions_are_bounded_and_expire() -> None:
    now = [1000.0]
    sessions = Sessions(ttl=10, limit=2, clock=lambda: now[0])
    first, second = sessions.start(), sessions.start()
    third = sessions.start()  # over the limit: the oldest goes
    assert not sessions.valid(first) and sessions.valid(second) and sessions.valid(third)
    assert not sessions.valid(None) and not sessions.valid("")
    now[0] += 10
    assert not sessions.valid(second) and not sessions.valid(third)


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
    result = await run_cli("-m", "infra.codec_server", env=env, timeout=30)
    assert result.code == 2, result
    assert len(result.err.strip().splitlines()) == 1 and "no encryption key" in result.err


async def test_the_command_refuses_a_public_address_without_a_token() -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("COMPLAINTS_", "CODEC_"))}
    env.update(COMPLAINTS_ENCRYPTION_KEYS=new_key_entry("k"), CODEC_SERVER_HOST="0.0.0.0",
               PYTHONPATH=str(REPO))
    result = await run_cli("-m", "infra.codec_server", env=env, timeout=30)
    assert result.code == 2, result
    assert "CODEC_SERVER_TOKEN" in result.err


# ----------------------------------------------------------- limits: token length, body sizes, failed logins


async def test_a_token_shorter_than_32_bytes_is_refused_at_start() -> None:
    with pytest.raises(ConfigError) as info:
        build_app(replace(SETTINGS, codec_token="x" * 31))
    assert str(info.value).startswith("CODEC_SERVER_TOKEN: must be at least 32 bytes, not 31")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("COMPLAINTS_", "CODEC_"))}
    env.update(COMPLAINTS_ENCRYPTION_KEYS=new_key_entry("k"), CODEC_SERVER_TOKEN="geheim", PYTHONPATH=str(REPO))
    result = await run_cli("-m", "infra.codec_server", env=env, timeout=30)
    assert result.code == 2 and len(result.err.strip().splitlines()) == 1, result
    assert "CODEC_SERVER_TOKEN: must be at least 32 bytes, not 6" in result.err and "geheim" not in result.err


async def test_login_and_decode_bodies_are_limited() -> None:
    async with codec_client() as client:
        big_form = await client.post("/login", data={"token": TOKEN, "x": "y" * 5000},
                                     headers={"Origin": own_origin(client), "Sec-Fetch-Site": "same-origin"})
        assert big_form.status == 413 and SESSION_COOKIE not in big_form.cookies
        assert (await log_in(client)).status == 200  # a form of the token alone is fine
        huge = await client.post("/decode", data=b"{" + b" " * MAX_BODY + b"}", headers=AUTH)
        assert huge.status == 413


async def test_wrong_tokens_are_limited_per_address() -> None:
    now = [1000.0]
    async with codec_client(failed_logins=FailedLogins(clock=lambda: now[0])) as client:
        for _ in range(5):
            assert (await log_in(client, token="wrong-" + "x" * 30)).status == 401
        refused = await log_in(client)  # even the right token: wait first
        assert refused.status == 429 and SESSION_COOKIE not in refused.cookies
        assert 1 <= int(refused.headers["Retry-After"]) <= 61
        now[0] += 61
        assert (await log_in(client)).status == 200
    # Per address only: wrong tokens from many addresses lock nobody else out.
    limiter = FailedLogins(per_client=5, clock=lambda: now[0])
    for n in range(500):
        limiter.failed(f"10.0.{n // 250}.{n % 250}")
    assert limiter.wait("10.0.9.1") == 0
    for _ in range(5):
        limiter.failed("10.0.9.1")
    assert limiter.wait("10.0.9.1") > 0 and limiter.wait("10.0.9.2") == 0

"""The codec server: lets authorised staff read encrypted payloads in the Temporal Web UI.

Temporal stores every payload encrypted (see :mod:`complaints.codec`); the Web UI only
shows ciphertext unless it is pointed at a *remote codec* (the UI's ``codec.endpoint``
setting, ``--ui-codec-endpoint`` for the dev server). This server implements Temporal's
remote codec protocol with the same keys as the worker::

    POST .../encode   {"payloads": [{"metadata": {"encoding": "<base64>"}, "data": "<base64>"}]}
    POST .../decode   the same shape (temporal.api.common.v1.Payloads in protobuf JSON)

Only the last path segment counts, so the endpoints may be mounted under any prefix.

Access:

- CORS: only the configured UI origin (``CODEC_UI_ORIGIN``, default
  ``http://localhost:8233``) gets ``Access-Control-Allow-Origin``; a request carrying any
  other ``Origin`` is refused with 403. Requests without ``Origin`` (not from a browser,
  e.g. ``temporal workflow show --codec-endpoint``) pass this check.
- Bearer token: when ``CODEC_SERVER_TOKEN`` is set, every /encode and /decode request must
  carry ``Authorization: Bearer <token>`` (compared in constant time), else 401.
  **Production sets CODEC_SERVER_TOKEN.** A static token is the simple form (the CLI sends it
  with ``--codec-auth "Bearer <token>"``); with an OIDC-enabled Web UI, ``codec.passAccessToken``
  sends the signed-in user's access token instead, which an authenticating proxy in front of
  this server verifies.
- Without a token (``make run``: bound to 127.0.0.1 only) the origin check alone applies.
  The server refuses to listen on a non-loopback address without a token.

Listens on ``CODEC_SERVER_HOST`` (default ``127.0.0.1``) port ``CODEC_SERVER_PORT``
(default 8081). Payload contents are never logged; errors name a key id at most.

Run: ``python -m complaints.codec_server`` (exit 2 on a configuration error).
"""

from __future__ import annotations

import hmac
import ipaddress
import json
import logging
import os
import re
import sys

from aiohttp import web
from aiohttp.typedefs import Handler
from google.protobuf import json_format
from temporalio.api.common.v1 import Payload, Payloads

from complaints.codec import ENCODING, KEY_ID_FIELD, EncryptionCodec, KeyConfigError
from complaints.config import DEV_KEYS_FILE, ConfigError, Settings, load_settings

#: Large enough for a batch of Temporal's largest payloads (2 MB each by default).
MAX_BODY = 16 * 1024 * 1024
ALLOWED_HEADERS = "content-type, x-namespace, authorization"
_BASE64 = re.compile(r"^[A-Za-z0-9+/_-]*={0,2}$")

_CODEC = web.AppKey("codec", EncryptionCodec)
_SETTINGS = web.AppKey("settings", Settings)


class BadRequest(Exception):
    """A 400 with a short message that quotes nothing of the payloads."""


def _cors_headers(origin: str) -> dict[str, str]:
    return {"Access-Control-Allow-Origin": origin, "Vary": "Origin"}


def _error(status: int, message: str, headers: dict[str, str] | None = None) -> web.Response:
    return web.json_response({"error": message}, status=status, headers=headers)


@web.middleware
async def _access(request: web.Request, handler: Handler) -> web.StreamResponse:
    settings = request.app[_SETTINGS]
    origin = request.headers.get("Origin")
    if origin is not None and origin.rstrip("/") != settings.codec_ui_origin:
        return _error(403, "origin not allowed")
    cors = _cors_headers(origin) if origin is not None else {}
    if request.method == "OPTIONS":  # preflight: browsers never send credentials with it
        return web.Response(status=204, headers={
            **cors, "Access-Control-Allow-Methods": "POST, OPTIONS",
            "Access-Control-Allow-Headers": ALLOWED_HEADERS, "Access-Control-Max-Age": "600"})
    if settings.codec_token is not None:
        given = request.headers.get("Authorization", "").encode()
        if not hmac.compare_digest(given, f"Bearer {settings.codec_token}".encode()):
            return _error(401, "missing or wrong bearer token",
                          headers={**cors, "WWW-Authenticate": 'Bearer realm="codec"'})
    try:
        response = await handler(request)
    except web.HTTPException as err:  # 404, 405, 413 from aiohttp itself
        err.headers.update(cors)
        raise
    response.headers.update(cors)
    return response


async def _read_payloads(request: web.Request) -> Payloads:
    malformed = BadRequest('malformed body: expected {"payloads": [{"metadata": {...}, "data": "..."}]}')
    try:
        document = json.loads(await request.text())
        if not isinstance(document, dict) or not isinstance(document.get("payloads"), list):
            raise malformed
        for item in document["payloads"]:
            if not isinstance(item, dict) or not all(
                    isinstance(v, str) and _BASE64.match(v)
                    for v in [item.get("data", ""), *(item.get("metadata") or {}).values()]):
                raise malformed
        return json_format.ParseDict(document, Payloads())
    except (json_format.ParseError, UnicodeDecodeError, ValueError, AttributeError, TypeError):
        raise malformed from None


def _reply(payloads: list[Payload]) -> web.Response:
    body = json_format.MessageToJson(Payloads(payloads=payloads), indent=None)
    return web.Response(text=body, content_type="application/json")


async def _codec(request: web.Request) -> web.Response:
    operation = request.path.rstrip("/").rsplit("/", 1)[-1]
    if operation not in ("encode", "decode"):
        raise web.HTTPNotFound()
    codec = request.app[_CODEC]
    known = {key_id for key_id, _ in request.app[_SETTINGS].encryption_keys}
    try:
        payloads = list((await _read_payloads(request)).payloads)
        if operation == "encode":
            return _reply(await codec.encode(payloads))
        decoded = []
        for payload in payloads:
            if payload.metadata.get("encoding", b"") == ENCODING:
                key_id = payload.metadata.get(KEY_ID_FIELD, b"").decode(errors="replace")[:64]
                if key_id not in known:
                    raise BadRequest(f"payload encrypted with unknown key {key_id!r}")
            try:
                decoded.append(codec.decrypt(payload))
            except Exception:  # noqa: BLE001 - InvalidTag, protobuf DecodeError: say nothing more
                raise BadRequest("a payload could not be decrypted (corrupt or tampered)") from None
        return _reply(decoded)
    except BadRequest as err:
        return _error(400, str(err))


def build_app(settings: Settings) -> web.Application:
    """The codec server for ``settings`` (keys, UI origin, token); raises KeyConfigError without keys."""
    app = web.Application(middlewares=[_access], client_max_size=MAX_BODY)
    app[_CODEC] = EncryptionCodec(settings.encryption_keys)
    app[_SETTINGS] = settings
    app.router.add_route("POST", "/{tail:.*}", _codec)  # .../encode and .../decode
    app.router.add_route("OPTIONS", "/{tail:.*}", _codec)  # preflight, answered by the middleware
    return app


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def main() -> int:
    host = os.environ.get("CODEC_SERVER_HOST", "").strip() or "127.0.0.1"
    try:
        settings = load_settings()
        if not settings.encryption_keys:
            raise ConfigError("no encryption key: set COMPLAINTS_ENCRYPTION_KEYS (KEY_ID:BASE64,...) or "
                              f"run `make run` once to create the development key in {DEV_KEYS_FILE}")
        if settings.codec_token is None and not _is_loopback(host):
            raise ConfigError(f"CODEC_SERVER_HOST={host} is not a loopback address: set CODEC_SERVER_TOKEN")
        app = build_app(settings)
    except (ConfigError, KeyConfigError) as err:
        print(f"codec server: {err}", file=sys.stderr)
        return 2
    print(f"codec server: http://{host}:{settings.codec_port} for {settings.codec_ui_origin} "
          f"({'bearer token required' if settings.codec_token else 'no token: origin check only'})",
          flush=True)
    # The access log names method, path and status only: never a payload.
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        web.run_app(app, host=host, port=settings.codec_port, print=None)
    except OSError as err:
        print(f"codec server: cannot listen on {host}:{settings.codec_port}: {err.strerror or err}",
              file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())

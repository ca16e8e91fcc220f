"""The codec server: lets authorised staff read encrypted payloads in the Temporal Web UI.

Temporal stores every payload encrypted (see :mod:`infra.codec`); the Web UI only
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
  carry ``Authorization: Bearer <token>`` (compared in constant time) or a login session
  cookie (below), else 401. **Production sets CODEC_SERVER_TOKEN.** The CLI sends the token
  with ``--codec-auth "Bearer <token>"``; with an OIDC-enabled Web UI, ``codec.passAccessToken``
  sends the signed-in user's access token instead, which an authenticating proxy in front of
  this server verifies.
- Login session, for the Web UI (which cannot send a fixed bearer token, only cookies with
  ``codec.includeCredentials``, ``TEMPORAL_CODEC_INCLUDE_CREDENTIALS=true``): ``GET /login``
  is a form asking for the token; ``POST /login`` with the right token sets the cookie
  ``codec_session`` (HttpOnly, SameSite=Strict, Path=/, 12 h; Secure behind https), and
  ``GET``/``POST /logout`` ends it. The cookie holds a random session id, never the token:
  the server keeps only SHA-256 digests of the ids with their expiry, in memory, so logging
  out revokes a session and a restart (or a new token, which means a restart) ends them all.
  The cookie counts only on requests whose ``Origin`` is the UI origin: browsers share cookies
  between all ports of a host, so another page on ``localhost`` gets the cookie sent along but
  is refused by the origin check. ``POST /login`` itself must come from this server's own
  origin (``Origin`` and ``Sec-Fetch-Site``, when present), so no other page can submit it.
  Without a token none of this exists: /login is unknown, as before. A login form may hold
  ``MAX_LOGIN_BODY`` bytes (413 beyond); after ``FAILED_LOGINS_PER_CLIENT`` wrong tokens from one
  address within a minute, /login answers that address 429 until the minute has passed. A token
  shorter than ``MIN_TOKEN_BYTES`` is refused at start.
- Without a token (``make run``: bound to 127.0.0.1 only) the origin check alone applies.
  The server refuses to listen on a non-loopback address without a token.

Listens on ``CODEC_SERVER_HOST`` (default ``127.0.0.1``) port ``CODEC_SERVER_PORT``
(default 8081). Payload contents are never logged; errors name a key id at most.

Run: ``python -m infra.codec_server`` (exit 2 on a configuration error).
"""

from __future__ import annotations

import hashlib
import hmac
import html
import ipaddress
import json
import os
import re
import secrets
import sys
import time
from collections.abc import Callable

from aiohttp import web
from aiohttp.typedefs import Handler
from google.protobuf import json_format
from temporalio.api.common.v1 import Payload, Payloads

from infra.codec import ENCODING, KEY_ID_FIELD, EncryptionCodec, KeyConfigError
from infra.config import DEV_KEYS_FILE, ConfigError, Settings, load_settings
from infra.observability import configure_logging

#: Large enough for a batch of Temporal's largest payloads (2 MB each by default): /encode, /decode.
MAX_BODY = 16 * 1024 * 1024
#: A login form holds the token and nothing else.
MAX_LOGIN_BODY = 4096
#: The shortest token the server accepts (bytes): a token is the only thing between the Internet
#: and the decrypted payloads, so it must not be guessable.
MIN_TOKEN_BYTES = 32
#: Failed logins allowed per client address within the window; after that /login answers 429 to that
#: address until the window has passed. Per address only: a limit for all clients together would let
#: anyone lock everyone out, and a 32-byte token cannot be guessed from many addresses either.
FAILED_LOGINS_PER_CLIENT = 5
FAILED_LOGIN_WINDOW = 60.0
ALLOWED_HEADERS = "content-type, x-namespace, authorization"
_BASE64 = re.compile(r"^[A-Za-z0-9+/_-]*={0,2}$")

#: The login session cookie, how long it lasts, and how many sessions are kept at most.
SESSION_COOKIE = "codec_session"
SESSION_TTL = 12 * 3600
MAX_SESSIONS = 1000
_SESSION_PAGES = ("login", "logout")


class Sessions:
    """Logged-in browsers: random session ids with their expiry, in this process's memory only.

    Only SHA-256 digests of the ids are kept, so a lookup reveals nothing by its timing and a
    memory dump holds no usable cookie. At most ``limit`` sessions: a new login beyond that
    drops the oldest (only holders of the token can log in at all).
    """

    def __init__(self, ttl: float = SESSION_TTL, limit: int = MAX_SESSIONS,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.ttl, self.limit, self.clock = ttl, limit, clock
        self._expiry: dict[str, float] = {}

    @staticmethod
    def _digest(session: str) -> str:
        return hashlib.sha256(session.encode("utf-8", "surrogateescape")).hexdigest()

    def start(self) -> str:
        now = self.clock()
        self._expiry = {key: until for key, until in self._expiry.items() if until > now}
        while len(self._expiry) >= self.limit:
            del self._expiry[next(iter(self._expiry))]
        session = secrets.token_urlsafe(32)
        self._expiry[self._digest(session)] = now + self.ttl
        return session

    def valid(self, session: str | None) -> bool:
        if not session:
            return False
        key = self._digest(session)
        until = self._expiry.get(key)
        if until is not None and until <= self.clock():
            del self._expiry[key]
            return False
        return until is not None

    def end(self, session: str | None) -> None:
        if session:
            self._expiry.pop(self._digest(session), None)


class FailedLogins:
    """Failed logins of the last ``window`` seconds, per client address (in memory)."""

    def __init__(self, per_client: int = FAILED_LOGINS_PER_CLIENT, window: float = FAILED_LOGIN_WINDOW,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.per_client, self.window, self.clock = per_client, window, clock
        self._failures: list[tuple[float, str]] = []

    def _recent(self) -> list[tuple[float, str]]:
        since = self.clock() - self.window
        self._failures = [(at, who) for at, who in self._failures if at > since]
        return self._failures

    def wait(self, client: str) -> float:
        """Seconds ``client`` must wait before it may try again (0: it may try now)."""
        recent = self._recent()
        mine = [at for at, who in recent if who == client]
        if len(mine) >= self.per_client:
            return mine[-self.per_client] + self.window - self.clock()
        return 0.0

    def failed(self, client: str) -> None:
        self._recent().append((self.clock(), client))


_CODEC = web.AppKey("codec", EncryptionCodec)
_SETTINGS = web.AppKey("settings", Settings)
SESSIONS = web.AppKey("sessions", Sessions)
FAILED_LOGINS = web.AppKey("failed_logins", FailedLogins)


class BadRequest(Exception):
    """A 400 with a short message that quotes nothing of the payloads."""


def _cors_headers(origin: str) -> dict[str, str]:
    # Credentials (the session cookie) for the one allowed origin only, never with "*".
    return {"Access-Control-Allow-Origin": origin, "Access-Control-Allow-Credentials": "true",
            "Vary": "Origin"}


def _error(status: int, message: str, headers: dict[str, str] | None = None) -> web.Response:
    return web.json_response({"error": message}, status=status, headers=headers)


def _operation(request: web.Request) -> str:
    return request.path.rstrip("/").rsplit("/", 1)[-1]


@web.middleware
async def _access(request: web.Request, handler: Handler) -> web.StreamResponse:
    settings = request.app[_SETTINGS]
    if settings.codec_token is not None and request.method in ("GET", "POST") \
            and _operation(request) in _SESSION_PAGES:
        return await handler(request)  # this server's own pages: same-origin checks of their own
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
        bearer = hmac.compare_digest(given, f"Bearer {settings.codec_token}".encode())
        # The cookie only from the UI origin (origin is that or None here): see the module doc.
        session = origin is not None and request.app[SESSIONS].valid(request.cookies.get(SESSION_COOKIE))
        if not (bearer or session):
            return _error(401, "missing or wrong bearer token, and no login session (see /login)",
                          headers={**cors, "WWW-Authenticate": 'Bearer realm="codec"'})
    try:
        response = await handler(request)
    except web.HTTPException as err:  # 404, 405, 413 from aiohttp itself
        err.headers.update(cors)
        raise
    response.headers.update(cors)
    return response


# --- the login pages (only with a token) --------------------------------------------------------

_PAGE_HEADERS = {
    "Cache-Control": "no-store",
    "Content-Security-Policy": "default-src 'none'; style-src 'unsafe-inline'; form-action 'self'; "
                               "frame-ancestors 'none'; base-uri 'none'",
    "X-Frame-Options": "DENY",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
}
_LOGIN_FORM = (
    '<form method="post" action="login">'
    '<label>Codec server token (CODEC_SERVER_TOKEN)<br>'
    '<input type="password" name="token" autocomplete="current-password" required autofocus></label> '
    '<button type="submit">Log in</button></form>')
_LOGOUT_FORM = '<form method="post" action="logout"><button type="submit">Log out</button></form>'


def _page(status: int, title: str, body: str) -> web.Response:
    text = (f'<!doctype html><html lang="en"><head><meta charset="utf-8"><title>{title}</title>'
            '<style>body{font-family:sans-serif;max-width:36em;margin:3em auto;padding:0 1em}'
            'input{width:100%;margin:.5em 0}</style></head>'
            f'<body><h1>{title}</h1>{body}</body></html>')
    return web.Response(status=status, text=text, content_type="text/html", headers=_PAGE_HEADERS)


def _ui_link(request: web.Request) -> str:
    ui = html.escape(request.app[_SETTINGS].codec_ui_origin)
    return f'<a href="{ui}">{ui}</a>'


def _over_https(request: web.Request) -> bool:
    """Whether the browser reached this server over https (directly, or through a TLS proxy)."""
    proto = request.headers.get("X-Forwarded-Proto", "").split(",")[0].strip().lower()
    return request.secure or proto == "https"


def _secure_cookie(request: web.Request) -> bool:
    # An https UI can only call an https codec endpoint (mixed content), so that counts too.
    return _over_https(request) or request.app[_SETTINGS].codec_ui_origin.startswith("https://")


def _own_origins(request: web.Request) -> set[str]:
    scheme = "https" if _over_https(request) else "http"
    hosts = {request.headers.get("Host", ""),
             request.headers.get("X-Forwarded-Host", "").split(",")[0].strip()}
    return {f"{scheme}://{host}".lower() for host in hosts if host}


def _cross_site_form(request: web.Request) -> bool:
    """A login form submitted by another page (login CSRF): browsers send Origin and Sec-Fetch-Site,
    which no page can forge; a client without them (curl) is no browser to be tricked."""
    origin = request.headers.get("Origin")
    if origin is not None and origin.rstrip("/").lower() not in _own_origins(request):
        return True
    return request.headers.get("Sec-Fetch-Site", "same-origin") not in ("same-origin", "none")


async def _login_page(request: web.Request) -> web.Response:
    if request.app[SESSIONS].valid(request.cookies.get(SESSION_COOKIE)):
        return _page(200, "Codec server: logged in",
                     f"<p>This browser is logged in. The Web UI at {_ui_link(request)} "
                     f"shows decoded payloads.</p>{_LOGOUT_FORM}")
    return _page(200, "Codec server: log in",
                 "<p>Log in once so that the Temporal Web UI at "
                 f"{_ui_link(request)} can decode payloads in this browser "
                 f"(for {SESSION_TTL // 3600} hours).</p>{_LOGIN_FORM}")


async def _login(request: web.Request) -> web.Response:
    if _cross_site_form(request):
        return _page(403, "Codec server: refused",
                     "<p>The login form must be submitted from this server's own login page.</p>")
    client = request.remote or "-"
    wait = request.app[FAILED_LOGINS].wait(client)
    if wait > 0:
        response = _page(429, "Codec server: too many wrong tokens",
                         f"<p>Too many wrong tokens: try again in {int(wait) + 1} seconds.</p>")
        response.headers["Retry-After"] = str(int(wait) + 1)
        return response
    if request.content_length is None or request.content_length > MAX_LOGIN_BODY:
        return _page(413, "Codec server: refused", "<p>A login form holds the token only.</p>")
    try:
        form = await request.post()
    except ValueError:
        form = {}
    token = form.get("token")
    given = token.encode("utf-8", "surrogateescape") if isinstance(token, str) else b""
    token_bytes = request.app[_SETTINGS].codec_token.encode()  # type: ignore[union-attr]
    if not hmac.compare_digest(given, token_bytes):
        request.app[FAILED_LOGINS].failed(client)
        return _page(401, "Codec server: wrong token",
                     f"<p>That is not the codec server's token.</p>{_LOGIN_FORM}")
    response = _page(200, "Codec server: logged in",
                     f"<p>Logged in for {SESSION_TTL // 3600} hours. You can close this tab and go back "
                     f"to the Web UI at {_ui_link(request)}.</p>{_LOGOUT_FORM}")
    response.set_cookie(SESSION_COOKIE, request.app[SESSIONS].start(), max_age=SESSION_TTL, path="/",
                        httponly=True, samesite="Strict", secure=_secure_cookie(request) or None)
    return response


async def _logout(request: web.Request) -> web.Response:
    request.app[SESSIONS].end(request.cookies.get(SESSION_COOKIE))
    response = _page(200, "Codec server: logged out",
                     '<p>This browser is logged out.</p><p><a href="login">Log in again</a></p>')
    response.set_cookie(SESSION_COOKIE, "", max_age=0, path="/", httponly=True, samesite="Strict",
                        secure=_secure_cookie(request) or None)
    return response


async def _post(request: web.Request) -> web.Response:
    operation = _operation(request)
    if request.app[_SETTINGS].codec_token is not None and operation in _SESSION_PAGES:
        return await (_login if operation == "login" else _logout)(request)
    return await _codec(request)


async def _get(request: web.Request) -> web.Response:
    operation = _operation(request)
    if operation == "login":
        return await _login_page(request)
    if operation == "logout":
        return await _logout(request)
    raise web.HTTPMethodNotAllowed("GET", ["POST", "OPTIONS"])


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
    operation = _operation(request)
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


def build_app(settings: Settings, failed_logins: FailedLogins | None = None) -> web.Application:
    """The codec server for ``settings`` (keys, UI origin, token); raises KeyConfigError without keys and
    ConfigError for a token shorter than ``MIN_TOKEN_BYTES``."""
    if settings.codec_token is not None and len(settings.codec_token.encode()) < MIN_TOKEN_BYTES:
        raise ConfigError(f"CODEC_SERVER_TOKEN: must be at least {MIN_TOKEN_BYTES} bytes, not "
                          f"{len(settings.codec_token.encode())} (python3 -c \"import secrets; "
                          "print(secrets.token_hex(24))\")")
    app = web.Application(middlewares=[_access], client_max_size=MAX_BODY)
    app[_CODEC] = EncryptionCodec(settings.encryption_keys, strict=False)  # shows what is there
    app[_SETTINGS] = settings
    app[SESSIONS] = Sessions()
    app[FAILED_LOGINS] = failed_logins or FailedLogins()
    app.router.add_route("POST", "/{tail:.*}", _post)  # .../encode, .../decode (and .../login, .../logout)
    app.router.add_route("OPTIONS", "/{tail:.*}", _codec)  # preflight, answered by the middleware
    if settings.codec_token is not None:
        app.router.add_route("GET", "/{tail:.*}", _get)  # .../login, .../logout
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
    access = ("bearer token or a /login session required" if settings.codec_token
              else "no token: origin check only")
    print(f"codec server: http://{host}:{settings.codec_port} for {settings.codec_ui_origin} ({access})",
          flush=True)
    # The access log names method, path and status only: never a payload.
    configure_logging(settings)  # LOG_FORMAT / LOG_LEVEL, as the worker
    try:
        web.run_app(app, host=host, port=settings.codec_port, print=None)
    except OSError as err:
        print(f"codec server: cannot listen on {host}:{settings.codec_port}: {err.strerror or err}",
              file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())

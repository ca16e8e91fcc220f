"""All configuration, read from the environment in one place.

The worker, the starter and the admin CLI all call :func:`load_settings`. Nothing
here is read or checked later: a missing file, a cert without its key or a bad port
is refused at start with a :class:`ConfigError` naming the variable (never quoting
a file's contents or a secret).
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from datetime import date
from pathlib import Path
from typing import Literal, Mapping
from urllib.parse import quote, unquote, urlsplit

from complaints.products import Catalogue, CatalogueError, load_catalogue
from complaints.staff import RegisterError, StaffRegister

REPO_ROOT = Path(__file__).resolve().parent.parent
DEV_DATA_DIR = REPO_ROOT / ".data"

#: Where ``make run`` keeps its development encryption key (created on first start).
DEV_KEYS_FILE = DEV_DATA_DIR / "encryption-keys"

#: Level Up's product catalogue as shipped (``PRODUCT_CATALOGUE_FILE`` names another).
DEFAULT_CATALOGUE_FILE = REPO_ROOT / "examples" / "products.toml"

#: Port of the dev stack's embedded PostgreSQL (``make run``).
DEV_POSTGRES_PORT = 55432
DEV_DATABASE_URL = f"postgresql://postgres@127.0.0.1:{DEV_POSTGRES_PORT}/complaints"

SmtpTls = Literal["none", "starttls", "tls"]
LogFormat = Literal["text", "json"]
LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")
DEFAULT_OTEL_SERVICE_NAME = "level-up-complaints"


class ConfigError(ValueError):
    """A configuration value is missing or malformed; the message names the variable."""


def default_catalogue() -> Catalogue:
    """The shipped catalogue (``examples/products.toml``); read once per process."""
    global _DEFAULT_CATALOGUE
    if _DEFAULT_CATALOGUE is None:
        _DEFAULT_CATALOGUE = _catalogue(DEFAULT_CATALOGUE_FILE)
    return _DEFAULT_CATALOGUE


_DEFAULT_CATALOGUE: Catalogue | None = None


def configured_catalogue(env: Mapping[str, str] | None = None) -> Catalogue:
    """The catalogue ``PRODUCT_CATALOGUE_FILE`` names in ``env`` (default: the process environment), else
    the shipped one: for callers without settings (an intake service calling ``submit_complaints``)."""
    env = os.environ if env is None else env
    path = _given(env, "PRODUCT_CATALOGUE_FILE")
    return default_catalogue() if path is None else _catalogue(Path(path))


def _catalogue(path: Path) -> Catalogue:
    try:
        return load_catalogue(path)
    except CatalogueError as err:
        raise ConfigError(f"PRODUCT_CATALOGUE_FILE: {path}: {err}") from None


@dataclass(frozen=True)
class MailboxSettings:
    """The info@ mailbox (``MAILBOX_URL`` and the other ``MAILBOX_*`` variables)."""

    #: ``imaps`` (TLS from the start) or ``imap`` (STARTTLS; plain only towards loopback).
    scheme: Literal["imaps", "imap"]
    user: str
    host: str
    port: int
    #: The folder new mail arrives in.
    folder: str
    password: str = field(repr=False)
    processed_folder: str = "Verwerkt"
    quarantine_folder: str = "Onverwerkt"
    poll_seconds: int = 30
    max_bytes: int = 25_000_000
    #: A CA certificate (PEM) to verify the IMAP server with, instead of the system's trust roots.
    tls_ca: Path | None = None

    @property
    def loopback(self) -> bool:
        return self.host in ("localhost", "::1") or self.host.startswith("127.")

    @property
    def where(self) -> str:
        """host:port/folder, for messages (no user, no password)."""
        return f"{self.host}:{self.port}/{self.folder}"


@dataclass(frozen=True)
class Settings:
    temporal_address: str = "localhost:7233"
    temporal_namespace: str = "default"
    task_queue: str = "complaints"
    database_url: str = DEV_DATABASE_URL
    smtp_host: str = "localhost"
    smtp_port: int = 1025
    smtp_username: str | None = None
    smtp_password: str | None = field(default=None, repr=False)
    smtp_tls: SmtpTls = "none"
    mail_from: str = "Level Up <info@level-up.nl>"
    director_email: str = "directie@level-up.nl"
    #: Company closure days that count as non-working days on top of the Dutch public holidays.
    closure_days: tuple[date, ...] = ()
    #: (key id, 32-byte key) pairs; the first encrypts, all decrypt. See infra/codec.py.
    encryption_keys: tuple[tuple[str, bytes], ...] = field(default=(), repr=False)
    #: Codec server for the Web UI: its port, the UI origin allowed by CORS, and the bearer token.
    codec_port: int = 8081
    codec_ui_origin: str = "http://localhost:8233"
    codec_token: str | None = field(default=None, repr=False)
    #: Temporal cluster connection (infra/temporal_client.py): TLS on or off, PEM files for
    #: mTLS and the server's CA, the name to verify the server certificate against, and an API key
    #: (Temporal Cloud), which is sent as a bearer token and so implies TLS.
    temporal_tls: bool = False
    temporal_tls_cert: Path | None = None
    temporal_tls_key: Path | None = None
    temporal_tls_ca: Path | None = None
    temporal_tls_server_name: str | None = None
    temporal_api_key: str | None = field(default=None, repr=False)
    #: Logs (infra/observability.py): one line per record, readable text or JSON.
    log_format: LogFormat = "text"
    log_level: str = "INFO"
    #: The worker's Prometheus endpoint, ``http://METRICS_HOST:METRICS_PORT/metrics``; off when unset.
    metrics_port: int | None = None
    metrics_host: str = "0.0.0.0"
    #: OpenTelemetry tracing over OTLP/HTTP; off when no endpoint is set.
    otlp_endpoint: str | None = None
    otel_service_name: str = DEFAULT_OTEL_SERVICE_NAME
    #: Worker tuning (worker.py ``worker_options``); the measurements behind the defaults are in
    #: BENCHMARKS.md. Cached workflows cost memory (~0.35 MB each), a miss costs a replay.
    worker_max_cached_workflows: int = 1000
    worker_max_concurrent_workflow_tasks: int = 100
    worker_max_concurrent_activities: int = 100
    worker_workflow_pollers: int = 5
    worker_activity_pollers: int = 5
    #: The garbage collector's first threshold in the worker (``gc.set_threshold(n, 10, 100)``, after
    #: ``gc.freeze()`` of what start-up made; worker.py ``tune_garbage_collector``). Python's default is 700;
    #: a worker holds hundreds of thousands of objects in its cached complaints, and the default's full
    #: collections cost it pauses of up to half a second (BENCHMARKS.md).
    worker_gc_threshold: int = 2000
    #: Connections each worker keeps to the dossier database (asyncpg pool maximum).
    database_pool_size: int = 10
    #: The info@ mailbox the worker reads (``MAILBOX_URL``); None: no mailbox.
    mailbox: MailboxSettings | None = None
    #: The product catalogue (``PRODUCT_CATALOGUE_FILE``, complaints/products.py); default: Level Up's,
    #: as shipped in examples/products.toml.
    product_catalogue: Catalogue = field(default_factory=default_catalogue, repr=False)
    #: The staff register the worker checks every staff action against (``COMPLAINTS_STAFF_FILE``,
    #: complaints/staff.py); None: every staff action is refused.
    staff_file: Path | None = None
    #: The key ``admin.py`` signs with (``COMPLAINTS_STAFF_KEY``); None: infra/signing.py's default file.
    staff_key: Path | None = None
    #: The dossier as staff programs read it (``AUDIT_DATABASE_URL``): ``admin.py audit``, ``show``,
    #: ``list``, ``messages``, ``message`` and ``attachment`` connect with it, as a role that may only
    #: read (deploy/postgres/init); None: ``database_url``.
    audit_database_url: str | None = field(default=None, repr=False)

    @property
    def reading_database_url(self) -> str:
        """The dossier for reading only (``AUDIT_DATABASE_URL``, else ``DATABASE_URL``)."""
        return self.audit_database_url or self.database_url


def _staff_register(path: Path) -> Path:
    """The register's path, once it was read and found valid (later changes are read by the worker)."""
    try:
        StaffRegister.parse(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError) as err:
        why = err.strerror if isinstance(err, OSError) and err.strerror else "not UTF-8 text"
        raise ConfigError(f"COMPLAINTS_STAFF_FILE: {path} cannot be read ({why})") from None
    except RegisterError as err:
        raise ConfigError(f"COMPLAINTS_STAFF_FILE: {path}: {err}") from None
    return path


#: The variables that may name a file holding a secret instead (compose secrets), by the secret.
_SECRET_FILES = {"SMTP_PASSWORD": "SMTP_PASSWORD_FILE", "CODEC_SERVER_TOKEN": "CODEC_SERVER_TOKEN_FILE",
                 "DATABASE_PASSWORD": "DATABASE_PASSWORD_FILE",
                 "AUDIT_DATABASE_PASSWORD": "AUDIT_DATABASE_PASSWORD_FILE"}


def _secret(env: Mapping[str, str], name: str) -> str | None:
    """A secret: the variable ``name`` as it is, else the contents of the file its ``_FILE`` variable
    names (without the line end a text editor adds); None when neither is set or the file is empty."""
    if env.get(name):
        return env[name]
    path = _given(env, _SECRET_FILES[name])
    if path is None:
        return None
    try:
        return Path(path).read_text(encoding="utf-8").strip("\r\n") or None
    except (OSError, UnicodeDecodeError) as err:
        why = err.strerror if isinstance(err, OSError) and err.strerror else type(err).__name__
        raise ConfigError(f"{name}_FILE: {path} cannot be read ({why})") from None


def _with_password(name: str, url: str | None, password: str) -> str:
    """``url`` with ``password`` for its user (from ``NAME``'s password file, kept out of the environment)."""
    if url is None:
        raise ConfigError(f"{name}: not set, but its password is given ({name.replace('_URL', '_PASSWORD')}"
                          "_FILE): set the URL without the password")
    parts = urlsplit(url)
    if not parts.username or parts.password is not None or not parts.hostname:
        raise ConfigError(f"{name}: with a password file, write the URL as postgresql://USER@HOST:PORT/DATABASE")
    host = parts.netloc.rsplit("@", 1)[1]
    return parts._replace(netloc=f"{parts.username}:{quote(password, safe='')}@{host}").geturl()


def _closure_days(raw: str) -> tuple[date, ...]:
    days = []
    for part in raw.replace(";", ",").split(","):
        part = part.strip()
        if not part:
            continue
        try:
            days.append(date.fromisoformat(part))
        except ValueError:
            raise ConfigError(
                f"COMPANY_CLOSURE_DAYS: {part!r} is not a date (use YYYY-MM-DD, comma separated)"
            ) from None
    return tuple(sorted(set(days)))


def _encryption_keys(env: Mapping[str, str]) -> tuple[tuple[str, bytes], ...]:
    from infra.codec import KeyConfigError, parse_keys

    try:
        raw = env.get("COMPLAINTS_ENCRYPTION_KEYS", "").strip()
        if raw:
            return parse_keys(raw)
        path = Path(env.get("COMPLAINTS_ENCRYPTION_KEYS_FILE", "").strip() or DEV_KEYS_FILE)
        if path.exists():
            return parse_keys(path.read_text(encoding="utf-8"), source=str(path))
    except KeyConfigError as err:
        raise ConfigError(str(err)) from None
    return ()


def _given(env: Mapping[str, str], name: str) -> str | None:
    """The variable's value without surrounding white space; None when unset or empty (the default applies)."""
    return env.get(name, "").strip() or None


def _port(env: Mapping[str, str], name: str) -> int | None:
    raw = _given(env, name)
    if raw is None:
        return None
    try:
        port = int(raw)
    except ValueError:
        raise ConfigError(f"{name}: {raw!r} is not a port number") from None
    if not 0 < port < 65536:
        raise ConfigError(f"{name}: {port} is not a port number")
    return port


_TRUE = ("1", "true", "yes", "on")
_FALSE = ("0", "false", "no", "off")


def _flag(env: Mapping[str, str], name: str) -> bool | None:
    """An on/off variable; None when unset."""
    raw = env.get(name, "").strip().lower()
    if not raw:
        return None
    if raw in _TRUE:
        return True
    if raw in _FALSE:
        return False
    raise ConfigError(f"{name}: {raw!r} must be on or off (true/false, 1/0, yes/no)")


def _pem_file(env: Mapping[str, str], name: str) -> Path | None:
    """A readable PEM file named by ``name``; its contents are never put in a message."""
    raw = env.get(name, "").strip()
    if not raw:
        return None
    path = Path(raw)
    try:
        head = path.read_bytes()[:4096]
    except FileNotFoundError:
        raise ConfigError(f"{name}: {raw} does not exist") from None
    except IsADirectoryError:
        raise ConfigError(f"{name}: {raw} is a directory, not a PEM file") from None
    except OSError as err:
        raise ConfigError(f"{name}: {raw} cannot be read ({err.strerror or type(err).__name__})") from None
    if b"-----BEGIN " not in head:
        raise ConfigError(f"{name}: {raw} is not a PEM file (no -----BEGIN line)")
    return path


def _temporal_tls(env: Mapping[str, str]) -> dict[str, object]:
    cert, key = _pem_file(env, "TEMPORAL_TLS_CERT"), _pem_file(env, "TEMPORAL_TLS_KEY")
    if cert and not key:
        raise ConfigError("TEMPORAL_TLS_KEY: not set, but TEMPORAL_TLS_CERT is (mTLS needs both)")
    if key and not cert:
        raise ConfigError("TEMPORAL_TLS_CERT: not set, but TEMPORAL_TLS_KEY is (mTLS needs both)")
    ca = _pem_file(env, "TEMPORAL_TLS_CA")
    server_name = env.get("TEMPORAL_TLS_SERVER_NAME", "").strip() or None
    api_key = env.get("TEMPORAL_API_KEY", "").strip() or None
    explicit = _flag(env, "TEMPORAL_TLS")
    if explicit is False:
        given = [n for n, v in [("TEMPORAL_TLS_CERT", cert), ("TEMPORAL_TLS_CA", ca),
                                ("TEMPORAL_TLS_SERVER_NAME", server_name)] if v]
        if given:
            raise ConfigError(f"TEMPORAL_TLS: off, but {given[0]} is set (remove one of the two)")
    # TLS when asked for, or when anything TLS-only is configured; an API key implies it too
    # (it is a bearer token), unless TLS is switched off explicitly (e.g. a local TLS proxy).
    tls = explicit if explicit is not None else bool(cert or ca or server_name or api_key)
    return dict(temporal_tls=tls, temporal_tls_cert=cert, temporal_tls_key=key, temporal_tls_ca=ca,
                temporal_tls_server_name=server_name, temporal_api_key=api_key)


def _observability(env: Mapping[str, str]) -> dict[str, object]:
    values: dict[str, object] = {}
    if (log_format := _given(env, "LOG_FORMAT")) is not None:
        log_format = log_format.lower()
        if log_format not in ("text", "json"):
            raise ConfigError(f"LOG_FORMAT: {log_format!r} must be text or json")
        values["log_format"] = log_format
    if (log_level := _given(env, "LOG_LEVEL")) is not None:
        log_level = log_level.upper()
        if log_level == "WARN":
            log_level = "WARNING"
        if log_level not in LOG_LEVELS:
            raise ConfigError(f"LOG_LEVEL: {log_level!r} must be one of {', '.join(LOG_LEVELS)}")
        values["log_level"] = log_level
    if (endpoint := _given(env, "OTEL_EXPORTER_OTLP_ENDPOINT")) is not None:
        if not endpoint.startswith(("http://", "https://")):
            raise ConfigError(f"OTEL_EXPORTER_OTLP_ENDPOINT: {endpoint!r} must start with http:// or https://")
        protocol = _given(env, "OTEL_EXPORTER_OTLP_PROTOCOL") or "http/protobuf"
        if protocol != "http/protobuf":
            raise ConfigError(f"OTEL_EXPORTER_OTLP_PROTOCOL: {protocol!r} is not supported; "
                              "the worker exports http/protobuf (the collector's port 4318)")
        values["otlp_endpoint"] = endpoint
    return values


#: Worker tuning variables, their Settings field, and the smallest sensible value.
TUNING_VARIABLES = {
    "WORKER_MAX_CACHED_WORKFLOWS": ("worker_max_cached_workflows", 0),
    "WORKER_MAX_CONCURRENT_WORKFLOW_TASKS": ("worker_max_concurrent_workflow_tasks", 2),
    "WORKER_MAX_CONCURRENT_ACTIVITIES": ("worker_max_concurrent_activities", 1),
    "WORKER_WORKFLOW_POLLERS": ("worker_workflow_pollers", 2),
    "WORKER_ACTIVITY_POLLERS": ("worker_activity_pollers", 1),
    "WORKER_GC_THRESHOLD": ("worker_gc_threshold", 100),
    "DATABASE_POOL_SIZE": ("database_pool_size", 1),
}


def _tuning(env: Mapping[str, str]) -> dict[str, int]:
    values = {}
    for name, (field_name, least) in TUNING_VARIABLES.items():
        if (value := _whole_number(env, name, least)) is not None:
            values[field_name] = value
    return values


def _whole_number(env: Mapping[str, str], name: str, least: int) -> int | None:
    """A whole number of at least ``least``; None when unset."""
    raw = _given(env, name)
    if raw is None:
        return None
    try:
        value = int(raw)
    except ValueError:
        raise ConfigError(f"{name}: {raw!r} is not a whole number") from None
    if value < least:
        raise ConfigError(f"{name}: {value} is too small (at least {least})")
    return value


def _mailbox(env: Mapping[str, str]) -> MailboxSettings | None:
    """``MAILBOX_URL`` (``imaps://USER@HOST[:PORT]/FOLDER`` or ``imap://...``) and its companions."""
    raw = _given(env, "MAILBOX_URL")
    if raw is None:
        return None
    try:
        url = urlsplit(raw)
        port = url.port
    except ValueError:
        raise ConfigError("MAILBOX_URL: not a URL with a port number (imaps://USER@HOST[:PORT]/FOLDER)") from None
    if url.scheme not in ("imaps", "imap"):
        given = f"{url.scheme}://" if url.scheme else "none"
        raise ConfigError(f"MAILBOX_URL: the scheme must be imaps:// or imap://, not {given}")
    if not url.hostname:
        raise ConfigError("MAILBOX_URL: no host (imaps://USER@HOST[:PORT]/FOLDER)")
    if not url.username:
        raise ConfigError("MAILBOX_URL: no user (imaps://USER@HOST/FOLDER; write @ in the user as %40)")
    if url.password is not None:
        raise ConfigError("MAILBOX_URL: holds a password; give it in MAILBOX_PASSWORD or MAILBOX_PASSWORD_FILE")
    if url.query or url.fragment:
        raise ConfigError("MAILBOX_URL: no ? or # parts (imaps://USER@HOST[:PORT]/FOLDER)")
    folder = unquote(url.path.lstrip("/")) or "INBOX"
    if any(ord(c) < 32 for c in folder):
        raise ConfigError("MAILBOX_URL: the folder name holds a control character")
    values: dict[str, object] = dict(
        scheme=url.scheme, user=unquote(url.username), host=url.hostname,
        port=port or (993 if url.scheme == "imaps" else 143), folder=folder, password=_mailbox_password(env))
    for name, attr in [("MAILBOX_PROCESSED_FOLDER", "processed_folder"),
                       ("MAILBOX_QUARANTINE_FOLDER", "quarantine_folder")]:
        if (value := _given(env, name)) is not None:
            if any(ord(c) < 32 for c in value):
                raise ConfigError(f"{name}: the folder name holds a control character")
            values[attr] = value
    for name, attr, least in [("MAILBOX_POLL_SECONDS", "poll_seconds", 1), ("MAILBOX_MAX_BYTES", "max_bytes", 1024)]:
        if (number := _whole_number(env, name, least)) is not None:
            values[attr] = number
    folders = {values["folder"], values.get("processed_folder", MailboxSettings.processed_folder),
               values.get("quarantine_folder", MailboxSettings.quarantine_folder)}
    if len(folders) < 3:
        raise ConfigError("MAILBOX_PROCESSED_FOLDER: the folder of new mail, the processed folder and the "
                          "quarantine folder must be three different folders")
    if (ca := _pem_file(env, "MAILBOX_TLS_CA")) is not None:
        values["tls_ca"] = ca
    return MailboxSettings(**values)  # type: ignore[arg-type]


def _mailbox_password(env: Mapping[str, str]) -> str:
    if env.get("MAILBOX_PASSWORD"):
        return env["MAILBOX_PASSWORD"]
    path = _given(env, "MAILBOX_PASSWORD_FILE")
    if path is None:
        raise ConfigError("MAILBOX_PASSWORD: not set, and no MAILBOX_PASSWORD_FILE (MAILBOX_URL needs one)")
    try:
        password = Path(path).read_text(encoding="utf-8").strip("\r\n")
    except OSError as err:
        raise ConfigError(f"MAILBOX_PASSWORD_FILE: {path} cannot be read ({err.strerror or type(err).__name__})") \
            from None
    if not password:
        raise ConfigError(f"MAILBOX_PASSWORD_FILE: {path} is empty")
    return password


#: Variables taken as they are, by the Settings field they set.
_PLAIN = {
    "TEMPORAL_ADDRESS": "temporal_address",
    "TEMPORAL_NAMESPACE": "temporal_namespace",
    "TEMPORAL_TASK_QUEUE": "task_queue",
    "DATABASE_URL": "database_url",
    "SMTP_HOST": "smtp_host",
    "MAIL_FROM": "mail_from",
    "DIRECTOR_EMAIL": "director_email",
    "METRICS_HOST": "metrics_host",
    "OTEL_SERVICE_NAME": "otel_service_name",
}
#: Port variables, by the Settings field they set.
_PORTS = {"SMTP_PORT": "smtp_port", "CODEC_SERVER_PORT": "codec_port", "METRICS_PORT": "metrics_port"}


def load_settings(env: Mapping[str, str] | None = None) -> Settings:
    """Build the settings from ``env`` (default: the process environment).

    A variable that is unset or empty leaves its field at the default written in :class:`Settings`,
    the one place defaults are written.
    """
    env = os.environ if env is None else env
    values: dict[str, object] = {attr: value for name, attr in _PLAIN.items()
                                 if (value := _given(env, name)) is not None}
    values |= {attr: port for name, attr in _PORTS.items() if (port := _port(env, name)) is not None}
    if (tls := _given(env, "SMTP_TLS")) is not None:
        tls = tls.lower()
        if tls not in ("none", "starttls", "tls"):
            raise ConfigError(f"SMTP_TLS: {tls!r} must be one of none, starttls, tls")
        values["smtp_tls"] = tls
    if (origin := _given(env, "CODEC_UI_ORIGIN")) is not None:
        values["codec_ui_origin"] = origin.rstrip("/")
    # Secrets are taken exactly as given (white space can be part of a password), from the variable or
    # from the file NAME_FILE names (compose secrets: docker-compose.yml).
    if env.get("SMTP_USERNAME"):
        values["smtp_username"] = env["SMTP_USERNAME"]
    for name, attr in [("SMTP_PASSWORD", "smtp_password"), ("CODEC_SERVER_TOKEN", "codec_token")]:
        if (secret := _secret(env, name)) is not None:
            values[attr] = secret
    for name, attr in [("DATABASE_URL", "database_url"), ("AUDIT_DATABASE_URL", "audit_database_url")]:
        password = _secret(env, name.replace("_URL", "_PASSWORD"))
        if password is not None:
            values[attr] = _with_password(name, values.get(attr) or _given(env, name), password)
    if (audit := _given(env, "AUDIT_DATABASE_URL")) is not None and "audit_database_url" not in values:
        values["audit_database_url"] = audit
    if _given(env, "PRODUCT_CATALOGUE_FILE") is not None:
        values["product_catalogue"] = configured_catalogue(env)
    if (register := _given(env, "COMPLAINTS_STAFF_FILE")) is not None:
        values["staff_file"] = _staff_register(Path(register))
    if (key := _given(env, "COMPLAINTS_STAFF_KEY")) is not None:
        values["staff_key"] = Path(key).expanduser()
    return Settings(
        closure_days=_closure_days(env.get("COMPANY_CLOSURE_DAYS", "")),
        mailbox=_mailbox(env),
        encryption_keys=_encryption_keys(env),
        **values,  # type: ignore[arg-type]
        **_temporal_tls(env),  # type: ignore[arg-type]
        **_observability(env),  # type: ignore[arg-type]
        **_tuning(env),  # type: ignore[arg-type]
    )

"""All configuration, read from the environment in one place.

The worker, the starter and the admin CLI all call :func:`load_settings`; later
concerns (encryption keys, TLS, metrics) add their fields here.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from datetime import date
from pathlib import Path
from typing import Literal, Mapping

REPO_ROOT = Path(__file__).resolve().parent.parent
DEV_DATA_DIR = REPO_ROOT / ".data"

#: Where ``make run`` keeps its development encryption key (created on first start).
DEV_KEYS_FILE = DEV_DATA_DIR / "encryption-keys"

#: Port of the dev stack's embedded PostgreSQL (``make run``).
DEV_POSTGRES_PORT = 55432
DEV_DATABASE_URL = f"postgresql://postgres@127.0.0.1:{DEV_POSTGRES_PORT}/complaints"

SmtpTls = Literal["none", "starttls", "tls"]


class ConfigError(ValueError):
    """A configuration value is missing or malformed; the message names the variable."""


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
    #: (key id, 32-byte key) pairs; the first encrypts, all decrypt. See complaints/codec.py.
    encryption_keys: tuple[tuple[str, bytes], ...] = field(default=(), repr=False)
    #: Codec server for the Web UI: its port, the UI origin allowed by CORS, and the bearer token.
    codec_port: int = 8081
    codec_ui_origin: str = "http://localhost:8233"
    codec_token: str | None = field(default=None, repr=False)


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
    from complaints.codec import KeyConfigError, parse_keys

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


def _port(env: Mapping[str, str], name: str, default: int) -> int:
    raw = env.get(name, "").strip() or str(default)
    try:
        port = int(raw)
    except ValueError:
        raise ConfigError(f"{name}: {raw!r} is not a port number") from None
    if not 0 < port < 65536:
        raise ConfigError(f"{name}: {port} is not a port number")
    return port


def load_settings(env: Mapping[str, str] | None = None) -> Settings:
    """Build the settings from ``env`` (default: the process environment)."""
    env = os.environ if env is None else env

    def get(name: str, default: str) -> str:
        value = env.get(name, "").strip()
        return value or default

    smtp_port = _port(env, "SMTP_PORT", 1025)
    tls = get("SMTP_TLS", "none").lower()
    if tls not in ("none", "starttls", "tls"):
        raise ConfigError(f"SMTP_TLS: {tls!r} must be one of none, starttls, tls")
    return Settings(
        temporal_address=get("TEMPORAL_ADDRESS", "localhost:7233"),
        temporal_namespace=get("TEMPORAL_NAMESPACE", "default"),
        task_queue=get("TEMPORAL_TASK_QUEUE", "complaints"),
        database_url=get("DATABASE_URL", DEV_DATABASE_URL),
        smtp_host=get("SMTP_HOST", "localhost"),
        smtp_port=smtp_port,
        smtp_username=env.get("SMTP_USERNAME") or None,
        smtp_password=env.get("SMTP_PASSWORD") or None,
        smtp_tls=tls,  # type: ignore[arg-type]
        mail_from=get("MAIL_FROM", "Level Up <info@level-up.nl>"),
        director_email=get("DIRECTOR_EMAIL", "directie@level-up.nl"),
        closure_days=_closure_days(env.get("COMPANY_CLOSURE_DAYS", "")),
        encryption_keys=_encryption_keys(env),
        codec_port=_port(env, "CODEC_SERVER_PORT", 8081),
        codec_ui_origin=get("CODEC_UI_ORIGIN", "http://localhost:8233").rstrip("/"),
        codec_token=env.get("CODEC_SERVER_TOKEN") or None,
    )

"""The one place that builds a Temporal client.

Worker, starter and admin CLI connect through :func:`connect`, so the data
converter is the same everywhere: pydantic for the models, every payload
encrypted by :class:`infra.codec.EncryptionCodec`, and failure messages and
stack traces moved into the encrypted payloads too (they can quote a
complainant's words). The connection to the cluster is the same everywhere too:
TLS or mTLS and an API key from the settings (infra/config.py), and the
OpenTelemetry tracing interceptor when ``OTEL_EXPORTER_OTLP_ENDPOINT`` is set.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

from typing import Sequence

from temporalio.client import Client, Interceptor
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.converter import DataConverter, DefaultFailureConverterWithEncodedAttributes
from temporalio.runtime import Runtime
from temporalio.service import TLSConfig

from infra import observability
from infra.codec import EncryptionCodec, ProductPayloadConverter
from infra.config import DEV_KEYS_FILE, ConfigError, Settings


def data_converter(settings: Settings) -> DataConverter:
    if not settings.encryption_keys:
        raise ConfigError(
            "no encryption key: set COMPLAINTS_ENCRYPTION_KEYS (KEY_ID:BASE64,...) or run "
            f"`make run` once to create the development key in {DEV_KEYS_FILE}")
    return dataclasses.replace(
        pydantic_data_converter,
        payload_converter_class=ProductPayloadConverter,
        payload_codec=EncryptionCodec(settings.encryption_keys),
        failure_converter_class=DefaultFailureConverterWithEncodedAttributes,
    )


def _read(path: Path | None, variable: str) -> bytes | None:
    if path is None:
        return None
    try:
        return path.read_bytes()
    except OSError as err:  # it was readable when the settings were loaded
        raise ConfigError(f"{variable}: {path} cannot be read ({err.strerror or type(err).__name__})") from None


def tls_config(settings: Settings) -> TLSConfig | bool:
    """The client's TLS: False (plain), or the CA, client certificate and server name to use.

    Without a CA file the system's trust roots verify the server (Temporal Cloud's
    certificates chain to a public CA).
    """
    if not settings.temporal_tls:
        return False
    return TLSConfig(
        server_root_ca_cert=_read(settings.temporal_tls_ca, "TEMPORAL_TLS_CA"),
        client_cert=_read(settings.temporal_tls_cert, "TEMPORAL_TLS_CERT"),
        client_private_key=_read(settings.temporal_tls_key, "TEMPORAL_TLS_KEY"),
        domain=settings.temporal_tls_server_name,
    )


async def connect(settings: Settings, *, runtime: Runtime | None = None,
                  interceptors: Sequence[Interceptor] = ()) -> Client:
    """A client of the configured cluster; ``runtime`` carries the worker's metrics (one per process),
    ``interceptors`` go before the tracing one (``admin.py``'s signing, infra/signing.py)."""
    return await Client.connect(
        settings.temporal_address,
        namespace=settings.temporal_namespace,
        data_converter=data_converter(settings),
        tls=tls_config(settings),
        api_key=settings.temporal_api_key,
        interceptors=[*interceptors, *observability.tracing_interceptors(settings)],
        runtime=runtime,
    )

"""The one place that builds a Temporal client.

Worker, starter and admin CLI connect through :func:`connect`, so the data
converter is the same everywhere: pydantic for the models, every payload
encrypted by :class:`complaints.codec.EncryptionCodec`, and failure messages and
stack traces moved into the encrypted payloads too (they can quote a
complainant's words).
"""

from __future__ import annotations

import dataclasses

from temporalio.client import Client
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.converter import DataConverter, DefaultFailureConverterWithEncodedAttributes

from complaints.codec import EncryptionCodec
from complaints.config import DEV_KEYS_FILE, ConfigError, Settings


def data_converter(settings: Settings) -> DataConverter:
    if not settings.encryption_keys:
        raise ConfigError(
            "no encryption key: set COMPLAINTS_ENCRYPTION_KEYS (KEY_ID:BASE64,...) or run "
            f"`make run` once to create the development key in {DEV_KEYS_FILE}")
    return dataclasses.replace(
        pydantic_data_converter,
        payload_codec=EncryptionCodec(settings.encryption_keys),
        failure_converter_class=DefaultFailureConverterWithEncodedAttributes,
    )


async def connect(settings: Settings) -> Client:
    return await Client.connect(
        settings.temporal_address,
        namespace=settings.temporal_namespace,
        data_converter=data_converter(settings),
    )

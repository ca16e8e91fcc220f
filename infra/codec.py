"""Encryption of everything Temporal stores: AES-256-GCM, with key rotation.

Every payload (workflow inputs, update arguments, activity inputs and results,
query results, memo, and — through the failure converter — failure messages and
stack traces) is serialized, encrypted with the active key and stored as a
``binary/encrypted`` payload whose metadata names the key. Decryption accepts
every configured key, so a new key can be made active while histories written
under the old one stay readable.

Key format (``COMPLAINTS_ENCRYPTION_KEYS``): comma-separated ``KEY_ID:BASE64``
entries, each a 32-byte key in standard base64; the first entry is the active key.
"""

from __future__ import annotations

import base64
import logging
import os
import re
from typing import Any, Iterable, Sequence

from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from temporalio.api.common.v1 import Payload
from temporalio.contrib.pydantic import PydanticPayloadConverter
from temporalio.converter import CompositePayloadConverter, EncodingPayloadConverter, PayloadCodec
from temporalio.exceptions import ApplicationError

from complaints.staff import NOT_AUTHORISED

logger = logging.getLogger(__name__)

ENCODING = b"binary/encrypted"
KEY_ID_FIELD = "encryption-key-id"
#: What a strict codec makes of a payload it refuses (see :class:`EncryptionCodec`).
REFUSED = b"binary/refused"
_WHY = "refused-because"
_NONCE_BYTES = 12
_KEY_ID = re.compile(r"^[A-Za-z0-9._-]{1,64}$")


class KeyConfigError(ValueError):
    """The key configuration is malformed; the message says how, never the key itself."""


def parse_keys(raw: str, source: str = "COMPLAINTS_ENCRYPTION_KEYS") -> tuple[tuple[str, bytes], ...]:
    keys: list[tuple[str, bytes]] = []
    for number, entry in enumerate((e.strip() for e in re.split(r"[,\n]", raw)), 1):
        if not entry or entry.startswith("#"):
            continue
        key_id, sep, material = entry.partition(":")
        if not sep or not _KEY_ID.match(key_id.strip()):
            raise KeyConfigError(f"{source}: entry {number} must be KEY_ID:BASE64 (key id of letters, digits, . _ -)")
        try:
            key = base64.b64decode(material.strip(), validate=True)
        except ValueError:
            raise KeyConfigError(f"{source}: key {key_id.strip()!r} is not valid base64") from None
        if len(key) != 32:
            raise KeyConfigError(f"{source}: key {key_id.strip()!r} must be 32 bytes (AES-256), not {len(key)}")
        keys.append((key_id.strip(), key))
    if len({k for k, _ in keys}) != len(keys):
        raise KeyConfigError(f"{source}: a key id appears twice")
    return tuple(keys)


def new_key_entry(key_id: str) -> str:
    """A fresh ``KEY_ID:BASE64`` entry (for ``make run``'s development key and for rotation)."""
    return f"{key_id}:{base64.b64encode(os.urandom(32)).decode()}"


class EncryptionCodec(PayloadCodec):
    """Encrypts every payload; decrypts those encrypted with a known key.

    A *strict* codec (every client and worker of the product) does not let anything else through: a
    payload that is not encrypted, or encrypted with a key it does not know, becomes a ``binary/refused``
    payload that :class:`RefusingPayloadConverter` refuses to turn into a value. So a client without the
    key can send nothing a worker accepts: its update is refused before the validator, its workflow
    fails at once. (The codec cannot raise instead: a failing decode fails the whole workflow task.)
    The codec server is not strict: it shows the Web UI what is there.
    """

    def __init__(self, keys: Sequence[tuple[str, bytes]], *, strict: bool = True) -> None:
        if not keys:
            raise KeyConfigError("no encryption key configured")
        self._strict = strict
        self._active_id, active = keys[0]
        self._active = AESGCM(active)
        self._by_id = {key_id: AESGCM(key) for key_id, key in keys}

    @property
    def active_key_id(self) -> str:
        return self._active_id

    async def encode(self, payloads: Iterable[Payload]) -> list[Payload]:
        return [self.encrypt(p) for p in payloads]

    async def decode(self, payloads: Iterable[Payload]) -> list[Payload]:
        return [self.decode_strictly(p) if self._strict else self.decrypt(p) for p in payloads]

    def encrypt(self, payload: Payload) -> Payload:
        nonce = os.urandom(_NONCE_BYTES)
        key_id = self._active_id.encode()
        sealed = self._active.encrypt(nonce, payload.SerializeToString(), key_id)
        return Payload(metadata={"encoding": ENCODING, KEY_ID_FIELD: key_id}, data=nonce + sealed)

    def decode_strictly(self, payload: Payload) -> Payload:
        """What a strict codec decodes ``payload`` to: the plain payload, or a refused one."""
        if payload.metadata.get("encoding", b"") != ENCODING:
            logger.warning("refused a payload that is not encrypted (a client without the encryption key)")
            return Payload(metadata={"encoding": REFUSED, _WHY: b"not-encrypted"})
        if payload.metadata.get(KEY_ID_FIELD, b"").decode(errors="replace") not in self._by_id:
            logger.warning("refused a payload encrypted with a key this process does not have")
            return Payload(metadata={"encoding": REFUSED, _WHY: b"unknown-key"})
        try:
            return self.decrypt(payload)
        except Exception:  # noqa: BLE001 - InvalidTag, a protobuf DecodeError: forged or damaged
            logger.warning("refused a payload that does not decrypt with its key (forged or damaged)")
            return Payload(metadata={"encoding": REFUSED, _WHY: b"not-decryptable"})

    def decrypt(self, payload: Payload) -> Payload:
        if payload.metadata.get("encoding", b"") != ENCODING:
            return payload  # not ours (e.g. written before encryption was switched on)
        key_id = payload.metadata.get(KEY_ID_FIELD, b"").decode()
        cipher = self._by_id.get(key_id)
        if cipher is None:
            raise ValueError(f"payload encrypted with unknown key {key_id!r}")
        data = payload.data
        plain = cipher.decrypt(data[:_NONCE_BYTES], data[_NONCE_BYTES:], key_id.encode())
        result = Payload()
        result.ParseFromString(plain)
        return result


class RefusingPayloadConverter(EncodingPayloadConverter):
    """Turns a payload the strict codec refused into an error, never a value.

    A payload that was not encrypted at all, or that does not decrypt with the key it names (forged):
    ``ApplicationError`` ``NotAuthorised`` (an update is refused with it, a workflow started with it fails
    at once, so it never holds a complaint's id in a failing state). One encrypted with a key this process
    lacks: an ordinary error, so that a workflow task is retried (a worker not yet given a rotated key
    must not fail complaints) and an update is still refused.
    """

    @property
    def encoding(self) -> str:
        return REFUSED.decode()

    def to_payload(self, value: Any) -> Payload | None:
        return None  # never encodes anything

    def from_payload(self, payload: Payload, type_hint: type | None = None) -> Any:
        why = payload.metadata.get(_WHY)
        if why == b"not-encrypted":
            raise ApplicationError("the request is not encrypted with the complaints' encryption key",
                                   type=NOT_AUTHORISED, non_retryable=True)
        if why == b"not-decryptable":
            raise ApplicationError("the request does not decrypt with the key it names (forged or damaged)",
                                   type=NOT_AUTHORISED, non_retryable=True)
        raise RuntimeError("the payload is encrypted with a key this process does not have")


class ProductPayloadConverter(CompositePayloadConverter):
    """The product's payload converter: pydantic models, and refused payloads refused."""

    def __init__(self) -> None:
        super().__init__(RefusingPayloadConverter(), *PydanticPayloadConverter().converters.values())

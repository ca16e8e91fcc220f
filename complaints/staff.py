"""Who may act on a complaint: the roles of the procedure, the staff register, and signed staff actions.

The procedure names two kinds of staff. A manager or an external officer talks a complaint through in
the informal phase (role ``officer``); a formal complaint is addressed to the General Director, who
decides it (role ``director``, every action). The staff register is a TOML file
(``COMPLAINTS_STAFF_FILE``) with one ``[[staff]]`` table per person::

    [[staff]]
    name = "Marieke Jansen"        # as the history, the dossier and the audit trail name them
    role = "officer"               # officer or director
    public_key = "ed25519:BASE64"  # printed by: admin.py keygen

Every staff action carries a signature with the person's Ed25519 key over the complaint id and its
first run (which complaint of that id), the action, its arguments, the moment it was signed, the key
id and a nonce (:func:`signed_bytes`). The
workflow's update validators call :func:`authorise`, so an action that is not signed by a registered
person whose role allows it, or that was sent before, never reaches the complaint's history.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import tomllib
from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum
from typing import Any, Collection

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from complaints.models import Signature, StaffAction


class StaffRole(StrEnum):
    #: A manager or an external officer of the informal phase.
    OFFICER = "officer"
    #: The General Director, to whom formal complaints are addressed: every action.
    DIRECTOR = "director"


#: The type of the ApplicationError that refuses an action for who sent it (``admin.py`` exits 5).
NOT_AUTHORISED = "NotAuthorised"
#: What an officer may do (``admin.py`` command names); a director may do everything.
OFFICER_ACTIONS = frozenset({"resolve-informally", "escalate", "measure", "correct-contact", "resend", "register"})
#: How a public key is written in the register: the algorithm, then the raw 32 bytes in base64.
PUBLIC_KEY_PREFIX = "ed25519:"
_CONTEXT = b"level-up-complaints/staff-action/v1\n"
_KEYS = {"name", "role", "public_key"}


def may(role: StaffRole, action: str) -> bool:
    """Whether ``role`` may take ``action`` (an ``admin.py`` command name)."""
    return role is StaffRole.DIRECTOR or action in OFFICER_ACTIONS


def key_id(public_key: bytes) -> str:
    """The short, stable name of a public key (shown in ``audit``): 16 hex digits of its SHA-256."""
    return hashlib.sha256(public_key).hexdigest()[:16]


def public_key_text(public_key: bytes) -> str:
    return PUBLIC_KEY_PREFIX + base64.b64encode(public_key).decode()


def parse_public_key(text: str) -> bytes:
    """The raw key of ``ed25519:BASE64`` (ValueError says what is wrong)."""
    if not text.startswith(PUBLIC_KEY_PREFIX):
        raise ValueError(f"must start with {PUBLIC_KEY_PREFIX} (as admin.py keygen prints it)")
    try:
        raw = base64.b64decode(text.removeprefix(PUBLIC_KEY_PREFIX), validate=True)
    except (binascii.Error, ValueError):
        raise ValueError("is not valid base64") from None
    if len(raw) != 32:
        raise ValueError(f"must be 32 bytes (an Ed25519 key), not {len(raw)}")
    return raw


class RegisterError(ValueError):
    """The staff register is not valid; the message names the table and the field."""


class NotAuthorised(Exception):
    """The action is refused: who sent it cannot act, or not like this (the message says which)."""


@dataclass(frozen=True)
class StaffMember:
    name: str
    role: StaffRole
    public_key: bytes = field(repr=False)

    @property
    def key_id(self) -> str:
        return key_id(self.public_key)


@dataclass(frozen=True)
class StaffRegister:
    members: tuple[StaffMember, ...] = ()
    _by_key: dict[str, StaffMember] = field(default_factory=dict, init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        for member in self.members:
            self._by_key[member.key_id] = member

    def member(self, key: str) -> StaffMember | None:
        """The person whose key has the id ``key``."""
        return self._by_key.get(key)

    @classmethod
    def parse(cls, text: str) -> StaffRegister:
        """The register from its TOML text (RegisterError names the table and the field)."""
        try:
            data = tomllib.loads(text)
        except tomllib.TOMLDecodeError as err:
            raise RegisterError(f"not valid TOML ({err})") from None
        tables = data.get("staff", [])
        if set(data) - {"staff"} or not isinstance(tables, list):
            raise RegisterError("only [[staff]] tables belong in the staff register")
        members, seen = [], set()
        for number, table in enumerate(tables, 1):
            where = f"staff #{number}"
            if not isinstance(table, dict):
                raise RegisterError(f"{where}: must be a [[staff]] table")
            if unknown := sorted(set(table) - _KEYS):
                raise RegisterError(f"{where}: {unknown[0]}: not a field of a staff member (name, role, public_key)")
            for key in sorted(_KEYS):
                if not isinstance(table.get(key), str) or not table[key].strip():
                    raise RegisterError(f"{where}: {key}: missing (a text)")
            name = " ".join(table["name"].split())
            try:
                role = StaffRole(table["role"].strip())
            except ValueError:
                raise RegisterError(f"{where}: role: {table['role']!r} must be officer or director") from None
            try:
                raw = parse_public_key(table["public_key"].strip())
            except ValueError as err:
                raise RegisterError(f"{where}: public_key: {err}") from None
            if key_id(raw) in seen:
                raise RegisterError(f"{where}: public_key: registered twice")
            seen.add(key_id(raw))
            members.append(StaffMember(name=name, role=role, public_key=raw))
        return cls(tuple(members))


def arguments(action: StaffAction) -> dict[str, Any]:
    """The action's arguments as they are signed: everything but the signature, in JSON form."""
    return action.model_dump(mode="json", exclude={"signature"})


def signed_bytes(complaint_id: str, instance: str, update: str, args: dict[str, Any], key: str,
                 signed_at: datetime, nonce: str) -> bytes:
    """What a signature covers: the complaint (its workflow id, and its first run's id: an id used again
    after an erased complaint's history is gone is another complaint), the action (its update's name)
    and its arguments, the key, the moment, the nonce."""
    body = {"complaint_id": complaint_id, "instance": instance, "action": update, "arguments": args, "key_id": key,
            "signed_at": signed_at.isoformat(), "nonce": nonce}
    return _CONTEXT + json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


def authorise(register: StaffRegister, complaint_id: str, instance: str, update: str, action_name: str,
              action: StaffAction, used_nonces: Collection[str]) -> StaffMember:
    """The registered person who signed ``action`` (sent as the Temporal update ``update``, the staff
    action ``action_name``) for this complaint, when they may take it.

    NotAuthorised, in this order: not signed; a key not in the register; a signature that does not
    match (another complaint, another action, changed arguments); a nonce already used on this complaint;
    a role that may not take the action; a name other than the register's.
    """
    signature: Signature | None = action.signature
    if signature is None:
        raise NotAuthorised("the action is not signed (admin.py signs it with the key in COMPLAINTS_STAFF_KEY)")
    member = register.member(signature.key_id)
    if member is None:
        raise NotAuthorised(f"key {signature.key_id} is not in the staff register")
    message = signed_bytes(complaint_id, instance, update, arguments(action), signature.key_id,
                           signature.signed_at, signature.nonce)
    try:
        Ed25519PublicKey.from_public_bytes(member.public_key).verify(base64.b64decode(signature.value), message)
    except (InvalidSignature, ValueError):
        raise NotAuthorised(f"the signature of key {signature.key_id} does not match this action") from None
    if signature.nonce in used_nonces:
        raise NotAuthorised("this signed action was sent before (each signature counts once)")
    if not may(member.role, action_name):
        raise NotAuthorised(f"{member.role.value} may not {action_name}")
    if action.by != member.name:
        raise NotAuthorised(f"key {signature.key_id} is {member.name!r} in the staff register, not {action.by!r}")
    return member

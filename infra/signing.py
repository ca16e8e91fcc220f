"""A staff member's key, and the signature on every staff action a client sends.

``admin.py keygen`` writes the person's Ed25519 private key to a file only they can read (by default
:data:`DEFAULT_KEY_FILE`) and prints their ``[[staff]]`` table for the staff register. A client built
with :class:`SigningInterceptor` signs each staff action (an update whose argument is a
:class:`~complaints.models.StaffAction`) just before it is sent: over the complaint id and its first
run (asked of Temporal), the update, its arguments, the moment, the key id and a fresh nonce
(complaints/staff.py). The private key never leaves
the file and the process; it is never printed or logged.
"""

from __future__ import annotations

import base64
import os
import tomllib
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Protocol

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat
from temporalio.client import (
    DescribeWorkflowInput,
    Interceptor,
    OutboundInterceptor,
    StartWorkflowUpdateInput,
    WorkflowUpdateHandle,
)

from complaints.models import Signature, StaffAction
from complaints.staff import StaffMember, StaffRole, arguments, public_key_text, signed_bytes

_PRIVATE_PREFIX = "ed25519-private:"


def _config_home() -> Path:
    return Path(os.environ.get("XDG_CONFIG_HOME", "").strip() or Path.home() / ".config")


#: Where ``admin.py keygen`` writes a key and ``admin.py`` looks for it (``COMPLAINTS_STAFF_KEY`` names another).
DEFAULT_KEY_FILE = Path("level-up-complaints") / "staff-key.toml"


def default_key_file() -> Path:
    return _config_home() / DEFAULT_KEY_FILE


class KeyFileError(ValueError):
    """The key file is missing or not valid; the message names the file, never its contents."""


@dataclass(frozen=True)
class StaffKey:
    """One person's signing key, as their key file holds it: the private key, and the person as the
    staff register will know them."""

    private_key: Ed25519PrivateKey = field(repr=False)
    name: str
    role: StaffRole

    @property
    def member(self) -> StaffMember:
        public = self.private_key.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)
        return StaffMember(name=self.name, role=self.role, public_key=public)

    @property
    def key_id(self) -> str:
        return self.member.key_id

    def register_entry(self) -> str:
        """The person's ``[[staff]]`` table, to append to the staff register as it is."""
        return (f"[[staff]]\nname = {_toml_string(self.name)}\nrole = \"{self.role.value}\"\n"
                f"public_key = \"{public_key_text(self.member.public_key)}\"\n")

    def sign(self, complaint_id: str, instance: str, update: str, action: StaffAction, *,
             now: datetime | None = None) -> StaffAction:
        """``action`` as this person sends it to the complaint ``complaint_id`` whose first run is
        ``instance``: their name as ``by``, and signed."""
        named = action.model_copy(update={"by": self.name, "signature": None})
        signed_at = now or datetime.now(timezone.utc)
        nonce = os.urandom(16).hex()
        message = signed_bytes(complaint_id, instance, update, arguments(named), self.key_id, signed_at, nonce)
        value = base64.b64encode(self.private_key.sign(message)).decode()
        return named.model_copy(update={"signature": Signature(key_id=self.key_id, signed_at=signed_at,
                                                               nonce=nonce, value=value)})


def _toml_string(text: str) -> str:
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def new_key(name: str, role: StaffRole) -> StaffKey:
    return StaffKey(private_key=Ed25519PrivateKey.generate(), name=" ".join(name.split()), role=role)


def write_key(key: StaffKey, path: Path) -> None:
    """Write the key file, readable by its owner only (0600); an existing file is never overwritten."""
    seed = key.private_key.private_bytes_raw()
    text = (f"# Level Up complaints: the staff key of {key.name}. Keep it to yourself: it signs your actions.\n"
            f"name = {_toml_string(key.name)}\nrole = \"{key.role.value}\"\n"
            f"private_key = \"{_PRIVATE_PREFIX}{base64.b64encode(seed).decode()}\"\n")
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(descriptor, "w", encoding="utf-8") as out:
        out.write(text)


def read_key(path: Path) -> StaffKey:
    """The key in ``path`` (KeyFileError names the file and what is wrong with it)."""
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise KeyFileError(f"{path} does not exist (create your key with: admin.py keygen)") from None
    except OSError as err:
        raise KeyFileError(f"{path} cannot be read ({err.strerror or type(err).__name__})") from None
    except (UnicodeDecodeError, tomllib.TOMLDecodeError):
        raise KeyFileError(f"{path} is not a key file written by admin.py keygen") from None
    try:
        seed = base64.b64decode(str(data["private_key"]).removeprefix(_PRIVATE_PREFIX), validate=True)
        return StaffKey(private_key=Ed25519PrivateKey.from_private_bytes(seed), name=str(data["name"]),
                        role=StaffRole(data["role"]))
    except (KeyError, ValueError):
        raise KeyFileError(f"{path} is not a key file written by admin.py keygen") from None


class Signer(Protocol):
    def sign(self, complaint_id: str, instance: str, update: str, action: StaffAction) -> StaffAction: ...


class SigningInterceptor(Interceptor):
    """Signs every staff action the client sends (see the module's docstring)."""

    def __init__(self, signer: Signer) -> None:
        self._signer = signer

    def intercept_client(self, next: OutboundInterceptor) -> OutboundInterceptor:
        return _SigningOutbound(next, self._signer)


class _SigningOutbound(OutboundInterceptor):
    def __init__(self, next: OutboundInterceptor, signer: Signer) -> None:
        super().__init__(next)
        self._signer = signer

    async def start_workflow_update(self, input: StartWorkflowUpdateInput) -> WorkflowUpdateHandle[Any]:
        if any(isinstance(arg, StaffAction) for arg in input.args):
            # Which complaint of this id: its first run (an unknown id: NOT_FOUND, as the update would be).
            described = await self.next.describe_workflow(
                DescribeWorkflowInput(id=input.id, run_id=None, rpc_metadata={}, rpc_timeout=None))
            instance = described.raw_description.workflow_execution_info.first_run_id
            input.args = [self._signer.sign(input.id, instance, input.update, arg)
                          if isinstance(arg, StaffAction) else arg for arg in input.args]
        return await super().start_workflow_update(input)

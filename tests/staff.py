"""The test suite's staff: a key for every name the tests act under, and the register that holds them.

The session's worker checks actions against :data:`REGISTER` (``COMPLAINTS_STAFF_FILE``); the session's
client signs every staff action with the key of the name in its ``by`` (:class:`Keyring`), so tests
write ``DecideInput(by="Marieke Jansen", ...)`` as staff would type it and it arrives signed by her.
A name without a key is sent unsigned (and refused). ``admin.py`` runs with the person's key file
(:func:`key_file`). Everyone is a director except :data:`OFFICER`.
"""

from __future__ import annotations

import atexit
import shutil
import tempfile
from pathlib import Path

from complaints.models import StaffAction
from complaints.staff import StaffRole
from infra.signing import StaffKey, new_key, write_key

#: The officer of the informal phase the tests act as (the others are directors).
OFFICER = "Olaf Officier"
DIRECTORS = ("Marieke Jansen", "Kwaliteitsmanager Eva", "Karin de Manager", "tester", "Sanne Baliemedewerker",
             "Marieke de Boer", "anna", "Pieter Bakker", "Operations Lead Joost", "Mr. A. Bemiddelaar",
             "Directeur Willem", "kwaliteit", "bench", "e2e-officer", "Algemeen Directeur")

_DIR = Path(tempfile.mkdtemp(prefix="complaints-staff-"))
atexit.register(shutil.rmtree, _DIR, True)
KEYS: dict[str, StaffKey] = {name: new_key(name, StaffRole.DIRECTOR) for name in DIRECTORS}
KEYS[OFFICER] = new_key(OFFICER, StaffRole.OFFICER)
REGISTER = _DIR / "staff.toml"
REGISTER.write_text("\n".join(key.register_entry() for key in KEYS.values()), encoding="utf-8")


def key_file(name: str) -> Path:
    """The key file of ``name`` (written on first use, 0600, as ``admin.py keygen`` writes it)."""
    path = _DIR / "keys" / f"{DIRECTORS.index(name) if name in DIRECTORS else 'officer'}.toml"
    if not path.exists():
        write_key(KEYS[name], path)
    return path


class Keyring:
    """Signs each staff action with the key of the person its ``by`` names (unsigned when none)."""

    def sign(self, complaint_id: str, instance: str, update: str, action: StaffAction) -> StaffAction:
        if action.signature is not None or action.by not in KEYS:
            return action
        return KEYS[action.by].sign(complaint_id, instance, update, action)

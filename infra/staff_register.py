"""The worker's staff register: the file ``COMPLAINTS_STAFF_FILE`` names, read again as soon as it changes.

The complaint workflow's update validators ask :func:`current` for the register (complaints/staff.py
checks the signature against it), so removing a person from the file takes effect with the next
action, without a restart. Validators run only when an update arrives, never on replay, so the
register being newer than a complaint's history changes nothing that history recorded.

A register that cannot be read (missing, half-written, invalid) refuses every staff action until it
is fixed: who may act is never guessed. A worker without ``COMPLAINTS_STAFF_FILE`` refuses them too.
"""

from __future__ import annotations

import logging
import os
import threading
from pathlib import Path

from complaints.staff import NotAuthorised, RegisterError, StaffRegister

logger = logging.getLogger(__name__)

#: The variable that names the register (for messages).
VARIABLE = "COMPLAINTS_STAFF_FILE"


class RegisterFile:
    """The register in ``path``, parsed again whenever the file's size, time or inode changes."""

    def __init__(self, path: Path | None) -> None:
        self.path = path
        self._lock = threading.Lock()
        self._stamp: tuple[int, int, int] | None = None
        self._register: StaffRegister | None = None
        self._error: str | None = None

    def current(self) -> StaffRegister:
        """The register as the file says now; NotAuthorised (naming the variable) when it cannot be read."""
        if self.path is None:
            raise NotAuthorised(f"this worker has no staff register ({VARIABLE} is not set)")
        with self._lock:
            try:
                status = os.stat(self.path)
                stamp = (status.st_mtime_ns, status.st_size, status.st_ino)
            except OSError as err:
                stamp, self._register = None, None
                self._error = f"{self.path} cannot be read ({err.strerror or type(err).__name__})"
            if stamp is not None and stamp != self._stamp:
                self._load(stamp)
            if self._register is None:
                raise NotAuthorised(f"the staff register cannot be used: {VARIABLE}: {self._error}")
            return self._register

    def _load(self, stamp: tuple[int, int, int]) -> None:
        assert self.path is not None
        try:
            self._register = StaffRegister.parse(self.path.read_text(encoding="utf-8"))
            self._error = None
            logger.info("staff register read: %d key(s)", len(self._register.members))
        except (OSError, UnicodeDecodeError, RegisterError) as err:
            self._register = None
            self._error = f"{self.path}: {err}" if isinstance(err, RegisterError) else \
                f"{self.path} cannot be read ({getattr(err, 'strerror', None) or type(err).__name__})"
            logger.error("the staff register cannot be used; every staff action is refused until it is fixed: %s",
                         self._error)
        self._stamp = stamp


_ACTIVE = RegisterFile(None)


def use(path: Path | None) -> RegisterFile:
    """Make the register in ``path`` the one this process's workflows check (the worker calls it at start)."""
    global _ACTIVE
    _ACTIVE = RegisterFile(path)
    if path is None:
        logger.warning("no staff register (%s): every staff action is refused", VARIABLE)
    return _ACTIVE


def current() -> StaffRegister:
    """The register of this process (see :func:`use`)."""
    return _ACTIVE.current()


"""Create the secret files of the Docker Compose stack (docker-compose.yml ``secrets:``).

    python deploy/make_secrets.py [--dir deploy/secrets]

Writes each missing file (an existing one is never changed): random passwords for PostgreSQL's
superuser, the dossier's role and its reading role, the codec server's token (48 hex digits), a fresh
encryption key (``k1:BASE64``), and empty files for the SMTP and mailbox passwords (fill them in when
the relay or the mailbox needs one). Keep a copy of ``encryption_keys`` in the organisation's secret
store: without it no Temporal payload can be read again.

The folder is 0700, so no other user of the machine can reach the files; the files themselves are 0644,
because Compose mounts a file secret as it is and the services run as users of their own (postgres 999,
the complaints image 10001), who must be able to read it inside their container.
"""

from __future__ import annotations

import argparse
import base64
import os
import secrets
import sys
from pathlib import Path

#: Each secret file and how its first value is made.
SECRETS = {
    "postgres_password": lambda: secrets.token_hex(24),
    "complaints_db_password": lambda: secrets.token_hex(24),
    "audit_db_password": lambda: secrets.token_hex(24),
    "codec_server_token": lambda: secrets.token_hex(24),
    "encryption_keys": lambda: "k1:" + base64.b64encode(os.urandom(32)).decode(),
    "smtp_password": lambda: "",
    "mailbox_password": lambda: "",
}


def make_secrets(folder: Path) -> list[str]:
    """Write the missing secret files into ``folder``; returns their names."""
    folder.mkdir(parents=True, exist_ok=True, mode=0o700)
    folder.chmod(0o700)
    written = []
    for name, make in SECRETS.items():
        path = folder / name
        if path.exists():
            continue
        value = make()
        descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
        with os.fdopen(descriptor, "w", encoding="utf-8") as out:
            out.write(value + "\n" if value else "")
        written.append(name)
    return written


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="make_secrets.py", description=__doc__.split("\n\n")[0])
    parser.add_argument("--dir", type=Path, default=Path(__file__).resolve().parent / "secrets",
                        help="where to write them (default: deploy/secrets)")
    args = parser.parse_args(argv)
    try:
        written = make_secrets(args.dir)
    except OSError as err:
        print(f"make_secrets.py: {err}", file=sys.stderr)
        return 1
    print(f"{args.dir}: " + (", ".join(written) if written else "every secret exists already"))
    return 0


if __name__ == "__main__":
    sys.exit(main())

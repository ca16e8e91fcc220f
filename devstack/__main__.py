"""``python -m devstack`` (``make run``): the whole system on this machine, in the foreground.

Starts, in order, and waits until each is ready:

- PostgreSQL (embedded, ``pgserver``) with database ``complaints``, data in ``DATA/postgres``;
- the info@level-up.nl mailbox: an IMAP server (``pymap``, mail kept in memory while it runs;
  its log in ``DATA/imap.log``) with its password in ``DATA/mailbox-password``;
- an SMTP server that saves every message as an ``.eml`` file in ``DATA/mail/`` and delivers
  mail to info@level-up.nl into the mailbox;
- the codec server (``infra/codec_server.py``, in this process, on 127.0.0.1 without a
  token) with the worker's keys, answering only the Web UI's origin;
- the Temporal dev server (Web UI included, decoding payloads through the codec server)
  persisting to ``DATA/temporal.db``, with per-workflow time skipping enabled; its log goes
  to ``DATA/temporal.log``;
- the worker (``python worker.py``) pointed at all of the above; it reads the mailbox.

Ctrl-C (SIGINT) or SIGTERM stops everything cleanly: worker, Temporal, codec server, SMTP,
PostgreSQL.
Complaints survive a restart. A port already in use, or a part that dies, stops the stack
with exit code 1.

Environment overrides (for tests; defaults in brackets; a relative data dir is taken
relative to the repository, never to the working directory):

    DEVSTACK_DATA_DIR       [<repository>/.data]
    DEVSTACK_TEMPORAL_PORT  [7233]     Temporal frontend (gRPC)
    DEVSTACK_UI_PORT        [8233]     Temporal Web UI
    DEVSTACK_POSTGRES_PORT  [55432]
    DEVSTACK_SMTP_PORT      [1025]
    DEVSTACK_CODEC_PORT     [8081]     codec server for the Web UI
    DEVSTACK_IMAP_PORT      [1143]     IMAP server of the info@ mailbox (pymap)
"""

from __future__ import annotations

import asyncio
import os
import sys

from devstack.stack import Config, Stack, StackError


def main() -> int:
    """Run the stack until Ctrl-C or SIGTERM (exit 0) or a failure (exit 1)."""
    try:
        config = Config.from_env(os.environ)
    except StackError as err:
        print(f"devstack: {err}", file=sys.stderr)
        return 1
    return asyncio.run(Stack(config).run())


if __name__ == "__main__":
    try:
        sys.exit(main())
    except KeyboardInterrupt:
        sys.exit(0)

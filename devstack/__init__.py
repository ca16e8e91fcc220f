"""make run: the whole system on this machine (embedded PostgreSQL, local SMTP, Temporal dev server, the worker)."""

"""The test suite: real Temporal dev server, PostgreSQL and SMTP servers, started once per session."""

"""The dossier in PostgreSQL: its schema (migrations) and its read side (the audit trail)."""

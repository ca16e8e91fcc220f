#!/bin/sh
# First start of the PostgreSQL container only (an empty data volume): the postgres image runs
# every file in /docker-entrypoint-initdb.d once, as the superuser, before it listens on TCP.
#
# One server, three databases, each owned by its own login role, and one role that only reads:
#   temporal, temporal_visibility  Temporal's persistence and SQL visibility (role temporal)
#   complaints                     the dossier (role complaints; the worker applies its schema)
#   complaints_audit               reads the dossier, writes nothing (admin.py audit and the other
#                                  reading commands; the worker grants it every table at start)
#
# The passwords: the dossier's roles' from the compose secrets (/run/secrets, named by *_FILE), the
# temporal role's from the environment (the Temporal server image reads it from there only).
# A database owner may create tables in its public schema (PostgreSQL 15+ no longer lets every
# role do that). The temporal role gets CREATEDB only so that temporal-sql-tool's idempotent
# `create` step (deploy/temporal/setup-schema.sh) works as documented; it creates nothing here.
#
# Changing a password later does not change the role: use ALTER ROLE ... PASSWORD.
set -eu

: "${TEMPORAL_DB_PASSWORD:?set TEMPORAL_DB_PASSWORD}"
: "${COMPLAINTS_DB_PASSWORD_FILE:?set COMPLAINTS_DB_PASSWORD_FILE}"
: "${AUDIT_DB_PASSWORD_FILE:?set AUDIT_DB_PASSWORD_FILE}"
complaints_password=$(cat "$COMPLAINTS_DB_PASSWORD_FILE")
audit_password=$(cat "$AUDIT_DB_PASSWORD_FILE")
[ -n "$complaints_password" ] && [ -n "$audit_password" ] || { echo "a dossier password file is empty" >&2; exit 1; }

# psql's :'name' quotes the value as an SQL literal, so a password never needs escaping here.
psql -v ON_ERROR_STOP=1 --username "$POSTGRES_USER" --dbname "${POSTGRES_DB:-postgres}" \
     -v temporal_password="$TEMPORAL_DB_PASSWORD" \
     -v complaints_password="$complaints_password" \
     -v audit_password="$audit_password" <<'SQL'
CREATE ROLE temporal LOGIN CREATEDB PASSWORD :'temporal_password';
CREATE DATABASE temporal OWNER temporal;
CREATE DATABASE temporal_visibility OWNER temporal;

CREATE ROLE complaints LOGIN PASSWORD :'complaints_password';
CREATE DATABASE complaints OWNER complaints;
-- Nobody else connects to the dossier (it holds personal data), but the reading role.
REVOKE CONNECT ON DATABASE complaints FROM PUBLIC;
CREATE ROLE complaints_audit LOGIN PASSWORD :'audit_password';
GRANT CONNECT ON DATABASE complaints TO complaints_audit;
SQL

#!/bin/sh
# First start of the PostgreSQL container only (an empty data volume): the postgres image runs
# every file in /docker-entrypoint-initdb.d once, as the superuser, before it listens on TCP.
#
# One server, three databases, each owned by its own login role:
#   temporal, temporal_visibility  Temporal's persistence and SQL visibility (role temporal)
#   complaints                     the dossier (role complaints; the worker applies its schema)
#
# The passwords come from the container's environment (docker-compose.yml passes them from .env).
# A database owner may create tables in its public schema (PostgreSQL 15+ no longer lets every
# role do that). The temporal role gets CREATEDB only so that temporal-sql-tool's idempotent
# `create` step (deploy/temporal/setup-schema.sh) works as documented; it creates nothing here.
#
# Changing a password in .env later does not change the role: use ALTER ROLE ... PASSWORD.
set -eu

: "${TEMPORAL_DB_PASSWORD:?set TEMPORAL_DB_PASSWORD}"
: "${COMPLAINTS_DB_PASSWORD:?set COMPLAINTS_DB_PASSWORD}"

# psql's :'name' quotes the value as an SQL literal, so a password never needs escaping here.
psql -v ON_ERROR_STOP=1 --username "$POSTGRES_USER" --dbname "${POSTGRES_DB:-postgres}" \
     -v temporal_password="$TEMPORAL_DB_PASSWORD" \
     -v complaints_password="$COMPLAINTS_DB_PASSWORD" <<'SQL'
CREATE ROLE temporal LOGIN CREATEDB PASSWORD :'temporal_password';
CREATE DATABASE temporal OWNER temporal;
CREATE DATABASE temporal_visibility OWNER temporal;

CREATE ROLE complaints LOGIN PASSWORD :'complaints_password';
CREATE DATABASE complaints OWNER complaints;
-- Nobody else connects to the dossier (it holds personal data).
REVOKE CONNECT ON DATABASE complaints FROM PUBLIC;
SQL

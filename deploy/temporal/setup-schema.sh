#!/bin/sh
# One-shot job (service temporal-schema, image temporalio/admin-tools): creates Temporal's two
# databases if they are missing and brings their schemas to the version this admin-tools image
# ships. Every step is idempotent, so the job runs on every `docker compose up`, and after an
# image upgrade it is the schema migration (update-schema applies only the missing versions).
#
# Commands as in Temporal's own compose setup (temporalio/samples-server compose/scripts/
# setup-postgres.sh) and tools/sql/README.md: create, setup-schema -v 0.0, update-schema -d DIR.
# The postgres12 plugin's create ignores an existing database (duplicate_database); setup-schema
# skips a schema already past 0.0 (tools/common/schema/setuptask.go).
#
# Environment (the same names the temporalio/server config template reads): POSTGRES_SEEDS,
# DB_PORT, POSTGRES_USER, POSTGRES_PWD, DBNAME, VISIBILITY_DBNAME.
set -eu

: "${POSTGRES_SEEDS:?}" "${POSTGRES_USER:?}" "${POSTGRES_PWD:?}"
: "${DB_PORT:=5432}" "${DBNAME:=temporal}" "${VISIBILITY_DBNAME:=temporal_visibility}"
SCHEMA=/etc/temporal/schema/postgresql/v12

# temporal-sql-tool reads the password from SQL_PASSWORD: it stays out of the process list.
SQL_PASSWORD="$POSTGRES_PWD"
export SQL_PASSWORD

sql() {
    temporal-sql-tool --plugin postgres12 --ep "$POSTGRES_SEEDS" -p "$DB_PORT" -u "$POSTGRES_USER" "$@"
}

for pair in "$DBNAME:temporal" "$VISIBILITY_DBNAME:visibility"; do
    db=${pair%%:*}
    dir=$SCHEMA/${pair#*:}/versioned
    echo "temporal-schema: database $db, schema $dir"
    sql --db "$db" create
    sql --db "$db" setup-schema -v 0.0
    sql --db "$db" update-schema -d "$dir"
done
echo "temporal-schema: done"

"""The dossier's schema, applied by the worker at start (idempotent, ordered migrations)."""

from __future__ import annotations

import asyncpg

from complaints.products import Catalogue

MIGRATIONS: tuple[str, ...] = (
    # 1: the dossier
    """
    CREATE TABLE complaints (
        complaint_id              text PRIMARY KEY,
        channel                   text NOT NULL,
        route                     text NOT NULL,
        role                      text NOT NULL,
        product                   text NOT NULL,
        submitted_on              date NOT NULL,
        received_at               timestamptz NOT NULL,
        formal_received_at        timestamptz,
        phase                     text NOT NULL,
        outcome                   text,
        calendar                  text,
        acknowledge_by            timestamptz,
        acknowledged_at           timestamptz,
        resolve_by                timestamptz,
        extensions                integer NOT NULL DEFAULT 0,
        decided_at                timestamptz,
        decided_within_term       boolean,
        mediated                  boolean NOT NULL DEFAULT false,
        verdict_at                timestamptz,
        consequences_by           timestamptz,
        closed_at                 timestamptz,
        purge_on                  timestamptz,
        purged_at                 timestamptz,
        state_version             integer NOT NULL DEFAULT -1,
        updated_at                timestamptz NOT NULL DEFAULT now(),
        -- personal data: erased when the retention year ends
        complainant_name          text,
        complainant_organisation  text,
        complainant_email         text,
        complainant_phone         text,
        reference                 text,
        description               text,
        motivation                text,
        decision_motivation       text,
        mediator                  text,
        verdict_summary           text
    );
    CREATE INDEX complaints_received_at ON complaints (received_at);
    CREATE INDEX complaints_product ON complaints (product);

    CREATE TABLE letters (
        complaint_id  text NOT NULL REFERENCES complaints,
        kind          text NOT NULL,
        sequence      integer NOT NULL,
        message_id    text NOT NULL,
        status        text NOT NULL CHECK (status IN ('sending', 'sent', 'failed')),
        recipient     text,
        subject       text,
        body          text,
        error         text,
        created_at    timestamptz NOT NULL DEFAULT now(),
        sent_at       timestamptz,
        PRIMARY KEY (complaint_id, kind, sequence)
    );

    CREATE TABLE alerts (
        complaint_id  text NOT NULL REFERENCES complaints,
        kind          text NOT NULL,
        sequence      integer NOT NULL,
        raised_at     timestamptz,
        deadline      timestamptz,
        message_id    text,
        sent_at       timestamptz,
        PRIMARY KEY (complaint_id, kind, sequence)
    );

    CREATE TABLE complaint_events (
        complaint_id  text NOT NULL REFERENCES complaints,
        sequence      integer NOT NULL,
        at            timestamptz NOT NULL,
        action        text NOT NULL,
        actor         text NOT NULL,
        note          text,
        PRIMARY KEY (complaint_id, sequence)
    );

    CREATE TABLE measures (
        complaint_id  text NOT NULL REFERENCES complaints,
        sequence      integer NOT NULL,
        recorded_at   timestamptz NOT NULL,
        actor         text NOT NULL,
        product       text NOT NULL,
        measure       text NOT NULL,
        PRIMARY KEY (complaint_id, sequence)
    );
    """,
    # 2: the erasure record: what was erased and when, without any personal data
    """
    CREATE TABLE erasures (
        complaint_id    text PRIMARY KEY REFERENCES complaints,
        erased_at       timestamptz NOT NULL,
        fields          text[] NOT NULL,
        letters_erased  integer NOT NULL CHECK (letters_erased >= 0),
        notes_erased    integer NOT NULL CHECK (notes_erased >= 0),
        reason          text NOT NULL
    );
    """,
    # 3: the yearly analysis: every run's report, kept (nothing replaced), and mailed once;
    # the measures' before/after counts are index range scans on (product, received_at)
    """
    CREATE TABLE annual_reports (
        id               bigserial PRIMARY KEY,
        year             integer NOT NULL,
        run_at           timestamptz NOT NULL,
        report           jsonb NOT NULL,
        monthly          jsonb NOT NULL,
        requested_by     text,
        workflow_id      text NOT NULL,
        workflow_run_id  text NOT NULL UNIQUE,
        message_id       text,
        sent_at          timestamptz,
        created_at       timestamptz NOT NULL DEFAULT now()
    );
    CREATE INDEX annual_reports_year ON annual_reports (year, run_at);
    CREATE INDEX complaints_product_received_at ON complaints (product, received_at);
    CREATE INDEX measures_recorded_at ON measures (recorded_at);
    """,
    # 4: the info@ mailbox: every mail about a complaint, its attachments (a complaint that came by
    # mail may lack its product until it is filled in), and the mailbox's own alerts
    """
    ALTER TABLE complaints ALTER COLUMN product DROP NOT NULL;

    CREATE TABLE mails (
        mail_key      text PRIMARY KEY,        -- Message-ID, or sha256: of the bytes
        ref           text NOT NULL,           -- the key's hash prefix, as workflow history names it
        complaint_id  text,                    -- none: machine mail about nothing of ours, quarantined
        sequence      integer,                 -- the mail's number on its complaint (admin.py message ID N)
        kind          text NOT NULL CHECK (kind IN ('complaint', 'reply', 'auto-reply', 'bounce', 'ignored',
                                                    'quarantined')),
        received_at   timestamptz,             -- the mailbox's INTERNALDATE
        size          integer NOT NULL,
        sha256        text,
        folder        text NOT NULL,
        uidvalidity   bigint NOT NULL,
        uid           bigint NOT NULL,
        reason        text,                    -- why ignored or quarantined, without content
        stored_at     timestamptz NOT NULL DEFAULT now(),
        processed_at  timestamptz,
        -- personal data: erased with the complaint's when its retention year ends
        message_id    text,
        from_address  text,
        from_name     text,
        subject       text,
        raw           bytea,
        UNIQUE (complaint_id, sequence)
    );
    CREATE INDEX mails_folder_uid ON mails (folder, uidvalidity, uid);

    CREATE TABLE attachments (
        complaint_id  text NOT NULL,
        number        integer NOT NULL,        -- admin.py attachment ID N
        mail_key      text REFERENCES mails,   -- none: attached by staff (admin.py register --attach)
        content_type  text NOT NULL,
        size          integer NOT NULL,
        sha256        text NOT NULL,
        added_at      timestamptz NOT NULL DEFAULT now(),
        -- personal data
        filename      text,
        data          bytea,
        PRIMARY KEY (complaint_id, number)
    );

    CREATE TABLE mailbox_alerts (
        alert_key   text PRIMARY KEY,
        kind        text NOT NULL,
        folder      text NOT NULL,
        uidvalidity bigint NOT NULL,
        uid         bigint NOT NULL,
        reason      text NOT NULL,
        raised_at   timestamptz NOT NULL DEFAULT now(),
        message_id  text,
        sent_at     timestamptz
    );

    ALTER TABLE erasures ADD COLUMN mails_erased integer NOT NULL DEFAULT 0;
    ALTER TABLE erasures ADD COLUMN attachments_erased integer NOT NULL DEFAULT 0;
    """,
    # 5: sending without holding a connection: an attempt's lease on a message's row, and the attempts
    # whose outcome SMTP could not tell (activities/outbox.py); a letter may wait for staff ('uncertain')
    """
    ALTER TABLE letters DROP CONSTRAINT letters_status_check;
    ALTER TABLE letters ADD CONSTRAINT letters_status_check
        CHECK (status IN ('sending', 'sent', 'failed', 'uncertain'));
    ALTER TABLE letters ADD COLUMN unknown_outcomes integer NOT NULL DEFAULT 0,
        ADD COLUMN claimed_until timestamptz, ADD COLUMN claimed_by text;
    ALTER TABLE alerts ADD COLUMN unknown_outcomes integer NOT NULL DEFAULT 0,
        ADD COLUMN claimed_until timestamptz, ADD COLUMN claimed_by text;
    ALTER TABLE mailbox_alerts ADD COLUMN unknown_outcomes integer NOT NULL DEFAULT 0,
        ADD COLUMN claimed_until timestamptz, ADD COLUMN claimed_by text;
    ALTER TABLE annual_reports ADD COLUMN unknown_outcomes integer NOT NULL DEFAULT 0,
        ADD COLUMN claimed_until timestamptz, ADD COLUMN claimed_by text;
    """,
    # 6: the daily retention sweep: each run, what it had to erase (complaint ids and why), mailed once
    """
    CREATE TABLE sweep_runs (
        id                bigserial PRIMARY KEY,
        as_of             timestamptz NOT NULL,
        workflow_run_id   text NOT NULL UNIQUE,
        erased            jsonb NOT NULL,
        left_to_workflows integer NOT NULL,
        message_id        text,
        sent_at           timestamptz,
        unknown_outcomes  integer NOT NULL DEFAULT 0,
        claimed_until     timestamptz,
        claimed_by        text
    );
    CREATE INDEX complaints_retention ON complaints (purge_on) WHERE purged_at IS NULL;
    """,
    # 7: which complaint of an id (its workflow's first run id): an id used again after an erased complaint's
    # history is gone gets rows of its own; the earlier complaint's rows are set aside as <id>~<n>
    """
    ALTER TABLE complaints ADD COLUMN instance text;
    ALTER TABLE letters DROP CONSTRAINT letters_complaint_id_fkey,
        ADD CONSTRAINT letters_complaint_id_fkey FOREIGN KEY (complaint_id) REFERENCES complaints ON UPDATE CASCADE;
    ALTER TABLE alerts DROP CONSTRAINT alerts_complaint_id_fkey,
        ADD CONSTRAINT alerts_complaint_id_fkey FOREIGN KEY (complaint_id) REFERENCES complaints ON UPDATE CASCADE;
    ALTER TABLE complaint_events DROP CONSTRAINT complaint_events_complaint_id_fkey,
        ADD CONSTRAINT complaint_events_complaint_id_fkey FOREIGN KEY (complaint_id) REFERENCES complaints
            ON UPDATE CASCADE;
    ALTER TABLE measures DROP CONSTRAINT measures_complaint_id_fkey,
        ADD CONSTRAINT measures_complaint_id_fkey FOREIGN KEY (complaint_id) REFERENCES complaints ON UPDATE CASCADE;
    ALTER TABLE erasures DROP CONSTRAINT erasures_complaint_id_fkey,
        ADD CONSTRAINT erasures_complaint_id_fkey FOREIGN KEY (complaint_id) REFERENCES complaints ON UPDATE CASCADE;
    """,
    # 8: a letter's envelope (the recipient's name, its threading headers) kept with its row, so that a
    # closed complaint's retention run can send it from the dossier (personal data: erased with the body)
    """
    ALTER TABLE letters ADD COLUMN envelope jsonb;
    """,
    # 9: products by catalogue code (complaints/products.py): the complainant's words kept apart (personal
    # data, erased); rows from before the catalogue hold the words in product until they are matched
    # (match_products, by the worker at start and by the erasure)
    """
    ALTER TABLE complaints ADD COLUMN product_text text,
        ADD COLUMN product_matched boolean NOT NULL DEFAULT false;
    ALTER TABLE measures ADD COLUMN product_matched boolean NOT NULL DEFAULT false;
    CREATE INDEX complaints_product_unmatched ON complaints (product) WHERE NOT product_matched;
    """,
    # 10: who acted, verified: the key that signed each staff action (complaints/staff.py) and when it was
    # signed, so that the audit trail names the key beside the register's name of its holder
    """
    ALTER TABLE complaint_events ADD COLUMN key_id text, ADD COLUMN signed_at timestamptz;
    """,
)

async def match_products(conn: asyncpg.Connection, catalogue: Catalogue, complaint_id: str | None = None) -> int:
    """Give every product from before the catalogue its code (one complaint's, or all); returns how many
    complaints got one.

    Such a row holds the complainant's words in ``product``: they move to ``product_text`` (personal
    data, so only while the dossier is not erased) and ``product`` becomes the catalogue's code, in
    the complaint and in its measures.
    """
    # $1: the complaint, or NULL for all of them.
    which = "($1::text IS NULL OR complaint_id = $1)"
    texts = {r["product"] for table in ("complaints", "measures") for r in await conn.fetch(
        f"SELECT DISTINCT product FROM {table} WHERE NOT product_matched AND product IS NOT NULL AND {which}",
        complaint_id)}
    matched = 0
    for text in sorted(texts):
        code = catalogue.match(text)
        status = await conn.execute(
            "UPDATE complaints SET product = $3, product_matched = true,"
            f" product_text = CASE WHEN purged_at IS NULL THEN $2 END WHERE NOT product_matched AND product = $2"
            f" AND {which}", complaint_id, text, code)
        matched += int(status.split()[-1])
        await conn.execute("UPDATE measures SET product = $3, product_matched = true"
                           f" WHERE NOT product_matched AND product = $2 AND {which}", complaint_id, text, code)
    return matched


_LOCK_KEY = 0x4C55_434F  # "LUCO": one migrator at a time across workers


async def apply_migrations(conn: asyncpg.Connection) -> int:
    """Apply the migrations this database lacks, and let the reading role (``READING_ROLE``) read every
    table; returns how many migrations were applied."""
    async with conn.transaction():
        await conn.execute("SELECT pg_advisory_xact_lock($1)", _LOCK_KEY)
        await conn.execute(
            "CREATE TABLE IF NOT EXISTS schema_migrations ("
            " version integer PRIMARY KEY, applied_at timestamptz NOT NULL DEFAULT now())"
        )
        current = await conn.fetchval("SELECT coalesce(max(version), 0) FROM schema_migrations")
        applied = 0
        for version, sql in enumerate(MIGRATIONS, start=1):
            if version <= current:
                continue
            await conn.execute(sql)
            await conn.execute("INSERT INTO schema_migrations (version) VALUES ($1)", version)
            applied += 1
        await conn.execute(_GRANT_READING)
        return applied


#: The role staff programs read the dossier with (``AUDIT_DATABASE_URL``): it may read every table and
#: write none, so a staff machine cannot rewrite the audit trail. The deployment creates it
#: (deploy/postgres/init); the worker grants it what it may read at every start, so that tables of
#: later migrations are readable too.
READING_ROLE = "complaints_audit"
_GRANT_READING = f"""
DO $$
BEGIN
    IF EXISTS (SELECT 1 FROM pg_roles WHERE rolname = '{READING_ROLE}') THEN
        GRANT USAGE ON SCHEMA public TO {READING_ROLE};
        GRANT SELECT ON ALL TABLES IN SCHEMA public TO {READING_ROLE};
        ALTER DEFAULT PRIVILEGES IN SCHEMA public GRANT SELECT ON TABLES TO {READING_ROLE};
    END IF;
END $$;
"""

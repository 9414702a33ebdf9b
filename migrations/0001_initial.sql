-- tenantwatch schema, first version.
--
-- Migrations are append-only: a change is a new file, never an edit here (sqlx checks the
-- checksum of every applied migration and refuses to start if one changed).
--
-- Conventions:
-- * Timestamps are INTEGER milliseconds since the Unix epoch, UTC (tw_core::Timestamp).
-- * Status and reason are TEXT in their one spelling (Status::as_str, Reason::as_str), so the
--   file is readable with the sqlite3 shell and a new reason needs no migration. They carry no
--   CHECK constraint for the same reason; the store rejects unknown values when reading.
-- * Tables are STRICT, so a value of the wrong type is an error instead of a silent coercion.
-- * check_state.id is the one key of a (tenant, check, target). Observations refer to it rather
--   than repeating three strings in every row; later tables (alert_state, outbox, deliveries)
--   are meant to refer to it the same way.

-- Small facts about the database itself, and the row the readiness probe writes.
CREATE TABLE meta (
    key   TEXT PRIMARY KEY NOT NULL,
    value TEXT NOT NULL
) STRICT, WITHOUT ROWID;

-- The latest verdict per (tenant, check, target): one row per key, updated on every run.
CREATE TABLE check_state (
    id             INTEGER PRIMARY KEY,
    tenant         TEXT    NOT NULL,
    check_kind     TEXT    NOT NULL,
    target         TEXT    NOT NULL,
    status         TEXT    NOT NULL,
    reason         TEXT    NOT NULL,
    -- The summary of the latest run (not of the run that changed the state).
    summary        TEXT    NOT NULL,
    -- When status or reason last changed.
    since          INTEGER NOT NULL,
    last_run       INTEGER NOT NULL,
    -- Runs in a row with this status and reason, the latest included.
    consecutive    INTEGER NOT NULL CHECK (consecutive >= 1),
    -- started_at of the latest observation written to `observations`; drives downsampling.
    last_stored_at INTEGER NOT NULL,
    -- The observation that started the current state. The foreign key makes the database
    -- itself refuse to prune the evidence of a current state. NULL only inside the transaction
    -- that first sees the key.
    change_id      INTEGER REFERENCES observations (id),
    UNIQUE (tenant, check_kind, target)
) STRICT;

-- Without it every deleted observation would scan check_state to enforce the foreign key.
CREATE INDEX check_state_change_id ON check_state (change_id);

-- Every stored verdict with its evidence. AUTOINCREMENT because ids are shown in the API and
-- must never be reused after a prune deletes the newest rows.
CREATE TABLE observations (
    id               INTEGER PRIMARY KEY AUTOINCREMENT,
    check_id         INTEGER NOT NULL REFERENCES check_state (id),
    scheduled_for    INTEGER NOT NULL,
    started_at       INTEGER NOT NULL,
    -- Microseconds: loopback and cached lookups finish well under a millisecond.
    elapsed_us       INTEGER NOT NULL CHECK (elapsed_us >= 0),
    status           TEXT    NOT NULL,
    reason           TEXT    NOT NULL,
    summary          TEXT    NOT NULL,
    -- 1 when this observation is the first of its key or changed status or reason.
    state_change     INTEGER NOT NULL CHECK (state_change IN (0, 1)),
    -- tw_core::EVIDENCE_VERSION at the time of writing, so old rows can be read after the
    -- evidence shape changes.
    evidence_version INTEGER NOT NULL,
    evidence         TEXT    NOT NULL
) STRICT;

-- History of one key, newest first.
CREATE INDEX observations_check_started ON observations (check_id, started_at);
-- The unfiltered history view and retention, both ordered by time across keys.
CREATE INDEX observations_started ON observations (started_at);

-- The last DNS record set seen per (tenant, domain), which drift is measured against.
CREATE TABLE dns_snapshots (
    tenant     TEXT    NOT NULL,
    domain     TEXT    NOT NULL,
    -- JSON object: record label -> sorted list of values (DnsEvidence::records).
    records    TEXT    NOT NULL,
    seen_at    INTEGER NOT NULL,
    -- When `records` last differed from the set before it.
    changed_at INTEGER NOT NULL,
    PRIMARY KEY (tenant, domain)
) STRICT;

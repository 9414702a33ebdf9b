-- Alerting decided at run time: silences and acknowledgements set from the CLI or the API,
-- escalations sent, and the outbox columns that grouping and fallback between receivers need.
--
-- The CLI and the API write silences and acks from other processes; the daemon's recorder
-- reads them back every few seconds. Nothing here is ever deleted by the daemon except
-- through retention of finished outbox rows.

-- A silence holds back alert messages matching its filters between starts_at and ends_at,
-- like a [[silences]] window in the config. NULL filters match anything. Removing one keeps
-- the row (who removed it and when), so `silence list --all` can answer "who silenced that?".
CREATE TABLE silences (
    id         INTEGER PRIMARY KEY,
    tenant     TEXT,
    check_kind TEXT,
    target     TEXT,
    starts_at  INTEGER NOT NULL,
    ends_at    INTEGER NOT NULL CHECK (ends_at > starts_at),
    reason     TEXT    NOT NULL,
    created_by TEXT    NOT NULL,
    created_at INTEGER NOT NULL,
    removed_at INTEGER,
    removed_by TEXT
) STRICT;

-- The recorder's refresh: silences not removed and not yet ended.
CREATE INDEX silences_active ON silences (ends_at) WHERE removed_at IS NULL;

-- An acknowledgement belongs to one firing episode of one alert key: it stops that
-- episode's repeats and its escalation, and the next episode pages again.
CREATE TABLE acks (
    id         INTEGER PRIMARY KEY,
    tenant     TEXT    NOT NULL,
    check_kind TEXT    NOT NULL,
    target     TEXT    NOT NULL,
    episode    INTEGER NOT NULL CHECK (episode > 0),
    acked_by   TEXT    NOT NULL,
    acked_at   INTEGER NOT NULL,
    comment    TEXT,
    UNIQUE (tenant, check_kind, target, episode)
) STRICT;

-- Escalations sent: at most one per episode (the primary key), and the receivers it went to,
-- so the episode's resolution reaches them too, across restarts.
CREATE TABLE escalations (
    tenant       TEXT    NOT NULL,
    check_kind   TEXT    NOT NULL,
    target       TEXT    NOT NULL,
    episode      INTEGER NOT NULL,
    escalated_at INTEGER NOT NULL,
    -- Receiver names, comma-separated (names are letters, digits, '-', '_' and '.').
    receivers    TEXT    NOT NULL,
    PRIMARY KEY (tenant, check_kind, target, episode)
) STRICT, WITHOUT ROWID;

-- The outbox and its delivery log are rebuilt because SQLite cannot change a CHECK
-- constraint in place: a row handed on to the next receiver of its route is neither sent,
-- failed nor expired, so both gain the state / outcome 'fallback'. New columns:
--   group_key         rows of one receiver with the same key go out as one message;
--   fallback_to       the receivers still behind this one in its route, in order
--                     (comma-separated), NULL when there is nobody to fall back to;
--   fallback_attempts failed attempts after which the row is handed on;
--   fallback_after_ms time since the first attempt after which it is handed on;
--   fallback_from     the outbox row this one was handed on from;
--   first_attempt_at  when this row was first attempted.
-- Ids are copied, so the AUTOINCREMENT sequence and every reference stay as they were. The
-- order matters with foreign keys on: the new delivery log refers to the new outbox, the old
-- tables are dropped child first, and the renames carry the reference along.
CREATE TABLE outbox_v2 (
    id                INTEGER PRIMARY KEY AUTOINCREMENT,
    dedup_key         TEXT    NOT NULL UNIQUE,
    receiver          TEXT    NOT NULL,
    message           TEXT    NOT NULL,
    created_at        INTEGER NOT NULL,
    next_attempt_at   INTEGER NOT NULL,
    expires_at        INTEGER NOT NULL,
    attempts          INTEGER NOT NULL DEFAULT 0 CHECK (attempts >= 0),
    -- pending: to be sent; sent: delivered; failed: refused for good (4xx); expired: not
    -- delivered before expires_at; fallback: handed on to the next receiver of its route.
    state             TEXT    NOT NULL CHECK (state IN ('pending', 'sent', 'failed', 'expired', 'fallback')),
    last_error        TEXT,
    finished_at       INTEGER,
    group_key         TEXT,
    fallback_to       TEXT,
    fallback_attempts INTEGER CHECK (fallback_attempts IS NULL OR fallback_attempts > 0),
    fallback_after_ms INTEGER CHECK (fallback_after_ms IS NULL OR fallback_after_ms >= 0),
    fallback_from     INTEGER,
    first_attempt_at  INTEGER
) STRICT;

INSERT INTO outbox_v2 (id, dedup_key, receiver, message, created_at, next_attempt_at,
                       expires_at, attempts, state, last_error, finished_at)
SELECT id, dedup_key, receiver, message, created_at, next_attempt_at, expires_at, attempts,
       state, last_error, finished_at
FROM outbox;
-- Keep the id sequence where it was, past rows already pruned, so an id is never reused.
DELETE FROM sqlite_sequence WHERE name = 'outbox_v2';
INSERT INTO sqlite_sequence (name, seq) SELECT 'outbox_v2', seq FROM sqlite_sequence WHERE name = 'outbox';

CREATE TABLE deliveries_v2 (
    id           INTEGER PRIMARY KEY,
    outbox_id    INTEGER NOT NULL REFERENCES outbox_v2 (id),
    attempted_at INTEGER NOT NULL,
    outcome      TEXT    NOT NULL CHECK (outcome IN ('sent', 'transient', 'permanent', 'expired', 'fallback')),
    error        TEXT,
    duration_us  INTEGER NOT NULL CHECK (duration_us >= 0)
) STRICT;

INSERT INTO deliveries_v2 (id, outbox_id, attempted_at, outcome, error, duration_us)
SELECT id, outbox_id, attempted_at, outcome, error, duration_us FROM deliveries;

DROP TABLE deliveries;
DROP TABLE outbox;
ALTER TABLE outbox_v2 RENAME TO outbox;
ALTER TABLE deliveries_v2 RENAME TO deliveries;

CREATE INDEX outbox_pending ON outbox (state, receiver, id);
-- The dispatcher's look-up of a group's other members.
CREATE INDEX outbox_group ON outbox (receiver, group_key) WHERE group_key IS NOT NULL;
CREATE INDEX deliveries_outbox ON deliveries (outbox_id);

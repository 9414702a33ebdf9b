-- Alerting: the evaluator's state per check, the notification outbox and its delivery log.
--
-- The recorder writes alert_state and new outbox rows in the same transaction as the
-- observations that caused them, so an alert is durable before anything is sent, and a
-- crash can neither lose nor duplicate it (outbox.dedup_key is unique).

-- tw_alert::AlertState as JSON, one row per check_state row that has ever been evaluated.
CREATE TABLE alert_state (
    check_id   INTEGER PRIMARY KEY NOT NULL REFERENCES check_state (id),
    state      TEXT    NOT NULL,
    updated_at INTEGER NOT NULL
) STRICT;

-- One row per (alert event, receiver). The message is the rendered notification as JSON;
-- it never contains a credential (those live in the receiver's config).
CREATE TABLE outbox (
    id              INTEGER PRIMARY KEY AUTOINCREMENT,
    -- The event's dedup key and the receiver: enqueueing the same event twice is a no-op.
    dedup_key       TEXT    NOT NULL UNIQUE,
    receiver        TEXT    NOT NULL,
    message         TEXT    NOT NULL,
    created_at      INTEGER NOT NULL,
    next_attempt_at INTEGER NOT NULL,
    expires_at      INTEGER NOT NULL,
    attempts        INTEGER NOT NULL DEFAULT 0 CHECK (attempts >= 0),
    -- pending: to be sent; sent: delivered; failed: refused for good (4xx); expired: not
    -- delivered before expires_at.
    state           TEXT    NOT NULL CHECK (state IN ('pending', 'sent', 'failed', 'expired')),
    last_error      TEXT,
    finished_at     INTEGER
) STRICT;

-- The dispatcher's query: the oldest pending row of each receiver.
CREATE INDEX outbox_pending ON outbox (state, receiver, id);

-- Every delivery attempt and its result.
CREATE TABLE deliveries (
    id           INTEGER PRIMARY KEY,
    outbox_id    INTEGER NOT NULL REFERENCES outbox (id),
    attempted_at INTEGER NOT NULL,
    outcome      TEXT    NOT NULL CHECK (outcome IN ('sent', 'transient', 'permanent', 'expired')),
    error        TEXT,
    duration_us  INTEGER NOT NULL CHECK (duration_us >= 0)
) STRICT;

CREATE INDEX deliveries_outbox ON deliveries (outbox_id);

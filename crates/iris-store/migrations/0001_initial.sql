-- iris store, schema version 1.
--
-- Portable subset on purpose: the PostgreSQL backend will carry its own copy of this
-- file with native types (BIGINT, BOOLEAN), and the column names, meanings and indexes
-- must stay the same in both.
--
-- Conventions:
--   * times are unix milliseconds (INTEGER), never local time;
--   * token/byte counters are non-negative INTEGERs (the store saturates at i64::MAX);
--   * booleans are INTEGER 0/1;
--   * tag lists are comma-joined text, '' for no tags (tags never contain ',').

-- One row per proxied request: who asked, for what, and what it cost.
-- Append-only; `id` is a UUIDv7 string, so it sorts by creation time.
CREATE TABLE usage_records (
    id                  TEXT    NOT NULL PRIMARY KEY,
    ts_ms               INTEGER NOT NULL,
    request_id          TEXT    NOT NULL,
    login               TEXT,
    display_name        TEXT,
    tags                TEXT    NOT NULL DEFAULT '',
    node                TEXT,
    node_id             TEXT,
    identity_source     TEXT    NOT NULL,
    key_id              TEXT,
    api_family          TEXT    NOT NULL,
    method              TEXT    NOT NULL,
    path                TEXT    NOT NULL,
    requested_model     TEXT,
    provider            TEXT,
    upstream_model      TEXT,
    streaming           INTEGER NOT NULL CHECK (streaming IN (0, 1)),
    status              INTEGER NOT NULL,
    error_class         TEXT,
    input_tokens        INTEGER NOT NULL DEFAULT 0,
    output_tokens       INTEGER NOT NULL DEFAULT 0,
    cache_read_tokens   INTEGER NOT NULL DEFAULT 0,
    cache_write_tokens  INTEGER NOT NULL DEFAULT 0,
    reasoning_tokens    INTEGER NOT NULL DEFAULT 0,
    usage_known         INTEGER NOT NULL CHECK (usage_known IN (0, 1)),
    ttfb_ms             INTEGER,
    duration_ms         INTEGER NOT NULL,
    bytes_in            INTEGER NOT NULL,
    bytes_out           INTEGER NOT NULL,
    user_agent          TEXT
);

CREATE INDEX usage_records_ts ON usage_records (ts_ms);
CREATE INDEX usage_records_login_ts ON usage_records (login, ts_ms);

-- iris-issued API keys. Only the SHA-256 of the secret is stored; the secret itself
-- is shown once at creation and never reaches the store.
CREATE TABLE api_keys (
    id            TEXT    NOT NULL PRIMARY KEY,
    token_hash    TEXT    NOT NULL,
    login         TEXT,
    tags          TEXT    NOT NULL DEFAULT '',
    note          TEXT,
    created_ms    INTEGER NOT NULL,
    expires_ms    INTEGER,
    revoked_ms    INTEGER,
    last_used_ms  INTEGER,
    created_by    TEXT
);

CREATE UNIQUE INDEX api_keys_token_hash ON api_keys (token_hash);

-- iris store, schema version 3: sessions, cost and tool use on each usage record, and the
-- captures of requests and responses (purged by retention; usage records are kept).
ALTER TABLE usage_records ADD COLUMN session_id TEXT;
ALTER TABLE usage_records ADD COLUMN session_kind TEXT;
ALTER TABLE usage_records ADD COLUMN cost_usd REAL;
ALTER TABLE usage_records ADD COLUMN priced_as TEXT;
-- JSON array of tool names called in the response, '[]' for none.
ALTER TABLE usage_records ADD COLUMN tool_names TEXT NOT NULL DEFAULT '[]';

CREATE INDEX usage_records_session ON usage_records (session_id, ts_ms);

CREATE TABLE captures (
    request_id  TEXT    NOT NULL PRIMARY KEY,
    ts_ms       INTEGER NOT NULL,
    -- The capture as JSON (headers redacted, bodies decompressed and capped).
    body        TEXT    NOT NULL
);

CREATE INDEX captures_ts ON captures (ts_ms);

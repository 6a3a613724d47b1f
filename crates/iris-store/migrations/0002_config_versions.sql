-- iris store, schema version 2: every saved version of the config file, with who saved it.
CREATE TABLE config_versions (
    id           INTEGER PRIMARY KEY AUTOINCREMENT,
    hash         TEXT    NOT NULL,
    saved_by     TEXT    NOT NULL,
    saved_at_ms  INTEGER NOT NULL,
    source       TEXT    NOT NULL,
    bytes        INTEGER NOT NULL,
    text         TEXT    NOT NULL
);

CREATE INDEX usage_records_model_ts ON usage_records (requested_model, ts_ms);

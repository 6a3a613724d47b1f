-- iris store, schema version 8: the index on (requested_model, ts_ms) goes. No query used it: the
-- model filter matches the requested *or* the upstream model, which SQLite can serve from an
-- index only when both columns have one, and grouping by model groups an expression of the
-- column. Every usage record paid for it on write (one B-tree insert of the six a record cost).
-- A test holds every query of the store to the indexes it uses (iris-store src/sqlite.rs).
DROP INDEX IF EXISTS usage_records_model_ts;
PRAGMA user_version = 8;

-- iris store, schema version 9: the usage log in blocks (see src/usage_log.rs). A row per
-- record cost the store a row of 36 columns and five B-trees for every request; a block holds
-- the records of one writer batch within one ten-minute bucket, encoded and compressed, with a
-- row in usage_block_keys for each login and session in it (and for each record whose id does
-- not carry its time). The rows of usage_records are converted to blocks when the store opens,
-- and the table is then dropped.
CREATE TABLE usage_blocks (
    id INTEGER PRIMARY KEY,
    -- A hash of the block's records: a retried batch is not stored twice.
    batch INTEGER NOT NULL,
    ts_min INTEGER NOT NULL,
    ts_max INTEGER NOT NULL,
    records INTEGER NOT NULL,
    -- Records in the block that name tools (retention's tools purge).
    tools INTEGER NOT NULL,
    data BLOB NOT NULL
);
CREATE INDEX usage_blocks_ts_max ON usage_blocks (ts_max);
CREATE UNIQUE INDEX usage_blocks_batch ON usage_blocks (batch);
CREATE TABLE usage_block_keys (
    key TEXT NOT NULL,
    block INTEGER NOT NULL,
    PRIMARY KEY (key, block)
) WITHOUT ROWID;
PRAGMA user_version = 9;

-- iris store, schema version 5: captures in compressed blocks. A batch of captures is one
-- zstd-compressed row of capture_blocks (format: iris-store src/blocks.rs); capture_ids finds a
-- capture's block by its request id. Rows of the old captures table stay readable and are
-- purged by retention like before; new captures are written as blocks only.
CREATE TABLE capture_blocks (
    id      INTEGER PRIMARY KEY,
    -- The oldest and newest ts_ms of the captures in the block (retention).
    ts_min  INTEGER NOT NULL,
    ts_max  INTEGER NOT NULL,
    data    BLOB    NOT NULL
);

CREATE INDEX capture_blocks_ts_min ON capture_blocks (ts_min);

CREATE TABLE capture_ids (
    request_id TEXT    NOT NULL PRIMARY KEY,
    block      INTEGER NOT NULL
) WITHOUT ROWID;

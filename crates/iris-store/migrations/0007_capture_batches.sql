-- iris store, schema version 7: a capture is found through its usage record. The capture
-- writer numbers its batches; a request's usage record keeps the number of the batch its
-- capture was written with (capture_batch), and the batch's blocks carry it (batch). Reading a
-- capture looks the number up by the record's id and searches that batch's blocks (one, or a
-- few when the batch was larger than a block). A capture costs the store no row of its own
-- any more: capture_ids (one B-tree entry per capture, the largest cost of storing a small
-- capture after compression) is written no longer, and is kept to find captures written
-- before this version.
ALTER TABLE usage_records ADD COLUMN capture_batch INTEGER;
ALTER TABLE capture_blocks ADD COLUMN batch INTEGER;
CREATE INDEX capture_blocks_batch ON capture_blocks (batch) WHERE batch IS NOT NULL;
PRAGMA user_version = 7;

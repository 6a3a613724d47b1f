-- iris store, schema version 6: capture documents are stored compactly. `body` of a capture
-- written from this version on (in capture_blocks) is the capture's fields length-prefixed
-- (iris-capture src/stored.rs), no longer its JSON; iris writes the JSON when a capture is read.
-- No table changes. The version exists so that an older iris, which would serve such a body as
-- if it were JSON, refuses the database (its migrator does not know version 6) instead.
PRAGMA user_version = 6;

-- iris store, schema version 4: a capture's two bodies in columns of their own. Escaped into
-- the capture's JSON document they cost more to write (every quote and newline of a JSON body
-- escaped, the whole document copied twice more) than the rest of the capture. Rows written
-- before this version keep their bodies inside `body` and NULL here; rows written since have
-- `request_body`/`response_body` null in `body` and the texts (or NULL for no body) here.
ALTER TABLE captures ADD COLUMN request_body TEXT;
ALTER TABLE captures ADD COLUMN response_body TEXT;

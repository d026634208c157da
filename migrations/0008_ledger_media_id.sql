-- A stable, unguessable link per file: GET /media/<media_id> (docs/media.md). Knowing it is
-- the right to see the file, so it is random (122 bits from gen_random_uuid), never
-- derived from the row id or the app row. Existing rows get one as the column is added.
ALTER TABLE ledger
    ADD COLUMN media_id text NOT NULL DEFAULT replace(gen_random_uuid()::text, '-', '');
ALTER TABLE ledger ADD CONSTRAINT ledger_media_id_key UNIQUE (media_id);

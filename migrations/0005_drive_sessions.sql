-- A Drive upload's resumable session belongs to the Drive destination alone: it moves from
-- the ledger to drive_files, next to the file id it uploads to. The ledger keeps only what
-- every destination shares.
ALTER TABLE drive_files
    ADD COLUMN session_uri    text,
    ADD COLUMN session_offset bigint;

UPDATE drive_files d
SET session_uri = l.upload_session_uri, session_offset = l.upload_offset
FROM ledger l
WHERE l.id = d.ledger_id AND l.upload_session_uri IS NOT NULL;

ALTER TABLE ledger
    DROP COLUMN upload_session_uri,
    DROP COLUMN upload_offset;

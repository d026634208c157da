-- One row per verified copy of a file at one destination (local, drive, s3). A file may
-- be copied to more than one destination (FALBACK_DESTINATIONS); each copy is tracked on
-- its own, so a failure at one destination is retried without redoing the others, and
-- `falback verify` / `falback restore` work from here. The ledger's destination columns
-- keep the first configured destination's copy, as before.
CREATE TABLE copies (
    ledger_id    bigint NOT NULL REFERENCES ledger (id) ON DELETE CASCADE,
    destination  text NOT NULL CHECK (destination IN ('local', 'drive', 's3')),
    -- Where the destination holds it: a path under the local folder, a Drive file id,
    -- an S3 key.
    location     text NOT NULL,
    -- The link for people and the app row (a Drive webViewLink, an s3:// or file:// URL).
    url          text NOT NULL,
    size_bytes   bigint NOT NULL,
    md5          text NOT NULL,
    created_at   timestamptz NOT NULL DEFAULT now(),
    -- The last time `falback verify` found the copy whole (exists, size, checksum).
    verified_at  timestamptz,
    PRIMARY KEY (ledger_id, destination)
);

INSERT INTO copies (ledger_id, destination, location, url, size_bytes, md5, created_at)
SELECT id, destination, destination_id, coalesce(destination_url, ''), size_bytes, md5,
       coalesce(done_at, updated_at)
FROM ledger
WHERE destination IN ('local', 'drive', 's3') AND destination_id IS NOT NULL
      AND size_bytes IS NOT NULL AND md5 IS NOT NULL;

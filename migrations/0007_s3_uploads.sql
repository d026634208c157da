-- S3-compatible storage: the state that keeps one ledger row to one object and lets a
-- multipart upload resume after a crash (jobs/destinations/s3.py, docs/s3.md). The key is
-- deterministic (<prefix><kind>/<YYYY-MM>/<ledger id>-<name>); kept here is what cannot be
-- asked of S3 later.
CREATE TABLE s3_uploads (
    ledger_id   bigint PRIMARY KEY REFERENCES ledger (id) ON DELETE CASCADE,
    bucket      text NOT NULL,
    key         text NOT NULL,
    -- The multipart upload in progress and its part size (every part but the last is
    -- exactly this long): the next attempt asks S3 which parts it holds (ListParts) and
    -- sends only the rest. NULL once the upload is completed or aborted.
    upload_id   text,
    part_size   bigint,
    -- The whole file's size and MD5 as streamed, recorded just before the last bytes go
    -- out: they give the last part's length on resume, and an object found at the key
    -- later must carry the same.
    sent_size   bigint,
    sent_md5    text,
    created_at  timestamptz NOT NULL DEFAULT now(),
    updated_at  timestamptz NOT NULL DEFAULT now()
);

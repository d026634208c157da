-- Google Drive: the state that keeps one ledger row to one Drive file
-- (jobs/destinations/drive.py, docs/google-drive.md).

-- The Drive file id reserved for a ledger row (files.generateIds) before its first upload,
-- so a retried or concurrent create answers 409 instead of making a second file. sent_*
-- are what was streamed, recorded just before the last bytes go out: a copy found later
-- with the same size and MD5 is the verified one (the worker died before recording it).
CREATE TABLE drive_files (
    ledger_id   bigint PRIMARY KEY REFERENCES ledger (id) ON DELETE CASCADE,
    file_id     text NOT NULL,
    sent_size   bigint,
    sent_md5    text,
    created_at  timestamptz NOT NULL DEFAULT now(),
    updated_at  timestamptz NOT NULL DEFAULT now()
);

-- The kind/month folders, created once (under an advisory lock) and reused.
CREATE TABLE drive_folders (
    parent_id   text NOT NULL,
    name        text NOT NULL,
    folder_id   text NOT NULL,
    created_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (parent_id, name)
);

-- A destination refusing uploads for a while (Drive's 750 GB/day cap): jobs check it
-- before claiming a row and come back later without spending an attempt.
CREATE TABLE destination_pauses (
    destination   text PRIMARY KEY,
    paused_until  timestamptz NOT NULL,
    reason        text NOT NULL,
    updated_at    timestamptz NOT NULL DEFAULT now()
);

-- The ledger: one row per source file. Postgres is the source of truth; Redis only
-- carries work, and a sweep re-enqueues whatever the queue drops.
CREATE TABLE ledger (
    id                  bigserial PRIMARY KEY,
    source_url          text NOT NULL UNIQUE,
    -- upscale, regular (video) or image; decides the queue (priority).
    kind                text NOT NULL CHECK (kind IN ('upscale', 'regular', 'image')),
    -- The app row this file belongs to, when known.
    source_table        text,
    source_id           text,
    variant             text,
    fal_request_id      text,
    file_name           text,
    content_type        text,
    expected_size       bigint,
    status              text NOT NULL DEFAULT 'pending'
                        CHECK (status IN ('pending', 'queued', 'copying', 'retrying',
                                          'done', 'failed', 'gone')),
    attempts            integer NOT NULL DEFAULT 0,
    last_error          text,
    next_attempt_at     timestamptz,
    -- A claim is a lease: a worker that dies mid-copy loses it when it runs out.
    claimed_by          text,
    lease_expires_at    timestamptz,
    -- Resumable upload state (Drive): session URI and the offset the destination confirmed.
    upload_session_uri  text,
    upload_offset       bigint,
    destination         text,
    destination_id      text,
    destination_url     text,
    size_bytes          bigint,
    md5                 text,
    source_created_at   timestamptz,
    expires_at          timestamptz,
    created_at          timestamptz NOT NULL DEFAULT now(),
    updated_at          timestamptz NOT NULL DEFAULT now(),
    queued_at           timestamptz,
    done_at             timestamptz
);

-- Links to app rows (a gen_videos row has two files: the regular and the upscaled video).
-- Not unique: when an app row gets a new URL, the old file keeps its ledger row.
CREATE INDEX ledger_app_file ON ledger (source_table, source_id, variant)
    WHERE source_table IS NOT NULL;
CREATE INDEX ledger_status ON ledger (status, kind, expires_at);

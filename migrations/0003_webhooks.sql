-- Webhook intake (listener/fal_webhook.py, listener/app_webhook.py; docs/webhooks.md).

-- One row per fal request: fal delivers at least once, so request_id is the idempotency
-- key (INSERT ... ON CONFLICT DO NOTHING; the first delivery wins, repeats change nothing).
CREATE TABLE fal_deliveries (
    id                  bigserial PRIMARY KEY,
    request_id          text NOT NULL UNIQUE,
    gateway_request_id  text,
    fal_user_id         text,
    status              text NOT NULL CHECK (status IN ('OK', 'ERROR')),
    -- fal's message when status is ERROR.
    error               text,
    -- Set when status is OK but fal could not put the result in the body (payload null).
    payload_error       text,
    -- From the webhook URL's query string: the app row (table, id, variant) and the fal
    -- app (owner/app) whose queue holds the result when the body has none.
    source_table        text,
    source_id           text,
    variant             text,
    fal_app             text,
    -- Files found in the result and handed to the ledger.
    files               integer NOT NULL DEFAULT 0,
    -- False while a result still has to be fetched from fal's queue API (or cannot be:
    -- the note says why, e.g. FAL_KEY unset). `falback status` counts these.
    resolved            boolean NOT NULL,
    note                text,
    received_at         timestamptz NOT NULL DEFAULT now(),
    resolved_at         timestamptz
);
CREATE INDEX fal_deliveries_unresolved ON fal_deliveries (received_at) WHERE NOT resolved;

-- Files fal returned inline as data: URIs (sync mode). They exist nowhere else, so the
-- bytes are kept here until copied; the ledger row's source_url is 'blob:sha256:<hex>'.
-- The job deletes the blob when it records the copy as 'done'.
CREATE TABLE webhook_blobs (
    sha256        text PRIMARY KEY CHECK (sha256 ~ '^[0-9a-f]{64}$'),
    content_type  text,
    size          bigint NOT NULL,
    data          bytea NOT NULL,
    created_at    timestamptz NOT NULL DEFAULT now()
);
-- Media is already compressed; EXTERNAL skips a useless compression pass and lets
-- substring() read a slice without detoasting the whole value (jobs/blob_source.py).
ALTER TABLE webhook_blobs ALTER COLUMN data SET STORAGE EXTERNAL;

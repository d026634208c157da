-- The Google account falback acts as in the personal-account mode (GOOGLE_DRIVE_OAUTH_*,
-- docs/google-drive.md): one row, written by `falback drive-login`.
--
-- The refresh token is a Fernet token (FALBACK_TOKEN_KEY); so is the current access
-- token, which every worker shares: a worker whose token is about to expire locks the
-- row (SELECT ... FOR UPDATE), and only if nobody refreshed meanwhile asks Google for a
-- new one, so N workers make one refresh, not N. revoked_at: Google answered
-- invalid_grant (the user revoked access, or a "Testing" app's 7 days ran out); Drive
-- uploads pause until the next drive-login.
CREATE TABLE drive_oauth (
    id                 smallint PRIMARY KEY DEFAULT 1 CHECK (id = 1),
    client_id          text NOT NULL,
    account_email      text,
    scope              text NOT NULL,
    refresh_token      text NOT NULL,
    access_token       text,
    access_expires_at  timestamptz,
    refreshes          bigint NOT NULL DEFAULT 0,
    signed_in_at       timestamptz NOT NULL DEFAULT now(),
    revoked_at         timestamptz,
    revoked_reason     text,
    updated_at         timestamptz NOT NULL DEFAULT now()
);

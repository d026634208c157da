-- The NOTIFY half of the relay (listener/relay.py): a trigger function that announces an app
-- row whose media URL appeared or changed. Only the function lives here; the triggers are
-- attached by repeatable/notify_triggers.sql, because the app tables (gen_videos,
-- gen_images) may not exist yet when numbered migrations run.
--
-- The payload is a key, never the row (NOTIFY payloads must stay under 8000 bytes); the
-- relay reads the row itself. Notifications are delivered at COMMIT and are not durable,
-- which is why the relay sweeps after every (re)connect and cron sweeps periodically.
CREATE OR REPLACE FUNCTION falback_notify_media() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify('falback_media',
                      json_build_object('table', TG_TABLE_NAME, 'id', NEW.id)::text);
    RETURN NULL;
END
$$;

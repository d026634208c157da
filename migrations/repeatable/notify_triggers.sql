-- Attach falback_notify_media() (migration 0002) to the app tables that exist. Runs after
-- compat.sql on every `falback migrate` (files here run in sorted order), so the triggers
-- appear once the app tables do. Idempotent: a trigger is (re)created only when missing
-- or when its comment shows an older definition, so routine migrates take no
-- ACCESS EXCLUSIVE lock on a busy app table.
--
-- Row triggers; the WHEN clauses keep out inserts without a URL and updates that leave
-- the URLs as they were. The job's own writes (backup_* columns) are not UPDATE OF a URL
-- column, so they never notify.
DO $$
DECLARE
    version constant text := 'falback notify v1';
    spec record;
BEGIN
    FOR spec IN
        SELECT * FROM (VALUES
            ('gen_videos', 'falback_notify_insert',
             'AFTER INSERT',
             'NEW.video_url IS NOT NULL OR NEW.upscale_video_url IS NOT NULL'),
            ('gen_videos', 'falback_notify_update',
             'AFTER UPDATE OF video_url, upscale_video_url',
             '(NEW.video_url IS NOT NULL AND NEW.video_url IS DISTINCT FROM OLD.video_url)'
             ' OR (NEW.upscale_video_url IS NOT NULL'
             ' AND NEW.upscale_video_url IS DISTINCT FROM OLD.upscale_video_url)'),
            ('gen_images', 'falback_notify_insert',
             'AFTER INSERT',
             'NEW.image_url IS NOT NULL'),
            ('gen_images', 'falback_notify_update',
             'AFTER UPDATE OF image_url',
             'NEW.image_url IS NOT NULL AND NEW.image_url IS DISTINCT FROM OLD.image_url')
        ) AS s(tbl, name, timing, condition)
    LOOP
        CONTINUE WHEN to_regclass('public.' || spec.tbl) IS NULL;
        CONTINUE WHEN EXISTS (
            SELECT 1 FROM pg_trigger t
            WHERE t.tgrelid = ('public.' || spec.tbl)::regclass AND t.tgname = spec.name
              AND obj_description(t.oid, 'pg_trigger') = version);
        EXECUTE format('DROP TRIGGER IF EXISTS %I ON public.%I', spec.name, spec.tbl);
        EXECUTE format('CREATE TRIGGER %I %s ON public.%I FOR EACH ROW WHEN (%s)'
                       ' EXECUTE FUNCTION falback_notify_media()',
                       spec.name, spec.timing, spec.tbl, spec.condition);
        EXECUTE format('COMMENT ON TRIGGER %I ON public.%I IS %L', spec.name, spec.tbl, version);
    END LOOP;
END
$$;

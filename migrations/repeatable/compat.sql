-- Compatibility with the app's own tables (the user's planning note): backup columns on
-- gen_videos and gen_images (backup_media_url: the row's main file through GET /media/<id>,
-- docs/media.md), the falback_app_files view (every file the app tables hold,
-- one row per URL column), falback_app_row_files(table, id) (the same for one app row,
-- through the table's primary key) and the backup_status_summary view. Re-applied on every
-- `falback migrate`, so it catches up when the app tables appear after the ledger. Every
-- statement is idempotent and skips a table that does not exist.
DO $$
DECLARE
    t text;
    parts text[] := ARRAY[]::text[];
    branches text := '';
    id_type text;
BEGIN
    FOREACH t IN ARRAY ARRAY['gen_videos', 'gen_images'] LOOP
        IF to_regclass('public.' || t) IS NOT NULL THEN
            EXECUTE format(
                'ALTER TABLE public.%I
                    ADD COLUMN IF NOT EXISTS backup_status text,
                    ADD COLUMN IF NOT EXISTS backup_drive_url text,
                    ADD COLUMN IF NOT EXISTS backup_storage_url text,
                    ADD COLUMN IF NOT EXISTS backed_up_at timestamptz,
                    ADD COLUMN IF NOT EXISTS backup_error text,
                    ADD COLUMN IF NOT EXISTS backup_media_url text', t);
        END IF;
    END LOOP;

    -- Each table's files as SELECTs; `%s` is where the one-row filter goes.
    IF to_regclass('public.gen_videos') IS NOT NULL THEN
        id_type := format_type((SELECT atttypid FROM pg_attribute
                                WHERE attrelid = 'public.gen_videos'::regclass AND attname = 'id'), NULL);
        t := $q$SELECT 'gen_videos'::text AS source_table, id::text AS source_id,
                      'upscale'::text AS variant, 'upscale'::text AS kind,
                      upscale_video_url::text AS url, upscale_file_size::bigint AS size,
                      created_at::timestamptz AS created_at
               FROM public.gen_videos WHERE upscale_video_url IS NOT NULL %s
               UNION ALL
               SELECT 'gen_videos'::text, id::text, 'regular'::text, 'regular'::text,
                      video_url::text, file_size::bigint, created_at::timestamptz
               FROM public.gen_videos WHERE video_url IS NOT NULL %s$q$;
        parts := array_append(parts, format(t, '', ''));
        branches := branches || format(
            'IF p_table = %L THEN RETURN QUERY %s; END IF; ', 'gen_videos',
            format(t, 'AND id = p_id::' || id_type, 'AND id = p_id::' || id_type));
    END IF;
    IF to_regclass('public.gen_images') IS NOT NULL THEN
        id_type := format_type((SELECT atttypid FROM pg_attribute
                                WHERE attrelid = 'public.gen_images'::regclass AND attname = 'id'), NULL);
        t := $q$SELECT 'gen_images'::text AS source_table, id::text AS source_id,
                      'image'::text AS variant, 'image'::text AS kind,
                      image_url::text AS url, file_size::bigint AS size,
                      created_at::timestamptz AS created_at
               FROM public.gen_images WHERE image_url IS NOT NULL %s$q$;
        parts := array_append(parts, format(t, ''));
        branches := branches || format(
            'IF p_table = %L THEN RETURN QUERY %s; END IF; ', 'gen_images',
            format(t, 'AND id = p_id::' || id_type));
    END IF;
    IF cardinality(parts) = 0 THEN
        RETURN;
    END IF;

    -- Every column is cast to one type, so both tables' branches match whatever the app
    -- declared (varchar URLs, timestamp without time zone); rebuilt from scratch each time.
    EXECUTE 'DROP VIEW IF EXISTS public.backup_status_summary';
    EXECUTE 'DROP FUNCTION IF EXISTS public.falback_app_row_files(text, text)';
    EXECUTE 'DROP VIEW IF EXISTS public.falback_app_files';
    EXECUTE 'CREATE VIEW public.falback_app_files AS '
        || array_to_string(parts, ' UNION ALL ');
    -- The files of one app row. Filtering the view by source_id would compare id::text and
    -- scan the whole table; this casts the argument instead, so the primary key is used.
    -- An id that is not of the column's type matches nothing.
    EXECUTE format($f$
        CREATE OR REPLACE FUNCTION public.falback_app_row_files(p_table text, p_id text)
        RETURNS SETOF public.falback_app_files LANGUAGE plpgsql STABLE AS $body$
        BEGIN
            %s
        EXCEPTION WHEN invalid_text_representation OR numeric_value_out_of_range THEN
            RETURN;
        END
        $body$
    $f$, branches);
    -- One row per file type, highest priority first. Files with no ledger row yet count
    -- as not started.
    EXECUTE $v$
        CREATE VIEW public.backup_status_summary AS
        SELECT f.kind AS file_type,
               count(*) AS total_files,
               count(*) FILTER (WHERE l.status = 'done') AS backed_up,
               count(*) FILTER (WHERE l.status IN ('pending', 'queued', 'copying', 'retrying')) AS in_progress,
               count(*) FILTER (WHERE l.id IS NULL) AS not_started,
               count(*) FILTER (WHERE l.status = 'failed') AS failed,
               count(*) FILTER (WHERE l.status = 'gone') AS gone,
               round(100.0 * count(*) FILTER (WHERE l.status = 'done') / count(*), 2)
                   AS completion_percentage,
               coalesce(sum(coalesce(l.size_bytes, f.size)), 0) AS total_bytes,
               coalesce(sum(l.size_bytes) FILTER (WHERE l.status = 'done'), 0) AS backed_up_bytes,
               pg_size_pretty(coalesce(sum(coalesce(l.size_bytes, f.size)) FILTER (
                   WHERE l.status IS DISTINCT FROM 'done' AND l.status IS DISTINCT FROM 'gone'), 0))
                   AS size_remaining,
               min(coalesce(l.expires_at, f.created_at + interval '7 days')) FILTER (
                   WHERE l.status IS DISTINCT FROM 'done' AND l.status IS DISTINCT FROM 'gone')
                   AS next_expiry
        FROM public.falback_app_files f
        LEFT JOIN public.ledger l ON l.source_url = f.url
        GROUP BY f.kind
        ORDER BY CASE f.kind WHEN 'upscale' THEN 1 WHEN 'regular' THEN 2 WHEN 'image' THEN 3 ELSE 4 END
    $v$;
END
$$;

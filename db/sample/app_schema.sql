-- A sample of the app's own tables (the user's Supabase schema, reduced to what falback
-- reads). Tests and the offline demo apply it; it is never applied to a user's database
-- by default. Run `falback migrate` after it so the compatibility columns and views appear.
CREATE TABLE IF NOT EXISTS gen_videos (
    id                bigserial PRIMARY KEY,
    generation_model  text,
    video_url         text,
    file_size         bigint,
    upscale_video_url text,
    upscale_file_size bigint,
    created_at        timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE IF NOT EXISTS gen_images (
    id                bigserial PRIMARY KEY,
    generation_model  text,
    image_url         text,
    file_size         bigint,
    created_at        timestamptz NOT NULL DEFAULT now()
);

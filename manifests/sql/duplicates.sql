-- Duplicate groups across datasets (clips.dup_group, set after every build and by
-- `portrait eval-split`): one row per kept clip that has a duplicate, grouped, largest groups
-- first. `datasets` lists every dataset the group's footage appears in.
SELECT
    dup_group,
    count(*) OVER (PARTITION BY dup_group) AS group_size,
    string_agg(DISTINCT dataset, ',' ORDER BY dataset) OVER (PARTITION BY dup_group) AS datasets,
    clip_id,
    dataset,
    video_id,
    identity,
    coalesce(split, '(none)') AS split,
    round(start_s, 2) AS start_s,
    round(end_s, 2) AS end_s,
    source_id
FROM clips
WHERE verdict = 'kept' AND dup_group IS NOT NULL
QUALIFY count(*) OVER (PARTITION BY dup_group) > 1
ORDER BY group_size DESC, dup_group, dataset, clip_id

-- Clips and sources per dataset and verdict; a source that gave no clip counts under its status (rejected/error).
WITH per_clip AS (
    SELECT dataset, verdict, source_id, 1 AS is_clip FROM clips
),
no_clip AS (
    SELECT s.dataset, s.status AS verdict, s.source_id, 0 AS is_clip
    FROM sources s
    WHERE NOT EXISTS (SELECT 1 FROM clips c WHERE c.source_id = s.source_id)
)
SELECT
    dataset,
    verdict,
    sum(is_clip)::BIGINT AS clips,
    count(DISTINCT source_id) AS sources
FROM (SELECT * FROM per_clip UNION ALL SELECT * FROM no_clip)
GROUP BY dataset, verdict
ORDER BY dataset, verdict

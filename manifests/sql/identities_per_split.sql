-- Distinct identities, kept clips and clips without identity per split and dataset (kept clips only).
SELECT
    coalesce(split, '(none)') AS split,
    dataset,
    count(DISTINCT identity) AS identities,
    count(*) AS clips_kept,
    count(*) FILTER (WHERE identity IS NULL) AS clips_without_identity
FROM clips
WHERE verdict = 'kept'
GROUP BY ALL
ORDER BY split, dataset

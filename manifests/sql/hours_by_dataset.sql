-- Hours of kept video per dataset, in total and outside the eval split (what training reads).
SELECT
    dataset,
    count(*) AS clips_kept,
    round(sum(end_s - start_s) / 3600.0, 4) AS hours_kept,
    round(coalesce(sum(end_s - start_s) FILTER (WHERE split IS DISTINCT FROM 'eval'), 0) / 3600.0, 4) AS hours_kept_training
FROM clips
WHERE verdict = 'kept' AND media_type = 'video'
GROUP BY dataset
ORDER BY dataset

-- Sources and clips per dataset and outcome, with rejection reasons counted.
SELECT
    s.dataset,
    count(DISTINCT s.source_id) AS sources,
    count(DISTINCT s.source_id) FILTER (WHERE s.status = 'kept') AS sources_kept,
    count(DISTINCT s.source_id) FILTER (WHERE s.status = 'rejected') AS sources_rejected,
    count(DISTINCT s.source_id) FILTER (WHERE s.status = 'error') AS sources_errored,
    count(c.clip_id) AS clips,
    count(c.clip_id) FILTER (WHERE c.verdict = 'kept') AS clips_kept,
    round(sum(c.end_s - c.start_s) FILTER (WHERE c.verdict = 'kept' AND c.media_type = 'video') / 3600.0, 4) AS hours_kept
FROM sources s LEFT JOIN clips c USING (source_id)
GROUP BY s.dataset
ORDER BY s.dataset

-- Why were clips and sources rejected? One row per reason.
SELECT 'clip' AS level, reason, count(*) AS n
FROM (SELECT unnest(reasons) AS reason FROM clips WHERE verdict = 'rejected')
GROUP BY reason
UNION ALL
SELECT 'source' AS level, reason, count(*) AS n
FROM (SELECT unnest(reasons) AS reason FROM sources WHERE status = 'rejected')
GROUP BY reason
ORDER BY level, n DESC, reason

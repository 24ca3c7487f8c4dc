-- Re-apply verdict thresholds to the stored clip scores, without recomputing anything.
-- Parameters ($name) default to the thresholds of the latest build (runs.config_json);
-- override any with `portrait query --named rethreshold --param max_occlusion=0.7`.
-- Must agree with manifests/verdicts.py (tests check that it reproduces the build's verdicts).
SELECT
    clip_id,
    source_id,
    dataset,
    CASE WHEN len(new_reasons) = 0 THEN 'kept' ELSE 'rejected' END AS verdict,
    new_reasons AS reasons,
    verdict AS build_verdict
FROM (
    SELECT
        *,
        list_filter([
            CASE WHEN crop_source_px < $min_crop_source_px OR face_px < $min_face_px THEN 'resolution' END,
            CASE WHEN face_frac < $min_face_frac THEN 'face_size' END,
            CASE WHEN pad_frac > $max_pad_frac THEN 'padding' END,
            CASE WHEN n_faces > $max_faces THEN 'multiple_faces' END,
            CASE WHEN face_conf < $min_face_conf THEN 'low_confidence' END,
            CASE WHEN occlusion > $max_occlusion THEN 'occlusion' END,
            CASE WHEN lighting_mean < $min_lighting_mean OR lighting_mean > $max_lighting_mean
                   OR lighting_std < $min_lighting_std OR lighting_clipped > $max_lighting_clipped
                 THEN 'lighting' END,
            CASE WHEN bg_motion > $max_bg_motion THEN 'background_motion' END,
            CASE WHEN blur < $min_blur THEN 'blur' END,
            CASE WHEN media_type = 'video' AND end_s - start_s < $min_clip_s THEN 'too_short' END
        ], lambda x: x IS NOT NULL) AS new_reasons
    FROM clips
)
ORDER BY clip_id

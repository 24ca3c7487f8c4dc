-- Re-apply verdict thresholds to the stored clip scores, without recomputing anything.
-- Parameters ($name) default to the thresholds of the latest build (runs.config_json);
-- override any with `portrait query --named rethreshold --param max_occluded_share=0.5`.
-- Must agree with manifests/verdicts.py (tests check that it reproduces the build's verdicts):
-- a face not seen well (resolution, lighting, blur) is not judged for no_face, nor, when its
-- resolution, blur or exposure (mean) fails, for occlusion (a patch brings clipped pixels);
-- blur is not reported where the face has too few source pixels (resolution says it);
-- a face seen well that is not human (or not surely a face) is rejected no_face alone.
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
        CASE WHEN NOT (r_resolution OR r_lighting OR r_blur) AND r_not_a_face THEN ['no_face']
        ELSE list_filter([
            CASE WHEN r_resolution THEN 'resolution' END,
            CASE WHEN r_lighting THEN 'lighting' END,
            CASE WHEN r_blur THEN 'blur' END,
            CASE WHEN face_frac < $min_face_frac THEN 'face_size' END,
            CASE WHEN pad_frac > $max_pad_frac OR face_cut > $max_face_cut THEN 'padding' END,
            CASE WHEN n_faces > $max_faces THEN 'multiple_faces' END,
            CASE WHEN NOT (r_resolution OR r_exposure OR r_blur) AND len(occlusion_frames) > 0
                   AND len(list_filter(occlusion_frames, lambda x: x > $max_frame_occlusion)) / len(occlusion_frames)
                       > $max_occluded_share THEN 'occlusion' END,
            CASE WHEN bg_motion > $max_bg_motion THEN 'background_motion' END,
            CASE WHEN media_type = 'video' AND end_s - start_s < $min_clip_s THEN 'too_short' END
        ], lambda x: x IS NOT NULL) END AS new_reasons
    FROM (SELECT *, r_soft AND NOT r_few_pixels AS r_blur FROM (
        SELECT
            *,
            coalesce(crop_source_px < $min_crop_source_px, false) OR coalesce(face_px < $min_face_px, false)
                OR coalesce(detail_4x < $min_detail_4x, false) AS r_resolution,
            coalesce(crop_source_px < $min_crop_source_px, false) OR coalesce(face_px < $min_face_px, false) AS r_few_pixels,
            coalesce(lighting_mean < $min_lighting_mean, false) OR coalesce(lighting_mean > $max_lighting_mean, false) AS r_exposure,
            coalesce(lighting_mean < $min_lighting_mean, false) OR coalesce(lighting_mean > $max_lighting_mean, false)
                OR coalesce(lighting_std < $min_lighting_std, false)
                OR coalesce(lighting_clipped > $max_lighting_clipped, false) AS r_lighting,
            coalesce(sharpness < $min_sharpness, false) AS r_soft,
            coalesce(face_human < $min_face_human, false) OR coalesce(face_conf < $min_face_conf, false) AS r_not_a_face
        FROM clips
    ))
)
ORDER BY clip_id

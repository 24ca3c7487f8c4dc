-- Re-apply verdict thresholds to the stored clip scores, without recomputing anything.
-- Parameters ($name) default to the thresholds of the latest build (runs.config_json);
-- override any with `portrait query --named rethreshold --param max_occluded_share=0.5`.
-- Must agree with manifests/verdicts.py (tests check that it reproduces the build's verdicts):
-- a source whose spectrum shows a 4x upscale (detail_4x * (1 - mirror_4x), the energy above a
-- 4x source's limit that is not a mirror copy, under min_detail_4x) is judged by a quarter of
-- its crop and face sides (verdicts.UPSCALE_FACTOR);
-- a face not seen well (resolution, blur, exposure mean) is judged neither for no_face nor for
-- occlusion; blur is not reported where resolution is (too few pixels, native or not);
-- a face seen well that is not surely human (face_human, face_conf, face_person) is rejected
-- no_face alone; one not seen well gets only its tier-1 reasons (and too_short);
-- the clipped share and spread of a face seen well and judged covered are the occluder's.
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
        CASE WHEN r_seen_well AND r_not_a_face THEN ['no_face']
        ELSE list_filter([
            CASE WHEN r_resolution THEN 'resolution' END,
            CASE WHEN r_exposure OR (NOT (r_seen_well AND r_occluded) AND r_spread_or_clipped) THEN 'lighting' END,
            CASE WHEN r_blur THEN 'blur' END,
            CASE WHEN NOT r_not_a_face AND face_frac < $min_face_frac THEN 'face_size' END,
            CASE WHEN NOT r_not_a_face AND (pad_frac > $max_pad_frac OR face_cut > $max_face_cut) THEN 'padding' END,
            CASE WHEN NOT r_not_a_face AND n_faces > $max_faces THEN 'multiple_faces' END,
            CASE WHEN NOT r_not_a_face AND r_seen_well AND r_occluded THEN 'occlusion' END,
            CASE WHEN NOT r_not_a_face AND bg_motion > $max_bg_motion THEN 'background_motion' END,
            CASE WHEN media_type = 'video' AND end_s - start_s < $min_clip_s THEN 'too_short' END
        ], lambda x: x IS NOT NULL) END AS new_reasons
    FROM (SELECT *, NOT (r_resolution OR r_blur OR r_exposure) AS r_seen_well FROM (
    SELECT *, r_soft AND NOT r_resolution AS r_blur FROM (
    SELECT *, r_few_pixels OR (r_upscaled AND (coalesce(crop_source_px / 4 < $min_crop_source_px, false)
                                               OR coalesce(face_px / 4 < $min_face_px, false))) AS r_resolution FROM (
        SELECT
            *,
            coalesce(crop_source_px < $min_crop_source_px, false) OR coalesce(face_px < $min_face_px, false) AS r_few_pixels,
            coalesce(detail_4x * (1 - coalesce(mirror_4x, 0)) < $min_detail_4x, false) AS r_upscaled,
            coalesce(lighting_mean < $min_lighting_mean, false) OR coalesce(lighting_mean > $max_lighting_mean, false) AS r_exposure,
            coalesce(lighting_std < $min_lighting_std, false)
                OR coalesce(lighting_clipped > $max_lighting_clipped, false) AS r_spread_or_clipped,
            coalesce(len(occlusion_frames) > 0
                     AND len(list_filter(occlusion_frames, lambda x: x > $max_frame_occlusion)) / len(occlusion_frames)
                         > $max_occluded_share, false) AS r_occluded,
            coalesce(sharpness < $min_sharpness, false) OR coalesce(detail_train < $min_detail_train, false) AS r_soft,
            coalesce(face_human < $min_face_human, false) OR coalesce(face_conf < $min_face_conf, false)
                OR coalesce(face_person < $min_face_person, false) AS r_not_a_face
        FROM clips
    ))))
)
ORDER BY clip_id

"""Issue acceptance on a real build: every kept frame carries its features; the catalog says
which backend and weights made them; intensity levels come from catalog-only bin edges."""
from __future__ import annotations

import hashlib
import json

import cv2
import numpy as np
import pytest

from manifests import tensors
from manifests.catalog import Catalog
from pipeline.finalize import intensity_levels
from pipeline.reporting.preview import preview_clip, storage_report


def test_every_kept_frame_has_its_features(feature_build):
    with Catalog(feature_build, read_only=True) as cat:
        frames = tensors.rows(cat.query("SELECT f.clip_id, f.view, f.latent, f.position_map, f.pose, c.media_type "
                                        "FROM frames f JOIN clips c USING (clip_id) WHERE c.verdict = 'kept'"))
        clips = cat.query("SELECT clip_id, media_type, n_frames, reference_frames, intensity_exp, intensity_head, "
                          "intensity_exp_level, intensity_head_level FROM clips WHERE verdict = 'kept'").to_pylist()
    assert frames and clips
    for f in frames:
        z = tensors.decode(f["latent"])
        assert z.shape == (4, 64, 64) and z.dtype == np.float16 and np.isfinite(z).all()
        pm = tensors.decode(f["position_map"])
        assert pm.shape == (3, 64, 64) and pm.dtype == np.float16
        assert 0.05 < pm[2].mean() < 0.9  # a face region, not all or nothing
        assert np.all(pm[:2][:, pm[2] == 0] == 0)  # zero outside the face
        pose = tensors.decode(f["pose"])  # image views carry pose like every other frame
        assert pose.shape == (133, 3) and pose.dtype == np.float32
        if f["view"] == 0:
            assert (pose[23:91, 2] > 0).sum() >= 60  # the face points are there
    videos = [c for c in clips if c["media_type"] == "video"]
    assert videos
    for c in videos:
        assert c["intensity_exp"] > 0 and c["intensity_head"] > 0
        assert 0 <= c["intensity_exp_level"] < 64 and 0 <= c["intensity_head_level"] < 64
        assert c["reference_frames"] and 0 <= c["reference_frames"][0] < c["n_frames"]
    images = [c for c in clips if c["media_type"] == "image"]
    views = [f for f in frames if f["view"] > 0]
    assert images and len(views) == 2 * len(images)  # K = 2 random-crop views per image


def test_the_catalog_says_which_backend_and_weights(feature_build, small_vae_dir):
    with Catalog(feature_build, read_only=True) as cat:
        run = cat.latest_run()
    models = json.loads(run["models_json"])
    assert models["latents"]["backend"] == "diffusers"
    assert models["latents"]["stored"] == "posterior_mean" and models["latents"]["scaling_factor"] == pytest.approx(
        0.18215
    )
    assert models["position_map"]["backend"] == "mesh"
    assert models["pose"]["backend"] == "mediapipe"
    assert models["identity"]["backend"] == "none" and "features.identity.model_path" in models["identity"]["reason"]
    assert not any(isinstance(m, dict) and m.get("random_weights") for m in models.values())
    # The driver records the weights without loading the VAE: their path here, their sha256 beside.
    assert models["latents"]["weights"] == str(small_vae_dir)
    sha = models["weights_sha256"]["features.latents.weights"]
    weights_file = small_vae_dir / "diffusion_pytorch_model.safetensors"
    assert sha["diffusion_pytorch_model.safetensors"] == hashlib.sha256(weights_file.read_bytes()).hexdigest()


def test_levels_are_recomputed_without_touching_the_shards(feature_build, tmp_path):
    import shutil

    out = tmp_path / "copy"
    shutil.copytree(feature_build, out)
    with Catalog(out) as cat:
        shards_before = {p: (out / p).read_bytes() for p in cat.shard_paths()}
        edges_before = cat.query("SELECT edges FROM intensity_bins WHERE kind = 'head'").to_pylist()[0]["edges"]
        # The dataset changes: another (still) clip joins, so the edges move.
        cat.con.execute("INSERT INTO clips (clip_id, source_id, dataset, media_type, clip_index, start_s, end_s, "
                        "n_frames, verdict, reasons, run_id, intensity_exp, intensity_head) VALUES "
                        "('still-0000', 'still', 'x', 'video', 0, 0, 2, 25, 'kept', [], 'r', 0.0, 0.0)")
        intensity_levels(cat, 64, "again")
        edges_after = cat.query("SELECT edges FROM intensity_bins WHERE kind = 'head'").to_pylist()[0]["edges"]
        still = cat.query(
            "SELECT intensity_exp_level, intensity_head_level FROM clips WHERE clip_id = 'still-0000'"
        ).to_pylist()[0]
        shards_after = {p: (out / p).read_bytes() for p in cat.shard_paths()}
    assert edges_after != edges_before
    assert still == {"intensity_exp_level": 0, "intensity_head_level": 0}
    assert shards_after == shards_before


def test_storage_report_and_preview(feature_build, small_vae_dir, tmp_path):
    report = {r["feature"]: r["bytes_per_frame"] for r in storage_report(feature_build)}
    for feature in ("jpeg", "latent", "position_map", "pose", "landmarks"):
        assert report[feature] > 0
    print("bytes per frame:", report)
    png = tmp_path / "preview.png"
    clip = preview_clip(feature_build, None, png, n_frames=3, vae=str(small_vae_dir))
    assert png.stat().st_size > 10_000 and clip
    sheet = cv2.imread(str(png))
    # A banner (clip id, verdict, scores) over 4 labelled rows: crop, map, pose, decoded latent.
    assert sheet.shape[0] == 44 + 4 * 192 and sheet.shape[1] == 110 + 3 * 192
    assert sheet[:44].std() > 5 and sheet[44:, :110].std() > 5  # text drawn in both

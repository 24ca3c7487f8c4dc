"""VAE latents: a small AutoencoderKL saved in the real diffusers formats, loaded offline."""
from __future__ import annotations

import hashlib
import shutil

import numpy as np
import pytest

torch = pytest.importorskip("torch")
diffusers = pytest.importorskip("diffusers")

from stages.base import WeightsMissing  # noqa: E402
from stages.latents import LatentStage  # noqa: E402
from tests.small_models import save_small_vae  # noqa: E402

torch.set_num_threads(1)



@pytest.fixture(scope="module")
def crops(media_dir) -> list[np.ndarray]:
    av = pytest.importorskip("av")
    out = []
    with av.open(str(media_dir / "videos" / "d3.mp4")) as container:
        for i, frame in enumerate(container.decode(video=0)):
            if i % 15 == 0:
                out.append(frame.to_ndarray(format="rgb24"))
            if len(out) == 3:
                break
    assert out[0].shape == (512, 512, 3)
    return out


@pytest.fixture(scope="module")
def vae_dir(tmp_path_factory):
    return save_small_vae(tmp_path_factory.mktemp("vae") / "small_vae")


def reference_latents(folder, crops) -> np.ndarray:
    """What the stage must store: posterior mean x scaling factor, computed directly."""
    vae = diffusers.AutoencoderKL.from_pretrained(str(folder), local_files_only=True).eval()
    x = torch.from_numpy(np.stack(crops)).permute(0, 3, 1, 2).float() / 127.5 - 1.0
    with torch.no_grad():
        return (vae.encode(x).latent_dist.mean * vae.config.scaling_factor).numpy()


def test_folder_route_stores_scaled_posterior_mean(vae_dir, crops):
    stage = LatentStage(backend="diffusers", weights=str(vae_dir), device="cpu", batch_size=2)
    latents = stage.encode(crops)
    assert len(latents) == 3
    assert all(z.shape == (4, 64, 64) and z.dtype == np.float16 for z in latents)
    np.testing.assert_allclose(np.stack(latents), reference_latents(vae_dir, crops), atol=2e-3, rtol=2e-3)

    info = stage.describe()
    weights_file = vae_dir / "diffusion_pytorch_model.safetensors"
    assert info["sha256"] == {str(weights_file): hashlib.sha256(weights_file.read_bytes()).hexdigest()}
    assert info["scaling_factor"] == pytest.approx(0.18215)
    assert info["stored"] == "posterior_mean" and info["random_weights"] is False


def test_batching_does_not_change_latents(vae_dir, crops):
    one = LatentStage(backend="diffusers", weights=str(vae_dir), device="cpu", batch_size=1).encode(crops)
    many = LatentStage(backend="diffusers", weights=str(vae_dir), device="cpu", batch_size=8).encode(crops)
    np.testing.assert_allclose(np.stack(one), np.stack(many), atol=2e-3)


def test_single_safetensors_file_with_local_config(vae_dir, crops, tmp_path):
    single = tmp_path / "vae-ft-mse.safetensors"
    shutil.copy(vae_dir / "diffusion_pytorch_model.safetensors", single)
    config_dir = tmp_path / "config"
    config_dir.mkdir()
    shutil.copy(vae_dir / "config.json", config_dir / "config.json")

    stage = LatentStage(backend="diffusers", weights=str(single), config_dir=str(config_dir), device="cpu")
    np.testing.assert_allclose(np.stack(stage.encode(crops[:1])), reference_latents(vae_dir, crops[:1]), atol=2e-3)
    assert list(stage.describe()["sha256"]) == [str(single)]

    with pytest.raises(WeightsMissing, match="features.latents.config_dir"):
        LatentStage(backend="diffusers", weights=str(single), device="cpu").setup()


def test_pipeline_folder_and_local_hf_cache(vae_dir, crops, tmp_path):
    # A whole SD pipeline folder: the VAE sits in vae/.
    pipeline = tmp_path / "sd15"
    shutil.copytree(vae_dir, pipeline / "vae")
    z = LatentStage(backend="diffusers", weights=str(pipeline), device="cpu").encode(crops[:1])[0]
    assert z.shape == (4, 64, 64)

    # A repo id, found only in a local Hugging Face cache laid out as the hub writes it.
    cache = tmp_path / "hf"
    repo = cache / "models--someone--tiny-vae"
    commit = "0123456789abcdef0123456789abcdef01234567"
    shutil.copytree(vae_dir, repo / "snapshots" / commit)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(commit)
    stage = LatentStage(backend="diffusers", weights="someone/tiny-vae", hf_cache_dir=str(cache), device="cpu")
    np.testing.assert_allclose(stage.encode(crops[:1])[0], z, atol=2e-3)

    with pytest.raises(WeightsMissing, match="features.latents.weights.*local Hugging Face cache"):
        LatentStage(backend="diffusers", weights="someone/absent-vae", hf_cache_dir=str(cache)).setup()


def test_missing_weights_fail_with_one_line(tmp_path):
    for weights in [str(tmp_path / "nope"), str(tmp_path / "nope.safetensors"), str(tmp_path)]:
        with pytest.raises(WeightsMissing) as err:
            LatentStage(backend="diffusers", weights=weights, device="cpu").setup()
        assert "features.latents." in str(err.value) and "\n" not in str(err.value)
    with pytest.raises(WeightsMissing, match="features.latents.weights is not set"):
        LatentStage(backend="diffusers", device="cpu").setup()


def test_backend_none_leaves_latents_empty_and_says_why(crops):
    stage = LatentStage()
    assert stage.encode(crops) == [None] * len(crops)
    info = stage.describe()
    assert info["backend"] == "none" and "features.latents.weights" in info["reason"]


def test_random_weights_only_on_request_and_recorded(vae_dir, crops):
    stage = LatentStage(backend="diffusers", config_dir=str(vae_dir), allow_random_weights=True, device="cpu")
    z = stage.encode(crops[:1])
    assert z[0].shape == (4, 64, 64)
    assert stage.describe()["random_weights"] is True
    image = stage.decode(z)[0]  # preview path: back to an RGB crop
    assert image.shape == (512, 512, 3) and image.dtype == np.uint8

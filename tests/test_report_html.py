"""`portrait report --html`: one self-contained page, rendered in a real headless Chromium.

The build: the fixture photo s1.jpg (kept) plus a darkened and a 4x-down-and-up copy of it
(rejected, so the page has contact sheets of rejected clips), every feature on, inline (no Ray).
The browser test needs a Chromium binary (Debian's `chromium`; `make test` installs it where
apt-get can): without one it is skipped, saying so.
"""
from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path

import cv2
import numpy as np
import pytest

from manifests.catalog import Catalog
from manifests.schemas import CLIP_SCORES
from pipeline.cli import main as portrait
from pipeline.evaluation.devset import dark_frame, down_up_frame

BROWSERS = ("chromium", "chromium-browser", "google-chrome", "chrome", "headless_shell")


def find_browser() -> str | None:
    return next((p for p in map(shutil.which, BROWSERS) if p), None)


@pytest.fixture(scope="module")
def report_build(media_dir, small_vae_dir, tmp_path_factory) -> Path:
    from pipeline.build import build
    from pipeline.config import load_config
    from pipeline.sources import dataset_entries, discover

    root = tmp_path_factory.mktemp("report_build")
    media = root / "media"
    media.mkdir()
    shutil.copy(media_dir / "images" / "s1.jpg", media / "s1.jpg")
    rgb = cv2.cvtColor(cv2.imread(str(media_dir / "images" / "s1.jpg")), cv2.COLOR_BGR2RGB)
    for name, img in (("s1_dark.jpg", dark_frame(rgb, 0.12)), ("s1_down4up.jpg", down_up_frame(rgb, 6))):
        cv2.imwrite(str(media / name), cv2.cvtColor(img, cv2.COLOR_RGB2BGR))
    config = load_config(None, {"features.latents.weights": str(small_vae_dir), "ray.executor": "inline"})
    out = root / "out"
    build(config, out, discover(dataset_entries(config, [str(media)], [])), progress=False)
    return out


@pytest.fixture(scope="module")
def report(report_build, tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("report")
    assert portrait(["report", "--catalog", str(report_build), "--html", str(folder)]) == 0
    return folder / "index.html"


def test_page_is_self_contained_and_complete(report, report_build):
    page = report.read_text()
    sources = re.findall(r'<img src="([^"]*)"', page)
    assert sources and all(s.startswith("data:image/") for s in sources)  # nothing outside the file
    assert not re.search(r'(href|src)="(?!data:)', page)
    with Catalog(report_build, read_only=True) as cat:
        reasons = {r for row in cat.query("SELECT reasons FROM clips WHERE verdict = 'rejected'").to_pylist()
                   for r in row["reasons"]}
        scored = [n for n, _ in CLIP_SCORES
                  if cat.query(f"SELECT count({n}) AS n FROM clips").to_pylist()[0]["n"]]
        sha = cat.query("SELECT models_json FROM runs").to_pylist()[0]["models_json"]
    assert reasons, "the degraded copies should have been rejected"
    for reason in reasons:  # a contact sheet of what each filter threw away
        assert f'alt="rejected: {reason}"' in page
    assert 'alt="kept clips"' in page
    for name in scored:  # a histogram of every stored score
        assert f'alt="histogram of {name}"' in page
    for title in ("Kept and rejected", "Scores", "Storage by feature", "Runs and models", "Discovery"):
        assert title in page
    vae = json.loads(sha)["weights_sha256"]["features.latents.weights"]
    digest = vae["diffusion_pytorch_model.safetensors"]
    assert digest[:16] in page  # model identities: the VAE weights' sha256


def test_histogram_draws_threshold_and_split(report):
    import base64

    page = report.read_text()
    uri = re.search(r'<img src="data:image/svg\+xml;base64,([^"]+)" alt="histogram of lighting_mean"', page).group(1)
    svg = base64.b64decode(uri).decode()
    assert "min 45" in svg and "max 220" in svg  # both lighting thresholds drawn
    assert "#3a9d5d" in svg and "#d9534f" in svg  # kept and rejected bars


def test_text_report_prints_discovery_counts(report_build, capsys):
    assert portrait(["report", "--catalog", str(report_build)]) == 0
    out = capsys.readouterr().out
    assert "Discovery" in out and "files_found" in out and "media" in out  # the dataset: the folder's name
    assert "bytes_per_frame" in out


def _chromium(browser: str, *args: str, profile: Path) -> subprocess.CompletedProcess:
    cmd = [browser, "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars", "--mute-audio",
           f"--user-data-dir={profile}", *args]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=180)


def test_renders_in_a_real_browser(report, tmp_path):
    browser = find_browser()
    if browser is None:
        pytest.skip("no Chromium binary on PATH (install Debian's `chromium`; `make test` does where apt-get can)")
    # Every <img> decoded: a copy of the page that writes the count into the DOM once loaded.
    probe = tmp_path / "probe.html"
    probe.write_text(report.read_text().replace("</body>", """<script>
window.addEventListener('load', () => {
  const imgs = [...document.images];
  document.body.setAttribute('data-images', imgs.length);
  document.body.setAttribute('data-loaded', imgs.filter(i => i.complete && i.naturalWidth > 0).length);
});</script></body>"""))
    dom = _chromium(
        browser, "--virtual-time-budget=15000", "--dump-dom", probe.as_uri(), profile=tmp_path / "p1"
    ).stdout
    found = re.search(r'data-images="(\d+)" data-loaded="(\d+)"', dom)
    assert found, f"the page did not finish loading in Chromium: {dom[:300]!r}"
    images, loaded = map(int, found.groups())
    assert images == report.read_text().count("<img ") and loaded == images

    shot = tmp_path / "report.png"
    _chromium(browser, "--window-size=1400,2200", f"--screenshot={shot}", report.as_uri(), profile=tmp_path / "p2")
    img = cv2.imread(str(shot))
    assert img is not None and img.shape[:2] == (2200, 1400)
    # Not blank: text, tables, plots and photographs give many distinct colours and contrast.
    assert img.std() > 20 and len(np.unique(img.reshape(-1, 3) // 16, axis=0)) > 100

"""A quiet, honest CLI: a one-source build prints its discovery line, the progress bar and the
summary, nothing else; mistakes that used to pass silently are one-line errors with exit 2."""
from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from pipeline.cli import main as portrait

REPO = Path(__file__).resolve().parents[1]
# What a build may print on stderr: discovery per dataset, the total, the progress bar.
ALLOWED = [re.compile(p) for p in (r"^media: 1 files found, 1 sources, ", r"^found 1 sources in 1 dataset\(s\)$",
                                   r"^discover: \d+ sources \[", r"^build: +\d+%\|")]


@pytest.mark.parametrize("media_file, settings", [
    ("images/s1.jpg", []),  # on a local Ray instance: Ray's notices and its C++ core worker's lines
    ("videos/d3.mp4", ["--set", "ray.executor=inline", "--set", "features.enabled=false"]),  # mediapipe's own
], ids=["image-on-ray", "video-inline"])
def test_one_source_build_prints_only_progress_and_summary(media_file, settings, media_dir, tmp_path):
    media = tmp_path / "media"
    media.mkdir()
    shutil.copy(media_dir / media_file, media / Path(media_file).name)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("RAY_", "GLOG_", "TF_CPP"))}
    proc = subprocess.run([sys.executable, "-m", "pipeline.cli", "build", "--input", str(media), "--out",
                           str(tmp_path / "out"), *settings], cwd=REPO, env=env, capture_output=True, text=True,
                          timeout=900)
    assert proc.returncode == 0, proc.stderr[-2000:]
    lines = [line.strip() for line in re.split(r"[\r\n]+", proc.stderr) if line.strip()]
    noise = [line for line in lines if not any(p.search(line) for p in ALLOWED)]
    assert noise == [], "\n".join(noise)
    assert any(line.startswith("build: 100%") for line in lines)  # the bar ran to the end
    assert "Per dataset:" in proc.stdout and "Rejections and errors by reason:" in proc.stdout


@pytest.mark.parametrize("argv, says", [
    (["query", "--catalog", "{out}", "--named", "rethreshold", "--param", "max_occlussion=0.99"],
     "unknown --param max_occlussion"),
    (["query", "--catalog", "{out}", "SELECT 1", "--csv", "{tmp}/a.csv", "--parquet", "{tmp}/a.parquet"],
     "one of --csv and --parquet"),
    (["build", "--input", "{image}", "--out", "{tmp}/o"], "expects a folder"),
    (["build", "--input", "{tmp}/nowhere", "--out", "{tmp}/o"], "dataset root not found"),
])
def test_mistakes_are_one_line_errors(argv, says, media_dir, tmp_path, capsys):
    # Checked before any catalog is opened or Ray started: no build is needed to see them.
    args = [a.format(out=tmp_path, tmp=tmp_path, image=media_dir / "images" / "s1.jpg") for a in argv]
    assert portrait(args) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("portrait: error:") and says in err[0], err
    assert not (tmp_path / "a.csv").exists() and not (tmp_path / "o").exists()  # nothing half-done

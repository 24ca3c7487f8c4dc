"""Workers killed during a Ray build: their sources are marked lost to the infrastructure
(errors.kind = 'infra'), the build still ends, and re-running it redoes them and ends with the
same catalog as a build nobody disturbed.

Killing from outside at random moments mostly hits workers that are starting or idle; here a
worker is SIGKILLed whenever it takes one of two sources (poison inputs): each is tried at most
twice (one retry on the restarted worker), so up to four kills, and both are lost for certain;
sources in flight on the same worker may be hit too. Each build runs in a
process of its own (tests/killing_build.py) under a time limit: a hang fails, never stalls.
"""
from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from manifests.catalog import Catalog
from tests.test_integrity import content, run_build

REPO = Path(__file__).resolve().parents[1]
VICTIMS = ("d0.mp4", "p3.jpg")
BUILD_LIMIT_S = 420


@pytest.fixture(scope="module")
def many_inputs(media_dir, tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("kills") / "media"
    folder.mkdir()
    shutil.copy(media_dir / "videos" / "d0.mp4", folder / "d0.mp4")
    for i in range(6):
        shutil.copy(media_dir / "images" / ("s1.jpg" if i % 2 else "s12.jpg"), folder / f"p{i}.jpg")
    return folder


def ray_build(inputs: Path, out: Path, kill_dir: Path, victims: tuple[str, ...]) -> dict:
    """Run tests/killing_build.py; kill its whole process group if it outlives the limit."""
    env = dict(os.environ, RAY_ADDRESS="")  # a fresh local instance, never a cluster found here
    proc = subprocess.Popen(
        [sys.executable, "-m", "tests.killing_build", str(inputs), str(out), str(kill_dir), ",".join(victims)],
        cwd=REPO,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    try:
        stdout, stderr = proc.communicate(timeout=BUILD_LIMIT_S)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.communicate()
        pytest.fail(f"the Ray build did not end within {BUILD_LIMIT_S} s (a worker kill left it hanging)")
    assert proc.returncode == 0, stderr[-3000:]
    return json.loads(stdout.strip().splitlines()[-1])


@pytest.mark.timeout(2 * BUILD_LIMIT_S + 120)
def test_four_worker_kills_then_a_rerun_match_the_reference(many_inputs, tmp_path):
    reference = tmp_path / "reference"
    run_build(many_inputs, reference)  # inline, undisturbed
    kill_dir = tmp_path / "kills"
    kill_dir.mkdir()
    out = tmp_path / "out"

    first = ray_build(many_inputs, out, kill_dir, VICTIMS)
    kills = sorted(p.read_text() for p in kill_dir.iterdir())
    with Catalog(out, read_only=True) as cat:
        lost = [r["rel_path"] for r in cat.query("SELECT s.rel_path FROM sources s JOIN errors e USING (source_id) "
                                                 "WHERE e.kind = 'infra' ORDER BY 1").to_pylist()]
        assert len(cat.done_source_ids()) + len(lost) == 7  # every source accounted for
    print(f"{len(kills)} worker kill(s), holding {kills}; lost: {lost}")
    # Each victim is tried at most twice (one retry on a restarted worker; Ray may also give
    # up on the first death), then given up: no endless loop, and both are lost.
    assert set(kills) == set(VICTIMS) and all(kills.count(v) <= 2 for v in VICTIMS)
    assert set(VICTIMS) <= set(lost) and first["lost"] == len(lost)

    second = ray_build(many_inputs, out, kill_dir, victims=())
    assert second["retried"] == first["lost"] and second["lost"] == 0
    assert len(list(kill_dir.iterdir())) == len(kills)  # nothing killed on the re-run
    assert content(out) == content(reference)

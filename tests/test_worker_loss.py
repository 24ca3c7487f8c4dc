"""Workers killed during a Ray build: their sources are marked lost to the infrastructure
(errors.kind = 'infra'), and re-running the same build redoes them and ends with the same
catalog as a build nobody disturbed.

Killing from outside at random moments mostly hits workers that are starting or idle, and
Ray's restarts and task retries absorb that; here a worker is SIGKILLed while it holds a
source: the first four source attempts of the build die, retries included, so restarts and
retries run out for some sources (which ones is up to Ray's scheduling).
"""
from __future__ import annotations

import os
import shutil
import signal
from pathlib import Path

import pytest

from manifests.catalog import Catalog
from pipeline import build as build_mod
from stages.curate import CurateStage
from tests.test_integrity import content, run_build

KILLS = 4


class KilledWhileCurating(CurateStage):
    """CurateStage whose worker process is SIGKILLed when it takes a source, until KILLS
    kills happened (counted in files: the kills span worker processes)."""

    def __init__(self, *, kill_dir: str, **kwargs):
        super().__init__(**kwargs)
        self.kill_dir = Path(kill_dir)

    def process(self, spec):
        for k in range(KILLS):
            try:
                os.close(os.open(self.kill_dir / f"kill-{k}", os.O_CREAT | os.O_EXCL))
            except FileExistsError:
                continue
            (self.kill_dir / f"kill-{k}").write_text(Path(spec.path).name)
            os.kill(os.getpid(), signal.SIGKILL)
        return super().process(spec)


@pytest.fixture(scope="module")
def many_inputs(media_dir, tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("kills") / "media"
    folder.mkdir()
    shutil.copy(media_dir / "videos" / "d0.mp4", folder / "d0.mp4")
    for i in range(6):
        shutil.copy(media_dir / "images" / ("s1.jpg" if i % 2 else "s12.jpg"), folder / f"p{i}.jpg")
    return folder


@pytest.mark.timeout(900)  # a hang must fail the suite, not stall it
def test_four_worker_kills_then_a_rerun_match_the_reference(many_inputs, tmp_path, monkeypatch):
    ray = pytest.importorskip("ray")
    import sys

    # A Ray instance left by earlier tests in this process has its own settings and actors:
    # the kills must hit workers of a fresh local instance started by this build.
    ray.shutdown()

    # Workers cannot import this test module: its class travels by value.
    ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])
    reference = tmp_path / "reference"
    run_build(many_inputs, reference)  # inline, undisturbed
    kill_dir = tmp_path / "kills"
    kill_dir.mkdir()
    real_plans = build_mod.stage_plans

    def doomed_plans(*args, **kwargs):
        plans = real_plans(*args, **kwargs)
        name, _, curate_kwargs = plans[0].steps[0]
        plans[0].steps[0] = (name, KilledWhileCurating, dict(curate_kwargs, kill_dir=str(kill_dir)))
        return plans

    out = tmp_path / "out"
    ray_settings = {"ray.executor": "ray", "ray.num_cpus": 2}
    try:
        monkeypatch.setattr(build_mod, "stage_plans", doomed_plans)
        first = run_build(many_inputs, out, **ray_settings)
        killed_on = [p.read_text() for p in sorted(kill_dir.iterdir())]
        with Catalog(out, read_only=True) as cat:
            lost = [r["rel_path"] for r in cat.query("SELECT s.rel_path FROM sources s JOIN errors e USING (source_id) "
                                                     "WHERE e.kind = 'infra' ORDER BY 1").to_pylist()]
            assert len(cat.done_source_ids()) + len(lost) == 7  # every source accounted for
        print(f"{len(killed_on)} worker kill(s), holding {killed_on}; lost: {lost}")
        assert len(killed_on) == KILLS and first.lost == len(lost) >= 1
        monkeypatch.setattr(build_mod, "stage_plans", real_plans)
        second = run_build(many_inputs, out, **ray_settings)
        assert second.retried == first.lost and second.lost == 0
    finally:
        ray.shutdown()
    assert content(out) == content(reference)

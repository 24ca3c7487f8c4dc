"""Builds on a real multi-node Ray cluster on this machine (tests/local_cluster.py): a head and
two worker nodes, one of them declaring a logical GPU and a custom resource.

One cluster serves the module: head 1 CPU; node ``cpu`` 1 CPU; node ``gpu`` 1 CPU, 1 GPU and
``{"vae_gpu": 1}``. The build is the user's command (``portrait build --address``), run in
this process so the stages can be wrapped to record which node ran them (a file per source in a
folder every node sees). Inputs are tiny (one 3 s fixture video and a photograph, sampled at 5
fps) so that the whole module stays within a few minutes on two cores.

- placement: curation runs on at least two nodes, the latents (GPU) pool only on the GPU node
  (its stage runs with ``features.latents.device=cpu`` on the logical GPU), and every node's
  sources land in the shards with their latents;
- determinism: the 3-node build and the inline path give the same sources, clips (verdicts;
  scores to 1e-4), frames (JPEG bytes, landmarks, position maps, pose, image-view maps: exact)
  and latents (to float16 rounding; see the test for why); a 1-node cluster's curation-only
  build and the inline one agree the same way;
- job submission: ``ray job submit --working-dir . -- python -m pipeline.cli build ...`` against
  the head's dashboard runs the build and its logs show the progress;
- node loss (last: it leaves the cluster one node short): a worker node's raylet is killed
  while it holds a source; every source is accounted for, and a resume ends with the catalog
  and frame bytes of an undisturbed build, nothing lost or duplicated.
"""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest

from manifests.catalog import Catalog
from pipeline import build as build_mod
from pipeline.cli import main
from stages.curate import CurateStage
from stages.features import LatentFeatureStage
from tests.local_cluster import LocalCluster, cluster_env

ray = pytest.importorskip("ray")

REPO = Path(__file__).resolve().parents[1]
SMALL = ["sampling.fps=5", "eval_split.n=0"]
NO_FEATURES = [*SMALL, "features.enabled=false"]
pytestmark = pytest.mark.timeout(600)  # a hang fails the module instead of stalling CI


# -- stages that record where they ran ------------------------------------------------------
def _node() -> str:
    return ray.get_runtime_context().get_node_id()


class RecordingCurate(CurateStage):
    """CurateStage that writes ``curate-<source>-<node>`` when it takes a source and then waits
    (at most ``wait_s``) until ``spread`` nodes have taken one: with two or three sources the
    first actor to start would otherwise take them all, and the test could not see a spread."""

    def __init__(self, *, record_dir: str, spread: int = 1, wait_s: float = 90, **kwargs):
        super().__init__(**kwargs)
        self.record_dir, self.spread, self.wait_s = Path(record_dir), spread, wait_s

    def process(self, work):
        spec = work.spec
        (self.record_dir / f"curate-{spec.source_id}-{_node()}").write_text(Path(spec.path).name)
        end = time.monotonic() + self.wait_s
        while len({p.name.rsplit("-", 1)[1] for p in self.record_dir.glob("curate-*")}) < self.spread \
                and time.monotonic() < end:
            time.sleep(0.2)
        return super().process(work)


class RecordingLatents(LatentFeatureStage):
    """LatentFeatureStage that writes ``latents-<source>-<node>`` with the torch device it used."""

    def __init__(self, *, record_dir: str, **kwargs):
        super().__init__(**kwargs)
        self.record_dir = Path(record_dir)

    def process(self, work):
        out = super().process(work)
        (self.record_dir / f"latents-{work.source_id}-{_node()}").write_text(
            f"{self.stage._device} CUDA_VISIBLE_DEVICES={os.environ.get('CUDA_VISIBLE_DEVICES')}")
        return out


def recording_plans(record_dir: Path, spread: int):
    real = build_mod.stage_plans

    def plans(*args, **kwargs):
        out = real(*args, **kwargs)
        for p in out:
            p.steps = [(name, RecordingCurate, dict(kw, record_dir=str(record_dir), spread=spread)) if name == "curate"
                       else (name, RecordingLatents, dict(kw, record_dir=str(record_dir))) if name == "latents"
                       else (name, f, kw) for name, f, kw in p.steps]
        return out

    return plans


def records(record_dir: Path, kind: str) -> dict[str, set[str]]:
    """{source_id: nodes} of one kind of record."""
    out: dict[str, set[str]] = {}
    for p in record_dir.glob(f"{kind}-*"):
        sid, node = p.name[len(kind) + 1:].rsplit("-", 1)
        out.setdefault(sid, set()).add(node)
    return out


# -- what a user reads ----------------------------------------------------------------------
def content(out: Path) -> dict:
    """Sources, clips (every score and verdict) and frames (JPEG, landmarks, maps, pose, view
    maps: everything but the latents, compared apart) without run ids, times or shard grouping."""
    with Catalog(out, read_only=True) as cat:
        return {
            "sources": cat.query("SELECT * EXCLUDE (run_id) FROM sources ORDER BY source_id").to_pylist(),
            "clips": cat.query("SELECT * EXCLUDE (run_id) FROM clips ORDER BY clip_id").to_pylist(),
            "frames": cat.query(
                "SELECT * EXCLUDE (latent) FROM frames ORDER BY clip_id, frame_index, view"
            ).to_pylist(),
            "errors": cat.query("SELECT source_id, stage, message, kind FROM errors ORDER BY ALL").to_pylist(),
        }


SCORE_TOL = 1e-4  # absolute, on float scores of sources and clips only (see the determinism test)


def assert_same(got, want, path="", tol=0.0):
    """Equal, floats to ``tol``: bytes, strings, ints, verdicts and list lengths exactly."""
    if isinstance(want, float) and isinstance(got, float):
        assert abs(got - want) <= tol, f"{path}: {got!r} != {want!r}"
    elif isinstance(want, dict) and isinstance(got, dict):
        assert got.keys() == want.keys(), path
        for k in want:
            assert_same(got[k], want[k], f"{path}.{k}", tol)
    elif isinstance(want, (list, tuple)) and isinstance(got, (list, tuple)):
        assert len(got) == len(want), f"{path}: {len(got)} != {len(want)} items"
        for i, (g, w) in enumerate(zip(got, want)):
            assert_same(g, w, f"{path}[{i}]", tol)
    else:
        assert got == want, f"{path}: {got!r} != {want!r}"


def assert_same_build(got: dict, want: dict) -> None:
    """Frames and errors bit-identical; sources and clips identical but for float scores."""
    assert_same(got["frames"], want["frames"], "frames")
    assert_same(got["errors"], want["errors"], "errors")
    assert_same(got["sources"], want["sources"], "sources", SCORE_TOL)
    assert_same(got["clips"], want["clips"], "clips", SCORE_TOL)


def _array(v):
    if v is None:
        return None
    if isinstance(v, dict) and "data" in v:  # a {data, shape, dtype} struct
        return np.frombuffer(v["data"], dtype=v["dtype"]).reshape(v["shape"]).astype(np.float32)
    return np.asarray(v, dtype=np.float32)  # nested lists


def latents(out: Path) -> dict:
    with Catalog(out, read_only=True) as cat:
        rows = cat.query(
            "SELECT clip_id, frame_index, view, latent FROM frames ORDER BY clip_id, frame_index, view"
        ).to_pylist()
    return {(r["clip_id"], r["frame_index"], r["view"]): _array(r["latent"]) for r in rows}


def assert_no_duplicates(out: Path) -> None:
    with Catalog(out, read_only=True) as cat:
        dup = cat.query("SELECT (SELECT count(*) - count(DISTINCT source_id) FROM sources) AS s, "
                        "(SELECT count(*) - count(DISTINCT clip_id) FROM clips) AS c, "
                        "(SELECT count(*) FROM (SELECT clip_id, frame_index, view FROM frames "
                        " GROUP BY ALL HAVING count(*) > 1)) AS f").to_pylist()[0]
    assert dup == {"s": 0, "c": 0, "f": 0}


def build_cli(inputs: Path, out: Path, settings: list[str], address: str | None = None, spread: bool = False) -> int:
    """``portrait build`` in this process. ``spread``: one source in flight per actor, and a
    busy pool grows at once. Ray Data's defaults (two in flight, grow at 175% use) give both
    sources of these tiny builds to the first actor; placement is Ray's own either way."""
    args = ["build", "--input", str(inputs), "--out", str(out), "--no-progress"]
    for s in settings:
        args += ["--set", s]
    if address:
        args += ["--address", address]
    ctx = ray.data.DataContext.get_current()
    scaling = ctx.autoscaling_config
    saved = ctx.max_tasks_in_flight_per_actor, scaling.actor_pool_util_upscaling_threshold
    if spread:
        ctx.max_tasks_in_flight_per_actor, scaling.actor_pool_util_upscaling_threshold = 1, 1.0
    try:
        return main(args)
    finally:
        ctx.max_tasks_in_flight_per_actor, scaling.actor_pool_util_upscaling_threshold = saved
        ray.shutdown()


# -- fixtures -------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    env_patch = pytest.MonkeyPatch()
    env_patch.setenv("RAY_AUTH_MODE", "disabled")
    env_patch.setenv("RAY_USAGE_STATS_ENABLED", "0")
    env_patch.delenv("RAY_ADDRESS", raising=False)
    ray.shutdown()  # this process must join the test cluster, not an instance of earlier tests
    # Workers cannot import this test module: its stage classes travel by value.
    ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])
    c = LocalCluster(tmp_path_factory.mktemp("cluster"))
    try:
        c.start(head_cpus=1, workers={"cpu": dict(num_cpus=1),
                                      "gpu": dict(num_cpus=1, num_gpus=1, resources={"vae_gpu": 1})})
        yield c
    finally:
        ray.shutdown()
        c.stop()
        env_patch.undo()


@pytest.fixture(scope="module")
def inputs(media_dir, tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("cluster_media") / "media"
    folder.mkdir()
    shutil.copy(media_dir / "videos" / "d0.mp4", folder / "d0.mp4")
    shutil.copy(media_dir / "images" / "s1.jpg", folder / "s1.jpg")
    return folder


@pytest.fixture(scope="module")
def vae_settings(small_vae_dir) -> list[str]:
    return [*SMALL, f"features.latents.weights={small_vae_dir}", "features.latents.device=cpu"]


@pytest.fixture(scope="module")
def inline_features(inputs, vae_settings, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("inline_features") / "out"
    assert build_cli(inputs, out, [*vae_settings, "ray.executor=inline"]) == 0
    return out


@pytest.fixture(scope="module")
def inline_curation(inputs, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("inline_curation") / "out"
    assert build_cli(inputs, out, [*NO_FEATURES, "ray.executor=inline"]) == 0
    return out


@pytest.fixture(scope="module")
def cluster_features(cluster, inputs, vae_settings, tmp_path_factory):
    """The 3-node build with every feature and the VAE: (OUT, record folder)."""
    root = tmp_path_factory.mktemp("cluster_features")
    rec = root / "records"
    rec.mkdir()
    mp = pytest.MonkeyPatch()
    mp.setattr(build_mod, "stage_plans", recording_plans(rec, spread=2))
    try:
        assert build_cli(inputs, root / "out", vae_settings, cluster.address, spread=True) == 0
    finally:
        mp.undo()
    return root / "out", rec


# -- tests ----------------------------------------------------------------------------------
def test_curation_spreads_and_latents_stay_on_the_gpu_node(cluster, cluster_features):
    out, rec = cluster_features
    ids = cluster.node_ids
    names = {v: k for k, v in ids.items()}
    curated = records(rec, "curate")
    encoded = records(rec, "latents")
    with Catalog(out, read_only=True) as cat:
        sources = {r["source_id"]: r for r in cat.query("SELECT source_id, rel_path, status FROM sources").to_pylist()}
        framed = {r["source_id"]: r for r in cat.query(
            "SELECT source_id, count(*) AS n, count(latent) AS with_latent FROM frames GROUP BY 1").to_pylist()}
    print("curation:", {sources[s]["rel_path"]: sorted(names[n] for n in ns) for s, ns in curated.items()},
          "latents:", {sources[s]["rel_path"]: sorted(names[n] for n in ns) for s, ns in encoded.items()})
    assert len(sources) == 2 and all(s["status"] == "kept" for s in sources.values())
    # Curation ran on two nodes at least (each source once), the latents pool only on the GPU node.
    assert set(curated) == set(sources) and all(len(n) == 1 for n in curated.values())
    assert len({n for ns in curated.values() for n in ns}) >= 2
    assert set(encoded) == set(sources) and {n for ns in encoded.values() for n in ns} == {ids["gpu"]}
    # ... on the CPU, as configured, with the logical GPU Ray gave the actor.
    assert {p.read_text() for p in rec.glob("latents-*")} == {"cpu CUDA_VISIBLE_DEVICES=0"}
    # Every node's sources landed in the shards, every frame with its latent.
    for sid in sources:
        assert framed[sid]["n"] > 0 and framed[sid]["with_latent"] == framed[sid]["n"], sources[sid]
    # Ray's own record of the actors: those holding the GPU all lived on the GPU node.
    from ray.util.state import list_actors

    gpu_actors = [a for a in list_actors(address=cluster.dashboard_url, detail=True, limit=1000)
                  if (a.required_resources or {}).get("GPU")]
    assert gpu_actors and {a.node_id for a in gpu_actors} == {ids["gpu"]}


def test_same_results_on_three_nodes_one_node_and_inline(cluster_features, inline_features, inline_curation,
                                                          inputs, tmp_path):
    """3 nodes (curation on two of them, latents on the GPU node) against inline, every feature
    on; 1 node (two CPUs, no GPU: one fused pool) against inline, curation only (the features
    are the 3-node case's; one more feature build would double this test's time).

    Frames (JPEG bytes, landmarks, position maps, pose, view maps), clip boundaries, verdicts
    and reasons are bit-identical. Float scores of clips and sources are compared to 1e-4
    (absolute; thresholds sit at 0.05 and more): mediapipe's models give slightly different
    probabilities depending on what the same actor ran before (seen: ``face_human`` of d0
    0.9999921 on a fresh actor, 1.0 after s1.jpg), and which actor gets which source is Ray's
    choice. Latents come from float32 convolutions whose summation order follows the torch
    thread count (one thread in a Ray worker, all cores inline) and are stored as float16:
    compared to 1e-2 relative + 1e-3 absolute (a float16 step is ~1e-3 of the value)."""
    out3, _ = cluster_features
    ref = content(inline_features)
    # The comparison covers real features: crops, poses and position maps are there.
    assert ref["frames"] and all(f["jpeg"] for f in ref["frames"])
    assert any(f["pose"] is not None for f in ref["frames"]) and any(
        f["position_map"] is not None for f in ref["frames"]
    )
    assert_same_build(content(out3), ref)
    z_ref, z = latents(inline_features), latents(out3)
    assert z.keys() == z_ref.keys()
    for k, a in z_ref.items():
        assert a is not None and z[k] is not None and a.shape == z[k].shape
        np.testing.assert_allclose(z[k], a, rtol=1e-2, atol=1e-3)

    out1 = tmp_path / "one_node"
    with LocalCluster(tmp_path / "one_node_cluster", dashboard=False) as single:
        single.start(head_cpus=2)
        assert build_cli(inputs, out1, NO_FEATURES, single.address) == 0
    ref1 = content(inline_curation)
    assert ref1["frames"]
    assert_same_build(content(out1), ref1)


def test_job_submission_runs_the_build_and_logs_progress(cluster, inputs, tmp_path):
    out = tmp_path / "job_out"
    runtime_env = '{"excludes": [".venv", ".git", "demo_out", "bench/out", "out", "*.duckdb", "*.parquet"]}'
    cmd = [str(Path(sys.executable).parent / "ray"), "job", "submit", "--address", cluster.dashboard_url,
           "--working-dir", str(REPO), "--runtime-env-json", runtime_env, "--",
           "python", "-m", "pipeline.cli", "build", "--input", str(inputs), "--out", str(out),
           *[a for s in NO_FEATURES for a in ("--set", s)]]
    env = {k: v for k, v in cluster_env().items() if k != "RAY_ADDRESS"}
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=400, cwd=REPO)
    logs = done.stdout + done.stderr
    assert done.returncode == 0, logs[-3000:]
    assert "succeeded" in logs, logs[-3000:]
    # The build's own lines: what it found, its progress bar to the end, the summary.
    assert "found 2 sources" in logs and "build: 100%" in logs and "2/2" in logs, logs[-3000:]
    with Catalog(out, read_only=True) as cat:
        assert cat.query("SELECT count(*) AS n FROM sources WHERE status = 'kept'").to_pylist() == [{"n": 2}]


def test_node_loss_mid_build_then_resume_matches_an_undisturbed_build(cluster, inputs, inline_curation, tmp_path):
    """Kill the raylet of the first worker node that takes a source (the record is written as it
    starts on it). Ray restarts the lost actors on the nodes left (or the build
    accounts the source as lost to the infrastructure); the same command then finishes it."""
    rec = tmp_path / "records"
    rec.mkdir()
    out = tmp_path / "out"
    workers = {cluster.node_ids[n]: n for n in ("cpu", "gpu")}
    killed: list[str] = []

    def kill_a_worker_node_holding_a_source():
        end = time.monotonic() + 300
        while time.monotonic() < end:
            for p in rec.glob("curate-*"):
                name = workers.get(p.name.rsplit("-", 1)[1])
                if name:
                    cluster.kill_raylet(name)
                    killed.append(name)
                    return
            time.sleep(0.2)

    killer = threading.Thread(target=kill_a_worker_node_holding_a_source, daemon=True)
    killer.start()
    mp = pytest.MonkeyPatch()
    mp.setattr(build_mod, "stage_plans", recording_plans(rec, spread=2))
    try:
        assert build_cli(inputs, out, NO_FEATURES, cluster.address, spread=True) == 0
    finally:
        mp.undo()
        killer.join(timeout=5)
    assert killed, "no worker node took a source"
    with Catalog(out, read_only=True) as cat:
        done = cat.done_source_ids()
        lost = cat.query("SELECT DISTINCT source_id FROM errors WHERE kind = 'infra'").to_pylist()
        n = cat.query("SELECT count(*) AS n FROM sources").to_pylist()[0]["n"]
    print(
        f"raylet of node {killed[0]} killed while it held a source; finished {len(done)}, lost to the node {len(lost)}"
    )
    assert n == 2 and len(done) + len(lost) == 2  # every source accounted for
    assert_no_duplicates(out)
    assert build_cli(inputs, out, NO_FEATURES, cluster.address) == 0  # resume on the nodes left
    assert_no_duplicates(out)
    assert_same_build(content(out), content(inline_curation))

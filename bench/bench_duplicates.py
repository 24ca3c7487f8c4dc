"""Duplicate detection across datasets (prints figures; asserts nothing).

(a) The fixture duplicate set: every fixture video as it is (distinct videos, and the clips the
    pipeline cuts from the 20-s and 60-s recordings: distinct segments of one recording, the
    same person in the same room, which are NOT duplicates), plus variants of several of them
    made with PyAV the way datasets re-publish a YouTube video: re-encoded at other bitrates and
    resolutions, cropped 5-10 %, converted between 25 and 30 fps, and cut to a time-subrange
    (a clip cut from a longer copy), alone and combined. The set is built with the real pipeline
    (features off), so signatures come from the real stored crops: ``clips.signature`` where
    the catalog has the column, else ``stages.signature.clip_signature`` on the view-0 crops
    read from ``frames`` (or with --recompute). Ground truth: two kept clips are duplicates iff
    they come from the same original and their time ranges in it overlap by at least half of
    the shorter clip; not duplicates under a tenth (the set is made so that no pair falls in
    between: such pairs would be counted and left out). Prints the pair precision and recall
    over all pairs of kept clips, of ``is_duplicate`` and of ``group_duplicates`` (same group),
    the closest calls, and lists the wrong pairs.
(b) ``--synthetic N`` (default 10,000,000): N synthetic signatures with planted duplicate
    groups (the base clip and 1-4 copies perturbed at the noise levels the real variants of (a)
    show, some of them time-subranges) and planted near-misses (other segments of the same
    recording: keys as close as a duplicate's, frames of other moments), grouped by
    ``manifests.duplicates.group_arrays``; prints wall time, peak memory, the share of planted
    groups recovered exactly and the false merges.

Usage: python bench/bench_duplicates.py [--fixtures DIR] [--remake] [--rebuild] [--recompute] [--reference]
                                        [--skip-fixtures] [--synthetic N] [--skip-synthetic]
(the set and its build are kept in bench/out/dupset*; peak memory of (b) alone: --skip-fixtures)
"""
from __future__ import annotations

import argparse
import itertools
import json
import os
import resource
import shutil
import sys
import time
from dataclasses import asdict, dataclass
from fractions import Fraction
from pathlib import Path

import numpy as np

os.environ.setdefault("GLOG_minloglevel", "2")
REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from manifests import duplicates as dup  # noqa: E402


# -- (a) the fixture duplicate set ----------------------------------------------------------------
@dataclass(frozen=True)
class Variant:
    """One file of the set: ``origin``'s time range [t0, t1) (None: to the end), transformed."""

    name: str
    origin: str  # fixture video, relative to the fixtures folder
    t0: float = 0.0
    t1: float | None = None
    scale: float = 1.0  # output size / (cropped) source size
    crop: tuple[float, float, float, float] = (0.0, 0.0, 0.0, 0.0)  # left, top, right, bottom shares removed
    fps: float | None = None  # None: the source's; else frames resampled (nearest earlier frame)
    crf: int | None = None  # libx264 constant quality (None: copy the file unchanged)
    bit_rate: int | None = None  # libx264 target bitrate, bits/s (instead of crf)


def variants() -> list[Variant]:
    v = [Variant(p.stem, f"{d}/videos/{p.name}") for d, p in _fixture_videos()]
    def add(stem: str, folder: str, *more: Variant) -> None:
        v.extend(Variant(f"{stem}__{m.name}", f"{folder}/videos/{stem}.mp4", **{k: x for k, x in asdict(m).items()
                                                                               if k not in ("name", "origin")})
                 for m in more)

    # Re-encodes (bitrate, resolution), crops, 25 <-> 30 fps, subranges, and combinations.
    # Cuts start off the 0.1-s grid of the motion words (the worst case for their alignment).
    add("d3", "media",
        Variant("br200k", "", bit_rate=200_000),
        Variant("crop8", "", crop=(0.05, 0.03, 0.02, 0.04), crf=23),
        Variant("fps25", "", fps=25, crf=26),
        Variant("sub2.1-7.1", "", t0=2.1, t1=7.1, crf=28),
        Variant("sub4.3-9.3_720_crop6", "", t0=4.3, t1=9.3, scale=1.4, crop=(0.03, 0.03, 0.03, 0.0), fps=25, crf=30))
    add("d9", "media",
        Variant("half", "", scale=0.5, crf=23),
        Variant("sub12.1-18.1_fps25", "", t0=12.1, t1=18.1, fps=25, crf=28),
        Variant("crop10_br", "", crop=(0.0, 0.06, 0.04, 0.04), bit_rate=300_000))
    add("s18", "media",
        Variant("480p", "", scale=0.667, crf=28),
        Variant("crop7_fps25", "", crop=(0.04, 0.0, 0.03, 0.05), fps=25, crf=24),
        Variant("sub3.1-8.1", "", t0=3.1, t1=8.1, bit_rate=400_000))
    add("s20", "media",
        Variant("br150k", "", bit_rate=150_000),
        Variant("sub1.3-6.3_crop5", "", t0=1.3, t1=6.3, crop=(0.02, 0.03, 0.03, 0.02), scale=0.75, crf=27))
    add("sadtalker_aoc", "media-extra",
        Variant("fps30", "", fps=30, crf=24),
        Variant("crop9_360", "", crop=(0.05, 0.05, 0.04, 0.04), scale=0.7, crf=26),
        Variant("sub2.1-6.1", "", t0=2.1, t1=6.1, crf=32))
    add("sadtalker_katiehill", "media-extra",
        Variant("half_br", "", scale=0.5, bit_rate=250_000),
        Variant("sub1.1-5.1_fps30_crop6", "", t0=1.1, t1=5.1, fps=30, crop=(0.03, 0.0, 0.03, 0.06), crf=25))
    add("retalking_face4", "media-extra",
        Variant("fps25_crop8", "", fps=25, crop=(0.04, 0.04, 0.04, 0.0), crf=25),
        Variant("sub1.5-5", "", t0=1.5, t1=5, scale=0.6, crf=30))
    add("retalking_face2", "media-extra", Variant("fps30_br", "", fps=30, bit_rate=300_000))
    add("aniportrait_headpose", "media-extra",
        Variant("up720_crop5", "", scale=1.4, crop=(0.0, 0.0, 0.05, 0.05), crf=22),
        Variant("sub1.1-4.1", "", t0=1.1, t1=4.1, fps=30, crf=30))
    add("dreamtalk_w009_happy", "media-extra", Variant("up512", "", scale=2.0, crf=26))
    add("retalking_face1", "media-extra", Variant("br_crop6", "", crop=(0.03, 0.03, 0.03, 0.03), bit_rate=250_000))
    add("xportrait_driving", "media-extra", Variant("fps25_crop7", "", fps=25, crop=(0.0, 0.04, 0.07, 0.0), crf=24))
    add("wan_tvhost", "media-extra", Variant("720p_fps25", "", scale=0.667, fps=25, crf=27))
    # The 60-s recording: subranges inside its 10-s clips (duplicates of exactly one of them) at
    # other rates and sizes; its other clips are the same man in the same office (not duplicates).
    add("edtalk_posesrc2_60s", "media-extra",
        Variant("sub21.1-28.1_fps30", "", t0=21.1, t1=28.1, fps=30, crf=26),
        Variant("sub42.3-48.3_up_crop6", "", t0=42.3, t1=48.3, scale=1.5, crop=(0.03, 0.03, 0.0, 0.03), crf=28))
    add("latentsync_demo2", "media-extra", Variant("sub11.1-17.1_540p", "", t0=11.1, t1=17.1, scale=0.5, crf=27))
    return v


def _fixture_videos():
    fixtures = Path(os.environ.get("PORTRAIT_FIXTURES", REPO.parent / "shared" / "fixtures"))
    for d in ("media", "media-extra"):
        for p in sorted((fixtures / d / "videos").glob("*.mp4")):
            yield d, p


def make_variant(var: Variant, fixtures: Path, out: Path) -> None:
    import av
    import cv2

    src = fixtures / var.origin
    if var.crf is None and var.bit_rate is None:
        shutil.copyfile(src, out)
        return
    with av.open(str(src)) as c:
        stream = c.streams.video[0]
        src_fps = float(stream.average_rate)
        frames, times = [], []
        for f in c.decode(stream):
            t = float(f.time) if f.time is not None else len(times) / src_fps
            if t < var.t0 - 1e-6:
                continue
            if var.t1 is not None and t >= var.t1 - 1e-6:
                break
            frames.append(f.to_ndarray(format="rgb24"))
            times.append(t - var.t0)
    fps = var.fps or src_fps
    n_out = int(round((times[-1] + 1 / src_fps) * fps))
    picks = np.searchsorted(np.asarray(times), np.arange(n_out) / fps + 1e-6, side="right") - 1
    h, w = frames[0].shape[:2]
    left, top, right, bottom = var.crop
    x0, x1 = int(round(left * w)), int(round(w * (1 - right)))
    y0, y1 = int(round(top * h)), int(round(h * (1 - bottom)))
    ow, oh = int(round((x1 - x0) * var.scale)) // 2 * 2, int(round((y1 - y0) * var.scale)) // 2 * 2
    with av.open(str(out), "w") as o:
        s = o.add_stream("libx264", rate=Fraction(fps).limit_denominator(1001))
        s.width, s.height, s.pix_fmt = ow, oh, "yuv420p"
        if var.bit_rate:
            s.bit_rate = var.bit_rate
            s.options = {"preset": "veryfast"}
        else:
            s.options = {"crf": str(var.crf), "preset": "veryfast"}
        for i in picks:
            img = frames[max(int(i), 0)][y0:y1, x0:x1]
            if (ow, oh) != (img.shape[1], img.shape[0]):
                interp = cv2.INTER_AREA if var.scale < 1 else cv2.INTER_CUBIC
                img = cv2.resize(img, (ow, oh), interpolation=interp)
            for p in s.encode(av.VideoFrame.from_ndarray(np.ascontiguousarray(img), format="rgb24")):
                o.mux(p)
        for p in s.encode():
            o.mux(p)


def make_set(fixtures: Path, folder: Path) -> None:
    media = folder / "media"
    media.mkdir(parents=True, exist_ok=True)
    truth = {}
    for var in variants():
        path = media / f"{var.name}.mp4"
        if not path.is_file():
            make_variant(var, fixtures, path)
        truth[path.name] = asdict(var)
    (folder / "truth.json").write_text(json.dumps(truth, indent=1))


def clip_crops(build: Path, clip_ids):
    """(clip_id, view-0 crops as RGB, timestamps) of each clip, read from the shards."""
    import cv2

    from manifests.catalog import Catalog

    with Catalog(str(build), read_only=True) as cat:
        for cid in clip_ids:
            fr = cat.query("SELECT timestamp_s, jpeg FROM frames WHERE clip_id = ? AND view = 0 ORDER BY frame_index",
                           [cid]).to_pylist()
            crops = [cv2.cvtColor(cv2.imdecode(np.frombuffer(f["jpeg"], np.uint8), cv2.IMREAD_COLOR), cv2.COLOR_BGR2RGB)
                     for f in fr]
            yield cid, crops, [f["timestamp_s"] for f in fr]


def kept_clips(build: Path):
    """Kept clips: [(clip_id, rel_path, start_s, end_s)], and {clip_id: clips.signature} where stored."""
    import duckdb

    con = duckdb.connect(str(build / "catalog.duckdb"), read_only=True)
    try:
        cols = {r[0] for r in con.sql("DESCRIBE clips").fetchall()}
        rows = con.sql("SELECT c.clip_id, s.rel_path, c.start_s, c.end_s FROM clips c JOIN sources s USING (source_id) "
                       "WHERE c.verdict = 'kept' ORDER BY c.clip_id").fetchall()
        stored = {}
        if "signature" in cols:
            stored = {c: bytes(s) for c, s in con.sql("SELECT clip_id, signature FROM clips WHERE verdict = 'kept' "
                                                      "AND signature IS NOT NULL").fetchall()}
    finally:
        con.close()
    return rows, stored


def load_clips(build: Path, recompute: bool = False):
    """Kept clips: (clip_id, rel_path, start_s, end_s, signature bytes), where the signatures
    came from, and the mean time per frame of clip_signature where it was run here."""
    from manifests.duplicates import VERSION, SignatureError, unpack_signature
    from stages.signature import clip_signature

    rows, stored = kept_clips(build)
    for cid, sig in list(stored.items()):
        try:
            unpack_signature(sig)
        except SignatureError:  # built with another version: computed again below
            del stored[cid]
    if recompute:
        stored = {}
    need = [r[0] for r in rows if r[0] not in stored]
    computed, secs, frames = {}, 0.0, 0
    for cid, crops, ts in clip_crops(build, need):
        t = time.perf_counter()
        computed[cid] = clip_signature(crops, ts)
        secs += time.perf_counter() - t
        frames += len(crops)
    how = (f"clips.signature (v{VERSION})" if stored else "") + (" and " if stored and need else "") + (
        f"clip_signature on the stored crops ({len(need)} clips)" if need else "")
    return [(c, p, s, e, stored.get(c) or computed[c]) for c, p, s, e in rows], how, secs / max(frames, 1)


def reference_histogram(build: Path) -> np.ndarray:
    """Mean sqrt-histogram (the key's REF_HIST) of the kept clips of the original fixture videos."""
    from stages.signature import _small, colour_histogram

    rows, _ = kept_clips(build)
    originals = [r[0] for r in rows if "__" not in r[1]]
    hs = []
    for _, crops, _ in clip_crops(build, originals):
        h = colour_histogram([_small(c) for c in crops]).astype(np.float64)
        hs.append(np.sqrt(h / h.sum()))
    return np.mean(hs, axis=0)


def evaluate(folder: Path, build: Path, recompute: bool = False) -> None:
    truth = json.loads((folder / "truth.json").read_text())
    clips, how, per_frame = load_clips(build, recompute)
    print(f"\n(a) fixture set: {len(truth)} files, {len(clips)} kept clips; signatures from {how}"
          + (f" ({per_frame * 1e3:.2f} ms per frame)" if per_frame else ""))
    sizes = [len(c[4]) for c in clips]
    print(f"    signature size: mean {np.mean(sizes):.0f} B, max {max(sizes)} B")

    def span(c):
        v = truth[c[1].split("/")[-1]]
        return v["origin"], v["t0"] + c[2], v["t0"] + c[3]

    groups = dup.group_duplicates([c[0] for c in clips], [c[4] for c in clips])
    tp = fp = fn = tn = amb = 0
    gtp = gfp = gfn = 0
    wrong, margins = [], {True: [], False: []}
    for (a, ga), (b, gb) in itertools.combinations(list(zip(clips, groups)), 2):
        (oa, a0, a1), (ob, b0, b1) = span(a), span(b)
        overlap = max(0.0, min(a1, b1) - max(a0, b0)) if oa == ob else 0.0
        share = overlap / max(min(a1 - a0, b1 - b0), 1e-6)
        if 0.1 <= share < 0.5:  # partly overlapping clips: neither answer is wrong
            amb += 1
            continue
        m = dup.match_details(a[4], b[4])
        said, real, grouped = m["duplicate"], share >= 0.5, ga == gb
        tp += said and real
        fp += said and not real
        fn += real and not said
        tn += not said and not real
        gtp += grouped and real
        gfp += grouped and not real
        gfn += real and not grouped
        if m["key_distance"] <= dup.KEY_RADIUS:
            margins[real].append((m["margin"], a[1], a[2], b[1], b[2]))
        if said != real or grouped != real:
            wrong.append(f"    {'FALSE DUP' if not real else 'MISSED  '} {'(pair)' if said != real else ''}"
                         f"{'(group)' if grouped != real else ''} {a[1]} [{a[2]:.1f}-{a[3]:.1f}] ~ "
                         f"{b[1]} [{b[2]:.1f}-{b[3]:.1f}]  {dup.explain(a[4], b[4])}")
    print(f"    pairs: {tp + fp + fn + tn} judged ({tp + fn} duplicate), {amb} partly overlapping left out")
    print(f"    is_duplicate:     precision {tp / max(tp + fp, 1):.3f} ({tp}/{tp + fp})   "
          f"recall {tp / max(tp + fn, 1):.3f} ({tp}/{tp + fn})")
    print(f"    group_duplicates: precision {gtp / max(gtp + gfp, 1):.3f} ({gtp}/{gtp + gfp})   "
          f"recall {gtp / max(gtp + gfn, 1):.3f} ({gtp}/{gtp + gfn})   "
          f"({len(set(groups))} groups for {len(clips)} clips)")

    def key(c):
        return dup.unpack_signature(c[4])[0]

    key_d = [(int(dup.key_distance(key(a), key(b))), span(a)[0] == span(b)[0])
             for a, b in itertools.combinations(clips, 2)]
    same, other = [d for d, s in key_d if s], [d for d, s in key_d if not s]
    print(f"    key distance (of {dup.KEY_BITS} bits): same origin max {max(same)}, other videos min {min(other)}, "
          f"median {int(np.median(other))} (radius {dup.KEY_RADIUS})")
    for real, name in ((True, "duplicates, lowest"), (False, "others with close keys, highest")):
        ms = sorted(margins[real], reverse=not real)[:3]
        print(f"    motion margin, {name}: "
              + "; ".join(f"{m:+.3f} {pa} {sa:.0f}s ~ {pb} {sb:.0f}s" for m, pa, sa, pb, sb in ms))
    if wrong:
        print("    wrong pairs:")
        print("\n".join(wrong))


# -- (b) synthetic scale ----------------------------------------------------------------------------
def synthetic_signatures(n: int, rng: np.random.Generator, planted_share: float = 0.01, near_share: float = 0.005):
    """N synthetic clips as arrays (keys (N, 32) uint8, words, offsets), with planted duplicate
    groups and near-miss families (index arrays). Clips last 2-10 s (20-100 motion words).

    Noise levels follow the real variants of (a): a copy's key differs from the original's in
    Binomial(256, p) bits, p ~ U(0.01, 0.10) (fixture copies: median 11 bits, at most 29); its
    motion words are the original's (all of them, or a time-subrange of at least 60 %) with a
    share f ~ U(0.04, 0.22) of bits flipped (fixture copies agree on 0.74-0.96). A near-miss
    family is another segment of the same recording: a key as close as a copy's, motion words
    agreeing with the original's on only 60 % of bits (fixture: distinct segments of one
    recording agree on at most ~0.65 at their best offset)."""
    lens = rng.integers(20, 101, n)
    members = rng.permutation(n)
    planted, near, take = [], [], 0
    for out, share in ((planted, planted_share), (near, near_share)):
        budget = int(n * share)
        while budget >= 2:
            size = min(int(rng.integers(2, 6)), budget)
            budget -= size
            out.append(np.sort(members[take: take + size]))
            take += size
    for g in planted:  # a copy is the whole original or a time-subrange of at least 60 % of it
        for m in g[1:]:
            lens[m] = lens[g[0]] if rng.random() < 0.5 else max(int(lens[g[0]] * rng.uniform(0.6, 1.0)), 8)
    offsets = np.zeros(n + 1, np.int64)
    np.cumsum(lens, out=offsets[1:])
    words = rng.integers(0, 2 ** 32, int(offsets[-1]), dtype=np.uint32)
    keys = rng.integers(0, 256, (n, dup.KEY_BYTES), dtype=np.uint8)
    shifts = np.arange(32, dtype=np.uint64)

    def copy_of(dst, src, flip):
        bits = np.unpackbits(keys[src])
        bits[rng.choice(dup.KEY_BITS, rng.binomial(dup.KEY_BITS, rng.uniform(0.01, 0.10)), replace=False)] ^= 1
        keys[dst] = np.packbits(bits)
        n_w = min(lens[dst], lens[src])
        start = offsets[src] + rng.integers(0, lens[src] - n_w + 1)
        noise = ((rng.random((n_w, 32)) < flip).astype(np.uint64) << shifts).sum(1).astype(np.uint32)
        words[offsets[dst]: offsets[dst] + n_w] = words[start: start + n_w] ^ noise

    for g in planted:
        for m in g[1:]:
            copy_of(m, g[0], rng.uniform(0.04, 0.22))
    for g in near:  # another stretch of the same recording: same look, other motion
        for m in g[1:]:
            copy_of(m, g[0], 0.40)
    return keys, words, offsets, planted, near


def synthetic(n: int, seed: int = 0) -> None:
    rng = np.random.default_rng(seed)
    t_start = time.perf_counter()
    keys, words, offsets, planted, near = synthetic_signatures(n, rng)
    made = time.perf_counter() - t_start
    print(f"\n(b) synthetic: N={n:,} signatures ({made:.0f} s to make; {keys.nbytes / 2**20:.0f} MB of keys, "
          f"{words.nbytes / 2**20:.0f} MB of motion words), {len(planted):,} planted groups "
          f"({sum(len(g) for g in planted):,} clips), {len(near):,} near-miss families", flush=True)
    stats: dict = {}
    t0 = time.perf_counter()
    roots = dup.group_arrays(keys, words, offsets, stats=stats)
    wall = time.perf_counter() - t0
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2 ** 20
    sizes = np.bincount(roots, minlength=n)
    ok = sum(1 for g in planted if np.all(roots[g] == roots[g[0]]) and sizes[roots[g[0]]] == len(g))
    # A false merge: a found group holding clips of two different footages (planted group,
    # near-miss family member, background clip).
    truth = np.arange(n)
    for g in planted:
        truth[g] = g[0]
    pairs = np.unique(np.stack([roots, truth], 1), axis=0)
    impure = int(np.count_nonzero(np.bincount(pairs[:, 0], minlength=n) > 1))
    merged = sum(1 for g in near if len(set(roots[g].tolist())) < len(g))
    data = (keys.nbytes + words.nbytes + offsets.nbytes) / 2 ** 30
    print(f"    group_arrays: {wall:.0f} s wall ({wall / n * 1e6:.1f} us per clip: candidate search "
          f"{stats['search_s']:.0f} s, motion check {stats['verify_s']:.0f} s, "
          f"components {stats['components_s']:.0f} s)")
    print(f"    peak RSS {peak:.2f} GB for the whole process ({data:.2f} GB of it the synthetic signatures); "
          f"{stats['candidates']:,} candidate pairs, {stats['verified']:,} verified")
    print(f"    planted groups recovered exactly: {ok / max(len(planted), 1):.4f} ({ok:,}/{len(planted):,})")
    print(f"    false merges: {impure} groups mixing footages ({merged} of {len(near):,} near-miss families merged)")


def _remove_ours(folder: Path, marker: str) -> None:
    """Remove a folder this bench made (it holds ``marker``, which the bench or its build wrote);
    anything else at that path is left alone, with one line."""
    if not folder.exists():
        return
    if not (folder / marker).is_file():
        sys.exit(f"bench_duplicates: {folder} was not made by this bench (no {marker}); not removing it")
    shutil.rmtree(folder)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--fixtures", default=os.environ.get("PORTRAIT_FIXTURES", str(REPO.parent / "shared" / "fixtures")))
    ap.add_argument("--out", default=str(REPO / "bench" / "out"))
    ap.add_argument("--remake", action="store_true", help="make the duplicate set again")
    ap.add_argument("--rebuild", action="store_true", help="build the set again")
    ap.add_argument("--skip-fixtures", action="store_true")
    ap.add_argument("--skip-synthetic", action="store_true")
    ap.add_argument("--synthetic", type=int, default=10_000_000, metavar="N")
    ap.add_argument("--recompute", action="store_true", help="compute signatures from the crops even if stored")
    ap.add_argument("--reference", action="store_true",
                    help="print the mean histogram of the original clips (manifests/duplicates.py: REF_HIST)")
    args = ap.parse_args()
    if not args.skip_fixtures:
        os.environ["PORTRAIT_FIXTURES"] = args.fixtures
        folder = Path(args.out) / "dupset"
        build = Path(args.out) / "dupset_build"
        if args.remake:
            _remove_ours(folder, "truth.json")
        if args.remake or args.rebuild:
            _remove_ours(build, "catalog.duckdb")
        t = time.perf_counter()
        make_set(Path(args.fixtures), folder)
        print(f"set made in {time.perf_counter() - t:.0f} s: {folder}")
        if not (build / "catalog.duckdb").is_file():
            from pipeline.cli import main as portrait

            code = portrait(["build", "--input", str(folder / "media"), "--out", str(build), "--no-progress",
                             "--set", "ray.executor=inline", "--set", "features.enabled=false"])
            if code:
                return code
        if args.reference:
            ref = reference_histogram(build)
            print("REF_HIST = np.array([\n" + "".join(
                "    " + ", ".join(f"{x:.3f}" for x in ref[k:k + 16]) + ",\n" for k in range(0, ref.size, 16)) + "])")
            return 0
        evaluate(folder, build, args.recompute)
    if not args.skip_synthetic:
        synthetic(args.synthetic)
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Duplicate clips across datasets: the signature's byte layout, the pair decision, the grouping.

The datasets (VoxCeleb2, CelebV-HQ, TalkingHead-1KH, HDTF, VFHQ) cut their clips from the same
YouTube videos, each re-encoded, resized, cropped and cut its own way. A clip's *signature*
(``clips.signature``, made by ``stages/signature.py: clip_signature`` from the stored crops)
says what the clip looks like and how it moves; two clips are duplicates when they show the
same footage: the same picture, and the same motion over a common stretch of time. Distinct
videos of one person, and distinct (non-overlapping) stretches of one recording, are not.
See docs/duplicates.md for the reasoning and the measured figures.

Signature layout, version 1 (little-endian, ``40 + 4 * n_words`` bytes; 440 B for a 10-s clip,
at most 640 B):

====== ======= =================================================================================
offset type    field
====== ======= =================================================================================
0      uint8   version (1)
1      uint8   flags: bit 0 = the motion words were cut at ``MAX_WORDS`` (the clip is longer)
2      uint16  n_words
4      float32 the clip's first timestamp, seconds (information only; never compared)
8      32 B    key: 256-bit SimHash of the clip's colour histogram (time-invariant), see below
40     uint32  n_words motion words, one per ``STEP_S`` (0.1 s) step of the clip's time
====== ======= =================================================================================

- **key**: the RGB histogram (4 levels per channel, 64 bins) of the crops (48x48, at most 32
  frames spread over the clip), square-rooted and unit-normed, minus ``REF_HIST`` (a fixed
  reference: the mean of real talking-head clips, so that each bit splits the population about
  evenly), projected on 256 fixed +/-1 directions (``_projection``, drawn from SHAKE-256 so it
  never changes); bit k = projection k > 0. A histogram does not care where things are in the
  crop, so a re-centred, rescaled or 10 %-cropped copy keeps nearly all bits (fixture copies:
  median 11 of 256 bits apart, at most 29); other videos are a median of 134 bits apart. It
  is the search key: near-neighbour search finds the pairs within ``KEY_RADIUS``
  (``candidate_pairs``).
- **motion words**: the crop's luma on a 6x6 grid (the corners left out: 32 cells), averaged
  over 0.2-s windows every 0.1 s; word k holds, per cell, the sign of the change from step k to
  k+1 relative to the mean change of all cells (so a global brightness or exposure change says
  nothing). Duplicates move alike at the same moments whatever their bitrate, size or crop;
  distinct stretches of one recording, same man, same office, same key, do not.

Pair decision (``is_duplicate``): the keys are within ``KEY_RADIUS`` bits, and at the best time
offset (any offset, in steps, where the clips overlap by at least half of the shorter one and
by ``MIN_WORDS`` words) the motion words agree on a share of bits at least
``max(MIN_AGREEMENT, AGREEMENT_BASE + AGREEMENT_Z / sqrt(overlap words))`` (unrelated footage
agrees on about half, other stretches of the same recording on up to ~0.65; the second term
asks more of short overlaps, where chance does more).

Grouping (``group_arrays``, ``group_duplicates``): LSH on the keys (``BANDS`` bands of
``BAND_BYTES`` key bytes each, bucketed by sorting, never pairwise), key-distance filter, the
motion check on the surviving pairs (vectorised), then connected components. A clip's
``dup_group`` is the smallest clip_id of its component.

Why our own code and not a library (measured in docs/duplicates.md): faiss-cpu's
``IndexBinaryMultiHash`` does the same search but took 4x the time and ~30x the memory on 3M
keys (hash tables of vectors per key) and found fewer planted pairs (256 bits hold only 10
disjoint 24-bit tables); per-frame image hashes (imagehash, PDQ) move with the crops and
cannot tell stretches of one recording apart, and vPDQ ignores time order; datasketch's
MinHash-LSH is for Jaccard sets, through a Python object per clip.
"""
from __future__ import annotations

import hashlib
import struct
import time
from collections.abc import Sequence

import numpy as np

VERSION = 1
HEADER = struct.Struct("<BBHf")  # version, flags, n_words, first timestamp
KEY_BYTES = 32  # 256-bit key
KEY_BITS = KEY_BYTES * 8
WORD_BITS = 32  # motion word: 6x6 luma grid without its 4 corners
STEP_S = 0.1  # one motion word per step of the clip's time
WINDOW_S = 0.2  # each step's luma is the mean over this window (phase-tolerant)
MAX_WORDS = 150  # 15 s of motion kept (the default max_clip_s is 10 s)
HIST_LEVELS = 4  # per channel: 64 colour bins
TRUNCATED = 1

# Decision thresholds, measured on the fixture duplicate set (bench/bench_duplicates.py (a)).
KEY_RADIUS = 56  # key bits (of 256) duplicates may differ in (copies seen: <= 39; other videos: median 134)
MIN_WORDS = 8  # at least 0.8 s of common time
MIN_OVERLAP = 0.5  # and at least half of the shorter clip
MIN_AGREEMENT = 0.675  # share of motion bits that agree (copies seen: >= 0.74; others: <= 0.69)
AGREEMENT_BASE, AGREEMENT_Z = 0.6, 0.55  # and >= BASE + Z / sqrt(words): short overlaps must agree more

# LSH over the keys: a pair is a candidate when its keys agree on all bits of at least one band.
BANDS = 64
BAND_BYTES = 3  # 24 bits: 2^24 buckets per band, ~0.6 chance collisions per clip and band at 10M clips
MAX_BUCKET_PAIRS = 32  # in a bucket bigger than this, each clip is paired with its next 32 only

# Mean sqrt-histogram of real clips: the kept clips of the 27 fixture videos of
# bench/bench_duplicates.py (print it with --reference). Part of the key: changing it is a new VERSION.
REF_HIST = np.array([
    0.426, 0.116, 0.000, 0.000, 0.033, 0.049, 0.002, 0.000, 0.000, 0.003, 0.000, 0.000, 0.000, 0.000, 0.000, 0.000,
    0.180, 0.040, 0.000, 0.000, 0.153, 0.335, 0.052, 0.000, 0.000, 0.038, 0.021, 0.025, 0.000, 0.000, 0.000, 0.000,
    0.012, 0.004, 0.000, 0.000, 0.077, 0.311, 0.029, 0.000, 0.001, 0.230, 0.324, 0.012, 0.000, 0.000, 0.008, 0.013,
    0.000, 0.000, 0.000, 0.000, 0.000, 0.017, 0.002, 0.000, 0.003, 0.088, 0.232, 0.014, 0.000, 0.002, 0.156, 0.113,
])


class SignatureError(ValueError):
    """A signature that is not of this version's layout."""


def _shake(tag: str, n: int) -> np.ndarray:
    return np.frombuffer(hashlib.shake_256(f"portrait-duplicates-v{VERSION}:{tag}".encode()).digest(n), np.uint8)


def _projection() -> np.ndarray:
    """(KEY_BITS, 64) fixed +/-1 matrix of the key's random hyperplanes."""
    bits = np.unpackbits(_shake("projection", KEY_BITS * HIST_LEVELS ** 3 // 8))
    return (bits.astype(np.float64) * 2 - 1).reshape(KEY_BITS, HIST_LEVELS ** 3)


_PROJECTION = _projection()


def _band_bytes(bands: int = BANDS, band_bytes: int = BAND_BYTES) -> np.ndarray:
    """(bands, band_bytes) key byte positions of each LSH band: consecutive groups of fixed
    permutations of the 32 key bytes (drawn from SHAKE-256), so every byte serves about as often."""
    per = KEY_BYTES // band_bytes
    n_perm = -(-bands // per)
    raw = _shake(f"bands{bands}x{band_bytes}", n_perm * KEY_BYTES * 2).reshape(n_perm, KEY_BYTES, 2)
    groups = [np.lexsort((np.arange(KEY_BYTES), r[:, 1], r[:, 0]))[: per * band_bytes].reshape(per, band_bytes)
              for r in raw]
    return np.concatenate(groups)[:bands]


# -- making and reading signatures ----------------------------------------------------------------
def key_from_histogram(hist: np.ndarray) -> np.ndarray:
    """The 32-byte key from a clip's colour histogram (64 bin counts, any scale)."""
    h = np.sqrt(np.asarray(hist, np.float64).reshape(-1) / max(float(np.sum(hist)), 1e-12))
    return np.packbits(_PROJECTION @ (h - REF_HIST) > 0)


def pack_signature(key: np.ndarray, words: np.ndarray, start_s: float = 0.0) -> bytes:
    key = np.asarray(key, np.uint8).reshape(-1)
    if key.size != KEY_BYTES:
        raise ValueError(f"key must be {KEY_BYTES} bytes, not {key.size}")
    words = np.asarray(words, np.uint32).reshape(-1)
    flags = 0
    if words.size > MAX_WORDS:
        words, flags = words[:MAX_WORDS], TRUNCATED
    return HEADER.pack(VERSION, flags, words.size, float(start_s)) + key.tobytes() + words.astype("<u4").tobytes()


def unpack_signature(sig: bytes) -> tuple[np.ndarray, np.ndarray, float, int]:
    """(key uint8[32], motion words uint32[n], first timestamp, flags)."""
    if len(sig) < HEADER.size + KEY_BYTES:
        raise SignatureError(f"a signature is at least {HEADER.size + KEY_BYTES} bytes, not {len(sig)}")
    version, flags, n, start = HEADER.unpack_from(sig)
    if version != VERSION:
        raise SignatureError(f"signature version {version}; this code reads version {VERSION} (recompute signatures)")
    if len(sig) != HEADER.size + KEY_BYTES + 4 * n:
        raise SignatureError(f"signature of {len(sig)} bytes for {n} motion words")
    key = np.frombuffer(sig, np.uint8, KEY_BYTES, HEADER.size)
    words = np.frombuffer(sig, "<u4", n, HEADER.size + KEY_BYTES).astype(np.uint32)
    return key, words, float(start), int(flags)


def signature_arrays(signatures: Sequence[bytes]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Signatures -> (keys (N, 32) uint8, words uint32 (all clips' motion words, concatenated),
    offsets (N + 1) int64: clip i's words are words[offsets[i]:offsets[i + 1]])."""
    keys = np.empty((len(signatures), KEY_BYTES), np.uint8)
    parts, offsets = [], np.zeros(len(signatures) + 1, np.int64)
    for i, s in enumerate(signatures):
        k, w, _, _ = unpack_signature(s)
        keys[i] = k
        parts.append(w)
        offsets[i + 1] = offsets[i] + w.size
    words = np.concatenate(parts) if parts else np.zeros(0, np.uint32)
    return keys, words, offsets


# -- the pair decision ------------------------------------------------------------------------------
def _popcount(x: np.ndarray) -> np.ndarray:
    if hasattr(np, "bitwise_count"):  # NumPy >= 2
        return np.bitwise_count(x)
    table = np.array([bin(i).count("1") for i in range(256)], np.uint8)
    b = table[np.ascontiguousarray(x).view(np.uint8)].reshape(*x.shape, x.dtype.itemsize)
    return b.sum(-1, dtype=np.uint16).astype(np.uint8)


def key_distance(keys_a: np.ndarray, keys_b: np.ndarray) -> np.ndarray:
    """Hamming distance between keys ((..., 32) uint8 each)."""
    x = np.ascontiguousarray(keys_a, np.uint8).view(np.uint64) ^ np.ascontiguousarray(keys_b, np.uint8).view(np.uint64)
    return _popcount(x).sum(-1, dtype=np.int64)


def _threshold(overlap: np.ndarray) -> np.ndarray:
    return np.maximum(MIN_AGREEMENT, AGREEMENT_BASE + AGREEMENT_Z / np.sqrt(np.maximum(overlap, 1)))


def motion_match(wa: np.ndarray, la: np.ndarray, wb: np.ndarray, lb: np.ndarray) -> tuple[np.ndarray, ...]:
    """Best alignment of batches of motion-word sequences.

    ``wa`` (B, T) and ``wb`` (B, T) uint32, padded; ``la``, ``lb`` (B,) their lengths. Offset o
    aligns a[i] with b[i + o]. Returns per pair (margin, agreement, overlap words, offset) at
    the offset with the largest margin = agreement - required agreement, among the offsets
    where the overlap is at least half of the shorter clip and at least MIN_WORDS
    (margin -inf where there is none): a duplicate iff margin >= 0. Symmetric in a and b.
    """
    wa, wb = np.asarray(wa, np.uint32), np.asarray(wb, np.uint32)
    la, lb = np.asarray(la, np.int64), np.asarray(lb, np.int64)
    n, t = wa.shape
    ia = np.arange(t)
    va = ia[None, :] < la[:, None]
    vb = ia[None, :] < lb[:, None]
    # diff[p, i, j] = differing bits of a[i] and b[j] (0 outside either sequence).
    diff = _popcount(wa[:, :, None] ^ wb[:, None, :]).astype(np.uint16)
    diff *= (va[:, :, None] & vb[:, None, :])
    # Sum along diagonals j - i = o: flip rows, pad and re-stride so that column c = o + t - 1.
    skew = np.zeros((n, t, 2 * t), np.uint16)
    skew[:, :, :t] = diff[:, ::-1, :]
    flat = skew.reshape(n, -1)[:, : t * (2 * t - 1)].reshape(n, t, 2 * t - 1)
    dis = flat.sum(1, dtype=np.int64)  # (n, 2t - 1), column c: offset o = c - (t - 1)
    o = np.arange(-(t - 1), t)[None, :]
    overlap = np.minimum(la[:, None], lb[:, None] - o) - np.maximum(0, -o)
    need = np.maximum(np.ceil(MIN_OVERLAP * np.minimum(la, lb)), MIN_WORDS)[:, None]
    ok = overlap >= need
    agree = 1.0 - dis / (WORD_BITS * np.maximum(overlap, 1))
    margin = np.where(ok, agree - _threshold(overlap), -np.inf)
    best = margin.argmax(1)
    rows = np.arange(n)
    return margin[rows, best], agree[rows, best], np.where(ok[rows, best], overlap[rows, best], 0), best - (t - 1)


def _pad(seqs: list[np.ndarray], t: int) -> np.ndarray:
    out = np.zeros((len(seqs), t), np.uint32)
    for i, s in enumerate(seqs):
        out[i, : s.size] = s
    return out


def match_details(a: bytes, b: bytes) -> dict:
    """The figures behind ``is_duplicate``: key distance, best motion alignment, decision."""
    ka, wa, _, _ = unpack_signature(a)
    kb, wb, _, _ = unpack_signature(b)
    d = int(key_distance(ka, kb))
    t = max(wa.size, wb.size, 1)
    margin, agree, overlap, offset = motion_match(_pad([wa], t), [wa.size], _pad([wb], t), [wb.size])
    return {"key_distance": d, "margin": float(margin[0]), "agreement": float(agree[0]), "overlap": int(overlap[0]),
            "offset_s": round(float(offset[0]) * STEP_S, 2),
            "duplicate": bool(d <= KEY_RADIUS and margin[0] >= 0)}


def is_duplicate(a: bytes, b: bytes) -> bool:
    """Whether two clips show the same footage (keys close and motion alike over a common stretch)."""
    return match_details(a, b)["duplicate"]


def explain(a: bytes, b: bytes) -> str:
    """The figures behind ``is_duplicate`` (for benches and debugging)."""
    m = match_details(a, b)
    return (f"key {m['key_distance']}/{KEY_BITS} bits (<= {KEY_RADIUS}), motion agreement {m['agreement']:.3f} over "
            f"{m['overlap']} words at {m['offset_s']:+.1f} s (margin {m['margin']:+.3f})")


# -- grouping ---------------------------------------------------------------------------------------
def band_values(keys: np.ndarray, band: np.ndarray) -> np.ndarray:
    """(N,) uint32: each clip's value in one LSH band (the key bytes ``band`` names)."""
    v = np.zeros(len(keys), np.uint32)
    for k in band:
        v = (v << np.uint32(8)) | keys[:, k]
    return v


def candidate_pairs(keys: np.ndarray, radius: int = KEY_RADIUS, bands: int = BANDS, band_bytes: int = BAND_BYTES,
                    max_bucket_pairs: int = MAX_BUCKET_PAIRS) -> tuple[np.ndarray, np.ndarray]:
    """Pairs (i < j) of clips whose keys agree on at least one band and are within ``radius``
    bits: LSH (sort each band's values, pair the clips of each bucket), never all pairs. In a
    bucket of more than ``max_bucket_pairs + 1`` clips each clip is paired with its next
    ``max_bucket_pairs`` in the bucket (by index), so a degenerate key cannot make the work
    quadratic. Returns two int64 arrays: unique pairs, sorted."""
    keys = np.ascontiguousarray(keys, np.uint8)
    n = len(keys)
    empty = np.zeros(0, np.int64)
    if n < 2:
        return empty, empty
    if n >= 1 << 32:
        raise ValueError("at most 2^32 - 1 clips")
    k64 = keys.view(np.uint64)
    index = np.arange(n, dtype=np.uint64)
    found = []
    for band in _band_bytes(bands, band_bytes):
        # One sort of (value << 32 | index): buckets in order, clips by index within a bucket.
        packed = np.sort((band_values(keys, band).astype(np.uint64) << np.uint64(32)) | index)
        sv = packed >> np.uint64(32)
        order = (packed & np.uint64(0xFFFFFFFF)).astype(np.int64)
        del packed
        starts = np.flatnonzero(np.r_[True, sv[1:] != sv[:-1]])
        ends = np.r_[starts[1:], n]
        run_end = np.repeat(ends, ends - starts)
        p = np.flatnonzero(run_end - np.arange(n) >= 2)  # positions with a later clip in their bucket
        for d in range(1, max_bucket_pairs + 1):
            p = p[run_end[p] > p + d]
            if not p.size:
                break
            i, j = order[p], order[p + d]
            close = _popcount(k64[i] ^ k64[j]).sum(1, dtype=np.int64) <= radius
            found.append(i[close] * n + j[close])  # i < j: index order within a bucket
    if not found:
        return empty, empty
    code = np.unique(np.concatenate(found))
    return code // n, code % n


def verify_pairs(i: np.ndarray, j: np.ndarray, words: np.ndarray, offsets: np.ndarray,
                 batch_cells: int = 1 << 23) -> np.ndarray:
    """Bool per pair: the motion check of ``is_duplicate`` (the key check is the caller's), in
    batches of pairs of similar length."""
    i, j = np.asarray(i, np.int64), np.asarray(j, np.int64)
    lens = np.diff(offsets)
    li, lj = lens[i], lens[j]
    out = np.zeros(i.size, bool)
    if not words.size:  # no clip has motion words (single frames): nothing can be verified
        return out
    order = np.argsort(np.maximum(li, lj), kind="stable")
    s = 0
    while s < order.size:
        t = int(max(li[order[s]], lj[order[s]], 1))
        # Grow the batch while the padded (B, T, T) work stays under batch_cells.
        e = min(order.size, s + max(1, batch_cells // (t * t)))
        t = int(max(li[order[e - 1]], lj[order[e - 1]], 1))
        e = min(e, s + max(1, batch_cells // (t * t)))
        sel = order[s:e]
        idx = np.arange(t)
        ga = offsets[i[sel], None] + idx
        gb = offsets[j[sel], None] + idx
        wa = np.where(idx < li[sel, None], words[np.minimum(ga, words.size - 1)], 0).astype(np.uint32)
        wb = np.where(idx < lj[sel, None], words[np.minimum(gb, words.size - 1)], 0).astype(np.uint32)
        margin = motion_match(wa, li[sel], wb, lj[sel])[0]
        out[sel] = margin >= 0
        s = e
    return out


def components(n: int, i: np.ndarray, j: np.ndarray) -> np.ndarray:
    """Per node, the smallest node index of its connected component (union-find over the edges)."""
    parent = np.arange(n, dtype=np.int64)
    i, j = np.asarray(i, np.int64), np.asarray(j, np.int64)
    while i.size:
        # Hook the larger root under the smaller one; compress paths; repeat until no edge spans two roots.
        ri, rj = parent[i], parent[j]
        while True:
            nri, nrj = parent[ri], parent[rj]
            if np.array_equal(nri, ri) and np.array_equal(nrj, rj):
                break
            ri, rj = nri, nrj
        keep = ri != rj
        i, j, ri, rj = i[keep], j[keep], ri[keep], rj[keep]
        if not i.size:
            break
        lo, hi = np.minimum(ri, rj), np.maximum(ri, rj)
        np.minimum.at(parent, hi, lo)
    while True:
        nxt = parent[parent]
        if np.array_equal(nxt, parent):
            return parent
        parent = nxt


def group_arrays(keys: np.ndarray, words: np.ndarray, offsets: np.ndarray, radius: int = KEY_RADIUS,
                 bands: int = BANDS, stats: dict | None = None) -> np.ndarray:
    """Duplicate groups of N clips given as arrays (see ``signature_arrays``): per clip the
    smallest index of its group (its own index when it has no duplicate). ``stats``, when
    given, receives the candidate and verified pair counts and the time of each step."""
    t0 = time.perf_counter()
    i, j = candidate_pairs(keys, radius, bands)
    t1 = time.perf_counter()
    ok = verify_pairs(i, j, words, offsets)
    t2 = time.perf_counter()
    roots = components(len(keys), i[ok], j[ok])
    if stats is not None:
        stats.update(candidates=int(i.size), verified=int(ok.sum()), search_s=t1 - t0, verify_s=t2 - t1,
                     components_s=time.perf_counter() - t2)
    return roots


def group_duplicates(clip_ids: Sequence[str], signatures: Sequence[bytes | None]) -> list[str | None]:
    """Per clip its ``dup_group``: the smallest clip_id of its group of duplicates (its own id
    when it has none); None where the signature is None. Independent of input order."""
    if len(clip_ids) != len(signatures):
        raise ValueError("clip_ids and signatures differ in length")
    have = sorted((c, s) for c, s in zip(clip_ids, signatures) if s is not None)
    out: list[str | None] = [None] * len(clip_ids)
    if not have:
        return out
    ids = [c for c, _ in have]
    keys, words, offsets = signature_arrays([s for _, s in have])
    roots = group_arrays(keys, words, offsets)
    group = {c: ids[r] for c, r in zip(ids, roots.tolist())}
    return [group[c] if s is not None else None for c, s in zip(clip_ids, signatures)]

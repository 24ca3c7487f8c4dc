"""Rasterise the MediaPipe face mesh with per-vertex attributes (barycentric interpolation).

Why our own rasteriser: OpenCV fills polygons with one colour (no per-vertex attributes) and
its fill rule is not pixel-centre sampling; the GPU rasterisers (nvdiffrast, PyTorch3D) are
not dependencies of this project and are heavyweight for ~850 triangles on a 64x64 grid. A
vectorised NumPy scan over each triangle's bounding box is exact, deterministic and fast here.

Conventions: grid coordinates are continuous, cell (row i, column j) covers [j, j+1) x [i, i+1)
and is sampled at its centre (j + 0.5, i + 0.5), as the crop coordinates of stages/crop.py.

Triangles come from MediaPipe's ``FACEMESH_TESSELATION``, which lists edges, not faces: the
faces are its 3-cliques (less two that enclose a vertex), oriented consistently by walking across
shared edges. Back-facing triangles (the far side of a fold, e.g. the cheek behind a turned nose) are dropped; where
front-facing triangles still overlap, the one nearer the camera wins: by the landmarks' own z
when given, else by a proxy depth (fewer mesh hops from the nose tip = nearer), which orders
nose over cheek for the usual head turns.
"""
from __future__ import annotations

from collections import defaultdict, deque
from functools import lru_cache

import numpy as np

from .face_geometry import NOSE_TIP
from .library_imports import import_mediapipe

N_MESH_VERTICES = 468  # the tessellation covers the face mesh; the 10 iris points are not in it


@lru_cache(maxsize=1)
def face_triangles() -> np.ndarray:
    """(T, 3) int vertex indices of the face mesh triangles, all with the same orientation."""
    import_mediapipe()  # its package first, without matplotlib
    from mediapipe.python.solutions.face_mesh_connections import FACEMESH_TESSELATION

    adjacency = defaultdict(set)
    for a, b in FACEMESH_TESSELATION:
        adjacency[a].add(b)
        adjacency[b].add(a)
    triangles = sorted(
        {tuple(sorted((a, b, c))) for a in adjacency for b in adjacency[a] for c in adjacency[a] & adjacency[b]}
    )
    return _orient_consistently(_drop_enclosing_cliques(np.array(triangles, dtype=np.int64)))


def _drop_enclosing_cliques(tris: np.ndarray) -> np.ndarray:
    """Remove 3-cliques that are not faces: where a vertex sits inside a triangle (the nostrils),
    the outer triangle is a clique whose three edges each border more than two cliques."""
    count = defaultdict(int)
    for tri in tris:
        for k in range(3):
            count[frozenset((tri[k], tri[(k + 1) % 3]))] += 1
    keep = [not all(count[frozenset((tri[k], tri[(k + 1) % 3]))] > 2 for k in range(3)) for tri in tris]
    return tris[np.array(keep)]


def _orient_consistently(tris: np.ndarray) -> np.ndarray:
    """Flip triangles so that neighbours traverse their shared edge in opposite directions."""
    by_edge = defaultdict(list)
    for t, tri in enumerate(tris):
        for k in range(3):
            by_edge[frozenset((tri[k], tri[(k + 1) % 3]))].append(t)
    out = tris.copy()
    done = np.zeros(len(tris), bool)
    for start in range(len(tris)):
        if done[start]:
            continue
        done[start] = True
        queue = deque([start])
        while queue:
            t = queue.popleft()
            directed = {(out[t][k], out[t][(k + 1) % 3]) for k in range(3)}
            for a, b in directed:
                for n in by_edge[frozenset((a, b))]:
                    if done[n]:
                        continue
                    nd = {(out[n][k], out[n][(k + 1) % 3]) for k in range(3)}
                    if (a, b) in nd:  # same direction: neighbour is flipped relative to t
                        out[n] = out[n][[0, 2, 1]]
                    done[n] = True
                    queue.append(n)
    return out


@lru_cache(maxsize=1)
def _proxy_depth() -> np.ndarray:
    """Per-vertex hop distance from the nose tip over the mesh edges (bigger = farther back)."""
    tris = face_triangles()
    adjacency = defaultdict(set)
    for a, b, c in tris:
        adjacency[a] |= {b, c}
        adjacency[b] |= {a, c}
        adjacency[c] |= {a, b}
    dist = np.full(N_MESH_VERTICES, N_MESH_VERTICES, dtype=np.float64)
    dist[NOSE_TIP] = 0
    queue = deque([NOSE_TIP])
    while queue:
        v = queue.popleft()
        for n in adjacency[v]:
            if dist[n] > dist[v] + 1:
                dist[n] = dist[v] + 1
                queue.append(n)
    return dist


def signed_areas(vertices: np.ndarray, tris: np.ndarray | None = None) -> np.ndarray:
    tris = face_triangles() if tris is None else tris
    p0, p1, p2 = (vertices[tris[:, k], :2] for k in range(3))
    return 0.5 * ((p1[:, 0] - p0[:, 0]) * (p2[:, 1] - p0[:, 1]) - (p2[:, 0] - p0[:, 0]) * (p1[:, 1] - p0[:, 1]))


def front_facing(vertices: np.ndarray) -> np.ndarray:
    """Bool per triangle: wound like most of the face (by area), so mirrored images work too."""
    area = signed_areas(vertices)
    front_sign = 1.0 if area.sum() >= 0 else -1.0
    return area * front_sign > 0


def rasterize(
    vertices: np.ndarray,
    attributes: np.ndarray,
    height: int,
    width: int,
    depth: np.ndarray | None = None,
    cull_back_faces: bool = True,
) -> tuple[np.ndarray, np.ndarray]:
    """Interpolate per-vertex ``attributes`` (N, C) over the mesh drawn at ``vertices`` (N, 2).

    ``vertices`` are in grid units (see module docstring); ``depth`` (N,), smaller = nearer,
    resolves overlaps (else the proxy depth). Returns (values (H, W, C) float64, zero where
    not covered, and covered (H, W) bool).
    """
    vertices = np.asarray(vertices, dtype=np.float64)[:N_MESH_VERTICES, :2]
    attributes = np.asarray(attributes, dtype=np.float64)[:N_MESH_VERTICES]
    tris = face_triangles()
    keep = front_facing(vertices) if cull_back_faces else np.abs(signed_areas(vertices)) > 0
    keep &= np.abs(signed_areas(vertices)) > 1e-12
    tris = tris[keep]
    vdepth = _proxy_depth() if depth is None else np.asarray(depth, dtype=np.float64)[:N_MESH_VERTICES]
    priority = -vdepth[tris].mean(axis=1)  # nearer triangles are drawn last

    p = vertices[tris]  # (T, 3, 2)
    # Cells whose centres j + 0.5 fall within each triangle's bounding box.
    x0 = np.clip(np.ceil(p[:, :, 0].min(1) - 0.5), 0, width).astype(np.int64)
    x1 = np.clip(np.floor(p[:, :, 0].max(1) - 0.5), -1, width - 1).astype(np.int64)
    y0 = np.clip(np.ceil(p[:, :, 1].min(1) - 0.5), 0, height).astype(np.int64)
    y1 = np.clip(np.floor(p[:, :, 1].max(1) - 0.5), -1, height - 1).astype(np.int64)
    nx = np.maximum(x1 - x0 + 1, 0)
    ny = np.maximum(y1 - y0 + 1, 0)
    counts = nx * ny
    tri = np.repeat(np.arange(len(tris)), counts)
    local = np.arange(counts.sum()) - np.repeat(np.cumsum(counts) - counts, counts)
    cx = x0[tri] + local % np.maximum(nx[tri], 1)
    cy = y0[tri] + local // np.maximum(nx[tri], 1)
    px, py = cx + 0.5, cy + 0.5

    a, b, c = p[tri, 0], p[tri, 1], p[tri, 2]
    det = (b[:, 1] - c[:, 1]) * (a[:, 0] - c[:, 0]) + (c[:, 0] - b[:, 0]) * (a[:, 1] - c[:, 1])
    l0 = ((b[:, 1] - c[:, 1]) * (px - c[:, 0]) + (c[:, 0] - b[:, 0]) * (py - c[:, 1])) / det
    l1 = ((c[:, 1] - a[:, 1]) * (px - c[:, 0]) + (a[:, 0] - c[:, 0]) * (py - c[:, 1])) / det
    l2 = 1.0 - l0 - l1
    eps = -1e-9  # centres exactly on a shared edge belong to both triangles; priority decides
    inside = (l0 >= eps) & (l1 >= eps) & (l2 >= eps)
    tri, cx, cy, l0, l1, l2 = tri[inside], cx[inside], cy[inside], l0[inside], l1[inside], l2[inside]

    # One winner per cell: the highest priority (ties: the later triangle), via a stable sort.
    cell = cy * width + cx
    order = np.lexsort((priority[tri], cell))
    last = np.r_[cell[order][1:] != cell[order][:-1], True]
    win = order[last]

    attrs = attributes[tris[tri[win]]]  # (n, 3, C)
    vals = l0[win, None] * attrs[:, 0] + l1[win, None] * attrs[:, 1] + l2[win, None] * attrs[:, 2]
    out = np.zeros((height * width, attributes.shape[1]), dtype=np.float64)
    covered = np.zeros(height * width, dtype=bool)
    out[cell[win]] = vals
    covered[cell[win]] = True
    return out.reshape(height, width, -1), covered.reshape(height, width)


def coverage(vertices: np.ndarray, height: int, width: int) -> np.ndarray:
    """(H, W) bool: cells whose centre lies inside any face mesh triangle (the face region)."""
    dummy = np.zeros((N_MESH_VERTICES, 1))
    return rasterize(vertices, dummy, height, width, cull_back_faces=False)[1]

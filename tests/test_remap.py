"""Maps against any reference frame, composed from the stored maps: checked on frames that are
known crops of the stored reference, where the true map is exact."""
from __future__ import annotations

import numpy as np
import pytest

from portrait_model.remap import compose_map

from model_shards import MAP, SIZE, crop_map, identity_map


def true_map(driving: tuple, reference: tuple) -> tuple[np.ndarray, np.ndarray]:
    """Where each cell of crop ``driving`` lies in crop ``reference`` (both crops of one frame)."""
    centres = (np.arange(MAP) + 0.5) / MAP
    gx, gy = np.meshgrid(centres, centres)
    (x0, y0, side), (x1, y1, side1) = driving, reference
    return (x0 + gx * side - x1) / side1, (y0 + gy * side - y1) / side1


@pytest.mark.parametrize("driving,reference", [
    ((100, 120, 300), (60, 80, 380)),  # the reference shows more: everything maps inside it
    ((60, 80, 380), (100, 120, 300)),  # the reference is magnified: part of the driving frame is outside it
])
def test_composed_map_matches_the_true_map_to_a_cell(driving, reference):
    got = compose_map(crop_map(*driving).astype(np.float32), crop_map(*reference).astype(np.float32))
    ex, ey = true_map(driving, reference)
    valid = got[2] > 0.5
    # One cell of the stored reference's grid, in the new reference's units.
    cell = max(1.0, SIZE / reference[2]) / MAP
    inside = (ex > cell) & (ex < 1 - cell) & (ey > cell) & (ey < 1 - cell)
    assert valid[inside].all()
    outside = (ex < -cell) | (ex > 1 + cell) | (ey < -cell) | (ey > 1 + cell)
    assert not valid[outside].any() and (got[:, ~valid] == 0).all()
    assert np.abs(got[0][valid] - ex[valid]).max() <= cell + 1e-6
    assert np.abs(got[1][valid] - ey[valid]).max() <= cell + 1e-6


def test_against_the_stored_reference_the_map_is_unchanged_and_invalid_cells_stay_invalid():
    driving = crop_map(100, 120, 300).astype(np.float32)
    driving[:, :10] = 0  # not face
    got = compose_map(driving, identity_map().astype(np.float32))
    assert (got[2, :10] == 0).all()
    valid = got[2] > 0.5
    assert np.abs(got[:2, valid] - driving[:2, valid]).max() <= 0.5 / MAP + 1e-3

"""Blending weights: per-axis shares against weight maps summed voxel by voxel (pure numpy)."""

from __future__ import annotations

import numpy as np
import pytest

from chunkflow.engine.blending import per_axis_shares, profiles, weight_map
from chunkflow.geometry.boxes import Box
from chunkflow.geometry.placement import PatchGeometry, exact_patches

PATCH = (4, 10, 12)


@pytest.mark.parametrize("kind", ["bump", "gaussian", "constant"])
@pytest.mark.parametrize(
    "target",
    [Box((0, 0, 0), (11, 23, 30)), Box((3, 7, 5), (9, 19, 22))],  # the whole lattice, a cut
)
def test_share_products_are_weights_over_the_summed_weights(kind: str, target: Box) -> None:
    roi = Box((0, 0, 0), (11, 23, 30))
    patches = exact_patches(roi, target, PatchGeometry(PATCH, PATCH, (1, 3, 4)))
    weights = weight_map(kind, PATCH).astype(np.float64)
    summed = np.zeros(target.shape)  # the weight sum, placed patch by patch
    for patch in patches:
        overlap = patch.intersect(target)
        summed[overlap.slices(target.start)] += weights[overlap.slices(patch.start)]
    shares = per_axis_shares(profiles(kind, PATCH), patches, target)
    mean_of_ones = np.zeros(target.shape)
    for patch in patches:
        overlap = patch.intersect(target)
        z, y, x = (shares[axis][patch.start[axis], patch.stop[axis]] for axis in range(3))
        product = z[:, None, None] * y[None, :, None] * x[None, None, :]
        expected = weights[overlap.slices(patch.start)] / summed[overlap.slices(target.start)]
        np.testing.assert_allclose(product, expected, rtol=1e-6)
        mean_of_ones[overlap.slices(target.start)] += product
    np.testing.assert_allclose(mean_of_ones, 1.0, rtol=1e-12)


def test_patches_that_are_no_lattice_are_refused() -> None:
    patches = [Box((0, 0, 0), PATCH), Box((2, 5, 6), (6, 15, 18))]  # a diagonal pair
    with pytest.raises(ValueError, match="lattice"):
        per_axis_shares(profiles("bump", PATCH), patches, Box((0, 0, 0), (6, 15, 18)))

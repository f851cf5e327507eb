"""Patch placement: the global ``exact`` lattice and the chunk-local ``crop`` lattice (pure)."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from chunkflow.geometry.boxes import Box
from chunkflow.geometry.grid import BlockGrid
from chunkflow.geometry.placement import (
    PatchGeometry,
    crop_patches,
    crop_region,
    exact_patches,
    lattice_starts,
)


def brute_force_starts(start: int, length: int, patch: int, stride: int) -> list[int]:
    """Step by ``stride`` while the patch fits; then one patch that ends exactly at the end."""
    end = start + length
    starts, s = [], start
    while s + patch <= end:
        starts.append(s)
        s += stride
    if not starts or starts[-1] + patch < end:
        starts.append(end - patch)
    return starts


# ---------------------------------------------------------------------------------------------
# lattice_starts


LATTICES = [
    (start, length, patch, stride)
    for start in (0, 7, -5)
    for patch in (1, 2, 5, 16)
    for stride in range(1, patch + 1)
    for length in range(patch, patch + 3 * stride + 3)
]


def test_lattice_starts_cover_the_range_exactly():
    for start, length, patch, stride in LATTICES:
        case = f"start {start} length {length} patch {patch} stride {stride}"
        starts = lattice_starts(start, length, patch, stride)
        assert starts == brute_force_starts(start, length, patch, stride), case
        end = start + length
        assert starts[0] == start, case
        assert starts[-1] + patch == end, case  # the last patch ends at the range end
        steps = np.diff(starts)
        assert (steps > 0).all(), case  # strictly increasing: no patch twice
        assert (steps[:-1] == stride).all(), case  # the stride...
        assert (steps <= stride).all(), case  # ...and the last step shorter, if anything
        covered = np.zeros(length, dtype=int)
        for s in starts:
            assert start <= s and s + patch <= end, case  # no patch leaves the range
            covered[s - start : s - start + patch] += 1
        assert (covered > 0).all(), case
        assert len(starts) == -(-(length - patch) // stride) + 1, case  # as few as can be


def test_lattice_starts_examples():
    assert lattice_starts(0, 48, 16, 12) == [0, 12, 24, 32]
    assert lattice_starts(0, 40, 16, 12) == [0, 12, 24]  # 24 + 16 = 40: no extra patch
    assert lattice_starts(10, 16, 16, 4) == [10]
    assert lattice_starts(-3, 7, 3, 3) == [-3, 0, 1]


def test_lattice_starts_for_a_range_shorter_than_a_patch():
    """A single patch at the start, reaching past the end (documented; the plan refuses this for
    the ROI, but a crop chunk of a short edge block can be shorter than a patch)."""
    assert lattice_starts(5, 3, 8, 2) == [5]


# ---------------------------------------------------------------------------------------------
# PatchGeometry


def test_patch_geometry_context_and_stride():
    geometry = PatchGeometry(input_size=(8, 18, 24), output_size=(6, 16, 16), overlap=(2, 4, 0))
    assert geometry.stride == (4, 12, 16)
    assert geometry.context == (1, 1, 4)
    out = Box.from_shape((3, -2, 5), geometry.output_size)
    inp = geometry.input_box(out)
    assert inp.shape == geometry.input_size
    assert inp == Box((2, -3, 1), (10, 15, 25))  # centred: the context on both sides
    assert inp.grow(tuple(-c for c in geometry.context)) == out


# ---------------------------------------------------------------------------------------------
# exact placement: one global lattice, split among the blocks


GEOMETRY = PatchGeometry(input_size=(8, 18, 20), output_size=(6, 16, 18), overlap=(2, 4, 6))

EXACT_CASES = [
    (Box((0, 0, 0), (20, 48, 56)), (12, 24, 32), GEOMETRY),  # the test fixture
    (Box((3, -5, 7), (23, 40, 50)), (4, 8, 8), GEOMETRY),  # blocks smaller than a patch
    (Box((-4, 2, 1), (9, 21, 24)), (5, 7, 11), GEOMETRY),  # sizes unrelated to the stride
    (Box((0, 0, 0), (16, 16, 18)), (64, 64, 64), GEOMETRY),  # one block
    (
        Box((1, 1, 1), (30, 11, 12)),
        (8, 3, 4),
        PatchGeometry((5, 5, 5), (5, 5, 5), (0, 0, 0)),  # no overlap: the lattice tiles
    ),
    (
        Box((0, 0, 0), (9, 9, 9)),
        (2, 3, 4),
        PatchGeometry((7, 3, 9), (3, 3, 3), (2, 1, 0)),  # stride 1 along z
    ),
]


def global_lattice(roi: Box, geometry: PatchGeometry) -> set[Box]:
    per_axis = [
        brute_force_starts(r0, r1 - r0, p, s)
        for r0, r1, p, s in zip(
            roi.start, roi.stop, geometry.output_size, geometry.stride, strict=True
        )
    ]
    return {Box.from_shape(start, geometry.output_size) for start in itertools.product(*per_axis)}


def overlaps(a: Box, b: Box) -> bool:
    return all(
        max(a0, b0) < min(a1, b1)
        for a0, a1, b0, b1 in zip(a.start, a.stop, b.start, b.stop, strict=True)
    )


@pytest.mark.parametrize("roi, block_size, geometry", EXACT_CASES)
def test_exact_patches_of_all_blocks_are_the_global_lattice(roi, block_size, geometry):
    grid = BlockGrid(roi, block_size)
    lattice = global_lattice(roi, geometry)
    owners: dict[Box, set[str]] = {}
    for block in grid:
        patches = exact_patches(roi, block.box, geometry)
        assert len(set(patches)) == len(patches), "a patch twice in one block"
        assert patches == sorted(patches), "not in a fixed (z-major) order"
        for patch in patches:
            assert patch in lattice, f"{patch} is not on the global lattice"
            owners.setdefault(patch, set()).add(block.id)
    # every lattice patch appears in exactly the blocks its output touches
    assert set(owners) == lattice
    for patch in lattice:
        touched = {b.id for b in grid if overlaps(patch, b.box)}
        assert owners[patch] == touched, patch


@pytest.mark.parametrize("roi, block_size, geometry", EXACT_CASES)
def test_exact_patches_cover_their_block_and_stay_in_the_roi(roi, block_size, geometry):
    for block in BlockGrid(roi, block_size):
        covered = np.zeros(block.box.shape, dtype=bool)
        for patch in exact_patches(roi, block.box, geometry):
            assert roi.contains(patch)
            covered[patch.intersect(block.box).slices(block.box.start)] = True
        assert covered.all()


def test_exact_patches_do_not_depend_on_the_block_size():
    """Each voxel gets the same patches whichever block computes it: the seamless property."""
    roi = Box((2, 0, -3), (25, 37, 41))
    voxels = list(
        itertools.product(*(range(a, b, 3) for a, b in zip(roi.start, roi.stop, strict=True)))
    )

    def patches_per_voxel(block_size):
        grid = BlockGrid(roi, block_size)
        patches = {block.id: exact_patches(roi, block.box, GEOMETRY) for block in grid}
        out = {}
        for voxel in voxels:
            point = Box(voxel, tuple(c + 1 for c in voxel))
            index = tuple(
                (c - r) // b for c, r, b in zip(voxel, roi.start, block_size, strict=True)
            )
            block = grid.block(index)
            assert block.box.contains(point)
            out[voxel] = [p for p in patches[block.id] if p.contains(point)]
        return out

    whole = patches_per_voxel(roi.shape)
    assert all(whole.values())
    assert patches_per_voxel((4, 8, 8)) == whole
    assert patches_per_voxel((12, 16, 24)) == whole


# ---------------------------------------------------------------------------------------------
# crop placement: a chunk-local lattice over block + margin


CROP_CASES = [
    (Box((0, 0, 0), (20, 48, 56)), (12, 24, 32), (1, 4, 4)),  # the fixture, default margin
    (Box((3, -5, 7), (23, 40, 50)), (8, 16, 16), (2, 3, 5)),
    (Box((0, 0, 0), (40, 40, 40)), (12, 24, 32), (0, 0, 0)),  # no margin
    (Box((0, 0, 0), (40, 40, 40)), (12, 24, 32), (7, 20, 19)),  # margin wider than a stride
]


@pytest.mark.parametrize("roi, block_size, margin", CROP_CASES)
def test_crop_patches_stay_in_the_region_and_cover_the_block(roi, block_size, margin):
    stride = GEOMETRY.stride
    checked = 0
    for block in BlockGrid(roi, block_size):
        region = crop_region(block.box, margin)
        assert region == Box(
            tuple(s - m for s, m in zip(block.box.start, margin, strict=True)),
            tuple(s + m for s, m in zip(block.box.stop, margin, strict=True)),
        )
        if any(r < p for r, p in zip(region.shape, GEOMETRY.output_size, strict=True)):
            continue  # see test_crop_patches_of_a_region_shorter_than_a_patch
        checked += 1
        patches = crop_patches(block.box, GEOMETRY, margin)
        assert len(set(patches)) == len(patches)
        covered = np.zeros(block.box.shape, dtype=bool)
        for patch in patches:
            assert region.contains(patch), (block, patch)
            assert overlaps(patch, block.box), "a patch that adds nothing to the block"
            covered[patch.intersect(block.box).slices(block.box.start)] = True
            # on the region's own lattice: a stride multiple from its start, or its last patch
            for axis in range(3):
                offset = patch.start[axis] - region.start[axis]
                assert offset % stride[axis] == 0 or patch.stop[axis] == region.stop[axis]
        assert covered.all()
        # exactly the patches of the region's lattice that touch the block
        expected = {p for p in global_lattice(region, GEOMETRY) if overlaps(p, block.box)}
        assert set(patches) == expected
    assert checked >= 2


def test_crop_patches_of_a_region_shorter_than_a_patch():
    """A 4-voxel edge block with margin 1 is a 6-voxel region along x, shorter than the 18-voxel
    patch: one patch along x, at the region start, still covering the block."""
    block = Box((0, 0, 52), (12, 24, 56))
    patches = crop_patches(block, GEOMETRY, (1, 4, 1))
    assert {p.start[2] for p in patches} == {51}
    for patch in patches:
        assert patch.start[2] <= block.start[2] and patch.stop[2] >= block.stop[2]

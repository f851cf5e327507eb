"""Boxes and the block grid, checked against voxel masks and brute force (pure, no I/O)."""

from __future__ import annotations

import dataclasses
import itertools
import random

import numpy as np
import pytest

from chunkflow.geometry.boxes import Box, bounding_box, ceil_div, vec
from chunkflow.geometry.grid import BlockGrid, nearest_multiples

# every box of these tests lies in this world: masks over it are the independent model of a box
LO, HI = -6, 14
WORLD = (HI - LO,) * 3


def mask(box: Box) -> np.ndarray:
    """The voxels of ``box`` as a boolean array over the world, by comparing coordinates."""
    z, y, x = np.indices(WORLD) + LO
    inside = np.ones(WORLD, dtype=bool)
    for axis, c in enumerate((z, y, x)):
        inside &= (c >= box.start[axis]) & (c < box.stop[axis])
    return inside


def random_box(rng: random.Random, max_size: int = 8) -> Box:
    start = [rng.randrange(LO, HI - max_size) for _ in range(3)]
    shape = [rng.randrange(0, max_size + 1) for _ in range(3)]
    return Box.from_shape(start, shape)


@pytest.fixture
def boxes() -> list[Box]:
    rng = random.Random(7)
    return [random_box(rng) for _ in range(60)]


# ---------------------------------------------------------------------------------------------
# Box


def test_shape_size_and_empty_match_the_mask(boxes):
    for box in boxes:
        assert box.size == mask(box).sum()
        assert box.empty == (not mask(box).any())
        assert box.shape == tuple(b - a for a, b in zip(box.start, box.stop, strict=True))


def test_from_shape():
    box = Box.from_shape((1, -2, 3), (4, 5, 6))
    assert box.start == (1, -2, 3) and box.stop == (5, 3, 9)
    assert box.shape == (4, 5, 6)


def test_intersect_is_the_and_of_the_masks(boxes):
    for a, b in itertools.product(boxes[:25], boxes[:25]):
        both = a.intersect(b)
        assert np.array_equal(mask(both), mask(a) & mask(b)), (a, b)
        assert both == b.intersect(a)
        assert a.contains(both) or both.empty


def test_disjoint_boxes_intersect_empty():
    a = Box((0, 0, 0), (2, 2, 2))
    assert a.intersect(Box((5, 0, 0), (7, 2, 2))).empty
    assert a.intersect(Box((2, 0, 0), (4, 2, 2))).empty  # touching faces share no voxel
    assert a.intersect(Box((1, 1, 1), (3, 3, 3))) == Box((1, 1, 1), (2, 2, 2))


def test_contains_is_mask_inclusion(boxes):
    for a, b in itertools.product(boxes[:30], boxes[:30]):
        if b.empty:
            continue
        included = not (mask(b) & ~mask(a)).any()
        assert a.contains(b) == included, (a, b)
    box = boxes[0]
    assert box.contains(box)


def test_grow_and_shift_move_the_faces():
    box = Box((2, 3, 4), (6, 8, 10))
    assert box.grow((1, 2, 3)) == Box((1, 1, 1), (7, 10, 13))
    assert box.grow((1, 0, 0), (0, 0, 2)) == Box((1, 3, 4), (6, 8, 12))
    assert box.grow((-1, -1, -1)) == Box((3, 4, 5), (5, 7, 9))  # negative growth shrinks
    assert box.shift((-2, 0, 5)) == Box((0, 3, 9), (4, 8, 15))
    with pytest.raises(ValueError):
        box.grow((-3, 0, 0))  # would turn it inside out


def test_grow_and_shift_against_masks(boxes):
    def roll(m: np.ndarray, shift: tuple[int, int, int]) -> np.ndarray:
        return np.roll(m, shift, axis=(0, 1, 2))

    inner = [b for b in boxes if not b.empty and min(b.start) - 2 >= LO and max(b.stop) + 2 <= HI]
    assert len(inner) > 10
    for box in inner:
        # growing by (1, 2, 0) before and (0, 1, 2) after: the union of shifted masks, per axis
        expected = mask(box)
        for axis, (before, after) in enumerate(zip((1, 2, 0), (0, 1, 2), strict=True)):
            layers = [
                roll(expected, tuple(k if a == axis else 0 for a in range(3)))
                for k in range(-before, after + 1)
            ]
            expected = np.logical_or.reduce(layers)
        assert np.array_equal(mask(box.grow((1, 2, 0), (0, 1, 2))), expected), box
        shift = (1, -2, 2)
        assert np.array_equal(mask(box.shift(shift)), roll(mask(box), shift)), box


def test_operations_return_new_boxes_and_leave_the_original():
    box = Box((0, 0, 0), (4, 4, 4))
    copy = Box((0, 0, 0), (4, 4, 4))
    box.grow((1, 1, 1))
    box.shift((1, 1, 1))
    box.intersect(Box((2, 2, 2), (3, 3, 3)))
    assert box == copy


def test_slices_cut_the_box_out_of_an_array(boxes):
    world = np.arange(np.prod(WORLD)).reshape(WORLD)
    origin = (LO, LO, LO)  # world[0, 0, 0] is voxel (LO, LO, LO)
    for box in boxes:
        assert np.array_equal(np.sort(world[box.slices(origin)], axis=None), world[mask(box)])
        assert world[box.slices(origin)].shape == box.shape
    box = Box((3, 4, 5), (5, 7, 9))
    assert box.slices() == (slice(3, 5), slice(4, 7), slice(5, 9))
    assert box.slices((3, 4, 5)) == (slice(0, 2), slice(0, 3), slice(0, 4))


def test_boxes_are_frozen_and_hashable():
    box = Box((0, 1, 2), (3, 4, 5))
    with pytest.raises(dataclasses.FrozenInstanceError):
        box.start = (1, 1, 1)  # type: ignore[misc]
    # lists and numpy integers are normalised: equal boxes, equal hashes, one set entry
    same = Box([0, 1, 2], np.array([3, 4, 5]))
    assert same == box and hash(same) == hash(box)
    assert isinstance(same.start, tuple) and all(type(v) is int for v in same.stop)
    assert len({box, same, Box((0, 1, 2), (3, 4, 6))}) == 2
    assert {box: "a"}[same] == "a"


@pytest.mark.parametrize(
    "start, stop",
    [
        ((0, 0, 0), (1, -1, 1)),
        ((5, 0, 0), (4, 1, 1)),
        ((0, 0), (1, 1)),
        ((0, 0, 0, 0), (1, 1, 1, 1)),
    ],
)
def test_invalid_boxes_raise(start, stop):
    with pytest.raises(ValueError):
        Box(start, stop)


def test_invalid_shapes_raise():
    with pytest.raises(ValueError):
        Box.from_shape((0, 0, 0), (1, -1, 1))
    with pytest.raises(ValueError):
        vec((1, 2))


def test_bounding_box_holds_every_box(boxes):
    non_empty = [b for b in boxes if not b.empty]
    outer = bounding_box(non_empty)
    assert all(outer.contains(b) for b in non_empty)
    for axis in range(3):  # and is the smallest such box
        assert outer.start[axis] == min(b.start[axis] for b in non_empty)
        assert outer.stop[axis] == max(b.stop[axis] for b in non_empty)
    with pytest.raises(ValueError):
        bounding_box([])


def test_ceil_div():
    for a, b in itertools.product(range(-20, 21), range(1, 7)):
        assert ceil_div(a, b) == -((-a) // b) == int(np.ceil(a / b))


# ---------------------------------------------------------------------------------------------
# BlockGrid


GRIDS = [
    (Box((0, 0, 0), (20, 48, 56)), (12, 24, 32)),  # the test fixture's grid
    (Box((3, -5, 7), (20, 17, 30)), (4, 8, 8)),  # ROI not at 0, edge blocks everywhere
    (Box((-8, 0, 2), (8, 16, 18)), (16, 4, 5)),  # one block along z, exact fit in y, short x
    (Box((1, 1, 1), (2, 3, 4)), (64, 64, 64)),  # one block larger than the ROI
]


@pytest.mark.parametrize("roi, block_size", GRIDS)
def test_block_count_and_shape(roi, block_size):
    grid = BlockGrid(roi, block_size)
    per_axis = [-(-n // b) for n, b in zip(roi.shape, block_size, strict=True)]
    assert grid.shape == tuple(per_axis)
    assert len(grid) == np.prod(per_axis) == len(list(grid))


@pytest.mark.parametrize("roi, block_size", GRIDS)
def test_blocks_tile_the_roi_exactly_once(roi, block_size):
    grid = BlockGrid(roi, block_size)
    count = np.zeros(roi.shape, dtype=int)
    for block in grid:
        assert roi.contains(block.box)
        count[block.box.slices(roi.start)] += 1
    assert (count == 1).all()


@pytest.mark.parametrize("roi, block_size", GRIDS)
def test_blocks_sit_on_a_grid_anchored_at_the_roi_start_and_only_the_last_is_short(roi, block_size):
    grid = BlockGrid(roi, block_size)
    for block in grid:
        for axis in range(3):
            i, n = block.index[axis], grid.shape[axis]
            start = roi.start[axis] + i * block_size[axis]
            assert block.box.start[axis] == start
            if i < n - 1:
                assert block.box.shape[axis] == block_size[axis]
            else:  # the last block ends at the ROI end, and is no longer than the others
                assert block.box.stop[axis] == roi.stop[axis]
                assert 0 < block.box.shape[axis] <= block_size[axis]


@pytest.mark.parametrize("roi, block_size", GRIDS)
def test_block_ids_round_trip_and_are_unique(roi, block_size):
    grid = BlockGrid(roi, block_size)
    ids = grid.ids()
    assert len(set(ids)) == len(ids) == len(grid)
    for block in grid:
        assert block.id == "z{}_y{}_x{}".format(*block.index)
        assert grid.block_by_id(block.id) == block
        assert grid.block(block.index) == block
    # z-major order
    assert [b.index for b in grid] == sorted(b.index for b in grid)


@pytest.mark.parametrize(
    "block_id", ["z2_y0_x0", "z0_y-1_x0", "z0_y0", "block", "z01_y0_x0", "Z0_Y0_X0", "z0_y0_x0 "]
)
def test_unknown_block_ids_raise_key_error(block_id):
    grid = BlockGrid(Box((0, 0, 0), (20, 48, 56)), (12, 24, 32))
    with pytest.raises(KeyError):
        grid.block_by_id(block_id)


def test_block_index_outside_the_grid_raises():
    grid = BlockGrid(Box((0, 0, 0), (20, 48, 56)), (12, 24, 32))
    for index in [(2, 0, 0), (0, -1, 0), (0, 0, 2)]:
        with pytest.raises(KeyError):
            grid.block(index)


def test_nearest_multiples_against_brute_force():
    for unit in range(1, 13):
        multiples = [unit * k for k in range(1, 40)]
        for value in range(1, 6 * unit + 3):
            lower, upper = nearest_multiples(value, unit)
            below = [m for m in multiples if m <= value]
            assert lower == (max(below) if below else unit)
            assert upper == min(m for m in multiples if m >= value)
            assert lower % unit == 0 and upper % unit == 0 and lower >= unit
            if value % unit == 0:
                assert lower == upper == value

"""Skipping background blocks and selecting blocks with a mask, checked against direct
computations: a skipped block is zeros and every other block is what a run without skipping
writes; the masked blocks are those a voxel-by-voxel upsampling of the mask selects."""

from __future__ import annotations

import numpy as np
import pytest
from helpers import config_with, store_id, write_volume
from run_helpers import run_all_blocks

from chunkflow import config as config_mod
from chunkflow.errors import ConfigError
from chunkflow.plan.run_plan import make_plan
from chunkflow.state.markers import read_markers
from chunkflow.state.run_state import RunState
from chunkflow.volumes import open_volume


def with_background(small_config: dict, tmp_path, fill: int) -> dict:
    """``small_config`` over its volume with ``fill`` in every z-slice that the chunks of the
    blocks z0 (output z 0..11) read; the chunks of the blocks z1 also read later slices."""
    plan = make_plan(config_mod.parse(small_config))
    chunks = [plan.chunk_box(plan.patches(b)) for b in plan.grid]
    cut = max(c.stop[0] for c, b in zip(chunks, plan.grid, strict=True) if b.index[0] == 0)
    assert cut < 20
    volume = open_volume(small_config["input"]["path"])
    data = volume.read(volume.bounds)
    data[:cut] = fill
    raw = write_volume(tmp_path / f"raw_{fill}.zarr", data, chunks=(4, 8, 8))
    # zarr-python 3 leaves out the chunks of only 0 (its fill value): they are no gap
    return config_with(small_config, **{"input.path": raw, "input.fill_missing": True})


@pytest.mark.parametrize("fill", [0, 7])
def test_background_blocks_are_zeros_and_the_rest_unchanged(small_config, tmp_path, fill):
    config = with_background(small_config, tmp_path, fill)
    skipping = run_all_blocks(config_with(config, **{"input.background": fill}))
    every = config_with(
        config, **{"output.path": str(tmp_path / "all.zarr")}, state_dir=str(tmp_path / "all_state")
    )
    every["input"]["background"] = None  # (config_with drops a key set to None)
    inferred = run_all_blocks(every)
    # block rows z0 are output z 0..11; the net on a constant input does not give zeros
    assert not skipping[:, :12].any() and inferred[:, :12].min() > 0
    np.testing.assert_array_equal(skipping[:, 12:], inferred[:, 12:])

    settings = config_mod.parse(config_with(config, **{"input.background": fill}))
    plan = make_plan(settings)
    census = read_markers(RunState.of(plan), plan.block_ids, store_id(plan))
    done, stale, missing = census.done, census.stale, census.missing
    assert not stale and not missing
    skipped = {m.block for m in done if m.skipped == "background"}
    assert skipped == {b.id for b in plan.blocks if b.index[0] == 0}
    assert all(m.patches == 0 for m in done if m.skipped)


def test_changing_the_background_changes_the_fingerprint(small_config):
    one = config_mod.parse(small_config).result_fingerprint("m", {})
    other = config_mod.parse(
        config_with(small_config, **{"input.background": 3})
    ).result_fingerprint("m", {})
    assert one != other


def expected_blocks(plan, mask: np.ndarray, offset, factor) -> set[str]:
    """Blocks holding an input voxel whose mask voxel (index // factor) is non-zero."""
    roi = plan.roi
    indices = []
    for axis in range(3):
        j = np.arange(roi.start[axis], roi.stop[axis]) // factor[axis] - offset[axis]
        inside = (j >= 0) & (j < mask.shape[axis])
        indices.append((np.where(inside, j, 0), inside))
    (jz, iz), (jy, iy), (jx, ix) = indices
    full = mask[np.ix_(jz, jy, jx)] & iz[:, None, None] & iy[None, :, None] & ix[None, None, :]
    return {
        b.id
        for b in plan.grid
        if full[
            tuple(
                slice(a - r, c - r)
                for a, c, r in zip(b.box.start, b.box.stop, roi.start, strict=True)
            )
        ].any()
    }


@pytest.mark.parametrize("factor", [(1, 1, 1), (2, 4, 8), (4, 16, 16)])
def test_mask_selects_the_blocks_over_its_non_zero_voxels(small_config, tmp_path, factor):
    rng = np.random.default_rng(sum(factor))
    shape = tuple(-(-n // f) + 1 for n, f in zip((20, 48, 56), factor, strict=True))
    mask = (rng.random(shape) > 0.97).astype(np.uint8)
    mask[1, 1, 1] = 1  # mask voxel (2, 1, 0): inside the ROI for every factor
    offset = (1, 0, -1)
    path = write_volume(
        tmp_path / "mask.zarr", mask, offset=offset, resolution=tuple(map(float, factor))
    )
    plan = make_plan(config_mod.parse(config_with(small_config, **{"mask.path": path})))
    want = expected_blocks(plan, mask.astype(bool), offset, factor)
    assert set(plan.block_ids) == want and 0 < len(want)
    assert plan.block_ids == [b.id for b in plan.grid if b.id in want]  # grid order kept


def test_mask_mistakes_are_one_line(small_config, tmp_path):
    empty = write_volume(tmp_path / "empty.zarr", np.zeros((4, 4, 4), dtype=np.uint8))
    two = write_volume(tmp_path / "two.zarr", np.ones((2, 4, 4, 4), dtype=np.uint8))
    for path, fragment in [
        (empty, "has no non-zero voxel over the ROI"),
        (two, "has 2 channels; a mask is one (z, y, x) volume"),
        (str(tmp_path / "none.zarr"), "mask.path:"),
    ]:
        plan = make_plan(config_mod.parse(config_with(small_config, **{"mask.path": path})))
        with pytest.raises(ConfigError) as err:
            plan.blocks  # noqa: B018 (the mask is read on first use)
        assert fragment in str(err.value) and "\n" not in str(err.value)

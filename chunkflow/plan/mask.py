"""Which blocks a mask volume selects: those overlapping one of its non-zero voxels.

The mask may have another resolution than the input (usually coarser); both are placed in
physical space by voxel offset times resolution, and a block selects every mask voxel that
overlaps it physically. Mask voxels outside the mask volume count as zero.
"""

from __future__ import annotations

import math
from fractions import Fraction
from typing import TYPE_CHECKING

import numpy as np

from chunkflow.errors import ConfigError, VolumeError
from chunkflow.geometry.boxes import Box
from chunkflow.geometry.grid import Block, BlockGrid
from chunkflow.volumes import VolumeInfo, open_volume, read_padded

if TYPE_CHECKING:
    from chunkflow.settings import MaskSettings


def mask_box(box: Box, resolution: tuple[float, ...], mask_resolution: tuple[float, ...]) -> Box:
    """The mask voxels that overlap ``box`` (input voxels) in physical space."""
    start, stop = [], []
    for a, b, r, m in zip(box.start, box.stop, resolution, mask_resolution, strict=True):
        ratio = Fraction(str(r)) / Fraction(str(m))  # exact: 8 / 32, 4.2 / 8.4
        start.append(math.floor(a * ratio))
        stop.append(math.ceil(b * ratio))
    return Box(tuple(start), tuple(stop))


def masked_blocks(grid: BlockGrid, input_info: VolumeInfo, settings: MaskSettings) -> list[Block]:
    """The blocks of ``grid`` that overlap a non-zero voxel of the mask ``settings`` name."""
    path = settings.path
    try:
        mask = open_volume(path, mip=settings.mip, options=settings.storage_options)
    except VolumeError as err:
        raise ConfigError(f"mask.path: {err}") from None
    if mask.info.channels is not None:
        raise ConfigError(
            f"mask.path '{path}' has {mask.info.channels} channels; a mask is one (z, y, x) volume"
        )
    whole = mask_box(grid.roi, input_info.resolution, mask.info.resolution)
    selected = read_padded(mask, whole, "zero") != 0
    blocks = [
        block
        for block in grid
        if np.any(
            selected[
                mask_box(block.box, input_info.resolution, mask.info.resolution).slices(whole.start)
            ]
        )
    ]
    if not blocks:
        raise ConfigError(
            f"the mask '{path}' has no non-zero voxel over the ROI {grid.roi}; check mask.path, "
            "its voxel_offset and resolution (they place it over the input)"
        )
    return blocks

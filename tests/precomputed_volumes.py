"""Neuroglancer precomputed volumes written with cloud-volume itself (not chunkflow)."""

from __future__ import annotations

import numpy as np
from cloudvolume import CloudVolume

OFFSET = (7, 5, 3)  # z, y, x
RESOLUTION = (40.0, 8.0, 4.0)
CHUNKS = (6, 20, 20)  # divides none of 16 x 48 x 48


def write_precomputed(url: str, data: np.ndarray, offset=OFFSET, resolution=RESOLUTION) -> str:
    """``data`` ((c,) z, y, x) as a precomputed image made by cloud-volume, in x, y, z, c."""
    czyx = data if data.ndim == 4 else data[None]
    meta = CloudVolume.create_new_info(
        num_channels=czyx.shape[0],
        layer_type="image",
        data_type=str(data.dtype),
        encoding="raw",
        resolution=list(resolution[::-1]),
        voxel_offset=list(offset[::-1]),
        volume_size=list(czyx.shape[:0:-1]),
        chunk_size=list(CHUNKS[::-1]),
    )
    cv = CloudVolume(url, info=meta, progress=False)
    cv.commit_info()
    cv[:, :, :] = czyx.transpose(3, 2, 1, 0)
    return url

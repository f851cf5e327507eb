"""Voxel values between the stores' dtypes and the network's float32 (numpy only)."""

from __future__ import annotations

import numpy as np


def scale_input(data: np.ndarray, mode: str) -> np.ndarray:
    """float32 network input; with ``auto`` integers map to [0, 1] (uint8 / 255)."""
    if mode == "auto" and np.issubdtype(data.dtype, np.integer):
        info = np.iinfo(data.dtype)
        scaled = data.astype(np.float32)  # then in place: no temporaries
        if info.min:
            scaled -= np.float32(info.min)
        scaled /= np.float32(info.max - info.min)
        return scaled
    return data.astype(np.float32, copy=False)


def to_output_dtype(data: np.ndarray, dtype: str) -> np.ndarray:
    """float32 predictions as the output dtype; uint8 clips to [0, 1], scales by 255, rounds.

    Works in place where it can (``data`` is consumed): no block-sized temporaries, and float32
    data is returned as it is.
    """
    if dtype == "uint8":
        np.clip(data, 0.0, 1.0, out=data)
        data *= 255.0
        np.rint(data, out=data)
        return data.astype(np.uint8)
    return data.astype(dtype, copy=False)

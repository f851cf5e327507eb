"""An independent reference for the inference numbers: every patch of a given placement run
through the model one by one on the whole padded volume, blended in float64 (no chunkflow code
but its weight map)."""

from __future__ import annotations

import numpy as np
import torch
from helpers import load_torchscript

from chunkflow.engine.blending import weight_map


def patch_starts(lo: int, length: int, patch: int, stride: int) -> list[int]:
    """Patch starts written out independently of chunkflow.geometry.placement: stride steps, last flush."""
    if length <= patch:
        return [lo]
    count = -(-(length - patch) // stride) + 1
    return [min(lo + k * stride, lo + length - patch) for k in range(count)]


def _padded_volume(config: dict, pad: int) -> tuple[np.ndarray, np.ndarray]:
    """The input in [0, 1] as float64, padded by ``pad`` on every side, and the volume's offset."""
    import zarr

    array = zarr.open_array(config["input"]["path"], mode="r")
    offset = np.array(array.attrs.get("voxel_offset", [0, 0, 0]))
    data = array[...].astype(np.float64) / 255.0
    mode = (
        "reflect" if config.get("input", {}).get("padding", "reflect") == "reflect" else "constant"
    )
    return np.pad(data, pad, mode=mode), offset - pad


def _predict(model: torch.nn.Module, patch: np.ndarray) -> np.ndarray:
    with torch.no_grad():
        return model(torch.from_numpy(patch.astype(np.float32))[None, None])[0].double().numpy()


def reference(
    config: dict, roi_start, roi_shape, starts_per_axis, region_start, region_shape, crop_to=None
):
    """Weighted average over the given patch starts, in float64, over ``region``, cropped to ``crop_to``."""
    model = load_torchscript(config["model"]["path"])
    pi = np.array(config["model"]["input_patch_size"])
    po = np.array(config["model"].get("output_patch_size", pi))
    context = (pi - po) // 2
    padded, padded_origin = _padded_volume(config, pad=int(max(pi)) * 2)
    weight = weight_map(config.get("inference", {}).get("blend", "bump"), tuple(po)).astype(
        np.float64
    )
    total = weight_sum = None
    for z in starts_per_axis[0]:
        for y in starts_per_axis[1]:
            for x in starts_per_axis[2]:
                start = np.array([z, y, x])
                lo = start - context - padded_origin
                patch = padded[lo[0] : lo[0] + pi[0], lo[1] : lo[1] + pi[1], lo[2] : lo[2] + pi[2]]
                out = _predict(model, patch)
                if total is None:
                    total = np.zeros((out.shape[0], *region_shape))
                    weight_sum = np.zeros(region_shape)
                # clip the patch to the region
                a = np.maximum(start, region_start)
                b = np.minimum(start + po, np.array(region_start) + region_shape)
                src = tuple(slice(i - s, j - s) for i, j, s in zip(a, b, start, strict=True))
                dst = tuple(slice(i - r, j - r) for i, j, r in zip(a, b, region_start, strict=True))
                total[(slice(None), *dst)] += out[(slice(None), *src)] * weight[src]
                weight_sum[dst] += weight[src]
    result = total / weight_sum
    if crop_to is not None:
        c0, c1 = crop_to
        sl = tuple(slice(i - r, j - r) for i, j, r in zip(c0, c1, region_start, strict=True))
        result = result[(slice(None), *sl)]
    return result


def whole_roi_reference(config: dict, roi_start, roi_shape) -> np.ndarray:
    po = config["model"].get("output_patch_size", config["model"]["input_patch_size"])
    stride = np.array(po) - np.array(config["inference"]["overlap"])
    starts = [
        patch_starts(r, n, p, s)
        for r, n, p, s in zip(roi_start, roi_shape, po, stride, strict=True)
    ]
    return reference(config, roi_start, roi_shape, starts, roi_start, roi_shape)

"""Weight maps for blending overlapping patch predictions (strictly positive everywhere)."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from chunkflow.geometry.boxes import Box, Vec

# Each per-axis profile is kept at or above this, so a 3D map stays a normal float32 (> 1e-9).
FLOOR = 1e-3


def _profile(kind: str, n: int) -> np.ndarray:
    t = (np.arange(n, dtype=np.float64) + 0.5) / n  # voxel centres in (0, 1)
    if kind == "constant":
        return np.ones(n)
    if kind == "bump":  # exp(-1 / (t (1 - t))), scaled to 1 at the centre
        profile = np.exp(4.0 - 1.0 / (t * (1.0 - t)))
    elif kind == "gaussian":  # sigma = 1/8 of the patch, as is common for sliding windows
        profile = np.exp(-0.5 * ((t - 0.5) / 0.125) ** 2)
    else:
        raise ValueError(f"unknown blend '{kind}'")
    return np.maximum(profile, FLOOR)


def profiles(kind: str, size: Vec) -> list[np.ndarray]:
    """The float64 per-axis profiles (z, y, x) whose outer product is the weight map."""
    return [_profile(kind, n) for n in size]


def weight_map(kind: str, size: Vec) -> np.ndarray:
    """A float32 map of shape ``size``: the outer product of per-axis profiles of ``kind``."""
    z, y, x = profiles(kind, size)
    return (z[:, None, None] * y[None, :, None] * x[None, None, :]).astype(np.float32)


def per_axis_shares(
    axis_profiles: list[np.ndarray], patches: list[Box], target: Box
) -> list[dict[tuple[int, int], np.ndarray]]:
    """Per axis, each patch interval's profile over ``target`` divided by the interval sum there.

    The patches must be a lattice (every combination of their per-axis intervals) and a patch's
    weights the outer product of ``axis_profiles``; then the weight sum at a voxel is the product
    of per-axis sums, and a patch's weight divided by it the product of that patch's three
    shares. Keys are (start, stop) of the interval; values (float64) cover only its overlap with
    ``target``.
    """
    intervals = [sorted({(p.start[axis], p.stop[axis]) for p in patches}) for axis in range(3)]
    if np.prod([len(axis) for axis in intervals]) != len(patches):
        raise ValueError("blending needs a lattice of patches (every per-axis combination)")
    return interval_shares(axis_profiles, intervals, target)


def interval_shares(
    axis_profiles: list[np.ndarray], intervals: Sequence[Sequence[tuple[int, int]]], target: Box
) -> list[dict[tuple[int, int], np.ndarray]]:
    """``per_axis_shares`` from the lattice's per-axis intervals: along each axis, every interval
    that overlaps ``target`` must be given (others are ignored), whichever patches are computed."""
    shares = []
    for axis, profile in enumerate(axis_profiles):
        start, stop = target.start[axis], target.stop[axis]
        windows = {}
        for a, b in intervals[axis]:
            lo, hi = max(a, start), min(b, stop)
            if lo < hi:
                windows[a, b] = (lo - start, hi - start, profile[lo - a : hi - a])
        sums = np.zeros(stop - start)
        for lo, hi, values in windows.values():
            sums[lo:hi] += values
        shares.append({key: values / sums[lo:hi] for key, (lo, hi, values) in windows.items()})
    return shares

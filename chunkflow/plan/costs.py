"""What a run costs, from the lattice arithmetic alone, and a block size for a target job length.

Nothing here lists patches, nor blocks unless a mask selects them. A block's patches along an
axis depend only on its index along that axis (exact: the global lattice; crop: the block's own
lattice), and its patches are every combination of them; so a block's count is a product of
per-axis counts, and a sum over the grid a product of per-axis sums. The input a block reads,
piece by piece (``chunkflow.geometry.pieces``), factors the same way: a piece reads the input box of the
patches it computes, whose extent along an axis depends on the piece's index along it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from functools import partial
from typing import TYPE_CHECKING

import numpy as np

from chunkflow.geometry.boxes import Vec, ceil_div
from chunkflow.geometry.placement import lattice_window

if TYPE_CHECKING:
    from chunkflow.plan.run_plan import RunPlan

# Snakemake 9.27's `snakemake -n` on 2 cores (DESIGN.md): fixed, per job, per declared output
SNAKEMAKE_SECONDS = (1.6, 1.15e-3, 0.36e-3)
SNAKEMAKE_BYTES = (160e6, 27e3, 6e3)


@dataclass(frozen=True)
class AxisCounts:
    """Per block index along one axis: patches, input voxels read (summed over the block's
    pieces, context included) and output voxels written."""

    patches: tuple[int, ...]
    read: tuple[int, ...]
    written: tuple[int, ...]


def axis_counts(plan: RunPlan, axis: int) -> AxisCounts:
    """The per-axis factors of every block's counts along ``axis``: O(blocks × pieces per block)
    along the axis, each a constant-time lattice window."""
    settings, geometry = plan.settings, plan.geometry
    r0, r1 = plan.roi.start[axis], plan.roi.stop[axis]
    size, piece = settings.block_size[axis], plan.piece_size[axis]
    patch, stride = geometry.output_size[axis], geometry.stride[axis]
    context, margin = geometry.context[axis], settings.inference.crop_margin[axis]
    exact = settings.inference.placement == "exact"
    patches, read, written = [], [], []
    for b0 in range(r0, r1, size):
        b1 = min(b0 + size, r1)
        region = (r0, r1 - r0) if exact else (b0 - margin, b1 - b0 + 2 * margin)
        window = partial(lattice_window, *region, patch, stride)
        patches.append(window(b0 - patch + 1, b1)[0])  # the starts of patches touching the block
        total = 0
        for p0 in range(b0, b1, piece):  # a piece computes the patches starting in it
            count, first, last = window(b0 - patch + 1 if p0 == b0 else p0, min(p0 + piece, b1))
            total += last - first + patch + 2 * context if count else 0
        read.append(total)
        written.append(b1 - b0)
    return AxisCounts(tuple(patches), tuple(read), tuple(written))


COUNTS = ("patches", "read", "written")  # the fields of AxisCounts


def block_value(axes: tuple[AxisCounts, ...], name: str, index: Vec) -> int:
    """A block's count ``name`` (one of ``COUNTS``): the product of its per-axis factors."""
    return math.prod(getattr(axis, name)[i] for axis, i in zip(axes, index, strict=True))


@dataclass(frozen=True)
class PlanCosts:
    """A plan's totals and per-block ranges (min, max). Input bytes are as stored, all
    channels; output bytes need model.output_channels (None without it)."""

    blocks: int
    patches: int
    patches_per_block: tuple[int, int]
    whole_roi_patches: int
    read_bytes: int
    read_bytes_per_block: tuple[int, int]
    roi_input_bytes: int
    written_voxels: int
    written_voxels_per_block: int
    output_voxel_bytes: int | None
    job_memory_bytes: int
    axes: tuple[AxisCounts, AxisCounts, AxisCounts] = field(repr=False)

    @property
    def cost_factor(self) -> float:
        """Patches computed ÷ a single whole-ROI pass."""
        return self.patches / self.whole_roi_patches

    def block_patches(self, index: Vec) -> int:
        """The patch count of the block at ``index``."""
        return block_value(self.axes, "patches", index)


def plan_costs(plan: RunPlan) -> PlanCosts:
    """The costs of ``plan``: from per-axis factors alone, or over the blocks a mask selects."""
    axes = (axis_counts(plan, 0), axis_counts(plan, 1), axis_counts(plan, 2))
    if plan.settings.mask is None:
        blocks = len(plan.grid)
        total, low, high = (
            {n: math.prod(reduce(getattr(axis, n)) for axis in axes) for n in COUNTS}
            for reduce in (sum, min, max)
        )
    else:
        blocks = len(plan.blocks)
        values = {n: [block_value(axes, n, b.index) for b in plan.blocks] for n in COUNTS}
        total, low, high = ({n: reduce(v) for n, v in values.items()} for reduce in (sum, min, max))
    info, settings = plan.input_info, plan.settings
    input_bytes = (info.channels or 1) * np.dtype(info.dtype).itemsize
    channels = settings.model.output_channels
    output_bytes = channels * np.dtype(settings.output.dtype).itemsize if channels else None
    return PlanCosts(
        blocks=blocks,
        patches=total["patches"],
        patches_per_block=(low["patches"], high["patches"]),
        whole_roi_patches=plan.whole_roi_patch_count(),
        read_bytes=total["read"] * input_bytes,
        read_bytes_per_block=(low["read"] * input_bytes, high["read"] * input_bytes),
        roi_input_bytes=plan.roi.size * input_bytes,
        written_voxels=total["written"],
        written_voxels_per_block=high["written"],
        output_voxel_bytes=output_bytes,
        job_memory_bytes=plan.job_memory_bytes(),
        axes=axes,
    )


@dataclass(frozen=True)
class JobTarget:
    """What a block job should be: ``hours`` long at ``voxels_per_second`` (output voxels one job
    writes per second, overlaps included: `chunkflow summary`'s "per job" throughput), and at
    most ``max_jobs`` of them (Snakemake plans ~2×10^4 jobs a minute)."""

    hours: float
    voxels_per_second: float
    max_jobs: int

    @property
    def voxels(self) -> float:
        """The output voxels one job of ``hours`` writes."""
        return self.hours * 3600 * self.voxels_per_second

    def job_seconds(self, block_size: Vec) -> float:
        """The estimated length of a job of one block of ``block_size``."""
        return math.prod(block_size) / self.voxels_per_second


def snakemake_planning(jobs: int) -> tuple[float, float]:
    """Estimated CPU seconds and bytes of memory of `snakemake -n` for ``jobs`` block jobs,
    one declared output each (measured with Snakemake 9.27)."""
    seconds = SNAKEMAKE_SECONDS[0] + jobs * (SNAKEMAKE_SECONDS[1] + SNAKEMAKE_SECONDS[2])
    memory = SNAKEMAKE_BYTES[0] + jobs * (SNAKEMAKE_BYTES[1] + SNAKEMAKE_BYTES[2])
    return seconds, memory


def block_count(roi_shape: Vec, block_size: Vec) -> int:
    return math.prod(ceil_div(r, b) for r, b in zip(roi_shape, block_size, strict=True))


def recommend_block_size(roi_shape: Vec, unit: Vec, stride: Vec, target: JobTarget) -> Vec:
    """A block size in whole storage ``unit``s holding about the voxels of a ``target`` job
    (at least the ROI ÷ ``target.max_jobs``), giving at most ``target.max_jobs`` blocks.

    Its shape has the same number of patch strides along every axis, capped at the ROI: that
    minimises the patches shared with neighbouring blocks, ((n+1)/n)³ for n strides, and the
    context read around each block, and keeps z short where the patch is (anisotropic EM).
    Where rounding to units leaves too many blocks, the axis with the fewest strides grows until
    it has one block fewer, until the count fits.
    """
    voxels = max(target.voxels, math.prod(roi_shape) / target.max_jobs)
    cap = [ceil_div(r, u) * u for r, u in zip(roi_shape, unit, strict=True)]
    free = [0, 1, 2]
    while True:  # equal strides along the free axes; the others hold the whole ROI
        held = math.prod(cap[a] for a in range(3) if a not in free)
        scale = (voxels / held / math.prod(stride[a] for a in free)) ** (1 / len(free))
        capped = [a for a in free if scale * stride[a] >= cap[a]]
        free = [a for a in free if a not in capped]
        if not capped or not free:
            break
    size = [
        min(cap[a], max(unit[a], round(scale * stride[a] / unit[a]) * unit[a]))
        if a in free
        else cap[a]
        for a in range(3)
    ]
    while block_count(roi_shape, tuple(size)) > target.max_jobs:
        axis = min((a for a in range(3) if size[a] < cap[a]), key=lambda a: size[a] / stride[a])
        fewer = ceil_div(roi_shape[axis], size[axis]) - 1
        size[axis] = ceil_div(ceil_div(roi_shape[axis], fewer), unit[axis]) * unit[axis]
    return tuple(size)  # type: ignore[return-value]


def format_bytes(n: float) -> str:
    """``n`` bytes in decimal units: 1.5 GB."""
    units = ("B", "KB", "MB", "GB", "TB", "PB")
    power = min(len(units) - 1, int(math.log10(max(n, 1)) // 3))
    return f"{n / 1000**power:.1f} {units[power]}"


def format_seconds(seconds: float) -> str:
    """A duration in the unit that reads best: 12.5 s, 40.0 min, 3.2 h."""
    if seconds < 120:
        return f"{seconds:.3g} s"
    return f"{seconds / 60:.1f} min" if seconds < 7200 else f"{seconds / 3600:.1f} h"

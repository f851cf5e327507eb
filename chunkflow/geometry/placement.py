"""Where patches go: the global ``exact`` lattice and the chunk-local ``crop`` lattice.

Sizes here are per axis: input patch ``Pi``, output patch ``Po``, overlap ``O``, stride ``Po - O``,
context ``(Pi - Po) / 2``. A patch is identified by its *output* box; its input box is the output
box grown by the context.
"""

from __future__ import annotations

from dataclasses import dataclass

from chunkflow.geometry.boxes import Box, Vec, boxes_product, ceil_div, sub, vec


@dataclass(frozen=True)
class PatchGeometry:
    input_size: Vec
    output_size: Vec
    overlap: Vec

    @property
    def stride(self) -> Vec:
        return sub(self.output_size, self.overlap)

    @property
    def context(self) -> Vec:
        return vec((i - o) // 2 for i, o in zip(self.input_size, self.output_size, strict=True))

    def input_box(self, output_box: Box) -> Box:
        return output_box.grow(self.context)


def lattice_starts(start: int, length: int, patch: int, stride: int) -> list[int]:
    """Patch starts covering ``[start, start + length)``; the last one is shifted back to end there.

    A range shorter than one patch gets a single patch at ``start`` (reaching past the end).
    """
    last = start + length - patch
    if last <= start:
        return [start]
    return [*range(start, last, stride), last]


def lattice_count(length: int, patch: int, stride: int) -> int:
    """How many starts ``lattice_starts`` gives for a range of ``length``, without listing them."""
    if length <= patch:
        return 1
    return ceil_div(length - patch, stride) + 1


def lattice_window(
    start: int, length: int, patch: int, stride: int, lo: int, hi: int
) -> tuple[int, int, int]:
    """``(count, first, last)`` of the ``lattice_starts`` lying in ``[lo, hi)``, without listing
    them (``(0, lo, lo)`` when none does)."""
    end = start + max(0, length - patch)  # the last start, shifted back to end at the range end
    regular = lattice_count(length, patch, stride) - 1  # the starts before it, ``stride`` apart
    k_lo = max(0, ceil_div(lo - start, stride))
    k_hi = min(regular, max(0, ceil_div(hi - start, stride)))
    count = max(0, k_hi - k_lo)
    first = start + k_lo * stride if count else end
    last = start + (k_hi - 1) * stride
    if lo <= end < hi:
        return count + 1, first, end
    return (count, first, last) if count else (0, lo, lo)


Intervals = tuple[list[tuple[int, int]], list[tuple[int, int]], list[tuple[int, int]]]


def lattice_intervals(region: Box, block: Box, geometry: PatchGeometry) -> Intervals:
    """Per axis, the output intervals ``(start, stop)`` of the lattice anchored at ``region``'s
    start (tiling it) that touch ``block``: the patches are every combination of them."""
    return tuple(  # type: ignore[return-value]
        [(s, s + p) for s in lattice_starts(r0, r1 - r0, p, stride) if s < b1 and s + p > b0]
        for r0, r1, b0, b1, p, stride in zip(
            region.start,
            region.stop,
            block.start,
            block.stop,
            geometry.output_size,
            geometry.stride,
            strict=True,
        )
    )


def lattice_patches(region: Box, block: Box, geometry: PatchGeometry) -> list[Box]:
    """Patches of the lattice anchored at ``region``'s start (tiling it) whose output touches ``block``."""
    return list(boxes_product(lattice_intervals(region, block, geometry)))


def exact_intervals(roi: Box, block: Box, geometry: PatchGeometry) -> Intervals:
    """Per axis, the intervals of the global lattice anchored at the ROI start touching ``block``."""
    return lattice_intervals(roi, block, geometry)


def exact_patches(roi: Box, block: Box, geometry: PatchGeometry) -> list[Box]:
    """Patches of the global lattice anchored at the ROI start whose output touches ``block``."""
    return lattice_patches(roi, block, geometry)


def crop_region(block: Box, margin: Vec) -> Box:
    """The output region a ``crop`` chunk predicts: the block grown by the margin on each side."""
    return block.grow(margin)


def crop_intervals(block: Box, geometry: PatchGeometry, margin: Vec) -> Intervals:
    """Per axis, the intervals of the chunk-local lattice of the block + margin touching the block."""
    return lattice_intervals(crop_region(block, margin), block, geometry)


def crop_patches(block: Box, geometry: PatchGeometry, margin: Vec) -> list[Box]:
    """Patches tiling the block + margin on a chunk-local lattice, keeping those touching the block."""
    return lattice_patches(crop_region(block, margin), block, geometry)

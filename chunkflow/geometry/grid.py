"""The block grid: blocks tile the ROI on a grid anchored at the ROI start (the output's origin)."""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass

from chunkflow.geometry.boxes import Box, Vec, add, ceil_div, elementwise, minimum, mul, vec

_INDEX = r"(?:0|[1-9]\d*)"  # no leading zeros: exactly one id per block
_BLOCK_ID = re.compile(rf"z({_INDEX})_y({_INDEX})_x({_INDEX})")


@dataclass(frozen=True)
class Block:
    """One unit of work: the box it writes and its index in the grid."""

    index: Vec
    box: Box

    @property
    def id(self) -> str:
        z, y, x = self.index
        return f"z{z}_y{y}_x{x}"


@dataclass(frozen=True)
class BlockGrid:
    """Blocks of ``block_size`` tiling ``roi``; only the last block along an axis may be shorter."""

    roi: Box
    block_size: Vec

    @property
    def shape(self) -> Vec:
        """Number of blocks along z, y, x."""
        return elementwise(ceil_div, self.roi.shape, self.block_size)

    def __len__(self) -> int:
        z, y, x = self.shape
        return z * y * x

    def block(self, index: Vec) -> Block:
        if not all(0 <= i < n for i, n in zip(index, self.shape, strict=True)):
            raise KeyError(f"block index {index} outside the grid {self.shape}")
        start = add(self.roi.start, mul(vec(index), self.block_size))
        stop = minimum(add(start, self.block_size), self.roi.stop)
        return Block(vec(index), Box(start, stop))

    def block_by_id(self, block_id: str) -> Block:
        match = _BLOCK_ID.fullmatch(block_id)
        if match is None:
            raise KeyError(f"'{block_id}' is not a block id (expected z<i>_y<j>_x<k>)")
        return self.block(vec(match.groups()))

    def __iter__(self) -> Iterator[Block]:
        nz, ny, nx = self.shape
        for z in range(nz):
            for y in range(ny):
                for x in range(nx):
                    yield self.block((z, y, x))

    def ids(self) -> list[str]:
        return [b.id for b in self]


def nearest_multiples(value: int, unit: int) -> tuple[int, int]:
    """The multiples of ``unit`` just below and just above ``value`` (the lower one at least unit)."""
    lower = max(unit, (value // unit) * unit)
    return lower, max(lower, ceil_div(value, unit) * unit)

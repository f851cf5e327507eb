"""How a block streams through memory: its pieces, and which patches each piece computes.

A block is cut into pieces (a grid anchored at the block's start, in z, y, x order). Every patch
of the block is computed once, by the piece it *belongs to*: the first piece, in that order, that
its output touches (the one holding its output start, clamped into the block). A piece's
accumulator covers its *reach*: the piece, grown at its far sides to the end of the patches it
computes. What falls outside the piece is a partial sum *carried* to the later pieces there, so
no patch is computed twice however the block is cut. When a piece's turn comes, every patch
touching it has been computed: by itself, or by earlier pieces, which sent their carries.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import cached_property
from itertools import product

from chunkflow.geometry.boxes import Box, Vec, boxes_product, ceil_div
from chunkflow.geometry.grid import Block, BlockGrid
from chunkflow.geometry.placement import Intervals


@dataclass(frozen=True)
class PieceLayout:
    """The pieces of ``block`` and the patches (``intervals``: per axis, the block's patch
    output intervals, sorted) each of them computes. Pieces are ``Block``s of a grid over the
    block (their ids are local to it)."""

    block: Block
    piece_size: Vec
    intervals: Intervals

    @cached_property
    def grid(self) -> BlockGrid:
        return BlockGrid(self.block.box, self.piece_size)

    @cached_property
    def pieces(self) -> list[Block]:
        """Every piece in the order they are computed (z, y, x)."""
        return list(self.grid)

    def position(self, piece: Block) -> int:
        """Where ``piece`` comes in ``pieces``."""
        _, ny, nx = self.grid.shape
        z, y, x = piece.index
        return (z * ny + y) * nx + x

    @property
    def patch_count(self) -> int:
        return math.prod(len(axis) for axis in self.intervals)

    @property
    def output_box(self) -> Box:
        """The box the block's patches predict (beyond the block where they stick out)."""
        return Box(
            tuple(axis[0][0] for axis in self.intervals),
            tuple(axis[-1][1] for axis in self.intervals),
        )

    def _owner(self, axis: int, interval: tuple[int, int]) -> int:
        start = max(interval[0], self.block.box.start[axis])
        return (start - self.block.box.start[axis]) // self.piece_size[axis]

    @cached_property
    def _owned(self) -> tuple[dict[int, list[tuple[int, int]]], ...]:
        """Per axis: piece index along the axis → the intervals it computes."""
        owned: tuple[dict[int, list[tuple[int, int]]], ...] = ({}, {}, {})
        for axis, intervals in enumerate(self.intervals):
            for interval in intervals:
                owned[axis].setdefault(self._owner(axis, interval), []).append(interval)
        return owned

    def owned_intervals(self, piece: Block) -> Intervals:
        """Per axis, the patch intervals ``piece`` computes."""
        return tuple(self._owned[a].get(i, []) for a, i in enumerate(piece.index))  # type: ignore[return-value]

    def patches(self, piece: Block) -> list[Box]:
        """The output boxes of the patches ``piece`` computes, in a fixed order."""
        return list(boxes_product(self.owned_intervals(piece)))

    def reach(self, piece: Block) -> Box:
        """The box ``piece``'s patches write into: the piece, grown at its far sides to the end
        of those patches (within the block)."""
        stop = tuple(
            max(p, min(b, max((s for _, s in owned), default=p)))
            for p, b, owned in zip(
                piece.box.stop, self.block.box.stop, self.owned_intervals(piece), strict=True
            )
        )
        return Box(piece.box.start, stop)

    def sources(self, piece: Block) -> list[Block]:
        """The earlier pieces whose reach overlaps ``piece``: those that carry partial sums to
        it, in computing order."""
        span = [
            ceil_div(max(b - a for a, b in axis), p) if axis else 0
            for axis, p in zip(self.intervals, self.piece_size, strict=True)
        ]
        out = []
        for back in product(*(range(s, -1, -1) for s in span)):
            index = tuple(i - d for i, d in zip(piece.index, back, strict=True))
            if any(back) and min(index) >= 0:
                source = self.grid.block(index)
                if not self.reach(source).intersect(piece.box).empty:
                    out.append(source)
        return sorted(out, key=lambda b: b.index)

    def targets(self, piece: Block) -> list[Block]:
        """The later pieces that ``piece``'s reach overlaps: those it carries partial sums to."""
        reach = self.reach(piece)
        stop = tuple(
            min(n - 1, (r - 1 - b) // p)
            for r, b, p, n in zip(
                reach.stop, self.block.box.start, self.piece_size, self.grid.shape, strict=True
            )
        )
        ranges = (range(i, s + 1) for i, s in zip(piece.index, stop, strict=True))
        return [self.grid.block(index) for index in product(*ranges) if index != piece.index]

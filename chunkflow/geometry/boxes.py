"""Value types for voxel geometry: 3-vectors and half-open boxes, in z, y, x order.

Everything here is pure and immutable: operations return new objects.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from itertools import product

Vec = tuple[int, int, int]
AXES = "zyx"


def vec(values: Iterable[int]) -> Vec:
    """A z, y, x integer triple from any iterable of three integers."""
    out = tuple(int(v) for v in values)
    if len(out) != 3:
        raise ValueError(f"expected 3 values (z, y, x), got {len(out)}")
    return out  # type: ignore[return-value]


def add(a: Vec, b: Vec) -> Vec:
    return (a[0] + b[0], a[1] + b[1], a[2] + b[2])


def sub(a: Vec, b: Vec) -> Vec:
    return (a[0] - b[0], a[1] - b[1], a[2] - b[2])


def ceil_div(a: int, b: int) -> int:
    return -((-a) // b)


def elementwise(fn: Callable[..., int], *vectors: Vec) -> Vec:
    """``fn`` applied per axis: ``elementwise(ceil_div, shape, block)`` is the block count."""
    return vec(map(fn, *vectors))


def mul(a: Vec, b: Vec) -> Vec:
    return (a[0] * b[0], a[1] * b[1], a[2] * b[2])


def minimum(a: Vec, b: Vec) -> Vec:
    return (min(a[0], b[0]), min(a[1], b[1]), min(a[2], b[2]))


def misaligned_axes(size: Vec, unit: Vec) -> list[str]:
    """The axes (``z``, ``y``, ``x``) along which ``size`` is not a whole multiple of ``unit``."""
    return [axis for axis, s, u in zip(AXES, size, unit, strict=True) if s % u]


@dataclass(frozen=True, order=True)
class Box:
    """A half-open box ``[start, stop)`` of voxels; ``start``/``stop`` are z, y, x."""

    start: Vec
    stop: Vec

    def __post_init__(self) -> None:
        object.__setattr__(self, "start", vec(self.start))
        object.__setattr__(self, "stop", vec(self.stop))
        if any(b < a for a, b in zip(self.start, self.stop, strict=True)):
            raise ValueError(f"box stop {self.stop} lies before its start {self.start}")

    @classmethod
    def from_shape(cls, start: Iterable[int], shape: Iterable[int]) -> Box:
        start = vec(start)
        return cls(start, add(start, vec(shape)))

    @property
    def shape(self) -> Vec:
        return sub(self.stop, self.start)

    @property
    def size(self) -> int:
        z, y, x = self.shape
        return z * y * x

    @property
    def empty(self) -> bool:
        return self.size == 0

    def grow(self, before: Vec, after: Vec | None = None) -> Box:
        """Grow by ``before`` at the start and ``after`` (default: ``before``) at the stop."""
        after = before if after is None else after
        return Box(sub(self.start, before), add(self.stop, after))

    def shift(self, offset: Vec) -> Box:
        return Box(add(self.start, offset), add(self.stop, offset))

    def intersect(self, other: Box) -> Box:
        """The overlap of two boxes; an empty box at the clamped start when they are disjoint."""
        start = tuple(max(a, b) for a, b in zip(self.start, other.start, strict=True))
        stop = tuple(
            max(s, min(a, b)) for s, a, b in zip(start, self.stop, other.stop, strict=True)
        )
        return Box(start, stop)

    def contains(self, other: Box) -> bool:
        return all(a <= b for a, b in zip(self.start, other.start, strict=True)) and all(
            a >= b for a, b in zip(self.stop, other.stop, strict=True)
        )

    def slices(self, origin: Vec = (0, 0, 0)) -> tuple[slice, slice, slice]:
        """Index slices of this box in an array whose element 0 sits at ``origin``."""
        return tuple(
            slice(a - o, b - o) for a, b, o in zip(self.start, self.stop, origin, strict=True)
        )  # type: ignore[return-value]

    def to_json(self) -> dict[str, list[int]]:
        return {"start": list(self.start), "stop": list(self.stop)}

    def __str__(self) -> str:
        return f"[{self.start}, {self.stop})"


def bounding_box(boxes: Iterable[Box]) -> Box:
    """The smallest box holding all ``boxes`` (at least one)."""
    boxes = list(boxes)
    if not boxes:
        raise ValueError("bounding_box of no boxes")
    start = tuple(min(b.start[i] for b in boxes) for i in range(3))
    stop = tuple(max(b.stop[i] for b in boxes) for i in range(3))
    return Box(start, stop)


def boxes_product(per_axis: tuple[list[tuple[int, int]], ...]) -> Iterator[Box]:
    """Boxes from per-axis ``(start, stop)`` intervals, in z-major order."""
    for (z0, z1), (y0, y1), (x0, x1) in product(*per_axis):
        yield Box((z0, y0, x0), (z1, y1, x1))

"""Test-time augmentation: predict flipped and y<->x transposed copies of a batch, bring each
prediction back to the original frame, and average.

Index algebra, along one axis ``a`` with N output voxels. The input patch is the output patch
plus the same context on both sides, so flipping the input flips the output: output voxel u of
the flipped input is output voxel N-1-u of the original.

- A plain channel: undoing the flip is the same flip, ``o[v] = o'[N-1-v]``.
- An ``a``-affinity channel holds at voxel v the affinity between v and v - e_a. Its value
  ``o'[u]`` on the flipped input links flipped voxels u and u-1, i.e. original voxels N-1-u and
  N-u: the affinity that belongs to voxel N-u. So ``o[v] = o'[N-v]`` for v = 1 … N-1 (flip back,
  then shift one voxel towards higher indices); ``o'[0]`` belongs outside the patch and is
  dropped, and v = 0 gets no value from this variant. Affinities along other axes only flip.
- Transposing y and x turns y-affinities into x-affinities: undoing it transposes back and takes
  the k-th x-affinity channel from the model's k-th y-affinity channel, and vice versa.

A variant flips first, then transposes; its inverse undoes the transpose, then the flips. Each
voxel's mean is over the variants that give it a value.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable
from dataclasses import dataclass

import torch

Axes = tuple[str | None, ...]
"""Per output channel: the axis ("z", "y", "x") of a nearest-neighbour affinity, or None."""

_FLIPPED = {"xy": (1, 2), "xyz": (0, 1, 2)}  # spatial axes (0 = z, 1 = y, 2 = x) each mode flips


@dataclass(frozen=True)
class Variant:
    flips: tuple[int, ...]  # spatial axes flipped: 0 = z, 1 = y, 2 = x
    transpose: bool  # y <-> x, after the flips


def variants(mode: str) -> list[Variant]:
    """The 8 (``xy``) or 16 (``xyz``) variants of ``mode``; the first is the identity."""
    flippable = _FLIPPED[mode]
    return [
        Variant(tuple(a for a, on in zip(flippable, bits, strict=True) if on), transpose)
        for bits in itertools.product((False, True), repeat=len(flippable))
        for transpose in (False, True)
    ]


def transform(batch: torch.Tensor, variant: Variant) -> torch.Tensor:
    """The variant of a batch (batch, channels, z, y, x)."""
    if variant.flips:
        batch = batch.flip([2 + a for a in variant.flips])
    if variant.transpose:
        batch = batch.transpose(3, 4)
    return batch.contiguous()


def _swap_yx(axes: Axes) -> list[int]:
    """Channel order that puts the k-th y-affinity where the k-th x-affinity was, and back."""
    ys = [c for c, a in enumerate(axes) if a == "y"]
    xs = [c for c, a in enumerate(axes) if a == "x"]
    order = list(range(len(axes)))
    for y, x in zip(ys, xs, strict=True):
        order[y], order[x] = x, y
    return order


def _shift(channel: torch.Tensor, dim: int) -> torch.Tensor:
    """``channel`` moved one voxel towards higher indices along ``dim``, 0 in the first slab."""
    n = channel.shape[dim]
    return torch.cat(
        [torch.zeros_like(channel.narrow(dim, 0, 1)), channel.narrow(dim, 0, n - 1)], dim
    )


def invert(output: torch.Tensor, variant: Variant, axes: Axes | None) -> torch.Tensor:
    """The model's output (batch, channels, z, y, x) for ``variant`` in the original frame.

    Voxels that the variant gives no value (the first slab of a flipped affinity) are 0.
    """
    if variant.transpose:
        output = output.transpose(3, 4)
        if axes:
            output = output[:, _swap_yx(axes)]
    if not variant.flips:
        return output
    output = output.flip([2 + a for a in variant.flips])
    shifted = [c for c, a in enumerate(axes or ()) if a and "zyx".index(a) in variant.flips]
    if not shifted:
        return output
    channels = list(output.unbind(1))
    for c in shifted:
        channels[c] = _shift(channels[c], 1 + "zyx".index(axes[c]))
    return torch.stack(channels, 1)


def average(
    run: Callable[[torch.Tensor], torch.Tensor],
    batch: torch.Tensor,
    mode: str,
    axes: Axes | None = None,
) -> torch.Tensor:
    """The mean of the inverted predictions of every variant of ``mode``.

    Args:
        run: the model: (batch, c, z, y, x) -> float32 (batch, channels, z', y', x').
        batch: the input batch; ``xy`` and ``xyz`` transpose it, so y and x must be equal sizes.
        mode: ``xy`` (flips of y and x, and the transpose: 8 variants) or ``xyz`` (16).
        axes: the affinity axis of each output channel; None when every channel is plain.

    Returns:
        float32 (batch, channels, z', y', x'); each voxel averaged over the variants giving it a value.
    """
    total = count = None
    every = variants(mode)
    for variant in every:
        inverted = invert(run(transform(batch, variant)), variant, axes)
        total = inverted if total is None else total + inverted
        if axes and any(axes):
            given = invert(torch.ones_like(inverted[:1]), variant, axes)
            count = given if count is None else count + given
    return total / (count if count is not None else len(every))

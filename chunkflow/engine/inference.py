"""Patch-wise inference with blending: batched forward passes into a float32 weighted mean.

Each patch's output is added into the accumulator with its weights already divided by the
weight sum (``blending.per_axis_shares``), so the accumulator holds the mean when the last patch
is in: no normalisation pass. It covers only the target box (the block), lives on the model's
device, and patches are added in the order given, so a voxel gets the same additions in the same
order whichever block computes it.
"""

from __future__ import annotations

import contextlib
import ctypes
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch

from chunkflow.engine.blending import interval_shares, per_axis_shares, profiles
from chunkflow.engine.tta import Axes
from chunkflow.engine.tta import average as average_tta
from chunkflow.errors import ModelError, first_line
from chunkflow.geometry.boxes import Box
from chunkflow.geometry.placement import Intervals, PatchGeometry

_AUTOCAST = {"float16": torch.float16, "bfloat16": torch.bfloat16}
_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3  # glibc's mallopt options (malloc.h)
_KEEP_BYTES = 1 << 30


def keep_freed_memory() -> None:
    """Have glibc keep freed memory for reuse rather than return large blocks to the OS.

    Every batch allocates and frees tens of MB (inputs, activations, outputs). With glibc's
    defaults, such blocks are unmapped or trimmed when freed, so the next batch faults in fresh
    zeroed pages: on the CPU that cost a small network half again its forward time. Peak memory
    is unchanged (the same blocks are reused). Does nothing where the C library is not glibc.
    """
    try:
        libc = ctypes.CDLL("libc.so.6")
    except OSError:
        return
    # the mmap threshold first: where glibc refuses it, leave both at their defaults
    if libc.mallopt(_M_MMAP_THRESHOLD, _KEEP_BYTES):
        libc.mallopt(_M_TRIM_THRESHOLD, _KEEP_BYTES)


def chunk_on_device(chunk: np.ndarray, device: torch.device) -> torch.Tensor:
    """``chunk`` ((c,) z, y, x) as a (c, z, y, x) tensor on ``device``, where patches are cut out
    of it: on CUDA it is copied once, from pinned memory, not batch by batch."""
    source = torch.from_numpy(chunk if chunk.ndim == 4 else chunk[None])
    if device.type == "cuda":
        source = source.pin_memory().to(device, non_blocking=True)
    return source


def patch_inputs(
    source: torch.Tensor, chunk_box: Box, patches: list[Box], geometry: PatchGeometry
) -> list[torch.Tensor]:
    """Views of ``source`` (c, z, y, x), which covers ``chunk_box``: the network inputs of
    ``patches``."""
    return [source[(slice(None), *geometry.input_box(p).slices(chunk_box.start))] for p in patches]


@dataclass
class Predictor:
    """A loaded network plus everything that decides how its patch outputs are combined."""

    model: torch.nn.Module
    geometry: PatchGeometry
    blend: str
    batch_size: int
    device: torch.device
    precision: str = "float32"
    output_channels: int | None = None
    tta: str = "none"
    affinity_axes: Axes | None = None

    def __post_init__(self) -> None:
        if self.device.type == "cuda" and self.precision == "float32":
            # float32 means float32: no TF32 convolutions or matmuls (float16/bfloat16 are the fast modes)
            torch.backends.cudnn.allow_tf32 = False
            torch.backends.cuda.matmul.allow_tf32 = False
        self._profiles = profiles(self.blend, self.geometry.output_size)

    def _autocast(self) -> contextlib.AbstractContextManager:
        if self.precision == "float32":
            return contextlib.nullcontext()
        return torch.autocast(self.device.type, dtype=_AUTOCAST[self.precision])

    def _forward(self, batch: torch.Tensor) -> torch.Tensor:
        if self.tta == "none":
            return self._run(batch)
        with torch.inference_mode():
            return average_tta(self._run, batch, self.tta, self.affinity_axes)

    def _run(self, batch: torch.Tensor) -> torch.Tensor:
        try:
            with torch.inference_mode(), self._autocast():
                out = self.model(batch)
        except Exception as err:  # whatever the user's network raises: one line
            hint = "; check model.input_patch_size and the model's expected input"
            raise ModelError(
                f"the model failed on a batch of shape {list(batch.shape)}: {first_line(err)}"
                + (hint if isinstance(err, RuntimeError) else f" ({type(err).__name__})")
            ) from None
        expected = self.geometry.output_size
        if out.ndim != 5 or tuple(out.shape[2:]) != expected or out.shape[0] != batch.shape[0]:
            fix = "check model.input_patch_size / model.output_patch_size"
            returned, given = list(out.shape[2:]), list(batch.shape[2:])
            crops = out.ndim == 5 and all(
                0 < r <= g and (g - r) % 2 == 0 for r, g in zip(returned, given, strict=True)
            )
            if crops and out.shape[0] == batch.shape[0]:  # e.g. valid convolutions
                fix = f"set model.output_patch_size: {returned} (what it returns for {given})"
            raise ModelError(
                f"the model returned shape {list(out.shape)} for input {list(batch.shape)}; "
                f"expected (batch, channels, {', '.join(map(str, expected))}): {fix}"
            )
        if self.output_channels is not None and out.shape[1] != self.output_channels:
            raise ModelError(
                f"the model returned {out.shape[1]} channels but {self.output_channels} are "
                "expected (model.output_channels, or the existing output store's channel count); "
                "fix the config or the model"
            )
        if self.affinity_axes is not None and out.shape[1] != len(self.affinity_axes):
            raise ModelError(
                f"the model returned {out.shape[1]} channels but model.affinity_axes has "
                f"{len(self.affinity_axes)} entries; give one entry (z, y, x or null) per channel"
            )
        return out.float()

    def check_batch(self, batch: torch.Tensor) -> int:
        """Run ``batch`` (patches, channels, z, y, x) as ``predict`` runs a batch, with its checks
        of the model's output (each a ``ModelError``); return the output's channel count."""
        return int(self._forward(batch).shape[1])

    def predict(
        self,
        chunk: np.ndarray,
        chunk_box: Box,
        patches: list[Box],
        target: Box,
        lattice: Intervals | None = None,
    ) -> np.ndarray:
        """``predict_on_device`` of ``chunk``, a scaled float32 input of shape (z, y, x) or
        (c, z, y, x), its result on the host."""
        source = chunk_on_device(chunk, self.device)
        return self.predict_on_device(source, chunk_box, patches, target, lattice).cpu().numpy()

    def predict_on_device(
        self,
        source: torch.Tensor,
        chunk_box: Box,
        patches: list[Box],
        target: Box,
        lattice: Intervals | None = None,
    ) -> torch.Tensor:
        """Blend the predictions of ``patches`` (output boxes) into ``target``.

        Args:
            source: scaled float32 input covering ``chunk_box`` on the model's device, shape
                (c, z, y, x).
            chunk_box: global voxel box of ``chunk``; holds every patch's input box.
            patches: output boxes of the patches, in a fixed order.
            target: the box to return.
            lattice: per axis, the output intervals of every patch of the lattice that touches
                ``target``, when ``patches`` are only some of them (a piece of a streamed block):
                each patch is then weighted by its share of the whole lattice's weight, and
                the result is a partial sum. None: ``patches`` are the whole lattice over
                ``target``, which they cover.

        Returns:
            float32 tensor (channels, *target.shape) on the device: the weighted mean of the
            patches.
        """
        if not patches:
            raise ValueError("predict() needs at least one patch")
        weights, no_overlap = self._normalised_weights(patches, target, lattice)
        # patches without overlap that cover the target: each voxel gets one patch's value,
        # copied into an accumulator left unset (no zeros, no addition)
        tiled = no_overlap and target.size == sum(p.intersect(target).size for p in patches)
        total = None
        buffer = None  # the batch input, reused: the heap holds only what the model allocates
        with torch.inference_mode():
            for first in range(0, len(patches), self.batch_size):
                group = patches[first : first + self.batch_size]
                views = patch_inputs(source, chunk_box, group, self.geometry)
                if buffer is None:
                    buffer = source.new_empty((len(group), *views[0].shape))
                inputs = torch.stack(views, out=buffer[: len(group)])
                outputs = self._forward(inputs)
                if total is None:
                    make = torch.empty if tiled else torch.zeros
                    total = make((outputs.shape[1], *target.shape), device=self.device)
                for patch, output in zip(group, outputs, strict=True):
                    overlap = patch.intersect(target)
                    src = (slice(None), *overlap.slices(patch.start))
                    dst = (slice(None), *overlap.slices(target.start))
                    weight = weights(patch)
                    if tiled:
                        total[dst].copy_(output[src])
                    elif weight is None:  # its weights are all 1: x * 1 == x, one pass less
                        total[dst].add_(output[src])
                    else:
                        total[dst].addcmul_(output[src], weight)  # no temporary
                del outputs, output  # not held through the next forward pass
        return total

    def _normalised_weights(
        self, patches: list[Box], target: Box, lattice: Intervals | None
    ) -> tuple[Callable[[Box], torch.Tensor | None], bool]:
        """A patch's weights over its overlap with ``target``, divided by the weight sum there
        (float32, on the device): the outer product of its per-axis shares; None where they
        are all 1 (no other patch reaches its voxels: patches without overlap). And whether
        they are None for every patch.

        The y-x products are made here, before any forward pass, so nothing that lives through
        the block is allocated between batches (where it would pin freed heap memory).
        """
        if lattice is None:
            shares = per_axis_shares(self._profiles, patches, target)
        else:
            shares = interval_shares(self._profiles, lattice, target)
        used = [{(p.start[a], p.stop[a]) for p in patches} for a in range(3)]
        alone = [{key for key, v in axis.items() if (v == 1.0).all()} for axis in shares]
        no_overlap = all(keys <= ones for keys, ones in zip(used, alone, strict=True))
        z_shares, y_shares, x_shares = (
            {
                key: torch.from_numpy(v.astype(np.float32)).to(self.device)
                for key, v in axis.items()
                if key in keys
            }
            for axis, keys in zip(shares, used, strict=True)
        )
        planes = {
            (y, x): torch.outer(y_share, x_share)
            for y, y_share in y_shares.items()
            for x, x_share in x_shares.items()
        }

        def weights(patch: Box) -> torch.Tensor | None:
            (z0, y0, x0), (z1, y1, x1) = patch.start, patch.stop
            if (z0, z1) in alone[0] and (y0, y1) in alone[1] and (x0, x1) in alone[2]:
                return None
            return z_shares[z0, z1][:, None, None] * planes[(y0, y1), (x0, x1)]

        return weights, no_overlap

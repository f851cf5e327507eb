"""A piece's values on the model's device (a block job on CUDA): the input goes there as it is
stored (uint8: one byte a voxel, not four) and is scaled there; the blended prediction is
checked and converted to the output's dtype there, so only the output's bytes come back (uint8:
C bytes a voxel, not 4C).

The arithmetic is ``chunkflow.engine.dtypes``' (numpy's) step for step, in float32, so either
side makes the same bytes. On CUDA each thread that copies (the job's reader, its writer) has a
``DeviceLane``: a stream of its own, so its copies and conversions run beside the model's forward
passes, and a pinned host buffer it reuses from piece to piece.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch

from chunkflow.engine.dtypes import to_output_dtype
from chunkflow.engine.inference import Predictor
from chunkflow.geometry.boxes import Box
from chunkflow.geometry.placement import Intervals


def scale_on_device(raw: torch.Tensor, stored: np.dtype, mode: str) -> torch.Tensor:
    """``dtypes.scale_input`` of ``raw`` (values of numpy dtype ``stored``), where ``raw`` is."""
    scaled = raw.to(torch.float32)
    if mode == "auto" and np.issubdtype(stored, np.integer):
        info = np.iinfo(stored)
        if info.min:
            scaled.sub_(float(np.float32(info.min)))  # a power of two: exact in float32
        # by a tensor made where ``raw`` is (no copy, no wait): CUDA divides by a host scalar as
        # a multiplication by its inverse
        divisor = float(np.float32(info.max - info.min))  # exact in float32, as numpy divides
        scaled.div_(torch.full((), divisor, dtype=torch.float32, device=raw.device))
    return scaled


def to_dtype_on_device(values: torch.Tensor, dtype: str) -> torch.Tensor:
    """``dtypes.to_output_dtype`` of float32 ``values`` (consumed), where they are."""
    if dtype == "uint8":
        values.clamp_(0.0, 1.0).mul_(255.0).round_()  # round: half to even, as numpy's rint
        return values.to(torch.uint8)
    return values.to(getattr(torch, dtype))


@dataclass(frozen=True)
class Ready:
    """A tensor one thread made on the device, and (on CUDA) the event after which it is whole."""

    tensor: torch.Tensor
    event: torch.cuda.Event | None = None

    @classmethod
    def now(cls, tensor: torch.Tensor) -> Ready:
        """``tensor`` as the current stream will have made it."""
        if tensor.device.type != "cuda":
            return cls(tensor)
        event = torch.cuda.Event()
        event.record(torch.cuda.current_stream(tensor.device))
        return cls(tensor, event)

    def take(self) -> torch.Tensor:
        """The tensor, for work queued on the current stream of this thread (which waits for it)."""
        if self.event is not None:
            stream = torch.cuda.current_stream(self.tensor.device)
            stream.wait_event(self.event)
            self.tensor.record_stream(stream)  # its memory is not reused while this stream needs it
        return self.tensor


class DeviceLane:
    """One thread's copies between the host and ``device``. On CUDA: a stream of its own and a
    pinned host buffer, reused; on the CPU the tensors are the host's arrays."""

    def __init__(self, device: torch.device) -> None:
        self.device = device
        self._cuda = device.type == "cuda"
        self._stream = torch.cuda.Stream(device) if self._cuda else None
        self._pinned: torch.Tensor | None = None  # bytes, grown as needed
        self._copied: torch.cuda.Event | None = None  # the buffer is free once this is reached

    def _staging(self, nbytes: int, dtype: np.dtype, shape: tuple[int, ...]) -> torch.Tensor:
        if self._copied is not None:
            self._copied.synchronize()
        if self._pinned is None or self._pinned.numel() < nbytes:  # grown by powers of two
            size = 1 << max(nbytes - 1, 0).bit_length()
            self._pinned = torch.empty(size, dtype=torch.uint8, pin_memory=True)
        as_torch = torch.from_numpy(np.empty(0, dtype)).dtype
        return self._pinned[:nbytes].view(as_torch).view(shape)

    def upload(self, array: np.ndarray, make: Callable[[torch.Tensor], torch.Tensor]) -> Ready:
        """``make`` of ``array`` on the device (its kernels on this lane's stream)."""
        if not self._cuda:
            return Ready(make(torch.from_numpy(array)))
        staged = self._staging(array.nbytes, array.dtype, array.shape)
        np.copyto(staged.numpy(), array)
        with torch.cuda.stream(self._stream):
            on_device = staged.to(self.device, non_blocking=True)
            self._copied = torch.cuda.Event()
            self._copied.record(self._stream)
            return Ready.now(make(on_device))

    def download(self, ready: Ready, finish: Callable[[torch.Tensor], torch.Tensor]) -> np.ndarray:
        """``finish`` of the tensor (its kernels on this lane's stream), on the host: on CUDA a
        view of this lane's buffer, valid until the lane's next copy."""
        if not self._cuda:
            return finish(ready.tensor).numpy()
        with torch.cuda.stream(self._stream):
            result = finish(ready.take())
            staged = self._staging(result.nbytes, _numpy_dtype(result.dtype), tuple(result.shape))
            staged.copy_(result, non_blocking=True)
            self._stream.synchronize()
        return staged.numpy()


def _numpy_dtype(dtype: torch.dtype) -> np.dtype:
    return torch.empty(0, dtype=dtype).numpy().dtype


class DeviceValues:
    """A block job's piece values on the model's device (see ``chunkflow.job.piece_values``):
    the reader's copies and scaling on its lane, the writer's checks, conversions and copies on
    its lane, the model's thread only computing. Its tensors are inference tensors (made and
    changed in inference mode)."""

    def __init__(self, predictor: Predictor, scale: str, output_dtype: str) -> None:
        self.predictor = predictor
        self.device = predictor.device
        self.scale = scale
        self.output_dtype = output_dtype
        self._reader, self._writer = DeviceLane(self.device), DeviceLane(self.device)

    @torch.inference_mode()
    def network_input(self, raw: np.ndarray) -> Ready:
        """``raw`` (as stored; in this machine's byte order first) on the device, scaled
        there, as (c, z, y, x)."""
        raw = raw.astype(raw.dtype.newbyteorder("="), copy=False)  # e.g. zarr v2's ">u2"

        def scaled(stored: torch.Tensor) -> torch.Tensor:
            values = scale_on_device(stored, raw.dtype, self.scale)
            return values if values.ndim == 4 else values[None]

        return self._reader.upload(raw, scaled)

    def predict(
        self, scaled: Ready, chunk_box: Box, patches: list[Box], target: Box, lattice: Intervals
    ) -> torch.Tensor:
        return self.predictor.predict_on_device(scaled.take(), chunk_box, patches, target, lattice)

    def zeros(self, shape: tuple[int, ...]) -> torch.Tensor:
        return torch.zeros(shape, dtype=torch.float32, device=self.device)

    @torch.inference_mode()
    def add(self, total: torch.Tensor, where: tuple[slice, ...], carried: np.ndarray) -> None:
        total[where] += torch.from_numpy(carried).to(self.device)

    def carried(self, total: torch.Tensor, where: tuple[slice, ...]) -> np.ndarray:
        return total[where].to("cpu", copy=True).numpy()

    def hand_over(self, own: torch.Tensor) -> Ready:
        return Ready.now(own)

    @torch.inference_mode()
    def output(self, own: Ready, check: Callable[[np.ndarray], None]) -> np.ndarray:
        """``own`` converted to the output's dtype on the device, on the host; where it is not
        all finite, ``check`` (fails, or sets 0 there) and the conversion run on the host."""

        def converted(values: torch.Tensor) -> torch.Tensor:
            if bool(torch.isfinite(values).all()):
                return to_dtype_on_device(values, self.output_dtype)
            host = values.cpu().numpy()
            check(host)
            return torch.from_numpy(to_output_dtype(host, self.output_dtype))

        return self._writer.download(own, converted)

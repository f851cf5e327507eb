"""Which device a run computes on: ``inference.device`` resolved against what this machine has."""

from __future__ import annotations

import torch

from chunkflow.errors import ConfigError
from chunkflow.settings import Settings


def resolve_device(name: str) -> torch.device:
    """``auto`` is CUDA when a device is visible, else the CPU."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise ConfigError(
            "inference.device is 'cuda' but no CUDA device is visible; use 'auto' or 'cpu'"
        )
    return torch.device(name)


def resolve_model_device(settings: Settings) -> torch.device:
    """The device for ``inference.device``; for an .onnx model, CUDA also needs onnxruntime's
    CUDA provider (``auto`` falls back to the CPU without it, ``cuda`` is an error)."""
    name = settings.inference.device
    device = resolve_device(name)
    if device.type == "cuda" and settings.model.runs_in_onnx:
        from chunkflow.engine.onnx_engine import NO_CUDA_PROVIDER, has_cuda_provider

        if not has_cuda_provider():
            if name == "cuda":
                raise ConfigError(f"inference.device is 'cuda' but {NO_CUDA_PROVIDER}")
            return torch.device("cpu")
    return device


class PeakMemory:
    """The most memory PyTorch held on a CUDA ``device`` since the last ``reset`` (None for any
    other device)."""

    def __init__(self, device: torch.device) -> None:
        self.device = device

    def reset(self) -> None:
        if self.device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(self.device)

    def megabytes(self) -> float | None:
        if self.device.type != "cuda":
            return None
        return round(torch.cuda.max_memory_allocated(self.device) / 2**20, 1)

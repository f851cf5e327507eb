"""Small real models and volumes for the tests (made in code, saved as real files)."""

from __future__ import annotations

import contextlib
import copy
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from chunkflow.geometry.boxes import Vec
from chunkflow.settings import OutputSettings
from chunkflow.volumes.base import VolumeInfo
from chunkflow.volumes.zarr_volume import ZarrVolume


class ValidConvNet(nn.Module):
    """A random-weight net whose output is its input shrunk by ``2 * depth`` (valid convolutions).

    Its first convolution is zero-padded ("same"), so like most real networks it is not
    translation-equivariant near patch borders: where a patch sits changes what it predicts.
    """

    def __init__(
        self, channels_out: int = 2, depth: int = 1, seed: int = 0, channels_in: int = 1
    ) -> None:
        super().__init__()
        torch.manual_seed(seed)
        layers: list[nn.Module] = [nn.Conv3d(channels_in, 4, 3, padding=1), nn.Tanh()]
        for _ in range(depth):
            layers += [nn.Conv3d(4, 4, 3), nn.Tanh()]
        layers += [nn.Conv3d(4, channels_out, 1), nn.Sigmoid()]
        self.body = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x)


class ConstantNet(nn.Module):
    """Outputs ``value`` everywhere, in ``channels`` channels, cropping ``crop`` per side."""

    def __init__(
        self, value: float, channels: int = 1, crop: tuple[int, int, int] = (0, 0, 0)
    ) -> None:
        super().__init__()
        self.value = value
        self.channels = channels
        self.crop = crop

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        cz, cy, cx = self.crop
        z, y, x_ = x.shape[2] - 2 * cz, x.shape[3] - 2 * cy, x.shape[4] - 2 * cx
        return torch.full(
            (x.shape[0], self.channels, z, y, x_), self.value, dtype=x.dtype, device=x.device
        )


@contextlib.contextmanager
def _torchscript() -> Iterator[None]:
    """TorchScript is deprecated in PyTorch but still read by chunkflow (users have such files):
    the tests make and read it without the deprecation warnings."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", r"`torch\.jit\.\w+` is deprecated", DeprecationWarning)
        yield


def save_torchscript(module: nn.Module, path: Path) -> str:
    with _torchscript():
        torch.jit.save(torch.jit.script(module.eval()), str(path))
    return str(path)


def load_torchscript(path: str) -> torch.jit.ScriptModule:
    with _torchscript():
        return torch.jit.load(path)


def smooth_volume(shape: Vec, seed: int = 0, dtype: str = "uint8") -> np.ndarray:
    """Random data with some spatial structure, so shifted patches see different context."""
    rng = np.random.default_rng(seed)
    data = rng.random(shape)
    for axis in range(3):
        data = (data + np.roll(data, 1, axis) + np.roll(data, -1, axis)) / 3
    data = (data - data.min()) / (data.max() - data.min())
    if dtype == "uint8":
        return np.rint(data * 255).astype(np.uint8)
    return data.astype(dtype)


def write_volume(
    path: Path,
    data: np.ndarray,
    offset: Vec = (0, 0, 0),
    resolution=(1.0, 1.0, 1.0),
    chunks: Vec = (8, 16, 16),
    zarr_format: int = 3,
) -> str:
    info = VolumeInfo(
        shape=data.shape[-3:],
        dtype=str(data.dtype),
        chunk_size=chunks,
        voxel_offset=offset,
        resolution=resolution,
        channels=None if data.ndim == 3 else data.shape[0],
    )
    volume = ZarrVolume.create(str(path), info, output_format(zarr_format))
    volume.write(info.bounds, data)
    return str(path)


def store_id(plan: Any) -> str | None:
    """The identity of ``plan``'s output store as recorded there (``VolumeInfo.store_id``)."""
    from chunkflow.volumes import open_output

    return open_output(plan.settings.output).info.store_id


def output_format(zarr_format: int = 3, shard_size: Vec | None = None) -> OutputSettings:
    """Output settings that only carry format options (what ``create`` and the checks read)."""
    return OutputSettings("", "float32", (1, 1, 1), zarr_format, shard_size=shard_size)


def config_with(base: dict[str, Any], **changes: Any) -> dict[str, Any]:
    """A deep copy of ``base`` with dotted keys set, e.g. ``config_with(c, **{"model.path": p})``."""
    out = copy.deepcopy(base)
    for dotted, value in changes.items():
        node = out
        *parents, last = dotted.split(".")
        for part in parents:
            node = node.setdefault(part, {})
        if value is None:
            node.pop(last, None)
        else:
            node[last] = value
    return out


def dry_run_job_counts(stdout: str) -> dict[str, int]:
    """Rule -> job count from the "Job stats" table Snakemake prints ({} when nothing to do)."""
    if "Job stats:" not in stdout:
        return {}
    lines = stdout.split("Job stats:", 1)[1].splitlines()
    counts = {}
    for line in lines[3:]:
        parts = line.split()
        if len(parts) != 2 or parts[0] == "total":
            break
        counts[parts[0]] = int(parts[1])
    return counts

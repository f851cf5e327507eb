"""The built-in demo: a synthetic EM-like volume and a small fixed-weight boundary network.

The volume has cells with dark membranes and noise (z, y, x, anisotropic like serial-section EM).
The network predicts three affinity-like channels (z, y, x): high where a voxel and its
predecessor along that axis both lie inside a cell, low across membranes. Its convolutions are
valid, so its output patch is smaller than its input patch by (4, 6, 6).
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np

from chunkflow.geometry.boxes import Vec
from chunkflow.volumes.base import VolumeInfo

log = logging.getLogger(__name__)

DEMO_SHAPE: Vec = (64, 512, 512)
DEMO_RESOLUTION = (40.0, 8.0, 8.0)  # nm, z y x
MODEL_SHRINK: Vec = (4, 6, 6)


def synthetic_em(shape: Vec = DEMO_SHAPE, seed: int = 0, cell_size: float = 40.0) -> np.ndarray:
    """uint8 EM-like volume: bright cells, dark membranes on the zero set of a smooth field."""
    rng = np.random.default_rng(seed)
    noise = rng.standard_normal(shape).astype(np.float32)
    # smooth the noise with a Gaussian in Fourier space; z is 5x coarser than y, x
    sigma = (cell_size / 5 / 5, cell_size / 5, cell_size / 5)
    freqs = [np.fft.fftfreq(shape[0]), np.fft.fftfreq(shape[1]), np.fft.rfftfreq(shape[2])]
    kz, ky, kx = (f * s for f, s in zip(freqs, sigma, strict=True))
    kernel = np.exp(
        -2 * np.pi**2 * (kz[:, None, None] ** 2 + ky[None, :, None] ** 2 + kx[None, None, :] ** 2)
    )
    field = np.fft.irfftn(
        np.fft.rfftn(noise) * kernel.astype(np.float32), s=shape, axes=(0, 1, 2)
    ).astype(np.float32)
    field /= field.std()
    membrane = np.exp(-((field / 0.12) ** 2))
    texture = rng.standard_normal(shape).astype(np.float32)
    image = 175.0 - 135.0 * membrane + 10.0 * texture
    return np.clip(np.rint(image), 0, 255).astype(np.uint8)


def boundary_net():
    """The demo network (fixed weights): smoothing, then per-axis neighbour affinities."""
    import torch
    from torch import nn

    class BoundaryNet(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.smooth = nn.Conv3d(1, 1, (3, 5, 5), bias=False)
            self.affinity = nn.Conv3d(1, 3, 3, bias=False)
            with torch.no_grad():
                g = torch.tensor([1.0, 4.0, 6.0, 4.0, 1.0])
                plane = torch.outer(g, g)
                smooth = torch.stack([plane, 2 * plane, plane])
                self.smooth.weight.copy_((smooth / smooth.sum())[None, None])
                pairs = torch.zeros(3, 1, 3, 3, 3)
                pairs[:, 0, 1, 1, 1] = 0.5
                pairs[0, 0, 0, 1, 1] = 0.5  # z predecessor
                pairs[1, 0, 1, 0, 1] = 0.5  # y predecessor
                pairs[2, 0, 1, 1, 0] = 0.5  # x predecessor
                self.affinity.weight.copy_(pairs)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return torch.sigmoid(12.0 * (self.affinity(self.smooth(x)) - 0.45))

    return BoundaryNet().eval()


def write_demo(directory: str | Path, shape: Vec = DEMO_SHAPE, seed: int = 0) -> tuple[Path, Path]:
    """Write ``raw.zarr`` and the ``torch.export`` archive ``boundary_net.pt2`` into ``directory``.

    Existing files are kept (the demo is deterministic), so a rerun changes nothing.
    """
    from chunkflow.volumes.zarr_volume import ZarrVolume, create_array

    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    raw, model = directory / "raw.zarr", directory / "boundary_net.pt2"
    if not raw.exists():
        log.info("writing the synthetic volume %s %s", raw, shape)
        info = VolumeInfo(
            shape=shape, dtype="uint8", chunk_size=(32, 128, 128), resolution=DEMO_RESOLUTION
        )
        create_array(str(raw), info)
        ZarrVolume(str(raw), mode="r+").write(info.bounds, synthetic_em(shape, seed))
    if not model.exists():
        _save_boundary_net(model)
    return raw, model


def _save_boundary_net(path: Path) -> None:
    """Save the demo network as a ``torch.export`` program taking any batch and patch size."""
    import torch

    example = torch.rand(2, 1, 20, 134, 134)  # batch 2: a batch of 1 would be specialised
    dynamic = {0: torch.export.Dim("batch"), **dict.fromkeys((2, 3, 4), torch.export.Dim.DYNAMIC)}
    program = torch.export.export(boundary_net(), (example,), dynamic_shapes=(dynamic,))
    torch.export.save(program, str(path))

"""The inference cases: a volume, a model and a config per case (patch geometry, overlap,
padding, ROI), for the placement and numerics checks on CPU and CUDA."""

from __future__ import annotations

from pathlib import Path

import torch
from helpers import (
    ValidConvNet,
    config_with,
    save_torchscript,
    smooth_volume,
    write_volume,
)

CASES = {
    # name: (volume shape, volume offset, roi offset, roi size, Pi, Po, overlap, padding)
    "same_size_patches": (
        (20, 48, 56),
        (0, 0, 0),
        None,
        None,
        (6, 16, 16),
        (6, 16, 16),
        (2, 4, 4),
        "reflect",
    ),
    "valid_conv_anisotropic": (
        (20, 48, 56),
        (0, 0, 0),
        None,
        None,
        (8, 18, 20),
        (6, 16, 18),
        (2, 4, 6),
        "reflect",
    ),
    "roi_inside_offset_volume": (
        (24, 56, 56),
        (10, -5, 3),
        (13, 3, 7),
        (16, 40, 44),
        (8, 18, 20),
        (6, 16, 18),
        (3, 5, 7),
        "reflect",
    ),
    "roi_at_edge_zero_padding": (
        (20, 48, 56),
        (0, 0, 0),
        (4, 0, 8),
        (16, 48, 48),
        (8, 18, 20),
        (6, 16, 18),
        (2, 4, 6),
        "zero",
    ),
}


def case_config(tmp_path: Path, name: str, **extra) -> dict:
    shape, vol_offset, roi_offset, roi_size, pi, po, overlap, padding = CASES[name]
    raw = write_volume(
        tmp_path / "raw.zarr", smooth_volume(shape, seed=3), offset=vol_offset, chunks=(4, 8, 8)
    )
    depth = (pi[0] - po[0]) // 2
    if depth:
        model = save_torchscript(ValidConvNet(channels_out=2, depth=depth), tmp_path / "net.pt")
    else:
        model = save_torchscript(ConstantNetFree(), tmp_path / "net.pt")
    config = {
        "input": {"path": raw, "padding": padding},
        "output": {"path": str(tmp_path / "out.zarr"), "chunk_size": [4, 8, 8]},
        "block_size": [8, 16, 16],
        "model": {"path": model, "input_patch_size": list(pi), "output_patch_size": list(po)},
        "inference": {"overlap": list(overlap), "batch_size": 5},
        "state_dir": str(tmp_path / "state"),
    }
    if roi_offset is not None:
        config["roi"] = {"offset": list(roi_offset), "size": list(roi_size)}
    return config_with(config, **extra)


class ConstantNetFree(torch.nn.Module):
    """A same-size (Pi == Po) net: a pointwise nonlinearity of a 3x3x3 neighbourhood (padded)."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(1)
        self.conv = torch.nn.Conv3d(1, 2, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(self.conv(x))

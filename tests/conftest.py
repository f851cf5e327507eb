"""Shared fixtures: a small real volume, a real TorchScript model and a config pointing at them."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import pytest

sys.path.insert(0, str(Path(__file__).parent))

from helpers import ValidConvNet, save_torchscript, smooth_volume, write_volume  # noqa: E402


@pytest.fixture
def small_config(tmp_path: Path) -> dict[str, Any]:
    """A 20 x 48 x 56 uint8 volume, a 2-channel valid-conv net (context 1), 8 blocks of 8 x 24 x 32.

    All paths are absolute, inside ``tmp_path``.
    """
    raw = write_volume(tmp_path / "raw.zarr", smooth_volume((20, 48, 56)), chunks=(4, 8, 8))
    model = save_torchscript(ValidConvNet(channels_out=2), tmp_path / "net.pt")
    return {
        "input": {"path": raw},
        "output": {"path": str(tmp_path / "out.zarr"), "chunk_size": [4, 8, 8]},
        "block_size": [12, 24, 32],
        "model": {
            "path": model,
            "input_patch_size": [8, 18, 20],
            "output_patch_size": [6, 16, 18],
        },
        "inference": {"overlap": [2, 4, 6], "batch_size": 3},
        "state_dir": str(tmp_path / "state"),
    }

"""A block job slow enough to be killed mid-block: 24 pieces of a model that sleeps on every
batch (in the job ``killed_mid_block`` starts; other runs of the model do not sleep), run
through the `chunkflow` command."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import torch
import yaml
from helpers import smooth_volume, write_volume

BIN = Path(sys.executable).parent

SLEEP = "CHUNKFLOW_TEST_SLOW_NET_S"  # seconds the model sleeps a batch; unset: none
SLOW_NET = f"""\
import os
import time

import torch
from torch import nn


class Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.body = nn.Sequential(nn.Conv3d(1, 4, 3, padding=1), nn.Tanh(), nn.Conv3d(4, 2, 1))

    def forward(self, x):
        time.sleep(float(os.environ.get("{SLEEP}", 0)))
        return torch.sigmoid(self.body(x))


def build_model():
    return Net()
"""


def slow_config(tmp_path: Path) -> tuple[dict, Path]:
    raw = write_volume(tmp_path / "raw.zarr", smooth_volume((16, 48, 48)), chunks=(4, 8, 8))
    (tmp_path / "slow.py").write_text(SLOW_NET)
    namespace: dict = {}
    exec(SLOW_NET, namespace)
    torch.manual_seed(0)
    torch.save(namespace["build_model"]().state_dict(), tmp_path / "slow.pt")
    config = {
        "input": {"path": raw},
        "output": {"path": str(tmp_path / "out.zarr"), "chunk_size": [4, 8, 8]},
        "block_size": [16, 48, 48],
        "piece_size": [4, 16, 24],  # 4 x 3 x 2 = 24 pieces
        "model": {
            "path": str(tmp_path / "slow.py"),
            "weights": str(tmp_path / "slow.pt"),
            "input_patch_size": [4, 12, 12],
            "output_channels": 2,
        },
        "inference": {"overlap": [1, 4, 4], "batch_size": 2},
        "state_dir": str(tmp_path / "state"),
    }
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(config))
    return config, path


def chunkflow(*args: str, sleep: float = 0, **kwargs) -> subprocess.Popen:
    """`chunkflow -v *args`, the slow net sleeping ``sleep`` seconds a batch."""
    env = {**os.environ, "PYTHONUNBUFFERED": "1", SLEEP: str(sleep)}
    return subprocess.Popen(
        [str(BIN / "chunkflow"), "-v", *args], stderr=subprocess.PIPE, text=True, env=env, **kwargs
    )


def pieces_computed(log: str) -> list[int]:
    return [int(n) for n in re.findall(r"block z0_y0_x0: piece (\d+)/24", log)]


def killed_mid_block(tmp_path: Path) -> tuple[dict, Path, Path, str]:
    """A block job of ``slow_config`` killed (SIGKILL) once it has written 5 of its 24 pieces:
    the config, its file, the block's piece progress, and what the job had logged."""
    config, path = slow_config(tmp_path)
    assert chunkflow("create-output", "--config", str(path)).wait() == 0
    progress = Path(config["state_dir"], "pieces", "z0_y0_x0", "progress.json")
    job = chunkflow("run-block", "--config", str(path), "z0_y0_x0", sleep=0.15)
    deadline = time.time() + 120
    while time.time() < deadline and not (
        progress.exists() and json.loads(progress.read_text())["written"] >= 5
    ):
        time.sleep(0.05)
    job.send_signal(signal.SIGKILL)
    return config, path, progress, job.communicate()[1]

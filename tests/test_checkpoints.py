"""What a done-marker vouches for: no marker for a block with non-finite predictions (unless
asked to write 0), and the digest of the input it read."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from helpers import config_with, save_torchscript
from run_helpers import read_back, run_all_blocks

from chunkflow import config as config_mod
from chunkflow.errors import ModelError
from chunkflow.plan.run_plan import make_plan
from chunkflow.state.run_state import RunState
from chunkflow.volumes import open_volume, read_padded


class LogNet(torch.nn.Module):
    """log(x - 0.45): NaN wherever the scaled input is below 0.45, finite elsewhere."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.log(x - 0.45).repeat(1, 2, 1, 1, 1)


def log_config(small_config: dict, tmp_path: Path, **changes) -> dict:
    model = save_torchscript(LogNet(), tmp_path / "log.pt")
    patch = {
        "model.path": model,
        "model.input_patch_size": [6, 16, 18],
        "model.output_patch_size": [6, 16, 18],
    }
    return config_with(small_config, **patch, **{"output.dtype": "float32"}, **changes)


def test_non_finite_predictions_fail_the_block_without_a_marker(small_config, tmp_path):
    config = log_config(small_config, tmp_path, piece_size=[4, 8, 8])
    raw = read_back(config["input"]["path"])[0].astype(np.float32) / 255
    with pytest.raises(ModelError) as err:
        run_all_blocks(config)
    message = str(err.value)
    assert "\n" not in message and "log.pt" in message and "inference.non_finite: zero" in message
    assert "block z0_y0_x0: the model" in message and "NaN or infinite values" in message
    z, y, x = (int(v) for v in message.split("the first at [")[1].split("]")[0].split(", "))
    assert raw[z, y, x] < 0.45  # where the model's input gives log of a negative number
    assert not list(Path(config["state_dir"], "blocks").glob("*/*.json"))


def test_non_finite_zero_writes_0_there_and_the_prediction_elsewhere(small_config, tmp_path):
    config = log_config(small_config, tmp_path, **{"inference.non_finite": "zero"})
    written = run_all_blocks(config)
    raw = read_back(config["input"]["path"])[0].astype(np.float32) / 255
    assert np.isfinite(written).all()
    assert (written[:, raw < 0.45] == 0).all()
    # where every patch covering a voxel saw a finite value the weighted mean of log(x - 0.45)
    # is that value (the net is pointwise): check the voxels far above the threshold
    safe = raw > 0.6
    np.testing.assert_allclose(written[0][safe], np.log(raw[safe] - 0.45), rtol=1e-5, atol=1e-6)
    default = config_mod.parse(log_config(small_config, tmp_path)).result_fingerprint("m", {})
    assert config_mod.parse(config).result_fingerprint("m", {}) != default


def test_the_marker_records_a_digest_of_the_input_it_read(small_config):
    run_all_blocks(small_config)
    plan = make_plan(config_mod.parse(small_config))
    volume = open_volume(small_config["input"]["path"])
    for block in plan.blocks:
        marker = json.loads(RunState.of(plan).marker(block.id).read_text())
        raw = read_padded(volume, plan.chunk_box(plan.patches(block)), "reflect")
        assert marker["input_digest_algorithm"] == "sha256"
        assert marker["input_digest"] == hashlib.sha256(raw.tobytes()).hexdigest()


class HugeNet(torch.nn.Module):
    """3e38 everywhere: finite values whose sum over a piece overflows float32."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (x * 0 + 3e38).repeat(1, 2, 1, 1, 1)


def test_finite_predictions_whose_sum_overflows_are_written(small_config, tmp_path):
    model = save_torchscript(HugeNet(), tmp_path / "huge.pt")
    config = config_with(
        small_config,
        **{
            "model.path": model,
            "model.input_patch_size": [6, 16, 18],
            "model.output_patch_size": [6, 16, 18],
            "output.dtype": "float32",
        },
    )
    written = run_all_blocks(config)
    assert np.isinf(written.sum()) and np.isfinite(written).all()
    np.testing.assert_allclose(written, 3e38, rtol=1e-5)

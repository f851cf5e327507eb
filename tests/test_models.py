"""Model files: TorchScript, a Python file plus a state dict, and the shape checks."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from helpers import ConstantNet, ValidConvNet, config_with, save_torchscript
from run_helpers import run_all_blocks, run_as_well

from chunkflow.engine.blending import weight_map
from chunkflow.errors import ModelError

PY_MODEL = """
import sys
sys.path.insert(0, {helpers_dir!r})
from helpers import ValidConvNet


def build_model():
    return ValidConvNet(channels_out=2, seed=123)  # a different init: the weights file must win
"""


def test_python_file_with_weights_equals_torchscript(tmp_path: Path, small_config: dict) -> None:
    net = ValidConvNet(channels_out=2, seed=7)
    torch.save(net.state_dict(), tmp_path / "weights.pt")
    source = tmp_path / "model_def.py"
    source.write_text(PY_MODEL.format(helpers_dir=str(Path(__file__).parent)))
    scripted = save_torchscript(net, tmp_path / "net7.pt")

    from_ts = run_all_blocks(config_with(small_config, **{"model.path": scripted}))
    from_py = run_as_well(
        small_config,
        "py",
        **{"model.path": str(source), "model.weights": str(tmp_path / "weights.pt")},
    )
    assert from_ts.shape == (2, 20, 48, 56)
    np.testing.assert_array_equal(from_py, from_ts)


def test_wrong_output_shape_fails_with_a_clear_message(tmp_path: Path, small_config: dict) -> None:
    # the model keeps its input size (crop 0), the config says the output patch is smaller
    model = save_torchscript(ConstantNet(0.5, channels=2), tmp_path / "same.pt")
    with pytest.raises(
        ModelError,
        match=r"returned shape \[1, 2, 8, 18, 20\].*expected \(batch, channels, 6, 16, 18\)",
    ):
        run_all_blocks(config_with(small_config, **{"model.path": model}))


def test_wrong_channel_count_fails_with_a_clear_message(small_config: dict) -> None:
    with pytest.raises(ModelError, match="returned 2 channels but 3 are expected"):
        run_all_blocks(config_with(small_config, **{"model.output_channels": 3}))


@pytest.mark.parametrize("kind", ["bump", "gaussian", "constant"])
def test_weight_maps_are_positive_and_peak_in_the_centre(kind: str) -> None:
    w = weight_map(kind, (16, 256, 256))
    assert w.dtype == np.float32 and w.min() > 0
    assert w[8, 128, 128] == w.max()
    if kind != "constant":
        assert w[0, 0, 0] < 1e-3 * w.max()


def test_torch_export_archive_equals_torchscript(tmp_path: Path, small_config: dict) -> None:
    net = ValidConvNet(channels_out=2, seed=7).eval()
    example = torch.zeros(2, 1, 8, 18, 20)
    batch = torch.export.Dim("batch", min=1, max=64)
    program = torch.export.export(net, (example,), dynamic_shapes=({0: batch},))
    torch.export.save(program, str(tmp_path / "net.pt2"))
    scripted = save_torchscript(net, tmp_path / "net7.pt")

    from_ts = run_all_blocks(config_with(small_config, **{"model.path": scripted}))
    from_export = run_all_blocks(
        config_with(
            small_config,
            **{
                "model.path": str(tmp_path / "net.pt2"),
                "output.path": str(tmp_path / "out_export.zarr"),
                "state_dir": str(tmp_path / "state_export"),
            },
        )
    )
    np.testing.assert_allclose(from_export, from_ts, atol=1e-6)

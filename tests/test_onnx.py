"""ONNX Runtime engine: export with `chunkflow export-onnx`, run .onnx models like PyTorch ones."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from helpers import ValidConvNet, config_with, save_torchscript
from run_helpers import run_all_blocks, run_as_well

from chunkflow import config as config_mod
from chunkflow.app.cli import main
from chunkflow.engine.models import load_model
from chunkflow.engine.onnx_export import export_onnx
from chunkflow.errors import ConfigError, ModelError
from chunkflow.settings import ModelSettings

CHUNKFLOW = str(Path(sys.executable).with_name("chunkflow"))
PATCH = (8, 18, 20)  # small_config's model.input_patch_size

PY_MODEL = """
import sys
sys.path.insert(0, {helpers_dir!r})
from helpers import ValidConvNet


def build_model():
    return ValidConvNet(channels_out=2, channels_in=2, seed=5)  # the weights file must win
"""


def _one_line(err: pytest.ExceptionInfo) -> str:
    text = str(err.value)
    assert "\n" not in text
    return text


def test_onnx_run_equals_torchscript(tmp_path: Path, small_config: dict) -> None:
    scripted = save_torchscript(ValidConvNet(channels_out=2, seed=7), tmp_path / "net7.pt")
    onnx = tmp_path / "net7.onnx"
    assert export_onnx(scripted, onnx, PATCH) <= 1e-5
    assert onnx.is_file() and not list(tmp_path.glob(".*.tmp"))

    from_ts = run_all_blocks(config_with(small_config, **{"model.path": scripted}))
    from_onnx = run_as_well(small_config, "onnx", **{"model.path": str(onnx)})
    assert from_ts.shape == (2, 20, 48, 56) and from_ts.dtype == np.float32
    assert float(np.abs(from_onnx - from_ts).max()) <= 1e-5


@pytest.mark.parametrize("kind", ["pt2", "py"])
def test_export_of_torch_export_and_python_models(tmp_path: Path, kind: str) -> None:
    net = ValidConvNet(channels_out=2, channels_in=2).eval()
    weights = None
    if kind == "pt2":
        batch = torch.export.Dim("batch", min=1, max=64)
        program = torch.export.export(
            net, (torch.zeros(2, 2, *PATCH),), dynamic_shapes=({0: batch},)
        )
        model = str(tmp_path / "net.pt2")
        torch.export.save(program, model)
    else:
        model = str(tmp_path / "net.py")
        Path(model).write_text(PY_MODEL.format(helpers_dir=str(Path(__file__).parent)))
        weights = str(tmp_path / "weights.pt")
        torch.save(net.state_dict(), weights)
    onnx = tmp_path / "net.onnx"
    assert export_onnx(model, onnx, PATCH, channels=2, weights=weights) <= 1e-5

    settings = ModelSettings(str(onnx), None, PATCH, PATCH, None)
    session = load_model(settings, torch.device("cpu"))
    for size in (1, 5):  # the batch axis is dynamic
        batch = torch.rand(size, 2, *PATCH)
        with torch.inference_mode():
            assert float((session(batch) - net(batch)).abs().max()) <= 1e-5


def test_export_command(tmp_path: Path) -> None:
    scripted = save_torchscript(ValidConvNet(), tmp_path / "net.pt")
    onnx = tmp_path / "net.onnx"
    size = [str(n) for n in PATCH]
    result = subprocess.run(
        [CHUNKFLOW, "export-onnx", scripted, str(onnx), "--input-patch-size", *size],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    assert onnx.is_file() and "max |diff|" in result.stdout


def test_export_of_a_missing_model_is_one_line(tmp_path: Path, capsys) -> None:
    args = [
        str(tmp_path / "none.pt"),
        str(tmp_path / "x.onnx"),
        "--input-patch-size",
        "8",
        "8",
        "8",
    ]
    assert main(["export-onnx", *args]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "none.pt' not found" in err
    assert not (tmp_path / "x.onnx").exists()


def test_float16_with_onnx_is_a_config_error(small_config: dict) -> None:
    config = config_with(
        small_config, **{"model.path": "net.onnx", "inference.precision": "float16"}
    )
    with pytest.raises(ConfigError) as err:
        config_mod.parse(config)
    assert "precision float16" in _one_line(err)


def test_corrupt_onnx_file_is_a_model_error(tmp_path: Path, small_config: dict) -> None:
    bad = tmp_path / "bad.onnx"
    bad.write_bytes(b"not a protobuf")
    with pytest.raises(ModelError) as err:
        run_all_blocks(config_with(small_config, **{"model.path": str(bad)}))
    assert "cannot load ONNX model" in _one_line(err)


def test_wrong_input_patch_size_is_a_model_error(tmp_path: Path, small_config: dict) -> None:
    onnx = tmp_path / "net.onnx"
    export_onnx(save_torchscript(ValidConvNet(channels_out=2), tmp_path / "net.pt"), onnx, PATCH)
    config = config_with(
        small_config,
        **{
            "model.path": str(onnx),
            "model.input_patch_size": [10, 18, 20],
            "model.output_patch_size": [8, 16, 18],
        },
    )
    with pytest.raises(ModelError) as err:
        run_all_blocks(config)
    assert "the ONNX model failed on a batch of shape [1, 1, 10, 18, 20]" in _one_line(err)


def test_threads_set_the_intra_op_threads(tmp_path: Path) -> None:
    from chunkflow.engine.onnx_engine import OnnxModel

    onnx = tmp_path / "net.onnx"
    export_onnx(save_torchscript(ValidConvNet(), tmp_path / "net.pt"), onnx, PATCH)
    session = OnnxModel(str(onnx), torch.device("cpu"), threads=2).session
    assert session.get_session_options().intra_op_num_threads == 2

"""A piece's values on the model's device (``chunkflow.engine.device_values``): the input scaled
and the output converted there make the bytes numpy makes on the host. Here the device is the
CPU (the same torch code as on CUDA, without its streams; tests/test_cuda.py runs it on CUDA)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
import zarr
from helpers import config_with
from run_helpers import read_back
from test_checkpoints import log_config

from chunkflow import config as config_mod
from chunkflow.engine.device_values import scale_on_device, to_dtype_on_device
from chunkflow.engine.dtypes import scale_input, to_output_dtype
from chunkflow.errors import ModelError
from chunkflow.job.block_job import BlockRunner
from chunkflow.plan.run_plan import make_plan
from chunkflow.state.output_store import create_output
from chunkflow.state.run_state import RunState

STORED = ["uint8", "int8", "uint16", "int16", "uint32", "int32", "float32", "float64", "bool"]


def extremes(dtype: str) -> np.ndarray:
    """Random values of ``dtype`` with its smallest and largest."""
    rng = np.random.default_rng(5)
    if dtype == "bool":
        return rng.integers(0, 2, 1000).astype(bool)
    if np.issubdtype(dtype, np.integer):
        info = np.iinfo(dtype)
        values = rng.integers(info.min, info.max, 1000, dtype=dtype, endpoint=True)
        values[:2] = info.min, info.max
        return values
    return (rng.standard_normal(1000) * 1e3).astype(dtype)


@pytest.mark.parametrize("dtype", STORED)
@pytest.mark.parametrize("mode", ["auto", "none"])
def test_the_input_scaled_on_the_device_is_numpys_bytes(dtype: str, mode: str) -> None:
    raw = extremes(dtype).reshape(10, 10, 10)
    want = scale_input(raw.copy(), mode)
    got = scale_on_device(torch.from_numpy(raw.copy()), raw.dtype, mode).numpy()
    assert got.dtype == want.dtype == np.float32
    assert got.tobytes() == want.tobytes()


@pytest.mark.parametrize("dtype", ["uint8", "float16", "float32"])
def test_the_output_converted_on_the_device_is_numpys_bytes(dtype: str) -> None:
    rng = np.random.default_rng(7)
    halves = (np.arange(256, dtype=np.float32) + 0.5) / 255  # k + 0.5 after scaling: ties
    values = np.concatenate(
        [halves, rng.uniform(-0.5, 1.5, 10_000).astype(np.float32), [-0.0, 0.0, 1.0, 7e4]]
    ).astype(np.float32)
    want = to_output_dtype(values.copy(), dtype)
    got = to_dtype_on_device(torch.from_numpy(values.copy()), dtype).numpy()
    assert got.dtype == want.dtype and got.tobytes() == want.tobytes()


def run_with(config: dict, on_device: bool) -> tuple[np.ndarray, list[dict]]:
    """Every block of ``config`` by one BlockRunner whose values are on the device or not; the
    output read back and the markers."""
    plan = make_plan(config_mod.parse(config))
    create_output(plan)
    markers = BlockRunner(plan, RunState.of(plan), values_on_device=on_device).run(plan.blocks)
    return read_back(config["output"]["path"])[0], [m.to_json() for m in markers]


def both_ways(config: dict, tmp_path: Path) -> tuple[tuple, tuple]:
    """``run_with`` on the host and on the device, each into its own output and state."""
    return tuple(
        run_with(
            config_with(
                config,
                **{"output.path": str(tmp_path / f"{name}.zarr")},
                state_dir=str(tmp_path / f"state_{name}"),
            ),
            on_device,
        )
        for name, on_device in (("host", False), ("device", True))
    )


@pytest.mark.parametrize("dtype", ["uint8", "float16", "float32"])
def test_a_streamed_block_job_writes_the_same_bytes_with_its_values_on_the_device(
    small_config: dict, tmp_path: Path, dtype: str
) -> None:
    # pieces of 4 x 8 x 8 in blocks of 12 x 24 x 32: sums carried between pieces
    config = config_with(small_config, piece_size=[4, 8, 8], **{"output.dtype": dtype})
    (host, host_markers), (device, device_markers) = both_ways(config, tmp_path)
    assert device.dtype == np.dtype(dtype) and device.tobytes() == host.tobytes()
    assert host.std() > 0  # a prediction, not a constant
    assert all(m["pieces"] > 1 for m in device_markers)
    for ours, theirs in zip(host_markers, device_markers, strict=True):
        for key in ("output_sha256", "input_digest"):
            assert ours[key] == theirs[key]


def test_non_finite_predictions_on_the_device_fail_or_are_zeroed_as_on_the_host(
    small_config: dict, tmp_path: Path
) -> None:
    config = log_config(small_config, tmp_path, piece_size=[4, 8, 8])
    errors = []
    for on_device in (False, True):
        with pytest.raises(ModelError) as err:
            run_with(config_with(config, state_dir=str(tmp_path / f"s{on_device}")), on_device)
        errors.append(str(err.value))
    assert errors[0] == errors[1] and "NaN or infinite values" in errors[0]
    zeroed = config_with(config, **{"inference.non_finite": "zero"})
    (host, _), (device, _) = both_ways(zeroed, tmp_path / "zero")
    assert (host == 0).any() and device.tobytes() == host.tobytes()


def test_a_big_endian_input_is_sent_in_this_machines_byte_order(
    small_config: dict, tmp_path: Path
) -> None:
    raw = read_back(small_config["input"]["path"])[0]
    stored = zarr.create_array(
        str(tmp_path / "be.zarr"), shape=raw.shape, chunks=(4, 8, 8), dtype=">u2", zarr_format=2
    )
    stored[:] = raw.astype(">u2") * 257  # the whole uint16 range
    assert stored[:2, :2, :2].dtype.byteorder == ">"  # read back as stored
    config = config_with(
        small_config, piece_size=[4, 8, 8], **{"input.path": str(tmp_path / "be.zarr")}
    )
    (host, _), (device, _) = both_ways(config, tmp_path)
    assert device.tobytes() == host.tobytes() and host.std() > 0

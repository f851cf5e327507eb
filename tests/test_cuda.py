"""The CUDA paths (skipped without a CUDA device: CI has none; run on a GPU machine)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from helpers import config_with
from inference_cases import case_config
from run_helpers import run_all_blocks
from test_checkpoints import log_config
from test_device_values import both_ways, extremes

from chunkflow.engine.device_values import scale_on_device, to_dtype_on_device
from chunkflow.engine.dtypes import scale_input, to_output_dtype

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")

CASE = "roi_inside_offset_volume"


def test_cuda_matches_cpu_in_float32(tmp_path: Path) -> None:
    cpu = run_all_blocks(case_config(tmp_path / "cpu", CASE, **{"inference.device": "cpu"}))
    gpu = run_all_blocks(case_config(tmp_path / "gpu", CASE, **{"inference.device": "cuda"}))
    assert np.abs(gpu - cpu).max() <= 1e-5


def test_exact_placement_is_block_size_independent_on_cuda(tmp_path: Path) -> None:
    whole = run_all_blocks(case_config(tmp_path / "whole", CASE, block_size=[64, 64, 64]))
    for i, block in enumerate(([4, 8, 8], [8, 24, 16], [12, 40, 32])):
        got = run_all_blocks(case_config(tmp_path / f"b{i}", CASE, block_size=block))
        assert np.abs(got - whole).max() <= 1e-6, f"block_size {block}"


@pytest.mark.parametrize("precision", ["float16", "bfloat16"])
def test_autocast_on_cuda_stays_close_to_float32(tmp_path: Path, precision: str) -> None:
    full = run_all_blocks(case_config(tmp_path / "f32", CASE))
    half = run_all_blocks(
        case_config(tmp_path / precision, CASE, **{"inference.precision": precision})
    )
    assert 0 < np.abs(half - full).max() <= 2e-2


def test_auto_device_runs_on_cuda_and_says_so(tmp_path: Path) -> None:
    config = case_config(tmp_path, CASE)
    run_all_blocks(config)
    markers = [
        json.loads(p.read_text()) for p in Path(config["state_dir"], "blocks").glob("*/*.json")
    ]
    assert markers and all(m["ran_on"]["device"].startswith("cuda") for m in markers)


@pytest.mark.parametrize(
    "dtype", ["uint8", "int8", "uint16", "int16", "uint32", "int32", "float32"]
)
def test_scaling_on_cuda_is_numpys_bytes(dtype: str) -> None:
    raw = extremes(dtype)
    scaled = scale_on_device(torch.from_numpy(raw).cuda(), raw.dtype, "auto")
    assert scaled.cpu().numpy().tobytes() == scale_input(raw.copy(), "auto").tobytes()


@pytest.mark.parametrize("dtype", ["uint8", "float16"])
def test_conversion_on_cuda_is_numpys_bytes(dtype: str) -> None:
    ties = (np.arange(256, dtype=np.float32) + 0.5) / 255
    rng = np.random.default_rng(0)
    values = np.concatenate([ties, rng.uniform(-0.5, 1.5, 100_000), [7e4]]).astype(np.float32)
    converted = to_dtype_on_device(torch.from_numpy(values).cuda(), dtype)
    assert converted.cpu().numpy().tobytes() == to_output_dtype(values.copy(), dtype).tobytes()


@pytest.mark.parametrize("dtype", ["uint8", "float16"])
def test_a_block_job_with_its_values_on_cuda_writes_the_host_paths_bytes(
    small_config: dict, tmp_path: Path, dtype: str
) -> None:
    config = config_with(
        small_config, piece_size=[4, 8, 8], **{"output.dtype": dtype, "inference.device": "cuda"}
    )
    (host, _), (device, markers) = both_ways(config, tmp_path)
    assert device.tobytes() == host.tobytes() and host.std() > 0
    assert all(m["ran_on"]["peak_gpu_memory_mb"] > 0 for m in markers)


def test_non_finite_predictions_on_cuda_are_zeroed_as_on_the_host(
    small_config: dict, tmp_path: Path
) -> None:
    config = log_config(
        small_config,
        tmp_path,
        piece_size=[4, 8, 8],
        **{"inference.device": "cuda", "inference.non_finite": "zero"},
    )
    (host, _), (device, _) = both_ways(config, tmp_path)
    assert (host == 0).any() and device.tobytes() == host.tobytes()

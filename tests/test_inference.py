"""The numbers: exact placement is block-size independent and equals an independent whole-ROI
reference; crop placement equals a straightforward per-block reference; a constant model gives
exactly its constant."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from helpers import (
    ConstantNet,
    save_torchscript,
)
from inference_cases import CASES, case_config
from inference_reference import patch_starts, reference, whole_roi_reference
from run_helpers import run_all_blocks

from chunkflow.engine.dtypes import to_output_dtype


def _roi(config: dict, shape_offset) -> tuple[tuple, tuple]:
    shape, vol_offset = shape_offset
    roi = config.get("roi")
    if roi:
        return tuple(roi["offset"]), tuple(roi["size"])
    return tuple(vol_offset), tuple(shape)


@pytest.mark.parametrize("case", sorted(CASES))
def test_exact_placement_matches_independent_whole_roi_reference(tmp_path: Path, case: str) -> None:
    config = case_config(tmp_path, case)
    got = run_all_blocks(config)
    roi_start, roi_shape = _roi(config, CASES[case][:2])
    want = whole_roi_reference(config, roi_start, roi_shape)
    assert got.shape == want.shape
    assert np.abs(got - want).max() <= 1e-5


@pytest.mark.parametrize(
    "case", ["valid_conv_anisotropic", "roi_inside_offset_volume", "roi_at_edge_zero_padding"]
)
def test_exact_placement_is_the_same_for_every_block_size(tmp_path: Path, case: str) -> None:
    whole = run_all_blocks(case_config(tmp_path / "whole", case, block_size=[64, 64, 64]))
    # block sizes that divide the ROI, that do not, and single-chunk blocks
    for i, block in enumerate(([4, 8, 8], [8, 24, 16], [12, 40, 32], [16, 16, 48])):
        got = run_all_blocks(case_config(tmp_path / f"b{i}", case, block_size=block))
        assert np.abs(got - whole).max() <= 1e-6, f"block_size {block}"


def test_crop_placement_matches_a_straightforward_reference(tmp_path: Path) -> None:
    margin = [2, 4, 4]
    config = case_config(
        tmp_path,
        "valid_conv_anisotropic",
        **{"inference.placement": "crop", "inference.crop_margin": margin},
    )
    got = run_all_blocks(config)
    po = np.array(config["model"]["output_patch_size"])
    stride = po - np.array(config["inference"]["overlap"])
    shape = np.array(CASES["valid_conv_anisotropic"][0])
    block = np.array(config["block_size"])
    want = np.zeros_like(got)
    for z in range(0, shape[0], block[0]):
        for y in range(0, shape[1], block[1]):
            for x in range(0, shape[2], block[2]):
                b0 = np.array([z, y, x])
                b1 = np.minimum(b0 + block, shape)
                c0, c1 = b0 - margin, b1 + margin  # the chunk: block + margin, padded outside
                starts = [
                    patch_starts(a, n, p, s)
                    for a, n, p, s in zip(c0, c1 - c0, po, stride, strict=True)
                ]
                region_shape = tuple(np.maximum(c1 - c0, po))
                part = reference(
                    config, None, None, starts, tuple(c0), region_shape, crop_to=(b0, b1)
                )
                want[:, b0[0] : b1[0], b0[1] : b1[1], b0[2] : b1[2]] = part
    assert np.abs(got - want).max() <= 1e-5
    # crop placement is not seamless: it differs from the exact result somewhere
    exact = run_all_blocks(case_config(tmp_path / "exact", "valid_conv_anisotropic"))
    assert np.abs(got - exact).max() > 1e-4


@pytest.mark.parametrize("placement", ["exact", "crop"])
@pytest.mark.parametrize("blend", ["bump", "gaussian", "constant"])
def test_constant_model_gives_its_constant(tmp_path: Path, placement: str, blend: str) -> None:
    model = save_torchscript(ConstantNet(0.5, channels=3, crop=(1, 2, 3)), tmp_path / "const.pt")
    config = case_config(
        tmp_path,
        "valid_conv_anisotropic",
        **{
            "model.path": model,
            "model.input_patch_size": [8, 20, 24],
            "model.output_patch_size": [6, 16, 18],
            "inference.placement": placement,
            "inference.blend": blend,
        },
    )
    got = run_all_blocks(config)
    assert got.shape == (3, 20, 48, 56)
    # the weights are rounded to float32 per voxel, their sum is exact: a few units of 6e-8
    assert np.abs(got - 0.5).max() <= 2e-7


def test_uint8_output_and_non_dyadic_constant(tmp_path: Path) -> None:
    model = save_torchscript(ConstantNet(0.2, channels=1), tmp_path / "const.pt")
    config = case_config(tmp_path / "f", "same_size_patches", **{"model.path": model})
    assert np.abs(run_all_blocks(config) - 0.2).max() <= 1e-6
    config = case_config(
        tmp_path / "u", "same_size_patches", **{"model.path": model, "output.dtype": "uint8"}
    )
    got = run_all_blocks(config)
    assert got.dtype == np.uint8 and np.all(got == 51)  # 0.2 * 255


def test_output_dtype_conversion_clips_scales_and_rounds() -> None:
    values = [-0.5, 0.0, 0.001, 0.6 / 255, 1.4 / 255, 0.2, 0.999, 1.0, 7.0]
    expected = [0, 0, 0, 1, 1, 51, 255, 255, 255]  # clipped to [0, 1], x 255, to the nearest
    data = np.array(values, dtype=np.float32).reshape(1, 1, 3, 3)
    got = to_output_dtype(data.copy(), "uint8")
    assert got.dtype == np.uint8 and got.ravel().tolist() == expected
    half = to_output_dtype(data.copy(), "float16")
    assert half.dtype == np.float16 and np.allclose(half.ravel(), values, rtol=1e-3)
    assert to_output_dtype(data, "float32") is data  # float32 is passed through, not copied


def test_uint8_conversion_in_tiles_matches_whole_array_passes() -> None:
    """A view of a larger array (not contiguous), rows that are not a multiple of the tile:
    the tiled conversion gives the bytes of the four passes over the whole array."""
    rng = np.random.default_rng(3)
    whole = rng.uniform(-0.2, 1.2, (3, 6, 700, 530)).astype(np.float32)
    view = whole[:, 1:5, 3:690, 7:520]
    expected = np.rint(np.clip(view, 0.0, 1.0) * np.float32(255.0)).astype(np.uint8)
    got = to_output_dtype(view, "uint8")
    assert got.shape == view.shape and got.tobytes() == expected.tobytes()


def test_float16_output_and_bfloat16_autocast_stay_close(tmp_path: Path) -> None:
    base = run_all_blocks(case_config(tmp_path / "a", "valid_conv_anisotropic"))
    half = run_all_blocks(
        case_config(tmp_path / "b", "valid_conv_anisotropic", **{"output.dtype": "float16"})
    )
    assert half.dtype == np.float16 and np.abs(half.astype(np.float32) - base).max() <= 1e-3
    bf16 = run_all_blocks(
        case_config(tmp_path / "c", "valid_conv_anisotropic", **{"inference.precision": "bfloat16"})
    )
    assert 0 < np.abs(bf16 - base).max() <= 2e-2

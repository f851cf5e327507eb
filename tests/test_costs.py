"""The plan's costs from lattice arithmetic, checked against enumerating every patch of every
block; the block size advice; `chunkflow plan` on a petabyte-class volume (no enumeration)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import yaml
import zarr
from helpers import ConstantNet, config_with, save_torchscript, write_volume

from chunkflow import config as config_mod
from chunkflow.app.cli import main
from chunkflow.geometry.boxes import ceil_div
from chunkflow.geometry.pieces import PieceLayout
from chunkflow.geometry.placement import exact_patches, lattice_starts, lattice_window
from chunkflow.plan.costs import JobTarget, block_count, plan_costs, recommend_block_size
from chunkflow.plan.run_plan import RunPlan, make_plan
from chunkflow.volumes import VolumeInfo


def test_lattice_window_counts_the_starts_in_a_range():
    for start in (0, -5):
        for patch in (1, 2, 5, 9):
            for stride in range(1, patch + 1):
                for length in range(1, patch + 3 * stride + 3):
                    starts = lattice_starts(start, length, patch, stride)
                    for lo in range(start - patch - 2, start + length + 2):
                        for hi in range(lo, start + length + 3):
                            inside = [s for s in starts if lo <= s < hi]
                            want = (len(inside), inside[0], inside[-1]) if inside else (0, lo, lo)
                            got = lattice_window(start, length, patch, stride, lo, hi)
                            assert got == want, (start, length, patch, stride, lo, hi)


# ---------------------------------------------------------------------------------------------
# counts against enumeration

VOLUME = VolumeInfo(
    shape=(21, 45, 50), dtype="uint16", chunk_size=(4, 8, 8), voxel_offset=(-3, 10, 0), channels=2
)
CASES = {
    "exact, uneven last blocks": {},
    "exact, pieces": {"piece_size": [4, 8, 4]},
    "exact, no overlap": {"inference.overlap": [0, 0, 0], "piece_size": [8, 8, 8]},
    "exact, ROI offset, one patch long in z": {
        "roi": {"offset": [0, 12, 3], "size": [4, 30, 41]},
        "piece_size": [4, 8, 8],
    },
    "crop": {"inference.placement": "crop", "inference.crop_margin": [1, 2, 3]},
    "crop, pieces, last blocks shorter than a patch": {
        "inference.placement": "crop",
        "inference.crop_margin": [0, 1, 2],
        "roi": {"offset": [-3, 10, 0], "size": [18, 34, 50]},
        "block_size": [8, 16, 24],
        "piece_size": [4, 8, 8],
    },
}


def counting_plan(tmp_path: Path, changes: dict) -> RunPlan:
    """A plan over a store of ``VOLUME``'s metadata (no chunk written: they read as the fill
    value) with a placeholder model file: plans read no model."""
    from chunkflow.volumes.zarr_volume import create_array

    model, raw = tmp_path / "net.pt2", tmp_path / "raw.zarr"
    model.touch()
    if not raw.exists():
        create_array(str(raw), VOLUME)
    config = {
        "input": {"path": str(raw)},
        "output": {"path": "out.zarr", "dtype": "float16", "chunk_size": [4, 4, 4]},
        "block_size": [8, 16, 12],
        "model": {
            "path": str(model),
            "input_patch_size": [6, 10, 12],
            "output_patch_size": [4, 8, 8],
            "output_channels": 3,
        },
        "inference": {"overlap": [1, 3, 2]},
    }
    plan = make_plan(config_mod.parse(config_with(config, **changes)))
    assert plan.input_info == VOLUME
    return plan


def enumerated(plan: RunPlan, block) -> tuple[int, int, int]:
    """A block's patches, input voxels read (its pieces' chunks) and output voxels, listed."""
    layout = PieceLayout(block, plan.piece_size, plan.patch_intervals(block))
    chunks = [layout.patches(piece) for piece in layout.pieces]
    read = sum(plan.chunk_box(patches).size for patches in chunks if patches)
    return len(plan.patches(block)), read, block.box.size


def assert_counts_match(
    plan: RunPlan, blocks: list, input_bytes: int, output_bytes: int | None
) -> None:
    """``plan_costs`` equals the sums, minima and maxima over ``blocks``, each enumerated."""
    costs = plan_costs(plan)
    listed = {block.index: enumerated(plan, block) for block in blocks}
    patches, read, written = (np.array([v[i] for v in listed.values()]) for i in range(3))
    assert costs.blocks == len(blocks)
    assert costs.patches == patches.sum()
    assert costs.patches_per_block == (patches.min(), patches.max())
    assert [costs.block_patches(index) for index in listed] == list(patches)
    assert costs.read_bytes == read.sum() * input_bytes
    assert costs.read_bytes_per_block == (read.min() * input_bytes, read.max() * input_bytes)
    assert costs.roi_input_bytes == plan.roi.size * input_bytes
    assert costs.written_voxels == written.sum()
    assert costs.written_voxels_per_block == written.max()
    assert costs.output_voxel_bytes == output_bytes
    whole = len(exact_patches(plan.roi, plan.roi, plan.geometry))
    assert costs.whole_roi_patches == whole
    assert costs.cost_factor == pytest.approx(patches.sum() / whole)
    assert costs.job_memory_bytes == plan.job_memory_bytes()


@pytest.mark.parametrize("changes", CASES.values(), ids=CASES.keys())
def test_counts_equal_enumerating_every_patch(tmp_path, changes):
    plan = counting_plan(tmp_path, changes)
    assert any(s % b for s, b in zip(plan.roi.shape, plan.settings.block_size, strict=True))
    # two uint16 input channels; three float16 output channels
    assert_counts_match(plan, list(plan.grid), input_bytes=2 * 2, output_bytes=3 * 2)


def test_counts_over_the_blocks_a_mask_selects(small_config, tmp_path):
    mask = np.zeros((20, 48, 56), dtype=np.uint8)
    mask[1, 30, 2] = mask[15, 3, 50] = 1
    path = write_volume(tmp_path / "mask.zarr", mask)
    plan = make_plan(config_mod.parse(config_with(small_config, **{"mask.path": path})))
    assert [b.id for b in plan.blocks] == ["z0_y1_x0", "z1_y0_x1"]
    assert_counts_match(plan, plan.blocks, input_bytes=1, output_bytes=None)


# ---------------------------------------------------------------------------------------------
# block size advice

ADVICE = [  # ROI, storage unit, stride, target: hours, voxels per second, max jobs
    ((16384, 262144, 262144), (128, 1024, 1024), (12, 96, 96), JobTarget(1, 5e7, 20_000)),
    ((16384, 262144, 262144), (32, 256, 256), (12, 96, 96), JobTarget(0.01, 5e7, 20_000)),
    ((16384, 262144, 262144), (64, 64, 64), (96, 96, 96), JobTarget(1, 5e7, 1000)),
    ((64, 512, 512), (16, 128, 128), (12, 96, 96), JobTarget(1, 5e7, 20_000)),
    ((100, 3000, 70), (16, 128, 64), (12, 96, 96), JobTarget(1, 1e3, 20_000)),
    ((5000, 5000, 5000), (7, 9, 11), (20, 30, 40), JobTarget(1, 1e4, 20_000)),
    ((5000, 5000, 5000), (64, 64, 64), (20, 30, 40), JobTarget(1, 1, 1)),
]


@pytest.mark.parametrize("roi, unit, stride, target", ADVICE)
def test_advice_is_whole_units_within_the_job_limit(roi, unit, stride, target):
    size = recommend_block_size(roi, unit, stride, target)
    assert all(s % u == 0 for s, u in zip(size, unit, strict=True))
    assert all(u <= s <= ceil_div(r, u) * u for s, u, r in zip(size, unit, roi, strict=True))
    assert block_count(roi, size) <= target.max_jobs


def test_advice_fills_the_target_job_with_equal_strides_per_axis():
    target = JobTarget(hours=1, voxels_per_second=5e7, max_jobs=20_000)
    size = recommend_block_size((16384, 262144, 262144), (32, 256, 256), (12, 96, 96), target)
    assert 0.8 < target.job_seconds(size) / 3600 < 1.25
    strides = [s / t for s, t in zip(size, (12, 96, 96), strict=True)]
    assert max(strides) / min(strides) < 1.3  # anisotropic like the patch: z short
    whole = recommend_block_size((64, 512, 512), (16, 128, 128), (12, 96, 96), target)
    assert whole == (64, 512, 512)  # a small volume is one job


# ---------------------------------------------------------------------------------------------
# the command


def huge_config(tmp_path: Path, block_size: list[int]) -> str:
    """A 4096 x 16384 x 16384 (1.1e12 voxels) uint8 zarr with no chunk written, and a model
    (checked by `plan` on zero patches)."""
    zarr.create_array(
        tmp_path / "huge.zarr", shape=(4096, 16384, 16384), chunks=(64, 512, 512), dtype="uint8"
    )
    net = save_torchscript(ConstantNet(0.5, channels=3, crop=(2, 3, 3)), tmp_path / "net.pt")
    config = {
        "input": {"path": str(tmp_path / "huge.zarr")},
        "output": {
            "path": str(tmp_path / "out.zarr"),
            "dtype": "uint8",
            "chunk_size": [32, 256, 256],
        },
        "block_size": block_size,
        "model": {
            "path": net,
            "input_patch_size": [20, 134, 134],
            "output_patch_size": [16, 128, 128],
            "output_channels": 3,
        },
    }
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(config))
    return str(path)


def test_plan_of_half_a_million_blocks_counts_without_listing(tmp_path, capsys):
    config = huge_config(tmp_path, [32, 256, 256])
    assert main(["plan", "--config", config]) == 0
    out, err = capsys.readouterr()
    assert "blocks  524,288 = 128 x 64 x 64 of [32, 256, 256]" in out
    advice = [int(v) for v in out.split("advice  block_size [")[1].split("]")[0].split(", ")]
    assert all(a % u == 0 for a, u in zip(advice, (32, 256, 256), strict=True))
    assert block_count((4096, 16384, 16384), tuple(advice)) <= 20_000
    assert err.startswith("warning: 524,288 block jobs") and len(err.splitlines()) == 1

    assert main(["plan", "--config", config, "--blocks"]) == 2
    out, err = capsys.readouterr()
    assert out == "" and err.startswith("chunkflow: error: --blocks would list 524,288 blocks")
    assert main(["plan", "--config", config, "--max-jobs", "0"]) == 2
    assert len(capsys.readouterr().err.splitlines()) == 1


def test_plan_lists_each_blocks_patch_count(tmp_path, small_config, capsys):
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(small_config))
    assert main(["plan", "--config", str(path), "--blocks", "--max-jobs", "4"]) == 0
    out, err = capsys.readouterr()
    plan = make_plan(config_mod.parse(small_config))
    listed = [line for line in out.splitlines() if line.startswith("  z")]
    assert listed == [f"  {b.id}  {b.box}  {len(plan.patches(b))} patches" for b in plan.grid]
    assert err.startswith("warning: 8 block jobs, more than --max-jobs 4")

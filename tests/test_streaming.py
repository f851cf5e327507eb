"""Blocks streamed through memory piece by piece: which piece computes which patch, the same
numbers for every piece size, resuming a killed block job, and its memory against the estimate."""

from __future__ import annotations

import hashlib
import itertools
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml
from helpers import config_with, smooth_volume, write_volume
from run_helpers import read_back, run_all_blocks, run_as_well
from slow_jobs import chunkflow, killed_mid_block, pieces_computed

from chunkflow import config as config_mod
from chunkflow.errors import ConfigError
from chunkflow.geometry.boxes import Box
from chunkflow.geometry.grid import BlockGrid
from chunkflow.geometry.pieces import PieceLayout
from chunkflow.geometry.placement import PatchGeometry, crop_intervals, exact_intervals
from chunkflow.plan.job_memory import RUNTIME_BYTES
from chunkflow.plan.run_plan import make_plan

BIN = Path(sys.executable).parent

GEOMETRIES = [  # input patch, output patch, overlap
    ((6, 16, 16), (6, 16, 16), (2, 4, 4)),
    ((8, 18, 20), (6, 16, 18), (2, 4, 6)),
    ((5, 9, 9), (3, 7, 7), (1, 2, 3)),
]


def layouts():
    roi = Box((2, -3, 5), (31, 40, 47))
    for (pi, po, overlap), block_size, piece_size in itertools.product(
        GEOMETRIES, [(12, 16, 24), (29, 43, 42)], [(4, 8, 8), (8, 24, 16), (12, 5, 40)]
    ):
        geometry = PatchGeometry(pi, po, overlap)
        for block in BlockGrid(roi, block_size):
            yield PieceLayout(block, piece_size, exact_intervals(roi, block.box, geometry))
        block = BlockGrid(roi, block_size).block((0, 0, 0))
        yield PieceLayout(block, piece_size, crop_intervals(block.box, geometry, (1, 3, 2)))


def test_every_patch_is_computed_once_by_the_first_piece_it_touches():
    for layout in layouts():
        block_patches = list(itertools.product(*layout.intervals))
        owners: dict[tuple, list[int]] = {}
        for piece in layout.pieces:
            for patch in layout.patches(piece):
                key = tuple(zip(patch.start, patch.stop, strict=True))
                owners.setdefault(key, []).append(layout.position(piece))
        assert sorted(owners) == sorted(block_patches)
        for intervals, computed_by in owners.items():
            patch = Box(tuple(a for a, _ in intervals), tuple(b for _, b in intervals))
            touched = [
                layout.position(p) for p in layout.pieces if not p.box.intersect(patch).empty
            ]
            assert computed_by == [min(touched)]


def test_carried_sums_go_from_earlier_pieces_to_every_piece_their_patches_reach():
    for layout in layouts():
        pieces = layout.pieces
        targets = {piece: layout.targets(piece) for piece in pieces}
        for piece in pieces:
            reach = layout.reach(piece)
            assert reach.contains(piece.box) and layout.block.box.contains(reach)
            for patch in layout.patches(piece):  # the reach holds the piece's patches' output
                assert reach.contains(patch.intersect(layout.block.box))
            expected = [p for p in pieces if p != piece and not reach.intersect(p.box).empty]
            assert targets[piece] == expected
            assert all(layout.position(t) > layout.position(piece) for t in expected)
            sources = [p for p in pieces if piece in targets[p]]
            assert layout.sources(piece) == sorted(sources, key=lambda b: b.index)


def test_a_piece_size_must_hold_whole_storage_chunks(small_config):
    with pytest.raises(ConfigError, match=r"piece_size \[4, 12, 8\] is not a whole multiple"):
        make_plan(config_mod.parse(config_with(small_config, piece_size=[4, 12, 8])))


def test_blocks_per_job_is_gone_with_a_hint(small_config):
    with pytest.raises(ConfigError, match="blocks_per_job is gone.*--group-components"):
        config_mod.parse(config_with(small_config, blocks_per_job=2))


@pytest.mark.parametrize("placement", ["exact", "crop"])
def test_the_output_is_the_same_for_every_piece_size(small_config, placement):
    """ValidConvNet's zero-padded first layer makes a patch's output depend on where the patch
    sits: a piece that placed or weighted its patches differently would show."""
    config = config_with(small_config, **{"inference.placement": placement})
    whole = run_as_well(config, "whole", block_size=[20, 48, 56], piece_size=[20, 48, 56])
    for i, (block, piece) in enumerate(
        [([12, 24, 32], [4, 8, 8]), ([20, 48, 56], [8, 16, 24]), ([8, 24, 56], [4, 24, 8])]
    ):
        got = run_as_well(config, f"p{i}", block_size=block, piece_size=piece)
        unstreamed = run_as_well(config, f"q{i}", block_size=block, piece_size=block)
        assert np.abs(got - unstreamed).max() <= 1e-6, (block, piece)
        if placement == "exact":  # crop blocks have seams: only exact is the same for any block
            assert np.abs(got - whole).max() <= 1e-6, (block, piece)
    streamed = json.loads(
        next(Path(small_config["state_dir"]).parent.glob("state_p1/blocks/*/*.json")).read_text()
    )
    assert streamed["pieces"] == 3 * 3 * 3 and streamed["piece_size"] == [8, 16, 24]


def chained(array: np.ndarray, block: Box, piece_size) -> str:
    """The block checksum as documented: the pieces' sha256 chained in z, y, x order."""
    digest = None
    for piece in BlockGrid(block, piece_size):
        data = np.ascontiguousarray(array[(slice(None), *piece.box.slices(block.start))])
        own = hashlib.sha256(data.tobytes()).hexdigest()
        digest = own if digest is None else hashlib.sha256(bytes.fromhex(digest + own)).hexdigest()
    return digest


def test_the_marker_checksum_chains_the_pieces_as_written(small_config):
    config = config_with(small_config, block_size=[20, 48, 56], piece_size=[8, 16, 24])
    written = run_all_blocks(config)
    marker = json.loads(
        next(Path(config["state_dir"], "blocks").glob("*/z0_y0_x0.json")).read_text()
    )
    box = Box((0, 0, 0), (20, 48, 56))
    assert marker["output_sha256"] == chained(written, box, (8, 16, 24))
    assert not Path(config["state_dir"], "pieces").exists() or not any(
        Path(config["state_dir"], "pieces").iterdir()
    )  # the streaming state is gone once the marker is written


def test_a_killed_block_job_resumes_at_its_first_unwritten_piece(tmp_path):
    config, path, progress, first_log = killed_mid_block(tmp_path)
    written = json.loads(progress.read_text())["written"]
    assert 5 <= written < 24 and not list(
        Path(config["state_dir"], "blocks").glob("*/z0_y0_x0.json")
    )

    again = chunkflow("run-block", "--config", str(path), "z0_y0_x0")
    second_log = again.communicate()[1]
    assert again.returncode == 0, second_log
    first, second = pieces_computed(first_log), pieces_computed(second_log)
    assert f"resuming at piece {written + 1} of 24" in second_log
    assert second == list(range(written + 1, 25))  # only the pieces not yet written
    assert len(set(first) & set(second)) <= 1  # at most the piece that was being written

    resumed = read_back(config["output"]["path"])[0]
    uninterrupted = run_as_well(config, "uninterrupted")
    np.testing.assert_array_equal(resumed, uninterrupted)
    marker = json.loads(
        next(Path(config["state_dir"], "blocks").glob("*/z0_y0_x0.json")).read_text()
    )
    assert marker["output_sha256"] == chained(
        (resumed.astype(np.float32)), Box((0, 0, 0), (16, 48, 48)), (4, 16, 24)
    )
    assert not progress.parent.exists()


def peak_rss_bytes(*args: str) -> int:
    """The peak RSS of a `chunkflow` command, measured by a fresh parent that runs only it."""
    probe = (
        "import resource, subprocess, sys\n"
        "subprocess.run(sys.argv[1:], check=True)\n"
        "print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", probe, str(BIN / "chunkflow"), *args],
        check=True,
        capture_output=True,
        text=True,
    )
    return int(out.stdout.split()[-1]) * 1024


def test_the_memory_estimate_bounds_the_measured_peak(tmp_path):
    raw = write_volume(tmp_path / "raw.zarr", smooth_volume((32, 256, 256)), chunks=(8, 64, 64))
    from helpers import ValidConvNet, save_torchscript

    model = save_torchscript(ValidConvNet(channels_out=3), tmp_path / "net.pt")
    measured, estimated = {}, {}
    for piece in ([8, 64, 64], [32, 256, 256]):
        name = "x".join(map(str, piece))
        config = {
            "input": {"path": raw},
            "output": {
                "path": str(tmp_path / f"{name}.zarr"),
                "chunk_size": [8, 64, 64],
                "dtype": "float32",
            },
            "block_size": [32, 256, 256],
            "piece_size": piece,
            "model": {
                "path": model,
                "input_patch_size": [8, 34, 34],
                "output_patch_size": [6, 32, 32],
                "output_channels": 3,
            },
            "inference": {"overlap": [2, 8, 8], "batch_size": 4},
            "state_dir": str(tmp_path / f"state_{name}"),
        }
        path = tmp_path / f"{name}.yaml"
        path.write_text(yaml.safe_dump(config))
        subprocess.run([str(BIN / "chunkflow"), "create-output", "--config", str(path)], check=True)
        measured[name] = peak_rss_bytes("run-block", "--config", str(path), "z0_y0_x0")
        estimated[name] = make_plan(config_mod.parse(config)).job_memory_bytes()
    small, large = "8x64x64", "32x256x256"
    for name in measured:
        assert measured[name] <= estimated[name], (name, measured, estimated)
    # what the piece adds is bounded by the estimate's data part, and is not far below it
    added = measured[large] - measured[small]
    assert 0 < added <= estimated[large] - estimated[small], (measured, estimated)
    assert estimated[large] - RUNTIME_BYTES <= 4 * (measured[large] - measured[small] + 64 << 20)


@pytest.mark.parametrize("output", ["out.h5:/prediction", "precomputed://file://{tmp}/out"])
def test_streamed_blocks_in_hdf5_and_precomputed_outputs(small_config, tmp_path, output):
    """HDF5 writes a part file per piece (the virtual dataset maps them all), precomputed whole
    chunks per piece: both read back as the unstreamed run."""
    path = output.format(tmp=tmp_path) if "://" in output else str(tmp_path / output)
    config = config_with(small_config, **{"output.path": path})
    streamed = run_all_blocks(config_with(config, piece_size=[4, 8, 16]))
    whole = run_as_well(config, "whole")
    assert np.abs(streamed - whole).max() <= 1e-6

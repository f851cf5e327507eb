"""`chunkflow verify` on real stores: damaged blocks (a truncated chunk, a missing one, a NaN)
are found and invalidated, rerunning them restores a clean store, a changed input is reported,
and streamed blocks, HDF5 and precomputed outputs and a Snakemake run with `verify: true`
verify."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import h5py
import numpy as np
import pytest
import yaml
import zarr
from helpers import config_with, store_id
from run_helpers import read_back
from workflow_runs import (
    BASE_CONFIG,
    N_BLOCKS,
    job_counts,
    make_run_dir,
    snakemake,
)

from chunkflow import config as config_mod
from chunkflow.app import cli
from chunkflow.app.snakemake_adapter import prepare
from chunkflow.inspect.verify import PROBLEMS_EXIT, sample
from chunkflow.job.block_job import run_blocks
from chunkflow.job.local_run import run_locally
from chunkflow.plan.run_plan import make_plan
from chunkflow.state.markers import read_markers
from chunkflow.state.run_state import RunState
from chunkflow.volumes import open_volume, read_padded

ALL = [f"z{z}_y{y}_x{x}" for z in (0, 1) for y in (0, 1) for x in (0, 1)]


def verify(config: dict[str, Any], capsys, *args: str) -> tuple[int, str, str]:
    """`chunkflow verify` in-process: exit status, stdout, stderr."""
    path, text = Path(config["state_dir"]).parent / "config.yaml", yaml.safe_dump(config)
    if not path.exists() or path.read_text() != text:  # (a read-only run directory: as it is)
        path.write_text(text)
    try:
        status = cli.main(["verify", "-c", str(path), *args])
    except SystemExit as exit:
        status = exit.code
    out, err = capsys.readouterr()
    return status, out, err


def problems(out: str) -> dict[str, str]:
    """Block id → what the report says is wrong with it."""
    return dict(line.split(": ", 1) for line in out.splitlines() if line.startswith("z"))


def chunk_file(config: dict[str, Any], voxel: tuple[int, int, int]) -> Path:
    """The zarr v3 chunk file holding ``voxel`` (the ROI starts at 0) of every channel."""
    index = [str(v // c) for v, c in zip(voxel, config["output"]["chunk_size"], strict=True)]
    path = Path(config["output"]["path"], "c", "0", *index)
    assert path.is_file(), path
    return path


def run(config: dict[str, Any]) -> None:
    """Every block of ``config``, in this process."""
    run_locally(make_plan(config_mod.parse(config)))


def marker_file(config: dict[str, Any], block_id: str) -> Path:
    plan = make_plan(config_mod.parse(config))
    return RunState.of(plan).marker(block_id)


def missing(config: dict[str, Any]) -> list[str]:
    plan = make_plan(config_mod.parse(config))
    return read_markers(RunState.of(plan), plan.block_ids, store_id(plan)).missing


def test_a_whole_store_verifies_once_and_is_recorded(small_config, capsys):
    run(small_config)
    record = Path(small_config["state_dir"]).parent / "verify.json"
    status, out, err = verify(small_config, capsys, "--jobs", "3", "--record", str(record))
    assert status == 0, out + err
    assert out.strip() == (
        "verify: 8 of 8 finished blocks checked (output; 0 verified before, 0 not sampled): "
        "8 fine, 0 damaged"
    )
    assert "verify: 8/8 blocks" in err and "blocks/s" in err
    report = json.loads(record.read_text())
    assert report["checked"] == 8 and report["problems"] == {} and report["invalidated"] == []
    verified = Path(small_config["state_dir"], "verified.jsonl")
    assert sorted(json.loads(line)["block"] for line in verified.read_text().splitlines()) == ALL

    with verified.open("a") as f:
        f.write('{"block": "z0_y0')  # a verify killed while it wrote
    status, out, _ = verify(small_config, capsys)
    assert status == 0 and "0 of 8 finished blocks checked" in out and "8 verified before" in out
    status, out, _ = verify(small_config, capsys, "--inputs")  # not checked with inputs yet
    assert status == 0 and "8 of 8 finished blocks checked (output and input" in out
    assert len(verified.read_text().splitlines()) == 8 + 1 + 8
    status, out, _ = verify(small_config, capsys)  # checked with their inputs covers without
    assert status == 0 and "8 verified before" in out
    status, out, _ = verify(small_config, capsys, "--again", "--sample", "0.3", "--seed", "5")
    assert status == 0 and "3 of 8 finished blocks checked" in out and "5 not sampled" in out


def test_sampling_is_deterministic_and_nested():
    ids = [f"z{i}_y0_x0" for i in range(100)]
    tenth = sample(ids, 0.1, seed=1)
    assert len(tenth) == 10 and tenth == sample(ids, 0.1, seed=1)
    assert set(tenth) <= set(sample(ids, 0.5, seed=1)) and tenth != sample(ids, 0.1, seed=2)
    assert sample(ids, 0.001, seed=1) == sample(ids, 0.001, seed=1) and sample(ids, 1.0, 0) == ids


def test_damaged_blocks_are_invalidated_and_recomputed(small_config, capsys):
    run(small_config)
    before = read_back(small_config["output"]["path"])[0]
    truncated = chunk_file(small_config, (4, 8, 8))  # block z0_y0_x0
    truncated.write_bytes(truncated.read_bytes()[:10])
    chunk_file(small_config, (12, 32, 40)).unlink()  # block z1_y1_x1: zarr reads zeros there
    zarr.open_array(small_config["output"]["path"], mode="r+")[1, 0, 30, 40] = np.nan  # z0_y1_x1

    status, out, _ = verify(small_config, capsys, "--jobs", "2")
    assert status == PROBLEMS_EXIT
    found = problems(out)
    assert found.keys() == {"z0_y0_x0", "z0_y1_x1", "z1_y1_x1"}, out
    assert found["z0_y0_x0"].startswith("unreadable store chunk [(4, 8, 8), (8, 16, 16)): ")
    assert found["z0_y0_x0"].endswith("(marker invalidated)")
    assert found["z0_y1_x1"] == "checksum mismatch; 1 NaN or infinite value (marker invalidated)"
    assert found["z1_y1_x1"] == "checksum mismatch (marker invalidated)"
    assert "5 fine, 3 damaged; 3 markers invalidated" in out.splitlines()[-1]
    for block_id in found:
        path = marker_file(small_config, block_id)
        assert not path.exists() and path.with_name(f"{path.name}.invalid").is_file()
    assert missing(small_config) == sorted(found)  # the others are untouched

    run_blocks(make_plan(config_mod.parse(small_config)), missing(small_config))
    status, out, _ = verify(small_config, capsys)
    assert status == 0 and "3 of 8 finished blocks checked" in out, out
    np.testing.assert_array_equal(read_back(small_config["output"]["path"])[0], before)


def test_a_changed_input_is_reported_and_invalidated_on_request(small_config, capsys):
    run(small_config)
    raw = zarr.open_array(small_config["input"]["path"], mode="r+")
    # read by block z0_y0_x0's patches only, in no chunk the fingerprint samples
    raw[2, 2, 10] = (int(raw[2, 2, 10]) + 1) % 256
    assert verify(small_config, capsys)[0] == 0  # the output itself is as written

    status, out, _ = verify(small_config, capsys, "--inputs")
    assert status == PROBLEMS_EXIT and problems(out) == {"z0_y0_x0": "input changed"}, out
    assert "7 fine, 0 damaged, 1 with a changed input" in out and not missing(small_config)
    status, out, _ = verify(small_config, capsys, "--invalidate-changed-inputs")
    assert problems(out) == {"z0_y0_x0": "input changed (marker invalidated)"}, out
    assert missing(small_config) == ["z0_y0_x0"]


def test_markers_of_earlier_versions_verify_their_blake2b_input_digests(small_config, capsys):
    """Markers written before the input digest became sha256 chain 128-bit blake2b and lack
    input_digest_algorithm: verify --inputs reads their input with that digest."""
    run(small_config)
    plan = make_plan(config_mod.parse(small_config))
    volume = open_volume(small_config["input"]["path"])
    for block in plan.blocks:
        path = marker_file(small_config, block.id)
        marker = json.loads(path.read_text())
        raw = read_padded(volume, plan.chunk_box(plan.patches(block)), "reflect")
        assert marker.pop("input_digest_algorithm") == "sha256"
        assert marker["input_digest"] == hashlib.sha256(raw.tobytes()).hexdigest()
        marker["input_digest"] = hashlib.blake2b(raw.tobytes(), digest_size=16).hexdigest()
        path.write_text(json.dumps(marker))
    assert not missing(small_config)
    status, out, _ = verify(small_config, capsys, "--inputs")
    assert status == 0 and "8 fine, 0 damaged, 0 with a changed input" in out, out
    raw = zarr.open_array(small_config["input"]["path"], mode="r+")
    raw[2, 2, 10] = (int(raw[2, 2, 10]) + 1) % 256  # read by block z0_y0_x0 only
    status, out, _ = verify(small_config, capsys, "--inputs", "--again")
    assert problems(out) == {"z0_y0_x0": "input changed"}, out

    path = marker_file(small_config, "z1_y1_x1")
    path.write_text(json.dumps({**json.loads(path.read_text()), "input_digest_algorithm": "md5"}))
    assert missing(small_config) == ["z1_y1_x1"]  # a digest no version writes: not a marker


def test_streamed_blocks_verify_in_the_pieces_they_were_written_in(small_config, capsys):
    streamed = config_with(small_config, piece_size=[4, 16, 16])
    run(streamed)
    marker = json.loads(marker_file(streamed, "z0_y0_x0").read_text())
    assert marker["pieces"] == 3 * 2 * 2
    # piece_size changes nothing: verified with another one, in the pieces of the marker
    status, out, _ = verify(config_with(streamed, piece_size=[8, 8, 8]), capsys, "--inputs")
    assert status == 0 and "8 fine" in out, out
    chunk_file(small_config, (8, 24, 48)).unlink()  # block z0_y1_x1, its last piece
    status, out, _ = verify(streamed, capsys, "--again")
    assert problems(out) == {"z0_y1_x1": "checksum mismatch (marker invalidated)"}, out


def damage_hdf5(config: dict[str, Any]) -> None:
    """Change a voxel of one block's part file."""
    parts = sorted(Path(config["output"]["path"].split(":")[0] + ".parts").glob("*.h5"))
    with h5py.File(parts[0], "r+") as f:
        f["data"][0, 0, 0, 0] += 0.5


def damage_precomputed(config: dict[str, Any]) -> None:
    """Delete one storage chunk file."""
    root = Path(config["output"]["path"].removeprefix("precomputed://file://"))
    chunks = sorted(p for p in root.rglob("*") if p.is_file() and "_" in p.name)
    chunks[0].unlink()


@pytest.mark.parametrize(
    ("output", "damage", "problem"),
    [
        ("out.h5:/predictions", damage_hdf5, "checksum mismatch"),
        ("precomputed://file://{root}/out_precomputed", damage_precomputed, "unreadable store"),
    ],
    ids=["hdf5", "precomputed"],
)
def test_hdf5_and_precomputed_outputs_verify(small_config, capsys, output, damage, problem):
    root = Path(small_config["state_dir"]).parent
    path = output.format(root=root) if "{root}" in output else f"{root}/{output}"
    config = config_with(small_config, **{"output.path": path})
    run(config)
    status, out, _ = verify(config, capsys, "--inputs")
    assert status == 0 and "8 fine, 0 damaged, 0 with a changed input" in out, out
    damage(config)
    status, out, _ = verify(config, capsys, "--again")
    assert status == PROBLEMS_EXIT and len(problems(out)) == 1, out
    assert problem in next(iter(problems(out).values()))


def test_bad_options_and_a_missing_output_are_one_line_errors(small_config, capsys):
    for args, fragment in [
        (["--sample", "0"], "--sample is 0.0; give a fraction in (0, 1]"),
        (["--jobs", "0"], "--jobs is 0"),
        ([], "does not exist"),  # nothing run yet: no output store
    ]:
        status, out, err = verify(small_config, capsys, *args)
        assert status == 2 and err.startswith("chunkflow: error: ") and fragment in err, err
        assert len(err.strip().splitlines()) == 1 and not out


def test_verify_is_no_part_of_the_result(small_config):
    plain, verifying = prepare(small_config), prepare(config_with(small_config, verify=True))
    assert plain.fingerprint == verifying.fingerprint
    assert verifying.final_targets == [*plain.final_targets, verifying.verify_record]


@pytest.mark.workflow
def test_a_snakemake_run_with_verify_ends_with_its_record(tmp_path, run_env, elsewhere):
    run_dir = make_run_dir(tmp_path / "run", config_with(BASE_CONFIG, verify=True))
    result = snakemake(run_dir, run_env, elsewhere)
    assert "verify" in job_counts(result.text), result.text
    report = json.loads((run_dir / ".chunkflow" / "verify.json").read_text())
    assert report["checked"] == report["finished"] == N_BLOCKS and report["problems"] == {}


def test_a_change_after_a_passing_verify_is_found_without_again(small_config, capsys):
    """The record of a passing verify holds what its blocks' storage objects were (name, size,
    modification time): a chunk changed since is read again, without --again."""
    run(small_config)
    status, out, _ = verify(small_config, capsys, "--inputs")
    assert status == 0 and "8 of 8 finished blocks checked" in out
    victim, donor = chunk_file(small_config, (4, 8, 8)), chunk_file(small_config, (4, 8, 16))
    victim.write_bytes(donor.read_bytes())  # a readable chunk, with another chunk's values
    status, out, _ = verify(small_config, capsys)  # today: "0 checked (8 verified before)"
    assert status == PROBLEMS_EXIT, out
    assert "1 of 8 finished blocks checked" in out and "7 verified before" in out, out
    assert problems(out) == {"z0_y0_x0": "checksum mismatch (marker invalidated)"}

    input_chunk = Path(small_config["input"]["path"], "c", "3", "2", "2")  # z 12..16, y x 16..24
    input_chunk.write_bytes(input_chunk.read_bytes())  # rewritten: its time changed
    status, out, _ = verify(small_config, capsys, "--inputs")
    assert status == 0, out  # the same bytes: the blocks that read it are checked, and fine
    assert "verified before" in out and "of 7 finished blocks checked" in out, out
    assert not out.startswith("verify: 0 of"), out


@pytest.fixture
def mount_point(tmp_path):
    """A small tmpfs at ``tmp_path/mnt`` (root only: skipped where mounting is not allowed)."""
    import subprocess

    mount = tmp_path / "mnt"
    mount.mkdir()
    made = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64m", "tmpfs", str(mount)])
    if made.returncode != 0:
        pytest.skip("mounting a tmpfs is not allowed here")
    yield mount
    subprocess.run(["umount", "-l", str(mount)], check=False)


def test_verify_in_a_read_only_run_directory_reports_and_changes_nothing(
    small_config, mount_point, capsys, tmp_path
):
    import subprocess

    config = config_with(small_config, state_dir=str(mount_point / "state"))
    run(config)
    chunk_file(config, (0, 0, 0)).unlink()  # block z0_y0_x0 damaged
    (mount_point / "config.yaml").write_text(yaml.safe_dump(config))
    subprocess.run(["mount", "-o", "remount,ro", str(mount_point)], check=True)
    before = sorted(p.relative_to(mount_point) for p in mount_point.rglob("*"))
    report = tmp_path / "verify.json"
    status, out, err = verify(config, capsys, "--record", str(report))
    assert status == PROBLEMS_EXIT and "Traceback" not in err, err
    assert problems(out) == {"z0_y0_x0": "checksum mismatch (marker to invalidate)"}, out
    assert "the run directory is read-only: 1 marker to invalidate, nothing changed" in out
    assert sorted(p.relative_to(mount_point) for p in mount_point.rglob("*")) == before
    recorded = json.loads(report.read_text())
    assert (recorded["invalidated"], recorded["to_invalidate"]) == ([], ["z0_y0_x0"])

    subprocess.run(["mount", "-o", "remount,rw", str(mount_point)], check=True)
    status, out, _ = verify(config, capsys)  # where it can write: invalidated
    assert problems(out) == {"z0_y0_x0": "checksum mismatch (marker invalidated)"}, out
    assert missing(config) == ["z0_y0_x0"]

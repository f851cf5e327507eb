"""Neuroglancer precomputed volumes (cloud-volume) in and out.

Inputs are written with cloud-volume itself and outputs read back with it (x, y, z, c), so the
axis conversion is checked against the format's own library, not against chunkflow.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from cloudvolume import CloudVolume
from helpers import config_with, smooth_volume, write_volume
from precomputed_volumes import CHUNKS, OFFSET, RESOLUTION, write_precomputed
from run_helpers import run_all_blocks

from chunkflow import config as config_mod
from chunkflow.errors import ConfigError, VolumeError
from chunkflow.geometry.boxes import Box
from chunkflow.plan.run_plan import make_plan
from chunkflow.settings import OutputSettings
from chunkflow.volumes import VolumeInfo, create_or_check, open_volume, read_padded
from chunkflow.volumes.precomputed import PrecomputedVolume


def cloudvolume_read(url: str) -> tuple[np.ndarray, CloudVolume]:
    """The whole volume read by cloud-volume, as (c, z, y, x)."""
    cv = CloudVolume(url.removeprefix("precomputed://"), progress=False)
    return np.asarray(cv[cv.bounds]).transpose(3, 2, 1, 0), cv


def file_url(path: Path) -> str:
    return f"precomputed://{path.as_uri()}"


def output_settings(**changes) -> OutputSettings:
    return OutputSettings(
        **{"path": "", "dtype": "float32", "chunk_size": (1, 1, 1), "zarr_format": 3, **changes}
    )


@pytest.mark.parametrize("channels", [None, 2])
def test_reads_equal_the_source_in_zyx(tmp_path, channels):
    shape = (16, 48, 48) if channels is None else (channels, 16, 48, 48)
    dtype = "uint8" if channels is None else "float32"
    data = np.random.default_rng(0).integers(0, 255, shape).astype(dtype)
    url = write_precomputed(file_url(tmp_path / "raw"), data)
    volume = open_volume(url)
    assert isinstance(volume, PrecomputedVolume)
    assert volume.info == VolumeInfo((16, 48, 48), dtype, CHUNKS, OFFSET, RESOLUTION, channels)
    assert np.array_equal(volume.read(volume.bounds), data)
    # chunk-unaligned boxes, at the far edge too; voxel (z, y, x) is data[..., z - 7, y - 5, x - 3]
    for box in [
        Box((8, 6, 4), (9, 7, 5)),
        Box((10, 30, 20), (23, 53, 51)),
        Box((7, 5, 3), (7, 9, 9)),
    ]:
        local = box.slices(OFFSET)
        assert np.array_equal(volume.read(box), data[(...,) + local]), box
    # reads beyond the edge are padded as for any volume
    padded = read_padded(volume, volume.bounds.grow((2, 3, 4)), "zero")
    assert np.array_equal(padded[..., 2:-2, 3:-3, 4:-4], data) and padded[..., :2, :, :].max() == 0
    # a plain file:// URL is precomputed too
    assert np.array_equal(open_volume(url.removeprefix("precomputed://")).read(volume.bounds), data)


def test_a_coarser_mip_is_read_with_its_own_geometry(tmp_path):
    data = smooth_volume((16, 48, 48))
    url = write_precomputed(file_url(tmp_path / "raw"), data)
    cv = CloudVolume(url, progress=False)
    cv.add_scale([2, 2, 1], chunk_size=[20, 20, 6])
    cv.commit_info()
    coarse = data[:, ::2, ::2] // 2 + 1  # any array: what matters is where it is read from
    CloudVolume(url, mip=1, progress=False)[:, :, :] = coarse.T[..., None]
    volume = open_volume(url, mip=1)
    assert volume.info.shape == (16, 24, 24)
    assert volume.info.voxel_offset == (7, 2, 1)  # cloud-volume floors the offset: 5 // 2, 3 // 2
    assert volume.info.resolution == (40.0, 16.0, 8.0)
    assert np.array_equal(volume.read(volume.bounds), coarse)
    with pytest.raises(VolumeError, match=r"no mip 2 \(it has mips 0..1\); fix input.mip"):
        open_volume(url, mip=2)


def test_a_run_reads_the_chosen_mip(tmp_path, run_config):
    data = smooth_volume((16, 48, 48))
    url = write_precomputed(file_url(tmp_path / "raw"), data)
    cv = CloudVolume(url, progress=False)
    cv.add_scale([2, 2, 1], chunk_size=[20, 20, 6])
    cv.commit_info()
    coarse = smooth_volume((16, 24, 24), seed=1)
    CloudVolume(url, mip=1, progress=False)[:, :, :] = coarse.T[..., None]
    same = write_volume(tmp_path / "coarse.zarr", coarse, (7, 2, 1), (40.0, 16.0, 8.0), (4, 8, 8))
    reference = run_all_blocks(config_with(run_config[0], **{"input.path": same}))
    config = config_with(
        run_config[0],
        **{
            "input.path": url,
            "input.mip": 1,
            "output.path": str(tmp_path / "mip.zarr"),
            "state_dir": str(tmp_path / "s1"),
        },
    )
    assert np.array_equal(run_all_blocks(config), reference)
    info = open_volume(str(tmp_path / "mip.zarr")).info
    assert info.voxel_offset == (7, 2, 1) and info.resolution == (40.0, 16.0, 8.0)


def test_what_is_not_a_precomputed_volume(tmp_path):
    with pytest.raises(VolumeError, match="no precomputed info file") as err:
        open_volume(file_url(tmp_path / "missing"))
    assert "\n" not in str(err.value)


# ---------------------------------------------------------------------------------------------
# full runs: zarr -> precomputed and precomputed -> zarr equal zarr -> zarr


@pytest.fixture
def run_config(small_config, tmp_path):
    """The small config on an input with a voxel offset and an anisotropic resolution."""
    data = smooth_volume((20, 48, 56))
    raw = write_volume(tmp_path / "raw-off.zarr", data, (2, 3, 5), (40.0, 8.0, 4.0), (4, 8, 8))
    return config_with(small_config, **{"input.path": raw}), data


def test_runs_to_and_from_precomputed_equal_a_zarr_run(tmp_path, run_config):
    config, data = run_config
    reference = run_all_blocks(config)  # zarr -> zarr
    url = file_url(tmp_path / "out")
    written = run_all_blocks(
        config_with(config, **{"output.path": url, "state_dir": str(tmp_path / "s1")})
    )
    stored, cv = cloudvolume_read(url)
    assert np.array_equal(stored, reference) and np.array_equal(written, reference)
    assert list(cv.voxel_offset) == [5, 3, 2] and list(cv.resolution) == [4, 8, 40]  # x, y, z
    assert cv.info["scales"][0]["encoding"] == "raw"
    before = snapshot(tmp_path / "out")
    other = config_with(config, **{"output.path": url, "output.chunk_size": [4, 8, 16]})
    with pytest.raises(VolumeError, match=r"chunk_size \[4, 8, 8\] \(expected \[4, 8, 16\]\)"):
        make_plan(config_mod.parse(other)).existing_output()  # what every job checks first
    assert snapshot(tmp_path / "out") == before

    raw_url = write_precomputed(file_url(tmp_path / "raw"), data, (2, 3, 5), (40.0, 8.0, 4.0))
    out = tmp_path / "from-precomputed.zarr"
    from_precomputed = run_all_blocks(
        config_with(
            config,
            **{"input.path": raw_url, "output.path": str(out), "state_dir": str(tmp_path / "s2")},
        )
    )
    assert np.array_equal(from_precomputed, reference)
    info = open_volume(str(out)).info
    assert info.voxel_offset == (2, 3, 5) and info.resolution == (40.0, 8.0, 4.0)


def test_block_sizes_off_the_storage_chunks_are_refused(tmp_path, run_config):
    config = config_with(
        run_config[0], **{"output.path": file_url(tmp_path / "out"), "block_size": [12, 20, 32]}
    )
    with pytest.raises(ConfigError) as err:
        make_plan(config_mod.parse(config))
    assert "not a whole multiple of output.chunk_size [4, 8, 8] along y" in str(err.value)
    assert "\n" not in str(err.value) and not (tmp_path / "out").exists()


def test_unaligned_writes_are_refused(tmp_path):
    info = VolumeInfo((10, 12, 12), "uint8", (4, 8, 8), (1, 2, 3), (4.0, 4.0, 4.0), 2)
    volume = PrecomputedVolume.create(file_url(tmp_path / "out"), info, output_settings())
    ones = np.ones((2, 4, 8, 8), dtype="uint8")
    with pytest.raises(VolumeError, match="whole storage chunks of \\[4, 8, 8\\] along z") as err:
        volume.write(Box((2, 2, 3), (6, 10, 11)), ones)
    assert "\n" not in str(err.value)
    # the volume's last chunk may be short: 9..11 along z, 10..14 along y and 11..15 along x
    volume.write(Box((9, 10, 11), (11, 14, 15)), np.full((2, 2, 4, 4), 7, dtype="uint8"))
    assert volume.read(Box((9, 10, 11), (11, 14, 15))).min() == 7
    assert volume.read(Box((1, 2, 3), (9, 10, 11))).max() == 0  # unwritten chunks read as 0


# ---------------------------------------------------------------------------------------------
# an existing output: reused when it matches, refused untouched when it does not


OUT_INFO = VolumeInfo((8, 12, 16), "float32", (4, 4, 8), (2, 0, 4), (40.0, 4.0, 4.0), 1)


def snapshot(root: Path) -> dict[str, bytes]:
    return {
        str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()
    }


def test_an_existing_output_is_reused_or_refused_untouched(tmp_path):
    url = file_url(tmp_path / "out")
    volume, created = create_or_check(url, OUT_INFO, output_settings())
    assert created and volume.info == OUT_INFO  # one channel stays a channel axis
    volume.write(Box((2, 0, 4), (6, 4, 12)), np.ones((1, 4, 4, 8), dtype="float32"))
    before = snapshot(tmp_path / "out")
    again, created = create_or_check(url, OUT_INFO, output_settings())
    assert not created and snapshot(tmp_path / "out") == before
    for changes, fragment in [
        ({"voxel_offset": (0, 0, 0)}, "voxel_offset [2, 0, 4] (expected [0, 0, 0])"),
        ({"chunk_size": (4, 4, 16)}, "chunk_size [4, 4, 8] (expected [4, 4, 16])"),
        ({"channels": 3}, "channels 1 (expected 3)"),
        ({"dtype": "uint8"}, "dtype float32 (expected uint8)"),
    ]:
        wanted = VolumeInfo(**{**OUT_INFO.__dict__, **changes})
        with pytest.raises(VolumeError) as err:
            create_or_check(url, wanted, output_settings())
        assert fragment in str(err.value) and "delete it or choose another output.path" in str(
            err.value
        )
        assert "\n" not in str(err.value)
    with pytest.raises(VolumeError, match=r"encoding raw \(expected gzip\)"):
        create_or_check(url, OUT_INFO, output_settings(encoding="gzip"))
    assert snapshot(tmp_path / "out") == before


def test_gzip_encoding_and_refused_formats(tmp_path):
    url = file_url(tmp_path / "gz")
    volume, _ = create_or_check(url, OUT_INFO, output_settings(encoding="gzip"))
    volume.write(volume.bounds, np.full((1, 8, 12, 16), 0.5, dtype="float32"))
    assert any(p.suffix == ".gz" for p in (tmp_path / "gz").rglob("*"))
    assert np.all(cloudvolume_read(url)[0] == 0.5)
    half = VolumeInfo(**{**OUT_INFO.__dict__, "dtype": "float16"})
    with pytest.raises(VolumeError, match="precomputed has no float16"):
        create_or_check(file_url(tmp_path / "f16"), half, output_settings())
    assert not (tmp_path / "f16").exists()


def test_sharded_writes_whole_shards_that_cloudvolume_reads_back(tmp_path):
    """4 chunks a shard: x and y double (Morton order), z does not; the last y row is cut short."""
    url = file_url(tmp_path / "sh")
    volume, _ = create_or_check(url, OUT_INFO, output_settings(shard_size=(4, 8, 16)))
    data = np.random.default_rng(1).random((1, 8, 12, 16), dtype="float32")
    with pytest.raises(VolumeError, match="does not cover whole shards of \\[4, 8, 16\\] along y"):
        volume.write(Box((2, 0, 4), (6, 4, 20)), data[:, :4, :4])  # one chunk row, half a shard
    volume.write(volume.bounds, data)
    shards = sorted(p.name for p in (tmp_path / "sh").rglob("*") if p.is_file())
    assert shards == ["0.shard", "1.shard", "2.shard", "3.shard", "info"]
    found, cv = cloudvolume_read(url)
    assert cv.meta.scale(0)["sharding"]["preshift_bits"] == 2
    assert np.array_equal(found, data)
    assert open_volume(url).shard_size == (4, 8, 16)

    # another sharding of the same shard shape puts chunks in other files: refused, untouched
    info_file = tmp_path / "sh" / "info"
    meta = json.loads(info_file.read_text())
    meta["scales"][0]["sharding"]["hash"] = "murmurhash3_x86_128"
    info_file.write_text(json.dumps(meta))
    with pytest.raises(VolumeError, match="'hash': 'murmurhash3_x86_128'") as err:
        create_or_check(url, OUT_INFO, output_settings(shard_size=(4, 8, 16)))
    assert "\n" not in str(err.value) and json.loads(info_file.read_text()) == meta


def test_a_missing_input_chunk_is_an_error_not_zeros(tmp_path):
    url = write_precomputed(file_url(tmp_path / "raw"), smooth_volume((16, 48, 48)))
    next((tmp_path / "raw").glob("*/3-23_5-25_7-13*")).unlink()  # the first chunk (x, y, z)
    volume = open_volume(url)
    assert volume.read(Box((7, 25, 23), (8, 26, 24))).shape == (1, 1, 1)  # another chunk
    with pytest.raises(VolumeError, match="lacks storage chunks inside") as err:
        volume.read(volume.bounds)
    assert "\n" not in str(err.value)


def test_encoding_is_for_precomputed_outputs_only(small_config):
    with pytest.raises(
        ConfigError, match="output.encoding gzip applies to precomputed outputs only"
    ):
        config_mod.parse(config_with(small_config, **{"output.encoding": "gzip"}))


def test_float16_precomputed_output_is_refused_by_the_plan(small_config, tmp_path):
    url = file_url(tmp_path / "half")
    config = config_with(small_config, **{"output.path": url, "output.dtype": "float16"})
    with pytest.raises(ConfigError, match="precomputed has no float16 data type") as err:
        make_plan(config_mod.parse(config))
    assert "\n" not in str(err.value) and not (tmp_path / "half").exists()

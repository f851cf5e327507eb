"""Zarr volumes: metadata conventions, reads in global coordinates, padding, and the output check.

Stores are written with zarr's own API (not chunkflow's), so reading them back is a real check;
padded reads are compared with ``numpy.pad`` of the whole volume.
"""

from __future__ import annotations

import itertools
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import zarr
from helpers import output_format

from chunkflow.errors import ConfigError, VolumeError
from chunkflow.geometry.boxes import Box
from chunkflow.settings import OutputSettings
from chunkflow.volumes import (
    VolumeInfo,
    check_output_options,
    create_or_check,
    open_volume,
    read_padded,
    refuse_mismatch,
)
from chunkflow.volumes.zarr_volume import ZSTD_LEVEL, ZarrVolume, holds_no_empty_chunk


def write_zarr(path: Path, data: np.ndarray, zarr_format: int = 3, chunks=None, **attrs) -> str:
    """A zarr array made with zarr itself, with ``attrs`` as its attributes."""
    array = zarr.create_array(
        store=str(path),
        shape=data.shape,
        chunks=chunks or tuple(max(1, s // 2) for s in data.shape),
        dtype=data.dtype,
        zarr_format=zarr_format,
        attributes=attrs,
    )
    array[...] = data
    return str(path)


def ramp(shape, dtype="uint16") -> np.ndarray:
    """Every voxel a different value, so a wrong index shows."""
    return np.arange(np.prod(shape), dtype=dtype).reshape(shape)


def snapshot(root: Path) -> dict[str, bytes]:
    return {
        str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()
    }


# ---------------------------------------------------------------------------------------------
# metadata and plain reads


@pytest.mark.parametrize("zarr_format", [2, 3])
def test_voxel_offset_and_resolution_are_read_back(tmp_path, zarr_format):
    data = ramp((6, 7, 9))
    path = write_zarr(
        tmp_path / "raw.zarr",
        data,
        zarr_format,
        chunks=(2, 4, 3),
        voxel_offset=[10, -3, 4],
        resolution=[40, 8, 4.5],
    )
    volume = open_volume(path)
    info = volume.info
    assert info.shape == (6, 7, 9)
    assert info.dtype == "uint16"
    assert info.chunk_size == (2, 4, 3)
    assert info.voxel_offset == (10, -3, 4)
    assert info.resolution == (40.0, 8.0, 4.5)
    assert info.channels is None
    assert volume.bounds == Box((10, -3, 4), (16, 4, 13))
    # global coordinates: voxel (z, y, x) is data[z - 10, y + 3, x - 4]
    assert np.array_equal(volume.read(volume.bounds), data)
    box = Box((11, -1, 6), (14, 4, 13))
    assert np.array_equal(volume.read(box), data[1:4, 2:7, 2:9])
    assert volume.read(Box((12, 0, 5), (13, 1, 6)))[0, 0, 0] == data[2, 3, 1]


@pytest.mark.parametrize("zarr_format", [2, 3])
def test_defaults_without_attributes(tmp_path, zarr_format):
    volume = open_volume(write_zarr(tmp_path / "raw.zarr", ramp((3, 4, 5)), zarr_format))
    assert volume.info.voxel_offset == (0, 0, 0)
    assert volume.info.resolution == (1.0, 1.0, 1.0)


@pytest.mark.parametrize("zarr_format", [2, 3])
def test_channels_first_volumes(tmp_path, zarr_format):
    data = ramp((3, 4, 5, 6), "float32")
    path = write_zarr(tmp_path / "c.zarr", data, zarr_format, voxel_offset=[1, 2, 3])
    volume = open_volume(path)
    assert volume.info.channels == 3
    assert volume.info.shape == (4, 5, 6)
    assert volume.bounds == Box((1, 2, 3), (5, 7, 9))
    assert np.array_equal(volume.read(Box((2, 2, 4), (4, 7, 6))), data[:, 1:3, 0:5, 1:3])
    # attributes may also list the channel axis first
    path = write_zarr(
        tmp_path / "c4.zarr", data, zarr_format, voxel_offset=[0, 1, 2, 3], resolution=[1, 8, 4, 4]
    )
    assert open_volume(path).info.voxel_offset == (1, 2, 3)
    assert open_volume(path).info.resolution == (8.0, 4.0, 4.0)


@pytest.mark.parametrize("zarr_format", [2, 3])
def test_daisy_offset_in_world_units(tmp_path, zarr_format):
    data = ramp((4, 5, 6))
    path = write_zarr(
        tmp_path / "daisy.zarr", data, zarr_format, offset=[80, 12, -8], resolution=[40, 4, 4]
    )
    volume = open_volume(path)
    assert volume.info.voxel_offset == (2, 3, -2)
    assert volume.info.resolution == (40.0, 4.0, 4.0)
    assert np.array_equal(volume.read(Box((3, 3, -2), (4, 8, 4))), data[1:2])


def test_funlib_voxel_size_is_the_resolution(tmp_path):
    path = write_zarr(
        tmp_path / "f.zarr", ramp((4, 5, 6)), offset=[80, 12, 8], voxel_size=[40, 4, 4]
    )
    info = open_volume(path).info
    assert info.resolution == (40.0, 4.0, 4.0)
    assert info.voxel_offset == (2, 3, 2)


def test_voxel_offset_wins_over_a_world_offset(tmp_path):
    path = write_zarr(
        tmp_path / "both.zarr",
        ramp((2, 2, 2)),
        voxel_offset=[1, 2, 3],
        offset=[400, 400, 400],
        resolution=[4, 4, 4],
    )
    assert open_volume(path).info.voxel_offset == (1, 2, 3)


@pytest.mark.parametrize(
    "attrs, fragment",
    [
        ({"offset": [30, 0, 0], "resolution": [40, 4, 4]}, "whole number of voxels"),
        ({"voxel_offset": [1, 2]}, "voxel_offset = [1, 2]; it must list 3 numbers"),
        ({"voxel_offset": [0, 1, 2, 3, 4]}, "it must list 3 numbers (z, y, x)"),
        ({"resolution": "444"}, "resolution = '444'"),
        ({"voxel_size": [4, None, 4]}, "voxel_size"),
        ({"resolution": [0, 4, 4]}, "positive"),
    ],
)
def test_unusable_metadata_is_a_volume_error(tmp_path, attrs, fragment):
    path = write_zarr(tmp_path / "bad.zarr", ramp((2, 3, 4)), **attrs)
    with pytest.raises(VolumeError) as err:
        open_volume(path)
    assert fragment in str(err.value)
    assert "\n" not in str(err.value)


def test_what_is_not_a_volume(tmp_path):
    with pytest.raises(VolumeError, match="does not exist"):
        open_volume(str(tmp_path / "missing.zarr"))
    with pytest.raises(VolumeError, match="does not exist"):
        open_volume(str(tmp_path / "missing"))
    zarr.open_group(str(tmp_path / "group.zarr"), mode="w")
    with pytest.raises(VolumeError, match="group, not an array"):
        open_volume(str(tmp_path / "group.zarr"))
    write_zarr(tmp_path / "flat.zarr", ramp((4, 5)))
    with pytest.raises(VolumeError, match="2 dimensions"):
        open_volume(str(tmp_path / "flat.zarr"))
    (tmp_path / "text.zarr").write_text("hello")
    with pytest.raises(VolumeError, match="not a readable zarr store"):
        open_volume(str(tmp_path / "text.zarr"))
    (tmp_path / "folder").mkdir()
    with pytest.raises(VolumeError, match="cannot tell the format"):
        open_volume(str(tmp_path / "folder"))


def test_reads_outside_the_bounds_raise(tmp_path):
    volume = open_volume(write_zarr(tmp_path / "v.zarr", ramp((4, 5, 6)), voxel_offset=[2, 2, 2]))
    for box in [
        Box((1, 2, 2), (3, 4, 4)),  # one voxel before the start along z
        Box((2, 2, 2), (6, 7, 9)),  # one past the end along x
        Box((20, 20, 20), (21, 21, 21)),  # wholly outside
        Box((0, 0, 0), (2, 2, 2)),  # touching the start corner from outside
    ]:
        with pytest.raises(VolumeError, match="outside the bounds"):
            volume.read(box)
    assert volume.read(Box((2, 2, 2), (2, 2, 2))).shape == (0, 0, 0)


def test_writes_go_to_global_coordinates_and_check_the_shape(tmp_path):
    info = VolumeInfo(
        shape=(4, 5, 6), dtype="float32", chunk_size=(2, 2, 2), voxel_offset=(1, 1, 1)
    )
    volume = ZarrVolume.create(str(tmp_path / "w.zarr"), info, output_format(3))
    volume.write(Box((2, 3, 4), (4, 5, 7)), np.full((2, 2, 3), 7, dtype="float32"))
    stored = zarr.open_array(str(tmp_path / "w.zarr"), mode="r")[...]
    expected = np.zeros((4, 5, 6), dtype="float32")
    expected[1:3, 2:4, 3:6] = 7
    assert np.array_equal(stored, expected)
    with pytest.raises(VolumeError, match="does not fit"):
        volume.write(Box((2, 3, 4), (4, 5, 7)), np.zeros((2, 2, 2), dtype="float32"))
    with pytest.raises(VolumeError, match="outside the bounds"):
        volume.write(Box((0, 1, 1), (1, 2, 2)), np.zeros((1, 1, 1), dtype="float32"))


@pytest.mark.parametrize("zarr_format", [2, 3])
@pytest.mark.parametrize("channels", [None, 2])
def test_created_volumes_carry_their_metadata(tmp_path, zarr_format, channels):
    info = VolumeInfo(
        shape=(4, 6, 8),
        dtype="uint8",
        chunk_size=(2, 3, 4),
        voxel_offset=(5, -6, 7),
        resolution=(30.0, 4.0, 4.0),
        channels=channels,
    )
    path = str(tmp_path / "out.zarr")
    ZarrVolume.create(path, info, output_format(zarr_format))
    array = zarr.open_array(path, mode="r")  # what a viewer or another tool sees
    lead = () if channels is None else (channels,)
    assert array.shape == (*lead, 4, 6, 8)
    assert array.chunks == (*lead, 2, 3, 4)
    assert array.metadata.zarr_format == zarr_format
    assert array.attrs["voxel_offset"] == [5, -6, 7]
    assert array.attrs["resolution"] == [30.0, 4.0, 4.0]
    if zarr_format == 3:
        assert list(array.metadata.dimension_names) == ["c", "z", "y", "x"][-len(lead) - 3 :]
    assert open_volume(path).info == info


def chunk_keys(path: Path) -> set[str]:
    """The chunk files of a zarr array (format 2 or 3), relative to it."""
    meta = {".zarray", ".zattrs", "zarr.json"}
    return {str(p.relative_to(path)) for p in path.rglob("*") if p.is_file() and p.name not in meta}


@pytest.mark.parametrize("zarr_format", [2, 3])
@pytest.mark.parametrize("shard_size", [None, (4, 4, 8)])
@pytest.mark.parametrize("dtype", ["uint8", "float32"])
def test_writes_store_what_zarr_stores(tmp_path, zarr_format, shard_size, dtype):
    """A chunk that a write leaves all fill value is not stored (and one stored before is
    deleted), as zarr does it; a chunk is empty or not by all of it, also where a write covers
    part of it; whichever way a write goes, the chunks hold what zarr itself writes."""
    if shard_size is not None and zarr_format == 2:
        pytest.skip("zarr v2 has no sharding")
    info = VolumeInfo(shape=(8, 8, 16), dtype=dtype, chunk_size=(2, 4, 8), channels=2)
    rng = np.random.default_rng(0)
    data = rng.integers(1, 200, (2, 8, 8, 16)).astype(dtype)
    data[:, 2:4] = 0  # a layer of empty chunks
    data[:, 4:6, :2] = 0  # chunks half zero
    data[1, 6:8, 4:8, 8:16] = -0.0 if dtype == "float32" else 0  # zero in one channel only
    ours, theirs = tmp_path / "ours.zarr", tmp_path / "theirs.zarr"
    volume = ZarrVolume.create(str(ours), info, output_format(zarr_format, shard_size))
    expected = zarr.create_array(
        store=str(theirs),
        shape=data.shape,
        chunks=(2, 2, 4, 8),
        shards=None if shard_size is None else (2, *shard_size),
        dtype=dtype,
        fill_value=0,
        zarr_format=zarr_format,
    )
    everything = Box((0, 0, 0), (8, 8, 16))
    for values in (np.ones_like(data), data):  # the second write empties chunks of the first
        volume.write(everything, values)
        expected[...] = values
    part = Box((1, 0, 0), (3, 8, 16))  # half of the chunks of z 0-1 and z 2-3, zeros
    volume.write(part, np.zeros((2, *part.shape), dtype=dtype))
    expected[:, 1:3] = 0
    assert np.array_equal(volume.read(everything), expected[...])
    assert chunk_keys(ours) == chunk_keys(theirs)
    whole = (slice(None), slice(0, 8), slice(0, 8), slice(0, 16))
    assert holds_no_empty_chunk(volume.array, whole, np.ones_like(data))  # zarr need not look
    assert not holds_no_empty_chunk(volume.array, whole, data)
    if shard_size is None:
        assert not any(k.startswith(("c/0/1/", "0.1.")) for k in chunk_keys(ours))  # z 2-3
        assert any(k.startswith(("c/0/0/", "0.0.")) for k in chunk_keys(ours))  # z 0-1: half
        assert {"c/0/2/0/0", "0.2.0.0"} & chunk_keys(ours)  # half zero
        assert {"c/0/3/1/1", "0.3.1.1"} & chunk_keys(ours)  # zero in one channel


@pytest.mark.parametrize("zarr_format", [2, 3])
def test_outputs_are_compressed_at_the_configured_zstd_level(tmp_path, zarr_format):
    def level(settings: OutputSettings) -> int:
        path = tmp_path / f"{settings.zstd_level}.zarr"
        ZarrVolume.create(str(path), OUT_INFO, settings)
        compressor = zarr.open_array(str(path), mode="r").compressors[0]
        return compressor.level

    assert level(output_format(zarr_format)) == ZSTD_LEVEL == 1
    assert level(replace(output_format(zarr_format), zstd_level=7)) == 7


@pytest.mark.parametrize("url", ["out.h5:/pred", "precomputed://file://{tmp}/pre"])
def test_zstd_level_is_refused_for_other_formats(tmp_path, url):
    output = replace(output_format(3), path=url.format(tmp=tmp_path), zstd_level=3)
    with pytest.raises(ConfigError, match=r"^output.zstd_level applies to zarr outputs only; "):
        check_output_options(output)


# ---------------------------------------------------------------------------------------------
# padded reads: the same as numpy.pad of the whole volume, then sliced


OFFSET = (3, -2, 5)
SHAPE = (4, 5, 7)


def padded_reference(data: np.ndarray, box: Box, mode: str) -> np.ndarray:
    """numpy.pad the whole volume far enough to hold ``box``, then cut ``box`` out of it."""
    bounds = Box.from_shape(OFFSET, SHAPE)
    before = [v - b for v, b in zip(bounds.start, box.start, strict=True)]
    after = [b - v for v, b in zip(bounds.stop, box.stop, strict=True)]
    pad = max(0, *before, *after)
    widths = [(0, 0)] * (data.ndim - 3) + [(pad, pad)] * 3
    if mode == "zero":
        padded = np.pad(data, widths, mode="constant", constant_values=0)
    else:
        padded = np.pad(data, widths, mode=mode)
    origin = tuple(o - pad for o in OFFSET)
    return padded[(...,) + box.slices(origin)]


def boxes_around(bounds: Box) -> list[Box]:
    """Boxes partly outside on each side, wholly outside, inside, and larger than the volume."""
    out = []
    # along each axis: before, straddling the start, inside, straddling the stop, after,
    # and far beyond (more than the volume's size away: repeated reflection)
    for axis in range(3):
        a, b = bounds.start[axis], bounds.stop[axis]
        n = b - a
        for lo, hi in [
            (a - 3, a - 1),
            (a - 2, a + 2),
            (a + 1, b - 1),
            (b - 2, b + 3),
            (b + 1, b + 4),
            (a - 3 * n - 1, a - 2 * n),
            (b + 2 * n, b + 3 * n + 2),
        ]:
            start, stop = list(bounds.start), list(bounds.stop)
            start[axis], stop[axis] = lo, hi
            out.append(Box(start, stop))
    out += [
        bounds,
        bounds.grow((1, 2, 3)),  # the whole volume and a margin
        bounds.grow((9, 11, 15), (2, 0, 17)),  # pad widths larger than the volume
        Box.from_shape((bounds.start[0] - 20, 40, -30), (3, 4, 5)),  # outside on every axis
        Box.from_shape(bounds.stop, (2, 2, 2)),  # just past the far corner
    ]
    return out


@pytest.mark.parametrize("mode", ["reflect", "symmetric", "edge", "zero"])
@pytest.mark.parametrize("channels", [None, 2])
def test_read_padded_equals_numpy_pad(tmp_path, mode, channels):
    shape = SHAPE if channels is None else (channels, *SHAPE)
    data = ramp(shape, "float32") + 1  # no zeros inside: zero padding shows
    volume = open_volume(write_zarr(tmp_path / "v.zarr", data, voxel_offset=list(OFFSET)))
    for box in boxes_around(volume.bounds):
        got = read_padded(volume, box, mode)
        expected = padded_reference(data, box, mode)
        assert got.dtype == data.dtype
        assert got.shape == expected.shape, box
        assert np.array_equal(got, expected), f"{mode} {box}"


def test_read_padded_reflects_a_one_voxel_axis(tmp_path):
    data = ramp((1, 3, 4), "uint8")
    volume = open_volume(write_zarr(tmp_path / "thin.zarr", data))
    box = Box((-3, -1, 0), (4, 3, 4))
    for mode in ("reflect", "symmetric", "edge"):
        expected = np.pad(data, ((3, 3), (1, 0), (0, 0)), mode=mode)
        assert np.array_equal(read_padded(volume, box, mode), expected), mode


def test_read_padded_inside_is_a_plain_read(tmp_path):
    data = ramp(SHAPE)
    volume = open_volume(write_zarr(tmp_path / "v.zarr", data, voxel_offset=list(OFFSET)))
    box = Box((4, -1, 6), (6, 2, 11))
    for mode in ("reflect", "zero"):
        assert np.array_equal(read_padded(volume, box, mode), volume.read(box))


def test_read_padded_refuses_an_unknown_mode(tmp_path):
    volume = open_volume(write_zarr(tmp_path / "v.zarr", ramp(SHAPE)))
    with pytest.raises(ValueError, match="padding mode"):
        read_padded(volume, Box((-1, 0, 0), (2, 2, 2)), "mirror")


# ---------------------------------------------------------------------------------------------
# the output store: created once, reused when it matches, refused (untouched) when it does not


OUT_INFO = VolumeInfo(
    shape=(8, 12, 16),
    dtype="float32",
    chunk_size=(4, 4, 8),
    voxel_offset=(2, 0, 4),
    resolution=(40.0, 4.0, 4.0),
    channels=2,
)


@pytest.mark.parametrize("zarr_format", [2, 3])
def test_create_or_check_creates_then_reuses_a_match(tmp_path, zarr_format):
    path = str(tmp_path / "out.zarr")
    volume, created = create_or_check(path, OUT_INFO, output_format(zarr_format))
    assert created and volume.info == OUT_INFO
    volume.write(Box((2, 0, 4), (3, 1, 5)), np.ones((2, 1, 1, 1), dtype="float32"))
    before = snapshot(tmp_path / "out.zarr")
    again, created = create_or_check(path, OUT_INFO, output_format(zarr_format))
    assert not created and again.info == OUT_INFO
    assert snapshot(tmp_path / "out.zarr") == before  # reused, not rewritten
    assert again.read(Box((2, 0, 4), (3, 1, 5))).tolist() == [[[[1.0]]], [[[1.0]]]]


MISMATCHES = {
    "shape": ({"shape": (8, 12, 24)}, "shape [8, 12, 16] (expected [8, 12, 24])"),
    "dtype": ({"dtype": "uint8"}, "dtype float32 (expected uint8)"),
    "chunks": ({"chunk_size": (4, 4, 16)}, "chunk_size [4, 4, 8] (expected [4, 4, 16])"),
    "offset": ({"voxel_offset": (0, 0, 0)}, "voxel_offset [2, 0, 4] (expected [0, 0, 0])"),
    "resolution": ({"resolution": (30.0, 4.0, 4.0)}, "resolution [40.0, 4.0, 4.0]"),
    "channels": ({"channels": 3}, "channels 2 (expected 3)"),
    "no-channels": ({"channels": None}, "channels 2 (expected None)"),
}


@pytest.mark.parametrize("name", MISMATCHES)
def test_create_or_check_refuses_a_mismatch_and_leaves_it_untouched(tmp_path, name):
    path = str(tmp_path / "out.zarr")
    create_or_check(path, OUT_INFO, output_format(3))
    before = snapshot(tmp_path / "out.zarr")
    changes, fragment = MISMATCHES[name]
    wanted = VolumeInfo(**{**OUT_INFO.__dict__, **changes})
    with pytest.raises(VolumeError) as err:
        create_or_check(path, wanted, output_format(3))
    message = str(err.value)
    assert fragment in message and "delete it or choose another output.path" in message
    assert "\n" not in message
    assert snapshot(tmp_path / "out.zarr") == before


def test_create_or_check_refuses_another_zarr_format(tmp_path):
    path = str(tmp_path / "out.zarr")
    create_or_check(path, OUT_INFO, output_format(2))
    before = snapshot(tmp_path / "out.zarr")
    with pytest.raises(VolumeError, match=r"zarr format 2 \(expected 3\)"):
        create_or_check(path, OUT_INFO, output_format(3))
    with pytest.raises(VolumeError, match=r"zarr format 2 \(expected 3\)"):
        refuse_mismatch(open_volume(path, mode="r+"), OUT_INFO, output_format(3))
    assert snapshot(tmp_path / "out.zarr") == before


def test_create_or_check_refuses_what_is_not_an_output(tmp_path):
    (tmp_path / "file.zarr").write_text("mine")
    with pytest.raises(VolumeError, match="not a readable zarr store"):
        create_or_check(str(tmp_path / "file.zarr"), OUT_INFO, output_format())
    assert (tmp_path / "file.zarr").read_text() == "mine"
    with pytest.raises(VolumeError, match="cannot tell the output format"):
        create_or_check(str(tmp_path / "out.n5"), OUT_INFO, output_format())
    assert not (tmp_path / "out.n5").exists()


def test_resolution_compares_as_numbers(tmp_path):
    """Integer and float resolutions are the same resolution."""
    path = str(tmp_path / "out.zarr")
    create_or_check(path, OUT_INFO, output_format(3))
    same = VolumeInfo(**{**OUT_INFO.__dict__, "resolution": (40, 4, 4)})
    assert create_or_check(path, same, output_format(3))[1] is False


def test_every_box_around_is_checked():
    """The padded-read cases reach every side of the volume, and beyond its size."""
    bounds = Box.from_shape(OFFSET, SHAPE)
    boxes = boxes_around(bounds)
    for axis, side in itertools.product(range(3), ("before", "after")):
        if side == "before":
            assert any(b.start[axis] < bounds.start[axis] - SHAPE[axis] for b in boxes)
        else:
            assert any(b.stop[axis] > bounds.stop[axis] + SHAPE[axis] for b in boxes)

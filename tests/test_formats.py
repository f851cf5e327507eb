"""Every format in and out: one small volume stored as zarr v2, v3, sharded v3, OME-Zarr, HDF5 and
Neuroglancer precomputed (written with zarr / h5py / cloud-volume themselves), each run to every
output format. The outputs, read back with zarr, h5py or cloud-volume, are identical and carry
the input's voxel offset and resolution.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import zarr
from format_cases import (
    INPUTS,
    OFFSET,
    OUTPUTS,
    RAW,
    RESOLUTION,
    SHAPE,
    check_geometry,
    hdf5_input,
    make_config,
    ome_input,
    zarr_input,
)
from helpers import ValidConvNet, config_with, save_torchscript, smooth_volume
from run_helpers import read_back, run_all_blocks

from chunkflow import config as config_mod
from chunkflow.errors import ConfigError, VolumeError
from chunkflow.plan.run_plan import make_plan
from chunkflow.state.output_store import create_output
from chunkflow.volumes import open_volume


@pytest.mark.parametrize("source", INPUTS)
def test_every_input_to_every_output_gives_the_same_numbers(source, model, reference, tmp_path):
    input_path = INPUTS[source](tmp_path)
    info = open_volume(input_path).info
    assert (info.shape, info.voxel_offset, info.resolution) == (SHAPE, OFFSET, RESOLUTION)
    for name, output in OUTPUTS.items():
        run = tmp_path / name
        config = make_config(model, input_path, run, **output)
        result = run_all_blocks(config)
        np.testing.assert_array_equal(result, reference, err_msg=f"{source} -> {name}")
        path = config["output"]["path"]
        check_geometry(name, path, read_back(path)[1])


def test_ome_zarr_scales_by_path_or_mip(tmp_path):
    scale0 = ome_input(tmp_path)
    root = scale0.removesuffix("/0")
    assert open_volume(root).info == open_volume(scale0).info
    by_path, by_mip = open_volume(f"{root}/1").info, open_volume(root, mip=1).info
    assert by_path == by_mip
    assert by_path.resolution == (40.0, 16.0, 8.0)
    assert by_path.voxel_offset == (3, -3, 4) and by_path.shape == (16, 24, 24)
    for path, mip, fragment in [
        (root, 2, "has no mip 2 (it has scales ['0', '1']); fix input.mip"),
        (f"{root}/1", 1, "names a scale already; remove input.mip"),
        (f"{root}/7", 0, "has no scale '7'"),
    ]:
        with pytest.raises(VolumeError, match=None) as err:
            open_volume(path, mip=mip)
        assert fragment in str(err.value)


def test_hdf5_needs_a_dataset_and_assembles_its_parts(tmp_path, model):
    input_path = hdf5_input(tmp_path)
    for path, fragment in [
        (str(tmp_path / "raw.h5"), "name the HDF5 dataset too, e.g."),
        (f"{tmp_path / 'raw.h5'}:/raw", "has no dataset '/raw' (it has /volumes/raw)"),
        (f"{tmp_path / 'nothing.h5'}:/raw", "does not exist"),
    ]:
        with pytest.raises(VolumeError) as err:
            open_volume(path)
        assert fragment in str(err.value) and "\n" not in str(err.value)
    config = make_config(model, input_path, tmp_path, path="out.h5:/p")
    plan = make_plan(config_mod.parse(config))
    create_output(plan)
    from chunkflow.state.output_store import finish_output

    with pytest.raises(VolumeError, match=r"4 piece\(s\) of .* are not written yet"):
        finish_output(plan)  # nothing written: the virtual dataset is not built over nothing
    assert not read_back(f"{tmp_path}/out.h5:/p")[0].any()  # before the blocks: zeros
    assert sorted(p.name for p in (tmp_path / "out.h5.parts").glob("*")) == []


PRECOMPUTED_SHARDED = {
    "output.path": "precomputed://file:///nonexistent/out",
    "output.chunk_size": [8, 12, 12],
}


def test_unaligned_or_unknown_outputs_are_refused_before_any_job(model, tmp_path):
    config = make_config(model, zarr_input(tmp_path), tmp_path)
    cases = [
        (
            {"output.shard_size": [16, 16, 16]},
            "block_size [16, 24, 24] is not a whole multiple of output.shard_size [16, 16, 16] "
            "along y, x; nearest valid block sizes: [16, 16, 16] or [16, 32, 32]",
        ),
        ({"output.shard_size": [8, 12, 24]}, "output.shard_size [8, 12, 24] is not a whole"),
        (
            {"output.shard_size": [8, 24, 24], "output.zarr_format": 2},
            "output.shard_size needs output.zarr_format 3",
        ),
        ({"output.path": str(tmp_path / "out.n5")}, "output.path: cannot tell the output format"),
        (
            {**PRECOMPUTED_SHARDED, "output.shard_size": [8, 24, 12]},
            "output.shard_size [8, 24, 12] is not a precomputed shard of this output "
            "([16, 48, 48] voxels in chunks of [8, 12, 12]): 2 chunks make a shard of [8, 12, 24]",
        ),
        (
            {**PRECOMPUTED_SHARDED, "output.shard_size": [8, 36, 24]},
            "output.shard_size [8, 36, 24] must hold a power of two chunks along each axis",
        ),
    ]
    for changes, fragment in cases:
        with pytest.raises(ConfigError) as err:
            make_plan(config_mod.parse(config_with(config, **changes)))
        assert fragment in str(err.value) and "\n" not in str(err.value)
    assert not Path(config["output"]["path"]).exists()


def snapshot(root: Path) -> dict[str, bytes]:
    files = [root] if root.is_file() else sorted(root.rglob("*"))
    return {str(p): p.read_bytes() for p in files if p.is_file()}


MISMATCHES: dict[str, list[tuple[dict[str, Any], str]]] = {
    "zarr3-sharded": [
        ({"output.shard_size": None}, "shard_size [8, 24, 24] (expected none)"),
        ({"output.dtype": "uint8"}, "dtype float32 (expected uint8)"),
    ],
    "ome-zarr2": [({"output.zarr_format": 3}, "zarr format 2 (expected 3)")],
    "precomputed-sharded": [
        ({"output.shard_size": [16, 24, 24]}, "shard_size [8, 24, 24] (expected [16, 24, 24])"),
        ({"output.shard_size": None}, "shard_size [8, 24, 24] (expected none)"),
        ({"output.encoding": "raw"}, "encoding gzip (expected raw)"),
    ],
    "hdf5": [
        ({"output.chunk_size": [8, 8, 8]}, "chunk_size [4, 8, 8] (expected [8, 8, 8])"),
        ({"output.shard_size": [16, 24, 24]}, "sharding (HDF5 has none"),
    ],
}


@pytest.mark.parametrize("name", MISMATCHES)
def test_existing_outputs_are_reused_or_refused_untouched(name, model, tmp_path):
    config = make_config(model, zarr_input(tmp_path), tmp_path / "run", **OUTPUTS[name])
    created = create_output(make_plan(config_mod.parse(config)))[1]
    path = config["output"]["path"]
    store = Path(path.removeprefix("precomputed://file://").split(":")[0])
    before = snapshot(store)
    assert created and not create_output(make_plan(config_mod.parse(config)))[1]
    for changes, fragment in MISMATCHES[name]:
        with pytest.raises(VolumeError) as err:
            create_output(make_plan(config_mod.parse(config_with(config, **changes))))
        assert fragment in str(err.value) and "\n" not in str(err.value), str(err.value)
    assert snapshot(store) == before


def test_two_input_channels_through_the_whole_path(tmp_path):
    """A (c, z, y, x) input feeds a model with two input channels; the output does not depend
    on the block size, and the second channel matters."""
    data = np.stack([RAW, smooth_volume(SHAPE, seed=9)])
    path = str(tmp_path / "two.zarr")
    zarr.create_array(store=path, shape=data.shape, chunks=(2, 8, 16, 16), dtype="uint8")[...] = (
        data
    )
    model = save_torchscript(ValidConvNet(channels_out=3, channels_in=2), tmp_path / "net2.pt")
    config = make_config(model, path, tmp_path / "a")
    blocked = run_all_blocks(config)
    whole = run_all_blocks(
        config_with(make_config(model, path, tmp_path / "b"), block_size=[16, 48, 48])
    )
    assert blocked.shape == (3, *SHAPE)
    np.testing.assert_allclose(blocked, whole, atol=1e-6)
    zarr.open_array(path, mode="r+")[1] = 0
    assert not np.allclose(run_all_blocks(make_config(model, path, tmp_path / "c")), blocked)


@pytest.mark.parametrize(
    "change, fragment",
    [
        ({"axes": ["c", "y", "x"]}, "chunkflow reads OME-Zarr images with axes (c,) z, y, x"),
        ({"unit": "furlong"}, "has the unit 'furlong'"),
        ({"scale": [1, 2]}, "has the scale [1, 2]; it needs 3 numbers"),
        ({"translation": [0.02, 0, 0]}, "not a whole number of voxels"),
    ],
)
def test_unusable_ome_metadata_is_one_line(tmp_path, change, fragment):
    root = Path(ome_input(tmp_path).removesuffix("/0"))
    meta = json.loads((root / "zarr.json").read_text())
    image = meta["attributes"]["ome"]["multiscales"][0]
    if "axes" in change:
        image["axes"] = change["axes"]
    if "unit" in change:
        image["axes"][0]["unit"] = change["unit"]
    transforms = image["datasets"][0]["coordinateTransformations"]
    if "scale" in change:
        transforms[0]["scale"] = change["scale"]
    if "translation" in change:
        transforms[1]["translation"] = change["translation"]
    (root / "zarr.json").write_text(json.dumps(meta))
    with pytest.raises(VolumeError) as err:
        open_volume(str(root))
    assert fragment in str(err.value) and "\n" not in str(err.value)

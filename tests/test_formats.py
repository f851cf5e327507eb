"""Every format in and out: one small volume stored as zarr v2, v3, sharded v3, OME-Zarr, HDF5 and
Neuroglancer precomputed (written with zarr / h5py / cloud-volume themselves), each run to every
output format. The outputs, read back with zarr, h5py or cloud-volume, are identical and carry
the input's voxel offset and resolution.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import h5py
import numpy as np
import pytest
import zarr
from helpers import ValidConvNet, config_with, save_torchscript, smooth_volume
from run_helpers import read_back, run_all_blocks

from chunkflow import config as config_mod
from chunkflow.errors import ConfigError, VolumeError
from chunkflow.plan.run_plan import make_plan
from chunkflow.state.output_store import create_output
from chunkflow.volumes import open_volume

SHAPE = (16, 48, 48)
OFFSET = (3, -6, 8)  # y and x even: the OME-Zarr scale 1 (y, x halved) stays voxel-aligned
RESOLUTION = (40.0, 8.0, 4.0)
RAW = smooth_volume(SHAPE, seed=3)
ATTRS = {"voxel_offset": list(OFFSET), "resolution": list(RESOLUTION)}


def zarr_input(root: Path, zarr_format: int = 3, shards: tuple | None = None) -> str:
    path = str(root / f"raw_v{zarr_format}{'_sharded' if shards else ''}.zarr")
    array = zarr.create_array(
        store=path,
        shape=SHAPE,
        chunks=(8, 8, 8) if shards else (8, 16, 16),
        shards=shards,
        dtype="uint8",
        zarr_format=zarr_format,
        attributes=ATTRS,
    )
    array[...] = RAW
    return path


def ome_input(root: Path) -> str:
    """An NGFF 0.5 image in micrometres with two scales; the path names scale 0."""
    path = root / "raw.ome.zarr"
    datasets = []
    for name, step in (("0", 1), ("1", 2)):
        scale = [r / 1000 * f for r, f in zip(RESOLUTION, (1, step, step), strict=True)]
        world = [o * r / 1000 for o, r in zip(OFFSET, RESOLUTION, strict=True)]
        datasets.append(
            {
                "path": name,
                "coordinateTransformations": [
                    {"type": "scale", "scale": scale},
                    {"type": "translation", "translation": world},
                ],
            }
        )
    axes = [{"name": a, "type": "space", "unit": "micrometer"} for a in "zyx"]
    image = {"ome": {"version": "0.5", "multiscales": [{"axes": axes, "datasets": datasets}]}}
    zarr.open_group(str(path), mode="w", zarr_format=3, attributes=image)
    for name, step in (("0", 1), ("1", 2)):
        data = RAW[:, ::step, ::step]
        zarr.create_array(
            store=str(path / name), shape=data.shape, chunks=(8, 16, 16), dtype="uint8"
        )[...] = data
    return f"{path}/0"


def hdf5_input(root: Path) -> str:
    """A dataset in a group, with daisy's world-unit ``offset``."""
    with h5py.File(root / "raw.h5", "w") as f:
        ds = f.create_dataset("volumes/raw", data=RAW, chunks=(8, 16, 16))
        ds.attrs["resolution"] = RESOLUTION
        ds.attrs["offset"] = [o * r for o, r in zip(OFFSET, RESOLUTION, strict=True)]
    return f"{root / 'raw.h5'}:/volumes/raw"


def precomputed_input(root: Path) -> str:
    from test_precomputed import write_precomputed

    url = f"precomputed://{(root / 'raw_precomputed').as_uri()}"
    return write_precomputed(url, RAW, offset=OFFSET, resolution=RESOLUTION)


INPUTS = {
    "precomputed": precomputed_input,
    "zarr2": lambda root: zarr_input(root, 2),
    "zarr3": lambda root: zarr_input(root, 3),
    "zarr3-sharded": lambda root: zarr_input(root, 3, shards=(16, 16, 16)),
    "ome-zarr": ome_input,
    "hdf5": hdf5_input,
}
OUTPUTS: dict[str, dict[str, Any]] = {
    "zarr2": {"path": "out.zarr", "zarr_format": 2},
    "zarr3": {"path": "out.zarr"},
    "zarr3-sharded": {"path": "out.zarr", "shard_size": [8, 24, 24]},
    "ome-zarr2": {"path": "out.ome.zarr", "zarr_format": 2},
    "ome-zarr3": {"path": "out.ome.zarr"},
    "hdf5": {"path": "out.h5:/predictions"},
    "precomputed": {"path": "precomputed://file://{run}/out_precomputed"},
    "precomputed-gzip": {"path": "precomputed://file://{run}/out_gzip", "encoding": "gzip"},
    # two shards of 1 x 2 x 2 chunks per block along z
    "precomputed-sharded": {
        "path": "precomputed://file://{run}/out_sharded",
        "chunk_size": [8, 12, 12],
        "shard_size": [8, 24, 24],
        "encoding": "gzip",
    },
}


@pytest.fixture(scope="module")
def model(tmp_path_factory) -> str:
    return save_torchscript(ValidConvNet(channels_out=2), tmp_path_factory.mktemp("m") / "net.pt")


def make_config(model: str, input_path: str, run: Path, **output: Any) -> dict[str, Any]:
    path = output.pop("path", "out.zarr")
    path = path.format(run=run) if "{run}" in path else f"{run}/{path}"
    return {
        "input": {"path": input_path},
        "output": {"path": path, "chunk_size": [4, 8, 8], **output},
        "block_size": [16, 24, 24],
        "model": {"path": model, "input_patch_size": [8, 18, 20], "output_patch_size": [6, 16, 18]},
        "inference": {"overlap": [2, 4, 6], "batch_size": 4, "device": "cpu"},
        "state_dir": f"{run}/state",
    }


@pytest.fixture(scope="module")
def reference(model, tmp_path_factory) -> np.ndarray:
    root = tmp_path_factory.mktemp("reference")
    return run_all_blocks(make_config(model, zarr_input(root), root))


def check_geometry(name: str, path: str, attrs: dict[str, Any]) -> None:
    """The output's own metadata, as zarr / h5py show it, carries the input's geometry."""
    assert attrs["voxel_offset"] == list(OFFSET), name
    assert attrs["resolution"] == list(RESOLUTION), name
    if name.startswith("ome"):
        group = zarr.open_group(path, mode="r").attrs.asdict()
        if name == "ome-zarr2":  # NGFF 0.4 on zarr v2, 0.5 on zarr v3
            meta = group["multiscales"][0]
            assert meta["version"] == "0.4"
        else:
            meta = group["ome"]["multiscales"][0]
            assert group["ome"]["version"] == "0.5"
        assert [a["name"] for a in meta["axes"]] == ["c", "z", "y", "x"]
        scale, shift = meta["datasets"][0]["coordinateTransformations"]
        assert meta["datasets"][0]["path"] == "0"
        assert scale["scale"] == [1.0, *RESOLUTION]
        world = [o * r for o, r in zip(OFFSET, RESOLUTION, strict=True)]
        assert shift["translation"] == [0.0, *world]
    if name == "zarr3-sharded":
        assert zarr.open_array(path).shards == (2, 8, 24, 24)
    if name == "precomputed-sharded":  # one file per shard, whole: 2 x 2 x 2 of them
        scale = json.loads((Path(path.removeprefix("precomputed://file://")) / "info").read_text())
        scale = scale["scales"][0]
        assert scale["sharding"]["data_encoding"] == "gzip"
        files = sorted(
            p.name for p in Path(path.removeprefix("precomputed://file://"), scale["key"]).iterdir()
        )
        assert len(files) == 8 and all(f.endswith(".shard") for f in files), files


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

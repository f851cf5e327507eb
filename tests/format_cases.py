"""The format matrix: one small volume stored as zarr v2, v3, sharded v3, OME-Zarr, HDF5 and
Neuroglancer precomputed (written with zarr / h5py / cloud-volume themselves), the outputs to run
it to, and the check that an output carries the input's geometry. Its fixtures (``model``,
``reference``) are in conftest.py.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import h5py
import zarr
from helpers import smooth_volume

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
    from precomputed_volumes import write_precomputed

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

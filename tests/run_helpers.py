"""Running a whole config in-process (no Snakemake), block by block, and reading the result."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import h5py
import numpy as np
import zarr

from chunkflow import config as config_mod
from chunkflow.job.local_run import run_locally
from chunkflow.plan.run_plan import make_plan


def run_all_blocks(config: dict[str, Any]) -> np.ndarray:
    """``run_locally`` (the package's in-process driver), then the output array as the format's
    own library reads it."""
    plan = make_plan(config_mod.parse(config))
    run_locally(plan)
    return read_back(plan.settings.output.path)[0]


def run_as_well(config: dict[str, Any], name: str, **changes: Any) -> np.ndarray:
    """``run_all_blocks`` of ``config`` with dotted-key ``changes``, into an output and state
    dir of its own (``name``) next to the config's state dir: a second run to compare with."""
    from helpers import config_with

    root = Path(config["state_dir"]).parent
    own = {"output.path": str(root / f"{name}.zarr"), "state_dir": str(root / f"state_{name}")}
    return run_all_blocks(config_with(config, **{**own, **changes}))


def read_back(path: str) -> tuple[np.ndarray, dict[str, Any]]:
    """The array at ``path`` and its attributes, read with zarr or h5py (not chunkflow):
    ``file.h5:/dataset``, a precomputed URL (cloud-volume; as (c, z, y, x)), an OME-Zarr image ``*.ome.zarr`` (its scale ``0``), or a zarr array."""
    if ".h5:" in path:
        file, dataset = path.split(":", 1)
        with h5py.File(file, "r") as f:
            attrs = f[dataset].attrs.items()  # arrays, and the fingerprint (a str)
            return f[dataset][...], {
                k: v.tolist() if isinstance(v, np.ndarray) else v for k, v in attrs
            }
    if path.startswith(("precomputed://", "file://", "gs://", "s3://")):  # x, y, z, c there
        from cloudvolume import CloudVolume

        cv = CloudVolume(path.removeprefix("precomputed://"), progress=False)
        attrs = {
            "voxel_offset": cv.voxel_offset[::-1].tolist(),
            "resolution": cv.resolution[::-1].tolist(),
        }
        return np.asarray(cv[cv.bounds]).transpose(3, 2, 1, 0), attrs
    if path.endswith(".ome.zarr"):
        path += "/0"
    array = zarr.open_array(path, mode="r")
    return array[...], dict(array.attrs)

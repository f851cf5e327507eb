"""A neuroglancer view of a run: the output over the input, centred on the ROI.

Neuroglancer speaks x, y, z: the state's dimensions and position are in that order, in voxels of
the output's resolution. Local volumes need an HTTP server (neuroglancer cannot read file://
URLs): ``serve`` offers the two volumes on localhost and the state then points at it.
"""

from __future__ import annotations

import json
import urllib.parse
from functools import partial
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from chunkflow.plan.run_plan import RunPlan
from chunkflow.volumes.hdf5 import HDF5Volume, split
from chunkflow.volumes.precomputed import PrecomputedVolume, cloudpath, local_dir
from chunkflow.volumes.stores import StorageOptions, browser_url, read_metadata

NEUROGLANCER = "https://neuroglancer-demo.appspot.com/"
LAYERS = ("input", "output")


def local_path(path: str) -> Path | None:
    """The folder of a local volume (plain path or file:// URL); None for a remote one."""
    folder = local_dir(path)
    if folder is not None:
        return folder
    return None if "://" in cloudpath(path) else Path(path).resolve()


def _zarr_meta(
    location: str, options: StorageOptions | None = None
) -> tuple[str, int, bool] | None:
    """Neuroglancer's scheme for a zarr array or OME-Zarr group (a folder or a URL), its rank,
    and whether it has OME metadata; None for what is not zarr."""
    v3 = read_metadata(location, "zarr.json", options)
    if v3 is not None:
        meta = json.loads(v3)
        attrs = meta.get("attributes", {})
        return "zarr3", len(meta.get("shape", ())), "ome" in attrs or "multiscales" in attrs
    attrs = json.loads(read_metadata(location, ".zattrs", options) or b"{}")
    array = read_metadata(location, ".zarray", options)
    if array is None and "multiscales" not in attrs:
        return None
    return "zarr", len(json.loads(array or b"{}").get("shape", ())), "multiscales" in attrs


def layer_source(path: str, plan: RunPlan, base_url: str | None = None, name: str = "") -> Any:
    """The neuroglancer source of a volume, served under ``base_url/name`` when given (local
    volumes), read from its bucket otherwise (``browser_url``); None for what neuroglancer
    cannot read: HDF5 unless served, a volume not written yet."""
    folder = local_path(path)
    options = _options(plan)[name] if name else None
    where = f"{base_url}/{name}" if base_url and folder else None
    if PrecomputedVolume.handles(path):
        return f"precomputed://{where or browser_url(cloudpath(path), options)}"
    if HDF5Volume.handles(path):  # served as a zarr array (``HDF5AsZarr``), when it exists
        if where is None or not Path(split(path)[0]).is_file():
            return None
        channels = name == "output" or plan.input_info.channels is not None
        return _placed(f"zarr://{where}", 4 if channels else 3, plan, name)
    meta = _zarr_meta(str(folder) if folder else path, options)
    if meta is None and name == "output" and path.rstrip("/").endswith(".zarr"):
        # not created yet: a zarr output has a channel axis, an OME-Zarr one its own geometry
        scheme = "zarr3" if plan.settings.output.zarr_format == 3 else "zarr"
        meta = (scheme, 4, path.rstrip("/").endswith(".ome.zarr"))
    if meta is None:
        return None
    scheme, rank, ome = meta
    url = f"{scheme}://{where or (folder.as_uri() if folder else browser_url(path, options))}"
    if ome:  # OME-Zarr carries its own scale and translation
        return url
    return _placed(url, rank, plan, name)


def _placed(url: str, rank: int, plan: RunPlan, name: str) -> dict[str, Any]:
    """A plain array's source, its voxels placed with the volume's resolution and offset."""
    info = plan.input_info if name == "input" else plan.output_info(1)
    dims: dict[str, list] = {"c^": [1, ""]} if rank == 4 else {}
    for axis, res in zip("zyx", info.resolution, strict=True):
        dims[axis] = [res * 1e-9, "m"]
    offsets = ([0] if rank == 4 else []) + list(info.voxel_offset)
    matrix = [[int(i == j) for j in range(rank)] + [o] for i, o in enumerate(offsets)]
    return {"url": url, "transform": {"outputDimensions": dims, "matrix": matrix}}


def _paths(plan: RunPlan) -> dict[str, str]:
    return {"input": plan.settings.input.path, "output": plan.settings.output.path}


def _options(plan: RunPlan) -> dict[str, StorageOptions | None]:
    settings = plan.settings
    return {"input": settings.input.storage_options, "output": settings.output.storage_options}


def left_out(plan: RunPlan, base_url: str | None = None) -> list[str]:
    """One line for each volume that ``state`` leaves out, saying why."""
    lines = []
    for name, path in _paths(plan).items():
        if layer_source(path, plan, base_url, name) is not None:
            continue
        if not HDF5Volume.handles(path):
            why = "neuroglancer reads only zarr and precomputed"
        elif base_url is None:
            why = "neuroglancer cannot read HDF5; `chunkflow view --serve` serves it as zarr"
        else:
            why = "it does not exist (yet)"
        lines.append(f"the {name} layer '{path}' is left out: {why}")
    return lines


def state(plan: RunPlan, base_url: str | None = None) -> dict[str, Any]:
    """The neuroglancer state: dimensions x, y, z in nm, position the ROI's centre (x, y, z);
    without the layers neuroglancer cannot read (``left_out``)."""
    resolution = plan.input_info.resolution
    centre = [a + n / 2 for a, n in zip(plan.roi.start, plan.roi.shape, strict=True)]
    paths = _paths(plan)
    return {
        "dimensions": {a: [r * 1e-9, "m"] for a, r in zip("xyz", resolution[::-1], strict=True)},
        "position": centre[::-1],
        "crossSectionScale": 1,
        "layers": [
            {"type": "image", "name": n, "source": source}
            for n in LAYERS
            if (source := layer_source(paths[n], plan, base_url, n)) is not None
        ],
        "selectedLayer": {"layer": "output", "visible": True},
        "layout": "4panel",
    }


def url(view_state: dict[str, Any], viewer: str = NEUROGLANCER) -> str:
    """A neuroglancer link holding ``view_state`` in its fragment."""
    text = json.dumps(view_state, separators=(",", ":"))
    return f"{viewer}#!{urllib.parse.quote(text, safe='')}"


class HDF5AsZarr:
    """An HDF5 dataset offered as a zarr (format 2) array of uncompressed chunks, the dataset's
    own (64 voxels a side if it has none): its ``.zarray``, and each chunk read on request."""

    def __init__(self, path: str) -> None:
        import h5py

        self.file, self.dataset = split(path)
        with h5py.File(self.file, "r") as f:
            dataset = f[self.dataset]
            self.shape, self.dtype = dataset.shape, dataset.dtype
            self.chunks = dataset.chunks or tuple(min(n, 64) for n in dataset.shape)

    def get(self, key: str) -> bytes | None:
        """The bytes of ``.zarray``, ``.zattrs`` or chunk ``i.j.k``; None for any other key."""
        if key in (".zarray", ".zattrs"):
            meta = {
                "zarr_format": 2,
                "shape": list(self.shape),
                "chunks": list(self.chunks),
                "dtype": self.dtype.str,
                "compressor": None,
                "fill_value": 0,
                "order": "C",
                "filters": None,
            }
            return json.dumps(meta if key == ".zarray" else {}).encode()
        try:
            index = [int(i) for i in key.split(".")]
        except ValueError:
            return None
        grid = [-(-n // c) for n, c in zip(self.shape, self.chunks, strict=True)]
        if len(index) != len(grid) or not all(0 <= i < g for i, g in zip(index, grid, strict=True)):
            return None
        return self._chunk(index)

    def _chunk(self, index: list[int]) -> bytes:
        import h5py
        import numpy as np

        box = tuple(slice(i * c, (i + 1) * c) for i, c in zip(index, self.chunks, strict=True))
        with h5py.File(self.file, "r") as f:
            data = f[self.dataset][box]
        chunk = np.zeros(self.chunks, self.dtype)  # zarr's edge chunks are whole
        chunk[tuple(slice(0, n) for n in data.shape)] = data
        return chunk.tobytes()


class _Handler(SimpleHTTPRequestHandler):
    """Serves ``/input/…`` and ``/output/…`` from the volumes' folders, with CORS for
    neuroglancer; a gzip'd precomputed chunk (``name.gz``) is sent as ``name``; an HDF5
    volume as a zarr array (``HDF5AsZarr``)."""

    gzipped = False

    def __init__(
        self, *args: Any, roots: dict[str, Path], arrays: dict[str, HDF5AsZarr], **kwargs: Any
    ) -> None:
        self.roots, self.arrays = roots, arrays
        super().__init__(*args, **kwargs)

    def do_GET(self) -> None:
        path = urllib.parse.unquote(self.path.split("?", 1)[0]).strip("/")
        name, _, key = path.partition("/")
        if name not in self.arrays:
            return super().do_GET()
        body = self.arrays[name].get(key)
        if body is None:
            return self.send_error(404)
        self.send_response(200)
        self.send_header("Content-Type", "application/octet-stream")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)
        return None

    def translate_path(self, path: str) -> str:
        parts = urllib.parse.unquote(path.split("?", 1)[0]).strip("/").split("/")
        root = self.roots.get(parts[0])
        rest = [p for p in parts[1:] if p not in ("", ".", "..")]
        if root is None:
            return ""  # no such file: 404
        target = root.joinpath(*rest)
        self.gzipped = not target.exists() and target.with_name(target.name + ".gz").is_file()
        return str(target.with_name(target.name + ".gz") if self.gzipped else target)

    def guess_type(self, path: str) -> str:
        return "application/octet-stream" if self.gzipped else super().guess_type(path)

    def end_headers(self) -> None:
        self.send_header("Access-Control-Allow-Origin", "*")
        if self.gzipped:
            self.send_header("Content-Encoding", "gzip")
        super().end_headers()

    def log_message(self, format: str, *args: Any) -> None:  # quiet: neuroglancer asks a lot
        pass


def server(plan: RunPlan, port: int = 0) -> tuple[ThreadingHTTPServer, str]:
    """An HTTP server (not started) for the run's local volumes, and its base URL."""
    paths = _paths(plan)
    roots = {n: p for n, p in ((n, local_path(v)) for n, v in paths.items()) if p is not None}
    arrays = {
        n: HDF5AsZarr(v)
        for n, v in paths.items()
        if HDF5Volume.handles(v) and Path(split(v)[0]).is_file()
    }
    handler = partial(_Handler, roots=roots, arrays=arrays)
    httpd = ThreadingHTTPServer(("127.0.0.1", port), handler)
    return httpd, f"http://127.0.0.1:{httpd.server_address[1]}"

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

from chunkflow.plan import RunPlan
from chunkflow.volumes.precomputed import PrecomputedVolume, cloudpath, local_dir

NEUROGLANCER = "https://neuroglancer-demo.appspot.com/"
LAYERS = ("input", "output")


def local_path(path: str) -> Path | None:
    """The folder of a local volume (plain path or file:// URL); None for a remote one."""
    folder = local_dir(path)
    if folder is not None:
        return folder
    return None if "://" in cloudpath(path) else Path(path).resolve()


def _zarr_meta(folder: Path) -> tuple[str, int, bool] | None:
    """Neuroglancer's scheme for a zarr array or OME-Zarr group, its rank, and whether it has
    OME metadata; None for what is not zarr."""
    if (folder / "zarr.json").is_file():
        meta = json.loads((folder / "zarr.json").read_text())
        attrs = meta.get("attributes", {})
        return "zarr3", len(meta.get("shape", ())), "ome" in attrs or "multiscales" in attrs
    attrs_file = folder / ".zattrs"
    attrs = json.loads(attrs_file.read_text()) if attrs_file.is_file() else {}
    if not (folder / ".zarray").is_file() and "multiscales" not in attrs:
        return None
    meta = json.loads((folder / ".zarray").read_text()) if (folder / ".zarray").is_file() else {}
    return "zarr", len(meta.get("shape", ())), "multiscales" in attrs


def layer_source(path: str, plan: RunPlan, base_url: str | None = None, name: str = "") -> Any:
    """The neuroglancer source of a volume, served under ``base_url/name`` when given; None
    for a format neuroglancer cannot read (HDF5)."""
    folder = local_path(path)
    where = f"{base_url}/{name}" if base_url and folder else None
    if PrecomputedVolume.handles(path):
        return f"precomputed://{where or cloudpath(path)}"
    if folder is None:
        return path
    meta = _zarr_meta(folder)
    if meta is None and name == "output" and path.rstrip("/").endswith(".zarr"):
        # not created yet: a zarr output has a channel axis, an OME-Zarr one its own geometry
        scheme = "zarr3" if plan.settings.output.zarr_format == 3 else "zarr"
        meta = (scheme, 4, path.rstrip("/").endswith(".ome.zarr"))
    if meta is None:
        return None
    scheme, rank, ome = meta
    url = f"{scheme}://{where or folder.as_uri()}"
    if ome:  # OME-Zarr carries its own scale and translation
        return url
    # a plain zarr: place its voxels with the volume's resolution and voxel offset
    info = plan.input_info if name == "input" else plan.output_info(1)
    dims: dict[str, list] = {"c^": [1, ""]} if rank == 4 else {}
    for axis, res in zip("zyx", info.resolution, strict=True):
        dims[axis] = [res * 1e-9, "m"]
    offsets = ([0] if rank == 4 else []) + list(info.voxel_offset)
    matrix = [[int(i == j) for j in range(rank)] + [o] for i, o in enumerate(offsets)]
    return {"url": url, "transform": {"outputDimensions": dims, "matrix": matrix}}


def state(plan: RunPlan, base_url: str | None = None) -> dict[str, Any]:
    """The neuroglancer state: dimensions x, y, z in nm, position the ROI's centre (x, y, z)."""
    settings = plan.settings
    resolution = plan.input_info.resolution
    centre = [a + n / 2 for a, n in zip(plan.roi.start, plan.roi.shape, strict=True)]
    paths = {"input": settings.input.path, "output": settings.output.path}
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


class _Handler(SimpleHTTPRequestHandler):
    """Serves ``/input/…`` and ``/output/…`` from the volumes' folders, with CORS for
    neuroglancer; a gzip'd precomputed chunk (``name.gz``) is sent as ``name``."""

    gzipped = False

    def __init__(self, *args: Any, roots: dict[str, Path], **kwargs: Any) -> None:
        self.roots = roots
        super().__init__(*args, **kwargs)

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
    paths = {"input": plan.settings.input.path, "output": plan.settings.output.path}
    roots = {n: p for n, p in ((n, local_path(v)) for n, v in paths.items()) if p is not None}
    httpd = ThreadingHTTPServer(("127.0.0.1", port), partial(_Handler, roots=roots))
    return httpd, f"http://127.0.0.1:{httpd.server_address[1]}"

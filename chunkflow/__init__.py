"""chunkflow: block-wise 3D convnet inference over volumes too large for one machine.

The Python API, for a notebook or another tool (the `chunkflow` command is built on it)::

    import chunkflow

    # one call: an array in, an array out (or a store), the workflow's engine in this process
    prediction = chunkflow.predict(volume, "net.pt2", input_patch_size=[20, 256, 256])

    settings = chunkflow.load_config("myrun/config.yaml")  # or parse_config({...})
    plan = chunkflow.make_plan(settings)  # the ROI, the block grid, the fingerprint
    chunkflow.run_locally(plan)  # create the output, compute every block in this process
    # or: chunkflow.create_output(plan); chunkflow.run_blocks(plan, ["z0_y0_x0", ...])
    output = chunkflow.open_volume(settings.output.path)
    output.read(chunkflow.Box((0, 0, 0), (8, 64, 64)))  # (channels, z, y, x)

Relative paths inside a config are taken from the current directory (the command takes them
from its run directory, ``-d``). The names are imported when first used, so that
``import chunkflow`` stays cheap.
"""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

# name -> (module, attribute): what the API offers, and where it lives
_API = {
    "load_config": ("chunkflow.config", "load"),
    "parse_config": ("chunkflow.config", "parse"),
    "Settings": ("chunkflow.settings", "Settings"),
    "make_plan": ("chunkflow.plan.run_plan", "make_plan"),
    "RunPlan": ("chunkflow.plan.run_plan", "RunPlan"),
    "create_output": ("chunkflow.state.output_store", "create_output"),
    "run_locally": ("chunkflow.job.local_run", "run_locally"),
    "predict": ("chunkflow.app.predict", "predict"),
    "run_blocks": ("chunkflow.job.block_job", "run_blocks"),
    "DoneMarker": ("chunkflow.state.markers", "DoneMarker"),
    "RunState": ("chunkflow.state.run_state", "RunState"),
    "open_volume": ("chunkflow.volumes", "open_volume"),
    "Volume": ("chunkflow.volumes", "Volume"),
    "Box": ("chunkflow.geometry.boxes", "Box"),
    "ChunkflowError": ("chunkflow.errors", "ChunkflowError"),
}

__all__ = ["__version__", *_API]


def __getattr__(name: str) -> Any:
    if name not in _API:
        raise AttributeError(f"module 'chunkflow' has no attribute '{name}'")
    module, attribute = _API[name]
    value = getattr(importlib.import_module(module), attribute)
    globals()[name] = value  # once imported, a plain attribute
    return value


def __dir__() -> list[str]:
    return sorted([*globals(), *_API])

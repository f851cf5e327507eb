"""``chunkflow.predict``: one call from a notebook or another tool, the workflow's engine in this
process, and a run directory that the workflow can take over (``chunkflow run -d``)."""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import yaml
import zarr

from chunkflow.geometry.boxes import Box, Vec, ceil_div, minimum
from chunkflow.volumes import Volume

DEFAULT_CHUNK: Vec = (64, 256, 256)  # the output's storage chunk where none is given


def predict(
    data: np.ndarray | zarr.Array | str,
    model: str | Path,
    *,
    input_patch_size: Sequence[int] | None = None,
    output_patch_size: Sequence[int] | None = None,
    weights: str | Path | None = None,
    model_options: dict[str, Any] | None = None,
    output: str | os.PathLike[str] | dict[str, Any] | None = None,
    block_size: Sequence[int] | None = None,
    run_dir: str | Path | None = None,
    progress: bool = True,
    **config: Any,
) -> np.ndarray | Volume:
    """Run ``model`` over ``data`` as the workflow does: the same plan, blocks, pieces and
    blending, so the result equals the workflow's for the same settings.

    Args:
        data: a (z, y, x) or (channels, z, y, x) numpy or zarr array (a zarr array in a local
            store is read where it is; another is copied), or the path or URL of a volume in
            any input format.
        model: the network: a ``torch.export`` archive, TorchScript, ONNX, a ``.py`` whose
            ``build_model()`` makes it (its state dict in ``weights``), or a bioimage.io model
            package (its folder, ``rdf.yaml`` or ``.zip``).
        input_patch_size, output_patch_size: the network's patch, [z, y, x] (the output's
            default: the input's); a package's default: from its sizes and halo.
        model_options: the config's other ``model`` keys (``output_channels``,
            ``affinity_axes``, a package's ``weights_format`` and ``statistics``).
        output: where to write: a path (any output format), or the config's ``output`` section
            (``path``, ``dtype``, ``chunk_size``, …); without a path (None, or a section
            without one) the prediction is returned as a numpy array. An output in a bucket
            needs ``run_dir``.
        block_size: what one job writes; default the whole volume (streamed in pieces).
        run_dir: the run directory: its ``config.yaml`` (absolute paths), the run's state, a
            numpy input's copy (``input.zarr``). Default: ``<output path>.chunkflow`` beside a
            named output, so that ``chunkflow run -d <run_dir> --profile …`` reruns or extends
            the same work on a cluster, and calling again resumes; else a temporary directory,
            removed at the end.
        progress: a progress bar over the blocks (tqdm, on stderr).
        **config: the config's other sections, e.g. ``inference={"overlap": [4, 32, 32]}``,
            ``roi=…``, ``piece_size=…``; a section given as a dict is merged into what the
            arguments above make of it.

    Returns:
        The prediction as a numpy array ((channels,) z, y, x) when the output has no path,
        else the output volume (``chunkflow.Volume``).
    """
    out = dict(output) if isinstance(output, dict) else {"path": output}
    if out.get("path") is None:
        out.pop("path", None)
    else:
        out["path"] = os.fspath(out["path"])
    named = "path" in out
    if run_dir is None and named and "://" in out["path"]:
        raise ValueError(
            f"output {out['path']!r} is not a local path: give run_dir=, a local folder for "
            "the run's config and state"
        )
    temporary = run_dir is None and not named
    if run_dir is None:
        run_dir = tempfile.mkdtemp(prefix="chunkflow-") if temporary else f"{out['path']}.chunkflow"
    root = Path(run_dir).absolute()
    root.mkdir(parents=True, exist_ok=True)
    try:
        patches = [None if p is None else _ints(p) for p in (input_patch_size, output_patch_size)]
        settings = _config(data, model, weights, *patches, out, root)
        for key, value in {"model": model_options or {}, **config}.items():
            old = settings.get(key)
            settings[key] = (
                {**old, **value} if isinstance(old, dict) and isinstance(value, dict) else value
            )
        _sizes(settings, None if block_size is None else _ints(block_size))
        (root / "config.yaml").write_text(yaml.safe_dump(settings, sort_keys=False))
        volume = _run(settings, progress)
        return volume if named else volume.read(volume.bounds)
    finally:
        if temporary:
            shutil.rmtree(root, ignore_errors=True)


def _ints(values: Sequence[int]) -> list[int]:
    """[z, y, x] as plain ints (numpy's do not go into YAML)."""
    return [int(v) for v in values]


def _config(
    data: np.ndarray | zarr.Array | str,
    model: str | Path,
    weights: str | Path | None,
    input_patch_size: list[int] | None,
    output_patch_size: list[int] | None,
    out: dict[str, Any],
    root: Path,
) -> dict[str, Any]:
    """The run's config, every path absolute; a numpy ``data`` copied to ``root/input.zarr``."""
    out.setdefault("path", str(root / "output.zarr"))
    out["path"] = _absolute(out["path"])
    if isinstance(data, zarr.Array):
        root_dir = getattr(data.store, "root", None)
        data = str(Path(root_dir) / data.path) if root_dir else _stored(data, root / "input.zarr")
    elif isinstance(data, np.ndarray):
        data = _stored(data, root / "input.zarr")
    net: dict[str, Any] = {"path": _absolute(model)}
    for key, size in (
        ("input_patch_size", input_patch_size),
        ("output_patch_size", output_patch_size),
    ):
        if size is not None:
            net[key] = size
    if weights is not None:
        net["weights"] = _absolute(weights)
    return {
        "input": {"path": _absolute(data)},
        "output": out,
        "model": net,
        "state_dir": str(root / ".chunkflow"),
    }


def _absolute(path: str | Path) -> str:
    """A local path made absolute; a URL (``s3://``, ``precomputed://``, …) as it is."""
    text = str(path)
    return text if "://" in text else str(Path(text).absolute())


def _stored(data: np.ndarray | zarr.Array, path: Path) -> str:
    """``data`` written to a zarr array at ``path`` (replacing one there): the run's input; a
    zarr array is copied a slab of its chunks' z-slices at a time."""
    from chunkflow.volumes import VolumeInfo
    from chunkflow.volumes.zarr_volume import ZarrVolume, create_array

    if data.ndim not in (3, 4):
        raise ValueError(f"data has shape {data.shape}: give (z, y, x) or (channels, z, y, x)")
    shape = tuple(int(n) for n in data.shape[-3:])
    channels = int(data.shape[0]) if data.ndim == 4 else None
    info = VolumeInfo(shape, str(data.dtype), minimum(DEFAULT_CHUNK, shape), channels=channels)
    shutil.rmtree(path, ignore_errors=True)
    create_array(str(path), info)
    volume = ZarrVolume(str(path), mode="r+")
    step = int(data.chunks[-3]) if isinstance(data, zarr.Array) else shape[0]
    for z in range(0, shape[0], step):
        slab = Box((z, 0, 0), (min(z + step, shape[0]), shape[1], shape[2]))
        volume.write(slab, np.asarray(data[..., slab.start[0] : slab.stop[0], :, :]))
    return str(path)


def _sizes(settings: dict[str, Any], block_size: list[int] | None) -> None:
    """Where not given: the output's chunks the input's shape (and the block, if given) capped
    at ``DEFAULT_CHUNK``, and one block over the whole input (its shape rounded up to whole
    shards, or chunks)."""
    from chunkflow.volumes import open_volume

    source, output = settings["input"], settings["output"]
    options = source.get("storage_options")
    shape = open_volume(source["path"], mip=source.get("mip", 0), options=options).info.shape
    block_size = block_size or settings.get("block_size")
    cap = minimum(DEFAULT_CHUNK, shape if block_size is None else minimum(shape, tuple(block_size)))
    chunk = output.setdefault("chunk_size", list(cap))
    unit = output.get("shard_size") or chunk
    whole = [ceil_div(n, u) * u for n, u in zip(shape, unit, strict=True)]
    settings["block_size"] = list(block_size or whole)


def _run(settings: dict[str, Any], progress: bool) -> Volume:
    """Plan, check the model, create the output, compute the blocks without a valid marker (one
    loaded model), finish the output; the output volume."""
    from tqdm import tqdm

    from chunkflow import config as config_mod
    from chunkflow.job.block_job import BlockRunner
    from chunkflow.plan.run_plan import make_plan
    from chunkflow.state.markers import read_markers
    from chunkflow.state.model_facts import check_before_jobs
    from chunkflow.state.output_store import create_output, finish_output
    from chunkflow.state.run_state import RunState

    plan = make_plan(config_mod.parse(settings))
    check_before_jobs(plan)
    volume, _ = create_output(plan)
    state = RunState.of(plan)
    done = {m.block for m in read_markers(state, plan.block_ids, volume.info.store_id).done}
    todo = [b for b in plan.blocks if b.id not in done]
    if todo:
        runner = BlockRunner(plan, state)
        bar = tqdm(total=len(plan.blocks), initial=len(done), unit="block", disable=not progress)
        with bar:
            for block in todo:
                runner.run([block])
                bar.update()
    return finish_output(plan)

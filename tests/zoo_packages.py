"""Build small bioimage.io model packages (format 0.5) offline for tests.

``make_package`` writes a complete package folder (``rdf.yaml``, weights, test
tensors as ``.npy``, the architecture source for ``pytorch_state_dict``) and
optionally packs it into a ``.zip`` with ``bioimageio.spec.save_bioimageio_package``.
The network is ``tests/zoo_arch.py::TinyNet`` (receptive field radius 1).

``core_predict`` runs bioimageio.core -- the independent reference -- on a whole
volume held in memory, either as one 3D sample or slice by slice for a 2D
package, optionally with given (whole-volume) normalisation statistics.

Nothing here touches the network: bioimageio.spec and bioimageio.core only
read local files.
"""

from __future__ import annotations

import math
import shutil
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from zoo_arch import TinyNet

WEIGHTS_FORMATS = ("torchscript", "pytorch_state_dict", "onnx")
"""Weights formats ``make_package`` can write."""

INPUT_ID = "raw"
OUTPUT_ID = "prediction"
ONNX_OPSET = 18
_ARCH_FILE = Path(__file__).with_name("zoo_arch.py")


def _space_axes(ndim: int) -> list[str]:
    if ndim == 2:
        return ["y", "x"]
    if ndim == 3:
        return ["z", "y", "x"]
    raise ValueError(f"ndim must be 2 or 3, got {ndim}")


def package_input_shape(ndim: int, in_channels: int = 1) -> tuple[int, ...]:
    """Shape (b, c, [z,] y, x) of the test input ``make_package`` writes."""
    return (1, in_channels, 16, 24, 24) if ndim == 3 else (1, in_channels, 24, 24)


def _test_input(shape: tuple[int, ...], seed: int) -> np.ndarray:
    """Deterministic uint8-range float32 image: smooth gradient plus noise."""
    rng = np.random.default_rng(seed)
    grids = np.meshgrid(*[np.linspace(0.0, 1.0, s) for s in shape[2:]], indexing="ij")
    ramp = sum(grids) / len(grids)
    img = 40.0 + 150.0 * ramp + rng.normal(0.0, 20.0, size=shape)
    return np.clip(np.round(img), 0, 255).astype(np.float32)


def _tiny_net(in_channels: int, out_channels: int, ndim: int, seed: int) -> TinyNet:
    torch.manual_seed(seed)
    net = TinyNet(in_channels=in_channels, out_channels=out_channels, ndim=ndim)
    with torch.no_grad():  # biases large enough that ReLU / sigmoid / binarize all matter
        for p in net.parameters():
            p.mul_(2.0)
    return net.eval()


def _write_weights(
    folder: Path, net: TinyNet, weights: str, example: np.ndarray, ndim: int
) -> dict[str, Any]:
    """Write one weights file into ``folder``; return the rdf ``weights`` entry."""
    pytorch_version = torch.__version__.split("+")[0]
    if weights == "torchscript":
        torch.jit.script(net).save(str(folder / "weights.pt"))
        return {"torchscript": {"source": "weights.pt", "pytorch_version": pytorch_version}}
    if weights == "pytorch_state_dict":
        torch.save(net.state_dict(), folder / "weights.pth")
        shutil.copyfile(_ARCH_FILE, folder / "zoo_arch.py")
        return {
            "pytorch_state_dict": {
                "source": "weights.pth",
                "pytorch_version": pytorch_version,
                "architecture": {
                    "source": "zoo_arch.py",
                    "callable": "TinyNet",
                    "kwargs": {
                        "in_channels": net.conv1.in_channels,
                        "out_channels": net.conv2.out_channels,
                        "ndim": ndim,
                    },
                },
            }
        }
    if weights == "onnx":
        x = torch.from_numpy(example)
        dims = ["batch"] + [f"s{i}" for i in range(ndim)]
        dynamic = {0: dims[0], **{2 + i: dims[1 + i] for i in range(ndim)}}
        torch.onnx.export(
            net,
            (x,),
            str(folder / "weights.onnx"),
            input_names=["input"],
            output_names=["output"],
            dynamic_axes={"input": dynamic, "output": dynamic},
            opset_version=ONNX_OPSET,
            dynamo=False,
        )
        return {"onnx": {"source": "weights.onnx", "opset_version": ONNX_OPSET}}
    raise ValueError(f"weights must be one of {WEIGHTS_FORMATS}, got {weights!r}")


def _step(step: Mapping[str, Any]) -> dict[str, Any]:
    """Copy a processing step; drop an empty ``kwargs`` (``sigmoid`` forbids the key)."""
    out = dict(step)
    if not out.get("kwargs", True):
        del out["kwargs"]
    return out


def _tensor(
    tensor_id: str,
    axes: list[dict[str, Any]],
    test_file: str,
    key: str,
    steps: Sequence[Mapping[str, Any]],
) -> dict[str, Any]:
    """One tensor's description: float32, with its test tensor and processing ``steps``."""
    return {
        "id": tensor_id,
        "axes": axes,
        "test_tensor": {"source": test_file},
        "data": {"type": "float32"},
        key: [_step(p) for p in steps],
    }


def _rdf(
    *,
    ndim: int,
    weights_entry: dict[str, Any],
    preprocessing: Sequence[Mapping[str, Any]],
    postprocessing: Sequence[Mapping[str, Any]],
    halo: int,
    in_channels: int,
    out_channels: int,
    min_size: int,
    step: int,
) -> dict[str, Any]:
    space = _space_axes(ndim)
    in_axes: list[dict[str, Any]] = [
        {"type": "batch"},
        {"type": "channel", "channel_names": [f"in{i}" for i in range(in_channels)]},
    ] + [{"type": "space", "id": a, "size": {"min": min_size, "step": step}} for a in space]
    out_axes: list[dict[str, Any]] = [
        {"type": "batch"},
        {"type": "channel", "channel_names": [f"out{i}" for i in range(out_channels)]},
    ] + [
        {
            "type": "space",
            "id": a,
            "size": {"tensor_id": INPUT_ID, "axis_id": a},
            "halo": halo,
        }
        for a in space
    ]
    return {
        "format_version": "0.5.12",
        "type": "model",
        "name": f"chunkflow tiny {ndim}d test model",
        "description": "Tiny conv net built by tests/zoo_packages.py for chunkflow tests.",
        "authors": [{"name": "chunkflow tests"}],
        "cite": [{"text": "chunkflow tests", "url": "https://example.com/chunkflow"}],
        "license": "MIT",
        "documentation": {"source": "README.md"},
        "tags": ["chunkflow-test"],
        "inputs": [_tensor(INPUT_ID, in_axes, "test_input.npy", "preprocessing", preprocessing)],
        "outputs": [
            _tensor(OUTPUT_ID, out_axes, "test_output.npy", "postprocessing", postprocessing)
        ],
        "weights": weights_entry,
    }


def _build(content: dict[str, Any], root: Path) -> Any:
    from bioimageio.spec import ValidationContext, build_description
    from bioimageio.spec.model.v0_5 import ModelDescr

    with ValidationContext(root=root, perform_io_checks=False, raise_errors=True):
        descr = build_description(content, format_version="latest")
    if not isinstance(descr, ModelDescr):
        raise ValueError(f"invalid test package description:\n{descr.validation_summary}")
    return descr


def make_package(
    folder: Path,
    *,
    ndim: int = 3,
    weights: str = "torchscript",
    preprocessing: Sequence[Mapping[str, Any]] = (),
    postprocessing: Sequence[Mapping[str, Any]] = (),
    halo: int = 2,
    in_channels: int = 1,
    out_channels: int = 2,
    zipped: bool = False,
    seed: int = 0,
    min_size: int = 8,
    step: int = 4,
) -> Path:
    """Write a bioimage.io 0.5 model package of ``TinyNet`` into ``folder``.

    Axes: input ``batch, channel, [z,] y, x`` with space sizes
    ``ParameterizedSize(min=min_size, step=step)``; output ``batch, channel,
    [z,] y, x`` with ``out_channels`` channels, space sizes ``SizeReference`` to
    the input axis (same size) and ``halo`` on every space axis.  Tensor ids:
    ``INPUT_ID`` ("raw") and ``OUTPUT_ID`` ("prediction").

    ``preprocessing`` / ``postprocessing``: steps in bioimage.io's spelling, e.g.
    ``{"id": "scale_range", "kwargs": {"min_percentile": 1, "max_percentile": 99}}``.
    ``weights``: one of ``WEIGHTS_FORMATS``.  The test input is a deterministic
    uint8-range float32 image of ``package_input_shape(ndim, in_channels)``; the test
    output is bioimageio.core's prediction of it, so the package is consistent.

    Returns ``folder``, or with ``zipped=True`` the zip written next to it
    (``<folder>.zip``, packed by ``bioimageio.spec.save_bioimageio_package``;
    the folder stays).  Takes well under a second per package (ONNX ~1 s).
    """
    from bioimageio.spec import save_bioimageio_package, save_bioimageio_yaml_only

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    shape = package_input_shape(ndim, in_channels)
    x = _test_input(shape, seed)
    np.save(folder / "test_input.npy", x)
    out_shape = (1, out_channels, *shape[2:])
    np.save(folder / "test_output.npy", np.zeros(out_shape, np.float32))  # placeholder
    (folder / "README.md").write_text("# chunkflow tiny test model\n\nBuilt for tests.\n")
    net = _tiny_net(in_channels, out_channels, ndim, seed)
    content = _rdf(
        ndim=ndim,
        weights_entry=_write_weights(folder, net, weights, x, ndim),
        preprocessing=preprocessing,
        postprocessing=postprocessing,
        halo=halo,
        in_channels=in_channels,
        out_channels=out_channels,
        min_size=min_size,
        step=step,
    )
    y = _core_predict_sample(_build(content, folder), x, weights=weights, stat=None)
    np.save(folder / "test_output.npy", y.astype(np.float32))
    descr = _build(content, folder)  # rebuilt: file content changed
    save_bioimageio_yaml_only(descr, folder / "rdf.yaml")
    if not zipped:
        return folder
    zip_path = folder.with_name(folder.name + ".zip")
    return Path(save_bioimageio_package(descr, output_path=zip_path))


def _fixed_stats(descr: Any, statistics: Mapping[str, Any]) -> dict[Any, float]:
    """Map ``statistics`` onto the dataset measures ``descr``'s processing needs."""
    from bioimageio.core.proc_setup import get_requried_measures
    from bioimageio.core.stat_measures import DatasetMean, DatasetQuantile, DatasetStd

    required = get_requried_measures(descr)
    quantiles = {float(k): float(v) for k, v in statistics.get("quantiles", {}).items()}
    stat: dict[Any, float] = {}
    for m in set(required.pre) | set(required.post):
        if m.scope != "dataset":
            raise NotImplementedError(
                f"given statistics only replace dataset-scope measures, got {m} "
                "(processing axes without 'batch'); core recomputes those per sample"
            )
        if isinstance(m, DatasetMean):
            stat[m] = float(statistics["mean"])
        elif isinstance(m, DatasetStd):
            stat[m] = float(statistics["std"])
        elif isinstance(m, DatasetQuantile):
            pct = [p for p in quantiles if math.isclose(p, m.q * 100, abs_tol=1e-9)]
            if not pct:
                raise KeyError(f"statistics['quantiles'] lacks percentile {m.q * 100}")
            stat[m] = quantiles[pct[0]]
        else:
            raise NotImplementedError(f"no statistic for measure {m}")
    return stat


def _core_predict_sample(
    descr: Any,
    x: np.ndarray,
    *,
    weights: str,
    stat: Mapping[str, Any] | None,
    pad_input: bool = False,
) -> np.ndarray:
    """Core's prediction of one sample ``x`` (b, c, [z,] y, x) with a fresh pipeline.

    A fresh pipeline per sample matters: with the default ``axes: null`` core
    treats mean/std/quantiles as *dataset* measures and, without fixed
    statistics, keeps a running estimate over all samples a pipeline has seen.
    """
    from bioimageio.core import create_prediction_pipeline
    from bioimageio.core.digest_spec import create_sample_for_model

    fixed = _fixed_stats(descr, stat) if stat is not None else None
    pp = create_prediction_pipeline(descr, weights_format=weights, fixed_dataset_statistics=fixed)
    try:
        sample = create_sample_for_model(descr, inputs={INPUT_ID: x}, sample_id="s")
        out = pp.predict_sample_without_blocking(
            sample, skip_input_padding=not pad_input, skip_output_cropping=not pad_input
        )
    finally:
        pp.unload()
    t = out.members[OUTPUT_ID]
    order = ["batch", "channel", *[a for a in ("z", "y", "x") if a in t.dims]]
    return np.asarray(t.data.transpose(*order).values)


def core_predict(
    package: Path,
    volume: np.ndarray,
    *,
    weights: str,
    statistics: Mapping[str, Any] | None = None,
    pad_input: bool = False,
) -> np.ndarray:
    """bioimageio.core's prediction of a whole volume held in memory.

    ``volume``: (z, y, x) single channel or (c, z, y, x), any real dtype (cast to
    float32); space sizes must be valid for the package (``min + n*step``).
    Returns (c_out, z, y, x) float32 (binarize output becomes 0.0/1.0).

    3D package: one sample, the whole volume with b=1.  2D package: every z slice
    is its own sample (fresh pipeline each), outputs stacked along z.

    ``statistics`` (optional): whole-volume statistics that core must use instead
    of computing its own, e.g. ``{"mean": m, "std": s, "quantiles": {1: q1, 99:
    q99}}`` -- ``mean``/``std`` (population std, ddof=0) for
    ``zero_mean_unit_variance``, ``quantiles`` keyed by percentile (0-100) for
    ``scale_range`` / ``clip`` with ``min_percentile``/``max_percentile``.
    Implemented as core's ``fixed_dataset_statistics``; works for processing
    steps with default ``axes`` (null) or axes including ``batch``.

    ``pad_input=False`` (default): the network sees exactly the volume/slice
    (core's ``skip_input_padding`` / ``skip_output_cropping``, as core's
    ``test_model`` runs); with ``TinyNet``'s reflect padding this equals
    reflect-padding the volume's edges.  ``pad_input=True``: core's default --
    pad the raw input by the output halo (mode: the input's ``pad``, default
    numpy "symmetric") BEFORE preprocessing (so per-sample statistics include the
    padding), predict, crop the halo.
    """
    from bioimageio.spec import load_model_description

    descr = load_model_description(package, perform_io_checks=False)
    vol = np.asarray(volume, dtype=np.float32)
    if vol.ndim == 3:
        vol = vol[None]
    if vol.ndim != 4:
        raise ValueError(f"volume must be (z, y, x) or (c, z, y, x), got {volume.shape}")
    space = [a.id for a in descr.inputs[0].axes if a.type == "space"]
    if len(space) == 3:
        y = _core_predict_sample(
            descr, vol[None], weights=weights, stat=statistics, pad_input=pad_input
        )[0]
    elif len(space) == 2:
        slices = [
            _core_predict_sample(
                descr, vol[None, :, z], weights=weights, stat=statistics, pad_input=pad_input
            )[0]
            for z in range(vol.shape[1])
        ]
        y = np.stack(slices, axis=1)
    else:
        raise ValueError(f"unexpected input space axes {space}")
    return y.astype(np.float32)

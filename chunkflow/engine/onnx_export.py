"""Exporting PyTorch models to ONNX, checked against torch with ONNX Runtime
(``chunkflow export-onnx``)."""

from __future__ import annotations

import os
import warnings
from pathlib import Path

import torch

from chunkflow.engine.models import check_model_files, load_model
from chunkflow.engine.onnx_engine import OnnxModel
from chunkflow.errors import ConfigError, ModelError, first_line
from chunkflow.geometry.boxes import Vec
from chunkflow.settings import ModelSettings


def export_onnx(
    model: str,
    out: str | Path,
    input_patch: Vec,
    channels: int = 1,
    weights: str | None = None,
    opset: int | None = None,
) -> float:
    """Export a TorchScript ``.pt``, a ``.pt2`` archive or a ``.py`` + ``weights`` model to ONNX
    with a dynamic batch axis; check it with ONNX Runtime on a random batch against torch.

    The file appears at ``out`` (atomically) only if the check passes. Returns the max |difference|.
    """
    out = Path(out)
    if model.endswith(".onnx"):
        raise ConfigError(f"'{model}' is ONNX already; export a .pt, .pt2 or .py model")
    if out.suffix != ".onnx":
        raise ConfigError(f"the exported file '{out}' must end in .onnx")
    settings = ModelSettings(
        path=model,
        weights=weights,
        input_patch_size=tuple(input_patch),
        output_patch_size=tuple(input_patch),
        output_channels=None,
    )
    if model.endswith(".pt2"):
        check_model_files(settings)
        try:
            network = torch.export.load(model)  # the program itself keeps its dynamic batch axis
        except Exception as err:
            raise ModelError(f"cannot load model '{model}': {first_line(err)}") from None
    else:
        network = load_model(settings, torch.device("cpu"))
    example = torch.rand(2, channels, *input_patch)  # batch 2: a batch of 1 would be specialised
    names = {"input_names": ["input"], "output_names": ["output"], "opset_version": opset}
    tmp = out.with_name(f".{out.name}.{os.getpid()}.tmp")
    try:
        try:
            if isinstance(network, torch.jit.ScriptModule):
                # torch.export, hence the default (dynamo) exporter, refuses ScriptModules
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore", DeprecationWarning)  # legacy exporter notice
                    warnings.simplefilter("ignore", UserWarning)
                    torch.onnx.export(
                        network,
                        (example,),
                        str(tmp),
                        dynamo=False,
                        dynamic_axes={"input": {0: "batch"}, "output": {0: "batch"}},
                        **names,
                    )
            else:
                is_program = isinstance(network, torch.export.ExportedProgram)
                torch.onnx.export(
                    network,
                    () if is_program else (example,),
                    str(tmp),
                    dynamo=True,
                    external_data=False,
                    verbose=False,
                    dynamic_shapes=None if is_program else ({0: torch.export.Dim("batch")},),
                    **names,
                )
        except ImportError as err:
            raise ModelError(
                f"exporting to ONNX needs {err.name}: pip install onnx onnxscript onnxruntime "
                "(or chunkflow[onnx])"
            ) from None
        except Exception as err:
            raise ModelError(
                f"cannot export '{model}' to ONNX: {first_line(err)}; "
                "check --input-patch-size and --channels"
            ) from None
        difference = _check_export(network, str(tmp), torch.rand(3, channels, *input_patch))
        os.replace(tmp, out)
    finally:
        tmp.unlink(missing_ok=True)
    return difference


def _check_export(
    network: torch.nn.Module | torch.export.ExportedProgram, path: str, batch: torch.Tensor
) -> float:
    """Max |difference| of ONNX Runtime and torch on ``batch``; a ModelError above 1e-4."""
    got = OnnxModel(path, torch.device("cpu"), torch.get_num_threads())(batch)
    if isinstance(network, torch.export.ExportedProgram):
        network = network.module()
    with torch.inference_mode():
        expected = network(batch)
    if got.shape != expected.shape:
        raise ModelError(
            f"the exported model gives shape {list(got.shape)}, torch {list(expected.shape)}"
        )
    difference = float((got - expected).abs().max())
    if difference > 1e-4:
        raise ModelError(f"the exported model differs from torch by up to {difference:.2e}")
    return difference

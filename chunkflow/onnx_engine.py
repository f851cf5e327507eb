"""ONNX Runtime as an inference engine, and exporting PyTorch models to ONNX.

ONNX Runtime is imported only here, and only when an ``.onnx`` model is used or written.
"""

from __future__ import annotations

import os
import warnings
from pathlib import Path
from types import ModuleType

import numpy as np
import torch

from chunkflow.config import ModelSettings
from chunkflow.errors import ConfigError, ModelError, first_line
from chunkflow.geometry import Vec

_CUDA = "CUDAExecutionProvider"
_NO_CUDA = (
    "onnxruntime offers no CUDAExecutionProvider; pip install onnxruntime-gpu, "
    "or set inference.device: cpu"
)


def _onnxruntime() -> ModuleType:
    try:
        import onnxruntime
    except ImportError:
        raise ModelError(
            "an .onnx model needs ONNX Runtime: pip install onnxruntime (or chunkflow[onnx]; "
            "onnxruntime-gpu for CUDA)"
        ) from None
    return onnxruntime


def _one_line(err: BaseException) -> str:
    return " ".join(str(err).split()) or type(err).__name__


def resolve_onnx_device(name: str) -> torch.device:
    """``inference.device`` for an ONNX model: CUDA needs onnxruntime's CUDA provider too."""
    from chunkflow.inference import resolve_device

    device = resolve_device(name)
    if device.type == "cuda" and _CUDA not in _onnxruntime().get_available_providers():
        if name == "cuda":
            raise ConfigError(f"inference.device is 'cuda' but {_NO_CUDA}")
        return torch.device("cpu")
    return device


class OnnxModel:
    """An ``onnxruntime.InferenceSession`` called like a torch module: a float32 tensor
    (batch, c, z, y, x) on ``device`` in, the session's first output as a tensor on ``device`` out.

    On the CPU tensors and arrays share memory; on CUDA the session reads and writes torch's
    device memory through IO binding (no copy through the host).
    """

    def __init__(self, path: str, device: torch.device, threads: int) -> None:
        ort = _onnxruntime()
        options = ort.SessionOptions()
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
        providers: list = ["CPUExecutionProvider"]
        if device.type == "cuda":
            if _CUDA not in ort.get_available_providers():
                raise ConfigError(f"the model is to run on CUDA but {_NO_CUDA}")
            device = torch.device(
                "cuda", torch.cuda.current_device() if device.index is None else device.index
            )
            # float32 means float32, as in the PyTorch engine: no TF32 (on by default in ORT)
            providers.insert(0, (_CUDA, {"device_id": device.index, "use_tf32": 0}))
        try:
            self.session = ort.InferenceSession(path, options, providers=providers)
        except Exception as err:
            raise ModelError(f"cannot load ONNX model '{path}': {_one_line(err)}") from None
        if device.type == "cuda" and _CUDA not in self.session.get_providers():
            raise ModelError(
                f"onnxruntime could not start its CUDA provider for '{path}' (see its log); "
                "check the CUDA and cuDNN libraries onnxruntime-gpu needs, or set inference.device: cpu"
            )
        inputs, output = self.session.get_inputs(), self.session.get_outputs()[0]
        if len(inputs) != 1:
            raise ModelError(
                f"ONNX model '{path}' takes {len(inputs)} inputs; chunkflow feeds one (batch, c, z, y, x)"
            )
        self._input, self._output = inputs[0].name, output.name
        self._output_dims = output.shape[1:]  # preallocated on CUDA: must be fixed
        if device.type == "cuda" and not all(isinstance(d, int) for d in self._output_dims):
            raise ModelError(
                f"ONNX model '{path}' has output shape {output.shape}; on CUDA only the batch axis "
                "may be dynamic: export it for a fixed patch size (chunkflow export-onnx)"
            )
        self.device = device

    def __call__(self, batch: torch.Tensor) -> torch.Tensor:
        batch = batch.contiguous()
        try:
            if self.device.type == "cuda":
                return self._run_cuda(batch)
            out = self.session.run([self._output], {self._input: batch.numpy()})[0]
        except Exception as err:
            raise ModelError(
                f"the ONNX model failed on a batch of shape {list(batch.shape)}: {_one_line(err)}; "
                "check model.input_patch_size and the model's expected input"
            ) from None
        return torch.from_numpy(out)

    def _run_cuda(self, batch: torch.Tensor) -> torch.Tensor:
        out = torch.empty((batch.shape[0], *self._output_dims), device=self.device)
        binding = self.session.io_binding()
        index = self.device.index
        binding.bind_input(
            self._input, "cuda", index, np.float32, list(batch.shape), batch.data_ptr()
        )
        binding.bind_output(
            self._output, "cuda", index, np.float32, list(out.shape), out.data_ptr()
        )
        torch.cuda.current_stream(self.device).synchronize()  # the batch is on the device
        self.session.run_with_iobinding(binding)  # returns once the output is written
        return out


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
        from chunkflow.models import check_model_files

        check_model_files(settings)
        try:
            network = torch.export.load(model)  # the program itself keeps its dynamic batch axis
        except Exception as err:
            raise ModelError(f"cannot load model '{model}': {first_line(err)}") from None
    else:
        from chunkflow.models import load_model

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

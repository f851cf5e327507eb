"""ONNX Runtime as an inference engine.

ONNX Runtime is imported only here, and only when an ``.onnx`` model is used.
"""

from __future__ import annotations

from types import ModuleType

import numpy as np
import torch

from chunkflow.errors import ConfigError, ModelError

_CUDA = "CUDAExecutionProvider"
NO_CUDA_PROVIDER = (
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


def has_cuda_provider() -> bool:
    """Whether the installed onnxruntime can run on CUDA (onnxruntime-gpu)."""
    return _CUDA in _onnxruntime().get_available_providers()


def _one_line(err: BaseException) -> str:
    return " ".join(str(err).split()) or type(err).__name__


class OnnxModel:
    """An ``onnxruntime.InferenceSession`` called like a torch module: a float32 tensor
    (batch, c, z, y, x) on ``device`` in, the session's first output as a tensor on ``device`` out.

    On the CPU tensors and arrays share memory; on CUDA the session reads and writes torch's
    device memory through IO binding (no copy through the host).
    """

    def __init__(
        self, path: str, device: torch.device, threads: int, data: bytes | None = None
    ) -> None:
        """The model at ``path``, or in ``data`` (its bytes, read from ``path``) when given."""
        ort = _onnxruntime()
        options = ort.SessionOptions()
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
        providers: list = ["CPUExecutionProvider"]
        if device.type == "cuda":
            if not has_cuda_provider():
                raise ConfigError(f"the model is to run on CUDA but {NO_CUDA_PROVIDER}")
            device = torch.device(
                "cuda", torch.cuda.current_device() if device.index is None else device.index
            )
            # float32 means float32, as in the PyTorch engine: no TF32 (on by default in ORT)
            providers.insert(0, (_CUDA, {"device_id": device.index, "use_tf32": 0}))
        try:
            model = path if data is None else data
            self.session = ort.InferenceSession(model, options, providers=providers)
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

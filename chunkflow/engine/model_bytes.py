"""Networks made from bytes already read (and hashed): a Python source run as a module, a
TorchScript archive. Shared by model files (``models``) and packages (``package_network``)."""

from __future__ import annotations

import hashlib
import io
import sys
import types
import warnings
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import torch


def module_from_source(code: bytes, path: str) -> types.ModuleType:
    """``code`` (the Python source read from ``path``) run as a module of its own, registered in
    ``sys.modules`` as an import would be (dataclasses and pickling look it up there)."""
    name = f"chunkflow_model_source_{hashlib.sha256(code).hexdigest()[:16]}"
    module = types.ModuleType(name)
    module.__file__ = path
    sys.modules[name] = module
    exec(compile(code, path, "exec"), module.__dict__)
    return module


def load_torchscript(data: bytes) -> torch.nn.Module:
    """A TorchScript archive's network, on the CPU (TorchScript is deprecated in PyTorch, but
    users have such files: its warning is not shown)."""
    import torch

    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", r"`torch\.jit\.load` is deprecated", DeprecationWarning)
        return torch.jit.load(io.BytesIO(data), map_location="cpu")

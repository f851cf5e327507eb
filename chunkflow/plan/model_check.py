"""The model checked once, before any job: loaded on the CPU and run on zero patches, a full
batch and a batch of one (the last batch of a block may be short), so that a wrong patch size or
channel count, a file that is not a network, or a batch the model does not take fails in
`chunkflow plan` and when the workflow plans, in one line. An existing output is then checked
against the model's channel count too. A bioimage.io package first runs its own test
(``chunkflow.plan.package_test``).

The batches are fake tensors (``torch._subclasses.fake_tensor``): every operation computes its
output's shape and checks its arguments as it would on real data, but nothing is computed or
allocated, so the check takes seconds and little memory whatever the network (it runs in
Snakemake's own process, on a login node). A network that needs real values (an operation whose
output shape depends on them, a tensor read back into Python) fails on fake tensors; so does an
ONNX model, which runs in ONNX Runtime: those are run on real zero patches, as is any model
that fails on fake ones, whose real error is then the one reported.

The run's state caches the result (``chunkflow.state.model_facts``), keyed by ``check_key``:
the model's digest and everything the probe depends on.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from chunkflow.errors import ModelError, first_line
from chunkflow.plan.run_plan import RunPlan
from chunkflow.volumes import find_output, refuse_mismatch

if TYPE_CHECKING:
    import numpy as np

    from chunkflow.engine.inference import Predictor

DYNAMIC_BATCH_HINT = (
    "export it with a dynamic batch: torch.export.export(net, (x,), "
    "dynamic_shapes=({0: torch.export.Dim('batch')},))"
)


@dataclass(frozen=True)
class ModelFacts:
    """What the probe learnt of the model."""

    output_channels: int


def check_key(plan: RunPlan) -> str:
    """The digest of what the probe's outcome depends on."""
    settings = plan.settings
    what = {
        "model": plan.model_sha256,
        "kind": settings.model.weights_format or Path(settings.model.path).suffix,
        "input_patch": list(plan.geometry.input_size),
        "output_patch": list(plan.geometry.output_size),
        "input_channels": plan.input_info.channels or 1,
        "output_channels": settings.model.output_channels,
        "affinity_axes": settings.model.affinity_axes,
        "batch_size": settings.inference.batch_size,
    }
    return hashlib.sha256(json.dumps(what, sort_keys=True).encode()).hexdigest()[:32]


def check_output_against(plan: RunPlan, facts: ModelFacts) -> None:
    """Refuse an existing output that disagrees with ``facts`` and the plan (its shape, dtype,
    chunks, channel count, ...): every mistake that would otherwise fail the first job."""
    volume = find_output(plan.settings.output)
    if volume is not None:
        refuse_mismatch(volume, plan.output_info(facts.output_channels), plan.settings.output)


def probe(plan: RunPlan) -> int:
    """The model's output channels, from forward passes of zero patches on the CPU: a batch of
    ``inference.batch_size`` and one of a single patch, on fake tensors where the model runs
    on them, else real. Raises ``ModelError`` in one line."""
    import torch

    from chunkflow.engine.inference import Predictor
    from chunkflow.engine.models import load_model

    settings = plan.settings
    batch_size = settings.inference.batch_size
    device = torch.device("cpu")
    if plan.package is not None:
        from chunkflow.plan.package_test import run_package_test

        files = plan.model_files
        run_package_test(files.members, settings.model, files.package)

    def loaded() -> Predictor:
        """A predictor with a model of its own (a failed fake run may leave fake tensors in
        the model it ran, e.g. a cache made on its first call)."""
        return Predictor(
            model=load_model(plan.model_files, device),
            geometry=plan.geometry,
            blend="constant",
            batch_size=batch_size,
            device=device,
            output_channels=settings.model.output_channels,
            affinity_axes=settings.model.affinity_axes,  # its length is checked against it
        )

    if not settings.model.runs_in_onnx:  # ONNX Runtime computes on real arrays
        channels = _fake_batches(loaded(), plan)
        if channels is not None:
            return channels
    predictor = loaded()
    try:
        out = _predict_zeros(predictor, plan, batch_size + 1)
    except ModelError as err:
        check_export_batch(settings.model.path, batch_size)  # a torch.export archive's batches
        if batch_size == 1:
            raise
        predictor.batch_size = 1
        _predict_zeros(predictor, plan, 1)  # a batch of one: its error, if it has one
        raise ModelError(
            f"model '{settings.model.path}' takes one patch at a time, not a batch of "
            f"{batch_size} ({first_line(err)}); set inference.batch_size: 1, or "
            f"{DYNAMIC_BATCH_HINT}"
        ) from None
    return int(out.shape[0])


def _fake_batches(predictor: Predictor, plan: RunPlan) -> int | None:
    """The model's output channels from a batch of ``inference.batch_size`` and one of a single
    patch, both fake tensors; None where it cannot run on them or fails (then a run on real
    patches decides, and gives the real error)."""
    import torch
    from torch._subclasses.fake_tensor import FakeTensorMode

    shape = (plan.input_info.channels or 1, *plan.geometry.input_size)
    try:
        with FakeTensorMode(allow_non_fake_inputs=True):  # the weights stay real
            batches = [torch.zeros((n, *shape)) for n in {predictor.batch_size, 1}]
            sizes = {predictor.check_batch(batch) for batch in batches}
    except Exception:
        return None
    return sizes.pop() if len(sizes) == 1 else None


def _predict_zeros(predictor: Predictor, plan: RunPlan, patches: int) -> np.ndarray:
    """The prediction of ``patches`` zero patches side by side along x (a lattice)."""
    import numpy as np

    from chunkflow.geometry.boxes import Box, bounding_box

    size = plan.geometry.output_size
    boxes = [Box.from_shape((0, 0, k * size[2]), size) for k in range(patches)]
    target = bounding_box(boxes)
    chunk_box = plan.geometry.input_box(target)
    zeros = np.zeros((plan.input_info.channels or 1, *chunk_box.shape), dtype=np.float32)
    return predictor.predict(zeros, chunk_box, boxes, target)


def check_export_batch(path: str, batch_size: int) -> None:
    """For a torch.export archive: refuse, in one line naming the fixes, a ``batch_size`` or a
    last batch of one patch outside the batch sizes it was exported for."""
    if not path.endswith(".pt2"):
        return
    allowed = export_batch_range(path)
    if allowed is None:
        return
    low, high = allowed
    if low <= 1 and (high is None or batch_size <= high):
        return
    sizes = f"exactly {low}" if low == high else f"{low} to {high}"
    if low > 1:
        problem, fix = "a block's last batch may hold a single patch", ""
    else:
        problem = f"inference.batch_size is {batch_size}"
        fix = f"set inference.batch_size: {high}, or "
    raise ModelError(
        f"model '{path}' was exported for batches of {sizes} patch(es), but {problem}; "
        f"{fix}{DYNAMIC_BATCH_HINT}"
    )


def export_batch_range(path: str) -> tuple[int, int | None] | None:
    """The batch sizes a torch.export archive takes (its first input's first dimension):
    (lowest, highest or None for no bound); None when the archive cannot be read (loading the
    model then reports that)."""
    import torch

    try:
        program = torch.export.load(path)
    except Exception:
        return None
    inputs = set(program.graph_signature.user_inputs)
    for node in program.graph.nodes:
        if node.op == "placeholder" and node.name in inputs:
            value = node.meta.get("val")
            if value is None or not hasattr(value, "shape") or len(value.shape) == 0:
                return None
            size = value.shape[0]
            if isinstance(size, int):
                return size, size
            bounds = program.range_constraints.get(size.node.expr)
            if bounds is None:
                return None
            try:
                high = int(bounds.upper)
            except Exception:  # sympy's infinity (int_oo) raises various errors
                high = None  # unbounded
            return int(bounds.lower), high
    return None

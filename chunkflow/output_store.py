"""The output store: created once with the geometry and channel count the run will write, and
finished once every block is written (a no-op except for formats that assemble parts: HDF5)."""

from __future__ import annotations

from chunkflow.errors import VolumeError
from chunkflow.geometry import Box
from chunkflow.grid import BlockGrid
from chunkflow.plan import RunPlan
from chunkflow.volumes import Volume, output_backend, refuse_mismatch


def model_output_channels(plan: RunPlan) -> int:
    """Channels of the model's output, from one forward pass of a zero patch on the CPU.

    The pass also checks that the model's output patch has the configured size.
    """
    import numpy as np
    import torch

    from chunkflow.inference import Predictor
    from chunkflow.models import load_model

    settings = plan.settings
    device = torch.device("cpu")
    predictor = Predictor(
        model=load_model(settings.model, device),
        geometry=plan.geometry,
        blend="constant",
        batch_size=1,
        device=device,
        output_channels=settings.model.output_channels,
        affinity_axes=settings.model.affinity_axes,  # its length is checked against the model
    )
    channels = plan.input_info.channels or 1
    probe = np.zeros((channels, *plan.geometry.input_size), dtype=np.float32)
    box = Box.from_shape((0, 0, 0), plan.geometry.output_size)
    return int(predictor.predict(probe, plan.geometry.input_box(box), [box], box).shape[0])


def create_output(plan: RunPlan) -> tuple[Volume, bool]:
    """Create the output volume, or reuse a matching existing one; refuse a mismatching one.

    An existing store is opened once and checked before the model is loaded, then its channel
    count against the model's. Returns the volume and whether it was created.
    """
    existing = plan.existing_output()
    info = plan.output_info(model_output_channels(plan))
    output = plan.settings.output
    if existing is None:
        return output_backend(output.path).create(output.path, info, output), True
    refuse_mismatch(existing, info, output)
    return existing, False


def needs_finish(plan: RunPlan) -> bool:
    """Whether the output's format has a finishing step after the blocks (HDF5: the VDS)."""
    return output_backend(plan.settings.output.path).assembles_parts


def finish_output(plan: RunPlan) -> Volume:
    """Make the output whole over every piece of every block of the plan (HDF5: a part file
    each); the output must match the plan."""
    volume = plan.existing_output()
    if volume is None:
        raise VolumeError(
            f"output '{plan.settings.output.path}' does not exist; the workflow's create_output "
            "rule (or `chunkflow create-output`) makes it"
        )
    pieces = [BlockGrid(block.box, plan.piece_size) for block in plan.blocks]
    volume.finish([piece.box for grid in pieces for piece in grid])  # each written on its own
    return volume

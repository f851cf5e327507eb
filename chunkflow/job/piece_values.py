"""Where a block job's piece values live between its reader and its writer.

``HostValues``: numpy arrays on the host, the network's input scaled there and its prediction
converted there (the CPU; a package's processing). ``DeviceValues``
(``chunkflow.engine.device_values``): tensors on the model's device, the input sent as stored and
the output converted before it comes back (a model file on CUDA). Both make the same bytes; the
block job calls them in the same places: ``network_input`` in its reader, ``predict``, ``zeros``,
``add``, ``carried`` and ``hand_over`` in the model's thread, ``output`` in its writer.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from chunkflow.engine.dtypes import to_output_dtype
from chunkflow.geometry.boxes import Box
from chunkflow.geometry.placement import Intervals
from chunkflow.plan.run_plan import RunPlan

if TYPE_CHECKING:
    from chunkflow.engine.device_values import DeviceValues
    from chunkflow.engine.inference import Predictor


@dataclass
class HostValues:
    """A piece's values as numpy arrays on the host."""

    plan: RunPlan
    predictor: Predictor

    def network_input(self, raw: np.ndarray) -> np.ndarray:
        return self.plan.network_input(raw)

    def predict(
        self,
        scaled: np.ndarray,
        chunk_box: Box,
        patches: list[Box],
        target: Box,
        lattice: Intervals,
    ) -> np.ndarray:
        return self.predictor.predict(scaled, chunk_box, patches, target, lattice)

    def zeros(self, shape: tuple[int, ...]) -> np.ndarray:
        return np.zeros(shape, dtype=np.float32)

    def add(self, total: np.ndarray, where: tuple[slice, ...], carried: np.ndarray) -> None:
        total[where] += carried

    def carried(self, total: np.ndarray, where: tuple[slice, ...]) -> np.ndarray:
        return total[where].copy()

    def hand_over(self, own: np.ndarray) -> np.ndarray:
        return own

    def output(self, own: np.ndarray, check: Callable[[np.ndarray], None]) -> np.ndarray:
        """``own`` (float32, consumed) checked, post-processed (a package's postprocessing) and
        converted to the output's dtype."""
        check(own)
        return to_output_dtype(self.plan.postprocess(own), self.plan.settings.output.dtype)


def piece_values(
    plan: RunPlan, predictor: Predictor, on_device: bool | None
) -> HostValues | DeviceValues:
    """``HostValues`` or ``DeviceValues`` for ``plan``; ``on_device`` None: on the device where
    it is CUDA and the model is a file (a package's processing runs on the host)."""
    if on_device is None:
        on_device = predictor.device.type == "cuda" and plan.package is None
    if not on_device:
        return HostValues(plan, predictor)
    if plan.package is not None:
        raise ValueError("a package's processing runs on the host; use on_device=False")
    from chunkflow.engine.device_values import DeviceValues

    settings = plan.settings
    return DeviceValues(predictor, settings.input.scale, settings.output.dtype)

"""The Python API (``import chunkflow``): a config loaded, a plan made, blocks run in this
process, the output opened and read, as a notebook user would."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import yaml
import zarr
from inference_cases import case_config
from inference_reference import whole_roi_reference

import chunkflow


def test_load_plan_run_and_read_back_through_the_api(tmp_path: Path) -> None:
    config = case_config(tmp_path, "valid_conv_anisotropic")
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(config))

    settings = chunkflow.load_config(path)
    plan = chunkflow.make_plan(settings)
    assert isinstance(plan, chunkflow.RunPlan) and len(plan.blocks) == 3 * 3 * 4
    first = [block.id for block in plan.blocks[:5]]
    chunkflow.create_output(plan)
    done = chunkflow.run_blocks(plan, first)  # some blocks by id, into the created output
    assert [m.block for m in done] == first
    markers = chunkflow.run_locally(plan)  # creates or reuses the output, then every block
    state = chunkflow.RunState.of(plan)
    on_disk = {m.block: chunkflow.DoneMarker.read(state.marker(m.block)) for m in markers}
    assert on_disk == {m.block: m for m in markers} and len(on_disk) == len(plan.blocks)

    want = whole_roi_reference(config, plan.roi.start, plan.roi.shape)
    output = chunkflow.open_volume(settings.output.path)
    box = chunkflow.Box((2, 5, 7), (9, 30, 41))  # across blocks, not aligned with them
    got = output.read(box)
    np.testing.assert_allclose(got, want[:, 2:9, 5:30, 7:41], atol=1e-6)
    # the same bytes as zarr reads them (the API's reader is no reference of its own)
    np.testing.assert_array_equal(got, zarr.open_array(settings.output.path)[:, 2:9, 5:30, 7:41])


def test_unknown_names_fail_and_the_api_names_are_listed() -> None:
    assert {"load_config", "make_plan", "run_locally", "open_volume", "Box"} <= set(dir(chunkflow))
    try:
        chunkflow.no_such_thing  # noqa: B018
    except AttributeError as err:
        assert "no_such_thing" in str(err)
    else:
        raise AssertionError("an unknown name was found")


def test_importing_chunkflow_imports_no_heavy_library() -> None:
    code = "import sys, chunkflow; print(sorted({'torch', 'zarr', 'numpy'} & set(sys.modules)))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"

"""Rule finish_output: make the output whole after its blocks (HDF5: the virtual dataset)."""

import argparse
import sys
from pathlib import Path

from chunkflow.config import load
from chunkflow.entry import run_main
from chunkflow.markers import write_json_atomic
from chunkflow.output_store import finish_output
from chunkflow.plan import make_plan


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--config", required=True, help="the run's config YAML (params.config)")
    p.add_argument("--record", required=True, help="a JSON record that it is done (output)")
    args = p.parse_args()

    volume = finish_output(make_plan(load(args.config)))
    print(f"finished output {volume.path}")
    write_json_atomic(Path(args.record), {"path": volume.path, "finished": True})


if __name__ == "__main__":
    sys.exit(run_main(main))

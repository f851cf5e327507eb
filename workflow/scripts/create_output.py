"""Rule create_output: create the output store, or check an existing one, and record it."""

import argparse
import sys
from dataclasses import asdict
from pathlib import Path

from chunkflow.config import load
from chunkflow.entry import run_main
from chunkflow.markers import write_json_atomic
from chunkflow.output_store import create_output
from chunkflow.plan import make_plan


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--config", required=True, help="the run's config YAML (params.config)")
    p.add_argument("--record", required=True, help="the output's metadata as JSON (output)")
    args = p.parse_args()

    volume, created = create_output(make_plan(load(args.config)))
    verb = "created" if created else "reusing matching"
    print(f"{verb} output {volume.path}: {volume.info.channels} channels, {volume.info.bounds}")
    record = {"path": volume.path, "created": created, **asdict(volume.info)}
    write_json_atomic(Path(args.record), record)


if __name__ == "__main__":
    sys.exit(run_main(main))

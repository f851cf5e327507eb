"""Rule infer_block: compute the named blocks in one process; each writes its done-marker."""

import argparse
import sys
from pathlib import Path

from chunkflow.block import run_blocks
from chunkflow.config import load
from chunkflow.entry import run_main


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--config", required=True, help="the run's config YAML (params.config)")
    p.add_argument("--expect-fingerprint", required=True, help="as planned (params.fingerprint)")
    p.add_argument("markers", nargs="+", help="the blocks' done-markers, <block>.json (output)")
    args = p.parse_args()

    block_ids = [Path(marker).stem for marker in args.markers]
    for marker in run_blocks(load(args.config), block_ids, args.expect_fingerprint):
        what = "background, skipped" if marker.skipped else f"{marker.patches} patches"
        seconds = marker.timings_s["total"]
        print(f"{marker.block}: {what}, {seconds:.2f} s on {marker.ran_on['device']}")


if __name__ == "__main__":
    sys.exit(run_main(main))

"""Rule infer_block: compute the named blocks in one process; each writes its done-marker."""

import argparse
import sys
from dataclasses import replace
from pathlib import Path

from chunkflow.block import run_blocks
from chunkflow.block_logs import finished_line
from chunkflow.config import load
from chunkflow.entry import run_main


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--config", required=True, help="the run's config YAML (params.config)")
    p.add_argument("--expect-fingerprint", required=True, help="as planned (params.fingerprint)")
    p.add_argument("markers", nargs="+", help="the blocks' done-markers, <block>.json (output)")
    args = p.parse_args()

    block_ids = [Path(marker).stem for marker in args.markers]
    # The state dir is where Snakemake wants the markers (<state_dir>/blocks/<fp>/<block>.json):
    # the configured one, or its local copy under .snakemake/storage/ with a storage provider.
    (state_dir,) = {str(Path(marker).parents[2]) for marker in args.markers}
    settings = replace(load(args.config), state_dir=state_dir)
    for marker in run_blocks(settings, block_ids, args.expect_fingerprint):
        print(finished_line(marker))


if __name__ == "__main__":
    sys.exit(run_main(main))

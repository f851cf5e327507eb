"""Rule infer_block: compute the named blocks in one process; each writes its done-marker."""

import argparse
import sys
from pathlib import Path

from chunkflow.app import actions
from chunkflow.app.entry import run_main
from chunkflow.config import load
from chunkflow.plan.run_plan import make_plan
from chunkflow.state.run_state import RunState


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--config", required=True, help="the run's config YAML (params.config)")
    p.add_argument("--expect-fingerprint", required=True, help="as planned (params.fingerprint)")
    p.add_argument("markers", nargs="+", help="the blocks' done-markers, <block>.json (output)")
    args = p.parse_args()

    plan = make_plan(load(args.config))
    state = RunState.holding(args.markers[0], args.expect_fingerprint)
    blocks = [Path(marker).stem for marker in args.markers]
    for line in actions.compute_blocks(plan, blocks, state, args.expect_fingerprint):
        print(line)


if __name__ == "__main__":
    sys.exit(run_main(main))

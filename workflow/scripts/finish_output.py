"""Rule finish_output: make the output whole after its blocks (HDF5: the virtual dataset)."""

import argparse
import sys

from chunkflow.app import actions
from chunkflow.app.entry import run_main
from chunkflow.config import load
from chunkflow.plan.run_plan import make_plan
from chunkflow.state.run_state import RunState


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--config", required=True, help="the run's config YAML (params.config)")
    p.add_argument("--record", required=True, help="the record that it is done (output)")
    args = p.parse_args()

    plan = make_plan(load(args.config))
    print(actions.finish_output(plan, RunState.holding(args.record, plan.fingerprint)))


if __name__ == "__main__":
    sys.exit(run_main(main))

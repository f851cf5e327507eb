"""Rule verify: check every finished block against its done-marker and record the result."""

import argparse
import sys

from chunkflow.app.entry import run_main
from chunkflow.config import load
from chunkflow.inspect.verify import VerifyOptions, run_verify
from chunkflow.plan.run_plan import make_plan
from chunkflow.state.run_state import RunState


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--config", required=True, help="the run's config YAML (params.config)")
    p.add_argument("--jobs", type=int, required=True, help="blocks checked at once (threads)")
    p.add_argument("--record", required=True, help="the verify report as JSON (output)")
    args = p.parse_args()

    plan = make_plan(load(args.config))
    state = RunState.holding(args.record, plan.fingerprint)  # the state Snakemake names
    status = run_verify(plan, VerifyOptions(jobs=args.jobs), args.record, state)
    if status:
        raise SystemExit(status)  # damaged blocks: the rule fails, their markers are invalidated


if __name__ == "__main__":
    sys.exit(run_main(main))

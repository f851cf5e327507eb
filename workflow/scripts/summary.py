"""Rule summary: aggregate the blocks' done-markers into summary.json, summary.txt and the
HTML report."""

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
    p.add_argument("--json", required=True, help="the summary as JSON (output.json)")
    p.add_argument("--text", required=True, help="the summary as text (output.text)")
    p.add_argument("--report", required=True, help="the HTML report (output.report)")
    args = p.parse_args()

    plan = make_plan(load(args.config))
    state = RunState.holding(args.json, plan.fingerprint)
    print(actions.summary(plan, state, args.json, args.text, args.report))


if __name__ == "__main__":
    sys.exit(run_main(main))
